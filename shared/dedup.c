#include "dedup.h"

#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "db.h"
#include "ev.h"
#include "log.h"
#include "mem.h"
#include "tm.h"

/* An id counted and not yet written; its two strings are in the set's byte arena. */
struct pend {
    uint64_t fp;
    int64_t seq, epoch, offset;
    int32_t partition;
    uint32_t at; /* merchant_id at bytes[at], order_id right after its NUL */
};

/* Ids added (or sealed) since the last write. Their sequence numbers are consecutive, so a
 * cache hit finds its entry by number; an index on their fingerprints is kept only while the
 * cache is incomplete (a miss must then look here too). */
struct pset {
    struct pend *v;
    size_t n, cap;
    char *bytes;
    size_t nbytes, capbytes;
    uint32_t *idx; /* position + 1; 0 marks an empty slot */
    size_t imask;
    bool is_indexed;
};

/* Where an epoch's ids begin in the sequence: the cache sweeps by sequence number. */
struct mark {
    int64_t epoch, first_seq;
};

struct dedup {
    sqlite3 *wdb; /* borrowed: writes, and reads unless a reader was given */
    sqlite3 *rdb; /* borrowed: look-ups */
    int (*quiesce)(void *, struct lerr *);
    void *opaque;
    bool in_rdb_txn;
    char wal_path[PATH_MAX + 8]; /* speed.db-wal, and when settle_log() folds it back */
    int64_t wal_limit;
    sqlite3_stmt *w_put, *w_put_many, *w_del, *r_by_seq, *r_by_id;
    bool has_index;
    char data_dir[PATH_MAX];
    sqlite3 *master; /* NULL until master.db with its orders table exists */
    sqlite3_stmt *master_get;
    bool is_master_due; /* look for a missing master.db at the next look-up */
    bool in_master_txn; /* a read transaction is open: look-ups share one snapshot */

    /* The fingerprint cache: open addressing, linear probing, 0 marks an empty slot.
     * rs[i] is the sequence number of fp[i]'s row minus base_seq, so it fits 32 bits. */
    uint64_t *fp;
    uint32_t *rs;
    size_t cap_bytes_fp, cap_bytes_rs;
    size_t mask, n, max;
    int64_t base_seq;
    bool has_base, is_complete;

    int64_t next_seq, last_epoch;
    struct mark *marks;
    size_t nmarks, capmarks;

    struct pset cur, sealed;

    int64_t seen_reads, master_reads;
};

static uint64_t fingerprint(const char *m, size_t ml, const char *o, size_t ol)
{
    char buf[2 * EV_ID_MAX + 2];
    uint64_t h;

    memcpy(buf, m, ml + 1);
    memcpy(buf + ml + 1, o, ol);
    h = XXH3_64bits(buf, ml + 1 + ol);
    return h ? h : 1; /* 0 marks an empty slot */
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 1024;

    while (p < n)
        p <<= 1;
    return p;
}

/* ---- the fingerprint cache ---- */

static void cache_place(struct dedup *d, uint64_t h, uint32_t rel)
{
    size_t i = h & d->mask;

    while (d->fp[i] != 0)
        i = (i + 1) & d->mask;
    d->fp[i] = h;
    d->rs[i] = rel;
    d->n++;
}

/* False when the id cannot be held (full, or a sequence number it cannot encode): the seen
 * table is then the authority for misses. */
static bool cache_put(struct dedup *d, uint64_t h, int64_t seq)
{
    if (!d->has_base) {
        d->base_seq = seq;
        d->has_base = true;
    }
    if (d->n >= d->max || seq < d->base_seq || seq - d->base_seq > UINT32_MAX) {
        d->is_complete = false;
        return false;
    }
    cache_place(d, h, (uint32_t)(seq - d->base_seq));
    return true;
}

static void cache_clear(struct dedup *d)
{
    if (d->n) /* a new table is zeroed already */
        memset(d->fp, 0, (d->mask + 1) * sizeof(*d->fp));
    d->n = 0;
    d->has_base = false;
    d->is_complete = true;
}

static int add_mark(struct dedup *d, int64_t epoch, int64_t seq)
{
    if (d->nmarks == d->capmarks) {
        size_t cap = d->capmarks ? 2 * d->capmarks : 64;
        struct mark *m = realloc(d->marks, cap * sizeof(*m));
        if (!m)
            return -1;
        d->marks = m;
        d->capmarks = cap;
    }
    d->marks[d->nmarks].epoch = epoch;
    d->marks[d->nmarks].first_seq = seq;
    d->nmarks++;
    return 0;
}

/* The first sequence number of an epoch >= cut_epoch (next_seq when there is none). */
static int64_t seq_of_cut(const struct dedup *d, int64_t cut_epoch)
{
    for (size_t k = 0; k < d->nmarks; k++)
        if (d->marks[k].epoch >= cut_epoch)
            return d->marks[k].first_seq;
    return d->next_seq;
}

static void drop_marks_before(struct dedup *d, int64_t cut_epoch)
{
    size_t k = 0;

    while (k < d->nmarks && d->marks[k].epoch < cut_epoch)
        k++;
    memmove(d->marks, d->marks + k, (d->nmarks - k) * sizeof(*d->marks));
    d->nmarks -= k;
}

/* ---- the seen table ---- */

static void rdb_end(struct dedup *d);
static void settle_log(struct dedup *d);

static int index_make(struct dedup *d, bool want, struct lerr *e)
{
    if (d->has_index == want)
        return 0;
    if (d->quiesce && d->quiesce(d->opaque, e) != 0)
        return -1;
    if (want) {
        /* The sort that builds the index takes up to the page cache's size in memory: make
         * it small meanwhile (the rest spills to a temporary file), so memory stays flat. */
        int64_t pages = 0, t0 = tm_mono_ms();
        char sql[64];
        int rc;
        if (db_query_int(d->wdb, "PRAGMA cache_size", &pages, e) != 0)
            return -1;
        rc = db_exec(d->wdb,
                     "PRAGMA cache_size = -2048;"
                     "CREATE INDEX IF NOT EXISTS seen_by_id ON seen(merchant_id, order_id)",
                     e);
        log_info("dedup", "seen_indexed reason=\"more live ids than dedup_cache=%zu\" ms=%lld",
                 d->max, (long long)(tm_mono_ms() - t0));
        snprintf(sql, sizeof(sql), "PRAGMA cache_size = %lld", (long long)pages);
        if (db_exec(d->wdb, sql, rc == 0 ? e : NULL) != 0 || rc != 0)
            return -1;
#ifdef __GLIBC__
        malloc_trim(0); /* hand the sort's memory back */
#endif
    } else if (db_exec(d->wdb, "DROP INDEX IF EXISTS seen_by_id", e) != 0) {
        return -1;
    } else {
        log_info("dedup", "seen_index_dropped reason=\"the live ids fit dedup_cache=%zu\"", d->max);
    }
    d->has_index = want;
    rdb_end(d); /* a snapshot keeps the schema it began with */
    return 0;
}

/* Takes one id into the marks and the cache while (re)loading, in sequence order. */
static int load_one(struct dedup *d, uint64_t h, int64_t seq, int64_t epoch)
{
    if (d->nmarks == 0 || epoch > d->marks[d->nmarks - 1].epoch) {
        if (add_mark(d, epoch, seq) != 0)
            return -1;
    }
    if (d->is_complete)
        cache_put(d, h, seq);
    if (epoch > d->last_epoch)
        d->last_epoch = epoch;
    if (seq >= d->next_seq)
        d->next_seq = seq + 1;
    return 0;
}

/* Rebuilds the cache and the marks from the seen table, then from the ids not yet written
 * (sealed, then added), which follow the table in sequence order. */
static int cache_load(struct dedup *d, struct lerr *e)
{
    const struct pset *sets[] = {&d->sealed, &d->cur};
    sqlite3_stmt *st;
    int rc;

    cache_clear(d);
    d->nmarks = 0;
    if (db_prepare(d->wdb, "SELECT seq, merchant_id, order_id, epoch FROM seen ORDER BY seq", &st,
                   e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(st, 1);
        const char *o = (const char *)sqlite3_column_text(st, 2);
        m = m ? m : "";
        o = o ? o : "";
        if (load_one(d, fingerprint(m, strlen(m), o, strlen(o)), sqlite3_column_int64(st, 0),
                     sqlite3_column_int64(st, 3)) != 0) {
            sqlite3_finalize(st);
            return lerr_set(e, "out of memory");
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read seen ids: %s", sqlite3_errmsg(d->wdb));
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sets[k]->n; i++)
            if (load_one(d, sets[k]->v[i].fp, sets[k]->v[i].seq, sets[k]->v[i].epoch) != 0)
                return lerr_set(e, "out of memory");
    return index_make(d, !d->is_complete, e);
}

static int prepare_reads(struct dedup *d, struct lerr *e)
{
    sqlite3_finalize(d->r_by_seq);
    sqlite3_finalize(d->r_by_id);
    d->r_by_seq = d->r_by_id = NULL;
    if (db_prepare(d->rdb, "SELECT merchant_id, order_id FROM seen WHERE seq = ?1", &d->r_by_seq,
                   e) != 0 ||
        db_prepare(d->rdb, "SELECT 1 FROM seen WHERE merchant_id = ?1 AND order_id = ?2",
                   &d->r_by_id, e) != 0)
        return -1;
    return 0;
}

/* Rows appended per statement: one step per PUT_MANY ids instead of one per id. */
#define PUT_MANY 64

/* The insert of `rows` seen rows in one statement. */
static int prepare_put(struct dedup *d, int rows, sqlite3_stmt **out, struct lerr *e)
{
    static const char head[] =
        "INSERT INTO seen(seq, merchant_id, order_id, epoch, partition, offset) VALUES";
    char sql[sizeof(head) + PUT_MANY * 16];
    size_t n = sizeof(head) - 1;

    memcpy(sql, head, n);
    for (int i = 0; i < rows; i++) {
        memcpy(sql + n, i ? ",(?,?,?,?,?,?)" : "(?,?,?,?,?,?)", i ? 14 : 13);
        n += i ? 14 : 13;
    }
    sql[n] = '\0';
    return db_prepare(d->wdb, sql, out, e);
}

struct dedup *dedup_new(sqlite3 *wdb, const char *data_dir, size_t cache_max, struct lerr *e)
{
    struct dedup *d = calloc(1, sizeof(*d));
    int64_t n = 0;
    size_t cap;

    if (!d) {
        lerr_set(e, "out of memory");
        return NULL;
    }
    d->wdb = d->rdb = wdb;
    d->is_master_due = true;
    d->next_seq = 1;
    d->last_epoch = INT64_MIN;
    snprintf(d->data_dir, sizeof(d->data_dir), "%s", data_dir);
    d->max = cache_max ? cache_max : 1;
    cap = pow2_at_least(d->max + d->max / 3 + 1); /* load stays under 3/4 */
    d->mask = cap - 1;
    d->fp = mem_reserve(cap * sizeof(*d->fp));
    d->rs = mem_reserve(cap * sizeof(*d->rs));
    d->cap_bytes_fp = cap * sizeof(*d->fp);
    d->cap_bytes_rs = cap * sizeof(*d->rs);
    if (!d->fp || !d->rs) {
        lerr_set(e, "out of memory for a dedup cache of %zu ids", d->max);
        goto fail;
    }
    if (prepare_put(d, 1, &d->w_put, e) != 0 || prepare_put(d, PUT_MANY, &d->w_put_many, e) != 0 ||
        /* Epochs never decrease along seq: the rows to drop are a prefix, found by a scan
         * that stops at the first row to keep. */
        db_prepare(wdb,
                   "DELETE FROM seen WHERE seq < coalesce((SELECT seq FROM seen WHERE epoch >= ?1"
                   " ORDER BY seq LIMIT 1), 9223372036854775807)",
                   &d->w_del, e) != 0 ||
        prepare_reads(d, e) != 0 ||
        db_query_int(wdb,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = "
                     "'seen_by_id'",
                     &n, e) != 0)
        goto fail;
    d->has_index = n > 0;
    if (cache_load(d, e) != 0)
        goto fail;
    return d;
fail:
    dedup_free(d);
    return NULL;
}

void dedup_set_reader(struct dedup *d, sqlite3 *rdb, int (*quiesce)(void *, struct lerr *),
                      void *opaque)
{
    struct lerr e;

    const char *file = sqlite3_db_filename(d->wdb, "main");

    d->rdb = rdb ? rdb : d->wdb;
    d->quiesce = quiesce;
    d->opaque = opaque;
    /* What settle_log() watches: looked up once, not at every checkpoint. */
    snprintf(d->wal_path, sizeof(d->wal_path), "%s-wal", file && *file ? file : "");
    if (!file || !*file)
        d->wal_path[0] = '\0';
    d->wal_limit = 0;
    db_query_int(d->wdb, "PRAGMA journal_size_limit", &d->wal_limit, &e);
    if (d->wal_limit <= 0)
        d->wal_limit = 64 << 20;
    if (prepare_reads(d, &e) != 0) { /* kept NULL: look-ups then fail, saying so */
        sqlite3_finalize(d->r_by_seq);
        d->r_by_seq = d->r_by_id = NULL;
    }
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
    rdb_end(d);
    settle_log(d);
}

static void pset_free(struct pset *p)
{
    free(p->v);
    free(p->bytes);
    free(p->idx);
}

void dedup_free(struct dedup *d)
{
    if (!d)
        return;
    if (d->rdb != d->wdb)
        rdb_end(d);
    sqlite3_finalize(d->w_put);
    sqlite3_finalize(d->w_put_many);
    sqlite3_finalize(d->w_del);
    sqlite3_finalize(d->r_by_seq);
    sqlite3_finalize(d->r_by_id);
    master_close(d);
    mem_release(d->fp, d->cap_bytes_fp);
    mem_release(d->rs, d->cap_bytes_rs);
    free(d->marks);
    pset_free(&d->cur);
    pset_free(&d->sealed);
    free(d);
}

/* ---- master.db ---- */

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

/* ---- the ids not yet written ---- */

static bool pend_is(const struct pset *p, const struct pend *x, const char *m, const char *o)
{
    const char *xm = p->bytes + x->at;

    return strcmp(xm, m) == 0 && strcmp(xm + strlen(xm) + 1, o) == 0;
}

/* The entry holding seq, or NULL when seq is not in this set. */
static const struct pend *pset_at(const struct pset *p, int64_t seq)
{
    if (p->n == 0 || seq < p->v[0].seq || seq >= p->v[0].seq + (int64_t)p->n)
        return NULL;
    return &p->v[seq - p->v[0].seq];
}

static bool pset_has(const struct pset *p, uint64_t h, const char *m, const char *o)
{
    if (!p->is_indexed || p->n == 0)
        return false;
    for (size_t i = h & p->imask; p->idx[i]; i = (i + 1) & p->imask) {
        const struct pend *x = &p->v[p->idx[i] - 1];
        if (x->fp == h && pend_is(p, x, m, o))
            return true;
    }
    return false;
}

static int pset_reindex(struct pset *p, size_t want, struct lerr *e)
{
    size_t cap = pow2_at_least(2 * want);
    uint32_t *idx = calloc(cap, sizeof(*idx));

    if (!idx)
        return lerr_set(e, "out of memory");
    free(p->idx);
    p->idx = idx;
    p->imask = cap - 1;
    p->is_indexed = true;
    for (size_t k = 0; k < p->n; k++) {
        size_t i = p->v[k].fp & p->imask;
        while (p->idx[i])
            i = (i + 1) & p->imask;
        p->idx[i] = (uint32_t)(k + 1);
    }
    return 0;
}

static struct pend *pset_push(struct pset *p, const char *m, size_t ml, const char *o, size_t ol,
                              struct lerr *e)
{
    struct pend *x;
    size_t need = ml + ol + 2;

    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 4096;
        struct pend *v = realloc(p->v, cap * sizeof(*v));
        if (!v) {
            lerr_set(e, "out of memory");
            return NULL;
        }
        p->v = v;
        p->cap = cap;
        if (p->is_indexed && pset_reindex(p, cap, e) != 0)
            return NULL;
    }
    if (p->nbytes + need > p->capbytes) {
        size_t cap = p->capbytes ? 2 * p->capbytes : 65536;
        char *b;
        while (cap < p->nbytes + need)
            cap *= 2;
        if (cap > UINT32_MAX || !(b = realloc(p->bytes, cap))) {
            lerr_set(e, "out of memory");
            return NULL;
        }
        p->bytes = b;
        p->capbytes = cap;
    }
    x = &p->v[p->n];
    x->at = (uint32_t)p->nbytes;
    memcpy(p->bytes + p->nbytes, m, ml);
    p->bytes[p->nbytes + ml] = '\0';
    memcpy(p->bytes + p->nbytes + ml + 1, o, ol);
    p->bytes[p->nbytes + ml + 1 + ol] = '\0';
    p->nbytes += need;
    p->n++;
    return x;
}

static void pset_index_last(struct pset *p)
{
    size_t i = p->v[p->n - 1].fp & p->imask;

    while (p->idx[i])
        i = (i + 1) & p->imask;
    p->idx[i] = (uint32_t)p->n;
}

static void pset_clear(struct pset *p)
{
    if (p->is_indexed && p->n)
        memset(p->idx, 0, (p->imask + 1) * sizeof(*p->idx));
    p->n = 0;
    p->nbytes = 0;
}

/* ---- look-ups ---- */

/* Look-ups through a reader share one read transaction until dedup_refresh() (a transaction
 * per look-up cost two lock calls each, and halved the overflowed rate). On the writer's own
 * connection they read inside the writer's transaction. */
static int rdb_begin(struct dedup *d, struct lerr *e)
{
    if (!d->r_by_seq)
        return lerr_set(e, "cannot read the seen table");
    if (d->rdb == d->wdb || d->in_rdb_txn)
        return 0;
    if (sqlite3_exec(d->rdb, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return lerr_set(e, "cannot read speed.db: %s", sqlite3_errmsg(d->rdb));
    d->in_rdb_txn = true;
    return 0;
}

static void rdb_end(struct dedup *d)
{
    if (d->in_rdb_txn)
        sqlite3_exec(d->rdb, "COMMIT", NULL, NULL, NULL);
    d->in_rdb_txn = false;
}

/* A reader that always holds some snapshot keeps the writer from ever restarting the
 * write-ahead log, which then only grows (534 MB after 2M events, cache overflowed). So when
 * the log has outgrown journal_size_limit (64 MiB if unset), and no snapshot of ours is open,
 * fold it into the file so that the next commit restarts it. Other processes' readers
 * (lambda-serve) hold theirs for one request: the busy timeout covers them. */
static void settle_log(struct dedup *d)
{
    struct stat sb;

    if (d->rdb == d->wdb || !d->wal_path[0] || stat(d->wal_path, &sb) != 0 ||
        sb.st_size <= d->wal_limit)
        return;
    /* RESTART, not TRUNCATE: the next commit starts the log over, and journal_size_limit
     * shrinks the file then, the path SQLite takes on its own when no reader holds on. */
    if (sqlite3_wal_checkpoint_v2(d->wdb, "main", SQLITE_CHECKPOINT_RESTART, NULL, NULL) !=
        SQLITE_OK)
        log_warn("dedup", "log_not_restarted file=\"%s\" bytes=%lld err=\"%s\"", d->wal_path,
                 (long long)sb.st_size, sqlite3_errmsg(d->wdb));
}

/* 1 when the row seq holds (m, o), 0 when not (or there is no such row), -1 on error. */
static int row_is(struct dedup *d, int64_t seq, const char *m, const char *o, struct lerr *e)
{
    sqlite3_stmt *st = d->r_by_seq;
    int rc, same = 0;

    d->seen_reads++;
    sqlite3_bind_int64(st, 1, seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *rm = (const char *)sqlite3_column_text(st, 0);
        const char *ro = (const char *)sqlite3_column_text(st, 1);
        same = rm && ro && strcmp(rm, m) == 0 && strcmp(ro, o) == 0;
    } else if (rc != SQLITE_DONE) {
        same = lerr_set(e, "cannot read seen ids: %s", sqlite3_errmsg(d->rdb));
    }
    sqlite3_reset(st);
    return same;
}

/* 1 when the id (fingerprint h) is in the seen set, 0 when not, -1 on error. */
static int seen_has(struct dedup *d, uint64_t h, const char *m, const char *o, struct lerr *e)
{
    int64_t one = 0;

    for (size_t i = h & d->mask; d->fp[i]; i = (i + 1) & d->mask) {
        int64_t seq = d->base_seq + d->rs[i];
        const struct pset *p;
        const struct pend *x;
        int r;
        if (d->fp[i] != h)
            continue;
        p = &d->cur;
        if (!(x = pset_at(p, seq)))
            x = pset_at(p = &d->sealed, seq);
        if (x) { /* not written yet */
            if (pend_is(p, x, m, o))
                return 1;
            continue;
        }
        if (rdb_begin(d, e) != 0)
            return -1;
        if ((r = row_is(d, seq, m, o, e)) != 0)
            return r;
    }
    if (d->is_complete)
        return 0; /* every seen id is in the cache */
    if (pset_has(&d->cur, h, m, o) || pset_has(&d->sealed, h, m, o))
        return 1;
    if (rdb_begin(d, e) != 0)
        return -1;
    d->seen_reads++;
    sqlite3_bind_text(d->r_by_id, 1, m, -1, SQLITE_STATIC);
    sqlite3_bind_text(d->r_by_id, 2, o, -1, SQLITE_STATIC);
    if (db_step_int(d->r_by_id, &one, e) != 0)
        return -1;
    return one == 1;
}

int dedup_check(struct dedup *d, const char *merchant_id, const char *order_id, int partition,
                int64_t offset, struct lerr *e)
{
    size_t ml = strnlen(merchant_id, EV_ID_MAX), ol = strnlen(order_id, EV_ID_MAX);
    int r = seen_has(d, fingerprint(merchant_id, ml, order_id, ol), merchant_id, order_id, e);

    if (r != 0)
        return r;
    return master_has_earlier(d, merchant_id, order_id, partition, offset, e);
}

/* From the first id the cache cannot hold, misses ask the table and the unwritten sets:
 * index both by id. */
static int overflowed(struct dedup *d, struct lerr *e)
{
    /* Let a commit under way finish first: it may expire enough ids to fit again. */
    if (d->quiesce && d->quiesce(d->opaque, e) != 0)
        return -1;
    if (d->is_complete)
        return 0;
    if ((!d->cur.is_indexed && pset_reindex(&d->cur, d->cur.cap, e) != 0) ||
        (!d->sealed.is_indexed && pset_reindex(&d->sealed, d->sealed.cap, e) != 0))
        return -1;
    return index_make(d, true, e);
}

static int add(struct dedup *d, uint64_t h, const char *m, size_t ml, const char *o, size_t ol,
               int64_t epoch, int partition, int64_t offset, struct lerr *e)
{
    struct pend *x;

    if (epoch < d->last_epoch)
        return lerr_set(e, "dedup: epoch %lld after %lld (epochs must not decrease)",
                        (long long)epoch, (long long)d->last_epoch);
    x = pset_push(&d->cur, m, ml, o, ol, e);
    if (!x)
        return -1;
    x->fp = h;
    x->seq = d->next_seq++;
    x->epoch = epoch;
    x->partition = partition;
    x->offset = offset;
    if (d->cur.is_indexed)
        pset_index_last(&d->cur);
    if (epoch > d->last_epoch || d->nmarks == 0) {
        if (add_mark(d, epoch, x->seq) != 0)
            return lerr_set(e, "out of memory");
        d->last_epoch = epoch;
    }
    if (!cache_put(d, h, x->seq) && overflowed(d, e) != 0)
        return -1;
    return 0;
}

int dedup_add(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
              int partition, int64_t offset, struct lerr *e)
{
    size_t ml = strnlen(merchant_id, EV_ID_MAX), ol = strnlen(order_id, EV_ID_MAX);

    return add(d, fingerprint(merchant_id, ml, order_id, ol), merchant_id, ml, order_id, ol, epoch,
               partition, offset, e);
}

uint64_t dedup_key(const struct dedup *d, const char *merchant_id, const char *order_id)
{
    uint64_t h = fingerprint(merchant_id, strnlen(merchant_id, EV_ID_MAX), order_id,
                             strnlen(order_id, EV_ID_MAX));

    __builtin_prefetch(&d->fp[h & d->mask]);
    __builtin_prefetch(&d->rs[h & d->mask]);
    return h;
}

int dedup_admit(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
                int partition, int64_t offset, struct lerr *e)
{
    return dedup_admit_key(d, dedup_key(d, merchant_id, order_id), merchant_id, order_id, epoch,
                           partition, offset, e);
}

int dedup_admit_key(struct dedup *d, uint64_t h, const char *merchant_id, const char *order_id,
                    int64_t epoch, int partition, int64_t offset, struct lerr *e)
{
    size_t ml = strnlen(merchant_id, EV_ID_MAX), ol = strnlen(order_id, EV_ID_MAX);
    int r = seen_has(d, h, merchant_id, order_id, e);

    if (r == 0)
        r = master_has_earlier(d, merchant_id, order_id, partition, offset, e);
    if (r != 0)
        return r;
    return add(d, h, merchant_id, ml, order_id, ol, epoch, partition, offset, e);
}

/* ---- the writing side ---- */

int dedup_seal(struct dedup *d, struct lerr *e)
{
    struct pset t;

    if (d->sealed.n)
        return lerr_set(e, "dedup: sealed ids were not released");
    t = d->sealed;
    d->sealed = d->cur;
    d->cur = t;
    return 0;
}

static void bind_pend(sqlite3_stmt *st, int at, const struct pset *p, const struct pend *x)
{
    const char *m = p->bytes + x->at;

    sqlite3_bind_int64(st, at + 1, x->seq);
    sqlite3_bind_text(st, at + 2, m, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, at + 3, m + strlen(m) + 1, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, at + 4, x->epoch);
    sqlite3_bind_int(st, at + 5, x->partition);
    sqlite3_bind_int64(st, at + 6, x->offset);
}

int dedup_write_sealed(struct dedup *d, struct lerr *e)
{
    const struct pset *p = &d->sealed;
    size_t k = 0;

    for (; k + PUT_MANY <= p->n; k += PUT_MANY) {
        for (int i = 0; i < PUT_MANY; i++)
            bind_pend(d->w_put_many, 6 * i, p, &p->v[k + (size_t)i]);
        if (db_step_done(d->w_put_many, e) != 0)
            return -1;
    }
    for (; k < p->n; k++) {
        bind_pend(d->w_put, 0, p, &p->v[k]);
        if (db_step_done(d->w_put, e) != 0)
            return -1;
    }
    return 0;
}

void dedup_release_sealed(struct dedup *d)
{
    pset_clear(&d->sealed);
}

int dedup_flush(struct dedup *d, struct lerr *e)
{
    if (dedup_seal(d, e) != 0 || dedup_write_sealed(d, e) != 0)
        return -1;
    dedup_release_sealed(d);
    return 0;
}

/* Drops cached ids below cut_seq, then re-seats the survivors: each is taken out and placed
 * again, starting just after an empty slot, so no probe chain keeps a hole. */
static void cache_sweep(struct dedup *d, int64_t cut_seq)
{
    size_t cap = d->mask + 1, start = 0;
    int64_t rel_cut = cut_seq - d->base_seq;

    if (rel_cut <= 0)
        return;
    for (size_t i = 0; i < cap; i++) {
        if (d->fp[i] && (int64_t)d->rs[i] < rel_cut) {
            d->fp[i] = 0;
            d->n--;
        }
    }
    while (start < cap && d->fp[start])
        start++;
    for (size_t k = 1; k <= cap; k++) {
        size_t i = (start + k) & d->mask;
        uint64_t h = d->fp[i];
        if (!h)
            continue;
        d->fp[i] = 0;
        d->n--;
        cache_place(d, h, d->rs[i]);
    }
}

int dedup_expire_rows(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    sqlite3_bind_int64(d->w_del, 1, cut_epoch);
    return db_step_done(d->w_del, e);
}

int dedup_expire_cache(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    if (d->is_complete) {
        cache_sweep(d, seq_of_cut(d, cut_epoch));
        drop_marks_before(d, cut_epoch);
        return 0;
    }
    if (d->quiesce && d->quiesce(d->opaque, e) != 0)
        return -1;
    return cache_load(d, e); /* what is left may fit again (read through wdb) */
}

int dedup_expire(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    if (dedup_flush(d, e) != 0) /* a reload below reads the table only */
        return -1;
    if (dedup_expire_rows(d, cut_epoch, e) != 0)
        return -1;
    return dedup_expire_cache(d, cut_epoch, e);
}

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out)
{
    out->cache_ids = d->n;
    out->cache_max = d->max;
    out->pending = d->cur.n + d->sealed.n;
    out->is_complete = d->is_complete;
    out->has_index = d->has_index;
    out->seen_reads = d->seen_reads;
    out->master_reads = d->master_reads;
}
