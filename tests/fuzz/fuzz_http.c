/* fuzz_http.c - lambda-serve's request path: routing and every route's answer, over a fixture
 * data directory.
 *
 * Proves, for every input libFuzzer reaches: a request target and method, split and decoded as
 * libmicrohttpd hands them to serve.c (the path before '?' percent-decoded; arguments split at
 * '&' and '=', '+' as a space, percent-decoded, the first of a repeated name wins), go through
 * serve_api_route() and serve_api_handle() (serving/api.h, the entry point serve.c calls) without
 * a crash, a leak or an out-of-bounds access, and the answer is one of 200, 400, 404, 405, 414 or
 * 503 (never 500 over a sound data directory), with a JSON body that parses whenever it says it
 * is JSON, and merged totals that are the sum of their batch and speed parts. It cannot prove
 * that an answer's numbers are right (it_serve checks those against hand-made expectations), nor
 * reach libmicrohttpd's own parsing of the raw request (not our code), nor requests that race
 * with a writer.
 *
 * Input: byte 0 picks the method; the rest is the request target ("/query/m-1?window=5m"). */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <sqlite3.h>

#include "db.h"
#include "fuzz.h"
#include "log.h"
#include "serving/api.h"
#include "serving/metrics.h"
#include "serving/store.h"
#include "tm.h"

#define T10       1795255200000LL /* 2026-11-21T10:00:00Z */
#define MIN(h, m) (T10 + (((h)-10) * 60 + (m)) * TM_MINUTE_MS)
#define NARGS     64

static char dir[64];
static struct serve_store *store;
static struct serve_metrics metrics;
static struct serve_ctx ctx = {.allowed_lateness_ms = 10 * TM_MINUTE_MS, .metrics = &metrics};

static void sql(enum db_file f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sql(enum db_file f, const char *fmt, ...)
{
    struct lerr e = {{0}};
    sqlite3 *db = NULL;
    char *text;
    va_list ap;

    va_start(ap, fmt);
    text = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    FUZZ_CHECK(db_open_rw(dir, f, &db, &e) == 0 && db_exec(db, text, &e) == 0, "fixture: %s",
               e.msg);
    sqlite3_free(text);
    sqlite3_close(db);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    serve_store_free(store);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* The fixture of it_serve: two published versions (the second serving), a pending one, speed
 * deltas on both sides of the cut, offsets, counters and master's rejects. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int64_t now = tm_now_ms();

    (void)argc, (void)argv;
    log_set_level("error");
    snprintf(dir, sizeof(dir), "/tmp/fuzz_http.XXXXXX");
    FUZZ_CHECK(mkdtemp(dir), "mkdtemp");
    sql(DB_BATCH,
        "INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms) VALUES"
        "(1, 'published', 100, %lld, %lld), (2, 'published', 200, %lld, %lld),"
        "(3, 'pending', 300, %lld, NULL);"
        "INSERT INTO merchant_totals(merchant_id, valid_from, valid_to, order_count,"
        " revenue_cents) VALUES ('m-both', 1, 2, 1, 1), ('m-batch', 1, 2, 1, 1);"
        "INSERT INTO merchant_totals(merchant_id, valid_from, order_count, revenue_cents)"
        " VALUES ('m-both', 2, 1000, 500000), ('m-batch', 2, 10, 1000);"
        "INSERT INTO hourly(merchant_id, hour_ms, valid_from, valid_to, order_count,"
        " revenue_cents) VALUES ('m-both', %lld, 1, 2, 1, 1);"
        "INSERT INTO hourly(merchant_id, hour_ms, valid_from, order_count, revenue_cents)"
        " VALUES ('m-both', %lld, 2, 400, 200000), ('m-both', %lld, 2, 600, 300000),"
        " ('m-batch', %lld, 2, 10, 1000);"
        "INSERT INTO minutely(merchant_id, minute_ms, valid_from, valid_to, order_count,"
        " revenue_cents) VALUES ('m-both', %lld, 1, 2, 1, 1);"
        "INSERT INTO minutely(merchant_id, minute_ms, valid_from, order_count, revenue_cents)"
        " VALUES ('m-both', %lld, 2, 100, 50000), ('m-both', %lld, 2, 500, 250000),"
        " ('m-batch', %lld, 2, 10, 1000)",
        MIN(9, 0), MIN(9, 1), MIN(10, 7), MIN(10, 7) + 5000, MIN(10, 30), MIN(10, 0), MIN(9, 0),
        MIN(10, 0), MIN(10, 0), MIN(10, 1), MIN(10, 0), MIN(10, 1), MIN(10, 1));
    sql(DB_SPEED,
        "INSERT INTO meta VALUES ('checkpoint_ms', %lld), ('epoch', 205), ('epoch_ms', 60000),"
        " ('watermark_ms', %lld), ('allowed_lateness_ms', 120000);"
        "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents) VALUES "
        "('m-both', %lld, 200, 30, 15000),"
        " ('m-both', %lld, 199, 7, 700), ('m-both', %lld, 201, 20, 10000),"
        " ('m-speed', %lld, 203, 5, 2500), ('m-a', %lld, 203, 5, 9999);"
        "INSERT INTO offsets VALUES (0, 100, %lld, 110, %lld), (1, 50, %lld, 50, %lld);"
        "INSERT INTO counters VALUES ('consumed', 150), ('applied', 140), ('duplicates', 3),"
        " ('late', 2), ('key_mismatch', 1), ('rejects_bad_json', 4), ('checkpoints', 9)",
        (long long)now, MIN(10, 5) + 30000, MIN(10, 2), MIN(10, 1), MIN(10, 3), MIN(10, 4),
        MIN(10, 4), MIN(10, 5), (long long)now, MIN(10, 5), (long long)now);
    sql(DB_MASTER, "INSERT INTO counters VALUES ('duplicates', 5), ('key_mismatch', 0);"
                   "INSERT INTO rejects(source, partition, offset, reason, payload, at_ms) VALUES"
                   " ('kafka', 0, 1, 'bad_json', 'x', 0)");
    serve_metrics_init(&metrics);
    FUZZ_CHECK((store = serve_store_new(dir, NULL)), "serve_store_new");
    atexit(cleanup);
    return 0;
}

struct args {
    char *name[NARGS], *value[NARGS];
    int n;
};

static const char *get_arg(void *req, const char *name)
{
    struct args *a = req;

    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->name[i], name))
            return a->value[i];
    return NULL;
}

/* As libmicrohttpd's argument parser: '&'-separated, '+' is a space, then percent-decoding; a
 * name without '=' has no value (NULL). */
static void parse_args(char *q, struct args *a)
{
    for (char *s = q, *amp; s && a->n < NARGS; s = amp) {
        char *eq;

        if ((amp = strchr(s, '&')))
            *amp++ = '\0';
        if (!*s)
            continue;
        for (char *p = s; *p; p++)
            if (*p == '+')
                *p = ' ';
        if ((eq = strchr(s, '=')))
            *eq++ = '\0';
        MHD_http_unescape(s);
        if (eq)
            MHD_http_unescape(eq);
        a->name[a->n] = s;
        a->value[a->n++] = eq;
    }
}

static void check_totals(const json_t *doc)
{
    const json_t *b = json_object_get(doc, "batch"), *s = json_object_get(doc, "speed");
    json_int_t sum = 0;

    if (!json_is_integer(json_object_get(doc, "order_count")) || !json_is_object(b) ||
        !json_is_object(s))
        return;
    sum = json_integer_value(json_object_get(b, "order_count")) +
          json_integer_value(json_object_get(s, "order_count"));
    FUZZ_CHECK(json_integer_value(json_object_get(doc, "order_count")) == sum,
               "order_count is not batch + speed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"};
    const char *method;
    struct serve_reply rep = {0};
    struct args a = {{0}, {0}, 0};
    char *target, *q;
    size_t target_len;
    bool is_get;
    enum serve_route r;

    if (size < 1)
        return 0;
    method = methods[data[0] % 6];
    is_get = data[0] % 6 < 2;
    if (!(target = malloc(size)))
        return 0;
    memcpy(target, data + 1, size - 1);
    target[size - 1] = '\0';
    target_len = strlen(target); /* what on_uri() measures */
    if ((q = strchr(target, '?')))
        *q++ = '\0';
    MHD_http_unescape(target);
    parse_args(q, &a);
    /* serve.c's on_request(), in order. */
    r = serve_api_route(target);
    if (target_len > SERVE_URL_MAX) {
        serve_api_error(&rep, 414, "request target of %zu bytes: at most %d", target_len,
                        SERVE_URL_MAX);
    } else if (r == SERVE_R_OTHER) {
        serve_api_handle(&ctx, NULL, r, target, get_arg, &a, &rep);
    } else if (!is_get) {
        serve_api_error(&rep, 405, "method %.20s not allowed on '%.200s': use GET", method, target);
    } else {
        serve_api_handle(&ctx, store, r, target, get_arg, &a, &rep);
    }
    serve_metrics_observe(&metrics, r, rep.status, 1);
    FUZZ_CHECK(rep.status == 200 || rep.status == 400 || rep.status == 404 || rep.status == 405 ||
                   rep.status == 414 || rep.status == 503,
               "status %u for '%s': %.300s", rep.status, target, rep.body ? rep.body : "");
    FUZZ_CHECK(rep.body && rep.content_type, "no body");
    if (!strcmp(rep.content_type, "application/json")) {
        json_error_t je;
        json_t *doc = json_loadb(rep.body, rep.len, 0, &je);

        FUZZ_CHECK(doc, "not JSON (%s): %.300s", je.text, rep.body);
        FUZZ_CHECK(rep.status == 200 || json_is_string(json_object_get(doc, "error")),
                   "an error answer without \"error\": %.300s", rep.body);
        check_totals(doc);
        if (json_is_array(json_object_get(doc, "merchants")))
            for (size_t i = 0; i < json_array_size(json_object_get(doc, "merchants")); i++)
                check_totals(json_array_get(json_object_get(doc, "merchants"), i));
        json_decref(doc);
    }
    free(rep.owned);
    free(target);
    return 0;
}
