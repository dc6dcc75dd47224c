/* views.c - recompute a version's views from the whole master dataset, check, publish.
 *
 * batch.db has master.db attached as "m", so each view is one INSERT ... SELECT ... GROUP BY
 * inside SQLite. A version's rows are written (and a killed attempt's leftovers deleted)
 * before the checks run, and only a passing version is marked published, in one transaction;
 * serving reads the newest published version, so it never sees a half-written one. */
#include "batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uthash.h>

#include "cut.h"
#include "db.h"
#include "ev.h"
#include "log.h"
#include "tm.h"

/* Runs a query with up to two integer parameters and reads one integer (0 when NULL). */
static int query_int(sqlite3 *db, const char *sql, int64_t p1, int64_t p2, int64_t *out,
                     struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *out = 0;
    if (db_prepare(db, sql, &st, e) != 0)
        return -1;
    if (sqlite3_bind_parameter_count(st) >= 1)
        sqlite3_bind_int64(st, 1, p1);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, p2);
    rc = db_step_int(st, out, e);
    sqlite3_finalize(st);
    return rc;
}

static int exec_version(sqlite3 *db, const char *fmt, int64_t version, int64_t arg, struct lerr *e)
{
    char sql[1024];

    snprintf(sql, sizeof(sql), fmt, version, arg);
    return db_exec(db, sql, e);
}

/* One time bucket of one merchant (an hour or a minute), in a uthash table. */
struct bucket {
    int64_t start_ms;
    int64_t order_count, revenue_cents;
    UT_hash_handle hh;
};

/* A minute row kept until the end of the scan, when the newest event time is known. */
struct minute_row {
    char merchant_id[EV_ID_MAX + 1];
    int64_t minute_ms, order_count, revenue_cents;
};

struct recompute {
    struct batch *b;
    int64_t version, window_ms;
    sqlite3_stmt *ins_total, *ins_hour, *ins_minute;
    char merchant_id[EV_ID_MAX + 1]; /* the merchant being summed */
    int64_t order_count, revenue_cents;
    struct bucket *hours, *minutes; /* of that merchant */
    int64_t max_event_ms;           /* newest event time seen so far */
    struct minute_row *kept;        /* minute rows that may fall in the window */
    size_t nkept, capkept;
    int64_t merchants;
};

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

static int insert_row(sqlite3_stmt *st, int64_t version, const char *merchant_id, const int64_t *v,
                      int n, struct lerr *e)
{
    sqlite3_bind_int64(st, 1, version);
    sqlite3_bind_text(st, 2, merchant_id, -1, SQLITE_STATIC);
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(st, 3 + i, v[i]);
    return db_step_done(st, e);
}

/* Writes the finished merchant's total and hours; keeps its minutes that may be recent. */
static int flush_merchant(struct recompute *r, struct lerr *e)
{
    int64_t floor_ms = tm_minute_of(r->max_event_ms) - r->window_ms;
    struct bucket *b, *tmp;
    int rc = 0;

    if (!r->merchant_id[0])
        return 0;
    if (insert_row(r->ins_total, r->version, r->merchant_id,
                   (int64_t[]){r->order_count, r->revenue_cents}, 2, e) != 0)
        rc = -1;
    HASH_ITER(hh, r->hours, b, tmp)
    {
        if (rc == 0 &&
            insert_row(r->ins_hour, r->version, r->merchant_id,
                       (int64_t[]){b->start_ms, b->order_count, b->revenue_cents}, 3, e) != 0)
            rc = -1;
        HASH_DEL(r->hours, b);
        free(b);
    }
    HASH_ITER(hh, r->minutes, b, tmp)
    {
        if (rc == 0 && b->start_ms >= floor_ms) {
            if (r->nkept == r->capkept) {
                size_t cap = r->capkept ? r->capkept * 2 : 4096;
                struct minute_row *k = realloc(r->kept, cap * sizeof(*k));
                if (!k)
                    rc = lerr_set(e, "out of memory");
                else
                    r->kept = k, r->capkept = cap;
            }
            if (rc == 0) {
                struct minute_row *k = &r->kept[r->nkept++];
                memcpy(k->merchant_id, r->merchant_id, sizeof(k->merchant_id));
                k->minute_ms = b->start_ms;
                k->order_count = b->order_count;
                k->revenue_cents = b->revenue_cents;
            }
        }
        HASH_DEL(r->minutes, b);
        free(b);
    }
    r->merchants++;
    r->order_count = r->revenue_cents = 0;
    return rc;
}

static int add_order(struct recompute *r, const char *merchant_id, int64_t amount_cents,
                     int64_t event_ms, struct lerr *e)
{
    if (strcmp(merchant_id, r->merchant_id) != 0) {
        if (flush_merchant(r, e) != 0)
            return -1;
        if (r->merchants == 1)
            batch_pause(r->b->pause_at, "recompute"); /* one merchant written, the rest not */
        snprintf(r->merchant_id, sizeof(r->merchant_id), "%s", merchant_id);
    }
    if (event_ms > r->max_event_ms)
        r->max_event_ms = event_ms;
    r->order_count++;
    r->revenue_cents += amount_cents;
    if (bucket_add(&r->hours, tm_hour_of(event_ms), amount_cents) != 0)
        return lerr_set(e, "out of memory");
    /* A minute this far behind the newest event can never be in the window. */
    if (event_ms >= tm_minute_of(r->max_event_ms) - r->window_ms &&
        bucket_add(&r->minutes, tm_minute_of(event_ms), amount_cents) != 0)
        return lerr_set(e, "out of memory");
    return 0;
}

static int write_minutes(struct recompute *r, struct lerr *e)
{
    int64_t floor_ms = tm_minute_of(r->max_event_ms) - r->window_ms;

    for (size_t i = 0; i < r->nkept; i++) {
        const struct minute_row *k = &r->kept[i];
        if (k->minute_ms >= floor_ms &&
            insert_row(r->ins_minute, r->version, k->merchant_id,
                       (int64_t[]){k->minute_ms, k->order_count, k->revenue_cents}, 3, e) != 0)
            return -1;
    }
    return 0;
}

/* One scan of master in primary-key order (merchant by merchant, no sort): each merchant's
 * total, hours and minutes are summed in small hash tables and written when it ends. */
static int scan_master(struct recompute *r, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(r->b->bdb,
                   "SELECT merchant_id, amount_cents, event_time_ms FROM m.orders"
                   " ORDER BY merchant_id",
                   &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (add_order(r, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
                      sqlite3_column_int64(st, 2), e) != 0)
            break;
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return lerr_set(e, "cannot read master orders: %s", sqlite3_errmsg(r->b->bdb));
    if (rc == SQLITE_ROW)
        return -1; /* add_order() failed and said why */
    return flush_merchant(r, e) != 0 ? -1 : write_minutes(r, e);
}

static int recompute_in_txn(struct batch *b, int64_t version, struct lerr *e)
{
    struct recompute r = {.b = b, .version = version};
    int rc = -1;

    r.window_ms = cfg_int(b->c, "minute_series_hours") * TM_HOUR_MS;
    if (exec_version(b->bdb,
                     "DELETE FROM merchant_totals WHERE version=%1$" PRId64 ";"
                     "DELETE FROM hourly WHERE version=%1$" PRId64 ";"
                     "DELETE FROM minutely WHERE version=%1$" PRId64 ";",
                     version, 0, e) != 0 ||
        db_prepare(b->bdb,
                   "INSERT INTO merchant_totals(version, merchant_id, order_count,"
                   " revenue_cents) VALUES(?,?,?,?)",
                   &r.ins_total, e) != 0 ||
        db_prepare(b->bdb,
                   "INSERT INTO hourly(version, merchant_id, hour_ms, order_count, revenue_cents)"
                   " VALUES(?,?,?,?,?)",
                   &r.ins_hour, e) != 0 ||
        db_prepare(b->bdb,
                   "INSERT INTO minutely(version, merchant_id, minute_ms, order_count,"
                   " revenue_cents) VALUES(?,?,?,?,?)",
                   &r.ins_minute, e) != 0)
        goto out;
    rc = scan_master(&r, e);
out:
    free_buckets(&r.hours); /* left only by a failed scan */
    free_buckets(&r.minutes);
    sqlite3_finalize(r.ins_total);
    sqlite3_finalize(r.ins_hour);
    sqlite3_finalize(r.ins_minute);
    free(r.kept);
    return rc;
}

int batch_recompute(struct batch *b, int64_t version, struct lerr *e)
{
    int64_t t0 = tm_mono_ms();

    /* A plain BEGIN: the transaction writes batch.db only and never locks master.db. */
    if (db_exec(b->bdb, "BEGIN", e) != 0)
        return -1;
    if (recompute_in_txn(b, version, e) != 0 || db_exec(b->bdb, "COMMIT", e) != 0) {
        sqlite3_exec(b->bdb, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    log_info("batch", "recompute_done version=%" PRId64 " ms=%" PRId64, version, tm_mono_ms() - t0);
    return 0;
}

struct figures {
    int64_t orders, previous_orders, total_orders, negative, hourly_mismatch, minutely_over;
};

/* The newest published version's id and orders; 0 and 0 when none is. */
static int published(sqlite3 *db, int64_t *id, int64_t *orders, struct lerr *e)
{
    struct cut_version pub;
    bool found;

    *id = 0;
    *orders = 0;
    if (cut_published(db, &pub, &found, e) != 0)
        return -1;
    if (found) {
        *id = pub.id;
        *orders = pub.orders;
    }
    return 0;
}

/* v is the pending version being checked, so the newest published one is the previous. */
static int gather(struct batch *b, int64_t v, struct figures *f, struct lerr *e)
{
    sqlite3 *db = b->bdb;
    int64_t prev;

    return query_int(db, "SELECT count(*) FROM m.orders", 0, 0, &f->orders, e) ||
           published(db, &prev, &f->previous_orders, e) ||
           query_int(db, "SELECT sum(order_count) FROM merchant_totals WHERE version=?", v, 0,
                     &f->total_orders, e) ||
           query_int(db,
                     "SELECT (SELECT count(*) FROM merchant_totals WHERE version=?1 AND"
                     " (revenue_cents < 0 OR order_count < 0)) + (SELECT count(*) FROM hourly"
                     " WHERE version=?1 AND revenue_cents < 0) + (SELECT count(*) FROM minutely"
                     " WHERE version=?1 AND revenue_cents < 0)",
                     v, 0, &f->negative, e) ||
           query_int(db,
                     "SELECT count(*) FROM merchant_totals t LEFT JOIN (SELECT merchant_id,"
                     " sum(order_count) AS c, sum(revenue_cents) AS r FROM hourly WHERE"
                     " version=?1 GROUP BY merchant_id) h ON h.merchant_id = t.merchant_id"
                     " WHERE t.version=?1 AND (h.c IS NOT t.order_count OR"
                     " h.r IS NOT t.revenue_cents)",
                     v, 0, &f->hourly_mismatch, e) ||
           query_int(db,
                     "SELECT count(*) FROM (SELECT merchant_id, sum(order_count) AS c,"
                     " sum(revenue_cents) AS r FROM minutely WHERE version=?1"
                     " GROUP BY merchant_id) h LEFT JOIN merchant_totals t ON t.version=?1 AND"
                     " t.merchant_id = h.merchant_id WHERE t.merchant_id IS NULL OR"
                     " h.c > t.order_count OR h.r > t.revenue_cents",
                     v, 0, &f->minutely_over, e);
}

int batch_check(struct batch *b, int64_t version, bool *passed, char **checks_json, struct lerr *e)
{
    struct figures f;
    json_t *j, *failed;
    struct {
        const char *name;
        bool is_ok;
        char detail[160];
    } c[5];
    int n = 0;

    if (gather(b, version, &f, e) != 0)
        return -1;
    c[n].name = "orders_not_shrunk", c[n].is_ok = f.orders >= f.previous_orders;
    snprintf(c[n++].detail, sizeof(c[0].detail),
             "master holds %" PRId64 " orders, the previous version had %" PRId64, f.orders,
             f.previous_orders);
    c[n].name = "totals_equal_master", c[n].is_ok = f.total_orders == f.orders;
    snprintf(c[n++].detail, sizeof(c[0].detail),
             "merchant totals count %" PRId64 " orders, master holds %" PRId64, f.total_orders,
             f.orders);
    c[n].name = "no_negative_sums", c[n].is_ok = f.negative == 0;
    snprintf(c[n++].detail, sizeof(c[0].detail), "%" PRId64 " negative sums", f.negative);
    c[n].name = "hourly_equals_totals", c[n].is_ok = f.hourly_mismatch == 0;
    snprintf(c[n++].detail, sizeof(c[0].detail),
             "%" PRId64 " merchants whose hourly series differ from their totals",
             f.hourly_mismatch);
    c[n].name = "minutely_within_totals", c[n].is_ok = f.minutely_over == 0;
    snprintf(c[n++].detail, sizeof(c[0].detail),
             "%" PRId64 " merchants whose minute series exceed their totals", f.minutely_over);

    failed = json_array();
    *passed = true;
    for (int i = 0; i < n; i++) {
        if (c[i].is_ok)
            continue;
        if (*passed)
            lerr_set(e, "data-quality check '%s' failed for version %" PRId64 ": %s", c[i].name,
                     version, c[i].detail);
        *passed = false;
        json_array_append_new(failed, json_string(c[i].name));
        log_error("batch", "check_failed version=%" PRId64 " check=%s detail=\"%s\"", version,
                  c[i].name, c[i].detail);
    }
    j = json_pack("{s:b,s:o,s:I,s:I,s:I,s:I,s:I,s:I}", "passed", *passed, "failed", failed,
                  "orders", (json_int_t)f.orders, "previous_orders", (json_int_t)f.previous_orders,
                  "total_orders", (json_int_t)f.total_orders, "negative_sums",
                  (json_int_t)f.negative, "hourly_mismatches", (json_int_t)f.hourly_mismatch,
                  "minutely_over_totals", (json_int_t)f.minutely_over);
    *checks_json = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!*checks_json)
        return lerr_set(e, "out of memory");
    return 0;
}

static int publish_in_txn(struct batch *b, const struct batch_cut *cut, const char *checks_json,
                          struct batch_summary *s, struct lerr *e)
{
    sqlite3 *db = b->bdb;
    int64_t keep = cfg_int(b->c, "keep_versions"), prev = 0, prev_orders;
    sqlite3_stmt *st = NULL;
    int rc;

    if (keep < 1)
        keep = 1;
    if (published(db, &prev, &prev_orders, e) ||
        query_int(db,
                  "SELECT sum(c.offset - coalesce((SELECT p.offset FROM cut_offsets p"
                  " WHERE p.version=?2 AND p.partition=c.partition), 0))"
                  " FROM cut_offsets c WHERE c.version=?1",
                  cut->version, prev, &s->ingested, e) ||
        query_int(db, "SELECT count(*) FROM m.orders", 0, 0, &s->orders, e) ||
        query_int(db, "SELECT count(*) FROM merchant_totals WHERE version=?", cut->version, 0,
                  &s->merchants, e) ||
        query_int(db, "SELECT count(*) FROM m.rejects", 0, 0, &s->rejects, e) ||
        query_int(db, "SELECT value FROM m.counters WHERE name='duplicates'", 0, 0, &s->duplicates,
                  e) ||
        db_prepare(db,
                   "UPDATE versions SET state='published', finished_ms=?, orders=?,"
                   " merchants=?, ingested=?, rejects=?, duplicates=?, checks=?"
                   " WHERE id=? AND state='pending'",
                   &st, e))
        return -1;
    sqlite3_bind_int64(st, 1, tm_now_ms());
    sqlite3_bind_int64(st, 2, s->orders);
    sqlite3_bind_int64(st, 3, s->merchants);
    sqlite3_bind_int64(st, 4, s->ingested);
    sqlite3_bind_int64(st, 5, s->rejects);
    sqlite3_bind_int64(st, 6, s->duplicates);
    sqlite3_bind_text(st, 7, checks_json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, cut->version);
    rc = db_step_done(st, e);
    sqlite3_finalize(st);
    if (rc != 0)
        return -1;
    if (sqlite3_changes(db) != 1)
        return lerr_set(e, "version %" PRId64 " is no longer pending", cut->version);
    /* Serving keeps reading an old version inside its own snapshot, so deleting is safe. */
    return exec_version(db,
                        "CREATE TEMP TABLE IF NOT EXISTS old(id INTEGER PRIMARY KEY);"
                        "DELETE FROM old;"
                        "INSERT INTO old SELECT id FROM versions WHERE state='published'"
                        " ORDER BY id DESC LIMIT -1 OFFSET %1$" PRId64 ";"
                        /* failed versions too, or every cut Kafka lost would stay forever */
                        "INSERT INTO old SELECT id FROM versions WHERE state='failed'"
                        " ORDER BY id DESC LIMIT -1 OFFSET %1$" PRId64 ";"
                        "DELETE FROM cut_offsets WHERE version IN (SELECT id FROM old);"
                        "DELETE FROM merchant_totals WHERE version IN (SELECT id FROM old);"
                        "DELETE FROM hourly WHERE version IN (SELECT id FROM old);"
                        "DELETE FROM minutely WHERE version IN (SELECT id FROM old);"
                        "DELETE FROM versions WHERE id IN (SELECT id FROM old);",
                        keep, 0, e);
}

int batch_publish(struct batch *b, const struct batch_cut *cut, const char *checks_json,
                  struct batch_summary *s, struct lerr *e)
{
    memset(s, 0, sizeof(*s));
    s->version = cut->version;
    s->cut_epoch = cut->cut_epoch;
    if (db_exec(b->bdb, "BEGIN", e) != 0)
        return -1;
    if (publish_in_txn(b, cut, checks_json, s, e) != 0 || db_exec(b->bdb, "COMMIT", e) != 0) {
        sqlite3_exec(b->bdb, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}
