/* lambda-batch - the batch layer (DESIGN.md sections 3 to 5): run | import | status.
 *
 * Exit codes: 0 done (or skipped: another run holds the lock; or nothing new), 1 failed (the
 * message says what; the previous version keeps serving), 2 bad usage or configuration, 3 a
 * full run published, and corrected the increments (they differed from the master dataset). */
#include <stdio.h>
#include <string.h>

#include "batch/batch.h"
#include "cfg.h"
#include "log.h"

static const char usage[] = "usage: lambda-batch run [--full] | import FILE... | status [--json]";

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"keep_versions", CFG_INT, "3", "published versions kept in batch.db"},
    {"minute_series_hours", CFG_INT, "48", "hours of minute series kept per version"},
    {"json", CFG_BOOL, "false", "status: print JSON"},
    {"full", CFG_BOOL, "false", "run: recompute every view from the master dataset and compare"},
    {"full_every", CFG_MS, "24h", "run: a full run once the last one is this old (0: always)"},
    {"chunk_rows", CFG_INT, "100000", "Kafka messages (or 500 ms) / file lines per transaction"},
    {"lock_wait", CFG_MS, "10s", "import: how long to wait for a running batch to finish"},
    {"pause_at", CFG_STR, NULL,
     "testing: block at ingest, recompute, publish or import (logs paused at=X) until killed"},
    {NULL, 0, NULL, NULL},
};

static int run(const struct cfg *c)
{
    struct lerr e = {{0}};
    int64_t differences = 0;
    bool skipped;

    if (c->nargs != 1) {
        fprintf(stderr, "lambda-batch: run takes no arguments\n%s\n", usage);
        return 2;
    }
    if (batch_run(c, &skipped, &differences, &e) != 0) {
        log_error("batch", "run_failed err=\"%s\"", e.msg);
        fprintf(stderr, "lambda-batch: run failed: %s\n", e.msg);
        return 1;
    }
    return differences > 0 ? 3 : 0;
}

static int import(const struct cfg *c)
{
    struct lerr e = {{0}};

    if (c->nargs < 2) {
        fprintf(stderr, "lambda-batch: import needs at least one file\n%s\n", usage);
        return 2;
    }
    if (batch_import(c, &e) != 0) {
        log_error("batch", "import_failed err=\"%s\"", e.msg);
        fprintf(stderr, "lambda-batch: import failed: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static int status(const struct cfg *c)
{
    struct lerr e = {{0}};

    if (c->nargs != 1) {
        fprintf(stderr, "lambda-batch: status takes no arguments\n%s\n", usage);
        return 2;
    }
    if (batch_status(c, &e) != 0) {
        fprintf(stderr, "lambda-batch: status failed: %s\n", e.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cfg c;
    struct lerr e = {{0}};
    int rc = 2;

    if (cfg_load(&c, keys, argc, argv, &e) != 0) {
        fprintf(stderr, "lambda-batch: %s\n", e.msg);
        cfg_release(&c);
        return 2;
    }
    if (c.want_help) {
        cfg_print_help(&c, usage);
        cfg_release(&c);
        return 0;
    }
    const char *pause_at = cfg_str(&c, "pause_at");
    if (pause_at && strcmp(pause_at, "ingest") && strcmp(pause_at, "recompute") &&
        strcmp(pause_at, "publish") && strcmp(pause_at, "import"))
        fprintf(stderr,
                "lambda-batch: bad value for 'pause_at': '%s' is not ingest, recompute, "
                "publish or import\n",
                pause_at);
    else if (c.nargs == 0)
        fprintf(stderr, "lambda-batch: no command given\n%s\n", usage);
    else if (!strcmp(c.args[0], "run"))
        rc = run(&c);
    else if (!strcmp(c.args[0], "import"))
        rc = import(&c);
    else if (!strcmp(c.args[0], "status"))
        rc = status(&c);
    else
        fprintf(stderr, "lambda-batch: unknown command '%s'\n%s\n", c.args[0], usage);
    cfg_release(&c);
    return rc;
}
