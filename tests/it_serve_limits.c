/* it_serve_limits.c - safe defaults of lambda-serve (issue "safe defaults"): one client address
 * holds at most max_connections_per_ip connections, a request head that does not arrive
 * within request_timeout loses its connection, so 600 unfinished requests from 127.0.0.2 never
 * keep a normal request from 127.0.0.1 waiting. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db.h"
#include "itlib.h"
#include "tm.h"

#define SLOW 600

static struct it_proc serve;
static int fds[SLOW];

static void fini(void)
{
    for (int i = 0; i < SLOW; i++)
        if (fds[i] > 0)
            close(fds[i]);
    it_stop(&serve);
}

/* A connection from 127.0.0.2 that sends the start of a request head and never its end. */
static int slow_client(int port)
{
    struct sockaddr_in from = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};
    static const char head[] = "GET /health HTTP/1.1\r\nHost: x\r\n";
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    inet_pton(AF_INET, "127.0.0.2", &from.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    to.sin_port = htons((uint16_t)port);
    cr_assert_eq(bind(fd, (struct sockaddr *)&from, sizeof(from)), 0, "bind: %s", strerror(errno));
    cr_assert_eq(connect(fd, (struct sockaddr *)&to, sizeof(to)), 0, "connect: %s",
                 strerror(errno));
    (void)!send(fd, head, sizeof(head) - 1, MSG_NOSIGNAL);
    return fd;
}

/* How many of the slow connections the server has closed (end of file or a reset). */
static int closed_count(void)
{
    int n = 0;

    for (int i = 0; i < SLOW; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        char b[64];
        if (poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR)) &&
            read(fds[i], b, sizeof(b)) <= 0)
            n++;
        else if (p.revents & (POLLHUP | POLLERR))
            n++;
    }
    return n;
}

struct closed_arg {
    int want;
};

static bool enough_closed(void *arg)
{
    return closed_count() >= ((struct closed_arg *)arg)->want;
}

Test(serve_limits, a_normal_request_is_answered_while_600_unfinished_ones_are_open, .timeout = 60,
     .fini = fini)
{
    char dir[512], data[600], url[128], *body = NULL;
    struct lerr e = {{0}};
    int port;

    it_tmpdir("limits", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    cr_assert_eq(db_ensure_dir(data, &e), 0, "%s", e.msg);
    char *argv[] = {"lambda-serve",      "--port", "0", "--data-dir", data,
                    "--request-timeout", "2s",     NULL};
    it_spawn(&serve, dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&serve, "msg=listening", 10000));
    port = (int)it_log_int(&serve, "msg=listening", "port");

    for (int i = 0; i < SLOW; i++)
        fds[i] = slow_client(port);
    /* Past the default max_connections_per_ip (64), the server drops them at once. */
    struct closed_arg over = {SLOW - 64};
    cr_assert(it_wait_until(enough_closed, &over, 10000), "only %d of %d closed", closed_count(),
              SLOW);
    cr_expect_eq(closed_count(), SLOW - 64, "64 unfinished requests are still open");

    int64_t t0 = tm_now_ms();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", port);
    cr_assert_eq(it_http_get(url, &body), 503, "an empty data directory: unavailable");
    cr_expect(strstr(body, "\"status\":\"unavailable\""), "%s", body);
    free(body);
    cr_expect_lt(tm_now_ms() - t0, 1000, "the normal request waited %lld ms",
                 (long long)(tm_now_ms() - t0));

    /* The 64 that got in never finish their heads: dropped after request_timeout. */
    struct closed_arg all = {SLOW};
    cr_assert(it_wait_until(enough_closed, &all, 10000), "%d of %d still open after 10 s",
              SLOW - closed_count(), SLOW);
    cr_expect_geq(tm_now_ms() - t0, 1000, "dropped before request_timeout");
}

/* True once the server ended the connection (end of file, or a reset). */
static bool is_closed(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b[256];

    if (poll(&p, 1, 0) != 1)
        return false;
    return (p.revents & (POLLHUP | POLLERR)) || read(fd, b, sizeof(b)) <= 0;
}

Test(serve_limits, a_head_sent_a_byte_at_a_time_is_dropped_after_request_timeout, .timeout = 60,
     .fini = fini)
{
    static const char head[] = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
    char dir[512], data[600];
    struct lerr e = {{0}};
    int port;

    it_tmpdir("trickle", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    cr_assert_eq(db_ensure_dir(data, &e), 0, "%s", e.msg);
    char *argv[] = {"lambda-serve",      "--port", "0", "--data-dir", data,
                    "--request-timeout", "1s",     NULL};
    it_spawn(&serve, dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&serve, "msg=listening", 10000));
    port = (int)it_log_int(&serve, "msg=listening", "port");

    /* A byte every 100 ms: never idle long enough for an idle timeout. */
    fds[0] = slow_client(port);
    int64_t t0 = tm_now_ms(), closed_at = -1;
    for (size_t i = 0; i < sizeof(head) - 1 && tm_now_ms() - t0 < 5000; i++) {
        if (is_closed(fds[0])) {
            closed_at = tm_now_ms() - t0;
            break;
        }
        (void)!send(fds[0], head + i, 1, MSG_NOSIGNAL);
        poll(NULL, 0, 100);
    }
    cr_assert_geq(closed_at, 900, "closed after %lld ms, before request_timeout (1 s)",
                  (long long)closed_at);
    cr_expect_lt(closed_at, 2000, "closed after %lld ms", (long long)closed_at);
    cr_expect(it_log_has(&serve, "msg=request_timeout dropped=1"));
}

/* A version whose hourly rows make a year-long /top read 400,000 rows. */
static void big_batch(const char *data)
{
    struct lerr e = {{0}};
    sqlite3 *db;

    cr_assert_eq(db_open_rw(data, DB_BATCH, &db, &e), 0, "%s", e.msg);
    it_sql(db, "INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms) VALUES"
               " (1, 'published', 1, 1795255200000, 1795255200000)");
    it_sql(db, "WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i < 499),"
               " h(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM h WHERE j < 799)"
               " INSERT INTO hourly(merchant_id, hour_ms, valid_from, order_count, revenue_cents)"
               " SELECT 'm-' || i, 1764547200000 + j * 3600000, 1, 1, 10 FROM m, h");
    sqlite3_close(db);
}

static int serve_on(struct it_proc *p, const char *dir, const char *tag, char *data,
                    char *query_timeout)
{
    char *argv[] = {"lambda-serve", "--port",          "0",           "--data-dir",
                    data,           "--query-timeout", query_timeout, NULL};

    it_spawn(p, dir, tag, argv, NULL);
    cr_assert(it_wait_log(p, "msg=listening", 10000));
    return (int)it_log_int(p, "msg=listening", "port");
}

Test(serve_limits, a_year_long_top_holds_a_worker_at_most_query_timeout, .timeout = 60,
     .fini = fini)
{
    char dir[512], data[600], url[256], *body = NULL;
    struct lerr e = {{0}};
    struct it_proc unbounded = {0};
    long status;
    int port;

    it_tmpdir("qtimeout", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    cr_assert_eq(db_ensure_dir(data, &e), 0, "%s", e.msg);
    big_batch(data);
    static const char path[] = "/top?from=2025-11-21T00:00:00Z&to=2026-11-21T00:00:00Z&n=3";

    /* Unbounded, the answer is exact: every merchant has 800 orders. */
    port = serve_on(&unbounded, dir, "serve0", data, "0");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    int64_t t0 = tm_now_ms();
    cr_assert_eq(it_http_get(url, &body), 200, "%s", body);
    int64_t took = tm_now_ms() - t0;
    cr_expect(strstr(body, "{\"merchant_id\":\"m-0\",\"order_count\":800,\"revenue_cents\":8000}"),
              "%s", body);
    free(body);
    it_stop(&unbounded);
    cr_assert_gt(took, 20, "the fixture is too small to show a bound: %lld ms", (long long)took);

    port = serve_on(&serve, dir, "serve", data, "10ms");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    t0 = tm_now_ms();
    status = it_http_get(url, &body);
    int64_t bounded = tm_now_ms() - t0;
    cr_expect_eq(status, 503, "%s", body);
    cr_expect_str_eq(body, "{\"error\":\"the request took longer than query_timeout (10 ms)\"}");
    free(body);
    cr_expect_lt(bounded, took, "bounded %lld ms, unbounded %lld ms", (long long)bounded,
                 (long long)took);
    cr_expect(it_log_has(&serve, "msg=query_timeout"));
    /* Five hundred merchants' year, one ?ids= request: bounded the same way. */
    char ids[8192];
    size_t n = (size_t)snprintf(ids, sizeof(ids),
                                "http://127.0.0.1:%d/query?from=2025-11-21T00:00:00Z&"
                                "to=2026-11-21T00:00:00Z&ids=",
                                port);
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(ids + n, sizeof(ids) - n, "%sm-%d", i ? "," : "", i);
    cr_expect_eq(it_http_get(ids, &body), 503, "%s", body);
    cr_expect_str_eq(body, "{\"error\":\"the request took longer than query_timeout (10 ms)\"}");
    free(body);
    /* The worker is free again: a cheap request is answered. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/query/m-1", port);
    cr_expect_eq(it_http_get(url, &body), 200, "%s", body);
    free(body);
}
