/* shard.h - a shard's partition set and the key-to-partition hash (DESIGN.md section 7).
 *
 * A shard owns a set of the topic's partitions, `shard_partitions` (a shared key): "all" (the
 * default) or a list of numbers and ranges such as "0-3,8". lambda-speed and lambda-batch read
 * only the partitions in the set, lambda-batch import keeps only the orders whose merchant
 * hashes into it, and the router asks the shard that owns a merchant's partition. The hash is
 * librdkafka's own (`partitioner`: murmur2_random or consistent_random), called through the
 * functions librdkafka 2.0.2 exports, so it is the producer's by construction. Nothing here
 * allocates. */
#ifndef LAMBDA_SHARD_H
#define LAMBDA_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lerr.h"

#define SHARD_MAX_PARTITIONS 1024
#define SHARD_TEXT_MAX       256

/* A partition set. is_all: every partition of the topic, whatever their number. */
struct shard_set {
    bool is_all;
    uint64_t bits[SHARD_MAX_PARTITIONS / 64];
};

/* Parses "all" or a list such as "0-3,8" (spaces allowed around items). Returns 0, or -1
 * with e naming the text (s is then unspecified). */
int shard_set_parse(struct shard_set *s, const char *text, struct lerr *e);

/* Whether partition p is in the set. */
bool shard_set_has(const struct shard_set *s, int p);

/* The canonical text ("all", or sorted ranges "0-3,8"); truncated to len with a NUL. */
void shard_set_format(const struct shard_set *s, char *buf, size_t len);

/* A topic of nparts partitions must hold every partition of the set and the set must not be
 * empty: -1 with e naming the first one it lacks. */
int shard_set_check_topic(const struct shard_set *s, int nparts, struct lerr *e);

/* librdkafka's partitioners, by their names. */
enum shard_partitioner {
    SHARD_PARTITIONER_NONE, /* unset: a key's partition is unknown */
    SHARD_PARTITIONER_MURMUR2_RANDOM,
    SHARD_PARTITIONER_CONSISTENT_RANDOM,
};

/* NULL or "" is NONE; an unknown name is -1 with e naming it. */
int shard_partitioner_parse(const char *name, enum shard_partitioner *out, struct lerr *e);

/* The partition a producer with partitioner pt puts key (keylen >= 1 bytes) in, among nparts;
 * -1 for SHARD_PARTITIONER_NONE. */
int shard_partition_of(enum shard_partitioner pt, const char *key, size_t keylen, int nparts);

#endif
