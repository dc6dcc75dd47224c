/* kafka.h - librdkafka set-up shared by the batch and speed layers (and lambda-gen).
 *
 * kafka_conf_new() turns a struct cfg into an rd_kafka_conf_t: bootstrap.servers from
 * `brokers`, then every `kafka.<property>` key passed through, so a real cluster's security
 * settings need no code. Positions never live in Kafka's committed offsets (they are in
 * SQLite, DESIGN.md section 7), so every consumer is made by kafka_consumer_new() (no commits)
 * and given its partitions by kafka_assign(). The *_wait variants are the one retry loop for a
 * broker that is away: they log each failed try as `kafka_unreachable` and try again a second
 * later until the broker answers or a stop is requested. */
#ifndef LAMBDA_KAFKA_H
#define LAMBDA_KAFKA_H

#include <signal.h>
#include <stdbool.h>
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

/* Low and high watermark offsets of one partition. For a read_committed consumer (librdkafka's
 * default isolation.level) high is the last stable offset: the end of what it can read, below
 * an open transaction (librdkafka >= 1.7.1; a cut taken from it never waits for offsets no
 * consumer sees). */
int kafka_watermarks(rd_kafka_t *rk, const char *topic, int partition, int timeout_ms, int64_t *low,
                     int64_t *high, struct lerr *e);

/* kafka_watermarks() of n partitions at once: one ListOffsets request per broker for the high
 * watermarks, and one more for the low ones unless low is NULL, instead of two round trips per
 * partition. high[i] and low[i] are partitions[i]'s; -1 when any partition is not answered. */
int kafka_watermarks_of(rd_kafka_t *rk, const char *topic, const int32_t *partitions, int n,
                        int timeout_ms, int64_t *low, int64_t *high, struct lerr *e);

/* One property of a consumer. A default (is_default) gives way to a kafka.<name> key of the
 * configuration; the others are set over it. */
struct kafka_prop {
    const char *name, *value;
    bool is_default;
};

/* librdkafka's error callback, as rd_kafka_conf_set_error_cb() takes it. */
typedef void kafka_error_fn(rd_kafka_t *rk, int err, const char *reason, void *opaque);

/* A consumer of c's brokers in group `group` that never commits offsets: kafka.* applied,
 * then props (nprops of them), then the error callback with its opaque when on_error is not
 * NULL; its events come from rd_kafka_consumer_poll(). NULL with e set; nothing to free then. */
rd_kafka_t *kafka_consumer_new(const struct cfg *c, const struct kafka_prop *props, size_t nprops,
                               kafka_error_fn *on_error, void *opaque, struct lerr *e);

/* Where a partition is to be read from. */
struct kafka_pos {
    int32_t partition;
    int64_t offset;
};

/* Assigns exactly these n partitions of topic (none: n == 0), replacing any assignment. */
int kafka_assign(rd_kafka_t *rk, const char *topic, const struct kafka_pos *pos, int n,
                 struct lerr *e);

/* kafka_partition_count() and kafka_watermarks(), tried again while the broker is away: each
 * failure logs a warning under who, then waits a second (looking at *stop every 100 ms).
 * 0 once answered, 1 when *stop was set first. */
int kafka_partition_count_wait(rd_kafka_t *rk, const char *topic, int timeout_ms,
                               volatile sig_atomic_t *stop, const char *who, int *out);
int kafka_watermarks_wait(rd_kafka_t *rk, const char *topic, int partition, int timeout_ms,
                          volatile sig_atomic_t *stop, const char *who, int64_t *low,
                          int64_t *high);

/* What one delivery on a partition tells a reader that wants every offset below cut
 * (KAFKA_NO_CUT: the speed layer, which reads on). Offsets have gaps: compaction, transaction
 * markers, aborted data that read_committed hides. So a reader knows where it is from what it
 * was given (a message at offset o: everything visible below o + 1 is read; the partition's end
 * at offset x, or the consumer's position x: everything visible below x is), never by waiting
 * for the message just below the cut, which may not exist. Pure: no Kafka call. */
#define KAFKA_NO_CUT INT64_MAX

enum kafka_seen {
    KAFKA_SEEN_MESSAGE, /* a message at offset */
    KAFKA_SEEN_END,     /* partition EOF, or the consumer's position: offset is where it stands */
};

struct kafka_reach {
    int64_t next; /* every offset below it is read or holds no visible message; <= cut */
    int64_t lost; /* offsets of the jump below log_start: deleted before they were read */
    bool take;    /* the message is below the cut and not read before: apply it */
    bool done;    /* next == cut: nothing below the cut is left to read */
};

/* From next (the reader's position before) and one delivery. log_start is the partition's
 * first offset as last seen (-1: unknown; a jump then counts as lost, the cautious reading):
 * only the part of a jump below it was deleted, the rest is a gap. next never moves back and
 * never past cut (offsets at or past it belong to the next version). */
struct kafka_reach kafka_reach(int64_t next, int64_t cut, enum kafka_seen what, int64_t offset,
                               int64_t log_start);

#endif
