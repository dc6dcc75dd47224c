/* dedup_ftab.h - ftab_: a fixed table of fingerprints, each with its id's sequence number.
 *
 * shared/dedup.c keeps two of them (the active one and the one being spilled). Open
 * addressing with linear probing from the slot that a fingerprint's high bits name, so slot
 * order is (nearly) fingerprint order and a spill in slot order appends to its generation.
 * A caller may rely on: fp[i] == 0 marks an empty slot (a fingerprint is never 0); a probe
 * for h starts at slot h >> shift and goes on at (i + 1) & mask until an empty slot; fp[i]'s
 * id is number base + rs[i]. The memory is reserved once (shared/mem) and never grows. */
#ifndef LAMBDA_DEDUP_FTAB_H
#define LAMBDA_DEDUP_FTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ftab {
    uint64_t *fp;
    uint32_t *rs; /* rs[i]: fp[i]'s sequence number minus base, so it fits 32 bits */
    size_t mask;  /* slots - 1 (a power of two) */
    size_t n;     /* fingerprints held */
    size_t max;   /* the most it takes: the load stays under 3/4 */
    size_t bytes_fp, bytes_rs;
    unsigned shift; /* 64 - log2(slots) */
    int64_t base;   /* the first number put since the table was cleared */
    int64_t hi;     /* the highest number put */
    bool has_base;
};

/* Reserves a zeroed table for max fingerprints: 0, or -1 when memory is short (what was
 * reserved is freed by ftab_free). */
int ftab_init(struct ftab *t, size_t max);
void ftab_free(struct ftab *t);

/* Puts fingerprint h (non-zero) of id number seq: false when the table cannot take it (full,
 * or a number it cannot encode), and nothing changed. */
bool ftab_put(struct ftab *t, uint64_t h, int64_t seq);

/* Empties the table. */
void ftab_clear(struct ftab *t);

/* Drops the ids numbered below cut_seq and re-seats the rest, so no probe chain keeps a hole.
 * How many went (0 when none did: then no slot moved). */
size_t ftab_sweep(struct ftab *t, int64_t cut_seq);

#endif
