/* dedup_ftab.c - the fingerprint tables of shared/dedup.c (contract in dedup_ftab.h). */
#include "dedup_ftab.h"

#include <assert.h>
#include <string.h>

#include "mem.h"

int ftab_init(struct ftab *t, size_t max)
{
    size_t cap = 1024;

    while (cap < max + max / 3 + 1) /* load stays under 3/4 */
        cap <<= 1;
    t->max = max;
    t->mask = cap - 1;
    t->shift = 64u - (unsigned)__builtin_ctzll(cap);
    t->bytes_fp = cap * sizeof(*t->fp);
    t->bytes_rs = cap * sizeof(*t->rs);
    t->fp = mem_reserve(t->bytes_fp);
    t->rs = mem_reserve(t->bytes_rs);
    return t->fp && t->rs ? 0 : -1;
}

void ftab_free(struct ftab *t)
{
    mem_release(t->fp, t->bytes_fp);
    mem_release(t->rs, t->bytes_rs);
}

static void ftab_place(struct ftab *t, uint64_t h, uint32_t rel)
{
    size_t i = (size_t)(h >> t->shift);

    while (t->fp[i] != 0)
        i = (i + 1) & t->mask;
    t->fp[i] = h;
    t->rs[i] = rel;
    t->n++;
}

bool ftab_put(struct ftab *t, uint64_t h, int64_t seq)
{
    assert(h != 0);
    if (!t->has_base) {
        t->base = t->hi = seq;
        t->has_base = true;
    }
    if (t->n >= t->max || seq < t->base || seq - t->base > UINT32_MAX)
        return false;
    ftab_place(t, h, (uint32_t)(seq - t->base));
    if (seq > t->hi)
        t->hi = seq;
    return true;
}

void ftab_clear(struct ftab *t)
{
    if (t->n) /* a new table is zeroed already */
        memset(t->fp, 0, (t->mask + 1) * sizeof(*t->fp));
    t->n = 0;
    t->has_base = false;
}

/* Each survivor is taken out and placed again, starting just after an empty slot. */
size_t ftab_sweep(struct ftab *t, int64_t cut_seq)
{
    size_t cap = t->mask + 1, start = 0, before = t->n;
    int64_t rel_cut = cut_seq - t->base;

    if (t->n == 0 || rel_cut <= 0)
        return 0;
    for (size_t i = 0; i < cap; i++) {
        if (t->fp[i] && (int64_t)t->rs[i] < rel_cut) {
            t->fp[i] = 0;
            t->n--;
        }
    }
    if (t->n == before)
        return 0;
    while (start < cap && t->fp[start])
        start++;
    for (size_t k = 1; k <= cap; k++) {
        size_t i = (start + k) & t->mask;
        uint64_t h = t->fp[i];
        if (!h)
            continue;
        t->fp[i] = 0;
        t->n--;
        ftab_place(t, h, t->rs[i]);
    }
    if (t->n == 0)
        t->has_base = false;
    return before - t->n;
}
