#include "metrics.h"

#include <inttypes.h>

static const char *const route_names[SERVE_R_COUNT] = {
    "dashboard", "query", "query_ids", "series", "top", "health", "metrics", "other",
};

/* Status codes lambda-serve answers with; anything else is counted as "other". */
static const unsigned codes[] = {200, 400, 404, 405, 413, 414, 500, 503};
#define NCODES (sizeof(codes) / sizeof(codes[0]))

/* Upper bounds of the latency buckets, microseconds. */
static const int64_t bounds_us[SERVE_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
};

const char *serve_route_name(enum serve_route r)
{
    return route_names[r];
}

void serve_metrics_init(struct serve_metrics *m)
{
    for (int r = 0; r < SERVE_R_COUNT; r++) {
        for (int c = 0; c < SERVE_CODES; c++)
            atomic_init(&m->requests[r][c], 0);
        for (int b = 0; b <= SERVE_BUCKETS; b++)
            atomic_init(&m->buckets[r][b], 0);
        atomic_init(&m->sum_us[r], 0);
    }
}

void serve_metrics_observe(struct serve_metrics *m, enum serve_route r, unsigned status,
                           int64_t duration_us)
{
    size_t c = 0, b = 0;

    while (c < NCODES && codes[c] != status)
        c++;
    while (b < SERVE_BUCKETS && duration_us > bounds_us[b])
        b++;
    if (duration_us < 0)
        duration_us = 0;
    atomic_fetch_add_explicit(&m->requests[r][c], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->buckets[r][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum_us[r], (uint_fast64_t)duration_us, memory_order_relaxed);
}

static uint64_t load(atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

void serve_metrics_render(struct serve_metrics *m, FILE *f)
{
    fputs("# HELP lambda_http_requests_total HTTP requests answered, by route and status code.\n"
          "# TYPE lambda_http_requests_total counter\n",
          f);
    for (int r = 0; r < SERVE_R_COUNT; r++) {
        for (size_t c = 0; c <= NCODES; c++) {
            uint64_t n = load(&m->requests[r][c]);
            if (n == 0)
                continue;
            if (c < NCODES)
                fprintf(f, "lambda_http_requests_total{route=\"%s\",code=\"%u\"} %" PRIu64 "\n",
                        route_names[r], codes[c], n);
            else
                fprintf(f, "lambda_http_requests_total{route=\"%s\",code=\"other\"} %" PRIu64 "\n",
                        route_names[r], n);
        }
    }
    fputs("# HELP lambda_http_request_duration_seconds Time from request to queued answer.\n"
          "# TYPE lambda_http_request_duration_seconds histogram\n",
          f);
    for (int r = 0; r < SERVE_R_COUNT; r++) {
        uint64_t cum = 0, total = 0;
        for (int b = 0; b <= SERVE_BUCKETS; b++)
            total += load(&m->buckets[r][b]);
        if (total == 0) /* a route never asked for */
            continue;
        for (int b = 0; b < SERVE_BUCKETS; b++) {
            cum += load(&m->buckets[r][b]);
            fprintf(f,
                    "lambda_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %" PRIu64
                    "\n",
                    route_names[r], (double)bounds_us[b] / 1e6, cum);
        }
        cum += load(&m->buckets[r][SERVE_BUCKETS]);
        fprintf(f,
                "lambda_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %" PRIu64
                "\n",
                route_names[r], cum);
        fprintf(f, "lambda_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_names[r],
                (double)load(&m->sum_us[r]) / 1e6);
        fprintf(f, "lambda_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
                route_names[r], cum);
    }
}
