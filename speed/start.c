/* start.c - where each partition starts, and the first epoch (DESIGN.md section 3,
 * "Speed start").
 *
 * A partition starts at its committed position in speed.db; without one, at the newest batch
 * cut (pending or published); without that, at `start`: earliest, latest or the first
 * offset whose message timestamp is at or after an RFC 3339 time. Then any partition behind
 * the newest cut moves forward to it: what lies before the cut is the master dataset's. The
 * import log (partition -1) follows the same rule, with the log's beginning as its `start`:
 * a line no cut covers was counted by no one yet. */
#include "speed_int.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cut.h"
#include "db.h"
#include "kafka.h"
#include "log.h"
#include "tm.h"

/* librdkafka 2.0.2's mock cluster never answers a timestamp look-up; wait this long. */
#define OFFSETS_FOR_TIMES_MS 1500

struct start_cut {
    int64_t id, epoch; /* id 0: no cut */
    int nparts;
    int64_t *offsets;  /* per partition; -1 where the cut names none */
    int64_t imports;   /* the import log's offset, -1 when the cut names none */
    const char **from; /* per partition: where its position came from (for the log) */
};

/* cut_offset_fn for a struct start_cut. */
static int add_offset(void *arg, int32_t partition, int64_t offset, struct lerr *e)
{
    struct start_cut *c = arg;

    (void)e;
    if (partition >= 0 && partition < c->nparts)
        c->offsets[partition] = offset;
    if (partition == SPEED_IMPORT_PARTITION)
        c->imports = offset;
    return 0;
}

/* The newest cut of batch.db in any state; none when the file or its tables are missing. */
static int read_newest_cut(struct speed *s, struct start_cut *c, struct lerr *e)
{
    char path[PATH_MAX];
    sqlite3 *db = NULL;
    struct cut_version v;
    struct lerr ignored;
    bool found = false;
    int rc = -1;

    c->id = 0;
    c->epoch = INT64_MIN;
    c->imports = -1;
    for (int p = 0; p < s->nparts; p++)
        c->offsets[p] = -1;
    db_path(s->data_dir, DB_BATCH, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return 0;
    if (db_open_ro(s->data_dir, DB_BATCH, &db, e) != 0)
        return -1;
    /* A batch.db without its schema yet holds no cut. */
    if (cut_newest(db, &v, &found, &ignored) != 0 || !found) {
        rc = 0;
        goto out;
    }
    c->id = v.id;
    c->epoch = v.epoch;
    if (c->id != 0 && cut_offsets(db, c->id, add_offset, c, e) != 0)
        goto out;
    rc = 0;
out:
    sqlite3_close(db);
    return rc;
}

/* The low and high watermarks of p, retrying while the broker is away. 1 when stopped. */
static int watermarks(struct speed *s, int p, volatile sig_atomic_t *stop, int64_t *low,
                      int64_t *high)
{
    return kafka_watermarks_wait(s->rk, s->topic, p, (int)s->kafka_timeout_ms, stop, "speed", low,
                                 high);
}

/* Reads the first message at or after offset of p: its offset and timestamp. */
static int read_one(rd_kafka_t *rk, const char *topic, int p, int64_t offset, int64_t timeout_ms,
                    volatile sig_atomic_t *stop, int64_t *got, int64_t *ts, struct lerr *e)
{
    struct kafka_pos pos = {p, offset};
    struct lerr ignored;
    int64_t end = tm_mono_ms() + timeout_ms;
    int rc = -1;

    kafka_assign(rk, topic, &pos, 1, &ignored); /* a failure shows as no message in time */
    while (rc != 0 && tm_mono_ms() < end && !*stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err && m->partition == p && m->offset >= offset) {
            *got = m->offset;
            *ts = rd_kafka_message_timestamp(m, NULL);
            rc = 0;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    if (rc != 0)
        return lerr_set(e, "cannot read partition %d offset %" PRId64 " within %" PRId64 " ms", p,
                        offset, timeout_ms);
    return 0;
}

/* The first offset in [low, high) whose message timestamp is >= t_ms, or high: a binary
 * search over single messages, right wherever timestamps grow with offsets (as Kafka's own
 * time index assumes). */
static int search_time(struct speed *s, rd_kafka_t *rk, int p, int64_t low, int64_t high,
                       int64_t t_ms, volatile sig_atomic_t *stop, int64_t *out, struct lerr *e)
{
    int64_t lo = low, hi = high;

    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2, got = mid, ts = 0;
        if (read_one(rk, s->topic, p, mid, s->kafka_timeout_ms, stop, &got, &ts, e) != 0)
            return -1;
        if (ts >= t_ms)
            hi = mid;
        else
            lo = got + 1;
    }
    *out = lo;
    return 0;
}

static rd_kafka_t *search_consumer(struct speed *s, struct lerr *e)
{
    return kafka_consumer_new(s->cfg, NULL, 0, NULL, NULL, e);
}

/* Positions for a time start: Kafka's timestamp look-up first; where it gives no answer,
 * the binary search. */
static int time_positions(struct speed *s, int64_t t_ms, volatile sig_atomic_t *stop,
                          struct lerr *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(s->nparts);
    rd_kafka_t *rk = NULL;
    int rc = -1;

    for (int p = 0; p < s->nparts; p++)
        if (s->parts[p].is_owned && s->parts[p].next_offset < 0)
            rd_kafka_topic_partition_list_add(l, s->topic, p)->offset = t_ms;
    if (rd_kafka_offsets_for_times(s->rk, l, OFFSETS_FOR_TIMES_MS) != 0)
        for (int i = 0; i < l->cnt; i++)
            l->elems[i].offset = -1;
    for (int i = 0; i < l->cnt; i++) {
        struct speed_part *pt = &s->parts[l->elems[i].partition];
        int64_t low, high;
        if (!l->elems[i].err && l->elems[i].offset >= 0) {
            pt->next_offset = l->elems[i].offset;
            log_info("speed", "start_time_offset partition=%d offset=%" PRId64 " via=lookup",
                     l->elems[i].partition, pt->next_offset);
            continue;
        }
        if ((rc = watermarks(s, l->elems[i].partition, stop, &low, &high)) != 0)
            goto out;
        rc = -1;
        if (!rk && !(rk = search_consumer(s, e)))
            goto out;
        if (search_time(s, rk, l->elems[i].partition, low, high, t_ms, stop, &pt->next_offset, e) !=
            0) {
            rc = *stop ? 1 : -1; /* a stop request cuts the search short */
            goto out;
        }
        log_info("speed", "start_time_offset partition=%d offset=%" PRId64 " via=search",
                 l->elems[i].partition, pt->next_offset);
    }
    rc = 0;
out:
    rd_kafka_topic_partition_list_destroy(l);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    return rc;
}

static int configured_positions(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e)
{
    const char *start = cfg_str(s->cfg, "start");
    int64_t t_ms, low, high;
    bool is_latest = strcmp(start, "latest") == 0;

    if (strcmp(start, "earliest") != 0 && !is_latest) {
        if (tm_parse_rfc3339(start, strlen(start), &t_ms) != 0)
            return lerr_set(e, "bad start '%s': want earliest, latest or an RFC 3339 time", start);
        return time_positions(s, t_ms, stop, e);
    }
    for (int p = 0; p < s->nparts; p++) {
        int rc;
        if (!s->parts[p].is_owned || s->parts[p].next_offset >= 0)
            continue;
        if ((rc = watermarks(s, p, stop, &low, &high)) != 0)
            return rc;
        s->parts[p].next_offset = is_latest ? high : low;
    }
    return 0;
}

/* The import log's position: speed.db's, else the cut's, else the log's beginning; never
 * behind the cut. */
static void import_position(struct speed *s, const struct start_cut *c)
{
    struct speed_part *pt = &s->imports;
    const char *from = pt->next_offset >= 0 ? "speed_db" : c->imports >= 0 ? "cut" : "start";

    if (pt->next_offset < 0)
        pt->next_offset = c->imports >= 0 ? c->imports : 0;
    if (c->imports > pt->next_offset) {
        log_info("speed",
                 "moved_to_cut partition=%d from=%" PRId64 " to=%" PRId64 " version=%" PRId64,
                 SPEED_IMPORT_PARTITION, pt->next_offset, c->imports, c->id);
        pt->next_offset = c->imports;
    }
    pt->interval_offset = pt->next_offset;
    log_info("speed", "start_position partition=%d offset=%" PRId64 " from=%s",
             SPEED_IMPORT_PARTITION, pt->next_offset, from);
}

/* True when speed.db already holds the boundary of epoch (a restart inside it). */
static int has_boundary(struct speed *s, int64_t epoch, bool *out, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int64_t n = 0;
    int rc;

    if (db_prepare(s->db, "SELECT count(*) FROM boundaries WHERE epoch = ?1", &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, epoch);
    rc = db_step_int(st, &n, e);
    sqlite3_finalize(st);
    *out = n > 0;
    return rc;
}

int speed_start_positions(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e)
{
    struct start_cut c = {0,         0,
                          s->nparts, calloc((size_t)s->nparts, sizeof(int64_t)),
                          -1,        calloc((size_t)s->nparts, sizeof(char *))};
    int64_t now_epoch = tm_epoch(tm_now_ms(), s->epoch_ms);
    bool has = false;
    int rc = -1;

    if (!c.offsets || !c.from) {
        free(c.offsets);
        free(c.from);
        return lerr_set(e, "out of memory");
    }
    if (read_newest_cut(s, &c, e) != 0)
        goto out;
    for (int p = 0; p < s->nparts; p++) {
        c.from[p] = s->parts[p].next_offset >= 0 ? "speed_db" : c.offsets[p] >= 0 ? "cut" : "start";
        if (s->parts[p].next_offset < 0 && c.offsets[p] >= 0)
            s->parts[p].next_offset = c.offsets[p];
    }
    if ((rc = configured_positions(s, stop, e)) != 0)
        goto out;
    rc = -1;
    for (int p = 0; p < s->nparts; p++) {
        if (!s->parts[p].is_owned)
            continue;
        if (c.offsets[p] > s->parts[p].next_offset) {
            log_info("speed",
                     "moved_to_cut partition=%d from=%" PRId64 " to=%" PRId64 " version=%" PRId64,
                     p, s->parts[p].next_offset, c.offsets[p], c.id);
            s->parts[p].next_offset = c.offsets[p];
        }
        s->parts[p].interval_offset = s->parts[p].next_offset;
        log_info("speed", "start_position partition=%d offset=%" PRId64 " from=%s", p,
                 s->parts[p].next_offset, c.from[p]);
    }
    import_position(s, &c);
    /* Epochs never go backwards: not behind the last one committed, nor behind the cut. */
    if (c.id && c.epoch > s->epoch)
        s->epoch = c.epoch;
    if (now_epoch > s->epoch)
        s->epoch = now_epoch;
    if (has_boundary(s, s->epoch, &has, e) != 0)
        goto out;
    s->need_boundary = !has;
    rc = 0;
out:
    free(c.offsets);
    free(c.from);
    return rc;
}
