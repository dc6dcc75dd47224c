/* rank.c - merchants of a window ranked, filtered and grouped (see rank.h). */
#include "rank.h"

#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "ev.h"

struct rank_entry {
    char merchant_id[EV_ID_MAX + 1];
    struct serve_sums s;
    UT_hash_handle hh;
};

struct serve_rank {
    struct rank_entry *map;
    bool is_oom;
};

/* One group of serve_rank_groups: the merchants whose attribute has one text. */
struct rank_group {
    const char *text; /* borrowed from the dimension; NULL: the attribute is absent */
    const json_t *value;
    struct serve_sums s;
    int64_t merchants;
    UT_hash_handle hh;
};

struct serve_rank *serve_rank_new(void)
{
    return calloc(1, sizeof(struct serve_rank));
}

void serve_rank_free(struct serve_rank *r)
{
    struct rank_entry *en, *tmp;

    if (!r)
        return;
    HASH_ITER(hh, r->map, en, tmp)
    {
        HASH_DEL(r->map, en);
        free(en);
    }
    free(r);
}

void serve_rank_add(void *arg, const char *merchant_id, int64_t t_ms, const struct serve_sums *s)
{
    struct serve_rank *r = arg;
    struct rank_entry *en;

    (void)t_ms;
    if (!merchant_id || strlen(merchant_id) > EV_ID_MAX)
        return;
    HASH_FIND_STR(r->map, merchant_id, en);
    if (!en) {
        if (!(en = calloc(1, sizeof(*en)))) {
            r->is_oom = true;
            return;
        }
        strcpy(en->merchant_id, merchant_id);
        HASH_ADD_STR(r->map, merchant_id, en);
    }
    en->s.order_count += s->order_count;
    en->s.revenue_cents += s->revenue_cents;
}

/* Descending by the chosen sum; 0 when equal. */
static int by_sum(const struct serve_sums *x, const struct serve_sums *y, bool by_revenue)
{
    int64_t a = by_revenue ? x->revenue_cents : x->order_count;
    int64_t b = by_revenue ? y->revenue_cents : y->order_count;
    return a != b ? (a > b ? -1 : 1) : 0;
}

static int entry_by_orders(const void *a, const void *b)
{
    const struct rank_entry *x = *(struct rank_entry *const *)a;
    const struct rank_entry *y = *(struct rank_entry *const *)b;
    int c = by_sum(&x->s, &y->s, false);
    return c ? c : strcmp(x->merchant_id, y->merchant_id);
}

static int entry_by_revenue(const void *a, const void *b)
{
    const struct rank_entry *x = *(struct rank_entry *const *)a;
    const struct rank_entry *y = *(struct rank_entry *const *)b;
    int c = by_sum(&x->s, &y->s, true);
    return c ? c : strcmp(x->merchant_id, y->merchant_id);
}

json_t *serve_rank_top(struct serve_rank *r, bool by_revenue, long n, const struct dim *d,
                       const char *filter_attr, const char *filter_value)
{
    size_t count = HASH_COUNT(r->map), k = 0;
    struct rank_entry **all = calloc(count + 1, sizeof(*all)), *en, *tmp;
    json_t *arr = all && !r->is_oom ? json_array() : NULL;

    HASH_ITER(hh, r->map, en, tmp)
    {
        const char *text = filter_attr && d ? dim_attr_text(d, en->merchant_id, filter_attr) : NULL;
        if (all && (!filter_attr || (text && !strcmp(text, filter_value))))
            all[k++] = en;
    }
    if (all)
        qsort(all, k, sizeof(*all), by_revenue ? entry_by_revenue : entry_by_orders);
    for (size_t i = 0; arr && i < k && i < (size_t)n; i++) {
        json_t *m = json_pack("{s:s,s:I,s:I}", "merchant_id", all[i]->merchant_id, "order_count",
                              (json_int_t)all[i]->s.order_count, "revenue_cents",
                              (json_int_t)all[i]->s.revenue_cents);
        if (m && d) {
            const json_t *attrs = dim_attrs(d, all[i]->merchant_id);
            json_object_set_new(m, "merchant", attrs ? json_deep_copy(attrs) : json_object());
        }
        if (!m || json_array_append_new(arr, m) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(all);
    return arr;
}

static int group_cmp(const struct rank_group *x, const struct rank_group *y, bool by_revenue)
{
    int c = by_sum(&x->s, &y->s, by_revenue);
    if (c)
        return c;
    if (!x->text || !y->text)
        return !x->text - !y->text; /* the null group after every value */
    return strcmp(x->text, y->text);
}

static int group_by_orders(const void *a, const void *b)
{
    return group_cmp(*(struct rank_group *const *)a, *(struct rank_group *const *)b, false);
}

static int group_by_revenue(const void *a, const void *b)
{
    return group_cmp(*(struct rank_group *const *)a, *(struct rank_group *const *)b, true);
}

/* The group of text (NULL: the null group), made when new; NULL when out of memory. */
static struct rank_group *group_of(struct rank_group **map, struct rank_group **none,
                                   const char *text, const json_t *value)
{
    struct rank_group *g = NULL;

    if (!text) {
        if (!*none)
            *none = calloc(1, sizeof(**none));
        return *none;
    }
    HASH_FIND_STR(*map, text, g);
    if (!g && (g = calloc(1, sizeof(*g)))) {
        g->text = text;
        g->value = value;
        HASH_ADD_KEYPTR(hh, *map, g->text, strlen(g->text), g);
    }
    return g;
}

json_t *serve_rank_groups(struct serve_rank *r, bool by_revenue, const struct dim *d,
                          const char *attr)
{
    struct rank_group *map = NULL, *none = NULL, *g, *tmp, **all = NULL;
    struct rank_entry *en, *etmp;
    json_t *arr = NULL;
    size_t k = 0;
    bool is_oom = r->is_oom;

    HASH_ITER(hh, r->map, en, etmp)
    {
        const json_t *attrs = dim_attrs(d, en->merchant_id);
        const char *text = dim_attr_text(d, en->merchant_id, attr);
        if (!(g = group_of(&map, &none, text, attrs ? json_object_get(attrs, attr) : NULL))) {
            is_oom = true;
            break;
        }
        g->s.order_count += en->s.order_count;
        g->s.revenue_cents += en->s.revenue_cents;
        g->merchants++;
    }
    if (!is_oom && (all = calloc(HASH_COUNT(map) + 2, sizeof(*all)))) {
        HASH_ITER(hh, map, g, tmp)
        all[k++] = g;
        if (none)
            all[k++] = none;
        qsort(all, k, sizeof(*all), by_revenue ? group_by_revenue : group_by_orders);
        arr = json_array();
    }
    for (size_t i = 0; arr && i < k; i++) {
        json_t *x = json_pack("{s:o,s:I,s:I,s:I}", "value",
                              all[i]->value ? json_deep_copy(all[i]->value) : json_null(),
                              "order_count", (json_int_t)all[i]->s.order_count, "revenue_cents",
                              (json_int_t)all[i]->s.revenue_cents, "merchants",
                              (json_int_t)all[i]->merchants);
        if (!x || json_array_append_new(arr, x) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    HASH_ITER(hh, map, g, tmp)
    {
        HASH_DEL(map, g);
        free(g);
    }
    free(none);
    free(all);
    return arr;
}
