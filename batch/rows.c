/* rows.c - orders of one transaction, inserted into master in primary-key order.
 *
 * A chunk's orders arrive in log order, which is random in (merchant_id, order_id); inserting
 * them sorted touches each B-tree page once, in order, instead of jumping around a tree that
 * outgrows the page cache. Equal keys keep their log order (the sort's last keys are the
 * partition and offset), so the first copy is still the one inserted. */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "tm.h"

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

int batch_sums_add(struct batch_sums *s, const char *merchant_id, int64_t event_ms,
                   int64_t amount_cents, struct lerr *e)
{
    struct batch_sum key, *sum;

    memset(&key.key, 0, sizeof(key.key));
    snprintf(key.key.merchant_id, sizeof(key.key.merchant_id), "%s", merchant_id);
    key.key.minute_ms = tm_minute_of(event_ms);
    HASH_FIND(hh, s->head, &key.key, sizeof(key.key), sum);
    if (!sum) {
        sum = calloc(1, sizeof(*sum));
        if (!sum)
            return lerr_set(e, "out of memory");
        sum->key = key.key;
        HASH_ADD(hh, s->head, key, sizeof(sum->key), sum);
    }
    sum->order_count++;
    sum->revenue_cents += amount_cents;
    s->orders++;
    return 0;
}

static int sums_add(struct batch_sums *s, const struct ev_order *o, struct lerr *e)
{
    return batch_sums_add(s, o->merchant_id, o->event_ms, o->amount_cents, e);
}

void batch_sums_release(struct batch_sums *s)
{
    struct batch_sum *sum, *tmp;

    HASH_ITER(hh, s->head, sum, tmp)
    {
        HASH_DEL(s->head, sum);
        free(sum);
    }
    s->orders = 0;
}

int batch_sums_write(struct batch_sums *s, sqlite3 *master, const char *source, bool is_forced,
                     struct lerr *e)
{
    sqlite3_stmt *log = NULL, *ins = NULL;
    struct batch_sum *sum, *tmp;
    int64_t seq;
    int rc = -1;

    if (!s->head && !is_forced)
        return 0;
    if (db_prepare(master, "INSERT INTO ingests(source, orders, at_ms) VALUES(?,?,?)", &log, e) ||
        db_prepare(master,
                   "INSERT INTO ingest_sums(seq, merchant_id, minute_ms, order_count,"
                   " revenue_cents) VALUES(?,?,?,?,?)",
                   &ins, e))
        goto out;
    sqlite3_bind_text(log, 1, source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(log, 2, s->orders);
    sqlite3_bind_int64(log, 3, tm_now_ms());
    if (db_step_done(log, e) != 0)
        goto out;
    seq = sqlite3_last_insert_rowid(master);
    HASH_ITER(hh, s->head, sum, tmp)
    {
        sqlite3_bind_int64(ins, 1, seq);
        sqlite3_bind_text(ins, 2, sum->key.merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, sum->key.minute_ms);
        sqlite3_bind_int64(ins, 4, sum->order_count);
        sqlite3_bind_int64(ins, 5, sum->revenue_cents);
        if (db_step_done(ins, e) != 0)
            goto out;
    }
    batch_sums_release(s);
    rc = 0;
out:
    sqlite3_finalize(log);
    sqlite3_finalize(ins);
    return rc;
}

int batch_rows_flush(struct batch_rows *r, sqlite3_stmt *ins, struct batch_sums *sums,
                     int64_t *dups, int64_t *mismatch, struct lerr *e)
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
        else if (sums && sums_add(sums, &row->o, e) != 0)
            return -1;
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
