/* lambda-serve - the serving layer (DESIGN.md sections 3 and 5). */
#include <arpa/inet.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cfg.h"
#include "db.h"
#include "dim.h"
#include "log.h"
#include "pin.h"
#include "router.h"
#include "serve.h"
#include "shard.h"
#include "sig.h"

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"port", CFG_INT, "8080", "TCP port (0: any free port, logged as listening port=N)"},
    {"bind", CFG_STR, "127.0.0.1", "address to listen on"},
    {"threads", CFG_INT, "0",
     "worker threads; 0: one per core but one, at least 1 (the speed layer shares the machine);"
     " a router: one event loop per core (router_io = threads: eight workers per core)"},
    {"allowed_lateness", CFG_MS, "10m",
     "a minute is final once the watermark passes its end + this"},
    {"max_connections", CFG_INT, "512", "at most this many client connections at once"},
    {"connection_timeout", CFG_MS, "30s", "an idle connection is closed after this"},
    {"serve_cache_merchants", CFG_INT, "1000000",
     "merchants whose totals are held in memory (about 110 bytes + the id each); past it, SQLite "
     "answers"},
    {"max_event_clients", CFG_INT, "64", "GET /events subscribers at most; the others get 503"},
    /* libmicrohttpd zeroes a connection's whole buffer after every request: 128 KiB cost a
     * third of the throughput of /query. 32 KiB holds ?ids= of 1000 ids of up to 24 bytes;
     * 131072 holds 1000 of 64. */
    {"connection_memory", CFG_INT, "32768",
     "per-connection buffer limit in bytes (bounds the request head; 131072 for ?ids= of 1000 "
     "ids of 64 bytes)"},
    {"request_timeout", CFG_MS, "5s",
     "a connection whose request head has not arrived whole within this (of its opening, or "
     "of its previous answer) is closed; 0: no bound"},
    {"max_connections_per_ip", CFG_INT, "64",
     "at most this many connections from one client address (0: no limit); raise it behind a "
     "proxy or router, whose clients share one address"},
    {"query_timeout", CFG_MS, "2s",
     "one request's reads may take this long, then it is answered 503 (0: no bound)"},
    {"stale_after", CFG_MS, "30s", "/health: degraded when the speed checkpoint is older"},
    {"max_lag", CFG_INT, "100000", "/health: degraded when the speed lag is above this"},
    {"batch_stale_after", CFG_MS, "10m",
     "/health: degraded when the served batch version's cut is older"},
    {"shards", CFG_STR, NULL,
     "route to these shards' lambda-serve (URL,URL,...) and own no data directory"},
    {"shard_timeout", CFG_MS, "2s", "with shards: how long a shard may take to answer"},
    {"router_io", CFG_STR, "events",
     "with shards: events (event loops: a request waiting for its shards holds no thread) or "
     "threads (each worker blocks until its shards answered, one request at a time)"},
    {"dimension_file", CFG_STR, NULL,
     "merchant attributes joined into answers: a .csv with a merchant_id column, or .ndjson"},
    {"dimension_refresh", CFG_MS, "10s",
     "how often dimension_file is checked for a new version (mtime, size, inode)"},
    {NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    stop_requested = sig;
}

/* A wrong --data-dir serves zeros to everyone, so say it loudly when the directory holds none
 * of the layers' files (a new deployment whose layers have not written yet looks the same). */
static void warn_if_empty(const char *data_dir)
{
    static const enum db_file files[] = {DB_MASTER, DB_BATCH, DB_SPEED};
    char path[PATH_MAX];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        db_path(data_dir, files[i], path, sizeof(path));
        if (access(path, F_OK) == 0)
            return;
    }
    log_warn("serve",
             "data_dir_empty data_dir=%s note=\"no master.db, batch.db or speed.db there: is "
             "--data-dir right? answers are zeros until a layer writes\"",
             data_dir);
}

/* Requests are short and CPU-bound; a worker per core but one leaves a core to the speed layer
 * (and, in a benchmark, to the load generator) instead of making threads queue for cores. A
 * router's event loop never waits for its shards with a thread, so one per core keeps every
 * core busy. A router's blocking worker (router_io = threads) sleeps until its shards answer,
 * so it gets eight per core: under 32 connections on 2 cores, 16 workers answered 20-40% more
 * than 4 (more shard requests in flight, which the shards then answer in batches). */
static int default_threads(int64_t configured, bool is_router, bool is_blocking)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    if (configured > 0)
        return (int)configured;
    if (is_router && !is_blocking)
        return cores > 1 ? (int)cores : 1;
    if (is_router)
        return cores > 1 ? (int)(8 * cores) : 8;
    return cores > 2 ? (int)(cores - 1) : 1;
}

/* A shard's serving checks the pins of its data directory (exit 2 on another set or
 * epoch_ms); a router has none, and checks that its shards' sets fit together. 0, or the exit
 * code. */
static int prepare(const struct cfg *c, struct router **router, char *set, size_t setlen)
{
    struct lerr e = {{0}};
    struct shard_set s;
    struct pin_set pins;
    int rc;

    if (shard_set_parse(&s, cfg_str(c, "shard_partitions"), &e) != 0) {
        fprintf(stderr, "lambda-serve: %s\n", e.msg);
        return 2;
    }
    shard_set_format(&s, set, setlen);
    if (!cfg_str(c, "shards")) {
        pin_set_from_cfg(&pins, c);
        if ((rc = pin_check_dir(cfg_str(c, "data_dir"), &pins, &e)) > 0) {
            log_error("serve", "start_failed err=\"%s\"", e.msg);
            return 2;
        }
        /* An unreadable file is no reason not to serve: its layer answers 503 until it reads. */
        if (rc < 0)
            log_warn("serve", "pins_unreadable err=\"%s\"", e.msg);
        return 0;
    }
    struct router_opts o = {.shards = cfg_str(c, "shards"),
                            .timeout_ms = cfg_ms(c, "shard_timeout"),
                            .partitioner = cfg_str(c, "partitioner")};
    if (!(*router = router_new(&o, &e))) {
        fprintf(stderr, "lambda-serve: %s\n", e.msg);
        return 2;
    }
    if ((rc = router_check(*router, &e)) != 0) {
        log_error("serve", "start_failed err=\"%s\"", e.msg);
        return rc > 0 ? 2 : 1;
    }
    if (router_start(*router, &e) != 0) {
        log_error("serve", "start_failed err=\"%s\"", e.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cfg c;
    struct lerr e = {{0}};
    struct serve *s = NULL;
    struct router *router = NULL;
    char set[SHARD_TEXT_MAX];
    struct dim_source *dim = NULL;
    struct in6_addr addr;
    sigset_t stop, unblocked;
    int rc = 2;

    if (cfg_load(&c, keys, argc, argv, &e) != 0) {
        fprintf(stderr, "lambda-serve: %s\n", e.msg);
        goto out;
    }
    if (c.want_help) {
        cfg_print_help(&c, "usage: lambda-serve [--port 8080] [--bind 127.0.0.1] "
                           "[--data-dir ./data]");
        rc = 0;
        goto out;
    }
    if (cfg_int(&c, "threads") > 64) {
        fprintf(stderr, "lambda-serve: bad threads %lld: want 0..64\n",
                (long long)cfg_int(&c, "threads"));
        goto out;
    }
    if (inet_pton(AF_INET, cfg_str(&c, "bind"), &addr) != 1 &&
        inet_pton(AF_INET6, cfg_str(&c, "bind"), &addr) != 1) {
        fprintf(stderr, "lambda-serve: bad bind '%s': want a numeric IPv4 or IPv6 address\n",
                cfg_str(&c, "bind"));
        goto out;
    }
    if (cfg_int(&c, "port") > 65535) {
        fprintf(stderr, "lambda-serve: bad port %lld: want 0..65535\n",
                (long long)cfg_int(&c, "port"));
        goto out;
    }
    if (cfg_int(&c, "connection_memory") < 16384) {
        fprintf(stderr, "lambda-serve: bad connection_memory %lld: want at least 16384\n",
                (long long)cfg_int(&c, "connection_memory"));
        goto out;
    }
    if (strcmp(cfg_str(&c, "router_io"), "events") != 0 &&
        strcmp(cfg_str(&c, "router_io"), "threads") != 0) {
        fprintf(stderr, "lambda-serve: bad router_io '%s': want events or threads\n",
                cfg_str(&c, "router_io"));
        goto out;
    }
    cfg_log(&c, "serve");
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread: it is not thread-safe */
    if ((rc = prepare(&c, &router, set, sizeof(set))) != 0)
        goto out;
    rc = 2;
    if (!router)
        warn_if_empty(cfg_str(&c, "data_dir"));
    if (cfg_str(&c, "dimension_file")) {
        dim = dim_source_new(cfg_str(&c, "dimension_file"), cfg_ms(&c, "dimension_refresh"), &e);
        if (!dim) {
            fprintf(stderr, "lambda-serve: %s\n", e.msg);
            goto out;
        }
        struct dim_stats ds;
        dim_source_stats(dim, &ds);
        log_info("serve", "dimension_loaded file=\"%s\" version=%lld merchants=%zu",
                 cfg_str(&c, "dimension_file"), (long long)ds.version, ds.merchants);
    }
    /* Workers inherit this mask, so SIGTERM and SIGINT reach only sigsuspend() below. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, &unblocked);
    sigdelset(&unblocked, SIGTERM); /* even when the parent had them blocked */
    sigdelset(&unblocked, SIGINT);
    sig_catch_stop(on_signal, false);
    signal(SIGPIPE, SIG_IGN);
    bool is_blocking = !strcmp(cfg_str(&c, "router_io"), "threads");
    struct serve_opts o = {
        .data_dir = cfg_str(&c, "data_dir"),
        .bind = cfg_str(&c, "bind"),
        .port = (int)cfg_int(&c, "port"),
        .threads = default_threads(cfg_int(&c, "threads"), router != NULL, is_blocking),
        .allowed_lateness_ms = cfg_ms(&c, "allowed_lateness"),
        .connection_limit = (unsigned)cfg_int(&c, "max_connections"),
        .connection_timeout_s = (unsigned)((cfg_ms(&c, "connection_timeout") + 999) / 1000),
        .request_timeout_ms = cfg_ms(&c, "request_timeout"),
        .connections_per_ip = (unsigned)cfg_int(&c, "max_connections_per_ip"),
        .query_timeout_ms = cfg_ms(&c, "query_timeout"),
        .health = {.stale_after_ms = cfg_ms(&c, "stale_after"),
                   .max_lag = cfg_int(&c, "max_lag"),
                   .batch_stale_after_ms = cfg_ms(&c, "batch_stale_after")},
        .connection_memory = (size_t)cfg_int(&c, "connection_memory"),
        .shard_partitions = set,
        .router = router,
        .router_threads = is_blocking,
        .router_timeout_ms = cfg_ms(&c, "shard_timeout"),
        .dim = dim,
        .cache_merchants = (size_t)cfg_int(&c, "serve_cache_merchants"),
        .max_event_clients = (unsigned)cfg_int(&c, "max_event_clients"),
    };
    if (!(s = serve_start(&o, &e))) {
        log_error("serve", "start_failed err=\"%s\"", e.msg);
        rc = 1;
        goto out;
    }
    if (router)
        log_info("serve", "listening port=%d bind=%s threads=%d router_io=%s shards=%s",
                 serve_port(s), o.bind, o.threads, cfg_str(&c, "router_io"), cfg_str(&c, "shards"));
    else
        log_info("serve", "listening port=%d bind=%s threads=%d data_dir=%s", serve_port(s), o.bind,
                 o.threads, o.data_dir);
    while (!stop_requested)
        sigsuspend(&unblocked); /* unblocks them, waits for one, blocks them again */
    log_info("serve", "stopping signal=%s", stop_requested == SIGINT ? "SIGINT" : "SIGTERM");
    serve_stop(s);
    log_info("serve", "stopped");
    rc = 0;
out:
    router_free(router);
    dim_source_free(dim); /* after the workers stopped: none holds a version now */
    cfg_release(&c);
    return rc;
}
