#include "dedup.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "db.h"
#include "ev.h"
#include "tm.h"

/* An id counted since the last flush, waiting for the checkpoint transaction. */
struct pend {
    char merchant_id[EV_ID_MAX + 1], order_id[EV_ID_MAX + 1];
    int64_t epoch, offset;
    uint64_t fp;
    int partition;
};

struct dedup {
    sqlite3 *seen_db; /* borrowed */
    sqlite3_stmt *seen_get, *seen_put, *seen_del, *seen_all, *seen_min;
    char data_dir[PATH_MAX];
    sqlite3 *master; /* NULL until master.db with its orders table exists */
    sqlite3_stmt *master_get;
    bool is_master_due; /* look for a missing master.db at the next look-up */
    bool in_master_txn; /* a read transaction is open: look-ups share one snapshot */

    /* The fingerprint cache: open addressing, linear probing, 0 marks an empty slot.
     * ep[i] is the epoch of fp[i] minus base_epoch, so it fits 32 bits. */
    uint64_t *fp;
    uint32_t *ep;
    size_t mask, n, max;
    int64_t base_epoch;
    bool has_base, is_complete;

    /* Ids added since the last flush, and an index on their fingerprints (index + 1). */
    struct pend *pend;
    size_t npend, cappend;
    uint32_t *pidx;
    size_t pmask;

    int64_t seen_reads, master_reads;
};

static uint64_t fingerprint(const char *m, const char *o)
{
    char buf[2 * EV_ID_MAX + 2];
    size_t ml = strlen(m), ol = strlen(o);
    uint64_t h;

    memcpy(buf, m, ml + 1);
    memcpy(buf + ml + 1, o, ol);
    h = XXH3_64bits(buf, ml + 1 + ol);
    return h ? h : 1; /* 0 marks an empty slot */
}

static bool cache_has(const struct dedup *d, uint64_t h)
{
    for (size_t i = h & d->mask;; i = (i + 1) & d->mask) {
        if (d->fp[i] == h)
            return true;
        if (d->fp[i] == 0)
            return false;
    }
}

/* Places h without counting it (used to re-seat entries after a sweep). */
static void cache_place(struct dedup *d, uint64_t h, uint32_t rel)
{
    size_t i = h & d->mask;

    while (d->fp[i] != 0 && d->fp[i] != h)
        i = (i + 1) & d->mask;
    if (d->fp[i] == h) {
        if (rel > d->ep[i])
            d->ep[i] = rel; /* two ids, one fingerprint: keep it while either lives */
        return;
    }
    d->fp[i] = h;
    d->ep[i] = rel;
    d->n++;
}

static void cache_put(struct dedup *d, uint64_t h, int64_t epoch)
{
    if (!d->has_base) {
        d->base_epoch = epoch;
        d->has_base = true;
    }
    /* A full cache, or an epoch it cannot encode, makes the seen table the authority. */
    if (d->n >= d->max || epoch < d->base_epoch || epoch - d->base_epoch > UINT32_MAX) {
        d->is_complete = false;
        return;
    }
    cache_place(d, h, (uint32_t)(epoch - d->base_epoch));
}

static void cache_clear(struct dedup *d)
{
    memset(d->fp, 0, (d->mask + 1) * sizeof(*d->fp));
    d->n = 0;
    d->is_complete = true;
}

static int cache_load(struct dedup *d, struct lerr *e)
{
    int64_t min_epoch = INT64_MIN;
    int rc;

    cache_clear(d);
    if (db_step_int(d->seen_min, &min_epoch, e) != 0)
        return -1;
    if (min_epoch != INT64_MIN && (!d->has_base || min_epoch < d->base_epoch)) {
        d->base_epoch = min_epoch;
        d->has_base = true;
    }
    while ((rc = sqlite3_step(d->seen_all)) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(d->seen_all, 0);
        const char *o = (const char *)sqlite3_column_text(d->seen_all, 1);
        cache_put(d, fingerprint(m ? m : "", o ? o : ""), sqlite3_column_int64(d->seen_all, 2));
        if (!d->is_complete)
            break;
    }
    sqlite3_reset(d->seen_all);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return lerr_set(e, "cannot read seen ids: %s", sqlite3_errmsg(d->seen_db));
    return 0;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 1024;

    while (p < n)
        p <<= 1;
    return p;
}

struct dedup *dedup_new(sqlite3 *seen_db, const char *data_dir, size_t cache_max, struct lerr *e)
{
    struct dedup *d = calloc(1, sizeof(*d));
    size_t cap;

    if (!d) {
        lerr_set(e, "out of memory");
        return NULL;
    }
    d->seen_db = seen_db;
    d->is_master_due = true;
    snprintf(d->data_dir, sizeof(d->data_dir), "%s", data_dir);
    d->max = cache_max ? cache_max : 1;
    cap = pow2_at_least(d->max + d->max / 3 + 1); /* load stays under 3/4 */
    d->mask = cap - 1;
    d->fp = calloc(cap, sizeof(*d->fp));
    d->ep = calloc(cap, sizeof(*d->ep));
    if (!d->fp || !d->ep) {
        lerr_set(e, "out of memory for a dedup cache of %zu ids", d->max);
        goto fail;
    }
    if (db_prepare(seen_db, "SELECT 1 FROM seen WHERE merchant_id=?1 AND order_id=?2", &d->seen_get,
                   e) != 0 ||
        db_prepare(seen_db,
                   "INSERT OR IGNORE INTO seen(merchant_id, order_id, epoch, partition, offset)"
                   " VALUES(?1, ?2, ?3, ?4, ?5)",
                   &d->seen_put, e) != 0 ||
        db_prepare(seen_db, "DELETE FROM seen WHERE epoch < ?1", &d->seen_del, e) != 0 ||
        db_prepare(seen_db, "SELECT merchant_id, order_id, epoch FROM seen", &d->seen_all, e) !=
            0 ||
        db_prepare(seen_db, "SELECT min(epoch) FROM seen", &d->seen_min, e) != 0)
        goto fail;
    if (cache_load(d, e) != 0)
        goto fail;
    return d;
fail:
    dedup_free(d);
    return NULL;
}

static void master_close(struct dedup *d)
{
    sqlite3_finalize(d->master_get);
    sqlite3_close(d->master);
    d->master_get = NULL;
    d->master = NULL;
    d->in_master_txn = false;
}

void dedup_refresh(struct dedup *d)
{
    if (d->in_master_txn)
        sqlite3_exec(d->master, "COMMIT", NULL, NULL, NULL);
    d->in_master_txn = false;
    d->is_master_due = true;
}

void dedup_free(struct dedup *d)
{
    if (!d)
        return;
    sqlite3_finalize(d->seen_get);
    sqlite3_finalize(d->seen_put);
    sqlite3_finalize(d->seen_del);
    sqlite3_finalize(d->seen_all);
    sqlite3_finalize(d->seen_min);
    master_close(d);
    free(d->fp);
    free(d->ep);
    free(d->pend);
    free(d->pidx);
    free(d);
}

/* Opens master.db once it exists and has its orders table. A missing file holds no ids, so
 * not having it yet is not an error. */
static void master_try_open(struct dedup *d)
{
    char path[PATH_MAX];
    struct lerr ignored;

    /* Called per order, so it looks for the file once per dedup_refresh() (per checkpoint),
     * not per call: reading the clock here cost more than the rest of a new order's check. */
    if (d->master || !d->is_master_due)
        return;
    d->is_master_due = false;
    db_path(d->data_dir, DB_MASTER, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return;
    if (db_open_ro(d->data_dir, DB_MASTER, &d->master, &ignored) != 0)
        return;
    if (sqlite3_prepare_v3(d->master,
                           "SELECT partition, offset FROM orders"
                           " WHERE merchant_id=?1 AND order_id=?2",
                           -1, SQLITE_PREPARE_PERSISTENT, &d->master_get, NULL) != SQLITE_OK)
        master_close(d);
}

/* 1 when master.db holds an earlier copy (rule b), 0 when not, -1 on a read error. */
static int master_has_earlier(struct dedup *d, const char *m, const char *o, int partition,
                              int64_t offset, struct lerr *e)
{
    sqlite3_stmt *st;
    int rc, dup = 0;

    master_try_open(d);
    if (!d->master)
        return 0;
    /* One read transaction until dedup_refresh(): a look-up then costs no lock calls. */
    if (!d->in_master_txn) {
        if (sqlite3_exec(d->master, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
            return lerr_set(e, "cannot read master.db: %s", sqlite3_errmsg(d->master));
        d->in_master_txn = true;
    }
    st = d->master_get;
    d->master_reads++;
    sqlite3_bind_text(st, 1, m, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, o, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t p = sqlite3_column_int64(st, 0), off = sqlite3_column_int64(st, 1);
        dup = p == -1 || p != partition || off < offset;
    } else if (rc != SQLITE_DONE) {
        lerr_set(e, "cannot look up order in master.db: %s", sqlite3_errmsg(d->master));
        dup = -1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return dup;
}

static bool pending_has(const struct dedup *d, uint64_t h, const char *m, const char *o)
{
    if (!d->pidx)
        return false;
    for (size_t i = h & d->pmask; d->pidx[i]; i = (i + 1) & d->pmask) {
        const struct pend *p = &d->pend[d->pidx[i] - 1];
        if (p->fp == h && strcmp(p->merchant_id, m) == 0 && strcmp(p->order_id, o) == 0)
            return true;
    }
    return false;
}

/* 1 when the id is in the seen set (pending or table), 0 when not, -1 on error. */
static int seen_has(struct dedup *d, uint64_t h, const char *m, const char *o, struct lerr *e)
{
    int64_t one = 0;

    if (pending_has(d, h, m, o))
        return 1;
    d->seen_reads++;
    sqlite3_bind_text(d->seen_get, 1, m, -1, SQLITE_STATIC);
    sqlite3_bind_text(d->seen_get, 2, o, -1, SQLITE_STATIC);
    if (db_step_int(d->seen_get, &one, e) != 0)
        return -1;
    return one == 1;
}

int dedup_check(struct dedup *d, const char *merchant_id, const char *order_id, int partition,
                int64_t offset, struct lerr *e)
{
    uint64_t h = fingerprint(merchant_id, order_id);

    /* A hit is confirmed (a collision must not drop an order); a miss is conclusive only
     * while the cache holds every seen id. */
    if (cache_has(d, h) || !d->is_complete) {
        int r = seen_has(d, h, merchant_id, order_id, e);
        if (r != 0)
            return r;
    }
    return master_has_earlier(d, merchant_id, order_id, partition, offset, e);
}

static int pidx_grow(struct dedup *d, struct lerr *e)
{
    size_t cap = pow2_at_least(2 * d->cappend);
    uint32_t *idx = calloc(cap, sizeof(*idx));

    if (!idx)
        return lerr_set(e, "out of memory");
    free(d->pidx);
    d->pidx = idx;
    d->pmask = cap - 1;
    for (size_t k = 0; k < d->npend; k++) {
        size_t i = d->pend[k].fp & d->pmask;
        while (d->pidx[i])
            i = (i + 1) & d->pmask;
        d->pidx[i] = (uint32_t)(k + 1);
    }
    return 0;
}

int dedup_add(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
              int partition, int64_t offset, struct lerr *e)
{
    struct pend *p;
    size_t i, ml = strnlen(merchant_id, EV_ID_MAX), ol = strnlen(order_id, EV_ID_MAX);

    if (d->npend == d->cappend) {
        size_t cap = d->cappend ? 2 * d->cappend : 4096;
        struct pend *np = realloc(d->pend, cap * sizeof(*np));
        if (!np)
            return lerr_set(e, "out of memory");
        d->pend = np;
        d->cappend = cap;
        if (pidx_grow(d, e) != 0)
            return -1;
    }
    p = &d->pend[d->npend];
    memcpy(p->merchant_id, merchant_id, ml);
    p->merchant_id[ml] = '\0';
    memcpy(p->order_id, order_id, ol);
    p->order_id[ol] = '\0';
    p->epoch = epoch;
    p->partition = partition;
    p->offset = offset;
    p->fp = fingerprint(merchant_id, order_id);
    for (i = p->fp & d->pmask; d->pidx[i]; i = (i + 1) & d->pmask)
        ;
    d->pidx[i] = (uint32_t)(++d->npend);
    cache_put(d, p->fp, epoch);
    return 0;
}

static int cmp_pend(const void *a, const void *b)
{
    const struct pend *x = *(const struct pend *const *)a, *y = *(const struct pend *const *)b;
    int c = strcmp(x->merchant_id, y->merchant_id);

    return c ? c : strcmp(x->order_id, y->order_id);
}

int dedup_flush(struct dedup *d, struct lerr *e)
{
    struct pend **order;

    if (d->npend == 0)
        return 0;
    /* Key order turns random B-tree inserts into a sweep across the pages. */
    order = malloc(d->npend * sizeof(*order));
    if (!order)
        return lerr_set(e, "out of memory");
    for (size_t k = 0; k < d->npend; k++)
        order[k] = &d->pend[k];
    qsort(order, d->npend, sizeof(*order), cmp_pend);
    for (size_t k = 0; k < d->npend; k++) {
        const struct pend *p = order[k];
        sqlite3_bind_text(d->seen_put, 1, p->merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(d->seen_put, 2, p->order_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(d->seen_put, 3, p->epoch);
        sqlite3_bind_int(d->seen_put, 4, p->partition);
        sqlite3_bind_int64(d->seen_put, 5, p->offset);
        if (db_step_done(d->seen_put, e) != 0) {
            free(order);
            return -1;
        }
    }
    free(order);
    d->npend = 0;
    memset(d->pidx, 0, (d->pmask + 1) * sizeof(*d->pidx));
    return 0;
}

/* Drops cached ids older than cut_epoch, then re-seats the survivors: each is taken out and
 * placed again, starting just after an empty slot, so no probe chain keeps a hole. */
static void cache_sweep(struct dedup *d, int64_t cut_epoch)
{
    size_t cap = d->mask + 1, start = 0;
    int64_t rel_cut = cut_epoch - d->base_epoch;

    for (size_t i = 0; i < cap; i++) {
        if (d->fp[i] && (int64_t)d->ep[i] < rel_cut) {
            d->fp[i] = 0;
            d->n--;
        }
    }
    while (d->fp[start])
        start++;
    for (size_t k = 1; k <= cap; k++) {
        size_t i = (start + k) & d->mask;
        uint64_t h = d->fp[i];
        if (!h)
            continue;
        d->fp[i] = 0;
        d->n--;
        cache_place(d, h, d->ep[i]);
    }
}

int dedup_expire(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    if (dedup_flush(d, e) != 0) /* a reload below reads the table only */
        return -1;
    sqlite3_bind_int64(d->seen_del, 1, cut_epoch);
    if (db_step_done(d->seen_del, e) != 0)
        return -1;
    if (!d->has_base)
        return 0;
    if (d->is_complete)
        cache_sweep(d, cut_epoch);
    else if (cache_load(d, e) != 0) /* what is left may fit again */
        return -1;
    return 0;
}

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out)
{
    out->cache_ids = d->n;
    out->cache_max = d->max;
    out->pending = d->npend;
    out->is_complete = d->is_complete;
    out->seen_reads = d->seen_reads;
    out->master_reads = d->master_reads;
}
