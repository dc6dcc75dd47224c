/* health.c - the layers' state beyond their data, and the /health verdict (see health.h). */
#include "health.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "lock.h"
#include "log.h"

static void copy_text(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);

    snprintf(out, size, "%s", t ? (const char *)t : "");
}

static int read_last_run(sqlite3 *db, struct serve_health_facts *f, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(db,
                   "SELECT ok, finished_ms, finished_ms - started_ms, failed_check, error"
                   " FROM runs ORDER BY id DESC LIMIT 1",
                   &st, e) != 0)
        return -1;
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        f->has_run = true;
        f->run_ok = sqlite3_column_int(st, 0) != 0;
        f->run_finished_ms = sqlite3_column_int64(st, 1);
        f->run_duration_ms = sqlite3_column_int64(st, 2);
        copy_text(st, 3, f->run_failed_check, sizeof(f->run_failed_check));
        copy_text(st, 4, f->run_error, sizeof(f->run_error));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE
               ? 0
               : lerr_set(e, "cannot read batch.db's runs: %s", sqlite3_errmsg(db));
}

static int read_counters(sqlite3 *db, struct serve_health_facts *f, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(db, "SELECT name, value FROM run_counters ORDER BY name", &st, e) != 0)
        return -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && f->ncounters < SERVE_HEALTH_COUNTERS) {
        copy_text(st, 0, f->counter[f->ncounters].name, sizeof(f->counter[0].name));
        f->counter[f->ncounters++].value = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE
               ? 0
               : lerr_set(e, "cannot read batch.db's run counters: %s", sqlite3_errmsg(db));
}

static int read_pending(sqlite3 *db, struct serve_health_facts *f, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(db,
                   "SELECT id, started_ms FROM versions WHERE state='pending'"
                   " ORDER BY id DESC LIMIT 1",
                   &st, e) != 0)
        return -1;
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        f->has_pending = true;
        f->pending_version = sqlite3_column_int64(st, 0);
        f->pending_started_ms = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE
               ? 0
               : lerr_set(e, "cannot read batch.db's versions: %s", sqlite3_errmsg(db));
}

int serve_health_read(const char *data_dir, struct serve_health_facts *f, struct lerr *e)
{
    char path[PATH_MAX];
    sqlite3 *db = NULL;
    int64_t has_runs = 0;
    int held, rc = -1;

    memset(f, 0, sizeof(*f));
    if ((held = lock_held(data_dir, "speed.lock", e)) < 0)
        return -1;
    f->speed_running = held == 1;
    db_path(data_dir, DB_BATCH, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return 0;
    /* One read transaction, so the run and the pending cut are of the same moment. */
    if (db_open_ro(data_dir, DB_BATCH, &db, e) != 0 || db_exec(db, "BEGIN", e) != 0 ||
        db_query_int(db, "SELECT count(*) FROM sqlite_master WHERE name IN ('runs','versions')",
                     &has_runs, e) != 0)
        goto out;
    if (has_runs == 2 &&
        (read_last_run(db, f, e) != 0 || read_counters(db, f, e) != 0 || read_pending(db, f, e)))
        goto out;
    rc = 0;
out:
    /* In store.h's words, as every other route says it: SQLite's text to the debug log. */
    if (rc != 0 && db) {
        log_debug("serve", "health_unreadable file=batch.db err=\"%s\"", e->msg);
        lerr_set(e, "batch.db unreadable: %s", serve_store_reason(sqlite3_extended_errcode(db)));
    }
    sqlite3_close(db); /* ends the read transaction */
    return rc;
}

static void reason(json_t *reasons, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reason(json_t *reasons, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(reasons, json_string(msg));
}

static json_t *opt_text(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

static json_t *batch_doc(const struct serve_view *v, const struct serve_health_facts *f,
                         int64_t now_ms)
{
    json_t *run = json_null(), *pending = json_null();

    if (f->has_run)
        run = json_pack("{s:b,s:I,s:I,s:o,s:o}", "ok", f->run_ok, "age_ms",
                        (json_int_t)(now_ms - f->run_finished_ms), "duration_ms",
                        (json_int_t)f->run_duration_ms, "failed_check",
                        opt_text(f->run_failed_check), "error", opt_text(f->run_error));
    if (f->has_pending)
        pending = json_pack("{s:I,s:I}", "version", (json_int_t)f->pending_version, "age_ms",
                            (json_int_t)(now_ms - f->pending_started_ms));
    return json_pack("{s:o,s:o,s:o,s:o}", "version",
                     v->has_batch ? json_integer(v->version) : json_null(), "age_ms",
                     v->has_batch ? json_integer(now_ms - v->started_ms) : json_null(), "last_run",
                     run, "pending_cut", pending);
}

static json_t *speed_doc(const struct serve_view *v, const struct serve_health_facts *f,
                         int64_t lag, int64_t now_ms)
{
    bool shows_lag = v->has_speed && f->speed_running && v->has_checkpoint;
    json_t *age = v->has_checkpoint ? json_integer(now_ms - v->checkpoint_ms) : json_null();

    return json_pack("{s:b,s:o,s:o,s:o}", "running", f->speed_running, "checkpoint_age_ms", age,
                     "lag", shows_lag ? json_integer(lag) : json_null(), "lag_age_ms",
                     shows_lag ? json_integer(now_ms - v->checkpoint_ms) : json_null());
}

/* The reasons for "degraded", in a fixed order: speed first, then batch. */
static void degraded_reasons(json_t *r, const struct serve_view *v,
                             const struct serve_health_facts *f, int64_t lag,
                             const struct serve_health_limits *lim, int64_t now_ms)
{
    if (!f->speed_running)
        reason(r, "no speed layer holds speed.lock");
    if (v->has_checkpoint && now_ms - v->checkpoint_ms > lim->stale_after_ms)
        reason(r, "speed checkpoint is %" PRId64 "s old (stale_after %" PRId64 "s)",
               (now_ms - v->checkpoint_ms) / 1000, lim->stale_after_ms / 1000);
    if (f->speed_running && v->has_speed && lag > lim->max_lag)
        reason(r, "speed lag %" PRId64 " is above max_lag %" PRId64, lag, lim->max_lag);
    if (f->has_run && !f->run_ok && f->run_failed_check[0])
        reason(r, "the last batch run failed: data-quality check %s", f->run_failed_check);
    else if (f->has_run && !f->run_ok)
        reason(r, "the last batch run failed: %s", f->run_error);
    if (v->has_batch && now_ms - v->started_ms > lim->batch_stale_after_ms)
        reason(r, "batch version %" PRId64 " is %" PRId64 "s old (batch_stale_after %" PRId64 "s)",
               v->version, (now_ms - v->started_ms) / 1000, lim->batch_stale_after_ms / 1000);
}

json_t *serve_health_judge(const struct serve_view *v, const struct serve_health_facts *f,
                           int64_t lag, const struct serve_health_limits *lim, int64_t now_ms,
                           unsigned *status)
{
    json_t *reasons = json_array();
    const char *verdict;

    if (!v->has_batch && !v->has_checkpoint) {
        reason(reasons, "nothing to serve: no published batch version and no speed checkpoint");
        verdict = "unavailable";
        *status = 503;
    } else {
        degraded_reasons(reasons, v, f, lag, lim, now_ms);
        verdict = json_array_size(reasons) ? "degraded" : "ok";
        *status = 200;
    }
    return json_pack("{s:s,s:o,s:o,s:o}", "status", verdict, "reasons", reasons, "batch",
                     batch_doc(v, f, now_ms), "speed", speed_doc(v, f, lag, now_ms));
}
