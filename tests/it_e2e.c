/* it_e2e.c - the central promise of DESIGN.md section 3, end to end: every merchant's /query
 * answer equals the truth of what was produced, at every step, through SIGKILLs of the speed
 * layer, batch runs (one while speed is down, one killed mid-ingest and rerun), a publish under
 * query load, and a broker outage. Real binaries, real Kafka protocol, real sockets. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itlib.h"

#include <curl/curl.h>

static void curl_global_init_for_tests(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
}

struct stack {
    char dir[512], data[600], bs[256], url[128];
    struct it_proc kafka, speed, serve;
    struct it_truth truth;
    int seed, speed_starts;
};

static void start_speed(struct stack *s)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "speed%d", ++s->speed_starts);
    char *argv[] = {"lambda-speed", "--brokers",       s->bs,  "--data-dir",
                    s->data,        "--epoch-ms",      "1000", "--checkpoint-ms",
                    "100",          "--kafka-timeout", "5s",   NULL};
    it_spawn(&s->speed, s->dir, tag, argv, NULL);
}

static void start_stack(struct stack *s)
{
    char port[32];
    int64_t p;

    memset(s, 0, sizeof(*s));
    it_tmpdir("e2e", s->dir);
    snprintf(s->data, sizeof(s->data), "%s/data", s->dir);
    it_devkafka(&s->kafka, s->dir, 4, s->bs);
    start_speed(s);
    char *argv[] = {"lambda-serve", "--port",     "0",    "--data-dir",
                    s->data,        "--epoch-ms", "1000", NULL};
    it_spawn(&s->serve, s->dir, "serve", argv, NULL);
    cr_assert(it_wait_log(&s->serve, "listening", 15000), "lambda-serve did not start");
    p = it_log_int(&s->serve, "listening", "port");
    cr_assert(p > 0);
    snprintf(port, sizeof(port), "%" PRId64, p);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%s", port);
}

static void stop_stack(struct stack *s)
{
    it_stop(&s->serve);
    it_stop(&s->speed);
    it_stop(&s->kafka);
    it_truth_free(&s->truth);
}

/* Produces count events with a new seed, in the background when bg is not NULL; the truth
 * of the run is added to s->truth once it is done (gen_done). */
static void gen(struct stack *s, int count, int rate, struct it_proc *bg)
{
    char seed[16], cnt[16], rt[16], truth[600], tag[32], start[32];

    s->seed++;
    snprintf(seed, sizeof(seed), "%d", s->seed);
    snprintf(cnt, sizeof(cnt), "%d", count);
    snprintf(rt, sizeof(rt), "%d", rate);
    snprintf(truth, sizeof(truth), "%s/truth%d", s->dir, s->seed);
    snprintf(tag, sizeof(tag), "gen%d", s->seed);
    /* each run continues the virtual clock where the previous one ended */
    snprintf(start, sizeof(start), "%" PRId64, (int64_t)1795255200000 + (int64_t)s->seed * 600000);
    char *argv[] = {"lambda-gen", "--brokers",     s->bs,   "--count",    cnt,   "--rate",
                    rt,           "--merchants",   "60",    "--late-pct", "2",   "--dup-pct",
                    "4",          "--invalid-pct", "2",     "--seed",     seed,  "--start-time",
                    start,        "--time-step",   "100ms", "--truth",    truth, NULL};
    struct it_proc p;
    it_spawn(bg ? bg : &p, s->dir, tag, argv, NULL);
    if (!bg)
        cr_assert_eq(it_wait_exit(&p, 60000), 0, "lambda-gen failed");
}

static void gen_done(struct stack *s, struct it_proc *bg)
{
    char truth[600];
    struct it_truth t;

    if (bg)
        cr_assert_eq(it_wait_exit(bg, 60000), 0, "lambda-gen failed");
    snprintf(truth, sizeof(truth), "%s/truth%d", s->dir, s->seed);
    it_truth_load(&t, truth);
    it_truth_add(&s->truth, &t);
    it_truth_free(&t);
}

/* Asks /query?ids= for every merchant of the truth; counts the ones that differ. */
static size_t mismatches(struct stack *s, char *first, size_t first_size)
{
    size_t bad = 0, cap = 64 + s->truth.nmerchants * 70;
    char *url = malloc(cap), *body = NULL;
    size_t n = (size_t)snprintf(url, cap, "%s/query?ids=", s->url);
    json_t *doc, *arr;

    for (size_t i = 0; i < s->truth.nmerchants; i++)
        n += (size_t)snprintf(url + n, cap - n, "%s%s", i ? "," : "",
                              s->truth.merchants[i].merchant_id);
    long status = it_http_get(url, &body);
    free(url);
    doc = status == 200 ? json_loads(body, 0, NULL) : NULL;
    arr = json_object_get(doc, "merchants");
    if (!json_is_array(arr) || json_array_size(arr) != s->truth.nmerchants) {
        snprintf(first, first_size, "status %ld body %.200s", status, body);
        free(body);
        json_decref(doc);
        return s->truth.nmerchants ? s->truth.nmerchants : 1;
    }
    for (size_t i = 0; i < s->truth.nmerchants; i++) {
        const struct it_truth_merchant *m = &s->truth.merchants[i];
        json_t *a = json_array_get(arr, i);
        int64_t c = json_integer_value(json_object_get(a, "order_count"));
        int64_t r = json_integer_value(json_object_get(a, "revenue_cents"));
        if (c != m->order_count || r != m->revenue_cents) {
            if (!bad)
                snprintf(first, first_size,
                         "%s: got %" PRId64 "/%" PRId64 " want %" PRId64 "/%" PRId64,
                         m->merchant_id, c, r, m->order_count, m->revenue_cents);
            bad++;
        }
    }
    free(body);
    json_decref(doc);
    return bad;
}

static bool all_exact(void *arg)
{
    char first[300];

    return mismatches(arg, first, sizeof(first)) == 0;
}

static void assert_exact(struct stack *s, const char *step)
{
    char first[300] = "";

    if (it_wait_until(all_exact, s, 60000))
        return;
    size_t bad = mismatches(s, first, sizeof(first));
    cr_assert_fail("after %s: %zu of %zu merchants differ from the truth; first: %s", step, bad,
                   s->truth.nmerchants, first);
}

static void batch_run(struct stack *s, const char *tag)
{
    char *argv[] = {"lambda-batch", "run",  "--brokers",       s->bs, "--data-dir", s->data,
                    "--epoch-ms",   "1000", "--kafka-timeout", "5s",  NULL};
    cr_assert_eq(it_run(s->dir, tag, argv, NULL, 120000), 0, "lambda-batch %s failed", tag);
}

/* Waits until the running speed layer has started n more epochs. */
static void wait_epochs(struct stack *s, int n)
{
    int target = it_log_count(&s->speed, "msg=epoch_started") + n;

    cr_assert(it_wait_log_count(&s->speed, "msg=epoch_started", target, 30000),
              "the speed layer started no epoch");
}

static void kill_speed(struct stack *s)
{
    cr_assert_eq(it_signal(&s->speed, SIGKILL, 5000), 128 + SIGKILL);
}

Test(e2e, every_answer_is_exact_through_crashes_batches_and_restarts, .timeout = 600)
{
    struct stack s;
    struct it_proc bg;

    srand(12345);
    start_stack(&s);
    gen(&s, 3000, 0, NULL);
    gen_done(&s, NULL);
    assert_exact(&s, "the first stream");

    /* kill 1: mid-stream */
    gen(&s, 3000, 3000, &bg);
    it_wait_log(&bg, "msg=started", 10000);
    kill_speed(&s);
    start_speed(&s);
    gen_done(&s, &bg);
    assert_exact(&s, "speed kill 1");

    batch_run(&s, "batch1");
    assert_exact(&s, "batch 1 (speed running)");

    /* kill 2 mid-stream, then batch 2 while the speed layer is down */
    gen(&s, 3000, 3000, &bg);
    it_wait_log(&bg, "msg=started", 10000);
    kill_speed(&s);
    gen_done(&s, &bg);
    batch_run(&s, "batch2");
    assert_exact(&s, "batch 2 (speed down)");
    start_speed(&s);
    assert_exact(&s, "speed restart after batch 2");

    /* kills 3 and 4, batch 3 killed mid-ingest and rerun */
    gen(&s, 4000, 2000, &bg);
    it_wait_log(&bg, "msg=started", 10000);
    kill_speed(&s);
    start_speed(&s);
    gen_done(&s, &bg);
    assert_exact(&s, "speed kill 3");
    /* two more epochs: the newest boundary is now past everything produced so far, so the
     * next batch has data to ingest and can be killed in the middle of it */
    wait_epochs(&s, 2);
    {
        char *argv[] = {"lambda-batch", "run",  "--brokers",  s.bs,     "--data-dir", s.data,
                        "--epoch-ms",   "1000", "--pause-at", "ingest", NULL};
        struct it_proc b;
        it_spawn(&b, s.dir, "batch3-killed", argv, NULL);
        cr_assert(it_wait_log(&b, "paused", 60000), "batch did not reach ingest");
        it_signal(&b, SIGKILL, 5000);
    }
    kill_speed(&s);
    start_speed(&s);
    batch_run(&s, "batch3");
    assert_exact(&s, "batch 3 rerun after a kill mid-ingest");

    /* kill 5 */
    gen(&s, 2000, 0, NULL);
    kill_speed(&s);
    start_speed(&s);
    gen_done(&s, NULL);
    assert_exact(&s, "speed kill 5");
    stop_stack(&s);
}

struct watcher {
    struct stack *s;
    volatile int stop;
    int64_t requests, non_2xx, went_down;
    char first[300];
    int64_t last[64];
};

/* Queries m-1..m-60 over and over (bounded in count and time), checking every answer is 2xx
 * and that no merchant's order count ever goes down between two successive answers. */
static void *watch(void *arg)
{
    struct watcher *w = arg;
    char url[1024];
    size_t n = (size_t)snprintf(url, sizeof(url), "%s/query?ids=", w->s->url);
    int64_t end = it_now_ms() + 120000;

    for (int m = 1; m <= 60; m++)
        n += (size_t)snprintf(url + n, sizeof(url) - n, "%sm-%d", m > 1 ? "," : "", m);
    while (!w->stop && w->requests < 20000 && it_now_ms() < end) {
        char *body = NULL;
        long status = it_http_get(url, &body);
        json_t *doc = json_loads(body, 0, NULL), *arr = json_object_get(doc, "merchants");
        w->requests++;
        if (status < 200 || status > 299 || json_array_size(arr) != 60) {
            if (!w->non_2xx++)
                snprintf(w->first, sizeof(w->first), "status %ld: %.200s", status, body);
        } else {
            for (int m = 0; m < 60; m++) {
                int64_t c =
                    json_integer_value(json_object_get(json_array_get(arr, m), "order_count"));
                if (c < w->last[m] && !w->went_down++)
                    snprintf(w->first, sizeof(w->first), "m-%d went from %" PRId64 " to %" PRId64,
                             m + 1, w->last[m], c);
                w->last[m] = c;
            }
        }
        json_decref(doc);
        free(body);
    }
    return NULL;
}

Test(e2e, answers_stay_2xx_and_never_go_down_while_batch_publishes, .timeout = 600)
{
    struct stack s;
    struct it_proc bg;
    struct watcher w;
    pthread_t th;

    curl_global_init_for_tests();
    start_stack(&s);
    gen(&s, 3000, 0, NULL);
    gen_done(&s, NULL);
    assert_exact(&s, "the first stream");
    memset(&w, 0, sizeof(w));
    w.s = &s;
    cr_assert_eq(pthread_create(&th, NULL, watch, &w), 0);
    gen(&s, 4000, 1000, &bg);
    batch_run(&s, "batch1");
    batch_run(&s, "batch2");
    gen_done(&s, &bg);
    batch_run(&s, "batch3");
    w.stop = 1;
    pthread_join(th, NULL);
    cr_assert_gt(w.requests, 10);
    cr_assert_eq(it_wait_exit(&s.serve, 0), -1, "lambda-serve died: exit %d",
                 it_wait_exit(&s.serve, 0));
    cr_assert_eq(w.non_2xx, 0, "%" PRId64 " of %" PRId64 " answers were not 2xx; first: %s",
                 w.non_2xx, w.requests, w.first);
    cr_assert_eq(w.went_down, 0, "a count went down: %s", w.first);
    assert_exact(&s, "three publishes under load");
    stop_stack(&s);
}

static bool time_passed(void *arg)
{
    return it_now_ms() >= *(int64_t *)arg;
}

Test(e2e, a_broker_outage_loses_nothing, .timeout = 600)
{
    struct stack s;
    struct it_proc bg;
    int64_t until;

    start_stack(&s);
    gen(&s, 2000, 0, NULL);
    gen_done(&s, NULL);
    assert_exact(&s, "the first stream");
    gen(&s, 3000, 300, &bg);
    cr_assert(it_wait_log(&bg, "msg=started", 10000));
    kill(s.kafka.pid, SIGUSR1);
    cr_assert(it_wait_log(&s.kafka, "brokers_down", 5000));
    /* The outage itself lasts 10 s: that is the scenario, not a guess at a delay. */
    until = it_now_ms() + 10000;
    it_wait_until(time_passed, &until, 11000);
    kill(s.kafka.pid, SIGUSR2);
    cr_assert(it_wait_log(&s.kafka, "brokers_up", 5000));
    gen_done(&s, &bg);
    assert_exact(&s, "the outage");
    batch_run(&s, "batch1");
    assert_exact(&s, "a batch after the outage");
    stop_stack(&s);
}
