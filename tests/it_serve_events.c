/* it_serve_events.c - GET /events (DESIGN.md section 5): an event per committed change within
 * 100 ms, at most max_event_clients subscribers, subscribers that never read cost no CPU and
 * hold up no answer, and a server with subscribers open still stops at once. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "itlib.h"
#include "tm.h"

#define MIN0 1795251600000LL /* 2026-11-21T09:00:00Z */

struct srv {
    struct it_proc p;
    char dir[512], data[600];
    int port;
    int64_t seq;
};

static void commit_order(struct srv *s, const char *merchant)
{
    sqlite3 *db = NULL;
    struct lerr e = {{0}};

    cr_assert_eq(db_open_rw(s->data, DB_SPEED, &db, &e), 0, "%s", e.msg);
    s->seq++;
    it_sql(db,
           "BEGIN; INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents,"
           " seq) VALUES ('%s', %lld, 7, 1, 100, %lld) ON CONFLICT DO UPDATE SET"
           " order_count = order_count + 1, revenue_cents = revenue_cents + 100, seq = %lld;"
           "INSERT OR REPLACE INTO meta VALUES ('checkpoint_ms', %lld); COMMIT",
           merchant, MIN0, (long long)s->seq, (long long)s->seq, (long long)tm_now_ms());
    sqlite3_close(db);
}

static void srv_start_with(struct srv *s, char *max_clients, char *cache)
{
    memset(s, 0, sizeof(*s));
    it_tmpdir("serve-events", s->dir);
    snprintf(s->data, sizeof(s->data), "%s/data", s->dir);
    struct lerr e = {{0}};
    cr_assert_eq(db_ensure_dir(s->data, &e), 0);
    commit_order(s, "m-1");
    char *argv[] = {"lambda-serve",
                    "--port",
                    "0",
                    "--data-dir",
                    s->data,
                    "--max-event-clients",
                    max_clients,
                    "--serve-cache-merchants",
                    cache,
                    NULL};
    it_spawn(&s->p, s->dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&s->p, "msg=listening", 10000), "lambda-serve did not start");
    s->port = (int)it_log_int(&s->p, "msg=listening", "port");
}

static void srv_start(struct srv *s, char *max_clients)
{
    srv_start_with(s, max_clients, "1000000");
}

/* A connection that sent GET /events. */
static int subscribe(const struct srv *s)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    const char req[] = "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    return fd;
}

/* Reads what fd has within timeout_ms, appending to buf (size bytes); true when it now holds
 * needle after from. */
static bool read_until(int fd, char *buf, size_t size, size_t from, const char *needle,
                       int64_t timeout_ms)
{
    int64_t end = tm_now_ms() + timeout_ms;
    size_t len = strlen(buf);

    while (!strstr(buf + from, needle)) {
        int64_t left = end - tm_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return false;
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
    }
    return true;
}

static int64_t cpu_ms(pid_t pid)
{
    char path[64], *stat;
    unsigned long long ut = 0, st = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    stat = it_read_file(path, NULL);
    cr_assert_not_null(stat);
    const char *p = strrchr(stat, ')');
    cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st),
                 2);
    free(stat);
    return (int64_t)(ut + st) * 1000 / sysconf(_SC_CLK_TCK);
}

Test(serve_events, an_event_per_commit_within_100_ms, .timeout = 60)
{
    static char buf[65536];
    struct srv s;
    char url[128], *body = NULL;

    srv_start(&s, "64");
    int fd = subscribe(&s);
    buf[0] = '\0';
    cr_assert(read_until(fd, buf, sizeof(buf), 0, "\n\n", 5000), "no answer: %s", buf);
    cr_assert(strstr(buf, "HTTP/1.1 200"), "%s", buf);
    cr_assert(strstr(buf, "Content-Type: text/event-stream"), "%s", buf);
    /* The newest state comes at once. */
    size_t at = strstr(buf, "\r\n\r\n") - buf;
    cr_assert(read_until(fd, buf, sizeof(buf), at, "\"checkpoint_ms\":", 5000), "%s", buf);
    cr_assert(strstr(buf + at, "data: {\"seq\":"), "%s", buf);
    cr_assert(strstr(buf + at, "\"batch_version\":null"), "%s", buf);
    for (int i = 0; i < 5; i++) {
        size_t from = strlen(buf);
        int64_t t0 = tm_now_ms();
        commit_order(&s, "m-2");
        cr_assert(read_until(fd, buf, sizeof(buf), from, "\n\n", 2000), "no event after a commit");
        int64_t took = tm_now_ms() - t0;
        cr_expect_leq(took, 100, "event %d came %lld ms after its commit", i, (long long)took);
        /* The event's snapshot has the order: /query answers from the same memory. */
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/query/m-2", s.port);
        cr_assert_eq(it_http_get(url, &body), 200);
        char want[64];
        snprintf(want, sizeof(want), "\"order_count\":%d,", i + 1);
        cr_expect(strstr(body, want), "after event %d: %s", i, body);
        free(body);
    }
    /* ?once=1: the newest event as plain JSON, for a page that cannot stream. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/events?once=1", s.port);
    cr_assert_eq(it_http_get(url, &body), 200);
    cr_expect(strstr(body, "\"recent\":{\"window_ms\":300000,"), "%s", body);
    free(body);
    close(fd);
    cr_assert_eq(it_signal(&s.p, SIGTERM, 10000), 0);
}

Test(serve_events, past_max_event_clients_503_and_idle_ones_cost_nothing, .timeout = 60)
{
    static char buf[8192];
    struct srv s;
    int fds[3];
    char url[128], *body = NULL;

    srv_start(&s, "3");
    for (int i = 0; i < 3; i++)
        fds[i] = subscribe(&s); /* and never read again */
    int extra = subscribe(&s);
    buf[0] = '\0';
    cr_assert(read_until(extra, buf, sizeof(buf), 0, "\r\n\r\n", 5000), "%s", buf);
    cr_expect(strstr(buf, "HTTP/1.1 503"), "the fourth subscriber got %s", buf);
    close(extra);
    /* Changes go on while the three never read: answers stay quick. */
    for (int i = 0; i < 20; i++)
        commit_order(&s, "m-3");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/query/m-3", s.port);
    int64_t t0 = tm_now_ms();
    cr_assert_eq(it_http_get(url, &body), 200);
    cr_expect_leq(tm_now_ms() - t0, 1000);
    free(body);
    /* Suspended, not polled: an idle server with three open streams spends next to no CPU
     * (libmicrohttpd 0.9.75 spins on a content reader that returns 0). */
    int64_t c0 = cpu_ms(s.p.pid);
    /* A fixed one-second window to measure CPU over: a measurement, not a wait for a state. */
    nanosleep(&(struct timespec){.tv_sec = 1}, NULL);
    int64_t used = cpu_ms(s.p.pid) - c0;
    cr_expect_leq(used, 200, "%lld ms of CPU in 1 s with 3 idle subscribers", (long long)used);
    /* A stop with subscribers open: at once, exit 0. */
    t0 = tm_now_ms();
    cr_assert_eq(it_signal(&s.p, SIGTERM, 10000), 0);
    cr_expect_leq(tm_now_ms() - t0, 5000);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
}

/* Past serve_cache_merchants the state is dropped, said once, and answers read SQLite: exact
 * still, and events still come. */
Test(serve_events, past_serve_cache_merchants_answers_read_sqlite, .timeout = 60)
{
    static char buf[65536];
    struct srv s;
    char url[128], *body = NULL;

    srv_start_with(&s, "64", "2");
    commit_order(&s, "m-2");
    commit_order(&s, "m-3"); /* three merchants now */
    cr_assert(it_wait_log(&s.p, "msg=cache_off", 5000), "the limit went unsaid");
    int fd = subscribe(&s);
    buf[0] = '\0';
    cr_assert(read_until(fd, buf, sizeof(buf), 0, "data: ", 5000), "%s", buf);
    size_t from = strlen(buf);
    commit_order(&s, "m-3");
    cr_assert(read_until(fd, buf, sizeof(buf), from, "data: ", 2000), "no event past the limit");
    for (int i = 1; i <= 3; i++) {
        char want[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/query/m-%d", s.port, i);
        cr_assert_eq(it_http_get(url, &body), 200);
        snprintf(want, sizeof(want), "\"order_count\":%d,", i == 3 ? 2 : 1);
        cr_expect(strstr(body, want), "m-%d: %s", i, body);
        free(body);
    }
    close(fd);
    cr_assert_eq(it_log_count(&s.p, "msg=cache_off"), 1);
    cr_assert_eq(it_signal(&s.p, SIGTERM, 10000), 0);
}
