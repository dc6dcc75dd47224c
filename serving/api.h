/* api.h - lambda-serve's routes (DESIGN.md section 5), independent of the HTTP library.
 *
 * Every route is one row of api.c's route table: its method, its path pattern, its handler and
 * its name in /metrics. serve.c maps a request to a route with serve_api_route(), checks the
 * method with serve_api_allows(), then calls serve_api_handle() in the worker thread with that
 * thread's store; the answer comes back as a status, a content type and a body. Bad input is an
 * answer (4xx with {"error":"..."} naming the parameter), never a failure; a layer that cannot
 * be read is a 503 with store.h's words ("batch.db unreadable: missing"), never SQLite's. */
#ifndef LAMBDA_SERVE_API_H
#define LAMBDA_SERVE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dim.h"
#include "health.h"
#include "live.h"
#include "metrics.h"
#include "store.h"

/* The routes, one per row of api.c's table. */
enum serve_route {
    SERVE_R_DASHBOARD, /* GET / */
    SERVE_R_QUERY,     /* GET /query/{merchant_id} */
    SERVE_R_QUERY_IDS, /* GET /query?ids=a,b,c */
    SERVE_R_SERIES,    /* GET /query/{merchant_id}/series */
    SERVE_R_TOP,       /* GET /top */
    SERVE_R_GROUPS,    /* GET /groups?group=<attribute> */
    SERVE_R_HEALTH,    /* GET /health */
    SERVE_R_METRICS,   /* GET /metrics */
    SERVE_R_EVENTS,    /* GET /events: serve.c streams it; ?once=1 here, the newest as JSON */
    SERVE_R_OTHER,     /* no such route: 404 */
    SERVE_R_COUNT
};

/* Limits of a request (DESIGN.md section 5). */
#define SERVE_IDS_MAX    1000
#define SERVE_POINTS_MAX 10000
#define SERVE_TOP_MAX    1000
/* The longest request target (path and query) answered: 1000 ids of 64 bytes fit. Longer
 * ones get 414; past the connection's memory limit libmicrohttpd itself answers 414. */
#define SERVE_URL_MAX (72 * 1024)

/* What every handler shares; read-only once the server runs. */
struct serve_ctx {
    int64_t allowed_lateness_ms;  /* used when speed.db does not record its own */
    const char *shard_partitions; /* this shard's set, canonical ("all", "0-1") */
    struct serve_metrics *metrics;
    struct dim_source *dim; /* the merchant dimension; NULL without dimension_file */
    const char *data_dir;   /* /health and /metrics read batch.db's runs and speed.lock */
    struct serve_health_limits health;
    struct serve_live *live; /* totals in memory (live.h); NULL: every answer reads SQLite */
};

/* Gives the decoded value of query parameter name, or NULL when it is absent. */
typedef const char *(*serve_arg_fn)(void *req, const char *name);

struct serve_reply {
    unsigned status;
    const char *content_type;
    const char *body; /* owned, or a static string */
    size_t len;
    char *owned;       /* what the caller frees: body when it was malloc'ed, else NULL */
    const char *allow; /* the Allow header of a 405, else NULL */
};

/* The route of a request path ("/query/m-1/series" -> SERVE_R_SERIES), SERVE_R_OTHER when
 * no pattern matches. */
enum serve_route serve_api_route(const char *path);

/* The route's label in /metrics ("query", "series", ..., "other"). */
const char *serve_api_route_name(enum serve_route r);

/* Whether route r answers method ("GET", "POST", ...); HEAD is answered wherever GET is.
 * SERVE_R_OTHER answers none. */
bool serve_api_allows(enum serve_route r, const char *method);

/* The 405 answer to method on route r, with its Allow header. The caller frees out->owned. */
void serve_api_refuse(enum serve_route r, const char *method, const char *path,
                      struct serve_reply *out);

/* Answers a GET of path on route r. Always fills out; the caller frees out->owned. */
void serve_api_handle(const struct serve_ctx *c, struct serve_store *st, enum serve_route r,
                      const char *path, serve_arg_fn arg, void *req, struct serve_reply *out);

/* A {"error": msg} answer with status. */
void serve_api_error(struct serve_reply *out, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
