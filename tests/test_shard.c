/* test_shard.c - partition sets and librdkafka's partitioners (shared/shard). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "shard.h"

Test(shard, parses_lists_and_ranges_into_their_canonical_text, .timeout = 10)
{
    static const struct {
        const char *in, *out;
    } t[] = {
        {"all", "all"}, {"0-3,8", "0-3,8"},   {"8, 0-3", "0-3,8"}, {"0,1,2", "0-2"},
        {"5", "5"},     {"1-1,3-4", "1,3-4"}, {"2-3,0-1", "0-3"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct shard_set s;
        struct lerr e = {{0}};
        char buf[SHARD_TEXT_MAX];
        cr_assert_eq(shard_set_parse(&s, t[i].in, &e), 0, "%s: %s", t[i].in, e.msg);
        shard_set_format(&s, buf, sizeof(buf));
        cr_expect_str_eq(buf, t[i].out, "%s", t[i].in);
    }
}

Test(shard, refuses_bad_text_naming_it, .timeout = 10)
{
    static const char *const bad[] = {"", "x", "1-", "3-1", "1,,2", "-1", "1024", "1;2", "al"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct shard_set s;
        struct lerr e = {{0}};
        char want[SHARD_TEXT_MAX + 64];
        cr_expect_eq(shard_set_parse(&s, bad[i], &e), -1, "'%s'", bad[i]);
        snprintf(want, sizeof(want), "bad shard_partitions '%s'", bad[i]);
        cr_expect(strncmp(e.msg, want, strlen(want)) == 0, "'%s': %s", bad[i], e.msg);
    }
}

Test(shard, membership_and_the_topic_check, .timeout = 10)
{
    struct shard_set s;
    struct lerr e = {{0}};

    cr_assert_eq(shard_set_parse(&s, "0-1,5", &e), 0);
    cr_expect(shard_set_has(&s, 0) && shard_set_has(&s, 1) && shard_set_has(&s, 5));
    cr_expect(!shard_set_has(&s, 2) && !shard_set_has(&s, -1) && !shard_set_has(&s, 4096));
    cr_expect_eq(shard_set_check_topic(&s, 6, &e), 0);
    cr_expect_eq(shard_set_check_topic(&s, 4, &e), -1);
    cr_expect_str_eq(e.msg, "shard_partitions names partition 5 but the topic has 4");
    cr_assert_eq(shard_set_parse(&s, "all", &e), 0);
    cr_expect(shard_set_has(&s, 1000) && !shard_set_has(&s, -1));
    cr_expect_eq(shard_set_check_topic(&s, 4, &e), 0);
}

Test(shard, partitioners_by_name_and_kafkas_murmur2, .timeout = 10)
{
    enum shard_partitioner pt;
    struct lerr e = {{0}};

    cr_assert_eq(shard_partitioner_parse(NULL, &pt, &e), 0);
    cr_expect_eq(pt, SHARD_PARTITIONER_NONE);
    cr_expect_eq(shard_partition_of(pt, "m1", 2, 4), -1);
    cr_expect_eq(shard_partitioner_parse("murmur2", &pt, &e), -1);
    cr_expect_str_eq(e.msg, "bad partitioner 'murmur2': want murmur2_random or consistent_random");
    cr_assert_eq(shard_partitioner_parse("murmur2_random", &pt, &e), 0);
    /* murmur2("kafka") = 0xd067cf64 (librdkafka's unit test), positive 0x5067cf64; the
     * partition is that modulo the count. it_shards checks the producer puts keys there. */
    cr_expect_eq(shard_partition_of(pt, "kafka", 5, 7), (int)(0x5067cf64u % 7));
    cr_expect_eq(shard_partition_of(pt, "m42", 3, 4), (int)(0x5a43d19bu % 4));
    cr_assert_eq(shard_partitioner_parse("consistent_random", &pt, &e), 0);
    for (int i = 0; i < 100; i++) {
        char key[16];
        int n = snprintf(key, sizeof(key), "m%d", i), p = shard_partition_of(pt, key, (size_t)n, 4);
        cr_expect(p >= 0 && p < 4, "%s -> %d", key, p);
    }
}

Test(shard, a_set_too_long_to_pin_whole_is_refused)
{
    struct shard_set s;
    struct lerr e = {{0}};
    char text[4096];
    size_t n = 0;

    for (int p = 0; p < 200; p += 2)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%d", n ? "," : "", p);
    cr_assert_eq(shard_set_parse(&s, text, &e), -1);
    cr_assert(strstr(e.msg, "characters as ranges, at most 255"), "%s", e.msg);
    cr_assert_eq(shard_set_parse(&s, "0-99,200-299", &e), 0, "%s", e.msg);
}
