/* lambda-speed - the speed layer (DESIGN.md sections 3 and 5).
 *
 *   lambda-speed [--start earliest|latest|<RFC 3339>] ...   the daemon
 *   lambda-speed savepoint --out FILE                       export the committed state
 *   lambda-speed savepoint --restore FILE                   replace it (no speed running)
 *
 * Exit codes: 0 stopped by SIGTERM/SIGINT (after a last checkpoint), 1 failure (another
 * instance, a database error), 2 bad configuration. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "cfg.h"
#include "log.h"
#include "mem.h"
#include "pin.h"
#include "sig.h"
#include "speed.h"
#include "tm.h"

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"checkpoint_ms", CFG_MS, "200", "interval between checkpoints"},
    {"checkpoint_max_ms", CFG_MS, "1000",
     "while catching up on a backlog, checkpoints may stretch to this interval"},
    {"watermark_delay", CFG_MS, "5s", "partition watermark = max event time - this"},
    {"idle_timeout", CFG_MS, "30s", "a partition silent this long leaves the watermark"},
    {"allowed_lateness", CFG_MS, "10m",
     "a minute is final once the watermark passes its end + this"},
    {"start", CFG_STR, "earliest",
     "first start without a batch cut: earliest, latest or an RFC 3339 time"},
    {"dedup_cache", CFG_INT, "2000000",
     "order id fingerprints kept in memory (more are spilled to speed.db)"},
    {"retention", CFG_MS, "7d",
     "rejects and late rows older than this are deleted from speed.db (counters keep counting)"},
    {"out", CFG_STR, NULL, "savepoint: write the speed state to this file"},
    {"restore", CFG_STR, NULL, "savepoint: replace the speed state with this file"},
    {NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop_requested;

/* The page caches (speed.db's writer 64 MiB, its reader 8 MiB, a little for master.db and
 * batch.db) get one pool reserved up front
 * (shared/mem.h): filling it page by page from malloc cost the checkpoint writer a sixth of
 * its time in heap growth and page faults. Beyond the pool SQLite uses malloc. */
#define PAGE_POOL_PAGES (16384 + 2048 + 512) /* the writer's, the reader's, the rest */

static void page_pool_init(void)
{
    int hdr = 0;
    size_t sz, bytes;
    void *p;

    if (sqlite3_config(SQLITE_CONFIG_PCACHE_HDRSZ, &hdr) != SQLITE_OK)
        return;
    sz = (4096 + (size_t)hdr + 7) & ~(size_t)7;
    bytes = sz * PAGE_POOL_PAGES;
    p = mem_reserve(bytes);
    if (p && sqlite3_config(SQLITE_CONFIG_PAGECACHE, p, (int)sz, PAGE_POOL_PAGES) != SQLITE_OK)
        mem_release(p, bytes); /* the pool is an optimisation only: go on without it */
}

static void on_signal(int sig)
{
    stop_requested = sig;
}

static int savepoint(const struct cfg *c)
{
    const char *out = cfg_str(c, "out"), *in = cfg_str(c, "restore");
    const char *dir = cfg_str(c, "data_dir");
    struct lerr e = {{0}};

    if (!out == !in) {
        fprintf(stderr, "lambda-speed: savepoint wants exactly one of --out FILE and "
                        "--restore FILE\n");
        return 2;
    }
    if (in) {
        struct pin_set pins;
        int prc;
        pin_set_from_cfg(&pins, c);
        /* A savepoint of another shard (or epoch_ms) would bring foreign positions here. */
        if ((prc = speed_savepoint_check_pins(in, dir, &pins, &e)) != 0 ||
            (prc = pin_check_dir(dir, &pins, &e)) != 0) {
            log_error("speed", "savepoint_failed err=\"%s\"", e.msg);
            return prc > 0 ? 2 : 1;
        }
    }
    if (out ? speed_savepoint_out(dir, out, &e) : speed_savepoint_restore(dir, in, &e)) {
        log_error("speed", "savepoint_failed err=\"%s\"", e.msg);
        return 1;
    }
    log_info("speed", "%s file=\"%s\" data_dir=\"%s\"",
             out ? "savepoint_written" : "savepoint_restored", out ? out : in, dir);
    return 0;
}

/* Checks what cfg_load() cannot: the sub-command and the start value. */
static int check_args(const struct cfg *c)
{
    const char *start = cfg_str(c, "start");
    int64_t t;

    if (c->nargs > 1 || (c->nargs == 1 && strcmp(c->args[0], "savepoint") != 0)) {
        fprintf(stderr, "lambda-speed: unknown command '%s' (want none or 'savepoint')\n",
                c->args[c->nargs - 1]);
        return -1;
    }
    if (strcmp(start, "earliest") != 0 && strcmp(start, "latest") != 0 &&
        tm_parse_rfc3339(start, strlen(start), &t) != 0) {
        fprintf(stderr,
                "lambda-speed: bad value '%s' for key 'start': want earliest, latest or "
                "an RFC 3339 time\n",
                start);
        return -1;
    }
    if (cfg_int(c, "dedup_cache") < 1) {
        fprintf(stderr, "lambda-speed: bad value for key 'dedup_cache': want at least 1\n");
        return -1;
    }
    if (c->nargs == 0 && (cfg_str(c, "out") || cfg_str(c, "restore"))) {
        fprintf(stderr, "lambda-speed: --out and --restore belong to 'savepoint'\n");
        return -1;
    }
    return 0;
}

static int run(const struct cfg *c)
{
    struct speed *s;
    struct speed_stats n;
    struct lerr e = {{0}};
    struct pin_set pins;
    int rc;

    pin_set_from_cfg(&pins, c);
    if ((rc = pin_check_dir(cfg_str(c, "data_dir"), &pins, &e)) != 0) {
        log_error("speed", "start_failed err=\"%s\"", e.msg);
        return rc > 0 ? 2 : 1;
    }
    if (!(s = speed_open(c, &e))) {
        log_error("speed", "start_failed err=\"%s\"", e.msg);
        return 1;
    }
    cfg_log(c, "speed");
    rc = speed_connect(s, &stop_requested, &e);
    if (rc == 0) {
        speed_get_stats(s, &n);
        log_info("speed", "started partitions=%d epoch=%" PRId64 " data_dir=\"%s\"", n.nparts,
                 n.epoch, cfg_str(c, "data_dir"));
        rc = speed_run(s, &stop_requested, &e);
    }
    speed_get_stats(s, &n);
    if (rc < 0)
        log_error("speed", "failed err=\"%s\"", e.msg);
    else
        log_info("speed", "stopped consumed=%" PRId64 " applied=%" PRId64 " epoch=%" PRId64,
                 n.consumed, n.applied, n.epoch);
    speed_close(s);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct cfg c;
    struct lerr e = {{0}};
    int rc;

    if (cfg_load(&c, keys, argc, argv, &e) != 0) {
        fprintf(stderr, "lambda-speed: %s\n", e.msg);
        cfg_release(&c);
        return 2;
    }
    if (c.want_help) {
        cfg_print_help(&c, "usage: lambda-speed [savepoint --out FILE | --restore FILE]");
        cfg_release(&c);
        return 0;
    }
    if (check_args(&c) != 0 || log_set_level(cfg_str(&c, "log_level")) != 0) {
        cfg_release(&c);
        return 2;
    }
    sig_catch_stop(on_signal, false); /* a blocking wait returns to poll the flag */
    if (c.nargs == 0)
        page_pool_init(); /* before SQLite's first use */
    rc = c.nargs == 1 ? savepoint(&c) : run(&c);
    cfg_release(&c);
    return rc;
}
