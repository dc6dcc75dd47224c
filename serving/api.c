/* api.c - lambda-serve's routes: one table of method, path pattern, handler and metrics name,
 * and the handlers, which read a snapshot from store.c and answer JSON. No HTTP here. */
#include "api.h"

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

/* One request as a handler sees it: what serve_api_handle() was given. */
struct call {
    const struct serve_ctx *c;
    struct serve_store *st; /* the worker's; NULL for SERVE_R_OTHER */
    const char *path;
    const char *segment; /* where the pattern's '*' matched in path, else NULL */
    serve_arg_fn arg;
    void *req;
    struct dim *dim; /* the dimension version pinned for this request; NULL without one */
};

static const char json_ctype[] = "application/json";

static void reply_json(struct serve_reply *out, unsigned status, json_t *doc)
{
    out->owned = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!out->owned) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    out->status = status;
    out->content_type = json_ctype;
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
    out->content_type = json_ctype;
    json_t *doc = json_pack("{s:s}", "error", msg);
    out->owned = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    out->body = out->owned ? out->owned : oom;
    if (!out->owned)
        out->status = 500;
    out->len = strlen(out->body);
}

/* A time as a JSON string; json_pack's "o" steals the reference. */
static json_t *rfc3339(int64_t t_ms)
{
    char buf[TM_RFC3339_LEN];

    tm_format_rfc3339(t_ms, buf);
    return json_string(buf);
}

/* Joins a merchant answer with the dimension (DESIGN.md section 5): its attributes, {} for a
 * merchant the file does not name, and the version they come from. Without a dimension file
 * the answer keeps the shape it always had. */
static void add_merchant(json_t *doc, const struct dim *d, const char *id)
{
    const json_t *attrs = d ? dim_attrs(d, id) : NULL;

    if (!doc || !d)
        return;
    json_object_set_new(doc, "merchant", attrs ? json_deep_copy(attrs) : json_object());
    json_object_set_new(doc, "dimension",
                        json_pack("{s:I,s:o}", "version", (json_int_t)dim_version(d), "loaded_at",
                                  rfc3339(dim_loaded_ms(d))));
}

/* The decoded value of query parameter name, or NULL when it is absent. */
static const char *param(const struct call *q, const char *name)
{
    return q->arg(q->req, name);
}

static void add_span(json_t *doc, int64_t from_ms, int64_t to_ms)
{
    json_object_set_new(doc, "from", rfc3339(from_ms));
    json_object_set_new(doc, "to", rfc3339(to_ms));
}

/* A merchant answer's text is written by hand, not built with jansson: it is the answer asked
 * for most, and a tree and its allocations cost more than the rest of the request. Ids are
 * validated ([A-Za-z0-9_.:-]) and times are RFC 3339, so nothing needs escaping. */
#define MERCHANT_TEXT_MAX 1024

/* A cursor into a buffer large enough for what is put (MERCHANT_TEXT_MAX holds an answer). */
struct text {
    char *p;
};

static void put(struct text *t, const char *s)
{
    size_t n = strlen(s);

    memcpy(t->p, s, n);
    t->p += n;
}

static void put_int(struct text *t, int64_t v)
{
    char tmp[24], *q = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

    do
        *--q = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        *--q = '-';
    memcpy(t->p, q, (size_t)(tmp + sizeof(tmp) - q));
    t->p += tmp + sizeof(tmp) - q;
}

static void put_opt_int(struct text *t, bool has, int64_t v)
{
    if (has)
        put_int(t, v);
    else
        put(t, "null");
}

/* A time as a JSON string, or null. The same few times (a version's, a watermark) come again
 * and again, so each thread keeps the last two it formatted. */
static void put_opt_time(struct text *t, bool has, int64_t t_ms)
{
    static _Thread_local struct {
        int64_t t_ms;
        char s[TM_RFC3339_LEN];
    } seen[2] = {{INT64_MIN, ""}, {INT64_MIN, ""}};
    static _Thread_local int next;
    int i;

    if (!has) {
        put(t, "null");
        return;
    }
    for (i = 0; i < 2 && seen[i].t_ms != t_ms; i++)
        ;
    if (i == 2) {
        i = next;
        next ^= 1;
        seen[i].t_ms = t_ms;
        tm_format_rfc3339(t_ms, seen[i].s);
    }
    put(t, "\"");
    put(t, seen[i].s);
    put(t, "\"");
}

/* One merchant's answer into buf (MERCHANT_TEXT_MAX bytes): its length. */
static int merchant_text(char *buf, const char *id, const struct serve_view *v,
                         const struct serve_sums *b, const struct serve_sums *s, int64_t now_ms)
{
    struct serve_sums bb = v->has_batch ? *b : (struct serve_sums){0, 0};
    struct text t = {buf};

    assert(strlen(id) <= EV_ID_MAX);
    put(&t, "{\"merchant_id\":\"");
    put(&t, id);
    put(&t, "\",\"order_count\":");
    put_int(&t, bb.order_count + s->order_count);
    put(&t, ",\"revenue_cents\":");
    put_int(&t, bb.revenue_cents + s->revenue_cents);
    put(&t, ",\"batch\":{\"order_count\":");
    put_int(&t, bb.order_count);
    put(&t, ",\"revenue_cents\":");
    put_int(&t, bb.revenue_cents);
    put(&t, ",\"version\":");
    put_opt_int(&t, v->has_batch, v->version);
    put(&t, ",\"cut_epoch\":");
    put_int(&t, v->has_batch ? v->cut_epoch : 0);
    put(&t, ",\"as_of\":");
    put_opt_time(&t, v->has_batch, v->started_ms);
    put(&t, "},\"speed\":{\"order_count\":");
    put_int(&t, s->order_count);
    put(&t, ",\"revenue_cents\":");
    put_int(&t, s->revenue_cents);
    put(&t, ",\"checkpoint_age_ms\":");
    put_opt_int(&t, v->has_checkpoint, now_ms - v->checkpoint_ms);
    /* Provenance: the lag and watermark the last checkpoint recorded; lag null while no speed
     * layer holds speed.lock (what it recorded before it stopped is no longer true). */
    put(&t, ",\"lag\":");
    put_opt_int(&t, v->has_lag, v->lag);
    put(&t, ",\"watermark\":");
    put_opt_time(&t, v->has_watermark, v->watermark_ms);
    put(&t, "}}");
    *t.p = '\0';
    return (int)(t.p - buf);
}

static json_t *merchant_doc(const char *id, const struct serve_view *v, const struct serve_sums *b,
                            const struct serve_sums *s, int64_t now_ms)
{
    char buf[MERCHANT_TEXT_MAX];

    merchant_text(buf, id, v, b, s, now_ms);
    return json_loads(buf, 0, NULL);
}

/* Appends one merchant's answer to f: the text, and its dimension attributes when there is a
 * dimension (add_merchant's, through jansson). */
static void merchant_write(FILE *f, const struct dim *d, const char *id, const struct serve_view *v,
                           const struct serve_sums *b, const struct serve_sums *s, int64_t now_ms)
{
    char buf[MERCHANT_TEXT_MAX];
    int n = merchant_text(buf, id, v, b, s, now_ms);
    json_t *doc;
    char *text;

    if (!d) {
        fwrite(buf, 1, (size_t)n, f);
        return;
    }
    doc = json_loads(buf, 0, NULL);
    add_merchant(doc, d, id);
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (text)
        fputs(text, f);
    free(text);
    json_decref(doc);
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
    doc = merchant_doc(id, v, &b, &s, tm_now_ms());
    if (doc && serve_span_given(sp))
        add_span(doc, from_ms, to_ms);
    add_merchant(doc, q->dim, id);
    return doc;
}

/* A layer that cannot be read: store.h's words (SQLite's text is in the log already). */
static void db_failed(struct serve_reply *out, const char *route, const struct lerr *e)
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
        db_failed(out, route, e);
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

/* The answer of one merchant (n == 1) or {"merchants":[...]} of several, as text. */
static void reply_text(struct serve_reply *out, const struct dim *d, const char *const *ids,
                       size_t n, const struct serve_view *v, const struct serve_sums *b,
                       const struct serve_sums *s)
{
    int64_t now_ms = tm_now_ms();
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    if (n == 1 && !d) { /* the hot path: one merchant, no dimension, one allocation */
        if (!(buf = malloc(MERCHANT_TEXT_MAX))) {
            serve_api_error(out, 500, "out of memory");
            return;
        }
        len = (size_t)merchant_text(buf, ids[0], v, b, s, now_ms);
        goto done;
    }
    if (!(f = open_memstream(&buf, &len))) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    if (n != 1)
        fputs("{\"merchants\":[", f);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        merchant_write(f, d, ids[i], v, &b[i], &s[i], now_ms);
    }
    if (n != 1)
        fputs("]}", f);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        serve_api_error(out, 500, "out of memory");
        return;
    }
done:
    out->status = 200;
    out->content_type = json_ctype;
    out->owned = buf;
    out->body = buf;
    out->len = len;
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
        db_failed(out, "query", &e);
        return;
    }
    if (rc == 0) {
        if (serve_store_begin(st, &v, &e) != 0) {
            db_failed(out, "query", &e);
            return;
        }
        rc = serve_store_totals(st, &v, id, &b, &s, &e);
        serve_store_end(st);
        if (rc != 0) {
            db_failed(out, "query", &e);
            return;
        }
    }
    reply_text(out, q->dim, &id, 1, &v, &b, &s);
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
            db_failed(out, "query_ids", &e);
        rc = rc < 0;
        goto out;
    }
    reply_text(out, q->dim, list, (size_t)n, &v, b, s);
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
        db_failed(out, "query", &e);
        return;
    }
    doc = merchant_answer(q, &v, id, &sp, &e);
    serve_store_end(st);
    if (doc)
        reply_json(out, 200, doc);
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
        db_failed(out, "query_ids", &e);
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
        reply_json(out, 200, json_pack("{s:o}", "merchants", arr));
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
                              json_pack("{s:o,s:I,s:I,s:b}", "t", rfc3339(t), "order_count",
                                        (json_int_t)sr->pts[i].order_count, "revenue_cents",
                                        (json_int_t)sr->pts[i].revenue_cents, "final", is_final));
    }
    doc = json_pack("{s:s,s:s,s:o,s:o,s:o,s:o}", "merchant_id", id, "step", step, "from",
                    rfc3339(sr->from_ms), "to", rfc3339(sr->from_ms + (int64_t)sr->n * sr->step_ms),
                    "watermark", v->has_watermark ? rfc3339(v->watermark_ms) : json_null(),
                    "points", pts);
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
        db_failed(out, "series", &e);
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
        reply_json(out, 200, doc);
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
        db_failed(out, route, &e);
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
                            rfc3339(from_ms), "to", rfc3339(to_ms), "merchants", list);
    if (doc && filter)
        json_object_set_new(doc, "filter", json_string(filter));
    reply_json(out, 200, doc);
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
    reply_json(out, 200,
               json_pack("{s:s,s:s?,s:s,s:o,s:o,s:o,s:{s:I,s:o}}", "group", group, "window",
                         window_label(&sp), "by", by, "from", rfc3339(from_ms), "to",
                         rfc3339(to_ms), "groups", list, "dimension", "version",
                         (json_int_t)dim_version(q->dim), "loaded_at",
                         rfc3339(dim_loaded_ms(q->dim))));
}

static void lag_sum(void *arg, const char *merchant_id, int64_t partition,
                    const struct serve_sums *s)
{
    (void)merchant_id, (void)partition;
    *(int64_t *)arg += s->order_count;
}

/* Sums the key_mismatch counters of both layers: orders whose message key is not their
 * merchant sit in a partition (and so a shard) their merchant does not hash to. */
static void mismatch_sum(void *arg, const char *layer, const char *name, int64_t value)
{
    (void)layer;
    if (!strcmp(name, "key_mismatch"))
        *(int64_t *)arg += value;
}

/* What a router learns of a shard (DESIGN.md section 7): its set, the topic's partition
 * count, its watermark and key_mismatch. */
static json_t *shard_doc(const struct call *q, const struct serve_view *v, int64_t mismatch)
{
    return json_pack("{s:s,s:o,s:o,s:o,s:I}", "partitions",
                     q->c->shard_partitions ? q->c->shard_partitions : "all", "topic_partitions",
                     v->topic_partitions > 0 ? json_integer(v->topic_partitions) : json_null(),
                     "watermark", v->has_watermark ? rfc3339(v->watermark_ms) : json_null(),
                     "watermark_ms", v->has_watermark ? json_integer(v->watermark_ms) : json_null(),
                     "key_mismatch", (json_int_t)mismatch);
}

static void handle_health(const struct call *q, struct serve_reply *out)
{
    struct serve_store *st = q->st;
    struct serve_health_facts facts;
    struct lerr e = {{0}};
    struct serve_view v;
    int64_t lag = 0, mismatch = 0;
    unsigned status;
    json_t *doc;

    if (serve_health_read(q->c->data_dir, &facts, &e) != 0) {
        db_failed(out, "health", &e);
        return;
    }
    if (serve_store_begin(st, &v, &e) != 0) {
        db_failed(out, "health", &e);
        return;
    }
    if (v.has_speed && serve_store_lag(st, lag_sum, &lag, &e) != 0) {
        serve_store_end(st);
        db_failed(out, "health", &e);
        return;
    }
    serve_store_end(st);
    if (serve_store_counters(st, mismatch_sum, &mismatch, &e) != 0) {
        db_failed(out, "health", &e);
        return;
    }
    doc = serve_health_judge(&v, &facts, lag, &q->c->health, tm_now_ms(), &status);
    json_object_set_new(doc, "shard", shard_doc(q, &v, mismatch));
    reply_json(out, status, doc);
}

/* The metrics label of route r. */
static const char *route_label(int r)
{
    return serve_api_route_name((enum serve_route)r);
}

static void handle_metrics(const struct call *q, struct serve_reply *out)
{
    struct lerr e = {{0}};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc;

    if (!f) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    serve_metrics_render(q->c->metrics, route_label, f);
    if (q->c->dim) {
        struct dim_stats ds;
        dim_source_stats(q->c->dim, &ds);
        serve_metrics_render_dimension(&ds, f);
    }
    struct serve_health_facts facts;
    rc = serve_health_read(q->c->data_dir, &facts, &e);
    if (rc == 0) {
        serve_metrics_render_health(&facts, tm_now_ms(), f);
        rc = serve_metrics_render_layers(q->st, f, &e);
    }
    fclose(f);
    if (rc != 0) {
        free(buf);
        db_failed(out, "metrics", &e);
        return;
    }
    out->status = 200;
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
    out->owned = buf;
    out->body = buf;
    out->len = len;
}

/* GET /events?once=1 (serve.c streams every other GET /events): the newest event as JSON,
 * for a client that cannot keep a stream open (the dashboard's fallback). */
static void handle_events(const struct call *q, struct serve_reply *out)
{
    char buf[LIVE_EVENT_MAX];

    if (!q->c->live) {
        serve_api_error(out, 503, "no event source");
        return;
    }
    serve_live_event(q->c->live, buf);
    if (!(out->owned = strdup(buf))) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    out->status = 200;
    out->content_type = json_ctype;
    out->body = out->owned;
    out->len = strlen(out->body);
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
    [SERVE_R_HEALTH] = {"health", "GET", "/health", handle_health},
    [SERVE_R_METRICS] = {"metrics", "GET", "/metrics", handle_metrics},
    [SERVE_R_EVENTS] = {"events", "GET", "/events", handle_events},
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
