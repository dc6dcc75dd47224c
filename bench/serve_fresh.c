/* serve_fresh.c - for bench/serve.sh: how soon an order produced to Kafka shows in lambda-serve,
 * as a dashboard sees it. Subscribes to GET /events, then N times: produces one order of
 * merchant m-fresh and waits for the first event after which GET /query/m-fresh counts it; the
 * time from just before the produce call to that event's arrival is one sample. Prints
 * "orders=N p50_ms=.. p99_ms=.. max_ms=..", or exits 1 when an order takes longer than 10 s.
 *
 *   serve_fresh BOOTSTRAP PORT N */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct buf {
    char data[65536];
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t len = size * n;

    if (b->len + len >= sizeof(b->data))
        len = sizeof(b->data) - 1 - b->len;
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return size * n;
}

/* m-fresh's all-time order count, or -1. */
static long long count_of(CURL *c, const char *url)
{
    struct buf b = {.len = 0};
    const char *p;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (curl_easy_perform(c) != CURLE_OK || !(p = strstr(b.data, "\"order_count\":")))
        return -1;
    return atoll(p + strlen("\"order_count\":"));
}

/* Waits up to timeout_ms for more of the event stream; true when an event ("data:") came. */
static int wait_event(int fd, double timeout_ms)
{
    static char pending[8192];
    static size_t npending;
    double end = now_ms() + timeout_ms;

    for (;;) {
        char *ev = strstr(pending, "\n\n");
        if (ev) {
            int is_data = strstr(pending, "data:") && strstr(pending, "data:") < ev;
            size_t used = (size_t)(ev + 2 - pending);
            memmove(pending, ev + 2, npending - used + 1);
            npending -= used;
            if (is_data)
                return 1;
            continue;
        }
        double left = end - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left + 1) <= 0)
            continue;
        ssize_t n = read(fd, pending + npending, sizeof(pending) - 1 - npending);
        if (n <= 0)
            return -1;
        npending += (size_t)n;
        pending[npending] = '\0';
    }
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    char err[512], url[128], req[128], msg[256], oid[64];
    struct sockaddr_in sa = {.sin_family = AF_INET};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    double *ms;
    int n, fd;
    CURL *c;

    if (argc != 4)
        return fprintf(stderr, "usage: serve_fresh BOOTSTRAP PORT N\n"), 2;
    n = atoi(argv[3]);
    ms = calloc((size_t)n, sizeof(*ms));
    rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof(err));
    rd_kafka_conf_set(conf, "linger.ms", "0", err, sizeof(err));
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))))
        return fprintf(stderr, "serve_fresh: %s\n", err), 1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%s/query/m-fresh", argv[2]);
    c = curl_easy_init();
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_port = htons((uint16_t)atoi(argv[2]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return perror("serve_fresh: connect"), 1;
    snprintf(req, sizeof(req), "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        return perror("serve_fresh: write"), 1;
    wait_event(fd, 2000); /* the newest event, sent at once */
    long long base = count_of(c, url);
    if (base < 0)
        return fprintf(stderr, "serve_fresh: cannot read %s\n", url), 1;
    for (int i = 0; i < n; i++) {
        int len;
        snprintf(oid, sizeof(oid), "fresh-%d-%d", (int)getpid(), i);
        len = snprintf(msg, sizeof(msg),
                       "{\"order_id\":\"%s\",\"merchant_id\":\"m-fresh\",\"amount_cents\":100,"
                       "\"event_time\":%" PRId64 "}",
                       oid, wall_ms());
        double t0 = now_ms();
        if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("orders"), RD_KAFKA_V_KEY("m-fresh", 7),
                              RD_KAFKA_V_VALUE(msg, (size_t)len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) != 0)
            return fprintf(stderr, "serve_fresh: produce failed\n"), 1;
        rd_kafka_poll(rk, 0);
        for (;;) {
            int got = wait_event(fd, 10000 - (now_ms() - t0));
            rd_kafka_poll(rk, 0);
            if (got <= 0)
                return fprintf(stderr, "serve_fresh: order %d not seen in 10 s\n", i), 1;
            double t1 = now_ms();
            if (count_of(c, url) >= base + i + 1) {
                ms[i] = t1 - t0;
                break;
            }
        }
    }
    rd_kafka_flush(rk, 5000);
    qsort(ms, (size_t)n, sizeof(*ms), cmp);
    printf("orders=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", n, ms[n / 2],
           ms[(int)(n * 0.99) < n ? (int)(n * 0.99) : n - 1], ms[n - 1]);
    rd_kafka_destroy(rk);
    curl_easy_cleanup(c);
    close(fd);
    free(ms);
    return 0;
}
