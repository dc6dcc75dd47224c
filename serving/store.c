/* store.c - lambda-serve's reads of the data directory, in the read order of DESIGN.md section 3
 * (see store.h). */
#include "store.h"

#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cut.h"
#include "db.h"
#include "ev.h"
#include "log.h"
#include "tm.h"

/* Every statement binds the same numbered parameters, so one binder serves them all:
 * ?1 merchant id, ?2 from_ms, ?3 to_ms, ?4 the cut (speed: epoch >= ?4; batch: version = ?4).
 * A statement that does not use a parameter simply ignores its binding. */
enum { S_BEGIN, S_COMMIT, S_META, S_SUM, S_RANGE, S_ROWS, S_TOP, S_NEWEST, S_LAG, S_COUNTERS };
static const char *const speed_sql[] = {
    "BEGIN",
    "COMMIT",
    "SELECT key, value FROM meta",
    "SELECT coalesce(sum(order_count),0), coalesce(sum(revenue_cents),0) FROM deltas"
    " WHERE merchant_id=?1 AND epoch>=?4",
    "SELECT coalesce(sum(order_count),0), coalesce(sum(revenue_cents),0) FROM deltas"
    " WHERE merchant_id=?1 AND minute_ms>=?2 AND minute_ms<?3 AND epoch>=?4",
    "SELECT minute_ms, order_count, revenue_cents FROM deltas"
    " WHERE merchant_id=?1 AND minute_ms>=?2 AND minute_ms<?3 AND epoch>=?4",
    "SELECT merchant_id, sum(order_count), sum(revenue_cents) FROM deltas"
    " WHERE minute_ms>=?2 AND minute_ms<?3 AND epoch>=?4 GROUP BY merchant_id",
    "SELECT max(minute_ms) FROM deltas WHERE epoch>=?4",
    "SELECT partition, max(coalesce(high_watermark, next_offset) - next_offset, 0) FROM offsets"
    " ORDER BY partition",
    "SELECT name, value FROM counters ORDER BY name",
    NULL,
};

enum {
    B_BEGIN,
    B_COMMIT,
    B_VERSION,
    B_TOTAL,
    B_MIN_SUM,
    B_HOUR_SUM,
    B_MIN_ROWS,
    B_HOUR_ROWS,
    B_MIN_TOP,
    B_HOUR_TOP,
    B_NEWEST,
    B_WINDOW
};
/* A version's rows are those with valid_from <= ?4 < valid_to (db.h); the primary keys start
 * with the merchant and bucket, so a row shared by many versions is found as fast as a copy. */
#define VISIBLE " AND valid_from<=?4 AND valid_to>?4"
static const char *const batch_sql[] = {
    "BEGIN",
    "COMMIT",
    cut_published_sql,
    "SELECT order_count, revenue_cents FROM merchant_totals WHERE merchant_id=?1" VISIBLE,
    "SELECT coalesce(sum(order_count),0), coalesce(sum(revenue_cents),0) FROM minutely"
    " WHERE merchant_id=?1 AND minute_ms>=?2 AND minute_ms<?3" VISIBLE,
    "SELECT coalesce(sum(order_count),0), coalesce(sum(revenue_cents),0) FROM hourly"
    " WHERE merchant_id=?1 AND hour_ms>=?2 AND hour_ms<?3" VISIBLE,
    "SELECT minute_ms, order_count, revenue_cents FROM minutely"
    " WHERE merchant_id=?1 AND minute_ms>=?2 AND minute_ms<?3" VISIBLE,
    "SELECT hour_ms, order_count, revenue_cents FROM hourly"
    " WHERE merchant_id=?1 AND hour_ms>=?2 AND hour_ms<?3" VISIBLE,
    "SELECT merchant_id, sum(order_count), sum(revenue_cents) FROM minutely"
    " WHERE minute_ms>=?2 AND minute_ms<?3" VISIBLE " GROUP BY merchant_id",
    "SELECT merchant_id, sum(order_count), sum(revenue_cents) FROM hourly"
    " WHERE hour_ms>=?2 AND hour_ms<?3" VISIBLE " GROUP BY merchant_id",
    "SELECT minute_ms FROM minutely WHERE 1" VISIBLE " ORDER BY minute_ms DESC LIMIT 1",
    "SELECT minute_from_ms FROM versions WHERE id=?4", /* NULL: INT64_MIN stays */
    NULL,
};

/* master.db's counters include rejects_<reason>, kept by a trigger (shared/db.c): a scrape
 * reads them, never counts the rejects table, which retention shrinks. */
enum { M_COUNTERS };
static const char *const master_sql[] = {
    "SELECT name, value FROM counters ORDER BY name",
    NULL,
};

#define CONN_MAX_STMTS 16

/* The wal-index header at the start of a WAL database's -shm file (sqlite.org/walformat.html,
 * section 2.1): two copies of 48 bytes, the second written first, holding a counter bumped by
 * every commit, the last valid frame and the WAL salts. While it reads the same, no
 * transaction has committed since, so what was read from the file is still what it holds. */
#define SHM_HDR_LEN 48

/* One read-only connection with its statements; db is NULL while the file is absent. */
struct conn {
    enum db_file file;
    const char *const *sql;
    sqlite3 *db;
    sqlite3_stmt *st[CONN_MAX_STMTS];
    bool in_txn;
    const unsigned char *shm; /* the -shm header mapped read-only, or NULL */
};

/* Merchants' all-time totals from one snapshot, reused while neither file changes: the
 * answer a dashboard or a hot key asks for again and again costs no SQL and no system call
 * (a read transaction costs several: the WAL read lock is an fcntl). */
#define CACHE_SLOTS 1024

struct cache_entry {
    char merchant_id[65]; /* "" when the slot is free */
    struct serve_sums batch, speed;
};

struct serve_store {
    const char *data_dir; /* borrowed */
    struct conn speed, batch, master;
    /* The headers read just before the current snapshot opened (begin), and those of the
     * snapshot the cache holds; a snapshot is never older than the headers read before it. */
    unsigned char begin_hdr[2][SHM_HDR_LEN], cache_hdr[2][SHM_HDR_LEN];
    bool begin_hdr_ok, cache_ok;
    struct serve_view cache_view;
    struct cache_entry cache[CACHE_SLOTS];
    int64_t deadline_ms; /* tm_mono_ms() past which reads are interrupted; 0: never */
    bool timed_out;
    bool is_outside; /* the last failure asked for minutes the version does not hold */
};

/* SQLite's progress handler: a non-zero answer interrupts the statement running. */
static int past_deadline(void *arg)
{
    struct serve_store *st = arg;

    if (st->deadline_ms == 0 || tm_mono_ms() < st->deadline_ms)
        return 0;
    st->timed_out = true;
    return 1;
}

void serve_store_set_deadline(struct serve_store *st, int64_t deadline_ms)
{
    st->deadline_ms = deadline_ms;
    st->timed_out = false;
}

bool serve_store_timed_out(const struct serve_store *st)
{
    return st->timed_out;
}

static void conn_close(struct conn *c)
{
    c->shm = NULL; /* SQLite's own mapping: it goes with the connection */
    for (int i = 0; i < CONN_MAX_STMTS; i++) {
        sqlite3_finalize(c->st[i]);
        c->st[i] = NULL;
    }
    sqlite3_close(c->db);
    c->db = NULL;
    c->in_txn = false;
}

/* The -shm header of an open WAL database, read through SQLite's own mapping of it (the VFS's
 * xShmMap, region 0, never extended); without it, answers are never cached. It must not be
 * opened and mapped a second time: closing that second descriptor dropped every fcntl lock this
 * process held on the file, SQLite's included, so the next lambda-batch run took itself for the
 * first user of the file and truncated it under the mapping (SIGBUS), and could reset the log
 * under a snapshot being read. */
static void map_shm(struct conn *c)
{
    sqlite3_file *f = NULL;
    void volatile *p = NULL;

    if (sqlite3_file_control(c->db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
        !f->pMethods || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
        return;
    if (f->pMethods->xShmMap(f, 0, 32768, 0, &p) == SQLITE_OK && p)
        c->shm = (const unsigned char *)p;
    log_debug("serve", "wal_index file=%s mapped=%d", db_file_name(c->file), c->shm != NULL);
}

/* Copies the header; false while a writer is changing it (the two copies differ). */
static bool read_hdr(const struct conn *c, unsigned char out[SHM_HDR_LEN])
{
    unsigned char second[SHM_HDR_LEN];

    if (!c->db || !c->shm)
        return false;
    /* SQLite writes the second copy, then the first; so read the first, then the second. */
    memcpy(out, c->shm, SHM_HDR_LEN);
    atomic_thread_fence(memory_order_acquire);
    memcpy(second, c->shm + SHM_HDR_LEN, SHM_HDR_LEN);
    return memcmp(out, second, SHM_HDR_LEN) == 0;
}

/* Both headers, when both files are open and steady. */
static bool read_hdrs(const struct serve_store *st, unsigned char out[2][SHM_HDR_LEN])
{
    return read_hdr(&st->speed, out[0]) && read_hdr(&st->batch, out[1]);
}

/* Opens the connection if its file exists and has its schema; false while it is absent. The
 * writer may create the file before its tables, so a failed prepare means "not yet". */
static bool conn_ready(struct serve_store *st, struct conn *c)
{
    char path[PATH_MAX];
    struct lerr e = {{0}};

    if (c->db)
        return true;
    db_path(st->data_dir, c->file, path, sizeof(path));
    if (access(path, R_OK) != 0)
        return false;
    if (db_open_ro(st->data_dir, c->file, &c->db, &e) != 0) {
        log_debug("serve", "db_unavailable file=%s err=\"%s\"", db_file_name(c->file), e.msg);
        return false;
    }
    for (int i = 0; c->sql[i]; i++) {
        if (db_prepare(c->db, c->sql[i], &c->st[i], &e) != 0) {
            log_debug("serve", "db_unavailable file=%s err=\"%s\"", db_file_name(c->file), e.msg);
            conn_close(c);
            return false;
        }
    }
    map_shm(c);
    sqlite3_progress_handler(c->db, 1000, past_deadline, st);
    log_info("serve", "db_opened file=%s", db_file_name(c->file));
    return true;
}

struct serve_store *serve_store_new(const char *data_dir)
{
    struct serve_store *st = calloc(1, sizeof(*st));

    if (!st)
        return NULL;
    st->data_dir = data_dir;
    st->speed = (struct conn){.file = DB_SPEED, .sql = speed_sql};
    st->batch = (struct conn){.file = DB_BATCH, .sql = batch_sql};
    st->master = (struct conn){.file = DB_MASTER, .sql = master_sql};
    return st;
}

void serve_store_free(struct serve_store *st)
{
    if (!st)
        return;
    conn_close(&st->speed);
    conn_close(&st->batch);
    conn_close(&st->master);
    free(st);
}

static sqlite3_stmt *bind(sqlite3_stmt *q, const char *merchant_id, int64_t from_ms, int64_t to_ms,
                          int64_t cut)
{
    sqlite3_bind_text(q, 1, merchant_id ? merchant_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, from_ms);
    sqlite3_bind_int64(q, 3, to_ms);
    sqlite3_bind_int64(q, 4, cut);
    return q;
}

static int fail(sqlite3_stmt *q, struct lerr *e)
{
    lerr_set(e, "cannot read '%.50s': %s", sqlite3_sql(q), sqlite3_errmsg(sqlite3_db_handle(q)));
    sqlite3_reset(q);
    return -1;
}

/* Steps a one-row statement and adds its two integer columns into out. */
static int add_sums(sqlite3_stmt *q, struct serve_sums *out, struct lerr *e)
{
    int rc = sqlite3_step(q);

    if (rc == SQLITE_ROW) {
        out->order_count += sqlite3_column_int64(q, 0);
        out->revenue_cents += sqlite3_column_int64(q, 1);
    } else if (rc != SQLITE_DONE) {
        return fail(q, e);
    }
    sqlite3_reset(q);
    return 0;
}

/* Steps a statement of (key, order_count, revenue_cents) rows; the key is a time when
 * is_time, else a merchant id. */
static int each_row(sqlite3_stmt *q, bool is_time, serve_row_fn fn, void *arg, struct lerr *e)
{
    int rc;

    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct serve_sums s = {sqlite3_column_int64(q, 1), sqlite3_column_int64(q, 2)};
        if (is_time)
            fn(arg, NULL, sqlite3_column_int64(q, 0), &s);
        else
            fn(arg, (const char *)sqlite3_column_text(q, 0), 0, &s);
    }
    if (rc != SQLITE_DONE)
        return fail(q, e);
    sqlite3_reset(q);
    return 0;
}

static int step_once(sqlite3_stmt *q, struct lerr *e)
{
    int rc = sqlite3_step(q);

    sqlite3_reset(q);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : fail(q, e);
}

static void read_meta(sqlite3_stmt *q, struct serve_view *v, int *rc)
{
    while ((*rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        int64_t val = sqlite3_column_int64(q, 1);
        if (!k || sqlite3_column_type(q, 1) == SQLITE_NULL)
            continue;
        if (!strcmp(k, "checkpoint_ms"))
            v->has_checkpoint = true, v->checkpoint_ms = val;
        else if (!strcmp(k, "watermark_ms"))
            v->has_watermark = true, v->watermark_ms = val;
        else if (!strcmp(k, "allowed_lateness_ms"))
            v->allowed_lateness_ms = val;
        else if (!strcmp(k, "topic_partitions"))
            v->topic_partitions = val;
    }
}

int serve_store_begin(struct serve_store *st, struct serve_view *v, struct lerr *e)
{
    struct cut_version cut;
    sqlite3_stmt *q;
    int rc;

    memset(v, 0, sizeof(*v));
    v->allowed_lateness_ms = -1;
    v->minute_from_ms = INT64_MIN;
    st->is_outside = false;
    /* Opening a connection reads only its schema; the snapshots open below. */
    conn_ready(st, &st->speed);
    conn_ready(st, &st->batch);
    st->begin_hdr_ok = read_hdrs(st, st->begin_hdr);
    /* Speed first: its first SELECT fixes the WAL snapshot before batch.db is looked at. */
    if (st->speed.db) {
        if (step_once(st->speed.st[S_BEGIN], e) != 0)
            goto fail;
        st->speed.in_txn = true;
        q = st->speed.st[S_META];
        read_meta(q, v, &rc);
        if (rc != SQLITE_DONE) {
            fail(q, e);
            goto fail;
        }
        sqlite3_reset(q);
        v->has_speed = true;
    }
    if (st->batch.db) {
        if (step_once(st->batch.st[B_BEGIN], e) != 0)
            goto fail;
        st->batch.in_txn = true;
        if (cut_step_published(st->batch.st[B_VERSION], &cut, &v->has_batch, e) != 0)
            goto fail;
        if (v->has_batch) {
            v->version = cut.id;
            v->cut_epoch = cut.epoch;
            v->started_ms = cut.started_ms;
            if (db_step_int(bind(st->batch.st[B_WINDOW], NULL, 0, 0, v->version),
                            &v->minute_from_ms, e) != 0)
                goto fail;
        }
    }
    return 0;
fail:
    serve_store_end(st);
    return -1;
}

static void conn_end(struct conn *c, int commit)
{
    if (!c->in_txn)
        return;
    if (sqlite3_step(c->st[commit]) != SQLITE_DONE)
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_reset(c->st[commit]);
    c->in_txn = false;
}

void serve_store_end(struct serve_store *st)
{
    conn_end(&st->batch, B_COMMIT);
    conn_end(&st->speed, S_COMMIT);
}

/* The speed rows that belong to the answer: epoch >= the served version's cut. */
static int64_t speed_cut(const struct serve_view *v)
{
    return v->has_batch ? v->cut_epoch : 0;
}

int serve_store_totals(struct serve_store *st, const struct serve_view *v, const char *merchant_id,
                       struct serve_sums *batch, struct serve_sums *speed, struct lerr *e)
{
    *batch = *speed = (struct serve_sums){0, 0};
    if (v->has_batch &&
        add_sums(bind(st->batch.st[B_TOTAL], merchant_id, 0, 0, v->version), batch, e) != 0)
        return -1;
    if (v->has_speed &&
        add_sums(bind(st->speed.st[S_SUM], merchant_id, 0, 0, speed_cut(v)), speed, e) != 0)
        return -1;
    return 0;
}

/* The batch keeps minute rows for recent hours only and hour rows for all history, so a range
 * is read as its partial first hour (minutes), its whole hours, and its partial last hour. */
struct split {
    int64_t m1_from, m1_to, h_from, h_to, m2_from, m2_to;
};

static struct split split_hours(int64_t from_ms, int64_t to_ms)
{
    int64_t h1 = tm_floor(from_ms + TM_HOUR_MS - 1, TM_HOUR_MS), h2 = tm_floor(to_ms, TM_HOUR_MS);

    if (h1 >= h2)
        return (struct split){from_ms, to_ms, 0, 0, 0, 0};
    return (struct split){from_ms, h1, h1, h2, h2, to_ms};
}

/* Minute rows of [from_ms, to_ms) must lie in the version's minute window: before it the
 * batch holds hours only, and a sum over missing minutes would be a wrong answer marked final. */
static int minutes_held(struct serve_store *st, const struct serve_view *v, int64_t from_ms,
                        int64_t to_ms, struct lerr *e)
{
    char start[TM_RFC3339_LEN], asked[TM_RFC3339_LEN];

    if (!v->has_batch || from_ms >= to_ms || from_ms >= v->minute_from_ms)
        return 0;
    st->is_outside = true;
    tm_format_rfc3339(v->minute_from_ms, start);
    tm_format_rfc3339(from_ms, asked);
    return lerr_set(e,
                    "minutes from %s are not held: batch version %" PRId64 " keeps minute rows"
                    " from %s on and hour rows for all history (align from and to to whole"
                    " hours before %s, or use step=1h)",
                    asked, v->version, start, start);
}

int serve_store_status(const struct serve_store *st)
{
    return st->is_outside ? 400 : 500;
}

int serve_store_range(struct serve_store *st, const struct serve_view *v, const char *merchant_id,
                      int64_t from_ms, int64_t to_ms, struct serve_sums *batch,
                      struct serve_sums *speed, struct lerr *e)
{
    struct split s = split_hours(from_ms, to_ms);
    sqlite3_stmt *const *b = st->batch.st;

    *batch = *speed = (struct serve_sums){0, 0};
    if (minutes_held(st, v, s.m1_from, s.m1_to, e) || minutes_held(st, v, s.m2_from, s.m2_to, e))
        return -1;
    if (v->has_batch &&
        (add_sums(bind(b[B_MIN_SUM], merchant_id, s.m1_from, s.m1_to, v->version), batch, e) ||
         add_sums(bind(b[B_HOUR_SUM], merchant_id, s.h_from, s.h_to, v->version), batch, e) ||
         add_sums(bind(b[B_MIN_SUM], merchant_id, s.m2_from, s.m2_to, v->version), batch, e)))
        return -1;
    if (v->has_speed &&
        add_sums(bind(st->speed.st[S_RANGE], merchant_id, from_ms, to_ms, speed_cut(v)), speed,
                 e) != 0)
        return -1;
    return 0;
}

int serve_store_rows(struct serve_store *st, const struct serve_view *v, const char *merchant_id,
                     int64_t from_ms, int64_t to_ms, bool hourly, serve_row_fn fn, void *arg,
                     struct lerr *e)
{
    sqlite3_stmt *q;

    if (!hourly && minutes_held(st, v, from_ms, to_ms, e) != 0)
        return -1;
    if (v->has_batch) {
        q = st->batch.st[hourly ? B_HOUR_ROWS : B_MIN_ROWS];
        if (each_row(bind(q, merchant_id, from_ms, to_ms, v->version), true, fn, arg, e) != 0)
            return -1;
    }
    if (v->has_speed) {
        q = st->speed.st[S_ROWS];
        if (each_row(bind(q, merchant_id, from_ms, to_ms, speed_cut(v)), true, fn, arg, e) != 0)
            return -1;
    }
    return 0;
}

int serve_store_merchants(struct serve_store *st, const struct serve_view *v, int64_t from_ms,
                          int64_t to_ms, serve_row_fn fn, void *arg, struct lerr *e)
{
    struct split s = split_hours(from_ms, to_ms);
    sqlite3_stmt *const *b = st->batch.st;

    if (minutes_held(st, v, s.m1_from, s.m1_to, e) || minutes_held(st, v, s.m2_from, s.m2_to, e))
        return -1;
    if (v->has_batch &&
        (each_row(bind(b[B_MIN_TOP], NULL, s.m1_from, s.m1_to, v->version), false, fn, arg, e) ||
         each_row(bind(b[B_HOUR_TOP], NULL, s.h_from, s.h_to, v->version), false, fn, arg, e) ||
         each_row(bind(b[B_MIN_TOP], NULL, s.m2_from, s.m2_to, v->version), false, fn, arg, e)))
        return -1;
    if (v->has_speed && each_row(bind(st->speed.st[S_TOP], NULL, from_ms, to_ms, speed_cut(v)),
                                 false, fn, arg, e) != 0)
        return -1;
    return 0;
}

int serve_store_newest_minute(struct serve_store *st, const struct serve_view *v, bool *found,
                              int64_t *minute_ms, struct lerr *e)
{
    int64_t b = INT64_MIN, s = INT64_MIN;

    if (v->has_batch &&
        db_step_int(bind(st->batch.st[B_NEWEST], NULL, 0, 0, v->version), &b, e) != 0)
        return -1;
    if (v->has_speed &&
        db_step_int(bind(st->speed.st[S_NEWEST], NULL, 0, 0, speed_cut(v)), &s, e) != 0)
        return -1;
    *found = b != INT64_MIN || s != INT64_MIN;
    *minute_ms = b > s ? b : s;
    return 0;
}

int serve_store_lag(struct serve_store *st, serve_row_fn fn, void *arg, struct lerr *e)
{
    sqlite3_stmt *q;
    int rc;

    if (!conn_ready(st, &st->speed))
        return 0;
    q = st->speed.st[S_LAG];
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct serve_sums s = {sqlite3_column_int64(q, 1), 0};
        fn(arg, NULL, sqlite3_column_int64(q, 0), &s);
    }
    if (rc != SQLITE_DONE)
        return fail(q, e);
    sqlite3_reset(q);
    return 0;
}

static int each_counter(sqlite3_stmt *q, const char *layer, const char *prefix, serve_counter_fn fn,
                        void *arg, struct lerr *e)
{
    char name[128];
    int rc;

    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        snprintf(name, sizeof(name), "%s%s", prefix, k ? k : "");
        fn(arg, layer, name, sqlite3_column_int64(q, 1));
    }
    if (rc != SQLITE_DONE)
        return fail(q, e);
    sqlite3_reset(q);
    return 0;
}

int serve_store_counters(struct serve_store *st, serve_counter_fn fn, void *arg, struct lerr *e)
{
    if (conn_ready(st, &st->speed) &&
        each_counter(st->speed.st[S_COUNTERS], "speed", "", fn, arg, e) != 0)
        return -1;
    if (conn_ready(st, &st->master) &&
        each_counter(st->master.st[M_COUNTERS], "batch", "", fn, arg, e) != 0)
        return -1;
    return 0;
}

static struct cache_entry *cache_slot(struct serve_store *st, const char *merchant_id)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const char *p = merchant_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &st->cache[h % CACHE_SLOTS];
}

bool serve_store_cached_totals(struct serve_store *st, const char *merchant_id,
                               struct serve_view *v, struct serve_sums *batch,
                               struct serve_sums *speed)
{
    unsigned char now[2][SHM_HDR_LEN];
    struct cache_entry *en;

    if (!st->cache_ok || !read_hdrs(st, now) || memcmp(now, st->cache_hdr, sizeof(now)) != 0)
        return false;
    en = cache_slot(st, merchant_id);
    if (strcmp(en->merchant_id, merchant_id) != 0)
        return false;
    *v = st->cache_view;
    *batch = en->batch;
    *speed = en->speed;
    return true;
}

void serve_store_cache_totals(struct serve_store *st, const struct serve_view *v,
                              const char *merchant_id, const struct serve_sums *batch,
                              const struct serve_sums *speed)
{
    struct cache_entry *en;

    if (!st->begin_hdr_ok || strlen(merchant_id) > EV_ID_MAX)
        return;
    if (!st->cache_ok || memcmp(st->begin_hdr, st->cache_hdr, sizeof(st->cache_hdr)) != 0) {
        for (size_t i = 0; i < CACHE_SLOTS; i++)
            st->cache[i].merchant_id[0] = '\0';
        memcpy(st->cache_hdr, st->begin_hdr, sizeof(st->cache_hdr));
        st->cache_view = *v;
        st->cache_ok = true;
    }
    en = cache_slot(st, merchant_id);
    strcpy(en->merchant_id, merchant_id);
    en->batch = *batch;
    en->speed = *speed;
}
