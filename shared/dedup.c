/* dedup.c - the duplicate rule and its checkpoints (contract in dedup.h).
 *
 * This file holds the rule (a look-up asks the fingerprint tables, then the generations
 * behind the Bloom filter, confirming each match by the id itself, then master.db), the ids'
 * sequence numbers and epochs, the seen table's rows, and the checkpoint protocol; each
 * structure it rests on has a file of its own: dedup_ftab (fingerprint tables), dedup_bloom
 * (the filter), dedup_pset (ids not yet written), dedup_marks (epochs along the sequence),
 * dedup_gens (spilled generations: spill and merge), dedup_master (master.db). */
#include "dedup.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "db.h"
#include "dedup_bloom.h"
#include "dedup_ftab.h"
#include "dedup_gens.h"
#include "dedup_marks.h"
#include "dedup_master.h"
#include "dedup_pset.h"
#include "dedup_test.h"
#include "ev.h"
#include "log.h"
#include "tm.h"

/* What a write moves in memory, put back when its transaction does not commit. */
struct progress {
    struct gens_progress gens;
    int64_t written_upto;
};

/* One checkpoint. Begin and end run on the reading side, write on the writing side. */
struct dedup_txn {
    struct dedup *d;
    int64_t cut_epoch;      /* DEDUP_NO_CUT, or the ids of epochs below it go */
    bool is_open;           /* between dedup_begin and dedup_end */
    bool is_written;        /* dedup_write succeeded */
    struct progress before; /* memory before that write */
};

struct dedup {
    sqlite3 *wdb; /* borrowed: writes, and reads unless a reader was given */
    sqlite3 *rdb; /* borrowed: look-ups */
    int (*wait_end)(void *, struct lerr *);
    void *opaque;
    bool in_rdb_txn;
    sqlite3_stmt *w_put, *w_put_many, *w_del, *r_by_seq;
    struct master master;

    size_t max;             /* the bound on fingerprints in memory */
    struct ftab tabs[2];    /* each holds max/2 */
    struct ftab *act, *old; /* new ids go to act; old is being spilled, or empty */
    struct gens gens;
    struct bloom bloom; /* over every spilled fingerprint */

    int64_t next_seq;     /* never given out before, not even to an id a crash lost */
    int64_t last_epoch;   /* of the last id added: epochs never decrease */
    int64_t written_upto; /* the writing side's: the last seq written */
    struct marks marks;

    struct pset cur, sealed; /* added since the last seal; sealed and not yet released */
    struct dedup_txn txn;

    int64_t seen_reads;
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

/* ---- the seen table and its snapshots ---- */

/* Rows appended per statement: one step per PUT_MANY rows instead of one per row. */
#define PUT_MANY DB_ROWS_MAX

/* Reader statements are finalized first: a failure below must leave none on a connection the
 * caller is about to close. */
static int prepare_reads(struct dedup *d, struct lerr *e)
{
    gens_set_reader(&d->gens, d->rdb);
    sqlite3_finalize(d->r_by_seq);
    d->r_by_seq = NULL;
    return db_prepare(d->rdb, "SELECT merchant_id, order_id FROM seen WHERE seq = ?1", &d->r_by_seq,
                      e);
}

static int prepare_writes(struct dedup *d, struct lerr *e)
{
    static const char put[] =
        "INSERT INTO seen(seq, merchant_id, order_id, epoch, partition, offset) VALUES";

    if (db_prepare_rows(d->wdb, put, 6, 1, &d->w_put, e) != 0 ||
        db_prepare_rows(d->wdb, put, 6, PUT_MANY, &d->w_put_many, e) != 0 ||
        /* Epochs never decrease along seq: the rows to drop are a prefix, found by a scan
         * that stops at the first row to keep. */
        db_prepare(d->wdb,
                   "DELETE FROM seen WHERE seq < coalesce((SELECT seq FROM seen WHERE epoch >= ?1"
                   " ORDER BY seq LIMIT 1), 9223372036854775807)",
                   &d->w_del, e) != 0)
        return -1;
    return 0;
}

/* Look-ups through a reader share one read transaction until the next refresh (a
 * transaction per look-up cost two lock calls each, and halved the overflowed rate). On the
 * writer's own connection they read inside the writer's transaction. */
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

/* The snapshots end: the next look-up sees everything committed by now. Only while no write
 * is under way (a reader's snapshot would otherwise keep the writer from restarting the
 * log: speed/wal.h). */
void dedup_refresh(struct dedup *d)
{
    master_refresh(&d->master);
    rdb_end(d);
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
        return pset_is(p, x, m, o);
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

/* The id a generation's look-up confirms. */
struct asked {
    struct dedup *d;
    const char *m, *o;
};

static int asked_is(void *arg, int64_t seq, struct lerr *e)
{
    struct asked *a = arg;

    return id_is(a->d, seq, a->m, a->o, e);
}

/* The generations, newest first, once the filter says the id may be among them. */
static int spilled_has(struct dedup *d, uint64_t h, const char *m, const char *o, struct lerr *e)
{
    struct asked a = {.d = d, .m = m, .o = o};

    if (d->gens.n == 0 || !bloom_maybe(&d->bloom, h))
        return 0;
    if (rdb_begin(d, e) != 0)
        return -1;
    return gens_lookup(&d->gens, h, asked_is, &a, e);
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
    return master_has_earlier(&d->master, merchant_id, order_id, partition, offset, e);
}

/* ---- adding ids ---- */

/* A committed spill: its ids are now found through their generation, and the table is free;
 * the next look-up must see the generation's table just committed. */
static int retire_spill(struct dedup *d, struct lerr *e)
{
    ftab_clear(d->old);
    if (gens_spill_retire(&d->gens, e) != 0)
        return -1;
    rdb_end(d);
    return 0;
}

/* The spill under way, finished here and now (no write is under way, or there is no
 * writer). */
static int spill_now(struct dedup *d, struct lerr *e)
{
    bool is_own = sqlite3_get_autocommit(d->wdb) != 0;

    if (is_own && db_exec(d->wdb, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    if (gens_spill_write(&d->gens, e) != 0 || (is_own && db_exec(d->wdb, "COMMIT", e) != 0)) {
        if (is_own)
            db_exec(d->wdb, "ROLLBACK", NULL);
        return -1;
    }
    if (retire_spill(d, e) != 0)
        return -1;
    gens_maybe_merge(&d->gens);
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
    /* The writer must not be reading the spill while it changes hands: the checkpoint under
     * way ends first. */
    if (d->txn.is_open && d->wait_end) {
        if (d->wait_end(d->opaque, e) != 0)
            return -1;
        assert(!d->txn.is_open);
    }
    if (ftab_put(d->act, h, seq)) /* an expiry made room meanwhile */
        return 0;
    if (d->gens.sp.t && spill_now(d, e) != 0)
        return -1;
    t = d->old;
    d->old = d->act;
    d->act = t;
    ftab_clear(d->act);
    bloom_add_table(&d->bloom, d->old); /* from its retirement on, the filter answers for it */
    gens_spill_start(&d->gens, d->old);
    log_info("dedup", "spill_started gen=%lld ids=%zu gens=%zu reason=\"dedup_cache=%zu is full\"",
             (long long)d->gens.sp.gen, d->old->n, d->gens.n, d->max);
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
    x = pset_push(&d->cur, m, ml, o, ol, d->next_seq, epoch, e);
    if (!x)
        return -1;
    d->next_seq++;
    x->fp = h;
    x->partition = partition;
    x->offset = offset;
    if (marks_note(&d->marks, epoch, x->seq) != 0)
        return lerr_set(e, "out of memory");
    d->last_epoch = epoch;
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
    if (d->gens.n)
        bloom_prefetch(&d->bloom, h);
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
        r = master_has_earlier(&d->master, merchant_id, order_id, partition, offset, e);
    if (r != 0)
        return r;
    return add(d, h, merchant_id, ml, order_id, ol, epoch, partition, offset, e);
}

/* ---- checkpoints ---- */

/* Sets the added ids aside, and paces the spill and merge under way. */
static int seal(struct dedup *d, struct lerr *e)
{
    struct pset t = d->sealed;

    if (d->sealed.n) /* a checkpoint did not commit: the caller should have stopped */
        return lerr_set(e, "dedup: sealed ids were not released");
    d->sealed = d->cur;
    d->cur = t;
    gens_pace(&d->gens, d->act, d->sealed.n);
    return 0;
}

static void bind_pend(sqlite3_stmt *st, int at, const struct pset *p, const struct pend *x)
{
    sqlite3_bind_int64(st, at + 1, x->seq);
    sqlite3_bind_text(st, at + 2, pset_merchant(p, x), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, at + 3, pset_order(p, x), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, at + 4, x->epoch);
    sqlite3_bind_int(st, at + 5, x->partition);
    sqlite3_bind_int64(st, at + 6, x->offset);
}

static struct progress progress_of(const struct dedup *d)
{
    return (struct progress){.gens = gens_progress_of(&d->gens), .written_upto = d->written_upto};
}

static int progress_undo(struct dedup *d, const struct progress *p)
{
    gens_progress_undo(&d->gens, &p->gens);
    d->written_upto = p->written_upto;
    return -1;
}

/* Appends the sealed ids to `seen`, with the next slices of a spill or merge under way (the
 * writing side). A failure leaves the progress in memory to the caller to put back. */
static int write_sealed(struct dedup *d, struct lerr *e)
{
    const struct pset *p = &d->sealed;
    size_t k = 0;

    assert(p->n == 0 || p->v[0].seq > d->written_upto); /* numbers are never reused */
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
    return gens_write(&d->gens, e);
}

/* Deletes the rows of epochs < cut_epoch, and unlists the generations wholly below what is
 * left (the writing side). The same on failure as write_sealed. */
static int expire_rows(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    sqlite3_bind_int64(d->w_del, 1, cut_epoch);
    if (db_step_done(d->w_del, e) != 0)
        return -1;
    return gens_unlist_below(&d->gens, d->written_upto + 1, e);
}

/* Once the write committed: the sealed ids are forgotten (their rows answer now), what the
 * commit finished or unlisted leaves the lists, and only then is a merge chosen (it must not
 * pick a generation just unlisted). */
static int release_sealed(struct dedup *d, struct lerr *e)
{
    pset_clear(&d->sealed);
    if (d->gens.sp.t && d->gens.sp.is_done && retire_spill(d, e) != 0)
        return -1;
    if (d->gens.mg.is_on && d->gens.mg.is_done) {
        if (gens_merge_retire(&d->gens, e) != 0)
            return -1;
        rdb_end(d); /* the next look-up must see the table just committed */
    }
    if (gens_forget_unlisted(&d->gens, e) != 0)
        return -1;
    gens_maybe_merge(&d->gens);
    return 0;
}

/* Rebuilds the filter from the generations (and the table being spilled). */
static int bloom_rebuild(struct dedup *d, struct lerr *e)
{
    bloom_clear(&d->bloom);
    if (d->gens.sp.t)
        bloom_add_table(&d->bloom, d->gens.sp.t);
    rdb_end(d); /* see what the expiry committed */
    if (gens_fill_bloom(&d->gens, &d->bloom, e) != 0)
        return -1;
    rdb_end(d);
    return 0;
}

/* Once an expiry committed: its ids leave memory. */
static int expire_cache(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    int64_t cut_seq = marks_first_at(&d->marks, cut_epoch, d->next_seq), t0 = tm_mono_ms();

    ftab_sweep(d->act, cut_seq);
    /* Survivors of a sweep move: a spill not yet done starts over. */
    if (ftab_sweep(d->old, cut_seq) > 0)
        gens_spill_restart(&d->gens);
    marks_drop_before(&d->marks, cut_epoch);
    if (!d->gens.is_bloom_stale)
        return 0;
    d->gens.is_bloom_stale = false;
    if (bloom_rebuild(d, e) != 0)
        return -1;
    log_info("dedup", "generations_expired gens=%zu filter_rebuilt_ms=%lld", d->gens.n,
             (long long)(tm_mono_ms() - t0));
    return 0;
}

struct dedup_txn *dedup_begin(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    struct dedup_txn *t = &d->txn;

    if (t->is_open) {
        lerr_set(e, "dedup: a checkpoint is under way");
        return NULL;
    }
    dedup_refresh(d);
    if (seal(d, e) != 0)
        return NULL;
    *t = (struct dedup_txn){.d = d, .cut_epoch = cut_epoch, .is_open = true};
    return t;
}

int dedup_write(struct dedup_txn *t, struct lerr *e)
{
    struct dedup *d = t->d;
    const struct progress before = progress_of(d);

    assert(t->is_open && !t->is_written);
    if (write_sealed(d, e) != 0 ||
        (t->cut_epoch != DEDUP_NO_CUT && expire_rows(d, t->cut_epoch, e) != 0))
        return progress_undo(d, &before);
    t->before = before;
    t->is_written = true;
    return 0;
}

int dedup_end(struct dedup_txn *t, bool is_committed, struct lerr *e)
{
    struct dedup *d = t->d;

    assert(t->is_open && (t->is_written || !is_committed));
    t->is_open = false;
    if (!is_committed) {
        if (t->is_written)
            progress_undo(d, &t->before);
        return 0;
    }
    if (release_sealed(d, e) != 0)
        return -1;
    if (t->cut_epoch != DEDUP_NO_CUT && expire_cache(d, t->cut_epoch, e) != 0)
        return -1;
    dedup_refresh(d);
    return 0;
}

/* ---- for tests only (dedup_test.h) ---- */

int dedup_flush(struct dedup *d, struct lerr *e)
{
    const struct progress before = progress_of(d);

    assert(!d->txn.is_open);
    if (seal(d, e) != 0)
        return -1;
    gens_pace_whole(&d->gens); /* no writer to pace: the whole spill and merge now */
    if (write_sealed(d, e) != 0)
        return progress_undo(d, &before);
    if (release_sealed(d, e) != 0)
        return -1;
    return gens_drop_doomed(&d->gens, e); /* no reader is left to ask them */
}

int dedup_expire(struct dedup *d, int64_t cut_epoch, struct lerr *e)
{
    const struct progress before = progress_of(d);

    if (dedup_flush(d, e) != 0)
        return -1;
    if (expire_rows(d, cut_epoch, e) != 0)
        return progress_undo(d, &before);
    if (gens_forget_unlisted(&d->gens, e) != 0 || gens_drop_doomed(&d->gens, e) != 0)
        return -1;
    return expire_cache(d, cut_epoch, e);
}

/* ---- opening ---- */

/* Rebuilds memory from speed.db: the generations and their filter, then the epochs of every
 * seen id, and the tables from the ids after the last generation. */
static int load(struct dedup *d, struct lerr *e)
{
    sqlite3_stmt *st;
    int64_t max_hi = 0;
    int rc;

    if (gens_load(&d->gens, &max_hi, e) != 0)
        return -1;
    if (prepare_reads(d, e) != 0 || (d->gens.n && bloom_rebuild(d, e) != 0))
        return -1;
    if (db_prepare(d->wdb, "SELECT seq, merchant_id, order_id, epoch FROM seen ORDER BY seq", &st,
                   e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0), epoch = sqlite3_column_int64(st, 3);
        if (marks_note(&d->marks, epoch, seq) != 0) {
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
    gens_maybe_merge(&d->gens); /* one a crash cut short starts over */
    return 0;
}

struct dedup *dedup_new(sqlite3 *wdb, const char *data_dir, size_t cache_max, struct lerr *e)
{
    struct dedup *d = calloc(1, sizeof(*d));
    size_t half;

    if (!d) {
        lerr_set(e, "out of memory");
        return NULL;
    }
    d->wdb = d->rdb = wdb;
    master_init(&d->master, data_dir);
    gens_init(&d->gens, wdb);
    d->next_seq = 1;
    d->last_epoch = INT64_MIN;
    d->max = cache_max ? cache_max : 1;
    half = d->max / 2 ? d->max / 2 : 1;
    d->act = &d->tabs[0];
    d->old = &d->tabs[1];
    if (ftab_init(&d->tabs[0], half) != 0 || ftab_init(&d->tabs[1], half) != 0 ||
        bloom_init(&d->bloom, d->max) != 0) {
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

void dedup_set_reader(struct dedup *d, sqlite3 *rdb, int (*wait_end)(void *, struct lerr *),
                      void *opaque)
{
    struct lerr e;

    rdb_end(d);
    d->rdb = rdb ? rdb : d->wdb;
    d->wait_end = wait_end;
    d->opaque = opaque;
    if (prepare_reads(d, &e) != 0) { /* look-ups then fail, saying so */
        sqlite3_finalize(d->r_by_seq);
        d->r_by_seq = NULL;
        log_warn("dedup", "reader_not_ready err=\"%s\"", e.msg);
    }
}

void dedup_free(struct dedup *d)
{
    if (!d)
        return;
    rdb_end(d);
    sqlite3_finalize(d->w_put);
    sqlite3_finalize(d->w_put_many);
    sqlite3_finalize(d->w_del);
    sqlite3_finalize(d->r_by_seq);
    gens_release(&d->gens);
    master_close(&d->master);
    ftab_free(&d->tabs[0]);
    ftab_free(&d->tabs[1]);
    bloom_free(&d->bloom);
    marks_free(&d->marks);
    pset_free(&d->cur);
    pset_free(&d->sealed);
    free(d);
}

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out)
{
    out->cache_ids = d->act->n + d->old->n;
    out->cache_max = d->max;
    out->pending = d->cur.n + d->sealed.n;
    out->is_complete = d->gens.n == 0 && !d->gens.sp.t;
    out->gens = d->gens.n;
    out->is_spilling = d->gens.sp.t != NULL;
    out->is_merging = d->gens.mg.is_on;
    out->seen_reads = d->seen_reads;
    out->spill_reads = d->gens.reads;
    out->master_reads = d->master.reads;
}
