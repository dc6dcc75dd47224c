/* test_dedup.c - the duplicate rule (shared/dedup.c) on real SQLite files. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "dedup_test.h"
#include "itlib.h"
#include "speed/wal.h"

struct fix {
    char dir[512];
    sqlite3 *speed;
    struct dedup *d;
    struct dedup_txn *txn; /* a checkpoint written and not yet ended */
    struct lerr e;
};

static void fix_up(struct fix *f, size_t cache_max)
{
    it_tmpdir("dedup", f->dir);
    cr_assert_eq(db_open_rw(f->dir, DB_SPEED, &f->speed, &f->e), 0, "%s", f->e.msg);
    f->d = dedup_new(f->speed, f->dir, cache_max, &f->e);
    cr_assert_not_null(f->d, "%s", f->e.msg);
}

static void fix_down(struct fix *f)
{
    dedup_free(f->d);
    sqlite3_close(f->speed);
}

static int check(struct fix *f, const char *m, const char *o, int p, int64_t off)
{
    int r = dedup_check(f->d, m, o, p, off, &f->e);

    cr_assert_geq(r, 0, "%s", f->e.msg);
    return r;
}

/* Each of the ids o-0 .. o-(n-1) must be known. */
static void expect_ids(struct fix *f, int n)
{
    char o[32];

    for (int i = 0; i < n; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(f, "m", o, 0, 99999), 1, "%s", o);
    }
}

static void add(struct fix *f, const char *m, const char *o, int64_t epoch, int p, int64_t off)
{
    cr_assert_eq(dedup_add(f->d, m, o, epoch, p, off, &f->e), 0, "%s", f->e.msg);
}

static void flush(struct fix *f)
{
    cr_assert_eq(db_exec(f->speed, "BEGIN", &f->e), 0);
    cr_assert_eq(dedup_flush(f->d, &f->e), 0, "%s", f->e.msg);
    cr_assert_eq(db_exec(f->speed, "COMMIT", &f->e), 0);
}

/* A checkpoint the writer thread's way, in its two halves: the write (and an expiry below cut
 * unless DEDUP_NO_CUT) committed, then the reading side's turn. */
static void ckpt_write(struct fix *f, int64_t cut)
{
    f->txn = dedup_begin(f->d, cut, &f->e);
    cr_assert_not_null(f->txn, "%s", f->e.msg);
    cr_assert_eq(db_exec(f->speed, "BEGIN IMMEDIATE", &f->e), 0);
    cr_assert_eq(dedup_write(f->txn, &f->e), 0, "write: %s", f->e.msg);
    cr_assert_eq(db_exec(f->speed, "COMMIT", &f->e), 0);
    dedup_refresh(f->d);
}

static void ckpt_finish(struct fix *f)
{
    cr_assert_eq(dedup_end(f->txn, true, &f->e), 0, "%s", f->e.msg);
    f->txn = NULL;
}

static void ckpt(struct fix *f, int64_t cut)
{
    ckpt_write(f, cut);
    ckpt_finish(f);
}

/* The process ends (nothing in memory is released) and starts again with cache_max. */
static void restart(struct fix *f, size_t cache_max)
{
    dedup_free(f->d);
    f->d = dedup_new(f->speed, f->dir, cache_max, &f->e);
    cr_assert_not_null(f->d, "%s", f->e.msg);
}

static int64_t seen_rows(struct fix *f)
{
    int64_t n = -1;

    cr_assert_eq(db_query_int(f->speed, "SELECT count(*) FROM seen", &n, &f->e), 0, "%s", f->e.msg);
    return n;
}

Test(dedup, a_counted_id_is_a_duplicate_before_and_after_the_flush, .timeout = 30)
{
    struct fix f;

    fix_up(&f, 100);
    cr_assert_eq(check(&f, "m-1", "o-1", 0, 10), 0);
    add(&f, "m-1", "o-1", 7, 0, 10);
    cr_assert_eq(check(&f, "m-1", "o-1", 0, 11), 1);
    cr_assert_eq(check(&f, "m-2", "o-1", 0, 11), 0, "another merchant, another order");
    flush(&f);
    cr_assert_eq(seen_rows(&f), 1);
    cr_assert_eq(check(&f, "m-1", "o-1", 0, 12), 1);
    fix_down(&f);
}

Test(dedup, the_seen_set_survives_a_restart, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;

    fix_up(&f, 100);
    add(&f, "m-1", "o-1", 7, 0, 10);
    add(&f, "m-1", "o-2", 7, 0, 11);
    flush(&f);
    add(&f, "m-1", "o-3", 7, 0, 12); /* never flushed: lost with the process */
    restart(&f, 100);
    dedup_get_stats(f.d, &s);
    cr_assert_eq(s.cache_ids, 2);
    cr_assert(s.is_complete);
    cr_assert_eq(check(&f, "m-1", "o-1", 0, 20), 1);
    cr_assert_eq(check(&f, "m-1", "o-2", 0, 20), 1);
    cr_assert_eq(check(&f, "m-1", "o-3", 0, 12), 0);
    fix_down(&f);
}

/* Master holds 'imp' (imported, offset 5 of -1), 'p0' at offset 10 of partition 0 and 'p1' at
 * offset 10 of partition 1, in whichever level: which of them are earlier copies. */
static void assert_master_copies(struct fix *f)
{
    cr_assert_eq(check(f, "m", "imp", 0, 100), 1, "an imported order");
    cr_assert_eq(check(f, "m", "p1", 0, 100), 1, "a copy in another partition");
    cr_assert_eq(check(f, "m", "p0", 0, 11), 1, "an earlier copy in this partition");
    cr_assert_eq(check(f, "m", "p0", 0, 10), 0, "this very copy, ingested by the batch");
    cr_assert_eq(check(f, "m", "p0", 0, 9), 0, "master holds a later copy only");
    cr_assert_eq(check(f, "m", "none", 0, 9), 0);
}

Test(dedup, master_rows_are_earlier_copies_unless_at_or_after_this_offset, .timeout = 30)
{
    struct fix f;
    sqlite3 *m;

    fix_up(&f, 100);
    cr_assert_eq(db_open_rw(f.dir, DB_MASTER, &m, &f.e), 0);
    cr_assert_eq(db_exec(m,
                         "INSERT INTO orders_base VALUES('m','imp',1,0,-1,5,NULL),"
                         "('m','p0',1,0,0,10,NULL),('m','p1',1,0,1,10,NULL)",
                         &f.e),
                 0, "%s", f.e.msg);
    assert_master_copies(&f);
    sqlite3_close(m);
    fix_down(&f);
}

Test(dedup, master_rows_of_the_recent_level_are_earlier_copies_too, .timeout = 30)
{
    struct fix f;
    sqlite3 *m;

    fix_up(&f, 100);
    cr_assert_eq(db_open_rw(f.dir, DB_MASTER, &m, &f.e), 0);
    cr_assert_eq(db_exec(m,
                         "INSERT INTO orders_base VALUES('m','big',1,0,0,10,NULL);"
                         "INSERT INTO orders_recent VALUES('m','imp',1,0,-1,5,NULL),"
                         "('m','p0',1,0,0,10,NULL),('m','p1',1,0,1,10,NULL)",
                         &f.e),
                 0, "%s", f.e.msg);
    cr_assert_eq(check(&f, "m", "big", 0, 11), 1, "an earlier copy in the big level");
    assert_master_copies(&f);
    sqlite3_close(m);
    fix_down(&f);
}

/* master.db as it was before the recent level, written with raw SQL: a reader asks its one
 * table, and once a writer created the recent level (the migration), it asks both. */
Test(dedup, a_master_of_one_level_is_read_until_it_has_two, .timeout = 30)
{
    struct fix f;
    char path[PATH_MAX];
    sqlite3 *m = NULL;

    fix_up(&f, 100);
    db_path(f.dir, DB_MASTER, path, sizeof(path));
    cr_assert_eq(sqlite3_open(path, &m), SQLITE_OK);
    cr_assert_eq(db_exec(m,
                         "PRAGMA journal_mode=WAL;"
                         "CREATE TABLE orders(merchant_id TEXT NOT NULL, order_id TEXT NOT NULL,"
                         " amount_cents INTEGER NOT NULL, event_time_ms INTEGER NOT NULL,"
                         " partition INTEGER NOT NULL, offset INTEGER NOT NULL, raw BLOB,"
                         " PRIMARY KEY(merchant_id, order_id)) WITHOUT ROWID;"
                         "INSERT INTO orders VALUES('m','old',1,0,0,10,NULL)",
                         &f.e),
                 0, "%s", f.e.msg);
    sqlite3_close(m);
    cr_assert_eq(check(&f, "m", "old", 0, 11), 1, "the one level is read");
    cr_assert_eq(check(&f, "m", "new", 0, 11), 0);
    dedup_refresh(f.d);
    cr_assert_eq(db_open_rw(f.dir, DB_MASTER, &m, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(db_exec(m, "INSERT INTO orders_recent VALUES('m','new',1,0,0,10,NULL)", &f.e), 0,
                 "%s", f.e.msg);
    sqlite3_close(m);
    dedup_refresh(f.d);
    cr_assert_eq(check(&f, "m", "new", 0, 11), 1, "the recent level, once it exists");
    cr_assert_eq(check(&f, "m", "old", 0, 11), 1);
    cr_assert_eq(check(&f, "m", "new", 0, 10), 0, "this very copy");
    fix_down(&f);
}

/* master.db as it was with two levels and before the view: the table `orders` is the big
 * level beside orders_recent. A reader asks both as they are, and once a writer renamed the
 * big level orders_base (the migration), it asks the new names. */
Test(dedup, a_master_of_two_levels_before_the_view_is_read_as_it_is, .timeout = 30)
{
    struct fix f;
    char path[PATH_MAX];
    sqlite3 *m = NULL;

    fix_up(&f, 100);
    db_path(f.dir, DB_MASTER, path, sizeof(path));
    cr_assert_eq(sqlite3_open(path, &m), SQLITE_OK);
    cr_assert_eq(db_exec(m,
                         "PRAGMA journal_mode=WAL;"
                         "CREATE TABLE orders(merchant_id TEXT NOT NULL, order_id TEXT NOT NULL,"
                         " amount_cents INTEGER NOT NULL, event_time_ms INTEGER NOT NULL,"
                         " partition INTEGER NOT NULL, offset INTEGER NOT NULL, raw BLOB,"
                         " PRIMARY KEY(merchant_id, order_id)) WITHOUT ROWID;"
                         "CREATE TABLE orders_recent(merchant_id TEXT NOT NULL,"
                         " order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,"
                         " event_time_ms INTEGER NOT NULL, partition INTEGER NOT NULL,"
                         " offset INTEGER NOT NULL, raw BLOB,"
                         " PRIMARY KEY(merchant_id, order_id)) WITHOUT ROWID;"
                         "CREATE VIEW orders_all AS SELECT * FROM orders UNION ALL"
                         " SELECT * FROM orders_recent;"
                         "INSERT INTO orders VALUES('m','big',1,0,0,10,NULL);"
                         "INSERT INTO orders_recent VALUES('m','rec',1,0,0,10,NULL)",
                         &f.e),
                 0, "%s", f.e.msg);
    sqlite3_close(m);
    cr_assert_eq(check(&f, "m", "big", 0, 11), 1, "the old big level is read");
    cr_assert_eq(check(&f, "m", "rec", 0, 11), 1, "and the recent level");
    cr_assert_eq(check(&f, "m", "new", 0, 11), 0);
    dedup_refresh(f.d);
    cr_assert_eq(db_open_rw(f.dir, DB_MASTER, &m, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(db_exec(m, "INSERT INTO orders_recent VALUES('m','new',1,0,0,10,NULL)", &f.e), 0,
                 "%s", f.e.msg);
    cr_assert_eq(db_exec(m, "SELECT 1 FROM orders_base", &f.e), 0, "%s", f.e.msg);
    sqlite3_close(m);
    dedup_refresh(f.d);
    cr_assert_eq(check(&f, "m", "big", 0, 11), 1, "the big level, renamed");
    cr_assert_eq(check(&f, "m", "rec", 0, 11), 1);
    cr_assert_eq(check(&f, "m", "new", 0, 11), 1);
    cr_assert_eq(check(&f, "m", "new", 0, 10), 0, "this very copy");
    fix_down(&f);
}

Test(dedup, an_overflowing_cache_asks_the_seen_table, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;
    char o[32];

    fix_up(&f, 3);
    for (int i = 0; i < 10; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, i), 0);
        add(&f, "m", o, 1, 0, i);
    }
    dedup_get_stats(f.d, &s);
    cr_assert_leq(s.cache_ids, 3, "the bound holds");
    cr_assert(!s.is_complete);
    cr_assert_gt(s.gens, 0, "the rest is spilled");
    expect_ids(&f, 10);
    flush(&f);
    expect_ids(&f, 10);
    cr_assert_eq(check(&f, "m", "o-new", 0, 100), 0);
    dedup_get_stats(f.d, &s);
    cr_assert_gt(s.seen_reads, 0);
    fix_down(&f);
}

Test(dedup, expiry_forgets_only_ids_older_than_the_cut, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;

    fix_up(&f, 3);
    add(&f, "m", "a", 5, 0, 1);
    add(&f, "m", "b", 5, 0, 2);
    add(&f, "m", "c", 6, 0, 3);
    add(&f, "m", "d", 6, 0, 4);
    dedup_get_stats(f.d, &s);
    cr_assert(!s.is_complete);
    cr_assert_eq(db_exec(f.speed, "BEGIN", &f.e), 0);
    cr_assert_eq(dedup_expire(f.d, 6, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(db_exec(f.speed, "COMMIT", &f.e), 0);
    cr_assert_eq(seen_rows(&f), 2);
    dedup_get_stats(f.d, &s);
    cr_assert_eq(s.gens, 1, "c's generation stays, a's and b's went");
    cr_assert_eq(s.cache_ids, 1);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 0);
    cr_assert_eq(check(&f, "m", "b", 0, 9), 0);
    cr_assert_eq(check(&f, "m", "c", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "d", 0, 9), 1);

    /* The tables sweep in place, keeping their probe chains whole. */
    add(&f, "m", "e", 7, 0, 5);
    flush(&f);
    cr_assert_eq(db_exec(f.speed, "BEGIN", &f.e), 0);
    cr_assert_eq(dedup_expire(f.d, 7, &f.e), 0);
    cr_assert_eq(db_exec(f.speed, "COMMIT", &f.e), 0);
    cr_assert_eq(check(&f, "m", "c", 0, 9), 0);
    cr_assert_eq(check(&f, "m", "e", 0, 9), 1);
    fix_down(&f);
}

Test(dedup, many_ids_survive_a_sweep, .timeout = 30)
{
    struct fix f;
    char o[32];

    fix_up(&f, 50000);
    for (int i = 0; i < 20000; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, i), 0);
        add(&f, "m", o, 10 + i / 5000, 0, i);
    }
    flush(&f);
    cr_assert_eq(db_exec(f.speed, "BEGIN", &f.e), 0);
    cr_assert_eq(dedup_expire(f.d, 12, &f.e), 0);
    cr_assert_eq(db_exec(f.speed, "COMMIT", &f.e), 0);
    for (int i = 0; i < 20000; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, 99999), 10 + i / 5000 >= 12, "%s", o);
    }
    fix_down(&f);
}

static int64_t q_int1(sqlite3 *db, const char *sql)
{
    int64_t n = -1;
    struct lerr e;

    cr_assert_eq(db_query_int(db, sql, &n, &e), 0, "%s", e.msg);
    return n;
}

Test(dedup, spilled_generations_live_until_expiry_passes_them, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;
    const char *gens = "SELECT count(*) FROM seen_gens";
    const char *tables = "SELECT count(*) FROM sqlite_master WHERE name GLOB 'seen_fp_*'";

    fix_up(&f, 2); /* two tables of one id */
    add(&f, "m", "a", 5, 0, 1);
    flush(&f);
    cr_assert_eq(q_int1(f.speed, gens), 0, "one id fits: nothing spilled");
    add(&f, "m", "b", 5, 0, 2);
    add(&f, "m", "c", 6, 0, 3);
    add(&f, "m", "d", 6, 0, 4);
    flush(&f);
    dedup_get_stats(f.d, &s);
    cr_assert(!s.is_complete);
    cr_assert_eq(s.gens, 3, "a, b and c, each spilled");
    cr_assert_eq(q_int1(f.speed, gens), 3);
    cr_assert_eq(q_int1(f.speed, tables), 3);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "c", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "z", 0, 9), 0);

    /* A restart reloads the generations; expiry drops those wholly below the cut. */
    restart(&f, 2);
    dedup_get_stats(f.d, &s);
    cr_assert_eq(s.gens, 3);
    cr_assert_eq(check(&f, "m", "b", 0, 9), 1);
    cr_assert_eq(dedup_expire(f.d, 6, &f.e), 0, "%s", f.e.msg);
    dedup_get_stats(f.d, &s);
    cr_assert_eq(s.gens, 1);
    cr_assert_eq(q_int1(f.speed, gens), 1);
    cr_assert_eq(q_int1(f.speed, tables), 1);
    cr_assert_eq(seen_rows(&f), 2);
    cr_assert_eq(check(&f, "m", "c", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "d", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 0);
    cr_assert_eq(check(&f, "m", "b", 0, 9), 0);
    fix_down(&f);
}

/* The writer's way: a spill goes a slice per checkpoint. A crash between slices leaves rows
 * of no generation; the restart drops them and holds those ids in memory again. */
Test(dedup, a_crash_in_the_middle_of_a_spill_forgets_no_id, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;
    char o[32];
    int n = 0;

    fix_up(&f, 4000);
    for (;; n++) {
        snprintf(o, sizeof(o), "o-%d", n);
        add(&f, "m", o, 1, 0, n);
        dedup_get_stats(f.d, &s);
        if (s.is_spilling)
            break;
    }
    n++;
    ckpt_write(&f, INT64_MIN);
    cr_assert_gt(q_int1(f.speed, "SELECT count(*) FROM seen_fp_1"), 0, "one slice written");
    cr_assert_lt(q_int1(f.speed, "SELECT count(*) FROM seen_fp_1"), 2000, "only one");
    cr_assert_eq(q_int1(f.speed, "SELECT count(*) FROM seen_gens"), 0);
    restart(&f, 4000); /* the crash: nothing released */
    cr_assert_eq(q_int1(f.speed, "SELECT count(*) FROM sqlite_master WHERE name GLOB 'seen_fp_*'"),
                 0, "no table of no generation");
    expect_ids(&f, n);
    cr_assert_eq(check(&f, "m", "o-new", 0, 99999), 0);
    fix_down(&f);
}

/* A spill may write ids whose rows a crash then loses. Their numbers must never be given
 * out again: an id numbered below a generation's end is not reloaded into memory. */
Test(dedup, numbers_spilled_and_lost_are_not_reused, .timeout = 30)
{
    struct fix f;

    fix_up(&f, 2);
    add(&f, "m", "a", 1, 0, 1);
    flush(&f);
    add(&f, "m", "b", 1, 0, 2); /* these three spill a and b, and are never written */
    add(&f, "m", "c", 1, 0, 3);
    add(&f, "m", "d", 1, 0, 4);
    cr_assert_geq(q_int1(f.speed, "SELECT max(hi) FROM seen_gens"), 2);
    restart(&f, 2);
    cr_assert_eq(check(&f, "m", "b", 0, 2), 0, "b was lost with the process");
    add(&f, "m", "x", 1, 0, 2);
    add(&f, "m", "y", 1, 0, 3);
    flush(&f);
    restart(&f, 2);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "x", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "y", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "c", 0, 9), 0);
    fix_down(&f);
}

/* Generations merge four at a time, level by level: a look-up asks a few tables, however many
 * ids were spilled, and nothing is forgotten on the way, nor by expiry after it. */
Test(dedup, generations_merge_and_keep_every_id, .timeout = 60)
{
    struct fix f;
    struct dedup_stats s;
    char o[32];

    fix_up(&f, 2); /* a generation per id */
    for (int i = 0; i < 70; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, i), 0, "%s", o);
        add(&f, "m", o, 1 + i / 10, 0, i);
        flush(&f);
    }
    dedup_get_stats(f.d, &s);
    /* About 68 spilled, 1010 in base 4: one generation of level 3, one of level 1. */
    cr_assert_leq(s.gens, 6, "%zu generations", s.gens);
    cr_assert_eq(q_int1(f.speed, "SELECT max(level) FROM seen_gens"), 3);
    cr_assert_eq(q_int1(f.speed, "SELECT count(*) FROM seen_gens"), (int64_t)s.gens);
    cr_assert_eq(q_int1(f.speed, "SELECT count(*) FROM sqlite_master WHERE name GLOB 'seen_fp_*'"),
                 (int64_t)s.gens + s.is_merging);
    expect_ids(&f, 70);
    restart(&f, 2);
    cr_assert_eq(dedup_expire(f.d, 4, &f.e), 0, "%s", f.e.msg);
    for (int i = 0; i < 70; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, 999), 1 + i / 10 >= 4, "%s after expiry", o);
    }
    fix_down(&f);
}

/* Between the commit that ends a merge and the reading side's turn, look-ups still ask the
 * sources (through a fresh snapshot): their tables must outlive that commit. */
Test(dedup, a_merge_keeps_its_sources_until_the_reader_moved_on, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;
    sqlite3 *rdb;
    char o[32];
    int i = 0;

    fix_up(&f, 2);
    cr_assert_eq(db_open_ro(f.dir, DB_SPEED, &rdb, &f.e), 0, "%s", f.e.msg);
    dedup_set_reader(f.d, rdb, NULL, NULL);
    do { /* until four generations wait for their merge */
        snprintf(o, sizeof(o), "o-%d", i);
        add(&f, "m", o, 1, 0, i++);
        ckpt(&f, INT64_MIN);
        dedup_get_stats(f.d, &s);
    } while (!s.is_merging && i < 50);
    cr_assert(s.is_merging);
    add(&f, "m", "last", 1, 0, i);
    ckpt_write(&f, INT64_MIN); /* the merge ends */
    cr_assert_eq(check(&f, "m", "o-0", 0, 99), 1, "before the reading side's turn");
    ckpt_finish(&f);
    dedup_get_stats(f.d, &s);
    cr_assert(!s.is_merging);
    for (int k = 0; k < i; k++) {
        snprintf(o, sizeof(o), "o-%d", k);
        cr_assert_eq(check(&f, "m", o, 0, 99), 1, "%s after", o);
    }
    flush(&f); /* drops the sources */
    cr_assert_eq(q_int1(f.speed, "SELECT count(*) FROM sqlite_master WHERE name GLOB 'seen_fp_*'"),
                 (int64_t)s.gens + s.is_spilling);
    dedup_set_reader(f.d, NULL, NULL, NULL);
    sqlite3_close(rdb);
    fix_down(&f);
}

/* A restart with a smaller dedup_cache spills while it loads. */
Test(dedup, a_restart_with_a_smaller_cache_spills_what_does_not_fit, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;
    char o[32];

    fix_up(&f, 10000);
    for (int i = 0; i < 3000; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        add(&f, "m", o, 1, 0, i);
    }
    flush(&f);
    restart(&f, 1000);
    dedup_get_stats(f.d, &s);
    cr_assert_leq(s.cache_ids, 1000);
    cr_assert_geq(s.gens, 4, "3000 ids, 500 per table: at least 4 spilled");
    expect_ids(&f, 3000);
    cr_assert_eq(check(&f, "m", "o-3000", 0, 99999), 0);
    fix_down(&f);
}

Test(dedup, epochs_must_not_decrease, .timeout = 30)
{
    struct fix f;

    fix_up(&f, 10);
    add(&f, "m", "a", 5, 0, 1);
    cr_assert_eq(dedup_add(f.d, "m", "b", 4, 0, 2, &f.e), -1);
    cr_assert(strstr(f.e.msg, "epoch") != NULL, "%s", f.e.msg);
    fix_down(&f);
}

Test(dedup, a_speed_db_of_the_first_layout_is_moved_over, .timeout = 30)
{
    struct fix f;
    sqlite3 *old;
    char path[600];

    it_tmpdir("dedup-old", f.dir);
    snprintf(path, sizeof(path), "%s/speed.db", f.dir);
    cr_assert_eq(sqlite3_open(path, &old), SQLITE_OK);
    cr_assert_eq(db_exec(old,
                         "CREATE TABLE seen(merchant_id TEXT NOT NULL, order_id TEXT NOT NULL,"
                         " epoch INTEGER NOT NULL, partition INTEGER NOT NULL, offset INTEGER"
                         " NOT NULL, PRIMARY KEY(merchant_id, order_id)) WITHOUT ROWID;"
                         "CREATE INDEX seen_by_epoch ON seen(epoch);"
                         "INSERT INTO seen VALUES('m','x',8,0,5),('m','y',7,0,3),('n','z',9,1,2)",
                         &f.e),
                 0, "%s", f.e.msg);
    sqlite3_close(old);
    cr_assert_eq(db_open_rw(f.dir, DB_SPEED, &f.speed, &f.e), 0, "%s", f.e.msg);
    f.d = dedup_new(f.speed, f.dir, 100, &f.e);
    cr_assert_not_null(f.d, "%s", f.e.msg);
    cr_assert_eq(q_int1(f.speed, "SELECT count(*) FROM seen WHERE (seq, epoch) IN"
                                 " (VALUES (1, 7), (2, 8), (3, 9))"),
                 3, "seq follows epoch");
    cr_assert_eq(check(&f, "m", "x", 0, 9), 1);
    cr_assert_eq(check(&f, "n", "z", 1, 9), 1);
    cr_assert_eq(check(&f, "n", "w", 1, 9), 0);
    add(&f, "n", "w", 9, 1, 10);
    flush(&f);
    cr_assert_eq(q_int1(f.speed, "SELECT max(seq) FROM seen"), 4);
    fix_down(&f);
}

/* The layout before generations indexed seen by id once the cache overflowed. */
Test(dedup, a_speed_db_with_the_id_index_is_moved_over, .timeout = 30)
{
    struct fix f;
    sqlite3 *old;
    char path[600], o[32];

    it_tmpdir("dedup-idx", f.dir);
    snprintf(path, sizeof(path), "%s/speed.db", f.dir);
    cr_assert_eq(sqlite3_open(path, &old), SQLITE_OK);
    cr_assert_eq(
        db_exec(old,
                "CREATE TABLE seen(seq INTEGER PRIMARY KEY, merchant_id TEXT NOT NULL,"
                " order_id TEXT NOT NULL, epoch INTEGER NOT NULL, partition INTEGER NOT"
                " NULL, offset INTEGER NOT NULL);"
                "CREATE INDEX seen_by_id ON seen(merchant_id, order_id);"
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)"
                " INSERT INTO seen SELECT i, 'm', 'o-' || i, 3, 0, i FROM n",
                &f.e),
        0, "%s", f.e.msg);
    sqlite3_close(old);
    cr_assert_eq(db_open_rw(f.dir, DB_SPEED, &f.speed, &f.e), 0, "%s", f.e.msg);
    f.d = dedup_new(f.speed, f.dir, 20, &f.e); /* 50 ids, 20 held: spilled as it loads */
    cr_assert_not_null(f.d, "%s", f.e.msg);
    cr_assert_eq(q_int1(f.speed, "SELECT count(*) FROM sqlite_master WHERE name = 'seen_by_id'"),
                 0);
    for (int i = 1; i <= 50; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, 99), 1, "%s", o);
    }
    cr_assert_eq(check(&f, "m", "o-51", 0, 99), 0);
    add(&f, "m", "o-51", 3, 0, 51);
    flush(&f);
    cr_assert_eq(q_int1(f.speed, "SELECT max(seq) FROM seen"), 51);
    fix_down(&f);
}

Test(dedup, a_reload_keeps_the_ids_not_yet_written, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;

    fix_up(&f, 1);
    add(&f, "m", "a", 5, 0, 1);
    add(&f, "m", "b", 5, 0, 2); /* overflows: the cache is incomplete */
    flush(&f);
    add(&f, "m", "c", 6, 0, 3); /* written by no one yet */
    f.txn = dedup_begin(f.d, 6, &f.e);
    cr_assert_not_null(f.txn, "%s", f.e.msg);
    add(&f, "m", "d", 6, 0, 4);
    /* The writer's half: c is written, and the rows below the cut are deleted. */
    cr_assert_eq(db_exec(f.speed, "BEGIN", &f.e), 0);
    cr_assert_eq(dedup_write(f.txn, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(db_exec(f.speed, "COMMIT", &f.e), 0);
    /* The reader's half reloads: d was never written, and must still be known. */
    cr_assert_eq(dedup_end(f.txn, true, &f.e), 0, "%s", f.e.msg);
    dedup_get_stats(f.d, &s);
    cr_assert(!s.is_complete, "c and d do not fit one slot");
    cr_assert_eq(check(&f, "m", "c", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "d", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 0);
    flush(&f);
    cr_assert_eq(seen_rows(&f), 2);
    cr_assert_eq(check(&f, "m", "d", 0, 9), 1);
    fix_down(&f);
}

Test(dedup, a_sweep_keeps_the_ids_not_yet_written, .timeout = 30)
{
    struct fix f;

    fix_up(&f, 100);
    add(&f, "m", "a", 5, 0, 1);
    flush(&f);
    f.txn = dedup_begin(f.d, 6, &f.e);
    cr_assert_not_null(f.txn, "%s", f.e.msg);
    add(&f, "m", "b", 6, 0, 2);
    cr_assert_eq(dedup_write(f.txn, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(dedup_end(f.txn, true, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 0);
    cr_assert_eq(check(&f, "m", "b", 0, 9), 1);
    fix_down(&f);
}

/* Look-ups through a reader must not pin speed.db's write-ahead log: with a read transaction
 * held across each commit, the writer could never restart the log and it grew without bound
 * (534 MB after 2M events). Here the log must stay near its size limit. */
Test(dedup, a_reader_lets_the_log_restart, .timeout = 60)
{
    struct fix f;
    sqlite3 *rdb;
    char o[32], path[600];
    struct stat sb;
    struct speed_wal wal;

    fix_up(&f, 50); /* spills: the ids of earlier cycles are confirmed by their rows */
    cr_assert_eq(
        db_exec(f.speed, "PRAGMA wal_autocheckpoint = 8; PRAGMA journal_size_limit = 65536", &f.e),
        0, "%s", f.e.msg);
    cr_assert_eq(db_open_ro(f.dir, DB_SPEED, &rdb, &f.e), 0, "%s", f.e.msg);
    dedup_set_reader(f.d, rdb, NULL, NULL);
    speed_wal_init(&wal, f.speed);
    for (int cycle = 0; cycle < 300; cycle++) {
        for (int i = 0; i < 40; i++) {
            snprintf(o, sizeof(o), "o-%d-%d", cycle, i);
            cr_assert_eq(check(&f, "m", o, 0, i), 0);
            add(&f, "m", o, 1, 0, i);
        }
        flush(&f);
        snprintf(o, sizeof(o), "o-%d-%d", cycle / 2, cycle % 40);
        cr_assert_eq(check(&f, "m", o, 0, 99), 1, "%s", o);
        dedup_refresh(f.d);
        speed_wal_settle(&wal, f.speed);
    }
    snprintf(path, sizeof(path), "%s/speed.db-wal", f.dir);
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_lt(sb.st_size, 1 << 20, "the log grew to %lld bytes", (long long)sb.st_size);
    cr_assert_eq(check(&f, "m", "o-7-7", 0, 99), 1);
    dedup_set_reader(f.d, NULL, NULL, NULL);
    sqlite3_close(rdb);
    fix_down(&f);
}

/* A checkpoint that ends a spill and also expires a generation: the merge the spill makes
 * due must not pick the generation expired (its table goes at the next write). */
Test(dedup, a_merge_never_picks_a_generation_expiry_just_unlisted, .timeout = 30)
{
    struct fix f;
    struct dedup_stats s;
    sqlite3 *rdb;

    fix_up(&f, 2);
    cr_assert_eq(db_open_ro(f.dir, DB_SPEED, &rdb, &f.e), 0, "%s", f.e.msg);
    dedup_set_reader(f.d, rdb, NULL, NULL);
    add(&f, "m", "a", 1, 0, 1);
    add(&f, "m", "b", 2, 0, 2);
    ckpt(&f, INT64_MIN);
    add(&f, "m", "c", 3, 0, 3);
    ckpt(&f, INT64_MIN);
    add(&f, "m", "d", 4, 0, 4);
    ckpt(&f, INT64_MIN);
    add(&f, "m", "e", 5, 0, 5);
    ckpt(&f, 2); /* spill of d ends, expiry unlists a's generation */
    add(&f, "m", "f", 6, 0, 6);
    ckpt(&f, INT64_MIN);        /* drops a's table; a merge reading it would fail here */
    for (int i = 0; i < 4; i++) /* whatever merge is due, to its end */
        ckpt(&f, INT64_MIN);
    dedup_get_stats(f.d, &s);
    cr_assert(!s.is_merging);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 0, "expired");
    cr_assert_eq(check(&f, "m", "b", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "d", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "f", 0, 9), 1);
    dedup_set_reader(f.d, NULL, NULL, NULL);
    sqlite3_close(rdb);
    fix_down(&f);
}

/* One checkpoint at a time; one that rolls back keeps its ids sealed (they still answer) and
 * lets no further one begin: the caller must stop, and the events replay at the next start. */
Test(dedup, a_checkpoint_rolled_back_keeps_its_ids_and_blocks_the_next, .timeout = 30)
{
    struct fix f;
    struct dedup_txn *t;

    fix_up(&f, 100);
    add(&f, "m", "a", 1, 0, 1);
    t = dedup_begin(f.d, DEDUP_NO_CUT, &f.e);
    cr_assert_not_null(t, "%s", f.e.msg);
    cr_assert_null(dedup_begin(f.d, DEDUP_NO_CUT, &f.e));
    cr_assert_str_eq(f.e.msg, "dedup: a checkpoint is under way");
    cr_assert_eq(db_exec(f.speed, "BEGIN IMMEDIATE", &f.e), 0);
    cr_assert_eq(dedup_write(t, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(db_exec(f.speed, "ROLLBACK", &f.e), 0);
    cr_assert_eq(dedup_end(t, false, &f.e), 0, "%s", f.e.msg);
    cr_assert_eq(seen_rows(&f), 0);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 1, "sealed, still known");
    cr_assert_null(dedup_begin(f.d, DEDUP_NO_CUT, &f.e));
    cr_assert_str_eq(f.e.msg, "dedup: sealed ids were not released");
    restart(&f, 100);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 0, "never written: it replays");
    fix_down(&f);
}
