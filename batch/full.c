/* full.c - the full recompute: every bucket from the master dataset, compared with what the
 * increments made (DESIGN.md section 5, "Full runs prove and repair the increments").
 *
 * One scan of master in primary-key order, merchant by merchant: a merchant's total and hours
 * are summed in small hash tables, then settled against its open rows (read first, written
 * after, never while a statement reads the same table); where they differ master's sums win
 * and the difference is counted. Merchants only the version holds are found by walking the
 * sorted list of open totals beside the scan. Minute rows are kept until the end, when the
 * newest event, hence the window, is known, and settled in one merge. */
#include "views.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "tm.h"

static const char *const kind_name[] = {"total", "hour", "minute"};

static int bucket_add(struct views_bucket **head, int64_t start_ms, int64_t amount_cents)
{
    struct views_bucket *b;

    HASH_FIND(hh, *head, &start_ms, sizeof(start_ms), b);
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b)
            return -1;
        b->start_ms = start_ms;
        HASH_ADD(hh, *head, start_ms, sizeof(b->start_ms), b);
    }
    b->order_count++;
    b->revenue_cents += amount_cents;
    return 0;
}

static void free_buckets(struct views_bucket **head)
{
    struct views_bucket *b, *tmp;

    HASH_ITER(hh, *head, b, tmp)
    {
        HASH_DEL(*head, b);
        free(b);
    }
}

static int rows_push(struct views_rows *r, const char *merchant_id, int64_t minute_ms,
                     int64_t order_count, int64_t revenue_cents, int64_t valid_from, struct lerr *e)
{
    struct views_row *k;

    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        k = realloc(r->v, cap * sizeof(*k));
        if (!k)
            return lerr_set(e, "out of memory");
        r->v = k;
        r->cap = cap;
    }
    k = &r->v[r->n++];
    snprintf(k->merchant_id, sizeof(k->merchant_id), "%s", merchant_id);
    k->minute_ms = minute_ms;
    k->order_count = order_count;
    k->revenue_cents = revenue_cents;
    k->valid_from = valid_from;
    return 0;
}

static int compare_rows(const void *pa, const void *pb)
{
    const struct views_row *a = pa, *b = pb;
    int c = strcmp(a->merchant_id, b->merchant_id);

    if (c == 0)
        c = (a->minute_ms > b->minute_ms) - (a->minute_ms < b->minute_ms);
    return c;
}

/* Counts a difference between the increments and master, keeping the first in (merchant,
 * kind, bucket) order for the error line. */
static void note_difference(struct views *vw, enum views_kind k, const char *merchant_id,
                            int64_t bucket_ms)
{
    int c;

    if (vw->w->prev == 0 || vw->w->is_unproven)
        return; /* nothing to prove: a first build, or a baseline without recorded sums */
    vw->w->differences++;
    c = vw->first_kind < 0 ? -1 : strcmp(merchant_id, vw->first_merchant);
    if (c == 0)
        c = k != vw->first_kind ? (int)k - (int)vw->first_kind
                                : (bucket_ms > vw->first_bucket) - (bucket_ms < vw->first_bucket);
    if (c >= 0)
        return;
    snprintf(vw->first_merchant, sizeof(vw->first_merchant), "%s", merchant_id);
    vw->first_kind = k;
    vw->first_bucket = bucket_ms;
}

/* Compares one stored bucket with master's; writes master's when they differ. */
static int settle(struct views *vw, enum views_kind k, const char *merchant_id, int64_t bucket_ms,
                  bool has_row, int64_t valid_from, int64_t stored_count, int64_t stored_revenue,
                  int64_t order_count, int64_t revenue_cents, bool is_counted, struct lerr *e)
{
    if (has_row && stored_count == order_count && stored_revenue == revenue_cents)
        return 0;
    if (!has_row && order_count == 0 && revenue_cents == 0)
        return 0;
    if (is_counted)
        note_difference(vw, k, merchant_id, bucket_ms);
    return views_replace(vw, k, merchant_id, bucket_ms, has_row, valid_from, order_count,
                         revenue_cents, e);
}

/* Reads a merchant's open rows of one table into out (bucket, count, revenue, valid_from). */
static int list_open(struct views *vw, enum views_kind k, const char *merchant_id,
                     struct views_rows *out, struct lerr *e)
{
    sqlite3_stmt *st = vw->t[k].list;
    int rc;

    out->n = 0;
    sqlite3_bind_text(st, 1, merchant_id, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (rows_push(out, merchant_id, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                      sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), e) != 0)
            break;
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return lerr_set(e, "cannot read the rows of merchant '%s': %s", merchant_id,
                        sqlite3_errmsg(vw->b->bdb));
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Settles a merchant's total and hours against master's sums (zero and no hours for a
 * merchant master does not hold); frees the hours. */
static int settle_merchant(struct views *vw, const char *merchant_id, int64_t order_count,
                           int64_t revenue_cents, struct views_bucket **hours, struct lerr *e)
{
    struct views_rows open = {0};
    struct views_bucket *b, *tmp;
    int rc = -1;

    if (vw->w->prev != 0) {
        if (list_open(vw, VIEWS_TOTAL, merchant_id, &open, e) != 0)
            goto out;
        const struct views_row *t = open.n ? &open.v[0] : NULL;
        if (settle(vw, VIEWS_TOTAL, merchant_id, 0, t != NULL, t ? t->valid_from : 0,
                   t ? t->order_count : 0, t ? t->revenue_cents : 0, order_count, revenue_cents,
                   true, e) != 0 ||
            list_open(vw, VIEWS_HOUR, merchant_id, &open, e) != 0)
            goto out;
        for (size_t i = 0; i < open.n; i++) {
            const struct views_row *h = &open.v[i];
            HASH_FIND(hh, *hours, &h->minute_ms, sizeof(h->minute_ms), b);
            if (b)
                b->is_seen = true;
            if (settle(vw, VIEWS_HOUR, merchant_id, h->minute_ms, true, h->valid_from,
                       h->order_count, h->revenue_cents, b ? b->order_count : 0,
                       b ? b->revenue_cents : 0, true, e) != 0)
                goto out;
        }
    } else if (views_insert_open(vw, VIEWS_TOTAL, merchant_id, 0, order_count, revenue_cents, e) !=
               0) {
        goto out;
    }
    HASH_ITER(hh, *hours, b, tmp)
    {
        if (!b->is_seen && settle(vw, VIEWS_HOUR, merchant_id, b->start_ms, false, 0, 0, 0,
                                  b->order_count, b->revenue_cents, true, e) != 0)
            goto out;
    }
    rc = 0;
out:
    free(open.v);
    free_buckets(hours);
    return rc;
}

/* Settles the merchants only the version holds, up to upto (NULL: all that are left). */
static int settle_gone(struct views *vw, const char *upto, struct lerr *e)
{
    while (vw->next_stored < vw->nstored &&
           (!upto || strcmp(vw->stored[vw->next_stored], upto) <= 0)) {
        const char *id = vw->stored[vw->next_stored++];
        struct views_bucket *none = NULL;
        if ((!upto || strcmp(id, upto) != 0) && settle_merchant(vw, id, 0, 0, &none, e) != 0)
            return -1;
    }
    return 0;
}

/* Ends the merchant being summed: settles it (and the merchants before it that only the version
 * holds); keeps its minutes that may be in the window. */
static int end_merchant(struct views *vw, struct lerr *e)
{
    struct views_bucket *b, *tmp;
    int64_t floor_ms;
    int rc = 0;

    if (!vw->merchant_id[0])
        return 0;
    floor_ms = tm_minute_of(vw->max_event_ms) - vw->window_ms;
    if (settle_gone(vw, vw->merchant_id, e) != 0 ||
        settle_merchant(vw, vw->merchant_id, vw->order_count, vw->revenue_cents, &vw->hours, e))
        return -1;
    HASH_ITER(hh, vw->minutes, b, tmp)
    {
        if (rc == 0 && b->start_ms >= floor_ms)
            rc = rows_push(&vw->kept, vw->merchant_id, b->start_ms, b->order_count,
                           b->revenue_cents, 0, e);
        HASH_DEL(vw->minutes, b);
        free(b);
    }
    vw->merchants++;
    vw->order_count = vw->revenue_cents = 0;
    return rc;
}

static int add_order(struct views *vw, const char *merchant_id, int64_t amount_cents,
                     int64_t event_ms, struct lerr *e)
{
    if (strcmp(merchant_id, vw->merchant_id) != 0) {
        if (end_merchant(vw, e) != 0)
            return -1;
        if (vw->merchants == 1)
            batch_pause(vw->b->pause_at, "recompute"); /* one merchant written, the rest not */
        snprintf(vw->merchant_id, sizeof(vw->merchant_id), "%s", merchant_id);
    }
    if (event_ms > vw->max_event_ms)
        vw->max_event_ms = event_ms;
    vw->order_count++;
    vw->revenue_cents += amount_cents;
    vw->w->orders++;
    if (bucket_add(&vw->hours, tm_hour_of(event_ms), amount_cents) != 0)
        return lerr_set(e, "out of memory");
    /* A minute this far behind the newest event can never be in the window. */
    if (event_ms >= tm_minute_of(vw->max_event_ms) - vw->window_ms &&
        bucket_add(&vw->minutes, tm_minute_of(event_ms), amount_cents) != 0)
        return lerr_set(e, "out of memory");
    return 0;
}

/* The merchants with an open total, sorted as master's scan is (BINARY collation). */
static int load_stored(struct views *vw, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int rc;

    if (vw->w->prev == 0)
        return 0;
    if (db_prepare(vw->b->bdb,
                   "SELECT merchant_id FROM merchant_totals WHERE valid_to=" DB_OPEN_SQL
                   " ORDER BY merchant_id",
                   &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (vw->nstored == cap) {
            char **v = realloc(vw->stored, (cap = cap ? cap * 2 : 1024) * sizeof(*v));
            if (!v)
                break;
            vw->stored = v;
        }
        if (!(vw->stored[vw->nstored] = strdup((const char *)sqlite3_column_text(st, 0))))
            break;
        vw->nstored++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return lerr_set(e, "cannot read merchant totals: %s", sqlite3_errmsg(vw->b->bdb));
    return rc == SQLITE_DONE ? 0 : lerr_set(e, "out of memory");
}

/* Settles the minute rows: master's kept ones against the version's open ones. Only minutes in
 * both windows count as differences (a changed minute_series_hours moves master's). */
static int settle_minutes(struct views *vw, struct lerr *e)
{
    struct batch_work *w = vw->w;
    int64_t inc_from = w->minute_from_ms, from = inc_from, count_from;
    struct views_rows open = {0};
    sqlite3_stmt *st = NULL;
    size_t i = 0, j = 0;
    int rc = -1;

    w->max_minute_ms = vw->w->orders ? tm_minute_of(vw->max_event_ms) : INT64_MIN;
    w->minute_from_ms = w->orders ? w->max_minute_ms - vw->window_ms : INT64_MIN;
    if (w->prev == 0)
        inc_from = from = w->minute_from_ms;
    if (w->minute_from_ms < from)
        from = w->minute_from_ms;
    count_from = inc_from > w->minute_from_ms ? inc_from : w->minute_from_ms;
    if (w->prev != 0) {
        if (db_prepare(vw->b->bdb,
                       "SELECT merchant_id, minute_ms, order_count, revenue_cents, valid_from"
                       " FROM minutely WHERE minute_ms >= ?1 AND valid_to=" DB_OPEN_SQL,
                       &st, e) != 0)
            goto out;
        sqlite3_bind_int64(st, 1, from);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (rows_push(&open, (const char *)sqlite3_column_text(st, 0),
                          sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
                          sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4), e) != 0)
                goto out;
        if (rc != SQLITE_DONE) {
            lerr_set(e, "cannot read minute rows: %s", sqlite3_errmsg(vw->b->bdb));
            goto out;
        }
        if (open.n > 0) /* open.v may be NULL, which qsort() must not see */
            qsort(open.v, open.n, sizeof(*open.v), compare_rows);
    }
    if (vw->kept.n > 0)
        qsort(vw->kept.v, vw->kept.n, sizeof(*vw->kept.v), compare_rows);
    rc = -1;
    while (i < vw->kept.n || j < open.n) {
        const struct views_row *k = i < vw->kept.n ? &vw->kept.v[i] : NULL;
        const struct views_row *o = j < open.n ? &open.v[j] : NULL;
        int c = !k ? 1 : !o ? -1 : compare_rows(k, o);
        const struct views_row *r = c <= 0 ? k : o;
        bool in_window = r->minute_ms >= w->minute_from_ms;
        if (c < 0 && !in_window) {
            i++;
            continue;
        }
        if (settle(vw, VIEWS_MINUTE, r->merchant_id, r->minute_ms, c >= 0,
                   o && c >= 0 ? o->valid_from : 0, c >= 0 ? o->order_count : 0,
                   c >= 0 ? o->revenue_cents : 0, c <= 0 && in_window ? k->order_count : 0,
                   c <= 0 && in_window ? k->revenue_cents : 0, r->minute_ms >= count_from, e) != 0)
            goto out;
        i += c <= 0;
        j += c >= 0;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    free(open.v);
    return rc;
}

/* One scan of master in primary-key order (merchant by merchant, no sort). A full run merged
 * the recent level into the big one before (batch_merge_levels), so the scan reads the big
 * level alone; should the recent level hold orders all the same, both levels are read in one
 * merge of the two key orders (1.6x slower: it is never the plan of a full run that merged). */
static int scan_master(struct views *vw, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int64_t has_recent = 1;
    int rc;

    vw->w->orders = 0;
    vw->merchant_id[0] = '\0';
    vw->merchants = 0;
    vw->max_event_ms = INT64_MIN;
    if (load_stored(vw, e) != 0 ||
        db_query_int(vw->b->bdb, "SELECT EXISTS (SELECT 1 FROM m.orders_recent)", &has_recent, e) !=
            0 ||
        db_prepare(vw->b->bdb,
                   has_recent ? "SELECT merchant_id, amount_cents, event_time_ms FROM m.orders_base"
                                " UNION ALL SELECT merchant_id, amount_cents, event_time_ms FROM"
                                " m.orders_recent ORDER BY merchant_id"
                              : "SELECT merchant_id, amount_cents, event_time_ms FROM m.orders_base"
                                " ORDER BY merchant_id",
                   &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (add_order(vw, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
                      sqlite3_column_int64(st, 2), e) != 0)
            break;
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return lerr_set(e, "cannot read master orders: %s", sqlite3_errmsg(vw->b->bdb));
    if (rc == SQLITE_ROW)
        return -1; /* add_order() failed and said why */
    if (end_merchant(vw, e) != 0 || settle_gone(vw, NULL, e) != 0)
        return -1;
    return settle_minutes(vw, e);
}

static void describe_first(const struct views *vw, struct batch_work *w)
{
    char when[TM_RFC3339_LEN];

    if (vw->first_kind < 0)
        return;
    if (vw->first_kind == VIEWS_TOTAL) {
        snprintf(w->first_difference, sizeof(w->first_difference), "merchant=%s bucket=total",
                 vw->first_merchant);
        return;
    }
    tm_format_rfc3339(vw->first_bucket, when);
    snprintf(w->first_difference, sizeof(w->first_difference), "merchant=%s bucket=%s:%s",
             vw->first_merchant, kind_name[vw->first_kind], when);
}

int views_full_scan(struct views *vw, struct lerr *e)
{
    if (scan_master(vw, e) != 0)
        return -1;
    describe_first(vw, vw->w);
    return 0;
}

void views_full_release(struct views *vw)
{
    free_buckets(&vw->hours); /* left only by a failed scan */
    free_buckets(&vw->minutes);
    for (size_t i = 0; i < vw->nstored; i++)
        free(vw->stored[i]);
    free(vw->stored);
    free(vw->kept.v);
}
