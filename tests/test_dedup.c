/* test_dedup.c - the duplicate rule (shared/dedup.c) on real SQLite files. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "db.h"
#include "dedup.h"
#include "itlib.h"

struct fix {
    char dir[512];
    sqlite3 *speed;
    struct dedup *d;
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

static int64_t seen_rows(struct fix *f)
{
    sqlite3_stmt *st;
    int64_t n = -1;

    cr_assert_eq(db_prepare(f->speed, "SELECT count(*) FROM seen", &st, &f->e), 0);
    cr_assert_eq(db_step_int(st, &n, &f->e), 0);
    sqlite3_finalize(st);
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
    dedup_free(f.d);
    f.d = dedup_new(f.speed, f.dir, 100, &f.e);
    cr_assert_not_null(f.d);
    dedup_get_stats(f.d, &s);
    cr_assert_eq(s.cache_ids, 2);
    cr_assert(s.is_complete);
    cr_assert_eq(check(&f, "m-1", "o-1", 0, 20), 1);
    cr_assert_eq(check(&f, "m-1", "o-2", 0, 20), 1);
    cr_assert_eq(check(&f, "m-1", "o-3", 0, 12), 0);
    fix_down(&f);
}

Test(dedup, master_rows_are_earlier_copies_unless_at_or_after_this_offset, .timeout = 30)
{
    struct fix f;
    sqlite3 *m;

    fix_up(&f, 100);
    cr_assert_eq(db_open_rw(f.dir, DB_MASTER, &m, &f.e), 0);
    cr_assert_eq(db_exec(m,
                         "INSERT INTO orders VALUES('m','imp',1,0,-1,5,NULL),"
                         "('m','p0',1,0,0,10,NULL),('m','p1',1,0,1,10,NULL)",
                         &f.e),
                 0, "%s", f.e.msg);
    cr_assert_eq(check(&f, "m", "imp", 0, 100), 1, "an imported order");
    cr_assert_eq(check(&f, "m", "p1", 0, 100), 1, "a copy in another partition");
    cr_assert_eq(check(&f, "m", "p0", 0, 11), 1, "an earlier copy in this partition");
    cr_assert_eq(check(&f, "m", "p0", 0, 10), 0, "this very copy, ingested by the batch");
    cr_assert_eq(check(&f, "m", "p0", 0, 9), 0, "master holds a later copy only");
    cr_assert_eq(check(&f, "m", "none", 0, 9), 0);
    sqlite3_close(m);
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
    cr_assert_eq(s.cache_ids, 3);
    cr_assert(!s.is_complete);
    for (int i = 0; i < 10; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, 100), 1, "pending %s", o);
    }
    flush(&f);
    for (int i = 0; i < 10; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, 100), 1, "flushed %s", o);
    }
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
    cr_assert(s.is_complete, "what is left fits the cache again");
    cr_assert_eq(s.cache_ids, 2);
    cr_assert_eq(check(&f, "m", "a", 0, 9), 0);
    cr_assert_eq(check(&f, "m", "b", 0, 9), 0);
    cr_assert_eq(check(&f, "m", "c", 0, 9), 1);
    cr_assert_eq(check(&f, "m", "d", 0, 9), 1);

    /* A complete cache sweeps in place, keeping its probe chains whole. */
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
        add(&f, "m", o, 10 + i % 4, 0, i);
    }
    flush(&f);
    cr_assert_eq(db_exec(f.speed, "BEGIN", &f.e), 0);
    cr_assert_eq(dedup_expire(f.d, 12, &f.e), 0);
    cr_assert_eq(db_exec(f.speed, "COMMIT", &f.e), 0);
    for (int i = 0; i < 20000; i++) {
        snprintf(o, sizeof(o), "o-%d", i);
        cr_assert_eq(check(&f, "m", o, 0, 99999), 10 + i % 4 >= 12, "%s", o);
    }
    fix_down(&f);
}
