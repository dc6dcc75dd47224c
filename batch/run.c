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

static void print_summary(const struct batch_summary *s, const struct batch_work *w,
                          int64_t publish_ms, double secs, int64_t read_now)
{
    char diffs[64] = "";

    if (w->is_full)
        snprintf(diffs, sizeof(diffs), " differences=%" PRId64, w->differences);
    printf("batch published version=%" PRId64 " cut_epoch=%" PRId64 " mode=%s ingested=%" PRId64
           " orders=%" PRId64 " merchants=%" PRId64 " merchants_rewritten=%" PRId64
           " buckets_rewritten=%" PRId64 "%s rejects=%" PRId64 " duplicates=%" PRId64
           " ingest_ms=%" PRId64 " recompute_ms=%" PRId64 " compare_ms=%" PRId64
           " check_ms=%" PRId64 " publish_ms=%" PRId64 " seconds=%.2f\n",
           s->version, s->cut_epoch, w->is_full ? "full" : "incremental", s->ingested, s->orders,
           s->merchants, w->merchants_rewritten, w->buckets_rewritten, diffs, s->rejects,
           s->duplicates, w->ingest_ms, w->recompute_ms, w->compare_ms, w->check_ms, publish_ms,
           secs);
    fflush(stdout);
    log_info("batch",
             "published version=%" PRId64 " cut_epoch=%" PRId64 " mode=%s full_why=%s"
             " ingested=%" PRId64 " orders=%" PRId64 " merchants=%" PRId64
             " merchants_rewritten=%" PRId64 " buckets_rewritten=%" PRId64 "%s rejects=%" PRId64
             " duplicates=%" PRId64 " seconds=%.2f read_now=%" PRId64,
             s->version, s->cut_epoch, w->is_full ? "full" : "incremental",
             w->is_full ? w->full_why : "-", s->ingested, s->orders, s->merchants,
             w->merchants_rewritten, w->buckets_rewritten, diffs, s->rejects, s->duplicates, secs,
             read_now);
}

/* A full run that found the increments wrong: loud, on stderr and in the log. */
static void report_differences(const struct batch_work *w)
{
    log_error("batch",
              "full_differs version=%" PRId64 " differences=%" PRId64 " first_%s"
              " action=published_full_result",
              w->version, w->differences, w->first_difference);
    fprintf(stderr,
            "lambda-batch: ERROR: the full recompute of version %" PRId64 " differs from the"
            " increments in %" PRId64 " buckets, the first %s; the full result was published\n",
            w->version, w->differences, w->first_difference);
}

static int run_locked(struct batch *b, int64_t *differences, struct lerr *e)
{
    struct batch_cut cut = {0};
    struct batch_summary s;
    struct batch_work w;
    int64_t t0 = tm_mono_ms(), t, ingested = 0;
    char *checks = NULL;
    bool passed = false;
    int rc = -1;

    if (open_dbs(b, e) != 0 || batch_kafka_open(b, e) != 0 || batch_cut_get(b, &cut, e) != 0)
        goto out;
    if (cut.is_unchanged) {
        printf("batch unchanged version=%" PRId64 "\n", cut.version);
        fflush(stdout);
        log_info("batch", "unchanged version=%" PRId64, cut.version);
        rc = 0;
        goto out;
    }
    t = tm_mono_ms();
    if (batch_ingest(b, &cut, &ingested, e) != 0 ||
        batch_work_start(b, cut.version, b->is_full, &w, e) != 0)
        goto out;
    w.ingest_ms = tm_mono_ms() - t;
    if (batch_recompute(b, &w, e) != 0)
        goto out;
    t = tm_mono_ms();
    if (batch_check(b, &w, &passed, &checks, e) != 0)
        goto out;
    w.check_ms = tm_mono_ms() - t;
    if (!passed) {
        note_failed_checks(b, cut.version, checks);
        goto out; /* e names the first failed check */
    }
    batch_pause(b->pause_at, "publish");
    t = tm_mono_ms();
    if (batch_publish(b, &cut, &w, checks, &s, e) != 0)
        goto out;
    print_summary(&s, &w, tm_mono_ms() - t, (double)(tm_mono_ms() - t0) / 1000.0, ingested);
    if (w.differences > 0)
        report_differences(&w);
    *differences = w.differences;
    rc = 0;
out:
    free(checks);
    batch_cut_release(&cut);
    return rc;
}

int batch_run(const struct cfg *c, bool *skipped, int64_t *differences, struct lerr *e)
{
    struct batch b = {.c = c};
    int fd = -1, got, rc;

    *skipped = false;
    *differences = 0;
    b.is_full = cfg_bool(c, "full");
    b.data_dir = cfg_str(c, "data_dir");
    b.topic = cfg_str(c, "topic");
    b.pause_at = cfg_str(c, "pause_at");
    b.kafka_timeout_ms = cfg_ms(c, "kafka_timeout");
    if (shard_set_parse(&b.shard, cfg_str(c, "shard_partitions"), e) != 0 ||
        db_ensure_dir(b.data_dir, e) != 0)
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
    rc = run_locked(&b, differences, e);
    close_batch(&b);
    lock_release(fd);
    return rc;
}
