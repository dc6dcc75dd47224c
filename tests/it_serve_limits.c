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
    (void)!write(fd, head, sizeof(head) - 1);
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
