/* metrics.c - lambda-serve's /metrics page: request counters and the layers' figures, in the
 * Prometheus text format. */
#include "metrics.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dim.h"
#include "health.h"
#include "tm.h"

/* Status codes lambda-serve answers with; anything else is counted as "other". */
static const unsigned codes[] = {200, 400, 404, 405, 413, 414, 500, 503};
#define NCODES (sizeof(codes) / sizeof(codes[0]))

/* Upper bounds of the latency buckets, microseconds. */
static const int64_t bounds_us[SERVE_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
};

void serve_metrics_init(struct serve_metrics *m)
{
    for (int r = 0; r < SERVE_METRICS_ROUTES; r++) {
        for (int c = 0; c < SERVE_CODES; c++)
            atomic_init(&m->requests[r][c], 0);
        for (int b = 0; b <= SERVE_BUCKETS; b++)
            atomic_init(&m->buckets[r][b], 0);
        atomic_init(&m->sum_us[r], 0);
    }
}

void serve_metrics_observe(struct serve_metrics *m, int route, unsigned status, int64_t duration_us)
{
    size_t c = 0, b = 0;

    while (c < NCODES && codes[c] != status)
        c++;
    while (b < SERVE_BUCKETS && duration_us > bounds_us[b])
        b++;
    if (duration_us < 0)
        duration_us = 0;
    atomic_fetch_add_explicit(&m->requests[route][c], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->buckets[route][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum_us[route], (uint_fast64_t)duration_us, memory_order_relaxed);
}

static uint64_t load(atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

void serve_metrics_render(struct serve_metrics *m, serve_metrics_name_fn route_name, FILE *f)
{
    fputs("# HELP lambda_http_requests_total HTTP requests answered, by route and status code.\n"
          "# TYPE lambda_http_requests_total counter\n",
          f);
    for (int r = 0; r < SERVE_METRICS_ROUTES; r++) {
        for (size_t c = 0; c <= NCODES; c++) {
            uint64_t n = load(&m->requests[r][c]);
            if (n == 0)
                continue;
            if (c < NCODES)
                fprintf(f, "lambda_http_requests_total{route=\"%s\",code=\"%u\"} %" PRIu64 "\n",
                        route_name(r), codes[c], n);
            else
                fprintf(f, "lambda_http_requests_total{route=\"%s\",code=\"other\"} %" PRIu64 "\n",
                        route_name(r), n);
        }
    }
    fputs("# HELP lambda_http_request_duration_seconds Time from request to queued answer.\n"
          "# TYPE lambda_http_request_duration_seconds histogram\n",
          f);
    for (int r = 0; r < SERVE_METRICS_ROUTES; r++) {
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
                    route_name(r), (double)bounds_us[b] / 1e6, cum);
        }
        cum += load(&m->buckets[r][SERVE_BUCKETS]);
        fprintf(f,
                "lambda_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %" PRIu64
                "\n",
                route_name(r), cum);
        fprintf(f, "lambda_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_name(r),
                (double)load(&m->sum_us[r]) / 1e6);
        fprintf(f, "lambda_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
                route_name(r), cum);
    }
}

#define COUNTERS_MAX 128

/* The counters of speed.db and master.db, gathered so that each metric family prints as one
 * block, as the text format wants. */
struct counters {
    struct {
        const char *layer;
        char name[64];
        int64_t value;
    } row[COUNTERS_MAX];
    int n;
};

/* The counter families of /metrics: every counter called name (with is_prefix, every one
 * starting with it, labelled with the rest as its reason) becomes metric; with_layer labels it
 * with its layer, else only the speed layer's is shown. */
static const struct family {
    const char *metric, *help, *name;
    bool is_prefix, with_layer;
} families[] = {
    {"lambda_rejects_total", "Events rejected, by layer and reason.", "rejects_", true, false},
    {"lambda_late_total", "Late events (counted, and recorded).", "late", false, false},
    {"lambda_duplicates_total", "Duplicate orders not counted again.", "duplicates", false, true},
    {"lambda_key_mismatch_total", "Events whose message key differs from merchant_id.",
     "key_mismatch", false, true},
    {"lambda_speed_consumed_total", "Messages the speed layer read.", "consumed", false, false},
    {"lambda_speed_applied_total", "Orders the speed layer counted.", "applied", false, false},
    {"lambda_batch_full_runs_total",
     "Full batch runs, by outcome (corrected: the increments differed from master).", "full_runs_",
     true, false},
    {"lambda_batch_full_differences_total",
     "Buckets where a full run found the increments wrong, and corrected them.", "full_differences",
     false, true},
};

static void counter_add(void *arg, const char *layer, const char *name, int64_t value)
{
    struct counters *cs = arg;

    if (cs->n == COUNTERS_MAX)
        return;
    cs->row[cs->n].layer = layer; /* a static string of store.c */
    snprintf(cs->row[cs->n].name, sizeof(cs->row[0].name), "%s", name);
    cs->row[cs->n++].value = value;
}

static void counter_family(FILE *f, const struct counters *cs, const struct family *fam)
{
    size_t plen = strlen(fam->name);

    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", fam->metric, fam->help, fam->metric);
    for (int i = 0; i < cs->n; i++) {
        const char *k = cs->row[i].name;
        if (fam->is_prefix ? strncmp(k, fam->name, plen) != 0 : strcmp(k, fam->name) != 0)
            continue;
        if (fam->is_prefix)
            fprintf(f, "%s{layer=\"%s\",reason=\"%s\"} %" PRId64 "\n", fam->metric,
                    cs->row[i].layer, k + plen, cs->row[i].value);
        else if (fam->with_layer)
            fprintf(f, "%s{layer=\"%s\"} %" PRId64 "\n", fam->metric, cs->row[i].layer,
                    cs->row[i].value);
        else if (!strcmp(cs->row[i].layer, "speed"))
            fprintf(f, "%s %" PRId64 "\n", fam->metric, cs->row[i].value);
    }
}

/* Kafka retention losses, one family for both layers: master.db's deleted_offsets (offsets the
 * batch never read) and speed.db's skipped_offsets. */
static void lost_offsets(FILE *f, const struct counters *cs)
{
    static const char *const layers[] = {"batch", "speed"}, *const names[] = {"deleted_offsets",
                                                                              "skipped_offsets"};

    fputs("# HELP lambda_kafka_lost_offsets_total Offsets Kafka deleted before a layer read them.\n"
          "# TYPE lambda_kafka_lost_offsets_total counter\n",
          f);
    /* Both series from the start (0 until a loss), so that increase() sees the first one. */
    for (int l = 0; l < 2; l++) {
        int64_t n = 0;
        for (int i = 0; i < cs->n; i++)
            if (!strcmp(cs->row[i].layer, layers[l]) && !strcmp(cs->row[i].name, names[l]))
                n = cs->row[i].value;
        fprintf(f, "lambda_kafka_lost_offsets_total{layer=\"%s\"} %" PRId64 "\n", layers[l], n);
    }
}

static void lag_line(void *arg, const char *merchant_id, int64_t partition,
                     const struct serve_sums *s)
{
    (void)merchant_id;
    fprintf(arg, "lambda_speed_lag{partition=\"%" PRId64 "\"} %" PRId64 "\n", partition,
            s->order_count);
}

static void gauge(FILE *f, const char *metric, const char *help, double value)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n%s %.3f\n", metric, help, metric, metric, value);
}

/* The layers' gauges, read in one snapshot. */
static int layer_gauges(struct serve_store *st, FILE *f, struct lerr *e)
{
    struct serve_view v;
    int64_t now_ms = tm_now_ms();
    int rc = 0;

    if (serve_store_begin(st, &v, e) != 0)
        return -1;
    if (v.has_batch) {
        fprintf(f,
                "# HELP lambda_batch_version The batch version served.\n"
                "# TYPE lambda_batch_version gauge\nlambda_batch_version %" PRId64 "\n",
                v.version);
        gauge(f, "lambda_batch_version_age_seconds", "Age of the served version's cut.",
              (double)(now_ms - v.started_ms) / 1e3);
    }
    if (v.has_checkpoint)
        gauge(f, "lambda_speed_checkpoint_age_seconds", "Age of the last speed checkpoint.",
              (double)(now_ms - v.checkpoint_ms) / 1e3);
    if (v.has_watermark)
        gauge(f, "lambda_speed_watermark_seconds", "The stream watermark, epoch seconds.",
              (double)v.watermark_ms / 1e3);
    if (v.has_speed) {
        fputs("# HELP lambda_speed_lag Messages not yet consumed, per partition.\n"
              "# TYPE lambda_speed_lag gauge\n",
              f);
        rc = serve_store_lag(st, lag_line, f, e);
    }
    serve_store_end(st);
    return rc;
}

int serve_metrics_render_layers(struct serve_store *st, FILE *f, struct lerr *e)
{
    struct counters *cs = calloc(1, sizeof(*cs));
    int rc = -1;

    if (!cs)
        return lerr_set(e, "out of memory");
    if (layer_gauges(st, f, e) != 0 || serve_store_counters(st, counter_add, cs, e) != 0)
        goto out;
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
        counter_family(f, cs, &families[i]);
    lost_offsets(f, cs);
    rc = 0;
out:
    free(cs);
    return rc;
}

void serve_metrics_render_dimension(const struct dim_stats *d, FILE *f)
{
    fprintf(f,
            "# HELP lambda_dimension_version The merchant dimension's version (content hash).\n"
            "# TYPE lambda_dimension_version gauge\nlambda_dimension_version %lld\n"
            "# HELP lambda_dimension_merchants Merchants the dimension names.\n"
            "# TYPE lambda_dimension_merchants gauge\nlambda_dimension_merchants %zu\n"
            "# HELP lambda_dimension_loaded_seconds When the serving version was loaded.\n"
            "# TYPE lambda_dimension_loaded_seconds gauge\nlambda_dimension_loaded_seconds %.3f\n"
            "# HELP lambda_dimension_loads_total Versions of the dimension file loaded.\n"
            "# TYPE lambda_dimension_loads_total counter\nlambda_dimension_loads_total %lld\n"
            "# HELP lambda_dimension_failed_loads_total Changed files that did not load.\n"
            "# TYPE lambda_dimension_failed_loads_total counter\n"
            "lambda_dimension_failed_loads_total %lld\n",
            (long long)d->version, d->merchants, (double)d->loaded_ms / 1e3, (long long)d->loads,
            (long long)d->failed_loads);
}

void serve_metrics_render_health(const struct serve_health_facts *h, int64_t now_ms, FILE *f)
{
    const char *k;

    gauge(f, "lambda_speed_running", "1 while a speed layer holds speed.lock.",
          h->speed_running ? 1 : 0);
    if (h->has_run) {
        gauge(f, "lambda_batch_last_run_ok",
              "1 when the last batch run published, 0 when it failed.", h->run_ok ? 1 : 0);
        gauge(f, "lambda_batch_last_run_duration_seconds", "How long the last batch run took.",
              (double)h->run_duration_ms / 1e3);
        gauge(f, "lambda_batch_last_run_age_seconds", "Time since the last batch run ended.",
              (double)(now_ms - h->run_finished_ms) / 1e3);
    }
    if (h->has_pending)
        gauge(f, "lambda_batch_pending_cut_age_seconds",
              "Age of the cut a batch run recorded and no run has published yet.",
              (double)(now_ms - h->pending_started_ms) / 1e3);
    for (int i = 0; i < h->ncounters; i++)
        if (!strcmp(h->counter[i].name, "runs"))
            fprintf(f,
                    "# HELP lambda_batch_runs_total Batch runs recorded (skipped ones are not).\n"
                    "# TYPE lambda_batch_runs_total counter\nlambda_batch_runs_total %" PRId64 "\n",
                    h->counter[i].value);
    fputs("# HELP lambda_batch_run_failures_total Failed batch runs, by the data-quality check that"
          " failed (\"error\": something else did).\n"
          "# TYPE lambda_batch_run_failures_total counter\n",
          f);
    for (int i = 0; i < h->ncounters; i++) {
        k = h->counter[i].name;
        if (!strncmp(k, "failed_", 7) && strcmp(k, "failed_runs") != 0)
            fprintf(f, "lambda_batch_run_failures_total{check=\"%s\"} %" PRId64 "\n", k + 7,
                    h->counter[i].value);
    }
}
