/* test_serve.c - lambda-serve's pieces that need no server: routing, error answers and the
 * request metrics' text format. The routes themselves are tested over sockets in it_serve.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serving/api.h"
#include "serving/metrics.h"

Test(serve_api, routes_paths)
{
    cr_expect_eq(serve_api_route("/"), SERVE_R_DASHBOARD);
    cr_expect_eq(serve_api_route("/health"), SERVE_R_HEALTH);
    cr_expect_eq(serve_api_route("/metrics"), SERVE_R_METRICS);
    cr_expect_eq(serve_api_route("/top"), SERVE_R_TOP);
    cr_expect_eq(serve_api_route("/query"), SERVE_R_QUERY_IDS);
    cr_expect_eq(serve_api_route("/query/m-42"), SERVE_R_QUERY);
    cr_expect_eq(serve_api_route("/query/"), SERVE_R_QUERY);
    cr_expect_eq(serve_api_route("/query/m-42/series"), SERVE_R_SERIES);
    cr_expect_eq(serve_api_route("/query/m-42/series/x"), SERVE_R_OTHER);
    cr_expect_eq(serve_api_route("/query/m-42/other"), SERVE_R_OTHER);
    cr_expect_eq(serve_api_route("/health/"), SERVE_R_OTHER);
    cr_expect_eq(serve_api_route("/queryx"), SERVE_R_OTHER);
    cr_expect_eq(serve_api_route(""), SERVE_R_OTHER);
}

Test(serve_api, routes_answer_get_and_head_only)
{
    struct serve_reply r = {0};

    for (int i = 0; i < SERVE_R_OTHER; i++) {
        cr_expect(serve_api_allows((enum serve_route)i, "GET"), "route %d", i);
        cr_expect(serve_api_allows((enum serve_route)i, "HEAD"), "route %d", i);
        cr_expect_not(serve_api_allows((enum serve_route)i, "POST"), "route %d", i);
    }
    cr_expect_not(serve_api_allows(SERVE_R_OTHER, "GET"));
    serve_api_refuse(SERVE_R_TOP, "POST", "/top", &r);
    cr_expect_eq(r.status, 405);
    cr_expect_str_eq(r.allow, "GET, HEAD");
    cr_expect_str_eq(r.body, "{\"error\":\"method POST not allowed on '/top': use GET\"}");
    free(r.owned);
}

Test(serve_api, names_routes_for_metrics)
{
    static const char *const want[SERVE_R_COUNT] = {
        "dashboard", "query", "query_ids", "series", "top", "groups", "health", "metrics", "other",
    };

    for (int i = 0; i < SERVE_R_COUNT; i++)
        cr_expect_str_eq(serve_api_route_name((enum serve_route)i), want[i]);
}

Test(serve_api, error_answers_are_json_with_printable_messages)
{
    struct serve_reply r;

    serve_api_error(&r, 400, "bad merchant_id '%s'", "a\"b\x01\xff");
    cr_expect_eq(r.status, 400);
    cr_expect_str_eq(r.content_type, "application/json");
    cr_expect_str_eq(r.body, "{\"error\":\"bad merchant_id 'a\\\"b?"
                             "?'\"}");
    cr_expect_eq(r.len, strlen(r.body));
    free(r.owned);
}

static const char *route_name(int r)
{
    return serve_api_route_name((enum serve_route)r);
}

static char *render(struct serve_metrics *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    serve_metrics_render(m, route_name, f);
    fclose(f);
    return buf;
}

Test(serve_metrics, counts_by_route_and_code_with_cumulative_buckets)
{
    struct serve_metrics m;
    char *text;

    serve_metrics_init(&m);
    serve_metrics_observe(&m, SERVE_R_QUERY, 200, 80);      /* <= 100 us */
    serve_metrics_observe(&m, SERVE_R_QUERY, 200, 100);     /* <= 100 us: bounds are inclusive */
    serve_metrics_observe(&m, SERVE_R_QUERY, 400, 3000);    /* <= 5 ms */
    serve_metrics_observe(&m, SERVE_R_QUERY, 299, 9000000); /* +Inf, code "other" */
    text = render(&m);
    cr_expect(strstr(text, "\nlambda_http_requests_total{route=\"query\",code=\"200\"} 2\n"));
    cr_expect(strstr(text, "\nlambda_http_requests_total{route=\"query\",code=\"400\"} 1\n"));
    cr_expect(strstr(text, "\nlambda_http_requests_total{route=\"query\",code=\"other\"} 1\n"));
    cr_expect(strstr(text, "{route=\"query\",le=\"0.0001\"} 2\n"));
    cr_expect(strstr(text, "{route=\"query\",le=\"0.0025\"} 2\n"));
    cr_expect(strstr(text, "{route=\"query\",le=\"0.005\"} 3\n"));
    cr_expect(strstr(text, "{route=\"query\",le=\"2.5\"} 3\n"));
    cr_expect(strstr(text, "{route=\"query\",le=\"+Inf\"} 4\n"));
    cr_expect(
        strstr(text, "\nlambda_http_request_duration_seconds_sum{route=\"query\"} 9.003180\n"));
    cr_expect(strstr(text, "\nlambda_http_request_duration_seconds_count{route=\"query\"} 4\n"));
    cr_expect_null(strstr(text, "route=\"top\""), "a route never asked for is not listed");
    free(text);
}
