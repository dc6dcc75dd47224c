/* kafka.c - librdkafka set-up: the configuration, consumers, assignment, and the one retry
 * loop for a broker that is away. */
#include "kafka.h"

#include <string.h>
#include <time.h>

#include "log.h"

/* librdkafka's own log lines, in our format: level 0..7 as syslog. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    log_at(level <= 3   ? LOG_WARN
           : level <= 6 ? LOG_INFO
                        : LOG_DEBUG,
           "kafka", "rdkafka fac=%s text=\"%s\"", fac, buf);
}

int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, struct lerr *e)
{
    char errstr[256];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return lerr_set(e, "bad kafka property '%s': %s", name, errstr);
    return 0;
}

rd_kafka_conf_t *kafka_conf_new(const struct cfg *c, struct lerr *e)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *brokers = cfg_str(c, "brokers");

    if (!brokers || !*brokers) {
        lerr_set(e, "no brokers configured: set 'brokers' (--brokers host:port or "
                    "LAMBDA_BROKERS)");
        goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    if (kafka_conf_set(conf, "bootstrap.servers", brokers, e) != 0)
        goto fail;
    for (int i = 0; i < c->nkafka; i++)
        if (kafka_conf_set(conf, c->kafka_name[i], c->kafka_val[i], e) != 0)
            goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, int *out,
                          struct lerr *e)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err;
    int rc = -1;

    err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    if (err) {
        lerr_set(e, "cannot read metadata of topic '%s' within %d ms: %s", topic, timeout_ms,
                 rd_kafka_err2str(err));
        goto out;
    }
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        lerr_set(e, "topic '%s' is not available: %s", topic,
                 md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "no metadata");
        goto out;
    }
    *out = md->topics[0].partition_cnt;
    rc = 0;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return rc;
}

int kafka_watermarks(rd_kafka_t *rk, const char *topic, int partition, int timeout_ms, int64_t *low,
                     int64_t *high, struct lerr *e)
{
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(rk, topic, partition, low, high, timeout_ms);

    if (err)
        return lerr_set(e, "cannot read offsets of '%s' partition %d within %d ms: %s", topic,
                        partition, timeout_ms, rd_kafka_err2str(err));
    return 0;
}

/* One ListOffsets question for every partition of l (offset: RD_KAFKA_OFFSET_END or _BEGINNING),
 * answered into out in the order of partitions. */
static int ask_offsets(rd_kafka_t *rk, const char *topic, const int32_t *partitions, int n,
                       int64_t which, int timeout_ms, int64_t *out, struct lerr *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    rd_kafka_resp_err_t err;
    int rc = -1;

    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, partitions[i])->offset = which;
    err = rd_kafka_offsets_for_times(rk, l, timeout_ms);
    if (err) {
        lerr_set(e, "cannot read offsets of '%s' within %d ms: %s", topic, timeout_ms,
                 rd_kafka_err2str(err));
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(l, topic, partitions[i]);
        /* A partition left unanswered keeps the negative offset it was asked with. */
        if (!p || p->err || p->offset < 0) {
            lerr_set(e, "cannot read offsets of '%s' partition %d within %d ms: %s", topic,
                     partitions[i], timeout_ms,
                     p && p->err ? rd_kafka_err2str(p->err) : "no answer");
            goto out;
        }
        out[i] = p->offset;
    }
    rc = 0;
out:
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

int kafka_watermarks_of(rd_kafka_t *rk, const char *topic, const int32_t *partitions, int n,
                        int timeout_ms, int64_t *low, int64_t *high, struct lerr *e)
{
    if (n == 0)
        return 0;
    if (ask_offsets(rk, topic, partitions, n, RD_KAFKA_OFFSET_END, timeout_ms, high, e) != 0 ||
        (low &&
         ask_offsets(rk, topic, partitions, n, RD_KAFKA_OFFSET_BEGINNING, timeout_ms, low, e) != 0))
        return -1;
    return 0;
}

static bool is_given(const struct cfg *c, const char *name)
{
    for (int i = 0; i < c->nkafka; i++)
        if (strcmp(c->kafka_name[i], name) == 0)
            return true;
    return false;
}

rd_kafka_t *kafka_consumer_new(const struct cfg *c, const struct kafka_prop *props, size_t nprops,
                               kafka_error_fn *on_error, void *opaque, struct lerr *e)
{
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new(c, e);
    rd_kafka_t *rk;

    if (!conf)
        return NULL;
    for (size_t i = 0; i < nprops; i++)
        if ((!props[i].is_default || !is_given(c, props[i].name)) &&
            kafka_conf_set(conf, props[i].name, props[i].value, e) != 0)
            goto fail;
    if (kafka_conf_set(conf, "group.id", cfg_str(c, "group"), e) != 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", e) != 0)
        goto fail;
    if (on_error) {
        rd_kafka_conf_set_opaque(conf, opaque);
        rd_kafka_conf_set_error_cb(conf, on_error);
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        lerr_set(e, "cannot create a Kafka consumer: %s", errstr);
        goto fail;
    }
    conf = NULL; /* rd_kafka_new() owns it now */
    rd_kafka_poll_set_consumer(rk);
    return rk;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int kafka_assign(rd_kafka_t *rk, const char *topic, const struct kafka_pos *pos, int n,
                 struct lerr *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    rd_kafka_resp_err_t err;

    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, pos[i].partition)->offset = pos[i].offset;
    err = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return lerr_set(e, "cannot assign partitions of '%s': %s", topic, rd_kafka_err2str(err));
    return 0;
}

/* One question to the cluster: the partition count when count is set, else the watermarks. */
struct ask {
    rd_kafka_t *rk;
    const char *topic;
    int partition, timeout_ms;
    int *count;
    int64_t *low, *high;
};

/* The retry loop: asks until the cluster answers or *stop is set (1). A question waits at most
 * a second at a time, so a stop is seen within about a second even while no broker answers
 * (Ctrl-C reaches the broker of make demo too); the warning repeats once per timeout_ms. */
static int ask_until_answered(const struct ask *a, volatile sig_atomic_t *stop, const char *who)
{
    int slice_ms = a->timeout_ms < 1000 ? a->timeout_ms : 1000;
    int64_t waited_ms = 0, said_ms = -1;
    struct lerr ke;

    while (a->count
               ? kafka_partition_count(a->rk, a->topic, slice_ms, a->count, &ke)
               : kafka_watermarks(a->rk, a->topic, a->partition, slice_ms, a->low, a->high, &ke)) {
        waited_ms += slice_ms;
        if (said_ms < 0 ? waited_ms >= a->timeout_ms
                        : waited_ms - said_ms >= a->timeout_ms + 1000) {
            log_warn(who, "kafka_unreachable err=\"%s\" action=retrying", ke.msg);
            said_ms = waited_ms;
        }
        for (int i = 0; i < 10 && !*stop; i++)
            nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
        waited_ms += 1000;
        if (*stop)
            return 1;
    }
    return 0;
}

int kafka_partition_count_wait(rd_kafka_t *rk, const char *topic, int timeout_ms,
                               volatile sig_atomic_t *stop, const char *who, int *out)
{
    struct ask a = {.rk = rk, .topic = topic, .timeout_ms = timeout_ms, .count = out};

    return ask_until_answered(&a, stop, who);
}

int kafka_watermarks_wait(rd_kafka_t *rk, const char *topic, int partition, int timeout_ms,
                          volatile sig_atomic_t *stop, const char *who, int64_t *low, int64_t *high)
{
    struct ask a = {.rk = rk,
                    .topic = topic,
                    .partition = partition,
                    .timeout_ms = timeout_ms,
                    .low = low,
                    .high = high};

    return ask_until_answered(&a, stop, who);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

struct kafka_reach kafka_reach(int64_t next, int64_t cut, enum kafka_seen what, int64_t offset,
                               int64_t log_start)
{
    struct kafka_reach r = {.next = next};
    /* The jump is [next, offset): no message was given there. A message moves the reader
     * past itself, the end only to where it stands. */
    int64_t jump_end = min64(offset, cut);
    int64_t to = min64(what == KAFKA_SEEN_MESSAGE ? offset + 1 : offset, cut);

    if (to > next) {
        int64_t deleted_to = log_start < 0 ? jump_end : min64(log_start, jump_end);
        r.lost = deleted_to > next ? deleted_to - next : 0;
        r.take = what == KAFKA_SEEN_MESSAGE && offset < cut;
        r.next = to;
    }
    r.done = r.next >= cut;
    return r;
}
