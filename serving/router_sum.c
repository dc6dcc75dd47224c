/* router_sum.c - the exact merges of the shards' answers (DESIGN.md section 7): sums per
 * merchant, point-wise sums of series, the top n of the shards' top n lists, sums per group.
 * JSON in, JSON out, nothing asked: router_merge.c's routes ask the shards and call these. */
#include "router_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static int64_t int_of(const json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(doc, key));
}

void router_copy_key(json_t *dst, const json_t *src, const char *key)
{
    json_t *v = src ? json_object_get(src, key) : NULL;

    if (v)
        json_object_set(dst, key, v);
}

/* One merchant's answer from the shards' answers for it (docs by shard, NULL where a shard
 * was not asked): the sums, and each shard's batch and speed parts as provenance. */
json_t *router_merge_merchant(const struct router *r, const char *id, json_t *const docs[])
{
    int64_t orders = 0, revenue = 0;
    json_t *shards = json_array(), *first = NULL, *doc;

    for (int i = 0; shards && i < r->n; i++) {
        if (!docs[i])
            continue;
        orders += int_of(docs[i], "order_count");
        revenue += int_of(docs[i], "revenue_cents");
        json_array_append_new(shards, json_pack("{s:s,s:O*,s:O*}", "url", r->shards[i].url, "batch",
                                                json_object_get(docs[i], "batch"), "speed",
                                                json_object_get(docs[i], "speed")));
        if (!first)
            first = docs[i];
    }
    doc = json_pack("{s:s,s:I,s:I}", "merchant_id", id, "order_count", (json_int_t)orders,
                    "revenue_cents", (json_int_t)revenue);
    if (!doc) {
        json_decref(shards);
        return NULL;
    }
    router_copy_key(doc, first, "from");
    router_copy_key(doc, first, "to");
    router_copy_key(doc, first, "merchant");
    router_copy_key(doc, first, "dimension");
    json_object_set_new(doc, "shards", shards);
    return doc;
}

/* A strict reader of a shard's merchant answer as api_text.c writes it, for the splice: it
 * takes only what json_loadb() then json_dumps(JSON_COMPACT) would give back byte for byte. */
struct scan {
    const char *p, *end;
};

static bool scan_lit(struct scan *s, const char *text)
{
    size_t n = strlen(text);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, text, n) != 0)
        return false;
    s->p += n;
    return true;
}

/* Printable ASCII, and only the escapes jansson writes the same way back (\u and \/ it does
 * not: it decodes them). */
static bool scan_string(struct scan *s)
{
    const char *q = s->p;

    if (q == s->end || *q != '"')
        return false;
    for (q++; q < s->end; q++) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') {
            s->p = q + 1; /* only a whole string moves on: scan_scalar tries the others */
            return true;
        }
        if (c == '\\') {
            if (++q == s->end || !*q || !strchr("\"\\bfnrt", *q))
                return false;
        } else if (c < 0x20 || c > 0x7e) {
            return false;
        }
    }
    return false;
}

/* An integer as jansson writes it: no leading zero, no -0, no fraction or exponent, and at
 * most 18 digits, so never out of json_int_t's range. */
static bool scan_int(struct scan *s)
{
    const char *q = s->p, *digits;

    if (q < s->end && *q == '-')
        q++;
    for (digits = q; q < s->end && *q >= '0' && *q <= '9'; q++)
        ;
    if (q == digits || q - digits > 18 || (*digits == '0' && (q - digits > 1 || digits != s->p)))
        return false;
    if (q < s->end && (*q == '.' || *q == 'e' || *q == 'E'))
        return false;
    s->p = q;
    return true;
}

static bool scan_scalar(struct scan *s)
{
    return scan_string(s) || scan_int(s) || scan_lit(s, "null") || scan_lit(s, "true") ||
           scan_lit(s, "false");
}

/* An object of scalars with distinct keys (raw bytes compare as the strings do: each character
 * has one way to be written here), at most 16 of them. */
static bool scan_flat_object(struct scan *s)
{
    const char *key[16];
    size_t key_len[16];
    int n = 0;

    if (!scan_lit(s, "{"))
        return false;
    if (scan_lit(s, "}"))
        return true;
    do {
        const char *k = s->p;
        if (n == 16 || !scan_string(s))
            return false;
        key[n] = k;
        key_len[n] = (size_t)(s->p - k);
        for (int j = 0; j < n; j++)
            if (key_len[j] == key_len[n] && !memcmp(key[j], key[n], key_len[n]))
                return false;
        n++;
        if (!scan_lit(s, ":") || !scan_scalar(s))
            return false;
    } while (scan_lit(s, ","));
    return scan_lit(s, "}");
}

/* Where the last scan_* began: the span it read. */
struct span_text {
    const char *p;
    size_t len;
};

static bool scan_take(struct scan *s, bool (*fn)(struct scan *), struct span_text *t)
{
    const char *from = s->p;

    if (!fn(s))
        return false;
    t->p = from;
    t->len = (size_t)(s->p - from);
    return true;
}

/* One shard's answer in api_text.c's shape: its sums and the text of its two parts. */
struct merchant_text {
    int64_t orders, revenue;
    struct span_text batch, speed;
};

static bool scan_merchant(const char *body, size_t len, struct merchant_text *m)
{
    struct scan s = {body, body + len};
    struct span_text orders, revenue;

    if (!body || !scan_lit(&s, "{\"merchant_id\":") || !scan_string(&s) ||
        !scan_lit(&s, ",\"order_count\":") || !scan_take(&s, scan_int, &orders) ||
        !scan_lit(&s, ",\"revenue_cents\":") || !scan_take(&s, scan_int, &revenue) ||
        !scan_lit(&s, ",\"batch\":") || !scan_take(&s, scan_flat_object, &m->batch) ||
        !scan_lit(&s, ",\"speed\":") || !scan_take(&s, scan_flat_object, &m->speed) ||
        !scan_lit(&s, "}") || s.p != s.end)
        return false;
    m->orders = strtoll(orders.p, NULL, 10); /* at most 18 digits: in range */
    m->revenue = strtoll(revenue.p, NULL, 10);
    return true;
}

#define SPLICE_HEAD  "{\"merchant_id\":\"\",\"order_count\":,\"revenue_cents\":,\"shards\":[]}"
#define SPLICE_SHARD "{\"url\":,\"batch\":,\"speed\":},"

char *router_splice_merchant(const struct router *r, const char *id, const struct router_answer a[],
                             size_t *out_len)
{
    struct merchant_text m[ROUTER_SHARDS_MAX];
    int64_t orders = 0, revenue = 0;
    char sums[2][24];
    size_t id_len = strlen(id), n = strlen(SPLICE_HEAD) + id_len;
    bool any = false;
    char *text, *p;

    for (const unsigned char *c = (const unsigned char *)id; *c; c++) /* validated: no escapes */
        if (*c < 0x20 || *c > 0x7e || *c == '"' || *c == '\\')
            return NULL;
    for (int i = 0; i < r->n; i++) {
        if (!a[i].target)
            continue;
        if (a[i].cc != CURLE_OK || a[i].status != 200 || !r->shards[i].url_json ||
            !scan_merchant(a[i].body, a[i].len, &m[i]) ||
            __builtin_add_overflow(orders, m[i].orders, &orders) ||
            __builtin_add_overflow(revenue, m[i].revenue, &revenue))
            return NULL; /* a failure, another shape, or sums the merge would wrap */
        n += strlen(SPLICE_SHARD) + strlen(r->shards[i].url_json) + m[i].batch.len + m[i].speed.len;
        any = true;
    }
    if (!any)
        return NULL;
    n += (size_t)snprintf(sums[0], sizeof(sums[0]), "%" PRId64, orders);
    n += (size_t)snprintf(sums[1], sizeof(sums[1]), "%" PRId64, revenue);
    if (!(p = text = malloc(n + 1)))
        return NULL;
#define PUT(s, l) (memcpy(p, (s), (l)), p += (l))
#define PUTS(s)   PUT((s), strlen(s))
    PUTS("{\"merchant_id\":\"");
    PUT(id, id_len);
    PUTS("\",\"order_count\":");
    PUTS(sums[0]);
    PUTS(",\"revenue_cents\":");
    PUTS(sums[1]);
    PUTS(",\"shards\":[");
    any = false;
    for (int i = 0; i < r->n; i++) {
        if (!a[i].target)
            continue;
        if (any)
            PUTS(",");
        any = true;
        PUTS("{\"url\":");
        PUTS(r->shards[i].url_json);
        PUTS(",\"batch\":");
        PUT(m[i].batch.p, m[i].batch.len);
        PUTS(",\"speed\":");
        PUT(m[i].speed.p, m[i].speed.len);
        PUTS("}");
    }
    PUTS("]}");
#undef PUTS
#undef PUT
    *p = '\0';
    *out_len = (size_t)(p - text);
    return text;
}

/* Point-wise sums of the shards' series; a point is final only when every shard says so, and
 * the watermark is the lowest. NULL when their points do not line up. */
json_t *router_merge_series(const struct router *r, const struct router_fan *f)
{
    json_t *first = NULL, *pts = NULL, *shards = json_array(), *wm = NULL, *doc;
    bool wm_null = false;

    for (int i = 0; i < r->n; i++) {
        json_t *d = f->a[i].doc, *p, *w;
        if (!f->a[i].target)
            continue;
        p = json_object_get(d, "points");
        w = json_object_get(d, "watermark");
        json_array_append_new(shards, json_pack("{s:s}", "url", r->shards[i].url));
        if (!json_is_string(w))
            wm_null = true;
        else if (!wm || strcmp(json_string_value(w), json_string_value(wm)) < 0)
            wm = w; /* RFC 3339 in one format: the text orders as the time does */
        if (!first) {
            first = d;
            pts = json_deep_copy(p);
            continue;
        }
        if (!json_is_array(p) || !pts || json_array_size(p) != json_array_size(pts))
            goto fail;
        for (size_t j = 0; j < json_array_size(p); j++) {
            json_t *a = json_array_get(pts, j), *b = json_array_get(p, j);
            if (!json_equal(json_object_get(a, "t"), json_object_get(b, "t")))
                goto fail;
            json_object_set_new(a, "order_count",
                                json_integer(int_of(a, "order_count") + int_of(b, "order_count")));
            json_object_set_new(
                a, "revenue_cents",
                json_integer(int_of(a, "revenue_cents") + int_of(b, "revenue_cents")));
            json_object_set_new(a, "final",
                                json_boolean(json_is_true(json_object_get(a, "final")) &&
                                             json_is_true(json_object_get(b, "final"))));
        }
    }
    if (!first || !pts)
        goto fail;
    doc =
        json_pack("{s:O,s:O,s:O,s:O,s:O,s:o,s:o}", "merchant_id",
                  json_object_get(first, "merchant_id"), "step", json_object_get(first, "step"),
                  "from", json_object_get(first, "from"), "to", json_object_get(first, "to"),
                  "watermark", wm && !wm_null ? wm : json_null(), "points", pts, "shards", shards);
    return doc;
fail:
    json_decref(pts);
    json_decref(shards);
    return NULL;
}

struct top_row {
    json_t *entry; /* the first shard's object for the merchant, counts summed into it */
    int64_t order_count, revenue_cents;
};

static int by_orders(const void *a, const void *b)
{
    const struct top_row *x = a, *y = b;

    if (x->order_count != y->order_count)
        return x->order_count > y->order_count ? -1 : 1;
    return strcmp(json_string_value(json_object_get(x->entry, "merchant_id")),
                  json_string_value(json_object_get(y->entry, "merchant_id")));
}

static int by_revenue(const void *a, const void *b)
{
    const struct top_row *x = a, *y = b;

    /* Ties by merchant id, as each shard's rank.c breaks them: the top n of the shards' top n
     * is exact only when both sides order equal sums the same way. */
    if (x->revenue_cents != y->revenue_cents)
        return x->revenue_cents > y->revenue_cents ? -1 : 1;
    return strcmp(json_string_value(json_object_get(x->entry, "merchant_id")),
                  json_string_value(json_object_get(y->entry, "merchant_id")));
}

/* The n best of the shards' top n lists. Each merchant lives in one shard, so its sums there
 * are whole and the best n overall are among the shards' best n; a merchant in two shards
 * (key_mismatch) is summed. */
json_t *router_merge_top(const struct router *r, const struct router_fan *f, bool is_revenue,
                         long n)
{
    json_t *seen = json_object(), *arr = json_array(), *shards = json_array();
    struct top_row *rows = NULL;
    size_t nrows = 0, cap = 0;
    bool is_oom = false;

    for (int i = 0; i < r->n; i++) {
        json_t *list = json_object_get(f->a[i].doc, "merchants"), *en;
        size_t j;
        if (!f->a[i].target)
            continue;
        json_array_append_new(shards, json_pack("{s:s}", "url", r->shards[i].url));
        json_array_foreach(list, j, en)
        {
            const char *id = json_string_value(json_object_get(en, "merchant_id"));
            json_t *at;
            if (!id)
                continue;
            if ((at = json_object_get(seen, id))) {
                struct top_row *row = &rows[json_integer_value(at)];
                row->order_count += int_of(en, "order_count");
                row->revenue_cents += int_of(en, "revenue_cents");
                continue;
            }
            if (nrows == cap) {
                struct top_row *nr = realloc(rows, (cap = cap ? cap * 2 : 64) * sizeof(*nr));
                if (!nr) {
                    is_oom = true;
                    goto out;
                }
                rows = nr;
            }
            rows[nrows] =
                (struct top_row){en, int_of(en, "order_count"), int_of(en, "revenue_cents")};
            json_object_set_new(seen, id, json_integer((json_int_t)nrows++));
        }
    }
    if (nrows)
        qsort(rows, nrows, sizeof(*rows), is_revenue ? by_revenue : by_orders);
    for (size_t k = 0; k < nrows && k < (size_t)n; k++) {
        json_t *e = json_copy(rows[k].entry);
        json_object_set_new(e, "order_count", json_integer(rows[k].order_count));
        json_object_set_new(e, "revenue_cents", json_integer(rows[k].revenue_cents));
        json_array_append_new(arr, e);
    }
out:
    free(rows);
    json_decref(seen);
    if (is_oom) { /* never a part of the list as the answer */
        json_decref(arr);
        json_decref(shards);
        return NULL;
    }
    return json_pack("{s:o,s:o}", "merchants", arr, "shards", shards);
}

struct group_row {
    json_t *value; /* borrowed from a shard's answer; JSON null: the merchants without it */
    char *text;    /* what orders it among equal sums; NULL for the null group */
    int64_t order_count, revenue_cents, merchants;
};

static int group_cmp(const struct group_row *x, const struct group_row *y, bool by_revenue)
{
    int64_t a = by_revenue ? x->revenue_cents : x->order_count;
    int64_t b = by_revenue ? y->revenue_cents : y->order_count;

    if (a != b)
        return a > b ? -1 : 1;
    if (!x->text || !y->text)
        return !x->text - !y->text; /* the null group after every value, as rank.c orders */
    return strcmp(x->text, y->text);
}

static int group_by_orders(const void *a, const void *b)
{
    return group_cmp(a, b, false);
}

static int group_by_revenue(const void *a, const void *b)
{
    return group_cmp(a, b, true);
}

/* Sums per attribute value over the shards: a merchant lives in one shard, so its group's
 * merchant counts add up too. */
json_t *router_merge_groups(const struct router *r, const struct router_fan *f, bool is_revenue)
{
    json_t *seen = json_object(), *arr = json_array(), *shards = json_array();
    struct group_row *rows = NULL;
    size_t nrows = 0, cap = 0;
    int64_t null_at = -1; /* the row of the merchants without the attribute */
    bool is_oom = false;

    for (int i = 0; i < r->n; i++) {
        json_t *list = json_object_get(f->a[i].doc, "groups"), *g;
        size_t j;
        if (!f->a[i].target)
            continue;
        json_array_append_new(shards, json_pack("{s:s}", "url", r->shards[i].url));
        json_array_foreach(list, j, g)
        {
            /* Grouped by text, as rank.c groups: a string as it is, anything else as JSON
             * writes it, so 10 and "10" are one group behind the router as on a shard. */
            json_t *v = json_object_get(g, "value"), *at = NULL;
            bool is_null = !v || json_is_null(v);
            char *text = is_null             ? NULL
                         : json_is_string(v) ? strdup(json_string_value(v))
                                             : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            if (!is_null && !text) {
                is_oom = true;
                goto out;
            }
            if (is_null ? null_at >= 0 : (at = json_object_get(seen, text)) != NULL) {
                struct group_row *row = &rows[is_null ? null_at : json_integer_value(at)];
                row->order_count += int_of(g, "order_count");
                row->revenue_cents += int_of(g, "revenue_cents");
                row->merchants += int_of(g, "merchants");
                free(text);
                continue;
            }
            if (nrows == cap) {
                struct group_row *nr = realloc(rows, (cap = cap ? cap * 2 : 32) * sizeof(*nr));
                if (!nr) {
                    free(text);
                    is_oom = true;
                    goto out;
                }
                rows = nr;
            }
            rows[nrows] = (struct group_row){v, text, int_of(g, "order_count"),
                                             int_of(g, "revenue_cents"), int_of(g, "merchants")};
            if (is_null)
                null_at = (int64_t)nrows;
            else
                json_object_set_new(seen, text, json_integer((json_int_t)nrows));
            nrows++;
        }
    }
    if (nrows)
        qsort(rows, nrows, sizeof(*rows), is_revenue ? group_by_revenue : group_by_orders);
    for (size_t k = 0; k < nrows; k++)
        json_array_append_new(arr, json_pack("{s:O,s:I,s:I,s:I}", "value",
                                             rows[k].value ? rows[k].value : json_null(),
                                             "order_count", (json_int_t)rows[k].order_count,
                                             "revenue_cents", (json_int_t)rows[k].revenue_cents,
                                             "merchants", (json_int_t)rows[k].merchants));
out:
    for (size_t k = 0; k < nrows; k++)
        free(rows[k].text);
    free(rows);
    json_decref(seen);
    if (is_oom) {
        json_decref(arr);
        json_decref(shards);
        return NULL;
    }
    return json_pack("{s:o,s:o}", "groups", arr, "shards", shards);
}
