/* health.h - what /health and /metrics say about the layers beyond their data: the batch
 * layer's last run and pending cut, whether a speed layer runs, and the verdict (DESIGN.md
 * section 5, "/health says ok, degraded or unavailable").
 *
 * api.c reads the snapshot (store.h), calls serve_health_read() for what batch.db's runs and
 * versions say and whether speed.lock is held, then serve_health_judge() for the document;
 * metrics.c renders the same facts as gauges and counters. The judge is a pure function of its
 * inputs, so every state is testable without a clock. */
#ifndef LAMBDA_SERVE_HEALTH_H
#define LAMBDA_SERVE_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "lerr.h"
#include "store.h"

/* The thresholds of "degraded" (lambda-serve's keys). */
struct serve_health_limits {
    int64_t stale_after_ms;       /* speed checkpoint older than this */
    int64_t max_lag;              /* messages behind, summed over partitions */
    int64_t batch_stale_after_ms; /* served version's cut older than this */
};

#define SERVE_HEALTH_COUNTERS 16

struct serve_health_facts {
    bool speed_running; /* some process holds data_dir/speed.lock */
    bool has_run;       /* batch.db records a run */
    bool run_ok;
    int64_t run_finished_ms, run_duration_ms;
    char run_failed_check[64]; /* "" when no check failed */
    char run_error[256];       /* "" when it did not fail */
    bool has_pending;
    int64_t pending_version, pending_started_ms;
    int ncounters; /* batch.db's run_counters: runs, failed_runs, failed_<check> */
    struct {
        char name[64];
        int64_t value;
    } counter[SERVE_HEALTH_COUNTERS];
};

/* Fills f from data_dir: speed.lock probed without taking it, batch.db (read-only, its own
 * short-lived connection) for the last run, the pending cut and the run counters. A missing
 * batch.db, or one from before runs were recorded, leaves those empty. -1 with e when a file
 * that exists cannot be read ("batch.db unreadable: not a database", serve_store_reason()). */
int serve_health_read(const char *data_dir, struct serve_health_facts *f, struct lerr *e);

/* The /health document and its status code: "ok" (200), "degraded" (200) with its reasons,
 * "unavailable" (503) when neither layer has anything to serve. lag is the speed layer's
 * summed lag as its last checkpoint recorded it (shown only while a speed layer runs). */
json_t *serve_health_judge(const struct serve_view *v, const struct serve_health_facts *f,
                           int64_t lag, const struct serve_health_limits *lim, int64_t now_ms,
                           unsigned *status);

#endif
