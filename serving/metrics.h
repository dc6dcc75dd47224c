/* metrics.h - lambda-serve's /metrics page in the Prometheus text format: the request
 * metrics (counts by route and status, latency) and the layers' gauges and counters.
 *
 * Worker threads record every answered request with serve_metrics_observe(); api.c's /metrics
 * route writes the page with serve_metrics_render() and serve_metrics_render_layers(). Every
 * request counter is a C11 atomic, so recording takes no lock and a render may run while
 * requests are counted (it sees each counter's recent value). Routes are numbers here: api.h
 * owns them and names them. */
#ifndef LAMBDA_SERVE_METRICS_H
#define LAMBDA_SERVE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "lerr.h"
#include "store.h"

#define SERVE_METRICS_ROUTES 16 /* routes counted: api.h's enum serve_route fits */
#define SERVE_CODES          9  /* 200 400 404 405 414 500 503, "other", and one spare */
#define SERVE_BUCKETS        14 /* latency bounds, plus +Inf */

struct serve_metrics {
    atomic_uint_fast64_t requests[SERVE_METRICS_ROUTES][SERVE_CODES];
    atomic_uint_fast64_t buckets[SERVE_METRICS_ROUTES][SERVE_BUCKETS + 1]; /* not cumulative */
    atomic_uint_fast64_t sum_us[SERVE_METRICS_ROUTES];
};

/* Gives the label value of route ("query", "series", ...). */
typedef const char *(*serve_metrics_name_fn)(int route);

/* Zeroes every counter. */
void serve_metrics_init(struct serve_metrics *m);

/* Counts one answered request of route (0 <= route < SERVE_METRICS_ROUTES) with status and
 * duration in microseconds. */
void serve_metrics_observe(struct serve_metrics *m, int route, unsigned status,
                           int64_t duration_us);

/* Writes lambda_http_requests_total and lambda_http_request_duration_seconds to f, each
 * route that was asked for labelled route_name(route). */
void serve_metrics_render(struct serve_metrics *m, serve_metrics_name_fn route_name, FILE *f);

/* Writes the layers' gauges (batch version and age, checkpoint age, watermark, lag; read in
 * one snapshot of st) and their counters (rejects, late, duplicates, ...) to f. On a read
 * error returns -1 with e set; f then holds part of them. */
int serve_metrics_render_layers(struct serve_store *st, FILE *f, struct lerr *e);

/* Writes what health.h gathered: the last batch run's outcome (lambda_batch_last_run_ok 0/1,
 * its duration and end), runs and failures by check (counters), the pending cut's age, and
 * whether a speed layer holds speed.lock. */
struct serve_health_facts;
void serve_metrics_render_health(const struct serve_health_facts *h, int64_t now_ms, FILE *f);

/* Writes the dimension's gauges and counters (version, merchants, last load, loads, failed
 * loads) to f. */
struct dim_stats;
void serve_metrics_render_dimension(const struct dim_stats *d, FILE *f);

#endif
