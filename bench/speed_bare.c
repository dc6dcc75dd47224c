/* speed_bare.c - the baseline of bench/speed.sh: a bare librdkafka consumer that reads every
 * partition of a topic from the start to its high watermark and parses each payload with
 * jansson, nothing else. Prints "bare events=N seconds=S rate=R".
 *
 *   speed_bare BROKERS TOPIC [PROPERTY=VALUE ...]   (librdkafka properties, as lambda-speed's
 *                                                  kafka.* keys) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt;
    rd_kafka_topic_partition_list_t *l;
    int64_t want = 0, got = 0, bad = 0;
    double t0;
    int n;

    if (argc < 3) {
        fprintf(stderr, "usage: speed_bare BROKERS TOPIC [PROPERTY=VALUE ...]\n");
        return 2;
    }
    rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "bench-bare", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    for (int i = 3; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "speed_bare: want PROPERTY=VALUE, not '%s'\n", argv[i]);
            return 2;
        }
        *eq = '\0';
        if (rd_kafka_conf_set(conf, argv[i], eq + 1, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "speed_bare: %s\n", err);
            return 2;
        }
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "speed_bare: %s\n", err);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);
    rkt = rd_kafka_topic_new(rk, argv[2], NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1) {
        fprintf(stderr, "speed_bare: no metadata\n");
        return 1;
    }
    n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t lo, hi;
        rd_kafka_query_watermark_offsets(rk, argv[2], p, &lo, &hi, 10000);
        want += hi - lo;
        rd_kafka_topic_partition_list_add(l, argv[2], p)->offset = lo;
    }
    t0 = now_s();
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    while (got < want) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        json_error_t je;
        json_t *j;
        if (!m)
            continue;
        if (!m->err) {
            got++;
            j = json_loadb(m->payload, m->len, JSON_REJECT_DUPLICATES, &je);
            if (!j)
                bad++;
            json_decref(j);
        }
        rd_kafka_message_destroy(m);
    }
    double s = now_s() - t0;
    printf("bare events=%" PRId64 " unparsable=%" PRId64 " seconds=%.3f rate=%.0f\n", got, bad, s,
           got / s);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return 0;
}
