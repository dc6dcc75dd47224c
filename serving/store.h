/* store.h - what lambda-serve reads from a data directory, and the exact merge.
 *
 * One struct serve_store per worker thread holds read-only connections to batch.db, speed.db
 * and (for metrics and the signal below) master.db, with statements prepared once. A file that
 * does not exist yet, or whose schema is not there yet, is simply absent; it is opened by a
 * later request. Each snapshot first compares every file's path with the file its connection
 * has open (device and inode): a file moved away or replaced under it is closed and the one at
 * the path opened, so a speed.db restored from a savepoint is read with no restart.
 *
 * Never a wrong number presented as right (DESIGN.md section 5): serve_store_begin() fails,
 * with e reading "batch.db unreadable: <missing|not a database|corrupt|no published version>"
 * (or the same for speed.db), when a layer the data directory shows must exist cannot be read:
 * batch.db when speed.db records a published cut, or master.db holds ingested orders while
 * batch.db is missing or holds no version; speed.db once any store sharing speed_seen had it
 * open (a speed layer holding speed.lock may not have made it yet, so that is no sign). Every
 * error message of this module is in those words, meant for clients; SQLite's own text goes
 * to the log.
 *
 * Every answer is read between serve_store_begin() and serve_store_end(), which implement the
 * read order of DESIGN.md section 3: the speed.db read transaction is opened and its snapshot
 * fixed by a first SELECT, then batch.db's newest published version is read in a transaction
 * of its own, and both stay open until serve_store_end(). Speed rows are then those with
 * epoch >= the version's cut_epoch (all of them when there is no version, cut_epoch 0), so an
 * answer never pairs a new version with speed rows already expired.
 *
 * Times are epoch milliseconds; ranges are half-open [from_ms, to_ms) over minute starts.
 * Callers are lambda-serve's route handlers (api.c). */
#ifndef LAMBDA_SERVE_STORE_H
#define LAMBDA_SERVE_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lerr.h"

struct serve_store;

/* What one snapshot shows of each layer. */
struct serve_view {
    bool has_batch; /* a published version exists */
    int64_t version, cut_epoch;
    int64_t started_ms;     /* when the version's cut was taken */
    int64_t minute_from_ms; /* the version holds minute rows from here on; INT64_MIN: all */
    bool has_speed;         /* speed.db is readable */
    bool has_checkpoint;
    int64_t checkpoint_ms; /* wall time of the last speed commit */
    bool has_watermark;
    int64_t watermark_ms;        /* the stream watermark */
    int64_t allowed_lateness_ms; /* -1 when speed.db does not say */
    bool is_speed_running;       /* a process holds data_dir/speed.lock */
    bool has_lag;                /* speed.db is readable and a speed layer runs */
    int64_t lag;                 /* messages behind, summed over partitions, at the last commit */
    int64_t seq;                 /* the newest checkpoint number in deltas; 0: none, no feed */
    int64_t published_cut;       /* the newest published cut speed.db recorded; 0: none */
    /* What the snapshot was read from, to tell when to read again: the file speed.db's
     * connection had open, and each file's wal-index header as one number (0 unknown). */
    uint64_t speed_file, speed_stamp, batch_stamp;
    int64_t topic_partitions; /* the topic's, as speed.db records it; 0 unknown */
};

struct serve_sums {
    int64_t order_count, revenue_cents;
};

/* Called once per row of a grouped read: a merchant's or a bucket's sums. */
typedef void (*serve_row_fn)(void *arg, const char *merchant_id, int64_t t_ms,
                             const struct serve_sums *s);

/* A store for data_dir (borrowed: it must outlive the store). speed_seen (borrowed, may be
 * NULL) is shared by the stores of one server: set once speed.db was open. Opens nothing yet.
 * NULL when out of memory. */
struct serve_store *serve_store_new(const char *data_dir, atomic_bool *speed_seen);
/* Closes every connection; NULL is a no-op. */
void serve_store_free(struct serve_store *st);

/* Bounds the cost of the reads that follow: once the monotonic clock (tm_mono_ms) passes
 * deadline_ms, every statement of st is interrupted (SQLite's progress handler) and fails, and
 * serve_store_timed_out() says so until the next call. 0: no bound. */
void serve_store_set_deadline(struct serve_store *st, int64_t deadline_ms);
bool serve_store_timed_out(const struct serve_store *st);

/* Opens the snapshot (the read order above) and fills v. On error returns -1 and leaves no
 * transaction open. Every successful begin needs a serve_store_end(). */
int serve_store_begin(struct serve_store *st, struct serve_view *v, struct lerr *e);
void serve_store_end(struct serve_store *st);

/* A merchant's all-time totals, batch part and speed part. */
int serve_store_totals(struct serve_store *st, const struct serve_view *v, const char *merchant_id,
                       struct serve_sums *batch, struct serve_sums *speed, struct lerr *e);

/* True when neither speed.db nor batch.db has committed, appeared or gone since the last
 * serve_store_begin(), as far as their wal-index headers show (no SQL, no system call);
 * false when it cannot tell. */
bool serve_store_unchanged(struct serve_store *st);

/* Inside a snapshot: fn(arg, merchant_id, 0, sums) for every merchant's batch totals of v's
 * version (nothing without one). */
int serve_store_batch_all(struct serve_store *st, const struct serve_view *v, serve_row_fn fn,
                          void *arg, struct lerr *e);

/* Inside a snapshot: fn per merchant with its speed totals (epoch >= the version's cut), for
 * every merchant when since_seq < 0, else for those a checkpoint numbered above since_seq
 * changed (the change feed of DESIGN.md section 4). */
int serve_store_speed_since(struct serve_store *st, const struct serve_view *v, int64_t since_seq,
                            serve_row_fn fn, void *arg, struct lerr *e);

/* The HTTP status a failure of the calls below deserves: 400 when the range needed minute rows
 * from before the version's minute window (minute_from_ms; e names it), 503 otherwise.
 * serve_store_range(), _rows() (minute rows) and _merchants() read the range as its partial
 * first hour and partial last hour (minutes) and its whole hours (hour rows, all history), so
 * a range before the window is exact when it is hour-aligned. */
int serve_store_status(const struct serve_store *st);

/* A merchant's totals over the minutes starting in [from_ms, to_ms) (minute-aligned). */
int serve_store_range(struct serve_store *st, const struct serve_view *v, const char *merchant_id,
                      int64_t from_ms, int64_t to_ms, struct serve_sums *batch,
                      struct serve_sums *speed, struct lerr *e);

/* Calls fn for every stored bucket of a merchant in [from_ms, to_ms): minute rows of both
 * layers when hourly is false; hour rows of the batch and minute rows of speed otherwise. t_ms
 * is the row's start; several rows may share one t_ms (the caller sums). */
int serve_store_rows(struct serve_store *st, const struct serve_view *v, const char *merchant_id,
                     int64_t from_ms, int64_t to_ms, bool hourly, serve_row_fn fn, void *arg,
                     struct lerr *e);

/* Calls fn once per merchant and layer with its sums over the minutes in [from_ms, to_ms)
 * (minute-aligned): t_ms is 0; a merchant may come twice (batch, then speed). */
int serve_store_merchants(struct serve_store *st, const struct serve_view *v, int64_t from_ms,
                          int64_t to_ms, serve_row_fn fn, void *arg, struct lerr *e);

/* The start of the newest minute with data in either layer; *found false when there is none. */
int serve_store_newest_minute(struct serve_store *st, const struct serve_view *v, bool *found,
                              int64_t *minute_ms, struct lerr *e);

/* Speed lag: calls fn per partition with t_ms = partition and order_count = high watermark
 * minus next offset (never negative). Nothing when speed.db is absent. */
int serve_store_lag(struct serve_store *st, serve_row_fn fn, void *arg, struct lerr *e);

/* Counters for metrics, outside any snapshot: fn(arg, layer, name, value) for every row of
 * speed.db's counters (layer "speed") and master.db's counters (layer "batch"); both hold
 * rejects_<reason>, monotonic however many rows retention deleted. */
typedef void (*serve_counter_fn)(void *arg, const char *layer, const char *name, int64_t value);
int serve_store_counters(struct serve_store *st, serve_counter_fn fn, void *arg, struct lerr *e);

/* Inside a snapshot: speed.db's counters only (layer "speed"), as serve_store_counters. */
int serve_store_speed_counters(struct serve_store *st, const struct serve_view *v,
                               serve_counter_fn fn, void *arg, struct lerr *e);

/* Our words for why SQLite could not read a file, from its (extended) result code: "not a
 * database", "corrupt", "busy"..., as in "batch.db unreadable: <reason>"; SQLite's own text
 * goes to the log. The string is static. */
const char *serve_store_reason(int code);

#endif
