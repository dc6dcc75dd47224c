/* dedup_bloom.h - bloom_: a fixed Bloom filter over the fingerprints shared/dedup.c spilled.
 *
 * Blocked: the BLOOM_K bits of a fingerprint all lie in one 64-byte block, which its high
 * bits name, so a query touches one cache line (and bloom_prefetch() can start loading it).
 * A caller may rely on: bloom_maybe() is true for every fingerprint added since the last
 * bloom_clear() (no false negatives); false positives only cost the caller a look-up. Bits
 * are never removed: when fingerprints go, the caller clears the filter and adds the rest
 * again. The memory is reserved once (shared/mem) and never grows. */
#ifndef LAMBDA_DEDUP_BLOOM_H
#define LAMBDA_DEDUP_BLOOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dedup_ftab.h"

struct bloom {
    uint64_t *bits; /* 8 words per block */
    size_t bytes;
    unsigned shift; /* 64 - log2(blocks) */
};

/* Reserves a zeroed filter sized for a cache of cache_ids fingerprints: 0, or -1 when memory
 * is short. */
int bloom_init(struct bloom *b, size_t cache_ids);
void bloom_free(struct bloom *b);

void bloom_clear(struct bloom *b);
void bloom_add(struct bloom *b, uint64_t h);
/* Adds every fingerprint of t. */
void bloom_add_table(struct bloom *b, const struct ftab *t);
/* False when h was never added; true when it may have been. */
bool bloom_maybe(const struct bloom *b, uint64_t h);
/* Starts loading h's block (a batch of look-ups overlaps its memory latencies). */
void bloom_prefetch(const struct bloom *b, uint64_t h);

#endif
