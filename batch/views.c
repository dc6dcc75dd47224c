/* views.c - a version's rows: the previous version's plus what was ingested since, and, in a
 * full run, a recompute of every row from the master dataset that proves and repairs them.
 *
 * A row belongs to the versions valid_from <= V < valid_to (db.h). An incremental run reads the
 * sums master's ingest recorded after the previous version (seq > prev_seq) and, for each
 * (merchant, minute) among them, closes the open rows of that merchant's total, hour and
 * minute (valid_to = V) and inserts their successors (valid_from = V); rows nobody touched stay
 * open and are shared. Its cost follows the buckets the new orders touch, never history. The
 * minute window moves with the newest minute: rows that fall out of it are closed, found
 * through an index on minute_ms. A full run then also recomputes every bucket from master and
 * repairs what differs (full.c). */
#include "views.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "ev.h"
#include "log.h"
#include "tm.h"

static const char *const kind_name[] = {"total", "hour", "minute"};

static int prepare_table(struct views *vw, enum views_kind k, struct lerr *e)
{
    static const char *const tables[] = {"merchant_totals", "hourly", "minutely"};
    static const char *const cols[] = {"", "hour_ms, ", "minute_ms, "};
    static const char *const keys[] = {"merchant_id=?1", "merchant_id=?1 AND hour_ms=?2",
                                       "merchant_id=?1 AND minute_ms=?2"};
    static const char *const vals[] = {"", "?2, ", "?2, "};
    struct views_table *t = &vw->t[k];
    sqlite3 *db = vw->b->bdb;
    char sql[512];

    /* Finding the open row, then closing it by its whole key: an UPDATE ... RETURNING, or one
     * that may match several rows, opens two temporary B-trees each time it runs, which made
     * up a third of an incremental recompute. */
    snprintf(
        sql, sizeof(sql),
        "SELECT order_count, revenue_cents, valid_from FROM %s WHERE %s AND valid_to=" DB_OPEN_SQL
        " AND valid_from<?3",
        tables[k], keys[k]);
    if (db_prepare(db, sql, &t->bump, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "UPDATE %s SET valid_to=?3 WHERE %s AND valid_from=?4", tables[k],
             keys[k]);
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
             k == VIEWS_TOTAL  ? "0,"
             : k == VIEWS_HOUR ? "hour_ms,"
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

int views_insert_open(struct views *vw, enum views_kind k, const char *merchant_id,
                      int64_t bucket_ms, int64_t order_count, int64_t revenue_cents, struct lerr *e)
{
    sqlite3_stmt *st = vw->t[k].ins;

    if (k == VIEWS_TOTAL)
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

/* Closes a bucket's open row, written by version valid_from (< this one). */
static int close_row(struct views *vw, enum views_kind k, const char *merchant_id,
                     int64_t bucket_ms, int64_t valid_from, struct lerr *e)
{
    sqlite3_stmt *st = vw->t[k].close;

    bind_key(st, merchant_id, bucket_ms, vw->w->version);
    sqlite3_bind_int64(st, 4, valid_from);
    return db_step_done(st, e);
}

/* Adds a delta to a bucket: its open row is closed and its successor written. */
static int add_delta(struct views *vw, enum views_kind k, const char *merchant_id,
                     int64_t bucket_ms, int64_t order_count, int64_t revenue_cents, struct lerr *e)
{
    sqlite3_stmt *st = vw->t[k].bump;
    int64_t valid_from = 0;
    bool has_row;
    int rc;

    bind_key(st, merchant_id, bucket_ms, vw->w->version);
    rc = sqlite3_step(st);
    has_row = rc == SQLITE_ROW;
    if (has_row) {
        order_count += sqlite3_column_int64(st, 0);
        revenue_cents += sqlite3_column_int64(st, 1);
        valid_from = sqlite3_column_int64(st, 2);
        rc = sqlite3_step(st); /* one open row per bucket */
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot update '%s' of merchant '%s': %s", kind_name[k], merchant_id,
                        rc == SQLITE_ROW ? "more than one open row" : sqlite3_errmsg(vw->b->bdb));
    if (has_row && close_row(vw, k, merchant_id, bucket_ms, valid_from, e) != 0)
        return -1;
    return views_insert_open(vw, k, merchant_id, bucket_ms, order_count, revenue_cents, e);
}

/* Replaces an open row (written by valid_from) with master's sums. */
int views_replace(struct views *vw, enum views_kind k, const char *merchant_id, int64_t bucket_ms,
                  bool has_row, int64_t valid_from, int64_t order_count, int64_t revenue_cents,
                  struct lerr *e)
{
    sqlite3_stmt *st = vw->t[k].drop;

    if (has_row && valid_from != vw->w->version &&
        close_row(vw, k, merchant_id, bucket_ms, valid_from, e) != 0)
        return -1;
    if (has_row && valid_from == vw->w->version) {
        bind_key(st, merchant_id, bucket_ms, vw->w->version);
        if (db_step_done(st, e) != 0)
            return -1;
    }
    return views_insert_open(vw, k, merchant_id, bucket_ms, order_count, revenue_cents, e);
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
             "UPDATE OR FAIL merchant_totals SET valid_to=" DB_OPEN_SQL
             " WHERE valid_to < " DB_OPEN_SQL " AND valid_to > %1$" PRId64 ";"
             "UPDATE OR FAIL hourly SET valid_to=" DB_OPEN_SQL " WHERE valid_to < " DB_OPEN_SQL
             " AND valid_to > %1$" PRId64 ";"
             "UPDATE OR FAIL minutely SET valid_to=" DB_OPEN_SQL " WHERE valid_to < " DB_OPEN_SQL
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

/* Closes the minute rows that fell out of the window. OR FAIL: a statement that may change
 * many rows and may abort keeps a statement journal of every page it touches (a temporary file
 * as large as the rows it closes); with FAIL none is kept, and any failure rolls the whole
 * recompute back anyway. */
static int expire_minutes(struct views *vw, struct lerr *e)
{
    struct batch_work *w = vw->w;
    sqlite3_stmt *st = NULL;
    int rc;

    if (w->minute_from_ms == w->prev_minute_from_ms)
        return 0;
    if (db_prepare(
            vw->b->bdb,
            "UPDATE OR FAIL minutely SET valid_to=?1 WHERE minute_ms >= ?2 AND minute_ms < ?3"
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
    if (add_delta(vw, VIEWS_HOUR, in->merchant_id, in->hour_ms, in->hour_count, in->hour_revenue,
                  e))
        return -1;
    in->hour_count = in->hour_revenue = 0;
    return 0;
}

static int flush_incr(struct views *vw, struct incr *in, struct lerr *e)
{
    if (!in->merchant_id[0])
        return 0;
    if (flush_hour(vw, in, e) != 0 ||
        add_delta(vw, VIEWS_TOTAL, in->merchant_id, 0, in->order_count, in->revenue_cents, e) != 0)
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
        return add_delta(vw, VIEWS_MINUTE, merchant_id, minute_ms, order_count, revenue_cents, e);
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

static int recompute_in_txn(struct views *vw, struct lerr *e)
{
    struct batch_work *w = vw->w;
    int64_t t0 = tm_mono_ms();

    for (int k = VIEWS_TOTAL; k <= VIEWS_MINUTE; k++)
        if (prepare_table(vw, (enum views_kind)k, e) != 0)
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
    if (views_full_scan(vw, e) != 0 || (w->prev == 0 && db_schema(vw->b->bdb, DB_BATCH, e) != 0))
        return -1;
    w->compare_ms = tm_mono_ms() - t0;
    return 0;
}

static void release_views(struct views *vw)
{
    views_full_release(vw);
    for (int k = VIEWS_TOTAL; k <= VIEWS_MINUTE; k++) {
        sqlite3_finalize(vw->t[k].bump);
        sqlite3_finalize(vw->t[k].close);
        sqlite3_finalize(vw->t[k].drop);
        sqlite3_finalize(vw->t[k].ins);
        sqlite3_finalize(vw->t[k].list);
    }
}

int batch_recompute(struct batch *b, struct batch_work *w, struct lerr *e)
{
    struct views vw = {.b = b, .w = w, .first_kind = -1};
    struct lerr ignored;
    bool done;
    int rc = -1;

    vw.window_ms = cfg_int(b->c, "minute_series_hours") * TM_HOUR_MS;
    w->merchants_rewritten = w->buckets_rewritten = w->minutes_expired = w->differences = 0;
    w->first_difference[0] = '\0';
    w->max_minute_ms = w->prev_max_minute_ms;
    w->minute_from_ms = w->prev_minute_from_ms;
    /* Not synced: nothing acts on the pending version's rows before the publish, whose synced
     * commit makes them durable with it (one log, synced whole), and a power loss before
     * that leaves the run to redo the increment, as a crash does. The log copier syncs them
     * beside the checks, instead of the recompute waiting for 12 MB to reach the disk. */
    if (db_exec(b->bdb, "PRAGMA synchronous=NORMAL", e) != 0)
        goto out;
    /* A plain BEGIN: the transaction writes batch.db only and never locks master.db. */
    done = db_exec(b->bdb, "BEGIN", e) == 0 && recompute_in_txn(&vw, e) == 0 &&
           db_exec(b->bdb, "COMMIT", e) == 0;
    if (!done)
        sqlite3_exec(b->bdb, "ROLLBACK", NULL, NULL, NULL);
    if (db_exec(b->bdb, db_sync_pragma(DB_BATCH), done ? e : &ignored) != 0 || !done)
        goto out;
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
