/* savepoint.c - the whole speed state as one portable file, and back.
 *
 * A savepoint is a SQLite file with speed.db's schema (positions, boundaries, deltas, seen
 * ids, rejects, late rows, counters, meta), made with SQLite's online backup API: one read
 * transaction, so it is an exact committed checkpoint even while lambda-speed runs. Restore
 * only runs while no speed layer does (it takes speed.lock) and replaces speed.db with one
 * rename, so a crash leaves either the old state or the new one. */
#include "speed.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "lock.h"
#include "pin.h"

/* Copies the database file src into a new file dst (journal mode DELETE, synced). */
static int copy_db(const char *src, const char *dst, struct lerr *e)
{
    sqlite3 *from = NULL, *to = NULL;
    sqlite3_backup *b;
    int rc = -1;

    unlink(dst);
    if (sqlite3_open_v2(src, &from, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        lerr_set(e, "cannot open '%s': %s", src, from ? sqlite3_errmsg(from) : "out of memory");
        goto out;
    }
    sqlite3_busy_timeout(from, 5000);
    if (sqlite3_open_v2(dst, &to, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        lerr_set(e, "cannot create '%s': %s", dst, to ? sqlite3_errmsg(to) : "out of memory");
        goto out;
    }
    b = sqlite3_backup_init(to, "main", from, "main");
    if (!b) {
        lerr_set(e, "cannot copy '%s' to '%s': %s", src, dst, sqlite3_errmsg(to));
        goto out;
    }
    sqlite3_backup_step(b, -1);
    if (sqlite3_backup_finish(b) != SQLITE_OK) {
        lerr_set(e, "cannot copy '%s' to '%s': %s", src, dst, sqlite3_errmsg(to));
        goto out;
    }
    if (db_exec(to,
                "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;"
                "BEGIN IMMEDIATE; COMMIT",
                e) != 0)
        goto out;
    rc = 0;
out:
    sqlite3_close(from);
    if (sqlite3_close(to) != SQLITE_OK && rc == 0)
        rc = lerr_set(e, "cannot close '%s'", dst);
    if (rc != 0)
        unlink(dst);
    return rc;
}

/* True when path is a SQLite file holding speed.db's tables. */
static int check_savepoint(const char *path, struct lerr *e)
{
    sqlite3 *db = NULL;
    int64_t n = 0;
    int rc = 0;

    if (access(path, R_OK) != 0)
        return lerr_set(e, "cannot read savepoint '%s': %s", path, strerror(errno));
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        db_query_int(db,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                     " ('deltas','offsets','boundaries','seen','counters','meta')",
                     &n, e) != 0 ||
        n != 6)
        rc = lerr_set(e, "'%s' is not a lambda-speed savepoint", path);
    sqlite3_close(db);
    return rc;
}

int speed_savepoint_out(const char *data_dir, const char *file, struct lerr *e)
{
    char src[PATH_MAX], tmp[PATH_MAX];

    db_path(data_dir, DB_SPEED, src, sizeof(src));
    if (access(src, F_OK) != 0)
        return lerr_set(e, "no speed state in '%s': '%s' is missing", data_dir, src);
    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    if (copy_db(src, tmp, e) != 0)
        return -1;
    if (rename(tmp, file) != 0) {
        unlink(tmp);
        return lerr_set(e, "cannot write savepoint '%s': %s", file, strerror(errno));
    }
    return 0;
}

/* Folds speed.db's write-ahead log into the file and removes it, so the rename that
 * follows can never pair the new file with an old log. */
static int settle_old(const char *path, struct lerr *e)
{
    char side[PATH_MAX + 8];
    sqlite3 *db = NULL;
    int rc = 0;

    if (access(path, F_OK) == 0) {
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
            db_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", e) != 0)
            rc = lerr_set(e, "cannot settle '%s': %s", path,
                          db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
    }
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
    return rc;
}

int speed_savepoint_restore(const char *data_dir, const char *file, struct lerr *e)
{
    char dst[PATH_MAX], tmp[PATH_MAX + 16];
    int fd = -1, held, rc = -1;

    if (check_savepoint(file, e) != 0 || db_ensure_dir(data_dir, e) != 0)
        return -1;
    held = lock_try(data_dir, "speed.lock", &fd, e);
    if (held < 0)
        return -1;
    if (held == 0)
        return lerr_set(e, "a lambda-speed runs on '%s' (it holds speed.lock): stop it first",
                        data_dir);
    db_path(data_dir, DB_SPEED, dst, sizeof(dst));
    snprintf(tmp, sizeof(tmp), "%s.restore", dst);
    if (copy_db(file, tmp, e) != 0 || settle_old(dst, e) != 0)
        goto out;
    if (rename(tmp, dst) != 0) {
        lerr_set(e, "cannot replace '%s': %s", dst, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        unlink(tmp);
    lock_release(fd);
    return rc;
}

int speed_savepoint_check_pins(const char *file, const char *data_dir, const struct pin_set *p,
                               struct lerr *e)
{
    sqlite3 *db = NULL;
    int rc;

    if (sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        rc = lerr_set(e, "cannot open savepoint '%s': %s", file, sqlite3_errmsg(db));
        sqlite3_close(db);
        return rc;
    }
    rc = pin_compare(db, data_dir, file, p, e);
    sqlite3_close(db);
    return rc;
}
