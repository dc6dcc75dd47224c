/* checkpoint.c - the speed layer's checkpoint: what one commit of speed.db holds, the writer
 * thread that commits it off the consumer's path, and reading the committed state back.
 *
 * One checkpoint is one transaction (DESIGN.md section 5): the interval's deltas, the seen ids
 * the dedup sealed, the rejects and late rows, the positions (and an epoch's boundary), an
 * expiry below the newest published cut, the counters and the meta values. The consumer hands
 * an interval over in speed_checkpoint() and goes on; the writer commits it while the next
 * interval fills, and the consumer finishes the job (frees what it held, moves the look-ups to
 * the new snapshot) at the next hand-over or in speed_checkpoint_wait(). */
#include "speed_int.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "mem.h"
#include "tm.h"

static int prepare_all(struct speed *s, struct lerr *e)
{
    static const struct {
        size_t off;
        const char *sql;
    } sts[] = {
        {offsetof(struct speed, st_delta),
         "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents, seq)"
         " VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(merchant_id, minute_ms, epoch) DO UPDATE SET"
         " order_count = order_count + excluded.order_count,"
         " revenue_cents = revenue_cents + excluded.revenue_cents, seq = excluded.seq"},
        {offsetof(struct speed, st_offset),
         "INSERT OR REPLACE INTO offsets(partition, next_offset, max_event_ms, high_watermark,"
         " updated_ms) VALUES(?1, ?2, ?3, ?4, ?5)"},
        {offsetof(struct speed, st_boundary),
         "INSERT OR IGNORE INTO boundaries(epoch, partition, offset) VALUES(?1, ?2, ?3)"},
        {offsetof(struct speed, st_reject),
         "INSERT INTO rejects(partition, offset, reason, payload, at_ms)"
         " VALUES(?1, ?2, ?3, ?4, ?5)"},
        {offsetof(struct speed, st_late),
         "INSERT INTO late(partition, offset, merchant_id, order_id, event_ms, minute_ms,"
         " watermark_ms, late_ms, at_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"},
        {offsetof(struct speed, st_counter),
         "INSERT OR REPLACE INTO counters(name, value) VALUES(?1, ?2)"},
        {offsetof(struct speed, st_meta), "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)"},
        {offsetof(struct speed, st_del_deltas), "DELETE FROM deltas WHERE epoch < ?1"},
        {offsetof(struct speed, st_del_bounds), "DELETE FROM boundaries WHERE epoch < ?1"},
        /* Rows are appended in time order, so the oldest are the lowest ids: a slice is a
         * range of at most ?2 ids from the first, never a scan of the table. */
        {offsetof(struct speed, st_trim_rejects),
         "DELETE FROM rejects WHERE id < (SELECT min(id) FROM rejects) + ?2 AND at_ms < ?1"},
        {offsetof(struct speed, st_trim_late),
         "DELETE FROM late WHERE id < (SELECT min(id) FROM late) + ?2 AND at_ms < ?1"},
        {offsetof(struct speed, st_import_dup),
         "INSERT OR REPLACE INTO import_dups(seq, epoch) VALUES(?1, ?2)"},
        {offsetof(struct speed, st_del_import_dups), "DELETE FROM import_dups WHERE epoch < ?1"},
    };

    for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++)
        if (db_prepare(s->db, sts[i].sql, (sqlite3_stmt **)((char *)s + sts[i].off), e) != 0)
            return -1;
    return 0;
}

/* Reads an integer meta value; *out keeps its value when absent. */
static int meta_get(struct speed *s, const char *key, int64_t *out, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(s->db, "SELECT value FROM meta WHERE key = ?1", &st, e) != 0)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = db_step_int(st, out, e);
    sqlite3_finalize(st);
    return rc;
}

/* The counters speed.db keeps, each named once: this table, then rejects_<reason> for each
 * reject reason. Every checkpoint writes them all and a start reads them back, all but
 * checkpoint_us: that is the duration of this run's last checkpoint, not a count. */
static const struct {
    const char *name;
    size_t off;
    bool is_loaded;
} counters[] = {
    {"consumed", offsetof(struct speed_counters, consumed), true},
    {"applied", offsetof(struct speed_counters, applied), true},
    {"duplicates", offsetof(struct speed_counters, duplicates), true},
    {"late", offsetof(struct speed_counters, late), true},
    {"key_mismatch", offsetof(struct speed_counters, key_mismatch), true},
    {"checkpoints", offsetof(struct speed_counters, checkpoints), true},
    {"skipped_offsets", offsetof(struct speed_counters, skipped_offsets), true},
    {"checkpoint_us", offsetof(struct speed_counters, checkpoint_us), false},
};
#define NCOUNTERS (sizeof(counters) / sizeof(counters[0]) + EV_REASON_COUNT - 1)

#define COUNTER_NAME_MAX 64

/* The i-th (below NCOUNTERS) counter of n, its name in name[COUNTER_NAME_MAX]. */
static int64_t *counter_at(struct speed_counters *n, size_t i, char *name, bool *is_loaded)
{
    if (i < sizeof(counters) / sizeof(counters[0])) {
        snprintf(name, COUNTER_NAME_MAX, "%s", counters[i].name);
        *is_loaded = counters[i].is_loaded;
        return (int64_t *)((char *)n + counters[i].off);
    }
    i -= sizeof(counters) / sizeof(counters[0]);
    snprintf(name, COUNTER_NAME_MAX, "rejects_%s", ev_reason_name((enum ev_reason)(i + 1)));
    *is_loaded = true;
    return &n->rejects[i + 1];
}

static int load_counters(struct speed *s, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    char want[COUNTER_NAME_MAX];
    bool is_loaded;
    int rc;

    if (db_prepare(s->db, "SELECT name, value FROM counters", &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        for (size_t i = 0; name && i < NCOUNTERS; i++) {
            int64_t *at = counter_at(&s->n, i, want, &is_loaded);
            if (is_loaded && strcmp(name, want) == 0)
                *at = sqlite3_column_int64(st, 1);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read counters of speed.db: %s", sqlite3_errmsg(s->db));
    return 0;
}

int speed_checkpoint_load(struct speed *s, struct lerr *e)
{
    int64_t v = INT64_MIN;

    if (prepare_all(s, e) != 0 || load_counters(s, e) != 0 || meta_get(s, "epoch", &v, e) != 0)
        return -1;
    s->epoch = v;
    return meta_get(s, "watermark_ms", &s->watermark_ms, e);
}

static int run_step(sqlite3_stmt *st, struct lerr *e)
{
    return db_step_done(st, e);
}

static int write_counter(struct speed *s, const char *name, int64_t v, struct lerr *e)
{
    sqlite3_bind_text(s->st_counter, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s->st_counter, 2, v);
    return run_step(s->st_counter, e);
}

static int write_meta(struct speed *s, const char *key, int64_t v, struct lerr *e)
{
    sqlite3_bind_text(s->st_meta, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->st_meta, 2, v);
    return run_step(s->st_meta, e);
}

static int delta_cmp(const struct speed_delta *a, const struct speed_delta *b)
{
    int c = strcmp(a->key.merchant_id, b->key.merchant_id);

    if (c)
        return c;
    if (a->key.minute_ms != b->key.minute_ms)
        return a->key.minute_ms < b->key.minute_ms ? -1 : 1;
    return (a->key.epoch > b->key.epoch) - (a->key.epoch < b->key.epoch);
}

/* Each delta row carries the number of the checkpoint that last changed it (this one: the
 * checkpoints counter once it commits), the change feed serving follows (DESIGN.md section 4). */
static int write_deltas(struct speed *s, struct speed_job *j, struct lerr *e)
{
    struct speed_delta *d, *tmp;
    int64_t seq = j->n.checkpoints + 1;

    /* In key order the upserts sweep the B-tree once instead of hopping across it. */
    HASH_SRT(hh, j->deltas, delta_cmp);
    HASH_ITER(hh, j->deltas, d, tmp)
    {
        sqlite3_bind_text(s->st_delta, 1, d->key.merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->st_delta, 2, d->key.minute_ms);
        sqlite3_bind_int64(s->st_delta, 3, d->key.epoch);
        sqlite3_bind_int64(s->st_delta, 4, d->order_count);
        sqlite3_bind_int64(s->st_delta, 5, d->revenue_cents);
        sqlite3_bind_int64(s->st_delta, 6, seq);
        if (run_step(s->st_delta, e) != 0)
            return -1;
    }
    return 0;
}

static int write_rows(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    for (size_t i = 0; i < j->rows.nrejects; i++) {
        const struct speed_reject *r = &j->rows.rejects[i];
        sqlite3_bind_int(s->st_reject, 1, r->partition);
        sqlite3_bind_int64(s->st_reject, 2, r->offset);
        sqlite3_bind_text(s->st_reject, 3, ev_reason_name(r->reason), -1, SQLITE_STATIC);
        sqlite3_bind_blob(s->st_reject, 4, r->payload, (int)r->len, SQLITE_STATIC);
        sqlite3_bind_int64(s->st_reject, 5, j->now_ms);
        if (run_step(s->st_reject, e) != 0)
            return -1;
    }
    for (size_t i = 0; i < j->rows.nlates; i++) {
        const struct speed_late *l = &j->rows.lates[i];
        sqlite3_bind_int(s->st_late, 1, l->partition);
        sqlite3_bind_int64(s->st_late, 2, l->offset);
        sqlite3_bind_text(s->st_late, 3, l->merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s->st_late, 4, l->order_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->st_late, 5, l->event_ms);
        sqlite3_bind_int64(s->st_late, 6, l->minute_ms);
        sqlite3_bind_int64(s->st_late, 7, l->watermark_ms);
        sqlite3_bind_int64(s->st_late, 8, l->watermark_ms - (l->minute_ms + TM_MINUTE_MS));
        sqlite3_bind_int64(s->st_late, 9, j->now_ms);
        if (run_step(s->st_late, e) != 0)
            return -1;
    }
    for (size_t i = 0; i < j->rows.nidups; i++) {
        sqlite3_bind_int64(s->st_import_dup, 1, j->rows.idups[i].seq);
        sqlite3_bind_int64(s->st_import_dup, 2, j->rows.idups[i].epoch);
        if (run_step(s->st_import_dup, e) != 0)
            return -1;
    }
    return 0;
}

/* The position of partition p (SPEED_IMPORT_PARTITION: the import log's). */
static int write_position(struct speed *s, const struct speed_job *j, int p,
                          const struct speed_part *pt, struct lerr *e)
{
    sqlite3_bind_int(s->st_offset, 1, p);
    sqlite3_bind_int64(s->st_offset, 2, pt->next_offset);
    if (pt->max_event_ms == INT64_MIN)
        sqlite3_bind_null(s->st_offset, 3);
    else
        sqlite3_bind_int64(s->st_offset, 3, pt->max_event_ms);
    if (pt->high_watermark < 0)
        sqlite3_bind_null(s->st_offset, 4);
    else
        sqlite3_bind_int64(s->st_offset, 4, pt->high_watermark);
    sqlite3_bind_int64(s->st_offset, 5, j->now_ms);
    return run_step(s->st_offset, e);
}

static int write_boundary(struct speed *s, const struct speed_job *j, int p,
                          const struct speed_part *pt, struct lerr *e)
{
    sqlite3_bind_int64(s->st_boundary, 1, j->epoch);
    sqlite3_bind_int(s->st_boundary, 2, p);
    sqlite3_bind_int64(s->st_boundary, 3, pt->interval_offset);
    return run_step(s->st_boundary, e);
}

static int write_positions(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    /* The import log is a partition of every shard: each stages only its own merchants. */
    if (write_position(s, j, SPEED_IMPORT_PARTITION, &j->imports, e) != 0 ||
        (j->need_boundary && write_boundary(s, j, SPEED_IMPORT_PARTITION, &j->imports, e) != 0))
        return -1;
    for (int p = 0; p < j->nparts; p++) {
        const struct speed_part *pt = &j->parts[p];
        if (!pt->is_owned)
            continue; /* another shard's */
        if (write_position(s, j, p, pt, e) != 0)
            return -1;
    }
    if (!j->need_boundary)
        return 0;
    for (int p = 0; p < j->nparts; p++) {
        if (!j->parts[p].is_owned)
            continue; /* a boundary covers exactly the shard's partitions */
        if (write_boundary(s, j, p, &j->parts[p], e) != 0)
            return -1;
    }
    return 0;
}

static int write_counters(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    struct speed_counters n = j->n;
    char name[COUNTER_NAME_MAX];
    bool is_loaded;

    n.checkpoints++; /* this one, once it commits */
    for (size_t i = 0; i < NCOUNTERS; i++) {
        int64_t v = *counter_at(&n, i, name, &is_loaded);
        if (write_counter(s, name, v, e) != 0)
            return -1;
    }
    return 0;
}

static int write_meta_all(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    if (write_meta(s, "checkpoint_ms", j->now_ms, e) != 0 || write_meta(s, "epoch", j->epoch, e) ||
        write_meta(s, "epoch_ms", s->epoch_ms, e) != 0 ||
        write_meta(s, "allowed_lateness_ms", s->allowed_lateness_ms, e) != 0)
        return -1;
    /* The newest published cut this layer has seen: a batch version must exist (serving says
     * so when batch.db is missing or unreadable, DESIGN.md section 5). */
    if (j->published_cut > 0 && write_meta(s, "published_cut", j->published_cut, e) != 0)
        return -1;
    if (j->watermark_ms == INT64_MIN)
        return 0;
    return write_meta(s, "watermark_ms", j->watermark_ms, e);
}

/* Drops state the newest published batch version covers (epoch < its cut_epoch). */
static int write_expiry(struct speed *s, struct speed_job *j, struct lerr *e)
{
    if (j->expire_to == INT64_MIN)
        return 0;
    sqlite3_bind_int64(s->st_del_deltas, 1, j->expire_to);
    sqlite3_bind_int64(s->st_del_bounds, 1, j->expire_to);
    sqlite3_bind_int64(s->st_del_import_dups, 1, j->expire_to);
    if (run_step(s->st_del_deltas, e) != 0)
        return -1;
    j->expired_deltas = sqlite3_changes(s->db);
    /* dedup_write expires the seen ids. */
    return run_step(s->st_del_bounds, e) || run_step(s->st_del_import_dups, e);
}

/* Rows a checkpoint deletes at most from each of rejects and late: retention keeps pace with
 * 5,000 new rows a second at the default interval, and a checkpoint's cost stays bounded. */
#define TRIM_SLICE 1000

/* Deletes a slice of the rejects and late rows older than retention (DESIGN.md: nothing grows
 * forever). The counters keep their totals: they are monotonic, whatever is deleted. */
static int write_trim(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    sqlite3_stmt *sts[] = {s->st_trim_rejects, s->st_trim_late};

    if (s->retention_ms <= 0)
        return 0;
    for (size_t i = 0; i < 2; i++) {
        sqlite3_bind_int64(sts[i], 1, j->now_ms - s->retention_ms);
        sqlite3_bind_int64(sts[i], 2, TRIM_SLICE);
        if (run_step(sts[i], e) != 0)
            return -1;
    }
    return 0;
}

/* One checkpoint, one transaction (the writer thread). */
static int write_job(struct speed *s, struct speed_job *j, struct lerr *e)
{
    if (db_exec(s->db, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    if (write_deltas(s, j, e) != 0 || dedup_write(j->txn, e) != 0 || write_rows(s, j, e) != 0 ||
        write_positions(s, j, e) != 0 || write_expiry(s, j, e) != 0 || write_trim(s, j, e) != 0 ||
        write_counters(s, j, e) != 0 || write_meta_all(s, j, e) != 0 ||
        db_exec(s->db, "COMMIT", e) != 0) {
        db_exec(s->db, "ROLLBACK", NULL);
        return -1;
    }
    return 0;
}

/* The writer thread: commits each job handed over, one at a time, in order. */
static void *writer_main(void *arg)
{
    struct speed *s = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the consumer's */
    mem_prefault_all(); /* the dedup table and the page pool, while the consumer starts */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        struct timespec a, b;
        int rc;
        while (!s->is_job_posted && !s->is_writer_stopping)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->is_job_posted)
            break;
        pthread_mutex_unlock(&s->mu);
        clock_gettime(CLOCK_MONOTONIC, &a);
        rc = write_job(s, &s->job, &s->job.err);
        clock_gettime(CLOCK_MONOTONIC, &b);
        pthread_mutex_lock(&s->mu);
        s->job.rc = rc;
        s->job.us = (b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000;
        s->is_job_posted = false;
        s->is_job_done = true;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void speed_recycle_deltas(struct speed *s, struct speed_delta **head)
{
    struct speed_delta *d, *tmp;

    HASH_ITER(hh, *head, d, tmp)
    {
        HASH_DEL(*head, d);
        d->next_spare = s->spare;
        s->spare = d;
    }
}

/* The consumer's half of a committed job: what memory held for it goes, the look-ups move to
 * the new snapshot, and an expiry reaches the cache. */
static int finish_job(struct speed *s, struct lerr *e)
{
    struct speed_job *j = &s->job;

    if (j->rc != 0) {
        dedup_end(j->txn, false, e);
        j->txn = NULL;
        *e = j->err;
        return -1;
    }
    speed_recycle_deltas(s, &j->deltas);
    j->rows.nrejects = 0;
    j->rows.nlates = 0;
    j->rows.nidups = 0;
    if (dedup_end(j->txn, true, e) != 0)
        return -1;
    j->txn = NULL;
    if (j->expire_to != INT64_MIN) {
        log_info("speed", "expired cut_epoch=%" PRId64 " deleted_deltas=%" PRId64, j->expire_to,
                 j->expired_deltas);
        s->expired_cut = j->expire_to;
    }
    speed_wal_settle(&s->wal, s->db); /* our look-ups hold no snapshot now */
    s->n.checkpoints++;
    s->n.checkpoint_us = j->us;
    log_debug("speed",
              "checkpoint_committed epoch=%" PRId64 " deltas=%zu consumed=%" PRId64 " us=%" PRId64,
              j->epoch, j->ndeltas, j->n.consumed, j->us);
    if (j->need_boundary)
        log_info("speed", "epoch_started epoch=%" PRId64, j->epoch);
    return 0;
}

/* Waits until the writer holds no job, then finishes the last one on this side. After it,
 * nothing writes to speed.db until the next speed_checkpoint(). */
int speed_checkpoint_wait(struct speed *s, struct lerr *e)
{
    bool done;

    if (!s->has_writer)
        return 0;
    pthread_mutex_lock(&s->mu);
    while (s->is_job_posted)
        pthread_cond_wait(&s->cv, &s->mu);
    done = s->is_job_done;
    s->is_job_done = false;
    pthread_mutex_unlock(&s->mu);
    return done ? finish_job(s, e) : 0;
}

int speed_writer_start(struct speed *s, struct lerr *e)
{
    if (pthread_mutex_init(&s->mu, NULL) != 0 || pthread_cond_init(&s->cv, NULL) != 0)
        return lerr_set(e, "cannot create the checkpoint writer");
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        return lerr_set(e, "cannot start the checkpoint writer thread");
    }
    pthread_setname_np(s->writer, "speed-writer"); /* as top -H and perf show it */
    s->has_writer = true;
    return 0;
}

void speed_writer_stop(struct speed *s)
{
    if (!s->has_writer)
        return;
    pthread_mutex_lock(&s->mu);
    s->is_writer_stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->writer, NULL); /* a job handed over is committed first */
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    s->has_writer = false;
}

/* Hands the interval over to the writer (after the previous one committed): the consumer
 * never waits for SQLite unless the writer falls a whole interval behind. */
int speed_checkpoint(struct speed *s, int64_t now_ms, struct lerr *e)
{
    int64_t t0 = tm_mono_ms();
    struct speed_job *j = &s->job;
    struct speed_rows emptied;

    if (speed_checkpoint_wait(s, e) != 0)
        return -1;
    /* dedup_begin starts new look-up snapshots even when the last job was finished earlier
     * (a full dedup table waits for the writer mid-interval): a job that expires below a cut
     * must never meet a master.db snapshot older than that cut's publication. */
    j->expire_to = s->expire_to > s->expired_cut ? s->expire_to : DEDUP_NO_CUT;
    j->published_cut = s->expire_to;
    j->txn = dedup_begin(s->dedup, j->expire_to, e);
    if (!j->txn)
        return -1;
    speed_wal_settle(&s->wal, s->db);
    if (j->capparts < s->nparts) {
        struct speed_part *np = realloc(j->parts, (size_t)s->nparts * sizeof(*np));
        if (!np)
            return lerr_set(e, "out of memory");
        j->parts = np;
        j->capparts = s->nparts;
    }
    memcpy(j->parts, s->parts, (size_t)s->nparts * sizeof(*j->parts));
    j->nparts = s->nparts;
    j->imports = s->imports;
    j->deltas = s->deltas;
    j->ndeltas = s->ndeltas;
    s->deltas = NULL;
    s->ndeltas = 0;
    /* The rows go with the job; the consumer takes the job's emptied buffers back. */
    emptied = j->rows;
    j->rows = s->rows;
    s->rows = emptied;
    j->need_boundary = s->need_boundary;
    j->epoch = s->epoch;
    j->now_ms = now_ms;
    j->watermark_ms = s->watermark_ms;
    j->n = s->n;
    j->expired_deltas = 0;
    if (!s->has_writer) {
        j->rc = write_job(s, j, &j->err);
        j->us = tm_mono_ms() - t0;
        return finish_job(s, e);
    }
    pthread_mutex_lock(&s->mu);
    s->is_job_posted = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Positions and watermark state of each partition as committed in speed.db. */
int speed_checkpoint_load_positions(struct speed *s, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;
    int64_t now_mono = tm_mono_ms();

    for (int p = 0; p < s->nparts; p++) {
        s->parts[p].next_offset = -1;
        s->parts[p].max_event_ms = INT64_MIN;
        s->parts[p].high_watermark = -1;
    }
    s->imports.next_offset = -1;
    s->imports.max_event_ms = INT64_MIN; /* backfills move no watermark */
    s->imports.high_watermark = -1;
    s->imports.is_owned = true;
    if (db_prepare(s->db, "SELECT partition, next_offset, max_event_ms FROM offsets", &st, e))
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int p = sqlite3_column_int(st, 0);
        if (p == SPEED_IMPORT_PARTITION)
            s->imports.next_offset = sqlite3_column_int64(st, 1);
        if (p < 0 || p >= s->nparts)
            continue;
        s->parts[p].next_offset = sqlite3_column_int64(st, 1);
        if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
            s->parts[p].max_event_ms = sqlite3_column_int64(st, 2);
            s->parts[p].last_event_mono = now_mono;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read offsets of speed.db: %s", sqlite3_errmsg(s->db));
    return 0;
}
