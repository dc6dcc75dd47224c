/* api_int.h - the insides of lambda-serve's routes, shared by api.c (the route table and the
 * query, series, top and groups handlers), api_text.c (the merchant answer's text) and
 * api_health.c (/health, /metrics, /events?once=1), no one else. */
#ifndef LAMBDA_SERVE_API_INT_H
#define LAMBDA_SERVE_API_INT_H

#include "api.h"

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dim.h"
#include "lerr.h"
#include "store.h"

/* One request as a handler sees it: what serve_api_handle() was given. */
struct call {
    const struct serve_ctx *c;
    struct serve_store *st; /* the worker's; NULL for SERVE_R_OTHER */
    const char *path;
    const char *segment; /* where the pattern's '*' matched in path, else NULL */
    serve_arg_fn arg;
    void *req;
    struct dim *dim; /* the dimension version pinned for this request; NULL without one */
};

extern const char api_json_ctype[]; /* "application/json" */

/* doc (whose reference it takes) as a compact JSON answer with status; a 500 when out of
 * memory. */
void api_reply_json(struct serve_reply *out, unsigned status, json_t *doc);

/* A time as a JSON string; json_pack's "o" steals the reference. */
json_t *api_rfc3339(int64_t t_ms);

/* Joins a merchant answer with dimension d's attributes and version; nothing when doc or d is
 * NULL. */
void api_add_merchant(json_t *doc, const struct dim *d, const char *id);

/* A layer that cannot be read: a 503 with store.h's words. */
void api_db_failed(struct serve_reply *out, const char *route, const struct lerr *e);

/* One merchant's answer (all-time, or a span's when the caller adds it) as a jansson tree;
 * NULL when out of memory. */
json_t *api_merchant_doc(const char *id, const struct serve_view *v, const struct serve_sums *b,
                         const struct serve_sums *s, int64_t now_ms);

/* The answer of one merchant (n == 1) or {"merchants":[...]} of several, as text, with their
 * dimension attributes when d is not NULL. */
void api_reply_text(struct serve_reply *out, const struct dim *d, const char *const *ids, size_t n,
                    const struct serve_view *v, const struct serve_sums *b,
                    const struct serve_sums *s);

/* The handlers of api_health.c. */
void api_handle_health(const struct call *q, struct serve_reply *out);
void api_handle_metrics(const struct call *q, struct serve_reply *out);
void api_handle_events(const struct call *q, struct serve_reply *out);

#endif
