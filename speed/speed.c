/* speed.c - the speed layer's consumer loop: parse, deduplicate and apply each message in log
 * order, keep the stream watermark, and decide when a checkpoint is due (checkpoint.c writes
 * it) and when batch.db has published a cut whose state can be dropped.
 *
 * A batch of messages is applied in two passes: the first parses and starts loading what the
 * second will look up, the second applies in log order. */
#include "speed_int.h"

#include <inttypes.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cut.h"
#include "db.h"
#include "kafka.h"
#include "lock.h"
#include "log.h"
#include "pin.h"
#include "tm.h"

#define BATCH_MAX      1024  /* messages taken from the queue at once */
#define SUMMARY_MS     10000 /* one info line per this much time */
#define EXPIRY_POLL_MS 1000  /* how often batch.db is asked for a newer published cut */
/* An interval holds at most this many events (memory stays bounded while catching up). */
#define INTERVAL_MAX_EVENTS 65536

/* speed.db records epoch_ms and the partition set at first use (main.c compared them). */
static int record_pins(struct speed *s, const struct cfg *c, struct lerr *e)
{
    struct pin_set p;

    pin_set_from_cfg(&p, c);
    return pin_record(s->db, s->data_dir, "speed.db", &p, e) == 0 ? 0 : -1;
}

static int open_state(struct speed *s, const struct cfg *c, struct lerr *e)
{
    struct pin_set pins;
    int held;

    s->cfg = c;
    s->data_dir = cfg_str(c, "data_dir");
    s->topic = cfg_str(c, "topic");
    s->epoch_ms = cfg_ms(c, "epoch_ms");
    s->checkpoint_ms = cfg_ms(c, "checkpoint_ms");
    s->checkpoint_max_ms = cfg_ms(c, "checkpoint_max_ms");
    s->watermark_delay_ms = cfg_ms(c, "watermark_delay");
    s->idle_timeout_ms = cfg_ms(c, "idle_timeout");
    s->allowed_lateness_ms = cfg_ms(c, "allowed_lateness");
    s->kafka_timeout_ms = cfg_ms(c, "kafka_timeout");
    s->retention_ms = cfg_ms(c, "retention");
    s->rules.max_future_skew_ms = cfg_ms(c, "max_future_skew");
    s->watermark_ms = INT64_MIN;
    if (s->epoch_ms <= 0 || s->checkpoint_ms <= 0)
        return lerr_set(e, "epoch_ms and checkpoint_ms must be positive");
    if (shard_set_parse(&s->shard, cfg_str(c, "shard_partitions"), e) != 0)
        return -1;
    if (db_ensure_dir(s->data_dir, e) != 0)
        return -1;
    held = lock_try(s->data_dir, "speed.lock", &s->lock_fd, e);
    if (held < 0)
        return -1;
    if (held == 0)
        return lerr_set(e,
                        "another lambda-speed holds '%s/speed.lock': one speed layer per data "
                        "directory",
                        s->data_dir);
    /* The deltas and seen B-trees take random updates every checkpoint: keep their pages
     * in memory (a fixed bound) rather than re-reading them from the file each time. */
    pin_set_from_cfg(&pins, c);
    if (db_open_rw(s->data_dir, DB_SPEED, &s->db, e) != 0 ||
        pin_record(s->db, s->data_dir, "speed.db", &pins, e) != 0 ||
        db_exec(s->db,
                "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 16384;"
                "PRAGMA journal_size_limit = 67108864",
                e) != 0 ||
        speed_checkpoint_load(s, e) != 0 || record_pins(s, c, e) != 0)
        return -1;
    s->dedup = dedup_new(s->db, s->data_dir, (size_t)cfg_int(c, "dedup_cache"), e);
    if (!s->dedup)
        return -1;
    return 0;
}

struct speed *speed_open(const struct cfg *c, struct lerr *e)
{
    struct speed *s = calloc(1, sizeof(*s));

    if (!s) {
        lerr_set(e, "out of memory");
        return NULL;
    }
    s->lock_fd = -1;
    if (open_state(s, c, e) != 0) {
        speed_close(s);
        return NULL;
    }
    return s;
}

void speed_get_stats(const struct speed *s, struct speed_stats *out)
{
    out->nparts = s->nparts;
    out->epoch = s->epoch;
    out->consumed = s->n.consumed;
    out->applied = s->n.applied;
}

void speed_close(struct speed *s)
{
    struct speed_delta *d;

    if (!s)
        return;
    if (s->rk) {
        rd_kafka_assign(s->rk, NULL);
        if (s->queue)
            rd_kafka_queue_destroy(s->queue);
        rd_kafka_destroy_flags(s->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    speed_writer_stop(s);
    dedup_free(s->dedup);
    speed_imports_close(s);
    sqlite3_close(s->rdb);
    sqlite3_stmt *sts[] = {s->st_delta,        s->st_offset,         s->st_boundary,
                           s->st_reject,       s->st_late,           s->st_counter,
                           s->st_meta,         s->st_del_deltas,     s->st_del_bounds,
                           s->st_trim_rejects, s->st_trim_late,      s->st_published,
                           s->st_import_dup,   s->st_del_import_dups};
    for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++)
        sqlite3_finalize(sts[i]);
    sqlite3_close(s->db);
    sqlite3_close(s->batch_db);
    speed_recycle_deltas(s, &s->deltas);
    speed_recycle_deltas(s, &s->job.deltas);
    while (s->spare) {
        d = s->spare;
        s->spare = d->next_spare;
        free(d);
    }
    free(s->parts);
    free(s->rows.rejects);
    free(s->rows.lates);
    free(s->job.rows.rejects);
    free(s->job.rows.lates);
    free(s->rows.idups);
    free(s->job.rows.idups);
    free(s->job.parts);
    free(s->parsed);
    lock_release(s->lock_fd);
    free(s);
}

/* Grows an array of n used elements of size sz to hold one more. */
static void *grow(void *arr, size_t *cap, size_t n, size_t sz)
{
    void *p;
    size_t ncap;

    if (n < *cap)
        return arr;
    ncap = *cap ? 2 * *cap : 64;
    p = realloc(arr, ncap * sz);
    if (p)
        *cap = ncap;
    return p;
}

static int add_reject(struct speed *s, const rd_kafka_message_t *m, enum ev_reason r,
                      struct lerr *e)
{
    struct speed_reject *rj;
    void *p = grow(s->rows.rejects, &s->rows.caprejects, s->rows.nrejects, sizeof(*rj));

    if (!p)
        return lerr_set(e, "out of memory");
    s->rows.rejects = p;
    rj = &s->rows.rejects[s->rows.nrejects++];
    rj->partition = m->partition;
    rj->offset = m->offset;
    rj->reason = r;
    rj->len = m->len < sizeof(rj->payload) ? m->len : sizeof(rj->payload);
    if (rj->len)
        memcpy(rj->payload, m->payload, rj->len);
    s->n.rejects[r]++;
    return 0;
}

static int add_late(struct speed *s, const rd_kafka_message_t *m, const struct ev_order *o,
                    int64_t minute_ms, struct lerr *e)
{
    struct speed_late *l;
    void *p = grow(s->rows.lates, &s->rows.caplates, s->rows.nlates, sizeof(*l));

    if (!p)
        return lerr_set(e, "out of memory");
    s->rows.lates = p;
    l = &s->rows.lates[s->rows.nlates++];
    l->partition = m->partition;
    l->offset = m->offset;
    l->event_ms = o->event_ms;
    l->minute_ms = minute_ms;
    l->watermark_ms = s->watermark_ms;
    memcpy(l->merchant_id, o->merchant_id, sizeof(l->merchant_id));
    memcpy(l->order_id, o->order_id, sizeof(l->order_id));
    s->n.late++;
    return 0;
}

static int add_delta(struct speed *s, const struct speed_parsed *pm, struct lerr *e)
{
    struct speed_delta *d;

    HASH_FIND_BYHASHVALUE(hh, s->deltas, &pm->key, sizeof(pm->key), pm->hashv, d);
    if (!d) {
        if (s->spare) {
            d = s->spare;
            s->spare = d->next_spare;
        } else if (!(d = malloc(sizeof(*d)))) {
            return lerr_set(e, "out of memory");
        }
        d->key = pm->key;
        d->order_count = 0;
        d->revenue_cents = 0;
        HASH_ADD_BYHASHVALUE(hh, s->deltas, key, sizeof(d->key), pm->hashv, d);
        s->ndeltas++;
    }
    d->order_count++;
    d->revenue_cents += pm->o.amount_cents;
    return 0;
}

/* The stream watermark: the minimum over partitions that applied an event within
 * idle_timeout of their max event time - watermark_delay. It never decreases. */
static void update_watermark(struct speed *s, int64_t now_mono)
{
    int64_t wm = INT64_MAX;
    bool any = false;

    for (int p = 0; p < s->nparts; p++) {
        const struct speed_part *pt = &s->parts[p];
        if (pt->max_event_ms == INT64_MIN || now_mono - pt->last_event_mono > s->idle_timeout_ms)
            continue;
        if (pt->max_event_ms - s->watermark_delay_ms < wm)
            wm = pt->max_event_ms - s->watermark_delay_ms;
        any = true;
    }
    if (any && wm > s->watermark_ms)
        s->watermark_ms = wm;
}

/* Moves a partition's position by one delivery (shared/kafka.h kafka_reach: offsets have
 * gaps). The part of a jump below the log start (as the consumer last saw it) was deleted by
 * retention before it was read: counted, and said loudly, since those events are lost here;
 * the rest of a jump held no visible message (transaction markers, aborted data). */
static void advance(struct speed *s, int partition, enum kafka_seen what, int64_t offset)
{
    struct speed_part *pt = &s->parts[partition];
    int64_t low = -1, high = -1, from = pt->next_offset;
    struct kafka_reach k;

    if (from < 0) { /* no position yet: the first delivery gives it */
        if (what == KAFKA_SEEN_MESSAGE)
            pt->next_offset = offset + 1;
        return;
    }
    if (offset > from && s->rk)
        rd_kafka_get_watermark_offsets(s->rk, s->topic, partition, &low, &high);
    k = kafka_reach(from, KAFKA_NO_CUT, what, offset, low);
    pt->next_offset = k.next;
    if (k.lost == 0)
        return;
    s->n.skipped_offsets += k.lost;
    log_warn("speed",
             "offsets_skipped partition=%d from=%" PRId64 " to=%" PRId64 " count=%" PRId64
             " total=%" PRId64,
             partition, from, from + k.lost, k.lost, s->n.skipped_offsets);
}

void speed_parsed_fill(struct speed *s, struct speed_parsed *pm, const struct ev_order *o)
{
    pm->reason = EV_OK;
    if (&pm->o != o)
        pm->o = *o;
    pm->dedup_key = dedup_key(s->dedup, pm->o.merchant_id, pm->o.order_id);
    pm->minute_ms = tm_minute_of(pm->o.event_ms);
    memset(&pm->key, 0, sizeof(pm->key)); /* hashed as raw bytes, padding included */
    memcpy(pm->key.merchant_id, pm->o.merchant_id, strlen(pm->o.merchant_id));
    pm->key.minute_ms = pm->minute_ms;
    pm->key.epoch = s->epoch;
    HASH_VALUE(&pm->key, sizeof(pm->key), pm->hashv);
    if (s->deltas)
        __builtin_prefetch(
            &s->deltas->hh.tbl->buckets[pm->hashv & (s->deltas->hh.tbl->num_buckets - 1)]);
}

/* First pass: parse, and start loading what the second pass will look up. */
static void parse_message(struct speed *s, const rd_kafka_message_t *m, struct speed_parsed *pm)
{
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);

    pm->reason = ev_parse(&s->rules, m->key, m->key_len, m->payload, m->len,
                          tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts, &pm->o);
    if (pm->reason == EV_OK)
        speed_parsed_fill(s, pm, &pm->o);
}

int speed_count_order(struct speed *s, const struct speed_parsed *pm, int partition, int64_t offset,
                      struct lerr *e)
{
    const struct ev_order *o = &pm->o;
    int dup = dedup_admit_key(s->dedup, pm->dedup_key, o->merchant_id, o->order_id, s->epoch,
                              partition, offset, e);

    if (dup < 0)
        return -1;
    if (dup) {
        s->n.duplicates++;
        return 1;
    }
    if (add_delta(s, pm, e) != 0)
        return -1;
    s->n.applied++;
    return 0;
}

/* Second pass, in log order: everything that depends on the events before. */
static int apply_message(struct speed *s, const rd_kafka_message_t *m,
                         const struct speed_parsed *pm, int64_t now_mono, struct lerr *e)
{
    struct speed_part *pt = &s->parts[m->partition];
    const struct ev_order *o = &pm->o;
    int counted;

    s->n.consumed++;
    advance(s, m->partition, KAFKA_SEEN_MESSAGE, m->offset);
    if (pm->reason != EV_OK)
        return add_reject(s, m, pm->reason, e);
    if (o->is_key_mismatch)
        s->n.key_mismatch++;
    counted = speed_count_order(s, pm, m->partition, m->offset, e);
    if (counted != 0)
        return counted < 0 ? -1 : 0;
    /* Late: its minute was already final. Exactness wins, so it is counted all the same. */
    if (s->watermark_ms != INT64_MIN &&
        s->watermark_ms >= pm->minute_ms + TM_MINUTE_MS + s->allowed_lateness_ms &&
        add_late(s, m, o, pm->minute_ms, e) != 0)
        return -1;
    pt->last_event_mono = now_mono;
    if (o->event_ms > pt->max_event_ms) {
        pt->max_event_ms = o->event_ms;
        update_watermark(s, now_mono);
    }
    return 0;
}

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct speed *s = opaque;
    int64_t now = tm_mono_ms();

    (void)rk;
    /* librdkafka retries by itself; say so at most once a second. */
    if (now - s->last_kafka_log_mono < 1000)
        return;
    s->last_kafka_log_mono = now;
    log_warn("speed", "kafka_error err=%s reason=\"%s\" action=retrying",
             rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* The dedup's wait_end: the job under way commits, and finish_job ends its dedup_txn. */
static int quiesce(void *opaque, struct lerr *e)
{
    return speed_checkpoint_wait(opaque, e);
}

/* The next interval belongs to the epoch current now (never an earlier one); the first
 * interval of an epoch records its boundary: every partition's position now. */
static void begin_interval(struct speed *s, int64_t now_ms)
{
    int64_t e = tm_epoch(now_ms, s->epoch_ms);

    s->need_boundary = false;
    s->interval_consumed = s->n.consumed;
    if (e <= s->epoch)
        return;
    s->epoch = e;
    s->need_boundary = true;
    for (int p = 0; p < s->nparts; p++)
        s->parts[p].interval_offset = s->parts[p].next_offset;
    s->imports.interval_offset = s->imports.next_offset;
}

/* A checkpoint (checkpoint.c commits it), then the next interval. */
static int checkpoint(struct speed *s, struct lerr *e)
{
    int64_t t0 = tm_mono_ms(), now_ms = tm_now_ms();

    for (int p = 0; p < s->nparts; p++) {
        int64_t low, high;
        if (s->rk &&
            rd_kafka_get_watermark_offsets(s->rk, s->topic, p, &low, &high) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            high >= 0)
            s->parts[p].high_watermark = high;
    }
    /* The import lines committed by now belong to this interval, after its Kafka events. */
    if (speed_imports_read(s, INTERVAL_MAX_EVENTS, e) != 0 || speed_checkpoint(s, now_ms, e) != 0)
        return -1;
    begin_interval(s, now_ms);
    s->next_checkpoint_mono = t0 + s->checkpoint_ms;
    s->interval_mono = t0;
    return 0;
}

/* Asks batch.db (read-only, once it exists) for the newest published cut. */
static void poll_published_cut(struct speed *s)
{
    char path[PATH_MAX];
    struct lerr ignored;
    struct cut_version cut;
    bool found;

    if (!s->batch_db) {
        db_path(s->data_dir, DB_BATCH, path, sizeof(path));
        if (access(path, F_OK) != 0 || db_open_ro(s->data_dir, DB_BATCH, &s->batch_db, &ignored))
            return;
        if (db_prepare(s->batch_db, cut_published_sql, &s->st_published, &ignored) != 0)
            goto fail;
    }
    if (cut_step_published(s->st_published, &cut, &found, &ignored) != 0)
        goto fail;
    if (found && cut.epoch > s->expire_to)
        s->expire_to = cut.epoch;
    return;
fail:
    sqlite3_finalize(s->st_published);
    sqlite3_close(s->batch_db);
    s->st_published = NULL;
    s->batch_db = NULL;
}

static void log_summary(struct speed *s, int64_t now_mono)
{
    int64_t lag = 0;
    struct dedup_stats ds;

    for (int p = 0; p < s->nparts; p++)
        if (s->parts[p].high_watermark > s->parts[p].next_offset)
            lag += s->parts[p].high_watermark - s->parts[p].next_offset;
    dedup_get_stats(s->dedup, &ds);
    log_info("speed",
             "checkpoint_summary epoch=%" PRId64 " checkpoints=%" PRId64 " consumed=%" PRId64
             " consumed_since=%" PRId64 " applied=%" PRId64 " duplicates=%" PRId64 " late=%" PRId64
             " lag=%" PRId64 " watermark_ms=%" PRId64 " checkpoint_us=%" PRId64
             " dedup_cached=%zu dedup_complete=%d dedup_gens=%zu dedup_spill_reads=%" PRId64,
             s->epoch, s->n.checkpoints, s->n.consumed, s->n.consumed - s->summary_consumed,
             s->n.applied, s->n.duplicates, s->n.late, lag, s->watermark_ms, s->n.checkpoint_us,
             ds.cache_ids, ds.is_complete, ds.gens, ds.spill_reads);
    s->summary_consumed = s->n.consumed;
    s->next_summary_mono = now_mono + SUMMARY_MS;
#ifdef __GLIBC__
    /* A spike (a backlog held in librdkafka's queue while the writer was behind) leaves
     * freed memory in malloc's arenas: give it back, so the resident size returns to the
     * steady state instead of keeping every high-water mark. */
    malloc_trim(0);
#endif
}

/* Applies one batch of messages from the queue; waits at most wait_ms for the first.
 * Returns how many messages it took, or -1. */
static bool is_applicable(const struct speed *s, const rd_kafka_message_t *m)
{
    return !m->err && m->partition >= 0 && m->partition < s->nparts &&
           s->parts[m->partition].is_owned;
}

/* Applies one batch of messages from the queue; waits at most wait_ms for the first.
 * Returns how many messages it took, or -1. */
static ssize_t consume_some(struct speed *s, rd_kafka_message_t **msgs, int wait_ms, struct lerr *e)
{
    ssize_t n = rd_kafka_consume_batch_queue(s->queue, wait_ms, msgs, BATCH_MAX);
    int64_t now_mono = tm_mono_ms();
    int rc = 0;

    for (ssize_t i = 0; i < n; i++)
        if (is_applicable(s, msgs[i]))
            parse_message(s, msgs[i], &s->parsed[i]);
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = msgs[i];
        if (rc == 0 && m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                on_kafka_error(s->rk, m->err, rd_kafka_message_errstr(m), s);
            else if (m->partition >= 0 && m->partition < s->nparts && m->offset >= 0)
                advance(s, m->partition, KAFKA_SEEN_END, m->offset);
        } else if (rc == 0 && is_applicable(s, m)) {
            rc = apply_message(s, m, &s->parsed[i], now_mono, e);
        }
        rd_kafka_message_destroy(m);
    }
    update_watermark(s, now_mono);
    return rc == 0 ? (n < 0 ? 0 : n) : -1;
}

int speed_run(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e)
{
    rd_kafka_message_t **msgs = malloc(BATCH_MAX * sizeof(*msgs));
    bool is_behind = false;
    int rc = -1;

    free(s->parsed);
    s->parsed = malloc(BATCH_MAX * sizeof(*s->parsed));
    if (!msgs || !s->parsed) {
        free(msgs);
        return lerr_set(e, "out of memory");
    }
    /* Look-ups in speed.db go through their own connection: the writer thread owns the other
     * one while it commits. */
    if (db_open_ro(s->data_dir, DB_SPEED, &s->rdb, e) != 0 ||
        db_exec(s->rdb, "PRAGMA cache_size = -8192", e) != 0 || speed_writer_start(s, e) != 0) {
        free(msgs);
        return -1;
    }
    dedup_set_reader(s->dedup, s->rdb, quiesce, s);
    speed_wal_init(&s->wal, s->db);
    s->interval_consumed = s->n.consumed;
    s->interval_mono = tm_mono_ms();
    s->next_checkpoint_mono = s->interval_mono + s->checkpoint_ms;
    s->next_summary_mono = tm_mono_ms() + SUMMARY_MS;
    while (!*stop) {
        int64_t now = tm_mono_ms(), wait = s->next_checkpoint_mono - now;
        if (wait > 100)
            wait = 100; /* the stop flag is looked at this often */
        ssize_t n = consume_some(s, msgs, wait > 0 ? (int)wait : 0, e);
        if (n < 0)
            goto out;
        /* While catching up (a full batch), a checkpoint may wait up to checkpoint_max_ms:
         * each commit rewrites the pages it touches, so fewer, larger ones catch up faster.
         * With no backlog it is every checkpoint_ms, for freshness. */
        is_behind = n == BATCH_MAX;
        now = tm_mono_ms();
        if (now >= s->next_expiry_mono) {
            poll_published_cut(s);
            s->next_expiry_mono = now + EXPIRY_POLL_MS;
        }
        if (((now >= s->next_checkpoint_mono &&
              (!is_behind || now >= s->interval_mono + s->checkpoint_max_ms)) ||
             s->n.consumed - s->interval_consumed >= INTERVAL_MAX_EVENTS) &&
            checkpoint(s, e) != 0)
            goto out;
        if (now >= s->next_summary_mono)
            log_summary(s, now);
    }
    if (checkpoint(s, e) != 0 || speed_checkpoint_wait(s, e) != 0)
        goto out;
    log_summary(s, tm_mono_ms());
    rc = 0;
out:
    speed_writer_stop(s);
    dedup_set_reader(s->dedup, NULL, NULL, NULL);
    speed_wal_init(&s->wal, NULL);
    sqlite3_close(s->rdb);
    s->rdb = NULL;
    free(msgs);
    return rc;
}

/* Creates the consumer: explicit assignment, positions never committed to Kafka. */
static int make_consumer(struct speed *s, struct lerr *e)
{
    static const struct kafka_prop props[] = {
        /* A fetch that finds nothing new waits at most this long: freshness is checkpoint_ms
         * plus about this (librdkafka's 500 ms default would dominate it). */
        {"fetch.wait.max.ms", "50", true},
        /* With librdkafka's default (100,000) a catch-up over 32 partitions spent about a
         * quarter of its time with an empty queue (bench/speed.sh); the prefetch stays
         * bounded by queued.max.messages.kbytes all the same. */
        {"queued.min.messages", "200000", true},
        {"enable.auto.offset.store", "false", false},
        {"auto.offset.reset", "earliest", false},
        /* The end of a partition moves the position over trailing transaction markers (no
         * message is ever delivered there): without it the lag would show 1 per partition. */
        {"enable.partition.eof", "true", false},
        {"isolation.level", "read_committed", true},
    };

    s->rk =
        kafka_consumer_new(s->cfg, props, sizeof(props) / sizeof(props[0]), on_kafka_error, s, e);
    if (!s->rk)
        return -1;
    s->queue = rd_kafka_queue_get_consumer(s->rk);
    return 0;
}

/* Assigns the partitions of the shard, and only those. */
static int assign_owned(struct speed *s, struct lerr *e)
{
    struct kafka_pos *pos = calloc((size_t)s->nparts, sizeof(*pos));
    int rc, n = 0;

    if (!pos)
        return lerr_set(e, "out of memory");
    for (int p = 0; p < s->nparts; p++)
        if (s->parts[p].is_owned)
            pos[n++] = (struct kafka_pos){p, s->parts[p].next_offset};
    rc = kafka_assign(s->rk, s->topic, pos, n, e);
    free(pos);
    return rc;
}

/* What serving's /health reports of the shard: the topic's partition count and the set. */
static int record_topic(struct speed *s, struct lerr *e)
{
    char set[SHARD_TEXT_MAX], *sql;
    int rc;

    shard_set_format(&s->shard, set, sizeof(set));
    sql = sqlite3_mprintf("INSERT OR REPLACE INTO meta(key, value) VALUES('topic_partitions', %d),"
                          " ('shard_partitions', %Q)",
                          s->nparts, set);
    if (!sql)
        return lerr_set(e, "out of memory");
    rc = db_exec(s->db, sql, e);
    sqlite3_free(sql);
    return rc;
}

int speed_connect(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e)
{
    int rc;

    if (make_consumer(s, e) != 0)
        return -1;
    if (kafka_partition_count_wait(s->rk, s->topic, (int)s->kafka_timeout_ms, stop, "speed",
                                   &s->nparts) != 0)
        return 1;
    /* A partition of the set that the topic lacks would never be read: refused at start. */
    if (shard_set_check_topic(&s->shard, s->nparts, e) != 0)
        return -1;
    s->parts = calloc((size_t)s->nparts, sizeof(*s->parts));
    if (!s->parts)
        return lerr_set(e, "out of memory");
    for (int p = 0; p < s->nparts; p++)
        s->parts[p].is_owned = shard_set_has(&s->shard, p);
    if (speed_checkpoint_load_positions(s, e) != 0 || record_topic(s, e) != 0)
        return -1;
    rc = speed_start_positions(s, stop, e);
    if (rc != 0)
        return rc;
    return assign_owned(s, e);
}
