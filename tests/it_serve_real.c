/* it_serve_real.c - lambda-serve over a data directory written by the real batch and speed
 * layers (not by SQL fixtures): a merchant present in both layers, its totals, a range, its
 * minute and hour series and the top merchants of a window all equal what lambda-gen's truth
 * files say, computed here independently from the truth's per-minute rows. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itlib.h"
#include "tm.h"

#define START_MS INT64_C(1795255200000) /* 2026-11-21T10:00:00Z */

static struct it_proc kafka, speed, serve;
static char dir[512], data[600], bs[256], base[64];
static struct it_truth truth;

static void stop_all(void)
{
    it_stop(&serve);
    it_stop(&speed);
    it_stop(&kafka);
    it_truth_free(&truth);
}

static void produce(int seed, int count, int64_t start_ms)
{
    char s[16], c[16], st[32], path[600], tag[16];
    struct it_truth t;

    snprintf(s, sizeof(s), "%d", seed);
    snprintf(c, sizeof(c), "%d", count);
    snprintf(st, sizeof(st), "%" PRId64, start_ms);
    snprintf(path, sizeof(path), "%s/truth%d", dir, seed);
    snprintf(tag, sizeof(tag), "gen%d", seed);
    char *argv[] = {"lambda-gen",
                    "--brokers",
                    bs,
                    "--count",
                    c,
                    "--merchants",
                    "30",
                    "--late-pct",
                    "2",
                    "--dup-pct",
                    "4",
                    "--invalid-pct",
                    "2",
                    "--seed",
                    s,
                    "--start-time",
                    st,
                    "--time-step",
                    "100ms",
                    "--truth",
                    path,
                    NULL};
    cr_assert_eq(it_run(dir, tag, argv, NULL, 60000), 0, "lambda-gen failed");
    it_truth_load(&t, path);
    it_truth_add(&truth, &t);
    it_truth_free(&t);
}

static json_t *get_json(const char *path)
{
    char url[2048], *body = NULL;
    long status;
    json_t *doc;

    snprintf(url, sizeof(url), "%s%s", base, path);
    status = it_http_get(url, &body);
    doc = json_loads(body, 0, NULL);
    cr_assert_eq(status, 200, "GET %s: %ld %s", path, status, body);
    cr_assert_not_null(doc, "GET %s: not JSON: %s", path, body);
    free(body);
    return doc;
}

static int64_t jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Truth for one merchant (or every merchant when id is NULL) over [from_ms, to_ms). */
static void truth_range(const char *id, int64_t from_ms, int64_t to_ms, int64_t *count,
                        int64_t *revenue)
{
    *count = *revenue = 0;
    for (size_t i = 0; i < truth.nminutes; i++) {
        const struct it_truth_minute *m = &truth.minutes[i];
        if ((!id || !strcmp(m->merchant_id, id)) && m->minute_ms >= from_ms &&
            m->minute_ms < to_ms) {
            *count += m->order_count;
            *revenue += m->revenue_cents;
        }
    }
}

static bool all_exact(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < truth.nmerchants; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/query/%s", truth.merchants[i].merchant_id);
        json_t *d = get_json(path);
        bool ok = jint(d, "order_count") == truth.merchants[i].order_count &&
                  jint(d, "revenue_cents") == truth.merchants[i].revenue_cents;
        json_decref(d);
        if (!ok)
            return false;
    }
    return true;
}

static void start(void)
{
    it_tmpdir("serve-real", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    it_devkafka(&kafka, dir, 4, bs);
    char *sargv[] = {"lambda-speed", "--brokers",       bs,    "--data-dir", data, "--epoch-ms",
                     "1000",         "--checkpoint-ms", "100", NULL};
    it_spawn(&speed, dir, "speed", sargv, NULL);
    char *vargv[] = {"lambda-serve", "--port", "0", "--data-dir", data, "--epoch-ms", "1000", NULL};
    it_spawn(&serve, dir, "serve", vargv, NULL);
    cr_assert(it_wait_log(&serve, "listening", 15000));
    snprintf(base, sizeof(base), "http://127.0.0.1:%" PRId64,
             it_log_int(&serve, "listening", "port"));
}

Test(serve_real, routes_over_real_batch_and_speed_data_equal_the_truth, .timeout = 300,
     .fini = stop_all)
{
    char path[512], from[TM_RFC3339_LEN], to[TM_RFC3339_LEN];
    int64_t c, r, from_ms, to_ms;

    start();
    produce(1, 3000, START_MS);
    cr_assert(it_wait_until(all_exact, NULL, 60000), "speed layer never matched the truth");
    /* two epochs on, the newest boundary lies past everything: the batch cut takes it all */
    int target = it_log_count(&speed, "msg=epoch_started") + 2;
    cr_assert(it_wait_log_count(&speed, "msg=epoch_started", target, 30000),
              "the speed layer started no epoch");
    char *bargv[] = {"lambda-batch", "run",        "--brokers", bs,  "--data-dir",
                     data,           "--epoch-ms", "1000",      NULL};
    cr_assert_eq(it_run(dir, "batch", bargv, NULL, 120000), 0, "lambda-batch run failed");
    produce(2, 2000, START_MS + 3000 * 100);
    cr_assert(it_wait_until(all_exact, NULL, 60000), "the merge never matched the truth");

    /* m-1 lives in both layers: the parts add up to the truth */
    json_t *d = get_json("/query/m-1");
    json_t *b = json_object_get(d, "batch"), *s = json_object_get(d, "speed");
    cr_assert_gt(jint(b, "order_count"), 0, "m-1 has no batch part");
    cr_assert_gt(jint(s, "order_count"), 0, "m-1 has no speed part");
    cr_assert_eq(jint(b, "order_count") + jint(s, "order_count"),
                 it_truth_find(&truth, "m-1")->order_count);
    cr_assert_eq(jint(b, "revenue_cents") + jint(s, "revenue_cents"),
                 it_truth_find(&truth, "m-1")->revenue_cents);
    json_decref(d);

    /* an event-time range spanning both layers */
    from_ms = START_MS + 2 * TM_MINUTE_MS, to_ms = START_MS + 7 * TM_MINUTE_MS;
    tm_format_rfc3339(from_ms, from);
    tm_format_rfc3339(to_ms, to);
    snprintf(path, sizeof(path), "/query/m-2?from=%s&to=%s", from, to);
    d = get_json(path);
    truth_range("m-2", from_ms, to_ms, &c, &r);
    cr_assert_eq(jint(d, "order_count"), c, "range count");
    cr_assert_eq(jint(d, "revenue_cents"), r, "range revenue");
    json_decref(d);

    /* minute series from an hour before the start (the late events) to after the end */
    from_ms = START_MS - TM_HOUR_MS, to_ms = START_MS + 10 * TM_MINUTE_MS;
    tm_format_rfc3339(from_ms, from);
    tm_format_rfc3339(to_ms, to);
    snprintf(path, sizeof(path), "/query/m-1/series?step=1m&from=%s&to=%s", from, to);
    d = get_json(path);
    json_t *pts = json_object_get(d, "points");
    cr_assert_eq(json_array_size(pts), 70);
    for (size_t i = 0; i < 70; i++) {
        int64_t t0 = from_ms + (int64_t)i * TM_MINUTE_MS;
        truth_range("m-1", t0, t0 + TM_MINUTE_MS, &c, &r);
        cr_assert_eq(jint(json_array_get(pts, i), "order_count"), c, "minute %zu", i);
        cr_assert_eq(jint(json_array_get(pts, i), "revenue_cents"), r, "minute %zu", i);
    }
    json_decref(d);

    /* hour series */
    snprintf(path, sizeof(path),
             "/query/m-3/series?step=1h&from=2026-11-21T09:00:00Z&to="
             "2026-11-21T11:00:00Z");
    d = get_json(path);
    pts = json_object_get(d, "points");
    cr_assert_eq(json_array_size(pts), 2);
    for (size_t i = 0; i < 2; i++) {
        int64_t t0 = START_MS - TM_HOUR_MS + (int64_t)i * TM_HOUR_MS;
        truth_range("m-3", t0, t0 + TM_HOUR_MS, &c, &r);
        cr_assert_eq(jint(json_array_get(pts, i), "order_count"), c, "hour %zu", i);
        cr_assert_eq(jint(json_array_get(pts, i), "revenue_cents"), r, "hour %zu", i);
    }
    json_decref(d);

    /* the top 5 by revenue over a 5-minute window, against the truth over the same range */
    d = get_json("/top?window=5m&n=5&by=revenue");
    cr_assert(tm_parse_rfc3339(json_string_value(json_object_get(d, "from")),
                               strlen(json_string_value(json_object_get(d, "from"))),
                               &from_ms) == 0);
    cr_assert(tm_parse_rfc3339(json_string_value(json_object_get(d, "to")),
                               strlen(json_string_value(json_object_get(d, "to"))), &to_ms) == 0);
    json_t *top = json_object_get(d, "merchants");
    cr_assert_eq(json_array_size(top), 5);
    int64_t prev = INT64_MAX;
    for (size_t i = 0; i < 5; i++) {
        json_t *m = json_array_get(top, i);
        const char *id = json_string_value(json_object_get(m, "merchant_id"));
        truth_range(id, from_ms, to_ms, &c, &r);
        cr_assert_eq(jint(m, "order_count"), c, "top %s", id);
        cr_assert_eq(jint(m, "revenue_cents"), r, "top %s", id);
        cr_assert_leq(r, prev, "top is not sorted by revenue");
        prev = r;
    }
    /* nobody left out ranks above the fifth */
    for (size_t k = 0; k < truth.nmerchants; k++) {
        bool listed = false;
        for (size_t i = 0; i < 5; i++)
            listed =
                listed ||
                !strcmp(truth.merchants[k].merchant_id,
                        json_string_value(json_object_get(json_array_get(top, i), "merchant_id")));
        truth_range(truth.merchants[k].merchant_id, from_ms, to_ms, &c, &r);
        cr_assert(listed || r <= prev, "%s (%" PRId64 ") belongs in the top 5",
                  truth.merchants[k].merchant_id, r);
    }
    json_decref(d);
}
