/* it_soak.c - a long run with failures injected while a checker looks for gaps, duplicates and
 * regressions (make soak; not part of make test).
 *
 * For SOAK_MINUTES (default 10), a paced stream with late, duplicate and invalid orders
 * (lambda-gen, one seeded segment after another) flows into the real stack on lambda-devkafka;
 * a thread queries every merchant without pause; lambda-batch runs every 20 s; and 20 kill -9s,
 * at seeded random moments (SOAK_SEED), go to lambda-speed, a running lambda-batch (at a random
 * moment or blocked at one of its pause points) and lambda-serve in turn, plus one 10-second
 * broker outage (lambda-devkafka's SIGUSR1/SIGUSR2) between segments. After each segment - so
 * after each kill - every merchant's answer must equal the truth of what was produced. The
 * querying thread checks that no answer is ever non-2xx outside a killed server's restart and
 * that no merchant's count ever goes down. RSS of every process and the data files' sizes are
 * sampled and must stay under fixed bounds. It prints one summary line.
 *
 * What it proves: over this run, no kill of any layer, batch run or outage loses, doubles or
 * rolls back an answer, and memory and speed.db stay bounded. What it cannot: the broker is in
 * memory and never killed (its durability is out of scope), the machine never loses power
 * (it_powerloss does that), one seed is one schedule of kills, and bounds over minutes are not
 * bounds over months. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/itlib.h"

#define KILLS          20
#define BATCH_EVERY_MS 20000
#define RATE           400 /* events per second while a segment runs */
#define MERCHANTS      40
#define RSS_BOUND_MB   400
#define SPEED_DB_MB    256

enum { V_SPEED, V_BATCH, V_SERVE, V_COUNT };

struct soak {
    char dir[512], data[600], bs[256];
    struct it_proc kafka, speed, serve, batch;
    bool batch_running, batch_in_outage;
    int64_t batch_started_ms;
    int speed_starts, serve_starts, batch_starts, seed;
    struct it_truth truth;
    /* Shared with the query thread. */
    pthread_mutex_t mu;
    char url[128];
    atomic_bool serve_down; /* between a serve kill and its restarted server's first answer */
    atomic_int url_gen;     /* bumped with every new url */
    atomic_bool stop;
    atomic_long requests, non2xx, excused, decreases;
    char first_bad[300];
    int64_t last_count[MERCHANTS + 1];
    /* Figures. */
    int kills[V_COUNT], batch_runs, batch_failed, exact_checks, exact_ok;
    long peak_rss_kb[4]; /* speed, serve, batch, devkafka */
    long speed_rss_first_kb, speed_rss_last_kb;
    int64_t max_speed_db, max_data_dir;
};

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = 0;
    FILE *f;

    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return 0;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static int64_t file_size(const char *dir, const char *name)
{
    char path[800];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static int64_t dir_size(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int64_t n = 0;

    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.')
            n += file_size(dir, de->d_name);
    if (d)
        closedir(d);
    return n;
}

static void sample(struct soak *s)
{
    pid_t pids[4] = {s->speed.pid, s->serve.pid, s->batch_running ? s->batch.pid : 0, s->kafka.pid};
    int64_t sp = file_size(s->data, "speed.db") + file_size(s->data, "speed.db-wal"),
            all = dir_size(s->data);

    for (int i = 0; i < 4; i++) {
        long kb = rss_kb(pids[i]);
        if (kb > s->peak_rss_kb[i])
            s->peak_rss_kb[i] = kb;
    }
    if (s->speed.pid > 0) {
        long kb = rss_kb(s->speed.pid);
        if (!s->speed_rss_first_kb)
            s->speed_rss_first_kb = kb;
        if (kb)
            s->speed_rss_last_kb = kb;
    }
    if (sp > s->max_speed_db)
        s->max_speed_db = sp;
    if (all > s->max_data_dir)
        s->max_data_dir = all;
}

static void start_speed(struct soak *s)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "speed%d", ++s->speed_starts);
    char *argv[] = {"lambda-speed", "--brokers",       s->bs,  "--data-dir",
                    s->data,        "--epoch-ms",      "1000", "--checkpoint-ms",
                    "100",          "--kafka-timeout", "5s",   NULL};
    it_spawn(&s->speed, s->dir, tag, argv, NULL);
}

static void start_serve(struct soak *s)
{
    char tag[32];
    int64_t port;

    snprintf(tag, sizeof(tag), "serve%d", ++s->serve_starts);
    char *argv[] = {"lambda-serve", "--port",     "0",    "--data-dir",
                    s->data,        "--epoch-ms", "1000", NULL};
    it_spawn(&s->serve, s->dir, tag, argv, NULL);
    cr_assert(it_wait_log(&s->serve, "listening", 15000), "lambda-serve did not start");
    port = it_log_int(&s->serve, "listening", "port");
    cr_assert(port > 0);
    pthread_mutex_lock(&s->mu);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%" PRId64, port);
    atomic_fetch_add(&s->url_gen, 1);
    pthread_mutex_unlock(&s->mu);
}

/* The restarted server's first answer ends the excused window. */
static void serve_back(struct soak *s)
{
    char url[160];
    int64_t end = it_now_ms() + 15000;

    pthread_mutex_lock(&s->mu);
    snprintf(url, sizeof(url), "%s/query/m-1", s->url);
    pthread_mutex_unlock(&s->mu);
    while (it_http_get(url, NULL) != 200)
        cr_assert(it_now_ms() < end, "the restarted lambda-serve does not answer");
    atomic_store(&s->serve_down, false);
}

/* Starts a batch run; pause_at (or NULL) blocks it there until it is killed. */
static void start_batch(struct soak *s, const char *pause_at)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "batch%d", ++s->batch_starts);
    char *argv[] = {"lambda-batch",
                    "run",
                    "--brokers",
                    s->bs,
                    "--data-dir",
                    s->data,
                    "--epoch-ms",
                    "1000",
                    "--kafka-timeout",
                    "5s",
                    pause_at ? "--pause-at" : NULL,
                    (char *)pause_at,
                    NULL};
    it_spawn(&s->batch, s->dir, tag, argv, NULL);
    s->batch_running = true;
    s->batch_in_outage = false;
    s->batch_started_ms = it_now_ms();
}

/* Background duties: reap a finished batch run, start one every 20 s, sample. */
static void tick(struct soak *s, bool outage)
{
    static int64_t last_sample;

    if (s->batch_running && outage)
        s->batch_in_outage = true;
    if (s->batch_running) {
        int rc = it_wait_exit(&s->batch, 0);
        if (rc >= 0) {
            s->batch_running = false;
            s->batch_runs++;
            /* During a broker outage a run fails with a message; otherwise it must not. */
            if (rc != 0 && rc != 128 + SIGKILL) {
                s->batch_failed++;
                cr_assert(s->batch_in_outage, "batch%d exited %d outside an outage (logs in %s)",
                          s->batch_starts, rc, s->dir);
            }
        }
    }
    if (!s->batch_running && it_now_ms() - s->batch_started_ms >= BATCH_EVERY_MS)
        start_batch(s, NULL);
    /* A batch run lives for a second or two: its memory is sampled at every tick. */
    if (s->batch_running) {
        long kb = rss_kb(s->batch.pid);
        if (kb > s->peak_rss_kb[2])
            s->peak_rss_kb[2] = kb;
    }
    if (it_now_ms() - last_sample >= 500) {
        last_sample = it_now_ms();
        sample(s);
    }
}

static void sleep_ticking(struct soak *s, int64_t ms, bool outage)
{
    int64_t end = it_now_ms() + ms;

    while (it_now_ms() < end) {
        tick(s, outage);
        usleep(20000);
    }
}

/* The ids of every merchant lambda-gen draws: m-1 .. m-MERCHANTS. */
static void *query_loop(void *arg)
{
    struct soak *s = arg;
    char ids[MERCHANTS * 8 + 64], url[MERCHANTS * 8 + 256];
    size_t n = 0;

    for (int i = 1; i <= MERCHANTS; i++)
        n += (size_t)snprintf(ids + n, sizeof(ids) - n, "%sm-%d", i > 1 ? "," : "", i);
    while (!atomic_load(&s->stop)) {
        bool down = atomic_load(&s->serve_down);
        char *body = NULL;
        long status;
        json_t *doc, *arr;
        int gen;

        pthread_mutex_lock(&s->mu);
        snprintf(url, sizeof(url), "%s/query?ids=%s", s->url, ids);
        gen = atomic_load(&s->url_gen);
        pthread_mutex_unlock(&s->mu);
        status = it_http_get(url, &body);
        atomic_fetch_add(&s->requests, 1);
        if (status < 200 || status > 299) {
            if (down || atomic_load(&s->serve_down) || gen != atomic_load(&s->url_gen)) {
                atomic_fetch_add(&s->excused, 1);
            } else {
                if (atomic_fetch_add(&s->non2xx, 1) == 0)
                    snprintf(s->first_bad, sizeof(s->first_bad), "status %ld: %.200s", status,
                             body ? body : "");
            }
            free(body);
            continue;
        }
        doc = json_loads(body, 0, NULL);
        arr = json_object_get(doc, "merchants");
        for (size_t i = 0; i < json_array_size(arr) && i < MERCHANTS; i++) {
            int64_t c = json_integer_value(json_object_get(json_array_get(arr, i), "order_count"));
            if (c < s->last_count[i + 1]) {
                if (atomic_fetch_add(&s->decreases, 1) == 0)
                    snprintf(s->first_bad, sizeof(s->first_bad),
                             "m-%zu went from %" PRId64 " to %" PRId64, i + 1, s->last_count[i + 1],
                             c);
            }
            if (c > s->last_count[i + 1])
                s->last_count[i + 1] = c;
        }
        json_decref(doc);
        free(body);
    }
    return NULL;
}

/* One paced segment of the stream, in the background. */
static void gen_start(struct soak *s, struct it_proc *p, int count)
{
    char sd[16], cnt[16], rate[16], truth[700], tag[32], start[32];

    s->seed++;
    snprintf(sd, sizeof(sd), "%d", s->seed);
    snprintf(cnt, sizeof(cnt), "%d", count);
    snprintf(rate, sizeof(rate), "%d", RATE);
    snprintf(truth, sizeof(truth), "%s/truth%d", s->dir, s->seed);
    snprintf(tag, sizeof(tag), "gen%d", s->seed);
    snprintf(start, sizeof(start), "%" PRId64, (int64_t)1795255200000 + (int64_t)s->seed * 3600000);
    char *argv[] = {"lambda-gen", "--brokers",     s->bs,  "--count",    cnt,   "--rate",
                    rate,         "--merchants",   "40",   "--late-pct", "2",   "--dup-pct",
                    "4",          "--invalid-pct", "2",    "--seed",     sd,    "--start-time",
                    start,        "--time-step",   "10ms", "--truth",    truth, NULL};
    it_spawn(p, s->dir, tag, argv, NULL);
}

static void gen_finish(struct soak *s, struct it_proc *p)
{
    char truth[700];
    struct it_truth t;
    int64_t end = it_now_ms() + 120000;
    int rc;

    while ((rc = it_wait_exit(p, 0)) < 0) {
        cr_assert(it_now_ms() < end, "lambda-gen did not finish");
        tick(s, false);
        usleep(20000);
    }
    cr_assert_eq(rc, 0, "lambda-gen failed (logs in %s)", s->dir);
    snprintf(truth, sizeof(truth), "%s/truth%d", s->dir, s->seed);
    it_truth_load(&t, truth);
    it_truth_add(&s->truth, &t);
    it_truth_free(&t);
}

static size_t mismatches(struct soak *s, char *first, size_t size)
{
    size_t bad = 0, cap = 64 + s->truth.nmerchants * 70;
    char *url = malloc(cap), *body = NULL;
    size_t n;
    json_t *doc, *arr;
    long status;

    pthread_mutex_lock(&s->mu);
    n = (size_t)snprintf(url, cap, "%s/query?ids=", s->url);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < s->truth.nmerchants; i++)
        n += (size_t)snprintf(url + n, cap - n, "%s%s", i ? "," : "",
                              s->truth.merchants[i].merchant_id);
    status = it_http_get(url, &body);
    free(url);
    doc = status == 200 ? json_loads(body, 0, NULL) : NULL;
    arr = json_object_get(doc, "merchants");
    if (!json_is_array(arr) || json_array_size(arr) != s->truth.nmerchants) {
        snprintf(first, size, "status %ld body %.200s", status, body ? body : "");
        bad = s->truth.nmerchants ? s->truth.nmerchants : 1;
    }
    for (size_t i = 0; !bad && i < s->truth.nmerchants; i++) {
        const struct it_truth_merchant *m = &s->truth.merchants[i];
        json_t *a = json_array_get(arr, i);
        int64_t c = json_integer_value(json_object_get(a, "order_count"));
        int64_t v = json_integer_value(json_object_get(a, "revenue_cents"));
        if (c != m->order_count || v != m->revenue_cents) {
            snprintf(first, size, "%s: got %" PRId64 "/%" PRId64 " want %" PRId64 "/%" PRId64,
                     m->merchant_id, c, v, m->order_count, m->revenue_cents);
            bad++;
        }
    }
    free(body);
    json_decref(doc);
    return bad;
}

static void check_exact(struct soak *s, const char *after)
{
    int64_t end = it_now_ms() + 90000;
    char first[300] = "";

    s->exact_checks++;
    for (;;) {
        if (mismatches(s, first, sizeof(first)) == 0) {
            s->exact_ok++;
            return;
        }
        cr_assert(it_now_ms() < end, "after %s the answers never became exact: %s (logs in %s)",
                  after, first, s->dir);
        tick(s, false);
        usleep(50000);
    }
}

/* kill -9 of the round's victim at a random moment of its segment, and its restart. */
static void strike(struct soak *s, int victim, int64_t window_ms)
{
    static const char *const pauses[] = {"ingest", "recompute", "publish"};

    sleep_ticking(s, rand() % (window_ms > 1 ? window_ms : 1), false);
    switch (victim) {
    case V_SPEED:
        cr_assert_eq(it_signal(&s->speed, SIGKILL, 5000), 128 + SIGKILL);
        start_speed(s);
        break;
    case V_BATCH: {
        /* A run in flight, killed at a random moment; when it finished first, blocked at one
         * of its pause points. */
        int64_t end = it_now_ms() + 60000;
        for (int attempt = 0; attempt < 3; attempt++) {
            bool pause = attempt > 0 || rand() % 2;
            if (s->batch_running) {
                while (it_wait_exit(&s->batch, 0) < 0 && it_now_ms() < end)
                    usleep(20000);
                s->batch_running = false;
                s->batch_runs++;
            }
            start_batch(s, pause ? pauses[rand() % 3] : NULL);
            if (pause)
                cr_assert(it_wait_log(&s->batch, "paused", 60000), "batch never paused");
            else
                usleep((useconds_t)(rand() % 300) * 1000);
            s->batch_running = false;
            if (it_signal(&s->batch, SIGKILL, 5000) == 128 + SIGKILL) {
                s->kills[V_BATCH]++;
                return;
            }
            s->batch_runs++;
        }
        cr_assert_fail("no batch run could be killed");
    }
    case V_SERVE:
        atomic_store(&s->serve_down, true);
        cr_assert_eq(it_signal(&s->serve, SIGKILL, 5000), 128 + SIGKILL);
        start_serve(s);
        serve_back(s);
        break;
    }
    s->kills[victim]++;
}

Test(soak, exact_through_kills_batches_and_an_outage, .timeout = 7200)
{
    const char *m = getenv("SOAK_MINUTES"), *sd = getenv("SOAK_SEED");
    double minutes = m && *m ? atof(m) : 10;
    int64_t total_ms = (int64_t)(minutes * 60000), round_ms, t0;
    struct soak *s = calloc(1, sizeof(*s));
    pthread_t q;
    int rounds = 0;

    cr_assert(s && minutes > 0);
    srand(sd && *sd ? (unsigned)atoi(sd) : 1u);
    pthread_mutex_init(&s->mu, NULL);
    it_tmpdir("soak", s->dir);
    snprintf(s->data, sizeof(s->data), "%s/data", s->dir);
    it_devkafka(&s->kafka, s->dir, 4, s->bs);
    start_speed(s);
    start_serve(s);
    s->batch_started_ms = it_now_ms();
    cr_assert_eq(pthread_create(&q, NULL, query_loop, s), 0);
    t0 = it_now_ms();
    /* KILLS rounds with a kill each and one with the outage; each round a segment. */
    round_ms = total_ms / (KILLS + 1);
    while (rounds < KILLS + 1 || it_now_ms() - t0 < total_ms) {
        struct it_proc g;
        int count = (int)(RATE * round_ms * 6 / 10 / 1000);
        bool outage = rounds == KILLS / 2;

        gen_start(s, &g, count > 100 ? count : 100);
        if (rounds < KILLS + 1 && !outage) {
            int k = rounds > KILLS / 2 ? rounds - 1 : rounds;
            strike(s, k % V_COUNT, round_ms / 2);
        }
        gen_finish(s, &g);
        check_exact(s, rounds < KILLS + 1 && !outage ? "a kill" : "a segment");
        if (outage) {
            /* The brokers go away for 10 s; answers keep coming from what is committed. */
            kill(s->kafka.pid, SIGUSR1);
            sleep_ticking(s, 10000, true);
            kill(s->kafka.pid, SIGUSR2);
            sleep_ticking(s, 2000, true);
        }
        rounds++;
        if (rounds >= KILLS + 1 && it_now_ms() - t0 >= total_ms)
            break;
        sleep_ticking(s, round_ms / 10, false);
    }
    /* A last batch run and the final check. */
    while (s->batch_running && it_wait_exit(&s->batch, 60000) >= 0)
        s->batch_running = false;
    start_batch(s, NULL);
    cr_assert_eq(it_wait_exit(&s->batch, 120000), 0, "the last batch run failed");
    s->batch_running = false;
    s->batch_runs++;
    check_exact(s, "the last batch run");
    sample(s);
    atomic_store(&s->stop, true);
    pthread_join(q, NULL);

    printf("soak minutes=%.1f rounds=%d kills=%d (speed=%d batch=%d serve=%d) outages=1"
           " batch_runs=%d batch_failed_in_outage=%d exact_checks=%d/%d orders=%" PRId64
           " requests=%ld non2xx=%ld excused_during_restart=%ld count_decreases=%ld"
           " peak_rss_mb speed=%ld serve=%ld batch=%ld devkafka=%ld speed_rss_mb first=%ld"
           " last=%ld max_speed_db_mb=%.1f max_data_dir_mb=%.1f seconds=%.0f\n",
           minutes, rounds, s->kills[0] + s->kills[1] + s->kills[2], s->kills[0], s->kills[1],
           s->kills[2], s->batch_runs, s->batch_failed, s->exact_ok, s->exact_checks,
           s->truth.valid, atomic_load(&s->requests), atomic_load(&s->non2xx),
           atomic_load(&s->excused), atomic_load(&s->decreases), s->peak_rss_kb[0] / 1024,
           s->peak_rss_kb[1] / 1024, s->peak_rss_kb[2] / 1024, s->peak_rss_kb[3] / 1024,
           s->speed_rss_first_kb / 1024, s->speed_rss_last_kb / 1024,
           (double)s->max_speed_db / 1048576.0, (double)s->max_data_dir / 1048576.0,
           (double)(it_now_ms() - t0) / 1000.0);
    fflush(stdout);
    cr_expect_eq(atomic_load(&s->non2xx), 0, "non-2xx answers outside a restart; first: %s",
                 s->first_bad);
    cr_expect_eq(atomic_load(&s->decreases), 0, "counts went down; first: %s", s->first_bad);
    cr_expect_geq(s->kills[0] + s->kills[1] + s->kills[2], KILLS * 3 / 4, "too few kills landed");
    for (int i = 0; i < 4; i++)
        cr_expect_lt(s->peak_rss_kb[i] / 1024, RSS_BOUND_MB, "process %d peaked at %ld MiB", i,
                     s->peak_rss_kb[i] / 1024);
    cr_expect_lt(s->max_speed_db / 1048576, SPEED_DB_MB, "speed.db grew to %" PRId64 " bytes",
                 s->max_speed_db);
    it_stop(&s->serve);
    it_stop(&s->speed);
    it_stop(&s->kafka);
    if (s->batch.pid > 0)
        it_signal(&s->batch, SIGKILL, 5000);
    it_truth_free(&s->truth);
    free(s);
}
