/* dedup_pset.h - pset_: the ids shared/dedup.c counted and has not written yet.
 *
 * Two sets take turns: new ids go to one; a checkpoint seals it (the sets swap) and writes
 * the sealed one while the next fills. Each entry keeps what its `seen` row needs; its two
 * strings live in the set's byte arena, so a push allocates only when a set outgrows every
 * earlier checkpoint. A caller may rely on: the sequence numbers in a set are consecutive and
 * its epochs never decrease (pset_push asserts both), so pset_at() finds an entry by number. */
#ifndef LAMBDA_DEDUP_PSET_H
#define LAMBDA_DEDUP_PSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lerr.h"

/* An id counted and not yet written. */
struct pend {
    uint64_t fp;
    int64_t seq, epoch, offset;
    int32_t partition;
    uint32_t at; /* merchant_id at bytes[at], order_id right after its NUL */
};

struct pset {
    struct pend *v;
    size_t n, cap;
    char *bytes;
    size_t nbytes, capbytes;
};

/* Appends the id (m, o) of ml and ol bytes as number seq (the next after the last entry's)
 * of epoch (no older than the last entry's): the entry (its fp, partition and offset for the
 * caller to fill), or NULL with e set when memory is short (then nothing changed). */
struct pend *pset_push(struct pset *p, const char *m, size_t ml, const char *o, size_t ol,
                       int64_t seq, int64_t epoch, struct lerr *e);

/* The entry numbered seq, or NULL when seq is not in this set. */
const struct pend *pset_at(const struct pset *p, int64_t seq);

/* True when entry x of p is the id (m, o). */
bool pset_is(const struct pset *p, const struct pend *x, const char *m, const char *o);

/* The id's two strings. */
const char *pset_merchant(const struct pset *p, const struct pend *x);
const char *pset_order(const struct pset *p, const struct pend *x);

/* Empties the set, keeping its memory. */
void pset_clear(struct pset *p);
void pset_free(struct pset *p);

#endif
