/* status.c - what the batch layer holds: versions, the pending cut, ingest positions, rejects.
 *
 * Everything is gathered into one JSON document (read-only connections, so a running batch is
 * never disturbed); --json prints it as is, otherwise it is rendered as text for a human. */
#include "batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cut.h"
#include "db.h"
#include "shard.h"
#include "tm.h"

static json_t *column_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(st, i));
    case SQLITE_NULL:
        return json_null();
    default:
        return json_string((const char *)sqlite3_column_text(st, i));
    }
}

/* Runs a query and returns its rows as an array of objects named by the columns. */
static json_t *query_rows(sqlite3 *db, const char *sql, int64_t param, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    int rc;

    if (db_prepare(db, sql, &st, e) != 0) {
        json_decref(rows);
        return NULL;
    }
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int64(st, 1, param);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(st); i++)
            json_object_set_new(row, sqlite3_column_name(st, i), column_json(st, i));
        json_array_append_new(rows, row);
    }
    if (rc != SQLITE_DONE) {
        lerr_set(e, "cannot run '%.60s': %s", sql, sqlite3_errmsg(db));
        json_decref(rows);
        rows = NULL;
    }
    sqlite3_finalize(st);
    return rows;
}

static int64_t num(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

/* Opens a file read-only; *db stays NULL when it does not exist yet or holds none of tables
 * (a comma-separated list of quoted names): a file whose first transaction never reached the
 * disk, or one a writer is still creating, holds nothing yet. A file with some of them only
 * is an error that says so. */
static int open_if_exists(const char *data_dir, enum db_file f, const char *tables, int ntables,
                          sqlite3 **db, struct lerr *e)
{
    char path[4096], sql[256];
    int64_t n = 0;

    *db = NULL;
    db_path(data_dir, f, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return 0;
    if (db_open_ro(data_dir, f, db, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view') AND name IN (%s)",
             tables);
    if (db_query_int(*db, sql, &n, e) != 0)
        n = -1;
    else if (n == ntables)
        return 0;
    else if (n > 0)
        lerr_set(e,
                 "'%s' lacks tables of its schema (%" PRId64 " of %d): open it with lambda-batch",
                 path, n, ntables);
    sqlite3_close(*db);
    *db = NULL;
    return n == 0 ? 0 : -1;
}

/* The last full run, from batch.db's meta (it outlives the versions pruned since). */
static int gather_last_full(sqlite3 *bdb, json_t *doc, struct lerr *e)
{
    json_t *rows = query_rows(bdb,
                              "SELECT key, value FROM meta WHERE key LIKE 'last_full_%'"
                              " OR key = 'baseline'",
                              0, e),
           *full = json_object(), *r;
    size_t i;

    if (!rows) {
        json_decref(full);
        return -1;
    }
    json_array_foreach(rows, i, r)
    {
        const char *k = json_string_value(json_object_get(r, "key"));
        json_object_set(full, strncmp(k, "last_full_", 10) ? k : k + 10,
                        json_object_get(r, "value"));
    }
    json_decref(rows);
    if (json_object_get(full, "version")) {
        int64_t diffs = json_integer_value(json_object_get(full, "differences"));
        json_object_set_new(full, "outcome", json_string(diffs ? "corrected" : "passed"));
        json_object_set_new(
            full, "age_ms",
            json_integer(tm_now_ms() - json_integer_value(json_object_get(full, "ms"))));
        json_object_set_new(doc, "last_full", full);
    } else {
        json_object_set_new(doc, "last_full", json_null());
        json_decref(full);
    }
    return 0;
}

static int gather_batch(sqlite3 *bdb, json_t *doc, struct lerr *e)
{
    json_t *versions, *pending = NULL, *v;
    struct cut_version cut;
    bool found;
    size_t i;

    versions = query_rows(bdb,
                          "SELECT id, state, cut_epoch, started_ms, finished_ms, orders,"
                          " merchants, ingested, rejects, duplicates, checks, mode,"
                          " merchants_rewritten, buckets_rewritten, differences,"
                          " first_difference, minute_from_ms, phases FROM versions ORDER BY id",
                          0, e);
    if (!versions)
        return -1;
    json_array_foreach(versions, i, v)
    {
        json_t *checks = json_object_get(v, "checks");
        int64_t at = json_integer_value(json_object_get(v, "finished_ms"));
        json_t *phases = json_object_get(v, "phases");
        if (json_is_string(checks))
            json_object_set_new(v, "checks", json_loads(json_string_value(checks), 0, NULL));
        if (json_is_string(phases))
            json_object_set_new(v, "phases", json_loads(json_string_value(phases), 0, NULL));
        if (!at)
            at = json_integer_value(json_object_get(v, "started_ms"));
        json_object_set_new(v, "age_ms", json_integer(tm_now_ms() - at));
        if (!strcmp(json_string_value(json_object_get(v, "state")), "pending"))
            pending = v;
    }
    json_object_set_new(doc, "versions", versions);
    if (gather_last_full(bdb, doc, e) != 0)
        return -1;
    json_object_set(doc, "pending", pending ? pending : json_null());
    /* The positions that matter now are the newest cut's: the pending one, else the newest
     * published. */
    if (cut_newest(bdb, &cut, &found, e) != 0)
        return -1;
    if (found) {
        json_t *offs = query_rows(bdb,
                                  "SELECT partition, offset AS cut FROM cut_offsets"
                                  " WHERE version=? ORDER BY partition",
                                  cut.id, e);
        if (!offs)
            return -1;
        json_object_set_new(doc, "cut_version", json_integer(cut.id));
        json_object_set_new(doc, "partitions", offs);
    }
    return 0;
}

/* The last run's outcome and the failure counters, from batch.db files that have them. */
static int gather_runs(sqlite3 *bdb, json_t *doc, struct lerr *e)
{
    json_t *last, *counters, *names = json_object(), *c, *run;
    int64_t has = 0;
    size_t i;

    json_object_set_new(doc, "run_counters", names);
    json_object_set_new(doc, "last_run", json_null());
    if (db_query_int(bdb, "SELECT count(*) FROM sqlite_master WHERE name='runs'", &has, e) != 0)
        return -1;
    if (!has) /* a batch.db from before runs were recorded */
        return 0;
    last = query_rows(bdb,
                      "SELECT ok, started_ms, finished_ms, finished_ms - started_ms AS duration_ms,"
                      " version, failed_check, error FROM runs ORDER BY id DESC LIMIT 1",
                      0, e);
    counters = query_rows(bdb, "SELECT name, value FROM run_counters ORDER BY name", 0, e);
    if (!last || !counters) {
        json_decref(last), json_decref(counters);
        return -1;
    }
    json_array_foreach(counters, i, c) json_object_set(
        names, json_string_value(json_object_get(c, "name")), json_object_get(c, "value"));
    if ((run = json_array_get(last, 0))) {
        json_object_set(run, "ok", json_boolean(json_integer_value(json_object_get(run, "ok"))));
        json_object_set_new(run, "age_ms", json_integer(tm_now_ms() - num(run, "finished_ms")));
        json_object_set(doc, "last_run", run);
    }
    json_decref(last);
    json_decref(counters);
    return 0;
}

static int gather_master(sqlite3 *m, json_t *doc, struct lerr *e)
{
    json_t *offsets, *parts = json_object_get(doc, "partitions"), *p, *o, *counters, *c, *by;
    int64_t has_base = 0, has_recent = 0;
    char sql[512];
    size_t i, j;

    /* Read as the file is (status never writes): a file no batch run or import opened since
     * the view has no orders_base, its table `orders` being the big level, and one from
     * before the two levels has no recent level either. */
    if (db_query_int(m, "SELECT count(*) FROM sqlite_master WHERE name = 'orders_base'", &has_base,
                     e) != 0 ||
        db_query_int(m, "SELECT count(*) FROM sqlite_master WHERE name = 'orders_recent'",
                     &has_recent, e) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM %s) + %s AS orders, %s AS orders_recent,"
             " (SELECT count(*) FROM rejects) AS rejects,"
             " (SELECT count(*) FROM imports) AS imports",
             has_base ? "orders_base" : "orders",
             has_recent ? "(SELECT count(*) FROM orders_recent)" : "0",
             has_recent ? "(SELECT count(*) FROM orders_recent)" : "0");
    offsets = query_rows(m, "SELECT partition, next_offset FROM ingest_offsets", 0, e);
    by =
        query_rows(m, "SELECT reason, count(*) AS n FROM rejects GROUP BY reason ORDER BY 1", 0, e);
    counters = query_rows(m, "SELECT name, value FROM counters ORDER BY name", 0, e);
    json_t *totals = query_rows(m, sql, 0, e);
    if (!offsets || !by || !counters || !totals) {
        json_decref(offsets), json_decref(by), json_decref(counters), json_decref(totals);
        return -1;
    }
    for (i = 0; i < json_array_size(parts); i++) {
        p = json_array_get(parts, i);
        for (j = 0; j < json_array_size(offsets); j++) {
            o = json_array_get(offsets, j);
            if (json_equal(json_object_get(p, "partition"), json_object_get(o, "partition")))
                json_object_set(p, "ingested_to", json_object_get(o, "next_offset"));
        }
    }
    json_object_set_new(doc, "ingest_offsets", offsets);
    json_object_update(doc, json_array_get(totals, 0));
    json_decref(totals);
    json_t *reasons = json_object(), *names = json_object();
    for (i = 0; i < json_array_size(by); i++) {
        p = json_array_get(by, i);
        json_object_set(reasons, json_string_value(json_object_get(p, "reason")),
                        json_object_get(p, "n"));
    }
    for (i = 0; i < json_array_size(counters); i++) {
        c = json_array_get(counters, i);
        json_object_set(names, json_string_value(json_object_get(c, "name")),
                        json_object_get(c, "value"));
    }
    json_decref(by);
    json_decref(counters);
    json_object_set_new(doc, "rejects_by_reason", reasons);
    json_object_set_new(doc, "counters", names);
    return 0;
}

static void format_age(int64_t ms, char *out, size_t size)
{
    int64_t s = ms / 1000;

    if (s < 120)
        snprintf(out, size, "%" PRId64 "s", s);
    else if (s < 7200)
        snprintf(out, size, "%" PRId64 "m", s / 60);
    else if (s < 172800)
        snprintf(out, size, "%" PRId64 "h", s / 3600);
    else
        snprintf(out, size, "%" PRId64 "d", s / 86400);
}

/* "last run: failed 12s ago after 0.35s: check orders_not_shrunk (...)"; failures by check. */
static void print_last_run(const json_t *doc)
{
    const json_t *run = json_object_get(doc, "last_run"), *v;
    const char *k, *check;
    char age[32];

    if (!json_is_object(run)) {
        printf("last run: none recorded\n");
        return;
    }
    format_age(num(run, "age_ms"), age, sizeof(age));
    check = json_string_value(json_object_get(run, "failed_check"));
    printf("last run: %s %s ago, took %.2fs",
           json_is_true(json_object_get(run, "ok")) ? "ok" : "FAILED", age,
           (double)num(run, "duration_ms") / 1000.0);
    if (check)
        printf(", check %s failed", check);
    if (json_is_string(json_object_get(run, "error")))
        printf(": %s", json_string_value(json_object_get(run, "error")));
    printf("\nruns:");
    json_object_foreach((json_t *)json_object_get(doc, "run_counters"), k, v)
        printf(" %s=%" PRId64, k, (int64_t)json_integer_value(v));
    printf("\n");
}

/* One integer of db (NULL: absent), or -1 when it has none. */
static int64_t int_or_none(sqlite3 *db, const char *sql)
{
    int64_t v = -1;
    struct lerr ignored;

    if (!db || db_query_int(db, sql, &v, &ignored) != 0)
        return -1;
    return v;
}

/* The shard this data directory is (DESIGN.md section 7): its set, the topic's partition count
 * and the watermark as speed.db recorded them, and key_mismatch of both layers. */
static int gather_shard(const struct cfg *c, sqlite3 *m, json_t *doc, struct lerr *e)
{
    const char *data_dir = cfg_str(c, "data_dir");
    struct shard_set set;
    char text[SHARD_TEXT_MAX];
    sqlite3 *sdb = NULL;
    int64_t nparts, wm, km_speed, km_batch;

    if (shard_set_parse(&set, cfg_str(c, "shard_partitions"), e) != 0 ||
        open_if_exists(data_dir, DB_SPEED, "'meta','counters'", 2, &sdb, e) != 0)
        return -1;
    shard_set_format(&set, text, sizeof(text));
    nparts = int_or_none(sdb, "SELECT value FROM meta WHERE key='topic_partitions'");
    wm = int_or_none(sdb, "SELECT value FROM meta WHERE key='watermark_ms'");
    km_speed = int_or_none(sdb, "SELECT value FROM counters WHERE name='key_mismatch'");
    km_batch = int_or_none(m, "SELECT value FROM counters WHERE name='key_mismatch'");
    sqlite3_close(sdb);
    json_object_set_new(
        doc, "shard",
        json_pack("{s:s,s:o,s:o,s:I}", "partitions", text, "topic_partitions",
                  nparts > 0 ? json_integer(nparts) : json_null(), "watermark_ms",
                  wm >= 0 ? json_integer(wm) : json_null(), "key_mismatch",
                  (json_int_t)((km_speed > 0 ? km_speed : 0) + (km_batch > 0 ? km_batch : 0))));
    return 0;
}

static void print_text(const json_t *doc, const char *data_dir)
{
    const json_t *v, *p, *versions = json_object_get(doc, "versions"),
                         *pending = json_object_get(doc, "pending");
    const char *k;
    size_t i;

    printf("data_dir %s\n", data_dir);
    if (json_array_size(versions) == 0)
        printf("versions: none (no batch run has published yet)\n");
    else
        printf("%4s  %-9s  %-11s  %10s  %6s  %12s  %9s  %9s  %s\n", "id", "state", "mode",
               "cut_epoch", "age", "orders", "merchants", "rewritten", "checks");
    json_array_foreach(versions, i, v)
    {
        char age[32];
        const json_t *checks = json_object_get(v, "checks");
        format_age(num(v, "age_ms"), age, sizeof(age));
        const char *mode = json_string_value(json_object_get(v, "mode"));
        printf("%4" PRId64 "  %-9s  %-11s  %10" PRId64 "  %6s  %12" PRId64 "  %9" PRId64
               "  %9" PRId64 "  %s\n",
               num(v, "id"), json_string_value(json_object_get(v, "state")), mode ? mode : "-",
               num(v, "cut_epoch"), age, num(v, "orders"), num(v, "merchants"),
               num(v, "merchants_rewritten") + num(v, "buckets_rewritten"),
               !json_is_object(checks)                           ? "-"
               : json_is_true(json_object_get(checks, "passed")) ? "passed"
                                                                 : "FAILED");
    }
    print_last_run(doc);
    const json_t *full = json_object_get(doc, "last_full");
    if (json_is_object(full)) {
        char age[32];
        format_age(num(full, "age_ms"), age, sizeof(age));
        if (num(full, "differences"))
            printf("last full run: version %" PRId64
                   ", %s ago: DIFFERED from the increments in %" PRId64
                   " buckets (first %s), corrected\n",
                   num(full, "version"), age, num(full, "differences"),
                   json_string_value(json_object_get(full, "first_difference")));
        else
            printf("last full run: version %" PRId64
                   ", %s ago: passed (the increments were exact)\n",
                   num(full, "version"), age);
    } else {
        printf("last full run: none\n");
    }
    if (json_is_object(pending)) {
        char age[32];
        format_age(tm_now_ms() - num(pending, "started_ms"), age, sizeof(age));
        printf("pending cut: version %" PRId64 " cut_epoch %" PRId64
               ", taken %s ago (the next run reuses it; never drop it by hand)\n",
               num(pending, "id"), num(pending, "cut_epoch"), age);
    } else {
        printf("pending cut: none\n");
    }
    if (json_array_size(json_object_get(doc, "partitions")))
        printf("partitions (ingested up to / cut of version %" PRId64 "):\n",
               num(doc, "cut_version"));
    /* Partition -1 is the import log (DESIGN.md section 2), its offsets the lines' seqs. */
    json_array_foreach(json_object_get(doc, "partitions"), i, p)
    {
        char name[16];
        if (num(p, "partition") == BATCH_IMPORT_PARTITION)
            snprintf(name, sizeof(name), "imports");
        else
            snprintf(name, sizeof(name), "%4" PRId64, num(p, "partition"));
        printf("  %4s  %12" PRId64 " / %" PRId64 "\n", name, num(p, "ingested_to"), num(p, "cut"));
    }
    const json_t *sh = json_object_get(doc, "shard");
    char nparts[32] = "unknown";
    if (json_is_integer(json_object_get(sh, "topic_partitions")))
        snprintf(nparts, sizeof(nparts), "%" PRId64, num(sh, "topic_partitions"));
    printf("shard: partitions %s of %s, key_mismatch %" PRId64,
           json_string_value(json_object_get(sh, "partitions")), nparts, num(sh, "key_mismatch"));
    if (json_is_integer(json_object_get(sh, "watermark_ms"))) {
        char ts[TM_RFC3339_LEN];
        tm_format_rfc3339(num(sh, "watermark_ms"), ts);
        printf(", watermark %s", ts);
    }
    printf("\n");
    printf("master: %" PRId64 " orders (%" PRId64 " in the recent level), %" PRId64
           " imported files\n",
           num(doc, "orders"), num(doc, "orders_recent"), num(doc, "imports"));
    printf("rejects: %" PRId64, num(doc, "rejects"));
    json_object_foreach((json_t *)json_object_get(doc, "rejects_by_reason"), k, v)
        printf(" %s=%" PRId64, k, (int64_t)json_integer_value(v));
    printf("\ncounters:");
    json_object_foreach((json_t *)json_object_get(doc, "counters"), k, v)
        printf(" %s=%" PRId64, k, (int64_t)json_integer_value(v));
    printf("\n");
}

int batch_status(const struct cfg *c, struct lerr *e)
{
    const char *data_dir = cfg_str(c, "data_dir");
    sqlite3 *bdb = NULL, *m = NULL;
    json_t *doc = json_object();
    int rc = -1;

    json_object_set_new(doc, "data_dir", json_string(data_dir));
    json_object_set_new(doc, "partitions", json_array());
    if (open_if_exists(data_dir, DB_BATCH, "'versions','cut_offsets','meta'", 3, &bdb, e) != 0 ||
        open_if_exists(data_dir, DB_MASTER,
                       "'orders','ingest_offsets','rejects','counters','imports'", 5, &m, e) != 0)
        goto out;
    if (bdb && (gather_batch(bdb, doc, e) != 0 || gather_runs(bdb, doc, e) != 0))
        goto out;
    if (!bdb) {
        json_object_set_new(doc, "versions", json_array());
        json_object_set_new(doc, "pending", json_null());
        json_object_set_new(doc, "last_run", json_null());
        json_object_set_new(doc, "run_counters", json_object());
    }
    if ((m && gather_master(m, doc, e) != 0) || gather_shard(c, m, doc, e) != 0)
        goto out;
    if (cfg_bool(c, "json")) {
        char *s = json_dumps(doc, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
    } else {
        print_text(doc, data_dir);
    }
    rc = 0;
out:
    json_decref(doc);
    sqlite3_close(bdb);
    sqlite3_close(m);
    return rc;
}
