/* router_events.c - the router's GET /events: one stream fed by the shards' own streams
 * (DESIGN.md sections 5 and 7).
 *
 * One thread keeps a GET /events open to every shard on a libcurl multi handle and reads
 * their Server-Sent Events as they come; each shard event becomes one router event, published
 * into serve.c's struct serve_events (the same subscribers, keep-alives and max_event_clients
 * as a single lambda-serve) at once, so it reaches a subscriber within the shard's own 100 ms
 * and a poll. A stream that ends or fails is an event naming the shard, a warn line and a
 * reason in the router's /health (degraded) until it is open again; it is retried after
 * ROUTER_RETRY_MIN_MS, doubling up to ROUTER_RETRY_MAX_MS. */
#include "router.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "live.h"
#include "log.h"
#include "router_int.h"

#define ROUTER_RETRY_MIN_MS 100
#define ROUTER_RETRY_MAX_MS 2000
#define ROUTER_LINE_MAX     (LIVE_EVENT_MAX + 64)

/* One shard's stream, the thread's alone. */
struct stream {
    struct router_feed *feed;
    int i; /* the shard */
    CURL *h;
    bool is_active, is_open; /* a transfer is under way; its 200 head came */
    int64_t retry_at_ms, backoff_ms;
    char line[ROUTER_LINE_MAX]; /* the line being read */
    size_t line_len;
    bool is_line_long;          /* longer than an event can be: passed over */
    char data[ROUTER_LINE_MAX]; /* the data lines of the event being read */
    size_t data_len;
    char err[CURL_ERROR_SIZE]; /* libcurl's words */
    char why[64];              /* ours, before libcurl's: a head that was not 200 */
};

struct router_feed {
    struct router *r;
    struct serve_events *ev; /* borrowed: serve.c's */
    CURLM *multi;
    pthread_t thread;
    atomic_bool is_stopping;
    struct stream st[ROUTER_SHARDS_MAX];
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Makes doc (taken) the router's newest event and hands it to every subscriber. An event too
 * long for a subscriber's buffer loses the shard's details but keeps its name. */
static void publish(struct router_feed *f, int i, json_t *doc)
{
    struct router *r = f->r;
    char *text = NULL;
    uint64_t seq;

    pthread_mutex_lock(&r->mu);
    seq = ++r->event_seq;
    json_object_set_new(doc, "seq", json_integer((json_int_t)seq));
    json_object_set_new(doc, "shard", json_string(r->shards[i].url));
    text = json_dumps(doc, JSON_COMPACT);
    if (text && strlen(text) >= sizeof(r->event)) {
        free(text);
        text = NULL;
    }
    if (text)
        snprintf(r->event, sizeof(r->event), "%s", text);
    else
        snprintf(r->event, sizeof(r->event), "{\"seq\":%" PRIu64 ",\"shard\":\"%s\"}", seq,
                 r->shards[i].url);
    serve_events_publish(f->ev, seq, r->event);
    pthread_mutex_unlock(&r->mu);
    free(text);
    json_decref(doc);
}

/* A shard event's data: the shard's own fields, its seq as shard_seq, then the router's seq
 * and the shard's url. */
static void on_event(struct stream *s)
{
    json_t *doc = json_loadb(s->data, s->data_len, 0, NULL), *seq;

    if (!json_is_object(doc)) {
        log_warn("serve", "shard_event_unreadable shard=%s", s->feed->r->shards[s->i].url);
        json_decref(doc);
        return;
    }
    if ((seq = json_object_get(doc, "seq")))
        json_object_set(doc, "shard_seq", seq);
    publish(s->feed, s->i, doc);
}

/* One line of the stream, without its end: "data:" lines gather, a blank line ends the event;
 * comments (": keep-alive"), ids and other fields are passed over. */
static void on_line(struct stream *s, const char *line, size_t len)
{
    if (len == 0) {
        if (s->data_len > 0)
            on_event(s);
        s->data_len = 0;
        return;
    }
    if (len < 5 || memcmp(line, "data:", 5) != 0)
        return;
    line += 5, len -= 5;
    if (len > 0 && *line == ' ')
        line++, len--;
    if (s->data_len + len + 1 >= sizeof(s->data)) {
        s->data_len = sizeof(s->data); /* too long: the event is dropped at its end */
        return;
    }
    if (s->data_len > 0)
        s->data[s->data_len++] = '\n';
    memcpy(s->data + s->data_len, line, len);
    s->data_len += len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct stream *s = arg;
    size_t n = size * nmemb;

    for (size_t k = 0; k < n; k++) {
        char c = data[k];
        if (c == '\n') {
            if (s->line_len > 0 && s->line[s->line_len - 1] == '\r')
                s->line_len--;
            if (!s->is_line_long && s->data_len < sizeof(s->data))
                on_line(s, s->line, s->line_len);
            else if (s->line_len == 0 && !s->is_line_long)
                s->data_len = 0; /* the end of an event too long to pass on */
            s->line_len = 0;
            s->is_line_long = false;
        } else if (s->line_len + 1 < sizeof(s->line)) {
            s->line[s->line_len++] = c;
        } else {
            s->is_line_long = true;
        }
    }
    return n;
}

/* Under r->mu: the stream of shard i is open (why "") or not, said once per change. */
static void set_state(struct router_feed *f, int i, const char *why)
{
    struct router_shard *sh = &f->r->shards[i];
    bool is_same = !strcmp(sh->stream_err, why);

    snprintf(sh->stream_err, sizeof(sh->stream_err), "%s", why);
    if (is_same)
        return;
    if (!why[0])
        log_info("serve", "shard_events_open shard=%s", sh->url);
    else
        log_warn("serve", "shard_events_dropped shard=%s err=\"%s\"", sh->url, why);
}

/* The end of a response's head: a 200 opens the stream; anything else ends the transfer. */
static size_t on_head(char *data, size_t size, size_t nmemb, void *arg)
{
    struct stream *s = arg;
    size_t n = size * nmemb;
    long status = 0;

    if (n > 2 || (n == 2 && data[0] != '\r') || (n == 1 && data[0] != '\n'))
        return n;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        snprintf(s->why, sizeof(s->why), "HTTP %ld", status);
        return 0; /* libcurl ends the transfer */
    }
    s->is_open = true;
    s->backoff_ms = ROUTER_RETRY_MIN_MS;
    pthread_mutex_lock(&s->feed->r->mu);
    set_state(s->feed, s->i, "");
    pthread_mutex_unlock(&s->feed->r->mu);
    return n;
}

static int stream_start(struct router_feed *f, struct stream *s)
{
    char url[600];

    snprintf(url, sizeof(url), "%s/events", f->r->shards[s->i].url);
    s->is_open = false;
    s->line_len = s->data_len = 0;
    s->is_line_long = false;
    s->err[0] = s->why[0] = '\0';
    curl_easy_setopt(s->h, CURLOPT_URL, url);
    if (curl_multi_add_handle(f->multi, s->h) != CURLM_OK)
        return -1;
    s->is_active = true;
    return 0;
}

/* A transfer ended: the stream dropped (or never opened); it is said and retried. */
static void stream_ended(struct router_feed *f, struct stream *s, CURLcode cc)
{
    char why[200];

    curl_multi_remove_handle(f->multi, s->h);
    s->is_active = false;
    if (s->why[0])
        snprintf(why, sizeof(why), "event stream dropped: %s", s->why);
    else if (s->err[0])
        snprintf(why, sizeof(why), "event stream dropped: %.150s", s->err);
    else if (cc != CURLE_OK)
        snprintf(why, sizeof(why), "event stream dropped: %s", curl_easy_strerror(cc));
    else
        snprintf(why, sizeof(why), "event stream dropped: the shard ended it");
    s->retry_at_ms = mono_ms() + s->backoff_ms;
    s->backoff_ms =
        s->backoff_ms * 2 > ROUTER_RETRY_MAX_MS ? ROUTER_RETRY_MAX_MS : s->backoff_ms * 2;
    pthread_mutex_lock(&f->r->mu);
    bool was_said = !strcmp(f->r->shards[s->i].stream_err, why);
    set_state(f, s->i, why);
    pthread_mutex_unlock(&f->r->mu);
    if (!was_said) { /* once per change, not once per retry */
        char msg[300];
        snprintf(msg, sizeof(msg), "shard %s: %s", f->r->shards[s->i].url, why);
        publish(f, s->i, json_pack("{s:s}", "error", msg));
    }
}

static void *feed_main(void *arg)
{
    struct router_feed *f = arg;
    int64_t tick_ms = mono_ms();
    int running, left;
    CURLMsg *m;

    while (!atomic_load(&f->is_stopping)) {
        int64_t now_ms = mono_ms();
        for (int i = 0; i < f->r->n; i++)
            if (!f->st[i].is_active && now_ms >= f->st[i].retry_at_ms)
                stream_start(f, &f->st[i]);
        curl_multi_perform(f->multi, &running);
        while ((m = curl_multi_info_read(f->multi, &left))) {
            struct stream *s = NULL;
            if (m->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            stream_ended(f, s, m->data.result);
        }
        if (now_ms - tick_ms >= 1000) { /* the subscribers' keep-alives */
            serve_events_tick(f->ev);
            tick_ms = now_ms;
        }
        curl_multi_poll(f->multi, NULL, 0, 100, NULL);
    }
    return NULL;
}

static void feed_free(struct router_feed *f)
{
    if (!f)
        return;
    for (int i = 0; i < ROUTER_SHARDS_MAX; i++)
        if (f->st[i].h) {
            if (f->st[i].is_active)
                curl_multi_remove_handle(f->multi, f->st[i].h);
            curl_easy_cleanup(f->st[i].h);
        }
    if (f->multi)
        curl_multi_cleanup(f->multi);
    free(f);
}

static int stream_init(struct router_feed *f, int i)
{
    struct stream *s = &f->st[i];

    s->feed = f;
    s->i = i;
    s->backoff_ms = ROUTER_RETRY_MIN_MS;
    if (!(s->h = curl_easy_init()))
        return -1;
    curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->h, CURLOPT_HEADERFUNCTION, on_head);
    curl_easy_setopt(s->h, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, s->err);
    curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
    curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(s->h, CURLOPT_CONNECTTIMEOUT_MS, (long)f->r->timeout_ms);
    /* A shard sends a keep-alive every 15 s: a stream silent for much longer is gone. */
    curl_easy_setopt(s->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(s->h, CURLOPT_LOW_SPEED_TIME,
                     (long)(3 * SERVE_EVENTS_KEEPALIVE_MS / 1000 + 1));
    return 0;
}

int router_events_start(struct router *r, struct serve_events *ev, struct lerr *e)
{
    struct router_feed *f = calloc(1, sizeof(*f));

    if (!f || !(f->multi = curl_multi_init()))
        goto oom;
    f->r = r;
    f->ev = ev;
    for (int i = 0; i < r->n; i++)
        if (stream_init(f, i) != 0)
            goto oom;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) /* until its first head comes */
        snprintf(r->shards[i].stream_err, sizeof(r->shards[i].stream_err),
                 "event stream not open yet");
    pthread_mutex_unlock(&r->mu);
    if (pthread_create(&f->thread, NULL, feed_main, f) != 0) {
        feed_free(f);
        return lerr_set(e, "cannot start the shards' event thread");
    }
    r->feed = f;
    return 0;
oom:
    feed_free(f);
    return lerr_set(e, "out of memory");
}

void router_events_stop(struct router *r)
{
    struct router_feed *f = r ? r->feed : NULL;

    if (!f)
        return;
    atomic_store(&f->is_stopping, true);
    curl_multi_wakeup(f->multi);
    pthread_join(f->thread, NULL);
    feed_free(f);
    r->feed = NULL;
}

bool router_events_newest(struct router *r, char *buf, size_t len)
{
    bool has;

    pthread_mutex_lock(&r->mu);
    has = r->feed != NULL;
    snprintf(buf, len, "%s", r->event_seq ? r->event : "{\"seq\":0}");
    pthread_mutex_unlock(&r->mu);
    return has;
}

bool router_events_down(struct router *r, int i, char *buf, size_t len)
{
    bool is_down;

    pthread_mutex_lock(&r->mu);
    is_down = r->feed && r->shards[i].stream_err[0];
    if (is_down)
        snprintf(buf, len, "%s", r->shards[i].stream_err);
    pthread_mutex_unlock(&r->mu);
    return is_down;
}
