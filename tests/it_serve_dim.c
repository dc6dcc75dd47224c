/* it_serve_dim.c - the merchant dimension (DESIGN.md section 5, "The side input") over a data
 * directory written by the real batch and speed layers: totals per category and a filtered top
 * equal lambda-gen's truth joined with the same file, a changed file is picked up within the
 * refresh and applies to all history, a broken file keeps the previous version serving, and a
 * bad file at start stops lambda-serve naming the line. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itlib.h"
#include "tm.h"

#define START_MS   INT64_C(1795255200000) /* 2026-11-21T10:00:00Z */
#define MERCHANTS  30
#define RANGE_FROM "2026-11-21T08:00:00Z" /* late orders reach an hour back */
#define RANGE_TO   "2026-11-21T12:00:00Z"

static struct it_proc kafka, speed, serve;
static char dir[512], data[600], bs[256], base[64], dimfile[600];
static struct it_truth truth;

static void stop_all(void)
{
    it_stop(&serve);
    it_stop(&speed);
    it_stop(&kafka);
    it_truth_free(&truth);
}

static const char *const categories[] = {"books", "toys", "food"};

/* The category of merchant m-i in version v of the file: NULL for the merchants it leaves out
 * (m-30, not named; m-29, named with an empty category). Version 2 moves m-1 to food. */
static const char *category_of(int i, int v)
{
    if (i >= 29)
        return NULL;
    if (i == 1 && v == 2)
        return "food";
    return categories[i % 3];
}

static void write_dim(int v)
{
    char tmp[700];
    snprintf(tmp, sizeof(tmp), "%s.new", dimfile);
    FILE *f = fopen(tmp, "w");
    cr_assert(f);
    fprintf(f, "merchant_id,name,category,country\n");
    for (int i = 1; i < MERCHANTS; i++)
        fprintf(f, "m-%d,\"Shop %d, \"\"the %s\"\"\",%s,%s\n", i, i, i % 2 ? "odd" : "even",
                category_of(i, v) ? category_of(i, v) : "", i % 2 ? "FR" : "DE");
    fclose(f);
    cr_assert(rename(tmp, dimfile) == 0); /* a new inode, as a deploy would */
}

static void produce(int seed, int count, int64_t start_ms)
{
    char s[16], c[16], st[32], path[600], tag[16], m[16];
    struct it_truth t;

    snprintf(s, sizeof(s), "%d", seed);
    snprintf(c, sizeof(c), "%d", count);
    snprintf(st, sizeof(st), "%" PRId64, start_ms);
    snprintf(m, sizeof(m), "%d", MERCHANTS);
    snprintf(path, sizeof(path), "%s/truth%d", dir, seed);
    snprintf(tag, sizeof(tag), "gen%d", seed);
    char *argv[] = {"lambda-gen",
                    "--brokers",
                    bs,
                    "--count",
                    c,
                    "--merchants",
                    m,
                    "--late-pct",
                    "2",
                    "--dup-pct",
                    "4",
                    "--invalid-pct",
                    "2",
                    "--seed",
                    s,
                    "--start-time",
                    st,
                    "--time-step",
                    "100ms",
                    "--truth",
                    path,
                    NULL};
    cr_assert_eq(it_run(dir, tag, argv, NULL, 60000), 0, "lambda-gen failed");
    it_truth_load(&t, path);
    it_truth_add(&truth, &t);
    it_truth_free(&t);
}

static json_t *get_json(const char *path, long want)
{
    char url[2048], *body = NULL;
    snprintf(url, sizeof(url), "%s%s", base, path);
    long status = it_http_get(url, &body);
    json_t *doc = json_loads(body, 0, NULL);
    cr_assert_eq(status, want, "GET %s: %ld %s", path, status, body);
    cr_assert_not_null(doc, "GET %s: not JSON: %s", path, body);
    free(body);
    return doc;
}

static int64_t jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Whether every merchant's answer equals the truth yet. A 503 is "not yet": serving starts
 * beside a speed layer that is still creating speed.db's tables, and says so rather than
 * answering; the wait's deadline fails the test if it lasts. */
static bool all_exact(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < truth.nmerchants; i++) {
        char path[128], url[2048], *body = NULL;
        snprintf(path, sizeof(path), "/query/%s", truth.merchants[i].merchant_id);
        snprintf(url, sizeof(url), "%s%s", base, path);
        long status = it_http_get(url, &body);
        json_t *d = status == 503 ? NULL : json_loads(body, 0, NULL);
        cr_assert(status == 503 || (status == 200 && d), "GET %s: %ld %s", path, status, body);
        free(body);
        if (!d)
            return false;
        bool ok = jint(d, "order_count") == truth.merchants[i].order_count &&
                  jint(d, "revenue_cents") == truth.merchants[i].revenue_cents;
        json_decref(d);
        if (!ok)
            return false;
    }
    return true;
}

/* The truth per category in version v, over every order (the range covers all of them). */
struct group_truth {
    const char *value; /* NULL: merchants without the attribute */
    int64_t order_count, revenue_cents, merchants;
};

static void truth_groups(int v, struct group_truth g[4])
{
    for (int k = 0; k < 3; k++)
        g[k] = (struct group_truth){categories[k], 0, 0, 0};
    g[3] = (struct group_truth){NULL, 0, 0, 0};
    for (size_t i = 0; i < truth.nmerchants; i++) {
        const struct it_truth_merchant *m = &truth.merchants[i];
        const char *cat = category_of(atoi(m->merchant_id + 2), v);
        int k = 3;
        for (int j = 0; j < 3; j++)
            if (cat && !strcmp(cat, categories[j]))
                k = j;
        if (m->order_count == 0)
            continue;
        g[k].order_count += m->order_count;
        g[k].revenue_cents += m->revenue_cents;
        g[k].merchants++;
    }
}

static void check_groups(int v)
{
    struct group_truth g[4];
    truth_groups(v, g);
    json_t *d = get_json("/groups?group=category&by=orders&from=" RANGE_FROM "&to=" RANGE_TO, 200);
    cr_assert_str_eq(json_string_value(json_object_get(d, "group")), "category");
    json_t *arr = json_object_get(d, "groups");
    cr_assert_eq(json_array_size(arr), 4, "three categories and the merchants without one");
    int64_t prev = INT64_MAX;
    for (size_t i = 0; i < 4; i++) {
        json_t *x = json_array_get(arr, i);
        json_t *val = json_object_get(x, "value");
        int k = 3;
        for (int j = 0; j < 3; j++)
            if (json_is_string(val) && !strcmp(json_string_value(val), categories[j]))
                k = j;
        cr_assert(k < 3 || json_is_null(val), "unexpected group value");
        cr_assert_eq(jint(x, "order_count"), g[k].order_count, "orders of %s (v%d)",
                     g[k].value ? g[k].value : "null", v);
        cr_assert_eq(jint(x, "revenue_cents"), g[k].revenue_cents, "revenue of %s",
                     g[k].value ? g[k].value : "null");
        cr_assert_eq(jint(x, "merchants"), g[k].merchants, "merchants of %s",
                     g[k].value ? g[k].value : "null");
        cr_assert_leq(jint(x, "order_count"), prev, "groups are ordered by orders");
        prev = jint(x, "order_count");
    }
    json_decref(d);
}

static void start(const char *refresh)
{
    it_tmpdir("serve-dim", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(dimfile, sizeof(dimfile), "%s/merchants.csv", dir);
    write_dim(1);
    it_devkafka(&kafka, dir, 4, bs);
    char *sargv[] = {"lambda-speed", "--brokers",       bs,    "--data-dir", data, "--epoch-ms",
                     "1000",         "--checkpoint-ms", "100", NULL};
    it_spawn(&speed, dir, "speed", sargv, NULL);
    char *vargv[] = {"lambda-serve",
                     "--port",
                     "0",
                     "--data-dir",
                     data,
                     "--dimension-file",
                     dimfile,
                     "--dimension-refresh",
                     (char *)refresh,
                     "--epoch-ms",
                     "1000",
                     NULL};
    it_spawn(&serve, dir, "serve", vargv, NULL);
    cr_assert(it_wait_log(&serve, "listening", 15000));
    snprintf(base, sizeof(base), "http://127.0.0.1:%" PRId64,
             it_log_int(&serve, "listening", "port"));
}

static void both_layers(void)
{
    produce(1, 3000, START_MS);
    cr_assert(it_wait_until(all_exact, NULL, 60000), "speed layer never matched the truth");
    int target = it_log_count(&speed, "msg=epoch_started") + 2;
    cr_assert(it_wait_log_count(&speed, "msg=epoch_started", target, 30000));
    char *bargv[] = {"lambda-batch", "run",        "--brokers", bs,  "--data-dir",
                     data,           "--epoch-ms", "1000",      NULL};
    cr_assert_eq(it_run(dir, "batch", bargv, NULL, 120000), 0, "lambda-batch run failed");
    produce(2, 2000, START_MS + 3000 * 100);
    cr_assert(it_wait_until(all_exact, NULL, 60000), "the merge never matched the truth");
}

Test(serve_dim, groups_and_a_filtered_top_equal_the_truth_over_both_layers, .timeout = 300,
     .fini = stop_all)
{
    start("10s");
    both_layers();

    /* attributes in answers, and the version */
    json_t *d = get_json("/query/m-4", 200);
    json_t *m = json_object_get(d, "merchant");
    cr_assert_str_eq(json_string_value(json_object_get(m, "name")), "Shop 4, \"the even\"");
    cr_assert_str_eq(json_string_value(json_object_get(m, "category")), "toys");
    cr_assert_str_eq(json_string_value(json_object_get(m, "country")), "DE");
    json_t *dv = json_object_get(d, "dimension");
    cr_assert(json_integer_value(json_object_get(dv, "version")) > 0);
    cr_assert(json_is_string(json_object_get(dv, "loaded_at")));
    json_decref(d);
    d = get_json("/query/m-30", 200);
    cr_assert_eq(json_object_size(json_object_get(d, "merchant")), 0, "m-30 is not named: {}");
    json_decref(d);
    d = get_json("/query/m-29", 200);
    cr_assert_null(json_object_get(json_object_get(d, "merchant"), "category"),
                   "an empty field is an absent attribute");
    json_decref(d);
    d = get_json("/query?ids=m-30,m-2", 200);
    json_t *arr = json_object_get(d, "merchants");
    cr_assert_eq(json_object_size(json_object_get(json_array_get(arr, 0), "merchant")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_array_get(arr, 1), "merchant"), "category")),
                     "food");
    json_decref(d);

    check_groups(1);

    /* a top filtered to the books merchants, against the truth of the same merchants */
    d = get_json("/top?n=100&by=revenue&filter=category:books&from=" RANGE_FROM "&to=" RANGE_TO,
                 200);
    arr = json_object_get(d, "merchants");
    size_t books = 0;
    for (size_t i = 0; i < truth.nmerchants; i++) {
        const char *cat = category_of(atoi(truth.merchants[i].merchant_id + 2), 1);
        books += cat && !strcmp(cat, "books") && truth.merchants[i].order_count > 0;
    }
    cr_assert_eq(json_array_size(arr), books, "every books merchant with orders, no other");
    int64_t prev = INT64_MAX;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *x = json_array_get(arr, i);
        const char *id = json_string_value(json_object_get(x, "merchant_id"));
        const struct it_truth_merchant *t = it_truth_find(&truth, id);
        cr_assert_not_null(t);
        cr_assert_str_eq(category_of(atoi(id + 2), 1), "books", "%s is not a books merchant", id);
        cr_assert_eq(jint(x, "order_count"), t->order_count, "%s", id);
        cr_assert_eq(jint(x, "revenue_cents"), t->revenue_cents, "%s", id);
        cr_assert_str_eq(
            json_string_value(json_object_get(json_object_get(x, "merchant"), "category")),
            "books");
        cr_assert_leq(t->revenue_cents, prev, "sorted by revenue");
        prev = t->revenue_cents;
    }
    json_decref(d);

    /* errors */
    json_decref(get_json("/groups", 400));
    json_decref(get_json("/groups?group=category&by=weight", 400));
    json_decref(get_json("/top?filter=category", 400));
}

struct want_category {
    const char *id, *category;
};

static bool shows_category(void *arg)
{
    const struct want_category *w = arg;
    char path[128];
    snprintf(path, sizeof(path), "/query/%s", w->id);
    json_t *d = get_json(path, 200);
    const char *c = json_string_value(json_object_get(json_object_get(d, "merchant"), "category"));
    bool ok = c && !strcmp(c, w->category);
    json_decref(d);
    return ok;
}

static int64_t metric(const char *name)
{
    char url[256], *body = NULL;
    snprintf(url, sizeof(url), "%s/metrics", base);
    cr_assert_eq(it_http_get(url, &body), 200);
    char *p = body;
    size_t n = strlen(name);
    int64_t v = -1;
    while ((p = strstr(p, name))) {
        if ((p == body || p[-1] == '\n') && p[n] == ' ') {
            v = (int64_t)strtod(p + n + 1, NULL);
            break;
        }
        p += n;
    }
    free(body);
    return v;
}

static void write_raw(const char *text, size_t len)
{
    char tmp[700];
    snprintf(tmp, sizeof(tmp), "%s.new", dimfile);
    FILE *f = fopen(tmp, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    cr_assert(rename(tmp, dimfile) == 0);
}

static bool failed_loads_reach(void *arg)
{
    return metric("lambda_dimension_failed_loads_total") >= *(int64_t *)arg;
}

Test(serve_dim, a_changed_file_applies_to_all_history_and_a_broken_one_keeps_serving,
     .timeout = 300, .fini = stop_all)
{
    start("200ms");
    both_layers();
    check_groups(1);
    int64_t v1 = metric("lambda_dimension_version");
    cr_assert_gt(v1, 0);
    cr_assert_eq(metric("lambda_dimension_merchants"), MERCHANTS - 1);

    write_dim(2);
    struct want_category w = {"m-1", "food"};
    cr_assert(it_wait_until(shows_category, &w, 10000), "the changed file was not picked up");
    check_groups(2); /* m-1's whole history moved to food: a type-1 dimension */
    int64_t v2 = metric("lambda_dimension_version");
    cr_assert_neq(v2, v1);

    static const char bad_quotes[] = "merchant_id,name,category\nm-1,\"open,food\n";
    static const char garbage[] = "merchant_id,name\nm-1,\xff\xfe\x00\x01\n";
    static const char dup[] = "merchant_id,category\nm-1,books\nm-2,toys\nm-1,food\n";
    const struct {
        const char *text;
        size_t len;
        const char *why;
    } broken[] = {{bad_quotes, sizeof(bad_quotes) - 1, "line 2: bad quoting"},
                  {garbage, sizeof(garbage) - 1, "line 2"},
                  {dup, sizeof(dup) - 1, "line 4: merchant 'm-1' named twice"}};
    for (int64_t i = 0; i < 3; i++) {
        int64_t want = i + 1;
        write_raw(broken[i].text, broken[i].len);
        cr_assert(it_wait_until(failed_loads_reach, &want, 10000), "broken file %d not tried",
                  (int)i);
        cr_assert(it_log_has(&serve, broken[i].why), "the log does not say '%s'", broken[i].why);
        cr_assert_eq(metric("lambda_dimension_version"), v2, "a broken file replaced the version");
        cr_assert(shows_category(&w), "answers lost the previous version");
    }
    check_groups(2);
}

Test(serve_dim, a_bad_file_at_start_exits_2_naming_it_and_the_line, .timeout = 30)
{
    char file[600];
    it_tmpdir("serve-dim-bad", dir);
    snprintf(file, sizeof(file), "%s/m.csv", dir);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    fputs("merchant_id,name\nm-1,a\nm-2,\"b\n", f);
    fclose(f);
    char *argv[] = {"lambda-serve",     "--port", "0", "--data-dir", dir,
                    "--dimension-file", file,     NULL};
    cr_assert_eq(it_run(dir, "serve", argv, NULL, 15000), 2);
    char err[700];
    snprintf(err, sizeof(err), "%s/serve.err", dir);
    char *text = it_read_file(err, NULL);
    cr_assert(text && strstr(text, file) && strstr(text, "line 3: bad quoting"), "%s", text);
    free(text);
}

/* The dashboard in Debian's headless chromium: a name beside each top merchant and the
 * breakdown by category, its order counts those /groups gives for the same window. */
Test(serve_dim, the_dashboard_shows_names_and_a_category_breakdown, .timeout = 200,
     .fini = stop_all)
{
    char url[128], profile[700], want_rows[16];
    struct it_cdp cdp;

    start("10s");
    produce(1, 3000, START_MS);
    cr_assert(it_wait_until(all_exact, NULL, 60000), "speed layer never matched the truth");
    json_t *g = get_json("/groups?group=category&window=5m", 200);
    json_t *groups = json_object_get(g, "groups");
    cr_assert_gt(json_array_size(groups), 1);
    snprintf(want_rows, sizeof(want_rows), "%zu", json_array_size(groups));

    snprintf(url, sizeof(url), "%s/", base);
    snprintf(profile, sizeof(profile), "%s/chromium", dir);
    it_cdp_start(&cdp, dir, profile);
    it_cdp_open(&cdp, url);
    cr_assert(
        it_cdp_wait(&cdp, "String(!document.getElementById('groups-card').hidden)", "true", 60000),
        "the breakdown never showed");
    cr_assert(it_cdp_wait(&cdp, "String(document.querySelectorAll('[data-group]').length)",
                          want_rows, 30000),
              "the breakdown never had %s rows", want_rows);
    char *dom = it_cdp_eval(&cdp, "document.documentElement.outerHTML");
    it_cdp_stop(&cdp);
    cr_assert_not_null(dom);
    cr_assert(strstr(dom, "class=\"mname\">Shop "), "no merchant name in the top list");
    cr_assert(!strstr(dom, "id=\"groups-card\" hidden"), "the breakdown is hidden");
    for (size_t i = 0; i < json_array_size(groups); i++) {
        json_t *x = json_array_get(groups, i), *v = json_object_get(x, "value");
        char row[256], cell[128];
        snprintf(row, sizeof(row), "data-group=\"%s\"",
                 json_is_string(v) ? json_string_value(v) : "");
        const char *at = strstr(dom, row);
        cr_assert_not_null(at, "no row for group %s", row);
        /* the row's cells: value, merchants, orders (formatted as en-US), revenue */
        int64_t n = jint(x, "order_count");
        if (n >= 1000)
            snprintf(cell, sizeof(cell), "<td class=\"n\">%lld,%03lld</td>", (long long)(n / 1000),
                     (long long)(n % 1000));
        else
            snprintf(cell, sizeof(cell), "<td class=\"n\">%lld</td>", (long long)n);
        const char *end = strstr(at, "</tr>");
        const char *c = strstr(at, cell);
        cr_assert(c && c < end, "group %s does not show %s orders", row, cell);
    }
    json_decref(g);
    free(dom);
}
