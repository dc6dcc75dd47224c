/* wal.h - speed.db's write-ahead log, kept near its journal_size_limit.
 *
 * SQLite restarts a log only when no reader holds a snapshot in it. lambda-speed's own
 * look-ups (shared/dedup.h, through a second connection) always held one, so the log only
 * grew (534 MB after 2M events with the cache overflowed). speed/speed.c calls
 * speed_wal_settle() at each checkpoint, between the dedup's refresh (which ends our
 * snapshots) and the next write: once the log outgrew the limit, it is folded into the file so
 * that the next commit starts it over. Other processes' readers (lambda-serve) hold their
 * snapshots for one request: the busy timeout covers them. Nothing here fails: a log not
 * restarted is logged and tried again at the next checkpoint. */
#ifndef LAMBDA_SPEED_WAL_H
#define LAMBDA_SPEED_WAL_H

#include <limits.h>
#include <stdint.h>

#include <sqlite3.h>

struct speed_wal {
    char path[PATH_MAX + 8]; /* speed.db-wal; empty: nothing to watch */
    int64_t limit_bytes;     /* journal_size_limit, 64 MiB if unset */
};

/* Looks up db's log and its limit once (not at every checkpoint); db NULL (or in memory):
 * speed_wal_settle does nothing. */
void speed_wal_init(struct speed_wal *w, sqlite3 *db);

/* Restarts the log of db (the writing connection) when it outgrew the limit. Only while no
 * write is under way and no snapshot of ours is open. */
void speed_wal_settle(const struct speed_wal *w, sqlite3 *db);

#endif
