/* it_shards.c - shards behind one router (DESIGN.md section 7), real processes: lambda-devkafka
 * with 4 partitions, two shards (0-1 and 2-3, each its own lambda-speed, lambda-batch runs and
 * lambda-serve), a router in front, and one unsharded stack over the same topic. Every routed
 * answer equals the truth and the unsharded answer; a shard that is down makes unrouted answers
 * 503 naming it while the other shard's merchants stay exact; pins and overlaps are refused. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "itlib.h"
#include "shard.h"

#define NSTACK 3 /* shard 0-1, shard 2-3, the unsharded stack */

static const char *const sets[NSTACK] = {"0-1", "2-3", "all"};

struct stack {
    char data[600], url[128], port[16];
    struct it_proc speed, serve;
    int speed_starts, serve_starts;
};

struct world {
    char dir[512], bs[256], router_url[128];
    struct it_proc kafka, router;
    struct stack st[NSTACK];
    struct it_truth truth;
    int seed;
};

static struct world w;

static const char *merchant_of(const char *set_text);

static void init(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
}

static void start_speed(struct stack *s, int i)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "speed%d_%d", i, ++s->speed_starts);
    char *argv[] = {"lambda-speed",  "--brokers",         w.bs,   "--data-dir",
                    s->data,         "--epoch-ms",        "1000", "--checkpoint-ms",
                    "100",           "--kafka-timeout",   "5s",   "--shard-partitions",
                    (char *)sets[i], "--watermark-delay", "0",    NULL};
    it_spawn(&s->speed, w.dir, tag, argv, NULL);
}

/* Starts a lambda-serve (on port, "0" for any) and waits for its port; url gets its address. */
static void start_serve(struct it_proc *p, const char *tag, char *const extra[], const char *port,
                        char url[128], char port_out[16])
{
    char *argv[24] = {"lambda-serve", "--port", (char *)port, "--threads", "2"};
    int n = 5;
    int64_t got;

    for (int i = 0; extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    it_spawn(p, w.dir, tag, argv, NULL);
    cr_assert(it_wait_log(p, "listening", 15000), "%s did not start", tag);
    got = it_log_int(p, "listening", "port");
    cr_assert(got > 0);
    snprintf(port_out, 16, "%" PRId64, got);
    snprintf(url, 128, "http://127.0.0.1:%" PRId64, got);
}

static void start_shard_serve(struct stack *s, int i, const char *port)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "serve%d_%d", i, ++s->serve_starts);
    char dim[600];
    snprintf(dim, sizeof(dim), "%s/merchants.csv", w.dir);
    char *extra[] = {"--data-dir",       s->data,      "--shard-partitions",
                     (char *)sets[i],    "--epoch-ms", "1000",
                     "--dimension-file", dim,          NULL};
    start_serve(&s->serve, tag, extra, port, s->url, s->port);
}

static void start_router(void)
{
    char shards[300], port[16], nodir[600];

    snprintf(shards, sizeof(shards), "%s,%s", w.st[0].url, w.st[1].url);
    snprintf(nodir, sizeof(nodir), "%s/router-has-no-data", w.dir);
    char *extra[] = {"--shards", shards, "--partitioner", "murmur2_random", "--data-dir",
                     nodir,      NULL};
    start_serve(&w.router, "router", extra, "0", w.router_url, port);
}

/* The merchant dimension every serve loads: a category for two in three merchants. */
static void write_dimension(void)
{
    char path[600];
    FILE *f;

    snprintf(path, sizeof(path), "%s/merchants.csv", w.dir);
    cr_assert((f = fopen(path, "w")));
    fprintf(f, "merchant_id,category\n");
    for (int i = 0; i < 60; i++)
        fprintf(f, "m-%d,%s\n", i, i % 3 == 0 ? "" : i % 3 == 1 ? "books" : "games");
    cr_assert_eq(fclose(f), 0);
}

static void start_world(void)
{
    memset(&w, 0, sizeof(w));
    it_tmpdir("shards", w.dir);
    write_dimension();
    it_devkafka(&w.kafka, w.dir, 4, w.bs);
    for (int i = 0; i < NSTACK; i++) {
        char data[600];
        snprintf(data, sizeof(data), "%s/data%d", w.dir, i);
        memcpy(w.st[i].data, data, sizeof(data));
        start_speed(&w.st[i], i);
        start_shard_serve(&w.st[i], i, "0");
    }
    start_router();
}

static void stop_world(void)
{
    it_stop(&w.router);
    for (int i = 0; i < NSTACK; i++) {
        it_stop(&w.st[i].serve);
        it_stop(&w.st[i].speed);
    }
    it_stop(&w.kafka);
    it_truth_free(&w.truth);
}

/* Produces count events with a new seed (the virtual clock going on) into w.truth. */
static void gen(int count)
{
    char seed[16], cnt[16], truth[600], tag[32], start[32];
    struct it_truth t;

    w.seed++;
    snprintf(seed, sizeof(seed), "%d", w.seed);
    snprintf(cnt, sizeof(cnt), "%d", count);
    snprintf(truth, sizeof(truth), "%s/truth%d", w.dir, w.seed);
    snprintf(tag, sizeof(tag), "gen%d", w.seed);
    snprintf(start, sizeof(start), "%" PRId64, (int64_t)1795255200000 + (int64_t)w.seed * 600000);
    char *argv[] = {"lambda-gen", "--brokers",   w.bs,    "--count",
                    cnt,          "--merchants", "60",    "--late-pct",
                    "2",          "--dup-pct",   "4",     "--invalid-pct",
                    "2",          "--seed",      seed,    "--start-time",
                    start,        "--time-step", "100ms", "--truth",
                    truth,        NULL};
    cr_assert_eq(it_run(w.dir, tag, argv, NULL, 60000), 0, "lambda-gen failed");
    it_truth_load(&t, truth);
    it_truth_add(&w.truth, &t);
    it_truth_free(&t);
}

static json_t *get_json(const char *base, const char *target, long *status)
{
    char url[8192];
    char *body = NULL;
    json_t *doc;

    snprintf(url, sizeof(url), "%s%s", base, target);
    *status = it_http_get(url, &body);
    doc = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return doc;
}

/* The ?ids= target for every merchant of the truth. */
static char *all_ids(void)
{
    size_t cap = 64 + w.truth.nmerchants * 70, n;
    char *t = malloc(cap);

    n = (size_t)snprintf(t, cap, "/query?ids=");
    for (size_t i = 0; i < w.truth.nmerchants; i++)
        n += (size_t)snprintf(t + n, cap - n, "%s%s", i ? "," : "",
                              w.truth.merchants[i].merchant_id);
    return t;
}

/* How many merchants' answers from base differ from the truth; the first named in first. */
static size_t mismatches(const char *base, char *first, size_t len)
{
    char *target = all_ids();
    long status;
    json_t *doc = get_json(base, target, &status), *arr = json_object_get(doc, "merchants");
    size_t bad = 0;

    free(target);
    if (status != 200 || json_array_size(arr) != w.truth.nmerchants) {
        snprintf(first, len, "status %ld", status);
        json_decref(doc);
        return w.truth.nmerchants ? w.truth.nmerchants : 1;
    }
    for (size_t i = 0; i < w.truth.nmerchants; i++) {
        const struct it_truth_merchant *m = &w.truth.merchants[i];
        json_t *a = json_array_get(arr, i);
        int64_t c = json_integer_value(json_object_get(a, "order_count"));
        int64_t r = json_integer_value(json_object_get(a, "revenue_cents"));
        if (c != m->order_count || r != m->revenue_cents ||
            strcmp(json_string_value(json_object_get(a, "merchant_id")), m->merchant_id) != 0) {
            if (!bad)
                snprintf(first, len, "%s: got %" PRId64 "/%" PRId64 " want %" PRId64 "/%" PRId64,
                         m->merchant_id, c, r, m->order_count, m->revenue_cents);
            bad++;
        }
    }
    json_decref(doc);
    return bad;
}

static bool exact_at(void *base)
{
    char first[300];

    return mismatches(base, first, sizeof(first)) == 0;
}

static void assert_exact(const char *base, const char *step)
{
    char first[300] = "";

    if (it_wait_until(exact_at, (void *)base, 60000))
        return;
    size_t bad = mismatches(base, first, sizeof(first));
    cr_assert_fail("after %s (%s): %zu of %zu merchants differ from the truth; first: %s", step,
                   base, bad, w.truth.nmerchants, first);
}

/* Every merchant's /query/<id> through the router equals the truth. */
static void assert_each_query(const char *step)
{
    for (size_t i = 0; i < w.truth.nmerchants; i++) {
        const struct it_truth_merchant *m = &w.truth.merchants[i];
        char target[128];
        long status;
        snprintf(target, sizeof(target), "/query/%s", m->merchant_id);
        json_t *doc = get_json(w.router_url, target, &status);
        cr_assert_eq(status, 200, "%s: %s", step, target);
        cr_expect_eq(json_integer_value(json_object_get(doc, "order_count")), m->order_count,
                     "%s: %s", step, m->merchant_id);
        cr_expect_eq(json_integer_value(json_object_get(doc, "revenue_cents")), m->revenue_cents,
                     "%s: %s", step, m->merchant_id);
        cr_expect(json_is_array(json_object_get(doc, "shards")), "%s: provenance", step);
        json_decref(doc);
    }
}

/* The routed answer to target equals the unsharded stack's in the fields named. */
static void assert_same_series(const char *target)
{
    long s1, s2;
    json_t *a = get_json(w.router_url, target, &s1), *b = get_json(w.st[2].url, target, &s2);
    json_t *pa = json_object_get(a, "points"), *pb = json_object_get(b, "points");
    int64_t total = 0;

    cr_assert_eq(s1, 200, "%s via the router", target);
    cr_assert_eq(s2, 200, "%s unsharded", target);
    cr_assert_eq(json_array_size(pa), json_array_size(pb), "%s: points", target);
    for (size_t i = 0; i < json_array_size(pa); i++) {
        json_t *x = json_array_get(pa, i), *y = json_array_get(pb, i);
        cr_expect(json_equal(json_object_get(x, "t"), json_object_get(y, "t")));
        cr_expect_eq(json_integer_value(json_object_get(x, "order_count")),
                     json_integer_value(json_object_get(y, "order_count")), "%s point %zu", target,
                     i);
        cr_expect_eq(json_integer_value(json_object_get(x, "revenue_cents")),
                     json_integer_value(json_object_get(y, "revenue_cents")), "%s point %zu",
                     target, i);
        total += json_integer_value(json_object_get(x, "order_count"));
    }
    cr_expect(total > 0, "%s: a series with orders", target);
    json_decref(a);
    json_decref(b);
}

static void assert_same_top(const char *target)
{
    long s1, s2;
    json_t *a = get_json(w.router_url, target, &s1), *b = get_json(w.st[2].url, target, &s2);
    json_t *ma = json_object_get(a, "merchants"), *mb = json_object_get(b, "merchants");

    cr_assert_eq(s1, 200, "%s via the router", target);
    cr_assert_eq(s2, 200, "%s unsharded", target);
    cr_assert_eq(json_array_size(ma), json_array_size(mb), "%s: length", target);
    cr_assert(json_array_size(ma) > 0, "%s: not empty", target);
    for (size_t i = 0; i < json_array_size(ma); i++) {
        json_t *x = json_array_get(ma, i), *y = json_array_get(mb, i);
        cr_expect_str_eq(json_string_value(json_object_get(x, "merchant_id")),
                         json_string_value(json_object_get(y, "merchant_id")), "%s rank %zu",
                         target, i);
        cr_expect(json_equal(json_object_get(x, "order_count"), json_object_get(y, "order_count")));
        cr_expect(
            json_equal(json_object_get(x, "revenue_cents"), json_object_get(y, "revenue_cents")));
    }
    json_decref(a);
    json_decref(b);
}

/* Routed /groups equals the unsharded stack's. */
static void assert_same_groups(const char *target)
{
    long s1, s2;
    json_t *a = get_json(w.router_url, target, &s1), *b = get_json(w.st[2].url, target, &s2);
    char *ta = json_dumps(json_object_get(a, "groups"), JSON_COMPACT),
         *tb = json_dumps(json_object_get(b, "groups"), JSON_COMPACT);

    cr_assert_eq(s1, 200, "%s via the router", target);
    cr_assert_eq(s2, 200, "%s unsharded", target);
    cr_expect_eq(json_array_size(json_object_get(b, "groups")), 3, "%s: three groups", target);
    cr_expect_str_eq(ta, tb, "%s", target);
    free(ta);
    free(tb);
    json_decref(a);
    json_decref(b);
}

/* target asked of the router and of base directly: the same minutes and the same key. */
struct same_args {
    const char *target, *base, *key;
};

/* The merchants of a /top answer as id:orders:revenue, so that a shard's own fields
 * (provenance) do not count. */
static char *ranks_text(const json_t *list)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    json_t *m;
    size_t i;

    json_array_foreach(list, i, m)
        fprintf(f, "%s:%lld:%lld,", json_string_value(json_object_get(m, "merchant_id")),
                (long long)json_integer_value(json_object_get(m, "order_count")),
                (long long)json_integer_value(json_object_get(m, "revenue_cents")));
    fclose(f);
    return buf;
}

static bool health_ok(void *arg);

static bool same_answer(void *arg)
{
    const struct same_args *a = arg;
    long s1, s2;
    json_t *x = get_json(w.router_url, a->target, &s1), *y = get_json(a->base, a->target, &s2);
    json_t *vx = json_object_get(x, a->key), *vy = json_object_get(y, a->key);
    bool same = s1 == 200 && s2 == 200 && vx && vy &&
                json_equal(json_object_get(x, "from"), json_object_get(y, "from")) &&
                json_equal(json_object_get(x, "to"), json_object_get(y, "to"));

    if (same && !strcmp(a->key, "merchants")) {
        char *tx = ranks_text(vx), *ty = ranks_text(vy);
        same = !strcmp(tx, ty) && strlen(tx) > 0;
        free(tx);
        free(ty);
    } else if (same) {
        same = json_equal(vx, vy);
    }
    json_decref(x);
    json_decref(y);
    return same;
}

static void batch_run(int i, const char *tag)
{
    char t[64];

    snprintf(t, sizeof(t), "%s_%d", tag, i);
    char *argv[] = {"lambda-batch",
                    "run",
                    "--brokers",
                    w.bs,
                    "--data-dir",
                    w.st[i].data,
                    "--epoch-ms",
                    "1000",
                    "--kafka-timeout",
                    "5s",
                    "--shard-partitions",
                    (char *)sets[i],
                    NULL};
    cr_assert_eq(it_run(w.dir, t, argv, NULL, 120000), 0, "lambda-batch %s failed", t);
}

/* The truth's time range: [the first seed's start, the last one's end), whole hours. */
static void range_target(char *buf, size_t len, const char *path, const char *extra)
{
    int64_t from = (int64_t)1795255200000 + 600000 - 3600000,
            to = (int64_t)1795255200000 + (int64_t)(w.seed + 1) * 600000 + 3600000;

    snprintf(buf, len, "%s?from=%" PRId64 "&to=%" PRId64 "%s", path, from, to, extra);
}

/* The same merchants in the same order with the same sums (the router's entries carry its
 * own provenance, so they are not equal as JSON). */
static bool same_ranks(const json_t *a, const json_t *b)
{
    if (json_array_size(a) != json_array_size(b) || json_array_size(a) == 0)
        return false;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
        if (!json_equal(json_object_get(x, "merchant_id"), json_object_get(y, "merchant_id")) ||
            !json_equal(json_object_get(x, "order_count"), json_object_get(y, "order_count")) ||
            !json_equal(json_object_get(x, "revenue_cents"), json_object_get(y, "revenue_cents")))
            return false;
    }
    return true;
}

/* One transfer of the flood: its target, what it got. */
struct flood_req {
    char target[256];
    char *body;
    size_t len;
    long status;
};

static size_t flood_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct flood_req *q = arg;
    char *b = realloc(q->body, q->len + size * nmemb + 1);

    cr_assert(b);
    memcpy(b + q->len, data, size * nmemb);
    q->len += size * nmemb;
    b[q->len] = '\0';
    q->body = b;
    return size * nmemb;
}

/* The answer's order_count and revenue_cents equal merchant m's in the truth. */
static bool flood_merchant_exact(const json_t *a, const char *id)
{
    const struct it_truth_merchant *m = it_truth_find(&w.truth, id);

    return m && json_integer_value(json_object_get(a, "order_count")) == m->order_count &&
           json_integer_value(json_object_get(a, "revenue_cents")) == m->revenue_cents;
}

#define FLOOD_N 60 /* under max_connections_per_ip (64): each is its own connection */

/* FLOOD_N requests at once, each on its own connection, against a router of two threads: a
 * merchant's /query (one fan-out), ?ids= of every merchant (both shards) and /top over a span
 * (the route, then every /health for key_mismatch: two fan-outs in a row). A router whose
 * threads each held one request until its shards answered would serve two at a time; every
 * answer here must be exact. */
static void assert_flood(void)
{
    static struct flood_req q[FLOOD_N];
    char top[256], *ids = all_ids();
    long status;
    json_t *want_top;
    CURLM *multi = curl_multi_init();
    CURL *h[FLOOD_N];
    CURLMsg *m;
    int running = 1, left, done = 0;
    int64_t t0 = it_now_ms();

    range_target(top, sizeof(top), "/top", "&n=7");
    want_top = get_json(w.st[2].url, top, &status);
    cr_assert_eq(status, 200, "%s unsharded", top);
    for (int k = 0; k < FLOOD_N; k++) {
        char *url = NULL;
        memset(&q[k], 0, sizeof(q[k]));
        if (k % 3 == 0)
            snprintf(q[k].target, sizeof(q[k].target), "/query/%s",
                     w.truth.merchants[(size_t)k % w.truth.nmerchants].merchant_id);
        else if (k % 3 == 2)
            snprintf(q[k].target, sizeof(q[k].target), "%s", top);
        cr_assert(asprintf(&url, "%s%s", w.router_url, k % 3 == 1 ? ids : q[k].target) > 0);
        cr_assert((h[k] = curl_easy_init()));
        curl_easy_setopt(h[k], CURLOPT_URL, url); /* libcurl keeps a copy */
        free(url);
        curl_easy_setopt(h[k], CURLOPT_WRITEFUNCTION, flood_body);
        curl_easy_setopt(h[k], CURLOPT_WRITEDATA, &q[k]);
        curl_easy_setopt(h[k], CURLOPT_PRIVATE, &q[k]);
        curl_easy_setopt(h[k], CURLOPT_TIMEOUT_MS, 20000L);
        curl_easy_setopt(h[k], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h[k], CURLOPT_FRESH_CONNECT, 1L);
        curl_multi_add_handle(multi, h[k]);
    }
    while (running) {
        cr_assert_eq(curl_multi_perform(multi, &running), CURLM_OK);
        while ((m = curl_multi_info_read(multi, &left))) {
            struct flood_req *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            cr_assert_eq(m->data.result, CURLE_OK, "%s: %s", r->target,
                         curl_easy_strerror(m->data.result));
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &r->status);
            done++;
        }
        if (running)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    cr_assert_eq(done, FLOOD_N);
    for (int k = 0; k < FLOOD_N; k++) {
        json_t *doc = q[k].body ? json_loads(q[k].body, 0, NULL) : NULL;
        cr_assert_eq(q[k].status, 200, "flood %d %s: %s", k, q[k].target, q[k].body);
        if (k % 3 == 0) {
            cr_expect(
                flood_merchant_exact(doc, json_string_value(json_object_get(doc, "merchant_id"))),
                "flood %d %s: %s", k, q[k].target, q[k].body);
            cr_expect(strstr(q[k].target, json_string_value(json_object_get(doc, "merchant_id"))));
        } else if (k % 3 == 1) {
            json_t *arr = json_object_get(doc, "merchants");
            cr_assert_eq(json_array_size(arr), w.truth.nmerchants, "flood %d ?ids=", k);
            for (size_t i = 0; i < w.truth.nmerchants; i++)
                cr_expect(
                    flood_merchant_exact(json_array_get(arr, i), w.truth.merchants[i].merchant_id),
                    "flood %d ?ids=: %s", k, w.truth.merchants[i].merchant_id);
        } else {
            cr_expect(same_ranks(json_object_get(doc, "merchants"),
                                 json_object_get(want_top, "merchants")),
                      "flood %d %s: %s", k, top, q[k].body);
        }
        json_decref(doc);
        curl_multi_remove_handle(multi, h[k]);
        curl_easy_cleanup(h[k]);
        free(q[k].body);
    }
    cr_log_info("%d requests at once answered in %lld ms", FLOOD_N, (long long)(it_now_ms() - t0));
    curl_multi_cleanup(multi);
    json_decref(want_top);
    free(ids);
}

TestSuite(shards, .init = init, .fini = stop_world);

Test(shards, routed_answers_equal_the_truth_and_an_unsharded_stack, .timeout = 600)
{
    char target[256];

    start_world();
    gen(3000);
    assert_exact(w.router_url, "the first stream");
    assert_exact(w.st[2].url, "the first stream, unsharded");
    for (int i = 0; i < NSTACK; i++)
        batch_run(i, "batch1");
    assert_exact(w.router_url, "a batch run on each shard");

    cr_assert_eq(it_signal(&w.st[0].speed, SIGKILL, 5000), 128 + SIGKILL);
    gen(2000);
    start_speed(&w.st[0], 0);
    assert_exact(w.router_url, "a SIGKILL of shard 0-1's speed layer and more stream");
    assert_exact(w.st[2].url, "more stream, unsharded");
    assert_each_query("after the kill");
    assert_flood();

    const char *busiest = w.truth.merchants[0].merchant_id;
    for (size_t i = 1; i < w.truth.nmerchants; i++)
        if (w.truth.merchants[i].order_count > it_truth_find(&w.truth, busiest)->order_count)
            busiest = w.truth.merchants[i].merchant_id;
    char path[128];
    snprintf(path, sizeof(path), "/query/%s/series", busiest);
    range_target(target, sizeof(target), path, "&step=1h");
    assert_same_series(target);
    range_target(target, sizeof(target), path, "&step=1d");
    assert_same_series(target);
    range_target(target, sizeof(target), "/top", "&n=7");
    assert_same_top(target);
    range_target(target, sizeof(target), "/top", "&n=5&by=revenue");
    assert_same_top(target);
    range_target(target, sizeof(target), "/top", "&n=4&filter=category:games");
    assert_same_top(target);
    range_target(target, sizeof(target), "/groups", "&group=category");
    assert_same_groups(target);
    range_target(target, sizeof(target), "/groups", "&group=category&by=revenue");
    assert_same_groups(target);

    /* A window resolves to absolute minutes at the router, which every shard sums: the
     * unsharded stack over the same minutes gives the same sums. */
    long status, s2;
    snprintf(target, sizeof(target), "/query/%s?window=30m", busiest);
    json_t *doc = get_json(w.router_url, target, &status);
    cr_assert_eq(status, 200);
    const char *from = json_string_value(json_object_get(doc, "from")),
               *to = json_string_value(json_object_get(doc, "to"));
    cr_assert(from && to, "a window answer says its minutes");
    snprintf(target, sizeof(target), "/query/%s?from=%s&to=%s", busiest, from, to);
    json_t *single = get_json(w.st[2].url, target, &s2);
    cr_assert_eq(s2, 200);
    cr_expect(json_integer_value(json_object_get(doc, "order_count")) > 0);
    cr_expect(
        json_equal(json_object_get(doc, "order_count"), json_object_get(single, "order_count")));
    cr_expect(json_equal(json_object_get(doc, "revenue_cents"),
                         json_object_get(single, "revenue_cents")));
    json_decref(single);
    json_decref(doc);

    /* A window asked through the router is the window asked directly: of the merchant's own
     * shard for its routes (it ends the window itself, as a single lambda-serve does), of the
     * unsharded stack for what every shard answers (both end at the lowest watermark). */
    const char *mine = merchant_of("0-1");
    snprintf(target, sizeof(target), "/query/%s?window=30m", mine);
    struct same_args direct = {target, w.st[0].url, "order_count"};
    cr_expect(it_wait_until(same_answer, &direct, 10000), "%s: routed and direct differ", target);
    char series[128];
    snprintf(series, sizeof(series), "/query/%s/series?step=1m&window=30m", mine);
    struct same_args direct_series = {series, w.st[0].url, "points"};
    cr_expect(it_wait_until(same_answer, &direct_series, 10000), "%s: routed and direct differ",
              series);
    struct same_args top = {"/top?window=30m&n=5", w.st[2].url, "merchants"};
    cr_expect(it_wait_until(same_answer, &top, 10000), "%s: routed and unsharded differ",
              top.target);
    struct same_args groups = {"/groups?group=category&window=30m", w.st[2].url, "groups"};
    cr_expect(it_wait_until(same_answer, &groups, 10000), "%s: routed and unsharded differ",
              groups.target);

    /* A bad request is refused as a single lambda-serve refuses it. */
    static const char *const bad[] = {
        "/query/m-1?window=soon", "/top?n=0", "/query/m-1/series?step=2m", "/query?ids=a,,b",
        "/query/m-1?from=2026-11-21T10:00:00Z&to=2026-11-21T09:00:00Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *x = get_json(w.router_url, bad[i], &status),
               *y = get_json(w.st[2].url, bad[i], &s2);
        cr_expect_eq(status, 400, "%s via the router", bad[i]);
        cr_expect_eq(s2, 400, "%s unsharded", bad[i]);
        cr_expect(json_equal(x, y), "%s: the same error", bad[i]);
        json_decref(x);
        json_decref(y);
    }

    /* ok once every shard serves and the router's event stream to each is open: under load
     * the router can still be opening one, and says degraded naming it meanwhile. */
    bool ok = it_wait_until(health_ok, NULL, 10000);
    doc = get_json(w.router_url, "/health", &status);
    char *text = json_dumps(doc, JSON_COMPACT);
    cr_expect(ok, "the router's /health is ok: %ld %s", status, text);
    free(text);
    json_decref(doc);
    doc = get_json(w.st[0].url, "/health", &status);
    json_t *sh = json_object_get(doc, "shard");
    cr_expect_str_eq(json_string_value(json_object_get(sh, "partitions")), "0-1");
    cr_expect_eq(json_integer_value(json_object_get(sh, "topic_partitions")), 4);
    cr_expect_eq(json_integer_value(json_object_get(sh, "key_mismatch")), 0);
    json_decref(doc);
}

/* A merchant of the truth that partition set `set` owns (murmur2, 4 partitions). */
static const char *merchant_of(const char *set_text)
{
    struct shard_set set;

    cr_assert_eq(shard_set_parse(&set, set_text, NULL), 0);
    for (size_t i = 0; i < w.truth.nmerchants; i++) {
        const char *id = w.truth.merchants[i].merchant_id;
        if (shard_set_has(&set,
                          shard_partition_of(SHARD_PARTITIONER_MURMUR2_RANDOM, id, strlen(id), 4)))
            return id;
    }
    cr_assert_fail("no merchant in %s", set_text);
    return NULL;
}

/* The router's routing is arg: "by_key" once it has learned every set and the partition
 * count (it asks a merchant's shard), "every_shard" once it has seen a key_mismatch. */
static bool routing_is(void *arg)
{
    long status;
    json_t *doc = get_json(w.router_url, "/health", &status);
    const char *r = json_string_value(json_object_get(doc, "routing"));
    bool yes = r && !strcmp(r, arg);

    json_decref(doc);
    return yes;
}

static bool health_ok(void *arg)
{
    long status;
    json_t *doc = get_json(w.router_url, "/health", &status);
    const char *st = json_string_value(json_object_get(doc, "status"));
    bool yes = status == 200 && st && !strcmp(st, "ok");

    (void)arg;
    json_decref(doc);
    return yes;
}

Test(shards, a_shard_down_is_named_and_the_other_shards_merchants_stay_exact, .timeout = 300)
{
    char target[256], port[16];
    long status;
    json_t *doc;

    start_world();
    gen(2000);
    assert_exact(w.router_url, "the stream");
    cr_assert(it_wait_until(routing_is, "by_key", 30000), "the router learned the sets");
    snprintf(port, sizeof(port), "%s", w.st[1].port);
    it_stop(&w.st[1].serve);

    doc = get_json(w.router_url, "/top?n=3", &status);
    cr_expect_eq(status, 503);
    char want[256];
    snprintf(want, sizeof(want), "shard %s did not answer: ", w.st[1].url);
    cr_expect(strncmp(json_string_value(json_object_get(doc, "error")), want, strlen(want)) == 0,
              "%s", json_string_value(json_object_get(doc, "error")));
    json_decref(doc);

    const char *mine = merchant_of("0-1"), *theirs = merchant_of("2-3");
    snprintf(target, sizeof(target), "/query/%s", mine);
    doc = get_json(w.router_url, target, &status);
    cr_expect_eq(status, 200, "a merchant of the healthy shard");
    cr_expect_eq(json_integer_value(json_object_get(doc, "order_count")),
                 it_truth_find(&w.truth, mine)->order_count);
    cr_expect_eq(json_array_size(json_object_get(doc, "shards")), 1, "asked only its shard");
    json_decref(doc);
    /* A series with no from/to ends at the watermark of the merchant's own shard. */
    snprintf(target, sizeof(target), "/query/%s/series?step=1h", mine);
    doc = get_json(w.router_url, target, &status);
    cr_expect_eq(status, 200, "a series of a merchant of the healthy shard");
    int64_t total = 0;
    json_t *pt;
    size_t k;
    json_array_foreach(json_object_get(doc, "points"), k, pt) total +=
        json_integer_value(json_object_get(pt, "order_count"));
    cr_expect_eq(total, it_truth_find(&w.truth, mine)->order_count, "its series sums to the truth");
    json_decref(doc);
    snprintf(target, sizeof(target), "/query/%s?window=30d", mine);
    doc = get_json(w.router_url, target, &status);
    cr_expect_eq(status, 200, "a window of a merchant of the healthy shard");
    json_decref(doc);
    snprintf(target, sizeof(target), "/top?window=30d");
    doc = get_json(w.router_url, target, &status);
    cr_expect_eq(status, 503, "a window over every merchant needs every shard");
    json_decref(doc);
    snprintf(target, sizeof(target), "/query/%s", theirs);
    doc = get_json(w.router_url, target, &status);
    cr_expect_eq(status, 503, "a merchant of the shard that is down");
    json_decref(doc);

    doc = get_json(w.router_url, "/health", &status);
    cr_expect_eq(status, 200, "degraded: one of two shards answers");
    cr_expect_str_eq(json_string_value(json_object_get(doc, "status")), "degraded");
    char *text = json_dumps(doc, JSON_COMPACT);
    cr_expect(strstr(text, w.st[1].url) != NULL, "names the shard: %s", text);
    free(text);
    json_decref(doc);
    char url[256], *metrics = NULL, line[300];
    snprintf(url, sizeof(url), "%s/metrics", w.router_url);
    cr_expect_eq(it_http_get(url, &metrics), 200);
    snprintf(line, sizeof(line), "lambda_shard_up{shard=\"%s\"} 0\n", w.st[1].url);
    cr_expect(metrics && strstr(metrics, line), "%s in /metrics", line);
    snprintf(line, sizeof(line), "lambda_shard_up{shard=\"%s\"} 1\n", w.st[0].url);
    cr_expect(metrics && strstr(metrics, line), "%s in /metrics", line);
    snprintf(line, sizeof(line), "lambda_shard_errors_total{shard=\"%s\"} ", w.st[1].url);
    cr_expect(metrics && strstr(metrics, line) && strstr(metrics, line)[strlen(line)] != '0',
              "errors counted for the shard that is down");
    free(metrics);

    start_shard_serve(&w.st[1], 1, port);
    assert_exact(w.router_url, "the shard back");
    /* ok once its event stream is open again too (retried within 2 s) */
    cr_expect(it_wait_until(health_ok, NULL, 10000), "the router's /health is ok again");
}

/* A GET /events read as it comes, with the time each part arrived. */
struct sse {
    int fd;
    char buf[65536];
    size_t len;
};

static void sse_open(struct sse *s, const char *base_url)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    const char req[] = "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    const char *port = strrchr(base_url, ':') + 1;

    s->len = 0;
    s->buf[0] = '\0';
    sa.sin_port = htons((uint16_t)atoi(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert((s->fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
    cr_assert_eq(connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(write(s->fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
}

/* Reads every stream of ss as its bytes come, until each holds its needle past its from[]:
 * at_ms[k] is when stream k's came. False when one did not within timeout_ms. */
static bool sse_wait(struct sse *ss, int n, const size_t *from, const char *const *needle,
                     int64_t *at_ms, int64_t timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;
    int left = n;

    for (int k = 0; k < n; k++)
        at_ms[k] = strstr(ss[k].buf + from[k], needle[k]) ? it_now_ms() : 0;
    for (int k = 0; k < n; k++)
        left -= at_ms[k] != 0;
    while (left > 0) {
        struct pollfd p[4];
        int64_t wait_ms = end - it_now_ms();
        for (int k = 0; k < n; k++)
            p[k] = (struct pollfd){.fd = ss[k].fd, .events = POLLIN};
        if (wait_ms <= 0 || poll(p, (nfds_t)n, (int)wait_ms) <= 0)
            return false;
        for (int k = 0; k < n; k++) {
            struct sse *s = &ss[k];
            if (!(p[k].revents & (POLLIN | POLLHUP)))
                continue;
            ssize_t got = read(s->fd, s->buf + s->len, sizeof(s->buf) - 1 - s->len);
            if (got <= 0)
                return false;
            s->len += (size_t)got;
            s->buf[s->len] = '\0';
            if (!at_ms[k] && strstr(s->buf + from[k], needle[k])) {
                at_ms[k] = it_now_ms();
                left--;
            }
        }
    }
    return true;
}

/* One order of merchant_id produced with key (its partition: murmur2 of 4), as a producer
 * would; a key other than the merchant is a key_mismatch. */
static void produce_order(const char *key, const char *merchant_id, const char *order_id)
{
    char err[512], value[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    int part = shard_partition_of(SHARD_PARTITIONER_MURMUR2_RANDOM, key, strlen(key), 4);
    int n = snprintf(value, sizeof(value),
                     "{\"order_id\":\"%s\",\"merchant_id\":\"%s\",\"amount_cents\":777,"
                     "\"event_time\":%" PRId64 "}",
                     order_id, merchant_id, it_now_ms() - 1000);

    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", w.bs, err, sizeof(err)), 0);
    cr_assert((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))), "%s", err);
    cr_assert_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("orders"), RD_KAFKA_V_PARTITION(part),
                                   RD_KAFKA_V_KEY(key, strlen(key)),
                                   RD_KAFKA_V_VALUE(value, (size_t)n), RD_KAFKA_V_END),
                 0);
    cr_assert_eq(rd_kafka_flush(rk, 20000), 0);
    rd_kafka_destroy(rk);
}

static int64_t routed_orders(const char *merchant_id)
{
    char target[128];
    long status;
    json_t *doc;
    int64_t n;

    snprintf(target, sizeof(target), "/query/%s", merchant_id);
    doc = get_json(w.router_url, target, &status);
    cr_assert_eq(status, 200, "%s", target);
    n = json_integer_value(json_object_get(doc, "order_count"));
    json_decref(doc);
    return n;
}

/* A merchant's routed order count, awaited. */
struct orders_want {
    const char *merchant_id;
    int64_t n;
};

static bool routed_orders_are(void *arg)
{
    const struct orders_want *want = arg;

    return routed_orders(want->merchant_id) == want->n;
}

/* The router's /events: one event per shard event, naming the shard, soon after the shard's
 * own; a shard whose stream drops is named in an event and in /health, and comes back. */
Test(shards, the_routers_events_come_from_the_shards_and_name_a_dropped_one, .timeout = 300)
{
    static struct sse ss[2]; /* the router's stream, shard 0-1's */
    char want[300], port[16];
    size_t from[2];
    int64_t at[2];
    long status;
    json_t *doc;

    start_world();
    gen(500);
    assert_exact(w.router_url, "the stream");
    const char *mine = merchant_of("0-1");
    int64_t before = routed_orders(mine);
    sse_open(&ss[0], w.router_url);
    sse_open(&ss[1], w.st[0].url);
    from[0] = from[1] = 0;
    const char *const head[] = {"\r\n\r\n", "\r\n\r\n"};
    cr_assert(sse_wait(ss, 2, from, head, at, 5000), "no answer: %s", ss[0].buf);
    cr_assert(strstr(ss[0].buf, "HTTP/1.1 200") && strstr(ss[0].buf, "text/event-stream"), "%s",
              ss[0].buf);
    /* The newest event comes at once: the router has one from each shard by now. */
    snprintf(want, sizeof(want), "\"shard\":\"%s\"", w.st[0].url);
    const char *const first[] = {"\n\n", "\n\n"};
    from[0] = (size_t)(strstr(ss[0].buf, "\r\n\r\n") - ss[0].buf) + 4;
    from[1] = (size_t)(strstr(ss[1].buf, "\r\n\r\n") - ss[1].buf) + 4;
    cr_assert(sse_wait(ss, 2, from, first, at, 5000), "no first event: %s", ss[0].buf);
    cr_expect(strstr(ss[0].buf + from[0], "data: {"), "%s", ss[0].buf);

    /* An order of shard 0-1's: its checkpoint is an event there, then one through the router
     * that names it, carrying its batch version and checkpoint time. */
    from[0] = ss[0].len;
    from[1] = ss[1].len;
    produce_order(mine, mine, "ev-order-1");
    const char *const next[] = {want, "\n\n"};
    cr_assert(sse_wait(ss, 2, from, next, at, 20000), "no event through the router: %s",
              ss[0].buf + from[0]);
    cr_expect_leq(at[0] - at[1], 100, "the router's event came %lld ms after the shard's",
                  (long long)(at[0] - at[1]));
    const char *ev = strstr(ss[0].buf + from[0], want);
    const char *line = ev;
    while (line > ss[0].buf && line[-1] != '\n')
        line--;
    cr_assert(!strncmp(line, "data: ", 6), "%s", line);
    json_t *e = json_loadb(line + 6, strcspn(line + 6, "\n"), 0, NULL);
    cr_assert(json_is_object(e), "%s", line);
    cr_expect(json_is_integer(json_object_get(e, "seq")));
    cr_expect(json_is_integer(json_object_get(e, "shard_seq")));
    cr_expect(json_object_get(e, "batch_version") != NULL, "%s", line);
    cr_expect(json_is_integer(json_object_get(e, "checkpoint_ms")), "%s", line);
    json_decref(e);
    cr_expect_eq(routed_orders(mine), before + 1, "the event's order is in the routed answer");

    /* A stopped shard: its stream drops, which is an event naming it and a degraded /health. */
    snprintf(port, sizeof(port), "%s", w.st[1].port);
    from[0] = ss[0].len;
    it_stop(&w.st[1].serve);
    snprintf(want, sizeof(want), "\"error\":\"shard %s: event stream dropped: ", w.st[1].url);
    const char *const dropped[] = {want};
    cr_assert(sse_wait(ss, 1, from, dropped, at, 10000), "no event naming the dropped shard: %s",
              ss[0].buf + from[0]);
    doc = get_json(w.router_url, "/health", &status);
    cr_expect_eq(status, 200);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "status")), "degraded");
    char *text = json_dumps(json_object_get(doc, "reasons"), JSON_COMPACT);
    snprintf(want, sizeof(want), "shard %s: event stream dropped: ", w.st[1].url);
    cr_expect(text && strstr(text, want), "%s", text);
    free(text);
    json_decref(doc);

    /* Back: the router reopens the stream (the shard's newest event comes through) and /health
     * is ok. */
    from[0] = ss[0].len;
    start_shard_serve(&w.st[1], 1, port);
    snprintf(want, sizeof(want), "\"shard\":\"%s\"", w.st[1].url);
    const char *const back[] = {want};
    cr_assert(sse_wait(ss, 1, from, back, at, 10000), "no event from the shard back: %s",
              ss[0].buf + from[0]);
    cr_expect(it_wait_until(health_ok, NULL, 10000), "the router's /health is ok again");
    doc = get_json(w.router_url, "/events?once=1", &status);
    cr_expect_eq(status, 200);
    cr_expect(json_is_integer(json_object_get(doc, "seq")) &&
                  json_integer_value(json_object_get(doc, "seq")) > 0,
              "?once=1: the newest router event");
    json_decref(doc);
    close(ss[0].fd);
    close(ss[1].fd);

    /* An order of a 2-3 merchant keyed as a 0-1 one sits in shard 0-1 (key_mismatch): sums
     * still add up, asked of every shard, but the top n of the shards' top n and a group's
     * merchant count would not, so those are refused, never answered inexact. */
    const char *theirs = merchant_of("2-3");
    int64_t theirs_before = routed_orders(theirs);
    produce_order(mine, theirs, "ev-order-2");
    cr_assert(it_wait_until(routing_is, "every_shard", 20000), "the router saw key_mismatch");
    /* The shard's /health can tell the mismatch a moment before its totals follow the order. */
    struct orders_want sum = {theirs, theirs_before + 1};
    cr_expect(it_wait_until(routed_orders_are, &sum, 10000), "summed over the shards");
    cr_expect_eq(routed_orders(theirs), theirs_before + 1, "summed over the shards");
    snprintf(want, sizeof(want), "shard %s reports key_mismatch=1: ", w.st[0].url);
    static const char *const refused[] = {"/top?n=3", "/groups?group=category"};
    for (size_t i = 0; i < 2; i++) {
        doc = get_json(w.router_url, refused[i], &status);
        cr_expect_eq(status, 503, "%s", refused[i]);
        const char *msg = json_string_value(json_object_get(doc, "error"));
        cr_expect(msg && !strncmp(msg, want, strlen(want)), "%s: %s (want %s)", refused[i], msg,
                  want);
        json_decref(doc);
    }
}

Test(shards, a_data_directory_with_another_set_or_epoch_ms_exits_2_naming_both, .timeout = 120)
{
    char data[600], bs[256];
    struct it_proc kafka;

    memset(&w, 0, sizeof(w));
    it_tmpdir("shards-pin", w.dir);
    it_devkafka(&kafka, w.dir, 4, bs);
    snprintf(data, sizeof(data), "%s/data", w.dir);
    char *first[] = {"lambda-batch",       "run", "--brokers", bs, "--data-dir", data,
                     "--shard-partitions", "0,1", NULL};
    cr_assert_eq(it_run(w.dir, "first", first, NULL, 60000), 0);
    char *other_set[] = {"lambda-speed", "--brokers",          bs,    "--data-dir",
                         data,           "--shard-partitions", "2-3", NULL};
    cr_expect_eq(it_run(w.dir, "speed_other", other_set, NULL, 30000), 2);
    char *batch_set[] = {"lambda-batch",       "run", "--brokers", bs, "--data-dir", data,
                         "--shard-partitions", "all", NULL};
    cr_expect_eq(it_run(w.dir, "batch_other", batch_set, NULL, 30000), 2);
    char *serve_epoch[] = {"lambda-serve",       "--port", "0",          "--data-dir", data,
                           "--shard-partitions", "0-1",    "--epoch-ms", "30000",      NULL};
    cr_expect_eq(it_run(w.dir, "serve_other", serve_epoch, NULL, 30000), 2);

    char path[700];
    snprintf(path, sizeof(path), "%s/speed_other.err", w.dir);
    char *err = it_read_file(path, NULL);
    cr_expect(err && strstr(err, "shard_partitions=0-1") && strstr(err, "shard_partitions=2-3"),
              "names both: %s", err);
    free(err);
    snprintf(path, sizeof(path), "%s/serve_other.err", w.dir);
    err = it_read_file(path, NULL);
    cr_expect(err && strstr(err, "epoch_ms=60000") && strstr(err, "epoch_ms=30000"),
              "names both: %s", err);
    free(err);
    /* A set that names a partition the topic lacks is refused at start. */
    char empty[600];
    snprintf(empty, sizeof(empty), "%s/data-wide", w.dir);
    char *wide[] = {"lambda-speed", "--brokers",          bs,    "--data-dir",
                    empty,          "--shard-partitions", "3-4", NULL};
    cr_expect_eq(it_run(w.dir, "speed_wide", wide, NULL, 30000), 1);
    snprintf(path, sizeof(path), "%s/speed_wide.err", w.dir);
    err = it_read_file(path, NULL);
    cr_expect(err && strstr(err, "names partition 4 but the topic has 4"), "%s", err);
    free(err);
    it_stop(&kafka);
}

/* An import on a shard keeps the orders of its own merchants and counts the others. */
Test(shards, an_import_on_a_shard_keeps_its_merchants_and_needs_the_partitioner, .timeout = 120)
{
    char data[600], bs[256], file[600], path[700], want[64];
    struct it_proc kafka;
    struct shard_set set;
    int foreign = 0;
    FILE *f;

    memset(&w, 0, sizeof(w));
    it_tmpdir("shards-import", w.dir);
    it_devkafka(&kafka, w.dir, 4, bs);
    snprintf(data, sizeof(data), "%s/data", w.dir);
    snprintf(file, sizeof(file), "%s/orders.ndjson", w.dir);
    cr_assert_eq(shard_set_parse(&set, "0-1", NULL), 0);
    cr_assert((f = fopen(file, "w")));
    for (int i = 0; i < 300; i++) {
        char id[16];
        int n = snprintf(id, sizeof(id), "m-%d", i % 37);
        fprintf(f,
                "{\"order_id\":\"i-%d\",\"merchant_id\":\"%s\",\"amount_cents\":%d,"
                "\"event_time\":\"2026-11-21T10:%02d:00Z\"}\n",
                i, id, 100 + i, i % 60);
        foreign += !shard_set_has(
            &set, shard_partition_of(SHARD_PARTITIONER_MURMUR2_RANDOM, id, (size_t)n, 4));
    }
    cr_assert_eq(fclose(f), 0);
    cr_assert(foreign > 0 && foreign < 300, "both shards have merchants: %d", foreign);
    char *no_pt[] = {"lambda-batch",       "import", file, "--brokers", bs, "--data-dir", data,
                     "--shard-partitions", "0-1",    NULL};
    cr_expect_eq(it_run(w.dir, "import_no_pt", no_pt, NULL, 30000), 1);
    snprintf(path, sizeof(path), "%s/import_no_pt.err", w.dir);
    char *err = it_read_file(path, NULL);
    cr_expect(err && strstr(err, "needs 'partitioner'"), "%s", err);
    free(err);
    char *argv[] = {"lambda-batch",
                    "import",
                    file,
                    "--brokers",
                    bs,
                    "--data-dir",
                    data,
                    "--shard-partitions",
                    "0-1",
                    "--partitioner",
                    "murmur2_random",
                    NULL};
    cr_assert_eq(it_run(w.dir, "import", argv, NULL, 30000), 0);
    snprintf(path, sizeof(path), "%s/import.out", w.dir);
    char *out = it_read_file(path, NULL);
    snprintf(want, sizeof(want), "orders=%d ", 300 - foreign);
    cr_expect(out && strstr(out, want), "want %s: %s", want, out);
    snprintf(want, sizeof(want), "not_this_shard=%d ", foreign);
    cr_expect(out && strstr(out, want), "want %s: %s", want, out);
    free(out);
    char *status[] = {"lambda-batch",       "status", "--json", "--data-dir", data,
                      "--shard-partitions", "0,1",    NULL};
    cr_assert_eq(it_run(w.dir, "status", status, NULL, 30000), 0);
    snprintf(path, sizeof(path), "%s/status.out", w.dir);
    out = it_read_file(path, NULL);
    json_t *doc = out ? json_loads(out, 0, NULL) : NULL, *sh = json_object_get(doc, "shard");
    cr_expect_str_eq(json_string_value(json_object_get(sh, "partitions")), "0-1", "%s", out);
    cr_expect(json_is_null(json_object_get(sh, "topic_partitions")), "no speed layer told it");
    cr_expect_eq(json_integer_value(json_object_get(sh, "key_mismatch")), 0);
    json_decref(doc);
    free(out);
    it_stop(&kafka);
}

/* A savepoint carries its shard's set: restoring it on another shard is refused. */
Test(shards, a_savepoint_of_another_shard_is_refused, .timeout = 120)
{
    char data[600], other[600], bs[256], file[600], path[700];
    struct it_proc kafka, speed;

    memset(&w, 0, sizeof(w));
    it_tmpdir("shards-savepoint", w.dir);
    it_devkafka(&kafka, w.dir, 4, bs);
    snprintf(data, sizeof(data), "%s/data", w.dir);
    snprintf(other, sizeof(other), "%s/other", w.dir);
    snprintf(file, sizeof(file), "%s/speed.savepoint", w.dir);
    char *run[] = {"lambda-speed", "--brokers",          bs,    "--data-dir",
                   data,           "--shard-partitions", "0-1", NULL};
    it_spawn(&speed, w.dir, "speed", run, NULL);
    cr_assert(it_wait_log(&speed, "msg=started", 20000), "lambda-speed did not start");
    cr_assert_eq(it_signal(&speed, SIGTERM, 10000), 0);
    char *out[] = {"lambda-speed", "savepoint",          "--out", file, "--data-dir",
                   data,           "--shard-partitions", "0-1",   NULL};
    cr_assert_eq(it_run(w.dir, "out", out, NULL, 30000), 0);
    char *in[] = {"lambda-speed", "savepoint",          "--restore", file, "--data-dir",
                  other,          "--shard-partitions", "2-3",       NULL};
    cr_expect_eq(it_run(w.dir, "restore", in, NULL, 30000), 2);
    snprintf(path, sizeof(path), "%s/restore.err", w.dir);
    char *err = it_read_file(path, NULL);
    cr_expect(err && strstr(err, "shard_partitions=0-1") && strstr(err, "shard_partitions=2-3"),
              "names both: %s", err);
    free(err);
    char *same[] = {"lambda-speed", "savepoint",          "--restore", file, "--data-dir",
                    other,          "--shard-partitions", "0,1",       NULL};
    cr_expect_eq(it_run(w.dir, "restore_same", same, NULL, 30000), 0,
                 "the same set, written otherwise");
    it_stop(&kafka);
}

Test(shards, the_router_refuses_shards_whose_sets_overlap, .timeout = 120)
{
    char data[2][600], url[2][128], port[2][16], shards[300], nodir[600];
    struct it_proc serve[2];

    memset(&w, 0, sizeof(w));
    it_tmpdir("shards-overlap", w.dir);
    for (int i = 0; i < 2; i++) {
        char tag[32];
        snprintf(data[i], sizeof(data[i]), "%s/data%d", w.dir, i);
        snprintf(tag, sizeof(tag), "serve%d", i);
        char *extra[] = {"--data-dir", data[i], "--shard-partitions", i ? "1-3" : "0-1", NULL};
        start_serve(&serve[i], tag, extra, "0", url[i], port[i]);
    }
    snprintf(shards, sizeof(shards), "%s,%s", url[0], url[1]);
    snprintf(nodir, sizeof(nodir), "%s/none", w.dir);
    char *argv[] = {"lambda-serve", "--port", "0", "--shards", shards, "--data-dir", nodir, NULL};
    cr_expect_eq(it_run(w.dir, "router", argv, NULL, 30000), 2);
    char path[700];
    snprintf(path, sizeof(path), "%s/router.err", w.dir);
    char *err = it_read_file(path, NULL);
    cr_expect(err && strstr(err, "both own partition 1"), "%s", err);
    free(err);
    it_stop(&serve[0]);
    it_stop(&serve[1]);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (!m->err)
        ((int *)opaque)[(intptr_t)m->_private] = m->partition;
}

/* What librdkafka's producer does with each key is what shard_partition_of() says. */
Test(shards, the_hash_is_the_producers, .timeout = 120)
{
    static const char *const names[] = {"murmur2_random", "consistent_random"};
    static const enum shard_partitioner pts[] = {SHARD_PARTITIONER_MURMUR2_RANDOM,
                                                 SHARD_PARTITIONER_CONSISTENT_RANDOM};
    char bs[256], err[512];
    struct it_proc kafka;

    memset(&w, 0, sizeof(w));
    it_tmpdir("shards-hash", w.dir);
    it_devkafka(&kafka, w.dir, 4, bs);
    for (int k = 0; k < 2; k++) {
        int got[200];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", bs, err, sizeof(err)), 0);
        cr_assert_eq(rd_kafka_conf_set(conf, "partitioner", names[k], err, sizeof(err)), 0);
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
        rd_kafka_conf_set_opaque(conf, got);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        cr_assert(rk, "%s", err);
        for (int i = 0; i < 200; i++) {
            char key[32];
            int n = snprintf(key, sizeof(key), "merchant-%d", i * 7919);
            got[i] = -1;
            cr_assert_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("orders"),
                                           RD_KAFKA_V_KEY(key, (size_t)n), RD_KAFKA_V_VALUE("x", 1),
                                           RD_KAFKA_V_OPAQUE((void *)(intptr_t)i), RD_KAFKA_V_END),
                         0);
        }
        cr_assert_eq(rd_kafka_flush(rk, 20000), 0);
        rd_kafka_destroy(rk);
        for (int i = 0; i < 200; i++) {
            char key[32];
            int n = snprintf(key, sizeof(key), "merchant-%d", i * 7919);
            cr_expect_eq(got[i], shard_partition_of(pts[k], key, (size_t)n, 4), "%s: %s", names[k],
                         key);
        }
    }
    it_stop(&kafka);
}
