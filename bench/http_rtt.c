/* http_rtt.c - for bench/shards.sh: one HTTP hop done by the bare libraries the router is made
 * of, the yardstick of "the router adds at most one loopback round trip". One libcurl easy
 * handle (TCP_NODELAY, its connection kept alive, as the router's) sends N GETs of URL one at a
 * time to bench/bare_mhd.c (libmicrohttpd answering a fixed 200-byte body on the second call of
 * its access handler, as lambda-serve answers) and prints "p50_ms p99_ms" of the N requests: the
 * kernel's round trip plus what libcurl and libmicrohttpd cost per request, with no router, JSON
 * or database work. With GAP_US, it waits a random time (exponential, of mean GAP_US
 * microseconds) before each request, as bench/rtt.c does. Exits 1 on any transfer error.
 *
 *   http_rtt URL N [GAP_US] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <curl/curl.h>

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data, (void)arg;
    return size * nmemb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    double *us, gap_us;
    long status = 0;
    CURLcode cc;
    CURL *h;
    int n;

    if (argc < 3 || argc > 4 || (n = atoi(argv[2])) < 1) {
        fprintf(stderr, "usage: http_rtt URL N [GAP_US]\n");
        return 2;
    }
    gap_us = argc == 4 ? atof(argv[3]) : 0;
    srand(42);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!(us = malloc(sizeof(*us) * (size_t)n)) || !(h = curl_easy_init())) {
        fprintf(stderr, "http_rtt: out of memory\n");
        return 1;
    }
    curl_easy_setopt(h, CURLOPT_URL, argv[1]);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    for (int i = -100; i < n; i++) { /* 100 first, untimed: the connection, warm caches */
        double t0;
        if (gap_us > 0 && i >= 0) {
            double u = (rand() + 1.0) / (RAND_MAX + 2.0), gap_ns = -gap_us * log(u) * 1000;
            struct timespec ts = {(time_t)(gap_ns / 1e9), (long)fmod(gap_ns, 1e9)};
            nanosleep(&ts, NULL);
        }
        t0 = now_us();
        if ((cc = curl_easy_perform(h)) != CURLE_OK ||
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200) {
            fprintf(stderr, "http_rtt: GET %s: %s (HTTP %ld)\n", argv[1], curl_easy_strerror(cc),
                    status);
            return 1;
        }
        if (i >= 0)
            us[i] = now_us() - t0;
    }
    curl_easy_cleanup(h);
    qsort(us, (size_t)n, sizeof(*us), cmp_double);
    printf("%.3f %.3f\n", us[(n - 1) / 2] / 1000, us[(int)((n - 1) * 0.99)] / 1000);
    free(us);
    curl_global_cleanup();
    return 0;
}
