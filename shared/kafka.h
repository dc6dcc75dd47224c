/* kafka.h - librdkafka set-up shared by the batch and speed layers (and lambda-gen).
 *
 * kafka_conf_new() turns a struct cfg into an rd_kafka_conf_t: bootstrap.servers from
 * `brokers`, then every `kafka.<property>` key passed through, so a real cluster's security
 * settings need no code. Positions never live in Kafka's committed offsets (they are in
 * SQLite, DESIGN.md section 7), so consumers built here assign partitions explicitly. */
#ifndef LAMBDA_KAFKA_H
#define LAMBDA_KAFKA_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "cfg.h"
#include "lerr.h"

/* A new conf with brokers and kafka.* applied, or NULL with e set (the bad property named). */
rd_kafka_conf_t *kafka_conf_new(const struct cfg *c, struct lerr *e);

/* Sets one property; -1 with e naming it when librdkafka refuses. */
int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, struct lerr *e);

/* The number of partitions of topic, asking the cluster for at most timeout_ms. -1 when the
 * cluster does not answer in time or the topic does not exist. */
int kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, int *out,
                          struct lerr *e);

/* Low and high watermark offsets of one partition. */
int kafka_watermarks(rd_kafka_t *rk, const char *topic, int partition, int timeout_ms, int64_t *low,
                     int64_t *high, struct lerr *e);

#endif
