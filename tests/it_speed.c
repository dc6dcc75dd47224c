/* it_speed.c - lambda-speed against the embedded Kafka, checked against lambda-gen's truth.
 *
 * Every test reads speed.db as the serving layer does (read-only, committed checkpoints
 * only), waits (bounded) until the committed positions cover what was produced, then
 * compares exactly: per merchant, per merchant-minute, rejects by reason, late, duplicates. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ev.h"
#include "itlib.h"

struct env {
    char dir[512], bs[256], data[600];
    struct it_proc dk;
};

static void env_up(struct env *v, const char *tag, int partitions)
{
    it_tmpdir(tag, v->dir);
    snprintf(v->data, sizeof(v->data), "%s/data", v->dir);
    it_devkafka(&v->dk, v->dir, partitions, v->bs);
}

/* argv of lambda-gen for one seeded stream; the strings live in the caller's buffers. */
struct gen_args {
    char count[32], rate[32], seed[32], truth[600], start[64];
    char *argv[32];
};

static void gen_argv(struct gen_args *g, const struct env *v, int seed, int count, int rate,
                     const char *start_time)
{
    int n = 0;

    snprintf(g->count, sizeof(g->count), "%d", count);
    snprintf(g->rate, sizeof(g->rate), "%d", rate);
    snprintf(g->seed, sizeof(g->seed), "%d", seed);
    snprintf(g->truth, sizeof(g->truth), "%s/truth-%d", v->dir, seed);
    snprintf(g->start, sizeof(g->start), "%s", start_time ? start_time : "");
    char *a[] = {"lambda-gen", "--brokers", (char *)v->bs, "--count",       g->count, "--rate",
                 g->rate,      "--seed",    g->seed,       "--merchants",   "60",     "--late-pct",
                 "2",          "--dup-pct", "5",           "--invalid-pct", "3",      "--truth",
                 g->truth,     NULL};
    for (; a[n]; n++)
        g->argv[n] = a[n];
    if (start_time) {
        g->argv[n++] = "--start-time";
        g->argv[n++] = g->start;
    }
    g->argv[n] = NULL;
}

/* Produces a stream to completion and loads its truth. */
static void gen(const struct env *v, int seed, int count, const char *start_time,
                struct it_truth *t)
{
    struct gen_args g;

    gen_argv(&g, v, seed, count, 0, start_time);
    cr_assert_eq(it_run(v->dir, "gen", g.argv, NULL, 60000), 0, "lambda-gen failed");
    it_truth_load(t, g.truth);
}

static void speed_spawn(const struct env *v, struct it_proc *p, const char *tag, const char *flag,
                        const char *value)
{
    char *argv[] = {"lambda-speed", "--brokers", (char *)v->bs, "--data-dir",  (char *)v->data,
                    "--log-level",  "info",      (char *)flag,  (char *)value, NULL};
    it_spawn(p, v->dir, tag, argv, NULL);
}

static int speed_cmd(const struct env *v, const char *tag, const char *op, const char *file)
{
    char *argv[] = {"lambda-speed", "savepoint",  "--data-dir", (char *)v->data,
                    (char *)op,     (char *)file, NULL};
    return it_run(v->dir, tag, argv, NULL, 20000);
}

/* One integer from speed.db (read-only, as serving reads it); -1 when there is none yet. */
static int64_t q_int(const char *data, const char *sql)
{
    char path[700];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    snprintf(path, sizeof(path), "%s/speed.db", data);
    if (access(path, R_OK) != 0)
        return -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 2000);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
            v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

struct pos_wait {
    const char *data;
    int64_t want;
};

static bool positions_reach(void *arg)
{
    struct pos_wait *w = arg;

    return q_int(w->data, "SELECT sum(next_offset) FROM offsets WHERE partition >= 0") >= w->want;
}

/* Waits until the committed positions of all partitions sum to want (the topic's total). */
static void wait_positions(const struct env *v, int64_t want)
{
    struct pos_wait w = {v->data, want};

    cr_assert(it_wait_until(positions_reach, &w, 90000),
              "committed positions stayed at %" PRId64 ", want %" PRId64,
              q_int(v->data, "SELECT sum(next_offset) FROM offsets WHERE partition >= 0"), want);
}

static int64_t counter(const struct env *v, const char *name)
{
    char sql[200];

    snprintf(sql, sizeof(sql), "SELECT value FROM counters WHERE name = '%s'", name);
    return q_int(v->data, sql);
}

/* The committed deltas, summed per merchant and per merchant-minute, equal the truth. */
static void assert_state_exact(const struct env *v, const struct it_truth *t)
{
    char path[700];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    size_t rows = 0;

    snprintf(path, sizeof(path), "%s/speed.db", v->data);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT merchant_id, sum(order_count), sum(revenue_cents)"
                                    " FROM deltas GROUP BY merchant_id",
                                    -1, &st, NULL),
                 SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(st, 0);
        const struct it_truth_merchant *tm = it_truth_find(t, m);
        cr_assert_not_null(tm, "merchant %s is not in the truth", m);
        cr_assert_eq(sqlite3_column_int64(st, 1), tm->order_count, "orders of %s", m);
        cr_assert_eq(sqlite3_column_int64(st, 2), tm->revenue_cents, "revenue of %s", m);
        rows++;
    }
    sqlite3_finalize(st);
    cr_assert_eq(rows, t->nmerchants, "merchants: %zu, truth %zu", rows, t->nmerchants);

    rows = 0;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT sum(order_count), sum(revenue_cents) FROM deltas"
                                    " WHERE merchant_id = ?1 AND minute_ms = ?2",
                                    -1, &st, NULL),
                 SQLITE_OK);
    for (size_t i = 0; i < t->nminutes; i++) {
        const struct it_truth_minute *mm = &t->minutes[i];
        int64_t count = 0, revenue = 0;
        bool is_first = true;
        /* Added truths may hold a merchant-minute more than once: sum its rows. */
        for (size_t k = 0; k < t->nminutes && is_first; k++) {
            const struct it_truth_minute *o = &t->minutes[k];
            if (o->minute_ms != mm->minute_ms || strcmp(o->merchant_id, mm->merchant_id))
                continue;
            if (k < i)
                is_first = false;
            count += o->order_count;
            revenue += o->revenue_cents;
        }
        if (!is_first)
            continue;
        sqlite3_bind_text(st, 1, mm->merchant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, mm->minute_ms);
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_int64(st, 0), count, "%s minute %" PRId64, mm->merchant_id,
                     mm->minute_ms);
        cr_assert_eq(sqlite3_column_int64(st, 1), revenue, "%s minute %" PRId64, mm->merchant_id,
                     mm->minute_ms);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Rejects by reason, late and duplicates, in counters and in the rows, equal the truth. */
static void assert_counts_exact(const struct env *v, const struct it_truth *t)
{
    char sql[200], name[64];

    for (int r = 1; r < EV_REASON_COUNT; r++) {
        snprintf(name, sizeof(name), "rejects_%s", ev_reason_name(r));
        cr_assert_eq(counter(v, name), t->rejects[r], "%s", name);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM rejects WHERE reason = '%s'",
                 ev_reason_name(r));
        cr_assert_eq(q_int(v->data, sql), t->rejects[r], "reject rows %s", name);
    }
    cr_assert_eq(counter(v, "late"), t->late);
    cr_assert_eq(q_int(v->data, "SELECT count(*) FROM late"), t->late);
    cr_assert_eq(q_int(v->data, "SELECT count(*) FROM late WHERE late_ms <= 0"), 0);
    cr_assert_eq(counter(v, "duplicates"), t->duplicates);
    cr_assert_eq(counter(v, "applied"), t->valid);
    cr_assert_eq(counter(v, "consumed"), t->produced);
}

static void assert_exact(const struct env *v, const struct it_truth *t)
{
    assert_state_exact(v, t);
    assert_counts_exact(v, t);
}

Test(speed, counts_50k_events_exactly_with_late_duplicate_and_invalid_ones, .timeout = 150)
{
    struct env v;
    struct it_proc sp;
    struct it_truth t;

    env_up(&v, "speed-exact", 4);
    gen(&v, 11, 50000, NULL, &t);
    cr_assert(t.late > 0 && t.duplicates > 0 && t.invalid > 0);
    speed_spawn(&v, &sp, "speed", NULL, NULL);
    wait_positions(&v, t.produced);
    assert_exact(&v, &t);
    /* Every epoch's boundary names every partition. */
    cr_assert_eq(q_int(v.data, "SELECT count(*) FROM boundaries WHERE partition >= 0"),
                 4 * q_int(v.data, "SELECT count(DISTINCT epoch) FROM boundaries"));
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);
    it_truth_free(&t);
    it_stop(&v.dk);
}

struct kill_wait {
    const struct env *v;
    int64_t at;
};

static bool consumed_reach(void *arg)
{
    struct kill_wait *w = arg;

    return counter(w->v, "consumed") >= w->at;
}

/* 50,000 events produced at 25,000/s while lambda-speed (with flag and value, when given) is
 * killed `rounds` times at random moments, `spacing` events apart; then run to the end: the
 * state must be exact. Leaves the last lambda-speed running in *sp. */
static void exact_through_kills(struct env *v, struct it_proc *sp, int seed, int rounds,
                                int spacing, const char *flag, const char *value)
{
    struct it_proc g;
    struct gen_args ga;
    struct it_truth t;

    srand((unsigned)getpid());
    gen_argv(&ga, v, seed, 50000, 25000, NULL);
    it_spawn(&g, v->dir, "gen", ga.argv, NULL);
    for (int round = 0; round < rounds; round++) {
        struct kill_wait w = {v, 1000 + rand() % (spacing - 2000) + round * spacing};
        speed_spawn(v, sp, "speed", flag, value);
        cr_assert(it_wait_until(consumed_reach, &w, 60000), "speed never consumed %" PRId64, w.at);
        cr_assert_eq(it_signal(sp, SIGKILL, 5000), 128 + SIGKILL);
    }
    cr_assert_eq(it_wait_exit(&g, 60000), 0, "lambda-gen failed");
    it_truth_load(&t, ga.truth);
    speed_spawn(v, sp, "speed", flag, value);
    wait_positions(v, t.produced);
    assert_exact(v, &t);
    it_truth_free(&t);
}

Test(speed, stays_exact_after_sigkill_mid_stream, .timeout = 150)
{
    struct env v;
    struct it_proc sp;

    env_up(&v, "speed-kill", 4);
    exact_through_kills(&v, &sp, 12, 2, 16000, NULL, NULL);
    it_stop(&sp);
    it_stop(&v.dk);
}

/* With a dedup_cache far below the ids live, most ids are spilled to speed.db and merged
 * there while lambda-speed is killed again and again: still exact. */
Test(speed, stays_exact_with_a_small_dedup_cache_through_sigkills, .timeout = 150)
{
    struct env v;
    struct it_proc sp;

    env_up(&v, "speed-spill", 4);
    exact_through_kills(&v, &sp, 13, 3, 12000, "--dedup-cache", "3000");
    cr_assert_gt(q_int(v.data, "SELECT max(level) FROM seen_gens"), 0, "generations were merged");
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);
    it_stop(&v.dk);
}

Test(speed, sigterm_exits_0_with_everything_consumed_checkpointed, .timeout = 150)
{
    struct env v;
    struct it_proc sp, sp2, g;
    struct gen_args ga;
    struct it_truth t;
    struct kill_wait w;
    int64_t t0, consumed;

    env_up(&v, "speed-term", 3);
    gen_argv(&ga, &v, 13, 30000, 20000, NULL);
    it_spawn(&g, v.dir, "gen", ga.argv, NULL);
    speed_spawn(&v, &sp, "speed", NULL, NULL);
    w = (struct kill_wait){&v, 5000};
    cr_assert(it_wait_until(consumed_reach, &w, 60000));

    /* A second instance on the same data directory refuses to start. */
    speed_spawn(&v, &sp2, "speed2", NULL, NULL);
    cr_assert_eq(it_wait_exit(&sp2, 10000), 1);
    cr_assert(it_log_has(&sp2, "another lambda-speed holds"));

    t0 = it_now_ms();
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);
    cr_assert_lt(it_now_ms() - t0, 2000, "stopping took %" PRId64 " ms", it_now_ms() - t0);
    consumed = it_log_int(&sp, "msg=stopped", "consumed");
    cr_assert_gt(consumed, 0);
    cr_assert_eq(counter(&v, "consumed"), consumed);
    cr_assert_eq(q_int(v.data, "SELECT sum(next_offset) FROM offsets WHERE partition >= 0"),
                 consumed);
    cr_assert_eq(q_int(v.data, "SELECT sum(order_count) FROM deltas"), counter(&v, "applied"));
    cr_assert_eq(q_int(v.data, "SELECT count(*) FROM seen"), counter(&v, "applied"));

    /* The rest of the stream after a restart: exact. */
    cr_assert_eq(it_wait_exit(&g, 60000), 0);
    it_truth_load(&t, ga.truth);
    speed_spawn(&v, &sp, "speed-b", NULL, NULL);
    wait_positions(&v, t.produced);
    assert_exact(&v, &t);
    it_stop(&sp);
    it_truth_free(&t);
    it_stop(&v.dk);
}

Test(speed, start_latest_ignores_the_backlog, .timeout = 150)
{
    struct env v;
    struct it_proc sp;
    struct it_truth a, b;

    env_up(&v, "speed-latest", 3);
    gen(&v, 21, 8000, NULL, &a);
    speed_spawn(&v, &sp, "speed", "--start", "latest");
    wait_positions(&v, a.produced);
    cr_assert_eq(q_int(v.data, "SELECT sum(next_offset) FROM offsets WHERE partition >= 0"),
                 a.produced);
    cr_assert_eq(counter(&v, "consumed"), 0);
    gen(&v, 22, 8000, NULL, &b);
    wait_positions(&v, a.produced + b.produced);
    assert_state_exact(&v, &b);
    cr_assert_eq(counter(&v, "consumed"), b.produced);
    cr_assert_eq(counter(&v, "duplicates"), b.duplicates);
    cr_assert_eq(counter(&v, "late"), b.late);
    it_stop(&sp);
    it_truth_free(&a);
    it_truth_free(&b);
    it_stop(&v.dk);
}

Test(speed, start_time_begins_at_that_times_offsets, .timeout = 150)
{
    struct env v;
    struct it_proc sp;
    struct it_truth a, b;

    env_up(&v, "speed-time", 3);
    /* Message timestamps are the virtual times: a's lie before 10:00, b's from 10:00 on. */
    gen(&v, 31, 6000, "2026-11-20T09:00:00Z", &a);
    gen(&v, 32, 6000, "2026-11-20T10:00:00Z", &b);
    speed_spawn(&v, &sp, "speed", "--start", "2026-11-20T10:00:00Z");
    cr_assert(it_wait_log(&sp, "msg=started", 60000));
    wait_positions(&v, a.produced + b.produced);
    assert_exact(&v, &b);
    it_stop(&sp);
    it_truth_free(&a);
    it_truth_free(&b);
    it_stop(&v.dk);
}

Test(speed, savepoint_out_wipe_restore_keeps_state_and_duplicate_set, .timeout = 150)
{
    struct env v;
    struct it_proc sp;
    struct it_truth a, again;
    char file[700], path[700];

    env_up(&v, "speed-save", 3);
    gen(&v, 41, 10000, NULL, &a);
    speed_spawn(&v, &sp, "speed", NULL, NULL);
    wait_positions(&v, a.produced);
    snprintf(file, sizeof(file), "%s/state.savepoint", v.dir);
    /* A restore while a speed layer runs is refused; a savepoint is fine. */
    cr_assert_eq(speed_cmd(&v, "save-out", "--out", file), 0);
    cr_assert_eq(speed_cmd(&v, "restore-busy", "--restore", file), 1);
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);
    cr_assert_eq(speed_cmd(&v, "save-out2", "--out", file), 0);

    const char *sides[] = {"speed.db", "speed.db-wal", "speed.db-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", v.data, sides[i]);
        unlink(path);
    }
    cr_assert_eq(speed_cmd(&v, "restore", "--restore", file), 0);
    assert_exact(&v, &a);

    /* The same stream again: every valid order is now a duplicate of its first copy. */
    gen(&v, 41, 10000, NULL, &again);
    speed_spawn(&v, &sp, "speed-b", NULL, NULL);
    wait_positions(&v, 2 * a.produced);
    assert_state_exact(&v, &a);
    cr_assert_eq(counter(&v, "duplicates"), 2 * a.duplicates + a.valid);
    cr_assert_eq(counter(&v, "late"), a.late);
    it_stop(&sp);
    it_truth_free(&a);
    it_truth_free(&again);
    it_stop(&v.dk);
}

Test(speed, keeps_retrying_while_the_broker_is_down_and_catches_up, .timeout = 150)
{
    struct env v;
    struct it_proc sp;
    struct it_truth a, b;

    env_up(&v, "speed-down", 3);
    gen(&v, 61, 5000, NULL, &a);
    speed_spawn(&v, &sp, "speed", "--kafka-timeout", "1s");
    wait_positions(&v, a.produced);

    /* Brokers go away under a running speed layer: it says so and keeps going. */
    kill(v.dk.pid, SIGUSR1);
    cr_assert(it_wait_log(&sp, "level=warn mod=speed msg=kafka_error", 30000));
    cr_assert_eq(it_wait_exit(&sp, 0), -1, "lambda-speed exited while the broker was down");
    kill(v.dk.pid, SIGUSR2);
    gen(&v, 62, 5000, NULL, &b);
    wait_positions(&v, a.produced + b.produced);
    it_truth_add(&a, &b);
    assert_exact(&v, &a);
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);

    /* Starting while the brokers are away: it retries until they return. */
    kill(v.dk.pid, SIGUSR1);
    speed_spawn(&v, &sp, "speed-b", "--kafka-timeout", "1s");
    cr_assert(it_wait_log(&sp, "msg=kafka_unreachable", 30000));
    cr_assert_eq(it_wait_exit(&sp, 0), -1);
    kill(v.dk.pid, SIGUSR2);
    cr_assert(it_wait_log(&sp, "msg=started", 30000));
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);
    assert_exact(&v, &a);
    it_truth_free(&a);
    it_truth_free(&b);
    it_stop(&v.dk);
}
