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
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

/* What lambda-speed reads of each table: a savepoint must let every statement prepare. The
 * first six tables must exist; the others are made empty when absent. seen may predate its
 * seq column (db_open_rw migrates it). */
static const char *const must_read[] = {
    "SELECT merchant_id, minute_ms, epoch, order_count, revenue_cents FROM deltas",
    "SELECT partition, next_offset, max_event_ms, high_watermark, updated_ms FROM offsets",
    "SELECT epoch, partition, offset FROM boundaries",
    "SELECT merchant_id, order_id, epoch, partition, offset FROM seen",
    "SELECT name, value FROM counters",
    "SELECT key, value FROM meta",
};
static const char *const may_read[][2] = {
    {"seen_gens", "SELECT gen, lo, hi, level FROM seen_gens"},
    {"rejects", "SELECT id, partition, offset, reason, payload, at_ms FROM rejects"},
    {"late", "SELECT id, partition, offset, merchant_id, order_id, event_ms, minute_ms,"
             " watermark_ms, late_ms, at_ms FROM late"},
};

static bool prepares(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK;

    sqlite3_finalize(st);
    return ok;
}

/* The header's file format versions (bytes 18 and 19) and text encoding (56..59): a file that
 * says 3 or more opens read-only (or not at all), and one in UTF-16 cannot be migrated or joined
 * with master.db; speed.db is always UTF-8, written by this SQLite. */
static int check_header(const char *path, const char **why)
{
    unsigned char h[60];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(h, 1, sizeof(h), f) : 0;

    if (f)
        fclose(f);
    if (n != sizeof(h) || memcmp(h, "SQLite format 3", 16) != 0) {
        *why = "it lacks speed.db's tables";
        return -1;
    }
    if (!(h[18] == 1 || h[18] == 2) || !(h[19] == 1 || h[19] == 2)) {
        *why = "its header names a file format this SQLite cannot write";
        return -1;
    }
    if (h[56] != 0 || h[57] != 0 || h[58] != 0 || h[59] != 1) {
        *why = "its text encoding is not UTF-8";
        return -1;
    }
    return 0;
}

/* 0 when path is a sound SQLite file holding speed.db's tables with their columns, and nothing
 * that would run on its own (triggers, views); else -1 saying why. */
static int check_savepoint(const char *path, struct lerr *e)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = 0, extra = 0;
    const char *why = NULL;
    char verdict[80] = "";
    int rc = 0;

    if (access(path, R_OK) != 0)
        return lerr_set(e, "cannot read savepoint '%s': %s", path, strerror(errno));
    if (check_header(path, &why) != 0)
        goto out;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        db_query_int(db,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                     " ('deltas','offsets','boundaries','seen','counters','meta')",
                     &n, e) != 0 ||
        n != 6) {
        why = "it lacks speed.db's tables";
        goto out;
    }
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check(1)", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(verdict, sizeof(verdict), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (strcmp(verdict, "ok") != 0) {
        why = "a corrupt database";
        goto out;
    }
    for (size_t i = 0; i < sizeof(must_read) / sizeof(must_read[0]) && !why; i++)
        if (!prepares(db, must_read[i]))
            why = "a table lacks columns lambda-speed reads";
    for (size_t i = 0; i < sizeof(may_read) / sizeof(may_read[0]) && !why; i++) {
        char sql[128];

        snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE name = '%s'",
                 may_read[i][0]);
        n = 0;
        if (db_query_int(db, sql, &n, e) != 0 || (n > 0 && !prepares(db, may_read[i][1])))
            why = "a table lacks columns lambda-speed reads";
    }
    if (!why && (db_query_int(db,
                              "SELECT count(*) FROM sqlite_master WHERE type IN ('trigger',"
                              " 'view')",
                              &extra, e) != 0 ||
                 extra > 0))
        why = "it holds triggers or views";
out:
    if (why)
        rc = lerr_set(e, "'%s' is not a lambda-speed savepoint: %s", path, why);
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

/* Removes a staging directory and what SQLite may have left in it. */
static void remove_stage(const char *stage)
{
    static const char *const names[] = {"speed.db", "speed.db-wal", "speed.db-shm",
                                        "speed.db-journal"};
    char path[PATH_MAX + 32];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", stage, names[i]);
        unlink(path);
    }
    rmdir(stage);
}

int speed_savepoint_restore(const char *data_dir, const char *file, struct lerr *e)
{
    char dst[PATH_MAX], stage[PATH_MAX + 16], tmp[PATH_MAX + 32];
    sqlite3 *db = NULL;
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
    /* The copy is staged in a directory of its own and opened there as lambda-speed opens it
     * (schema, migrations): a file it cannot open is refused before anything is replaced. */
    snprintf(stage, sizeof(stage), "%s.restore.d", dst);
    remove_stage(stage);
    if (mkdir(stage, 0755) != 0) {
        lerr_set(e, "cannot create '%s': %s", stage, strerror(errno));
        goto out;
    }
    db_path(stage, DB_SPEED, tmp, sizeof(tmp));
    if (copy_db(file, tmp, e) != 0)
        goto out;
    if (db_open_rw(stage, DB_SPEED, &db, e) != 0) {
        char why[sizeof(e->msg)];
        snprintf(why, sizeof(why), "%s", e->msg);
        lerr_set(e, "'%s' is not a lambda-speed savepoint: %s", file, why);
        goto out;
    }
    if (sqlite3_close(db) != SQLITE_OK) {
        lerr_set(e, "cannot close '%s'", tmp);
        goto out;
    }
    if (settle_old(dst, e) != 0)
        goto out;
    if (rename(tmp, dst) != 0) {
        lerr_set(e, "cannot replace '%s': %s", dst, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    remove_stage(stage);
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
