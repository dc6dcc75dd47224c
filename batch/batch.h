/* batch.h - the batch layer: cut, ingest, recompute, check, publish; import; status.
 *
 * lambda-batch's main.c loads the configuration and calls one of batch_run(), batch_import()
 * or batch_status(); the steps of a run are declared below so that each lives in its own file
 * (cut.c, ingest.c, views.c) and reads on its own. DESIGN.md sections 3 and 4 are the contract:
 * master.db holds every valid order once (first copy in log order), batch.db holds versions,
 * each with its cut (per partition: master holds the offsets below it) and its views. A run
 * is safe to kill at any moment: ingest commits rows and positions together, a version's rows
 * are written before it is marked published, and a pending cut binds its successor.
 *
 * Every function returns 0 or -1 with e saying what failed; none of them logs an error (the
 * caller does, once) or exits. */
#ifndef LAMBDA_BATCH_H
#define LAMBDA_BATCH_H

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>
#include <uthash.h>

#include "cfg.h"
#include "csvrec.h"
#include "ev.h"
#include "lerr.h"
#include "shard.h"

/* One run's context: the configuration (borrowed, read-only) and what the run opened. */
struct batch {
    const struct cfg *c;
    const char *data_dir; /* borrowed from c */
    const char *topic;    /* borrowed from c */
    const char *pause_at; /* testing: "ingest", "recompute", "publish" or NULL */
    bool is_full;         /* --full: recompute everything and compare */
    int64_t kafka_timeout_ms;
    sqlite3 *master;        /* master.db, read-write */
    sqlite3 *bdb;           /* batch.db, read-write, with master.db attached as "m" */
    rd_kafka_t *rk;         /* the consumer, created by batch_kafka_open() */
    struct shard_set shard; /* shard_partitions: the only partitions cut and ingested */
    /* An import's run (batch_run_for_import): it holds speed.lock already, and a cut it picks
     * is the newest published one with the import log's end as its offset for partition -1. */
    bool is_import;
    /* batch.db's log being copied into the file beside the run's last steps (run.c) */
    pthread_t log_copier;
    bool is_copying;
    char log_copy_path[PATH_MAX]; /* the thread's to read until close_batch() joins it */
    /* the consumer closed beside the recompute once ingest is done with it (run.c) */
    pthread_t kafka_closer;
    bool is_closing;
    int64_t cache_rows; /* the work the page caches are sized for (batch_size_caches) */
};

/* The import log (master.db's import_log, DESIGN.md section 2 "Imports meet the stream") is
 * consumed like a Kafka partition with this number, its offsets the lines' seqs: the speed
 * layer's positions and boundaries and a version's cut cover it as any partition. */
#define BATCH_IMPORT_PARTITION (-1)

/* The process's one stop flag: lambda-batch's main.c sets it on SIGINT/SIGTERM during a run
 * (sig.h); ingest polls it and stops with an error, a pause point returns to exit. */
extern volatile sig_atomic_t batch_stop_requested;

/* The cut of one version: for each partition, master holds the offsets below offset. */
struct batch_cut {
    int64_t version; /* versions.id */
    int64_t cut_epoch;
    int nparts;
    int32_t *partitions; /* nparts entries, owned */
    int64_t *offsets;    /* nparts entries, owned */
    bool is_reused;      /* a pending cut left by an earlier run */
    bool is_unchanged;   /* equal to the newest published version's: not recorded */
};

void batch_cut_release(struct batch_cut *cut);

/* The whole run (DESIGN.md section 5). Returns 0 when a version was published, nothing was new,
 * or the run skipped because another one holds the lock (*skipped set), -1 on any failure: the
 * previous version keeps serving and a recorded pending cut stays for the next run. A full run
 * that found the increments wrong published the full result and sets *differences. */
int batch_run(const struct cfg *c, bool *skipped, int64_t *differences, struct lerr *e);

/* Grows master.db's and batch.db's page caches (and master's memory map) for a step that
 * reads or writes about rows orders; they never shrink within a run. */
int batch_size_caches(struct batch *b, int64_t rows, struct lerr *e);

/* Creates the consumer (not yet assigned) in b->rk. */
int batch_kafka_open(struct batch *b, struct lerr *e);

/* Finds the pending cut or picks and records a new one (DESIGN.md section 3). An import's run
 * (b->is_import) picks the newest published version's cut_epoch and Kafka offsets (none
 * published: no Kafka offsets, and the oldest epoch speed.db holds, or the current one), with
 * the import log's end for partition -1. */
int batch_cut_get(struct batch *b, struct batch_cut *cut, struct lerr *e);

/* Ingests every Kafka partition of the cut from its ingest offset up to (not including) the
 * cut offset. *ingested counts the messages read by this call. */
int batch_ingest(struct batch *b, const struct batch_cut *cut, int64_t *ingested, struct lerr *e);

/* imports.c: the staged import lines below the cut's offset for partition -1 go into the
 * master dataset before Kafka is ingested, in transactions of chunk_rows lines, each with the
 * new position (ingest_offsets(-1)) and the sums: those the speed layer judged duplicates
 * (speed.db's import_dups) are skipped, the others are inserted first in seq order (INSERT OR
 * IGNORE). In an import's own run (b->is_import, a cut not reused) it is the take-in instead:
 * the lines no one took in yet are checked against the speed layer's seen ids since the cut
 * (shared/dedup.h) and the master dataset, put in or marked duplicates (import_log.state),
 * and the position stays (the lines the speed layer counted below them are not in master). */
int batch_imports_move(struct batch *b, const struct batch_cut *cut, struct lerr *e);

/* imports.c: the end of the import log (the next seq it will give out), never below what
 * ingest_offsets(-1) says master holds. */
int batch_imports_end(sqlite3 *master, int64_t *end, struct lerr *e);

/* imports.c: where a run with no speed layer cuts the import log: *end capped at the lines
 * the speed layer judged (its committed position for -1), never below what master holds or
 * the newest published cut. A line at or after that position was staged while a speed layer
 * ran that never read it (an import that stopped waiting): moved unjudged, it would displace
 * the stream copy the speed layer counted. It stays staged until the speed layer reads it
 * (from its position, which the cut then does not pass) or an import takes it in. A speed.db
 * with Kafka positions but none for -1 (a speed layer's from before the import log) judged no
 * line: its position counts as 0. */
int batch_imports_cut_end(struct batch *b, int64_t *end, struct lerr *e);

/* imports.c: speed.db's committed position for partition -1 into *out (-1 when speed.db or
 * the position does not exist). */
int batch_imports_speed_position(const char *data_dir, int64_t *out, struct lerr *e);

/* run.c: an import's publish, while the import holds batch.lock and speed.lock (no speed
 * layer runs): a pending cut is run first as any run would, then a version with
 * batch_imports_cut(), whose take-in puts the staged lines no one took in yet into the master
 * dataset, so they count from its publish (DESIGN.md section 2). *version: the newest
 * published version after it. */
int batch_run_for_import(const struct cfg *c, int64_t *version, struct lerr *e);

/* merge.c: moves master's recent level into the big one (shared/dedup_master.h), in one
 * transaction of master.db: a failure or a kill leaves both levels as they were. A full run
 * does it before it scans master. Nothing is written when the recent level is empty. */
int batch_merge_levels(struct batch *b, struct lerr *e);

/* What one version's recompute works from and did: read by batch_work_start(), filled in by
 * batch_recompute(), then read by the checks, the publish and the summary line. */
struct batch_work {
    int64_t version; /* the pending version being made */
    int64_t prev;    /* the newest published version, 0 when there is none */
    int64_t prev_orders, prev_merchants, prev_seq;
    int64_t prev_max_minute_ms, prev_minute_from_ms; /* INT64_MIN when unknown */
    int64_t seq;                                     /* the newest ingest seq this version covers */
    int64_t orders;                                  /* orders the version counts */
    int64_t max_minute_ms;  /* the newest minute with an order; INT64_MIN when none */
    int64_t minute_from_ms; /* the version holds minute rows from here on */
    int64_t merchants_rewritten, buckets_rewritten, minutes_expired;
    bool is_full;         /* recompute from the master dataset and compare */
    bool is_unproven;     /* full, but the increments had no baseline: repair silently */
    const char *full_why; /* why the run is full */
    int64_t differences;  /* full: buckets where the increments differed from master */
    char first_difference[192];
    int64_t ingest_ms, recompute_ms, compare_ms, check_ms; /* phase durations */
};

/* Reads the previous version and decides whether this run is full (is_full_requested, or
 * full_every since the last full run, or no baseline). */
int batch_work_start(struct batch *b, int64_t version, bool is_full_requested, struct batch_work *w,
                     struct lerr *e);

/* Makes the version's rows: the previous version's rows plus the sums ingested since (every
 * row not touched is shared, not copied); when w->is_full, then recomputes every row from the
 * master dataset, counts where the two differ and keeps master's. One transaction: a killed
 * attempt leaves nothing, and a later attempt first undoes what an earlier one committed. */
int batch_recompute(struct batch *b, struct batch_work *w, struct lerr *e);

/* Runs the data-quality checks on what the version changed; *passed tells, and the checks as
 * JSON (caller frees) go to *checks_json. -1 only when a check could not be run. */
int batch_check(struct batch *b, const struct batch_work *w, bool *passed, char **checks_json,
                struct lerr *e);

/* Marks the version published with its figures, records a full run's outcome, then deletes
 * published versions beyond keep_versions and the rows none of the kept ones sees. */
struct batch_summary {
    int64_t version, cut_epoch, ingested, orders, merchants, rejects, duplicates;
};
int batch_publish(struct batch *b, const struct batch_cut *cut, const struct batch_work *w,
                  const char *checks_json, struct batch_summary *s, struct lerr *e);

/* A run that found nothing new: its cut equals the newest published version's and no import
 * landed since (cut.c). Sets *unchanged and, then, *version. */
int batch_is_unchanged(struct batch *b, const struct batch_cut *cut, bool *unchanged,
                       int64_t *version, struct lerr *e);

/* Whether a run that finds nothing new is still due for a full one (--full, full_every, no
 * baseline): it then proves the published version against the master dataset. */
int batch_full_due(struct batch *b, bool *due, struct lerr *e);

/* A version that would publish nothing new (its cut and ingests are the published version's,
 * it opened and closed no row, a full run found no difference) is not published: its pending
 * cut is deleted, and a full run's proof is recorded as the last full run, of the published
 * version. *dropped tells. */
int batch_drop_if_same(struct batch *b, const struct batch_cut *cut, const struct batch_work *w,
                       bool *dropped, struct lerr *e);

/* Logs "paused at=<where>" and blocks until killed when pause_at (the testing key, may be
 * NULL) names where; returns at once otherwise. */
void batch_pause(const char *pause_at, const char *where);

/* A chunk's valid orders, waiting to be inserted in primary-key order (rows.c). raw is
 * borrowed: it must stay valid until the flush. */
struct batch_row {
    struct ev_order o;
    const void *raw;
    size_t raw_len;
    int32_t partition; /* -1 for an imported line */
    int64_t offset;    /* Kafka offset, or line number */
};
struct batch_rows {
    struct batch_row *v;
    size_t n, cap;
};

/* What one order adds to s (inserted: the caller counts it once). */
struct batch_sums;
int batch_sums_add(struct batch_sums *s, const char *merchant_id, int64_t event_ms,
                   int64_t amount_cents, struct lerr *e);

int batch_rows_add(struct batch_rows *r, const struct ev_order *o, const void *raw, size_t raw_len,
                   int32_t partition, int64_t offset, struct lerr *e);

/* What the orders a transaction inserted add, per (merchant, minute): the increment the next
 * version adds to the previous one's rows (DESIGN.md section 5). */
struct batch_sum {
    struct {
        char merchant_id[EV_ID_MAX + 1]; /* NUL-padded: the key is hashed as bytes */
        int64_t minute_ms;
    } key;
    int64_t order_count, revenue_cents;
    UT_hash_handle hh;
};
struct batch_sums {
    struct batch_sum *head; /* uthash table */
    int64_t orders;
};

/* Sorts the rows by (merchant_id, order_id, partition, offset) and inserts each with ins (an
 * INSERT OR IGNORE into orders taking merchant_id, order_id, amount_cents, event_time_ms,
 * partition, offset, raw), adding to *dups the rows that were already there and to *mismatch
 * those whose key differed, and the inserted ones to sums (unless NULL). Leaves r empty on
 * success. */
int batch_rows_flush(struct batch_rows *r, sqlite3_stmt *ins, struct batch_sums *sums,
                     int64_t *dups, int64_t *mismatch, struct lerr *e);
void batch_rows_release(struct batch_rows *r);

/* Records the sums under a new seq of master's ingests (inside the caller's transaction, the
 * one that inserted the orders) and empties them. Nothing is written when there are none,
 * unless is_forced (an import always leaves a trace, so the next run publishes). */
int batch_sums_write(struct batch_sums *s, sqlite3 *master, const char *source, bool is_forced,
                     struct lerr *e);
void batch_sums_release(struct batch_sums *s);

/* Adds delta to a counter of master.db (inside the caller's transaction). */
int batch_counter_add(sqlite3 *master, const char *name, int64_t delta, struct lerr *e);

/* lambda-batch import FILE...: each file in transactions of chunk_rows lines, its progress
 * committed with them, so a killed import resumes where it stopped; a file imported before
 * (same content hash) adds nothing. */
int batch_import(const struct cfg *c, struct lerr *e);

/* One line of an import file (its end of line removed): an NDJSON object, or when is_csv a
 * CSV record of order_id, merchant_id, amount_cents, event_time read by csv (shared/csvrec,
 * initialised by the caller). The reader batch_import() uses, exposed for the fuzz tests. */
enum ev_reason batch_import_parse_line(const struct ev_rules *r, struct csvrec *csv, const char *s,
                                       size_t len, bool is_csv, int64_t now_ms, struct ev_order *o);

/* lambda-batch status [--json], on stdout. */
int batch_status(const struct cfg *c, struct lerr *e);

#endif
