/* it_batch_incr.c - incremental batch runs against lambda-gen's truth (DESIGN.md section 5, "A
 * run's cost follows new data"): a history imported, then rounds of new orders whose late ones
 * reach back over the whole history; a damaged increment that --full names and repairs; runs
 * killed during an incremental run; nothing new publishes nothing; old minute ranges. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itlib.h"
#include "tm.h"

#define HISTORY_START "2026-10-01T00:00:00Z"
#define ROUND_START   "2026-10-29T00:00:00Z"
#define WINDOW_MS     (48 * TM_HOUR_MS)

struct env {
    char dir[512], data[600], bs[256];
    struct it_proc dk, held, serve; /* the embedded Kafka; a run held paused; lambda-serve */
    int runs, port;
    struct it_truth all; /* what every stream and import so far holds */
};

/* The test's environment, for fini(): a failed assertion ends the test before its own
 * clean-up, and no child may outlive it. */
static struct env *current;

static void fini(void)
{
    if (current) {
        it_stop(&current->held);
        it_stop(&current->serve);
        it_stop(&current->dk);
    }
}

static void env_init(struct env *v, const char *tag)
{
    memset(v, 0, sizeof(*v));
    current = v;
    it_tmpdir(tag, v->dir);
    snprintf(v->data, sizeof(v->data), "%s/data", v->dir);
    it_devkafka(&v->dk, v->dir, 4, v->bs);
}

static void env_fini(struct env *v)
{
    it_truth_free(&v->all);
    it_stop(&v->held);
    it_stop(&v->serve);
    it_stop(&v->dk);
}

static void add_truth(struct env *v, const char *path)
{
    struct it_truth t;

    it_truth_load(&t, path);
    if (v->all.produced == 0 && v->all.nmerchants == 0) {
        v->all = t;
        return;
    }
    it_truth_add(&v->all, &t);
    it_truth_free(&t);
}

/* Imports a history: count orders over about 28 days from HISTORY_START. */
static void import_history(struct env *v, int count)
{
    char truth[700], file[700], n[16], cmd[2400];

    snprintf(truth, sizeof(truth), "%s/truth-history", v->dir);
    snprintf(file, sizeof(file), "%s/history.ndjson", v->dir);
    snprintf(n, sizeof(n), "%d", count);
    snprintf(cmd, sizeof(cmd),
             "'%s/lambda-gen' --stdout --count %s --merchants 200 --seed 30 --start-time %s"
             " --time-step %lld --dup-pct 2 --invalid-pct 1 --truth '%s' --log-level warn >'%s'",
             getenv("LAMBDA_BIN") ? getenv("LAMBDA_BIN") : "bin", n, HISTORY_START,
             (long long)(28 * TM_DAY_MS / count), truth, file);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    char *argv[] = {"lambda-batch", "import", "--data-dir", v->data, file, NULL};
    cr_assert_eq(it_run(v->dir, "import", argv, NULL, 120000), 0, "import failed");
    add_truth(v, truth);
}

/* The import's own line: with no speed layer it ends by publishing a version. */
static char *import_out(struct env *v)
{
    char path[700];

    snprintf(path, sizeof(path), "%s/import.out", v->dir);
    return it_read_file(path, NULL);
}

/* Produces a round of count orders starting hours after ROUND_START; a fifth of them late,
 * reaching back 29 days (over the whole history). */
static void produce_round(struct env *v, int round, int count)
{
    char truth[700], n[16], seed[16], start[32], tag[32];
    int64_t start_ms;

    tm_parse_rfc3339(ROUND_START, strlen(ROUND_START), &start_ms);
    tm_format_rfc3339(start_ms + round * TM_HOUR_MS, start);
    snprintf(truth, sizeof(truth), "%s/truth-round%d", v->dir, round);
    snprintf(n, sizeof(n), "%d", count);
    snprintf(seed, sizeof(seed), "%d", 40 + round);
    snprintf(tag, sizeof(tag), "gen%d", round);
    char *argv[] = {"lambda-gen",
                    "--brokers",
                    v->bs,
                    "--count",
                    n,
                    "--merchants",
                    "200",
                    "--seed",
                    seed,
                    "--start-time",
                    start,
                    "--late-pct",
                    "20",
                    "--late-days",
                    "29",
                    "--dup-pct",
                    "2",
                    "--invalid-pct",
                    "1",
                    "--truth",
                    truth,
                    NULL};
    cr_assert_eq(it_run(v->dir, tag, argv, NULL, 120000), 0, "lambda-gen failed");
    add_truth(v, truth);
}

static void batch_argv(struct env *v, char *argv[16], const char *pause_at, const char *flag)
{
    int n = 0;

    argv[n++] = "lambda-batch";
    argv[n++] = "run";
    argv[n++] = "--data-dir";
    argv[n++] = v->data;
    argv[n++] = "--brokers";
    argv[n++] = v->bs;
    argv[n++] = "--chunk-rows";
    argv[n++] = "500";
    if (pause_at) {
        argv[n++] = "--pause-at";
        argv[n++] = (char *)pause_at;
    }
    if (flag)
        argv[n++] = (char *)flag;
    argv[n] = NULL;
}

/* Runs lambda-batch run (flag: NULL or "--full"); returns its exit code, stdout in *out. */
static int run(struct env *v, const char *flag, char **out)
{
    char *argv[16], tag[32], path[700];
    int rc;

    batch_argv(v, argv, NULL, flag);
    snprintf(tag, 32, "run%d", ++v->runs);
    rc = it_run(v->dir, tag, argv, NULL, 120000);
    snprintf(path, sizeof(path), "%s/%s.out", v->dir, tag);
    *out = it_read_file(path, NULL);
    cr_assert(*out, "no stdout of %s", tag);
    return rc;
}

static char *run_err(struct env *v)
{
    char path[700];

    snprintf(path, sizeof(path), "%s/run%d.err", v->dir, v->runs);
    return it_read_file(path, NULL);
}

/* Starts a run (flag: NULL or "--full") that stops at pause_at, waits for it to say so, and
 * leaves it blocked there. */
static void run_until_paused(struct env *v, struct it_proc *p, const char *pause_at,
                             const char *flag)
{
    char *argv[16], tag[32], want[64];

    batch_argv(v, argv, pause_at, flag);
    snprintf(tag, 32, "run%d", ++v->runs);
    snprintf(want, sizeof(want), "msg=paused at=%s", pause_at);
    it_spawn(p, v->dir, tag, argv, NULL);
    cr_assert(it_wait_log(p, want, 120000), "%s: no '%s'", tag, want);
}

static sqlite3 *open_db(struct env *v, const char *file)
{
    char path[700];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/%s", v->data, file);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t one_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t r = -1;

    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        r = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return r;
}

static int64_t sql_int(struct env *v, const char *file, const char *sql)
{
    sqlite3 *db = open_db(v, file);
    int64_t r = one_int(db, sql);

    sqlite3_close(db);
    return r;
}

static void sql_exec(struct env *v, const char *file, const char *sql)
{
    sqlite3 *db = open_db(v, file);

    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    sqlite3_close(db);
}

static int64_t newest_published(struct env *v)
{
    return sql_int(v, "batch.db", "SELECT max(id) FROM versions WHERE state='published'");
}

/* Loads the truth into temp tables truth_m(merchant_id, order_count, revenue_cents) and
 * truth_min(merchant_id, minute_ms, order_count, revenue_cents), summed per key. */
static void load_truth(sqlite3 *db, const struct it_truth *t)
{
    sqlite3_stmt *m = NULL, *n = NULL;

    cr_assert_eq(sqlite3_exec(db,
                              "CREATE TEMP TABLE truth_m(merchant_id, order_count, revenue_cents);"
                              "CREATE TEMP TABLE raw_min(merchant_id, minute_ms, order_count,"
                              " revenue_cents); BEGIN",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_prepare_v2(db, "INSERT INTO truth_m VALUES(?,?,?)", -1, &m, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO raw_min VALUES(?,?,?,?)", -1, &n, NULL);
    for (size_t i = 0; i < t->nmerchants; i++) {
        sqlite3_bind_text(m, 1, t->merchants[i].merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(m, 2, t->merchants[i].order_count);
        sqlite3_bind_int64(m, 3, t->merchants[i].revenue_cents);
        cr_assert_eq(sqlite3_step(m), SQLITE_DONE);
        sqlite3_reset(m);
    }
    for (size_t i = 0; i < t->nminutes; i++) {
        sqlite3_bind_text(n, 1, t->minutes[i].merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(n, 2, t->minutes[i].minute_ms);
        sqlite3_bind_int64(n, 3, t->minutes[i].order_count);
        sqlite3_bind_int64(n, 4, t->minutes[i].revenue_cents);
        cr_assert_eq(sqlite3_step(n), SQLITE_DONE);
        sqlite3_reset(n);
    }
    sqlite3_finalize(m);
    sqlite3_finalize(n);
    cr_assert_eq(sqlite3_exec(db,
                              "COMMIT; CREATE TEMP TABLE truth_min AS SELECT merchant_id,"
                              " minute_ms, sum(order_count) AS order_count, sum(revenue_cents)"
                              " AS revenue_cents FROM raw_min GROUP BY 1, 2",
                              NULL, NULL, NULL),
                 SQLITE_OK);
}

/* Asserts that two queries give the same set of rows, showing a difference if not. */
static void assert_same_rows(sqlite3 *db, const char *what, const char *a, const char *b)
{
    char sql[4096];

    for (int dir = 0; dir < 2; dir++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*), (SELECT group_concat(x, ' | ') FROM (SELECT"
                 " merchant_id || ' ' || quote(c1) || ' ' || quote(c2) || ' ' || quote(c3) AS x"
                 " FROM (%s EXCEPT %s) LIMIT 3)) FROM (%s EXCEPT %s)",
                 dir ? b : a, dir ? a : b, dir ? b : a, dir ? a : b);
        sqlite3_stmt *st = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", what,
                     sqlite3_errmsg(db));
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        int64_t n = sqlite3_column_int64(st, 0);
        const char *ex = (const char *)sqlite3_column_text(st, 1);
        cr_assert_eq(n, 0, "%s: %lld rows only in the %s, e.g. %s", what, (long long)n,
                     dir ? "truth" : "version", ex ? ex : "");
        sqlite3_finalize(st);
    }
}

/* Version `version` equals the truth: every merchant's total, every hour, and the minutes of
 * its window, whose start is the newest minute less 48 hours. */
static void assert_exact(struct env *v, int64_t version)
{
    sqlite3 *db = open_db(v, "batch.db");
    char a[512], b[512];
    int64_t from;

    load_truth(db, &v->all);
    snprintf(a, sizeof(a),
             "SELECT merchant_id, order_count AS c1, revenue_cents AS c2, 0 AS c3"
             " FROM merchant_totals WHERE valid_from<=%1$lld AND valid_to>%1$lld",
             (long long)version);
    assert_same_rows(
        db, "merchant totals", a,
        "SELECT merchant_id, order_count AS c1, revenue_cents AS c2, 0 AS c3 FROM truth_m");
    snprintf(a, sizeof(a),
             "SELECT merchant_id, hour_ms AS c1, order_count AS c2, revenue_cents AS c3"
             " FROM hourly WHERE valid_from<=%1$lld AND valid_to>%1$lld",
             (long long)version);
    assert_same_rows(
        db, "hourly series", a,
        "SELECT merchant_id, minute_ms / 3600000 * 3600000 AS c1, sum(order_count) AS c2,"
        " sum(revenue_cents) AS c3 FROM truth_min GROUP BY 1, 2");
    snprintf(a, sizeof(a), "SELECT minute_from_ms FROM versions WHERE id=%lld", (long long)version);
    from = one_int(db, a);
    cr_assert_eq(from, one_int(db, "SELECT max(minute_ms) FROM truth_min") - WINDOW_MS);
    snprintf(a, sizeof(a),
             "SELECT merchant_id, minute_ms AS c1, order_count AS c2, revenue_cents AS c3"
             " FROM minutely WHERE valid_from<=%1$lld AND valid_to>%1$lld",
             (long long)version);
    snprintf(b, sizeof(b),
             "SELECT merchant_id, minute_ms AS c1, order_count AS c2, revenue_cents AS c3"
             " FROM truth_min WHERE minute_ms >= %lld",
             (long long)from);
    assert_same_rows(db, "minute series", a, b);
    sqlite3_close(db);
}

static void serve_start(struct env *v)
{
    char *argv[] = {"lambda-serve", "--port", "0", "--data-dir", v->data, NULL};

    it_spawn(&v->serve, v->dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&v->serve, "listening", 15000), "lambda-serve did not start");
    v->port = (int)it_log_int(&v->serve, "listening", "port");
}

static json_t *get_json(struct env *v, const char *path, long want_status)
{
    char url[600], *body = NULL;
    json_t *doc;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", v->port, path);
    long status = it_http_get(url, &body);
    cr_assert_eq(status, want_status, "GET %s: %ld %s", path, status, body ? body : "");
    doc = json_loads(body, 0, NULL);
    cr_assert(doc, "GET %s: not JSON: %s", path, body);
    free(body);
    return doc;
}

struct waited {
    struct env *v;
    int64_t version;
};

static bool serves_version(void *arg)
{
    struct waited *w = arg;
    char url[128], *body = NULL, want[64];
    bool ok;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/query/m-1", w->v->port);
    snprintf(want, sizeof(want), "\"version\":%lld,", (long long)w->version);
    ok = it_http_get(url, &body) == 200 && body && strstr(body, want);
    free(body);
    return ok;
}

/* The truth's sums of one merchant over [from_ms, to_ms). */
static void truth_sums(const struct it_truth *t, const char *merchant_id, int64_t from_ms,
                       int64_t to_ms, int64_t *count, int64_t *revenue)
{
    *count = *revenue = 0;
    for (size_t i = 0; i < t->nminutes; i++) {
        const struct it_truth_minute *m = &t->minutes[i];
        if (!strcmp(m->merchant_id, merchant_id) && m->minute_ms >= from_ms && m->minute_ms < to_ms)
            *count += m->order_count, *revenue += m->revenue_cents;
    }
}

/* Through lambda-serve: the merchant's total and every hour of its series equal the truth. */
static void assert_served(struct env *v, const char *merchant_id)
{
    int64_t from_ms, c, r;
    char path[256];
    json_t *doc, *pts, *p;
    size_t i;

    tm_parse_rfc3339(HISTORY_START, strlen(HISTORY_START), &from_ms);
    from_ms -= 2 * TM_DAY_MS;
    snprintf(path, sizeof(path), "/query/%s", merchant_id);
    doc = get_json(v, path, 200);
    const struct it_truth_merchant *m = it_truth_find(&v->all, merchant_id);
    cr_assert(m, "%s is not in the truth", merchant_id);
    cr_assert_eq(json_integer_value(json_object_get(doc, "order_count")), m->order_count);
    cr_assert_eq(json_integer_value(json_object_get(doc, "revenue_cents")), m->revenue_cents);
    json_decref(doc);
    snprintf(path, sizeof(path),
             "/query/%s/series?from=2026-09-29T00:00:00Z&to=2026-10-30T00:00:00Z&step=1h",
             merchant_id);
    doc = get_json(v, path, 200);
    pts = json_object_get(doc, "points");
    cr_assert_eq(json_array_size(pts), 31 * 24);
    json_array_foreach(pts, i, p)
    {
        int64_t t = from_ms + (int64_t)i * TM_HOUR_MS;
        truth_sums(&v->all, merchant_id, t, t + TM_HOUR_MS, &c, &r);
        cr_assert_eq(json_integer_value(json_object_get(p, "order_count")), c, "%s hour %zu",
                     merchant_id, i);
        cr_assert_eq(json_integer_value(json_object_get(p, "revenue_cents")), r, "%s hour %zu",
                     merchant_id, i);
    }
    json_decref(doc);
}

static void wait_served(struct env *v, int64_t version)
{
    struct waited w = {v, version};

    cr_assert(it_wait_until(serves_version, &w, 15000), "serve never showed version %lld",
              (long long)version);
}

Test(batch_incr, three_rounds_of_late_orders_over_a_history_stay_exact, .timeout = 300,
     .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *out;

    env_init(&v, "bincr");
    import_history(&v, 20000);
    /* With no speed layer the import publishes version 1 itself, a first build: full. */
    out = import_out(&v);
    cr_assert(out && strstr(out, " counted_by=batch version=1 "), "%s", out);
    free(out);
    assert_exact(&v, 1);
    serve_start(&v);
    for (int round = 1; round <= 3; round++) {
        produce_round(&v, round, 3000);
        cr_assert_eq(run(&v, NULL, &out), 0);
        cr_assert(strstr(out, " mode=incremental ") && !strstr(out, "differences="), "%s", out);
        /* What a run rewrites follows what came in: at most its merchants and buckets. */
        cr_assert(strstr(out, " merchants_rewritten="), "%s", out);
        free(out);
        assert_exact(&v, 1 + round);
        wait_served(&v, 1 + round);
        assert_served(&v, "m-1");
        assert_served(&v, "m-7");
    }
    /* Each round's version wrote only what changed: far fewer rows than version 1 holds. */
    cr_assert(sql_int(&v, "batch.db", "SELECT count(*) FROM hourly WHERE valid_from = 4") <
                  sql_int(&v, "batch.db", "SELECT count(*) FROM hourly WHERE valid_from = 1") / 2,
              "version 4 rewrote most hours");
    /* A full run with nothing new proves version 4 and publishes nothing. */
    cr_assert_eq(run(&v, "--full", &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=4 mode=full differences=0\n");
    free(out);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions WHERE id > 4"), 0);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM hourly WHERE valid_from > 4"), 0);
    assert_exact(&v, 4);
    assert_served(&v, "m-1");
    env_fini(&v);
}

Test(batch_incr, a_damaged_increment_is_named_repaired_and_exits_3, .timeout = 300, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *out, *err;
    int64_t hour;
    char sql[512], want[256], when[TM_RFC3339_LEN];

    env_init(&v, "bdamage");
    import_history(&v, 5000); /* version 1, published by the import */
    produce_round(&v, 1, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    free(out);
    /* One hour of m-3 in the newest version is off by one order. */
    hour = sql_int(&v, "batch.db",
                   "SELECT min(hour_ms) FROM hourly WHERE merchant_id='m-3' AND"
                   " valid_to=9223372036854775807");
    snprintf(sql, sizeof(sql),
             "UPDATE hourly SET order_count = order_count + 1 WHERE merchant_id='m-3' AND"
             " hour_ms=%lld AND valid_to=9223372036854775807",
             (long long)hour);
    sql_exec(&v, "batch.db", sql);
    serve_start(&v);
    wait_served(&v, 2);

    /* Nothing new since version 2: the full run still proves it, finds the damage, and
     * publishes the corrected answer as version 3. */
    cr_assert_eq(run(&v, "--full", &out), 3);
    cr_assert(strstr(out, "batch published version=3 ") && strstr(out, " differences=1 "), "%s",
              out);
    free(out);
    err = run_err(&v);
    tm_format_rfc3339(hour, when);
    snprintf(want, sizeof(want),
             "level=error mod=batch msg=full_differs version=3 differences=1 first_merchant=m-3"
             " bucket=hour:%s",
             when);
    cr_assert(strstr(err, want), "stderr: %s\nwant: %s", err, want);
    snprintf(want, sizeof(want),
             "differs from the increments in 1 buckets, the first merchant=m-3"
             " bucket=hour:%s; the full result was published",
             when);
    cr_assert(strstr(err, want), "stderr: %s\nwant: %s", err, want);
    free(err);
    assert_exact(&v, 3);
    wait_served(&v, 3);
    assert_served(&v, "m-3");

    /* status and /metrics say so. */
    char *argv[] = {"lambda-batch", "status", "--data-dir", v.data, "--json", NULL};
    cr_assert_eq(it_run(v.dir, "status", argv, NULL, 30000), 0);
    char path[700];
    snprintf(path, sizeof(path), "%s/status.out", v.dir);
    char *st = it_read_file(path, NULL);
    json_t *doc = json_loads(st, 0, NULL);
    cr_assert(doc, "status: %s", st);
    json_t *full = json_object_get(doc, "last_full");
    cr_assert_eq(json_integer_value(json_object_get(full, "version")), 3, "%s", st);
    cr_assert_eq(json_integer_value(json_object_get(full, "differences")), 1, "%s", st);
    cr_assert_str_eq(json_string_value(json_object_get(full, "outcome")), "corrected");
    json_t *ver = json_array_get(json_object_get(doc, "versions"),
                                 json_array_size(json_object_get(doc, "versions")) - 1);
    cr_assert_str_eq(json_string_value(json_object_get(ver, "mode")), "full");
    cr_assert(json_is_integer(json_object_get(json_object_get(ver, "phases"), "compare_ms")));
    json_decref(doc);
    free(st);
    snprintf(path, sizeof(path), "http://127.0.0.1:%d/metrics", v.port);
    char *body = NULL;
    cr_assert_eq(it_http_get(path, &body), 200);
    cr_assert(strstr(body, "lambda_batch_full_differences_total{layer=\"batch\"} 1\n"), "%s", body);
    cr_assert(
        strstr(body, "lambda_batch_full_runs_total{layer=\"batch\",reason=\"corrected\"} 1\n"),
        "%s", body);
    free(body);

    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions WHERE state='published'"),
                 3);

    /* The next full run finds nothing to correct, and nothing new: it publishes nothing, and
     * status says it passed. */
    cr_assert_eq(run(&v, "--full", &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=3 mode=full differences=0\n");
    free(out);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions"), 3);
    cr_assert_eq(it_run(v.dir, "status2", argv, NULL, 30000), 0);
    snprintf(path, sizeof(path), "%s/status2.out", v.dir);
    st = it_read_file(path, NULL);
    doc = json_loads(st, 0, NULL);
    cr_assert(doc, "status: %s", st);
    full = json_object_get(doc, "last_full");
    cr_assert_eq(json_integer_value(json_object_get(full, "version")), 3, "%s", st);
    cr_assert_eq(json_integer_value(json_object_get(full, "differences")), 0, "%s", st);
    cr_assert_str_eq(json_string_value(json_object_get(full, "outcome")), "passed");
    json_decref(doc);
    free(st);
    env_fini(&v);
}

Test(batch_incr, killed_incremental_runs_resume_exactly, .timeout = 300, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    struct it_proc *p = &v.held;
    char *out;

    env_init(&v, "bikill");
    import_history(&v, 5000); /* version 1, published by the import */
    assert_exact(&v, 1);
    produce_round(&v, 1, 4000);
    static const char *const points[] = {"ingest", "recompute", "publish"};
    for (int i = 0; i < 3; i++) {
        run_until_paused(&v, p, points[i], NULL);
        cr_assert_eq(newest_published(&v), 1);
        cr_assert_eq(it_signal(p, SIGKILL, 10000), 128 + SIGKILL);
    }
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert(strstr(out, "batch published version=2 ") && strstr(out, " mode=incremental "), "%s",
              out);
    free(out);
    assert_exact(&v, 2);
    /* And again, killed mid-recompute with a second round in. */
    produce_round(&v, 2, 3000);
    run_until_paused(&v, p, "recompute", NULL);
    cr_assert_eq(it_signal(p, SIGKILL, 10000), 128 + SIGKILL);
    cr_assert_eq(run(&v, NULL, &out), 0);
    free(out);
    assert_exact(&v, 3);
    cr_assert_eq(run(&v, "--full", &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=3 mode=full differences=0\n");
    free(out);
    env_fini(&v);
}

/* status --json's last_full, as a new reference (NULL when none). */
static json_t *last_full(struct env *v, const char *tag)
{
    char *argv[] = {"lambda-batch", "status", "--data-dir", v->data, "--json", NULL};
    char path[700];
    json_t *doc, *full;
    char *st;

    cr_assert_eq(it_run(v->dir, tag, argv, NULL, 30000), 0);
    snprintf(path, sizeof(path), "%s/%s.out", v->dir, tag);
    st = it_read_file(path, NULL);
    doc = json_loads(st, 0, NULL);
    cr_assert(doc, "status: %s", st);
    free(st);
    full = json_incref(json_object_get(doc, "last_full"));
    json_decref(doc);
    return json_is_object(full) ? full : NULL;
}

Test(batch_incr, nothing_new_publishes_nothing_and_an_import_publishes, .timeout = 300,
     .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *out, file[700];

    env_init(&v, "bnothing");
    produce_round(&v, 1, 1000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    free(out);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=1\n");
    free(out);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions"), 1);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions WHERE state='pending'"), 0);
    /* --full with nothing new proves version 1 against master and publishes nothing. */
    json_t *full = last_full(&v, "status1");
    cr_assert(full);
    int64_t first_ms = json_integer_value(json_object_get(full, "ms"));
    cr_assert_str_eq(json_string_value(json_object_get(full, "why")), "first_version");
    json_decref(full);
    cr_assert_eq(run(&v, "--full", &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=1 mode=full differences=0\n");
    free(out);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions"), 1);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions WHERE state='pending'"), 0);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM cut_offsets WHERE version <> 1"), 0);
    full = last_full(&v, "status2");
    cr_assert(full);
    cr_assert_eq(json_integer_value(json_object_get(full, "version")), 1);
    cr_assert_eq(json_integer_value(json_object_get(full, "differences")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(full, "outcome")), "passed");
    cr_assert_str_eq(json_string_value(json_object_get(full, "why")), "requested");
    cr_assert(json_integer_value(json_object_get(full, "ms")) >= first_ms);
    json_decref(full);
    /* A full run that is due (full_every 0: every run) does the same; the default full_every
     * is not due since the proof, so a plain run is the cheap "unchanged". */
    char *argv[] = {"lambda-batch", "run",          "--data-dir", v.data, "--brokers",
                    v.bs,           "--full-every", "0",          NULL};
    cr_assert_eq(it_run(v.dir, "every0", argv, NULL, 60000), 0);
    snprintf(file, sizeof(file), "%s/every0.out", v.dir);
    out = it_read_file(file, NULL);
    cr_assert_str_eq(out, "batch unchanged version=1 mode=full differences=0\n");
    free(out);
    full = last_full(&v, "status3");
    cr_assert_str_eq(json_string_value(json_object_get(full, "why")), "full_every_0");
    json_decref(full);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions"), 1);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=1\n");
    free(out);
    /* An import alone is new. */
    snprintf(file, sizeof(file), "%s/one.ndjson", v.dir);
    FILE *f = fopen(file, "w");
    fprintf(f, "{\"order_id\":\"imp-1\",\"merchant_id\":\"m-1\",\"amount_cents\":500,"
               "\"event_time\":\"2026-10-20T10:00:00Z\"}\n");
    fclose(f);
    char *imp[] = {"lambda-batch", "import", "--data-dir", v.data, file, NULL};
    cr_assert_eq(it_run(v.dir, "import", imp, NULL, 60000), 0);
    /* With no speed layer the import ends by publishing it: version 2, with the same cut. */
    out = import_out(&v);
    cr_assert(out && strstr(out, " orders=1 ") && strstr(out, " counted_by=batch version=2 "), "%s",
              out);
    free(out);
    snprintf(file, sizeof(file), "%s/import.err", v.dir);
    out = it_read_file(file, NULL);
    cr_assert(out && strstr(out, "msg=published version=2 ") && strstr(out, " mode=incremental ") &&
                  strstr(out, " ingested=0 ") && strstr(out, " merchants_rewritten=1 ") &&
                  strstr(out, " buckets_rewritten=1 "),
              "%s", out);
    free(out);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT cut_epoch FROM versions WHERE id=2"),
                 sql_int(&v, "batch.db", "SELECT cut_epoch FROM versions WHERE id=1"));
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=2\n");
    free(out);
    int64_t before = sql_int(&v, "batch.db",
                             "SELECT order_count FROM merchant_totals WHERE merchant_id='m-1'"
                             " AND valid_from <= 1 AND valid_to > 1");
    cr_assert_eq(sql_int(&v, "batch.db",
                         "SELECT order_count FROM merchant_totals WHERE merchant_id='m-1'"
                         " AND valid_from <= 2 AND valid_to > 2"),
                 before + 1);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=2\n");
    free(out);
    env_fini(&v);
}

Test(batch_incr, old_minute_ranges_are_exact_by_the_hour_and_400_otherwise, .timeout = 300,
     .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *out, path[256], start[TM_RFC3339_LEN];
    int64_t from_ms, c, r;
    json_t *doc;

    env_init(&v, "boldmin");
    import_history(&v, 5000);
    produce_round(&v, 1, 1000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    free(out);
    serve_start(&v);
    wait_served(&v, 2); /* the import published version 1 */
    tm_format_rfc3339(sql_int(&v, "batch.db", "SELECT minute_from_ms FROM versions WHERE id=2"),
                      start);

    /* Whole hours far back: exact, from hour rows. */
    tm_parse_rfc3339("2026-10-10T00:00:00Z", 20, &from_ms);
    doc = get_json(&v, "/query/m-1?from=2026-10-10T00:00:00Z&to=2026-10-12T00:00:00Z", 200);
    truth_sums(&v.all, "m-1", from_ms, from_ms + 2 * TM_DAY_MS, &c, &r);
    cr_assert(c > 0);
    cr_assert_eq(json_integer_value(json_object_get(doc, "order_count")), c);
    cr_assert_eq(json_integer_value(json_object_get(doc, "revenue_cents")), r);
    json_decref(doc);
    doc = get_json(&v,
                   "/query/m-1/series?from=2026-10-10T00:00:00Z&to=2026-10-12T00:00:00Z"
                   "&step=1d",
                   200);
    cr_assert_eq(json_array_size(json_object_get(doc, "points")), 2);
    json_decref(doc);

    /* A minute head, a minute tail, a 1m series and a /top range before the window: 400. */
    static const char *const bad[] = {
        "/query/m-1?from=2026-10-10T00:30:00Z&to=2026-10-12T00:00:00Z",
        "/query/m-1?from=2026-10-10T00:00:00Z&to=2026-10-12T00:30:00Z",
        "/query?ids=m-1,m-2&from=2026-10-10T00:30:00Z&to=2026-10-10T00:45:00Z",
        "/query/m-1/series?from=2026-10-10T00:00:00Z&to=2026-10-10T05:00:00Z&step=1m",
        "/top?from=2026-10-10T00:10:00Z&to=2026-10-10T00:20:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        doc = get_json(&v, bad[i], 400);
        const char *msg = json_string_value(json_object_get(doc, "error"));
        cr_assert(msg && strstr(msg, start) && strstr(msg, "not held"), "%s: %s", bad[i],
                  msg ? msg : "(no error)");
        json_decref(doc);
    }
    /* Inside the window minutes answer as before. */
    snprintf(path, sizeof(path), "/query/m-1/series?from=%s&step=1m", start);
    doc = get_json(&v, path, 200);
    json_decref(doc);
    env_fini(&v);
}

/* batch.db as it was before versions shared rows: a copy of every row per version. */
static const char old_layout[] =
    "CREATE TABLE versions(id INTEGER PRIMARY KEY, state TEXT NOT NULL"
    " CHECK(state IN ('pending','published','failed')), cut_epoch INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL, finished_ms INTEGER, orders INTEGER, merchants INTEGER,"
    " ingested INTEGER, rejects INTEGER, duplicates INTEGER, checks TEXT);"
    "CREATE TABLE cut_offsets(version INTEGER NOT NULL, partition INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, PRIMARY KEY(version, partition)) WITHOUT ROWID;"
    "CREATE TABLE merchant_totals(version INTEGER NOT NULL, merchant_id TEXT NOT NULL,"
    " order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " PRIMARY KEY(version, merchant_id)) WITHOUT ROWID;"
    "CREATE TABLE hourly(version INTEGER NOT NULL, merchant_id TEXT NOT NULL,"
    " hour_ms INTEGER NOT NULL, order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " PRIMARY KEY(version, merchant_id, hour_ms)) WITHOUT ROWID;"
    "CREATE TABLE minutely(version INTEGER NOT NULL, merchant_id TEXT NOT NULL,"
    " minute_ms INTEGER NOT NULL, order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " PRIMARY KEY(version, merchant_id, minute_ms)) WITHOUT ROWID;"
    "CREATE INDEX minutely_by_minute ON minutely(version, minute_ms);";

Test(batch_incr, an_old_data_directory_migrates_through_one_full_run, .timeout = 300, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char path[700], sql[4096], *out, *err;
    sqlite3 *db = NULL;

    env_init(&v, "bmigrate");
    import_history(&v, 5000);
    /* The import published a version of today's layout: gone, as in a directory of before. */
    for (int i = 0; i < 3; i++) {
        static const char *const sfx[] = {"", "-wal", "-shm"};
        snprintf(path, sizeof(path), "%s/batch.db%s", v.data, sfx[i]);
        unlink(path);
    }
    /* Version 1 and a failed version 2 in the old layout, computed from master, the way the
     * old recompute did; the version before it, 0 rows, is gone already. */
    snprintf(path, sizeof(path), "%s/batch.db", v.data);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    snprintf(sql, sizeof(sql),
             "PRAGMA journal_mode=WAL; %s ATTACH '%s/master.db' AS m;"
             "INSERT INTO versions VALUES(1, 'published', 100, 1, 2, 5000, 0, 0, 0, 0, NULL),"
             " (2, 'failed', 101, 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"
             "INSERT INTO cut_offsets VALUES(1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 3, 0);"
             "INSERT INTO merchant_totals SELECT 1, merchant_id, count(*), sum(amount_cents)"
             " FROM m.orders GROUP BY merchant_id;"
             "INSERT INTO hourly SELECT 1, merchant_id, event_time_ms / 3600000 * 3600000,"
             " count(*), sum(amount_cents) FROM m.orders GROUP BY 2, 3;"
             "INSERT INTO minutely SELECT 1, merchant_id, event_time_ms / 60000 * 60000, count(*),"
             " sum(amount_cents) FROM m.orders WHERE event_time_ms / 60000 * 60000 >= (SELECT"
             " max(event_time_ms) / 60000 * 60000 - 172800000 FROM m.orders) GROUP BY 2, 3;"
             "UPDATE versions SET orders = (SELECT count(*) FROM m.orders) WHERE id = 1",
             old_layout, v.data);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);

    /* The first run converts it and is full: no recorded sums stand behind version 1. */
    produce_round(&v, 1, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert(strstr(out, "batch published version=3 ") && strstr(out, " mode=full ") &&
                  strstr(out, " differences=0 "),
              "%s", out);
    free(out);
    err = run_err(&v);
    cr_assert(strstr(err, "full_why=no_baseline") && !strstr(err, "full_differs"), "%s", err);
    free(err);
    assert_exact(&v, 3);
    cr_assert_eq(sql_int(&v, "batch.db",
                         "SELECT count(*) FROM pragma_table_info('merchant_totals') WHERE"
                         " name = 'version'"),
                 0);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM meta WHERE key = 'baseline'"), 0);
    /* From then on, runs are incremental and exact, and a full run agrees. */
    produce_round(&v, 2, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert(strstr(out, " mode=incremental "), "%s", out);
    free(out);
    assert_exact(&v, 4);
    cr_assert_eq(run(&v, "--full", &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=4 mode=full differences=0\n");
    free(out);
    env_fini(&v);
}

/* The orders in master's big level, its recent level and both (the view `orders`). */
struct levels {
    int64_t big, recent, all;
};

static struct levels levels(struct env *v)
{
    return (struct levels){
        sql_int(v, "master.db", "SELECT count(*) FROM orders_base"),
        sql_int(v, "master.db", "SELECT count(*) FROM orders_recent"),
        sql_int(v, "master.db", "SELECT count(*) FROM orders"),
    };
}

/* The master dataset's contract name (DESIGN.md section 4) counts and sums every order, in
 * both levels: what the streams and imports so far hold. */
static void assert_orders_are_the_truth(struct env *v)
{
    int64_t count = 0, revenue = 0;

    for (size_t i = 0; i < v->all.nmerchants; i++)
        count += v->all.merchants[i].order_count, revenue += v->all.merchants[i].revenue_cents;
    cr_assert_eq(sql_int(v, "master.db", "SELECT count(*) FROM orders"), count);
    cr_assert_eq(sql_int(v, "master.db", "SELECT sum(amount_cents) FROM orders"), revenue);
}

Test(batch_incr, a_full_run_merges_the_recent_level_and_a_killed_merge_resumes, .timeout = 300,
     .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    struct it_proc *p = &v.held;
    struct levels l, was;
    char *out;

    env_init(&v, "bmerge");
    import_history(&v, 5000); /* into the big level, empty then: version 1 */
    was = levels(&v);
    cr_assert(was.big > 4500 && was.recent == 0, "big %lld recent %lld", (long long)was.big,
              (long long)was.recent);
    /* An incremental run writes the recent level only. */
    produce_round(&v, 1, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert(strstr(out, " mode=incremental "), "%s", out);
    free(out);
    assert_exact(&v, 2);
    l = levels(&v);
    cr_assert_eq(l.big, was.big, "the big level is not written");
    cr_assert(l.recent > 1800 && l.all == l.big + l.recent, "recent %lld", (long long)l.recent);
    assert_orders_are_the_truth(&v);
    /* A full run killed in the merge (moved, not committed) leaves both levels as they were. */
    produce_round(&v, 2, 2000);
    run_until_paused(&v, p, "merge", "--full");
    cr_assert_eq(it_signal(p, SIGKILL, 10000), 128 + SIGKILL);
    cr_assert_eq(newest_published(&v), 2);
    was = l;
    l = levels(&v);
    cr_assert_eq(l.big, was.big);
    cr_assert(l.recent > was.recent + 1800 && l.all == l.big + l.recent);
    /* The rerun merges and publishes the same answers; nothing is left in the recent level. */
    cr_assert_eq(run(&v, "--full", &out), 0);
    cr_assert(strstr(out, "batch published version=3 ") && strstr(out, " mode=full ") &&
                  strstr(out, " differences=0 "),
              "%s", out);
    free(out);
    assert_exact(&v, 3);
    was = l;
    l = levels(&v);
    cr_assert_eq(l.recent, 0);
    cr_assert_eq(l.big, was.all);
    cr_assert_eq(l.all, was.all);
    /* And the next round goes into the recent level again. */
    produce_round(&v, 3, 1000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert(strstr(out, " mode=incremental "), "%s", out);
    free(out);
    assert_exact(&v, 4);
    cr_assert_eq(levels(&v).big, l.big);
    cr_assert(levels(&v).recent > 900);
    env_fini(&v);
}

/* lambda-batch status --json, which only reads, counts all and recent orders in master. */
static void assert_status_orders(struct env *v, int64_t all, int64_t recent)
{
    char path[700], *st;
    char *argv[] = {"lambda-batch", "status", "--data-dir", v->data, "--json", NULL};

    cr_assert_eq(it_run(v->dir, "status", argv, NULL, 30000), 0);
    snprintf(path, sizeof(path), "%s/status.out", v->dir);
    st = it_read_file(path, NULL);
    json_t *doc = json_loads(st, 0, NULL);
    cr_assert(doc, "status: %s", st);
    cr_assert_eq(json_integer_value(json_object_get(doc, "orders")), all, "%s", st);
    cr_assert_eq(json_integer_value(json_object_get(doc, "orders_recent")), recent, "%s", st);
    json_decref(doc);
    free(st);
}

/* A master.db of before the two levels: the table `orders` alone, made with raw SQL from
 * today's by dropping the view and the recent level (empty after the first import) and giving
 * the big level its old name. Read-only readers (status) read it as it is; the next run
 * renames it orders_base, creates the recent level and the view, and goes on incrementally,
 * exact; a full run merges. */
Test(batch_incr, a_master_of_one_level_migrates_and_stays_exact, .timeout = 300, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *out;
    struct levels l;
    int64_t n;

    env_init(&v, "bonelevel");
    import_history(&v, 5000);
    n = sql_int(&v, "master.db", "SELECT count(*) FROM orders");
    /* user_version 0: the stamp a file of before the stamp has (shared/db.c). */
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM orders_recent"), 0);
    sql_exec(&v, "master.db",
             "DROP VIEW orders; DROP TABLE orders_recent;"
             " ALTER TABLE orders_base RENAME TO orders; PRAGMA user_version = 0");
    cr_assert_eq(sql_int(&v, "master.db",
                         "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
                         " name = 'orders'"),
                 1);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT count(*) FROM sqlite_master WHERE name LIKE 'orders_%'"),
        0);
    assert_status_orders(&v, n, 0);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT count(*) FROM sqlite_master WHERE name LIKE 'orders_%'"),
        0, "status does not write");

    produce_round(&v, 1, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert(strstr(out, "batch published version=2 ") && strstr(out, " mode=incremental "), "%s",
              out);
    free(out);
    assert_exact(&v, 2);
    l = levels(&v);
    cr_assert_eq(l.big, n, "the old table is the big level");
    cr_assert(l.recent > 1800 && l.all == l.big + l.recent);
    cr_assert_eq(sql_int(&v, "master.db",
                         "SELECT count(*) FROM sqlite_master WHERE type = 'view' AND"
                         " name = 'orders'"),
                 1, "orders is the view now");
    assert_orders_are_the_truth(&v);
    produce_round(&v, 2, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    free(out);
    assert_exact(&v, 3);
    /* Nothing new: the full run merges the levels, proves version 3 and publishes nothing. */
    cr_assert_eq(run(&v, "--full", &out), 0);
    cr_assert_str_eq(out, "batch unchanged version=3 mode=full differences=0\n");
    free(out);
    assert_exact(&v, 3);
    l = levels(&v);
    cr_assert_eq(l.recent, 0);
    cr_assert_eq(l.big, l.all);
    env_fini(&v);
}

/* A master.db of two levels from before the view: the table `orders` is the big level beside
 * orders_recent, and orders_all is the view of both, made with raw SQL from today's after an
 * incremental run put orders in both levels. status reads it as it is; the next run renames
 * the big level orders_base and makes `orders` the view, and `orders` counts every order. */
Test(batch_incr, a_master_of_two_levels_before_the_view_migrates_and_stays_exact, .timeout = 300,
     .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *out;
    struct levels was, l;

    env_init(&v, "btwolevel");
    import_history(&v, 5000);
    produce_round(&v, 1, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    free(out);
    was = levels(&v);
    cr_assert(was.big > 4500 && was.recent > 1800);
    sql_exec(&v, "master.db",
             "DROP VIEW orders; ALTER TABLE orders_base RENAME TO orders;"
             " CREATE VIEW orders_all AS SELECT * FROM orders UNION ALL"
             " SELECT * FROM orders_recent; PRAGMA user_version = 0");
    assert_status_orders(&v, was.all, was.recent);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT count(*) FROM sqlite_master WHERE name = 'orders_base'"),
        0, "status does not write");

    produce_round(&v, 2, 2000);
    cr_assert_eq(run(&v, NULL, &out), 0);
    cr_assert(strstr(out, "batch published version=3 ") && strstr(out, " mode=incremental "), "%s",
              out);
    free(out);
    assert_exact(&v, 3);
    l = levels(&v);
    cr_assert_eq(l.big, was.big, "the old table is the big level");
    cr_assert(l.recent > was.recent + 1800 && l.all == l.big + l.recent);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT count(*) FROM sqlite_master WHERE name = 'orders_all'"),
        0);
    assert_orders_are_the_truth(&v);
    env_fini(&v);
}
