/* router.c - the router's shards: the list, what their /health told of their partition sets
 * (and whether those sets fit together), asking them in parallel through libcurl's multi
 * interface, and their metrics. The routes and the merging of answers are router_merge.c's;
 * router_int.h is what the two share. */
#include "router.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"
#include "router_int.h"
#include "tm.h"

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static char *url_json(const char *url)
{
    json_t *v = json_string(url);
    char *text = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;

    json_decref(v);
    return text;
}

/* Splits "URL,URL" into r->shards; each URL is http:// or https:// and loses a final '/'. */
static int parse_shards(struct router *r, const char *list, struct lerr *e)
{
    const char *p = list;

    while (*p) {
        size_t len = strcspn(p, ",");
        while (len > 0 && p[len - 1] == ' ')
            len--;
        while (len > 0 && *p == ' ')
            p++, len--;
        if (len > 0 && p[len - 1] == '/')
            len--;
        if (r->n == ROUTER_SHARDS_MAX)
            return lerr_set(e, "bad shards: more than %d", ROUTER_SHARDS_MAX);
        if ((strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0) || len < 8 ||
            len > 512)
            return lerr_set(e, "bad shards: '%.*s' is not an http:// URL", (int)len, p);
        if (!(r->shards[r->n].url = strndup(p, len)))
            return lerr_set(e, "out of memory");
        /* Escaped once here, not per answer; NULL (not UTF-8): the answers that name it are
         * merged through jansson, which refuses it there as it always did. */
        r->shards[r->n].url_json = url_json(r->shards[r->n].url);
        for (int i = 0; i < r->n; i++)
            if (!strcmp(r->shards[i].url, r->shards[r->n].url))
                return lerr_set(e, "bad shards: '%s' is listed twice", r->shards[i].url);
        r->n++;
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
    if (r->n == 0)
        return lerr_set(e, "bad shards: no URL");
    return 0;
}

struct router *router_new(const struct router_opts *o, struct lerr *e)
{
    struct router *r = calloc(1, sizeof(*r));

    if (!r) {
        lerr_set(e, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 2000;
    if (parse_shards(r, o->shards ? o->shards : "", e) != 0 ||
        shard_partitioner_parse(o->partitioner, &r->pt, e) != 0) {
        router_free(r);
        return NULL;
    }
    return r;
}

void router_free(struct router *r)
{
    if (!r)
        return;
    router_events_stop(r);
    if (r->has_refresher) {
        pthread_mutex_lock(&r->mu);
        r->is_stopping = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->refresher, NULL);
    }
    pthread_cond_destroy(&r->cv);
    for (int i = 0; i < r->n; i++) {
        free(r->shards[i].url);
        free(r->shards[i].url_json);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg);
static int on_close(void *arg, curl_socket_t fd);

/* What stays the same for every request of a handle is set once, at its creation. */
static CURL *easy_new(const struct router *r)
{
    CURL *h = curl_easy_init();

    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    return h;
}

struct router_client *router_client_new(struct router *r)
{
    struct router_client *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->r = r;
    c->ep = -1;
    if (!(c->multi = curl_multi_init()))
        goto fail;
    for (int i = 0; i < r->n; i++)
        if (!(c->easy[i] = easy_new(r)))
            goto fail;
    return c;
fail:
    router_client_free(c);
    return NULL;
}

void router_client_free(struct router_client *c)
{
    if (!c)
        return;
    for (int i = 0; i < ROUTER_SHARDS_MAX; i++)
        if (c->easy[i])
            curl_easy_cleanup(c->easy[i]);
    for (int i = 0; i < c->n_idle; i++)
        curl_easy_cleanup(c->idle[i]);
    free(c->idle);
    if (c->multi)
        curl_multi_cleanup(c->multi); /* closes the kept-alive sockets through on_close */
    free(c->fds);
    free(c);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct router_answer *a = arg;
    size_t n = size * nmemb;

    if (a->len + n + 1 > a->cap) {
        size_t cap = (a->len + n + 1) * 2;
        char *b = realloc(a->body, cap);
        if (!b)
            return 0; /* libcurl fails the transfer: an error, never a partial answer */
        a->body = b;
        a->cap = cap;
    }
    memcpy(a->body + a->len, data, n);
    a->len += n;
    a->body[a->len] = '\0';
    return n;
}

/* Parses a's body when it came and is not parsed yet; doc stays NULL when it is not JSON. */
static void answer_parse(struct router_answer *a)
{
    if (a->cc == CURLE_OK && a->body && !a->doc)
        a->doc = json_loadb(a->body, a->len, 0, NULL);
}

static void answer_release(struct router_answer *a)
{
    free(a->target);
    free(a->body);
    free(a->err);
    json_decref(a->doc);
}

void router_fan_release(struct router_fan *f)
{
    for (int i = 0; i < ROUTER_SHARDS_MAX; i++)
        answer_release(&f->a[i]);
    memset(f, 0, sizeof(*f));
}

static void setup_easy(CURL *h, struct router_answer *a, char *url, char *err, void *private)
{
    err[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_PRIVATE, private);
}

/* Counts one shard's answer in its metrics. */
static void observe(struct router_shard *sh, const struct router_answer *a, int64_t us)
{
    bool is_ok = a->cc == CURLE_OK && a->status > 0 && a->status < 500;

    atomic_fetch_add(&sh->requests, 1);
    atomic_fetch_add(&sh->latency_us, (uint_fast64_t)us);
    if (!is_ok)
        atomic_fetch_add(&sh->errors, 1);
    atomic_store(&sh->is_up, is_ok ? 1 : 0);
}

static void fan_block(struct router_client *c, struct router_fan *f)
{
    struct router *r = c->r;
    char *urls[ROUTER_SHARDS_MAX] = {0};
    int64_t t0 = mono_us(), done_us[ROUTER_SHARDS_MAX] = {0};
    int running = 0, left;
    CURLMsg *m;

    for (int i = 0; i < r->n; i++) {
        struct router_answer *a = &f->a[i];
        if (!a->target)
            continue;
        a->cc = CURLE_OUT_OF_MEMORY;
        if (asprintf(&urls[i], "%s%s", r->shards[i].url, a->target) < 0) {
            urls[i] = NULL;
            continue;
        }
        setup_easy(c->easy[i], a, urls[i], c->err[i], a);
        curl_multi_add_handle(c->multi, c->easy[i]);
    }
    do {
        if (curl_multi_perform(c->multi, &running) != CURLM_OK)
            break;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            struct router_answer *a = NULL;
            if (m->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&a);
            a->cc = m->data.result;
            if (a->cc == CURLE_OK)
                curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &a->status);
            done_us[a - f->a] = mono_us();
        }
        if (running)
            curl_multi_poll(c->multi, NULL, 0, 100, NULL);
    } while (running);
    for (int i = 0; i < r->n; i++) {
        struct router_answer *a = &f->a[i];
        if (!a->target)
            continue;
        curl_multi_remove_handle(c->multi, c->easy[i]);
        free(urls[i]);
        if (a->cc != CURLE_OK && c->err[i][0])
            a->err = strdup(c->err[i]);
        if (!f->is_lazy)
            answer_parse(a);
        observe(&r->shards[i], a, (done_us[i] ? done_us[i] : mono_us()) - t0);
    }
}

/* The async client. A request's fan-out is a stage: one transfer per asked shard, on easy
 * handles taken from the client's idle list, each finished in router_client_run(). A stage
 * complete, the request's on_ready is called and router_handle_call() runs the handler again
 * from the start; the fan-outs it already made are answered from the stages kept in the call
 * (as long as it asks the same targets in the same order), the next one is started. */
#define ROUTER_STAGES_MAX      8
#define ROUTER_CONNS_PER_SHARD 16 /* a loop's connections to one shard, kept alive */

struct router_slot {
    struct router_answer a;
    struct router_stage *st;
    CURL *h; /* while its transfer runs */
    char *url;
    char err[CURL_ERROR_SIZE]; /* libcurl's, copied into a.err on a failure */
    int64_t done_us;
};

struct router_stage {
    struct router *r;
    struct router_call *call;
    int left;     /* transfers still running */
    bool is_lazy; /* its fan's: the bodies are not parsed here */
    int64_t t0_us;
    struct router_slot s[]; /* r->n, by shard */
};

struct router_call {
    void (*on_ready)(void *arg);
    void *arg;
    struct router_client *c; /* while a stage runs */
    struct router_stage *flight;
    struct router_stage *done[ROUTER_STAGES_MAX];
    int n_done;
};

struct router_call *router_call_new(void (*on_ready)(void *arg), void *arg)
{
    struct router_call *call = calloc(1, sizeof(*call));

    if (call) {
        call->on_ready = on_ready;
        call->arg = arg;
    }
    return call;
}

static void idle_put(struct router_client *c, CURL *h)
{
    if (c->n_idle == c->cap_idle) {
        int cap = c->cap_idle ? 2 * c->cap_idle : 16;
        CURL **idle = realloc(c->idle, (size_t)cap * sizeof(*idle));
        if (!idle) {
            curl_easy_cleanup(h);
            return;
        }
        c->idle = idle;
        c->cap_idle = cap;
    }
    c->idle[c->n_idle++] = h;
}

static void stage_free(struct router_stage *st, struct router_client *c)
{
    if (!st)
        return;
    for (int i = 0; i < st->r->n; i++) {
        struct router_slot *sl = &st->s[i];
        if (sl->h) {
            curl_multi_remove_handle(c->multi, sl->h);
            idle_put(c, sl->h);
        }
        free(sl->url);
        answer_release(&sl->a);
    }
    free(st);
}

void router_call_free(struct router_call *call)
{
    if (!call)
        return;
    if (call->flight)
        stage_free(call->flight, call->c);
    for (int k = 0; k < call->n_done; k++)
        stage_free(call->done[k], NULL); /* a finished stage holds no transfer */
    free(call);
}

/* Whether stage st asked the targets f asks. */
static bool stage_matches(const struct router_stage *st, const struct router_fan *f)
{
    for (int i = 0; i < st->r->n; i++) {
        const char *a = st->s[i].a.target, *b = f->a[i].target;
        if (!a != !b || (a && strcmp(a, b) != 0))
            return false;
    }
    return true;
}

/* Copies stage st's answers into f (whose targets are its own). */
static void stage_copy(const struct router_stage *st, struct router_fan *f)
{
    for (int i = 0; i < st->r->n; i++) {
        const struct router_answer *src = &st->s[i].a;
        struct router_answer *dst = &f->a[i];
        if (!dst->target)
            continue;
        dst->cc = src->cc;
        dst->status = src->status;
        dst->err = src->err ? strdup(src->err) : NULL; /* NULL: libcurl's code says it */
        if (src->body && !(dst->body = strdup(src->body))) {
            dst->cc = CURLE_OUT_OF_MEMORY;
            continue;
        }
        dst->len = dst->cap = src->len;
        dst->doc = json_incref(src->doc);
    }
}

/* Starts shard i's transfer of st; false when it cannot (its answer says out of memory). */
static bool slot_start(struct router_client *c, struct router_stage *st, int i, const char *target)
{
    struct router_slot *sl = &st->s[i];
    CURL *h;

    sl->st = st;
    sl->a.cc = CURLE_OUT_OF_MEMORY;
    if (!(sl->a.target = strdup(target)) ||
        asprintf(&sl->url, "%s%s", st->r->shards[i].url, target) < 0) {
        sl->url = NULL;
        return false;
    }
    if (c->n_idle) {
        h = c->idle[--c->n_idle];
    } else if ((h = easy_new(c->r))) {
        /* A connection keeps the callback of the handle that opened it: every one of this
         * client's is told of (on_close keeps the socket table right). */
        curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, on_close);
        curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, c);
    } else {
        return false;
    }
    setup_easy(h, &sl->a, sl->url, sl->err, sl);
    if (curl_multi_add_handle(c->multi, h) != CURLM_OK) {
        idle_put(c, h);
        return false;
    }
    sl->h = h;
    sl->a.cc = CURLE_OK;
    return true;
}

/* Every transfer of st ended: parse, count, keep it in its call and tell the call. */
static void stage_done(struct router_stage *st)
{
    struct router_call *call = st->call;
    int64_t now = mono_us();

    for (int i = 0; i < st->r->n; i++) {
        struct router_answer *a = &st->s[i].a;
        if (!a->target)
            continue;
        if (!st->is_lazy)
            answer_parse(a);
        observe(&st->r->shards[i], a, (st->s[i].done_us ? st->s[i].done_us : now) - st->t0_us);
    }
    call->done[call->n_done++] = st;
    call->flight = NULL;
    call->c = NULL;
    call->on_ready(call->arg);
}

static bool fan_staged(struct router_client *c, struct router_fan *f)
{
    struct router_call *call = c->call;
    struct router_stage *st;
    int k = c->stage++;

    if (k < call->n_done && stage_matches(call->done[k], f)) {
        stage_copy(call->done[k], f);
        return true;
    }
    /* The handler asks something else than before (what a /health taught changed its mind):
     * what it asked from here on is asked again. */
    while (call->n_done > k)
        stage_free(call->done[--call->n_done], NULL);
    if (k >= ROUTER_STAGES_MAX ||
        !(st = calloc(1, sizeof(*st) + (size_t)c->r->n * sizeof(st->s[0])))) {
        for (int i = 0; i < c->r->n; i++)
            f->a[i].cc = CURLE_OUT_OF_MEMORY;
        return true;
    }
    st->r = c->r;
    st->call = call;
    st->is_lazy = f->is_lazy;
    st->t0_us = mono_us();
    for (int i = 0; i < c->r->n; i++)
        if (f->a[i].target && slot_start(c, st, i, f->a[i].target))
            st->left++;
    for (int i = 0; i < c->r->n && st->left == 0; i++) /* nothing runs: done already */
        if (!st->s[i].a.target && f->a[i].target && !(st->s[i].a.target = strdup(f->a[i].target)))
            st->left = -1;
    if (st->left <= 0) {
        if (st->left == 0) {
            call->done[call->n_done++] = st;
            stage_copy(st, f);
        } else {
            stage_free(st, c);
            for (int i = 0; i < c->r->n; i++)
                f->a[i].cc = CURLE_OUT_OF_MEMORY;
        }
        return true;
    }
    call->flight = st;
    call->c = c;
    return false;
}

bool router_fan_out(struct router_client *c, struct router_fan *f)
{
    if (!c->call) {
        fan_block(c, f);
        return true;
    }
    return fan_staged(c, f);
}

bool router_handle_call(struct router_client *c, struct router_call *call,
                        const struct serve_ctx *ctx, enum serve_route r, const char *path,
                        serve_arg_fn arg, void *req, struct serve_reply *out)
{
    c->call = call;
    c->stage = 0;
    router_handle(c, ctx, r, path, arg, req, out);
    c->call = NULL;
    if (!call->flight)
        return true;
    free(out->owned);
    memset(out, 0, sizeof(*out));
    return false;
}

/* What the loop's epoll knows of a socket of libcurl's (c->fds): registered in it, watched
 * for libcurl now (else parked: a kept-alive connection between transfers, still registered
 * for input, so that its next transfer and its end cost no epoll_ctl), and for what. */
enum { ROUTER_FD_IN_EP = 1, ROUTER_FD_WATCHED = 2, ROUTER_FD_IN = 4, ROUTER_FD_OUT = 8 };

/* Socket fd's entry, the table grown to hold it; NULL when out of memory (then every change
 * is an epoll_ctl, as if nothing were known). */
static uint8_t *fd_state(struct router_client *c, curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    if (fd >= c->n_fds) {
        int n = fd + 64;
        uint8_t *fds = realloc(c->fds, (size_t)n);
        if (!fds)
            return NULL;
        memset(fds + c->n_fds, 0, (size_t)(n - c->n_fds));
        c->fds = fds;
        c->n_fds = n;
    }
    return &c->fds[fd];
}

static int on_socket(CURL *h, curl_socket_t fd, int what, void *arg, void *known)
{
    struct router_client *c = arg;
    struct epoll_event ev = {.data.u64 = ROUTER_EPOLL_TAG | (uint32_t)fd};
    uint8_t *st = fd_state(c, fd), want;

    (void)h, (void)known;
    if (what == CURL_POLL_REMOVE) {
        if (st && (*st & ROUTER_FD_IN_EP) && !(*st & ROUTER_FD_OUT)) {
            *st &= (uint8_t)~ROUTER_FD_WATCHED; /* parked: input on it is seen (and dropped) */
            return 0;
        }
        epoll_ctl(c->ep, EPOLL_CTL_DEL, fd, NULL);
        if (st)
            *st = 0;
        return 0;
    }
    want = (uint8_t)(((what & CURL_POLL_IN) ? ROUTER_FD_IN : 0) |
                     ((what & CURL_POLL_OUT) ? ROUTER_FD_OUT : 0));
    if (st && (*st & ROUTER_FD_IN_EP) && (*st & (ROUTER_FD_IN | ROUTER_FD_OUT)) == want) {
        *st |= ROUTER_FD_WATCHED; /* registered for just that already */
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    if (st && (*st & ROUTER_FD_IN_EP)) {
        if (epoll_ctl(c->ep, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
            epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev);
    } else if (epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST) {
        epoll_ctl(c->ep, EPOLL_CTL_MOD, fd, &ev);
    }
    if (st)
        *st = (uint8_t)(ROUTER_FD_IN_EP | ROUTER_FD_WATCHED | want);
    return 0;
}

/* libcurl closes one of its sockets: closing it takes it out of the epoll; its entry goes, so
 * that a socket given the same number later is registered afresh. */
static int on_close(void *arg, curl_socket_t fd)
{
    struct router_client *c = arg;

    if (fd >= 0 && fd < c->n_fds)
        c->fds[fd] = 0;
    return close(fd);
}

static int on_timer(CURLM *m, long ms, void *arg)
{
    struct router_client *c = arg;

    (void)m;
    c->due_us = ms < 0 ? -1 : mono_us() + (int64_t)ms * 1000;
    return 0;
}

struct router_client *router_client_new_async(struct router *r, int ep)
{
    struct router_client *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->r = r;
    c->due_us = -1;
    c->ep = -1;
    if (!(c->multi = curl_multi_init())) {
        router_client_free(c);
        return NULL;
    }
    c->ep = ep;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* libcurl sizes its connection cache at four per easy handle added, and a loop's handles
     * are added only while their transfer runs: left to that, it would close connections that
     * the next requests open again. And a loop opens at most ROUTER_CONNS_PER_SHARD to a shard
     * (more requests wait in libcurl's queue, within shard_timeout), so a router of N loops
     * keeps within a shard's max_connections_per_ip (64) while N * 16 does. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)(ROUTER_CONNS_PER_SHARD * r->n));
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)ROUTER_CONNS_PER_SHARD);
    return c;
}

void router_client_event(struct router_client *c, uint64_t data, uint32_t events)
{
    curl_socket_t fd = (curl_socket_t)(uint32_t)data;
    int running;

    if (fd < c->n_fds && (c->fds[fd] & ROUTER_FD_IN_EP) && !(c->fds[fd] & ROUTER_FD_WATCHED)) {
        /* A parked connection the shard closed (or wrote to unasked): no longer watched, so
         * it cannot wake the loop again; libcurl finds it dead when it would reuse it. */
        epoll_ctl(c->ep, EPOLL_CTL_DEL, fd, NULL);
        c->fds[fd] = 0;
        return;
    }
    curl_multi_socket_action(c->multi, fd,
                             ((events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                                 ((events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                                 ((events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0),
                             &running);
}

int router_client_timeout_ms(const struct router_client *c)
{
    int64_t left;

    if (c->due_us < 0)
        return -1;
    left = c->due_us - mono_us();
    return left <= 0 ? 0 : (int)((left + 999) / 1000);
}

/* The transfers that ended: their answers into their stages, their handles back to idle. */
static void take_done(struct router_client *c)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(c->multi, &left))) {
        struct router_slot *sl = NULL;
        CURL *h = m->easy_handle;
        CURLcode cc = m->data.result;
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&sl);
        sl->a.cc = cc;
        if (cc == CURLE_OK)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &sl->a.status);
        else if (sl->err[0])
            sl->a.err = strdup(sl->err);
        sl->done_us = mono_us();
        curl_multi_remove_handle(c->multi, h); /* m is gone now */
        idle_put(c, h);
        sl->h = NULL;
        if (--sl->st->left == 0)
            stage_done(sl->st);
    }
}

void router_client_run(struct router_client *c)
{
    int running;

    if (c->due_us >= 0 && mono_us() >= c->due_us) {
        c->due_us = -1;
        curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    take_done(c);
}

void router_answer_why(const struct router_answer *a, char *buf, size_t len)
{
    json_t *msg = a->doc ? json_object_get(a->doc, "error") : NULL;

    if (a->cc != CURLE_OK)
        snprintf(buf, len, "%s", a->err ? a->err : curl_easy_strerror(a->cc));
    else if (a->status >= 500)
        snprintf(buf, len, "HTTP %ld: %s", a->status,
                 json_is_string(msg) ? json_string_value(msg) : "no message");
    else
        snprintf(buf, len, "HTTP %ld with a body that is not JSON", a->status);
}

bool router_fan_failed(const struct router *r, struct router_fan *f, struct serve_reply *out)
{
    char why[256];

    for (int i = 0; i < r->n; i++) {
        struct router_answer *a = &f->a[i];
        if (!a->target)
            continue;
        if (a->cc == CURLE_OK && a->status >= 400 && a->status < 500) {
            /* The request itself is bad: the shard said why, and every shard would. */
            memset(out, 0, sizeof(*out));
            out->status = (unsigned)a->status;
            out->content_type = "application/json";
            out->owned = strdup(a->body ? a->body : "{}");
            out->body = out->owned ? out->owned : "{}";
            out->len = strlen(out->body);
            return true;
        }
        answer_parse(a); /* a lazy fan's; a 5xx's message too */
        if (a->cc == CURLE_OK && a->status == 200 && a->doc)
            continue;
        router_answer_why(a, why, sizeof(why));
        log_warn("serve", "shard_failed shard=%s target=\"%.200s\" err=\"%s\"", r->shards[i].url,
                 a->target, why);
        serve_api_error(out, 503, "shard %s did not answer: %s", r->shards[i].url, why);
        return true;
    }
    return false;
}

/* Under r->mu: whether the known sets fit (each partition owned once); the conflict's text
 * in r->conflict, "" when there is none. */
static void check_sets(struct router *r)
{
    int64_t nparts = 0;
    bool all_known = true;

    r->conflict[0] = '\0';
    for (int i = 0; i < r->n; i++) {
        const struct router_shard *sh = &r->shards[i];
        if (!sh->has_set) {
            all_known = false;
            continue;
        }
        if (sh->topic_partitions > 0 && nparts > 0 && sh->topic_partitions != nparts) {
            snprintf(r->conflict, sizeof(r->conflict),
                     "shards disagree on the topic's partitions: %" PRId64 " and %" PRId64 " (%s)",
                     nparts, sh->topic_partitions, sh->url);
            return;
        }
        if (sh->topic_partitions > nparts)
            nparts = sh->topic_partitions;
    }
    /* Without the topic's count, overlaps can still be told; gaps cannot. */
    for (int p = 0; p < (nparts > 0 ? nparts : SHARD_MAX_PARTITIONS); p++) {
        int owner = -1;
        for (int i = 0; i < r->n; i++) {
            const struct router_shard *sh = &r->shards[i];
            if (!sh->has_set || !shard_set_has(&sh->set, p))
                continue;
            if (owner >= 0) {
                snprintf(r->conflict, sizeof(r->conflict),
                         "shards %s (%s) and %s (%s) both own partition %d: their sums would "
                         "count it twice",
                         r->shards[owner].url, r->shards[owner].set_text, sh->url, sh->set_text, p);
                return;
            }
            owner = i;
        }
        if (owner < 0 && all_known && nparts > 0) {
            snprintf(r->conflict, sizeof(r->conflict),
                     "no shard owns partition %d of %" PRId64 ": its merchants would be missing", p,
                     nparts);
            return;
        }
    }
}

void router_learn(struct router *r, int i, const json_t *health)
{
    json_t *sh = json_object_get(health, "shard");
    const char *text = json_string_value(json_object_get(sh, "partitions"));
    json_t *np = json_object_get(sh, "topic_partitions"), *km = json_object_get(sh, "key_mismatch");
    struct router_shard *s = &r->shards[i];
    struct shard_set set;
    char was[sizeof(r->conflict)];

    if (!text || shard_set_parse(&set, text, NULL) != 0)
        return; /* a shard from before sets existed: it stays unknown */
    pthread_mutex_lock(&r->mu);
    s->has_set = true;
    s->set = set;
    snprintf(s->set_text, sizeof(s->set_text), "%s", text);
    s->topic_partitions = json_is_integer(np) ? json_integer_value(np) : 0;
    s->key_mismatch = json_is_integer(km) ? json_integer_value(km) : 0;
    memcpy(was, r->conflict, sizeof(was));
    check_sets(r);
    if (strcmp(was, r->conflict) != 0) { /* once per change, not once per look */
        if (r->conflict[0])
            log_error("serve", "shards_refused err=\"%s\"", r->conflict);
        else
            log_info("serve", "shards_accepted");
    }
    pthread_mutex_unlock(&r->mu);
}

int router_min_watermark(const struct router *r, json_t *const docs[], const long status[],
                         bool *found, int64_t *wm_ms, char *why, size_t len)
{
    *found = false;
    for (int i = 0; i < r->n; i++) {
        json_t *wm = json_object_get(json_object_get(docs[i], "shard"), "watermark_ms");
        if (!docs[i] || status[i] != 200)
            continue; /* nothing to serve: its sums are zeros whatever the span */
        if (!json_is_integer(wm)) {
            /* A single lambda-serve ends such a window at its newest data; shards that do not
             * all end at one minute would each sum other minutes. */
            snprintf(why, len,
                     "shard %s has no watermark (its speed layer recorded none): a window over "
                     "every shard cannot end at the same minute on each; ask with from and to",
                     r->shards[i].url);
            return -1;
        }
        if (!*found || json_integer_value(wm) < *wm_ms) {
            *wm_ms = json_integer_value(wm);
            *found = true;
        }
    }
    return 0;
}

bool router_conflict(struct router *r, char *buf, size_t len)
{
    bool has;

    pthread_mutex_lock(&r->mu);
    has = r->conflict[0] != '\0';
    if (has)
        snprintf(buf, len, "%s", r->conflict);
    pthread_mutex_unlock(&r->mu);
    return has;
}

int router_owner(struct router *r, const char *merchant_id)
{
    int owner = -1, p;
    int64_t nparts = 0;

    if (r->pt == SHARD_PARTITIONER_NONE)
        return -1;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) {
        const struct router_shard *sh = &r->shards[i];
        /* Unknown sets, or copies of merchants sitting in another shard: ask them all. */
        if (!sh->has_set || sh->key_mismatch > 0 || sh->topic_partitions <= 0)
            goto out;
        nparts = sh->topic_partitions;
    }
    if (r->conflict[0])
        goto out;
    p = shard_partition_of(r->pt, merchant_id, strlen(merchant_id), (int)nparts);
    for (int i = 0; i < r->n && owner < 0; i++)
        if (shard_set_has(&r->shards[i].set, p))
            owner = i;
out:
    pthread_mutex_unlock(&r->mu);
    return owner;
}

/* Asks every shard's /health and learns what the answers tell; is_loud logs each shard. */
static void refresh(struct router *r, struct router_client *c, bool is_loud)
{
    struct router_fan f = {0};

    for (int i = 0; i < r->n; i++)
        f.a[i].target = strdup("/health");
    router_fan_out(c, &f);
    for (int i = 0; i < r->n; i++) {
        char why[256];
        if (f.a[i].doc && (f.a[i].status == 200 || f.a[i].status == 503)) {
            router_learn(r, i, f.a[i].doc);
            if (is_loud)
                log_info("serve", "shard_known shard=%s partitions=%s", r->shards[i].url,
                         r->shards[i].has_set ? r->shards[i].set_text : "unknown");
            continue;
        }
        router_answer_why(&f.a[i], why, sizeof(why));
        if (is_loud)
            log_warn("serve", "shard_unknown shard=%s err=\"%s\"", r->shards[i].url, why);
    }
    router_fan_release(&f);
}

int router_check(struct router *r, struct lerr *e)
{
    struct router_client *c = router_client_new(r);

    if (!c)
        return lerr_set(e, "out of memory");
    refresh(r, c, true);
    router_client_free(c);
    return router_conflict(r, e->msg, sizeof(e->msg)) ? 1 : 0;
}

static void *refresher(void *arg)
{
    struct router *r = arg;
    struct router_client *c = router_client_new(r);

    pthread_mutex_lock(&r->mu);
    while (c && !r->is_stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&r->cv, &r->mu, &until);
        if (r->is_stopping)
            break;
        pthread_mutex_unlock(&r->mu); /* router_learn takes it */
        refresh(r, c, false);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    router_client_free(c);
    return NULL;
}

int router_start(struct router *r, struct lerr *e)
{
    if (pthread_create(&r->refresher, NULL, refresher, r) != 0)
        return lerr_set(e, "cannot start the shards' health thread");
    r->has_refresher = true;
    return 0;
}

void router_render_metrics(struct router *r, FILE *f)
{
    char conflict[256];

    fputs("# HELP lambda_shard_up Whether the shard's last answer came (1) or not (0).\n"
          "# TYPE lambda_shard_up gauge\n",
          f);
    for (int i = 0; i < r->n; i++)
        fprintf(f, "lambda_shard_up{shard=\"%s\"} %d\n", r->shards[i].url,
                atomic_load(&r->shards[i].is_up));
    fputs("# HELP lambda_shard_requests_total Requests the router sent to the shard.\n"
          "# TYPE lambda_shard_requests_total counter\n",
          f);
    for (int i = 0; i < r->n; i++)
        fprintf(f, "lambda_shard_requests_total{shard=\"%s\"} %" PRIuFAST64 "\n", r->shards[i].url,
                atomic_load(&r->shards[i].requests));
    fputs("# HELP lambda_shard_errors_total Requests the shard did not answer in time or "
          "answered 5xx.\n# TYPE lambda_shard_errors_total counter\n",
          f);
    for (int i = 0; i < r->n; i++)
        fprintf(f, "lambda_shard_errors_total{shard=\"%s\"} %" PRIuFAST64 "\n", r->shards[i].url,
                atomic_load(&r->shards[i].errors));
    fputs("# HELP lambda_shard_latency_seconds Time the shard took to answer the router.\n"
          "# TYPE lambda_shard_latency_seconds summary\n",
          f);
    for (int i = 0; i < r->n; i++) {
        fprintf(f, "lambda_shard_latency_seconds_sum{shard=\"%s\"} %.6f\n", r->shards[i].url,
                (double)atomic_load(&r->shards[i].latency_us) / 1e6);
        fprintf(f, "lambda_shard_latency_seconds_count{shard=\"%s\"} %" PRIuFAST64 "\n",
                r->shards[i].url, atomic_load(&r->shards[i].requests));
    }
    fprintf(f,
            "# HELP lambda_shards_refused Whether the shards' sets overlap or leave a partition "
            "unowned.\n# TYPE lambda_shards_refused gauge\nlambda_shards_refused %d\n",
            router_conflict(r, conflict, sizeof(conflict)) ? 1 : 0);
}
