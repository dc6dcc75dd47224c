/* it_batch_exact.c - lambda-batch's published views against lambda-gen's truth: 50,000 events
 * with late, duplicated and invalid ones; and runs killed (SIGKILL) mid-ingest, mid-recompute
 * and before publish, with the previous version answering in between. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ev.h"
#include "itlib.h"

struct env {
    char dir[512], data[600], bs[256];
    struct it_proc dk, held; /* the embedded Kafka; a run held paused */
    int runs;
};

/* The test's environment, for fini(): a failed assertion ends the test before its own
 * clean-up, and an embedded Kafka must not outlive it. */
static struct env *current;

static void fini(void)
{
    if (current) {
        it_stop(&current->held);
        it_stop(&current->dk);
    }
}

static void env_init(struct env *v, const char *tag)
{
    memset(v, 0, sizeof(*v));
    current = v;
    it_tmpdir(tag, v->dir);
    snprintf(v->data, sizeof(v->data), "%s/data", v->dir);
    it_devkafka(&v->dk, v->dir, 4, v->bs);
}

/* Produces count events with lambda-gen and loads its truth into t. */
static void gen(struct env *v, int count, const char *seed, const char *start, struct it_truth *t)
{
    char truth[700], n[16], tag[32];

    snprintf(truth, sizeof(truth), "%s/truth-%s", v->dir, seed);
    snprintf(n, sizeof(n), "%d", count);
    snprintf(tag, sizeof(tag), "gen%s", seed);
    char *argv[] = {"lambda-gen",    "--brokers",  v->bs,     "--count",    n,
                    "--merchants",   "100",        "--seed",  (char *)seed, "--start-time",
                    (char *)start,   "--late-pct", "2",       "--dup-pct",  "3",
                    "--invalid-pct", "2",          "--truth", truth,        NULL};
    cr_assert_eq(it_run(v->dir, tag, argv, NULL, 120000), 0, "lambda-gen failed");
    it_truth_load(t, truth);
    cr_assert_eq(t->produced, count);
    cr_assert(t->late > 0 && t->duplicates > 0 && t->invalid > 0, "the mix lacks a kind");
}

static void batch_argv(struct env *v, char *argv[16], const char *pause_at)
{
    int n = 0;

    argv[n++] = "lambda-batch";
    argv[n++] = "run";
    argv[n++] = "--data-dir";
    argv[n++] = v->data;
    argv[n++] = "--brokers";
    argv[n++] = v->bs;
    argv[n++] = "--chunk-rows";
    argv[n++] = "2000";
    if (pause_at) {
        argv[n++] = "--pause-at";
        argv[n++] = (char *)pause_at;
    }
    argv[n] = NULL;
}

static int run(struct env *v, char tag[32])
{
    char *argv[16];

    batch_argv(v, argv, NULL);
    snprintf(tag, 32, "run%d", ++v->runs);
    return it_run(v->dir, tag, argv, NULL, 120000);
}

/* Starts a run that stops at pause_at, waits for it to say so, and leaves it blocked there. */
static void run_until_paused(struct env *v, struct it_proc *p, const char *pause_at)
{
    char *argv[16], tag[32], want[64];

    batch_argv(v, argv, pause_at);
    snprintf(tag, 32, "run%d", ++v->runs);
    snprintf(want, sizeof(want), "msg=paused at=%s", pause_at);
    it_spawn(p, v->dir, tag, argv, NULL);
    cr_assert(it_wait_log(p, want, 120000), "%s: no '%s'", tag, want);
}

static sqlite3 *open_db(struct env *v, const char *file)
{
    char path[700];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/%s", v->data, file);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t one_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t r = -1;

    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        r = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return r;
}

static int64_t sql_int(struct env *v, const char *file, const char *sql)
{
    sqlite3 *db = open_db(v, file);
    int64_t r = one_int(db, sql);

    sqlite3_close(db);
    return r;
}

/* Loads the truth into temp tables truth_m(merchant_id, order_count, revenue_cents) and
 * truth_min(merchant_id, minute_ms, order_count, revenue_cents), summed per key. */
static void load_truth(sqlite3 *db, const struct it_truth *t)
{
    sqlite3_stmt *m = NULL, *n = NULL;

    cr_assert_eq(sqlite3_exec(db,
                              "CREATE TEMP TABLE truth_m(merchant_id, order_count, revenue_cents);"
                              "CREATE TEMP TABLE raw_min(merchant_id, minute_ms, order_count,"
                              " revenue_cents); BEGIN",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_prepare_v2(db, "INSERT INTO truth_m VALUES(?,?,?)", -1, &m, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO raw_min VALUES(?,?,?,?)", -1, &n, NULL);
    for (size_t i = 0; i < t->nmerchants; i++) {
        sqlite3_bind_text(m, 1, t->merchants[i].merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(m, 2, t->merchants[i].order_count);
        sqlite3_bind_int64(m, 3, t->merchants[i].revenue_cents);
        cr_assert_eq(sqlite3_step(m), SQLITE_DONE);
        sqlite3_reset(m);
    }
    for (size_t i = 0; i < t->nminutes; i++) {
        sqlite3_bind_text(n, 1, t->minutes[i].merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(n, 2, t->minutes[i].minute_ms);
        sqlite3_bind_int64(n, 3, t->minutes[i].order_count);
        sqlite3_bind_int64(n, 4, t->minutes[i].revenue_cents);
        cr_assert_eq(sqlite3_step(n), SQLITE_DONE);
        sqlite3_reset(n);
    }
    sqlite3_finalize(m);
    sqlite3_finalize(n);
    cr_assert_eq(sqlite3_exec(db,
                              "COMMIT; CREATE TEMP TABLE truth_min AS SELECT merchant_id,"
                              " minute_ms, sum(order_count) AS order_count, sum(revenue_cents)"
                              " AS revenue_cents FROM raw_min GROUP BY 1, 2",
                              NULL, NULL, NULL),
                 SQLITE_OK);
}

/* Asserts that two queries give the same set of rows, showing a difference if not. */
static void assert_same_rows(sqlite3 *db, const char *what, const char *a, const char *b)
{
    char sql[2048];

    for (int dir = 0; dir < 2; dir++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*), (SELECT group_concat(x, ' | ') FROM (SELECT"
                 " merchant_id || ' ' || quote(c1) || ' ' || quote(c2) || ' ' || quote(c3) AS x"
                 " FROM (%s EXCEPT %s) LIMIT 3)) FROM (%s EXCEPT %s)",
                 dir ? b : a, dir ? a : b, dir ? b : a, dir ? a : b);
        sqlite3_stmt *st = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", what,
                     sqlite3_errmsg(db));
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        int64_t n = sqlite3_column_int64(st, 0);
        const char *ex = (const char *)sqlite3_column_text(st, 1);
        cr_assert_eq(n, 0, "%s: %lld rows only in the %s, e.g. %s", what, (long long)n,
                     dir ? "truth" : "version", ex ? ex : "");
        sqlite3_finalize(st);
    }
}

/* The published version equals the truth: totals, hourly and minute series, exactly. */
static void assert_exact(struct env *v, int64_t version, const struct it_truth *t)
{
    sqlite3 *db = open_db(v, "batch.db");
    char a[512];

    load_truth(db, t);
    snprintf(a, sizeof(a),
             "SELECT merchant_id, order_count AS c1, revenue_cents AS c2, 0 AS c3"
             " FROM merchant_totals WHERE valid_from<=%1$lld AND valid_to>%1$lld",
             (long long)version);
    assert_same_rows(
        db, "merchant totals", a,
        "SELECT merchant_id, order_count AS c1, revenue_cents AS c2, 0 AS c3 FROM truth_m");
    snprintf(a, sizeof(a),
             "SELECT merchant_id, hour_ms AS c1, order_count AS c2, revenue_cents AS c3"
             " FROM hourly WHERE valid_from<=%1$lld AND valid_to>%1$lld",
             (long long)version);
    assert_same_rows(
        db, "hourly series", a,
        "SELECT merchant_id, minute_ms / 3600000 * 3600000 AS c1, sum(order_count) AS c2,"
        " sum(revenue_cents) AS c3 FROM truth_min GROUP BY 1, 2");
    /* All events lie within the default 48 hours, so the minute series is complete. */
    snprintf(a, sizeof(a),
             "SELECT merchant_id, minute_ms AS c1, order_count AS c2, revenue_cents AS c3"
             " FROM minutely WHERE valid_from<=%1$lld AND valid_to>%1$lld",
             (long long)version);
    assert_same_rows(db, "minute series", a,
                     "SELECT merchant_id, minute_ms AS c1, order_count AS c2, revenue_cents AS c3"
                     " FROM truth_min");
    sqlite3_close(db);
}

/* Master holds each valid order once, every reject with its reason, the duplicates counted. */
static void assert_master(struct env *v, const struct it_truth *t)
{
    sqlite3 *db = open_db(v, "master.db");
    char sql[256];

    cr_assert_eq(one_int(db, "SELECT count(*) FROM orders"), t->valid);
    cr_assert_eq(one_int(db, "SELECT value FROM counters WHERE name='duplicates'"), t->duplicates);
    cr_assert_eq(one_int(db, "SELECT count(*) FROM rejects"), t->invalid);
    for (int r = 1; r < EV_REASON_COUNT; r++) {
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM rejects WHERE reason='%s'",
                 ev_reason_name((enum ev_reason)r));
        cr_assert_eq(one_int(db, sql), t->rejects[r], "reason %s",
                     ev_reason_name((enum ev_reason)r));
    }
    cr_assert_eq(one_int(db, "SELECT count(*) FROM rejects WHERE source<>'kafka' OR partition"
                             " IS NULL OR offset IS NULL OR length(payload) > 1024"),
                 0);
    sqlite3_close(db);
}

static int64_t newest_published(struct env *v)
{
    return sql_int(v, "batch.db", "SELECT max(id) FROM versions WHERE state='published'");
}

Test(batch_exact, fifty_thousand_events_equal_the_truth, .timeout = 170, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    struct it_truth t;
    char tag[32], path[700];

    env_init(&v, "bexact");
    gen(&v, 50000, "11", "2026-11-21T10:00:00Z", &t);
    cr_assert_eq(run(&v, tag), 0);
    snprintf(path, sizeof(path), "%s/%s.out", v.dir, tag);
    char *out = it_read_file(path, NULL);
    char want[256];
    snprintf(want, sizeof(want), " mode=full ingested=50000 orders=%lld merchants=%zu ",
             (long long)t.valid, t.nmerchants);
    cr_assert(strstr(out, want), "stdout: %s\nwant: %s", out, want);
    snprintf(want, sizeof(want),
             " differences=0 rejects=%lld duplicates=%lld ingest_ms=", (long long)t.invalid,
             (long long)t.duplicates);
    cr_assert(strstr(out, "batch published version=1 cut_epoch="), "stdout: %s", out);
    cr_assert(strstr(out, want), "stdout: %s\nwant: %s", out, want);
    free(out);
    assert_master(&v, &t);
    assert_exact(&v, 1, &t);
    it_truth_free(&t);
    it_stop(&v.dk);
}

Test(batch_exact, killed_mid_ingest_mid_recompute_and_before_publish, .timeout = 170, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    struct it_truth t1, t2;
    struct it_proc *p = &v.held;
    char tag[32];

    env_init(&v, "bkill");
    gen(&v, 15000, "21", "2026-11-21T10:00:00Z", &t1);
    cr_assert_eq(run(&v, tag), 0);
    assert_exact(&v, 1, &t1);
    gen(&v, 25000, "22", "2026-11-21T10:05:00Z", &t2);

    /* Mid-ingest: one chunk committed, the rest not; version 1 still answers. */
    run_until_paused(&v, p, "ingest");
    int64_t orders = sql_int(&v, "master.db", "SELECT count(*) FROM orders");
    cr_assert(orders > t1.valid && orders < t1.valid + t2.valid, "orders %lld", (long long)orders);
    cr_assert_eq(newest_published(&v), 1);
    assert_exact(&v, 1, &t1);
    cr_assert_eq(it_signal(p, SIGKILL, 10000), 128 + SIGKILL);

    /* Mid-recompute: ingest finished, the views of version 2 half written, uncommitted. */
    run_until_paused(&v, p, "recompute");
    cr_assert(it_log_has(p, "msg=cut_reused version=2"));
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM orders"), t1.valid + t2.valid);
    cr_assert_eq(newest_published(&v), 1);
    assert_exact(&v, 1, &t1);
    cr_assert_eq(it_signal(p, SIGKILL, 10000), 128 + SIGKILL);

    /* Before publish: views written and checked, not yet published. */
    run_until_paused(&v, p, "publish");
    cr_assert_eq(newest_published(&v), 1);
    assert_exact(&v, 1, &t1);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT state='pending' FROM versions WHERE id=2"), 1);
    cr_assert_eq(it_signal(p, SIGKILL, 10000), 128 + SIGKILL);

    cr_assert_eq(run(&v, tag), 0);
    cr_assert_eq(newest_published(&v), 2);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT ingested FROM versions WHERE id=2"), t2.produced);
    it_truth_add(&t1, &t2);
    assert_master(&v, &t1);
    assert_exact(&v, 2, &t1);
    it_truth_free(&t1);
    it_truth_free(&t2);
    it_stop(&v.dk);
}
