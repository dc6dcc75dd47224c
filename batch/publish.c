/* publish.c - around a version's recompute: what it starts from, whether it is full, its
 * data-quality checks, its publish, and the test for "nothing new".
 *
 * The checks look at what the version changed only (rows with valid_from or valid_to = V), so
 * they cost what the recompute wrote: each invariant held for the previous version, and holds
 * for this one when every change keeps it. A version is marked published, with its figures, in
 * one transaction; serving reads the newest published version, so it never sees a half-written
 * one, and pruning removes only rows whose last version is older than every kept one. */
#include "batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cut.h"
#include "db.h"
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

static int meta_int(sqlite3 *db, const char *key, int64_t *out, bool *found, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *found = false;
    if (db_prepare(db, "SELECT value FROM meta WHERE key=?", &st, e) != 0)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *out = sqlite3_column_int64(st, 0);
        *found = true;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return lerr_set(e, "cannot read batch.db's meta: %s", sqlite3_errmsg(db));
    return 0;
}

/* The previous version's figures; prev 0 when none is published. */
static int read_prev(struct batch *b, struct batch_work *w, bool *has_window, struct lerr *e)
{
    struct cut_version pub;
    sqlite3_stmt *st = NULL;
    bool found;
    int rc;

    *has_window = false;
    if (cut_published(b->bdb, &pub, &found, e) != 0)
        return -1;
    if (!found)
        return 0;
    w->prev = pub.id;
    w->prev_orders = pub.orders;
    if (db_prepare(b->bdb,
                   "SELECT merchants, ingest_seq, max_minute_ms, minute_from_ms FROM versions"
                   " WHERE id=?",
                   &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, pub.id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        w->prev_merchants = sqlite3_column_int64(st, 0);
        w->prev_seq = sqlite3_column_int64(st, 1);
        if (sqlite3_column_type(st, 2) != SQLITE_NULL)
            w->prev_max_minute_ms = sqlite3_column_int64(st, 2);
        *has_window = sqlite3_column_type(st, 3) != SQLITE_NULL;
        if (*has_window)
            w->prev_minute_from_ms = sqlite3_column_int64(st, 3);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return lerr_set(e, "cannot read the published version: %s", sqlite3_errmsg(b->bdb));
    return 0;
}

int batch_work_start(struct batch *b, int64_t version, bool is_full_requested, struct batch_work *w,
                     struct lerr *e)
{
    int64_t full_every = cfg_ms(b->c, "full_every"), last_ms = 0, unproven = 0;
    bool has_window, has_last;

    memset(w, 0, sizeof(*w));
    w->version = version;
    w->prev_max_minute_ms = w->prev_minute_from_ms = INT64_MIN;
    if (read_prev(b, w, &has_window, e) != 0 ||
        query_int(b->bdb, "SELECT coalesce(max(seq), 0) FROM m.ingests", 0, 0, &w->seq, e) ||
        meta_int(b->bdb, "last_full_ms", &last_ms, &has_last, e) != 0 ||
        query_int(b->bdb, "SELECT count(*) FROM meta WHERE key='baseline'", 0, 0, &unproven, e))
        return -1;
    w->is_full = true;
    if (w->prev == 0)
        w->full_why = "first_version";
    else if (unproven || !has_window)
        w->full_why = "no_baseline", w->is_unproven = true;
    else if (is_full_requested)
        w->full_why = "requested";
    else if (full_every == 0)
        w->full_why = "full_every_0";
    else if (!has_last || tm_now_ms() - last_ms >= full_every)
        w->full_why = "full_every";
    else
        w->is_full = false;
    return 0;
}

struct figures {
    int64_t totals_delta, negative, hourly_mismatch, minutely_over;
};

#define CLOSED_AT " valid_to=?1 AND valid_to < " DB_OPEN_SQL
#define SEEN_AT   " valid_from <= ?1 AND valid_to > ?1"

/* The merchants whose total or hours version ?1 changed. */
#define CHANGED                                                                                    \
    "SELECT merchant_id FROM merchant_totals WHERE valid_from=?1 UNION SELECT merchant_id FROM"    \
    " hourly WHERE valid_from=?1 UNION SELECT merchant_id FROM merchant_totals WHERE" CLOSED_AT    \
    " UNION SELECT merchant_id FROM hourly WHERE" CLOSED_AT

/* A full run has repaired whatever the previous version got wrong, so it checks the changed
 * merchants whole: their hours against their totals, and every total against master. */
static const char hourly_check_full[] =
    "SELECT count(*) FROM (" CHANGED ") t WHERE (SELECT coalesce(sum(order_count), 0) ||"
    " ' ' || coalesce(sum(revenue_cents), 0) FROM hourly h WHERE h.merchant_id = t.merchant_id"
    " AND" SEEN_AT ") IS NOT (SELECT coalesce(sum(order_count), 0) || ' ' ||"
    " coalesce(sum(revenue_cents), 0) FROM merchant_totals x WHERE"
    " x.merchant_id = t.merchant_id AND" SEEN_AT ")";
static const char totals_check_full[] =
    "SELECT coalesce(sum(order_count), 0) - ?2 FROM merchant_totals WHERE" SEEN_AT;

/* An incremental run trusts the previous version (it passed these checks) and checks what
 * changed. Its figures in one pass over the rows version ?1 opened and closed, by
 * merchant: what its total changed by (tc, tr), its total's change less its hours' change (c,
 * r: both 0 when they agree), its minutes' change (mc, mr: never above its total's, so minutes
 * that were within the total stay within it; minutes leaving the window only lower them), and
 * the new rows with negative sums. Each row is found once through the indexes on valid_from
 * and on closed rows; the separate checks read the totals three times and the hours twice. */
#define NEG "(order_count < 0 OR revenue_cents < 0)"
static const char incr_figures[] =
    "SELECT coalesce(sum(tc), 0), coalesce(sum(neg), 0), count(*) FILTER (WHERE c <> 0 OR"
    " r <> 0), count(*) FILTER (WHERE mc > tc OR mr > tr) FROM (SELECT merchant_id, sum(tc) AS"
    " tc, sum(tr) AS tr, sum(c) AS c, sum(r) AS r, sum(mc) AS mc, sum(mr) AS mr, sum(neg) AS"
    " neg FROM (SELECT merchant_id, order_count AS tc, revenue_cents AS tr, order_count AS c,"
    " revenue_cents AS r, 0 AS mc, 0 AS mr, " NEG " AS neg FROM merchant_totals WHERE"
    " valid_from=?1 UNION ALL SELECT merchant_id, -order_count, -revenue_cents, -order_count,"
    " -revenue_cents, 0, 0, 0 FROM merchant_totals WHERE" CLOSED_AT
    " UNION ALL SELECT merchant_id, 0, 0, -order_count, -revenue_cents, 0, 0, " NEG
    " FROM hourly WHERE valid_from=?1 UNION ALL SELECT merchant_id, 0, 0, order_count,"
    " revenue_cents, 0, 0, 0 FROM hourly WHERE" CLOSED_AT
    " UNION ALL SELECT merchant_id, 0, 0, 0, 0, order_count, revenue_cents, " NEG
    " FROM minutely WHERE valid_from=?1 UNION ALL SELECT merchant_id, 0, 0, 0, 0, -order_count,"
    " -revenue_cents, 0 FROM minutely WHERE" CLOSED_AT ") GROUP BY merchant_id)";

static int gather_incremental(struct batch *b, int64_t v, struct figures *f, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(b->bdb, incr_figures, &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, v);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        f->totals_delta = sqlite3_column_int64(st, 0);
        f->negative = sqlite3_column_int64(st, 1);
        f->hourly_mismatch = sqlite3_column_int64(st, 2);
        f->minutely_over = sqlite3_column_int64(st, 3);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return lerr_set(e, "cannot check version %" PRId64 ": %s", v, sqlite3_errmsg(b->bdb));
    return 0;
}

/* The figures of what version v changed (the rows it opened or closed). */
static int gather(struct batch *b, const struct batch_work *w, struct figures *f, struct lerr *e)
{
    sqlite3 *db = b->bdb;
    int64_t v = w->version;

    if (!w->is_full)
        return gather_incremental(b, v, f, e);
    return query_int(db, totals_check_full, v, w->prev_orders, &f->totals_delta, e) ||
           query_int(db,
                     "SELECT (SELECT count(*) FROM merchant_totals WHERE valid_from=?1 AND"
                     " (revenue_cents < 0 OR order_count < 0)) + (SELECT count(*) FROM hourly"
                     " WHERE valid_from=?1 AND (revenue_cents < 0 OR order_count < 0)) +"
                     " (SELECT count(*) FROM minutely WHERE valid_from=?1 AND"
                     " (revenue_cents < 0 OR order_count < 0))",
                     v, 0, &f->negative, e) ||
           query_int(db, hourly_check_full, v, 0, &f->hourly_mismatch, e) ||
           /* A merchant whose minutes or total changed still has minutes within its total. */
           query_int(db,
                     "SELECT count(*) FROM (SELECT merchant_id FROM minutely WHERE valid_from=?1"
                     " UNION SELECT merchant_id FROM merchant_totals WHERE valid_from=?1) t"
                     " WHERE EXISTS (SELECT 1 FROM (SELECT sum(order_count) AS c,"
                     " sum(revenue_cents) AS r FROM minutely m WHERE m.merchant_id=t.merchant_id"
                     " AND" SEEN_AT ") s WHERE s.c IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
                     " merchant_totals x WHERE x.merchant_id=t.merchant_id AND" SEEN_AT
                     " AND x.order_count >= s.c AND x.revenue_cents >= s.r))",
                     v, 0, &f->minutely_over, e);
}

int batch_check(struct batch *b, const struct batch_work *w, bool *passed, char **checks_json,
                struct lerr *e)
{
    int64_t t0 = tm_mono_ms();
    struct figures f;
    json_t *j, *failed;
    struct {
        const char *name;
        bool is_ok;
        char detail[160];
    } c[5];
    int n = 0;

    if (gather(b, w, &f, e) != 0)
        return -1;
    c[n].name = "orders_not_shrunk", c[n].is_ok = w->orders >= w->prev_orders;
    snprintf(c[n++].detail, sizeof(c[0].detail),
             "master holds %" PRId64 " orders, the previous version had %" PRId64, w->orders,
             w->prev_orders);
    c[n].name = "totals_equal_master", c[n].is_ok = f.totals_delta == w->orders - w->prev_orders;
    snprintf(c[n++].detail, sizeof(c[0].detail),
             "merchant totals changed by %" PRId64 " orders, master by %" PRId64, f.totals_delta,
             w->orders - w->prev_orders);
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
                     w->version, c[i].detail);
        *passed = false;
        json_array_append_new(failed, json_string(c[i].name));
        log_error("batch", "check_failed version=%" PRId64 " check=%s detail=\"%s\"", w->version,
                  c[i].name, c[i].detail);
    }
    j = json_pack("{s:b,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "passed", *passed, "failed", failed,
                  "orders", (json_int_t)w->orders, "previous_orders", (json_int_t)w->prev_orders,
                  "totals_delta", (json_int_t)f.totals_delta, "negative_sums",
                  (json_int_t)f.negative, "hourly_mismatches", (json_int_t)f.hourly_mismatch,
                  "minutely_over_totals", (json_int_t)f.minutely_over, "ms",
                  (json_int_t)(tm_mono_ms() - t0));
    *checks_json = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!*checks_json)
        return lerr_set(e, "out of memory");
    return 0;
}

static char *phases_json(const struct batch_work *w)
{
    json_t *j = json_pack("{s:I,s:I,s:I,s:I}", "ingest_ms", (json_int_t)w->ingest_ms,
                          "recompute_ms", (json_int_t)w->recompute_ms, "compare_ms",
                          (json_int_t)w->compare_ms, "check_ms", (json_int_t)w->check_ms);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return s;
}

/* A full run's outcome, for status and the next run's full_every: of the version it made, or
 * of the published one it proved (proven, when the run publishes nothing). */
static int record_full(struct batch *b, const struct batch_work *w, int64_t proven, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (!w->is_full)
        return 0;
    if (db_prepare(b->bdb,
                   "INSERT OR REPLACE INTO meta(key, value) VALUES('last_full_version', ?1),"
                   " ('last_full_ms', ?2), ('last_full_differences', ?3),"
                   " ('last_full_first_difference', ?4), ('last_full_why', ?5)",
                   &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, proven);
    sqlite3_bind_int64(st, 2, tm_now_ms());
    sqlite3_bind_int64(st, 3, w->differences);
    if (w->differences)
        sqlite3_bind_text(st, 4, w->first_difference, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, w->full_why, -1, SQLITE_STATIC);
    rc = db_step_done(st, e);
    sqlite3_finalize(st);
    return rc != 0 ? -1 : db_exec(b->bdb, "DELETE FROM meta WHERE key='baseline'", e);
}

static int mark_published(struct batch *b, const struct batch_work *w, const char *checks_json,
                          const struct batch_summary *s, struct lerr *e)
{
    char *phases = phases_json(w);
    sqlite3_stmt *st = NULL;
    int rc = -1;

    if (!phases)
        return lerr_set(e, "out of memory");
    if (db_prepare(b->bdb,
                   "UPDATE versions SET state='published', finished_ms=?, orders=?,"
                   " merchants=?, ingested=?, rejects=?, duplicates=?, checks=?, mode=?,"
                   " ingest_seq=?, max_minute_ms=?, minute_from_ms=?, merchants_rewritten=?,"
                   " buckets_rewritten=?, differences=?, first_difference=?, phases=?"
                   " WHERE id=? AND state='pending'",
                   &st, e) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, tm_now_ms());
    sqlite3_bind_int64(st, 2, s->orders);
    sqlite3_bind_int64(st, 3, s->merchants);
    sqlite3_bind_int64(st, 4, s->ingested);
    sqlite3_bind_int64(st, 5, s->rejects);
    sqlite3_bind_int64(st, 6, s->duplicates);
    sqlite3_bind_text(st, 7, checks_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, w->is_full ? "full" : "incremental", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, w->seq);
    if (w->max_minute_ms != INT64_MIN)
        sqlite3_bind_int64(st, 10, w->max_minute_ms);
    sqlite3_bind_int64(st, 11, w->minute_from_ms);
    sqlite3_bind_int64(st, 12, w->merchants_rewritten);
    sqlite3_bind_int64(st, 13, w->buckets_rewritten);
    if (w->is_full)
        sqlite3_bind_int64(st, 14, w->differences);
    if (w->differences)
        sqlite3_bind_text(st, 15, w->first_difference, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, phases, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 17, w->version);
    if (db_step_done(st, e) != 0)
        goto out;
    if (sqlite3_changes(b->bdb) != 1) {
        lerr_set(e, "version %" PRId64 " is no longer pending", w->version);
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    free(phases);
    return rc;
}

/* Deletes the published (and failed) versions beyond keep, and the rows no kept version sees (their
 * last version is older than the oldest kept one). */
static int prune(struct batch *b, int64_t keep, struct lerr *e)
{
    int64_t oldest = 0;
    char sql[1536];

    /* Failed versions beyond keep too, or every cut Kafka lost would stay forever. */
    snprintf(sql, sizeof(sql),
             "CREATE TEMP TABLE IF NOT EXISTS old_failed(id INTEGER PRIMARY KEY);"
             "DELETE FROM old_failed;"
             "INSERT INTO old_failed SELECT id FROM versions WHERE state='failed'"
             " ORDER BY id DESC LIMIT -1 OFFSET %" PRId64 ";"
             "DELETE FROM cut_offsets WHERE version IN (SELECT id FROM old_failed);"
             "DELETE FROM versions WHERE id IN (SELECT id FROM old_failed);",
             keep);
    if (db_exec(b->bdb, sql, e) != 0)
        return -1;
    if (query_int(b->bdb,
                  "SELECT id FROM versions WHERE state='published' ORDER BY id DESC LIMIT 1"
                  " OFFSET ?1",
                  keep - 1, 0, &oldest, e) != 0)
        return -1;
    if (oldest == 0)
        return 0;
    /* Serving keeps reading an old version inside its own snapshot, so deleting is safe. */
    snprintf(sql, sizeof(sql),
             "DELETE FROM merchant_totals WHERE valid_to < " DB_OPEN_SQL
             " AND valid_to <= %1$" PRId64 ";"
             "DELETE FROM hourly WHERE valid_to < " DB_OPEN_SQL " AND valid_to <= %1$" PRId64 ";"
             "DELETE FROM minutely WHERE valid_to < " DB_OPEN_SQL " AND valid_to <= %1$" PRId64 ";"
             "DELETE FROM cut_offsets WHERE version IN (SELECT id FROM versions WHERE"
             " state='published' AND id < %1$" PRId64 ");"
             "DELETE FROM versions WHERE state='published' AND id < %1$" PRId64 ";",
             oldest);
    return db_exec(b->bdb, sql, e);
}

static int publish_in_txn(struct batch *b, const struct batch_cut *cut, const struct batch_work *w,
                          const char *checks_json, struct batch_summary *s, struct lerr *e)
{
    sqlite3 *db = b->bdb;
    int64_t keep = cfg_int(b->c, "keep_versions"), opened = 0, closed = 0;

    if (keep < 1)
        keep = 1;
    s->orders = w->orders;
    /* ingested: Kafka messages; partition -1, the import log, counts its lines in orders. */
    if (query_int(db,
                  "SELECT sum(c.offset - coalesce((SELECT p.offset FROM cut_offsets p"
                  " WHERE p.version=?2 AND p.partition=c.partition), 0))"
                  " FROM cut_offsets c WHERE c.version=?1 AND c.partition >= 0",
                  cut->version, w->prev, &s->ingested, e) ||
        query_int(db, "SELECT count(*) FROM merchant_totals WHERE valid_from=?", w->version, 0,
                  &opened, e) ||
        query_int(db,
                  "SELECT count(*) FROM merchant_totals WHERE valid_to=? AND"
                  " valid_to < " DB_OPEN_SQL,
                  w->version, 0, &closed, e) ||
        query_int(db, "SELECT count(*) FROM m.rejects", 0, 0, &s->rejects, e) ||
        query_int(db, "SELECT value FROM m.counters WHERE name='duplicates'", 0, 0, &s->duplicates,
                  e))
        return -1;
    s->merchants = w->prev_merchants + opened - closed;
    return mark_published(b, w, checks_json, s, e) || record_full(b, w, w->version, e) ||
           prune(b, keep, e);
}

/* The sums the published version covers are no longer needed (a full run reads the orders). A
 * transaction of its own, after the publish: if it is lost, the next one removes them. */
static void forget_sums(struct batch *b, const struct batch_work *w)
{
    struct lerr e = {{0}};
    int64_t later = 0;
    char sql[256];

    /* No ingest runs beside a run (batch.lock), so these are usually all of them: a DELETE with
     * no WHERE empties the table at once instead of row by row. */
    /* versions_published tells lambda-serve that a batch version must exist, even with
     * batch.db gone and no speed layer to say so (DESIGN.md section 5). */
    if (db_exec(b->master, "BEGIN IMMEDIATE", &e) != 0 ||
        batch_counter_add(b->master, "versions_published", 1, &e) != 0 ||
        query_int(b->master, "SELECT count(*) FROM ingest_sums WHERE seq > ?", w->seq, 0, &later,
                  &e) != 0)
        goto fail;
    snprintf(sql, sizeof(sql),
             "DELETE FROM ingests WHERE seq < %1$" PRId64 ";"
             " DELETE FROM ingest_sums%2$s%1$" PRId64 "; COMMIT",
             w->seq, later ? " WHERE seq <= " : "; SELECT ");
    if (db_exec(b->master, sql, &e) == 0)
        return;
fail:
    sqlite3_exec(b->master, "ROLLBACK", NULL, NULL, NULL);
    log_warn("batch", "sums_kept version=%" PRId64 " err=\"%s\"", w->version, e.msg);
}

static void count_full(struct batch *b, const struct batch_work *w)
{
    struct lerr e = {{0}};

    if (!w->is_full || w->prev == 0 || w->is_unproven)
        return;
    if (db_exec(b->master, "BEGIN IMMEDIATE", &e) != 0 ||
        batch_counter_add(b->master, w->differences ? "full_runs_corrected" : "full_runs_passed", 1,
                          &e) != 0 ||
        batch_counter_add(b->master, "full_differences", w->differences, &e) != 0 ||
        db_exec(b->master, "COMMIT", &e) != 0) {
        sqlite3_exec(b->master, "ROLLBACK", NULL, NULL, NULL);
        log_warn("batch", "full_counters_lost version=%" PRId64 " err=\"%s\"", w->version, e.msg);
    }
}

int batch_publish(struct batch *b, const struct batch_cut *cut, const struct batch_work *w,
                  const char *checks_json, struct batch_summary *s, struct lerr *e)
{
    memset(s, 0, sizeof(*s));
    s->version = cut->version;
    s->cut_epoch = cut->cut_epoch;
    if (db_exec(b->bdb, "BEGIN", e) != 0)
        return -1;
    if (publish_in_txn(b, cut, w, checks_json, s, e) != 0 || db_exec(b->bdb, "COMMIT", e) != 0) {
        sqlite3_exec(b->bdb, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    count_full(b, w);
    forget_sums(b, w);
    return 0;
}

/* Compares each (partition, offset) of the published cut with the picked one. */
struct same_cut {
    const struct batch_cut *cut;
    int n;
    bool is_same;
};

static int same_offset(void *arg, int32_t partition, int64_t offset, struct lerr *e)
{
    struct same_cut *sc = arg;

    (void)e;
    if (sc->n >= sc->cut->nparts || sc->cut->partitions[sc->n] != partition ||
        sc->cut->offsets[sc->n] != offset)
        sc->is_same = false;
    sc->n++;
    return 0;
}

int batch_is_unchanged(struct batch *b, const struct batch_cut *cut, bool *unchanged,
                       int64_t *version, struct lerr *e)
{
    struct same_cut sc = {cut, 0, true};
    struct cut_version pub;
    int64_t seq = 0, prev_seq = -1;
    bool found;

    *unchanged = false;
    if (cut_published(b->bdb, &pub, &found, e) != 0)
        return -1;
    if (!found)
        return 0;
    if (query_int(b->bdb, "SELECT coalesce(ingest_seq, -1) FROM versions WHERE id=?", pub.id, 0,
                  &prev_seq, e) ||
        query_int(b->bdb, "SELECT coalesce(max(seq), 0) FROM m.ingests", 0, 0, &seq, e) ||
        cut_offsets(b->bdb, pub.id, same_offset, &sc, e) != 0)
        return -1;
    if (seq != prev_seq || !sc.is_same || sc.n != cut->nparts)
        return 0;
    *unchanged = true;
    *version = pub.id;
    return 0;
}

int batch_full_due(struct batch *b, bool *due, struct lerr *e)
{
    struct batch_work w;

    *due = false;
    if (batch_work_start(b, 0, b->is_full, &w, e) != 0)
        return -1;
    *due = w.is_full && w.prev != 0;
    return 0;
}

int batch_drop_if_same(struct batch *b, const struct batch_cut *cut, const struct batch_work *w,
                       bool *dropped, struct lerr *e)
{
    int64_t pub = 0, changed = 0;
    bool unchanged = false;
    char sql[256];

    *dropped = false;
    if (w->prev == 0 || w->differences != 0)
        return 0;
    if (batch_is_unchanged(b, cut, &unchanged, &pub, e) != 0)
        return -1;
    if (!unchanged || pub != w->prev)
        return 0;
    if (query_int(b->bdb,
                  "SELECT (SELECT count(*) FROM merchant_totals WHERE valid_from=?1 OR"
                  " valid_to=?1) + (SELECT count(*) FROM hourly WHERE valid_from=?1 OR"
                  " valid_to=?1) + (SELECT count(*) FROM minutely WHERE valid_from=?1 OR"
                  " valid_to=?1)",
                  w->version, 0, &changed, e) != 0)
        return -1;
    if (changed != 0)
        return 0;
    snprintf(sql, sizeof(sql),
             "BEGIN; DELETE FROM cut_offsets WHERE version=%1$" PRId64 ";"
             " DELETE FROM versions WHERE id=%1$" PRId64 " AND state='pending'",
             w->version);
    if (db_exec(b->bdb, sql, e) != 0)
        goto fail;
    if (sqlite3_changes(b->bdb) != 1) {
        lerr_set(e, "version %" PRId64 " is no longer pending", w->version);
        goto fail;
    }
    if (record_full(b, w, w->prev, e) != 0 || db_exec(b->bdb, "COMMIT", e) != 0)
        goto fail;
    count_full(b, w);
    *dropped = true;
    return 0;
fail:
    sqlite3_exec(b->bdb, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}
