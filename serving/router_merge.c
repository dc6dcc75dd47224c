/* router_merge.c - the router's routes: what each asks which shard (DESIGN.md section 7),
 * through one fan-out (route_fan); router_sum.c merges the answers into one exact answer. No
 * HTTP server here; router.c asks. */
#include "router_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ev.h"
#include "log.h"
#include "span.h"
#include "tm.h"

/* One routed request, as router_handle() was given it. */
struct rcall {
    struct router_client *c;
    struct router *r;
    const struct serve_ctx *ctx;
    const char *path;
    serve_arg_fn arg;
    void *req;
};

/* The span a request asks for, and what the router resolved it to. */
struct rspan {
    const char *window; /* as given, for the answer's "window" */
    int64_t window_ms;
    bool has_from;
    bool is_resolved; /* from_ms/to_ms go to the shards; else no span at all */
    int64_t from_ms, to_ms;
    bool is_passed;        /* one shard is asked: window, from and to go to it as given */
    const char *from, *to; /* then: the parameters' text, or NULL */
};

static const char *param(const struct rcall *q, const char *name)
{
    return q->arg(q->req, name);
}

/* A 200 whose body is text the reply now owns. */
static void reply_owned(struct serve_reply *out, const char *content_type, char *text, size_t len)
{
    memset(out, 0, sizeof(*out));
    out->status = 200;
    out->content_type = content_type;
    out->owned = text;
    out->body = text;
    out->len = len;
}

static void reply_json(struct serve_reply *out, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    if (!text) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    reply_owned(out, "application/json", text, strlen(text));
}

/* A request target being built: path, then ?name=value&... percent-encoded. */
struct target {
    FILE *f;
    char *buf;
    size_t len;
    bool has_query;
};

static bool target_open(struct target *t, const char *path)
{
    memset(t, 0, sizeof(*t));
    if (!(t->f = open_memstream(&t->buf, &t->len)))
        return false;
    fputs(path, t->f);
    return true;
}

static void target_put(struct target *t, const char *name, const char *value)
{
    if (!value)
        return;
    fprintf(t->f, "%c%s=", t->has_query ? '&' : '?', name);
    t->has_query = true;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~')
            fputc(*p, t->f);
        else
            fprintf(t->f, "%%%02X", *p);
    }
}

static void target_put_ms(struct target *t, const char *name, int64_t v)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%" PRId64, v);
    target_put(t, name, buf);
}

static void target_put_span(struct target *t, const struct rspan *sp)
{
    if (sp->is_passed) {
        target_put(t, "window", sp->window);
        target_put(t, "from", sp->from);
        target_put(t, "to", sp->to);
        return;
    }
    if (!sp->is_resolved)
        return;
    target_put_ms(t, "from", sp->from_ms);
    target_put_ms(t, "to", sp->to_ms);
}

/* The target, owned by the caller; NULL when out of memory. */
static char *target_close(struct target *t)
{
    if (fclose(t->f) != 0) {
        free(t->buf);
        return NULL;
    }
    return t->buf;
}

/* Asks every shard's /health and learns what each tells (router_learn). false after a 503
 * naming the first shard that did not answer JSON; a 503 with JSON is a shard with nothing
 * to serve, not a failure. */
static bool fan_health(const struct rcall *q, struct router_fan *f, struct serve_reply *out)
{
    char why[256];

    for (int i = 0; i < q->r->n; i++)
        f->a[i].target = strdup("/health");
    if (!router_fan_out(q->c, f))
        return false; /* asked: this request is handled again once they answered */
    for (int i = 0; i < q->r->n; i++) {
        const struct router_answer *a = &f->a[i];
        if (a->cc != CURLE_OK || !a->doc || (a->status != 200 && a->status != 503)) {
            router_answer_why(a, why, sizeof(why));
            serve_api_error(out, 503, "shard %s did not answer: %s", q->r->shards[i].url, why);
            return false;
        }
        router_learn(q->r, i, a->doc);
    }
    return true;
}

/* Where a span asked of every shard ends (router_min_watermark). -1 after a 503 answer when
 * a shard does not answer or one that serves has no watermark. */
static int min_watermark(const struct rcall *q, bool *found, int64_t *wm_ms,
                         struct serve_reply *out)
{
    struct router_fan f = {0};
    json_t *docs[ROUTER_SHARDS_MAX] = {0};
    long status[ROUTER_SHARDS_MAX] = {0};
    char why[300];
    int rc = -1;

    if (fan_health(q, &f, out)) {
        for (int i = 0; i < q->r->n; i++) {
            docs[i] = f.a[i].doc;
            status[i] = f.a[i].status;
        }
        if ((rc = router_min_watermark(q->r, docs, status, found, wm_ms, why, sizeof(why))) != 0)
            serve_api_error(out, 503, "%s", why);
    }
    router_fan_release(&f);
    return rc;
}

/* Reads window/from/to as a single lambda-serve does (serving/span.c; a bad one is a 400).
 * Asked of one shard only (only >= 0), the span goes to it as given: it ends a window as a
 * single lambda-serve does, at its watermark, else its newest data, else now. Asked of every
 * shard, a window, a from without to, or (def_ms > 0) nothing at all is resolved here to
 * absolute from/to in step_ms buckets, ending at the bucket of the minimum watermark, so
 * every shard sums the same buckets. -1 after an answer. */
static int span_resolve(const struct rcall *q, int only, int64_t step_ms, int64_t def_ms,
                        struct rspan *sp, struct serve_reply *out)
{
    struct serve_span in;
    struct lerr e = {{0}};
    int64_t end_ms, wm_ms = 0;
    bool found;

    memset(sp, 0, sizeof(*sp));
    if (serve_span_parse(q->arg, q->req, &in, &e) != 0) {
        serve_api_error(out, 400, "%s", e.msg);
        return -1;
    }
    sp->window = in.window;
    sp->window_ms = in.window_ms;
    sp->has_from = in.has_from;
    if (only >= 0) {
        sp->is_passed = true;
        sp->from = param(q, "from");
        sp->to = param(q, "to");
        return 0;
    }
    if (in.has_from && in.has_to) { /* absolute already: every shard floors and ceils alike */
        sp->is_resolved = true;
        sp->from_ms = in.from_ms;
        sp->to_ms = in.to_ms;
        return 0;
    }
    if (!serve_span_given(&in) && def_ms <= 0)
        return 0;
    if (min_watermark(q, &found, &wm_ms, out) != 0)
        return -1;
    /* No shard serves: nothing to sum anywhere, the current minute as a single one ends it. */
    end_ms = tm_floor(found ? wm_ms : tm_now_ms(), step_ms) + step_ms;
    sp->is_resolved = true;
    sp->to_ms = end_ms;
    if (in.window)
        sp->from_ms = end_ms - serve_span_ceil(in.window_ms, step_ms);
    else if (in.has_from)
        sp->from_ms = tm_floor(in.from_ms, step_ms);
    else
        sp->from_ms = end_ms - def_ms;
    if (sp->to_ms <= sp->from_ms) /* from after the end of the data: an empty span */
        sp->to_ms = sp->from_ms;
    return 0;
}

/* The merchant id of /query/{id}...: false after a 400, as api.c answers it. */
static bool take_id(const char *segment, char id[EV_ID_MAX + 1], struct serve_reply *out)
{
    size_t len = strcspn(segment, "/");

    if (len > EV_ID_MAX) {
        serve_api_error(out, 400, "bad merchant_id '%.80s...': longer than %d bytes", segment,
                        EV_ID_MAX);
        return false;
    }
    memcpy(id, segment, len);
    id[len] = '\0';
    if (!ev_merchant_id_valid(id, len)) {
        serve_api_error(out, 400, "bad merchant_id '%.80s': want 1..64 of [A-Za-z0-9_.:-]", id);
        return false;
    }
    return true;
}

/* Gives target to shard `only`, or to every shard when only < 0. */
static bool ask(const struct rcall *q, struct router_fan *f, char *target, int only)
{
    if (!target)
        return false;
    for (int i = 0; i < q->r->n; i++)
        if (only < 0 || only == i)
            f->a[i].target = strdup(target);
    free(target);
    for (int i = 0; i < q->r->n; i++)
        if ((only < 0 || only == i) && !f->a[i].target)
            return false;
    return true;
}

/* One route's fan-out: path with the request's parameters named in names (NULL-ended, as
 * given) and the span, asked of shard `only` or of every shard (only < 0). true once every
 * asked shard answered (or did not, in time); false after a 500 out of memory, or, out
 * untouched, while the fan-out runs (router_fan_out). The caller releases f either way. */
static bool route_ask(const struct rcall *q, const char *path, const char *const names[],
                      const struct rspan *sp, int only, struct router_fan *f,
                      struct serve_reply *out)
{
    struct target t;

    if (!target_open(&t, path)) {
        serve_api_error(out, 500, "out of memory");
        return false;
    }
    for (int k = 0; names && names[k]; k++)
        target_put(&t, names[k], param(q, names[k]));
    target_put_span(&t, sp);
    if (!ask(q, f, target_close(&t), only)) {
        serve_api_error(out, 500, "out of memory");
        return false;
    }
    return router_fan_out(q->c, f);
}

/* route_ask(), then true once every asked shard answered JSON 200; false also after filling
 * out with a shard's 4xx as it came or a 503 naming the first shard that failed. */
static bool route_fan(const struct rcall *q, const char *path, const char *const names[],
                      const struct rspan *sp, int only, struct router_fan *f,
                      struct serve_reply *out)
{
    return route_ask(q, path, names, sp, only, f, out) && !router_fan_failed(q->r, f, out);
}

/* The first asked shard's answer: what the merged answer copies its echoes from. */
static const json_t *first_doc(const struct router *r, const struct router_fan *f)
{
    for (int i = 0; i < r->n; i++)
        if (f->a[i].doc)
            return f->a[i].doc;
    return NULL;
}

/* Copies each key of the NULL-ended list from src in that order; "window" is the window as
 * asked (a route's default "5m" when nothing was, null for from/to), as a shard writes it. */
static void copy_keys(json_t *dst, const json_t *src, const struct rspan *sp, ...)
{
    va_list ap;
    const char *key;

    va_start(ap, sp);
    while ((key = va_arg(ap, const char *)))
        if (!strcmp(key, "window"))
            json_object_set_new(dst, "window",
                                sp->window ? json_string(sp->window)
                                           : (sp->has_from ? json_null() : json_string("5m")));
        else
            router_copy_key(dst, src, key);
    va_end(ap);
}

/* The asked shards' JSON 200 answers spliced into the routed one as text
 * (router_splice_merchant): false when one is not, or not in the one shape, and out is
 * untouched. */
static bool reply_spliced(const struct rcall *q, const char *id, const struct router_fan *f,
                          struct serve_reply *out)
{
    size_t len;
    char *text = router_splice_merchant(q->r, id, f->a, &len);

    if (!text)
        return false;
    reply_owned(out, "application/json", text, len);
    return true;
}

static void handle_query(const struct rcall *q, const char *segment, struct serve_reply *out)
{
    char id[EV_ID_MAX + 1], path[EV_ID_MAX + 16];
    struct router_fan f = {.is_lazy = true}; /* parsed only when not spliced */
    json_t *docs[ROUTER_SHARDS_MAX] = {0};
    struct rspan sp;
    int owner;

    if (!take_id(segment, id, out))
        return;
    owner = router_owner(q->r, id);
    if (span_resolve(q, owner, TM_MINUTE_MS, 0, &sp, out) != 0)
        return;
    snprintf(path, sizeof(path), "/query/%s", id);
    if (route_ask(q, path, NULL, &sp, owner, &f, out) && !reply_spliced(q, id, &f, out) &&
        !router_fan_failed(q->r, &f, out)) {
        for (int i = 0; i < q->r->n; i++)
            docs[i] = f.a[i].doc;
        reply_json(out, router_merge_merchant(q->r, id, docs));
    }
    router_fan_release(&f);
}

/* The ids of ?ids=, checked as api.c checks them: pointers into buf; -1 after a 400. */
static int split_ids(char *buf, const char **list, struct serve_reply *out)
{
    int n = 0;

    for (char *p = buf, *comma;; p = comma + 1) {
        comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!ev_merchant_id_valid(p, strlen(p))) {
            serve_api_error(out, 400,
                            "bad ids: merchant_id '%.80s' is not 1..64 of [A-Za-z0-9_.:-]", p);
            return -1;
        }
        if (n == SERVE_IDS_MAX) {
            int total = n + 1;
            while (comma && (comma = strchr(comma + 1, ',')))
                total++;
            serve_api_error(out, 400, "too many ids: %d, at most %d", total, SERVE_IDS_MAX);
            return -1;
        }
        list[n++] = p;
        if (!comma)
            return n;
    }
}

/* Which shard answers which id: owner[k] for id k, or every shard (-1 everywhere) as soon as
 * one id's shard cannot be told. */
static void owners_of(const struct rcall *q, const char **list, int n, int *owner)
{
    for (int k = 0; k < n; k++)
        if ((owner[k] = router_owner(q->r, list[k])) < 0) {
            for (int j = 0; j < n; j++)
                owner[j] = -1;
            return;
        }
}

/* The ?ids= target of shard i: the ids it answers, in the order asked. NULL: none. */
static char *ids_target(const char **list, const int *owner, int n, int i, const struct rspan *sp)
{
    struct target t;
    FILE *ids;
    char *buf = NULL, *res;
    size_t len = 0;
    bool any = false;

    if (!(ids = open_memstream(&buf, &len)))
        return NULL;
    for (int k = 0; k < n; k++)
        if (owner[k] < 0 || owner[k] == i) {
            fprintf(ids, "%s%s", any ? "," : "", list[k]);
            any = true;
        }
    fclose(ids);
    if (!any || !buf || !target_open(&t, "/query")) {
        free(buf);
        return NULL;
    }
    target_put(&t, "ids", buf);
    target_put_span(&t, sp);
    free(buf);
    res = target_close(&t);
    return res;
}

/* Shard i's answers, by the index of the id asked. false when it is not a list of as many as
 * it was asked for. */
static bool ids_take(const struct router_answer *a, const int *owner, int n, int i, json_t **by_id)
{
    json_t *arr = json_object_get(a->doc, "merchants");
    size_t j = 0;

    for (int k = 0; k < n; k++) {
        if (owner[k] >= 0 && owner[k] != i)
            continue;
        if (!json_is_array(arr) || j >= json_array_size(arr))
            return false;
        by_id[k] = json_array_get(arr, j++);
    }
    return json_is_array(arr) && j == json_array_size(arr);
}

static void handle_ids(const struct rcall *q, struct serve_reply *out)
{
    const char *ids = param(q, "ids"), **list = NULL;
    json_t **by = NULL, *arr = NULL;
    int *owner = NULL, n;
    struct router_fan f = {0};
    struct rspan sp;
    char *buf = NULL;

    if (!ids) {
        serve_api_error(out, 400, "bad ids: missing (GET /query?ids=a,b,c)");
        return;
    }
    if (!(buf = strdup(ids)) || !(list = calloc(SERVE_IDS_MAX, sizeof(*list))) ||
        !(owner = calloc(SERVE_IDS_MAX, sizeof(*owner)))) {
        serve_api_error(out, 500, "out of memory");
        goto out;
    }
    if ((n = split_ids(buf, list, out)) < 0)
        goto out;
    owners_of(q, list, n, owner);
    /* one shard owning every id: its watermark alone; else every shard's */
    int only = owner[0];
    for (int k = 1; k < n; k++)
        if (owner[k] != only)
            only = -1;
    if (span_resolve(q, only, TM_MINUTE_MS, 0, &sp, out) != 0)
        goto out;
    for (int i = 0; i < q->r->n; i++)
        f.a[i].target = ids_target(list, owner, n, i, &sp);
    if (!router_fan_out(q->c, &f) || router_fan_failed(q->r, &f, out))
        goto out;
    /* by[k * nshards + i]: shard i's answer for id k */
    if (!(by = calloc((size_t)n * (size_t)q->r->n, sizeof(*by))) || !(arr = json_array())) {
        serve_api_error(out, 500, "out of memory");
        goto out;
    }
    for (int i = 0; i < q->r->n; i++) {
        json_t **col = calloc((size_t)n, sizeof(*col));
        if (f.a[i].target && (!col || !ids_take(&f.a[i], owner, n, i, col))) {
            free(col);
            serve_api_error(out, 503,
                            "shard %s did not answer: its list holds another number of merchants "
                            "than it was asked for",
                            q->r->shards[i].url);
            goto out;
        }
        for (int k = 0; col && k < n; k++)
            by[(size_t)k * (size_t)q->r->n + (size_t)i] = col[k];
        free(col);
    }
    for (int k = 0; k < n; k++)
        json_array_append_new(
            arr, router_merge_merchant(q->r, list[k], &by[(size_t)k * (size_t)q->r->n]));
    reply_json(out, json_pack("{s:o}", "merchants", arr));
    arr = NULL;
out:
    json_decref(arr);
    router_fan_release(&f);
    free(by);
    free(owner);
    free(list);
    free(buf);
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

static void handle_series(const struct rcall *q, const char *segment, struct serve_reply *out)
{
    static const char *const names[] = {"step", NULL};
    const char *step = param(q, "step");
    char id[EV_ID_MAX + 1], path[EV_ID_MAX + 24];
    struct router_fan f = {0};
    struct rspan sp = {0};
    int64_t step_ms = TM_MINUTE_MS;
    int owner;
    json_t *doc;

    if (!take_id(segment, id, out))
        return;
    if (step && step_parse(step, &step_ms) != 0) {
        serve_api_error(out, 400, "bad step '%.40s': want 1m, 1h or 1d", step);
        return;
    }
    owner = router_owner(q->r, id);
    if (span_resolve(q, owner, step_ms, 60 * step_ms, &sp, out) != 0)
        return;
    if (sp.is_resolved && sp.window &&
        serve_span_ceil(sp.window_ms, step_ms) / step_ms > SERVE_POINTS_MAX) {
        serve_api_error(out, 400, "bad window '%s': more than %d points of %s", sp.window,
                        SERVE_POINTS_MAX, step ? step : "1m");
        return;
    }
    if (sp.is_resolved && (sp.to_ms - sp.from_ms) / step_ms > SERVE_POINTS_MAX)
        sp.from_ms = sp.to_ms - SERVE_POINTS_MAX * step_ms; /* from given, to open: the newest */
    snprintf(path, sizeof(path), "/query/%s/series", id);
    if (route_fan(q, path, names, &sp, owner, &f, out)) {
        if ((doc = router_merge_series(q->r, &f)))
            reply_json(out, doc);
        else
            serve_api_error(out, 503, "shards answered series whose points do not line up");
    }
    router_fan_release(&f);
}

/* The top n of the shards' top n and /groups' merchant counts are exact only while each
 * merchant's orders sit in one shard. Asked after the shards answered (key_mismatch only
 * grows, and a checkpoint commits it with the orders it counts), so an answer that holds such
 * an order is never let through: false after a 503 naming the shard that has some. */
static bool keys_whole(const struct rcall *q, const char *what, struct serve_reply *out)
{
    struct router_fan f = {0};
    bool is_whole = fan_health(q, &f, out);

    for (int i = 0; i < q->r->n && is_whole; i++) {
        json_t *km = json_object_get(json_object_get(f.a[i].doc, "shard"), "key_mismatch");
        if (json_integer_value(km) > 0) {
            is_whole = false;
            serve_api_error(out, 503,
                            "shard %s reports key_mismatch=%" PRId64
                            ": orders whose key is not their merchant sit in a shard their "
                            "merchant does not hash to, so %s cannot be exact behind the router",
                            q->r->shards[i].url, (int64_t)json_integer_value(km), what);
        }
    }
    router_fan_release(&f);
    return is_whole;
}

static void handle_top(const struct rcall *q, struct serve_reply *out)
{
    static const char *const names[] = {"n", "by", "filter", NULL};
    const char *by = param(q, "by"), *ntext = param(q, "n");
    struct router_fan f = {0};
    struct rspan sp;
    long n = 10;
    json_t *merged;
    char *end;

    if (ntext) {
        errno = 0;
        n = strtol(ntext, &end, 10);
        if (errno || end == ntext || *end || n < 1 || n > SERVE_TOP_MAX) {
            serve_api_error(out, 400, "bad n '%.40s': want an integer 1..%d", ntext, SERVE_TOP_MAX);
            return;
        }
    }
    if (span_resolve(q, -1, TM_MINUTE_MS, 5 * TM_MINUTE_MS, &sp, out) != 0)
        return;
    if (route_fan(q, "/top", names, &sp, -1, &f, out) &&
        keys_whole(q, "the top n of the shards' top n", out)) {
        if ((merged = router_merge_top(q->r, &f, by && !strcmp(by, "revenue"), n))) {
            copy_keys(merged, first_doc(q->r, &f), &sp, "window", "by", "from", "to", "filter",
                      "dimension", NULL);
            reply_json(out, merged);
        } else {
            serve_api_error(out, 500, "out of memory");
        }
    }
    router_fan_release(&f);
}

static void handle_groups(const struct rcall *q, struct serve_reply *out)
{
    static const char *const names[] = {"group", "by", "filter", NULL};
    const char *by = param(q, "by");
    struct router_fan f = {0};
    struct rspan sp;
    json_t *merged;

    if (span_resolve(q, -1, TM_MINUTE_MS, 5 * TM_MINUTE_MS, &sp, out) != 0)
        return;
    if (route_fan(q, "/groups", names, &sp, -1, &f, out) &&
        keys_whole(q, "a group's merchant count", out)) {
        if ((merged = router_merge_groups(q->r, &f, by && !strcmp(by, "revenue")))) {
            copy_keys(merged, first_doc(q->r, &f), &sp, "group", "window", "by", "from", "to",
                      "dimension", NULL);
            reply_json(out, merged);
        } else {
            serve_api_error(out, 500, "out of memory");
        }
    }
    router_fan_release(&f);
}

/* Every shard's /health: ok when all are, degraded (200) naming the ones that are not,
 * unavailable (503) when none serves or their sets do not fit. */
static void handle_health(const struct rcall *q, struct serve_reply *out)
{
    struct router_fan f = {0};
    json_t *shards = json_array(), *reasons = json_array(), *doc;
    int n_ok = 0, n_serving = 0;
    char conflict[256] = "", why[300];
    const char *status;

    for (int i = 0; i < q->r->n; i++)
        f.a[i].target = strdup("/health");
    if (!router_fan_out(q->c, &f)) { /* asked: handled again once they answered */
        router_fan_release(&f);
        json_decref(shards);
        json_decref(reasons);
        return;
    }
    for (int i = 0; i < q->r->n; i++) {
        const struct router_answer *a = &f.a[i];
        const char *url = q->r->shards[i].url, *st;
        if (a->cc != CURLE_OK || !a->doc) {
            snprintf(why, sizeof(why), "shard %s did not answer: %s", url,
                     a->cc != CURLE_OK ? (a->err ? a->err : curl_easy_strerror(a->cc))
                                       : "not JSON");
            json_array_append_new(reasons, json_string(why));
            json_array_append_new(shards, json_pack("{s:s,s:s,s:s}", "url", url, "status",
                                                    "unavailable", "error", why));
            continue;
        }
        router_learn(q->r, i, a->doc);
        st = json_string_value(json_object_get(a->doc, "status"));
        if (!st)
            st = "unknown";
        n_serving += a->status == 200;
        n_ok += a->status == 200 && !strcmp(st, "ok");
        if (a->status != 200 || strcmp(st, "ok") != 0) {
            snprintf(why, sizeof(why), "shard %s is %s (HTTP %ld)", url, st, a->status);
            json_array_append_new(reasons, json_string(why));
        }
        json_array_append_new(shards,
                              json_pack("{s:s,s:s,s:O}", "url", url, "status",
                                        a->status == 200 ? st : "unavailable", "health", a->doc));
    }
    for (int i = 0; i < q->r->n; i++) {
        char down[200];
        if (!router_events_down(q->r, i, down, sizeof(down)))
            continue;
        snprintf(why, sizeof(why), "shard %s: %s", q->r->shards[i].url, down);
        json_array_append_new(reasons, json_string(why));
        json_object_set_new(json_array_get(shards, (size_t)i), "events", json_string(down));
    }
    router_fan_release(&f);
    if (router_conflict(q->r, conflict, sizeof(conflict)))
        json_array_append_new(reasons, json_string(conflict));
    status = n_ok == q->r->n && json_array_size(reasons) == 0 ? "ok"
             : n_serving == 0 || conflict[0]                  ? "unavailable"
                                                              : "degraded";
    /* Whether a merchant's routes ask only its shard now: any id tells, since every set, the
     * partition count and a zero key_mismatch are what it takes. */
    doc = json_pack("{s:s,s:s,s:o,s:o}", "status", status, "routing",
                    router_owner(q->r, "m") >= 0 ? "by_key" : "every_shard", "reasons", reasons,
                    "shards", shards);
    reply_json(out, doc);
    if (out->status == 200 && !strcmp(status, "unavailable"))
        out->status = 503;
}

static const char *route_label(int r)
{
    return serve_api_route_name((enum serve_route)r);
}

static void handle_metrics(const struct rcall *q, struct serve_reply *out)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (!f) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    serve_metrics_render(q->ctx->metrics, route_label, f);
    router_render_metrics(q->r, f);
    fclose(f);
    reply_owned(out, "text/plain; version=0.0.4; charset=utf-8", buf, len);
}

/* The newest event, as JSON, for a page that cannot stream. */
static void handle_events_once(const struct rcall *q, struct serve_reply *out)
{
    char buf[LIVE_EVENT_MAX];

    if (!router_events_newest(q->r, buf, sizeof(buf))) {
        serve_api_error(out, 503, "no event source");
        return;
    }
    reply_json(out, json_loads(buf, 0, NULL));
}

void router_handle(struct router_client *c, const struct serve_ctx *ctx, enum serve_route r,
                   const char *path, serve_arg_fn arg, void *req, struct serve_reply *out)
{
    struct rcall q = {.c = c, .r = c->r, .ctx = ctx, .path = path, .arg = arg, .req = req};
    char conflict[256];

    memset(out, 0, sizeof(*out));
    conflict[0] = '\0';
    if (r != SERVE_R_HEALTH && r != SERVE_R_METRICS && r != SERVE_R_DASHBOARD &&
        router_conflict(c->r, conflict, sizeof(conflict))) {
        serve_api_error(out, 503, "%s", conflict);
        return;
    }
    switch (r) {
    case SERVE_R_QUERY:
        handle_query(&q, path + strlen("/query/"), out);
        break;
    case SERVE_R_QUERY_IDS:
        handle_ids(&q, out);
        break;
    case SERVE_R_SERIES:
        handle_series(&q, path + strlen("/query/"), out);
        break;
    case SERVE_R_TOP:
        handle_top(&q, out);
        break;
    case SERVE_R_GROUPS:
        handle_groups(&q, out);
        break;
    case SERVE_R_HEALTH:
        handle_health(&q, out);
        break;
    case SERVE_R_METRICS:
        handle_metrics(&q, out);
        break;
    case SERVE_R_EVENTS: /* ?once=1; serve.c streams the rest */
        handle_events_once(&q, out);
        break;
    default: /* the dashboard, and what has no route */
        serve_api_handle(ctx, NULL, r, path, arg, req, out);
        break;
    }
}
