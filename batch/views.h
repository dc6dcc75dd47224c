/* views.h - a version's rows being made, inside lambda-batch: shared by views.c (the
 * increments, and the statements that write rows) and full.c (the recompute from the master
 * dataset that proves and repairs them). Not an interface of the batch layer: batch.h is.
 *
 * Every function runs inside batch_recompute()'s transaction on batch.db and returns 0 or -1
 * with e set; a failure leaves the transaction to be rolled back. */
#ifndef LAMBDA_BATCH_VIEWS_H
#define LAMBDA_BATCH_VIEWS_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>
#include <uthash.h>

#include "batch.h"
#include "ev.h"

enum views_kind { VIEWS_TOTAL, VIEWS_HOUR, VIEWS_MINUTE };

/* The statements of one view table; ?1 merchant, ?2 bucket start, ?3 the version. */
struct views_table {
    sqlite3_stmt *bump;  /* the open row of an earlier version: sums, valid_from */
    sqlite3_stmt *close; /* closes the row written by version ?4 */
    sqlite3_stmt *drop;  /* deletes a row this version wrote */
    sqlite3_stmt *ins;   /* inserts the open row: ?4 order_count, ?5 revenue_cents */
    sqlite3_stmt *list;  /* a merchant's open rows: bucket, sums, valid_from */
};

/* One time bucket of one merchant (an hour or a minute), in a uthash table. */
struct views_bucket {
    int64_t start_ms;
    int64_t order_count, revenue_cents;
    bool is_seen; /* matched by a stored row */
    UT_hash_handle hh;
};

/* A minute row of master's recompute, or an open minute row of the version. */
struct views_row {
    char merchant_id[EV_ID_MAX + 1];
    int64_t minute_ms, order_count, revenue_cents, valid_from;
};

struct views_rows {
    struct views_row *v;
    size_t n, cap;
};

struct views {
    struct batch *b;
    struct batch_work *w;
    int64_t window_ms;
    struct views_table t[3];
    /* the full recompute: the merchant being summed and its buckets */
    char merchant_id[EV_ID_MAX + 1];
    int64_t order_count, revenue_cents;
    struct views_bucket *hours, *minutes;
    int64_t max_event_ms;   /* newest event time seen so far */
    struct views_rows kept; /* master's minute rows that may fall in the window */
    char **stored;          /* merchants with an open total before the scan, sorted */
    size_t nstored, next_stored;
    int64_t merchants;    /* merchants done */
    int64_t first_kind;   /* of the first difference, -1 while there is none */
    int64_t first_bucket; /* its bucket start */
    char first_merchant[EV_ID_MAX + 1];
};

/* Writes the open row of a bucket (nothing for an empty one) and counts it as rewritten. */
int views_insert_open(struct views *vw, enum views_kind k, const char *merchant_id,
                      int64_t bucket_ms, int64_t order_count, int64_t revenue_cents,
                      struct lerr *e);

/* Replaces a bucket's open row (has_row; written by version valid_from) with these sums. */
int views_replace(struct views *vw, enum views_kind k, const char *merchant_id, int64_t bucket_ms,
                  bool has_row, int64_t valid_from, int64_t order_count, int64_t revenue_cents,
                  struct lerr *e);

/* full.c: scans master, settles every bucket against the open rows (counting differences in
 * vw->w, the first named in w->first_difference), and places the minute window. */
int views_full_scan(struct views *vw, struct lerr *e);

/* Frees what the full recompute holds (also after a failure). */
void views_full_release(struct views *vw);

#endif
