/* ckpt.c - a run's WAL checkpoints, on a thread of their own while the run goes on.
 *
 * A checkpoint copies the pages a file's WAL holds into the file and syncs it: for master.db
 * after an ingest, the leaves of the orders B-tree that the new orders touched, spread over the
 * file, whose sync is a disk's random writes. Nothing waits for it to be durable (each commit
 * synced its WAL before returning), so it need not stand in the run's way: the run starts one
 * when a file's writes are done and joins it before closing the file, whose last-connection
 * checkpoint then finds little left. PASSIVE: it never blocks a reader or the run's writes, and
 * copies only what no reader still needs; whatever it leaves, the next one takes. */
#include "batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "tm.h"

static void *checkpoint(void *arg)
{
    struct batch_ckpt *k = arg;
    sqlite3 *db = NULL;
    int64_t t0 = tm_mono_ms();
    int rc;

    /* A plain connection: the run's own opened the file (schema, migrations), and a checkpoint
     * needs nothing more. synchronous=FULL, as every connection of ours: it syncs the file
     * before the WAL may be rewound. */
    rc = sqlite3_open_v2(k->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &k->frames, &k->copied);
    if (rc != SQLITE_OK)
        snprintf(k->err, sizeof(k->err), "%s", db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    k->ms = tm_mono_ms() - t0;
    return NULL;
}

void batch_ckpt_start(struct batch_ckpt *k, const char *data_dir, enum db_file f)
{
    memset(k, 0, sizeof(*k));
    k->name = db_file_name(f);
    db_path(data_dir, f, k->path, sizeof(k->path));
    /* Without a thread the close's checkpoint (or the next commit's) does the work. */
    k->is_started = pthread_create(&k->thread, NULL, checkpoint, k) == 0;
    if (!k->is_started)
        log_warn("batch", "checkpoint_not_started file=%s", k->name);
}

void batch_ckpt_join(struct batch_ckpt *k)
{
    if (!k->is_started)
        return;
    pthread_join(k->thread, NULL);
    k->is_started = false;
    if (k->err[0])
        log_warn("batch", "checkpoint_failed file=%s err=\"%s\"", k->name, k->err);
    else
        log_debug("batch", "checkpoint file=%s frames=%d copied=%d ms=%" PRId64, k->name, k->frames,
                  k->copied, k->ms);
}
