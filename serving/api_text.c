/* api_text.c - a merchant answer's JSON text, written by hand (see below), alone or in a list. */
#include "api_int.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ev.h"
#include "tm.h"

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

json_t *api_merchant_doc(const char *id, const struct serve_view *v, const struct serve_sums *b,
                         const struct serve_sums *s, int64_t now_ms)
{
    char buf[MERCHANT_TEXT_MAX];

    merchant_text(buf, id, v, b, s, now_ms);
    return json_loads(buf, 0, NULL);
}

/* Appends one merchant's answer to f: the text, and its dimension attributes when there is a
 * dimension (api_add_merchant's, through jansson). */
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
    api_add_merchant(doc, d, id);
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (text)
        fputs(text, f);
    free(text);
    json_decref(doc);
}

/* The answer of one merchant (n == 1) or {"merchants":[...]} of several, as text. */
void api_reply_text(struct serve_reply *out, const struct dim *d, const char *const *ids, size_t n,
                    const struct serve_view *v, const struct serve_sums *b,
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
    out->content_type = api_json_ctype;
    out->owned = buf;
    out->body = buf;
    out->len = len;
}
