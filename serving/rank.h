/* rank.h - the merchants of an event-time window, summed over both layers, then ranked (/top)
 * or totalled per value of a dimension attribute (/groups).
 *
 * api.c feeds a struct serve_rank with serve_store_merchants() (serve_rank_add is its row
 * callback) inside one snapshot, then asks for a list. Ranking is by order count or revenue,
 * descending, ties broken by merchant id (or group value; merchants without the attribute,
 * the null group, after every value) so that equal inputs always give equal answers. The
 * dimension is joined here, at query time: a merchant's attributes are whatever the version
 * pinned for the request says, for all of its history (a type-1 dimension). */
#ifndef LAMBDA_SERVE_RANK_H
#define LAMBDA_SERVE_RANK_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "dim.h"
#include "store.h"

struct serve_rank;

/* An empty ranking; NULL when out of memory. serve_rank_free(NULL) is a no-op. */
struct serve_rank *serve_rank_new(void);
void serve_rank_free(struct serve_rank *r);

/* A serve_row_fn: adds a row's sums to its merchant. */
void serve_rank_add(void *arg, const char *merchant_id, int64_t t_ms, const struct serve_sums *s);

/* The n best merchants as an array of {"merchant_id","order_count","revenue_cents"} (plus
 * "merchant", its attributes, when d is given); only those whose attribute filter_attr has
 * the text filter_value when filter_attr is not NULL. NULL when out of memory, now or while
 * rows were added. */
json_t *serve_rank_top(struct serve_rank *r, bool by_revenue, long n, const struct dim *d,
                       const char *filter_attr, const char *filter_value);

/* Totals per value of attr: an array of {"value","order_count","revenue_cents","merchants"},
 * the merchants without it under "value":null. NULL when out of memory. */
json_t *serve_rank_groups(struct serve_rank *r, bool by_revenue, const struct dim *d,
                          const char *attr);

#endif
