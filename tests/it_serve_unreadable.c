/* it_serve_unreadable.c - never a wrong number presented as right (DESIGN.md section 5, issue
 * 18 point 1), with the real layers: a data directory written by lambda-gen, lambda-speed and
 * lambda-batch (a published version and a speed part), then batch.db or speed.db moved away,
 * replaced by garbage, put back or restored from a savepoint, at start and while serving. While
 * a layer that must exist cannot be read, every aggregate route answers 503 with our words
 * and /health is 503; once it is readable again, every merchant is exact again, with no
 * restart. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "itlib.h"
#include "tm.h"

#define START_MS INT64_C(1795255200000) /* 2026-11-21T10:00:00Z */

static struct it_proc kafka, speed, serve;
static char dir[512], data[600], bs[256], base[64];
static struct it_truth truth;

static void stop_all(void)
{
    it_stop(&serve);
    it_stop(&speed);
    it_stop(&kafka);
    it_truth_free(&truth);
}

static void produce(int seed, int count, int64_t start_ms)
{
    char s[16], c[16], st[32], path[600], tag[16];
    struct it_truth t;

    snprintf(s, sizeof(s), "%d", seed);
    snprintf(c, sizeof(c), "%d", count);
    snprintf(st, sizeof(st), "%" PRId64, start_ms);
    snprintf(path, sizeof(path), "%s/truth%d", dir, seed);
    snprintf(tag, sizeof(tag), "gen%d", seed);
    char *argv[] = {"lambda-gen",
                    "--brokers",
                    bs,
                    "--count",
                    c,
                    "--merchants",
                    "20",
                    "--seed",
                    s,
                    "--start-time",
                    st,
                    "--time-step",
                    "100ms",
                    "--truth",
                    path,
                    NULL};
    cr_assert_eq(it_run(dir, tag, argv, NULL, 60000), 0, "lambda-gen failed");
    it_truth_load(&t, path);
    it_truth_add(&truth, &t);
    it_truth_free(&t);
}

/* GET path: the status, and the body (caller frees) in *body. */
static long get(const char *path, char **body)
{
    char url[1024];

    snprintf(url, sizeof(url), "%s%s", base, path);
    return it_http_get(url, body);
}

static bool all_exact(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < truth.nmerchants; i++) {
        char path[128], *body = NULL;
        snprintf(path, sizeof(path), "/query/%s", truth.merchants[i].merchant_id);
        long status = get(path, &body);
        json_t *d = status == 200 ? json_loads(body, 0, NULL) : NULL;
        bool ok = d &&
                  json_integer_value(json_object_get(d, "order_count")) ==
                      truth.merchants[i].order_count &&
                  json_integer_value(json_object_get(d, "revenue_cents")) ==
                      truth.merchants[i].revenue_cents;
        json_decref(d);
        free(body);
        if (!ok)
            return false;
    }
    return true;
}

struct refusal {
    const char *error; /* the whole {"error":...} answer expected */
};

/* Every aggregate route and /health answer 503 with r->error. */
static bool all_refuse(void *arg)
{
    static const char *const paths[] = {"/query/m-1", "/query/m-2?window=5m", "/query?ids=m-1,m-2",
                                        "/query/m-1/series?step=1m", "/top?window=5m"};
    const struct refusal *r = arg;
    char *body = NULL;
    bool ok = true;

    for (size_t i = 0; ok && i < sizeof(paths) / sizeof(paths[0]); i++) {
        ok = get(paths[i], &body) == 503 && body && !strcmp(body, r->error);
        free(body);
        body = NULL;
    }
    ok = ok && get("/health", &body) == 503 && body && !strcmp(body, r->error);
    free(body);
    return ok;
}

static bool lag_null(void *arg)
{
    char *body = NULL;
    bool ok;

    (void)arg;
    ok = get("/query/m-1", &body) == 200 && body && strstr(body, "\"lag\":null");
    free(body);
    return ok;
}

static void expect_refusals(const char *reason)
{
    char want[256];
    struct refusal r = {want};
    char *body = NULL;

    snprintf(want, sizeof(want), "{\"error\":\"%s\"}", reason);
    if (!it_wait_until(all_refuse, &r, 10000)) {
        long status = get("/query/m-1", &body);
        char *health = NULL;
        long health_status = get("/health", &health);
        cr_assert_fail("want 503 %s everywhere; /query/m-1: %ld %s; /health: %ld %s", want, status,
                       body, health_status, health);
    }
}

static void expect_exact(const char *when)
{
    cr_assert(it_wait_until(all_exact, NULL, 30000), "answers not exact %s", when);
}

static void start_serve(const char *data_dir)
{
    char *argv[] = {"lambda-serve",   "--port",     "0",    "--data-dir",
                    (char *)data_dir, "--epoch-ms", "1000", NULL};
    static int n;
    char tag[16];

    snprintf(tag, sizeof(tag), "serve%d", n++); /* a log of its own: "listening" is new */
    it_spawn(&serve, dir, tag, argv, NULL);
    cr_assert(it_wait_log(&serve, "listening", 15000), "lambda-serve did not start");
    snprintf(base, sizeof(base), "http://127.0.0.1:%" PRId64,
             it_log_int(&serve, "listening", "port"));
}

static void start_speed(void)
{
    char *argv[] = {"lambda-speed", "--brokers",       bs,    "--data-dir", data, "--epoch-ms",
                    "1000",         "--checkpoint-ms", "100", NULL};

    it_spawn(&speed, dir, "speed", argv, NULL);
}

/* A published batch version and a speed part after it; serve exact over both. */
static void start(void)
{
    it_tmpdir("serve-unreadable", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    it_devkafka(&kafka, dir, 4, bs);
    start_speed();
    start_serve(data);
    produce(1, 1500, START_MS);
    expect_exact("over the speed layer");
    int target = it_log_count(&speed, "msg=epoch_started") + 2;
    cr_assert(it_wait_log_count(&speed, "msg=epoch_started", target, 30000));
    char *bargv[] = {"lambda-batch", "run",        "--brokers", bs,  "--data-dir",
                     data,           "--epoch-ms", "1000",      NULL};
    cr_assert_eq(it_run(dir, "batch", bargv, NULL, 120000), 0, "lambda-batch run failed");
    produce(2, 500, START_MS + 1500 * 100);
    expect_exact("over both layers");
    /* Provenance: the lag of the last checkpoint while a speed layer holds speed.lock. */
    char *body = NULL;
    cr_assert_eq(get("/query/m-1", &body), 200);
    cr_assert(strstr(body, "\"lag\":0,\"watermark\":\"2026-11-21T"), "%s", body);
    free(body);
    /* The speed layer has recorded the published cut: a batch version must exist from now. */
    cr_assert(it_wait_log(&speed, "msg=expired", 30000), "the speed layer never expired");
}

static void path_of(const char *name, char out[700])
{
    snprintf(out, 700, "%s/%s", data, name);
}

static void move(const char *from, const char *to)
{
    char a[700], b[700];

    path_of(from, a);
    path_of(to, b);
    cr_assert_eq(rename(a, b), 0, "rename %s %s", a, b);
}

/* Replaces name by a file of garbage (renamed over it: a new inode under the open handle). */
static void garbage(const char *name)
{
    char p[700];
    FILE *f;

    path_of("garbage.tmp", p);
    cr_assert_not_null(f = fopen(p, "w"));
    for (int i = 0; i < 8192; i++)
        fputc("not a database "[i % 15], f);
    fclose(f);
    move("garbage.tmp", name);
}

Test(serve_unreadable, batch_db_moved_away_replaced_by_garbage_and_back_while_serving,
     .timeout = 300, .fini = stop_all)
{
    start();
    move("batch.db", "batch.db.away");
    expect_refusals("batch.db unreadable: missing");
    move("batch.db.away", "batch.db");
    expect_exact("after batch.db came back");
    move("batch.db", "batch.db.away");
    garbage("batch.db");
    expect_refusals("batch.db unreadable: not a database");
    move("batch.db.away", "batch.db");
    expect_exact("after the garbage was replaced by batch.db");
    /* A database, but an empty one: no published version, while one must exist. */
    char empty[700], made[720];
    sqlite3 *db = NULL;
    struct lerr e = {{0}};
    snprintf(empty, 600, "%s/empty", dir);
    cr_assert_eq(db_ensure_dir(empty, &e), 0);
    cr_assert_eq(db_open_rw(empty, DB_BATCH, &db, &e), 0, "%s", e.msg);
    it_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(db);
    snprintf(made, sizeof(made), "%s/batch.db", empty);
    /* A database is replaced with its log and its wal-index (a -wal left beside another file
     * would be read as that file's: SQLite checks a log against its own header only). */
    move("batch.db", "batch.db.away");
    move("batch.db-wal", "batch.db-wal.away");
    move("batch.db-shm", "batch.db-shm.away");
    path_of("batch.db", empty);
    cr_assert_eq(rename(made, empty), 0);
    expect_refusals("batch.db unreadable: no published version");
    move("batch.db-shm.away", "batch.db-shm");
    move("batch.db-wal.away", "batch.db-wal");
    move("batch.db.away", "batch.db");
    expect_exact("after the empty database gave way to batch.db");
    cr_assert(it_log_has(&serve, "msg=db_unreadable file=batch.db"), "the bad file went unsaid");
}

Test(serve_unreadable, batch_db_missing_or_garbage_at_start, .timeout = 300, .fini = stop_all)
{
    start();
    it_stop(&serve);
    move("batch.db", "batch.db.away");
    start_serve(data);
    expect_refusals("batch.db unreadable: missing");
    move("batch.db.away", "batch.db");
    expect_exact("once batch.db is back");
    it_stop(&serve);
    move("batch.db", "batch.db.away");
    garbage("batch.db");
    start_serve(data);
    expect_refusals("batch.db unreadable: not a database");
    move("batch.db.away", "batch.db");
    expect_exact("once the garbage gave way to batch.db");
    /* A directory with none of the files is said loudly. */
    it_stop(&serve);
    char wrong[700];
    snprintf(wrong, sizeof(wrong), "%s/no-such-data", dir);
    start_serve(wrong);
    cr_assert(it_log_has(&serve, "msg=data_dir_empty"), "a wrong --data-dir went unsaid");
}

Test(serve_unreadable, speed_db_moved_away_garbage_and_a_restored_savepoint, .timeout = 300,
     .fini = stop_all)
{
    char save[700], *sargv[] = {"lambda-speed", "savepoint",  "--out", save, "--data-dir",
                                data,           "--epoch-ms", "1000",  NULL};
    char *rargv[] = {"lambda-speed", "savepoint",  "--restore", save, "--data-dir",
                     data,           "--epoch-ms", "1000",      NULL};
    struct it_truth before;

    start();
    move("speed.db", "speed.db.away");
    expect_refusals("speed.db unreadable: missing");
    move("speed.db.away", "speed.db");
    expect_exact("after speed.db came back");
    move("speed.db", "speed.db.away");
    garbage("speed.db");
    expect_refusals("speed.db unreadable: not a database");
    move("speed.db.away", "speed.db");
    expect_exact("after the garbage was replaced by speed.db");

    /* A savepoint, more orders, then the savepoint restored: serving reads the restored file
     * (the truth as of the savepoint), not the one it had open. */
    snprintf(save, sizeof(save), "%s/speed.save", dir);
    cr_assert_eq(it_signal(&speed, SIGTERM, 20000), 0, "lambda-speed did not stop");
    cr_assert_eq(it_run(dir, "save", sargv, NULL, 60000), 0, "savepoint --out failed");
    /* No speed layer runs: what it recorded of its lag is no longer true. */
    char *body = NULL;
    cr_assert(it_wait_until(lag_null, NULL, 5000), "lag not null once lambda-speed stopped");
    cr_assert_eq(get("/query/m-1", &body), 200);
    free(body);
    before = truth;
    memset(&truth, 0, sizeof(truth));
    it_truth_add(&truth, &before);
    start_speed();
    produce(3, 300, START_MS + 2000 * 100);
    expect_exact("with the orders after the savepoint");
    cr_assert_eq(it_signal(&speed, SIGTERM, 20000), 0, "lambda-speed did not stop");
    cr_assert_eq(it_run(dir, "restore", rargv, NULL, 60000), 0, "savepoint --restore failed");
    it_truth_free(&truth);
    truth = before;
    expect_exact("as of the restored savepoint");
    /* The speed layer goes on from the savepoint's positions: everything again. */
    char path[600];
    struct it_truth t;
    snprintf(path, sizeof(path), "%s/truth3", dir);
    it_truth_load(&t, path);
    it_truth_add(&truth, &t);
    it_truth_free(&t);
    start_speed();
    expect_exact("once the speed layer caught up again");
}
