/* shard.c - a shard's partition set and librdkafka's partitioners (see shard.h). */
#include "shard.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

static void set_bit(struct shard_set *s, int p)
{
    s->bits[p / 64] |= (uint64_t)1 << (p % 64);
}

/* One number of a list: digits only, below SHARD_MAX_PARTITIONS. */
static int parse_number(const char **cur, int *out)
{
    const char *p = *cur;
    long v = 0;

    while (*p == ' ')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (*p++ - '0');
        if (v >= SHARD_MAX_PARTITIONS)
            return -1;
    }
    while (*p == ' ')
        p++;
    *cur = p;
    *out = (int)v;
    return 0;
}

/* The canonical text is what the data directory pins and /health reports: it must fit whole,
 * or two sets that differ only past the cut would pin as one. */
static int check_length(const struct shard_set *s, const char *text, struct lerr *e)
{
    char buf[SHARD_MAX_PARTITIONS * 6];

    shard_set_format(s, buf, sizeof(buf));
    if (strlen(buf) >= SHARD_TEXT_MAX)
        return lerr_set(e,
                        "bad shard_partitions '%.80s...': %zu characters as ranges, at most %d; "
                        "use fewer, wider ranges",
                        text, strlen(buf), SHARD_TEXT_MAX - 1);
    return 0;
}

int shard_set_parse(struct shard_set *s, const char *text, struct lerr *e)
{
    const char *p = text;

    memset(s, 0, sizeof(*s));
    if (!text || !*text)
        return lerr_set(e, "bad shard_partitions '': want all or a list such as 0-3,8");
    if (!strcmp(text, "all")) {
        s->is_all = true;
        return 0;
    }
    for (;;) {
        int lo, hi;
        if (parse_number(&p, &lo) != 0)
            goto bad;
        hi = lo;
        if (*p == '-' && (p++, parse_number(&p, &hi) != 0))
            goto bad;
        if (hi < lo)
            goto bad;
        for (int i = lo; i <= hi; i++)
            set_bit(s, i);
        if (*p == '\0')
            return check_length(s, text, e);
        if (*p++ != ',')
            goto bad;
    }
bad:
    return lerr_set(e, "bad shard_partitions '%s': want all or a list such as 0-3,8 (below %d)",
                    text, SHARD_MAX_PARTITIONS);
}

bool shard_set_has(const struct shard_set *s, int p)
{
    if (s->is_all)
        return p >= 0;
    if (p < 0 || p >= SHARD_MAX_PARTITIONS)
        return false;
    return (s->bits[p / 64] >> (p % 64)) & 1;
}

void shard_set_format(const struct shard_set *s, char *buf, size_t len)
{
    size_t n = 0;

    buf[0] = '\0';
    if (s->is_all) {
        snprintf(buf, len, "all");
        return;
    }
    for (int p = 0; p < SHARD_MAX_PARTITIONS && n < len; p++) {
        int hi = p;
        if (!shard_set_has(s, p))
            continue;
        while (hi + 1 < SHARD_MAX_PARTITIONS && shard_set_has(s, hi + 1))
            hi++;
        if (hi == p)
            n += (size_t)snprintf(buf + n, len - n, "%s%d", n ? "," : "", p);
        else
            n += (size_t)snprintf(buf + n, len - n, "%s%d-%d", n ? "," : "", p, hi);
        p = hi;
    }
}

int shard_set_check_topic(const struct shard_set *s, int nparts, struct lerr *e)
{
    bool any = false;

    if (s->is_all)
        return nparts > 0 ? 0 : lerr_set(e, "the topic has no partitions");
    for (int p = 0; p < SHARD_MAX_PARTITIONS; p++) {
        if (!shard_set_has(s, p))
            continue;
        if (p >= nparts)
            return lerr_set(e, "shard_partitions names partition %d but the topic has %d", p,
                            nparts);
        any = true;
    }
    return any ? 0 : lerr_set(e, "shard_partitions names no partition");
}

int shard_partitioner_parse(const char *name, enum shard_partitioner *out, struct lerr *e)
{
    if (!name || !*name)
        *out = SHARD_PARTITIONER_NONE;
    else if (!strcmp(name, "murmur2_random"))
        *out = SHARD_PARTITIONER_MURMUR2_RANDOM;
    else if (!strcmp(name, "consistent_random"))
        *out = SHARD_PARTITIONER_CONSISTENT_RANDOM;
    else
        return lerr_set(e, "bad partitioner '%s': want murmur2_random or consistent_random", name);
    return 0;
}

/* With a key of at least one byte neither function looks at the topic (only the random
 * fallback for an empty key would), so no topic handle is needed. */
int shard_partition_of(enum shard_partitioner pt, const char *key, size_t keylen, int nparts)
{
    switch (pt) {
    case SHARD_PARTITIONER_MURMUR2_RANDOM:
        return rd_kafka_msg_partitioner_murmur2_random(NULL, key, keylen, nparts, NULL, NULL);
    case SHARD_PARTITIONER_CONSISTENT_RANDOM:
        return rd_kafka_msg_partitioner_consistent_random(NULL, key, keylen, nparts, NULL, NULL);
    case SHARD_PARTITIONER_NONE:
        break;
    }
    return -1;
}
