/* run.c - one batch run: lock, cut, ingest, recompute, check, publish (DESIGN.md section 5). */
#include "batch.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

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
        /* librdkafka's default, said here because the cut depends on it: the watermarks this
         * consumer asks for then end at the last stable offset (what it can read), not at the
         * high watermark an open transaction holds above it (librdkafka >= 1.7.1). */
        {"isolation.level", "read_committed", true},
    };

    b->rk = kafka_consumer_new(b->c, props, sizeof(props) / sizeof(props[0]), NULL, NULL, e);
    return b->rk ? 0 : -1;
}

/* The page caches follow the run's work. Every page a cache holds is memory this new process
 * touches for the first time, a page fault each (about 10 us on a virtual machine, more than
 * the pread() of a page the OS has cached): an increment of a few thousand orders touches each
 * leaf it reads or writes once, so a small cache that reuses its slots is fastest, and a page
 * it spills early goes to the log where it was going anyway. Large work (a backlog, an import,
 * a full run) revisits the B-trees' inner pages and needs them held: the caches grow to a
 * quarter KiB per row, up to 256 MiB (master) and 128 MiB (batch.db), and master is read
 * through a memory map, whose faults such a run amortizes over many reads of each page. */
#define CACHE_MIN_KIB     1024
#define CACHE_MIN_KIB_SQL "1024"
#define MASTER_CACHE_KIB  262144
#define BATCH_CACHE_KIB   131072
#define MMAP_ROWS         100000 /* rows from which master is memory-mapped */

int batch_size_caches(struct batch *b, int64_t rows, struct lerr *e)
{
    char sql[160];
    int64_t kib;

    if (rows <= b->cache_rows)
        return 0; /* the caches only grow */
    b->cache_rows = rows;
    kib = rows / 4 > MASTER_CACHE_KIB ? MASTER_CACHE_KIB : rows / 4;
    if (kib < CACHE_MIN_KIB)
        kib = CACHE_MIN_KIB;
    snprintf(sql, sizeof(sql), "PRAGMA cache_size=-%" PRId64 "; PRAGMA mmap_size=%s", kib,
             rows >= MMAP_ROWS ? "4294967296" : "0");
    if (db_exec(b->master, sql, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "PRAGMA main.cache_size=-%" PRId64,
             kib > BATCH_CACHE_KIB ? BATCH_CACHE_KIB : kib);
    return db_exec(b->bdb, sql, e);
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
    /* The page caches start small and grow with the work (batch_size_caches). */
    if (db_exec(b->master,
                "PRAGMA cache_size=-" CACHE_MIN_KIB_SQL "; PRAGMA mmap_size=0;"
                " PRAGMA wal_autocheckpoint=65536; PRAGMA journal_size_limit=67108864",
                e) != 0 ||
        db_exec(b->bdb,
                "PRAGMA cache_size=-" CACHE_MIN_KIB_SQL "; PRAGMA temp_store=FILE;"
                " PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864",
                e) != 0)
        return -1;
    db_path(b->data_dir, DB_MASTER, path, sizeof(path));
    if (db_prepare(b->bdb, "ATTACH DATABASE ? AS m", &st, e) != 0)
        return -1;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    rc = db_step_done(st, e);
    sqlite3_finalize(st);
    return rc;
}

#define TRIM_SLICE  10000 /* rows per transaction */
#define TRIM_SLICES 100   /* transactions per run: a backlog is worked off over several runs */

/* Deletes master.db's rejects older than retention (DESIGN.md: nothing grows forever), a slice
 * per transaction. Rows are appended in time order, so a slice is a range of ids from the
 * first, never a scan. The counters (rejects_<reason>) keep their totals. */
static int trim_rejects(struct batch *b, struct lerr *e)
{
    int64_t retention = cfg_ms(b->c, "retention"), total = 0;
    sqlite3_stmt *st = NULL;
    int rc = 0;

    if (retention <= 0)
        return 0;
    if (db_prepare(b->master,
                   "DELETE FROM rejects WHERE id < (SELECT min(id) FROM rejects) + ?2"
                   " AND at_ms < ?1",
                   &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, tm_now_ms() - retention);
    sqlite3_bind_int64(st, 2, TRIM_SLICE);
    for (int i = 0; i < TRIM_SLICES && rc == 0; i++) {
        rc = db_step_done(st, e); /* each statement its own transaction */
        int n = rc == 0 ? sqlite3_changes(b->master) : 0;
        total += n;
        if (n == 0)
            break;
    }
    sqlite3_finalize(st);
    if (total > 0)
        log_info("batch", "rejects_trimmed rows=%" PRId64 " retention_ms=%" PRId64, total,
                 retention);
    return rc;
}

/* What a run leaves for status, /health and /metrics besides its exit code. */
struct run_outcome {
    int64_t version;       /* the cut's version, 0 before one was picked */
    bool is_reused;        /* the cut was a pending one */
    char failed_check[64]; /* the first failed data-quality check, "" when none */
};

/* Copies a file's log into the file on the run's own connection once its commits are done,
 * PASSIVE: a reader is never waited for, and what it still sees is copied by the next run,
 * whose first commit starts the log over (journal_size_limit trims it).
 * - master.db: closing does the same only as the file's last connection, and lambda-serve
 *   (versions_published) and the speed layer (its duplicate look-ups) keep it open, so the log
 *   grew to wal_autocheckpoint's 256 MiB.
 * - batch.db: its connection never checkpoints on a commit (wal_autocheckpoint=0), so the pages
 *   a run wrote are copied once, after the publish, instead of inside the recompute's commit
 *   (which held the publish back) and again for the publish's few. */
static void checkpoint(sqlite3 *db, const char *name)
{
    int frames = 0, copied = 0;

    if (!db || !sqlite3_get_autocommit(db))
        return;
    if (sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &frames, &copied) !=
        SQLITE_OK)
        log_warn("batch", "%s_checkpoint_failed err=\"%s\"", name, sqlite3_errmsg(db));
    else
        log_debug("batch", "%s_checkpoint frames=%d copied=%d", name, frames, copied);
}

/* The recompute's commit leaves batch.db's log with every page it changed (thousands in an
 * incremental run, all of them in a full one); copying them into the file (reading the log,
 * writing the pages, syncing the file) took 30-50 ms of a 150 ms incremental run, after the
 * publish. Started once the recompute commits, on a connection of its own in a thread, the
 * copy runs beside the checks and the publish, which only read those pages and append a few;
 * close_batch() waits for it, then copies what the publish added. PASSIVE, as checkpoint(). */
static void *copy_log(void *arg)
{
    const char *path = arg;
    sqlite3 *db = NULL;
    int frames = 0, copied = 0, rc;

    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    /* A connection learns that the file is in WAL mode when it first reads it: until then a
     * checkpoint does nothing and reports -1 frames (SQLite 3.40). */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA schema_version", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
    if (rc != SQLITE_OK)
        log_warn("batch", "batch_log_copy_failed err=\"%s\"",
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    else
        log_debug("batch", "batch_log_copied frames=%d copied=%d", frames, copied);
    sqlite3_close(db);
    return NULL;
}

static void start_log_copy(struct batch *b)
{
    db_path(b->data_dir, DB_BATCH, b->log_copy_path, sizeof(b->log_copy_path));
    /* Without a thread close_batch() copies it all, as before. */
    b->is_copying = pthread_create(&b->log_copier, NULL, copy_log, b->log_copy_path) == 0;
}

/* Waits for the log copier, then copies what the publish added: batch.db's log is then all in
 * the file, so the next write (record_run()'s) starts it over from its first frame. */
static void finish_log_copy(struct batch *b)
{
    if (b->is_copying)
        pthread_join(b->log_copier, NULL);
    b->is_copying = false;
    checkpoint(b->bdb, "batch");
}

/* batch.db's log file is kept when the run's connection is the last to close it (as it is
 * whenever lambda-serve or the speed layer has the file open): a run writes thousands of pages
 * into it, and a log created afresh each run cost the file system's allocation of them and,
 * on close, their release (measured in the closing note of issue 13). It was started over by
 * the run's last write and holds that one frame, which the next open reads back; the pages
 * past it are the old log's, which fail its checksums and are written over in place. A
 * journal_size_limit of -1 keeps it at close (else SQLite truncates it to nothing);
 * journal_size_limit still bounds it at every restart. master.db's log, which ingest writes
 * (about 1 MB for 5,000 orders), is kept the same way: the close's checkpoint copies all of
 * it, so the next run's first write starts it over. Deleting and creating it again cost an
 * incremental run about 25 ms on this machine's ext4 with discard (issue 13's note). */
static void keep_log(sqlite3 *db)
{
    int on = 1;

    if (db && sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &on) == SQLITE_OK)
        sqlite3_exec(db, "PRAGMA journal_size_limit=-1", NULL, NULL, NULL);
}

static void close_consumer(rd_kafka_t *rk)
{
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
}

static void *close_consumer_thread(void *arg)
{
    close_consumer(arg);
    return NULL;
}

/* Ingest is the last step that reads Kafka. Closing the consumer waits for librdkafka's
 * threads to end (about 10 ms, nearly all of it waiting), so it runs beside the recompute
 * instead of at the end of the run; close_batch() joins it. */
static void start_consumer_close(struct batch *b)
{
    if (b->rk && pthread_create(&b->kafka_closer, NULL, close_consumer_thread, b->rk) == 0) {
        b->is_closing = true;
        b->rk = NULL;
    }
}

static void close_batch(struct batch *b)
{
    finish_log_copy(b);
    checkpoint(b->master, "master");
    keep_log(b->bdb);
    keep_log(b->master);
    close_consumer(b->rk);
    if (b->is_closing)
        pthread_join(b->kafka_closer, NULL);
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

/* The first failed check named in a checks document, into out ("" when none). */
static void first_failed(const char *checks_json, char *out, size_t size)
{
    json_t *doc = checks_json ? json_loads(checks_json, 0, NULL) : NULL;
    const char *name = json_string_value(json_array_get(json_object_get(doc, "failed"), 0));

    snprintf(out, size, "%s", name ? name : "");
    json_decref(doc);
}

/* Records the run's outcome in batch.db's runs and run_counters, on the run's own connection
 * to batch.db (bdb; a transaction a failure left open is rolled back first), or on one of its
 * own when the run did not get as far as opening it (bdb NULL). Opening another one cost
 * 9 ms of a 0.3 s incremental run: the schema applied again, then the commit. A plain BEGIN:
 * the write locks batch.db only, not the attached master.db. Best effort: the outcome is on
 * stderr and in the exit code anyway. */
static void record_run(sqlite3 *bdb, const char *data_dir, int64_t started_ms,
                       const struct run_outcome *o, const char *error)
{
    char name[96];
    sqlite3 *own = NULL, *db = bdb;
    sqlite3_stmt *ins = NULL, *add = NULL;
    struct lerr e = {{0}};

    if (db && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    if (!db && db_open_rw(data_dir, DB_BATCH, &own, &e) == 0)
        db = own;
    if (!db || db_exec(db, "BEGIN", &e) ||
        db_prepare(db,
                   "INSERT INTO runs(started_ms, finished_ms, ok, version, failed_check, error)"
                   " VALUES(?,?,?,?,?,?)",
                   &ins, &e) ||
        db_prepare(db,
                   "INSERT INTO run_counters VALUES(?, 1)"
                   " ON CONFLICT(name) DO UPDATE SET value = value + 1",
                   &add, &e))
        goto out;
    sqlite3_bind_int64(ins, 1, started_ms);
    sqlite3_bind_int64(ins, 2, tm_now_ms());
    sqlite3_bind_int(ins, 3, error == NULL);
    if (o->version > 0)
        sqlite3_bind_int64(ins, 4, o->version);
    if (o->failed_check[0])
        sqlite3_bind_text(ins, 5, o->failed_check, -1, SQLITE_STATIC);
    if (error)
        sqlite3_bind_text(ins, 6, error, -1, SQLITE_STATIC);
    snprintf(name, sizeof(name), "failed_%s", o->failed_check[0] ? o->failed_check : "error");
    if (db_step_done(ins, &e) != 0)
        goto out;
    sqlite3_bind_text(add, 1, "runs", -1, SQLITE_STATIC);
    if (db_step_done(add, &e) != 0)
        goto out;
    for (int i = 0; error && i < 2; i++) {
        sqlite3_bind_text(add, 1, i ? name : "failed_runs", -1, SQLITE_TRANSIENT);
        if (db_step_done(add, &e) != 0)
            goto out;
    }
    if (db_exec(db, "DELETE FROM runs WHERE id <= (SELECT max(id) FROM runs) - 100; COMMIT", &e))
        goto out;
out:
    if (e.msg[0]) {
        if (db)
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        log_warn("batch", "run_not_recorded err=\"%s\"", e.msg);
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(add);
    sqlite3_close(own);
}

static void print_summary(const struct batch *b, const struct batch_summary *s,
                          const struct batch_work *w, int64_t publish_ms, double secs,
                          int64_t read_now)
{
    char diffs[64] = "";

    if (w->is_full)
        snprintf(diffs, sizeof(diffs), " differences=%" PRId64, w->differences);
    if (!b->is_import) /* an import prints its own line */
        printf("batch published version=%" PRId64 " cut_epoch=%" PRId64 " mode=%s ingested=%" PRId64
               " orders=%" PRId64 " merchants=%" PRId64 " merchants_rewritten=%" PRId64
               " buckets_rewritten=%" PRId64 "%s rejects=%" PRId64 " duplicates=%" PRId64
               " ingest_ms=%" PRId64 " recompute_ms=%" PRId64 " compare_ms=%" PRId64
               " check_ms=%" PRId64 " publish_ms=%" PRId64 " seconds=%.2f\n",
               s->version, s->cut_epoch, w->is_full ? "full" : "incremental", s->ingested,
               s->orders, s->merchants, w->merchants_rewritten, w->buckets_rewritten, diffs,
               s->rejects, s->duplicates, w->ingest_ms, w->recompute_ms, w->compare_ms, w->check_ms,
               publish_ms, secs);
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

static int run_locked(struct batch *b, struct run_outcome *o, int64_t *differences, struct lerr *e)
{
    struct batch_cut cut = {0};
    struct batch_summary s;
    struct batch_work w;
    int64_t t0 = tm_mono_ms(), t, ingested = 0;
    char *checks = NULL;
    bool passed = false, dropped = false;
    int rc = -1;

    /* The consumer is created when a step needs Kafka (an import's run may not). */
    if (open_dbs(b, e) != 0 || trim_rejects(b, e) != 0 || batch_cut_get(b, &cut, e) != 0)
        goto out;
    o->version = cut.version;
    o->is_reused = cut.is_reused;
    if (cut.is_unchanged) {
        if (!b->is_import)
            printf("batch unchanged version=%" PRId64 "\n", cut.version);
        fflush(stdout);
        log_info("batch", "unchanged version=%" PRId64, cut.version);
        rc = 0;
        goto out;
    }
    t = tm_mono_ms();
    if (batch_imports_move(b, &cut, e) != 0 || batch_ingest(b, &cut, &ingested, e) != 0 ||
        batch_work_start(b, cut.version, b->is_full, &w, e) != 0 ||
        (w.is_full && (batch_size_caches(b, INT64_MAX, e) != 0 || batch_merge_levels(b, e) != 0)))
        goto out;
    start_consumer_close(b);
    w.ingest_ms = tm_mono_ms() - t;
    if (batch_recompute(b, &w, e) != 0)
        goto out;
    start_log_copy(b);
    t = tm_mono_ms();
    if (batch_check(b, &w, &passed, &checks, e) != 0)
        goto out;
    w.check_ms = tm_mono_ms() - t;
    if (!passed) {
        first_failed(checks, o->failed_check, sizeof(o->failed_check));
        note_failed_checks(b, cut.version, checks);
        goto out; /* e names the first failed check */
    }
    if (batch_drop_if_same(b, &cut, &w, &dropped, e) != 0)
        goto out;
    if (dropped) {
        o->version = w.prev;
        if (!b->is_import)
            printf("batch unchanged version=%" PRId64 "%s\n", w.prev,
                   w.is_full ? " mode=full differences=0" : "");
        fflush(stdout);
        log_info("batch", "unchanged version=%" PRId64 " dropped=%" PRId64 " mode=%s", w.prev,
                 cut.version, w.is_full ? "full" : "incremental");
        rc = 0;
        goto out;
    }
    batch_pause(b->pause_at, "publish");
    t = tm_mono_ms();
    if (batch_publish(b, &cut, &w, checks, &s, e) != 0)
        goto out;
    print_summary(b, &s, &w, tm_mono_ms() - t, (double)(tm_mono_ms() - t0) / 1000.0, ingested);
    if (w.differences > 0)
        report_differences(&w);
    *differences = w.differences;
    rc = 0;
out:
    free(checks);
    batch_cut_release(&cut);
    return rc;
}

static int batch_init(struct batch *b, const struct cfg *c, struct lerr *e)
{
    memset(b, 0, sizeof(*b));
    b->c = c;
    b->is_full = cfg_bool(c, "full");
    b->data_dir = cfg_str(c, "data_dir");
    b->topic = cfg_str(c, "topic");
    b->pause_at = cfg_str(c, "pause_at");
    b->kafka_timeout_ms = cfg_ms(c, "kafka_timeout");
    if (shard_set_parse(&b->shard, cfg_str(c, "shard_partitions"), e) != 0 ||
        db_ensure_dir(b->data_dir, e) != 0)
        return -1;
    return 0;
}

int batch_run_for_import(const struct cfg *c, int64_t *version, struct lerr *e)
{
    struct batch b;
    int64_t differences = 0;
    int rc = 0;

    *version = 0;
    /* At most two runs: a pending cut binds (a speed layer may already have moved forward to
     * it), so it is published first; then the import's own. */
    for (int i = 0; i < 2 && rc == 0; i++) {
        struct run_outcome o = {0};
        int64_t started_ms = tm_now_ms();
        if (batch_init(&b, c, e) != 0)
            return -1;
        b.is_import = true;
        b.is_full = false;
        rc = run_locked(&b, &o, &differences, e);
        finish_log_copy(&b);
        record_run(b.bdb, cfg_str(c, "data_dir"), started_ms, &o, rc == 0 ? NULL : e->msg);
        close_batch(&b);
        if (rc == 0)
            *version = o.version;
        if (!o.is_reused)
            break;
    }
    return rc;
}

int batch_run(const struct cfg *c, bool *skipped, int64_t *differences, struct lerr *e)
{
    struct batch b;
    struct run_outcome o = {0};
    int64_t started_ms = tm_now_ms();
    int fd = -1, got, rc;

    *skipped = false;
    *differences = 0;
    if (batch_init(&b, c, e) != 0)
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
    rc = run_locked(&b, &o, differences, e);
    finish_log_copy(&b);
    record_run(b.bdb, cfg_str(c, "data_dir"), started_ms, &o, rc == 0 ? NULL : e->msg);
    close_batch(&b);
    lock_release(fd);
    return rc;
}
