/* speed.h - the speed layer: a Kafka consumer keeping per (merchant, minute, epoch) deltas
 * of what the last batch cut has not covered (DESIGN.md sections 3 and 5).
 *
 * speed/main.c wires it: speed_open() takes data_dir/speed.lock and loads the committed state
 * of speed.db; speed_connect() learns the partitions and the start positions and assigns
 * them (no consumer group, no committed offsets in Kafka); speed_run() consumes until *stop
 * is set, committing one SQLite transaction per checkpoint interval, and writes a last
 * checkpoint before it returns; speed_close() releases everything, the lock last.
 *
 * Exactness rests on one rule: everything an event changes (its delta, its seen id, a reject
 * or late row, the counters) commits in the same transaction as the position after it, so a
 * crash replays exactly the events whose effects were lost. */
#ifndef LAMBDA_SPEED_H
#define LAMBDA_SPEED_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include "cfg.h"
#include "dedup.h"
#include "ev.h"
#include "lerr.h"
#include "wal.h"

struct speed_part {
    int64_t next_offset;     /* the next offset to read; -1 while unknown */
    int64_t interval_offset; /* next_offset when the current checkpoint interval began */
    int64_t max_event_ms;    /* newest event time applied; INT64_MIN before any */
    int64_t high_watermark;  /* as last reported by the broker; -1 unknown */
    int64_t last_event_mono; /* monotonic ms of the last applied event (idleness) */
};

struct speed_reject {
    int partition;
    int64_t offset;
    enum ev_reason reason;
    size_t len;
    char payload[EV_REJECT_PAYLOAD_MAX];
};

struct speed_late {
    int partition;
    int64_t offset, event_ms, minute_ms, watermark_ms;
    char merchant_id[EV_ID_MAX + 1], order_id[EV_ID_MAX + 1];
};

struct speed_delta;  /* speed.c: the in-memory delta map */
struct speed_parsed; /* speed.c: a batch of messages, parsed */

struct speed_counters {
    int64_t consumed, applied, duplicates, late, key_mismatch, checkpoints, checkpoint_us;
    int64_t skipped_offsets; /* offsets the log no longer had when read */
    int64_t rejects[EV_REASON_COUNT];
};

/* One checkpoint handed to the writer thread: everything it commits, moved out of the
 * consumer's way (the seen ids sealed in the dedup). */
struct speed_job {
    struct speed_delta *deltas;
    size_t ndeltas;
    struct speed_reject *rejects;
    size_t nrejects, caprejects;
    struct speed_late *lates;
    size_t nlates, caplates;
    struct speed_part *parts; /* positions (and boundary offsets) at the hand-over */
    int nparts, capparts;
    bool need_boundary;
    int64_t epoch, now_ms, watermark_ms;
    int64_t expire_to;     /* INT64_MIN (DEDUP_NO_CUT): no expiry in this one */
    struct dedup_txn *txn; /* the dedup's half, from dedup_begin() to dedup_end() */
    struct speed_counters n;
    /* filled by the writer */
    int rc;
    struct lerr err;
    int64_t us, expired_deltas;
};

struct speed {
    const struct cfg *cfg; /* borrowed, read-only */
    const char *data_dir, *topic;
    int64_t epoch_ms, checkpoint_ms, checkpoint_max_ms, watermark_delay_ms, idle_timeout_ms,
        allowed_lateness_ms;
    int64_t kafka_timeout_ms;
    struct ev_rules rules;

    int lock_fd;
    sqlite3 *db;  /* speed.db, the only writer: the writer thread's while speed_run runs */
    sqlite3 *rdb; /* speed.db read-only: the consumer's look-ups while speed_run runs */
    sqlite3_stmt *st_delta, *st_offset, *st_boundary, *st_reject, *st_late, *st_counter, *st_meta,
        *st_del_deltas, *st_del_bounds;
    struct dedup *dedup;
    struct speed_wal wal; /* speed.db's log, watched while speed_run runs */
    sqlite3 *batch_db;    /* batch.db read-only, once it exists (expiry) */
    sqlite3_stmt *st_published;

    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    int nparts;
    struct speed_part *parts;

    int64_t epoch;        /* the epoch of the current checkpoint interval */
    bool need_boundary;   /* the current interval is the first of its epoch */
    int64_t watermark_ms; /* stream watermark, never decreasing; INT64_MIN unknown */
    int64_t expired_cut;  /* state with epoch < this was dropped */
    int64_t expire_to;    /* drop state with epoch < this at the next checkpoint */

    struct speed_parsed *parsed;        /* one consume batch, parsed before it is applied */
    struct speed_delta *deltas, *spare; /* changed since the last checkpoint; a free list */
    size_t ndeltas;
    struct speed_reject *rejects;
    size_t nrejects, caprejects;
    struct speed_late *lates;
    size_t nlates, caplates;

    struct speed_counters n;
    int64_t interval_consumed; /* n.consumed when the current interval began */
    int64_t interval_mono;     /* monotonic ms when the current interval began */
    int64_t next_checkpoint_mono, next_expiry_mono, next_summary_mono, last_kafka_log_mono;
    int64_t summary_consumed; /* n.consumed at the last summary line */

    /* The checkpoint writer thread and the one job it may hold. */
    bool has_writer, is_job_posted, is_job_done, is_writer_stopping;
    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct speed_job job;
};

/* Takes the lock, opens speed.db and loads its committed state (positions, counters, meta),
 * creates the dedup. -1 with e set on any failure; "another lambda-speed" when the lock is
 * busy. speed_close() is safe after a failure. */
int speed_open(struct speed *s, const struct cfg *c, struct lerr *e);

/* Creates the consumer, waits (retrying while *stop is 0) for the topic's partitions, picks
 * the start positions (DESIGN section 3 "Speed start") and assigns them. Returns 0, 1 when
 * *stop was set before the broker answered, -1 with e set on failure. */
int speed_connect(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e);

/* Consumes and checkpoints until *stop is set; then writes a last checkpoint. -1 with e set
 * when a checkpoint cannot be written (what was not committed replays at the next start). */
int speed_run(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e);

/* Hands everything applied since the last checkpoint to the writer thread (which commits it
 * in one transaction, after the previous one) and starts the next interval. Without a writer
 * (outside speed_run) it commits at once. speed_checkpoint_wait() returns once nothing is
 * left to commit; -1 with e set when a commit failed. */
int speed_checkpoint(struct speed *s, struct lerr *e);
int speed_checkpoint_wait(struct speed *s, struct lerr *e);

/* Releases the consumer, the databases and the lock; safe on a zeroed or failed speed. */
void speed_close(struct speed *s);

/* start.c: the first position of every partition. */
int speed_start_positions(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e);

/* savepoint.c: the whole state as one SQLite file (backup API), and back. Restore takes
 * speed.lock itself and fails when a speed layer runs. */
int speed_savepoint_out(const char *data_dir, const char *file, struct lerr *e);
int speed_savepoint_restore(const char *data_dir, const char *file, struct lerr *e);

#endif
