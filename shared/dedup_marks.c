/* dedup_marks.c - epochs along the sequence (contract in dedup_marks.h). */
#include "dedup_marks.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int marks_note(struct marks *m, int64_t epoch, int64_t seq)
{
    const struct mark *last = m->n ? &m->v[m->n - 1] : NULL;

    if (last && epoch <= last->epoch) {
        assert(epoch == last->epoch && seq > last->first_seq);
        return 0;
    }
    assert(!last || seq > last->first_seq);
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        struct mark *v = realloc(m->v, cap * sizeof(*v));
        if (!v)
            return -1;
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n].epoch = epoch;
    m->v[m->n].first_seq = seq;
    m->n++;
    return 0;
}

int64_t marks_first_at(const struct marks *m, int64_t cut_epoch, int64_t none)
{
    for (size_t k = 0; k < m->n; k++)
        if (m->v[k].epoch >= cut_epoch)
            return m->v[k].first_seq;
    return none;
}

void marks_drop_before(struct marks *m, int64_t cut_epoch)
{
    size_t k = 0;

    while (k < m->n && m->v[k].epoch < cut_epoch)
        k++;
    memmove(m->v, m->v + k, (m->n - k) * sizeof(*m->v));
    m->n -= k;
}

void marks_free(struct marks *m)
{
    free(m->v);
}
