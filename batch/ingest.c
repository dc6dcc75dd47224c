/* ingest.c - a bounded read of Kafka into the master dataset, up to exactly the cut.
 *
 * Partitions are assigned explicitly from master's ingest_offsets (positions never live in
 * Kafka). Rows, rejects, counters and ingest_offsets commit in one transaction per chunk, so a
 * run killed at any moment resumes at the last commit with nothing lost or doubled. An order is
 * inserted when neither level of master's orders holds its (merchant_id, order_id) key
 * (shared/dedup_master.h): the first copy in log order wins and a later copy is counted as a
 * duplicate (DESIGN.md section 2). */
#include "batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "dedup_master.h"
#include "ev.h"
#include "kafka.h"
#include "log.h"
#include "tm.h"

struct part {
    int32_t partition;
    int64_t next; /* the next offset to ingest; every offset below it is in master */
    int64_t cut;  /* ingest stops before this offset */
    bool is_done;
};

struct ingest {
    struct batch *b;
    struct ev_rules rules;
    struct part *parts;
    int nparts;
    sqlite3_stmt *ins_order, *ins_reject, *get_offset, *set_offset;
    int64_t chunk_rows;     /* messages per transaction */
    int64_t chunk_n;        /* messages in the open transaction */
    int64_t chunk_start_ms; /* monotonic time the open transaction began */
    /* counter deltas of the open transaction */
    int64_t dup, mismatch, deleted, consumed;
    int64_t ingested, todo;     /* messages read by this call; to read in all */
    int64_t start_ms, shown_ms; /* monotonic: start, last progress line */
    struct batch_rows rows;     /* valid orders of the open transaction */
    struct batch_sums sums;     /* what the inserted ones add, recorded with them */
    rd_kafka_message_t **held;  /* their messages, alive until the rows are inserted */
    size_t nheld, capheld;
    bool is_tty, in_txn;
};

int batch_counter_add(sqlite3 *master, const char *name, int64_t delta, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (delta == 0)
        return 0;
    if (db_prepare(master,
                   "INSERT INTO counters(name, value) VALUES(?, ?)"
                   " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                   &st, e) != 0)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, delta);
    rc = db_step_done(st, e);
    sqlite3_finalize(st);
    return rc;
}

static struct part *find_part(struct ingest *in, int32_t partition)
{
    for (int i = 0; i < in->nparts; i++)
        if (in->parts[i].partition == partition)
            return &in->parts[i];
    return NULL;
}

static int prepare(struct ingest *in, struct lerr *e)
{
    sqlite3 *m = in->b->master;
    enum master_level level;
    char ins[512];

    return master_pick_level(m, &level, e) ||
           master_insert_sql(level, "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE 1", "?1", "?2", "",
                             ins, sizeof(ins), e) ||
           db_prepare(m, ins, &in->ins_order, e) ||
           db_prepare(m,
                      "INSERT INTO rejects(source, partition, offset, reason, payload, at_ms)"
                      " VALUES('kafka',?,?,?,?,?)",
                      &in->ins_reject, e) ||
           db_prepare(m, "SELECT next_offset FROM ingest_offsets WHERE partition=?",
                      &in->get_offset, e) ||
           db_prepare(m,
                      "INSERT INTO ingest_offsets(partition, next_offset) VALUES(?,?)"
                      " ON CONFLICT(partition) DO UPDATE SET next_offset=excluded.next_offset",
                      &in->set_offset, e);
}

static void release_held(struct ingest *in)
{
    for (size_t i = 0; i < in->nheld; i++)
        rd_kafka_message_destroy(in->held[i]);
    in->nheld = 0;
}

/* Keeps a message whose payload a row borrows; false when out of memory. */
static bool hold(struct ingest *in, rd_kafka_message_t *m)
{
    if (in->nheld == in->capheld) {
        size_t cap = in->capheld ? in->capheld * 2 : 4096;
        rd_kafka_message_t **v = realloc(in->held, cap * sizeof(*v));
        if (!v)
            return false;
        in->held = v;
        in->capheld = cap;
    }
    in->held[in->nheld++] = m;
    return true;
}

static void finalize(struct ingest *in)
{
    release_held(in);
    free(in->held);
    batch_rows_release(&in->rows);
    batch_sums_release(&in->sums);
    sqlite3_finalize(in->ins_order);
    sqlite3_finalize(in->ins_reject);
    sqlite3_finalize(in->get_offset);
    sqlite3_finalize(in->set_offset);
    free(in->parts);
}

static int begin(struct ingest *in, struct lerr *e)
{
    if (in->in_txn)
        return 0;
    if (db_exec(in->b->master, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    in->in_txn = true;
    in->chunk_n = 0;
    in->chunk_start_ms = tm_mono_ms();
    return 0;
}

/* Commits the open chunk: positions and counters with the rows they account for. */
static int commit(struct ingest *in, struct lerr *e)
{
    sqlite3 *m = in->b->master;

    if (!in->in_txn)
        return 0;
    if (batch_rows_flush(&in->rows, in->ins_order, &in->sums, &in->dup, &in->mismatch, e) != 0 ||
        batch_sums_write(&in->sums, m, "kafka", false, e) != 0)
        return -1;
    release_held(in);
    for (int i = 0; i < in->nparts; i++) {
        sqlite3_bind_int(in->set_offset, 1, in->parts[i].partition);
        sqlite3_bind_int64(in->set_offset, 2, in->parts[i].next);
        if (db_step_done(in->set_offset, e) != 0)
            return -1;
    }
    if (batch_counter_add(m, "duplicates", in->dup, e) ||
        batch_counter_add(m, "key_mismatch", in->mismatch, e) ||
        batch_counter_add(m, "deleted_offsets", in->deleted, e) ||
        batch_counter_add(m, "consumed", in->consumed, e) || db_exec(m, "COMMIT", e))
        return -1;
    in->in_txn = false;
    in->dup = in->mismatch = in->deleted = in->consumed = 0;
    return 0;
}

static void progress(struct ingest *in, bool is_last)
{
    int64_t now = tm_mono_ms(), secs_ms = now - in->start_ms;

    if (!in->is_tty || in->todo == 0 || (!is_last && now - in->shown_ms < 200))
        return;
    in->shown_ms = now;
    fprintf(stderr, "\ringest %" PRId64 "/%" PRId64 " messages (%d%%) %" PRId64 " msg/s   %s",
            in->ingested, in->todo, in->todo ? (int)(in->ingested * 100 / in->todo) : 100,
            secs_ms > 0 ? in->ingested * 1000 / secs_ms : 0, is_last ? "\n" : "");
}

/* Reads the watermarks of the partitions with offsets left to ingest, all in one question:
 * low[i] and high[i] are in->parts[i]'s (unset for a partition that is done). */
static int ask_watermarks(struct ingest *in, int64_t *low, int64_t *high, struct lerr *e)
{
    int32_t *ask = calloc((size_t)in->nparts + 1, sizeof(*ask));
    int64_t *l = calloc((size_t)in->nparts + 1, sizeof(*l));
    int64_t *h = calloc((size_t)in->nparts + 1, sizeof(*h));
    int n = 0, rc = -1;

    if (!ask || !l || !h) {
        lerr_set(e, "out of memory");
        goto out;
    }
    for (int i = 0; i < in->nparts; i++)
        if (!in->parts[i].is_done)
            ask[n++] = in->parts[i].partition;
    /* The consumer is created when a partition needs Kafka (an import's run may not). */
    if (n > 0 && !in->b->rk && batch_kafka_open(in->b, e) != 0)
        goto out;
    if (kafka_watermarks_of(in->b->rk, in->b->topic, ask, n, (int)in->b->kafka_timeout_ms, l, h,
                            e) != 0)
        goto out;
    for (int i = 0, j = 0; i < in->nparts; i++)
        if (!in->parts[i].is_done)
            low[i] = l[j], high[i] = h[j++];
    rc = 0;
out:
    free(ask);
    free(l);
    free(h);
    return rc;
}

/* Loads positions, then deals with offsets Kafka deleted before we read them. */
static int load_positions(struct ingest *in, const struct batch_cut *cut, struct lerr *e)
{
    struct batch *b = in->b;
    int64_t *lows = NULL, *highs = NULL;
    int rc = -1;

    in->parts = calloc((size_t)cut->nparts, sizeof(*in->parts));
    lows = calloc((size_t)cut->nparts + 1, sizeof(*lows));
    highs = calloc((size_t)cut->nparts + 1, sizeof(*highs));
    if (!in->parts || !lows || !highs) {
        lerr_set(e, "out of memory");
        goto out;
    }
    in->nparts = cut->nparts;
    for (int i = 0; i < cut->nparts; i++) {
        struct part *p = &in->parts[i];

        p->partition = cut->partitions[i];
        p->cut = cut->offsets[i];
        sqlite3_bind_int(in->get_offset, 1, p->partition);
        if (db_step_int(in->get_offset, &p->next, e) != 0)
            goto out;
        /* A cut behind what master holds would double-count: never publish it. The version
         * is marked failed, so the next run picks a new cut. */
        if (p->next > p->cut) {
            sqlite3_exec(b->bdb, "UPDATE versions SET state='failed' WHERE state='pending'", NULL,
                         NULL, NULL);
            lerr_set(e,
                     "cut is behind the master dataset: partition %d holds offsets up to %" PRId64
                     " but the cut is %" PRId64,
                     p->partition, p->next, p->cut);
            goto out;
        }
        /* The import log is not Kafka: batch_imports_move() read it, and its position
         * (written back unchanged) is that step's. */
        p->is_done = p->next == p->cut || p->partition == BATCH_IMPORT_PARTITION;
    }
    if (ask_watermarks(in, lows, highs, e) != 0)
        goto out;
    for (int i = 0; i < in->nparts; i++) {
        struct part *p = &in->parts[i];
        int64_t low = lows[i], high = highs[i];

        if (p->is_done)
            continue;
        if (high < p->cut) {
            lerr_set(e,
                     "partition %d: the cut offset %" PRId64 " is past Kafka's high watermark "
                     "%" PRId64 " (was the topic recreated?)",
                     p->partition, p->cut, high);
            goto out;
        }
        if (low > p->next) {
            int64_t to = low < p->cut ? low : p->cut, lost = to - p->next;
            log_warn("batch",
                     "offsets_deleted partition=%d lost=%" PRId64 " from=%" PRId64 " to=%" PRId64,
                     p->partition, lost, p->next, to);
            fprintf(stderr,
                    "lambda-batch: WARNING: Kafka already deleted %" PRId64
                    " offsets of partition %d that were never ingested (offsets %" PRId64
                    "..%" PRId64 ")\n",
                    lost, p->partition, p->next, to - 1);
            in->deleted += lost;
            p->next = to;
            p->is_done = p->next >= p->cut;
        }
        in->todo += p->cut - p->next;
    }
    rc = 0;
out:
    free(lows);
    free(highs);
    return rc;
}

static int assign(struct ingest *in, struct lerr *e)
{
    struct kafka_pos *pos = calloc((size_t)in->nparts + 1, sizeof(*pos));
    int n = 0, rc;

    if (!pos)
        return lerr_set(e, "out of memory");
    for (int i = 0; i < in->nparts; i++)
        if (!in->parts[i].is_done)
            pos[n++] = (struct kafka_pos){in->parts[i].partition, in->parts[i].next};
    rc = kafka_assign(in->b->rk, in->b->topic, pos, n, e);
    free(pos);
    return rc;
}

static void part_done(struct ingest *in, struct part *p)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);

    /* Every offset below the cut has been seen (a gap, if any, holds no message). */
    p->next = p->cut;
    p->is_done = true;
    rd_kafka_topic_partition_list_add(l, in->b->topic, p->partition);
    rd_kafka_pause_partitions(in->b->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

static int insert_reject(struct ingest *in, const rd_kafka_message_t *m, enum ev_reason r,
                         struct lerr *e)
{
    sqlite3_stmt *st = in->ins_reject;
    size_t n = m->len < EV_REJECT_PAYLOAD_MAX ? m->len : EV_REJECT_PAYLOAD_MAX;

    sqlite3_bind_int(st, 1, m->partition);
    sqlite3_bind_int64(st, 2, m->offset);
    sqlite3_bind_text(st, 3, ev_reason_name(r), -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, m->payload ? m->payload : "", (int)n, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, tm_now_ms());
    return db_step_done(st, e);
}

/* Handles one message; *is_held tells that a row borrows it until the chunk commits. */
static int on_message(struct ingest *in, rd_kafka_message_t *m, bool *is_held, struct lerr *e)
{
    struct part *p = find_part(in, m->partition);
    rd_kafka_timestamp_type_t tstype;
    int64_t ts;
    struct ev_order o;
    enum ev_reason r;

    *is_held = false;
    if (!p || p->is_done)
        return 0; /* past the cut of a finished partition */
    /* Retention losses were counted from the low watermark before reading; a jump here is a
     * gap (markers, aborted or compacted data), so its loss count is not used. */
    struct kafka_reach k = kafka_reach(p->next, p->cut, KAFKA_SEEN_MESSAGE, m->offset, -1);
    if (!k.take) { /* already ingested, or at or past the cut */
        if (k.done)
            part_done(in, p);
        return 0;
    }
    ts = rd_kafka_message_timestamp(m, &tstype);
    if (tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
        ts = -1;
    r = ev_parse(&in->rules, m->key, m->key_len, m->payload, m->len, ts, &o);
    if (r != EV_OK) {
        if (insert_reject(in, m, r, e) != 0)
            return -1;
    } else {
        if (!hold(in, m))
            return lerr_set(e, "out of memory");
        *is_held = true;
        if (batch_rows_add(&in->rows, &o, m->payload, m->len, m->partition, m->offset, e) != 0)
            return -1;
    }
    p->next = k.next;
    in->chunk_n++;
    in->consumed++;
    in->ingested++;
    if (k.done)
        part_done(in, p);
    return 0;
}

/* A Kafka event that is not a message: partition end, or an error (transient ones are only
 * logged; the stall timeout bounds how long we wait for the broker). */
static int on_event(struct ingest *in, const rd_kafka_message_t *m, struct lerr *e)
{
    char reason[256];

    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        /* The end of what a read_committed consumer can see: every offset below where it
         * stands is read, gaps included (the cut, the last stable offset, is reached here
         * when the offsets just below it are transaction markers or aborted data). */
        struct part *p = find_part(in, m->partition);
        if (!p || p->is_done)
            return 0;
        struct kafka_reach k = kafka_reach(p->next, p->cut, KAFKA_SEEN_END, m->offset, -1);
        p->next = k.next;
        if (k.done)
            part_done(in, p);
        return 0;
    }
    if (rd_kafka_fatal_error(in->b->rk, reason, sizeof(reason)))
        return lerr_set(e, "kafka consumer failed: %s", reason);
    log_warn("batch", "kafka_error partition=%d err=\"%s\"", m->partition,
             rd_kafka_message_errstr(m));
    return 0;
}

static bool all_done(const struct ingest *in)
{
    for (int i = 0; i < in->nparts; i++)
        if (!in->parts[i].is_done)
            return false;
    return true;
}

static const struct part *first_open(const struct ingest *in)
{
    for (int i = 0; i < in->nparts; i++)
        if (!in->parts[i].is_done)
            return &in->parts[i];
    return NULL;
}

static int consume(struct ingest *in, struct lerr *e)
{
    int64_t last_ms = tm_mono_ms();
    bool paused = false;

    while (!all_done(in)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(in->b->rk, 100);
        int64_t now = tm_mono_ms();
        int rc = 0;

        if (batch_stop_requested)
            return lerr_set(e, "interrupted by a signal");
        if (m) {
            bool is_held = false;
            last_ms = now;
            if (begin(in, e) != 0)
                rc = -1;
            else
                rc = m->err ? on_event(in, m, e) : on_message(in, m, &is_held, e);
            if (!is_held)
                rd_kafka_message_destroy(m);
            if (rc != 0)
                return -1;
        } else if (now - last_ms > in->b->kafka_timeout_ms) {
            const struct part *p = first_open(in);
            return lerr_set(e,
                            "no data from Kafka for %" PRId64 " ms: partition %d is at offset "
                            "%" PRId64 " of cut %" PRId64 " (is the broker reachable?)",
                            now - last_ms, p->partition, p->next, p->cut);
        }
        if (in->in_txn &&
            (in->chunk_n >= in->chunk_rows || now - in->chunk_start_ms >= 500 || all_done(in))) {
            if (commit(in, e) != 0)
                return -1;
            if (!paused && in->ingested > 0) {
                paused = true;
                batch_pause(in->b->pause_at, "ingest");
            }
        }
        progress(in, false);
    }
    return commit(in, e);
}

int batch_ingest(struct batch *b, const struct batch_cut *cut, int64_t *ingested, struct lerr *e)
{
    struct ingest in = {.b = b};
    int64_t t0 = tm_mono_ms();
    int rc = -1;

    in.rules.max_future_skew_ms = cfg_ms(b->c, "max_future_skew");
    in.chunk_rows = cfg_int(b->c, "chunk_rows");
    if (in.chunk_rows <= 0)
        in.chunk_rows = 1;
    in.is_tty = isatty(STDERR_FILENO);
    in.start_ms = in.shown_ms = t0;
    if (prepare(&in, e) != 0 || begin(&in, e) != 0 || load_positions(&in, cut, e) != 0 ||
        commit(&in, e) != 0 || batch_size_caches(b, in.todo, e) != 0)
        goto out;
    log_info("batch", "ingest_started version=%" PRId64 " partitions=%d messages=%" PRId64,
             cut->version, in.nparts, in.todo);
    if (all_done(&in))
        batch_pause(b->pause_at, "ingest"); /* nothing to read: the point is still reached */
    else if (assign(&in, e) != 0 || consume(&in, e) != 0)
        goto out;
    progress(&in, true);
    log_info("batch", "ingest_done version=%" PRId64 " messages=%" PRId64 " ms=%" PRId64,
             cut->version, in.ingested, tm_mono_ms() - t0);
    *ingested = in.ingested;
    rc = 0;
out:
    if (in.in_txn)
        sqlite3_exec(b->master, "ROLLBACK", NULL, NULL, NULL);
    if (rc != 0)
        progress(&in, true); /* ends the progress line before the error */
    finalize(&in);
    return rc;
}
