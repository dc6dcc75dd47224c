/* lambda-devkafka - an embedded Kafka for development and tests.
 *
 * librdkafka's mock cluster (rdkafka_mock.h): a real Kafka protocol peer, in memory, on
 * 127.0.0.1. Prints the bootstrap address on stdout (and into --bootstrap-file), then serves
 * until SIGINT/SIGTERM. SIGUSR1 takes every broker down, SIGUSR2 brings them back: tests
 * use it to stage a broker outage. Like a real broker with short retention, each partition
 * keeps only its newest ~5 MiB. */
#include <errno.h>
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

static const struct cfg_key keys[] = {
    {"brokers", CFG_INT, "1", "number of brokers in the cluster"},
    {"partitions", CFG_INT, "4", "partitions of the topic"},
    {"topic", CFG_STR, "orders", "the topic to create"},
    {"bootstrap_file", CFG_STR, NULL, "also write the bootstrap address into this file"},
    {"log_level", CFG_STR, "info", "debug, info, warn or error"},
    {"config", CFG_STR, NULL, "read key = value lines from this file first"},
    {NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop_requested, want_down, want_up;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        want_down = 1;
    else if (sig == SIGUSR2)
        want_up = 1;
    else
        stop_requested = 1;
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
    bfile = cfg_str(&c, "bootstrap_file");
    if (bfile && write_bootstrap(bfile, addr) != 0) {
        log_error("devkafka", "bootstrap_file_failed path=%s err=\"%s\"", bfile, strerror(errno));
        goto out;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_signal);
    signal(SIGUSR2, on_signal);
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
    log_info("devkafka", "stopped");
    rc = 0;
out:
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    cfg_release(&c);
    return rc;
}
