/* run.c - one batch run: lock, cut, ingest, recompute, check, publish (DESIGN.md section 5). */
#include "batch.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "kafka.h"
#include "lock.h"
#include "log.h"
#include "pin.h"
#include "tm.h"

volatile sig_atomic_t batch_stop_requested;

void batch_pause(const char *pause_at, const char *where)
{
    if (!pause_at || strcmp(pause_at, where) != 0)
        return;
    log_info("batch", "paused at=%s", where);
    while (!batch_stop_requested)
        pause();
    log_info("batch", "pause_interrupted at=%s", where);
    _exit(1); /* a test's way to stop at an exact point: leave as a crash would */
}

int batch_kafka_open(struct batch *b, struct lerr *e)
{
    static const struct kafka_prop props[] = {
        {"enable.auto.offset.store", "false", false},
        {"enable.partition.eof", "true", false},
        {"auto.offset.reset", "earliest", false},
    };

    b->rk = kafka_consumer_new(b->c, props, sizeof(props) / sizeof(props[0]), NULL, NULL, e);
    return b->rk ? 0 : -1;
}

/* Opens master.db and batch.db, attaching master to the batch connection as "m". */
static int open_dbs(struct batch *b, struct lerr *e)
{
    char path[PATH_MAX];
    sqlite3_stmt *st = NULL;
    int rc;

    struct pin_set pins;

    pin_set_from_cfg(&pins, b->c);
    if (db_open_rw(b->data_dir, DB_MASTER, &b->master, e) != 0 ||
        db_open_rw(b->data_dir, DB_BATCH, &b->bdb, e) != 0 ||
        pin_record(b->master, b->data_dir, "master.db", &pins, e) != 0 ||
        pin_record(b->bdb, b->data_dir, "batch.db", &pins, e) != 0)
        return -1;
    /* Random-order primary-key inserts need the B-tree's inner pages in memory. */
    if (db_exec(b->master,
                "PRAGMA cache_size=-262144; PRAGMA mmap_size=4294967296;"
                " PRAGMA wal_autocheckpoint=65536",
                e) != 0 ||
        db_exec(b->bdb, "PRAGMA cache_size=-131072; PRAGMA temp_store=FILE", e) != 0)
        return -1;
    db_path(b->data_dir, DB_MASTER, path, sizeof(path));
    if (db_prepare(b->bdb, "ATTACH DATABASE ? AS m", &st, e) != 0)
        return -1;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    rc = db_step_done(st, e);
    sqlite3_finalize(st);
    return rc;
}

static void close_batch(struct batch *b)
{
    if (b->rk) {
        rd_kafka_consumer_close(b->rk);
        rd_kafka_destroy(b->rk);
    }
    sqlite3_close(b->bdb);
    sqlite3_close(b->master);
    memset(b, 0, sizeof(*b));
}

/* Keeps the failed checks on the pending version, for status; the cut stays pending. */
static void note_failed_checks(struct batch *b, int64_t version, const char *checks_json)
{
    sqlite3_stmt *st = NULL;
    struct lerr ignored;

    if (db_prepare(b->bdb, "UPDATE versions SET checks=? WHERE id=? AND state='pending'", &st,
                   &ignored) != 0)
        return;
    sqlite3_bind_text(st, 1, checks_json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, version);
    db_step_done(st, &ignored);
    sqlite3_finalize(st);
}

static int run_locked(struct batch *b, struct lerr *e)
{
    struct batch_cut cut = {0};
    struct batch_summary s;
    int64_t t0 = tm_mono_ms(), ingested = 0;
    char *checks = NULL;
    bool passed = false;
    int rc = -1;

    if (open_dbs(b, e) != 0 || batch_kafka_open(b, e) != 0 || batch_cut_get(b, &cut, e) != 0 ||
        batch_ingest(b, &cut, &ingested, e) != 0 || batch_recompute(b, cut.version, e) != 0 ||
        batch_check(b, cut.version, &passed, &checks, e) != 0)
        goto out;
    if (!passed) {
        note_failed_checks(b, cut.version, checks);
        goto out; /* e names the first failed check */
    }
    batch_pause(b->pause_at, "publish");
    if (batch_publish(b, &cut, checks, &s, e) != 0)
        goto out;
    double secs = (double)(tm_mono_ms() - t0) / 1000.0;
    printf("batch published version=%" PRId64 " cut_epoch=%" PRId64 " ingested=%" PRId64
           " orders=%" PRId64 " merchants=%" PRId64 " rejects=%" PRId64 " duplicates=%" PRId64
           " seconds=%.2f\n",
           s.version, s.cut_epoch, s.ingested, s.orders, s.merchants, s.rejects, s.duplicates,
           secs);
    fflush(stdout);
    log_info("batch",
             "published version=%" PRId64 " cut_epoch=%" PRId64 " ingested=%" PRId64
             " orders=%" PRId64 " merchants=%" PRId64 " rejects=%" PRId64 " duplicates=%" PRId64
             " seconds=%.2f read_now=%" PRId64,
             s.version, s.cut_epoch, s.ingested, s.orders, s.merchants, s.rejects, s.duplicates,
             secs, ingested);
    rc = 0;
out:
    free(checks);
    batch_cut_release(&cut);
    return rc;
}

int batch_run(const struct cfg *c, bool *skipped, struct lerr *e)
{
    struct batch b = {.c = c};
    int fd = -1, got, rc;

    *skipped = false;
    b.data_dir = cfg_str(c, "data_dir");
    b.topic = cfg_str(c, "topic");
    b.pause_at = cfg_str(c, "pause_at");
    b.kafka_timeout_ms = cfg_ms(c, "kafka_timeout");
    if (db_ensure_dir(b.data_dir, e) != 0)
        return -1;
    got = lock_try(b.data_dir, "batch.lock", &fd, e);
    if (got < 0)
        return -1;
    if (got == 0) {
        log_info("batch", "skipped reason=another_run data_dir=%s", b.data_dir);
        printf("batch skipped: another run holds %s/batch.lock\n", b.data_dir);
        *skipped = true;
        return 0;
    }
    log_info("batch", "run_started data_dir=%s topic=%s", b.data_dir, b.topic);
    rc = run_locked(&b, e);
    close_batch(&b);
    lock_release(fd);
    return rc;
}
