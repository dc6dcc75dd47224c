#include "kafka.h"

#include <string.h>

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
