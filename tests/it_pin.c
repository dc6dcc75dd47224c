/* it_pin.c - one epoch_ms per data directory (DESIGN.md section 6): the first binary to write a
 * file pins it, and every binary started on that directory with another value exits 2 naming
 * both values, before it touches anything; a savepoint made with another value is refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "itlib.h"
#include "pin.h"

static const char order[] = "{\"order_id\":\"a1\",\"merchant_id\":\"m-1\",\"amount_cents\":100,"
                            "\"event_time\":\"2026-11-21T10:15:30Z\"}\n";

static char dir[512], data[600];

static void setup(void)
{
    it_tmpdir("pin", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
}

static char *err_of(const char *tag)
{
    char path[700];
    char *s;

    snprintf(path, sizeof(path), "%s/%s.err", dir, tag);
    s = it_read_file(path, NULL);
    cr_assert_not_null(s, "no %s", path);
    return s;
}

/* Runs argv to its end; it must exit 2 and say want on stderr. */
static void expect_refused(const char *tag, char *const argv[], const char *want)
{
    int rc = it_run(dir, tag, argv, NULL, 30000);
    char *err = err_of(tag);

    cr_expect_eq(rc, 2, "%s: exit %d, want 2; stderr: %s", tag, rc, err);
    cr_expect(strstr(err, want), "%s: stderr does not say \"%s\": %s", tag, want, err);
    free(err);
}

static int64_t pinned(enum db_file f)
{
    struct lerr e = {{0}};
    sqlite3 *db;
    int64_t v = -1;

    cr_assert_eq(db_open_ro(data, f, &db, &e), 0, "%s", e.msg);
    cr_assert_eq(db_query_int(db, "SELECT value FROM pins WHERE key='epoch_ms'", &v, &e), 0, "%s",
                 e.msg);
    sqlite3_close(db);
    return v;
}

Test(pin, every_binary_refuses_another_epoch_ms_naming_both, .init = setup, .timeout = 120)
{
    char file[700], want[1024];

    snprintf(file, sizeof(file), "%s/orders.ndjson", dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fputs(order, f);
    fclose(f);
    /* The first writer pins the directory at 30 s. */
    cr_assert_eq(it_run(dir, "import",
                        (char *[]){"lambda-batch", "import", file, "--data-dir", data, "--epoch-ms",
                                   "30000", NULL},
                        NULL, 30000),
                 0);
    cr_assert_eq(pinned(DB_MASTER), 30000);

    snprintf(want, sizeof(want),
             "data directory '%s' was first used with epoch_ms=30000 (master.db); this one has "
             "epoch_ms=60000",
             data);
    expect_refused("import2", (char *[]){"lambda-batch", "import", file, "--data-dir", data, NULL},
                   want);
    /* No broker answers there: a run or a speed layer that got past the pins would not exit 2. */
    expect_refused(
        "run",
        (char *[]){"lambda-batch", "run", "--data-dir", data, "--brokers", "127.0.0.1:1", NULL},
        want);
    expect_refused("speed",
                   (char *[]){"lambda-speed", "--data-dir", data, "--brokers", "127.0.0.1:1", NULL},
                   want);
    expect_refused("serve", (char *[]){"lambda-serve", "--data-dir", data, "--port", "0", NULL},
                   want);
    /* Nothing was created or pinned by the refused binaries. */
    char path[700];
    snprintf(path, sizeof(path), "%s/speed.db", data);
    cr_expect_neq(access(path, F_OK), 0, "a refused lambda-speed created speed.db");
    /* batch.db is the first import's: with no speed layer it published a version, pinned as
     * its master.db (the refused run did not re-pin it). */
    cr_expect_eq(pinned(DB_BATCH), 30000);

    /* The same value goes on (status reads any directory: it reports what is pinned). */
    cr_assert_eq(
        it_run(dir, "status30",
               (char *[]){"lambda-batch", "status", "--data-dir", data, "--epoch-ms", "30s", NULL},
               NULL, 30000),
        0);
}

Test(pin, a_savepoint_made_with_another_epoch_ms_is_refused, .init = setup, .timeout = 60)
{
    char other[700], sp[800], want[2048];
    struct lerr e = {{0}};
    struct pin_set p = {0};
    sqlite3 *db;

    /* A savepoint of a speed layer that ran with 60 s epochs. */
    snprintf(other, sizeof(other), "%s/other", dir);
    cr_assert_eq(db_ensure_dir(other, &e), 0, "%s", e.msg);
    cr_assert_eq(db_open_rw(other, DB_SPEED, &db, &e), 0, "%s", e.msg);
    pin_set_put(&p, "epoch_ms", "60000");
    cr_assert_eq(pin_record(db, other, "speed.db", &p, &e), 0, "%s", e.msg);
    sqlite3_close(db);
    snprintf(sp, sizeof(sp), "%s/sp.db", dir);
    cr_assert_eq(
        it_run(dir, "out",
               (char *[]){"lambda-speed", "savepoint", "--out", sp, "--data-dir", other, NULL},
               NULL, 30000),
        0);

    /* Restored into a directory run at 30 s: refused, by the config or by the directory. */
    snprintf(want, sizeof(want),
             "data directory '%s' was first used with epoch_ms=60000 (%s); this one has "
             "epoch_ms=30000",
             data, sp);
    expect_refused("restore",
                   (char *[]){"lambda-speed", "savepoint", "--restore", sp, "--data-dir", data,
                              "--epoch-ms", "30000", NULL},
                   want);
    snprintf(want, sizeof(want),
             "data directory '%s' was first used with epoch_ms=60000 (%s); this one has "
             "epoch_ms=30000",
             other, sp);
    expect_refused("restore_dir",
                   (char *[]){"lambda-speed", "savepoint", "--restore", sp, "--data-dir", other,
                              "--epoch-ms", "30000", NULL},
                   want);
    /* With the value it was made with, it restores. */
    cr_assert_eq(
        it_run(dir, "restore_ok",
               (char *[]){"lambda-speed", "savepoint", "--restore", sp, "--data-dir", data, NULL},
               NULL, 30000),
        0);
    cr_assert_eq(pinned(DB_SPEED), 60000);
}
