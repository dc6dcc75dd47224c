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

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include "cfg.h"
#include "ev.h"
#include "lerr.h"

/* One run's context: the configuration (borrowed, read-only) and what the run opened. */
struct batch {
    const struct cfg *c;
    const char *data_dir; /* borrowed from c */
    const char *topic;    /* borrowed from c */
    const char *pause_at; /* testing: "ingest", "recompute", "publish" or NULL */
    int64_t kafka_timeout_ms;
    sqlite3 *master; /* master.db, read-write */
    sqlite3 *bdb;    /* batch.db, read-write, with master.db attached as "m" */
    rd_kafka_t *rk;  /* the consumer, created by batch_kafka_open() */
};

/* Set by SIGINT/SIGTERM during a run; long loops poll it and stop with an error. */
extern volatile sig_atomic_t batch_stop_requested;

/* The cut of one version: for each partition, master holds the offsets below offset. */
struct batch_cut {
    int64_t version; /* versions.id */
    int64_t cut_epoch;
    int nparts;
    int32_t *partitions; /* nparts entries, owned */
    int64_t *offsets;    /* nparts entries, owned */
    bool is_reused;      /* a pending cut left by an earlier run */
};

void batch_cut_release(struct batch_cut *cut);

/* The whole run (DESIGN.md section 5). Returns 0 when a version was published or the run
 * skipped because another one holds the lock (*skipped set), -1 on any failure: the previous
 * version keeps serving and a recorded pending cut stays for the next run. */
int batch_run(const struct cfg *c, bool *skipped, struct lerr *e);

/* Creates the consumer (not yet assigned) in b->rk. */
int batch_kafka_open(struct batch *b, struct lerr *e);

/* Finds the pending cut or picks and records a new one (DESIGN.md section 3). */
int batch_cut_get(struct batch *b, struct batch_cut *cut, struct lerr *e);

/* Ingests every partition of the cut from its ingest offset up to (not including) the cut
 * offset. *ingested counts the messages read by this call. */
int batch_ingest(struct batch *b, const struct batch_cut *cut, int64_t *ingested, struct lerr *e);

/* Replaces the version's views with a recompute over the whole master dataset. */
int batch_recompute(struct batch *b, int64_t version, struct lerr *e);

/* Runs the data-quality checks on the version's views; *passed tells, and the checks as JSON
 * (caller frees) go to *checks_json. -1 only when a check could not be run. */
int batch_check(struct batch *b, int64_t version, bool *passed, char **checks_json, struct lerr *e);

/* Marks the version published with its figures, then deletes published versions beyond
 * keep_versions. */
struct batch_summary {
    int64_t version, cut_epoch, ingested, orders, merchants, rejects, duplicates;
};
int batch_publish(struct batch *b, const struct batch_cut *cut, const char *checks_json,
                  struct batch_summary *s, struct lerr *e);

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

int batch_rows_add(struct batch_rows *r, const struct ev_order *o, const void *raw, size_t raw_len,
                   int32_t partition, int64_t offset, struct lerr *e);

/* Sorts the rows by (merchant_id, order_id, partition, offset) and inserts each with ins (an
 * INSERT OR IGNORE into orders taking merchant_id, order_id, amount_cents, event_time_ms,
 * partition, offset, raw), adding to *dups the rows that were already there and to *mismatch
 * those whose key differed. Leaves r empty on success. */
int batch_rows_flush(struct batch_rows *r, sqlite3_stmt *ins, int64_t *dups, int64_t *mismatch,
                     struct lerr *e);
void batch_rows_release(struct batch_rows *r);

/* Adds delta to a counter of master.db (inside the caller's transaction). */
int batch_counter_add(sqlite3 *master, const char *name, int64_t delta, struct lerr *e);

/* lambda-batch import FILE...: each file in transactions of chunk_rows lines, its progress
 * committed with them, so a killed import resumes where it stopped; a file imported before
 * (same content hash) adds nothing. */
int batch_import(const struct cfg *c, struct lerr *e);

/* One line of an import file (its end of line removed): an NDJSON object, or when is_csv a
 * CSV record of order_id, merchant_id, amount_cents, event_time (simple double quotes).
 * scratch holds len + 8 bytes (the CSV fields). The reader batch_import() uses, exposed for
 * the fuzz tests. */
enum ev_reason batch_import_parse_line(const struct ev_rules *r, const char *s, size_t len,
                                       bool is_csv, int64_t now_ms, char *scratch,
                                       struct ev_order *o);

/* lambda-batch status [--json], on stdout. */
int batch_status(const struct cfg *c, struct lerr *e);

#endif
