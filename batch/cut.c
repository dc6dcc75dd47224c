/* cut.c - which log positions a version covers (DESIGN.md section 3, "The cut").
 *
 * A pending version's cut binds: a run that finds one reuses it, so a failed run's successor
 * publishes exactly what its predecessor promised the speed layer. Otherwise the cut is the
 * speed layer's newest boundary when a speed layer runs (it holds speed.lock), or Kafka's high
 * watermarks when none does (we hold speed.lock while picking, so none can start meanwhile).
 * Either covers the import log as partition -1: the boundary's offset for it, or its end. */
#include "batch.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cut.h"
#include "db.h"
#include "kafka.h"
#include "lock.h"
#include "log.h"
#include "tm.h"

void batch_cut_release(struct batch_cut *cut)
{
    free(cut->partitions);
    free(cut->offsets);
    memset(cut, 0, sizeof(*cut));
}

static int cut_add(struct batch_cut *cut, int32_t partition, int64_t offset, struct lerr *e)
{
    int32_t *p = realloc(cut->partitions, (size_t)(cut->nparts + 1) * sizeof(*p));
    int64_t *o;

    if (!p)
        return lerr_set(e, "out of memory");
    cut->partitions = p;
    o = realloc(cut->offsets, (size_t)(cut->nparts + 1) * sizeof(*o));
    if (!o)
        return lerr_set(e, "out of memory");
    cut->offsets = o;
    p[cut->nparts] = partition;
    o[cut->nparts] = offset;
    cut->nparts++;
    return 0;
}

/* cut_offset_fn for a struct batch_cut. */
static int add_offset(void *arg, int32_t partition, int64_t offset, struct lerr *e)
{
    return cut_add(arg, partition, offset, e);
}

static int load_pending(struct batch *b, struct batch_cut *cut, bool *found, struct lerr *e)
{
    struct cut_version v;

    if (cut_pending(b->bdb, &v, found, e) != 0)
        return -1;
    if (!*found)
        return 0; /* no pending version */
    cut->version = v.id;
    cut->cut_epoch = v.epoch;
    cut->is_reused = true;
    if (cut_offsets(b->bdb, cut->version, add_offset, cut, e) != 0) {
        *found = false;
        return -1;
    }
    return 0;
}

static int record_cut(struct batch *b, struct batch_cut *cut, struct lerr *e)
{
    sqlite3_stmt *id = NULL, *v = NULL, *o = NULL;
    int rc = -1;

    if (db_exec(b->bdb, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    if (db_prepare(b->bdb, "SELECT coalesce(max(id), 0) + 1 FROM versions", &id, e) != 0 ||
        db_step_int(id, &cut->version, e) != 0 ||
        db_prepare(b->bdb,
                   "INSERT INTO versions(id, state, cut_epoch, started_ms) VALUES(?,'pending',?,?)",
                   &v, e) != 0 ||
        db_prepare(b->bdb, "INSERT INTO cut_offsets(version, partition, offset) VALUES(?,?,?)", &o,
                   e) != 0)
        goto out;
    sqlite3_bind_int64(v, 1, cut->version);
    sqlite3_bind_int64(v, 2, cut->cut_epoch);
    sqlite3_bind_int64(v, 3, tm_now_ms());
    if (db_step_done(v, e) != 0)
        goto out;
    for (int i = 0; i < cut->nparts; i++) {
        sqlite3_bind_int64(o, 1, cut->version);
        sqlite3_bind_int(o, 2, cut->partitions[i]);
        sqlite3_bind_int64(o, 3, cut->offsets[i]);
        if (db_step_done(o, e) != 0)
            goto out;
    }
    rc = db_exec(b->bdb, "COMMIT", e);
out:
    if (rc != 0)
        sqlite3_exec(b->bdb, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(id);
    sqlite3_finalize(v);
    sqlite3_finalize(o);
    return rc;
}

/* The newest cut_epoch of any version; -1 when there is none. */
static int newest_cut_epoch(struct batch *b, int64_t *out, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *out = -1;
    if (db_prepare(b->bdb, "SELECT max(cut_epoch) FROM versions", &st, e) != 0)
        return -1;
    rc = db_step_int(st, out, e);
    sqlite3_finalize(st);
    return rc;
}

/* No speed layer runs and we hold speed.lock: the cut is the high watermarks now. */
static int pick_from_kafka(struct batch *b, struct batch_cut *cut, struct lerr *e)
{
    int64_t epoch_ms = cfg_ms(b->c, "epoch_ms"), newest = -1, boundary = -1, end = 0;
    int timeout = (int)b->kafka_timeout_ms, n;
    bool found;

    if (epoch_ms <= 0)
        return lerr_set(e, "bad value for 'epoch_ms': must be positive");
    /* The import log first (partitions in order): everything staged so far. Kafka is asked
     * about the others only. */
    if (batch_imports_end(b->master, &end, e) != 0 || batch_imports_cut_end(b, &end, e) != 0 ||
        cut_add(cut, BATCH_IMPORT_PARTITION, end, e) != 0)
        return -1;
    if ((!b->rk && batch_kafka_open(b, e) != 0) ||
        kafka_partition_count(b->rk, b->topic, timeout, &n, e) != 0 ||
        shard_set_check_topic(&b->shard, n, e) != 0)
        return -1;
    for (int p = 0; p < n; p++)
        if (shard_set_has(&b->shard, p) && cut_add(cut, p, 0, e) != 0)
            return -1; /* another shard's partition: this one neither cuts nor ingests it */
    /* One question for all of them: the high watermarks are the cut offsets. */
    if (kafka_watermarks_of(b->rk, b->topic, cut->partitions + 1, cut->nparts - 1, timeout, NULL,
                            cut->offsets + 1, e) != 0)
        return -1;
    /* Epochs never go backwards: a speed layer that starts after this cut must begin at or
     * after cut_epoch, and an earlier speed layer's boundaries are all before it. */
    cut->cut_epoch = tm_epoch(tm_now_ms(), epoch_ms);
    if (cut_newest_boundary(b->data_dir, &boundary, NULL, NULL, &found, e) != 0)
        return -1;
    if (found && boundary + 1 > cut->cut_epoch)
        cut->cut_epoch = boundary + 1;
    if (newest_cut_epoch(b, &newest, e) != 0)
        return -1;
    if (newest > cut->cut_epoch)
        cut->cut_epoch = newest;
    return 0;
}

/* A speed layer runs: the cut is its newest boundary. That boundary must not be older than
 * the newest cut: a speed layer that just started after a cut taken without it still shows
 * the boundaries of its previous life until it records its first one from the cut on, and
 * those lie behind what master already holds. So wait, a bounded time, for a boundary at or
 * after the newest cut_epoch. */
static int pick_from_speed(struct batch *b, struct batch_cut *cut, struct lerr *e)
{
    int64_t end = tm_mono_ms() + b->kafka_timeout_ms, min_epoch;
    bool found;

    if (newest_cut_epoch(b, &min_epoch, e) != 0)
        return -1;
    for (;;) {
        if (cut_newest_boundary(b->data_dir, &cut->cut_epoch, add_offset, cut, &found, e) != 0)
            return -1;
        if (found && cut->cut_epoch >= min_epoch)
            break;
        batch_cut_release(cut);
        if (tm_mono_ms() >= end && min_epoch < 0)
            return lerr_set(e,
                            "a speed layer runs (speed.lock is held) but speed.db has no "
                            "boundary after %" PRId64 " ms: is lambda-speed consuming?",
                            b->kafka_timeout_ms);
        if (tm_mono_ms() >= end)
            return lerr_set(e,
                            "a speed layer runs (speed.lock is held) but speed.db has no "
                            "boundary at or after epoch %" PRId64 " (the newest cut) after %" PRId64
                            " ms: is lambda-speed consuming?",
                            min_epoch, b->kafka_timeout_ms);
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }
    if (cut->nparts == 0)
        return lerr_set(e, "speed.db's newest boundary has no partitions");
    return 0;
}

/* cut_offset_fn: the Kafka partitions of a published cut, into an import's cut. */
static int add_kafka_offset(void *arg, int32_t partition, int64_t offset, struct lerr *e)
{
    return partition == BATCH_IMPORT_PARTITION ? 0 : cut_add(arg, partition, offset, e);
}

/* The oldest epoch speed.db holds a boundary of (every delta's epoch is at or after it), or
 * the current epoch when there is none. */
static int oldest_speed_epoch(struct batch *b, int64_t *out, struct lerr *e)
{
    char path[PATH_MAX];
    sqlite3 *db = NULL;
    int64_t has = 0;
    int rc = 0;

    *out = tm_epoch(tm_now_ms(), cfg_ms(b->c, "epoch_ms"));
    db_path(b->data_dir, DB_SPEED, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return 0;
    if (db_open_ro(b->data_dir, DB_SPEED, &db, e) != 0)
        return -1;
    rc = db_query_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'boundaries'", &has, e);
    if (rc == 0 && has)
        rc = db_query_int(db, "SELECT min(epoch) FROM boundaries", out, e);
    sqlite3_close(db);
    return rc;
}

/* An import's run, holding speed.lock: the published cut again, with the import log's end.
 * The same cut_epoch keeps every speed delta counted that the published version left to the
 * speed layer (import lines among them); with no version published, the oldest epoch of the
 * speed layer's state does. The take-in then puts only the lines no one judged yet into the
 * master dataset (imports.c). */
static int pick_for_import(struct batch *b, struct batch_cut *cut, struct lerr *e)
{
    struct cut_version pub;
    int64_t end = 0;
    bool found;

    if (batch_imports_end(b->master, &end, e) != 0 ||
        cut_add(cut, BATCH_IMPORT_PARTITION, end, e) != 0 ||
        cut_published(b->bdb, &pub, &found, e) != 0)
        return -1;
    if (!found)
        return oldest_speed_epoch(b, &cut->cut_epoch, e);
    cut->cut_epoch = pub.epoch;
    return cut_offsets(b->bdb, pub.id, add_kafka_offset, cut, e);
}

/* Records the picked cut, unless it holds nothing new and no full run is due: then nothing is
 * recorded, so no pending cut is left behind. A full run that finds nothing new still proves
 * the published version (run.c drops its pending cut when the proof finds no difference). */
static int record_if_new(struct batch *b, struct batch_cut *cut, struct lerr *e)
{
    int64_t version = 0;
    bool unchanged = false, due = false;

    if (batch_is_unchanged(b, cut, &unchanged, &version, e) != 0 ||
        (unchanged && batch_full_due(b, &due, e) != 0))
        return -1;
    if (unchanged && due)
        log_info("batch", "cut_unchanged version=%" PRId64 " full_due=1", version);
    if (!unchanged || due)
        return record_cut(b, cut, e);
    cut->version = version;
    cut->is_unchanged = true;
    return 0;
}

int batch_cut_get(struct batch *b, struct batch_cut *cut, struct lerr *e)
{
    bool found, speed_runs;
    int fd = -1, got, rc;

    memset(cut, 0, sizeof(*cut));
    if (load_pending(b, cut, &found, e) != 0)
        return -1;
    if (found) {
        log_info("batch", "cut_reused version=%" PRId64 " cut_epoch=%" PRId64 " partitions=%d",
                 cut->version, cut->cut_epoch, cut->nparts);
        return 0;
    }
    if (b->is_import) {
        /* An import's run: it holds speed.lock itself, so no speed layer runs. */
        speed_runs = false;
        rc = pick_for_import(b, cut, e);
    } else {
        got = lock_try(b->data_dir, "speed.lock", &fd, e);
        if (got < 0)
            return -1;
        speed_runs = got == 0;
        rc = speed_runs ? pick_from_speed(b, cut, e) : pick_from_kafka(b, cut, e);
    }
    if (rc == 0)
        rc = record_if_new(b, cut, e);
    lock_release(fd); /* the pending cut is recorded: a speed layer may start from it */
    if (rc != 0)
        return -1;
    if (cut->is_unchanged) {
        log_info("batch", "cut_unchanged version=%" PRId64 " partitions=%d", cut->version,
                 cut->nparts);
        return 0;
    }
    log_info("batch",
             "cut_recorded version=%" PRId64 " cut_epoch=%" PRId64
             " partitions=%d speed_running=%d",
             cut->version, cut->cut_epoch, cut->nparts, speed_runs);
    return 0;
}
