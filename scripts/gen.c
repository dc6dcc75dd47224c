/* lambda-gen - a synthetic order producer, and the ground truth of what it produced.
 *
 * Event i has the virtual time vt = start_time + i * time_step; it goes to Kafka with message
 * timestamp vt and key = merchant id (Java's murmur2 partitioner), or as one NDJSON line to
 * stdout. Merchants are Zipf-skewed. A fraction of events is late (event time 12 to 40 minutes
 * before start_time, or with --late-days D anywhere from 12 minutes to D days before it; only
 * once its partition has had an ordinary event, so it is behind any watermark), duplicated (an
 * earlier valid order re-sent with another amount and time: the first copy is the truth) or invalid
 * (one reject reason each). All draws come from one seeded generator: same flags, same output.
 * --truth writes per merchant and per merchant-minute the count and revenue of the valid distinct
 * orders, plus the totals of each kind. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <uthash.h>

#include "cfg.h"
#include "ev.h"
#include "kafka.h"
#include "log.h"
#include "shard.h"
#include "sig.h"
#include "tm.h"

static const struct cfg_key keys[] = {
    {"brokers", CFG_STR, NULL, "Kafka bootstrap servers (not needed with --stdout)"},
    {"topic", CFG_STR, "orders", "Kafka topic"},
    {"count", CFG_INT, "1000", "events to produce (0: until SIGINT/SIGTERM)"},
    {"rate", CFG_INT, "0", "events per second (0: as fast as possible)"},
    {"merchants", CFG_INT, "100", "number of merchants (Zipf-skewed, m-1 the busiest)"},
    {"late_pct", CFG_STR, "0", "percent of events that are late (valid, 12-40 min old)"},
    {"late_days", CFG_INT, "0", "late events reach this many days before start_time (0: 40 min)"},
    {"dup_pct", CFG_STR, "0", "percent of events that re-send an earlier order"},
    {"invalid_pct", CFG_STR, "0", "percent of events that are invalid (each reject reason)"},
    {"seed", CFG_INT, "1", "random seed; order ids are o<seed>-<i>"},
    {"start_time", CFG_STR, NULL, "virtual time of event 0, RFC 3339 or epoch ms (default: now)"},
    {"time_step", CFG_MS, NULL, "virtual time between events (default: 1000/rate ms, or 10ms)"},
    {"truth", CFG_STR, NULL, "write the ground truth of what was produced to this file"},
    {"stdout", CFG_BOOL, "false", "write NDJSON to stdout instead of Kafka"},
    {"compression", CFG_STR, "lz4", "Kafka compression codec"},
    {"partitioner", CFG_STR, "murmur2_random",
     "the producer's partitioner: murmur2_random (Java's) or consistent_random"},
    {"kafka_timeout", CFG_MS, "10s",
     "how long Kafka metadata and the final flush may take (a flush after a stop signal: 5 s)"},
    {"log_level", CFG_STR, "info", "debug, info, warn or error"},
    {"config", CFG_STR, NULL, "read key = value lines from this file first"},
    {NULL, 0, NULL, NULL},
};

enum kind { K_VALID, K_LATE, K_DUP, K_INVALID };
#define RING  4096
#define NPART 1024

struct minute_row {
    struct {
        int32_t merchant;
        int64_t minute_ms;
    } key;
    int64_t count, revenue;
    UT_hash_handle hh;
};

struct gen {
    uint64_t rng;
    int nmerchants, npart;
    enum shard_partitioner partitioner; /* the producer's, for partition_of */
    double *cdf;
    double late_pct, dup_pct, invalid_pct;
    int64_t seed, start_ms, step_ms;
    int64_t late_reach_ms; /* late events lie 12 minutes to this much before start_ms */
    bool has_normal[NPART];
    struct {
        int32_t merchant;
        int64_t i;
    } ring[RING];
    int64_t nring;
    /* truth */
    int64_t produced, valid, dups, late, invalid, rejects[EV_REASON_COUNT];
    int64_t *m_count, *m_revenue;
    struct minute_row *minutes;
    /* output */
    rd_kafka_t *rk;
    const char *topic;
    FILE *out;
    int64_t failed;
};

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t signals_seen; /* a second one abandons the final flush */

static void on_signal(int sig)
{
    stop_requested = sig;
    signals_seen++;
}

static uint64_t next_u64(struct gen *g)
{
    uint64_t z = (g->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double next_unit(struct gen *g)
{
    return (double)(next_u64(g) >> 11) / 9007199254740992.0;
}

static int64_t next_below(struct gen *g, int64_t n)
{
    return (int64_t)(next_u64(g) % (uint64_t)n);
}

static int pick_merchant(struct gen *g)
{
    double u = next_unit(g);
    int lo = 0, hi = g->nmerchants - 1;

    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (g->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The partition the producer puts key in: librdkafka's own partitioner function. */
static int partition_of(const struct gen *g, const char *key)
{
    return shard_partition_of(g->partitioner, key, strlen(key), g->npart);
}

/* Writes event_time in one of the three accepted forms. */
static void format_time(struct gen *g, int64_t t_ms, char *out, size_t size)
{
    int64_t form = next_below(g, 10);
    char ts[TM_RFC3339_LEN];

    if (form < 6) {
        tm_format_rfc3339(t_ms, ts);
        snprintf(out, size, "\"%s\"", ts);
    } else if (form < 7) {
        /* the same instant, written at +02:00 */
        tm_format_rfc3339(t_ms + 2 * TM_HOUR_MS, ts);
        ts[23] = '\0';
        snprintf(out, size, "\"%s+02:00\"", ts);
    } else {
        snprintf(out, size, "%" PRId64, t_ms);
    }
}

static void count_truth(struct gen *g, int m, int64_t amount, int64_t event_ms)
{
    struct minute_row *r, key;

    g->valid++;
    g->m_count[m]++;
    g->m_revenue[m] += amount;
    memset(&key, 0, sizeof(key));
    key.key.merchant = m;
    key.key.minute_ms = tm_floor(event_ms, TM_MINUTE_MS);
    HASH_FIND(hh, g->minutes, &key.key, sizeof(key.key), r);
    if (!r) {
        r = calloc(1, sizeof(*r));
        r->key = key.key;
        HASH_ADD(hh, g->minutes, key, sizeof(r->key), r);
    }
    r->count++;
    r->revenue += amount;
}

static void emit(struct gen *g, const char *key, const char *payload, size_t len, int64_t ts_ms)
{
    if (g->out) {
        fwrite(payload, 1, len, g->out);
        fputc('\n', g->out);
        return;
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            g->rk, RD_KAFKA_V_TOPIC(g->topic), RD_KAFKA_V_KEY((void *)key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_TIMESTAMP(ts_ms),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            log_error("gen", "produce_failed err=\"%s\"", rd_kafka_err2str(err));
            g->failed++;
            break;
        }
        rd_kafka_poll(g->rk, 50);
    }
    rd_kafka_poll(g->rk, 0);
}

/* Builds invalid event i of merchant m; returns the reason it must get. */
static enum ev_reason make_invalid(struct gen *g, int64_t i, const char *mid, int64_t vt, char *key,
                                   char *buf, size_t size, size_t *len)
{
    int nkinds = g->out ? 8 : 9; /* future_time needs a message timestamp */
    enum ev_reason r = (enum ev_reason)(1 + next_below(g, nkinds));
    char oid[48];

    snprintf(oid, sizeof(oid), "o%" PRId64 "-%" PRId64, g->seed, i);
    strcpy(key, mid);
    switch (r) {
    case EV_BAD_JSON:
        if (next_below(g, 2))
            *len = (size_t)snprintf(buf, size, "{\"order_id\":\"%s\",\"merchant_id\":\"%s\",", oid,
                                    mid);
        else /* not UTF-8 */
            *len = (size_t)snprintf(
                buf, size, "{\"order_id\":\"%s\xff\xfe\",\"merchant_id\":\"%s\"}", oid, mid);
        break;
    case EV_NOT_OBJECT:
        *len = (size_t)snprintf(buf, size, "[\"%s\",\"%s\",100]", oid, mid);
        break;
    case EV_MISSING_FIELD:
        *len = (size_t)snprintf(
            buf, size, "{\"order_id\":\"%s\",\"merchant_id\":\"%s\",\"event_time\":%" PRId64 "}",
            oid, mid, vt);
        break;
    case EV_BAD_TYPE:
        *len = (size_t)snprintf(buf, size,
                                "{\"order_id\":\"%s\",\"merchant_id\":\"%s\",\"amount_cents\":12.5,"
                                "\"event_time\":%" PRId64 "}",
                                oid, mid, vt);
        break;
    case EV_OUT_OF_RANGE:
        *len = (size_t)snprintf(buf, size,
                                "{\"order_id\":\"%s\",\"merchant_id\":\"%s\",\"amount_cents\":%s,"
                                "\"event_time\":%" PRId64 "}",
                                oid, mid, next_below(g, 2) ? "-1" : "1000000000001", vt);
        break;
    case EV_BAD_MERCHANT_ID:
        strcpy(key, "bad merchant");
        *len = (size_t)snprintf(buf, size,
                                "{\"order_id\":\"%s\",\"merchant_id\":\"bad merchant\","
                                "\"amount_cents\":100,\"event_time\":%" PRId64 "}",
                                oid, vt);
        break;
    case EV_BAD_ORDER_ID:
        *len = (size_t)snprintf(buf, size,
                                "{\"order_id\":\"\",\"merchant_id\":\"%s\",\"amount_cents\":100,"
                                "\"event_time\":%" PRId64 "}",
                                mid, vt);
        break;
    case EV_BAD_TIME:
        *len = (size_t)snprintf(buf, size,
                                "{\"order_id\":\"%s\",\"merchant_id\":\"%s\",\"amount_cents\":100,"
                                "\"event_time\":\"yesterday\"}",
                                oid, mid);
        break;
    default:
        r = EV_FUTURE_TIME;
        *len = (size_t)snprintf(buf, size,
                                "{\"order_id\":\"%s\",\"merchant_id\":\"%s\",\"amount_cents\":100,"
                                "\"event_time\":%" PRId64 "}",
                                oid, mid, vt + 6 * TM_MINUTE_MS);
        break;
    }
    return r;
}

static void gen_one(struct gen *g, int64_t i)
{
    static const char *const channels[] = {"web", "app", "pos"};
    int64_t vt = g->start_ms + i * g->step_ms, amount, event_ms, oi = i;
    double u = next_unit(g) * 100.0;
    int m = pick_merchant(g), p;
    char mid[32], key[64], buf[512], et[48];
    size_t len;
    enum kind k = K_VALID;

    if (u < g->invalid_pct)
        k = K_INVALID;
    else if (u < g->invalid_pct + g->dup_pct && g->nring > 0)
        k = K_DUP;
    else if (u < g->invalid_pct + g->dup_pct + g->late_pct)
        k = K_LATE;
    if (k == K_DUP) {
        int64_t slot = next_below(g, g->nring < RING ? g->nring : RING);
        m = g->ring[slot].merchant;
        oi = g->ring[slot].i;
    }
    snprintf(mid, sizeof(mid), "m-%d", m + 1);
    p = partition_of(g, mid);
    if (k == K_LATE && !g->has_normal[p])
        k = K_VALID;
    g->produced++;
    if (k == K_INVALID) {
        enum ev_reason r = make_invalid(g, i, mid, vt, key, buf, sizeof(buf), &len);
        g->invalid++;
        g->rejects[r]++;
        emit(g, key, buf, len, vt);
        return;
    }
    amount = 100 + next_below(g, 100000);
    event_ms = vt - next_below(g, 3000);
    if (k == K_LATE)
        event_ms = g->start_ms - 12 * TM_MINUTE_MS - next_below(g, g->late_reach_ms);
    format_time(g, event_ms, et, sizeof(et));
    len = (size_t)snprintf(buf, sizeof(buf),
                           "{\"order_id\":\"o%" PRId64 "-%" PRId64 "\",\"merchant_id\":\"%s\","
                           "\"amount_cents\":%" PRId64 ",\"event_time\":%s,\"channel\":\"%s\"}",
                           g->seed, oi, mid, amount, et, channels[next_below(g, 3)]);
    if (k == K_DUP) {
        g->dups++;
    } else {
        count_truth(g, m, amount, event_ms);
        g->ring[g->nring % RING].merchant = m;
        g->ring[g->nring % RING].i = i;
        g->nring++;
        if (k == K_LATE)
            g->late++;
        else
            g->has_normal[p] = true;
    }
    emit(g, mid, buf, len, vt);
}

static int cmp_minute(const void *a, const void *b)
{
    const struct minute_row *x = *(struct minute_row *const *)a,
                            *y = *(struct minute_row *const *)b;

    if (x->key.merchant != y->key.merchant)
        return x->key.merchant < y->key.merchant ? -1 : 1;
    return x->key.minute_ms < y->key.minute_ms ? -1 : x->key.minute_ms > y->key.minute_ms;
}

static int write_truth(struct gen *g, const char *path)
{
    FILE *f = fopen(path, "w");
    unsigned n = HASH_COUNT(g->minutes), k = 0;
    struct minute_row **rows = calloc(n + 1, sizeof(*rows)), *r, *tmp;

    if (!f || !rows) {
        free(rows);
        if (f)
            fclose(f);
        return -1;
    }
    fprintf(f, "# lambda-gen truth: seed=%" PRId64 " start_ms=%" PRId64 " step_ms=%" PRId64 "\n",
            g->seed, g->start_ms, g->step_ms);
    fprintf(f,
            "produced %" PRId64 "\nvalid %" PRId64 "\nduplicates %" PRId64 "\nlate %" PRId64
            "\ninvalid %" PRId64 "\n",
            g->produced, g->valid, g->dups, g->late, g->invalid);
    for (int r2 = 1; r2 < EV_REASON_COUNT; r2++)
        fprintf(f, "reject %s %" PRId64 "\n", ev_reason_name((enum ev_reason)r2), g->rejects[r2]);
    for (int m = 0; m < g->nmerchants; m++)
        if (g->m_count[m])
            fprintf(f, "merchant m-%d %" PRId64 " %" PRId64 "\n", m + 1, g->m_count[m],
                    g->m_revenue[m]);
    HASH_ITER(hh, g->minutes, r, tmp)
    rows[k++] = r;
    qsort(rows, n, sizeof(*rows), cmp_minute);
    for (k = 0; k < n; k++)
        fprintf(f, "minute m-%d %" PRId64 " %" PRId64 " %" PRId64 "\n", rows[k]->key.merchant + 1,
                rows[k]->key.minute_ms, rows[k]->count, rows[k]->revenue);
    free(rows);
    return fclose(f) == 0 ? 0 : -1;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct gen *g = opaque;

    (void)rk;
    if (m->err) {
        g->failed++;
        log_error("gen", "delivery_failed err=\"%s\"", rd_kafka_err2str(m->err));
    }
}

static int open_kafka(struct gen *g, const struct cfg *c, struct lerr *e)
{
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new(c, e);

    if (!conf)
        return -1;
    if (kafka_conf_set(conf, "compression.codec", cfg_str(c, "compression"), e) ||
        kafka_conf_set(conf, "enable.idempotence", "true", e) ||
        kafka_conf_set(conf, "partitioner", cfg_str(c, "partitioner"), e) ||
        kafka_conf_set(conf, "linger.ms", "5", e) ||
        kafka_conf_set(conf, "queue.buffering.max.messages", "500000", e)) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, g);
    g->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!g->rk) {
        rd_kafka_conf_destroy(conf);
        return lerr_set(e, "cannot create producer: %s", errstr);
    }
    if (kafka_partition_count(g->rk, cfg_str(c, "topic"), (int)cfg_ms(c, "kafka_timeout"),
                              &g->npart, e) != 0)
        return -1;
    if (g->npart > NPART)
        return lerr_set(e, "topic has %d partitions, at most %d supported", g->npart, NPART);
    return 0;
}

static int parse_pct(const struct cfg *c, const char *name, double *out, struct lerr *e)
{
    const char *v = cfg_str(c, name);
    char *end;

    *out = strtod(v, &end);
    if (*end || end == v || *out < 0 || *out > 100)
        return lerr_set(e, "bad value for '%s': '%s' is not a percentage (0..100)", name, v);
    return 0;
}

static int setup(struct gen *g, const struct cfg *c, struct lerr *e)
{
    const char *st = cfg_str(c, "start_time");
    int64_t rate = cfg_int(c, "rate");
    double sum = 0;

    if (parse_pct(c, "late_pct", &g->late_pct, e) || parse_pct(c, "dup_pct", &g->dup_pct, e) ||
        parse_pct(c, "invalid_pct", &g->invalid_pct, e))
        return -1;
    if (g->late_pct + g->dup_pct + g->invalid_pct > 100)
        return lerr_set(e, "late_pct + dup_pct + invalid_pct exceed 100");
    g->late_reach_ms = cfg_int(c, "late_days") > 0
                           ? cfg_int(c, "late_days") * TM_DAY_MS - 12 * TM_MINUTE_MS
                           : 28 * TM_MINUTE_MS;
    g->nmerchants = (int)cfg_int(c, "merchants");
    if (g->nmerchants < 1 || g->nmerchants > 10000000)
        return lerr_set(e, "bad value for 'merchants': must be 1..10000000");
    g->seed = cfg_int(c, "seed");
    g->rng = (uint64_t)g->seed * 0x2545f4914f6cdd1dULL + 1;
    g->start_ms = tm_now_ms();
    if (st && tm_parse_rfc3339(st, strlen(st), &g->start_ms) != 0) {
        char *end;
        g->start_ms = strtoll(st, &end, 10);
        if (*end || end == st)
            return lerr_set(e, "bad value for 'start_time': '%s' is not RFC 3339 or epoch ms", st);
    }
    g->step_ms = cfg_str(c, "time_step") ? cfg_ms(c, "time_step") : rate > 0 ? 1000 / rate : 10;
    g->cdf = malloc(sizeof(double) * (size_t)g->nmerchants);
    g->m_count = calloc((size_t)g->nmerchants, sizeof(int64_t));
    g->m_revenue = calloc((size_t)g->nmerchants, sizeof(int64_t));
    if (!g->cdf || !g->m_count || !g->m_revenue)
        return lerr_set(e, "out of memory for %d merchants", g->nmerchants);
    for (int m = 0; m < g->nmerchants; m++)
        g->cdf[m] = (sum += 1.0 / (m + 1)); /* Zipf, s = 1 */
    for (int m = 0; m < g->nmerchants; m++)
        g->cdf[m] /= sum;
    g->npart = 1;
    g->topic = cfg_str(c, "topic");
    if (shard_partitioner_parse(cfg_str(c, "partitioner"), &g->partitioner, e) != 0)
        return -1;
    if (g->partitioner == SHARD_PARTITIONER_NONE)
        return lerr_set(e, "bad partitioner '': want murmur2_random or consistent_random");
    return 0;
}

/* Keeps to the rate (sleeping ahead of schedule) and shows progress on a terminal. */
static void pace(struct gen *g, int64_t i, int64_t count, int64_t rate, int64_t t0,
                 int64_t *last_report)
{
    int64_t now = tm_mono_ms();

    if (rate > 0) {
        int64_t due = t0 + i * 1000 / rate;
        if (due > now) {
            int64_t ms = due - now;
            nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000}, NULL);
        }
    }
    if (isatty(STDERR_FILENO) && now - *last_report >= 1000) {
        *last_report = now;
        fprintf(stderr, "\rproduced %" PRId64 "/%" PRId64 " rate=%.0f/s ", i, count,
                now > t0 ? (double)i * 1000.0 / (double)(now - t0) : 0.0);
    }
    (void)g;
}

static void gen_release(struct gen *g)
{
    struct minute_row *r, *tmp;

    HASH_ITER(hh, g->minutes, r, tmp)
    {
        HASH_DEL(g->minutes, r);
        free(r);
    }
    free(g->cdf);
    free(g->m_count);
    free(g->m_revenue);
    if (g->rk)
        rd_kafka_destroy(g->rk);
}

/* Waits for every message to be delivered, at most timeout_ms, or until a second stop signal:
 * Ctrl-C reaches the whole process group, so the broker may be gone already, and whoever
 * stops us then (make demo) asks again rather than wait for a flush that cannot finish. */
static int flush_kafka(struct gen *g, int64_t timeout_ms)
{
    int64_t end = tm_mono_ms() + timeout_ms;

    while (rd_kafka_outq_len(g->rk) > 0 && tm_mono_ms() < end && signals_seen < 2)
        rd_kafka_poll(g->rk, 100);
    if (rd_kafka_outq_len(g->rk) > 0 && signals_seen >= 2) {
        log_warn("gen", "flush_abandoned undelivered=%d reason=second_signal",
                 rd_kafka_outq_len(g->rk));
        rd_kafka_purge(g->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    }
    return rd_kafka_outq_len(g->rk) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct cfg c;
    struct lerr e = {{0}};
    struct gen *g = calloc(1, sizeof(*g));
    int64_t count, rate, t0, last_report = 0, i = 0;
    int rc = 1;

    if (cfg_load(&c, keys, argc, argv, &e) != 0 || (c.nargs && lerr_set(&e,
                                                                        "unexpected "
                                                                        "argument '%s'",
                                                                        c.args[0]))) {
        fprintf(stderr, "lambda-gen: %s\n", e.msg);
        rc = 2;
        goto out;
    }
    if (c.want_help) {
        cfg_print_help(&c, "usage: lambda-gen --count N --rate N --merchants N [--late-pct P "
                           "--dup-pct P --invalid-pct P --seed S --start-time T --truth FILE] "
                           "[--brokers B | --stdout]\n\nA synthetic order producer: to Kafka "
                           "keyed by merchant id, or NDJSON on stdout.");
        rc = 0;
        goto out;
    }
    if (setup(g, &c, &e) != 0) {
        fprintf(stderr, "lambda-gen: %s\n", e.msg);
        rc = 2;
        goto out;
    }
    if (cfg_bool(&c, "stdout"))
        g->out = stdout;
    else if (open_kafka(g, &c, &e) != 0) {
        log_error("gen", "kafka_failed err=\"%s\"", e.msg);
        goto out;
    }
    sig_catch_stop(on_signal, true); /* a line being written is written whole */
    count = cfg_int(&c, "count");
    rate = cfg_int(&c, "rate");
    t0 = tm_mono_ms();
    log_info("gen",
             "started count=%" PRId64 " rate=%" PRId64 " merchants=%d partitions=%d "
             "seed=%" PRId64 " start_ms=%" PRId64 " step_ms=%" PRId64,
             count, rate, g->nmerchants, g->npart, g->seed, g->start_ms, g->step_ms);
    for (i = 0; (count == 0 || i < count) && !stop_requested; i++) {
        pace(g, i, count, rate, t0, &last_report);
        gen_one(g, i);
    }
    /* Stopped by a signal, we flush briefly: the broker may be gone (Ctrl-C reaches it too). */
    if (g->rk && flush_kafka(g, stop_requested ? 5000 : cfg_ms(&c, "kafka_timeout") + 20000) != 0)
        log_error("gen", "flush_failed undelivered=%d", rd_kafka_outq_len(g->rk));
    if (isatty(STDERR_FILENO))
        fputc('\n', stderr);
    if (cfg_str(&c, "truth") && write_truth(g, cfg_str(&c, "truth")) != 0) {
        log_error("gen", "truth_failed path=%s", cfg_str(&c, "truth"));
        goto out;
    }
    if (g->out)
        fflush(g->out);
    log_info("gen",
             "done produced=%" PRId64 " valid=%" PRId64 " duplicates=%" PRId64 " late=%" PRId64
             " invalid=%" PRId64 " failed=%" PRId64 " seconds=%.2f",
             g->produced, g->valid, g->dups, g->late, g->invalid, g->failed,
             (double)(tm_mono_ms() - t0) / 1000.0);
    rc = g->failed || (g->rk && rd_kafka_outq_len(g->rk) > 0) ? 1 : 0;
out:
    gen_release(g);
    free(g);
    cfg_release(&c);
    return rc;
}
