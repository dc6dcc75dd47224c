/* serve.c - lambda-serve's HTTP side: libmicrohttpd, the worker threads' stores, and the map
 * from a request to api.c's routes and back to a response. */
#include "serve.h"

#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "api.h"
#include "events.h"
#include "heads.h"
#include "live.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "store.h"

struct serve {
    struct MHD_Daemon *daemon;
    char *data_dir;      /* owned copy: every store borrows it */
    pthread_key_t store; /* the calling worker's struct serve_store */
    bool has_key;
    struct router *router; /* borrowed; NULL unless this lambda-serve routes to shards */
    pthread_key_t client;  /* the calling worker's struct router_client */
    bool has_client_key;
    struct serve_ctx ctx; /* ctx.metrics points at metrics */
    struct serve_metrics metrics;
    struct serve_live *live;
    struct serve_events *events;
    atomic_bool speed_seen; /* speed.db was open once (store.h) */
    int port;
    int64_t query_timeout_ms;  /* 0: none */
    struct serve_heads *heads; /* request_timeout */
};

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void store_release(void *st)
{
    serve_store_free(st);
}

/* The calling worker thread's store, made on its first request. */
static struct serve_store *thread_store(struct serve *s)
{
    struct serve_store *st = pthread_getspecific(s->store);

    if (st)
        return st;
    if (!(st = serve_store_new(s->data_dir, &s->speed_seen)))
        return NULL;
    if (pthread_setspecific(s->store, st) != 0) {
        serve_store_free(st);
        return NULL;
    }
    return st;
}

static void client_release(void *c)
{
    router_client_free(c);
}

/* The calling worker thread's connections to the shards, made on its first request. */
static struct router_client *thread_client(struct serve *s)
{
    struct router_client *c = pthread_getspecific(s->client);

    if (c)
        return c;
    if (!(c = router_client_new(s->router)))
        return NULL;
    if (pthread_setspecific(s->client, c) != 0) {
        router_client_free(c);
        return NULL;
    }
    return c;
}

static const char *get_arg(void *req, const char *name)
{
    return MHD_lookup_connection_value(req, MHD_GET_ARGUMENT_KIND, name);
}

/* Per-request state lives in *req_cls as an integer, never dereferenced: the length of the
 * whole request target + 1, shifted left once, with bit 0 set once the handler has been
 * called. on_uri() runs before the target is split into path and arguments, so it is the one
 * place that sees the query string's length. */
#define REQ_SEEN 1u

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls, (void)conn;
    return (void *)(((uintptr_t)strlen(uri) + 1) << 1);
}

/* The connection's entry in the request-head watch (heads.h), NULL without one. */
static struct serve_head *conn_head(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return i ? i->socket_context : NULL;
}

static enum MHD_Result respond(struct MHD_Connection *conn, const struct serve_reply *rep)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    if (rep->owned)
        resp = MHD_create_response_from_buffer(rep->len, rep->owned, MHD_RESPMEM_MUST_FREE);
    else /* 0.9.75 has no const variant; PERSISTENT promises MHD never writes nor frees it */
        resp = MHD_create_response_from_buffer(rep->len, (void *)rep->body, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(rep->owned);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep->content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (rep->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rep->allow);
    ret = MHD_queue_response(conn, rep->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    struct serve *s = cls;
    int64_t start_us = mono_us();
    uintptr_t state = (uintptr_t)*req_cls;
    size_t target_len = (size_t)(state >> 1);
    bool is_get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    enum serve_route r;
    struct serve_reply rep = {0};
    struct serve_store *st;
    struct router_client *rc;
    enum MHD_Result ret;

    (void)version, (void)upload_data;
    /* libmicrohttpd closes the connection after an answer queued on the first call (it has
     * not read the body yet), so a GET is answered on the second call and keeps its
     * connection alive; a body sent with a GET is read and ignored. Other methods are refused
     * at once: their connection closes, their body is never read. */
    if (!(state & REQ_SEEN)) /* the head is complete: request_timeout no longer applies */
        serve_heads_arrived(s->heads, conn_head(conn));
    if (is_get && !(state & REQ_SEEN)) {
        *req_cls = (void *)(state | REQ_SEEN);
        return MHD_YES;
    }
    if (is_get && *upload_size != 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    r = serve_api_route(url);
    if (target_len > SERVE_URL_MAX + 1) {
        serve_api_error(&rep, 414, "request target of %zu bytes: at most %d", target_len - 1,
                        SERVE_URL_MAX);
    } else if (r == SERVE_R_OTHER) {
        serve_api_handle(&s->ctx, NULL, r, url, get_arg, conn, &rep);
    } else if (!serve_api_allows(r, method)) {
        serve_api_refuse(r, method, url, &rep);
    } else if (r == SERVE_R_EVENTS && (s->live || s->router) && !get_arg(conn, "once")) {
        ret = serve_events_answer(s->events, conn, &rep.status);
        serve_metrics_observe(&s->metrics, r, rep.status, mono_us() - start_us);
        return ret;
    } else if (s->router) {
        if (!(rc = thread_client(s)))
            serve_api_error(&rep, 500, "out of memory");
        else
            router_handle(rc, &s->ctx, r, url, get_arg, conn, &rep);
    } else if (!(st = thread_store(s))) {
        serve_api_error(&rep, 500, "out of memory");
    } else {
        serve_store_set_deadline(st,
                                 s->query_timeout_ms ? mono_us() / 1000 + s->query_timeout_ms : 0);
        serve_api_handle(&s->ctx, st, r, url, get_arg, conn, &rep);
        if (serve_store_timed_out(st)) {
            /* Whatever the handler made of its interrupted reads, the answer is this. */
            free(rep.owned);
            memset(&rep, 0, sizeof(rep));
            serve_api_error(&rep, 503, "the request took longer than query_timeout (%lld ms)",
                            (long long)s->query_timeout_ms);
            log_warn("serve", "query_timeout path=\"%.200s\" ms=%lld", url,
                     (long long)s->query_timeout_ms);
        }
        serve_store_set_deadline(st, 0);
    }
    ret = respond(conn, &rep);
    serve_metrics_observe(&s->metrics, r, rep.status, mono_us() - start_us);
    log_debug("serve", "request method=%s path=\"%.200s\" status=%u us=%lld", method, url,
              rep.status, (long long)(mono_us() - start_us));
    return ret;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct serve *s = cls;
    const union MHD_ConnectionInfo *i;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        i = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = i ? serve_heads_open(s->heads, i->connect_fd) : NULL;
    } else {
        serve_heads_close(s->heads, *socket_context);
        *socket_context = NULL;
    }
}

/* An answer is done (or abandoned): on a kept-alive connection, the next head is due within
 * request_timeout. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct serve *s = cls;

    (void)req_cls;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        serve_heads_wait(s->heads, conn_head(conn));
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '"')
            *p = '\'';
    log_warn("serve", "http_warning msg=\"%s\"", msg);
}

static int resolve_bind(const struct serve_opts *o, struct sockaddr_storage *ss, bool *is_v6,
                        struct lerr *e)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM},
                    *res = NULL;
    char port[16];
    int rc;

    snprintf(port, sizeof(port), "%d", o->port);
    if (o->port < 0 || o->port > 65535)
        return lerr_set(e, "bad port %d: want 0..65535", o->port);
    if ((rc = getaddrinfo(o->bind, port, &hints, &res)) != 0)
        return lerr_set(e, "bad bind address '%s': %s", o->bind, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *is_v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

/* The follower's callbacks (its thread): a change becomes an event, a tick a keep-alive. */
static void on_change(void *arg, struct serve_live *l)
{
    struct serve *s = arg;
    char buf[LIVE_EVENT_MAX];
    uint64_t seq = serve_live_event(l, buf);

    serve_events_publish(s->events, seq, buf);
}

static void on_tick(void *arg)
{
    struct serve *s = arg;

    serve_events_tick(s->events);
}

struct serve *serve_start(const struct serve_opts *o, struct lerr *e)
{
    struct sockaddr_storage ss = {0};
    struct serve *s = calloc(1, sizeof(*s));
    bool is_v6 = false;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    const union MHD_DaemonInfo *info;

    if (!s || !(s->data_dir = strdup(o->data_dir))) {
        lerr_set(e, "out of memory");
        goto fail;
    }
    if (resolve_bind(o, &ss, &is_v6, e) != 0)
        goto fail;
    if (pthread_key_create(&s->store, store_release) != 0) {
        lerr_set(e, "cannot make a thread key");
        goto fail;
    }
    s->has_key = true;
    s->router = o->router;
    if (pthread_key_create(&s->client, client_release) != 0) {
        lerr_set(e, "cannot make a thread key");
        goto fail;
    }
    s->has_client_key = true;
    serve_metrics_init(&s->metrics);
    if (!(s->heads = serve_heads_start(o->request_timeout_ms, e)))
        goto fail;
    s->query_timeout_ms = o->query_timeout_ms;
    if (!(s->events = serve_events_new(o->max_event_clients))) {
        lerr_set(e, "out of memory");
        goto fail;
    }
    struct serve_live_opts lo = {.data_dir = s->data_dir,
                                 .speed_seen = &s->speed_seen,
                                 .max_merchants = o->cache_merchants,
                                 .on_change = on_change,
                                 .on_tick = on_tick,
                                 .arg = s};
    if (!o->router && !(s->live = serve_live_start(&lo, e)))
        goto fail;
    /* A router's events come from its shards' streams, not from a follower. */
    if (o->router && router_events_start(o->router, s->events, e) != 0)
        goto fail;
    s->ctx = (struct serve_ctx){.allowed_lateness_ms = o->allowed_lateness_ms,
                                .metrics = &s->metrics,
                                .dim = o->dim,
                                .shard_partitions = o->shard_partitions,
                                .live = s->live,
                                .data_dir = s->data_dir,
                                .health = o->health};
    if (is_v6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)(o->threads > 1 ? o->threads : 1), MHD_OPTION_CONNECTION_LIMIT,
        o->connection_limit, MHD_OPTION_CONNECTION_TIMEOUT, o->connection_timeout_s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        s, MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->connections_per_ip,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->connection_memory, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, s, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!s->daemon) {
        lerr_set(e, "cannot listen on '%s' port %d: address in use or not available", o->bind,
                 o->port);
        goto fail;
    }
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : o->port;
    return s;
fail:
    serve_stop(s);
    return NULL;
}

int serve_port(const struct serve *s)
{
    return s->port;
}

void serve_stop(struct serve *s)
{
    if (!s)
        return;
    /* No stream may stay suspended when the daemon stops; the follower goes last, as handlers
     * read its state until the workers are joined. */
    serve_events_close(s->events, 2000);
    if (s->daemon)
        MHD_stop_daemon(s->daemon); /* joins the workers: their stores are closed by now */
    serve_heads_stop(s->heads);     /* every connection is closed: none is watched */
    router_events_stop(s->router);  /* it publishes into s->events */
    serve_live_stop(s->live);
    serve_events_free(s->events);
    if (s->has_key)
        pthread_key_delete(s->store);
    if (s->has_client_key)
        pthread_key_delete(s->client);
    free(s->data_dir);
    free(s);
}
