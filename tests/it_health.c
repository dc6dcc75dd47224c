/* it_health.c - an operator always knows why (DESIGN.md section 5): a failing batch run shows in
 * `status`, /health (degraded, with the reason) and /metrics, and goes away when a run passes;
 * /health says degraded for a stale checkpoint, a lag above max_lag or a stale version, and
 * shows the lag only while a speed layer holds speed.lock (a killed one's last lag is not). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "itlib.h"
#include "lock.h"
#include "tm.h"

struct env {
    char dir[512], data[600], bs[256];
    struct it_proc dk, serve, speed;
    int port, runs;
};

static struct env *current;

static void fini(void)
{
    if (current) {
        it_stop(&current->speed);
        it_stop(&current->serve);
        it_stop(&current->dk);
    }
}

static void env_init(struct env *v, const char *tag, bool kafka)
{
    struct lerr e = {{0}};

    memset(v, 0, sizeof(*v));
    current = v;
    it_tmpdir(tag, v->dir);
    snprintf(v->data, sizeof(v->data), "%s/data", v->dir);
    cr_assert_eq(db_ensure_dir(v->data, &e), 0, "%s", e.msg);
    if (kafka)
        it_devkafka(&v->dk, v->dir, 1, v->bs);
}

static void serve_start(struct env *v, char *const extra[])
{
    char *argv[32] = {"lambda-serve", "--port", "0", "--data-dir", v->data, NULL};
    int n = 5;

    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    it_spawn(&v->serve, v->dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&v->serve, "msg=listening", 10000), "lambda-serve did not start");
    v->port = (int)it_log_int(&v->serve, "msg=listening", "port");
}

static json_t *get_json(const struct env *v, const char *path, long *status)
{
    char url[256], *body = NULL;
    json_error_t err;
    json_t *doc;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", v->port, path);
    *status = it_http_get(url, &body);
    cr_assert_not_null(body, "GET %s: no body", path);
    doc = json_loads(body, 0, &err);
    cr_assert_not_null(doc, "GET %s: not JSON: %s", path, body);
    free(body);
    return doc;
}

static char *get_text(const struct env *v, const char *path)
{
    char url[256], *body = NULL;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", v->port, path);
    cr_assert_eq(it_http_get(url, &body), 200, "GET %s", path);
    return body;
}

/* The reasons of /health, joined by " | ". */
static void reasons(const json_t *doc, char *out, size_t size)
{
    const json_t *r = json_object_get(doc, "reasons"), *x;
    size_t i, n = 0;

    out[0] = '\0';
    json_array_foreach(r, i, x) n +=
        (size_t)snprintf(out + n, size - n, "%s%s", i ? " | " : "", json_string_value(x));
}

static const char *str_at(const json_t *doc, const char *a, const char *b, const char *c)
{
    const json_t *o = json_object_get(doc, a);

    if (b)
        o = json_object_get(o, b);
    if (c)
        o = json_object_get(o, c);
    return json_string_value(o);
}

static int batch(struct env *v, char tag[32], const char *cmd, const char *flag)
{
    char *argv[] = {"lambda-batch", (char *)cmd, "--data-dir", v->data,
                    "--brokers",    v->bs,       (char *)flag, NULL};

    snprintf(tag, 32, "batch%d", ++v->runs);
    return it_run(v->dir, tag, argv, NULL, 60000);
}

static char *output(const struct env *v, const char *tag, const char *ext)
{
    char path[700];
    char *s;

    snprintf(path, sizeof(path), "%s/%s.%s", v->dir, tag, ext);
    s = it_read_file(path, NULL);
    return s ? s : strdup("");
}

static void sql(const struct env *v, const char *file, const char *text)
{
    char path[700];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/%s", v->data, file);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    it_sql(db, "%s", text);
    sqlite3_close(db);
}

static void produce(struct env *v, const char *lines)
{
    char path[700], tag[32];
    char *argv[] = {
        "/usr/bin/kcat", "-P", "-b", v->bs, "-t", "orders", "-K", "|", "-l", path, NULL};
    FILE *f;

    snprintf(tag, sizeof(tag), "kcat%d", ++v->runs);
    snprintf(path, sizeof(path), "%s/%s.in", v->dir, tag);
    cr_assert_not_null(f = fopen(path, "w"));
    fputs(lines, f);
    fclose(f);
    cr_assert_eq(it_run(v->dir, tag, argv, NULL, 30000), 0, "kcat failed");
}

static const char orders[] =
    "m-1|{\"order_id\":\"k1\",\"merchant_id\":\"m-1\",\"amount_cents\":100,"
    "\"event_time\":\"2026-11-21T10:00:01Z\"}\n"
    "m-1|{\"order_id\":\"k2\",\"merchant_id\":\"m-1\",\"amount_cents\":200,"
    "\"event_time\":\"2026-11-21T10:59:59Z\"}\n";

/* /health while the test plays a running speed layer (it holds speed.lock only meanwhile: a
 * batch run that found it held would wait for the speed layer's boundaries). */
static json_t *health_speed_held(const struct env *v, long *status)
{
    struct lerr e = {{0}};
    json_t *doc;
    int fd;

    cr_assert_eq(lock_try(v->data, "speed.lock", &fd, &e), 1, "%s", e.msg);
    doc = get_json(v, "/health", status);
    lock_release(fd);
    return doc;
}

static void expect_metric(const char *page, const char *line)
{
    cr_expect(strstr(page, line), "/metrics lacks \"%s\":\n%s", line, page);
}

Test(health, a_failing_batch_run_shows_in_status_health_and_metrics, .timeout = 120, .fini = fini)
{
    static struct env v;
    char tag[32], why[1024];
    long status;
    json_t *doc, *st;
    char *s;

    env_init(&v, "hbatch", true);
    produce(&v, orders);
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    serve_start(&v, NULL);
    doc = health_speed_held(&v, &status);
    reasons(doc, why, sizeof(why));
    cr_expect_eq(status, 200);
    cr_expect_str_eq(str_at(doc, "status", NULL, NULL), "ok", "reasons: %s", why);
    cr_expect(json_is_true(
        json_object_get(json_object_get(json_object_get(doc, "batch"), "last_run"), "ok")));
    json_decref(doc);

    /* A doctored master row: a negative amount fails the no_negative_sums check (it went
     * around ingest, so a full run, which reads every order, sees it). */
    sql(&v, "master.db",
        "INSERT INTO orders_base VALUES('m-bad', 'x1', -5, 1795341600000, -1, 1, NULL)");
    cr_assert_eq(batch(&v, tag, "run", "--full"), 1);

    cr_assert_eq(batch(&v, tag, "status", "--json"), 0);
    s = output(&v, tag, "out");
    st = json_loads(s, 0, NULL);
    cr_assert_not_null(st, "status --json: %s", s);
    free(s);
    cr_expect(json_is_false(json_object_get(json_object_get(st, "last_run"), "ok")));
    cr_expect_str_eq(str_at(st, "last_run", "failed_check", NULL), "no_negative_sums");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(st, "pending"), "id")), 2);
    json_t *rc = json_object_get(st, "run_counters");
    cr_expect_eq(json_integer_value(json_object_get(rc, "runs")), 2);
    cr_expect_eq(json_integer_value(json_object_get(rc, "failed_runs")), 1);
    cr_expect_eq(json_integer_value(json_object_get(rc, "failed_no_negative_sums")), 1);
    json_decref(st);
    cr_assert_eq(batch(&v, tag, "status", NULL), 0);
    s = output(&v, tag, "out");
    cr_expect(strstr(s, "last run: FAILED ") && strstr(s, ", check no_negative_sums failed: "),
              "status: %s", s);
    cr_expect(strstr(s, "runs: failed_no_negative_sums=1 failed_runs=1 runs=2"), "status: %s", s);
    cr_expect(strstr(s, "pending cut: version 2 cut_epoch ") &&
                  strstr(s, "ago (the next run reuses it; never drop it by hand)"),
              "status: %s", s);
    free(s);

    doc = health_speed_held(&v, &status);
    reasons(doc, why, sizeof(why));
    cr_expect_eq(status, 200);
    cr_expect_str_eq(str_at(doc, "status", NULL, NULL), "degraded");
    cr_expect_str_eq(why, "the last batch run failed: data-quality check no_negative_sums");
    cr_expect_str_eq(str_at(doc, "batch", "last_run", "failed_check"), "no_negative_sums");
    cr_expect_eq(json_integer_value(json_object_get(
                     json_object_get(json_object_get(doc, "batch"), "pending_cut"), "version")),
                 2);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(doc, "batch"), "version")), 1,
                 "the previous version keeps serving");
    json_decref(doc);
    s = get_text(&v, "/metrics");
    expect_metric(s, "\nlambda_batch_last_run_ok 0.000\n");
    expect_metric(s, "\nlambda_batch_last_run_duration_seconds ");
    expect_metric(s, "\nlambda_batch_pending_cut_age_seconds ");
    expect_metric(s, "\nlambda_batch_runs_total 2\n");
    expect_metric(s, "\nlambda_batch_run_failures_total{check=\"no_negative_sums\"} 1\n");
    expect_metric(s, "\nlambda_kafka_lost_offsets_total{layer=\"batch\"} 0\n");
    free(s);

    /* The cause fixed, the next run publishes the pending cut: healthy again, and the failure
     * counter stays where it was. */
    sql(&v, "master.db",
        "DELETE FROM orders_base WHERE merchant_id='m-bad';"
        " DELETE FROM orders_recent WHERE merchant_id='m-bad'");
    cr_assert_eq(batch(&v, tag, "run", "--full"), 0);
    doc = health_speed_held(&v, &status);
    reasons(doc, why, sizeof(why));
    cr_expect_str_eq(str_at(doc, "status", NULL, NULL), "ok", "reasons: %s", why);
    cr_expect(json_is_null(json_object_get(json_object_get(doc, "batch"), "pending_cut")));
    json_decref(doc);
    s = get_text(&v, "/metrics");
    expect_metric(s, "\nlambda_batch_last_run_ok 1.000\n");
    expect_metric(s, "\nlambda_batch_runs_total 3\n");
    expect_metric(s, "\nlambda_batch_run_failures_total{check=\"no_negative_sums\"} 1\n");
    cr_expect(!strstr(s, "lambda_batch_pending_cut_age_seconds"), "%s", s);
    free(s);
}

/* The number in reason text "...<prefix>N<suffix>", or -1. */
static long number_in(const char *text, const char *prefix)
{
    const char *p = strstr(text, prefix);
    return p ? strtol(p + strlen(prefix), NULL, 10) : -1;
}

Test(health, stale_checkpoint_high_lag_and_a_stale_version_degrade, .timeout = 60, .fini = fini)
{
    static struct env v;
    struct lerr e = {{0}};
    char why[1024];
    sqlite3 *db;
    long status;
    int64_t now = tm_now_ms();
    json_t *doc;
    int fd;

    env_init(&v, "hstates", false);
    cr_assert_eq(db_open_rw(v.data, DB_SPEED, &db, &e), 0, "%s", e.msg);
    it_sql(db, "INSERT INTO meta VALUES ('checkpoint_ms', %lld), ('epoch', 5)",
           (long long)(now - 60000));
    it_sql(db, "INSERT INTO offsets VALUES (0, 100, 0, 110, %lld), (1, 50, 0, 52, %lld)",
           (long long)(now - 60000), (long long)(now - 60000));
    it_sql(db, "INSERT INTO counters VALUES ('skipped_offsets', 7)");
    sqlite3_close(db);
    cr_assert_eq(db_open_rw(v.data, DB_BATCH, &db, &e), 0, "%s", e.msg);
    it_sql(db,
           "INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms) VALUES"
           " (1, 'published', 3, %lld, %lld)",
           (long long)(now - 1200000), (long long)(now - 1190000));
    sqlite3_close(db);
    serve_start(&v, (char *[]){"--max-lag", "11", NULL});
    cr_assert_eq(lock_try(v.data, "speed.lock", &fd, &e), 1, "%s", e.msg);

    doc = get_json(&v, "/health", &status);
    reasons(doc, why, sizeof(why));
    cr_expect_eq(status, 200);
    cr_expect_str_eq(str_at(doc, "status", NULL, NULL), "degraded");
    cr_expect_eq(json_array_size(json_object_get(doc, "reasons")), 3, "%s", why);
    long age = number_in(why, "speed checkpoint is ");
    cr_expect(age >= 60 && age < 70 && strstr(why, "s old (stale_after 30s) | "), "%s", why);
    cr_expect(strstr(why, " | speed lag 12 is above max_lag 11 | "), "%s", why);
    age = number_in(why, "batch version 1 is ");
    cr_expect(age >= 1200 && age < 1210 && strstr(why, "s old (batch_stale_after 600s)"), "%s",
              why);
    json_t *sp = json_object_get(doc, "speed");
    cr_expect_eq(json_integer_value(json_object_get(sp, "lag")), 12);
    cr_expect_geq(json_integer_value(json_object_get(sp, "lag_age_ms")), 60000,
                  "the lag is shown with the age of the checkpoint that recorded it");
    json_decref(doc);
    char *m = get_text(&v, "/metrics");
    expect_metric(m, "\nlambda_kafka_lost_offsets_total{layer=\"speed\"} 7\n");
    expect_metric(m, "\nlambda_speed_running 1.000\n");
    free(m);

    /* Nobody holds speed.lock: the lag recorded at the last checkpoint is not shown. */
    lock_release(fd);
    doc = get_json(&v, "/health", &status);
    reasons(doc, why, sizeof(why));
    cr_expect(strstr(why, "no speed layer holds speed.lock | speed checkpoint is "), "%s", why);
    cr_expect(!strstr(why, "max_lag"), "%s", why);
    cr_expect(json_is_null(json_object_get(json_object_get(doc, "speed"), "lag")));
    cr_expect(json_is_false(json_object_get(json_object_get(doc, "speed"), "running")));
    json_decref(doc);
}

Test(health, a_killed_speed_layer_s_last_lag_is_not_shown, .timeout = 90, .fini = fini)
{
    static struct env v;
    char why[1024];
    long status;
    json_t *doc;

    env_init(&v, "hspeed", true);
    produce(&v, orders);
    char *argv[] = {"lambda-speed", "--brokers", v.bs, "--data-dir", v.data, NULL};
    it_spawn(&v.speed, v.dir, "speed", argv, NULL);
    cr_assert(it_wait_log(&v.speed, "msg=started", 30000), "lambda-speed did not start");
    serve_start(&v, NULL);
    /* Running, caught up: lag 0 with its checkpoint's age, and nothing else degrades. */
    int64_t end = tm_now_ms() + 20000;
    do {
        doc = get_json(&v, "/health", &status);
        if (json_integer_value(json_object_get(json_object_get(doc, "speed"), "lag")) == 0 &&
            json_is_integer(json_object_get(json_object_get(doc, "speed"), "lag")))
            break;
        json_decref(doc);
        doc = NULL;
    } while (tm_now_ms() < end);
    cr_assert_not_null(doc, "the speed layer never showed lag 0");
    reasons(doc, why, sizeof(why));
    cr_expect_str_eq(str_at(doc, "status", NULL, NULL), "ok", "%s", why);
    cr_expect(json_is_true(json_object_get(json_object_get(doc, "speed"), "running")));
    cr_expect(json_is_integer(json_object_get(json_object_get(doc, "speed"), "lag_age_ms")));
    json_decref(doc);

    cr_assert_eq(it_signal(&v.speed, SIGKILL, 10000), 128 + SIGKILL);
    doc = get_json(&v, "/health", &status);
    reasons(doc, why, sizeof(why));
    cr_expect_eq(status, 200);
    cr_expect_str_eq(str_at(doc, "status", NULL, NULL), "degraded");
    cr_expect_str_eq(why, "no speed layer holds speed.lock");
    cr_expect(json_is_null(json_object_get(json_object_get(doc, "speed"), "lag")));
    cr_expect(json_is_integer(json_object_get(json_object_get(doc, "speed"), "checkpoint_age_ms")));
    json_decref(doc);
}
