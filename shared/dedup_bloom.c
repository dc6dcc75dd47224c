/* dedup_bloom.c - the Bloom filter over spilled fingerprints (contract in dedup_bloom.h). */
#include "dedup_bloom.h"

#include <string.h>

#include "mem.h"

#define BLOOM_K 6 /* bits per fingerprint, all in one 64-byte block */

/* 64 filter bits per id the tables hold (4 MiB at least): at 4x that many spilled ids, about
 * 0.1% false positives (each costs a look-up per generation), and more ids only raise that. */
int bloom_init(struct bloom *b, size_t cache_ids)
{
    size_t blocks = 65536; /* 4 MiB at least */

    while (blocks < cache_ids / 8)
        blocks <<= 1;
    b->shift = 64u - (unsigned)__builtin_ctzll(blocks);
    b->bytes = blocks * 64;
    b->bits = mem_reserve(b->bytes);
    return b->bits ? 0 : -1;
}

void bloom_free(struct bloom *b)
{
    mem_release(b->bits, b->bytes);
}

void bloom_clear(struct bloom *b)
{
    memset(b->bits, 0, b->bytes);
}

static uint64_t remix(uint64_t h) /* the bits inside a block, independent of its number */
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* The 64-byte block of fingerprint h. */
static uint64_t *bloom_block(const struct bloom *b, uint64_t h)
{
    return b->bits + ((h >> b->shift) << 3);
}

void bloom_add(struct bloom *b, uint64_t h)
{
    uint64_t *w = bloom_block(b, h), g = remix(h);

    for (int k = 0; k < BLOOM_K; k++, g >>= 9)
        w[(g >> 6) & 7] |= 1ULL << (g & 63);
}

bool bloom_maybe(const struct bloom *b, uint64_t h)
{
    const uint64_t *w = bloom_block(b, h);
    uint64_t g = remix(h);

    for (int k = 0; k < BLOOM_K; k++, g >>= 9)
        if (!(w[(g >> 6) & 7] & (1ULL << (g & 63))))
            return false;
    return true;
}

void bloom_add_table(struct bloom *b, const struct ftab *t)
{
    for (size_t i = 0; t->n && i <= t->mask; i++)
        if (t->fp[i])
            bloom_add(b, t->fp[i]);
}

void bloom_prefetch(const struct bloom *b, uint64_t h)
{
    __builtin_prefetch(bloom_block(b, h));
}
