/* fuzz_savepoint.c - `lambda-speed savepoint --restore FILE` (speed_savepoint_restore,
 * speed/savepoint.c) of arbitrary files.
 *
 * Proves, for every input libFuzzer reaches: a restore either fails with a message and leaves
 * the data directory's speed.db exactly as it was (its content, and no leftover restore file),
 * or succeeds and leaves a speed.db that passes SQLite's integrity check and that the speed
 * layer can open (db_open_rw applies the schema and its migrations) - never a crash and never
 * a half-restored or corrupt state. It cannot prove that a restored state is one lambda-speed
 * wrote (a well-formed file with foreign rows is accepted by design), nor crash safety of the
 * rename (it_speed kills a restore).
 *
 * Input: the file's bytes. The seed corpus holds real savepoints (a small page size, so the
 * mutations reach the pages' contents). */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "fuzz.h"
#include "log.h"
#include "speed/speed.h"

static char dir[64], data[96], input[96], speed_db[128];
static char *original; /* speed.db's bytes before any restore */
static size_t original_len;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    free(original);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0, r;

    if (!f)
        return NULL;
    do {
        if (n == cap && !(buf = realloc(buf, cap = cap ? cap * 2 : 65536)))
            abort();
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    fclose(f);
    *len = n;
    return buf;
}

static void spit(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");

    FUZZ_CHECK(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0, "cannot write '%s'", path);
}

/* speed.db as the speed layer leaves it after a clean stop: one file, no log. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct lerr e = {{0}};
    sqlite3 *db = NULL;

    (void)argc, (void)argv;
    log_set_level("error");
    snprintf(dir, sizeof(dir), "/tmp/fuzz_savepoint.XXXXXX");
    FUZZ_CHECK(mkdtemp(dir), "mkdtemp");
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(input, sizeof(input), "%s/input.db", dir);
    db_path(data, DB_SPEED, speed_db, sizeof(speed_db));
    FUZZ_CHECK(db_ensure_dir(data, &e) == 0, "%s", e.msg);
    FUZZ_CHECK(db_open_rw(data, DB_SPEED, &db, &e) == 0 &&
                   db_exec(db,
                           "INSERT INTO meta VALUES ('fuzz', 'original');"
                           "INSERT INTO deltas(merchant_id, minute_ms, epoch, order_count, "
                           "revenue_cents) VALUES ('m-1', 60000, 1, 3, 300);"
                           "INSERT INTO offsets VALUES (0, 10, 0, 10, 0)",
                           &e) == 0,
               "%s", e.msg);
    sqlite3_close(db); /* the last connection: folds the log in and removes it */
    FUZZ_CHECK((original = slurp(speed_db, &original_len)), "cannot read '%s'", speed_db);
    atexit(cleanup);
    return 0;
}

static void put_back(void)
{
    char side[160];

    snprintf(side, sizeof(side), "%s-wal", speed_db);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", speed_db);
    unlink(side);
    spit(speed_db, original, original_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    struct lerr e = {{0}};
    char restore[160];
    sqlite3 *db = NULL;
    int rc;

    spit(input, buf, size);
    rc = speed_savepoint_restore(data, input, &e);
    snprintf(restore, sizeof(restore), "%s.restore.d", speed_db);
    FUZZ_CHECK(access(restore, F_OK) != 0, "'%s' left behind (rc %d)", restore, rc);
    if (rc != 0) {
        size_t len = 0;
        char *now = slurp(speed_db, &len);
        char side[160];
        struct stat sb;

        FUZZ_CHECK(e.msg[0], "a failed restore without a message");
        snprintf(side, sizeof(side), "%s-wal", speed_db);
        FUZZ_CHECK(now && len == original_len && !memcmp(now, original, len) &&
                       (stat(side, &sb) != 0 || sb.st_size == 0),
                   "a failed restore (%s) changed speed.db", e.msg);
        free(now);
        return 0;
    }
    /* Restored: the file must be sound and open as the speed layer opens it. */
    {
        sqlite3_stmt *st = NULL;
        const unsigned char *ok = NULL;
        char verdict[128] = "";

        FUZZ_CHECK(sqlite3_open_v2(speed_db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK,
                   "restored file does not open");
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && (ok = sqlite3_column_text(st, 0)))
            snprintf(verdict, sizeof(verdict), "%s", ok);
        sqlite3_finalize(st);
        sqlite3_close(db);
        db = NULL;
        FUZZ_CHECK(!strcmp(verdict, "ok"), "a restore installed a corrupt speed.db: %s", verdict);
        FUZZ_CHECK(db_open_rw(data, DB_SPEED, &db, &e) == 0,
                   "a restored speed.db the speed layer cannot open: %s", e.msg);
        sqlite3_close(db);
    }
    put_back();
    return 0;
}
