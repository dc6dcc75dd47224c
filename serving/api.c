/* api.c - lambda-serve's routes: one table of method, path pattern, handler and metrics name,
 * and the handlers, which read a snapshot from store.c and answer JSON. No HTTP here. The
 * merchant answer's text is api_text.c's, /health, /metrics and /events api_health.c's. */
#include "api.h"
#include "api_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uthash.h>

#include "dashboard.h"
#include "dim.h"
#include "ev.h"
#include "log.h"
#include "rank.h"
#include "span.h"
#include "tm.h"
const char api_json_ctype[] = "application/json";

void api_reply_json(struct serve_reply *out, unsigned status, json_t *doc)
{
    out->owned = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!out->owned) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    out->status = status;
    out->content_type = api_json_ctype;
    out->body = out->owned;
    out->len = strlen(out->body);
}

void serve_api_error(struct serve_reply *out, unsigned status, const char *fmt, ...)
{
    static const char oom[] = "{\"error\":\"out of memory\"}";
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Messages quote what the client sent, which need not be text: keep them printable ASCII
     * so that they are always valid JSON strings. */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    out->status = status;
    out->content_type = api_json_ctype;
    json_t *doc = json_pack("{s:s}", "error", msg);
    out->owned = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    out->body = out->owned ? out->owned : oom;
    if (!out->owned)
        out->status = 500;
    out->len = strlen(out->body);
}

/* A time as a JSON string; json_pack's "o" steals the reference. */
json_t *api_rfc3339(int64_t t_ms)
{
    char buf[TM_RFC3339_LEN];

    tm_format_rfc3339(t_ms, buf);
    return json_string(buf);
}

/* Joins a merchant answer with the dimension (DESIGN.md section 5): its attributes, {} for a
 * merchant the file does not name, and the version they come from. Without a dimension file
 * the answer keeps the shape it always had. */
void api_add_merchant(json_t *doc, const struct dim *d, const char *id)
{
    const json_t *attrs = d ? dim_attrs(d, id) : NULL;

    if (!doc || !d)
        return;
    json_object_set_new(doc, "merchant", attrs ? json_deep_copy(attrs) : json_object());
    json_object_set_new(doc, "dimension",
                        json_pack("{s:I,s:o}", "version", (json_int_t)dim_version(d), "loaded_at",
                                  api_rfc3339(dim_loaded_ms(d))));
}

/* The decoded value of query parameter name, or NULL when it is absent. */
static const char *param(const struct call *q, const char *name)
{
    return q->arg(q->req, name);
}

static void add_span(json_t *doc, int64_t from_ms, int64_t to_ms)
{
    json_object_set_new(doc, "from", api_rfc3339(from_ms));
    json_object_set_new(doc, "to", api_rfc3339(to_ms));
}

/* One merchant's answer inside an open snapshot: all time, or the span when one was given. */
static json_t *merchant_answer(const struct call *q, const struct serve_view *v, const char *id,
                               const struct serve_span *sp, struct lerr *e)
{
    struct serve_store *st = q->st;
    struct serve_sums b, s;
    int64_t from_ms = 0, to_ms = 0;
    json_t *doc;

    if (!serve_span_given(sp)) {
        if (serve_store_totals(st, v, id, &b, &s, e) != 0)
            return NULL;
    } else if (serve_span_resolve(st, v, sp, TM_MINUTE_MS, 0, &from_ms, &to_ms, e) != 0 ||
               serve_store_range(st, v, id, from_ms, to_ms, &b, &s, e) != 0) {
        return NULL;
    }
    doc = api_merchant_doc(id, v, &b, &s, tm_now_ms());
    if (doc && serve_span_given(sp))
        add_span(doc, from_ms, to_ms);
    api_add_merchant(doc, q->dim, id);
    return doc;
}

/* A layer that cannot be read: store.h's words (SQLite's text is in the log already). */
void api_db_failed(struct serve_reply *out, const char *route, const struct lerr *e)
{
    log_debug("serve", "unavailable route=%s err=\"%s\"", route, e->msg);
    serve_api_error(out, 503, "%s", e->msg);
}

/* A read of a range failed: the client's fault (400) when it asked for minutes the batch no
 * longer holds, else the store's. */
static void range_failed(const struct serve_store *st, struct serve_reply *out, const char *route,
                         const struct lerr *e)
{
    if (serve_store_status(st) == 400)
        serve_api_error(out, 400, "%s", e->msg);
    else
        api_db_failed(out, route, e);
}

static bool id_valid(const char *id)
{
    return ev_merchant_id_valid(id, strlen(id));
}

/* Copies the merchant id of /query/{id}... into id; false after a 400 answer when it is too
 * long or not an id. */
static bool take_id(const struct call *q, char id[EV_ID_MAX + 1], struct serve_reply *out)
{
    size_t len = strcspn(q->segment, "/");

    if (len > EV_ID_MAX) {
        serve_api_error(out, 400, "bad merchant_id '%.80s...': longer than %d bytes", q->segment,
                        EV_ID_MAX);
        return false;
    }
    memcpy(id, q->segment, len);
    id[len] = '\0';
    if (!id_valid(id)) {
        serve_api_error(out, 400, "bad merchant_id '%.80s': want 1..64 of [A-Za-z0-9_.:-]", id);
        return false;
    }
    return true;
}

/* All-time totals: from memory when it holds the current state (live.h), else from SQLite. */
static void query_totals(const struct call *q, const char *id, struct serve_reply *out)
{
    struct serve_store *st = q->st;
    struct serve_sums b, s;
    struct lerr e = {{0}};
    struct serve_view v;
    int rc = serve_live_totals(q->c->live, &id, 1, &v, &b, &s, &e);

    if (rc < 0) {
        api_db_failed(out, "query", &e);
        return;
    }
    if (rc == 0) {
        if (serve_store_begin(st, &v, &e) != 0) {
            api_db_failed(out, "query", &e);
            return;
        }
        rc = serve_store_totals(st, &v, id, &b, &s, &e);
        serve_store_end(st);
        if (rc != 0) {
            api_db_failed(out, "query", &e);
            return;
        }
    }
    api_reply_text(out, q->dim, &id, 1, &v, &b, &s);
}

/* ?ids= without a span from memory, all in one snapshot: 1 answered (or an error given), 0
 * when memory holds no current state. */
static int ids_from_memory(const struct call *q, const char **list, int n, struct serve_reply *out)
{
    struct serve_sums *b = calloc((size_t)n + 1, sizeof(*b)),
                      *s = calloc((size_t)n + 1, sizeof(*s));
    struct lerr e = {{0}};
    struct serve_view v;
    int rc = 1;

    if (!b || !s) {
        serve_api_error(out, 500, "out of memory");
        goto out;
    }
    if ((rc = serve_live_totals(q->c->live, list, (size_t)n, &v, b, s, &e)) <= 0) {
        if (rc < 0)
            api_db_failed(out, "query_ids", &e);
        rc = rc < 0;
        goto out;
    }
    api_reply_text(out, q->dim, list, (size_t)n, &v, b, s);
out:
    free(b);
    free(s);
    return rc;
}

static void handle_query(const struct call *q, struct serve_reply *out)
{
    struct serve_store *st = q->st;
    char id[EV_ID_MAX + 1];
    struct lerr e = {{0}};
    struct serve_view v;
    struct serve_span sp;
    json_t *doc;

    if (!take_id(q, id, out))
        return;
    if (serve_span_parse(q->arg, q->req, &sp, &e) != 0) {
        serve_api_error(out, 400, "%s", e.msg);
        return;
    }
    if (!serve_span_given(&sp)) {
        query_totals(q, id, out);
        return;
    }
    if (serve_store_begin(st, &v, &e) != 0) {
        api_db_failed(out, "query", &e);
        return;
    }
    doc = merchant_answer(q, &v, id, &sp, &e);
    serve_store_end(st);
    if (doc)
        api_reply_json(out, 200, doc);
    else
        range_failed(st, out, "query", &e);
}

/* Splits ids on commas into list (pointers into buf); returns the count, or -1 when a part
 * is not a merchant id (named in e) or there are too many. */
static int split_ids(char *buf, const char **list, struct lerr *e)
{
    int n = 0;

    for (char *p = buf, *comma;; p = comma + 1) {
        comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!id_valid(p))
            return lerr_set(e, "bad ids: merchant_id '%.80s' is not 1..64 of [A-Za-z0-9_.:-]", p);
        if (n == SERVE_IDS_MAX) {
            int total = n + 1;
            while (comma && (comma = strchr(comma + 1, ',')))
                total++;
            return lerr_set(e, "too many ids: %d, at most %d", total, SERVE_IDS_MAX);
        }
        list[n++] = p;
        if (!comma)
            return n;
    }
}

static void handle_ids(const struct call *q, struct serve_reply *out)
{
    struct serve_store *st = q->st;
    const char *ids = param(q, "ids"), **list = NULL;
    struct lerr e = {{0}};
    struct serve_view v;
    struct serve_span sp;
    char *buf = NULL;
    json_t *arr = NULL, *doc;
    int n;

    if (!ids) {
        serve_api_error(out, 400, "bad ids: missing (GET /query?ids=a,b,c)");
        return;
    }
    if (serve_span_parse(q->arg, q->req, &sp, &e) != 0) {
        serve_api_error(out, 400, "%s", e.msg);
        return;
    }
    buf = strdup(ids);
    list = calloc(SERVE_IDS_MAX, sizeof(*list));
    if (!buf || !list) {
        serve_api_error(out, 500, "out of memory");
        goto out;
    }
    if ((n = split_ids(buf, list, &e)) < 0) {
        serve_api_error(out, 400, "%s", e.msg);
        goto out;
    }
    if (!serve_span_given(&sp) && ids_from_memory(q, list, n, out))
        goto out;
    if (serve_store_begin(st, &v, &e) != 0) {
        api_db_failed(out, "query_ids", &e);
        goto out;
    }
    arr = json_array();
    for (int i = 0; arr && i < n; i++) {
        if (!(doc = merchant_answer(q, &v, list[i], &sp, &e)) || json_array_append_new(arr, doc)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    serve_store_end(st);
    if (!arr)
        range_failed(st, out, "query_ids", &e);
    else
        api_reply_json(out, 200, json_pack("{s:o}", "merchants", arr));
out:
    free(buf);
    free(list);
}

struct series {
    int64_t from_ms, step_ms;
    size_t n;
    struct serve_sums *pts;
};

static void series_add(void *arg, const char *merchant_id, int64_t t_ms, const struct serve_sums *s)
{
    struct series *sr = arg;
    int64_t i = (t_ms - sr->from_ms) / sr->step_ms;

    (void)merchant_id;
    if (t_ms < sr->from_ms || i < 0 || (size_t)i >= sr->n)
        return;
    sr->pts[i].order_count += s->order_count;
    sr->pts[i].revenue_cents += s->revenue_cents;
}

static json_t *series_doc(const struct serve_ctx *c, const struct serve_view *v, const char *id,
                          const char *step, const struct series *sr)
{
    int64_t lateness =
        v->allowed_lateness_ms >= 0 ? v->allowed_lateness_ms : c->allowed_lateness_ms;
    json_t *pts = json_array(), *doc;

    for (size_t i = 0; pts && i < sr->n; i++) {
        int64_t t = sr->from_ms + (int64_t)i * sr->step_ms;
        bool is_final = v->has_watermark && t + sr->step_ms + lateness <= v->watermark_ms;
        json_array_append_new(pts,
                              json_pack("{s:o,s:I,s:I,s:b}", "t", api_rfc3339(t), "order_count",
                                        (json_int_t)sr->pts[i].order_count, "revenue_cents",
                                        (json_int_t)sr->pts[i].revenue_cents, "final", is_final));
    }
    doc = json_pack("{s:s,s:s,s:o,s:o,s:o,s:o}", "merchant_id", id, "step", step, "from",
                    api_rfc3339(sr->from_ms), "to",
                    api_rfc3339(sr->from_ms + (int64_t)sr->n * sr->step_ms), "watermark",
                    v->has_watermark ? api_rfc3339(v->watermark_ms) : json_null(), "points", pts);
    return doc;
}

static int step_parse(const char *step, int64_t *step_ms)
{
    if (!strcmp(step, "1m"))
        *step_ms = TM_MINUTE_MS;
    else if (!strcmp(step, "1h"))
        *step_ms = TM_HOUR_MS;
    else if (!strcmp(step, "1d"))
        *step_ms = TM_DAY_MS;
    else
        return -1;
    return 0;
}

static void handle_series(const struct call *q, struct serve_reply *out)
{
    struct serve_store *st = q->st;
    const char *step = param(q, "step");
    char id[EV_ID_MAX + 1];
    struct series sr = {0};
    struct lerr e = {{0}};
    struct serve_view v;
    struct serve_span sp;
    int64_t to_ms;
    json_t *doc = NULL;

    if (!take_id(q, id, out))
        return;
    if (!step)
        step = "1m";
    if (step_parse(step, &sr.step_ms) != 0) {
        serve_api_error(out, 400, "bad step '%.40s': want 1m, 1h or 1d", step);
        return;
    }
    if (serve_span_parse(q->arg, q->req, &sp, &e) != 0) {
        serve_api_error(out, 400, "%s", e.msg);
        return;
    }
    if (sp.has_from && sp.has_to &&
        (serve_span_ceil(sp.to_ms, sr.step_ms) - tm_floor(sp.from_ms, sr.step_ms)) / sr.step_ms >
            SERVE_POINTS_MAX) {
        serve_api_error(out, 400, "bad step '%s': from..to holds more than %d points", step,
                        SERVE_POINTS_MAX);
        return;
    }
    if (sp.window && serve_span_ceil(sp.window_ms, sr.step_ms) / sr.step_ms > SERVE_POINTS_MAX) {
        serve_api_error(out, 400, "bad window '%s': more than %d points of %s", sp.window,
                        SERVE_POINTS_MAX, step);
        return;
    }
    if (serve_store_begin(st, &v, &e) != 0) {
        api_db_failed(out, "series", &e);
        return;
    }
    if (serve_span_resolve(st, &v, &sp, sr.step_ms, 60 * sr.step_ms, &sr.from_ms, &to_ms, &e) != 0)
        goto out;
    sr.n = (size_t)((to_ms - sr.from_ms) / sr.step_ms);
    if (sr.n > SERVE_POINTS_MAX) { /* from given, to open: clip to the newest points */
        sr.from_ms = to_ms - SERVE_POINTS_MAX * sr.step_ms;
        sr.n = SERVE_POINTS_MAX;
    }
    if (!(sr.pts = calloc(sr.n + 1, sizeof(*sr.pts)))) {
        lerr_set(&e, "out of memory");
        goto out;
    }
    if (serve_store_rows(st, &v, id, sr.from_ms, to_ms, sr.step_ms != TM_MINUTE_MS, series_add, &sr,
                         &e) != 0)
        goto out;
    doc = series_doc(q->c, &v, id, step, &sr);
out:
    serve_store_end(st);
    free(sr.pts);
    if (doc)
        api_reply_json(out, 200, doc);
    else
        range_failed(st, out, "series", &e);
}

static int n_parse(const char *s, long *n)
{
    char *end;

    if (!s)
        return 0;
    errno = 0;
    *n = strtol(s, &end, 10);
    if (errno || end == s || *end || *n < 1 || *n > SERVE_TOP_MAX)
        return -1;
    return 0;
}

/* by=orders|revenue (orders when absent); false after a 400 answer. */
static bool take_by(const struct call *q, const char **by, struct serve_reply *out)
{
    *by = param(q, "by");
    if (!*by)
        *by = "orders";
    if (strcmp(*by, "orders") && strcmp(*by, "revenue")) {
        serve_api_error(out, 400, "bad by '%.40s': want orders or revenue", *by);
        return false;
    }
    return true;
}

/* A ranking of the merchants in the request's span (default: the last 5 minutes), summed over
 * both layers in one snapshot. NULL after an answer (400, or an error) was given. */
static struct serve_rank *rank_span(const struct call *q, const char *route, struct serve_span *sp,
                                    int64_t *from_ms, int64_t *to_ms, struct serve_reply *out)
{
    struct serve_rank *r = NULL;
    struct lerr e = {{0}};
    struct serve_view v;
    int rc;

    if (serve_span_parse(q->arg, q->req, sp, &e) != 0) {
        serve_api_error(out, 400, "%s", e.msg);
        return NULL;
    }
    if (!(r = serve_rank_new())) {
        serve_api_error(out, 500, "out of memory");
        return NULL;
    }
    if (serve_store_begin(q->st, &v, &e) != 0) {
        api_db_failed(out, route, &e);
        serve_rank_free(r);
        return NULL;
    }
    rc = serve_span_resolve(q->st, &v, sp, TM_MINUTE_MS, 5 * TM_MINUTE_MS, from_ms, to_ms, &e);
    if (rc == 0)
        rc = serve_store_merchants(q->st, &v, *from_ms, *to_ms, serve_rank_add, r, &e);
    serve_store_end(q->st);
    if (rc != 0) {
        range_failed(q->st, out, route, &e);
        serve_rank_free(r);
        return NULL;
    }
    return r;
}

/* The window's label in an answer: its text, "5m" by default, null for from/to. */
static const char *window_label(const struct serve_span *sp)
{
    return sp->window ? sp->window : (sp->has_from ? NULL : "5m");
}

static void handle_top(const struct call *q, struct serve_reply *out)
{
    const char *by, *ntext = param(q, "n"), *filter = param(q, "filter");
    char attr[128] = "";
    const char *value = NULL;
    struct serve_rank *r;
    struct serve_span sp;
    long n = 10;
    int64_t from_ms, to_ms;
    json_t *list;

    if (n_parse(ntext, &n) != 0) {
        serve_api_error(out, 400, "bad n '%.40s': want an integer 1..%d", ntext, SERVE_TOP_MAX);
        return;
    }
    if (!take_by(q, &by, out))
        return;
    if (filter) {
        const char *colon = strchr(filter, ':');
        if (!colon || colon == filter || (size_t)(colon - filter) >= sizeof(attr)) {
            serve_api_error(out, 400, "bad filter '%.80s': want <attribute>:<value>", filter);
            return;
        }
        if (!q->dim) {
            serve_api_error(out, 400, "bad filter: no dimension_file is loaded");
            return;
        }
        memcpy(attr, filter, (size_t)(colon - filter));
        value = colon + 1;
    }
    if (!(r = rank_span(q, "top", &sp, &from_ms, &to_ms, out)))
        return;
    list = serve_rank_top(r, !strcmp(by, "revenue"), n, q->dim, filter ? attr : NULL, value);
    serve_rank_free(r);
    if (!list) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    json_t *doc = json_pack("{s:s?,s:s,s:o,s:o,s:o}", "window", window_label(&sp), "by", by, "from",
                            api_rfc3339(from_ms), "to", api_rfc3339(to_ms), "merchants", list);
    if (doc && filter)
        json_object_set_new(doc, "filter", json_string(filter));
    api_reply_json(out, 200, doc);
}

static void handle_groups(const struct call *q, struct serve_reply *out)
{
    const char *by, *group = param(q, "group");
    struct serve_rank *r;
    struct serve_span sp;
    int64_t from_ms, to_ms;
    json_t *list;

    if (!group || !*group) {
        serve_api_error(out, 400, "bad group: missing (GET /groups?group=<attribute>)");
        return;
    }
    if (!take_by(q, &by, out))
        return;
    if (!q->dim) {
        serve_api_error(out, 400, "bad group: no dimension_file is loaded");
        return;
    }
    if (!(r = rank_span(q, "groups", &sp, &from_ms, &to_ms, out)))
        return;
    list = serve_rank_groups(r, !strcmp(by, "revenue"), q->dim, group);
    serve_rank_free(r);
    if (!list) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    api_reply_json(out, 200,
                   json_pack("{s:s,s:s?,s:s,s:o,s:o,s:o,s:{s:I,s:o}}", "group", group, "window",
                             window_label(&sp), "by", by, "from", api_rfc3339(from_ms), "to",
                             api_rfc3339(to_ms), "groups", list, "dimension", "version",
                             (json_int_t)dim_version(q->dim), "loaded_at",
                             api_rfc3339(dim_loaded_ms(q->dim))));
}

static void handle_dashboard(const struct call *q, struct serve_reply *out)
{
    (void)q;
    out->status = 200;
    out->content_type = "text/html; charset=utf-8";
    out->body = serve_dashboard_html;
    out->len = serve_dashboard_len;
}

static void handle_other(const struct call *q, struct serve_reply *out)
{
    serve_api_error(out, 404, "no such route '%.200s'", q->path);
}

/* Every route of lambda-serve, by enum serve_route (DESIGN.md section 5). A pattern matches a
 * path character by character; its '*' matches one path segment, possibly empty, which the
 * handler finds in call.segment. */
static const struct route {
    const char *name;    /* the route's label in /metrics */
    const char *method;  /* what it answers; HEAD is answered wherever GET is */
    const char *pattern; /* NULL: matches no path */
    void (*handle)(const struct call *q, struct serve_reply *out);
} routes[SERVE_R_COUNT] = {
    [SERVE_R_DASHBOARD] = {"dashboard", "GET", "/", handle_dashboard},
    [SERVE_R_QUERY] = {"query", "GET", "/query/*", handle_query},
    [SERVE_R_QUERY_IDS] = {"query_ids", "GET", "/query", handle_ids},
    [SERVE_R_SERIES] = {"series", "GET", "/query/*/series", handle_series},
    [SERVE_R_TOP] = {"top", "GET", "/top", handle_top},
    [SERVE_R_GROUPS] = {"groups", "GET", "/groups", handle_groups},
    [SERVE_R_HEALTH] = {"health", "GET", "/health", api_handle_health},
    [SERVE_R_METRICS] = {"metrics", "GET", "/metrics", api_handle_metrics},
    [SERVE_R_EVENTS] = {"events", "GET", "/events", api_handle_events},
    [SERVE_R_OTHER] = {"other", NULL, NULL, handle_other},
};

_Static_assert(SERVE_R_COUNT <= SERVE_METRICS_ROUTES, "metrics.h counts too few routes");

static bool path_matches(const char *pattern, const char *path)
{
    for (; *pattern; pattern++) {
        if (*pattern == '*')
            path += strcspn(path, "/");
        else if (*path++ != *pattern)
            return false;
    }
    return *path == '\0';
}

enum serve_route serve_api_route(const char *path)
{
    for (int r = 0; r < SERVE_R_COUNT; r++)
        if (routes[r].pattern && path_matches(routes[r].pattern, path))
            return (enum serve_route)r;
    return SERVE_R_OTHER;
}

const char *serve_api_route_name(enum serve_route r)
{
    return r < SERVE_R_COUNT ? routes[r].name : routes[SERVE_R_OTHER].name;
}

bool serve_api_allows(enum serve_route r, const char *method)
{
    const char *want = r < SERVE_R_COUNT ? routes[r].method : NULL;

    if (!want)
        return false;
    return !strcmp(method, want) || (!strcmp(want, "GET") && !strcmp(method, "HEAD"));
}

void serve_api_refuse(enum serve_route r, const char *method, const char *path,
                      struct serve_reply *out)
{
    const char *want = r < SERVE_R_COUNT && routes[r].method ? routes[r].method : "GET";

    serve_api_error(out, 405, "method %.20s not allowed on '%.200s': use %s", method, path, want);
    out->allow = !strcmp(want, "GET") ? "GET, HEAD" : want;
}

void serve_api_handle(const struct serve_ctx *c, struct serve_store *st, enum serve_route r,
                      const char *path, serve_arg_fn arg, void *req, struct serve_reply *out)
{
    struct call q = {.c = c, .st = st, .path = path, .arg = arg, .req = req};
    const char *star;

    if (r >= SERVE_R_COUNT)
        r = SERVE_R_OTHER;
    star = routes[r].pattern ? strchr(routes[r].pattern, '*') : NULL;
    if (star) /* the pattern's literal prefix matched, so the segment starts at the same offset */
        q.segment = path + strnlen(path, (size_t)(star - routes[r].pattern));
    memset(out, 0, sizeof(*out));
    /* One version of the dimension for the whole answer, even if the file changes meanwhile;
     * pinned only by the routes that join it, so the others take no lock for it. */
    if (c->dim &&
        (r == SERVE_R_QUERY || r == SERVE_R_QUERY_IDS || r == SERVE_R_TOP || r == SERVE_R_GROUPS))
        q.dim = dim_acquire(c->dim);
    routes[r].handle(&q, out);
    if (q.dim)
        dim_release(c->dim, q.dim);
}
