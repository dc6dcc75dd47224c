#include "speed.h"

#include <inttypes.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

/* The delta map hashes its 88-byte keys with XXH3 rather than uthash's byte-wise default. */
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = (unsigned)XXH3_64bits((keyptr), (keylen)))
#include <uthash.h>

#include "db.h"
#include "kafka.h"
#include "lock.h"
#include "log.h"
#include "mem.h"
#include "tm.h"

#define BATCH_MAX      1024  /* messages taken from the queue at once */
#define SUMMARY_MS     10000 /* one info line per this much time */
#define EXPIRY_POLL_MS 1000  /* how often batch.db is asked for a newer published cut */
/* An interval holds at most this many events (memory stays bounded while catching up). */
#define INTERVAL_MAX_EVENTS 65536

/* The key is hashed as raw bytes, so it is zeroed before it is filled (padding included). */
struct speed_delta_key {
    char merchant_id[EV_ID_MAX + 1];
    int64_t minute_ms, epoch;
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

struct speed_delta {
    struct speed_delta_key key;
    int64_t order_count, revenue_cents;
    struct speed_delta *next_spare;
    UT_hash_handle hh;
};

static int prepare_all(struct speed *s, struct lerr *e)
{
    static const struct {
        size_t off;
        const char *sql;
    } sts[] = {
        {offsetof(struct speed, st_delta),
         "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents)"
         " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(merchant_id, minute_ms, epoch) DO UPDATE SET"
         " order_count = order_count + excluded.order_count,"
         " revenue_cents = revenue_cents + excluded.revenue_cents"},
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

static int load_counters(struct speed *s, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(s->db, "SELECT name, value FROM counters", &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        int64_t v = sqlite3_column_int64(st, 1);
        struct {
            const char *name;
            int64_t *at;
        } map[] = {{"consumed", &s->n.consumed},
                   {"applied", &s->n.applied},
                   {"duplicates", &s->n.duplicates},
                   {"late", &s->n.late},
                   {"key_mismatch", &s->n.key_mismatch},
                   {"checkpoints", &s->n.checkpoints},
                   {"skipped_offsets", &s->n.skipped_offsets}};
        for (size_t i = 0; name && i < sizeof(map) / sizeof(map[0]); i++)
            if (strcmp(name, map[i].name) == 0)
                *map[i].at = v;
        for (int r = 1; name && r < EV_REASON_COUNT; r++)
            if (strncmp(name, "rejects_", 8) == 0 && strcmp(name + 8, ev_reason_name(r)) == 0)
                s->n.rejects[r] = v;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read counters of speed.db: %s", sqlite3_errmsg(s->db));
    return 0;
}

int speed_open(struct speed *s, const struct cfg *c, struct lerr *e)
{
    int held;
    int64_t v;

    memset(s, 0, sizeof(*s));
    s->lock_fd = -1;
    s->cfg = c;
    s->data_dir = cfg_str(c, "data_dir");
    s->topic = cfg_str(c, "topic");
    s->epoch_ms = cfg_ms(c, "epoch_ms");
    s->checkpoint_ms = cfg_ms(c, "checkpoint_ms");
    s->checkpoint_max_ms = cfg_ms(c, "checkpoint_max_ms");
    s->watermark_delay_ms = cfg_ms(c, "watermark_delay");
    s->idle_timeout_ms = cfg_ms(c, "idle_timeout");
    s->allowed_lateness_ms = cfg_ms(c, "allowed_lateness");
    s->kafka_timeout_ms = cfg_ms(c, "kafka_timeout");
    s->rules.max_future_skew_ms = cfg_ms(c, "max_future_skew");
    s->watermark_ms = INT64_MIN;
    if (s->epoch_ms <= 0 || s->checkpoint_ms <= 0)
        return lerr_set(e, "epoch_ms and checkpoint_ms must be positive");
    if (db_ensure_dir(s->data_dir, e) != 0)
        return -1;
    held = lock_try(s->data_dir, "speed.lock", &s->lock_fd, e);
    if (held < 0)
        return -1;
    if (held == 0)
        return lerr_set(e,
                        "another lambda-speed holds '%s/speed.lock': one speed layer per data "
                        "directory",
                        s->data_dir);
    /* The deltas and seen B-trees take random updates every checkpoint: keep their pages
     * in memory (a fixed bound) rather than re-reading them from the file each time. */
    if (db_open_rw(s->data_dir, DB_SPEED, &s->db, e) != 0 ||
        db_exec(s->db,
                "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 16384;"
                "PRAGMA journal_size_limit = 67108864",
                e) != 0 ||
        prepare_all(s, e) != 0 || load_counters(s, e) != 0)
        return -1;
    v = INT64_MIN;
    if (meta_get(s, "epoch", &v, e) != 0)
        return -1;
    s->epoch = v;
    if (meta_get(s, "watermark_ms", &s->watermark_ms, e) != 0)
        return -1;
    s->dedup = dedup_new(s->db, s->data_dir, (size_t)cfg_int(c, "dedup_cache"), e);
    if (!s->dedup)
        return -1;
    return 0;
}

static void recycle_deltas(struct speed *s, struct speed_delta **head);
static void writer_stop(struct speed *s);

void speed_close(struct speed *s)
{
    struct speed_delta *d;

    if (s->rk) {
        rd_kafka_assign(s->rk, NULL);
        if (s->queue)
            rd_kafka_queue_destroy(s->queue);
        rd_kafka_destroy_flags(s->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    writer_stop(s);
    dedup_free(s->dedup);
    sqlite3_close(s->rdb);
    sqlite3_stmt *sts[] = {s->st_delta,      s->st_offset,   s->st_boundary, s->st_reject,
                           s->st_late,       s->st_counter,  s->st_meta,     s->st_del_deltas,
                           s->st_del_bounds, s->st_published};
    for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++)
        sqlite3_finalize(sts[i]);
    sqlite3_close(s->db);
    sqlite3_close(s->batch_db);
    recycle_deltas(s, &s->deltas);
    recycle_deltas(s, &s->job.deltas);
    while (s->spare) {
        d = s->spare;
        s->spare = d->next_spare;
        free(d);
    }
    free(s->parts);
    free(s->rejects);
    free(s->lates);
    free(s->job.rejects);
    free(s->job.lates);
    free(s->job.parts);
    free(s->parsed);
    lock_release(s->lock_fd);
    memset(s, 0, sizeof(*s));
    s->lock_fd = -1;
}

/* Grows an array of n used elements of size sz to hold one more. */
static void *grow(void *arr, size_t *cap, size_t n, size_t sz)
{
    void *p;
    size_t ncap;

    if (n < *cap)
        return arr;
    ncap = *cap ? 2 * *cap : 64;
    p = realloc(arr, ncap * sz);
    if (p)
        *cap = ncap;
    return p;
}

static int add_reject(struct speed *s, const rd_kafka_message_t *m, enum ev_reason r,
                      struct lerr *e)
{
    struct speed_reject *rj;
    void *p = grow(s->rejects, &s->caprejects, s->nrejects, sizeof(*s->rejects));

    if (!p)
        return lerr_set(e, "out of memory");
    s->rejects = p;
    rj = &s->rejects[s->nrejects++];
    rj->partition = m->partition;
    rj->offset = m->offset;
    rj->reason = r;
    rj->len = m->len < sizeof(rj->payload) ? m->len : sizeof(rj->payload);
    if (rj->len)
        memcpy(rj->payload, m->payload, rj->len);
    s->n.rejects[r]++;
    return 0;
}

static int add_late(struct speed *s, const rd_kafka_message_t *m, const struct ev_order *o,
                    int64_t minute_ms, struct lerr *e)
{
    struct speed_late *l;
    void *p = grow(s->lates, &s->caplates, s->nlates, sizeof(*s->lates));

    if (!p)
        return lerr_set(e, "out of memory");
    s->lates = p;
    l = &s->lates[s->nlates++];
    l->partition = m->partition;
    l->offset = m->offset;
    l->event_ms = o->event_ms;
    l->minute_ms = minute_ms;
    l->watermark_ms = s->watermark_ms;
    memcpy(l->merchant_id, o->merchant_id, sizeof(l->merchant_id));
    memcpy(l->order_id, o->order_id, sizeof(l->order_id));
    s->n.late++;
    return 0;
}

static int add_delta(struct speed *s, const struct speed_parsed *pm, struct lerr *e)
{
    struct speed_delta *d;

    HASH_FIND_BYHASHVALUE(hh, s->deltas, &pm->key, sizeof(pm->key), pm->hashv, d);
    if (!d) {
        if (s->spare) {
            d = s->spare;
            s->spare = d->next_spare;
        } else if (!(d = malloc(sizeof(*d)))) {
            return lerr_set(e, "out of memory");
        }
        d->key = pm->key;
        d->order_count = 0;
        d->revenue_cents = 0;
        HASH_ADD_BYHASHVALUE(hh, s->deltas, key, sizeof(d->key), pm->hashv, d);
        s->ndeltas++;
    }
    d->order_count++;
    d->revenue_cents += pm->o.amount_cents;
    return 0;
}

/* The stream watermark: the minimum over partitions that applied an event within
 * idle_timeout of their max event time - watermark_delay. It never decreases. */
static void update_watermark(struct speed *s, int64_t now_mono)
{
    int64_t wm = INT64_MAX;
    bool any = false;

    for (int p = 0; p < s->nparts; p++) {
        const struct speed_part *pt = &s->parts[p];
        if (pt->max_event_ms == INT64_MIN || now_mono - pt->last_event_mono > s->idle_timeout_ms)
            continue;
        if (pt->max_event_ms - s->watermark_delay_ms < wm)
            wm = pt->max_event_ms - s->watermark_delay_ms;
        any = true;
    }
    if (any && wm > s->watermark_ms)
        s->watermark_ms = wm;
}

/* Offsets the log no longer has (retention deleted them before they were read) or never had
 * (transaction markers): counted, and said loudly, since deleted events are lost here. */
static void skipped(struct speed *s, int partition, int64_t from, int64_t to)
{
    s->n.skipped_offsets += to - from;
    log_warn("speed",
             "offsets_skipped partition=%d from=%" PRId64 " to=%" PRId64 " count=%" PRId64
             " total=%" PRId64,
             partition, from, to, to - from, s->n.skipped_offsets);
}

/* First pass: parse, and start loading what the second pass will look up. */
static void parse_message(struct speed *s, const rd_kafka_message_t *m, struct speed_parsed *pm)
{
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);

    pm->reason = ev_parse(&s->rules, m->key, m->key_len, m->payload, m->len,
                          tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts, &pm->o);
    if (pm->reason != EV_OK)
        return;
    pm->dedup_key = dedup_key(s->dedup, pm->o.merchant_id, pm->o.order_id);
    pm->minute_ms = tm_floor(pm->o.event_ms, TM_MINUTE_MS);
    memset(&pm->key, 0, sizeof(pm->key)); /* hashed as raw bytes, padding included */
    memcpy(pm->key.merchant_id, pm->o.merchant_id, strlen(pm->o.merchant_id));
    pm->key.minute_ms = pm->minute_ms;
    pm->key.epoch = s->epoch;
    HASH_VALUE(&pm->key, sizeof(pm->key), pm->hashv);
    if (s->deltas)
        __builtin_prefetch(
            &s->deltas->hh.tbl->buckets[pm->hashv & (s->deltas->hh.tbl->num_buckets - 1)]);
}

/* Second pass, in log order: everything that depends on the events before. */
static int apply_message(struct speed *s, const rd_kafka_message_t *m,
                         const struct speed_parsed *pm, int64_t now_mono, struct lerr *e)
{
    struct speed_part *pt = &s->parts[m->partition];
    const struct ev_order *o = &pm->o;
    int dup;

    s->n.consumed++;
    if (pt->next_offset >= 0 && m->offset > pt->next_offset)
        skipped(s, m->partition, pt->next_offset, m->offset);
    pt->next_offset = m->offset + 1;
    if (pm->reason != EV_OK)
        return add_reject(s, m, pm->reason, e);
    if (o->is_key_mismatch)
        s->n.key_mismatch++;
    dup = dedup_admit_key(s->dedup, pm->dedup_key, o->merchant_id, o->order_id, s->epoch,
                          m->partition, m->offset, e);
    if (dup < 0)
        return -1;
    if (dup) {
        s->n.duplicates++;
        return 0;
    }
    if (add_delta(s, pm, e) != 0)
        return -1;
    /* Late: its minute was already final. Exactness wins, so it is counted all the same. */
    if (s->watermark_ms != INT64_MIN &&
        s->watermark_ms >= pm->minute_ms + TM_MINUTE_MS + s->allowed_lateness_ms &&
        add_late(s, m, o, pm->minute_ms, e) != 0)
        return -1;
    s->n.applied++;
    pt->last_event_mono = now_mono;
    if (o->event_ms > pt->max_event_ms) {
        pt->max_event_ms = o->event_ms;
        update_watermark(s, now_mono);
    }
    return 0;
}

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct speed *s = opaque;
    int64_t now = tm_mono_ms();

    (void)rk;
    /* librdkafka retries by itself; say so at most once a second. */
    if (now - s->last_kafka_log_mono < 1000)
        return;
    s->last_kafka_log_mono = now;
    log_warn("speed", "kafka_error err=%s reason=\"%s\" action=retrying",
             rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
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

static int write_deltas(struct speed *s, struct speed_job *j, struct lerr *e)
{
    struct speed_delta *d, *tmp;

    /* In key order the upserts sweep the B-tree once instead of hopping across it. */
    HASH_SRT(hh, j->deltas, delta_cmp);
    HASH_ITER(hh, j->deltas, d, tmp)
    {
        sqlite3_bind_text(s->st_delta, 1, d->key.merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->st_delta, 2, d->key.minute_ms);
        sqlite3_bind_int64(s->st_delta, 3, d->key.epoch);
        sqlite3_bind_int64(s->st_delta, 4, d->order_count);
        sqlite3_bind_int64(s->st_delta, 5, d->revenue_cents);
        if (run_step(s->st_delta, e) != 0)
            return -1;
    }
    return 0;
}

static int write_rows(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    for (size_t i = 0; i < j->nrejects; i++) {
        const struct speed_reject *r = &j->rejects[i];
        sqlite3_bind_int(s->st_reject, 1, r->partition);
        sqlite3_bind_int64(s->st_reject, 2, r->offset);
        sqlite3_bind_text(s->st_reject, 3, ev_reason_name(r->reason), -1, SQLITE_STATIC);
        sqlite3_bind_blob(s->st_reject, 4, r->payload, (int)r->len, SQLITE_STATIC);
        sqlite3_bind_int64(s->st_reject, 5, j->now_ms);
        if (run_step(s->st_reject, e) != 0)
            return -1;
    }
    for (size_t i = 0; i < j->nlates; i++) {
        const struct speed_late *l = &j->lates[i];
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
    return 0;
}

static int write_positions(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    for (int p = 0; p < j->nparts; p++) {
        const struct speed_part *pt = &j->parts[p];
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
        if (run_step(s->st_offset, e) != 0)
            return -1;
    }
    if (!j->need_boundary)
        return 0;
    for (int p = 0; p < j->nparts; p++) {
        sqlite3_bind_int64(s->st_boundary, 1, j->epoch);
        sqlite3_bind_int(s->st_boundary, 2, p);
        sqlite3_bind_int64(s->st_boundary, 3, j->parts[p].interval_offset);
        if (run_step(s->st_boundary, e) != 0)
            return -1;
    }
    return 0;
}

static int write_counters(struct speed *s, const struct speed_job *j, struct lerr *e)
{
    char name[64];
    const struct {
        const char *name;
        int64_t v;
    } list[] = {{"consumed", j->n.consumed},
                {"applied", j->n.applied},
                {"duplicates", j->n.duplicates},
                {"late", j->n.late},
                {"key_mismatch", j->n.key_mismatch},
                {"checkpoints", j->n.checkpoints + 1},
                {"skipped_offsets", j->n.skipped_offsets},
                {"checkpoint_us", j->n.checkpoint_us}};

    for (size_t i = 0; i < sizeof(list) / sizeof(list[0]); i++)
        if (write_counter(s, list[i].name, list[i].v, e) != 0)
            return -1;
    for (int r = 1; r < EV_REASON_COUNT; r++) {
        snprintf(name, sizeof(name), "rejects_%s", ev_reason_name(r));
        if (write_counter(s, name, j->n.rejects[r], e) != 0)
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
    if (run_step(s->st_del_deltas, e) != 0)
        return -1;
    j->expired_deltas = sqlite3_changes(s->db);
    return run_step(s->st_del_bounds, e); /* dedup_write expires the seen ids */
}

/* One checkpoint, one transaction (the writer thread). */
static int write_job(struct speed *s, struct speed_job *j, struct lerr *e)
{
    if (db_exec(s->db, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    if (write_deltas(s, j, e) != 0 || dedup_write(j->txn, e) != 0 || write_rows(s, j, e) != 0 ||
        write_positions(s, j, e) != 0 || write_expiry(s, j, e) != 0 ||
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

static void recycle_deltas(struct speed *s, struct speed_delta **head)
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
    recycle_deltas(s, &j->deltas);
    j->nrejects = 0;
    j->nlates = 0;
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

/* The dedup's wait_end: the job under way commits, and finish_job ends its dedup_txn. */
static int quiesce(void *opaque, struct lerr *e)
{
    return speed_checkpoint_wait(opaque, e);
}

static int writer_start(struct speed *s, struct lerr *e)
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

static void writer_stop(struct speed *s)
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

/* The next interval belongs to the epoch current now (never an earlier one); the first
 * interval of an epoch records its boundary: every partition's position now. */
static void begin_interval(struct speed *s, int64_t now_ms)
{
    int64_t e = now_ms / s->epoch_ms;

    s->need_boundary = false;
    s->interval_consumed = s->n.consumed;
    if (e <= s->epoch)
        return;
    s->epoch = e;
    s->need_boundary = true;
    for (int p = 0; p < s->nparts; p++)
        s->parts[p].interval_offset = s->parts[p].next_offset;
}

/* Hands the interval over to the writer (after the previous one committed) and starts the
 * next: the consumer never waits for SQLite unless the writer falls a whole interval behind. */
int speed_checkpoint(struct speed *s, struct lerr *e)
{
    int64_t t0 = tm_mono_ms(), now_ms = tm_now_ms();
    struct speed_job *j = &s->job;

    if (speed_checkpoint_wait(s, e) != 0)
        return -1;
    /* dedup_begin starts new look-up snapshots even when the last job was finished earlier
     * (a full dedup table waits for the writer mid-interval): a job that expires below a cut
     * must never meet a master.db snapshot older than that cut's publication. */
    j->expire_to = s->expire_to > s->expired_cut ? s->expire_to : DEDUP_NO_CUT;
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
    for (int p = 0; p < s->nparts; p++) {
        int64_t low, high;
        if (s->rk &&
            rd_kafka_get_watermark_offsets(s->rk, s->topic, p, &low, &high) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            high >= 0)
            s->parts[p].high_watermark = high;
    }
    memcpy(j->parts, s->parts, (size_t)s->nparts * sizeof(*j->parts));
    j->nparts = s->nparts;
    j->deltas = s->deltas;
    j->ndeltas = s->ndeltas;
    s->deltas = NULL;
    s->ndeltas = 0;
    /* The rows go with the job; the consumer takes the job's emptied buffers back. */
    {
        struct speed_reject *r = j->rejects;
        struct speed_late *l = j->lates;
        size_t rc = j->caprejects, lc = j->caplates;
        j->rejects = s->rejects;
        j->nrejects = s->nrejects;
        j->caprejects = s->caprejects;
        j->lates = s->lates;
        j->nlates = s->nlates;
        j->caplates = s->caplates;
        s->rejects = r;
        s->nrejects = 0;
        s->caprejects = rc;
        s->lates = l;
        s->nlates = 0;
        s->caplates = lc;
    }
    j->need_boundary = s->need_boundary;
    j->epoch = s->epoch;
    j->now_ms = now_ms;
    j->watermark_ms = s->watermark_ms;
    j->n = s->n;
    j->expired_deltas = 0;
    if (s->has_writer) {
        pthread_mutex_lock(&s->mu);
        s->is_job_posted = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    } else {
        j->rc = write_job(s, j, &j->err);
        j->us = tm_mono_ms() - t0;
        if (finish_job(s, e) != 0)
            return -1;
    }
    begin_interval(s, now_ms);
    s->next_checkpoint_mono = t0 + s->checkpoint_ms;
    s->interval_mono = t0;
    return 0;
}

/* Asks batch.db (read-only, once it exists) for the newest published cut. */
static void poll_published_cut(struct speed *s)
{
    char path[PATH_MAX];
    struct lerr ignored;
    int64_t cut = INT64_MIN;

    if (!s->batch_db) {
        db_path(s->data_dir, DB_BATCH, path, sizeof(path));
        if (access(path, F_OK) != 0 || db_open_ro(s->data_dir, DB_BATCH, &s->batch_db, &ignored))
            return;
        if (db_prepare(s->batch_db,
                       "SELECT cut_epoch FROM versions WHERE state = 'published'"
                       " ORDER BY id DESC LIMIT 1",
                       &s->st_published, &ignored) != 0)
            goto fail;
    }
    if (db_step_int(s->st_published, &cut, &ignored) != 0)
        goto fail;
    if (cut > s->expire_to)
        s->expire_to = cut;
    return;
fail:
    sqlite3_finalize(s->st_published);
    sqlite3_close(s->batch_db);
    s->st_published = NULL;
    s->batch_db = NULL;
}

static void log_summary(struct speed *s, int64_t now_mono)
{
    int64_t lag = 0;
    struct dedup_stats ds;

    for (int p = 0; p < s->nparts; p++)
        if (s->parts[p].high_watermark > s->parts[p].next_offset)
            lag += s->parts[p].high_watermark - s->parts[p].next_offset;
    dedup_get_stats(s->dedup, &ds);
    log_info("speed",
             "checkpoint_summary epoch=%" PRId64 " checkpoints=%" PRId64 " consumed=%" PRId64
             " consumed_since=%" PRId64 " applied=%" PRId64 " duplicates=%" PRId64 " late=%" PRId64
             " lag=%" PRId64 " watermark_ms=%" PRId64 " checkpoint_us=%" PRId64
             " dedup_cached=%zu dedup_complete=%d dedup_gens=%zu dedup_spill_reads=%" PRId64,
             s->epoch, s->n.checkpoints, s->n.consumed, s->n.consumed - s->summary_consumed,
             s->n.applied, s->n.duplicates, s->n.late, lag, s->watermark_ms, s->n.checkpoint_us,
             ds.cache_ids, ds.is_complete, ds.gens, ds.spill_reads);
    s->summary_consumed = s->n.consumed;
    s->next_summary_mono = now_mono + SUMMARY_MS;
#ifdef __GLIBC__
    /* A spike (a backlog held in librdkafka's queue while the writer was behind) leaves
     * freed memory in malloc's arenas: give it back, so the resident size returns to the
     * steady state instead of keeping every high-water mark. */
    malloc_trim(0);
#endif
}

/* Applies one batch of messages from the queue; waits at most wait_ms for the first.
 * Returns how many messages it took, or -1. */
static bool is_applicable(const struct speed *s, const rd_kafka_message_t *m)
{
    return !m->err && m->partition >= 0 && m->partition < s->nparts;
}

/* Applies one batch of messages from the queue; waits at most wait_ms for the first.
 * Returns how many messages it took, or -1. */
static ssize_t consume_some(struct speed *s, rd_kafka_message_t **msgs, int wait_ms, struct lerr *e)
{
    ssize_t n = rd_kafka_consume_batch_queue(s->queue, wait_ms, msgs, BATCH_MAX);
    int64_t now_mono = tm_mono_ms();
    int rc = 0;

    for (ssize_t i = 0; i < n; i++)
        if (is_applicable(s, msgs[i]))
            parse_message(s, msgs[i], &s->parsed[i]);
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = msgs[i];
        if (rc == 0 && m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                on_kafka_error(s->rk, m->err, rd_kafka_message_errstr(m), s);
        } else if (rc == 0 && is_applicable(s, m)) {
            rc = apply_message(s, m, &s->parsed[i], now_mono, e);
        }
        rd_kafka_message_destroy(m);
    }
    update_watermark(s, now_mono);
    return rc == 0 ? (n < 0 ? 0 : n) : -1;
}

int speed_run(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e)
{
    rd_kafka_message_t **msgs = malloc(BATCH_MAX * sizeof(*msgs));
    bool is_behind = false;
    int rc = -1;

    free(s->parsed);
    s->parsed = malloc(BATCH_MAX * sizeof(*s->parsed));
    if (!msgs || !s->parsed) {
        free(msgs);
        return lerr_set(e, "out of memory");
    }
    /* Look-ups in speed.db go through their own connection: the writer thread owns the other
     * one while it commits. */
    if (db_open_ro(s->data_dir, DB_SPEED, &s->rdb, e) != 0 ||
        db_exec(s->rdb, "PRAGMA cache_size = -8192", e) != 0 || writer_start(s, e) != 0) {
        free(msgs);
        return -1;
    }
    dedup_set_reader(s->dedup, s->rdb, quiesce, s);
    speed_wal_init(&s->wal, s->db);
    s->interval_consumed = s->n.consumed;
    s->interval_mono = tm_mono_ms();
    s->next_checkpoint_mono = s->interval_mono + s->checkpoint_ms;
    s->next_summary_mono = tm_mono_ms() + SUMMARY_MS;
    while (!*stop) {
        int64_t now = tm_mono_ms(), wait = s->next_checkpoint_mono - now;
        if (wait > 100)
            wait = 100; /* the stop flag is looked at this often */
        ssize_t n = consume_some(s, msgs, wait > 0 ? (int)wait : 0, e);
        if (n < 0)
            goto out;
        /* While catching up (a full batch), a checkpoint may wait up to checkpoint_max_ms:
         * each commit rewrites the pages it touches, so fewer, larger ones catch up faster.
         * With no backlog it is every checkpoint_ms, for freshness. */
        is_behind = n == BATCH_MAX;
        now = tm_mono_ms();
        if (now >= s->next_expiry_mono) {
            poll_published_cut(s);
            s->next_expiry_mono = now + EXPIRY_POLL_MS;
        }
        if (((now >= s->next_checkpoint_mono &&
              (!is_behind || now >= s->interval_mono + s->checkpoint_max_ms)) ||
             s->n.consumed - s->interval_consumed >= INTERVAL_MAX_EVENTS) &&
            speed_checkpoint(s, e) != 0)
            goto out;
        if (now >= s->next_summary_mono)
            log_summary(s, now);
    }
    if (speed_checkpoint(s, e) != 0 || speed_checkpoint_wait(s, e) != 0)
        goto out;
    log_summary(s, tm_mono_ms());
    rc = 0;
out:
    writer_stop(s);
    dedup_set_reader(s->dedup, NULL, NULL, NULL);
    speed_wal_init(&s->wal, NULL);
    sqlite3_close(s->rdb);
    s->rdb = NULL;
    free(msgs);
    return rc;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

static bool kafka_key_given(const struct cfg *c, const char *name)
{
    for (int i = 0; i < c->nkafka; i++)
        if (strcmp(c->kafka_name[i], name) == 0)
            return true;
    return false;
}

/* Creates the consumer: explicit assignment, positions never committed to Kafka. */
static int make_consumer(struct speed *s, struct lerr *e)
{
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new(s->cfg, e);

    if (!conf)
        return -1;
    /* A fetch that finds nothing new waits at most this long: freshness is checkpoint_ms
     * plus about this (librdkafka's 500 ms default would dominate it). */
    if (!kafka_key_given(s->cfg, "fetch.wait.max.ms") &&
        kafka_conf_set(conf, "fetch.wait.max.ms", "50", e) != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* With librdkafka's default (100,000) a catch-up over 32 partitions spent about a quarter
     * of its time with an empty queue (bench/speed.sh); the prefetch stays bounded by
     * queued.max.messages.kbytes all the same. */
    if (!kafka_key_given(s->cfg, "queued.min.messages") &&
        kafka_conf_set(conf, "queued.min.messages", "200000", e) != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    if (kafka_conf_set(conf, "group.id", cfg_str(s->cfg, "group"), e) != 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", e) != 0 ||
        kafka_conf_set(conf, "enable.auto.offset.store", "false", e) != 0 ||
        kafka_conf_set(conf, "auto.offset.reset", "earliest", e) != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_opaque(conf, s);
    rd_kafka_conf_set_error_cb(conf, on_kafka_error);
    s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!s->rk) {
        rd_kafka_conf_destroy(conf);
        return lerr_set(e, "cannot create a Kafka consumer: %s", errstr);
    }
    rd_kafka_poll_set_consumer(s->rk);
    s->queue = rd_kafka_queue_get_consumer(s->rk);
    return 0;
}

/* Positions and watermark state of each partition as committed in speed.db. */
static int load_offsets(struct speed *s, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;
    int64_t now_mono = tm_mono_ms();

    for (int p = 0; p < s->nparts; p++) {
        s->parts[p].next_offset = -1;
        s->parts[p].max_event_ms = INT64_MIN;
        s->parts[p].high_watermark = -1;
    }
    if (db_prepare(s->db, "SELECT partition, next_offset, max_event_ms FROM offsets", &st, e))
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int p = sqlite3_column_int(st, 0);
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

static int assign_all(struct speed *s, struct lerr *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(s->nparts);
    rd_kafka_resp_err_t err;

    for (int p = 0; p < s->nparts; p++)
        rd_kafka_topic_partition_list_add(l, s->topic, p)->offset = s->parts[p].next_offset;
    err = rd_kafka_assign(s->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return lerr_set(e, "cannot assign partitions of '%s': %s", s->topic, rd_kafka_err2str(err));
    return 0;
}

int speed_connect(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e)
{
    struct lerr ke;
    int rc;

    if (make_consumer(s, e) != 0)
        return -1;
    while (kafka_partition_count(s->rk, s->topic, (int)s->kafka_timeout_ms, &s->nparts, &ke)) {
        log_warn("speed", "kafka_unreachable err=\"%s\" action=retrying", ke.msg);
        for (int i = 0; i < 10 && !*stop; i++)
            sleep_ms(100);
        if (*stop)
            return 1;
    }
    s->parts = calloc((size_t)s->nparts, sizeof(*s->parts));
    if (!s->parts)
        return lerr_set(e, "out of memory");
    if (load_offsets(s, e) != 0)
        return -1;
    rc = speed_start_positions(s, stop, e);
    if (rc != 0)
        return rc;
    return assign_all(s, e);
}
