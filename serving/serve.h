/* serve.h - lambda-serve's HTTP server: libmicrohttpd with an internal thread pool, or, for a
 * router, `threads` event loops that each run a daemon in external epoll mode and the
 * router's async client in one thread, on one shared listening socket (router.h).
 *
 * serve_start() binds and starts the workers; each worker thread lazily opens its own
 * read-only store (store.h) on first use and closes it when the thread ends. One follower
 * (live.h) keeps every merchant's totals in memory and raises the events GET /events streams
 * (events.h). Requests are
 * answered by api.c; serve.c only maps HTTP to it: methods, the URL length limit, headers,
 * and the request metrics. main.c owns signals and the process. */
#ifndef LAMBDA_SERVE_SERVE_H
#define LAMBDA_SERVE_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dim.h"
#include "health.h"
#include "lerr.h"

struct serve_opts {
    const char *data_dir; /* borrowed for the server's life */
    const char *bind;     /* numeric IPv4 or IPv6 address */
    int port;             /* 0: any free port (see serve_port) */
    int threads;
    int64_t allowed_lateness_ms;
    unsigned connection_limit;
    unsigned connection_timeout_s; /* idle, between requests */
    int64_t request_timeout_ms;    /* a request's head must arrive within this */
    unsigned connections_per_ip;   /* 0: no limit */
    int64_t query_timeout_ms;      /* one request's reads; 0: none */
    struct serve_health_limits health;
    size_t connection_memory;     /* per-connection buffer limit, bytes */
    struct dim_source *dim;       /* borrowed for the server's life; NULL: no dimension */
    const char *shard_partitions; /* the set /health reports (canonical text), borrowed */
    struct router *router;      /* borrowed: routes go to the shards (router.h); data_dir unused */
    bool router_threads;        /* a router's workers block on their shards (router_io = threads) */
    int64_t router_timeout_ms;  /* shard_timeout */
    size_t cache_merchants;     /* merchants held in memory at most (live.h); 0: none */
    unsigned max_event_clients; /* GET /events subscribers at most */
};

struct serve;
struct router;

/* Binds and starts serving. NULL with e set when the address cannot be used or the server
 * does not start; nothing is left running then. */
struct serve *serve_start(const struct serve_opts *o, struct lerr *e);

/* The port actually bound. */
int serve_port(const struct serve *s);

/* Stops accepting, finishes the workers (closing their stores) and frees s; NULL is a no-op. */
void serve_stop(struct serve *s);

#endif
