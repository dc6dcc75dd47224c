/* serve.c - lambda-serve's HTTP side: libmicrohttpd, the worker threads' stores, and the map
 * from a request to api.c's routes and back to a response. */
#include "serve.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "api.h"
#include "events.h"
#include "heads.h"
#include "live.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "store.h"

/* One event loop of a router (router_io = events): a libmicrohttpd daemon in external epoll
 * mode and an async router client, both watched by one epoll in one thread, so a request
 * waiting for its shards holds no thread and one wakeup serves every request that is ready. */
struct serve_loop {
    struct serve *s;
    struct MHD_Daemon *d;
    struct router_client *rc;
    int ep;      /* watches the daemon's epoll, the client's sockets, wake_fd and stop_fd */
    int stop_fd; /* eventfd: serve_stop() asks the loop to finish */
    int wake_fd; /* eventfd: another thread resumed one of the daemon's connections */
    pthread_t thread;
    bool has_thread;
    int waiting;  /* requests suspended for their shards (the loop's thread only) */
    bool resumed; /* one was resumed since the daemon last ran */
};

/* A routed request on a loop, held in *req_cls (tagged REQ_CALL) from its first fan-out to
 * its end. */
struct serve_call {
    struct serve_loop *loop;
    struct MHD_Connection *conn;
    struct router_call *call;
    int64_t start_us;
};

struct serve {
    struct MHD_Daemon *daemon;
    struct serve_loop *loops; /* a router's event loops, NULL otherwise: daemon is unused then */
    int n_loops;
    int listen_fd;             /* the loops' shared socket, -1 none */
    atomic_bool is_stopping;   /* the loops answer no new request */
    int64_t router_timeout_ms; /* shard_timeout: bounds a loop's stop */
    char *data_dir;            /* owned copy: every store borrows it */
    pthread_key_t store;       /* the calling worker's struct serve_store */
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
 * whole request target + 1, shifted left twice, with bit 0 set once the handler has been
 * called. on_uri() runs before the target is split into path and arguments, so it is the one
 * place that sees the query string's length. A routed request on a loop that waits for its
 * shards replaces it with a pointer to its struct serve_call, bits 0 and 1 set (malloc aligns
 * to more than 4). */
#define REQ_SEEN  1u
#define REQ_CALL  2u
#define REQ_SHIFT 2

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls, (void)conn;
    return (void *)(((uintptr_t)strlen(uri) + 1) << REQ_SHIFT);
}

static struct serve_call *req_call(uintptr_t state)
{
    return (state & REQ_CALL) ? (struct serve_call *)(state & ~(uintptr_t)3) : NULL;
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

/* The loop whose thread is running (a router's loops only). */
static _Thread_local struct serve_loop *this_loop;

static void on_ready(void *arg)
{
    struct serve_call *sc = arg;

    sc->loop->waiting--;
    sc->loop->resumed = true;
    MHD_resume_connection(sc->conn);
}

/* A routed request on a loop: answered, or suspended until its shards answered (then its
 * handler runs again, here). */
static enum MHD_Result route_call(struct serve *s, struct MHD_Connection *conn, enum serve_route r,
                                  const char *url, void **req_cls, int64_t start_us)
{
    struct serve_call *sc = req_call((uintptr_t)*req_cls);
    struct serve_reply rep = {0};
    enum MHD_Result ret;

    if (!sc) {
        if (!(sc = calloc(1, sizeof(*sc))) || !(sc->call = router_call_new(on_ready, sc))) {
            free(sc);
            serve_api_error(&rep, 500, "out of memory");
            ret = respond(conn, &rep);
            serve_metrics_observe(&s->metrics, r, rep.status, mono_us() - start_us);
            return ret;
        }
        sc->loop = this_loop;
        sc->conn = conn;
        sc->start_us = start_us;
        *req_cls = (void *)((uintptr_t)sc | REQ_CALL | REQ_SEEN);
    }
    if (!router_handle_call(sc->loop->rc, sc->call, &s->ctx, r, url, get_arg, conn, &rep)) {
        sc->loop->waiting++;
        MHD_suspend_connection(conn);
        return MHD_YES;
    }
    ret = respond(conn, &rep);
    serve_metrics_observe(&s->metrics, r, rep.status, mono_us() - sc->start_us);
    log_debug("serve", "request method=GET path=\"%.200s\" status=%u us=%lld", url, rep.status,
              (long long)(mono_us() - sc->start_us));
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    struct serve *s = cls;
    int64_t start_us = mono_us();
    uintptr_t state = (uintptr_t)*req_cls;
    size_t target_len = (size_t)(state >> REQ_SHIFT);
    bool is_get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    enum serve_route r;
    struct serve_reply rep = {0};
    struct serve_store *st;
    struct router_client *rc;
    enum MHD_Result ret;

    (void)version, (void)upload_data;
    if (state & REQ_CALL) /* resumed: its shards answered */
        return route_call(s, conn, serve_api_route(url), url, req_cls, start_us);
    if (s->loops && atomic_load(&s->is_stopping))
        return MHD_NO; /* stopping: only the requests already waiting are answered */
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
    } else if (s->router && s->loops) {
        return route_call(s, conn, r, url, req_cls, start_us);
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
    struct serve_call *sc = req_call((uintptr_t)*req_cls);

    if (sc) { /* its transfers, if it still waits (a daemon stopping), stop here */
        router_call_free(sc->call);
        free(sc);
        *req_cls = NULL;
    }
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

/* Starts one libmicrohttpd daemon with the options every mode shares: internal threads (a pool
 * of them) when threads > 0, else external epoll for a loop (listen_fd >= 0: the loops'
 * socket, bound already). */
static struct MHD_Daemon *start_daemon(struct serve *s, const struct serve_opts *o, unsigned flags,
                                       struct sockaddr_storage *ss, unsigned threads, int listen_fd,
                                       unsigned limit)
{
    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, s},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)limit, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)o->connection_timeout_s, NULL},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)o->connections_per_ip, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)o->connection_memory, NULL},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, s},
        /* the address and its threads, or the socket a first loop bound */
        {MHD_OPTION_END, 0, NULL},
        {MHD_OPTION_END, 0, NULL},
        {MHD_OPTION_END, 0, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    size_t k = 8;

    if (listen_fd >= 0) {
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL};
    } else {
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ss};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL};
        if (threads > 0)
            ops[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    }
    if (threads > 0)
        flags |= MHD_USE_INTERNAL_POLLING_THREAD;
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, ops,
                            MHD_OPTION_END);
}

/* Empties an eventfd (a wake or the stop); true whatever it read. */
static bool wake_taken(int fd)
{
    eventfd_t v;

    (void)eventfd_read(fd, &v); /* EAGAIN: nothing since the last read, no harm */
    return true;
}

enum { LOOP_MHD = 1, LOOP_WAKE, LOOP_STOP }; /* the client's sockets: ROUTER_EPOLL_TAG */

/* serve_events_waker: the loop that owns conn's daemon runs it next (its resume is not seen
 * otherwise: a daemon without an internal thread has no inter-thread channel). */
static void loop_wake(void *arg, struct MHD_Connection *conn)
{
    struct serve *s = arg;
    const union MHD_ConnectionInfo *i = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_DAEMON);
    uint64_t one = 1;

    for (int k = 0; i && k < s->n_loops; k++)
        if (s->loops[k].d == i->daemon && write(s->loops[k].wake_fd, &one, sizeof(one)) < 0)
            log_warn("serve", "loop_wake_failed err=\"%s\"", strerror(errno));
}

/* Waits for whichever is ready first, moves it on, and again. Asked to stop, it takes no new
 * request and returns once every request waiting for its shards is answered (each shard
 * transfer ends within shard_timeout; a request makes at most a few in a row), or at a bound. */
static void *loop_main(void *arg)
{
    struct serve_loop *l = arg;
    struct epoll_event ev[64];
    int64_t stop_by_us = -1;

    this_loop = l;
    for (;;) {
        MHD_UNSIGNED_LONG_LONG mt;
        int t = -1, ct = router_client_timeout_ms(l->rc), n;
        bool has_mhd = false, has_curl = false;

        if (MHD_get_timeout(l->d, &mt) == MHD_YES)
            t = mt > INT_MAX ? INT_MAX : (int)mt;
        if (ct >= 0 && (t < 0 || ct < t))
            t = ct;
        if (stop_by_us >= 0 && (t < 0 || t > 50))
            t = 50;
        if (l->resumed) /* the daemon has a request to answer: it does not wake us for it */
            t = 0;
        n = epoll_wait(l->ep, ev, 64, t);
        for (int k = 0; k < n; k++) {
            uint64_t tag = ev[k].data.u64;
            if (tag & ROUTER_EPOLL_TAG) { /* a shard's socket: its transfer moves on */
                router_client_event(l->rc, tag, ev[k].events);
                has_curl = true;
            } else if (tag == LOOP_MHD) {
                has_mhd = true;
            } else if (tag == LOOP_WAKE) {
                l->resumed = wake_taken(l->wake_fd);
            } else if (stop_by_us < 0 && wake_taken(l->stop_fd)) { /* LOOP_STOP, read once */
                stop_by_us = mono_us() + 3 * (l->s->router_timeout_ms + 1000) * 1000;
                MHD_quiesce_daemon(l->d); /* serve_stop() closes the shared socket */
            }
        }
        if (has_curl || router_client_timeout_ms(l->rc) == 0)
            router_client_run(l->rc); /* answers in: their requests resume */
        /* The daemon runs for its sockets, a resumed request or its own timeout; not when
         * only libcurl's timer woke the loop. */
        if (has_mhd || l->resumed || (MHD_get_timeout(l->d, &mt) == MHD_YES && mt == 0)) {
            l->resumed = false;
            MHD_run(l->d); /* requests in, answers out; new fan-outs start below */
        }
        if (router_client_timeout_ms(l->rc) == 0)
            router_client_run(l->rc);
        if (stop_by_us >= 0 && (l->waiting == 0 || mono_us() > stop_by_us))
            break;
    }
    if (l->waiting > 0)
        log_warn("serve", "stop_timeout waiting=%d", l->waiting);
    return NULL;
}

static int loop_watch(int ep, int fd, uint32_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Loop k's daemon, client and epoll; its thread is started by the caller. */
static int loop_open(struct serve *s, const struct serve_opts *o, int k, unsigned flags,
                     struct sockaddr_storage *ss, struct lerr *e)
{
    struct serve_loop *l = &s->loops[k];
    unsigned limit = (o->connection_limit + (unsigned)s->n_loops - 1) / (unsigned)s->n_loops;
    const union MHD_DaemonInfo *info;

    l->s = s;
    if (!(l->d = start_daemon(s, o, flags, ss, 0, s->listen_fd, limit ? limit : 1)))
        return lerr_set(e, "cannot listen on '%s' port %d: address in use or not available",
                        o->bind, o->port);
    if (s->listen_fd < 0 && (info = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_LISTEN_FD)))
        s->listen_fd = info->listen_fd; /* the other loops accept on it too */
    info = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    if ((l->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
        (l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 || !info ||
        loop_watch(l->ep, l->wake_fd, LOOP_WAKE) != 0 ||
        loop_watch(l->ep, info->epoll_fd, LOOP_MHD) != 0 ||
        loop_watch(l->ep, l->stop_fd, LOOP_STOP) != 0)
        return lerr_set(e, "cannot make an event loop: %s", strerror(errno));
    if (!(l->rc = router_client_new_async(s->router, l->ep)))
        return lerr_set(e, "cannot make the shards' client: %s", strerror(errno));
    return 0;
}

static int loops_start(struct serve *s, const struct serve_opts *o, unsigned flags,
                       struct sockaddr_storage *ss, struct lerr *e)
{
    int n = o->threads > 1 ? o->threads : 1;

    if (!(s->loops = calloc((size_t)n, sizeof(*s->loops))))
        return lerr_set(e, "out of memory");
    s->n_loops = n;
    for (int k = 0; k < n; k++)
        s->loops[k].ep = s->loops[k].stop_fd = s->loops[k].wake_fd = -1;
    for (int k = 0; k < n; k++)
        if (loop_open(s, o, k, flags, ss, e) != 0)
            return -1;
    for (int k = 0; k < n; k++) {
        if (pthread_create(&s->loops[k].thread, NULL, loop_main, &s->loops[k]) != 0)
            return lerr_set(e, "cannot start an event loop's thread");
        s->loops[k].has_thread = true;
    }
    return 0;
}

/* Stops the loops (each answers what waits for its shards), then their daemons (closing every
 * connection), then their clients. */
static void loops_stop(struct serve *s)
{
    uint64_t one = 1;

    atomic_store(&s->is_stopping, true);
    serve_events_set_waker(s->events, NULL, NULL); /* a late publish must not find the loops */
    for (int k = 0; k < s->n_loops; k++)
        if (s->loops[k].has_thread && write(s->loops[k].stop_fd, &one, sizeof(one)) < 0)
            log_warn("serve", "loop_stop_failed err=\"%s\"", strerror(errno));
    for (int k = 0; k < s->n_loops; k++)
        if (s->loops[k].has_thread)
            pthread_join(s->loops[k].thread, NULL);
    for (int k = 0; k < s->n_loops; k++) {
        struct serve_loop *l = &s->loops[k];
        if (l->d && !l->has_thread)
            MHD_quiesce_daemon(l->d); /* never ran: the shared socket is closed below */
        if (l->d)
            MHD_stop_daemon(l->d);
    }
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    for (int k = 0; k < s->n_loops; k++) {
        struct serve_loop *l = &s->loops[k];
        router_client_free(l->rc);
        if (l->ep >= 0)
            close(l->ep);
        if (l->stop_fd >= 0)
            close(l->stop_fd);
        if (l->wake_fd >= 0)
            close(l->wake_fd);
    }
    free(s->loops);
    s->loops = NULL;
    s->n_loops = 0;
}

struct serve *serve_start(const struct serve_opts *o, struct lerr *e)
{
    struct sockaddr_storage ss = {0};
    struct serve *s = calloc(1, sizeof(*s));
    bool is_v6 = false;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    const union MHD_DaemonInfo *info;

    if (!s || !(s->data_dir = strdup(o->data_dir))) {
        lerr_set(e, "out of memory");
        goto fail;
    }
    s->listen_fd = -1;
    s->router_timeout_ms = o->router_timeout_ms;
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
    if (o->router && !o->router_threads) {
        serve_events_set_waker(s->events, loop_wake, s);
        if (loops_start(s, o, flags, &ss, e) != 0)
            goto fail;
        info = MHD_get_daemon_info(s->loops[0].d, MHD_DAEMON_INFO_BIND_PORT);
        s->port = info ? info->port : o->port;
        return s;
    }
    s->daemon = start_daemon(s, o, flags, &ss, (unsigned)(o->threads > 1 ? o->threads : 1), -1,
                             o->connection_limit);
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
    if (s->loops)
        loops_stop(s);
    serve_heads_stop(s->heads);    /* every connection is closed: none is watched */
    router_events_stop(s->router); /* it publishes into s->events */
    serve_live_stop(s->live);
    serve_events_free(s->events);
    if (s->has_key)
        pthread_key_delete(s->store);
    if (s->has_client_key)
        pthread_key_delete(s->client);
    free(s->data_dir);
    free(s);
}
