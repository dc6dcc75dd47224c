/* lambda-devkafka - an embedded Kafka for development and tests.
 *
 * librdkafka's mock cluster (rdkafka_mock.h): a real Kafka protocol peer, in memory, on
 * 127.0.0.1. Prints the bootstrap address on stdout (and into --bootstrap-file), then serves
 * until SIGINT/SIGTERM. SIGUSR1 takes every broker down, SIGUSR2 brings them back: tests
 * use it to stage a broker outage. Like a real broker with short retention, each partition
 * keeps only its newest ~5 MiB.
 *
 * The cluster lives in memory. With --persist FILE it writes every retained message to FILE
 * when it stops and produces them back, at the same offsets, when it starts, so a data
 * directory whose positions refer to this topic stays valid across restarts (make demo). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "cfg.h"
#include "log.h"
#include "sig.h"
#include "tm.h"

static const struct cfg_key keys[] = {
    {"brokers", CFG_INT, "1", "number of brokers in the cluster"},
    {"partitions", CFG_INT, "4", "partitions of the topic"},
    {"topic", CFG_STR, "orders", "the topic to create"},
    {"bootstrap_file", CFG_STR, NULL, "also write the bootstrap address into this file"},
    {"persist", CFG_STR, NULL, "save the topic to this file on stop, load it back on start"},
    {"log_level", CFG_STR, "info", "debug, info, warn or error"},
    {"config", CFG_STR, NULL, "read key = value lines from this file first"},
    {NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop_requested, want_down, want_up;

static void on_signal(int sig)
{
    stop_requested = sig;
}

/* SIGUSR1 takes every broker down, SIGUSR2 brings them back (tests of Kafka outages). */
static void on_broker_signal(int sig)
{
    if (sig == SIGUSR1)
        want_down = 1;
    else
        want_up = 1;
}

static int write_bootstrap(const char *path, const char *addr)
{
    char tmp[4096];
    FILE *f;

    /* Written whole, then renamed, so a test polling for the file never reads half of it. */
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", addr);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return -1;
    return 0;
}

/* The persist file: "LDK1", partitions, then per partition its low offset and message count,
 * then per message: partition, timestamp, key length (-1: none), key, value length, value. */
static int put(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int get(FILE *f, void *p, size_t n)
{
    return fread(p, 1, n, f) == n ? 0 : -1;
}

static int dump_partition(rd_kafka_t *c, const char *topic, int32_t p, int64_t low, int64_t high,
                          FILE *f)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    int64_t next = low, deadline = tm_mono_ms() + 30000;

    rd_kafka_topic_partition_list_add(l, topic, p)->offset = low;
    rd_kafka_assign(c, l);
    rd_kafka_topic_partition_list_destroy(l);
    while (next < high && tm_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        if (!m->err && m->partition == p && m->offset == next) {
            int64_t ts = rd_kafka_message_timestamp(m, NULL);
            int32_t klen = m->key ? (int32_t)m->key_len : -1, vlen = (int32_t)m->len;
            if (put(f, &p, 4) || put(f, &ts, 8) || put(f, &klen, 4) ||
                (klen > 0 && put(f, m->key, (size_t)klen)) || put(f, &vlen, 4) ||
                (vlen > 0 && put(f, m->payload, (size_t)vlen))) {
                rd_kafka_message_destroy(m);
                return -1;
            }
            next++;
        }
        rd_kafka_message_destroy(m);
    }
    return next == high ? 0 : -1;
}

static int persist_save(const char *addr, const char *topic, int nparts, const char *path)
{
    char tmp[4096], errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *c;
    int64_t low[1024], high[1024];
    FILE *f;
    int rc = -1;

    rd_kafka_conf_set(conf, "bootstrap.servers", addr, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "lambda-devkafka-persist", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!c)
        return -1;
    rd_kafka_poll_set_consumer(c);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f)
        goto out;
    for (int p = 0; p < nparts; p++)
        if (rd_kafka_query_watermark_offsets(c, topic, p, &low[p], &high[p], 5000))
            goto out;
    if (put(f, "LDK1", 4) || put(f, &nparts, 4))
        goto out;
    for (int p = 0; p < nparts; p++) {
        int64_t n = high[p] - low[p];
        if (put(f, &low[p], 8) || put(f, &n, 8))
            goto out;
    }
    for (int p = 0; p < nparts; p++)
        if (dump_partition(c, topic, p, low[p], high[p], f) != 0)
            goto out;
    if (fclose(f) != 0) {
        f = NULL;
        goto out;
    }
    f = NULL;
    rc = rename(tmp, path);
    log_info("devkafka", "persisted path=%s partitions=%d", path, nparts);
out:
    if (f)
        fclose(f);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return rc;
}

static int produce_one(rd_kafka_t *pr, const char *topic, int32_t p, int64_t ts, const void *key,
                       int32_t klen, const void *val, int32_t vlen)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            pr, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(p),
            RD_KAFKA_V_KEY((void *)key, klen > 0 ? (size_t)klen : 0),
            RD_KAFKA_V_VALUE((void *)val, vlen > 0 ? (size_t)vlen : 0), RD_KAFKA_V_TIMESTAMP(ts),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return err ? -1 : 0;
        rd_kafka_poll(pr, 50);
    }
}

/* Produces the saved messages back. Offsets below a partition's saved low offset (deleted
 * before the save) are filled with empty messages, so every saved message keeps its offset. */
static int persist_load(const char *addr, const char *topic, int nparts, const char *path,
                        struct lerr *e)
{
    char errstr[256], *key = malloc(1 << 20), *val = malloc(16 << 20);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *pr = NULL;
    int64_t lows[1024], counts[1024], total = 0;
    int32_t n = 0;
    FILE *f = fopen(path, "rb");
    int rc = -1;
    char magic[4];

    rd_kafka_conf_set(conf, "bootstrap.servers", addr, NULL, 0);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", NULL, 0);
    rd_kafka_conf_set(conf, "compression.codec", "lz4", NULL, 0);
    pr = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!f || !pr || !key || !val || get(f, magic, 4) || memcmp(magic, "LDK1", 4) ||
        get(f, &n, 4) || n != nparts) {
        lerr_set(e, "not a save of a %d-partition topic", nparts);
        goto out;
    }
    for (int p = 0; p < n; p++)
        if (get(f, &lows[p], 8) || get(f, &counts[p], 8)) {
            lerr_set(e, "truncated save");
            goto out;
        }
    for (int p = 0; p < n; p++) {
        for (int64_t i = 0; i < lows[p]; i++)
            if (produce_one(pr, topic, p, 0, NULL, -1, NULL, 0) != 0) {
                lerr_set(e, "cannot produce to partition %d", p);
                goto out;
            }
        total += counts[p];
    }
    for (int64_t i = 0; i < total; i++) {
        int32_t p, klen, vlen;
        int64_t ts;
        if (get(f, &p, 4) || get(f, &ts, 8) || get(f, &klen, 4) || klen >= (1 << 20) ||
            (klen > 0 && get(f, key, (size_t)klen)) || get(f, &vlen, 4) || vlen >= (16 << 20) ||
            (vlen > 0 && get(f, val, (size_t)vlen)) ||
            produce_one(pr, topic, p, ts, klen >= 0 ? key : NULL, klen, val, vlen) != 0) {
            lerr_set(e, "truncated save, or cannot produce message %" PRId64, i);
            goto out;
        }
    }
    rd_kafka_flush(pr, 30000);
    rc = rd_kafka_outq_len(pr) == 0 ? 0 : lerr_set(e, "messages not delivered within 30 s");
    log_info("devkafka", "loaded path=%s messages=%" PRId64, path, total);
out:
    if (f)
        fclose(f);
    if (pr)
        rd_kafka_destroy(pr);
    free(key);
    free(val);
    return rc;
}

static void set_all(rd_kafka_mock_cluster_t *mc, int nbrokers, int up)
{
    for (int b = 1; b <= nbrokers; b++) {
        if (up)
            rd_kafka_mock_broker_set_up(mc, b);
        else
            rd_kafka_mock_broker_set_down(mc, b);
    }
    log_warn("devkafka", "%s brokers=%d", up ? "brokers_up" : "brokers_down", nbrokers);
}

int main(int argc, char **argv)
{
    struct cfg c;
    struct lerr e = {{0}};
    char errstr[256];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    const char *addr, *bfile;
    int nbrokers, nparts, rc = 1;

    if (cfg_load(&c, keys, argc, argv, &e) != 0) {
        fprintf(stderr, "lambda-devkafka: %s\n", e.msg);
        cfg_release(&c);
        return 2;
    }
    if (c.want_help) {
        cfg_print_help(&c, "usage: lambda-devkafka [--brokers N] [--partitions N] [--topic T] "
                           "[--bootstrap-file F]\n\nAn embedded Kafka (librdkafka's mock "
                           "cluster) on 127.0.0.1, for development and tests.\nSIGUSR1 takes "
                           "the brokers down, SIGUSR2 brings them back; SIGTERM stops.");
        cfg_release(&c);
        return 0;
    }
    nbrokers = (int)cfg_int(&c, "brokers");
    nparts = (int)cfg_int(&c, "partitions");
    if (nbrokers < 1 || nbrokers > 16 || nparts < 1 || nparts > 1024 || c.nargs) {
        fprintf(stderr, "lambda-devkafka: --brokers must be 1..16, --partitions 1..1024, and "
                        "no arguments\n");
        cfg_release(&c);
        return 2;
    }
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    /* The mock brokers' sockets take their options from this handle. A real broker sets
     * TCP_NODELAY; without it a response written behind another one waits for the client's
     * delayed ACK (40 ms on Linux), which is most of a short batch run. */
    rd_kafka_conf_set(conf, "socket.nagle.disable", "true", NULL, 0);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        log_error("devkafka", "start_failed err=\"%s\"", errstr);
        goto out;
    }
    mc = rd_kafka_mock_cluster_new(rk, nbrokers);
    if (!mc) {
        log_error("devkafka", "start_failed err=\"cannot create the mock cluster\"");
        goto out;
    }
    if (rd_kafka_mock_topic_create(mc, cfg_str(&c, "topic"), nparts, 1 < nbrokers ? 2 : 1)) {
        log_error("devkafka", "topic_create_failed topic=%s", cfg_str(&c, "topic"));
        goto out;
    }
    addr = rd_kafka_mock_cluster_bootstraps(mc);
    if (cfg_str(&c, "persist") && access(cfg_str(&c, "persist"), F_OK) == 0 &&
        persist_load(addr, cfg_str(&c, "topic"), nparts, cfg_str(&c, "persist"), &e) != 0) {
        log_error("devkafka", "persist_load_failed path=%s err=\"%s\"", cfg_str(&c, "persist"),
                  e.msg);
        goto out;
    }
    bfile = cfg_str(&c, "bootstrap_file");
    if (bfile && write_bootstrap(bfile, addr) != 0) {
        log_error("devkafka", "bootstrap_file_failed path=%s err=\"%s\"", bfile, strerror(errno));
        goto out;
    }
    sig_catch_stop(on_signal, true); /* as signal(2): the mock brokers' calls go on */
    sig_catch(SIGUSR1, on_broker_signal, true);
    sig_catch(SIGUSR2, on_broker_signal, true);
    printf("%s\n", addr);
    fflush(stdout);
    log_info("devkafka", "ready bootstrap=%s brokers=%d topic=%s partitions=%d", addr, nbrokers,
             cfg_str(&c, "topic"), nparts);
    while (!stop_requested) {
        if (want_down) {
            want_down = 0;
            set_all(mc, nbrokers, 0);
        }
        if (want_up) {
            want_up = 0;
            set_all(mc, nbrokers, 1);
        }
        nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
    }
    rc = 0;
    if (cfg_str(&c, "persist") &&
        persist_save(addr, cfg_str(&c, "topic"), nparts, cfg_str(&c, "persist")) != 0) {
        log_error("devkafka", "persist_failed path=%s", cfg_str(&c, "persist"));
        rc = 1;
    }
    log_info("devkafka", "stopped");
out:
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    cfg_release(&c);
    return rc;
}
