/* rtt.c - for bench/shards.sh: the loopback round trip the router's goal is counted in. A child
 * process accepts one TCP connection on 127.0.0.1 and answers every REQ_BYTES-byte message
 * with an ANS_BYTES-byte one (about a GET /query and its answer); the parent sends N messages
 * one at a time over that connection (TCP_NODELAY on both ends, as the router and the shards
 * set it) and prints "p50_ms p99_ms" of the N round trips: the kernel's part of one hop (two
 * sends, two wake-ups), with no HTTP, JSON or database work. With GAP_US, it waits a random
 * time (exponential, of mean GAP_US microseconds) before each message, as requests arriving
 * at random leave both ends idle between them (a wake-up from idle costs more than one from a
 * busy loop, on a VM most). Exits 1 on any socket error.
 *
 *   rtt N [GAP_US] */
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { REQ_BYTES = 128, ANS_BYTES = 256 };

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Reads exactly n bytes; 0, or -1 on an error or the peer's close. */
static int read_full(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t got = read(fd, buf, n);
        if (got <= 0)
            return -1;
        buf += got;
        n -= (size_t)got;
    }
    return 0;
}

static void serve(int lfd)
{
    char req[REQ_BYTES], ans[ANS_BYTES] = {0};
    int one = 1, fd = accept(lfd, NULL, NULL);

    if (fd < 0)
        _exit(1);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    while (read_full(fd, req, sizeof(req)) == 0)
        if (write(fd, ans, sizeof(ans)) != (ssize_t)sizeof(ans))
            _exit(1);
    _exit(0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    char req[REQ_BYTES] = {0}, ans[ANS_BYTES];
    int n, one = 1, lfd, fd;
    double *us, gap_us;
    pid_t child;

    if (argc < 2 || argc > 3 || (n = atoi(argv[1])) < 1) {
        fprintf(stderr, "usage: rtt N [GAP_US]\n");
        return 2;
    }
    gap_us = argc == 3 ? atof(argv[2]) : 0;
    srand(42);
    us = malloc(sizeof(*us) * (size_t)n);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (!us || lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) {
        perror("rtt: cannot listen on 127.0.0.1");
        return 1;
    }
    child = fork();
    if (child == 0)
        serve(lfd);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (child < 0 || fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("rtt: cannot connect to 127.0.0.1");
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (int i = 0; i < n; i++) {
        double t0;
        if (gap_us > 0) {
            double u = (rand() + 1.0) / (RAND_MAX + 2.0), gap_ns = -gap_us * log(u) * 1000;
            struct timespec ts = {(time_t)(gap_ns / 1e9), (long)fmod(gap_ns, 1e9)};
            nanosleep(&ts, NULL);
        }
        t0 = now_us();
        if (write(fd, req, sizeof(req)) != (ssize_t)sizeof(req) ||
            read_full(fd, ans, sizeof(ans)) != 0) {
            perror("rtt: round trip failed");
            kill(child, SIGTERM);
            return 1;
        }
        us[i] = now_us() - t0;
    }
    close(fd); /* the child sees the close and exits */
    waitpid(child, NULL, 0);
    qsort(us, (size_t)n, sizeof(*us), cmp_double);
    printf("%.3f %.3f\n", us[(n - 1) / 2] / 1000, us[(int)((n - 1) * 0.99)] / 1000);
    free(us);
    return 0;
}
