/* it_speed_epochs.c - the epoch contract of DESIGN.md section 3, end to end.
 *
 * With 1-second epochs under a paced stream: every counted event lies between its epoch's
 * boundary and the next one; a published batch cut expires exactly the older state; the
 * merge "state before the cut + speed state from the cut" equals the truth; and a speed layer
 * that lost its state rebuilds from the cut (with the cut's ids in master.db) exactly. This
 * test plays the batch layer by writing batch.db and master.db as lambda-batch would. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "itlib.h"

static int64_t q_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static sqlite3 *open_speed(const char *data)
{
    char path[700];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/speed.db", data);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    return db;
}

struct wait_sql {
    const char *data, *sql;
    int64_t want;
};

static bool sql_reaches(void *arg)
{
    struct wait_sql *w = arg;
    char path[700];
    sqlite3 *db;
    int64_t v;

    snprintf(path, sizeof(path), "%s/speed.db", w->data);
    if (access(path, R_OK) != 0)
        return false;
    db = open_speed(w->data);
    v = q_int(db, w->sql);
    sqlite3_close(db);
    return v == w->want;
}

static void wait_sql(const char *data, const char *sql, int64_t want)
{
    struct wait_sql w = {data, sql, want};

    cr_assert(it_wait_until(sql_reaches, &w, 90000), "'%s' never gave %" PRId64, sql, want);
}

struct snap {
    char merchant_id[65];
    int64_t count, revenue;
};

/* Per merchant: (what the snapshot holds) + (deltas now) == truth. */
static void assert_merge(const char *data, const struct snap *sn, size_t nsn,
                         const struct it_truth *t)
{
    sqlite3 *db = open_speed(data);

    for (size_t i = 0; i < t->nmerchants; i++) {
        const struct it_truth_merchant *m = &t->merchants[i];
        char sql[300];
        int64_t c = 0, r = 0;
        for (size_t k = 0; k < nsn; k++)
            if (strcmp(sn[k].merchant_id, m->merchant_id) == 0)
                c += sn[k].count, r += sn[k].revenue;
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(sum(order_count),0) FROM deltas WHERE merchant_id='%s'",
                 m->merchant_id);
        c += q_int(db, sql);
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(sum(revenue_cents),0) FROM deltas WHERE merchant_id='%s'",
                 m->merchant_id);
        r += q_int(db, sql);
        cr_assert_eq(c, m->order_count, "orders of %s", m->merchant_id);
        cr_assert_eq(r, m->revenue_cents, "revenue of %s", m->merchant_id);
    }
    sqlite3_close(db);
}

/* The high watermark of each of 3 partitions, asked with kcat. */
static void high_watermarks(const char *dir, const char *bs, int64_t out[3])
{
    char path[700], *text, *line, *save = NULL;
    char *argv[] = {"/usr/bin/kcat", "-Q", "-b",          (char *)bs, "-t", "orders:0:-1", "-t",
                    "orders:1:-1",   "-t", "orders:2:-1", NULL};

    cr_assert_eq(it_run(dir, "kcat-q", argv, NULL, 20000), 0);
    snprintf(path, sizeof(path), "%s/kcat-q.out", dir);
    text = it_read_file(path, NULL);
    cr_assert_not_null(text);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int p;
        long long off;
        if (sscanf(line, "orders [%d] offset %lld", &p, &off) == 2 && p >= 0 && p < 3)
            out[p] = off;
    }
    free(text);
}

/* A batch run while no speed layer runs cuts at the high watermarks, with a cut_epoch past
 * every boundary. The speed layer, behind that cut, moves forward to it, counts nothing the
 * cut covers, and starts its epochs at the cut with a boundary at the cut's offsets. */
static void move_to_a_newer_cut(const char *dir, const char *bs, const char *data,
                                char *speed_argv[], int64_t produced)
{
    char truth[700], sql[1400];
    struct it_truth c;
    struct it_proc sp;
    sqlite3 *db, *bdb;
    struct lerr e;
    int64_t high[3] = {-1, -1, -1}, applied, cut_epoch;
    char *gen_argv[] = {"lambda-gen", "--brokers", (char *)bs, "--count", "3000",
                        "--seed",     "53",        "--truth",  truth,     NULL};

    snprintf(truth, sizeof(truth), "%s/truth-c", dir);
    cr_assert_eq(it_run(dir, "gen-c", gen_argv, NULL, 60000), 0);
    it_truth_load(&c, truth);
    high_watermarks(dir, bs, high);
    cr_assert_eq(high[0] + high[1] + high[2], produced + c.produced);
    db = open_speed(data);
    applied = q_int(db, "SELECT sum(order_count) FROM deltas");
    /* Far enough ahead that the wall clock cannot pass it during the test. */
    cut_epoch = q_int(db, "SELECT max(epoch) FROM boundaries") + 1000;
    sqlite3_close(db);
    cr_assert_eq(db_open_rw(data, DB_BATCH, &bdb, &e), 0, "%s", e.msg);
    snprintf(sql, sizeof(sql),
             "INSERT INTO versions(id, state, cut_epoch, started_ms) VALUES(2, 'pending', %" PRId64
             ", 0); INSERT INTO cut_offsets VALUES(2, 0, %" PRId64 "), (2, 1, %" PRId64
             "), (2, 2, %" PRId64 ")",
             cut_epoch, high[0], high[1], high[2]);
    cr_assert_eq(db_exec(bdb, sql, &e), 0, "%s", e.msg);
    sqlite3_close(bdb);

    it_spawn(&sp, dir, "speed-moved", speed_argv, NULL);
    cr_assert(it_wait_log(&sp, "msg=started", 30000));
    cr_assert(it_log_has(&sp, "msg=moved_to_cut"));
    wait_sql(data, "SELECT sum(next_offset) FROM offsets WHERE partition >= 0",
             produced + c.produced);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM boundaries WHERE partition >= 0 AND epoch = %" PRId64,
             cut_epoch);
    wait_sql(data, sql, 3);
    db = open_speed(data);
    cr_assert_eq(q_int(db, "SELECT sum(order_count) FROM deltas"), applied);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM boundaries WHERE epoch = %" PRId64 " AND ((partition = 0 AND"
             " offset = %" PRId64 ") OR (partition = 1 AND offset = %" PRId64
             ") OR (partition = 2 AND offset = %" PRId64 "))",
             cut_epoch, high[0], high[1], high[2]);
    cr_assert_eq(q_int(db, sql), 3, "the boundary of the cut's epoch is the cut");
    cr_assert_geq(q_int(db, "SELECT value FROM meta WHERE key = 'epoch'"), cut_epoch);
    sqlite3_close(db);
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);
    it_truth_free(&c);
}

Test(speed_epochs, boundaries_expiry_merge_and_rebuild_from_a_cut, .timeout = 180)
{
    char dir[512], bs[256], data[600], truth[700], sql[1400];
    struct it_proc dk, sp, g;
    struct it_truth t;
    struct snap sn[256];
    size_t nsn = 0;
    sqlite3 *db, *bdb, *mdb;
    sqlite3_stmt *st;
    struct lerr e;
    int64_t mid, total;

    it_tmpdir("speed-epochs", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(truth, sizeof(truth), "%s/truth", dir);
    it_devkafka(&dk, dir, 3, bs);
    char *speed_argv[] = {"lambda-speed", "--brokers",  bs,     "--data-dir",
                          data,           "--epoch-ms", "1000", NULL};
    char *gen_argv[] = {"lambda-gen", "--brokers",  bs,   "--count",     "16000", "--rate",
                        "4000",       "--seed",     "51", "--merchants", "40",    "--dup-pct",
                        "8",          "--late-pct", "2",  "--truth",     truth,   NULL};
    it_spawn(&sp, dir, "speed", speed_argv, NULL);
    it_spawn(&g, dir, "gen", gen_argv, NULL);
    cr_assert_eq(it_wait_exit(&g, 60000), 0);
    it_truth_load(&t, truth);
    wait_sql(data, "SELECT sum(next_offset) FROM offsets WHERE partition >= 0", t.produced);

    /* Each counted event lies in [boundary(e), boundary(next e)) of its partition. */
    db = open_speed(data);
    cr_assert_geq(q_int(db, "SELECT count(DISTINCT epoch) FROM seen"), 2);
    cr_assert_eq(q_int(db, "SELECT count(*) FROM boundaries WHERE partition >= 0"),
                 3 * q_int(db, "SELECT count(DISTINCT epoch) FROM boundaries"));
    cr_assert_eq(q_int(db, "SELECT count(*) FROM seen s LEFT JOIN boundaries b"
                           " ON b.epoch = s.epoch AND b.partition = s.partition"
                           " WHERE b.offset IS NULL OR s.offset < b.offset OR s.offset >="
                           " (SELECT coalesce(min(offset), 1e18) FROM boundaries n"
                           "  WHERE n.partition = s.partition AND n.epoch > s.epoch)"),
                 0);
    cr_assert_eq(q_int(db, "SELECT count(*) FROM (SELECT epoch, count(*) c FROM seen GROUP BY"
                           " epoch) s LEFT JOIN (SELECT epoch, sum(order_count) c FROM deltas"
                           " GROUP BY epoch) d USING(epoch) WHERE d.c IS NOT s.c"),
                 0);

    /* The cut: a middle epoch that has counted events on both sides. */
    mid = q_int(db, "SELECT epoch FROM (SELECT DISTINCT epoch FROM seen ORDER BY epoch)"
                    " LIMIT 1 OFFSET (SELECT count(DISTINCT epoch) / 2 FROM seen)");
    cr_assert_gt(mid, q_int(db, "SELECT min(epoch) FROM seen"));
    snprintf(sql, sizeof(sql),
             "SELECT merchant_id, sum(order_count), sum(revenue_cents) FROM deltas"
             " WHERE epoch < %" PRId64 " GROUP BY merchant_id",
             mid);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW && nsn < 256) {
        snprintf(sn[nsn].merchant_id, 65, "%s", sqlite3_column_text(st, 0));
        sn[nsn].count = sqlite3_column_int64(st, 1);
        sn[nsn++].revenue = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* The batch ingests what lies before the cut into master.db, then publishes the cut. */
    cr_assert_eq(db_open_rw(data, DB_MASTER, &mdb, &e), 0, "%s", e.msg);
    snprintf(
        sql, sizeof(sql),
        "ATTACH '%s/speed.db' AS s; INSERT INTO orders_base SELECT merchant_id, order_id, 0, 0,"
        " partition, offset, NULL FROM s.seen WHERE epoch < %" PRId64 "; DETACH s",
        data, mid);
    cr_assert_eq(db_exec(mdb, sql, &e), 0, "%s", e.msg);
    sqlite3_close(mdb);
    cr_assert_eq(db_open_rw(data, DB_BATCH, &bdb, &e), 0, "%s", e.msg);
    snprintf(sql, sizeof(sql),
             "ATTACH '%s/speed.db' AS s; INSERT INTO versions(id, state, cut_epoch, started_ms)"
             " VALUES(1, 'published', %" PRId64 ", 0); INSERT INTO cut_offsets SELECT 1,"
             " partition, offset FROM s.boundaries WHERE epoch = %" PRId64 "; DETACH s",
             data, mid, mid);
    cr_assert_eq(db_exec(bdb, sql, &e), 0, "%s", e.msg);
    sqlite3_close(bdb);

    /* Expiry: exactly the state older than the cut goes; the merge stays exact. */
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM deltas WHERE epoch < %" PRId64 ")"
             " + (SELECT count(*) FROM seen WHERE epoch < %" PRId64 ")"
             " + (SELECT count(*) FROM boundaries WHERE epoch < %" PRId64 ")",
             mid, mid, mid);
    wait_sql(data, sql, 0);
    assert_merge(data, sn, nsn, &t);
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);

    /* A speed layer that lost its state rebuilds from the cut: the merge is exact again. */
    const char *sides[] = {"speed.db", "speed.db-wal", "speed.db-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(sql, sizeof(sql), "%s/%s", data, sides[i]);
        unlink(sql);
    }
    it_spawn(&sp, dir, "speed-rebuilt", speed_argv, NULL);
    db = NULL;
    cr_assert(it_wait_log(&sp, "msg=started", 30000));
    cr_assert(it_log_has(&sp, "from=cut"));
    total = 0;
    for (size_t k = 0; k < nsn; k++)
        total += sn[k].count;
    wait_sql(data, "SELECT sum(next_offset) FROM offsets WHERE partition >= 0", t.produced);
    assert_merge(data, sn, nsn, &t);
    db = open_speed(data);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM deltas WHERE epoch < %" PRId64, mid);
    cr_assert_eq(q_int(db, sql), 0);
    cr_assert_eq(q_int(db, "SELECT sum(order_count) FROM deltas") + total, t.valid);
    sqlite3_close(db);
    cr_assert_eq(it_signal(&sp, SIGTERM, 5000), 0);
    move_to_a_newer_cut(dir, bs, data, speed_argv, t.produced);
    it_truth_free(&t);
    it_stop(&dk);
}
