/* lambda-batch - the batch layer (DESIGN.md sections 3 to 5): run | import | status.
 *
 * Exit codes: 0 done (or skipped: another run holds the lock; or nothing new), 1 failed (the
 * message says what; the previous version keeps serving), 2 bad usage or configuration, 3 a
 * full run published, and corrected the increments (they differed from the master dataset). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "batch/batch.h"
#include "cfg.h"
#include "log.h"
#include "pin.h"
#include "shard.h"
#include "sig.h"

static const char usage[] = "usage: lambda-batch run [--full] | import FILE... | status [--json]";

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"keep_versions", CFG_INT, "3", "published (and failed) versions kept in batch.db"},
    {"retention", CFG_MS, "7d",
     "rejects older than this are deleted from master.db (counters keep counting)"},
    {"minute_series_hours", CFG_INT, "48", "hours of minute series kept per version"},
    {"json", CFG_BOOL, "false", "status: print JSON"},
    {"full", CFG_BOOL, "false", "run: recompute every view from the master dataset and compare"},
    {"full_every", CFG_MS, "24h", "run: a full run once the last one is this old (0: always)"},
    {"chunk_rows", CFG_INT, "100000", "Kafka messages (or 500 ms) / file lines per transaction"},
    {"lock_wait", CFG_MS, "10s", "import: how long to wait for a running batch to finish"},
    {"import_wait", CFG_MS, "60s",
     "import: how long to wait for a running lambda-speed to take the imported lines in"},
    {"pause_at", CFG_STR, NULL,
     "testing: block at ingest, merge, recompute, publish or import (logs paused at=X) until"
     " killed"},
    {NULL, 0, NULL, NULL},
};

/* The stop flag is batch.h's batch_stop_requested, which the run's loops poll. */
static void on_signal(int sig)
{
    batch_stop_requested = sig;
}

/* A run or an import on a data directory pinned to another epoch_ms or partition set would
 * cut or count wrongly: refused (exit 2) before it touches anything. 1 on a mismatch. */
static int check_pins(const struct cfg *c, struct lerr *e)
{
    struct pin_set p;
    struct shard_set set;

    if (shard_set_parse(&set, cfg_str(c, "shard_partitions"), e) != 0)
        return 1;
    pin_set_from_cfg(&p, c);
    return pin_check_dir(cfg_str(c, "data_dir"), &p, e);
}

/* A run stops at SIGINT or SIGTERM between two Kafka polls (DESIGN.md section 5); an import
 * or a status ends at once, as the signal's default. */
static int run(const struct cfg *c, struct lerr *e)
{
    int64_t differences = 0;
    bool skipped;

    sig_catch_stop(on_signal, false); /* a blocking wait returns to poll the flag */
    if (batch_run(c, &skipped, &differences, e) != 0)
        return -1;
    return differences > 0 ? 3 : 0;
}

static int import(const struct cfg *c, struct lerr *e)
{
    return batch_import(c, e);
}

static int status(const struct cfg *c, struct lerr *e)
{
    return batch_status(c, e);
}

/* The commands, as git.c lists its own: name, function, the arguments it takes. A function
 * returns -1 on failure (e says why), else the exit code. */
static const struct command {
    const char *name;
    int (*fn)(const struct cfg *c, struct lerr *e);
    int min_args, max_args; /* after the name */
    const char *bad_args;   /* what to say when the count is wrong */
} commands[] = {
    {"run", run, 0, 0, "run takes no arguments"},
    {"import", import, 1, -1, "import needs at least one file"},
    {"status", status, 0, 0, "status takes no arguments"},
};

/* Checks what cfg_load() cannot; on a bad value prints it and returns -1. */
static int check_pause_at(const struct cfg *c)
{
    static const char *const points[] = {"ingest", "merge", "recompute", "publish", "import"};
    const char *pause_at = cfg_str(c, "pause_at");

    if (!pause_at)
        return 0;
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++)
        if (!strcmp(pause_at, points[i]))
            return 0;
    fprintf(stderr,
            "lambda-batch: bad value for 'pause_at': '%s' is not ingest, merge, recompute, publish"
            " or import\n",
            pause_at);
    return -1;
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    const struct command *cmd;
    struct cfg c;
    struct lerr e = {{0}};
    int nargs, rc = 2;

    if (cfg_load(&c, keys, argc, argv, &e) != 0) {
        fprintf(stderr, "lambda-batch: %s\n", e.msg);
        goto out;
    }
    if (c.want_help) {
        cfg_print_help(&c, usage);
        rc = 0;
        goto out;
    }
    if (check_pause_at(&c) != 0)
        goto out;
    if (c.nargs == 0) {
        fprintf(stderr, "lambda-batch: no command given\n%s\n", usage);
        goto out;
    }
    if (!(cmd = find_command(c.args[0]))) {
        fprintf(stderr, "lambda-batch: unknown command '%s'\n%s\n", c.args[0], usage);
        goto out;
    }
    nargs = c.nargs - 1;
    if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
        fprintf(stderr, "lambda-batch: %s\n%s\n", cmd->bad_args, usage);
        goto out;
    }
    if (cmd->fn != status && (rc = check_pins(&c, &e)) != 0) {
        fprintf(stderr, "lambda-batch: %s\n", e.msg);
        rc = rc > 0 ? 2 : 1;
        goto out;
    }
    if ((rc = cmd->fn(&c, &e)) < 0) {
        fprintf(stderr, "lambda-batch: %s failed: %s\n", cmd->name, e.msg);
        rc = 1;
    }
out:
    cfg_release(&c);
    return rc;
}
