/* test_db.c - shared/db.c: the schemas and the migrations of files made by older layouts. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "db.h"
#include "itlib.h"

/* A speed.db from before the change feed: deltas without seq. Opening it for writing adds the
 * column (0 in the old rows) and its index; new rows carry their checkpoint's number. */
Test(db, migrates_deltas_to_carry_the_checkpoint_seq, .timeout = 30)
{
    char dir[512], path[600];
    sqlite3 *db = NULL;
    struct lerr e = {{0}};
    int64_t n = -1;

    it_tmpdir("db", dir);
    snprintf(path, sizeof(path), "%s/speed.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    it_sql(db, "CREATE TABLE deltas(merchant_id TEXT NOT NULL, minute_ms INTEGER NOT NULL,"
               " epoch INTEGER NOT NULL, order_count INTEGER NOT NULL, revenue_cents INTEGER"
               " NOT NULL, PRIMARY KEY(merchant_id, minute_ms, epoch)) WITHOUT ROWID;"
               "INSERT INTO deltas VALUES ('m-1', 60000, 7, 3, 300)");
    sqlite3_close(db);
    cr_assert_eq(db_open_rw(dir, DB_SPEED, &db, &e), 0, "%s", e.msg);
    cr_assert_eq(db_query_int(db, "SELECT seq FROM deltas WHERE merchant_id = 'm-1'", &n, &e), 0,
                 "%s", e.msg);
    cr_expect_eq(n, 0);
    cr_assert_eq(db_query_int(db,
                              "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND"
                              " name = 'deltas_by_seq'",
                              &n, &e),
                 0, "%s", e.msg);
    cr_expect_eq(n, 1);
    it_sql(db, "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, revenue_cents, seq)"
               " VALUES ('m-2', 60000, 7, 1, 100, 5)");
    cr_assert_eq(db_query_int(db, "SELECT max(seq) FROM deltas", &n, &e), 0, "%s", e.msg);
    cr_expect_eq(n, 5);
    sqlite3_close(db);
    /* A second open finds nothing to do. */
    cr_assert_eq(db_open_rw(dir, DB_SPEED, &db, &e), 0, "%s", e.msg);
    sqlite3_close(db);
}
