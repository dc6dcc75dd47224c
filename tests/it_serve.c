/* it_serve.c - lambda-serve over real sockets against fixture data directories.
 *
 * The fixtures are real SQLite files made by db_open_rw() (the schemas of shared/db.h) and
 * filled with plain SQL, so each expected document below is computed by hand from the rows:
 * batch version 2 (cut_epoch 200) is served, version 1 (older) and 3 (pending) are not; speed
 * rows with epoch 200 (== cut) count, the row with epoch 199 (== cut - 1) does not. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "db.h"
#include "itlib.h"
#include "lock.h"
#include "tm.h"

/* 2026-11-21T10:00:00Z: the fixtures' minutes are offsets from it. */
#define T10        1795255200000LL
#define MIN(h, m)  (T10 + (((h)-10) * 60 + (m)) * TM_MINUTE_MS)
#define STARTED_MS (T10 + 7 * TM_MINUTE_MS) /* version 2's cut was taken at 10:07 */

/* Placeholders in expected documents for ages, which depend on when the request ran. */
#define AGE_CHECKPOINT -1
#define AGE_BATCH      -2

struct srv {
    struct it_proc p;
    char dir[512], data[600];
    int port;
    int64_t checkpoint_ms; /* meta.checkpoint_ms of the speed fixture */
    char *threads;         /* --threads, NULL for the default */
};

static sqlite3 *open_rw(const char *data, enum db_file f)
{
    sqlite3 *db = NULL;
    struct lerr e = {{0}};

    cr_assert_eq(db_open_rw(data, f, &db, &e), 0, "%s", e.msg);
    return db;
}

static void fixture_batch(const char *data)
{
    sqlite3 *db = open_rw(data, DB_BATCH);

    it_sql(db,
           "INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms) VALUES"
           "(1, 'published', 100, %lld, %lld), (2, 'published', 200, %lld, %lld),"
           "(3, 'pending', 300, %lld, NULL)",
           MIN(9, 0), MIN(9, 1), STARTED_MS, STARTED_MS + 5000, MIN(10, 30));
    /* Version 1 must never show: its rows end where version 2 begins. */
    it_sql(db,
           "INSERT INTO merchant_totals VALUES ('m-both', 1, 2, 1, 1), ('m-batch', 1, 2, 1, 1);"
           "INSERT INTO minutely VALUES ('m-both', %lld, 1, 2, 1, 1);"
           "INSERT INTO hourly VALUES ('m-both', %lld, 1, 2, 1, 1)",
           MIN(10, 1), MIN(10, 0));
    it_sql(db, "INSERT INTO merchant_totals(valid_from, merchant_id, order_count, revenue_cents) "
               "VALUES (2, 'm-both', 1000, 500000), (2, 'm-batch', 10, 1000)");
    /* Hour 09 is older than the minute retention: only its hour row exists. */
    it_sql(db,
           "INSERT INTO hourly(valid_from, merchant_id, hour_ms, order_count, revenue_cents) "
           "VALUES (2, 'm-both', %lld, 400, 200000), (2, 'm-both', %lld, 600,"
           " 300000), (2, 'm-batch', %lld, 10, 1000)",
           MIN(9, 0), MIN(10, 0), MIN(10, 0));
    it_sql(db,
           "INSERT INTO minutely(valid_from, merchant_id, minute_ms, order_count, revenue_cents) "
           "VALUES (2, 'm-both', %lld, 100, 50000), (2, 'm-both', %lld, 500,"
           " 250000), (2, 'm-batch', %lld, 10, 1000)",
           MIN(10, 0), MIN(10, 1), MIN(10, 1));
    sqlite3_close(db);
}

static void fixture_speed(struct srv *s)
{
    sqlite3 *db = open_rw(s->data, DB_SPEED);

    s->checkpoint_ms = tm_now_ms() - 1000;
    it_sql(db,
           "INSERT INTO meta VALUES ('checkpoint_ms', %lld), ('epoch', 205), ('epoch_ms', 60000),"
           " ('watermark_ms', %lld), ('allowed_lateness_ms', 120000)",
           (long long)s->checkpoint_ms, MIN(10, 5) + 30000);
    it_sql(db,
           "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents) VALUES "
           "('m-both', %lld, 200, 30, 15000),"
           " ('m-both', %lld, 199, 7, 700), ('m-both', %lld, 201, 20, 10000),"
           " ('m-speed', %lld, 203, 5, 2500), ('m-a', %lld, 203, 5, 9999)",
           MIN(10, 2), MIN(10, 1), MIN(10, 3), MIN(10, 4), MIN(10, 4));
    it_sql(db, "INSERT INTO offsets VALUES (0, 100, %lld, 110, %lld), (1, 50, %lld, 50, %lld)",
           MIN(10, 5), (long long)s->checkpoint_ms, MIN(10, 5), (long long)s->checkpoint_ms);
    it_sql(db,
           "INSERT INTO counters VALUES ('consumed', 150), ('applied', 140), ('duplicates', 3),"
           " ('late', 2), ('key_mismatch', 1), ('rejects_bad_json', 4), ('rejects_bad_time', 1),"
           " ('checkpoints', 9), ('checkpoint_us', 1200)");
    sqlite3_close(db);
}

static void fixture_master(const char *data)
{
    sqlite3 *db = open_rw(data, DB_MASTER);

    it_sql(db, "INSERT INTO counters VALUES ('duplicates', 5), ('key_mismatch', 0),"
               " ('deleted_offsets', 0);"
               "INSERT INTO rejects(source, partition, offset, reason, payload, at_ms) VALUES"
               " ('kafka', 0, 1, 'bad_json', 'x', 0), ('kafka', 0, 2, 'bad_json', 'y', 0),"
               " ('kafka', 1, 3, 'out_of_range', 'z', 0)");
    sqlite3_close(db);
}

static void srv_start(struct srv *s)
{
    /* The fixture's version is days old: only it_health checks batch_stale_after. */
    char *argv[] = {"lambda-serve",        "--port", "0",         "--data-dir", s->data,
                    "--batch-stale-after", "3650d",  "--threads", s->threads,   NULL};

    if (!s->threads)
        argv[7] = NULL;
    it_spawn(&s->p, s->dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&s->p, "msg=listening", 10000), "lambda-serve did not start");
    s->port = (int)it_log_int(&s->p, "msg=listening", "port");
    cr_assert_gt(s->port, 0);
}

/* A data dir with the given layers, and a server on it. */
static void srv_init_threads(struct srv *s, bool batch, bool speed, bool master, char *threads)
{
    memset(s, 0, sizeof(*s));
    s->threads = threads;
    it_tmpdir("serve", s->dir);
    snprintf(s->data, sizeof(s->data), "%s/data", s->dir);
    struct lerr e = {{0}};
    cr_assert_eq(db_ensure_dir(s->data, &e), 0, "%s", e.msg);
    if (batch)
        fixture_batch(s->data);
    if (speed)
        fixture_speed(s);
    if (master)
        fixture_master(s->data);
    srv_start(s);
}

static void srv_init(struct srv *s, bool batch, bool speed, bool master)
{
    srv_init_threads(s, batch, speed, master, NULL);
}

static void srv_fini(struct srv *s)
{
    cr_assert_eq(it_signal(&s->p, SIGTERM, 10000), 0, "lambda-serve did not exit 0 on SIGTERM");
    cr_assert(it_log_has(&s->p, "msg=stopped"));
}

struct hdr {
    char allow[128], ctype[128];
};

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
    struct hdr *h = user;
    size_t len = size * n;

    if (len > 7 && !strncasecmp(data, "Allow: ", 7))
        snprintf(h->allow, sizeof(h->allow), "%.*s", (int)(len - 9), data + 7);
    if (len > 14 && !strncasecmp(data, "Content-Type: ", 14))
        snprintf(h->ctype, sizeof(h->ctype), "%.*s", (int)(len - 16), data + 14);
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    char **buf = user;
    size_t old = *buf ? strlen(*buf) : 0;

    *buf = realloc(*buf, old + size * n + 1);
    memcpy(*buf + old, data, size * n);
    (*buf)[old + size * n] = '\0';
    return size * n;
}

/* Any method, with the response's Allow and Content-Type headers. */
static long request(const struct srv *s, const char *method, const char *path, char **body,
                    struct hdr *h)
{
    char url[256];
    CURL *c = curl_easy_init();
    long status = 0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
    memset(h, 0, sizeof(*h));
    *body = NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    if (!strcmp(method, "POST"))
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "x=1");
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (!*body)
        *body = strdup("");
    return status;
}

static long get_json(const struct srv *s, const char *path, json_t **doc)
{
    char url[80000], *body = NULL;
    json_error_t err;
    long status;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
    status = it_http_get(url, &body);
    *doc = json_loads(body, 0, &err);
    cr_assert_not_null(*doc, "GET %s: %ld, not JSON (%s): %.300s", path, status, err.text, body);
    free(body);
    return status;
}

/* Replaces an age placeholder of expected with what the server said, once it is checked to
 * lie between the fixture's time and now. */
static void settle_ages(const struct srv *s, json_t *want, json_t *got, int64_t after_ms)
{
    const char *key;
    json_t *w;

    if (json_is_array(want)) {
        for (size_t i = 0; i < json_array_size(want); i++)
            settle_ages(s, json_array_get(want, i), json_array_get(got, i), after_ms);
        return;
    }
    json_object_foreach(want, key, w)
    {
        json_t *g = json_object_get(got, key);
        if (json_is_object(w) || json_is_array(w)) {
            settle_ages(s, w, g, after_ms);
        } else if (json_is_integer(w) && json_integer_value(w) < 0) {
            int64_t base = json_integer_value(w) == AGE_CHECKPOINT ? s->checkpoint_ms : STARTED_MS;
            cr_assert(json_is_integer(g), "%s: not an integer", key);
            int64_t age = json_integer_value(g);
            cr_assert(age >= 0 && age <= after_ms - base, "%s=%lld out of 0..%lld", key,
                      (long long)age, (long long)(after_ms - base));
            json_object_set_new(want, key, json_integer(age));
        }
    }
}

static void expect(const struct srv *s, const char *path, long want_status, const char *want_json);

/* Whether every age placeholder of want has an integer in got (settle_ages would assert). */
static bool ages_there(json_t *want, json_t *got)
{
    const char *key;
    json_t *w;

    if (json_is_array(want)) {
        for (size_t i = 0; i < json_array_size(want); i++)
            if (!ages_there(json_array_get(want, i), json_array_get(got, i)))
                return false;
        return true;
    }
    json_object_foreach(want, key, w)
    {
        json_t *g = json_object_get(got, key);
        if ((json_is_object(w) || json_is_array(w)) && !ages_there(w, g))
            return false;
        if (json_is_integer(w) && json_integer_value(w) < 0 && !json_is_integer(g))
            return false;
    }
    return true;
}

/* Whether path answers want_json now (ages settled as expect() does). */
static bool answers(const struct srv *s, const char *path, const char *want_json)
{
    json_t *want = json_loads(want_json, 0, NULL), *got = NULL;
    bool ok = false;

    if (want && get_json(s, path, &got) == 200 && got && ages_there(want, got)) {
        settle_ages(s, want, got, tm_now_ms());
        ok = json_equal(want, got);
    }
    json_decref(want), json_decref(got);
    return ok;
}

/* expect(), once the answer had up to timeout_ms to change: answers come from memory, which
 * follows a commit within milliseconds (live.h). */
struct soon {
    const struct srv *s;
    const char *path, *want_json;
};

static bool answers_soon(void *arg)
{
    const struct soon *w = arg;
    return answers(w->s, w->path, w->want_json);
}

static void expect_soon(const struct srv *s, const char *path, long want_status,
                        const char *want_json, int64_t timeout_ms)
{
    struct soon w = {s, path, want_json};

    it_wait_until(answers_soon, &w, timeout_ms);
    expect(s, path, want_status, want_json);
}

static void expect(const struct srv *s, const char *path, long want_status, const char *want_json)
{
    json_error_t err;
    json_t *want = json_loads(want_json, 0, &err), *got;
    long status;

    cr_assert_not_null(want, "bad expected JSON for %s: %s", path, err.text);
    status = get_json(s, path, &got);
    settle_ages(s, want, got, tm_now_ms());
    char *g = json_dumps(got, JSON_COMPACT), *w = json_dumps(want, JSON_COMPACT);
    cr_expect_eq(status, want_status, "GET %s: status %ld, want %ld", path, status, want_status);
    cr_expect(json_equal(want, got), "GET %s\n got: %s\nwant: %s", path, g, w);
    free(g), free(w);
    json_decref(want), json_decref(got);
}

/* The expected /query document of a merchant against the full fixture (version 2 served). */
static void merchant_json(char *out, size_t size, const char *id, long long bn, long long br,
                          long long sn, long long sr, const char *extra)
{
    snprintf(out, size,
             "{\"merchant_id\":\"%s\",\"order_count\":%lld,\"revenue_cents\":%lld,"
             "\"batch\":{\"order_count\":%lld,\"revenue_cents\":%lld,\"version\":2,"
             "\"cut_epoch\":200,\"as_of\":\"2026-11-21T10:07:00.000Z\"},"
             "\"speed\":{\"order_count\":%lld,\"revenue_cents\":%lld,\"checkpoint_age_ms\":-1,"
             "\"lag\":null,\"watermark\":\"2026-11-21T10:05:30.000Z\"}%s}",
             id, bn + sn, br + sr, bn, br, sn, sr, extra ? extra : "");
}

Test(serve, query_merges_both_layers_at_the_cut_epoch, .timeout = 60)
{
    struct srv s;
    char want[2048];

    srv_init(&s, true, true, true);
    /* Speed: epoch 200 (== cut) 30 + epoch 201 20; the epoch-199 row (7, 700) is left out. */
    merchant_json(want, sizeof(want), "m-both", 1000, 500000, 50, 25000, NULL);
    expect(&s, "/query/m-both", 200, want);
    merchant_json(want, sizeof(want), "m-batch", 10, 1000, 0, 0, NULL);
    expect(&s, "/query/m-batch", 200, want);
    merchant_json(want, sizeof(want), "m-speed", 0, 0, 5, 2500, NULL);
    expect(&s, "/query/m-speed", 200, want);
    merchant_json(want, sizeof(want), "m-unknown", 0, 0, 0, 0, NULL);
    expect(&s, "/query/m-unknown", 200, want);
    srv_fini(&s);
}

Test(serve, query_window_and_range_use_minute_buckets, .timeout = 60)
{
    struct srv s;
    char want[2048], path[256];

    srv_init(&s, true, true, false);
    /* The watermark is 10:05:30: window=5m is the minutes 10:01..10:05. Batch 10:01 = 500;
     * speed 10:02 (epoch 200) 30 + 10:03 20; the 10:01 epoch-199 row does not count. */
    merchant_json(want, sizeof(want), "m-both", 500, 250000, 50, 25000,
                  ",\"from\":\"2026-11-21T10:01:00.000Z\",\"to\":\"2026-11-21T10:06:00.000Z\"");
    expect(&s, "/query/m-both?window=5m", 200, want);
    /* 09:00..10:02:30 is hour 09 (from the hour rows) + minutes 10:00..10:02 + speed 10:02. */
    merchant_json(want, sizeof(want), "m-both", 1000, 500000, 30, 15000,
                  ",\"from\":\"2026-11-21T09:00:00.000Z\",\"to\":\"2026-11-21T10:03:00.000Z\"");
    snprintf(path, sizeof(path), "/query/m-both?from=2026-11-21T09:00:00Z&to=%lld",
             MIN(10, 2) + 30000);
    expect(&s, path, 200, want);
    /* A time zone offset is the same instant. */
    merchant_json(want, sizeof(want), "m-both", 600, 300000, 0, 0,
                  ",\"from\":\"2026-11-21T10:00:00.000Z\",\"to\":\"2026-11-21T10:02:00.000Z\"");
    expect(&s, "/query/m-both?from=2026-11-21T12:00:00%2B02:00&to=2026-11-21T10:02:00Z", 200, want);
    srv_fini(&s);
}

Test(serve, query_ids_answers_in_the_order_asked, .timeout = 60)
{
    struct srv s;
    char a[1024], b[1024], c[1024], want[4096];

    srv_init(&s, true, true, false);
    merchant_json(a, sizeof(a), "m-speed", 0, 0, 5, 2500, NULL);
    merchant_json(b, sizeof(b), "m-none", 0, 0, 0, 0, NULL);
    merchant_json(c, sizeof(c), "m-both", 1000, 500000, 50, 25000, NULL);
    snprintf(want, sizeof(want), "{\"merchants\":[%s,%s,%s]}", a, b, c);
    expect(&s, "/query?ids=m-speed,m-none,m-both", 200, want);
    srv_fini(&s);
}

Test(serve, series_marks_final_points, .timeout = 60)
{
    struct srv s;

    srv_init(&s, true, true, false);
    /* Lateness 2 min, watermark 10:05:30: a minute is final when its end is <= 10:03:30. */
    expect(&s, "/query/m-both/series?from=2026-11-21T10:00:00Z&to=2026-11-21T10:05:00Z&step=1m",
           200,
           "{\"merchant_id\":\"m-both\",\"step\":\"1m\",\"from\":\"2026-11-21T10:00:00.000Z\","
           "\"to\":\"2026-11-21T10:05:00.000Z\",\"watermark\":\"2026-11-21T10:05:30.000Z\","
           "\"points\":["
           "{\"t\":\"2026-11-21T10:00:00.000Z\",\"order_count\":100,\"revenue_cents\":50000,"
           "\"final\":true},"
           "{\"t\":\"2026-11-21T10:01:00.000Z\",\"order_count\":500,\"revenue_cents\":250000,"
           "\"final\":true},"
           "{\"t\":\"2026-11-21T10:02:00.000Z\",\"order_count\":30,\"revenue_cents\":15000,"
           "\"final\":true},"
           "{\"t\":\"2026-11-21T10:03:00.000Z\",\"order_count\":20,\"revenue_cents\":10000,"
           "\"final\":false},"
           "{\"t\":\"2026-11-21T10:04:00.000Z\",\"order_count\":0,\"revenue_cents\":0,"
           "\"final\":false}]}");
    expect(&s, "/query/m-both/series?from=2026-11-21T09:10:00Z&to=2026-11-21T10:10:00Z&step=1h",
           200,
           "{\"merchant_id\":\"m-both\",\"step\":\"1h\",\"from\":\"2026-11-21T09:00:00.000Z\","
           "\"to\":\"2026-11-21T11:00:00.000Z\",\"watermark\":\"2026-11-21T10:05:30.000Z\","
           "\"points\":["
           "{\"t\":\"2026-11-21T09:00:00.000Z\",\"order_count\":400,\"revenue_cents\":200000,"
           "\"final\":true},"
           "{\"t\":\"2026-11-21T10:00:00.000Z\",\"order_count\":650,\"revenue_cents\":325000,"
           "\"final\":false}]}");
    expect(&s, "/query/m-both/series?from=2026-11-21T00:00:00Z&to=2026-11-22T00:00:00Z&step=1d",
           200,
           "{\"merchant_id\":\"m-both\",\"step\":\"1d\",\"from\":\"2026-11-21T00:00:00.000Z\","
           "\"to\":\"2026-11-22T00:00:00.000Z\",\"watermark\":\"2026-11-21T10:05:30.000Z\","
           "\"points\":["
           "{\"t\":\"2026-11-21T00:00:00.000Z\",\"order_count\":1050,\"revenue_cents\":525000,"
           "\"final\":false}]}");
    srv_fini(&s);
}

Test(serve, top_ranks_merged_window_and_breaks_ties_by_id, .timeout = 60)
{
    struct srv s;

    srv_init(&s, true, true, false);
    /* 10:01..10:05: m-both 500 + 30 + 20; m-batch 10; m-a and m-speed 5 each (a tie). */
    expect(&s, "/top?window=5m&n=10&by=orders", 200,
           "{\"window\":\"5m\",\"by\":\"orders\",\"from\":\"2026-11-21T10:01:00.000Z\","
           "\"to\":\"2026-11-21T10:06:00.000Z\",\"merchants\":["
           "{\"merchant_id\":\"m-both\",\"order_count\":550,\"revenue_cents\":275000},"
           "{\"merchant_id\":\"m-batch\",\"order_count\":10,\"revenue_cents\":1000},"
           "{\"merchant_id\":\"m-a\",\"order_count\":5,\"revenue_cents\":9999},"
           "{\"merchant_id\":\"m-speed\",\"order_count\":5,\"revenue_cents\":2500}]}");
    expect(&s, "/top?window=5m&n=3&by=revenue", 200,
           "{\"window\":\"5m\",\"by\":\"revenue\",\"from\":\"2026-11-21T10:01:00.000Z\","
           "\"to\":\"2026-11-21T10:06:00.000Z\",\"merchants\":["
           "{\"merchant_id\":\"m-both\",\"order_count\":550,\"revenue_cents\":275000},"
           "{\"merchant_id\":\"m-a\",\"order_count\":5,\"revenue_cents\":9999},"
           "{\"merchant_id\":\"m-speed\",\"order_count\":5,\"revenue_cents\":2500}]}");
    /* 10:04 alone: only speed rows. */
    expect(&s, "/top?from=2026-11-21T10:04:00Z&to=2026-11-21T10:05:00Z", 200,
           "{\"window\":null,\"by\":\"orders\",\"from\":\"2026-11-21T10:04:00.000Z\","
           "\"to\":\"2026-11-21T10:05:00.000Z\",\"merchants\":["
           "{\"merchant_id\":\"m-a\",\"order_count\":5,\"revenue_cents\":9999},"
           "{\"merchant_id\":\"m-speed\",\"order_count\":5,\"revenue_cents\":2500}]}");
    srv_fini(&s);
}

Test(serve, health_reports_ages_and_lag, .timeout = 60)
{
    struct srv s;

    srv_init(&s, true, true, false);
    struct lerr e = {{0}};
    int fd;
    /* Play a running speed layer: its lag shows while it holds speed.lock. */
    cr_assert_eq(lock_try(s.data, "speed.lock", &fd, &e), 1, "%s", e.msg);
    expect(&s, "/health", 200,
           "{\"status\":\"ok\",\"reasons\":[],\"batch\":{\"version\":2,\"age_ms\":-2,"
           "\"last_run\":null,\"pending_cut\":{\"version\":3,\"age_ms\":-2}},"
           "\"speed\":{\"running\":true,\"checkpoint_age_ms\":-1,\"lag\":10,\"lag_age_ms\":-1},"
           "\"shard\":{\"partitions\":\"all\",\"topic_partitions\":null,\"watermark\":\"2026-11-"
           "21T10:05:30.000Z\",\"watermark_ms\":1795255530000,\"key_mismatch\":1,\"key_mismatch_"
           "batch\":0,\"key_mismatch_speed\":1}}");
    lock_release(fd);
    srv_fini(&s);
}

static void assert_has(const char *text, const char *line)
{
    cr_expect(strstr(text, line), "missing line: %s", line);
}

Test(serve, metrics_expose_requests_layers_and_counters, .timeout = 60)
{
    struct srv s;
    char url[128], *body = NULL;
    json_t *doc;

    srv_init(&s, true, true, true);
    get_json(&s, "/query/m-both", &doc), json_decref(doc);
    get_json(&s, "/query/m-both", &doc), json_decref(doc);
    get_json(&s, "/query/bad!", &doc), json_decref(doc);
    get_json(&s, "/nope", &doc), json_decref(doc);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", s.port);
    struct hdr h;
    cr_assert_eq(request(&s, "GET", "/metrics", &body, &h), 200);
    cr_expect_str_eq(h.ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_has(body, "\nlambda_http_requests_total{route=\"query\",code=\"200\"} 2\n");
    assert_has(body, "\nlambda_http_requests_total{route=\"query\",code=\"400\"} 1\n");
    assert_has(body, "\nlambda_http_requests_total{route=\"other\",code=\"404\"} 1\n");
    assert_has(body, "\nlambda_http_request_duration_seconds_count{route=\"query\"} 3\n");
    assert_has(body,
               "\nlambda_http_request_duration_seconds_bucket{route=\"query\",le=\"+Inf\"} 3\n");
    assert_has(body, "# TYPE lambda_http_request_duration_seconds histogram\n");
    assert_has(body, "\nlambda_batch_version 2\n");
    assert_has(body, "\nlambda_batch_version_age_seconds ");
    assert_has(body, "\nlambda_speed_checkpoint_age_seconds ");
    assert_has(body, "\nlambda_speed_lag{partition=\"0\"} 10\n");
    assert_has(body, "\nlambda_speed_lag{partition=\"1\"} 0\n");
    assert_has(body, "\nlambda_rejects_total{layer=\"speed\",reason=\"bad_json\"} 4\n");
    assert_has(body, "\nlambda_rejects_total{layer=\"speed\",reason=\"bad_time\"} 1\n");
    assert_has(body, "\nlambda_rejects_total{layer=\"batch\",reason=\"bad_json\"} 2\n");
    assert_has(body, "\nlambda_rejects_total{layer=\"batch\",reason=\"out_of_range\"} 1\n");
    assert_has(body, "\nlambda_late_total 2\n");
    assert_has(body, "\nlambda_duplicates_total{layer=\"speed\"} 3\n");
    assert_has(body, "\nlambda_duplicates_total{layer=\"batch\"} 5\n");
    free(body);
    srv_fini(&s);
}

Test(serve, answers_change_as_soon_as_a_layer_commits, .timeout = 60)
{
    struct srv s;
    char want[2048];
    sqlite3 *db;

    /* One worker; answers come from memory, which each commit must bring up to date. */
    srv_init_threads(&s, true, true, false, "1");
    merchant_json(want, sizeof(want), "m-both", 1000, 500000, 50, 25000, NULL);
    expect(&s, "/query/m-both", 200, want);
    expect(&s, "/query/m-both", 200, want);
    /* A speed checkpoint commits: answers have it within a poll of the wal-index. */
    db = open_rw(s.data, DB_SPEED);
    it_sql(db,
           "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents) VALUES "
           "('m-both', %lld, 204, 1, 100)",
           MIN(10, 5));
    sqlite3_close(db);
    merchant_json(want, sizeof(want), "m-both", 1000, 500000, 51, 25100, NULL);
    expect_soon(&s, "/query/m-both", 200, want, 1000);
    /* A batch version is published with cut 201: the epoch-200 speed row leaves the answer. */
    db = open_rw(s.data, DB_BATCH);
    it_sql(
        db,
        /* One transaction, as a publish is: a published version's rows never change. */
        "BEGIN; INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms) VALUES"
        " (4, 'published', 201, %lld, %lld);"
        "UPDATE merchant_totals SET valid_to = 4 WHERE merchant_id = 'm-both' AND valid_from = 2;"
        "INSERT INTO merchant_totals(valid_from, merchant_id, order_count, revenue_cents) VALUES "
        "(4, 'm-both', 1030, 515000); COMMIT",
        STARTED_MS, STARTED_MS + 1000);
    sqlite3_close(db);
    snprintf(want, sizeof(want),
             "{\"merchant_id\":\"m-both\",\"order_count\":1051,\"revenue_cents\":525100,"
             "\"batch\":{\"order_count\":1030,\"revenue_cents\":515000,\"version\":4,"
             "\"cut_epoch\":201,\"as_of\":\"2026-11-21T10:07:00.000Z\"},"
             "\"speed\":{\"order_count\":21,\"revenue_cents\":10100,\"checkpoint_age_ms\":-1,"
             "\"lag\":null,\"watermark\":\"2026-11-21T10:05:30.000Z\"}}");
    expect_soon(&s, "/query/m-both", 200, want, 1000);
    srv_fini(&s);
}

/* The lock SQLite holds on a wal-index's dead-man-switch byte (offset 128 of the -shm file:
 * os_unix.c's UNIX_SHM_DMS) tells the next process that the file is in use. lambda-serve once
 * opened and closed the -shm itself, which drops every fcntl lock the process holds on the
 * file: the next lambda-batch then truncated it under the server's mapping (SIGBUS). */
static pid_t dms_holder(const char *data, const char *file)
{
    char path[700];
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 128, .l_len = 1};
    int fd;

    snprintf(path, sizeof(path), "%s/%s-shm", data, file);
    fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(fcntl(fd, F_GETLK, &fl), 0, "%s", strerror(errno));
    close(fd);
    return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

Test(serve, keeps_sqlite_s_locks_on_the_wal_index, .timeout = 60)
{
    struct srv s;
    char want[2048];

    srv_init_threads(&s, true, true, false, "1");
    merchant_json(want, sizeof(want), "m-both", 1000, 500000, 50, 25000, NULL);
    expect(&s, "/query/m-both", 200, want);
    expect(&s, "/query/m-both", 200, want); /* the second from the cache, by the header */
    cr_assert_eq(dms_holder(s.data, "batch.db"), s.p.pid, "batch.db-shm");
    cr_assert_eq(dms_holder(s.data, "speed.db"), s.p.pid, "speed.db-shm");
    srv_fini(&s);
}

static const char no_batch[] = "\"batch\":{\"order_count\":0,\"revenue_cents\":0,\"version\":null,"
                               "\"cut_epoch\":0,\"as_of\":null}";

Test(serve, only_speed_counts_every_epoch, .timeout = 60)
{
    struct srv s;
    char want[1024];

    srv_init(&s, false, true, false);
    /* No version: cut_epoch 0, so the epoch-199 row counts too: 30 + 7 + 20. */
    snprintf(want, sizeof(want),
             "{\"merchant_id\":\"m-both\",\"order_count\":57,\"revenue_cents\":25700,%s,"
             "\"speed\":{\"order_count\":57,\"revenue_cents\":25700,\"checkpoint_age_ms\":-1,"
             "\"lag\":null,\"watermark\":\"2026-11-21T10:05:30.000Z\"}}",
             no_batch);
    expect(&s, "/query/m-both", 200, want);
    expect(&s, "/health", 200,
           "{\"status\":\"degraded\",\"reasons\":[\"no speed layer holds speed.lock\"],"
           "\"batch\":{\"version\":null,\"age_ms\":null,\"last_run\":null,\"pending_cut\":null},"
           "\"speed\":{\"running\":false,\"checkpoint_age_ms\":-1,\"lag\":null,"
           "\"lag_age_ms\":null},"
           "\"shard\":{\"partitions\":\"all\",\"topic_partitions\":null,\"watermark\":\"2026-11-"
           "21T10:05:30.000Z\",\"watermark_ms\":1795255530000,\"key_mismatch\":1,\"key_mismatch_"
           "batch\":0,\"key_mismatch_speed\":1}}");
    srv_fini(&s);
}

Test(serve, only_batch_has_no_checkpoint_age, .timeout = 60)
{
    struct srv s;

    srv_init(&s, true, false, false);
    expect(&s, "/query/m-both", 200,
           "{\"merchant_id\":\"m-both\",\"order_count\":1000,\"revenue_cents\":500000,"
           "\"batch\":{\"order_count\":1000,\"revenue_cents\":500000,\"version\":2,"
           "\"cut_epoch\":200,\"as_of\":\"2026-11-21T10:07:00.000Z\"},"
           "\"speed\":{\"order_count\":0,\"revenue_cents\":0,\"checkpoint_age_ms\":null,\"lag\":"
           "null,\"watermark\":null}}");
    expect(&s, "/health", 200,
           "{\"status\":\"degraded\",\"reasons\":[\"no speed layer holds speed.lock\"],"
           "\"batch\":{\"version\":2,\"age_ms\":-2,\"last_run\":null,"
           "\"pending_cut\":{\"version\":3,\"age_ms\":-2}},"
           "\"speed\":{\"running\":false,\"checkpoint_age_ms\":null,\"lag\":null,"
           "\"lag_age_ms\":null},"
           "\"shard\":{\"partitions\":\"all\",\"topic_partitions\":null,\"watermark\":null,"
           "\"watermark_ms\":null,\"key_mismatch\":0,\"key_mismatch_batch\":0,\"key_mismatch_"
           "speed\":0}}");
    /* No watermark: the window ends at the newest minute with data (10:01). */
    expect(&s, "/top?window=2m", 200,
           "{\"window\":\"2m\",\"by\":\"orders\",\"from\":\"2026-11-21T10:00:00.000Z\","
           "\"to\":\"2026-11-21T10:02:00.000Z\",\"merchants\":["
           "{\"merchant_id\":\"m-both\",\"order_count\":600,\"revenue_cents\":300000},"
           "{\"merchant_id\":\"m-batch\",\"order_count\":10,\"revenue_cents\":1000}]}");
    srv_fini(&s);
}

Test(serve, neither_layer_answers_zeros_and_health_503, .timeout = 60)
{
    struct srv s;
    char want[1024];

    srv_init(&s, false, false, false);
    snprintf(want, sizeof(want),
             "{\"merchant_id\":\"m-1\",\"order_count\":0,\"revenue_cents\":0,%s,"
             "\"speed\":{\"order_count\":0,\"revenue_cents\":0,\"checkpoint_age_ms\":null,\"lag\":"
             "null,\"watermark\":null}}",
             no_batch);
    expect(&s, "/query/m-1", 200, want);
    expect(&s, "/health", 503,
           "{\"status\":\"unavailable\",\"reasons\":[\"nothing to serve: no published batch "
           "version and no speed checkpoint\"],\"batch\":{\"version\":null,\"age_ms\":null,"
           "\"last_run\":null,\"pending_cut\":null},\"speed\":{\"running\":false,"
           "\"checkpoint_age_ms\":null,\"lag\":null,\"lag_age_ms\":null},"
           "\"shard\":{\"partitions\":\"all\",\"topic_partitions\":null,\"watermark\":null,"
           "\"watermark_ms\":null,\"key_mismatch\":0,\"key_mismatch_batch\":0,\"key_mismatch_"
           "speed\":0}}");
    /* The layers' files appear while serving: answers read them within a poll. */
    fixture_batch(s.data);
    fixture_speed(&s);
    merchant_json(want, sizeof(want), "m-both", 1000, 500000, 50, 25000, NULL);
    expect_soon(&s, "/query/m-both", 200, want, 2000);
    srv_fini(&s);
}

/* A bad request: status, JSON {"error": "..."} containing the word that names the fault. */
static void expect_error(const struct srv *s, const char *path, long want_status, const char *names)
{
    json_t *doc;
    long status = get_json(s, path, &doc);
    const char *msg = json_string_value(json_object_get(doc, "error"));

    cr_expect_eq(status, want_status, "GET %.100s: %ld, want %ld", path, status, want_status);
    cr_expect(msg && strstr(msg, names), "GET %.100s: error %s does not name '%s'", path,
              msg ? msg : "(none)", names);
    cr_expect_eq(json_object_size(doc), 1);
    json_decref(doc);
}

Test(serve, bad_requests_get_json_errors, .timeout = 60)
{
    struct srv s;
    struct hdr h;
    char *body, *big, *ids;

    /* Room for ?ids= of 1000 ids of 64 bytes (the default holds 1000 of up to 24). */
    setenv("LAMBDA_CONNECTION_MEMORY", "131072", 1);
    srv_init(&s, true, true, false);
    expect_error(&s, "/nope", 404, "no such route");
    expect_error(&s, "/query/m-1/nope", 404, "no such route");
    expect_error(&s, "/query/bad!id", 400, "merchant_id");
    expect_error(&s, "/query/", 400, "merchant_id");
    expect_error(&s,
                 "/query/m-1234567890123456789012345678901234567890123456789012345678901234567890",
                 400, "merchant_id");
    expect_error(&s, "/query/m%20x", 400, "merchant_id");
    expect_error(&s, "/query/m-1?window=5x", 400, "window");
    expect_error(&s, "/query/m-1?window=0", 400, "window");
    expect_error(&s, "/query/m-1?window=5m&from=1", 400, "window");
    expect_error(&s, "/query/m-1?from=yesterday", 400, "from");
    expect_error(&s, "/query/m-1?from=1&to=2026-13-01T00:00:00Z", 400, "to");
    expect_error(&s, "/query/m-1?from=2000&to=1000", 400, "to");
    expect_error(&s, "/query/m-1?to=1000", 400, "from");
    expect_error(&s, "/query/m-1/series?step=2m", 400, "step");
    expect_error(&s, "/query/m-1/series?step=1m&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
                 400, "step");
    expect_error(&s, "/query/m-1/series?step=1m&window=30d", 400, "window");
    expect_error(&s, "/top?n=0", 400, "n '0'");
    expect_error(&s, "/top?n=1001", 400, "n '1001'");
    expect_error(&s, "/top?n=ten", 400, "n 'ten'");
    expect_error(&s, "/top?by=speed", 400, "by");
    expect_error(&s, "/top?window=-5m", 400, "window");
    expect_error(&s, "/query", 400, "ids");
    expect_error(&s, "/query?ids=m-1,,m-2", 400, "ids");
    expect_error(&s, "/query?ids=m-1,b@d", 400, "ids");
    /* 1001 ids is one too many; 1000 is fine. */
    ids = malloc(20000);
    strcpy(ids, "/query?ids=m0");
    for (int i = 1; i < 1000; i++)
        sprintf(ids + strlen(ids), ",m%d", i);
    json_t *doc;
    cr_expect_eq(get_json(&s, ids, &doc), 200);
    cr_expect_eq(json_array_size(json_object_get(doc, "merchants")), 1000);
    json_decref(doc);
    strcat(ids, ",m1000");
    expect_error(&s, ids, 400, "too many ids: 1001");
    free(ids);
    /* Wrong method: 405 with Allow. */
    cr_expect_eq(request(&s, "POST", "/query/m-1", &body, &h), 405);
    cr_expect_str_eq(h.allow, "GET, HEAD");
    cr_expect(strstr(body, "\"error\""), "%s", body);
    free(body);
    cr_expect_eq(request(&s, "DELETE", "/health", &body, &h), 405);
    free(body);
    /* An over-long target: 414 with JSON up to the connection's memory, 414 past it (then
     * libmicrohttpd answers on its own, before any handler runs). */
    big = malloc(1100000);
    strcpy(big, "/query/m-1?pad=");
    memset(big + 15, 'a', 80000);
    big[15 + 80000] = '\0';
    expect_error(&s, big, 414, "at most 73728");
    int n = snprintf(big, 100, "http://127.0.0.1:%d/query/m-1?pad=", s.port);
    memset(big + n, 'a', 1000000);
    big[n + 1000000] = '\0';
    cr_expect_eq(it_http_get(big, &body), 414);
    free(body);
    free(big);
    /* Still serving after all that. */
    char want[1024];
    merchant_json(want, sizeof(want), "m-both", 1000, 500000, 50, 25000, NULL);
    expect(&s, "/query/m-both", 200, want);
    srv_fini(&s);
}

Test(serve, bad_flags_stop_at_start, .timeout = 30)
{
    char dir[512];
    char *a1[] = {"lambda-serve", "--port", "0", "--threads", "65", NULL};
    char *a2[] = {"lambda-serve", "--port", "0", "--bogus", "1", NULL};
    char *a3[] = {"lambda-serve", "--port", "0", "--bind", "not-an-address", NULL};

    it_tmpdir("serve-flags", dir);
    cr_expect_eq(it_run(dir, "t", a1, NULL, 10000), 2);
    cr_expect_eq(it_run(dir, "b", a2, NULL, 10000), 2);
    cr_expect_eq(it_run(dir, "a", a3, NULL, 10000), 2);
}
