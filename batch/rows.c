/* rows.c - orders of one transaction, inserted into master in primary-key order.
 *
 * A chunk's orders arrive in log order, which is random in (merchant_id, order_id); inserting
 * them sorted touches each B-tree page once, in order, instead of jumping around a tree that
 * outgrows the page cache. Equal keys keep their log order (the sort's last keys are the
 * partition and offset), so the first copy is still the one inserted. */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "db.h"

int batch_rows_add(struct batch_rows *r, const struct ev_order *o, const void *raw, size_t raw_len,
                   int32_t partition, int64_t offset, struct lerr *e)
{
    struct batch_row *row;

    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        struct batch_row *v = realloc(r->v, cap * sizeof(*v));
        if (!v)
            return lerr_set(e, "out of memory");
        r->v = v;
        r->cap = cap;
    }
    row = &r->v[r->n++];
    row->o = *o;
    row->raw = raw;
    row->raw_len = raw_len;
    row->partition = partition;
    row->offset = offset;
    return 0;
}

static int compare(const void *pa, const void *pb)
{
    const struct batch_row *a = pa, *b = pb;
    int c = strcmp(a->o.merchant_id, b->o.merchant_id);

    if (c == 0)
        c = strcmp(a->o.order_id, b->o.order_id);
    if (c == 0)
        c = (a->partition > b->partition) - (a->partition < b->partition);
    if (c == 0)
        c = (a->offset > b->offset) - (a->offset < b->offset);
    return c;
}

int batch_rows_flush(struct batch_rows *r, sqlite3_stmt *ins, int64_t *dups, int64_t *mismatch,
                     struct lerr *e)
{
    sqlite3 *db = sqlite3_db_handle(ins);

    if (r->n == 0)
        return 0; /* r->v may be NULL, which qsort() must not see */
    qsort(r->v, r->n, sizeof(*r->v), compare);
    for (size_t i = 0; i < r->n; i++) {
        const struct batch_row *row = &r->v[i];
        sqlite3_bind_text(ins, 1, row->o.merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, row->o.order_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, row->o.amount_cents);
        sqlite3_bind_int64(ins, 4, row->o.event_ms);
        sqlite3_bind_int(ins, 5, row->partition);
        sqlite3_bind_int64(ins, 6, row->offset);
        sqlite3_bind_blob(ins, 7, row->raw, (int)row->raw_len, SQLITE_STATIC);
        if (db_step_done(ins, e) != 0)
            return -1;
        if (sqlite3_changes(db) == 0)
            (*dups)++;
        if (row->o.is_key_mismatch)
            (*mismatch)++;
    }
    r->n = 0;
    return 0;
}

void batch_rows_release(struct batch_rows *r)
{
    free(r->v);
    memset(r, 0, sizeof(*r));
}
