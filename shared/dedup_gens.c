/* dedup_gens.c - generations of spilled fingerprints, spills and merges (contract in
 * dedup_gens.h). */
#include "dedup_gens.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"

#define PUT_MANY 64 /* rows per insert statement */

/* A generation's key for a fingerprint: signed order is then unsigned order. */
static int64_t fp_key(uint64_t h)
{
    return (int64_t)(h ^ 0x8000000000000000ULL);
}

static uint64_t fp_of_key(int64_t key)
{
    return (uint64_t)key ^ 0x8000000000000000ULL;
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

void gens_init(struct gens *g, sqlite3 *wdb)
{
    *g = (struct gens){.wdb = wdb, .rdb = wdb, .next_gen = 1};
}

void gens_release(struct gens *g)
{
    sqlite3_finalize(g->sp.w_one);
    sqlite3_finalize(g->sp.w_many);
    sqlite3_finalize(g->w_below);
    for (size_t k = 0; k < g->n; k++)
        sqlite3_finalize(g->v[k].probe);
    free(g->v);
    free(g->unlisted.v);
    free(g->doomed.v);
}

static int gens_reserve(struct gens *g, struct lerr *e)
{
    if (g->n < g->cap)
        return 0;
    size_t cap = g->cap ? 2 * g->cap : 16;
    struct gen *v = realloc(g->v, cap * sizeof(*v));
    if (!v)
        return lerr_set(e, "out of memory");
    g->v = v;
    g->cap = cap;
    return 0;
}

/* Puts x into the list, in sequence order; its probe is prepared at its first use, once the
 * reader can see the table (after the commit that wrote it). */
static int gens_insert(struct gens *g, struct gen x, struct lerr *e)
{
    size_t k = g->n;

    if (gens_reserve(g, e) != 0)
        return -1;
    while (k > 0 && g->v[k - 1].lo > x.lo)
        k--;
    memmove(g->v + k + 1, g->v + k, (g->n - k) * sizeof(*g->v));
    x.probe = NULL;
    g->v[k] = x;
    g->n++;
    return 0;
}

static void gens_remove(struct gens *g, size_t k)
{
    sqlite3_finalize(g->v[k].probe);
    memmove(g->v + k, g->v + k + 1, (g->n - k - 1) * sizeof(*g->v));
    g->n--;
}

/* ---- opening ---- */

static int drop_orphans(struct gens *g, struct lerr *e)
{
    sqlite3_stmt *st;
    char names[64][40];
    int rc, n;

    do {
        n = 0;
        if (db_prepare(g->wdb,
                       "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB"
                       " 'seen_fp_[0-9]*' AND CAST(substr(name, 9) AS INTEGER) NOT IN"
                       " (SELECT gen FROM seen_gens) LIMIT 64",
                       &st, e) != 0)
            return -1;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            snprintf(names[n++], sizeof(names[0]), "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return lerr_set(e, "cannot list generations: %s", sqlite3_errmsg(g->wdb));
        for (int i = 0; i < n; i++)
            if (exec_fmt(g->wdb, e, "DROP TABLE IF EXISTS \"%s\"", names[i]) != 0)
                return -1;
    } while (n == 64);
    return 0;
}

int gens_load(struct gens *g, int64_t *max_hi, struct lerr *e)
{
    sqlite3_stmt *st;
    int rc;

    *max_hi = 0;
    if (drop_orphans(g, e) != 0 ||
        db_prepare(g->wdb, "SELECT gen, lo, hi, level FROM seen_gens ORDER BY lo", &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct gen *x;
        if (gens_reserve(g, e) != 0) {
            sqlite3_finalize(st);
            return -1;
        }
        x = &g->v[g->n++];
        *x = (struct gen){.gen = sqlite3_column_int64(st, 0),
                          .lo = sqlite3_column_int64(st, 1),
                          .hi = sqlite3_column_int64(st, 2),
                          .level = sqlite3_column_int(st, 3)};
        if (x->hi > *max_hi)
            *max_hi = x->hi;
        if (x->gen >= g->next_gen)
            g->next_gen = x->gen + 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read generations: %s", sqlite3_errmsg(g->wdb));
    /* The generations below the first id kept, or below the first not yet written when none
     * is kept. */
    return db_prepare(
        g->wdb,
        "SELECT gen FROM seen_gens WHERE hi < coalesce((SELECT min(seq) FROM seen), ?1)"
        " ORDER BY gen",
        &g->w_below, e);
}

/* ---- look-ups ---- */

void gens_set_reader(struct gens *g, sqlite3 *rdb)
{
    for (size_t k = 0; k < g->n; k++) { /* prepared again at their next use */
        sqlite3_finalize(g->v[k].probe);
        g->v[k].probe = NULL;
    }
    g->rdb = rdb;
}

static int gen_prepare(struct gens *g, struct gen *x, struct lerr *e)
{
    char sql[96];

    sqlite3_finalize(x->probe);
    x->probe = NULL;
    snprintf(sql, sizeof(sql), "SELECT seq FROM seen_fp_%lld WHERE fp = ?1", (long long)x->gen);
    return db_prepare(g->rdb, sql, &x->probe, e);
}

int gens_lookup(struct gens *g, uint64_t h, int (*is_id)(void *, int64_t, struct lerr *), void *arg,
                struct lerr *e)
{
    for (size_t k = g->n; k-- > 0;) {
        sqlite3_stmt *st;
        int rc = SQLITE_DONE, r = 0;
        if (!g->v[k].probe && gen_prepare(g, &g->v[k], e) != 0)
            return -1;
        st = g->v[k].probe;
        g->reads++;
        sqlite3_bind_int64(st, 1, fp_key(h));
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
            r = is_id(arg, sqlite3_column_int64(st, 0), e);
        if (r == 0 && rc != SQLITE_DONE)
            r = lerr_set(e, "cannot read spilled ids: %s", sqlite3_errmsg(g->rdb));
        sqlite3_reset(st);
        if (r != 0)
            return r;
    }
    return 0;
}

int gens_fill_bloom(const struct gens *g, struct bloom *b, struct lerr *e)
{
    for (size_t k = 0; k < g->n; k++) {
        char sql[64];
        sqlite3_stmt *st;
        int rc;
        snprintf(sql, sizeof(sql), "SELECT fp FROM seen_fp_%lld", (long long)g->v[k].gen);
        if (db_prepare(g->rdb, sql, &st, e) != 0)
            return -1;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            bloom_add(b, fp_of_key(sqlite3_column_int64(st, 0)));
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return lerr_set(e, "cannot read spilled ids: %s", sqlite3_errmsg(g->rdb));
    }
    return 0;
}

/* ---- pacing ---- */

void gens_spill_start(struct gens *g, const struct ftab *t)
{
    assert(!g->sp.t);
    assert(g->n == 0 || t->base > g->v[g->n - 1].hi); /* numbers are never reused */
    g->sp = (struct gens_spill){.t = t, .gen = g->next_gen++, .lo = t->base, .hi = t->hi};
}

void gens_pace(struct gens *g, const struct ftab *act, size_t sealed)
{
    /* Pace the spill so it is done when the active table is 3/4 full (the next one cannot
     * start before), and never slower than 1/32 of the table per checkpoint. */
    if (g->sp.t && !g->sp.is_done) {
        size_t cap = g->sp.t->mask + 1, want;
        double f = (double)(act->n + 1) / (0.75 * (double)act->max);
        want = f >= 1.0 ? cap : (size_t)(f * (double)cap);
        if (want < g->sp.next + cap / 32)
            want = g->sp.next + cap / 32;
        g->sp.until = want < cap ? want : cap;
    }
    /* A merge moves SLICE_ROWS, and twice the ids of the interval, per checkpoint: more than
     * the ids the merges of every level take on meanwhile (one row per id per level). */
    if (g->mg.is_on && !g->mg.is_done) {
        double rows = (double)(g->mg.hi - g->mg.lo + 1);
        double n = (double)(SLICE_ROWS + 2 * sealed) * g->mg.slices / rows;
        uint32_t step = n < 1.0 ? 1 : n > (double)g->mg.slices ? g->mg.slices : (uint32_t)n;
        g->mg.until = g->mg.next + step < g->mg.slices ? g->mg.next + step : g->mg.slices;
    }
}

void gens_pace_whole(struct gens *g)
{
    g->sp.until = SIZE_MAX;
    g->mg.until = g->mg.slices;
}

void gens_spill_restart(struct gens *g)
{
    if (g->sp.t && !g->sp.is_done)
        g->sp.next = g->sp.until = 0; /* its inserts ignore the rows already there */
}

/* ---- the writing side ---- */

/* Unlists generation x from seen_gens (inside the writer's transaction). */
static int unlist(struct gens *g, int64_t x, struct lerr *e)
{
    if (idlist_push(&g->unlisted, x, e) != 0)
        return -1;
    return exec_fmt(g->wdb, e, "DELETE FROM seen_gens WHERE gen = %lld", (long long)x);
}

int gens_drop_doomed(struct gens *g, struct lerr *e)
{
    for (; g->doomed.n > 0; g->doomed.n--)
        if (exec_fmt(g->wdb, e, "DROP TABLE IF EXISTS seen_fp_%lld",
                     (long long)g->doomed.v[g->doomed.n - 1]) != 0)
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
 * once every slot is written. */
static int spill_write(struct gens *g, struct lerr *e)
{
    struct gens_spill *sp = &g->sp;
    const struct ftab *t = sp->t;
    size_t cap, until;
    int nb = 0;

    if (!t || sp->is_done)
        return 0;
    if (!sp->w_one) {
        char head[96];
        snprintf(head, sizeof(head), "INSERT OR IGNORE INTO seen_fp_%lld(fp, seq) VALUES",
                 (long long)sp->gen);
        if (create_gen_table(g->wdb, sp->gen, e) != 0 ||
            db_prepare_rows(g->wdb, head, 2, 1, &sp->w_one, e) != 0 ||
            db_prepare_rows(g->wdb, head, 2, PUT_MANY, &sp->w_many, e) != 0)
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
    if (exec_fmt(g->wdb, e,
                 "INSERT OR REPLACE INTO seen_gens(gen, lo, hi, level) VALUES(%lld, %lld, %lld, 0)",
                 (long long)sp->gen, (long long)sp->lo, (long long)sp->hi) != 0)
        return -1;
    sqlite3_finalize(sp->w_one);
    sqlite3_finalize(sp->w_many);
    sp->w_one = sp->w_many = NULL;
    sp->is_done = true;
    return 0;
}

int gens_spill_write(struct gens *g, struct lerr *e)
{
    g->sp.until = SIZE_MAX;
    return spill_write(g, e);
}

/* The key where slice k of n begins (n > 1, 0 < k < n). */
static int64_t slice_key(uint32_t k, uint32_t n)
{
    return fp_key((uint64_t)k * (UINT64_MAX / n + 1));
}

/* Copies the merge's slices [next, until) from the sources into the new generation; with the
 * last, lists it and unlists the sources. */
static int merge_write(struct gens *g, struct lerr *e)
{
    struct gens_merge *mg = &g->mg;

    if (!mg->is_on || mg->is_done)
        return 0;
    if (mg->next == 0 && create_gen_table(g->wdb, mg->gen, e) != 0)
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
            if (exec_fmt(g->wdb, e,
                         "INSERT OR IGNORE INTO seen_fp_%lld(fp, seq) SELECT fp, seq FROM"
                         " seen_fp_%lld%s",
                         (long long)mg->gen, (long long)mg->src[k], where) != 0)
                return -1;
    }
    if (mg->next < mg->slices)
        return 0;
    if (exec_fmt(
            g->wdb, e,
            "INSERT OR REPLACE INTO seen_gens(gen, lo, hi, level) VALUES(%lld, %lld, %lld, %d)",
            (long long)mg->gen, (long long)mg->lo, (long long)mg->hi, mg->level) != 0)
        return -1;
    for (int k = 0; k < mg->nsrc; k++)
        if (unlist(g, mg->src[k], e) != 0)
            return -1;
    mg->is_done = true;
    return 0;
}

int gens_write(struct gens *g, struct lerr *e)
{
    if (gens_drop_doomed(g, e) != 0 || spill_write(g, e) != 0 || merge_write(g, e) != 0)
        return -1;
    return 0;
}

static bool is_merge_source(const struct gens *g, int64_t x)
{
    for (int i = 0; g->mg.is_on && !g->mg.is_done && i < g->mg.nsrc; i++)
        if (g->mg.src[i] == x)
            return true;
    return false;
}

int gens_unlist_below(struct gens *g, int64_t first_unwritten, struct lerr *e)
{
    struct idlist below = {0};
    int rc;

    /* Listed first, unlisted after: the statement must be done. */
    sqlite3_bind_int64(g->w_below, 1, first_unwritten);
    while ((rc = sqlite3_step(g->w_below)) == SQLITE_ROW) {
        int64_t x = sqlite3_column_int64(g->w_below, 0);
        if (!is_merge_source(g, x) && idlist_push(&below, x, e) != 0)
            break;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) /* ROW: out of memory, e is set */
        lerr_set(e, "cannot list generations: %s", sqlite3_errmsg(g->wdb));
    sqlite3_reset(g->w_below);
    for (size_t k = 0; rc == SQLITE_DONE && k < below.n; k++)
        if (unlist(g, below.v[k], e) != 0)
            rc = SQLITE_ERROR;
    free(below.v);
    return rc == SQLITE_DONE ? 0 : -1;
}

struct gens_progress gens_progress_of(const struct gens *g)
{
    return (struct gens_progress){.sp_next = g->sp.next,
                                  .doomed = g->doomed.n,
                                  .unlisted = g->unlisted.n,
                                  .sp_done = g->sp.is_done,
                                  .mg_done = g->mg.is_done,
                                  .mg_next = g->mg.next};
}

void gens_progress_undo(struct gens *g, const struct gens_progress *p)
{
    g->sp.next = p->sp_next;
    g->sp.is_done = p->sp_done;
    g->mg.next = p->mg_next;
    g->mg.is_done = p->mg_done;
    g->doomed.n = p->doomed; /* dropping only shortened the list */
    g->unlisted.n = p->unlisted;
}

/* ---- the reading side, after a commit ---- */

int gens_spill_retire(struct gens *g, struct lerr *e)
{
    struct gen x = {.gen = g->sp.gen, .lo = g->sp.lo, .hi = g->sp.hi, .level = 0};

    assert(g->sp.t && g->sp.is_done);
    g->sp.t = NULL;
    if (gens_insert(g, x, e) != 0)
        return -1;
    log_debug("dedup", "spill_done gen=%lld lo=%lld hi=%lld gens=%zu", (long long)x.gen,
              (long long)x.lo, (long long)x.hi, g->n);
    return 0;
}

int gens_merge_retire(struct gens *g, struct lerr *e)
{
    struct gens_merge *mg = &g->mg;
    struct gen x = {.gen = mg->gen, .lo = mg->lo, .hi = mg->hi, .level = mg->level};

    assert(mg->is_on && mg->is_done);
    for (size_t k = g->n; k-- > 0;)
        for (int i = 0; i < mg->nsrc; i++)
            if (g->v[k].gen == mg->src[i]) {
                gens_remove(g, k);
                break;
            }
    mg->is_on = false;
    if (gens_insert(g, x, e) != 0)
        return -1;
    log_info("dedup", "merge_done gen=%lld level=%d gens=%zu", (long long)x.gen, x.level, g->n);
    return 0;
}

int gens_forget_unlisted(struct gens *g, struct lerr *e)
{
    for (size_t i = 0; i < g->unlisted.n; i++) {
        for (size_t k = 0; k < g->n; k++)
            if (g->v[k].gen == g->unlisted.v[i]) {
                gens_remove(g, k);
                g->is_bloom_stale = true;
                break;
            }
        if (idlist_push(&g->doomed, g->unlisted.v[i], e) != 0)
            return -1;
    }
    g->unlisted.n = 0;
    return 0;
}

void gens_maybe_merge(struct gens *g)
{
    struct gens_merge *mg = &g->mg;
    int64_t rows = 0;
    size_t k = 0, run = 0;

    if (mg->is_on)
        return;
    for (; k + MERGE_FAN <= g->n; k += run) {
        run = 1;
        while (k + run < g->n && run < MERGE_MAX && g->v[k + run].level == g->v[k].level)
            run++;
        if (run >= MERGE_FAN)
            break;
    }
    if (run < MERGE_FAN)
        return;
    *mg = (struct gens_merge){.is_on = true,
                              .nsrc = (int)run,
                              .gen = g->next_gen++,
                              .lo = g->v[k].lo,
                              .hi = g->v[k + run - 1].hi,
                              .level = g->v[k].level + 1};
    for (int i = 0; i < mg->nsrc; i++) {
        mg->src[i] = g->v[k + (size_t)i].gen;
        rows += g->v[k + (size_t)i].hi - g->v[k + (size_t)i].lo + 1;
    }
    mg->slices = rows / SLICE_ROWS > 1 ? (uint32_t)(rows / SLICE_ROWS) : 1;
    log_info("dedup", "merge_started gen=%lld level=%d sources=%d ids_at_most=%lld slices=%u",
             (long long)mg->gen, mg->level, mg->nsrc, (long long)rows, mg->slices);
}
