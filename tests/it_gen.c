/* it_gen.c - lambda-gen against the real embedded Kafka: what it says it produced (its truth
 * file) is what a plain Kafka client reads back.
 *
 * lambda-devkafka runs on a port the OS picks; lambda-gen produces 10,000 events with late,
 * duplicate and invalid ones; kcat consumes the topic to its end. The test recounts the
 * consumed payloads itself: ev_parse() with the message timestamp, the first copy of each
 * (merchant_id, order_id) in log order wins. Every count, revenue and reject count must equal
 * the truth file exactly. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "ev.h"
#include "itlib.h"
#include "tm.h"

/* 2026-11-21T10:00:00Z, the first event's virtual time (date -u -d ... +%s%3N). */
#define START_MS 1795255200000LL
#define STEP_MS  10

struct msg {
    int partition;
    int64_t offset, ts_ms;
    const char *key, *payload; /* borrowed from the kcat output; key NULL when absent */
    size_t key_len, len;
};

struct count_row {
    char key[160]; /* "merchant" or "merchant/minute_ms" or "merchant/order_id" */
    int64_t count, revenue;
    UT_hash_handle hh;
};

struct recount {
    int64_t produced, valid, duplicates, late, invalid, mismatched, rejects[EV_REASON_COUNT];
    struct count_row *merchants, *minutes, *seen;
};

static struct count_row *row_get(struct count_row **map, const char *key)
{
    struct count_row *r;

    HASH_FIND_STR(*map, key, r);
    if (!r) {
        r = calloc(1, sizeof(*r));
        cr_assert_not_null(r);
        snprintf(r->key, sizeof(r->key), "%s", key);
        HASH_ADD_STR(*map, key, r);
    }
    return r;
}

static void map_free(struct count_row **map)
{
    struct count_row *r, *tmp;

    HASH_ITER(hh, *map, r, tmp)
    {
        HASH_DEL(*map, r);
        free(r);
    }
}

/* Counts the messages in the order given, which must be log order within each partition. */
static void recount(struct recount *rc, const struct msg *m, size_t n)
{
    static const struct ev_rules rules = {.max_future_skew_ms = 5 * TM_MINUTE_MS};
    char key[160];

    memset(rc, 0, sizeof(*rc));
    for (size_t i = 0; i < n; i++) {
        struct ev_order o;
        enum ev_reason r =
            ev_parse(&rules, m[i].key, m[i].key_len, m[i].payload, m[i].len, m[i].ts_ms, &o);
        struct count_row *row;

        rc->produced++;
        if (r != EV_OK) {
            rc->invalid++;
            rc->rejects[r]++;
            continue;
        }
        rc->mismatched += o.is_key_mismatch;
        /* '/' is never part of a valid merchant id, so these keys cannot collide. */
        snprintf(key, sizeof(key), "%s/%s", o.merchant_id, o.order_id);
        row = row_get(&rc->seen, key);
        if (row->count++ > 0) {
            rc->duplicates++;
            continue;
        }
        rc->valid++;
        /* Ordinary events lag their virtual time by at most 3 s; late ones are 12 to 40 min
         * before the start. */
        rc->late += o.event_ms < START_MS - TM_MINUTE_MS;
        row = row_get(&rc->merchants, o.merchant_id);
        row->count++, row->revenue += o.amount_cents;
        snprintf(key, sizeof(key), "%s/%" PRId64, o.merchant_id,
                 tm_floor(o.event_ms, TM_MINUTE_MS));
        row = row_get(&rc->minutes, key);
        row->count++, row->revenue += o.amount_cents;
    }
}

static void recount_free(struct recount *rc)
{
    map_free(&rc->merchants);
    map_free(&rc->minutes);
    map_free(&rc->seen);
}

/* The recount must equal the truth file, number by number. */
static void check_against_truth(const struct recount *rc, const struct it_truth *t)
{
    cr_expect_eq(rc->produced, t->produced, "produced %" PRId64 ", truth %" PRId64, rc->produced,
                 t->produced);
    cr_expect_eq(rc->valid, t->valid, "valid %" PRId64 ", truth %" PRId64, rc->valid, t->valid);
    cr_expect_eq(rc->duplicates, t->duplicates, "duplicates %" PRId64 ", truth %" PRId64,
                 rc->duplicates, t->duplicates);
    cr_expect_eq(rc->late, t->late, "late %" PRId64 ", truth %" PRId64, rc->late, t->late);
    cr_expect_eq(rc->invalid, t->invalid, "invalid %" PRId64 ", truth %" PRId64, rc->invalid,
                 t->invalid);
    cr_expect_eq(rc->mismatched, 0, "lambda-gen keys every message by its merchant id");
    for (int r = 1; r < EV_REASON_COUNT; r++)
        cr_expect_eq(rc->rejects[r], t->rejects[r], "reject %s: %" PRId64 ", truth %" PRId64,
                     ev_reason_name((enum ev_reason)r), rc->rejects[r], t->rejects[r]);

    cr_expect_eq(HASH_COUNT(rc->merchants), t->nmerchants, "merchants %u, truth %zu",
                 HASH_COUNT(rc->merchants), t->nmerchants);
    for (size_t i = 0; i < t->nmerchants; i++) {
        const struct it_truth_merchant *tm = &t->merchants[i];
        struct count_row *r;
        HASH_FIND_STR(rc->merchants, tm->merchant_id, r);
        cr_expect_not_null(r, "merchant %s of the truth never seen", tm->merchant_id);
        if (!r)
            continue;
        cr_expect_eq(r->count, tm->order_count, "merchant %s: count %" PRId64 ", truth %" PRId64,
                     tm->merchant_id, r->count, tm->order_count);
        cr_expect_eq(r->revenue, tm->revenue_cents,
                     "merchant %s: revenue %" PRId64 ", truth %" PRId64, tm->merchant_id,
                     r->revenue, tm->revenue_cents);
    }

    cr_expect_eq(HASH_COUNT(rc->minutes), t->nminutes, "merchant-minutes %u, truth %zu",
                 HASH_COUNT(rc->minutes), t->nminutes);
    for (size_t i = 0; i < t->nminutes; i++) {
        const struct it_truth_minute *tm = &t->minutes[i];
        char key[160];
        struct count_row *r;
        snprintf(key, sizeof(key), "%s/%" PRId64, tm->merchant_id, tm->minute_ms);
        HASH_FIND_STR(rc->minutes, key, r);
        cr_expect_not_null(r, "merchant-minute %s of the truth never seen", key);
        if (!r)
            continue;
        cr_expect_eq(r->count, tm->order_count, "%s: count", key);
        cr_expect_eq(r->revenue, tm->revenue_cents, "%s: revenue", key);
    }
}

/* Reads a decimal number and the one space after it. */
static int64_t take_int(char **p, char *end)
{
    char *q;
    int64_t v = strtoll(*p, &q, 10);

    cr_assert(q > *p && q < end && *q == ' ', "bad kcat line near '%.20s'", *p);
    *p = q + 1;
    return v;
}

/* Parses kcat -f '%p %o %T %K %S %k%s\n': lengths first, so any byte may be in a payload. */
static struct msg *parse_kcat(char *buf, size_t len, size_t *n)
{
    struct msg *m = NULL;
    size_t cap = 0;
    char *p = buf, *end = buf + len;

    *n = 0;
    while (p < end) {
        int64_t klen, slen;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16384;
            m = realloc(m, cap * sizeof(*m));
            cr_assert_not_null(m);
        }
        m[*n].partition = (int)take_int(&p, end);
        m[*n].offset = take_int(&p, end);
        m[*n].ts_ms = take_int(&p, end);
        klen = take_int(&p, end);
        slen = take_int(&p, end);
        cr_assert(slen >= 0 && p + (klen > 0 ? klen : 0) + slen < end, "truncated kcat output");
        m[*n].key = klen >= 0 ? p : NULL;
        m[*n].key_len = klen > 0 ? (size_t)klen : 0;
        p += m[*n].key_len;
        m[*n].payload = p;
        m[*n].len = (size_t)slen;
        p += slen;
        cr_assert_eq(*p, '\n', "kcat record not ended by a newline");
        p++;
        (*n)++;
    }
    return m;
}

static int by_log_position(const void *a, const void *b)
{
    const struct msg *x = a, *y = b;

    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int by_timestamp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* Every merchant's messages sit in one partition (the key is the merchant id). */
static void check_one_partition_per_key(const struct msg *m, size_t n)
{
    struct count_row *map = NULL, *r;
    char key[80];

    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%.*s", (int)m[i].key_len, m[i].key ? m[i].key : "");
        r = row_get(&map, key);
        if (r->count++ == 0)
            r->revenue = m[i].partition; /* the partition, kept in a spare field */
        cr_expect_eq(r->revenue, m[i].partition, "key '%s' in partitions %" PRId64 " and %d", key,
                     r->revenue, m[i].partition);
    }
    map_free(&map);
}

/* Message timestamps are exactly start + i * step, i = 0..n-1 (the virtual times). */
static void check_timestamps(const struct msg *m, size_t n)
{
    int64_t *ts = malloc(n * sizeof(*ts));

    cr_assert_not_null(ts);
    for (size_t i = 0; i < n; i++)
        ts[i] = m[i].ts_ms;
    qsort(ts, n, sizeof(*ts), by_timestamp);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ts[i], START_MS + (int64_t)i * STEP_MS, "timestamp #%zu is %" PRId64, i,
                     ts[i]);
    free(ts);
}

Test(gen, truth_equals_a_recount_of_what_kafka_holds, .timeout = 180)
{
    struct it_proc dk;
    struct it_truth t;
    struct recount rc;
    struct msg *m;
    char dir[512], bs[256], truth[600], out[600];
    char *buf;
    size_t len, n;

    it_tmpdir("gen", dir);
    it_devkafka(&dk, dir, 4, bs);
    snprintf(truth, sizeof(truth), "%s/truth", dir);
    char *gen[] = {"lambda-gen",
                   "--brokers",
                   bs,
                   "--topic",
                   "orders",
                   "--count",
                   "10000",
                   "--rate",
                   "0",
                   "--merchants",
                   "50",
                   "--seed",
                   "7",
                   "--start-time",
                   "2026-11-21T10:00:00Z",
                   "--time-step",
                   "10ms",
                   "--late-pct",
                   "4",
                   "--dup-pct",
                   "6",
                   "--invalid-pct",
                   "9",
                   "--truth",
                   truth,
                   NULL};
    cr_assert_eq(it_run(dir, "gen", gen, NULL, 120000), 0, "lambda-gen failed (see %s/gen.err)",
                 dir);
    char *kcat[] = {"/usr/bin/kcat",
                    "-C",
                    "-b",
                    bs,
                    "-t",
                    "orders",
                    "-o",
                    "beginning",
                    "-e",
                    "-q",
                    "-f",
                    "%p %o %T %K %S %k%s\n",
                    NULL};
    cr_assert_eq(it_run(dir, "kcat", kcat, NULL, 60000), 0, "kcat failed (see %s/kcat.err)", dir);
    it_stop(&dk);

    it_truth_load(&t, truth);
    cr_assert_eq(t.produced, 10000);
    /* The mix must exercise every path, or an exact match proves little. */
    cr_assert_gt(t.duplicates, 0);
    cr_assert_gt(t.late, 0);
    for (int r = 1; r < EV_REASON_COUNT; r++)
        cr_assert_gt(t.rejects[r], 0, "no %s event", ev_reason_name((enum ev_reason)r));

    snprintf(out, sizeof(out), "%s/kcat.out", dir);
    buf = it_read_file(out, &len);
    cr_assert_not_null(buf);
    m = parse_kcat(buf, len, &n);
    cr_assert_eq((int64_t)n, t.produced, "consumed %zu, truth produced %" PRId64, n, t.produced);
    check_timestamps(m, n);
    check_one_partition_per_key(m, n);
    qsort(m, n, sizeof(*m), by_log_position);
    recount(&rc, m, n);
    check_against_truth(&rc, &t);

    recount_free(&rc);
    it_truth_free(&t);
    free(m);
    free(buf);
}

/* Splits NDJSON into messages without key or timestamp, in line order. */
static struct msg *split_lines(char *buf, size_t len, size_t *n)
{
    struct msg *m = NULL;
    size_t cap = 0;

    *n = 0;
    for (char *p = buf, *nl; p < buf + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(buf + len - p));
        cr_assert_not_null(nl, "last line not ended by a newline");
        if (*n == cap) {
            cap = cap ? cap * 2 : 16384;
            m = realloc(m, cap * sizeof(*m));
            cr_assert_not_null(m);
        }
        m[*n] =
            (struct msg){.offset = (int64_t)*n, .ts_ms = -1, .payload = p, .len = (size_t)(nl - p)};
        (*n)++;
    }
    return m;
}

Test(gen, same_seed_gives_byte_identical_ndjson_that_matches_its_truth, .timeout = 180)
{
    char dir[512], t1[600], t2[600], t3[600], path[700];
    char *out1, *out2, *out3, *tr1, *tr2;
    size_t len1, len2, len3, n;
    struct it_truth t;
    struct recount rc;
    struct msg *m;

#define GEN_ARGS(seed, truth)                                                                      \
    {"lambda-gen",                                                                                 \
     "--stdout",                                                                                   \
     "--count",                                                                                    \
     "5000",                                                                                       \
     "--merchants",                                                                                \
     "20",                                                                                         \
     "--seed",                                                                                     \
     seed,                                                                                         \
     "--start-time",                                                                               \
     "1795255200000",                                                                              \
     "--late-pct",                                                                                 \
     "5",                                                                                          \
     "--dup-pct",                                                                                  \
     "5",                                                                                          \
     "--invalid-pct",                                                                              \
     "10",                                                                                         \
     "--truth",                                                                                    \
     truth,                                                                                        \
     NULL}
    it_tmpdir("gen", dir);
    snprintf(t1, sizeof(t1), "%s/truth1", dir);
    snprintf(t2, sizeof(t2), "%s/truth2", dir);
    snprintf(t3, sizeof(t3), "%s/truth3", dir);
    char *a1[] = GEN_ARGS("3", t1), *a2[] = GEN_ARGS("3", t2), *a3[] = GEN_ARGS("4", t3);
    cr_assert_eq(it_run(dir, "gen1", a1, NULL, 60000), 0);
    cr_assert_eq(it_run(dir, "gen2", a2, NULL, 60000), 0);
    cr_assert_eq(it_run(dir, "gen3", a3, NULL, 60000), 0);

    snprintf(path, sizeof(path), "%s/gen1.out", dir);
    out1 = it_read_file(path, &len1);
    snprintf(path, sizeof(path), "%s/gen2.out", dir);
    out2 = it_read_file(path, &len2);
    snprintf(path, sizeof(path), "%s/gen3.out", dir);
    out3 = it_read_file(path, &len3);
    cr_assert(out1 && out2 && out3);
    cr_assert_gt(len1, 0);
    cr_expect(len1 == len2 && memcmp(out1, out2, len1) == 0, "same seed, different output");
    cr_expect(len1 != len3 || memcmp(out1, out3, len1) != 0, "another seed, same output");
    tr1 = it_read_file(t1, NULL);
    tr2 = it_read_file(t2, NULL);
    cr_assert(tr1 && tr2);
    cr_expect_str_eq(tr1, tr2, "same seed, different truth");

    /* Without a message timestamp there is no future_time, and the truth says none. */
    it_truth_load(&t, t1);
    cr_assert_eq(t.produced, 5000);
    cr_expect_eq(t.rejects[EV_FUTURE_TIME], 0);
    m = split_lines(out1, len1, &n);
    recount(&rc, m, n);
    check_against_truth(&rc, &t);

    recount_free(&rc);
    it_truth_free(&t);
    free(m);
    free(out1);
    free(out2);
    free(out3);
    free(tr1);
    free(tr2);
}
