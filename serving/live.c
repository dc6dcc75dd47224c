/* live.c - the follower thread, the in-memory totals it keeps and the events it raises. */
#include "live.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uthash.h>

#include "ev.h"
#include "log.h"
#include "tm.h"

/* A forced snapshot this often even while no header moves: a file that appeared, went away
 * or was replaced, and the speed.lock holder, are seen by a snapshot, not by the headers. */
#define LIVE_RECHECK_MS 100
#define LIVE_TICK_MS    1000
#define RING_LEN        512 /* counter samples, one a second at most: more than 5 minutes */

struct entry {
    UT_hash_handle hh;
    struct serve_sums batch, speed;
    char id[]; /* NUL-terminated, the key */
};

/* The speed counters behind the dashboard's "last 5 minutes". */
struct sample {
    int64_t t_ms, late, duplicates, rejects;
};

struct serve_live {
    struct serve_live_opts o;
    pthread_t thread;
    bool has_thread;
    atomic_bool is_stopping;
    struct serve_store *st; /* the follower's own connections */

    /* What readers see, under rw. */
    pthread_rwlock_t rw;
    struct entry *map; /* every merchant with data, when is_ready */
    bool is_ready;     /* map and view hold the current state */
    bool has_error;    /* a layer is unreadable: error says why */
    char error[256];   /* store.h's words */
    struct serve_view view;
    uint64_t event_seq;
    struct sample now, ago; /* counters at the last change and 5 minutes before it */

    /* The follower's own bookkeeping. */
    bool has_refreshed;   /* a snapshot was applied once */
    bool is_built;        /* map matches view (even while not yet ready) */
    bool is_over;         /* more merchants than max_merchants: no state */
    int64_t over_version; /* the version that was too big; tried again on the next one */
    size_t count;
    struct sample ring[RING_LEN];
    size_t ring_n, ring_head;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void map_free(struct entry *map)
{
    struct entry *en, *tmp;

    HASH_ITER(hh, map, en, tmp)
    {
        HASH_DEL(map, en);
        free(en);
    }
}

/* A build or an update in progress, outside the lock. */
struct build {
    struct serve_live *l;
    struct entry *map; /* a full build's new map */
    bool is_speed;     /* rows being read are speed sums (else batch) */
    bool is_over, is_oom;
    size_t count;
    /* an update: the merchants changed, with their new speed sums */
    struct change {
        char id[EV_ID_MAX + 1];
        struct serve_sums speed;
    } * changes;
    size_t nchanges, capchanges;
};

static struct entry *entry_get(struct entry **map, const char *id, bool *is_oom, size_t *count)
{
    size_t len = strlen(id);
    struct entry *en;

    HASH_FIND(hh, *map, id, len, en);
    if (en)
        return en;
    if (!(en = calloc(1, sizeof(*en) + len + 1))) {
        *is_oom = true;
        return NULL;
    }
    memcpy(en->id, id, len + 1);
    HASH_ADD_KEYPTR(hh, *map, en->id, len, en);
    (*count)++;
    return en;
}

static void build_row(void *arg, const char *merchant_id, int64_t t_ms, const struct serve_sums *s)
{
    struct build *b = arg;
    struct entry *en;

    (void)t_ms;
    if (!merchant_id || b->is_over || b->is_oom)
        return;
    if (b->count >= b->l->o.max_merchants && !b->is_over) {
        HASH_FIND(hh, b->map, merchant_id, strlen(merchant_id), en);
        if (!en) {
            b->is_over = true;
            return;
        }
    }
    if (!(en = entry_get(&b->map, merchant_id, &b->is_oom, &b->count)))
        return;
    if (b->is_speed)
        en->speed = *s;
    else
        en->batch = *s;
}

static void change_row(void *arg, const char *merchant_id, int64_t t_ms, const struct serve_sums *s)
{
    struct build *b = arg;

    (void)t_ms;
    if (!merchant_id || strlen(merchant_id) > EV_ID_MAX || b->is_oom)
        return;
    if (b->nchanges == b->capchanges) {
        size_t cap = b->capchanges ? 2 * b->capchanges : 256;
        struct change *c = realloc(b->changes, cap * sizeof(*c));
        if (!c) {
            b->is_oom = true;
            return;
        }
        b->changes = c;
        b->capchanges = cap;
    }
    strcpy(b->changes[b->nchanges].id, merchant_id);
    b->changes[b->nchanges++].speed = *s;
}

struct counters {
    int64_t late, duplicates, rejects;
};

static void counter_row(void *arg, const char *layer, const char *name, int64_t value)
{
    struct counters *c = arg;

    (void)layer;
    if (!strcmp(name, "late"))
        c->late = value;
    else if (!strcmp(name, "duplicates"))
        c->duplicates = value;
    else if (!strncmp(name, "rejects_", 8))
        c->rejects += value;
}

/* Records the counters of a snapshot and finds those of 5 minutes before (the oldest sample
 * when the server has run for less). Counters only grow, except when speed.db is replaced. */
static void sample_add(struct serve_live *l, const struct counters *c, struct sample *now,
                       struct sample *ago)
{
    int64_t t = tm_now_ms();
    struct sample *last = l->ring_n ? &l->ring[(l->ring_head + RING_LEN - 1) % RING_LEN] : NULL;

    *now = (struct sample){t, c->late, c->duplicates, c->rejects};
    if (last &&
        (c->late < last->late || c->duplicates < last->duplicates || c->rejects < last->rejects))
        l->ring_n = 0; /* another speed.db: its counters start again */
    if (!l->ring_n || t - l->ring[(l->ring_head + RING_LEN - 1) % RING_LEN].t_ms >= 1000) {
        l->ring[l->ring_head] = *now;
        l->ring_head = (l->ring_head + 1) % RING_LEN;
        if (l->ring_n < RING_LEN)
            l->ring_n++;
    }
    *ago = l->ring[(l->ring_head + RING_LEN - l->ring_n) % RING_LEN];
    for (size_t i = l->ring_n; i > 0; i--) {
        const struct sample *s = &l->ring[(l->ring_head + RING_LEN - i) % RING_LEN];
        if (s->t_ms > t - LIVE_RECENT_MS)
            break;
        *ago = *s;
    }
}

/* Whether v must be read whole rather than as the checkpoints since cur. */
static bool needs_full(const struct serve_live *l, const struct serve_view *v)
{
    const struct serve_view *cur = &l->view;

    if (!l->is_built)
        return true;
    if (v->has_batch != cur->has_batch || v->version != cur->version ||
        v->cut_epoch != cur->cut_epoch || v->has_speed != cur->has_speed ||
        v->speed_file != cur->speed_file || v->seq < cur->seq)
        return true;
    /* A speed.db without the feed (older writers, fixtures): any commit rereads it. */
    return v->seq == 0 && (v->speed_stamp == 0 || v->speed_stamp != cur->speed_stamp);
}

static void set_error(struct serve_live *l, const char *msg)
{
    bool is_new;

    pthread_rwlock_wrlock(&l->rw);
    is_new = !l->has_error || strcmp(l->error, msg) != 0;
    if (is_new) {
        l->has_error = true;
        snprintf(l->error, sizeof(l->error), "%s", msg);
        l->event_seq++;
    }
    l->is_ready = false;
    pthread_rwlock_unlock(&l->rw);
    l->is_built = false; /* read whole once it is readable again */
    if (is_new) {
        log_warn("serve", "layer_unreadable err=\"%s\"", msg);
        if (l->o.on_change)
            l->o.on_change(l->o.arg, l);
    }
}

/* Reads the rows a snapshot needs into b: all of them (*full) or the feed since the state. */
static int read_snapshot(struct serve_live *l, const struct serve_view *v, bool full,
                         struct build *b, struct counters *c, struct lerr *e)
{
    if (serve_store_speed_counters(l->st, v, counter_row, c, e) != 0)
        return -1;
    if (!full)
        return v->seq > l->view.seq
                   ? serve_store_speed_since(l->st, v, l->view.seq, change_row, b, e)
                   : 0;
    if (l->is_over && (v->has_batch ? v->version : 0) == l->over_version) {
        b->is_over = true; /* too big already: not again until the next version */
        return 0;
    }
    b->is_speed = false;
    if (serve_store_batch_all(l->st, v, build_row, b, e) != 0)
        return -1;
    b->is_speed = true;
    return serve_store_speed_since(l->st, v, -1, build_row, b, e);
}

/* Puts a read snapshot in place under the write lock; what it replaced is freed after. */
static void apply(struct serve_live *l, const struct serve_view *v, bool full, struct build *b,
                  bool is_current, bool is_change, const struct sample *now,
                  const struct sample *ago)
{
    struct entry *old = NULL;
    bool was_ready;

    pthread_rwlock_wrlock(&l->rw);
    was_ready = l->is_ready;
    if (full) {
        old = l->map;
        l->map = b->is_over || b->is_oom ? NULL : b->map;
        l->count = b->count;
        b->map = NULL;
    } else {
        for (size_t i = 0; i < b->nchanges && !b->is_oom; i++) {
            struct entry *en = entry_get(&l->map, b->changes[i].id, &b->is_oom, &l->count);
            if (en)
                en->speed = b->changes[i].speed;
        }
    }
    l->is_over = full ? b->is_over : l->is_over || l->count > l->o.max_merchants;
    l->is_built = !l->is_over && !b->is_oom;
    l->view = *v;
    /* A state becomes the one answers come from only when it is current (see live.h); once it
     * is, it stays so, moving forward with every snapshot. */
    l->is_ready = l->is_built && (was_ready || is_current);
    if (l->has_error)
        is_change = true;
    l->has_error = false;
    l->now = *now;
    l->ago = *ago;
    if (is_change)
        l->event_seq++;
    pthread_rwlock_unlock(&l->rw);
    map_free(old);
}

/* One snapshot: read, compare, apply, tell. */
static void refresh(struct serve_live *l)
{
    struct build b = {.l = l};
    struct counters c = {0, 0, 0};
    struct sample now, ago;
    struct lerr e = {{0}};
    struct serve_view v;
    bool full, is_change, is_current, was_over;
    int rc;

    if (serve_store_begin(l->st, &v, &e) != 0) {
        set_error(l, e.msg);
        return;
    }
    full = needs_full(l, &v) || l->has_error;
    rc = read_snapshot(l, &v, full, &b, &c, &e);
    serve_store_end(l->st);
    if (rc != 0) {
        map_free(b.map);
        free(b.changes);
        set_error(l, e.msg);
        return;
    }
    was_over = l->is_over;
    is_current = serve_store_unchanged(l->st);
    /* A checkpoint that changed data, a publish, another speed.db: not a checkpoint alone. */
    is_change = !l->has_refreshed || v.has_batch != l->view.has_batch ||
                v.version != l->view.version || v.seq != l->view.seq ||
                v.speed_file != l->view.speed_file ||
                (v.seq == 0 && v.speed_stamp != l->view.speed_stamp);
    l->has_refreshed = true;
    sample_add(l, &c, &now, &ago);
    apply(l, &v, full, &b, is_current, is_change, &now, &ago);
    if (l->is_over) /* not built again until the next version */
        l->over_version = v.has_batch ? v.version : 0;
    if (l->is_over && !was_over)
        log_warn("serve",
                 "cache_off merchants_over=%zu version=%" PRId64 " note=\"answers read SQLite\"",
                 l->o.max_merchants, v.version);
    map_free(b.map);
    free(b.changes);
    if (is_change && l->o.on_change)
        l->o.on_change(l->o.arg, l);
}

static void *follow(void *arg)
{
    struct serve_live *l = arg;
    int64_t last_ms = INT64_MIN / 2, tick_ms = mono_ms();
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are main's */
    while (!atomic_load(&l->is_stopping)) {
        int64_t t = mono_ms();
        if (t - last_ms >= LIVE_RECHECK_MS || !serve_store_unchanged(l->st)) {
            refresh(l);
            last_ms = t;
        }
        if (t - tick_ms >= LIVE_TICK_MS) {
            tick_ms = t;
            if (l->o.on_tick)
                l->o.on_tick(l->o.arg);
        }
        nanosleep(&(struct timespec){.tv_nsec = LIVE_POLL_MS * 1000000L}, NULL);
    }
    return NULL;
}

struct serve_live *serve_live_start(const struct serve_live_opts *o, struct lerr *e)
{
    struct serve_live *l = calloc(1, sizeof(*l));

    if (!l || !(l->st = serve_store_new(o->data_dir, o->speed_seen))) {
        free(l);
        lerr_set(e, "out of memory");
        return NULL;
    }
    l->o = *o;
    l->over_version = -2;
    pthread_rwlock_init(&l->rw, NULL);
    if (pthread_create(&l->thread, NULL, follow, l) != 0) {
        lerr_set(e, "cannot start the follower thread");
        serve_live_stop(l);
        return NULL;
    }
    l->has_thread = true;
    return l;
}

void serve_live_stop(struct serve_live *l)
{
    if (!l)
        return;
    atomic_store(&l->is_stopping, true);
    if (l->has_thread)
        pthread_join(l->thread, NULL);
    serve_store_free(l->st);
    map_free(l->map);
    pthread_rwlock_destroy(&l->rw);
    free(l);
}

int serve_live_totals(struct serve_live *l, const char *const *ids, size_t n, struct serve_view *v,
                      struct serve_sums *batch, struct serve_sums *speed, struct lerr *e)
{
    int rc = 1;

    if (!l)
        return 0;
    pthread_rwlock_rdlock(&l->rw);
    if (l->has_error) {
        lerr_set(e, "%s", l->error);
        rc = -1;
    } else if (!l->is_ready) {
        rc = 0;
    } else {
        *v = l->view;
        for (size_t i = 0; i < n; i++) {
            struct entry *en;
            HASH_FIND(hh, l->map, ids[i], strlen(ids[i]), en);
            batch[i] = en ? en->batch : (struct serve_sums){0, 0};
            speed[i] = en ? en->speed : (struct serve_sums){0, 0};
        }
    }
    pthread_rwlock_unlock(&l->rw);
    return rc;
}

static void opt_int(char *buf, size_t size, bool has, int64_t val)
{
    if (has)
        snprintf(buf, size, "%" PRId64, val);
    else
        snprintf(buf, size, "null");
}

uint64_t serve_live_event(struct serve_live *l, char *buf)
{
    char version[24], ckpt[24], lag[24], wm[TM_RFC3339_LEN + 2] = "null", err[300] = "";
    struct serve_view v;
    struct sample now, ago;
    uint64_t seq;

    pthread_rwlock_rdlock(&l->rw);
    v = l->view;
    now = l->now;
    ago = l->ago;
    seq = l->event_seq;
    if (l->has_error) /* store.h's words: printable, no quotes */
        snprintf(err, sizeof(err), ",\"error\":\"%s\"", l->error);
    pthread_rwlock_unlock(&l->rw);
    opt_int(version, sizeof(version), v.has_batch, v.version);
    opt_int(ckpt, sizeof(ckpt), v.has_checkpoint, v.checkpoint_ms);
    opt_int(lag, sizeof(lag), v.has_lag, v.lag);
    if (v.has_watermark) {
        wm[0] = '"';
        tm_format_rfc3339(v.watermark_ms, wm + 1);
        strcat(wm, "\"");
    }
    snprintf(buf, LIVE_EVENT_MAX,
             "{\"seq\":%" PRIu64 ",\"batch_version\":%s,\"checkpoint_ms\":%s,\"lag\":%s,"
             "\"watermark\":%s,\"recent\":{\"window_ms\":%d,\"late\":%" PRId64
             ",\"duplicates\":%" PRId64 ",\"rejects\":%" PRId64 "}%s}",
             seq, version, ckpt, lag, wm, LIVE_RECENT_MS, now.late - ago.late,
             now.duplicates - ago.duplicates, now.rejects - ago.rejects, err);
    return seq;
}
