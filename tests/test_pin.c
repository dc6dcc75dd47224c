/* test_pin.c - a data directory pinned to its first epoch_ms and partition set (shared/pin). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "pin.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lambda-test-pin-XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert(system(cmd) == 0);
}

static void pins(struct pin_set *p, const char *epoch_ms, const char *parts)
{
    p->n = 0;
    pin_set_put(p, "epoch_ms", epoch_ms);
    if (parts)
        pin_set_put(p, "shard_partitions", parts);
}

Test(pin, the_first_writer_pins_and_another_value_is_refused_naming_both, .init = setup,
     .fini = teardown)
{
    struct lerr e = {{0}};
    struct pin_set first, other;
    sqlite3 *speed, *master;

    pins(&first, "60000", "0-1");
    cr_assert_eq(pin_check_dir(dir, &first, &e), 0, "an empty directory pins nothing: %s", e.msg);
    cr_assert_eq(db_open_rw(dir, DB_SPEED, &speed, &e), 0, "%s", e.msg);
    cr_assert_eq(pin_record(speed, dir, "speed.db", &first, &e), 0, "%s", e.msg);
    cr_assert_eq(pin_record(speed, dir, "speed.db", &first, &e), 0, "the same values again");

    pins(&other, "30000", "0-1");
    cr_assert_eq(pin_check_dir(dir, &other, &e), 1);
    char want[512];
    snprintf(want, sizeof(want),
             "data directory '%s' was first used with epoch_ms=60000 (speed.db); this one has "
             "epoch_ms=30000",
             dir);
    cr_assert_str_eq(e.msg, want);

    cr_assert_eq(db_open_rw(dir, DB_MASTER, &master, &e), 0, "%s", e.msg);
    pins(&other, "60000", "2-3");
    cr_assert_eq(pin_check_dir(dir, &other, &e), 1);
    cr_assert(strstr(e.msg, "shard_partitions=0-1 (speed.db); this one has shard_partitions=2-3"),
              "%s", e.msg);
    cr_assert_eq(pin_record(master, dir, "master.db", &first, &e), 0, "%s", e.msg);
    cr_assert_eq(pin_record(master, dir, "master.db", &other, &e), 1, "a writer refuses too");
    cr_assert(strstr(e.msg, "(master.db)"), "%s", e.msg);
    sqlite3_close(master);
    sqlite3_close(speed);
}

Test(pin, a_file_from_before_pins_agrees_with_anything, .init = setup, .fini = teardown)
{
    struct lerr e = {{0}};
    struct pin_set p;
    sqlite3 *db;
    char path[512];

    snprintf(path, sizeof(path), "%s/batch.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE versions(id INTEGER)", NULL, NULL, NULL), 0);
    sqlite3_close(db);
    pins(&p, "60000", NULL);
    cr_assert_eq(pin_check_dir(dir, &p, &e), 0, "%s", e.msg);
}

Test(pin, an_unreadable_file_does_not_hide_a_mismatch_in_another, .init = setup, .fini = teardown)
{
    struct lerr e = {{0}};
    struct pin_set first, other;
    sqlite3 *speed;
    char path[512];

    pins(&first, "60000", NULL);
    pins(&other, "30000", NULL);
    snprintf(path, sizeof(path), "%s/master.db", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("this is not a database, but it is long enough to look like one's header.\n", f);
    fclose(f);
    cr_assert_eq(pin_check_dir(dir, &first, &e), -1, "garbage cannot be read");
    cr_assert_eq(db_open_rw(dir, DB_SPEED, &speed, &e), 0, "%s", e.msg);
    cr_assert_eq(pin_record(speed, dir, "speed.db", &first, &e), 0, "%s", e.msg);
    sqlite3_close(speed);
    cr_assert_eq(pin_check_dir(dir, &other, &e), 1, "the mismatch in speed.db: %s", e.msg);
    cr_assert(strstr(e.msg, "epoch_ms=60000 (speed.db)"), "%s", e.msg);
    cr_assert_eq(pin_check_dir(dir, &first, &e), -1, "agreeing, but master.db unreadable");
}
