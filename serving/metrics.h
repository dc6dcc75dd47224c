/* metrics.h - lambda-serve's own request metrics: counts by route and status, latency.
 *
 * Worker threads record every answered request with serve_metrics_observe(); /metrics renders
 * them in the Prometheus text format. Every counter is a C11 atomic, so recording takes no
 * lock and a render may run while requests are counted (it sees each counter's recent value). */
#ifndef LAMBDA_SERVE_METRICS_H
#define LAMBDA_SERVE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

enum serve_route {
    SERVE_R_DASHBOARD,
    SERVE_R_QUERY,
    SERVE_R_QUERY_IDS,
    SERVE_R_SERIES,
    SERVE_R_TOP,
    SERVE_R_HEALTH,
    SERVE_R_METRICS,
    SERVE_R_OTHER, /* no such route: 404 */
    SERVE_R_COUNT
};

#define SERVE_CODES   9  /* 200 400 404 405 414 500 503, "other", and one spare */
#define SERVE_BUCKETS 14 /* latency bounds, plus +Inf */

struct serve_metrics {
    atomic_uint_fast64_t requests[SERVE_R_COUNT][SERVE_CODES];
    atomic_uint_fast64_t buckets[SERVE_R_COUNT][SERVE_BUCKETS + 1]; /* not cumulative */
    atomic_uint_fast64_t sum_us[SERVE_R_COUNT];
};

/* The route's label value ("query", "series", ...). */
const char *serve_route_name(enum serve_route r);

/* Zeroes every counter. */
void serve_metrics_init(struct serve_metrics *m);

/* Counts one answered request of route r with status and duration in microseconds. */
void serve_metrics_observe(struct serve_metrics *m, enum serve_route r, unsigned status,
                           int64_t duration_us);

/* Writes lambda_http_requests_total and lambda_http_request_duration_seconds to f. */
void serve_metrics_render(struct serve_metrics *m, FILE *f);

#endif
