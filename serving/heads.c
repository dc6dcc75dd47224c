/* heads.c - shutting down connections whose request head is late (see heads.h). */
#include "heads.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "tm.h"

struct serve_head {
    int fd;
    int64_t since_ms; /* monotonic: when it began waiting for a head */
    bool listed;      /* waiting for a head, in the list */
    struct serve_head *prev, *next;
};

struct serve_heads {
    int64_t timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* signalled to stop */
    bool stopping;
    pthread_t thread;
    struct serve_head *first; /* waiting connections, oldest first */
    struct serve_head *last;
    uint64_t dropped;
};

static void unlist(struct serve_heads *h, struct serve_head *c)
{
    if (!c->listed)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        h->last = c->prev;
    c->prev = c->next = NULL;
    c->listed = false;
}

/* Appends c as the newest waiter: the list stays ordered by since_ms. */
static void list(struct serve_heads *h, struct serve_head *c)
{
    unlist(h, c);
    c->since_ms = tm_mono_ms();
    c->prev = h->last;
    if (h->last)
        h->last->next = c;
    else
        h->first = c;
    h->last = c;
    c->listed = true;
}

/* Shuts down every waiter past the deadline; called with mu held. */
static void reap(struct serve_heads *h)
{
    int64_t now = tm_mono_ms();
    int n = 0;

    if (h->timeout_ms <= 0) /* request_timeout 0: no bound */
        return;
    while (h->first && now - h->first->since_ms >= h->timeout_ms) {
        struct serve_head *c = h->first;
        unlist(h, c);
        shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
        n++;
    }
    h->dropped += (uint64_t)n;
    if (n)
        log_info("serve", "request_timeout dropped=%d timeout_ms=%lld", n,
                 (long long)h->timeout_ms);
}

static void *watch(void *arg)
{
    struct serve_heads *h = arg;
    struct timespec until;

    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        reap(h);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000; /* a tenth of a second: the bound's precision */
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&h->wake, &h->mu, &until);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

struct serve_heads *serve_heads_start(int64_t timeout_ms, struct lerr *e)
{
    struct serve_heads *h = calloc(1, sizeof(*h));
    int rc;

    if (!h) {
        lerr_set(e, "out of memory");
        return NULL;
    }
    h->timeout_ms = timeout_ms;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->wake, NULL);
    if ((rc = pthread_create(&h->thread, NULL, watch, h)) != 0) {
        lerr_set(e, "cannot start the request_timeout thread: %s", strerror(rc));
        pthread_cond_destroy(&h->wake);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

void serve_heads_stop(struct serve_heads *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

struct serve_head *serve_heads_open(struct serve_heads *h, int fd)
{
    struct serve_head *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->fd = fd;
    pthread_mutex_lock(&h->mu);
    list(h, c);
    pthread_mutex_unlock(&h->mu);
    return c;
}

void serve_heads_arrived(struct serve_heads *h, struct serve_head *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&h->mu);
    unlist(h, c);
    pthread_mutex_unlock(&h->mu);
}

void serve_heads_wait(struct serve_heads *h, struct serve_head *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&h->mu);
    list(h, c);
    pthread_mutex_unlock(&h->mu);
}

void serve_heads_close(struct serve_heads *h, struct serve_head *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&h->mu);
    unlist(h, c);
    pthread_mutex_unlock(&h->mu);
    free(c);
}

uint64_t serve_heads_dropped(struct serve_heads *h)
{
    uint64_t n;

    pthread_mutex_lock(&h->mu);
    n = h->dropped;
    pthread_mutex_unlock(&h->mu);
    return n;
}
