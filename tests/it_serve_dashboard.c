/* it_serve_dashboard.c - the dashboard page in a real browser (Debian's headless chromium).
 *
 * A fixture data directory holds an hour of orders for twelve merchants: 09:00..09:49 in batch
 * version 1, 09:50..09:59 in speed, watermark 09:59:40. The merchant with the most orders in
 * the last five minutes (computed here from the same formula) is not the one with the most
 * orders overall, so the page must really show the window. chromium runs the page's scripts
 * and dumps the rendered DOM; a screenshot is saved in the test's directory. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
                it_sql(s,
                       "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, "
                       "revenue_cents) VALUES ('m-%02d', %lld, %d, %lld, %lld)",
                       i + 1, (long long)t, 100 + k - BATCH_MINS, (long long)n,
                       (long long)n * 1250);
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

Test(serve_dashboard, shows_the_window_leader_and_a_new_order_without_reload, .timeout = 150)
{
    struct it_proc srv;
    struct it_cdp c;
    char dir[512], data[600], profile[600], url[128], shot[700], leader[16], got[80];

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

    it_cdp_start(&c, dir, profile);
    it_cdp_open(&c, url);
    cr_assert(it_cdp_wait(&c, "document.getElementById('stream').textContent", "live", 60000),
              "the page never followed /events");
    cr_assert(it_cdp_wait(&c, "document.getElementById('selected-merchant').dataset.merchantId",
                          leader, 30000),
              "the page never selected the window leader");
    cr_assert(
        it_cdp_wait(&c, "String(document.querySelectorAll('[data-final]').length)", "60", 30000),
        "the chart never drew 60 points");
    char *dom = it_cdp_eval(&c, "document.documentElement.outerHTML");
    attr_of(dom, "top-1", "data-merchant-id", got, sizeof(got));
    cr_expect_str_eq(got, leader, "top merchant shown %s, want %s", got, leader);
    cr_expect_eq(count(dom, "data-rank="), 10);
    /* 60 minutes: final when end + 10 min <= 09:59:40, i.e. 09:00..09:48 (49 points). */
    cr_expect_eq(count(dom, "data-final=\"true\""), 49);
    cr_expect_eq(count(dom, "data-final=\"false\""), 11);
    cr_expect(strstr(dom, "id=\"health-status\">ok<"), "health not shown");
    cr_expect(strstr(dom, "id=\"batch-version\">v1<"), "batch version not shown");
    cr_expect(strstr(dom, "id=\"speed-lag\">4<"), "speed lag not shown");
    cr_expect(strstr(dom, "id=\"recent-late\">0<"), "late count of the last 5 minutes not shown");
    cr_expect(strstr(dom, "id=\"watermark\">2026-11-21 09:59:40 UTC<"), "watermark not shown");
    free(dom);
    lock_release(lock_fd);

    /* A checkpoint commits one more order of the leader: the page shows it, no reload. */
    char *before = it_cdp_eval(&c, "document.getElementById('m-orders').textContent");
    long long n = 0;
    for (const char *p = before; *p; p++)
        if (*p >= '0' && *p <= '9')
            n = n * 10 + (*p - '0');
    char want[32], fmt[32];
    snprintf(fmt, sizeof(fmt), "%lld", n + 1);
    /* en-US grouping, as the page formats it */
    int len = (int)strlen(fmt), k = 0;
    for (int i = 0; i < len; i++) {
        want[k++] = fmt[i];
        if ((len - i - 1) % 3 == 0 && i != len - 1)
            want[k++] = ',';
    }
    want[k] = '\0';
    sqlite3 *s = NULL;
    e = (struct lerr){{0}};
    cr_assert_eq(db_open_rw(data, DB_SPEED, &s, &e), 0, "%s", e.msg);
    int64_t t0 = tm_now_ms();
    it_sql(
        s,
        "BEGIN; INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents, seq)"
        " VALUES ('m-07', %lld, 200, 1, 1250, 1);"
        "UPDATE meta SET value = %lld WHERE key = 'checkpoint_ms'; COMMIT",
        T9 + (MINUTES - 1) * TM_MINUTE_MS, (long long)tm_now_ms());
    sqlite3_close(s);
    cr_assert(it_cdp_wait(&c, "document.getElementById('m-orders').textContent", want, 5000),
              "the new order (%s -> %s) never appeared on the page", before, want);
    int64_t took_ms = tm_now_ms() - t0;
    /* checkpoint_ms (200) + 300 ms from the produce; the commit is the checkpoint's end. */
    cr_expect_leq(took_ms, 300, "the page showed the order %lld ms after the commit",
                  (long long)took_ms);
    free(before);

    snprintf(shot, sizeof(shot), "%s/dashboard.png", dir);
    cr_expect_gt(it_cdp_screenshot(&c, shot), 10000);
    it_cdp_stop(&c);
    cr_assert_eq(it_signal(&srv, SIGTERM, 10000), 0);
}
