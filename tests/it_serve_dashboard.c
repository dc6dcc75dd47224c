/* it_serve_dashboard.c - the dashboard page in a real browser (Debian's headless chromium).
 *
 * A fixture data directory holds an hour of orders for twelve merchants: 09:00..09:49 in batch
 * version 1, 09:50..09:59 in speed, watermark 09:59:40. The merchant with the most orders in
 * the last five minutes (computed here from the same formula) is not the one with the most
 * orders overall, so the page must really show the window. chromium runs the page's scripts
 * and dumps the rendered DOM; a screenshot is saved in the test's directory. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "itlib.h"
#include "lock.h"
#include "tm.h"

#define T9         1795251600000LL /* 2026-11-21T09:00:00Z */
#define MERCHANTS  12
#define MINUTES    60
#define BATCH_MINS 50 /* minutes 0..49 are in the batch version, 50..59 in speed */

/* Orders of merchant i (0-based) in minute k: m-03 is big all hour; m-07 surges at the end. */
static int64_t orders(int i, int k)
{
    int64_t base = 3 + (i * 5 + k * 3) % 7;

    if (i == 2)
        base += 30;
    if (i == 6 && k >= 50)
        base += 6 * (k - 49);
    return base + (k % 10 == 3 ? 4 : 0);
}

static void fixture(const char *data)
{
    sqlite3 *b = NULL, *s = NULL;
    struct lerr e = {{0}};

    cr_assert_eq(db_ensure_dir(data, &e), 0, "%s", e.msg);
    cr_assert_eq(db_open_rw(data, DB_BATCH, &b, &e), 0, "%s", e.msg);
    cr_assert_eq(db_open_rw(data, DB_SPEED, &s, &e), 0, "%s", e.msg);
    it_sql(b,
           "BEGIN; INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms)"
           " VALUES (1, 'published', 100, %lld, %lld)",
           T9 + BATCH_MINS * TM_MINUTE_MS, T9 + BATCH_MINS * TM_MINUTE_MS + 4000);
    it_sql(s,
           "BEGIN; INSERT INTO meta VALUES ('checkpoint_ms', %lld), ('watermark_ms', %lld),"
           " ('allowed_lateness_ms', 600000)",
           (long long)tm_now_ms(), T9 + MINUTES * TM_MINUTE_MS - 20000);
    it_sql(s, "INSERT INTO offsets VALUES (0, 1000, 0, 1004, 0), (1, 990, 0, 990, 0)");
    for (int i = 0; i < MERCHANTS; i++) {
        int64_t total = 0;
        for (int k = 0; k < MINUTES; k++) {
            int64_t n = orders(i, k), t = T9 + k * TM_MINUTE_MS;
            if (k < BATCH_MINS) {
                it_sql(b,
                       "INSERT INTO minutely(valid_from, merchant_id, minute_ms, order_count, "
                       "revenue_cents) VALUES (1, 'm-%02d', %lld, %lld, %lld)",
                       i + 1, (long long)t, (long long)n, (long long)n * 1250);
                total += n;
            } else {
                it_sql(s, "INSERT INTO deltas VALUES ('m-%02d', %lld, %d, %lld, %lld)", i + 1,
                       (long long)t, 100 + k - BATCH_MINS, (long long)n, (long long)n * 1250);
            }
        }
        it_sql(b,
               "INSERT INTO hourly(valid_from, merchant_id, hour_ms, order_count, revenue_cents) "
               "VALUES (1, 'm-%02d', %lld, %lld, %lld);"
               "INSERT INTO merchant_totals(valid_from, merchant_id, order_count, revenue_cents) "
               "VALUES (1, 'm-%02d', %lld, %lld)",
               i + 1, T9, (long long)total, (long long)total * 1250, i + 1, (long long)total,
               (long long)total * 1250);
    }
    it_sql(b, "COMMIT");
    it_sql(s, "COMMIT");
    sqlite3_close(b);
    sqlite3_close(s);
}

/* The merchant with the most orders in minutes 55..59 (ties: the smaller id). */
static int window_leader(void)
{
    int best = 0;
    int64_t best_n = -1;

    for (int i = 0; i < MERCHANTS; i++) {
        int64_t n = 0;
        for (int k = MINUTES - 5; k < MINUTES; k++)
            n += orders(i, k);
        if (n > best_n)
            best = i, best_n = n;
    }
    return best;
}

/* The value of attribute attr in the element whose id is id, from a DOM dump. */
static void attr_of(const char *dom, const char *id, const char *attr, char *out, size_t size)
{
    char needle[128];
    const char *at, *open, *end, *a;

    snprintf(needle, sizeof(needle), "id=\"%s\"", id);
    at = strstr(dom, needle);
    cr_assert_not_null(at, "no element #%s in the rendered page", id);
    for (open = at; open > dom && *open != '<'; open--)
        ;
    end = strchr(at, '>');
    snprintf(needle, sizeof(needle), "%s=\"", attr);
    a = strstr(open, needle);
    cr_assert(a && a < end, "#%s has no %s", id, attr);
    a += strlen(needle);
    snprintf(out, size, "%.*s", (int)(strcspn(a, "\"")), a);
}

static int count(const char *s, const char *needle)
{
    int n = 0;

    for (; (s = strstr(s, needle)); s++)
        n++;
    return n;
}

Test(serve_dashboard, shows_the_window_leader_and_final_points, .timeout = 150)
{
    struct it_proc srv;
    char dir[512], data[600], profile[600], url[128], shot[700], shotarg[720], out[700];
    char leader[16], got[80];
    char home[620];
    struct stat st;

    it_tmpdir("serve-dash", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(profile, sizeof(profile), "%s/chromium", dir);
    fixture(data);
    /* Play a running speed layer, so that /health says ok and shows the lag. */
    struct lerr e = {{0}};
    int lock_fd;
    cr_assert_eq(lock_try(data, "speed.lock", &lock_fd, &e), 1, "%s", e.msg);
    char *argv[] = {"lambda-serve",        "--port", "0", "--data-dir", data,
                    "--batch-stale-after", "3650d",  NULL};
    it_spawn(&srv, dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&srv, "msg=listening", 10000), "lambda-serve did not start");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/",
             (int)it_log_int(&srv, "msg=listening", "port"));
    snprintf(leader, sizeof(leader), "m-%02d", window_leader() + 1);
    cr_assert_str_eq(leader, "m-07"); /* the surge, not m-03, the biggest of the hour */

    char udd[640];
    snprintf(udd, sizeof(udd), "--user-data-dir=%s", profile);
    snprintf(home, sizeof(home), "HOME=%s", dir);
    char *env[] = {home, NULL};
    char *dump[] = {"/usr/bin/chromium",
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    udd,
                    "--virtual-time-budget=5000",
                    "--dump-dom",
                    url,
                    NULL};
    cr_assert_eq(it_run(dir, "dom", dump, env, 90000), 0, "chromium --dump-dom failed");
    snprintf(out, sizeof(out), "%s/dom.out", dir);
    char *dom = it_read_file(out, NULL);
    cr_assert_not_null(dom);

    attr_of(dom, "top-1", "data-merchant-id", got, sizeof(got));
    cr_expect_str_eq(got, leader, "top merchant shown %s, want %s", got, leader);
    attr_of(dom, "selected-merchant", "data-merchant-id", got, sizeof(got));
    cr_expect_str_eq(got, leader, "chart shows %s, want %s", got, leader);
    cr_expect_eq(count(dom, "data-rank="), 10);
    /* 60 minutes: final when end + 10 min <= 09:59:40, i.e. 09:00..09:48 (49 points). */
    cr_expect_eq(count(dom, "data-final=\"true\""), 49);
    cr_expect_eq(count(dom, "data-final=\"false\""), 11);
    cr_expect(strstr(dom, "id=\"health-status\">ok<"), "health not shown");
    cr_expect(strstr(dom, "id=\"batch-version\">v1<"), "batch version not shown");
    cr_expect(strstr(dom, "id=\"speed-lag\">4<"), "speed lag not shown");
    free(dom);
    lock_release(lock_fd);

    snprintf(shot, sizeof(shot), "%s/dashboard.png", dir);
    snprintf(shotarg, sizeof(shotarg), "--screenshot=%s", shot);
    char *snap[] = {"/usr/bin/chromium",
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    udd,
                    "--virtual-time-budget=5000",
                    "--hide-scrollbars",
                    shotarg,
                    "--window-size=1280,900",
                    url,
                    NULL};
    cr_assert_eq(it_run(dir, "shot", snap, env, 90000), 0, "chromium --screenshot failed");
    cr_assert_eq(stat(shot, &st), 0, "no screenshot at %s", shot);
    cr_expect_gt(st.st_size, 10000);
    cr_log_info("dashboard screenshot: %s", shot);
    it_stop(&srv);
}
