/* cut.c - the queries that say where a cut and a boundary are (see cut.h). */
#include "cut.h"

#include <limits.h>
#include <unistd.h>

#include "db.h"

const char cut_published_sql[] =
    "SELECT id, cut_epoch, started_ms, coalesce(orders, 0) FROM versions"
    " WHERE state='published' ORDER BY id DESC LIMIT 1";

int cut_step_published(sqlite3_stmt *st, struct cut_version *out, bool *found, struct lerr *e)
{
    int rc = sqlite3_step(st);
    bool is_ok = rc == SQLITE_ROW || rc == SQLITE_DONE;

    *found = rc == SQLITE_ROW;
    if (*found) {
        out->id = sqlite3_column_int64(st, 0);
        out->epoch = sqlite3_column_int64(st, 1);
        out->started_ms = sqlite3_column_int64(st, 2);
        out->orders = sqlite3_column_int64(st, 3);
    }
    if (!is_ok) /* said before the reset, which would clear SQLite's message */
        lerr_set(e, "cannot read '%.50s': %s", sqlite3_sql(st),
                 sqlite3_errmsg(sqlite3_db_handle(st)));
    sqlite3_reset(st);
    return is_ok ? 0 : -1;
}

/* Runs a one-off statement of cut_published_sql's columns. */
static int query_version(sqlite3 *bdb, const char *sql, struct cut_version *out, bool *found,
                         struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *found = false;
    if (db_prepare(bdb, sql, &st, e) != 0)
        return -1;
    rc = cut_step_published(st, out, found, e);
    sqlite3_finalize(st);
    return rc;
}

int cut_published(sqlite3 *bdb, struct cut_version *out, bool *found, struct lerr *e)
{
    return query_version(bdb, cut_published_sql, out, found, e);
}

int cut_newest(sqlite3 *bdb, struct cut_version *out, bool *found, struct lerr *e)
{
    return query_version(bdb,
                         "SELECT id, cut_epoch, started_ms, coalesce(orders, 0) FROM versions"
                         " WHERE state <> 'failed' ORDER BY id DESC LIMIT 1",
                         out, found, e);
}

int cut_pending(sqlite3 *bdb, struct cut_version *out, bool *found, struct lerr *e)
{
    return query_version(bdb,
                         "SELECT id, cut_epoch, started_ms, coalesce(orders, 0) FROM versions"
                         " WHERE state='pending' ORDER BY id DESC LIMIT 1",
                         out, found, e);
}

/* Hands every (partition, offset) row of st to add. */
static int read_rows(sqlite3_stmt *st, cut_offset_fn *add, void *arg, struct lerr *e)
{
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (add(arg, (int32_t)sqlite3_column_int(st, 0), sqlite3_column_int64(st, 1), e) != 0)
            return -1;
    if (rc != SQLITE_DONE)
        return lerr_set(e, "cannot read cut offsets: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
    return 0;
}

int cut_offsets(sqlite3 *bdb, int64_t version, cut_offset_fn *add, void *arg, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (db_prepare(bdb,
                   "SELECT partition, offset FROM cut_offsets WHERE version=? ORDER BY partition",
                   &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, version);
    rc = read_rows(st, add, arg, e);
    sqlite3_finalize(st);
    return rc;
}

int cut_newest_boundary(const char *data_dir, int64_t *epoch, cut_offset_fn *add, void *arg,
                        bool *found, struct lerr *e)
{
    char path[PATH_MAX];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t has_table = 0;
    int rc = -1;

    *found = false;
    db_path(data_dir, DB_SPEED, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return 0;
    if (db_open_ro(data_dir, DB_SPEED, &db, e) != 0 ||
        db_prepare(db, "SELECT count(*) FROM sqlite_master WHERE name='boundaries'", &st, e) ||
        db_step_int(st, &has_table, e) != 0)
        goto out;
    sqlite3_finalize(st);
    st = NULL;
    if (!has_table) {
        rc = 0;
        goto out;
    }
    if (db_prepare(db,
                   "SELECT partition, offset, epoch FROM boundaries WHERE epoch ="
                   " (SELECT max(epoch) FROM boundaries) ORDER BY partition",
                   &st, e) != 0)
        goto out;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *epoch = sqlite3_column_int64(st, 2);
        *found = true;
    }
    sqlite3_reset(st);
    if (*found && add && read_rows(st, add, arg, e) != 0)
        goto out;
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}
