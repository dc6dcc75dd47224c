/* imports.c - the import log in a batch run (DESIGN.md section 2, "Imports meet the stream").
 *
 * lambda-batch import stages valid lines in master.db's import_log. The speed layer consumes
 * them as partition -1 (its positions and boundaries for -1 are seqs), judges each with the
 * same duplicate rule as a Kafka event, and records in speed.db's import_dups the lines it
 * judged duplicates. A run's cut covers -1 like any partition, and before Kafka is ingested
 * the staged lines below it go into the master dataset, skipping those duplicates. Why exact:
 * an order is in master iff its position is below the boundary of the epoch it was counted in,
 * for -1 as for Kafka; a Kafka copy later than a counted line is a primary-key duplicate at
 * ingest, and a Kafka copy the speed layer counted before a line made it record that line.
 *
 * An import that finds no speed layer (it holds speed.lock) takes its lines in itself in a run
 * of its own (batch_run_for_import): the lines no one took in yet are checked against the
 * speed layer's seen ids since the cut and the master dataset, inserted or marked duplicates
 * in import_log.state, and published with the same cut_epoch, so they count when it returns. */
#include "batch.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cut.h"
#include "db.h"
#include "dedup.h"
#include "dedup_master.h"
#include "log.h"

/* Fingerprints a take-in's duplicate check may hold in memory (lambda-speed's default). */
#define TAKE_IN_CACHE 2000000

struct imports {
    struct batch *b;
    bool is_take_in;       /* an import's own run: check against the seen ids, mark the state */
    sqlite3 *sdb;          /* speed.db, NULL when it does not exist */
    struct dedup *dedup;   /* a take-in's look-ups; NULL without speed.db */
    sqlite3_stmt *st_dups; /* a move's: the speed layer's duplicates in a range of seqs */
    sqlite3_stmt *lines;   /* a take-in's: the lines no one took in, in a range */
    sqlite3_stmt *skip;    /* into temp.import_skip */
    sqlite3_stmt *staged;  /* how many lines of a range no one took in */
    sqlite3_stmt *ins;     /* the lines of a range not skipped, into orders */
    sqlite3_stmt *taken;   /* a take-in's: state 1 for one line */
    sqlite3_stmt *rest;    /* a take-in's: state 2 for the others of a range */
    sqlite3_stmt *pos;     /* ingest_offsets(-1) */
    struct batch_sums sums;
    int64_t *seqs; /* the lines a take-in's chunk inserted */
    size_t nseqs, capseqs;
    int64_t moved, dups;
};

int batch_imports_end(sqlite3 *master, int64_t *end, struct lerr *e)
{
    *end = 1;
    return db_query_int(master,
                        "SELECT max(coalesce((SELECT max(seq) FROM import_log), 0) + 1,"
                        " coalesce((SELECT next_offset FROM ingest_offsets WHERE partition = -1),"
                        " 0))",
                        end, e);
}

/* Opens speed.db when it exists: read-only, or read-write for a take-in (which holds
 * speed.lock). *has_table tells whether it has import_dups (a file of an older speed layer
 * may not). */
static int open_speed(const char *data_dir, bool is_rw, sqlite3 **out, bool *has_table,
                      struct lerr *e)
{
    char path[PATH_MAX];
    int64_t n = 0;

    *out = NULL;
    *has_table = false;
    db_path(data_dir, DB_SPEED, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return 0;
    if ((is_rw ? db_open_rw : db_open_ro)(data_dir, DB_SPEED, out, e) != 0 ||
        db_query_int(*out, "SELECT count(*) FROM sqlite_master WHERE name = 'import_dups'", &n,
                     e) != 0) {
        sqlite3_close(*out);
        *out = NULL;
        return -1;
    }
    *has_table = n > 0;
    return 0;
}

int batch_imports_speed_position(const char *data_dir, int64_t *out, struct lerr *e)
{
    sqlite3 *db = NULL;
    bool has;
    int rc;

    *out = -1;
    if (open_speed(data_dir, false, &db, &has, e) != 0)
        return -1;
    if (!db || !has) {
        sqlite3_close(db);
        return 0;
    }
    rc = db_query_int(
        db, "SELECT coalesce((SELECT next_offset FROM offsets WHERE partition = -1), -1)", out, e);
    sqlite3_close(db);
    return rc;
}

/* cut_offset_fn: keeps the offset of partition -1. */
static int keep_import_offset(void *arg, int32_t partition, int64_t offset, struct lerr *e)
{
    (void)e;
    if (partition == BATCH_IMPORT_PARTITION)
        *(int64_t *)arg = offset;
    return 0;
}

/* Where a take-in starts: after the lines the speed layer judged (its position), and after
 * those the newest published cut puts in master (without one, what ingest_offsets says). */
static int take_in_from(struct imports *im, int64_t held, int64_t *from, struct lerr *e)
{
    struct cut_version pub;
    int64_t speed_pos = -1, published = held;
    bool found;

    if (batch_imports_speed_position(im->b->data_dir, &speed_pos, e) != 0 ||
        cut_published(im->b->bdb, &pub, &found, e) != 0 ||
        (found && cut_offsets(im->b->bdb, pub.id, keep_import_offset, &published, e) != 0))
        return -1;
    *from = held;
    if (published > *from)
        *from = published;
    if (speed_pos > *from)
        *from = speed_pos;
    return 0;
}

int batch_imports_cut_end(struct batch *b, int64_t *end, struct lerr *e)
{
    struct imports im = {.b = b};
    int64_t speed_pos = -1, held = 0, from = 0, kafka = 0;
    sqlite3 *sdb = NULL;
    bool has_dups;
    int rc = 0;

    if (batch_imports_speed_position(b->data_dir, &speed_pos, e) != 0)
        return -1;
    /* A speed.db with Kafka positions but none for -1 is a speed layer's that never read the
     * log (one from before it existed): it counted stream copies and judged no line, as a
     * position at 0 says; take_in_from() raises that to what master holds or the newest
     * published cut, and a speed layer started on this speed.db reads the log from the cut. */
    if (speed_pos < 0 && (rc = open_speed(b->data_dir, false, &sdb, &has_dups, e)) == 0 && sdb) {
        rc = db_query_int(sdb, "SELECT count(*) FROM sqlite_master WHERE name = 'offsets'", &kafka,
                          e);
        if (rc == 0 && kafka > 0)
            rc = db_query_int(sdb, "SELECT count(*) FROM offsets WHERE partition >= 0", &kafka, e);
        if (rc == 0 && kafka > 0)
            speed_pos = 0;
    }
    sqlite3_close(sdb);
    if (rc != 0)
        return -1;
    if (speed_pos < 0 || speed_pos >= *end)
        return 0; /* no speed layer read the log, or it judged every line */
    if (db_query_int(b->master, "SELECT next_offset FROM ingest_offsets WHERE partition = -1",
                     &held, e) != 0 ||
        take_in_from(&im, held, &from, e) != 0)
        return -1;
    if (from < *end)
        *end = from;
    return 0;
}

static int prepare(struct imports *im, bool has_dups, struct lerr *e)
{
    sqlite3 *m = im->b->master;
    enum master_level level;
    char ins[1024];

    if (db_exec(m, "CREATE TEMP TABLE IF NOT EXISTS import_skip(seq INTEGER PRIMARY KEY)", e) ||
        db_prepare(m, "INSERT OR IGNORE INTO temp.import_skip(seq) VALUES(?1)", &im->skip, e) ||
        db_prepare(m, "SELECT count(*) FROM import_log WHERE seq >= ?1 AND seq < ?2 AND state = 0",
                   &im->staged, e) ||
        /* In key order the inserts sweep the B-tree once; for equal keys the smaller seq, the
         * first copy, is inserted and the others are ignored. RETURNING gives only the rows
         * inserted. */
        master_pick_level(m, &level, e) ||
        master_insert_sql(level,
                          "SELECT merchant_id, order_id, amount_cents, event_time_ms, -1, seq, raw"
                          " FROM import_log WHERE seq >= ?1 AND seq < ?2 AND state = 0 AND seq"
                          " NOT IN (SELECT seq FROM temp.import_skip)",
                          "import_log.merchant_id", "import_log.order_id",
                          "ORDER BY merchant_id, order_id, seq"
                          " RETURNING offset, merchant_id, amount_cents, event_time_ms",
                          ins, sizeof(ins), e) ||
        db_prepare(m, ins, &im->ins, e) ||
        db_prepare(m,
                   "INSERT INTO ingest_offsets(partition, next_offset) VALUES(-1, ?1)"
                   " ON CONFLICT(partition) DO UPDATE SET next_offset = excluded.next_offset",
                   &im->pos, e))
        return -1;
    if (im->is_take_in)
        return db_prepare(m,
                          "SELECT seq, merchant_id, order_id FROM import_log WHERE seq >= ?1"
                          " AND seq < ?2 AND state = 0 ORDER BY seq",
                          &im->lines, e) ||
               db_prepare(m, "UPDATE import_log SET state = 1 WHERE seq = ?1", &im->taken, e) ||
               db_prepare(m,
                          "UPDATE import_log SET state = 2 WHERE seq >= ?1 AND seq < ?2 AND"
                          " state = 0",
                          &im->rest, e);
    if (has_dups)
        return db_prepare(im->sdb, "SELECT seq FROM import_dups WHERE seq >= ?1 AND seq < ?2",
                          &im->st_dups, e);
    return 0;
}

static void bind_range(sqlite3_stmt *st, int64_t lo, int64_t hi)
{
    sqlite3_bind_int64(st, 1, lo);
    sqlite3_bind_int64(st, 2, hi);
}

static int skip(struct imports *im, int64_t seq, struct lerr *e)
{
    sqlite3_bind_int64(im->skip, 1, seq);
    return db_step_done(im->skip, e);
}

/* The lines of [lo, hi) that are duplicates before the master dataset is asked: for a move,
 * those the speed layer judged so; for a take-in, those whose order the speed layer counted
 * since the cut (its seen ids, through shared/dedup). */
static int fill_skip(struct imports *im, int64_t lo, int64_t hi, struct lerr *e)
{
    sqlite3_stmt *st = im->is_take_in ? im->lines : im->st_dups;
    int rc = 0, step;

    if (db_exec(im->b->master, "DELETE FROM temp.import_skip", e) != 0)
        return -1;
    if (!st || (im->is_take_in && !im->dedup))
        return 0;
    bind_range(st, lo, hi);
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        int dup = 1;
        if (im->is_take_in)
            dup = dedup_check(im->dedup, (const char *)sqlite3_column_text(st, 1),
                              (const char *)sqlite3_column_text(st, 2), BATCH_IMPORT_PARTITION, seq,
                              e);
        if (dup < 0)
            rc = -1;
        else if (dup)
            rc = skip(im, seq, e);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = lerr_set(e, "cannot read the import lines: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
    sqlite3_reset(st);
    return rc;
}

static int keep_seq(struct imports *im, int64_t seq, struct lerr *e)
{
    if (im->nseqs == im->capseqs) {
        size_t cap = im->capseqs ? 2 * im->capseqs : 1024;
        int64_t *v = realloc(im->seqs, cap * sizeof(*v));
        if (!v)
            return lerr_set(e, "out of memory");
        im->seqs = v;
        im->capseqs = cap;
    }
    im->seqs[im->nseqs++] = seq;
    return 0;
}

/* Inserts the lines of [lo, hi) not skipped; their sums go to im->sums. */
static int insert_range(struct imports *im, int64_t lo, int64_t hi, int64_t *inserted,
                        struct lerr *e)
{
    sqlite3_stmt *st = im->ins;
    int rc = 0, step;

    *inserted = 0;
    im->nseqs = 0;
    bind_range(st, lo, hi);
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        (*inserted)++;
        rc = batch_sums_add(&im->sums, (const char *)sqlite3_column_text(st, 1),
                            sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 2), e);
        if (rc == 0 && im->is_take_in)
            rc = keep_seq(im, sqlite3_column_int64(st, 0), e);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = lerr_set(e, "cannot move import lines into orders: %s", sqlite3_errmsg(im->b->master));
    sqlite3_reset(st);
    return rc;
}

/* A take-in marks what it decided, so that a later move (from ingest_offsets(-1), which a
 * take-in leaves where it is) passes over these lines. */
static int mark(struct imports *im, int64_t lo, int64_t hi, struct lerr *e)
{
    for (size_t i = 0; i < im->nseqs; i++) {
        sqlite3_bind_int64(im->taken, 1, im->seqs[i]);
        if (db_step_done(im->taken, e) != 0)
            return -1;
    }
    bind_range(im->rest, lo, hi);
    return db_step_done(im->rest, e);
}

/* One transaction: the lines of [lo, hi), the sums, the counters and (a move) the position. */
static int chunk(struct imports *im, int64_t lo, int64_t hi, struct lerr *e)
{
    sqlite3 *m = im->b->master;
    int64_t staged = 0, inserted = 0;

    if (db_exec(m, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    bind_range(im->staged, lo, hi);
    if (db_step_int(im->staged, &staged, e) != 0 || fill_skip(im, lo, hi, e) != 0 ||
        insert_range(im, lo, hi, &inserted, e) != 0 ||
        (im->is_take_in && mark(im, lo, hi, e) != 0) ||
        batch_sums_write(&im->sums, m, "import", false, e) != 0 ||
        batch_counter_add(m, "duplicates", staged - inserted, e) != 0)
        goto fail;
    if (!im->is_take_in) {
        sqlite3_bind_int64(im->pos, 1, hi);
        if (db_step_done(im->pos, e) != 0)
            goto fail;
    }
    if (db_exec(m, "COMMIT", e) != 0)
        goto fail;
    im->moved += inserted;
    im->dups += staged - inserted;
    return 0;
fail:
    sqlite3_exec(m, "ROLLBACK", NULL, NULL, NULL);
    batch_sums_release(&im->sums);
    return -1;
}

static void release(struct imports *im)
{
    sqlite3_stmt *sts[] = {im->st_dups, im->lines, im->skip, im->staged,
                           im->ins,     im->taken, im->rest, im->pos};

    for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++)
        sqlite3_finalize(sts[i]);
    dedup_free(im->dedup);
    sqlite3_close(im->sdb);
    batch_sums_release(&im->sums);
    free(im->seqs);
}

int batch_imports_move(struct batch *b, const struct batch_cut *cut, struct lerr *e)
{
    struct imports im = {.b = b, .is_take_in = b->is_import && !cut->is_reused};
    int64_t to = -1, held = 0, from, step = cfg_int(b->c, "chunk_rows");
    bool has_dups = false;
    int rc = -1;

    for (int i = 0; i < cut->nparts; i++)
        if (cut->partitions[i] == BATCH_IMPORT_PARTITION)
            to = cut->offsets[i];
    if (to < 0)
        return 0; /* a cut from before the import log */
    if (db_query_int(b->master, "SELECT next_offset FROM ingest_offsets WHERE partition = -1",
                     &held, e) != 0)
        return -1;
    from = held;
    if (im.is_take_in && take_in_from(&im, held, &from, e) != 0)
        return -1;
    if (from >= to)
        return 0;
    if (batch_size_caches(b, to - from, e) != 0)
        return -1;
    if (step <= 0)
        step = 1;
    if (open_speed(b->data_dir, im.is_take_in, &im.sdb, &has_dups, e) != 0)
        return -1;
    if (im.is_take_in && im.sdb && !(im.dedup = dedup_new(im.sdb, b->data_dir, TAKE_IN_CACHE, e)))
        goto out;
    if (prepare(&im, has_dups, e) != 0)
        goto out;
    for (int64_t lo = from; lo < to; lo += step)
        if (chunk(&im, lo, lo + step < to ? lo + step : to, e) != 0)
            goto out;
    log_info("batch",
             "imports_%s version=%" PRId64 " from=%" PRId64 " to=%" PRId64 " orders=%" PRId64
             " duplicates=%" PRId64,
             im.is_take_in ? "taken_in" : "moved", cut->version, from, to, im.moved, im.dups);
    rc = 0;
out:
    release(&im);
    return rc;
}
