/* wal.c - speed.db's write-ahead log restarted past journal_size_limit (contract in wal.h). */
#include "wal.h"

#include <stdio.h>
#include <sys/stat.h>

#include "db.h"
#include "log.h"

void speed_wal_init(struct speed_wal *w, sqlite3 *db)
{
    const char *file = db ? sqlite3_db_filename(db, "main") : NULL;
    struct lerr e;

    w->path[0] = '\0';
    w->limit_bytes = 0;
    if (!file || !*file)
        return;
    snprintf(w->path, sizeof(w->path), "%s-wal", file);
    db_query_int(db, "PRAGMA journal_size_limit", &w->limit_bytes, &e);
    if (w->limit_bytes <= 0)
        w->limit_bytes = 64 << 20;
}

void speed_wal_settle(const struct speed_wal *w, sqlite3 *db)
{
    struct stat sb;

    if (!w->path[0] || stat(w->path, &sb) != 0 || sb.st_size <= w->limit_bytes)
        return;
    /* RESTART, not TRUNCATE: the next commit starts the log over, and journal_size_limit
     * shrinks the file then, the path SQLite takes on its own when no reader holds on. */
    if (sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_RESTART, NULL, NULL) != SQLITE_OK)
        log_warn("speed", "log_not_restarted file=\"%s\" bytes=%lld err=\"%s\"", w->path,
                 (long long)sb.st_size, sqlite3_errmsg(db));
}
