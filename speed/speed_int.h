/* speed_int.h - the insides of the speed layer, shared by the files of speed/ and no one else.
 *
 * speed.c is the consumer loop (parse, apply, watermark, when to checkpoint), checkpoint.c
 * the checkpoint (what speed.db holds, the writer thread that commits it, and reading it back
 * at start), start.c the start positions. struct speed is their common context; main.c and
 * the tests see only speed.h's opaque handle. */
#ifndef LAMBDA_SPEED_INT_H
#define LAMBDA_SPEED_INT_H

#include "speed.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>
#include <xxhash.h>

/* The delta map hashes its 88-byte keys with XXH3 rather than uthash's byte-wise default. */
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = (unsigned)XXH3_64bits((keyptr), (keylen)))
#include <uthash.h>

#include "cfg.h"
#include "dedup.h"
#include "ev.h"
#include "lerr.h"
#include "shard.h"
#include "wal.h"

struct speed_part {
    int64_t next_offset;     /* the next offset to read; -1 while unknown */
    int64_t interval_offset; /* next_offset when the current checkpoint interval began */
    int64_t max_event_ms;    /* newest event time applied; INT64_MIN before any */
    int64_t high_watermark;  /* as last reported by the broker; -1 unknown */
    int64_t last_event_mono; /* monotonic ms of the last applied event (idleness) */
    bool is_owned;           /* in shard_partitions: read, positioned, checkpointed */
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

/* An import line judged a duplicate (speed.db's import_dups): the batch run that moves the
 * line into the master dataset skips it, so both layers agree on the winner. */
struct speed_import_dup {
    int64_t seq, epoch;
};

/* The rows an interval adds to speed.db besides its deltas: they travel to the writer
 * together, and the emptied buffers travel back. */
struct speed_rows {
    struct speed_reject *rejects;
    size_t nrejects, caprejects;
    struct speed_late *lates;
    size_t nlates, caplates;
    struct speed_import_dup *idups;
    size_t nidups, capidups;
};

/* The import log (master.db's import_log, DESIGN.md section 2 "Imports meet the stream") is
 * read as a partition with this number, its offsets the lines' seqs: positions, boundaries
 * and expiry cover it as any partition (batch.h's BATCH_IMPORT_PARTITION). */
#define SPEED_IMPORT_PARTITION (-1)

/* The key is hashed as raw bytes, so it is zeroed before it is filled (padding included). */
struct speed_delta_key {
    char merchant_id[EV_ID_MAX + 1];
    int64_t minute_ms, epoch;
};

struct speed_delta {
    struct speed_delta_key key;
    int64_t order_count, revenue_cents;
    struct speed_delta *next_spare;
    UT_hash_handle hh;
};

/* A message of the batch being applied, parsed in a first pass: by the second pass the
 * memory its duplicate check and its delta need is on its way into the cache. */
struct speed_parsed {
    enum ev_reason reason;
    struct ev_order o;
    int64_t minute_ms;
    uint64_t dedup_key;
    struct speed_delta_key key;
    unsigned hashv;
};

/* checkpoint.c's table names each of these once, for loading and for writing. */
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
    struct speed_rows rows;
    struct speed_part *parts; /* positions (and boundary offsets) at the hand-over */
    int nparts, capparts;
    struct speed_part imports; /* the import log's */
    bool need_boundary;
    int64_t epoch, now_ms, watermark_ms;
    int64_t expire_to;     /* INT64_MIN (DEDUP_NO_CUT): no expiry in this one */
    int64_t published_cut; /* the newest published cut seen, 0 while none */
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
    int64_t retention_ms; /* rejects and late rows older than this are deleted, a slice a time */
    struct ev_rules rules;
    struct shard_set shard; /* shard_partitions: the only partitions this layer reads */

    int lock_fd;
    sqlite3 *db;  /* speed.db, the only writer: the writer thread's while speed_run runs */
    sqlite3 *rdb; /* speed.db read-only: the consumer's look-ups while speed_run runs */
    /* checkpoint.c's statements on db */
    sqlite3_stmt *st_delta, *st_offset, *st_boundary, *st_reject, *st_late, *st_counter, *st_meta,
        *st_del_deltas, *st_del_bounds, *st_trim_rejects, *st_trim_late, *st_import_dup,
        *st_del_import_dups;
    struct dedup *dedup;
    struct speed_wal wal; /* speed.db's log, watched while speed_run runs */
    sqlite3 *batch_db;    /* batch.db read-only, once it exists (expiry) */
    sqlite3_stmt *st_published;
    sqlite3 *master_db; /* master.db read-only, once it has import_log (imports.c) */
    sqlite3_stmt *st_import_lines;

    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    int nparts;
    struct speed_part *parts;
    struct speed_part imports; /* the import log: next_offset is the next seq to read */

    int64_t epoch;        /* the epoch of the current checkpoint interval */
    bool need_boundary;   /* the current interval is the first of its epoch */
    int64_t watermark_ms; /* stream watermark, never decreasing; INT64_MIN unknown */
    int64_t expired_cut;  /* state with epoch < this was dropped */
    int64_t expire_to;    /* drop state with epoch < this at the next checkpoint */

    struct speed_parsed *parsed;        /* one consume batch, parsed before it is applied */
    struct speed_delta *deltas, *spare; /* changed since the last checkpoint; a free list */
    size_t ndeltas;
    struct speed_rows rows; /* rejects and late rows since the last checkpoint */

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

/* checkpoint.c: prepares the writer's statements on s->db and reads the committed counters,
 * epoch and watermark back into s. -1 with e set. */
int speed_checkpoint_load(struct speed *s, struct lerr *e);

/* checkpoint.c: the committed position and watermark state of each of s->nparts partitions
 * (next_offset -1 and max_event_ms INT64_MIN where speed.db has none). */
int speed_checkpoint_load_positions(struct speed *s, struct lerr *e);

/* checkpoint.c: hands everything applied since the last checkpoint to the writer thread
 * (which commits it in one transaction, after the previous one); without a writer it
 * commits at once. The caller starts the next interval. speed_checkpoint_wait() returns once
 * nothing is left to commit; -1 with e set when a commit failed. */
int speed_checkpoint(struct speed *s, int64_t now_ms, struct lerr *e);
int speed_checkpoint_wait(struct speed *s, struct lerr *e);

/* checkpoint.c: the writer thread, started by speed_run and stopped (after committing what it
 * holds) when speed_run returns or at speed_close; stopping a stopped writer does nothing. */
int speed_writer_start(struct speed *s, struct lerr *e);
void speed_writer_stop(struct speed *s);

/* checkpoint.c: puts a delta map's entries on s's free list; *head is NULL after. */
void speed_recycle_deltas(struct speed *s, struct speed_delta **head);

/* speed.c: counts one order, parsed into pm, read at (partition, offset): the duplicate rule
 * and the delta, the one definition for a Kafka event and an import line. 1 a duplicate, 0
 * counted, -1 with e set. */
int speed_count_order(struct speed *s, const struct speed_parsed *pm, int partition, int64_t offset,
                      struct lerr *e);

/* speed.c: fills pm from a valid order (the look-ups it will need start loading). */
void speed_parsed_fill(struct speed *s, struct speed_parsed *pm, const struct ev_order *o);

/* imports.c: reads the import lines committed after s->imports.next_offset (at most max of
 * them) and counts them in the current interval, the duplicates recorded for import_dups.
 * Nothing happens while master.db or its import_log does not exist. -1 with e set when the
 * log cannot be read or an order cannot be counted. */
int speed_imports_read(struct speed *s, int64_t max, struct lerr *e);
void speed_imports_close(struct speed *s);

/* start.c: the first position of every partition, and the first epoch. 1 when *stop was set
 * before the broker answered. */
int speed_start_positions(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e);

#endif
