#include "dedup.h"

#include <limits.h>
#include <stdarg.h>
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
 * table hit finds its entry by number. */
struct pset {
    struct pend *v;
    size_t n, cap;
    char *bytes;
    size_t nbytes, capbytes;
};

/* Where an epoch's ids begin in the sequence: expiry cuts by sequence number. */
struct mark {
    int64_t epoch, first_seq;
};

/* A table of fingerprints: open addressing with linear probing from the slot that the
 * fingerprint's high bits name, so slot order is (nearly) fingerprint order and a spill in
 * slot order appends to a generation. 0 marks an empty slot; rs[i] is the sequence number of
 * fp[i]'s id minus base, so it fits 32 bits. */
struct ftab {
    uint64_t *fp;
    uint32_t *rs;
    size_t mask, n, max, bytes_fp, bytes_rs;
    unsigned shift;
    int64_t base, hi;
    bool has_base;
};

/* A generation: the fingerprints of spilled ids, in a table of their own (seen_fp_<gen>,
 * keyed by fingerprint), listed in seen_gens once written whole. Merged MERGE_FAN at a time
 * into one of the next level, so a look-up asks few of them; dropped whole once expiry passes
 * hi. */
struct gen {
    int64_t gen, lo, hi; /* sequence numbers lo..hi */
    int level;
    sqlite3_stmt *probe; /* on the reader: the seqs of a fingerprint */
};

/* The spill of the older table into a new generation, in slot order, a slice per checkpoint.
 * The reading side starts it (hold) and paces it (dedup_seal moves `until`), both while no
 * write is under way; the writing side moves `next` and sets is_done in the transaction that
 * writes the last slice and the generation's seen_gens row. */
struct spill {
    struct ftab *t; /* NULL when no spill is under way */
    int64_t gen, lo, hi;
    size_t next, until;
    bool is_done;
    sqlite3_stmt *w_one, *w_many; /* the writer's inserts into seen_fp_<gen> */
};

/* The merge of MERGE_FAN or more adjacent generations of one level (all of such a run, up to
 * MERGE_MAX: a backlog of small ones collapses at once) into a new one of the next, a slice of
 * the fingerprint range per step; started and paced like a spill. The sources stay whole
 * until the transaction that writes the last slice lists the new generation and unlists them. */
#define MERGE_FAN  4
#define MERGE_MAX  64
#define SLICE_ROWS 32768 /* the rows a merge slice aims at */
struct merge {
    bool is_on, is_done;
    int nsrc;
    int64_t src[MERGE_MAX];
    int64_t gen, lo, hi;
    int level;
    uint32_t next, until, slices;
};

struct dedup {
    sqlite3 *wdb; /* borrowed: writes, and reads unless a reader was given */
    sqlite3 *rdb; /* borrowed: look-ups */
    int (*quiesce)(void *, struct lerr *);
    void *opaque;
    bool in_rdb_txn;
    char wal_path[PATH_MAX + 8]; /* speed.db-wal, and when settle_log() folds it back */
    int64_t wal_limit;
    sqlite3_stmt *w_put, *w_put_many, *w_del, *w_gens_below, *r_by_seq;
    char data_dir[PATH_MAX];
    sqlite3 *master; /* NULL until master.db with its orders table exists */
    sqlite3_stmt *master_get;
    bool is_master_due; /* look for a missing master.db at the next look-up */
    bool in_master_txn; /* a read transaction is open: look-ups share one snapshot */

    size_t max;             /* the bound on fingerprints in memory */
    struct ftab tabs[2];    /* each holds max/2 */
    struct ftab *act, *old; /* new ids go to act; old is being spilled, or empty */
    struct spill sp;
    struct merge mg;
    struct gen *gens; /* generations, oldest first */
    size_t ngens, capgens;
    /* A generation's table is dropped only once no look-up can ask it: the writing side
     * unlists it from seen_gens (expiry, or the end of a merge) and notes it in `unlisted`;
     * the reading side, after that commit, forgets it and moves it to `doomed`; the next
     * write drops the table. A crash in between leaves a table no generation lists, dropped
     * at the next start. */
    struct idlist {
        int64_t *v;
        size_t n, cap;
    } unlisted, doomed;
    bool is_bloom_stale; /* generations went by expiry: the filter holds their bits */
    int64_t next_gen;
    uint64_t *bloom; /* over every spilled fingerprint: 64-byte blocks */
    size_t bloom_bytes;
    unsigned bloom_shift;

    int64_t next_seq, last_epoch;
    int64_t written_upto; /* the writing side's: the last seq written */
    struct mark *marks;
    size_t nmarks, capmarks;

    struct pset cur, sealed;

    int64_t seen_reads, spill_reads, master_reads;
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

/* A generation's key for a fingerprint: signed order is then unsigned order. */
static int64_t fp_key(uint64_t h)
{
    return (int64_t)(h ^ 0x8000000000000000ULL);
}

static uint64_t fp_of_key(int64_t key)
{
    return (uint64_t)key ^ 0x8000000000000000ULL;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 1024;

    while (p < n)
        p <<= 1;
    return p;
}

/* ---- fingerprint tables ---- */

static int ftab_init(struct ftab *t, size_t max)
{
    size_t cap = pow2_at_least(max + max / 3 + 1); /* load stays under 3/4 */

    t->max = max;
    t->mask = cap - 1;
    t->shift = 64u - (unsigned)__builtin_ctzll(cap);
    t->bytes_fp = cap * sizeof(*t->fp);
    t->bytes_rs = cap * sizeof(*t->rs);
    t->fp = mem_reserve(t->bytes_fp);
    t->rs = mem_reserve(t->bytes_rs);
    return t->fp && t->rs ? 0 : -1;
}

static void ftab_free(struct ftab *t)
{
    mem_release(t->fp, t->bytes_fp);
    mem_release(t->rs, t->bytes_rs);
}

static void ftab_place(struct ftab *t, uint64_t h, uint32_t rel)
{
    size_t i = (size_t)(h >> t->shift);

    while (t->fp[i] != 0)
        i = (i + 1) & t->mask;
    t->fp[i] = h;
    t->rs[i] = rel;
    t->n++;
}

/* False when the table cannot take the id (full, or a number it cannot encode). */
static bool ftab_put(struct ftab *t, uint64_t h, int64_t seq)
{
    if (!t->has_base) {
        t->base = t->hi = seq;
        t->has_base = true;
    }
    if (t->n >= t->max || seq < t->base || seq - t->base > UINT32_MAX)
        return false;
    ftab_place(t, h, (uint32_t)(seq - t->base));
    if (seq > t->hi)
        t->hi = seq;
    return true;
}

static void ftab_clear(struct ftab *t)
{
    if (t->n) /* a new table is zeroed already */
        memset(t->fp, 0, (t->mask + 1) * sizeof(*t->fp));
    t->n = 0;
    t->has_base = false;
}

/* Drops the ids below cut_seq, then re-seats the survivors: each is taken out and placed
 * again, starting just after an empty slot, so no probe chain keeps a hole. How many went. */
static size_t ftab_sweep(struct ftab *t, int64_t cut_seq)
{
    size_t cap = t->mask + 1, start = 0, before = t->n;
    int64_t rel_cut = cut_seq - t->base;

    if (t->n == 0 || rel_cut <= 0)
        return 0;
    for (size_t i = 0; i < cap; i++) {
        if (t->fp[i] && (int64_t)t->rs[i] < rel_cut) {
            t->fp[i] = 0;
            t->n--;
        }
    }
    if (t->n == before)
        return 0;
    while (start < cap && t->fp[start])
        start++;
    for (size_t k = 1; k <= cap; k++) {
        size_t i = (start + k) & t->mask;
        uint64_t h = t->fp[i];
        if (!h)
            continue;
        t->fp[i] = 0;
        t->n--;
        ftab_place(t, h, t->rs[i]);
    }
    if (t->n == 0)
        t->has_base = false;
    return before - t->n;
}

/* ---- the Bloom filter over spilled fingerprints ---- */

#define BLOOM_K 6 /* bits per fingerprint, all in one 64-byte block */

static uint64_t remix(uint64_t h) /* the bits inside a block, independent of its number */
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* The 64-byte block of fingerprint h. */
static uint64_t *bloom_block(const struct dedup *d, uint64_t h)
{
    return d->bloom + ((h >> d->bloom_shift) << 3);
}

static void bloom_add(struct dedup *d, uint64_t h)
{
    uint64_t *b = bloom_block(d, h), g = remix(h);

    for (int k = 0; k < BLOOM_K; k++, g >>= 9)
        b[(g >> 6) & 7] |= 1ULL << (g & 63);
}

static bool bloom_maybe(const struct dedup *d, uint64_t h)
{
    const uint64_t *b = bloom_block(d, h);
    uint64_t g = remix(h);

    for (int k = 0; k < BLOOM_K; k++, g >>= 9)
        if (!(b[(g >> 6) & 7] & (1ULL << (g & 63))))
            return false;
    return true;
}

static void bloom_add_table(struct dedup *d, const struct ftab *t)
{
    for (size_t i = 0; t->n && i <= t->mask; i++)
        if (t->fp[i])
            bloom_add(d, t->fp[i]);
}

/* ---- epochs along the sequence ---- */

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

/* ---- the seen table and its snapshots ---- */

/* Rows appended per statement: one step per PUT_MANY rows instead of one per row. */
#define PUT_MANY 64

/* An insert of `rows` rows of `cols` values each, in one statement. */
static int prepare_rows(sqlite3 *db, const char *head, int cols, int rows, sqlite3_stmt **out,
                        struct lerr *e)
{
    char sql[256 + PUT_MANY * 20];
    size_t n = (size_t)snprintf(sql, sizeof(sql), "%s", head);

    for (int i = 0; i < rows; i++) {
        sql[n++] = i ? ',' : ' ';
        sql[n++] = '(';
        for (int c = 0; c < cols; c++) {
            if (c)
                sql[n++] = ',';
            sql[n++] = '?';
        }
        sql[n++] = ')';
    }
    sql[n] = '\0';
    return db_prepare(db, sql, out, e);
}

/* Runs one statement made from fmt (table names vary: seen_fp_<gen>). */
static int exec_fmt(sqlite3 *db, struct lerr *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int exec_fmt(sqlite3 *db, struct lerr *e, const char *fmt, ...)
{
    char sql[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return db_exec(db, sql, e);
}

static int gen_prepare(struct dedup *d, struct gen *g, struct lerr *e)
{
    char sql[96];

    sqlite3_finalize(g->probe);
    g->probe = NULL;
    snprintf(sql, sizeof(sql), "SELECT seq FROM seen_fp_%lld WHERE fp = ?1", (long long)g->gen);
    return db_prepare(d->rdb, sql, &g->probe, e);
}

static int prepare_reads(struct dedup *d, struct lerr *e)
{
    for (size_t k = 0; k < d->ngens; k++) { /* prepared again at their next use */
        sqlite3_finalize(d->gens[k].probe);
        d->gens[k].probe = NULL;
    }
    sqlite3_finalize(d->r_by_seq);
    d->r_by_seq = NULL;
    return db_prepare(d->rdb, "SELECT merchant_id, order_id FROM seen WHERE seq = ?1", &d->r_by_seq,
                      e);
}

static int prepare_writes(struct dedup *d, struct lerr *e)
{
    static const char put[] =
        "INSERT INTO seen(seq, merchant_id, order_id, epoch, partition, offset) VALUES";

    if (prepare_rows(d->wdb, put, 6, 1, &d->w_put, e) != 0 ||
        prepare_rows(d->wdb, put, 6, PUT_MANY, &d->w_put_many, e) != 0 ||
        /* Epochs never decrease along seq: the rows to drop are a prefix, found by a scan
         * that stops at the first row to keep. */
        db_prepare(d->wdb,
                   "DELETE FROM seen WHERE seq < coalesce((SELECT seq FROM seen WHERE epoch >= ?1"
                   " ORDER BY seq LIMIT 1), 9223372036854775807)",
                   &d->w_del, e) != 0 ||
        /* The generations below the first id kept, or below the first not yet written when
         * none is kept. */
        db_prepare(d->wdb,
                   "SELECT gen FROM seen_gens WHERE hi < coalesce((SELECT min(seq) FROM seen), ?1)"
                   " ORDER BY gen",
                   &d->w_gens_below, e) != 0)
        return -1;
    return 0;
}

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
/* ---- master.db ---- */

static void master_close(struct dedup *d)
{
    sqlite3_finalize(d->master_get);
    sqlite3_close(d->master);
    d->master_get = NULL;
    d->master = NULL;
    d->in_master_txn = false;
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

static void pset_free(struct pset *p)
{
    free(p->v);
    free(p->bytes);
}

/* ---- look-ups ---- */

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

/* 1 when the id numbered seq is (m, o): from the ids not yet written, else from its row. A
 * fingerprint match alone is never taken for a duplicate, so a collision cannot drop an
 * order. */
static int id_is(struct dedup *d, int64_t seq, const char *m, const char *o, struct lerr *e)
{
    const struct pset *p = &d->cur;
    const struct pend *x = pset_at(p, seq);

    if (!x)
        x = pset_at(p = &d->sealed, seq);
    if (x)
        return pend_is(p, x, m, o);
    if (rdb_begin(d, e) != 0)
        return -1;
    return row_is(d, seq, m, o, e);
}

static int ftab_has(struct dedup *d, const struct ftab *t, uint64_t h, const char *m, const char *o,
                    struct lerr *e)
{
    if (t->n == 0)
        return 0;
    for (size_t i = (size_t)(h >> t->shift); t->fp[i]; i = (i + 1) & t->mask) {
        int r;
        if (t->fp[i] == h && (r = id_is(d, t->base + t->rs[i], m, o, e)) != 0)
            return r;
    }
    return 0;
}

/* The generations, newest first, once the filter says the id may be among them. */
static int spilled_has(struct dedup *d, uint64_t h, const char *m, const char *o, struct lerr *e)
{
    if (d->ngens == 0 || !bloom_maybe(d, h))
        return 0;
    if (rdb_begin(d, e) != 0)
        return -1;
    for (size_t k = d->ngens; k-- > 0;) {
        sqlite3_stmt *st;
        int rc = SQLITE_DONE, r = 0;
        if (!d->gens[k].probe && gen_prepare(d, &d->gens[k], e) != 0)
            return -1;
        st = d->gens[k].probe;
        d->spill_reads++;
        sqlite3_bind_int64(st, 1, fp_key(h));
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
            r = id_is(d, sqlite3_column_int64(st, 0), m, o, e);
        if (r == 0 && rc != SQLITE_DONE)
            r = lerr_set(e, "cannot read spilled ids: %s", sqlite3_errmsg(d->rdb));
        sqlite3_reset(st);
        if (r != 0)
            return r;
    }
    return 0;
}

/* 1 when the id (fingerprint h) is in the seen set, 0 when not, -1 on error. */
static int seen_has(struct dedup *d, uint64_t h, const char *m, const char *o, struct lerr *e)
{
    int r = ftab_has(d, d->act, h, m, o, e);

    if (r == 0)
        r = ftab_has(d, d->old, h, m, o, e);
    if (r == 0)
        r = spilled_has(d, h, m, o, e);
    return r;
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

/* ---- generations: spills and merges ---- */

static int gens_reserve(struct dedup *d, struct lerr *e)
{
    if (d->ngens < d->capgens)
        return 0;
    size_t cap = d->capgens ? 2 * d->capgens : 16;
    struct gen *g = realloc(d->gens, cap * sizeof(*g));
    if (!g)
        return lerr_set(e, "out of memory");
    d->gens = g;
    d->capgens = cap;
    return 0;
}

/* Puts g into the list, in sequence order; its probe is prepared at its first use, once the
 * reader can see the table (after the commit that wrote it). */
static int gens_insert(struct dedup *d, struct gen g, struct lerr *e)
{
    size_t k = d->ngens;

    if (gens_reserve(d, e) != 0)
        return -1;
    while (k > 0 && d->gens[k - 1].lo > g.lo)
        k--;
    memmove(d->gens + k + 1, d->gens + k, (d->ngens - k) * sizeof(*d->gens));
    g.probe = NULL;
    d->gens[k] = g;
    d->ngens++;
    rdb_end(d); /* the next look-up must see the table just committed */
    return 0;
}

static void gens_remove(struct dedup *d, size_t k)
{
    sqlite3_finalize(d->gens[k].probe);
    memmove(d->gens + k, d->gens + k + 1, (d->ngens - k - 1) * sizeof(*d->gens));
    d->ngens--;
}

static int idlist_push(struct idlist *l, int64_t v, struct lerr *e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        int64_t *nv = realloc(l->v, cap * sizeof(*nv));
        if (!nv)
            return lerr_set(e, "out of memory");
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

/* Unlists generation g from seen_gens (the writing side, inside its transaction). */
static int unlist(struct dedup *d, int64_t g, struct lerr *e)
{
    if (idlist_push(&d->unlisted, g, e) != 0)
        return -1;
    return exec_fmt(d->wdb, e, "DELETE FROM seen_gens WHERE gen = %lld", (long long)g);
}

/* Drops the tables the reading side has forgotten (the writing side). */
static int drop_doomed(struct dedup *d, struct lerr *e)
{
    for (; d->doomed.n > 0; d->doomed.n--)
        if (exec_fmt(d->wdb, e, "DROP TABLE IF EXISTS seen_fp_%lld",
                     (long long)d->doomed.v[d->doomed.n - 1]) != 0)
            return -1;
    return 0;
}

static int create_gen_table(sqlite3 *db, int64_t gen, struct lerr *e)
{
    return exec_fmt(db, e,
                    "CREATE TABLE IF NOT EXISTS seen_fp_%lld(fp INTEGER NOT NULL,"
                    " seq INTEGER NOT NULL, PRIMARY KEY(fp, seq)) WITHOUT ROWID",
                    (long long)gen);
}

static int bind_fp_row(sqlite3_stmt *st, int row, uint64_t h, int64_t seq)
{
    sqlite3_bind_int64(st, 2 * row + 1, fp_key(h));
    return sqlite3_bind_int64(st, 2 * row + 2, seq);
}

/* Writes the spill's slots [next, until) to its generation's table, and the seen_gens row
 * once every slot is written. The writing side, inside its transaction. */
static int spill_write(struct dedup *d, struct lerr *e)
{
    struct spill *sp = &d->sp;
    const struct ftab *t = sp->t;
    size_t cap, until;
    int nb = 0;

    if (!t || sp->is_done)
        return 0;
    if (!sp->w_one) {
        char head[96];
        snprintf(head, sizeof(head), "INSERT OR IGNORE INTO seen_fp_%lld(fp, seq) VALUES",
                 (long long)sp->gen);
        if (create_gen_table(d->wdb, sp->gen, e) != 0 ||
            prepare_rows(d->wdb, head, 2, 1, &sp->w_one, e) != 0 ||
            prepare_rows(d->wdb, head, 2, PUT_MANY, &sp->w_many, e) != 0)
            return -1;
    }
    cap = t->mask + 1;
    until = sp->until < cap ? sp->until : cap;
    for (; sp->next < until; sp->next++) {
        uint64_t h = t->fp[sp->next];
        if (!h)
            continue;
        bind_fp_row(sp->w_many, nb, h, t->base + t->rs[sp->next]);
        if (++nb == PUT_MANY) {
            if (db_step_done(sp->w_many, e) != 0)
                return -1;
            nb = 0;
        }
    }
    /* The rows bound and not yet written: take them back, one per statement. */
    for (size_t i = sp->next; nb > 0; i--) {
        uint64_t h = t->fp[i - 1];
        if (!h)
            continue;
        nb--;
        bind_fp_row(sp->w_one, 0, h, t->base + t->rs[i - 1]);
        if (db_step_done(sp->w_one, e) != 0)
            return -1;
    }
    if (sp->next < cap)
        return 0;
    if (exec_fmt(d->wdb, e,
                 "INSERT OR REPLACE INTO seen_gens(gen, lo, hi, level) VALUES(%lld, %lld, %lld, 0)",
                 (long long)sp->gen, (long long)sp->lo, (long long)sp->hi) != 0)
        return -1;
    sqlite3_finalize(sp->w_one);
    sqlite3_finalize(sp->w_many);
    sp->w_one = sp->w_many = NULL;
    sp->is_done = true;
    return 0;
}

/* The key where slice k of n begins (n > 1, 0 < k < n). */
static int64_t slice_key(uint32_t k, uint32_t n)
{
    return fp_key((uint64_t)k * (UINT64_MAX / n + 1));
}

/* Copies the merge's slices [next, until) from the sources into the new generation; with the
 * last, lists it and drops the sources. The writing side, inside its transaction. */
static int merge_write(struct dedup *d, struct lerr *e)
{
    struct merge *mg = &d->mg;

    if (!mg->is_on || mg->is_done)
        return 0;
    if (mg->next == 0 && create_gen_table(d->wdb, mg->gen, e) != 0)
        return -1;
    for (; mg->next < mg->until && mg->next < mg->slices; mg->next++) {
        char where[96] = "";
        if (mg->slices > 1 && mg->next == 0)
            snprintf(where, sizeof(where), " WHERE fp < %lld", (long long)slice_key(1, mg->slices));
        else if (mg->slices > 1 && mg->next + 1 == mg->slices)
            snprintf(where, sizeof(where), " WHERE fp >= %lld",
                     (long long)slice_key(mg->next, mg->slices));
        else if (mg->slices > 1)
            snprintf(where, sizeof(where), " WHERE fp >= %lld AND fp < %lld",
                     (long long)slice_key(mg->next, mg->slices),
                     (long long)slice_key(mg->next + 1, mg->slices));
        for (int k = 0; k < mg->nsrc; k++)
            if (exec_fmt(d->wdb, e,
                         "INSERT OR IGNORE INTO seen_fp_%lld(fp, seq) SELECT fp, seq FROM"
                         " seen_fp_%lld%s",
                         (long long)mg->gen, (long long)mg->src[k], where) != 0)
                return -1;
    }
    if (mg->next < mg->slices)
        return 0;
    if (exec_fmt(
            d->wdb, e,
            "INSERT OR REPLACE INTO seen_gens(gen, lo, hi, level) VALUES(%lld, %lld, %lld, %d)",
            (long long)mg->gen, (long long)mg->lo, (long long)mg->hi, mg->level) != 0)
        return -1;
    for (int k = 0; k < mg->nsrc; k++)
        if (unlist(d, mg->src[k], e) != 0)
            return -1;
    mg->is_done = true;
    return 0;
}

/* Starts a merge when MERGE_FAN adjacent generations share a level (the oldest such run).
 * Only while no write is under way. */
static void maybe_merge(struct dedup *d)
{
    struct merge *mg = &d->mg;
    int64_t rows = 0;
    size_t k = 0, run = 0;

    if (mg->is_on)
        return;
    for (; k + MERGE_FAN <= d->ngens; k += run) {
        run = 1;
        while (k + run < d->ngens && run < MERGE_MAX && d->gens[k + run].level == d->gens[k].level)
            run++;
        if (run >= MERGE_FAN)
            break;
    }
    if (run < MERGE_FAN)
        return;
    *mg = (struct merge){.is_on = true,
                         .nsrc = (int)run,
                         .gen = d->next_gen++,
                         .lo = d->gens[k].lo,
                         .hi = d->gens[k + run - 1].hi,
                         .level = d->gens[k].level + 1};
    for (int i = 0; i < mg->nsrc; i++) {
        mg->src[i] = d->gens[k + (size_t)i].gen;
        rows += d->gens[k + (size_t)i].hi - d->gens[k + (size_t)i].lo + 1;
    }
    mg->slices = rows / SLICE_ROWS > 1 ? (uint32_t)(rows / SLICE_ROWS) : 1;
    log_info("dedup", "merge_started gen=%lld level=%d sources=%d ids_at_most=%lld slices=%u",
             (long long)mg->gen, mg->level, mg->nsrc, (long long)rows, mg->slices);
}

/* A committed spill: its ids are now found through their generation, and the table is free. */
static int retire(struct dedup *d, struct lerr *e)
{
    struct gen g = {.gen = d->sp.gen, .lo = d->sp.lo, .hi = d->sp.hi, .level = 0};

    ftab_clear(d->old);
    d->sp.t = NULL;
    if (gens_insert(d, g, e) != 0)
        return -1;
    log_debug("dedup", "spill_done gen=%lld lo=%lld hi=%lld gens=%zu", (long long)g.gen,
              (long long)g.lo, (long long)g.hi, d->ngens);
    return 0;
}

/* A committed merge: the new generation answers for its sources. */
static int merge_retire(struct dedup *d, struct lerr *e)
{
    struct merge *mg = &d->mg;
    struct gen g = {.gen = mg->gen, .lo = mg->lo, .hi = mg->hi, .level = mg->level};

    for (size_t k = d->ngens; k-- > 0;)
        for (int i = 0; i < mg->nsrc; i++)
            if (d->gens[k].gen == mg->src[i]) {
                gens_remove(d, k);
                break;
            }
    mg->is_on = false;
    if (gens_insert(d, g, e) != 0)
        return -1;
    log_info("dedup", "merge_done gen=%lld level=%d gens=%zu", (long long)g.gen, g.level, d->ngens);
    return 0;
}

/* The spill under way, finished here and now (the writer is quiesced, or there is none). */
static int spill_now(struct dedup *d, struct lerr *e)
{
    bool is_own = sqlite3_get_autocommit(d->wdb) != 0;

    if (is_own && db_exec(d->wdb, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    d->sp.until = SIZE_MAX;
    if (spill_write(d, e) != 0 || (is_own && db_exec(d->wdb, "COMMIT", e) != 0)) {
        if (is_own)
            db_exec(d->wdb, "ROLLBACK", NULL);
        return -1;
    }
    if (retire(d, e) != 0)
        return -1;
    maybe_merge(d);
    return 0;
}

/* Puts id h (number seq) into the active table. A full one becomes the old table and starts
 * its spill, once the previous spill is done: with no writer, or with one that did not keep
 * up, it is finished here. */
static int hold(struct dedup *d, uint64_t h, int64_t seq, struct lerr *e)
{
    struct ftab *t;

    if (ftab_put(d->act, h, seq))
        return 0;
    /* The writer must not be reading the spill while it changes hands. */
    if (d->quiesce && d->quiesce(d->opaque, e) != 0)
        return -1;
    if (ftab_put(d->act, h, seq)) /* an expiry made room meanwhile */
        return 0;
    if (d->sp.t && spill_now(d, e) != 0)
        return -1;
    t = d->old;
    d->old = d->act;
    d->act = t;
    ftab_clear(d->act);
    bloom_add_table(d, d->old); /* from its retirement on, the filter answers for it */
    d->sp = (struct spill){.t = d->old, .gen = d->next_gen++, .lo = d->old->base, .hi = d->old->hi};
    log_info("dedup", "spill_started gen=%lld ids=%zu gens=%zu reason=\"dedup_cache=%zu is full\"",
             (long long)d->sp.gen, d->old->n, d->ngens, d->max);
    if (!ftab_put(d->act, h, seq))
        return lerr_set(e, "dedup: an empty table refused an id");
    return 0;
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
    if (epoch > d->last_epoch || d->nmarks == 0) {
        if (add_mark(d, epoch, x->seq) != 0)
            return lerr_set(e, "out of memory");
        d->last_epoch = epoch;
    }
    return hold(d, h, x->seq, e);
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
    size_t i = (size_t)(h >> d->act->shift);

    __builtin_prefetch(&d->act->fp[i]);
    __builtin_prefetch(&d->act->rs[i]);
    if (d->ngens)
        __builtin_prefetch(bloom_block(d, h));
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
    /* Pace the spill so it is done when the active table is 3/4 full (the next one cannot
     * start before), and never slower than 1/32 of the table per checkpoint. */
    if (d->sp.t && !d->sp.is_done) {
        size_t cap = d->sp.t->mask + 1, want;
        double f = (double)(d->act->n + 1) / (0.75 * (double)d->act->max);
        want = f >= 1.0 ? cap : (size_t)(f * (double)cap);
        if (want < d->sp.next + cap / 32)
            want = d->sp.next + cap / 32;
        d->sp.until = want < cap ? want : cap;
    }
    /* A merge moves SLICE_ROWS, and twice the ids of the interval, per checkpoint: more than
     * the ids the merges of every level take on meanwhile (one row per id per level). */
    if (d->mg.is_on && !d->mg.is_done) {
        double rows = (double)(d->mg.hi - d->mg.lo + 1);
        double n = (double)(SLICE_ROWS + 2 * d->sealed.n) * d->mg.slices / rows;
        uint32_t step = n < 1.0 ? 1 : n > (double)d->mg.slices ? d->mg.slices : (uint32_t)n;
        d->mg.until = d->mg.next + step < d->mg.slices ? d->mg.next + step : d->mg.slices;
    }
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

/* What a write moves in memory, put back when it fails (the transaction is rolled back). */
struct progress {
    size_t sp_next, doomed, unlisted;
    bool sp_done, mg_done;
    uint32_t mg_next;
    int64_t written_upto;
};

static struct progress progress_of(const struct dedup *d)
{
    return (struct progress){.sp_next = d->sp.next,
                             .doomed = d->doomed.n,
                             .unlisted = d->unlisted.n,
                             .sp_done = d->sp.is_done,
                             .mg_done = d->mg.is_done,
                             .mg_next = d->mg.next,
                             .written_upto = d->written_upto};
}

static int progress_undo(struct dedup *d, const struct progress *p)
{
    d->sp.next = p->sp_next;
    d->sp.is_done = p->sp_done;
    d->mg.next = p->mg_next;
    d->mg.is_done = p->mg_done;
    d->doomed.n = p->doomed; /* dropping only shortened the list */
    d->unlisted.n = p->unlisted;
    d->written_upto = p->written_upto;
    return -1;
}

int dedup_write_sealed(struct dedup *d, struct lerr *e)
{
    const struct pset *p = &d->sealed;
    const struct progress before = progress_of(d);
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
    if (p->n)
        d->written_upto = p->v[p->n - 1].seq;
    if (drop_doomed(d, e) != 0 || spill_write(d, e) != 0 || merge_write(d, e) != 0)
        return progress_undo(d, &before);
    return 0;
}

static int forget_unlisted(struct dedup *d, struct lerr *e);

int dedup_release_sealed(struct dedup *d, struct lerr *e)
{
    d->sealed.n = 0;
    d->sealed.nbytes = 0;
    if (d->sp.t && d->sp.is_done && retire(d, e) != 0)
        return -1;
    if (d->mg.is_on && d->mg.is_done && merge_retire(d, e) != 0)
        return -1;
    if (forget_unlisted(d, e) != 0)
        return -1;
    maybe_merge(d);
    return 0;
}

/* What a commit unlisted is forgotten here; its tables go at the next write. */
static int forget_unlisted(struct dedup *d, struct lerr *e)
{
    for (size_t i = 0; i < d->unlisted.n; i++) {
        for (size_t k = 0; k < d->ngens; k++)
            if (d->gens[k].gen == d->unlisted.v[i]) {
                gens_remove(d, k);
                d->is_bloom_stale = true;
                break;
            }
        if (idlist_push(&d->doomed, d->unlisted.v[i], e) != 0)
            return -1;
    }
    d->unlisted.n = 0;
    return 0;
}

int dedup_flush(struct dedup *d, struct lerr *e)
{
    if (dedup_seal(d, e) != 0)
        return -1;
    d->sp.until = SIZE_MAX; /* no writer to pace: the whole spill and merge now */
    d->mg.until = d->mg.slices;
    if (dedup_write_sealed(d, e) != 0 || dedup_release_sealed(d, e) != 0)
        return -1;
    return drop_doomed(d, e); /* no reader is left to ask them */
}

static bool is_merge_source(const struct dedup *d, int64_t g)
{
    for (int i = 0; d->mg.is_on && !d->mg.is_done && i < d->mg.nsrc; i++)
        if (d->mg.src[i] == g)
            return true;
    return false;
}

int dedup_expire_rows(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    const struct progress before = progress_of(d);
    struct idlist below = {0};
    int rc;

    sqlite3_bind_int64(d->w_del, 1, cut_epoch);
    if (db_step_done(d->w_del, e) != 0)
        return -1;
    /* The generations wholly below what is left go with their rows (a merge's sources go
     * when it ends). Listed first, unlisted after: the statement must be done. */
    sqlite3_bind_int64(d->w_gens_below, 1, d->written_upto + 1);
    while ((rc = sqlite3_step(d->w_gens_below)) == SQLITE_ROW) {
        int64_t g = sqlite3_column_int64(d->w_gens_below, 0);
        if (!is_merge_source(d, g) && idlist_push(&below, g, e) != 0)
            break;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) /* ROW: out of memory, e is set */
        lerr_set(e, "cannot list generations: %s", sqlite3_errmsg(d->wdb));
    sqlite3_reset(d->w_gens_below);
    for (size_t k = 0; rc == SQLITE_DONE && k < below.n; k++)
        if (unlist(d, below.v[k], e) != 0)
            rc = SQLITE_ERROR;
    free(below.v);
    return rc == SQLITE_DONE ? 0 : progress_undo(d, &before);
}

/* Rebuilds the filter from the generations (and the table being spilled). */
static int bloom_rebuild(struct dedup *d, struct lerr *e)
{
    memset(d->bloom, 0, d->bloom_bytes);
    if (d->sp.t)
        bloom_add_table(d, d->sp.t);
    rdb_end(d); /* see what the expiry committed */
    for (size_t k = 0; k < d->ngens; k++) {
        char sql[64];
        sqlite3_stmt *st;
        int rc;
        snprintf(sql, sizeof(sql), "SELECT fp FROM seen_fp_%lld", (long long)d->gens[k].gen);
        if (db_prepare(d->rdb, sql, &st, e) != 0)
            return -1;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            bloom_add(d, fp_of_key(sqlite3_column_int64(st, 0)));
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return lerr_set(e, "cannot read spilled ids: %s", sqlite3_errmsg(d->rdb));
    }
    rdb_end(d);
    return 0;
}

int dedup_expire_cache(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    int64_t cut_seq = seq_of_cut(d, cut_epoch), t0 = tm_mono_ms();

    ftab_sweep(d->act, cut_seq);
    /* Survivors of a sweep move: a spill not yet done starts over (its inserts ignore the
     * rows already there). */
    if (ftab_sweep(d->old, cut_seq) > 0 && d->sp.t && !d->sp.is_done)
        d->sp.next = d->sp.until = 0;
    drop_marks_before(d, cut_epoch);
    if (!d->is_bloom_stale)
        return 0;
    d->is_bloom_stale = false;
    if (bloom_rebuild(d, e) != 0)
        return -1;
    log_info("dedup", "generations_expired gens=%zu filter_rebuilt_ms=%lld", d->ngens,
             (long long)(tm_mono_ms() - t0));
    return 0;
}

int dedup_expire(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    if (dedup_flush(d, e) != 0)
        return -1;
    if (dedup_expire_rows(d, cut_epoch, e) != 0 || forget_unlisted(d, e) != 0 ||
        drop_doomed(d, e) != 0)
        return -1;
    return dedup_expire_cache(d, cut_epoch, e);
}

/* ---- opening ---- */

/* Drops the tables of generations never written whole (a spill or merge a crash cut short):
 * their ids are in the generations they came from, or loaded below. */
static int drop_orphans(struct dedup *d, struct lerr *e)
{
    sqlite3_stmt *st;
    char names[64][40];
    int rc, n;

    do {
        n = 0;
        if (db_prepare(d->wdb,
                       "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB"
                       " 'seen_fp_[0-9]*' AND CAST(substr(name, 9) AS INTEGER) NOT IN"
                       " (SELECT gen FROM seen_gens) LIMIT 64",
                       &st, e) != 0)
            return -1;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            snprintf(names[n++], sizeof(names[0]), "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return lerr_set(e, "cannot list generations: %s", sqlite3_errmsg(d->wdb));
        for (int i = 0; i < n; i++)
            if (exec_fmt(d->wdb, e, "DROP TABLE IF EXISTS \"%s\"", names[i]) != 0)
                return -1;
    } while (n == 64);
    return 0;
}

/* Rebuilds memory from speed.db: the generations and their filter, then the epochs of every
 * seen id, and the tables from the ids after the last generation. */
static int load(struct dedup *d, struct lerr *e)
{
    sqlite3_stmt *st;
    int64_t max_hi = 0;
    int rc;

    if (drop_orphans(d, e) != 0 ||
        db_prepare(d->wdb, "SELECT gen, lo, hi, level FROM seen_gens ORDER BY lo", &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct gen *g;
        if (gens_reserve(d, e) != 0) {
            sqlite3_finalize(st);
            return -1;
        }
        g = &d->gens[d->ngens++];
        *g = (struct gen){.gen = sqlite3_column_int64(st, 0),
                          .lo = sqlite3_column_int64(st, 1),
                          .hi = sqlite3_column_int64(st, 2),
                          .level = sqlite3_column_int(st, 3)};
        if (g->hi > max_hi)
            max_hi = g->hi;
        if (g->gen >= d->next_gen)
            d->next_gen = g->gen + 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read generations: %s", sqlite3_errmsg(d->wdb));
    if (prepare_reads(d, e) != 0 || (d->ngens && bloom_rebuild(d, e) != 0))
        return -1;
    if (db_prepare(d->wdb, "SELECT seq, merchant_id, order_id, epoch FROM seen ORDER BY seq", &st,
                   e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0), epoch = sqlite3_column_int64(st, 3);
        if ((d->nmarks == 0 || epoch > d->marks[d->nmarks - 1].epoch) &&
            add_mark(d, epoch, seq) != 0) {
            sqlite3_finalize(st);
            return lerr_set(e, "out of memory");
        }
        if (epoch > d->last_epoch)
            d->last_epoch = epoch;
        d->written_upto = seq;
        if (seq > max_hi) {
            const char *m = (const char *)sqlite3_column_text(st, 1);
            const char *o = (const char *)sqlite3_column_text(st, 2);
            m = m ? m : "";
            o = o ? o : "";
            if (hold(d, fingerprint(m, strlen(m), o, strlen(o)), seq, e) != 0) {
                sqlite3_finalize(st);
                return -1;
            }
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read seen ids: %s", sqlite3_errmsg(d->wdb));
    /* Numbers spilled and lost with their rows are never given out again. */
    d->next_seq = (d->written_upto > max_hi ? d->written_upto : max_hi) + 1;
    maybe_merge(d); /* one a crash cut short starts over */
    return 0;
}

struct dedup *dedup_new(sqlite3 *wdb, const char *data_dir, size_t cache_max, struct lerr *e)
{
    struct dedup *d = calloc(1, sizeof(*d));
    size_t half, blocks;

    if (!d) {
        lerr_set(e, "out of memory");
        return NULL;
    }
    d->wdb = d->rdb = wdb;
    d->is_master_due = true;
    d->next_seq = 1;
    d->next_gen = 1;
    d->last_epoch = INT64_MIN;
    snprintf(d->data_dir, sizeof(d->data_dir), "%s", data_dir);
    d->max = cache_max ? cache_max : 1;
    half = d->max / 2 ? d->max / 2 : 1;
    d->act = &d->tabs[0];
    d->old = &d->tabs[1];
    /* 64 filter bits per id the tables hold (4 MiB at least): at 4x that many spilled ids,
     * about 0.1% false positives (each costs a look-up per generation), and more ids only
     * raise that. */
    blocks = pow2_at_least(d->max / 8 > 65536 ? d->max / 8 : 65536); /* 4 MiB at least */
    d->bloom_shift = 64u - (unsigned)__builtin_ctzll(blocks);
    d->bloom_bytes = blocks * 64;
    d->bloom = mem_reserve(d->bloom_bytes);
    if (ftab_init(&d->tabs[0], half) != 0 || ftab_init(&d->tabs[1], half) != 0 || !d->bloom) {
        lerr_set(e, "out of memory for a dedup cache of %zu ids", d->max);
        goto fail;
    }
    if (prepare_writes(d, e) != 0 || load(d, e) != 0)
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

    rdb_end(d);
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
    if (prepare_reads(d, &e) != 0) { /* look-ups then fail, saying so */
        sqlite3_finalize(d->r_by_seq);
        d->r_by_seq = NULL;
        log_warn("dedup", "reader_not_ready err=\"%s\"", e.msg);
    }
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

void dedup_free(struct dedup *d)
{
    if (!d)
        return;
    rdb_end(d);
    {
        sqlite3_stmt *sts[] = {d->w_put,    d->w_put_many, d->w_del,    d->w_gens_below,
                               d->r_by_seq, d->sp.w_one,   d->sp.w_many};
        for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++)
            sqlite3_finalize(sts[i]);
    }
    for (size_t k = 0; k < d->ngens; k++)
        sqlite3_finalize(d->gens[k].probe);
    free(d->unlisted.v);
    free(d->doomed.v);
    master_close(d);
    ftab_free(&d->tabs[0]);
    ftab_free(&d->tabs[1]);
    mem_release(d->bloom, d->bloom_bytes);
    free(d->gens);
    free(d->marks);
    pset_free(&d->cur);
    pset_free(&d->sealed);
    free(d);
}

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out)
{
    out->cache_ids = d->act->n + d->old->n;
    out->cache_max = d->max;
    out->pending = d->cur.n + d->sealed.n;
    out->is_complete = d->ngens == 0 && !d->sp.t;
    out->gens = d->ngens;
    out->is_spilling = d->sp.t != NULL;
    out->is_merging = d->mg.is_on;
    out->seen_reads = d->seen_reads;
    out->spill_reads = d->spill_reads;
    out->master_reads = d->master_reads;
}
