/* test_router.c - the router's shard list, what it learns of their sets, and who owns a
 * merchant (serving/router.c), with no server: /health answers are given as JSON. */
#include <criterion/criterion.h>
#include <string.h>

#include <jansson.h>

#include "serving/router_int.h"

static struct router *new_router(const char *shards, const char *partitioner)
{
    struct router_opts o = {.shards = shards, .timeout_ms = 2000, .partitioner = partitioner};
    struct lerr e = {{0}};
    struct router *r = router_new(&o, &e);

    cr_assert(r, "%s", e.msg);
    return r;
}

static void learn(struct router *r, int i, const char *set, int nparts, int mismatch)
{
    json_t *doc = json_pack("{s:s,s:{s:s,s:i,s:i}}", "status", "ok", "shard", "partitions", set,
                            "topic_partitions", nparts, "key_mismatch", mismatch);
    router_learn(r, i, doc);
    json_decref(doc);
}

Test(router, refuses_bad_shard_lists_naming_them, .timeout = 10)
{
    static const struct {
        const char *shards, *partitioner, *msg;
    } t[] = {
        {"", NULL, "bad shards: no URL"},
        {"ftp://a:1", NULL, "bad shards: 'ftp://a:1' is not an http:// URL"},
        {"http://a:1,http://a:1/", NULL, "bad shards: 'http://a:1' is listed twice"},
        {"http://a:1", "murmur2",
         "bad partitioner 'murmur2': want murmur2_random or "
         "consistent_random"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct router_opts o = {.shards = t[i].shards, .partitioner = t[i].partitioner};
        struct lerr e = {{0}};
        cr_expect_null(router_new(&o, &e), "%s", t[i].shards);
        cr_expect_str_eq(e.msg, t[i].msg);
    }
}

Test(router, asks_a_merchants_shard_only_when_every_set_is_known_and_keys_match, .timeout = 10)
{
    struct router *r = new_router("http://a:1, http://b:2/", "murmur2_random");
    char msg[256];

    cr_expect_str_eq(r->shards[1].url, "http://b:2");
    /* murmur2("m42") % 4 = 3, so m42 is b's */
    cr_expect_eq(router_owner(r, "m42"), -1, "no set known yet");
    learn(r, 0, "0-1", 4, 0);
    cr_expect_eq(router_owner(r, "m42"), -1, "one set unknown");
    learn(r, 1, "2-3", 4, 0);
    cr_expect_not(router_conflict(r, msg, sizeof(msg)));
    cr_expect_eq(router_owner(r, "m42"), 1);
    learn(r, 1, "2-3", 4, 2);
    cr_expect_eq(router_owner(r, "m42"), -1, "key_mismatch: copies may sit elsewhere");
    router_free(r);

    r = new_router("http://a:1,http://b:2", NULL);
    learn(r, 0, "0-1", 4, 0);
    learn(r, 1, "2-3", 4, 0);
    cr_expect_eq(router_owner(r, "m42"), -1, "no partitioner: every shard");
    router_free(r);
}

Test(router, refuses_sets_that_overlap_or_leave_a_partition_unowned, .timeout = 10)
{
    struct router *r = new_router("http://a:1,http://b:2", "murmur2_random");
    char msg[256];

    learn(r, 0, "0-2", 4, 0);
    learn(r, 1, "2-3", 4, 0);
    cr_assert(router_conflict(r, msg, sizeof(msg)));
    cr_expect_str_eq(msg, "shards http://a:1 (0-2) and http://b:2 (2-3) both own partition 2: "
                          "their sums would count it twice");
    cr_expect_eq(router_owner(r, "m42"), -1);
    learn(r, 0, "0-1", 4, 0);
    cr_expect_not(router_conflict(r, msg, sizeof(msg)), "fixed once /health tells the new set");
    learn(r, 1, "3", 4, 0);
    cr_assert(router_conflict(r, msg, sizeof(msg)));
    cr_expect_str_eq(msg, "no shard owns partition 2 of 4: its merchants would be missing");
    learn(r, 1, "all", 4, 0);
    cr_assert(router_conflict(r, msg, sizeof(msg)));
    cr_expect(strstr(msg, "both own partition 0"), "%s", msg);
    router_free(r);
}

/* A span asked of every shard ends at the lowest watermark of the shards that serve; one that
 * serves without a watermark would end it elsewhere, so it is refused. */
Test(router, ends_a_span_over_every_shard_at_the_lowest_watermark_or_refuses_it, .timeout = 10)
{
    struct router *r = new_router("http://a:1,http://b:2,http://c:3", NULL);
    json_t *docs[3] = {json_pack("{s:{s:I}}", "shard", "watermark_ms", (json_int_t)5000),
                       json_pack("{s:{s:I}}", "shard", "watermark_ms", (json_int_t)3000),
                       json_pack("{s:{s:n}}", "shard", "watermark_ms")};
    long status[3] = {200, 200, 503};
    char why[300];
    bool found;
    int64_t wm = 0;

    cr_expect_eq(router_min_watermark(r, docs, status, &found, &wm, why, sizeof(why)), 0);
    cr_expect(found);
    cr_expect_eq(wm, 3000, "the lowest; the empty shard (503) does not count");
    status[2] = 200;
    cr_expect_eq(router_min_watermark(r, docs, status, &found, &wm, why, sizeof(why)), -1);
    cr_expect_str_eq(why, "shard http://c:3 has no watermark (its speed layer recorded none): a "
                          "window over every shard cannot end at the same minute on each; ask "
                          "with from and to");
    status[0] = status[1] = status[2] = 503;
    cr_expect_eq(router_min_watermark(r, docs, status, &found, &wm, why, sizeof(why)), 0);
    cr_expect_not(found, "no shard serves: the current minute ends it");
    for (int i = 0; i < 3; i++)
        json_decref(docs[i]);
    router_free(r);
}

/* What router_merge_merchant() and json_dumps() make of the shards' bodies (NULL: not asked),
 * the answer before the splice. NULL when one is not JSON. */
static char *merged_text(struct router *r, const char *id, const char *const body[])
{
    json_t *docs[ROUTER_SHARDS_MAX] = {0}, *doc;
    char *text = NULL;
    bool is_json = true;

    for (int i = 0; i < r->n; i++)
        if (body[i] && !(docs[i] = json_loads(body[i], 0, NULL)))
            is_json = false;
    if (is_json) {
        doc = router_merge_merchant(r, id, docs);
        text = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
    }
    for (int i = 0; i < r->n; i++)
        json_decref(docs[i]);
    return text;
}

/* router_splice_merchant() of the same bodies, as the shards' answers with the given status. */
static char *spliced_text(struct router *r, const char *id, const char *const body[], long status,
                          size_t *len)
{
    struct router_fan f = {0};
    char *text;

    for (int i = 0; i < r->n; i++) {
        if (!body[i])
            continue;
        f.a[i].target = strdup("/query/m42");
        f.a[i].cc = CURLE_OK;
        f.a[i].status = status;
        f.a[i].body = strdup(body[i]);
        f.a[i].len = strlen(body[i]);
    }
    text = router_splice_merchant(r, id, f.a, len);
    router_fan_release(&f);
    return text;
}

/* The owner's answer in the shape api_text.c writes is spliced as text into the routed answer,
 * byte for byte what parsing, merging and json_dumps() wrote; anything else is left to them. */
Test(router, splices_an_owners_answer_into_exactly_what_the_merge_writes, .timeout = 10)
{
    static const char *const same[] = {
        "{\"merchant_id\":\"m42\",\"order_count\":7,\"revenue_cents\":1234,\"batch\":{\"order_"
        "count\":5,\"revenue_cents\":1000,\"version\":3,\"cut_epoch\":29938372,\"as_of\":\"2026-"
        "12-03T12:00:00Z\"},\"speed\":{\"order_count\":2,\"revenue_cents\":234,\"checkpoint_age_"
        "ms\":812,\"lag\":0,\"watermark\":\"2026-12-03T12:50:00Z\"}}",
        /* no batch version yet, no checkpoint */
        "{\"merchant_id\":\"m42\",\"order_count\":0,\"revenue_cents\":0,\"batch\":{\"order_count\""
        ":0,\"revenue_cents\":0,\"version\":null,\"cut_epoch\":0,\"as_of\":null},\"speed\":{\"order"
        "_count\":0,\"revenue_cents\":0,\"checkpoint_age_ms\":null,\"lag\":null,\"watermark\":"
        "null}}",
        /* escapes jansson writes back as they came, negatives, booleans, an empty object */
        "{\"merchant_id\":\"other\",\"order_count\":-3,\"revenue_cents\":-900000000000000000,"
        "\"batch\":{\"as_of\":\"a\\\"b\\\\c\\n\\t\\r\\b\\f\",\"k\\\"\":true,\"x\":false},\"speed\":"
        "{}}",
    };
    static const char *const other[] = {
        /* a window's echoes, a dimension's attributes: the merge copies them */
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{},\"speed\":{},"
        "\"from\":\"x\"}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{},\"speed\":{},"
        "\"merchant\":{\"city\":\"x\"}}",
        /* what jansson would write back otherwise */
        "{\"merchant_id\": "
        "\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{},\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{},\"speed\":{}}"
        " ",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{\"a\":\"\\/\"},"
        "\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{\"a\":"
        "\"\\u0041\"}"
        ",\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1.0,\"revenue_cents\":1,\"batch\":{},\"speed\":{}"
        "}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1e3,\"batch\":{},\"speed\":{}"
        "}",
        "{\"merchant_id\":\"m42\",\"order_count\":-0,\"revenue_cents\":1,\"batch\":{},\"speed\":{}"
        "}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{\"a\":1,\"a\":2}"
        ","
        "\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{\"a\":{}},"
        "\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{\"a\":"
        "\"\xc3\xa9\"},"
        "\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":null,\"revenue_cents\":1,\"batch\":{},\"speed\":{"
        "}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"speed\":{},\"batch\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"speed\":{}}",
        /* not JSON at all: the merge's path answers 503 */
        "{\"merchant_id\":\"m42\",\"order_count\":01,\"revenue_cents\":1,\"batch\":{},\"speed\":{}"
        "}",
        "{\"merchant_id\":\"m42\",\"order_count\":1234567890123456789012,\"revenue_cents\":1,"
        "\"batch\":{},\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{\"a\":\"\\1,"
        "\"b\""
        ":2},\"speed\":{}}",
        "{\"merchant_id\":\"m42\",\"order_count\":1,\"revenue_cents\":1,\"batch\":{},\"speed\":{}",
        "",
    };
    /* a URL that JSON must escape */
    struct router *r = new_router("http://a:1,http://b:2/p\"q\\r", "murmur2_random");
    size_t len;

    cr_expect_str_eq(r->shards[1].url_json, "\"http://b:2/p\\\"q\\\\r\"");
    /* the owner alone (either shard), and both shards asked (every pair: sums and both parts) */
    for (size_t k = 0; k < sizeof(same) / sizeof(same[0]); k++)
        for (size_t j = 0; j < sizeof(same) / sizeof(same[0]) + 2; j++) {
            const char *body[2] = {j == 0 ? NULL : same[k],
                                   j == 1 ? NULL : same[j < 2 ? k : j - 2]};
            char *want = merged_text(r, "m42", body);
            char *got = spliced_text(r, "m42", body, 200, &len);
            cr_assert(want && got, "bodies %zu/%zu: %s", k, j, got ? "not JSON" : "not spliced");
            cr_expect_str_eq(got, want, "bodies %zu/%zu", k, j);
            cr_expect_eq(len, strlen(want));
            free(want);
            free(got);
        }
    for (size_t k = 0; k < sizeof(other) / sizeof(other[0]); k++) {
        const char *alone[2] = {other[k], NULL}, *mixed[2] = {same[0], other[k]};
        cr_expect_null(spliced_text(r, "m42", alone, 200, &len), "body %zu: %s", k, other[k]);
        cr_expect_null(spliced_text(r, "m42", mixed, 200, &len), "beside %zu: %s", k, other[k]);
    }
    {
        const char *body[2] = {same[0], NULL};
        cr_expect_null(spliced_text(r, "m42", body, 503, &len), "only 200s are spliced");
    }
    router_free(r);
}

/* A lazy fan's bodies are parsed only by router_fan_failed(), which still tells a JSON 200 from
 * a body that is not JSON and a 5xx's message, as it did with every body parsed. */
Test(router, tells_failures_from_unparsed_answers, .timeout = 10)
{
    static const struct {
        long status;
        const char *body;
        unsigned want_status; /* 0: not failed */
        const char *want;
    } t[] = {
        {200, "{\"order_count\":1}", 0, NULL},
        {200, "{\"order_count\":1", 503,
         "{\"error\":\"shard http://a:1 did not answer: HTTP 200 with a body that is not JSON\"}"},
        {500, "{\"error\":\"disk\"}", 503,
         "{\"error\":\"shard http://a:1 did not answer: HTTP 500: disk\"}"},
        {400, "{\"error\":\"bad\"}", 400, "{\"error\":\"bad\"}"},
    };
    struct router *r = new_router("http://a:1", NULL);

    for (size_t k = 0; k < sizeof(t) / sizeof(t[0]); k++) {
        struct router_fan f = {.is_lazy = true};
        struct serve_reply out = {0};
        f.a[0].target = strdup("/query/m");
        f.a[0].cc = CURLE_OK;
        f.a[0].status = t[k].status;
        f.a[0].body = strdup(t[k].body);
        f.a[0].len = strlen(t[k].body);
        cr_assert_null(f.a[0].doc);
        if (!t[k].want_status) {
            cr_expect_not(router_fan_failed(r, &f, &out), "%zu", k);
            cr_expect(json_is_object(f.a[0].doc), "%zu: parsed once it is asked for", k);
        } else {
            cr_assert(router_fan_failed(r, &f, &out), "%zu", k);
            cr_expect_eq(out.status, t[k].want_status, "%zu", k);
            cr_expect_eq(out.len, strlen(out.body));
            cr_expect_str_eq(out.body, t[k].want, "%zu", k);
        }
        free(out.owned);
        router_fan_release(&f);
    }
    router_free(r);
}
