/* views.c - a version's rows: the previous version's plus what was ingested since, and, in a
 * full run, a recompute of every row from the master dataset that proves and repairs them.
 *
 * A row belongs to the versions valid_from <= V < valid_to (db.h). An incremental run reads the
 * sums master's ingest recorded after the previous version (seq > prev_seq) and, for each
 * (merchant, minute) among them, closes the open rows of that merchant's total, hour and
 * minute (valid_to = V) and inserts their successors (valid_from = V); rows nobody touched stay
 * open and are shared. Its cost follows the buckets the new orders touch, never history. The
 * minute window moves with the newest minute: rows that fall out of it are closed, found
 * through an index on minute_ms. A full run then scans master in primary-key order, merchant by
 * merchant, and compares each bucket with the open row; where they differ master wins: the
 * open row is closed and master's value written, and the difference is counted. */
#include "batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "db.h"
#include "ev.h"
#include "log.h"
#include "tm.h"

enum kind { K_TOTAL, K_HOUR, K_MINUTE };

static const char *const kind_name[] = {"total", "hour", "minute"};

/* The statements of one view table; ?1 merchant, ?2 bucket start, ?3 the version. */
struct table {
    sqlite3_stmt *bump;  /* closes the open row, returning its sums */
    sqlite3_stmt *close; /* closes the open row of an earlier version */
    sqlite3_stmt *drop;  /* deletes a row this version wrote */
    sqlite3_stmt *ins;   /* inserts the open row: ?4 order_count, ?5 revenue_cents */
    sqlite3_stmt *list;  /* a merchant's open rows: bucket, sums, valid_from */
};

/* One time bucket of one merchant (an hour or a minute), in a uthash table. */
struct bucket {
    int64_t start_ms;
    int64_t order_count, revenue_cents;
    bool is_seen; /* matched by a stored row */
    UT_hash_handle hh;
};

/* A minute row of master's recompute, or an open minute row of the version. */
struct minute_row {
    char merchant_id[EV_ID_MAX + 1];
    int64_t minute_ms, order_count, revenue_cents, valid_from;
};

struct minute_rows {
    struct minute_row *v;
    size_t n, cap;
};

struct views {
    struct batch *b;
    struct batch_work *w;
    int64_t window_ms;
    struct table t[3];
    /* the full recompute: the merchant being summed and its buckets */
    char merchant_id[EV_ID_MAX + 1];
    int64_t order_count, revenue_cents;
    struct bucket *hours, *minutes;
    int64_t max_event_ms;    /* newest event time seen so far */
    struct minute_rows kept; /* master's minute rows that may fall in the window */
    char **stored;           /* merchants with an open total before the scan, sorted */
    size_t nstored, next_stored;
    int64_t merchants;    /* merchants done */
    int64_t first_kind;   /* of the first difference, -1 while there is none */
    int64_t first_bucket; /* its bucket start */
    char first_merchant[EV_ID_MAX + 1];
};

static int prepare_table(struct views *vw, enum kind k, struct lerr *e)
{
    static const char *const tables[] = {"merchant_totals", "hourly", "minutely"};
    static const char *const cols[] = {"", "hour_ms, ", "minute_ms, "};
    static const char *const keys[] = {"merchant_id=?1", "merchant_id=?1 AND hour_ms=?2",
                                       "merchant_id=?1 AND minute_ms=?2"};
    static const char *const vals[] = {"", "?2, ", "?2, "};
    struct table *t = &vw->t[k];
    sqlite3 *db = vw->b->bdb;
    char sql[512];

    snprintf(sql, sizeof(sql),
             "UPDATE %s SET valid_to=?3 WHERE %s AND valid_to=" DB_OPEN_SQL " AND valid_from<?3"
             " RETURNING order_count, revenue_cents",
             tables[k], keys[k]);
    if (db_prepare(db, sql, &t->bump, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "UPDATE %s SET valid_to=?3 WHERE %s AND valid_to=" DB_OPEN_SQL " AND valid_from<?3",
             tables[k], keys[k]);
    if (db_prepare(db, sql, &t->close, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE %s AND valid_from=?3", tables[k], keys[k]);
    if (db_prepare(db, sql, &t->drop, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s(merchant_id, %svalid_from, order_count, revenue_cents)"
             " VALUES(?1, %s?3, ?4, ?5)",
             tables[k], cols[k], vals[k]);
    if (db_prepare(db, sql, &t->ins, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "SELECT %s order_count, revenue_cents, valid_from FROM %s WHERE merchant_id=?1 AND"
             " valid_to=" DB_OPEN_SQL,
             k == K_TOTAL  ? "0,"
             : k == K_HOUR ? "hour_ms,"
                           : "minute_ms,",
             tables[k]);
    return db_prepare(db, sql, &t->list, e);
}

static void bind_key(sqlite3_stmt *st, const char *merchant_id, int64_t bucket_ms, int64_t version)
{
    sqlite3_bind_text(st, 1, merchant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, bucket_ms);
    sqlite3_bind_int64(st, 3, version);
}

static int insert_open(struct views *vw, enum kind k, const char *merchant_id, int64_t bucket_ms,
                       int64_t order_count, int64_t revenue_cents, struct lerr *e)
{
    sqlite3_stmt *st = vw->t[k].ins;

    if (k == K_TOTAL)
        vw->w->merchants_rewritten++;
    else
        vw->w->buckets_rewritten++;
    if (order_count == 0 && revenue_cents == 0)
        return 0; /* an empty bucket is no row */
    bind_key(st, merchant_id, bucket_ms, vw->w->version);
    sqlite3_bind_int64(st, 4, order_count);
    sqlite3_bind_int64(st, 5, revenue_cents);
    return db_step_done(st, e);
}

/* Adds a delta to a bucket: its open row is closed and its successor written. */
static int add_delta(struct views *vw, enum kind k, const char *merchant_id, int64_t bucket_ms,
                     int64_t order_count, int64_t revenue_cents, struct lerr *e)
{
    sqlite3_stmt *st = vw->t[k].bump;
    int rc;

    bind_key(st, merchant_id, bucket_ms, vw->w->version);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        order_count += sqlite3_column_int64(st, 0);
        revenue_cents += sqlite3_column_int64(st, 1);
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot update '%s' of merchant '%s': %s", kind_name[k], merchant_id,
                        sqlite3_errmsg(vw->b->bdb));
    return insert_open(vw, k, merchant_id, bucket_ms, order_count, revenue_cents, e);
}

/* Replaces an open row (written by valid_from) with master's sums. */
static int replace(struct views *vw, enum kind k, const char *merchant_id, int64_t bucket_ms,
                   bool has_row, int64_t valid_from, int64_t order_count, int64_t revenue_cents,
                   struct lerr *e)
{
    sqlite3_stmt *st = valid_from == vw->w->version ? vw->t[k].drop : vw->t[k].close;

    if (has_row) {
        bind_key(st, merchant_id, bucket_ms, vw->w->version);
        if (db_step_done(st, e) != 0)
            return -1;
    }
    return insert_open(vw, k, merchant_id, bucket_ms, order_count, revenue_cents, e);
}

/* Undoes what an earlier, killed or failed, attempt at a version after prev committed. */
static int clean_up(struct views *vw, struct lerr *e)
{
    char sql[1024];

    if (vw->w->prev == 0) /* nothing is published: every row is a leftover */
        return db_exec(vw->b->bdb,
                       "DELETE FROM merchant_totals; DELETE FROM hourly; DELETE FROM minutely", e);
    snprintf(sql, sizeof(sql),
             "DELETE FROM merchant_totals WHERE valid_from > %1$" PRId64 ";"
             "DELETE FROM hourly WHERE valid_from > %1$" PRId64 ";"
             "DELETE FROM minutely WHERE valid_from > %1$" PRId64 ";"
             "UPDATE merchant_totals SET valid_to=" DB_OPEN_SQL " WHERE valid_to < " DB_OPEN_SQL
             " AND valid_to > %1$" PRId64 ";"
             "UPDATE hourly SET valid_to=" DB_OPEN_SQL " WHERE valid_to < " DB_OPEN_SQL
             " AND valid_to > %1$" PRId64 ";"
             "UPDATE minutely SET valid_to=" DB_OPEN_SQL " WHERE valid_to < " DB_OPEN_SQL
             " AND valid_to > %1$" PRId64 ";",
             vw->w->prev);
    return db_exec(vw->b->bdb, sql, e);
}

/* The newest minute and the window start once the increment is in. */
static int place_window(struct views *vw, struct lerr *e)
{
    struct batch_work *w = vw->w;
    sqlite3_stmt *st = NULL;
    int64_t newest = INT64_MIN;
    int rc;

    if (db_prepare(vw->b->bdb,
                   "SELECT max(minute_ms) FROM m.ingest_sums WHERE seq > ?1 AND seq <= ?2", &st,
                   e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, w->prev_seq);
    sqlite3_bind_int64(st, 2, w->seq);
    rc = db_step_int(st, &newest, e);
    sqlite3_finalize(st);
    if (rc != 0)
        return -1;
    w->max_minute_ms = newest > w->prev_max_minute_ms ? newest : w->prev_max_minute_ms;
    w->minute_from_ms = w->prev_minute_from_ms;
    if (w->max_minute_ms != INT64_MIN && w->max_minute_ms - vw->window_ms > w->minute_from_ms)
        w->minute_from_ms = w->max_minute_ms - vw->window_ms;
    return 0;
}

/* Closes the minute rows that fell out of the window. */
static int expire_minutes(struct views *vw, struct lerr *e)
{
    struct batch_work *w = vw->w;
    sqlite3_stmt *st = NULL;
    int rc;

    if (w->minute_from_ms == w->prev_minute_from_ms)
        return 0;
    if (db_prepare(vw->b->bdb,
                   "UPDATE minutely SET valid_to=?1 WHERE minute_ms >= ?2 AND minute_ms < ?3"
                   " AND valid_to=" DB_OPEN_SQL,
                   &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, w->version);
    sqlite3_bind_int64(st, 2, w->prev_minute_from_ms);
    sqlite3_bind_int64(st, 3, w->minute_from_ms);
    rc = db_step_done(st, e);
    w->minutes_expired = sqlite3_changes(vw->b->bdb);
    sqlite3_finalize(st);
    return rc;
}

/* The increment of one merchant being added: its total and the hour being summed. */
struct incr {
    char merchant_id[EV_ID_MAX + 1];
    int64_t order_count, revenue_cents;
    int64_t hour_ms, hour_count, hour_revenue;
};

static int flush_hour(struct views *vw, struct incr *in, struct lerr *e)
{
    if (in->hour_count == 0 && in->hour_revenue == 0)
        return 0;
    if (add_delta(vw, K_HOUR, in->merchant_id, in->hour_ms, in->hour_count, in->hour_revenue, e))
        return -1;
    in->hour_count = in->hour_revenue = 0;
    return 0;
}

static int flush_incr(struct views *vw, struct incr *in, struct lerr *e)
{
    if (!in->merchant_id[0])
        return 0;
    if (flush_hour(vw, in, e) != 0 ||
        add_delta(vw, K_TOTAL, in->merchant_id, 0, in->order_count, in->revenue_cents, e) != 0)
        return -1;
    in->order_count = in->revenue_cents = 0;
    return 0;
}

/* One (merchant, minute) of the increment, in (merchant, minute) order. */
static int add_incr(struct views *vw, struct incr *in, const char *merchant_id, int64_t minute_ms,
                    int64_t order_count, int64_t revenue_cents, struct lerr *e)
{
    int64_t hour_ms = tm_hour_of(minute_ms);

    if (strcmp(merchant_id, in->merchant_id) != 0) {
        if (flush_incr(vw, in, e) != 0)
            return -1;
        if (in->merchant_id[0] && vw->merchants++ == 0)
            batch_pause(vw->b->pause_at, "recompute"); /* one merchant written, the rest not */
        snprintf(in->merchant_id, sizeof(in->merchant_id), "%s", merchant_id);
        in->hour_ms = hour_ms;
    }
    if (hour_ms != in->hour_ms) {
        if (flush_hour(vw, in, e) != 0)
            return -1;
        in->hour_ms = hour_ms;
    }
    in->order_count += order_count;
    in->revenue_cents += revenue_cents;
    in->hour_count += order_count;
    in->hour_revenue += revenue_cents;
    vw->w->orders += order_count;
    if (minute_ms >= vw->w->minute_from_ms)
        return add_delta(vw, K_MINUTE, merchant_id, minute_ms, order_count, revenue_cents, e);
    return 0;
}

/* Adds the sums ingested after the previous version to its rows. */
static int apply_increment(struct views *vw, struct lerr *e)
{
    struct batch_work *w = vw->w;
    struct incr in;
    sqlite3_stmt *st = NULL;
    int rc;

    memset(&in, 0, sizeof(in));
    w->orders = w->prev_orders;
    if (place_window(vw, e) != 0 || expire_minutes(vw, e) != 0 ||
        db_prepare(vw->b->bdb,
                   "SELECT merchant_id, minute_ms, sum(order_count), sum(revenue_cents)"
                   " FROM m.ingest_sums WHERE seq > ?1 AND seq <= ?2"
                   " GROUP BY merchant_id, minute_ms ORDER BY merchant_id, minute_ms",
                   &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, w->prev_seq);
    sqlite3_bind_int64(st, 2, w->seq);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (add_incr(vw, &in, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
                     sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), e) != 0)
            break;
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return lerr_set(e, "cannot read master's ingest sums: %s", sqlite3_errmsg(vw->b->bdb));
    if (rc == SQLITE_ROW)
        return -1; /* add_incr() failed and said why */
    return flush_incr(vw, &in, e);
}

/* The full recompute. */

static int bucket_add(struct bucket **head, int64_t start_ms, int64_t amount_cents)
{
    struct bucket *b;

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

static void free_buckets(struct bucket **head)
{
    struct bucket *b, *tmp;

    HASH_ITER(hh, *head, b, tmp)
    {
        HASH_DEL(*head, b);
        free(b);
    }
}

static int rows_push(struct minute_rows *r, const char *merchant_id, int64_t minute_ms,
                     int64_t order_count, int64_t revenue_cents, int64_t valid_from, struct lerr *e)
{
    struct minute_row *k;

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
    const struct minute_row *a = pa, *b = pb;
    int c = strcmp(a->merchant_id, b->merchant_id);

    if (c == 0)
        c = (a->minute_ms > b->minute_ms) - (a->minute_ms < b->minute_ms);
    return c;
}

/* Counts a difference between the increments and master, keeping the first in (merchant,
 * kind, bucket) order for the error line. */
static void note_difference(struct views *vw, enum kind k, const char *merchant_id,
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
static int settle(struct views *vw, enum kind k, const char *merchant_id, int64_t bucket_ms,
                  bool has_row, int64_t valid_from, int64_t stored_count, int64_t stored_revenue,
                  int64_t order_count, int64_t revenue_cents, bool is_counted, struct lerr *e)
{
    if (has_row && stored_count == order_count && stored_revenue == revenue_cents)
        return 0;
    if (!has_row && order_count == 0 && revenue_cents == 0)
        return 0;
    if (is_counted)
        note_difference(vw, k, merchant_id, bucket_ms);
    return replace(vw, k, merchant_id, bucket_ms, has_row, valid_from, order_count, revenue_cents,
                   e);
}

/* Reads a merchant's open rows of one table into out (bucket, count, revenue, valid_from). */
static int list_open(struct views *vw, enum kind k, const char *merchant_id,
                     struct minute_rows *out, struct lerr *e)
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
                           int64_t revenue_cents, struct bucket **hours, struct lerr *e)
{
    struct minute_rows open = {0};
    struct bucket *b, *tmp;
    int rc = -1;

    if (vw->w->prev != 0) {
        if (list_open(vw, K_TOTAL, merchant_id, &open, e) != 0)
            goto out;
        const struct minute_row *t = open.n ? &open.v[0] : NULL;
        if (settle(vw, K_TOTAL, merchant_id, 0, t != NULL, t ? t->valid_from : 0,
                   t ? t->order_count : 0, t ? t->revenue_cents : 0, order_count, revenue_cents,
                   true, e) != 0 ||
            list_open(vw, K_HOUR, merchant_id, &open, e) != 0)
            goto out;
        for (size_t i = 0; i < open.n; i++) {
            const struct minute_row *h = &open.v[i];
            HASH_FIND(hh, *hours, &h->minute_ms, sizeof(h->minute_ms), b);
            if (b)
                b->is_seen = true;
            if (settle(vw, K_HOUR, merchant_id, h->minute_ms, true, h->valid_from, h->order_count,
                       h->revenue_cents, b ? b->order_count : 0, b ? b->revenue_cents : 0, true,
                       e) != 0)
                goto out;
        }
    } else if (insert_open(vw, K_TOTAL, merchant_id, 0, order_count, revenue_cents, e) != 0) {
        goto out;
    }
    HASH_ITER(hh, *hours, b, tmp)
    {
        if (!b->is_seen && settle(vw, K_HOUR, merchant_id, b->start_ms, false, 0, 0, 0,
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
        struct bucket *none = NULL;
        if ((!upto || strcmp(id, upto) != 0) && settle_merchant(vw, id, 0, 0, &none, e) != 0)
            return -1;
    }
    return 0;
}

/* Ends the merchant being summed: settles it (and the merchants before it that only the version
 * holds); keeps its minutes that may be in the window. */
static int end_merchant(struct views *vw, struct lerr *e)
{
    struct bucket *b, *tmp;
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
    struct minute_rows open = {0};
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
        const struct minute_row *k = i < vw->kept.n ? &vw->kept.v[i] : NULL;
        const struct minute_row *o = j < open.n ? &open.v[j] : NULL;
        int c = !k ? 1 : !o ? -1 : compare_rows(k, o);
        const struct minute_row *r = c <= 0 ? k : o;
        bool in_window = r->minute_ms >= w->minute_from_ms;
        if (c < 0 && !in_window) {
            i++;
            continue;
        }
        if (settle(vw, K_MINUTE, r->merchant_id, r->minute_ms, c >= 0,
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

/* One scan of master in primary-key order (merchant by merchant, no sort). */
static int scan_master(struct views *vw, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    vw->w->orders = 0;
    vw->merchant_id[0] = '\0';
    vw->merchants = 0;
    vw->max_event_ms = INT64_MIN;
    if (load_stored(vw, e) != 0 ||
        db_prepare(vw->b->bdb,
                   "SELECT merchant_id, amount_cents, event_time_ms FROM m.orders"
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
    if (vw->first_kind == K_TOTAL) {
        snprintf(w->first_difference, sizeof(w->first_difference), "merchant=%s bucket=total",
                 vw->first_merchant);
        return;
    }
    tm_format_rfc3339(vw->first_bucket, when);
    snprintf(w->first_difference, sizeof(w->first_difference), "merchant=%s bucket=%s:%s",
             vw->first_merchant, kind_name[vw->first_kind], when);
}

static int recompute_in_txn(struct views *vw, struct lerr *e)
{
    struct batch_work *w = vw->w;
    int64_t t0 = tm_mono_ms();

    for (int k = K_TOTAL; k <= K_MINUTE; k++)
        if (prepare_table(vw, (enum kind)k, e) != 0)
            return -1;
    if (clean_up(vw, e) != 0)
        return -1;
    if (w->prev != 0 && apply_increment(vw, e) != 0)
        return -1;
    /* A first build writes every row: the secondary indexes are built once at the end, sorted,
     * instead of being kept up to date row by row. */
    if (w->prev == 0 && db_exec(vw->b->bdb,
                                "DROP INDEX merchant_totals_from; DROP INDEX hourly_from;"
                                " DROP INDEX minutely_from; DROP INDEX minutely_by_minute",
                                e) != 0)
        return -1;
    w->recompute_ms = tm_mono_ms() - t0;
    if (!w->is_full)
        return 0;
    t0 = tm_mono_ms();
    if (scan_master(vw, e) != 0 || (w->prev == 0 && db_schema(vw->b->bdb, DB_BATCH, e) != 0))
        return -1;
    describe_first(vw, w);
    w->compare_ms = tm_mono_ms() - t0;
    return 0;
}

static void release_views(struct views *vw)
{
    free_buckets(&vw->hours); /* left only by a failed scan */
    free_buckets(&vw->minutes);
    for (int k = K_TOTAL; k <= K_MINUTE; k++) {
        sqlite3_finalize(vw->t[k].bump);
        sqlite3_finalize(vw->t[k].close);
        sqlite3_finalize(vw->t[k].drop);
        sqlite3_finalize(vw->t[k].ins);
        sqlite3_finalize(vw->t[k].list);
    }
    for (size_t i = 0; i < vw->nstored; i++)
        free(vw->stored[i]);
    free(vw->stored);
    free(vw->kept.v);
}

int batch_recompute(struct batch *b, struct batch_work *w, struct lerr *e)
{
    struct views vw = {.b = b, .w = w, .first_kind = -1};
    int rc = -1;

    vw.window_ms = cfg_int(b->c, "minute_series_hours") * TM_HOUR_MS;
    w->merchants_rewritten = w->buckets_rewritten = w->minutes_expired = w->differences = 0;
    w->first_difference[0] = '\0';
    w->max_minute_ms = w->prev_max_minute_ms;
    w->minute_from_ms = w->prev_minute_from_ms;
    /* A plain BEGIN: the transaction writes batch.db only and never locks master.db. */
    if (db_exec(b->bdb, "BEGIN", e) != 0)
        goto out;
    if (recompute_in_txn(&vw, e) != 0 || db_exec(b->bdb, "COMMIT", e) != 0) {
        sqlite3_exec(b->bdb, "ROLLBACK", NULL, NULL, NULL);
        goto out;
    }
    log_info("batch",
             "recompute_done version=%" PRId64 " mode=%s merchants_rewritten=%" PRId64
             " buckets_rewritten=%" PRId64 " minutes_expired=%" PRId64 " recompute_ms=%" PRId64
             " compare_ms=%" PRId64,
             w->version, w->is_full ? "full" : "incremental", w->merchants_rewritten,
             w->buckets_rewritten, w->minutes_expired, w->recompute_ms, w->compare_ms);
    rc = 0;
out:
    release_views(&vw);
    return rc;
}
