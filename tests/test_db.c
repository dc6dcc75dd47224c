/* test_db.c - shared/db.c: the schemas, the migrations of files made by older layouts, and how a
 * file is made and stamped (whole or not at all, no write lock for an up-to-date one). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* The tables of a file, and its stamp (user_version). */
static void file_schema(const char *path, int64_t *tables, int64_t *stamp)
{
    sqlite3 *db = NULL;
    struct lerr e = {{0}};

    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK, "%s", path);
    sqlite3_busy_timeout(db, 5000);
    *tables = *stamp = -1;
    cr_assert_eq(
        db_query_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", tables, &e), 0,
        "%s: %s", path, e.msg);
    cr_assert_eq(db_query_int(db, "PRAGMA user_version", stamp, &e), 0, "%s", e.msg);
    sqlite3_close(db);
}

/* Opening an up-to-date file for writing only reads its stamp: it succeeds at once while
 * another connection holds the write lock (the schema applied statement by statement took it
 * at every open, and waited out the busy timeout behind a long transaction). */
Test(db, an_up_to_date_file_opens_for_writing_without_the_write_lock, .timeout = 30)
{
    char dir[512], path[600];
    sqlite3 *db = NULL, *holder = NULL;
    struct lerr e = {{0}};
    int64_t t0;

    it_tmpdir("db-lock", dir);
    cr_assert_eq(db_open_rw(dir, DB_MASTER, &db, &e), 0, "%s", e.msg);
    sqlite3_close(db);
    snprintf(path, sizeof(path), "%s/master.db", dir);
    cr_assert_eq(sqlite3_open(path, &holder), SQLITE_OK);
    it_sql(holder, "BEGIN IMMEDIATE");
    t0 = it_now_ms();
    cr_assert_eq(db_open_rw(dir, DB_MASTER, &db, &e), 0, "%s", e.msg);
    cr_expect_lt(it_now_ms() - t0, 2000, "the open waited for the write lock");
    sqlite3_close(db);
    it_sql(holder, "ROLLBACK");
    sqlite3_close(holder);
}

/* A file half made by a version that created its tables one statement at a time (here: only
 * deltas) is completed and stamped in one transaction, like a new one. */
Test(db, a_half_made_file_is_completed_and_stamped, .timeout = 30)
{
    char dir[512], fresh[512], path[600];
    sqlite3 *db = NULL;
    struct lerr e = {{0}};
    int64_t tables, stamp, want_tables, want_stamp;

    it_tmpdir("db-fresh", fresh);
    cr_assert_eq(db_open_rw(fresh, DB_SPEED, &db, &e), 0, "%s", e.msg);
    sqlite3_close(db);
    snprintf(path, sizeof(path), "%s/speed.db", fresh);
    file_schema(path, &want_tables, &want_stamp);
    cr_assert_gt(want_tables, 10);
    cr_assert_neq(want_stamp, 0);

    it_tmpdir("db-half", dir);
    snprintf(path, sizeof(path), "%s/speed.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    it_sql(db, "PRAGMA journal_mode=WAL; CREATE TABLE deltas(merchant_id TEXT NOT NULL,"
               " minute_ms INTEGER NOT NULL, epoch INTEGER NOT NULL, order_count INTEGER NOT"
               " NULL, revenue_cents INTEGER NOT NULL, seq INTEGER NOT NULL DEFAULT 0,"
               " PRIMARY KEY(merchant_id, minute_ms, epoch)) WITHOUT ROWID");
    sqlite3_close(db);
    cr_assert_eq(db_open_rw(dir, DB_SPEED, &db, &e), 0, "%s", e.msg);
    sqlite3_close(db);
    file_schema(path, &tables, &stamp);
    cr_expect_eq(tables, want_tables);
    cr_expect_eq(stamp, want_stamp);
}

/* A reader that finds a new file finds all of it: another process creates files one after
 * another while this one opens each as soon as its path exists. Made in place, the file was
 * there empty, then with some of its tables (lambda-serve answered 503 speed.db unreadable). */
Test(db, a_reader_never_finds_a_new_file_half_made, .timeout = 60)
{
    enum { FILES = 40 };
    char base[512], dir[600], path[700];
    sqlite3 *db = NULL;
    struct lerr e = {{0}};
    int64_t want_tables, want_stamp, tables, stamp;
    int status = 0;
    pid_t child;

    it_tmpdir("db-race", base);
    snprintf(dir, sizeof(dir), "%s/ref", base);
    cr_assert_eq(db_open_rw(dir, DB_SPEED, &db, &e), -1, "no directory yet");
    cr_assert_eq(db_ensure_dir(dir, &e), 0, "%s", e.msg);
    cr_assert_eq(db_open_rw(dir, DB_SPEED, &db, &e), 0, "%s", e.msg);
    sqlite3_close(db);
    snprintf(path, sizeof(path), "%s/speed.db", dir);
    file_schema(path, &want_tables, &want_stamp);
    for (int i = 0; i < FILES; i++) {
        snprintf(dir, sizeof(dir), "%s/%d", base, i);
        cr_assert_eq(db_ensure_dir(dir, &e), 0, "%s", e.msg);
    }
    child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        for (int i = 0; i < FILES; i++) {
            snprintf(dir, sizeof(dir), "%s/%d", base, i);
            if (db_open_rw(dir, DB_SPEED, &db, &e) != 0)
                _exit(1);
            sqlite3_close(db);
        }
        _exit(0);
    }
    for (int i = 0; i < FILES; i++) {
        int64_t end = it_now_ms() + 20000;
        snprintf(path, sizeof(path), "%s/%d/speed.db", base, i);
        while (access(path, F_OK) != 0 && it_now_ms() < end)
            ;
        cr_assert_eq(access(path, F_OK), 0, "%s never appeared", path);
        file_schema(path, &tables, &stamp);
        cr_expect_eq(tables, want_tables, "%s: %" PRId64 " tables", path, tables);
        cr_expect_eq(stamp, want_stamp, "%s", path);
    }
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the creating process failed");
}

static void touch(const char *dir, const char *name)
{
    char path[700];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    cr_assert((f = fopen(path, "w")), "%s", path);
    fclose(f);
}

static bool exists(const char *dir, const char *name)
{
    char path[700];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* A process that is gone: its pid, after it was reaped. */
static pid_t gone_pid(void)
{
    pid_t child = fork();

    cr_assert(child >= 0);
    if (child == 0)
        _exit(0);
    cr_assert_eq(waitpid(child, NULL, 0), child);
    return child;
}

/* What a creator killed half-way left (its temporary file and journals, or an earlier
 * version's <file>.new-<pid>) goes when a file is next made, whatever its pid: no flock holds
 * it. What a live creator holds stays, even under this process's own pid (another pid
 * namespace on the same data directory): the old names were <file>.new-<pid>, so the two
 * removed each other's files, or shared one. */
Test(db, a_new_file_removes_unlocked_leftovers_and_keeps_locked_ones, .timeout = 30)
{
    char dir[512], path[700], old[64], mine[64], mine_wal[80];
    sqlite3 *db = NULL;
    struct lerr e = {{0}};
    int held, held_mine;

    it_tmpdir("db-leftovers", dir);
    snprintf(old, sizeof(old), "speed.db.new-%ld", (long)gone_pid());
    snprintf(mine, sizeof(mine), "speed.db.new-%ld", (long)getpid());
    snprintf(mine_wal, sizeof(mine_wal), "%s-wal", mine);
    touch(dir, "speed.db.new-Ab3xYz");
    touch(dir, "speed.db.new-Ab3xYz-wal");
    touch(dir, "speed.db.new-Ab3xYz-journal");
    touch(dir, old);
    touch(dir, "speed.db.new-Kept01");
    touch(dir, "speed.db.new-Kept01-wal");
    touch(dir, mine);
    touch(dir, mine_wal);
    touch(dir, "batch.db.new-Other1");
    snprintf(path, sizeof(path), "%s/speed.db.new-Kept01", dir);
    cr_assert((held = open(path, O_RDONLY)) >= 0);
    cr_assert_eq(flock(held, LOCK_EX), 0);
    snprintf(path, sizeof(path), "%s/%s", dir, mine);
    cr_assert((held_mine = open(path, O_RDONLY)) >= 0);
    cr_assert_eq(flock(held_mine, LOCK_EX), 0);

    cr_assert_eq(db_open_rw(dir, DB_SPEED, &db, &e), 0, "%s", e.msg);
    sqlite3_close(db);
    cr_expect_not(exists(dir, "speed.db.new-Ab3xYz"));
    cr_expect_not(exists(dir, "speed.db.new-Ab3xYz-wal"));
    cr_expect_not(exists(dir, "speed.db.new-Ab3xYz-journal"));
    cr_expect_not(exists(dir, old), "%s", old);
    cr_expect(exists(dir, "speed.db.new-Kept01"));
    cr_expect(exists(dir, "speed.db.new-Kept01-wal"));
    cr_expect(exists(dir, mine), "%s: another creator of the same pid holds it", mine);
    cr_expect(exists(dir, mine_wal), "%s", mine_wal);
    cr_expect(exists(dir, "batch.db.new-Other1"), "another file's leftovers wait for it");
    cr_expect(exists(dir, "speed.db"));
    close(held);
    close(held_mine);
}
