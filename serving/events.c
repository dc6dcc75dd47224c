/* events.c - the Server-Sent Events stream: subscribers, suspended while they have nothing
 * to send, resumed by a publish or a keep-alive. */
#include "events.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "live.h"
#include "log.h"

struct client {
    struct serve_events *ev;
    struct MHD_Connection *conn;
    uint64_t sent_seq;     /* the last event written; 0: none yet */
    int64_t last_write_ms; /* monotonic */
    bool is_suspended;
    struct client *prev, *next;
};

struct serve_events {
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t gone;
    unsigned max_clients, nclients;
    bool is_closed;
    uint64_t seq;
    char json[LIVE_EVENT_MAX];
    struct client *clients;
    serve_events_waker waker; /* NULL: the daemon's own thread sees a resume */
    void *waker_arg;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct serve_events *serve_events_new(unsigned max_clients)
{
    struct serve_events *ev = calloc(1, sizeof(*ev));

    if (!ev)
        return NULL;
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->gone, NULL);
    ev->max_clients = max_clients;
    snprintf(ev->json, sizeof(ev->json), "{}");
    return ev;
}

void serve_events_set_waker(struct serve_events *ev, serve_events_waker fn, void *arg)
{
    pthread_mutex_lock(&ev->mu);
    ev->waker = fn;
    ev->waker_arg = arg;
    pthread_mutex_unlock(&ev->mu);
}

/* Resumes c (ev->mu held); libmicrohttpd calls its reader again. */
static void wake(struct client *c)
{
    if (!c->is_suspended)
        return;
    c->is_suspended = false;
    MHD_resume_connection(c->conn);
    if (c->ev->waker)
        c->ev->waker(c->ev->waker_arg, c->conn);
}

void serve_events_close(struct serve_events *ev, int64_t timeout_ms)
{
    struct timespec until;

    if (!ev)
        return;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&ev->mu);
    ev->is_closed = true;
    for (struct client *c = ev->clients; c; c = c->next)
        wake(c);
    while (ev->nclients > 0 && pthread_cond_timedwait(&ev->gone, &ev->mu, &until) == 0)
        ;
    if (ev->nclients > 0)
        log_warn("serve", "events_close_timeout clients=%u", ev->nclients);
    pthread_mutex_unlock(&ev->mu);
}

void serve_events_free(struct serve_events *ev)
{
    if (!ev)
        return;
    pthread_cond_destroy(&ev->gone);
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

/* The content reader: the newest event when this client has not had it, a keep-alive when
 * due, else the connection is suspended until a publish or a tick resumes it. */
static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct client *c = cls;
    struct serve_events *ev = c->ev;
    int64_t now_ms = mono_ms();
    int n = 0;

    (void)pos;
    pthread_mutex_lock(&ev->mu);
    if (ev->is_closed) {
        pthread_mutex_unlock(&ev->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (c->sent_seq != ev->seq) {
        n = snprintf(buf, max, "id: %llu\ndata: %s\n\n", (unsigned long long)ev->seq, ev->json);
        c->sent_seq = ev->seq;
    } else if (now_ms - c->last_write_ms >= SERVE_EVENTS_KEEPALIVE_MS) {
        n = snprintf(buf, max, ": keep-alive\n\n");
    }
    if (n < 0 || (size_t)n >= max) { /* the buffer is far larger than an event: a bug */
        pthread_mutex_unlock(&ev->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (n > 0) {
        c->last_write_ms = now_ms;
    } else {
        c->is_suspended = true;
        MHD_suspend_connection(c->conn);
    }
    pthread_mutex_unlock(&ev->mu);
    return n;
}

/* The response is gone, and with it the connection's use of c. */
static void free_client(void *cls)
{
    struct client *c = cls;
    struct serve_events *ev = c->ev;

    pthread_mutex_lock(&ev->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        ev->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ev->nclients--;
    pthread_cond_broadcast(&ev->gone);
    pthread_mutex_unlock(&ev->mu);
    free(c);
}

static enum MHD_Result refuse(struct MHD_Connection *conn, const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    ret = MHD_queue_response(conn, MHD_HTTP_SERVICE_UNAVAILABLE, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result serve_events_answer(struct serve_events *ev, struct MHD_Connection *conn,
                                    unsigned *status)
{
    struct MHD_Response *r;
    struct client *c;
    enum MHD_Result ret;

    pthread_mutex_lock(&ev->mu);
    if (ev->is_closed || ev->nclients >= ev->max_clients) {
        bool is_closed = ev->is_closed;
        pthread_mutex_unlock(&ev->mu);
        *status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return refuse(conn, is_closed ? "{\"error\":\"stopping\"}"
                                      : "{\"error\":\"too many event clients: at most "
                                        "max_event_clients\"}");
    }
    if (!(c = calloc(1, sizeof(*c)))) {
        pthread_mutex_unlock(&ev->mu);
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return refuse(conn, "{\"error\":\"out of memory\"}");
    }
    c->ev = ev;
    c->conn = conn;
    c->last_write_ms = mono_ms();
    c->next = ev->clients;
    if (ev->clients)
        ev->clients->prev = c;
    ev->clients = c;
    ev->nclients++;
    pthread_mutex_unlock(&ev->mu);
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, LIVE_EVENT_MAX + 64, read_stream, c,
                                          free_client);
    if (!r) {
        free_client(c);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    *status = MHD_HTTP_OK;
    ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* free_client runs when the connection is done with it */
    return ret;
}

void serve_events_publish(struct serve_events *ev, uint64_t seq, const char *json)
{
    pthread_mutex_lock(&ev->mu);
    ev->seq = seq;
    snprintf(ev->json, sizeof(ev->json), "%s", json);
    for (struct client *c = ev->clients; c; c = c->next)
        wake(c);
    pthread_mutex_unlock(&ev->mu);
}

void serve_events_tick(struct serve_events *ev)
{
    int64_t now_ms = mono_ms();

    pthread_mutex_lock(&ev->mu);
    for (struct client *c = ev->clients; c; c = c->next)
        if (now_ms - c->last_write_ms >= SERVE_EVENTS_KEEPALIVE_MS)
            wake(c);
    pthread_mutex_unlock(&ev->mu);
}

unsigned serve_events_clients(struct serve_events *ev)
{
    unsigned n;

    pthread_mutex_lock(&ev->mu);
    n = ev->nclients;
    pthread_mutex_unlock(&ev->mu);
    return n;
}
