/* dedup_pset.c - the ids not yet written (contract in dedup_pset.h). */
#include "dedup_pset.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static int pset_reserve(struct pset *p, size_t need, struct lerr *e)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 4096;
        struct pend *v = realloc(p->v, cap * sizeof(*v));
        if (!v)
            return lerr_set(e, "out of memory");
        p->v = v;
        p->cap = cap;
    }
    if (p->nbytes + need > p->capbytes) {
        size_t cap = p->capbytes ? 2 * p->capbytes : 65536;
        char *b;
        while (cap < p->nbytes + need)
            cap *= 2;
        if (cap > UINT32_MAX || !(b = realloc(p->bytes, cap)))
            return lerr_set(e, "out of memory");
        p->bytes = b;
        p->capbytes = cap;
    }
    return 0;
}

struct pend *pset_push(struct pset *p, const char *m, size_t ml, const char *o, size_t ol,
                       int64_t seq, int64_t epoch, struct lerr *e)
{
    struct pend *x;
    size_t need = ml + ol + 2;

    assert(p->n == 0 || (seq == p->v[p->n - 1].seq + 1 && epoch >= p->v[p->n - 1].epoch));
    if (pset_reserve(p, need, e) != 0)
        return NULL;
    x = &p->v[p->n];
    x->seq = seq;
    x->epoch = epoch;
    x->at = (uint32_t)p->nbytes;
    memcpy(p->bytes + p->nbytes, m, ml);
    p->bytes[p->nbytes + ml] = '\0';
    memcpy(p->bytes + p->nbytes + ml + 1, o, ol);
    p->bytes[p->nbytes + ml + 1 + ol] = '\0';
    p->nbytes += need;
    p->n++;
    return x;
}

const struct pend *pset_at(const struct pset *p, int64_t seq)
{
    if (p->n == 0 || seq < p->v[0].seq || seq >= p->v[0].seq + (int64_t)p->n)
        return NULL;
    assert(p->v[seq - p->v[0].seq].seq == seq);
    return &p->v[seq - p->v[0].seq];
}

const char *pset_merchant(const struct pset *p, const struct pend *x)
{
    return p->bytes + x->at;
}

const char *pset_order(const struct pset *p, const struct pend *x)
{
    const char *m = p->bytes + x->at;

    return m + strlen(m) + 1;
}

bool pset_is(const struct pset *p, const struct pend *x, const char *m, const char *o)
{
    const char *xm = p->bytes + x->at;

    return strcmp(xm, m) == 0 && strcmp(xm + strlen(xm) + 1, o) == 0;
}

void pset_clear(struct pset *p)
{
    p->n = 0;
    p->nbytes = 0;
}

void pset_free(struct pset *p)
{
    free(p->v);
    free(p->bytes);
}
