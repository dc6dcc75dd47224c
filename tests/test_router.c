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
