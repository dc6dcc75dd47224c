/* it_retention.c - nothing grows forever (DESIGN.md sections 4 and 5): rejects and late rows
 * older than `retention` are deleted in bounded slices by the speed layer's checkpoints and by
 * batch runs, failed versions are pruned with keep_versions, and the counters /metrics reads
 * keep their totals (a counter that went down would read as a reset). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "itlib.h"
#include "tm.h"

#define DAY_MS 86400000LL

static struct it_proc dk, speed, serve;

static void fini(void)
{
    it_stop(&serve);
    it_stop(&speed);
    it_stop(&dk);
}

static int64_t count(const char *data, enum db_file f, const char *sql)
{
    struct lerr e = {{0}};
    sqlite3 *db;
    int64_t n = -1;

    cr_assert_eq(db_open_ro(data, f, &db, &e), 0, "%s", e.msg);
    cr_assert_eq(db_query_int(db, sql, &n, &e), 0, "%s", e.msg);
    sqlite3_close(db);
    return n;
}

struct trimmed {
    const char *data;
};

static bool speed_trimmed(void *arg)
{
    const char *data = ((struct trimmed *)arg)->data;
    return count(data, DB_SPEED, "SELECT count(*) FROM late") == 1 &&
           count(data, DB_SPEED, "SELECT count(*) FROM rejects") == 1;
}

Test(retention, the_speed_layer_deletes_old_rejects_and_late_rows_in_slices, .timeout = 90,
     .fini = fini)
{
    char dir[512], data[600], bs[256];
    struct lerr e = {{0}};
    sqlite3 *db;
    int64_t old = tm_now_ms() - 8 * DAY_MS, young = tm_now_ms();

    it_tmpdir("rspeed", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    cr_assert_eq(db_ensure_dir(data, &e), 0, "%s", e.msg);
    it_devkafka(&dk, dir, 1, bs);
    /* 2,500 rows of each older than the default retention (7 days) and one younger: more than
     * two checkpoints' slices. */
    cr_assert_eq(db_open_rw(data, DB_SPEED, &db, &e), 0, "%s", e.msg);
    it_sql(db,
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)"
           " INSERT INTO late(partition, offset, merchant_id, order_id, event_ms, minute_ms,"
           " watermark_ms, late_ms, at_ms) SELECT 0, i, 'm', 'o' || i, 0, 0, 0, 0, %lld FROM n;"
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)"
           " INSERT INTO rejects(partition, offset, reason, payload, at_ms)"
           " SELECT 0, i, 'bad_json', 'x', %lld FROM n;"
           "INSERT INTO late(partition, offset, merchant_id, order_id, event_ms, minute_ms,"
           " watermark_ms, late_ms, at_ms) VALUES (0, 9999, 'm', 'young', 0, 0, 0, 0, %lld);"
           "INSERT INTO rejects(partition, offset, reason, payload, at_ms)"
           " VALUES (0, 9999, 'bad_json', 'y', %lld);"
           "INSERT INTO counters VALUES ('late', 2501), ('rejects_bad_json', 2501)",
           (long long)old, (long long)old, (long long)young, (long long)young);
    sqlite3_close(db);

    char *argv[] = {"lambda-speed", "--brokers", bs, "--data-dir", data, NULL};
    it_spawn(&speed, dir, "speed", argv, NULL);
    cr_assert(it_wait_log(&speed, "msg=started", 30000), "lambda-speed did not start");
    struct trimmed t = {data};
    cr_assert(it_wait_until(speed_trimmed, &t, 30000), "late=%lld rejects=%lld after 30 s",
              (long long)count(data, DB_SPEED, "SELECT count(*) FROM late"),
              (long long)count(data, DB_SPEED, "SELECT count(*) FROM rejects"));
    cr_expect_eq(count(data, DB_SPEED, "SELECT offset FROM late"), 9999, "the young row stays");
    cr_expect_eq(count(data, DB_SPEED, "SELECT value FROM counters WHERE name='late'"), 2501);
    cr_expect_eq(count(data, DB_SPEED, "SELECT value FROM counters WHERE name='rejects_bad_json'"),
                 2501);
    cr_assert_eq(it_signal(&speed, SIGTERM, 20000), 0);
}

Test(retention, a_batch_run_deletes_old_rejects_and_prunes_failed_versions, .timeout = 90,
     .fini = fini)
{
    char dir[512], data[600], bs[256], url[128], *body = NULL;
    struct lerr e = {{0}};
    sqlite3 *db;
    int64_t old = tm_now_ms() - 8 * DAY_MS;

    it_tmpdir("rbatch", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    cr_assert_eq(db_ensure_dir(data, &e), 0, "%s", e.msg);
    it_devkafka(&dk, dir, 1, bs);
    /* 25,000 old rejects (more than two slices) and one young one; the trigger counts them. */
    cr_assert_eq(db_open_rw(data, DB_MASTER, &db, &e), 0, "%s", e.msg);
    it_sql(db,
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000)"
           " INSERT INTO rejects(source, partition, offset, reason, payload, at_ms)"
           " SELECT 'kafka', 0, i, 'bad_json', 'x', %lld FROM n;"
           "INSERT INTO rejects(source, line, reason, payload, at_ms)"
           " VALUES ('f.ndjson', 3, 'bad_time', 'y', %lld)",
           (long long)old, (long long)tm_now_ms());
    sqlite3_close(db);
    /* Five failed versions, as cuts Kafka lost would leave. */
    cr_assert_eq(db_open_rw(data, DB_BATCH, &db, &e), 0, "%s", e.msg);
    it_sql(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5)"
               " INSERT INTO versions(id, state, cut_epoch, started_ms) SELECT i, 'failed', 0, 0"
               " FROM n");
    sqlite3_close(db);

    char *run[] = {"lambda-batch", "run", "--data-dir", data, "--brokers", bs, NULL};
    cr_assert_eq(it_run(dir, "run", run, NULL, 60000), 0);
    cr_expect_eq(count(data, DB_MASTER, "SELECT count(*) FROM rejects"), 1);
    cr_expect_eq(count(data, DB_MASTER, "SELECT line FROM rejects"), 3, "the young one stays");
    cr_expect_eq(count(data, DB_MASTER, "SELECT value FROM counters WHERE name='rejects_bad_json'"),
                 25000);
    cr_expect_eq(count(data, DB_BATCH, "SELECT count(*) FROM versions WHERE state='failed'"), 3,
                 "keep_versions (3) failed versions are kept");
    cr_expect_eq(count(data, DB_BATCH, "SELECT min(id) FROM versions WHERE state='failed'"), 3);
    cr_expect_eq(count(data, DB_BATCH, "SELECT id FROM versions WHERE state='published'"), 6);

    /* /metrics reads the counters: the totals, not what retention left in the table. */
    char *sv[] = {"lambda-serve", "--port", "0", "--data-dir", data, NULL};
    it_spawn(&serve, dir, "serve", sv, NULL);
    cr_assert(it_wait_log(&serve, "msg=listening", 10000));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics",
             (int)it_log_int(&serve, "msg=listening", "port"));
    cr_assert_eq(it_http_get(url, &body), 200);
    cr_expect(strstr(body, "\nlambda_rejects_total{layer=\"batch\",reason=\"bad_json\"} 25000\n"),
              "%s", body);
    cr_expect(strstr(body, "\nlambda_rejects_total{layer=\"batch\",reason=\"bad_time\"} 1\n"), "%s",
              body);
    free(body);
}
