/* store.c - lambda-serve's reads of the data directory, in the read order of DESIGN.md section 3
 * (see store.h). */
#include "store.h"

#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cut.h"
#include "db.h"
#include "ev.h"
#include "lock.h"
#include "log.h"
#include "tm.h"

/* Every statement binds the same numbered parameters, so one binder serves them all:
 * ?1 merchant id, ?2 from_ms, ?3 to_ms, ?4 the cut (speed: epoch >= ?4; batch: version = ?4).
 * A statement that does not use a parameter simply ignores its binding. */
enum {
    S_BEGIN,
    S_COMMIT,
    S_META,
    S_SUM,
    S_RANGE,
    S_ROWS,
    S_TOP,
    S_NEWEST,
    S_LAG,
    S_COUNTERS,
    S_SEQ,
    S_LAG_SUM,
    S_ALL,
    S_SINCE
};
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
    /* Lag is Kafka's: partition -1, the import log, is read to its end at every checkpoint. */
    "SELECT partition, max(coalesce(high_watermark, next_offset) - next_offset, 0) FROM offsets"
    " WHERE partition >= 0 ORDER BY partition",
    "SELECT name, value FROM counters ORDER BY name",
    "SELECT coalesce(max(seq),0) FROM deltas",
    "SELECT coalesce(sum(max(coalesce(high_watermark, next_offset) - next_offset, 0)),0)"
    " FROM offsets WHERE partition >= 0",
    "SELECT merchant_id, sum(order_count), sum(revenue_cents) FROM deltas WHERE epoch>=?4"
    " GROUP BY merchant_id",
    /* The merchants a checkpoint after ?2 changed, summed again whole (the feed says which
     * rows changed, not by how much). */
    "SELECT merchant_id, sum(order_count), sum(revenue_cents) FROM deltas WHERE epoch>=?4"
    " AND merchant_id IN (SELECT merchant_id FROM deltas WHERE seq>?2) GROUP BY merchant_id",
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
    B_WINDOW,
    B_ALL,
    B_ANY
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
    "SELECT merchant_id, order_count, revenue_cents FROM merchant_totals WHERE 1" VISIBLE,
    "SELECT count(*) FROM versions",
    NULL,
};

/* master.db's counters include rejects_<reason>, kept by a trigger (shared/db.c): a scrape
 * reads them, never counts the rejects table, which retention shrinks. */
enum { M_COUNTERS, M_PUBLISHED };
static const char *const master_sql[] = {
    "SELECT name, value FROM counters ORDER BY name",
    "SELECT coalesce((SELECT value FROM counters WHERE name = 'versions_published'), 0)",
    NULL,
};

#define CONN_MAX_STMTS 16

/* How often a store asks the kernel whether a speed layer holds speed.lock. */
#define PROBE_EVERY_MS 100

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
    dev_t dev;                /* the file the connection has open: a path that names */
    ino_t ino;                /* another one was replaced under it */
    bool is_present;          /* a file was at the path at the last conn_sync() */
    const char *last_why;     /* the last reason logged, so that a bad file is said once */
};

/* What conn_sync() found at a file's path. */
enum file_state {
    FILE_OPEN,   /* open, with its schema */
    FILE_ABSENT, /* no file, or one without its schema yet (a writer is creating it) */
    FILE_BAD     /* there, but not a database we can read */
};

struct serve_store {
    const char *data_dir; /* borrowed */
    struct conn speed, batch, master;
    /* The headers read just before the current snapshot opened, for serve_store_unchanged();
     * is_open: the file was open then. A snapshot is never older than the headers read
     * before it. */
    unsigned char begin_hdr[2][SHM_HDR_LEN];
    bool begin_hdr_ok[2], begin_open[2];
    int64_t probe_ms; /* when speed.lock was last probed */
    bool is_speed_running;
    atomic_bool *speed_seen; /* shared by the server's stores: speed.db was open once */
    int64_t deadline_ms;     /* tm_mono_ms() past which reads are interrupted; 0: never */
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

/* A header as one number (FNV-1a), 0 when it cannot be read. */
static uint64_t hdr_stamp(bool ok, const unsigned char hdr[SHM_HDR_LEN])
{
    uint64_t h = 1469598103934665603ull;

    if (!ok)
        return 0;
    for (int i = 0; i < SHM_HDR_LEN; i++)
        h = (h ^ hdr[i]) * 1099511628211ull;
    return h ? h : 1;
}

const char *serve_store_reason(int code)
{
    switch (code & 0xff) {
    case SQLITE_NOTADB:
        return "not a database";
    case SQLITE_CORRUPT:
        return "corrupt";
    case SQLITE_CANTOPEN:
        return "cannot be opened";
    case SQLITE_PERM:
    case SQLITE_AUTH:
    case SQLITE_READONLY:
        return "not readable";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return "busy";
    case SQLITE_NOMEM:
        return "out of memory";
    case SQLITE_INTERRUPT:
        return "interrupted";
    default:
        return "read error";
    }
}

/* Whether SQLite's last error on db means the file itself is bad: the connection is closed
 * and opened again from the path at the next snapshot. */
static bool is_file_error(sqlite3 *db)
{
    int code = sqlite3_errcode(db) & 0xff;

    return code == SQLITE_NOTADB || code == SQLITE_CORRUPT || code == SQLITE_IOERR ||
           code == SQLITE_CANTOPEN || code == SQLITE_PERM;
}

/* Whether the open connection's main file starts with SQLite's header string, read through
 * SQLite's own descriptor: opening the file a second time and closing it would drop every
 * fcntl lock this process holds on it (the other connections' too), and the next writer to
 * close would take itself for the last user and reset the log under them. */
static bool has_header(sqlite3 *db)
{
    static const char magic[16] = "SQLite format 3";
    sqlite3_file *f = NULL;
    char head[16];

    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
        !f->pMethods)
        return true; /* cannot tell: SQLite will say */
    return f->pMethods->xRead(f, head, sizeof(head), 0) == SQLITE_OK &&
           !memcmp(head, magic, sizeof(head));
}

/* Opens c on the file sb describes. FILE_ABSENT while the writer has not made its schema
 * yet (a failed prepare that is not a bad file), FILE_BAD with *why when it is not a database
 * we can read. */
static enum file_state conn_open(struct serve_store *st, struct conn *c, const char *path,
                                 const struct stat *sb, const char **why)
{
    struct lerr e = {{0}};
    struct stat after;
    int code;

    if (access(path, R_OK) != 0) {
        *why = "not readable";
        return FILE_BAD;
    }
    if (sb->st_size == 0) {
        *why = "empty";
        return FILE_ABSENT;
    }
    if (db_open_ro(st->data_dir, c->file, &c->db, &e) != 0) {
        log_warn("serve", "db_unreadable file=%s err=\"%s\"", db_file_name(c->file), e.msg);
        *why = "cannot be opened";
        return FILE_BAD;
    }
    /* A file that is not a database could still be read through the -wal left beside it by
     * the file it replaced (SQLite reads page 1 from the log when the log has it), so its
     * header is checked first. A main file is empty until its first checkpoint, which writes
     * page 1 and so the header. */
    if (!has_header(c->db)) {
        conn_close(c);
        *why = "not a database";
        if (c->last_why != *why)
            log_warn("serve", "db_unreadable file=%s err=\"no SQLite header\"",
                     db_file_name(c->file));
        c->last_why = *why;
        return FILE_BAD;
    }
    for (int i = 0; c->sql[i]; i++) {
        if (db_prepare(c->db, c->sql[i], &c->st[i], &e) == 0)
            continue;
        code = sqlite3_errcode(c->db);
        conn_close(c);
        if ((code & 0xff) == SQLITE_ERROR) { /* no such table: not made yet */
            log_debug("serve", "db_unavailable file=%s err=\"%s\"", db_file_name(c->file), e.msg);
            *why = "no tables";
            return FILE_ABSENT;
        }
        *why = serve_store_reason(code);
        if (c->last_why != *why)
            log_warn("serve", "db_unreadable file=%s err=\"%s\"", db_file_name(c->file), e.msg);
        c->last_why = *why;
        return FILE_BAD;
    }
    if (stat(path, &after) != 0 || after.st_dev != sb->st_dev || after.st_ino != sb->st_ino) {
        conn_close(c); /* replaced while we opened it: the next snapshot opens the new one */
        *why = "missing";
        return FILE_ABSENT;
    }
    c->dev = sb->st_dev;
    c->ino = sb->st_ino;
    map_shm(c);
    sqlite3_progress_handler(c->db, 1000, past_deadline, st);
    log_info("serve", "db_opened file=%s", db_file_name(c->file));
    c->last_why = NULL;
    return FILE_OPEN;
}

/* Brings c in line with its path: a file moved away or replaced under the open connection
 * (another device or inode at the path) closes it, and a file at the path is opened. Costs
 * one stat() while the file stays. *why says, in our words, why it is not FILE_OPEN. */
static enum file_state conn_sync(struct serve_store *st, struct conn *c, const char **why)
{
    char path[PATH_MAX];
    struct stat sb;

    db_path(st->data_dir, c->file, path, sizeof(path));
    c->is_present = stat(path, &sb) == 0;
    if (!c->is_present) {
        if (c->db) {
            log_warn("serve", "db_gone file=%s", db_file_name(c->file));
            conn_close(c);
        }
        *why = "missing";
        return FILE_ABSENT;
    }
    if (c->db && (sb.st_dev != c->dev || sb.st_ino != c->ino)) {
        log_warn("serve", "db_replaced file=%s", db_file_name(c->file));
        conn_close(c);
    }
    if (c->db)
        return FILE_OPEN;
    return conn_open(st, c, path, &sb, why);
}

/* For the reads outside a snapshot (lag, counters): the connection when its file is open. */
static bool conn_ready(struct serve_store *st, struct conn *c)
{
    const char *why = NULL;

    return conn_sync(st, c, &why) == FILE_OPEN;
}

struct serve_store *serve_store_new(const char *data_dir, atomic_bool *speed_seen)
{
    struct serve_store *st = calloc(1, sizeof(*st));

    if (!st)
        return NULL;
    st->data_dir = data_dir;
    st->speed_seen = speed_seen;
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

/* A failed read: SQLite's text to the log, our words in e ("batch.db unreadable: corrupt"),
 * which a client may see. */
static int fail(sqlite3_stmt *q, struct lerr *e)
{
    sqlite3 *db = sqlite3_db_handle(q);
    const char *path = sqlite3_db_filename(db, "main"), *slash = path ? strrchr(path, '/') : NULL;
    const char *name = slash ? slash + 1 : path && *path ? path : "database";

    log_warn("serve", "read_failed file=%s sql=\"%.50s\" err=\"%s\"", name, sqlite3_sql(q),
             sqlite3_errmsg(db));
    lerr_set(e, "%s unreadable: %s", name, serve_store_reason(sqlite3_extended_errcode(db)));
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
        else if (!strcmp(k, "published_cut"))
            v->published_cut = val;
        else if (!strcmp(k, "topic_partitions"))
            v->topic_partitions = val;
    }
}

/* Rewords an error a shared/ reader set with SQLite's text: that goes to the log. */
static int reword(const struct conn *c, struct lerr *e)
{
    log_warn("serve", "read_failed file=%s err=\"%s\"", db_file_name(c->file), e->msg);
    return lerr_set(e, "%s unreadable: %s", db_file_name(c->file),
                    serve_store_reason(c->db ? sqlite3_errcode(c->db) : SQLITE_ERROR));
}

/* Steps a one-integer statement into *out (kept when there is no row or it is NULL). */
static int step_int(sqlite3_stmt *q, int64_t *out, struct lerr *e)
{
    int rc = sqlite3_step(q);

    if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL)
        *out = sqlite3_column_int64(q, 0);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fail(q, e);
    sqlite3_reset(q);
    return 0;
}

/* Whether a speed layer holds speed.lock, asked of the kernel at most every PROBE_EVERY_MS. */
static bool speed_running(struct serve_store *st)
{
    int64_t now_ms = tm_now_ms();
    struct lerr e = {{0}};
    int held;

    if (st->probe_ms && now_ms - st->probe_ms < PROBE_EVERY_MS && now_ms >= st->probe_ms)
        return st->is_speed_running;
    if ((held = lock_held(st->data_dir, "speed.lock", &e)) < 0) {
        log_warn("serve", "lock_probe_failed err=\"%s\"", e.msg);
        held = 0;
    }
    st->probe_ms = now_ms;
    st->is_speed_running = held == 1;
    return st->is_speed_running;
}

/* Whether the data directory shows that a published batch version must exist (DESIGN.md
 * section 5): the speed layer recorded one (it expires against published cuts), or master.db
 * counts a publish (versions_published, written by lambda-batch after each) while batch.db is
 * missing or holds no version at all. Orders ingested by a first run that has not published
 * yet are not such a sign: the speed layer still holds all of them. */
static bool master_published(struct serve_store *st)
{
    struct lerr e = {{0}};
    int64_t published = 0;

    if (!conn_ready(st, &st->master))
        return false;
    if (step_int(st->master.st[M_PUBLISHED], &published, &e) != 0)
        return false;
    return published > 0;
}

static bool batch_required(const struct serve_view *v, bool has_versions, bool was_published)
{
    if (v->published_cut > 0)
        return true;
    return !has_versions && was_published;
}

static int begin_speed(struct serve_store *st, struct serve_view *v, struct lerr *e)
{
    sqlite3_stmt *q = st->speed.st[S_META];
    int64_t lag = 0;
    int rc;

    if (step_once(st->speed.st[S_BEGIN], e) != 0)
        return -1;
    st->speed.in_txn = true;
    read_meta(q, v, &rc);
    if (rc != SQLITE_DONE)
        return fail(q, e);
    sqlite3_reset(q);
    if (step_int(st->speed.st[S_SEQ], &v->seq, e) != 0 ||
        step_int(st->speed.st[S_LAG_SUM], &lag, e) != 0)
        return -1;
    v->has_speed = true;
    v->speed_file = (uint64_t)st->speed.dev << 40 ^ (uint64_t)st->speed.ino;
    if (v->is_speed_running) {
        v->has_lag = true;
        v->lag = lag;
    }
    return 0;
}

static int begin_batch(struct serve_store *st, struct serve_view *v, bool *has_versions,
                       struct lerr *e)
{
    struct cut_version cut;
    int64_t n = 0;

    if (step_once(st->batch.st[B_BEGIN], e) != 0)
        return -1;
    st->batch.in_txn = true;
    if (cut_step_published(st->batch.st[B_VERSION], &cut, &v->has_batch, e) != 0)
        return reword(&st->batch, e);
    if (v->has_batch) {
        v->version = cut.id;
        v->cut_epoch = cut.epoch;
        v->started_ms = cut.started_ms;
        *has_versions = true;
        return step_int(bind(st->batch.st[B_WINDOW], NULL, 0, 0, v->version), &v->minute_from_ms,
                        e);
    }
    if (step_int(st->batch.st[B_ANY], &n, e) != 0)
        return -1;
    *has_versions = n > 0;
    return 0;
}

int serve_store_begin(struct serve_store *st, struct serve_view *v, struct lerr *e)
{
    const char *speed_why = NULL, *batch_why = NULL;
    enum file_state sf, bf;
    bool has_versions = false, was_published;

    memset(v, 0, sizeof(*v));
    v->allowed_lateness_ms = -1;
    v->minute_from_ms = INT64_MIN;
    st->is_outside = false;
    /* Opening a connection reads only its schema; the snapshots open below. */
    sf = conn_sync(st, &st->speed, &speed_why);
    bf = conn_sync(st, &st->batch, &batch_why);
    v->is_speed_running = speed_running(st);
    st->begin_open[0] = st->speed.db != NULL;
    st->begin_open[1] = st->batch.db != NULL;
    st->begin_hdr_ok[0] = read_hdr(&st->speed, st->begin_hdr[0]);
    st->begin_hdr_ok[1] = read_hdr(&st->batch, st->begin_hdr[1]);
    v->speed_stamp = hdr_stamp(st->begin_hdr_ok[0], st->begin_hdr[0]);
    v->batch_stamp = hdr_stamp(st->begin_hdr_ok[1], st->begin_hdr[1]);
    if (sf == FILE_OPEN && st->speed_seen)
        atomic_store(st->speed_seen, true);
    /* A speed.db that went away loses every order since the cut: it must come back (a
     * restored savepoint, a speed layer rebuilding from the cut), not be answered without. */
    if (sf == FILE_BAD || (sf == FILE_ABSENT && !strcmp(speed_why, "missing") && st->speed_seen &&
                           atomic_load(st->speed_seen))) {
        lerr_set(e, "speed.db unreadable: %s", speed_why);
        goto fail;
    }
    /* Speed first: its first SELECT fixes the WAL snapshot before batch.db is looked at. */
    if (st->speed.db && begin_speed(st, v, e) != 0)
        goto fail;
    if (bf == FILE_BAD) {
        lerr_set(e, "batch.db unreadable: %s", batch_why);
        goto fail;
    }
    /* master.db's count of publishes is read before batch.db's snapshot opens, as speed.db
     * is: a publish it counts was committed before, so the snapshot holds that version. */
    was_published = master_published(st);
    /* batch.db was looked for before master.db was read: a first run may have made it and
     * published since, so a publish counted with no batch.db open looks again. */
    if (was_published && bf == FILE_ABSENT) {
        bf = conn_sync(st, &st->batch, &batch_why);
        if (bf == FILE_BAD) {
            lerr_set(e, "batch.db unreadable: %s", batch_why);
            goto fail;
        }
        st->begin_open[1] = st->batch.db != NULL;
        st->begin_hdr_ok[1] = read_hdr(&st->batch, st->begin_hdr[1]);
        v->batch_stamp = hdr_stamp(st->begin_hdr_ok[1], st->begin_hdr[1]);
    }
    if (st->batch.db && begin_batch(st, v, &has_versions, e) != 0)
        goto fail;
    if (!v->has_batch && batch_required(v, has_versions, was_published)) {
        lerr_set(e, "batch.db unreadable: %s",
                 bf == FILE_ABSENT && !strcmp(batch_why, "missing") ? "missing"
                                                                    : "no published version");
        goto fail;
    }
    return 0;
fail:
    serve_store_end(st);
    return -1;
}

/* Ends a snapshot's transaction; a connection whose file turned out bad is closed, to be
 * opened again from its path. */
static void conn_end(struct conn *c, int commit)
{
    if (c->db && is_file_error(c->db)) {
        log_warn("serve", "db_closed file=%s why=\"%s\"", db_file_name(c->file),
                 serve_store_reason(sqlite3_errcode(c->db)));
        conn_close(c);
        return;
    }
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

bool serve_store_unchanged(struct serve_store *st)
{
    unsigned char now[SHM_HDR_LEN];
    const struct conn *c[2] = {&st->speed, &st->batch};

    for (int i = 0; i < 2; i++) {
        if ((c[i]->db != NULL) != st->begin_open[i])
            return false;
        if (!c[i]->db) { /* absent then and now, unless a file appeared at the path */
            char path[PATH_MAX];
            db_path(st->data_dir, c[i]->file, path, sizeof(path));
            if ((access(path, F_OK) == 0) != c[i]->is_present)
                return false;
            continue;
        }
        if (!st->begin_hdr_ok[i])
            return false;
        if (!read_hdr(c[i], now) || memcmp(now, st->begin_hdr[i], SHM_HDR_LEN) != 0)
            return false;
    }
    return true;
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
    return st->is_outside ? 400 : 503;
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

    if (v->has_batch && step_int(bind(st->batch.st[B_NEWEST], NULL, 0, 0, v->version), &b, e) != 0)
        return -1;
    if (v->has_speed &&
        step_int(bind(st->speed.st[S_NEWEST], NULL, 0, 0, speed_cut(v)), &s, e) != 0)
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

int serve_store_speed_counters(struct serve_store *st, const struct serve_view *v,
                               serve_counter_fn fn, void *arg, struct lerr *e)
{
    if (!v->has_speed)
        return 0;
    return each_counter(st->speed.st[S_COUNTERS], "speed", "", fn, arg, e);
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

int serve_store_batch_all(struct serve_store *st, const struct serve_view *v, serve_row_fn fn,
                          void *arg, struct lerr *e)
{
    if (!v->has_batch)
        return 0;
    return each_row(bind(st->batch.st[B_ALL], NULL, 0, 0, v->version), false, fn, arg, e);
}

int serve_store_speed_since(struct serve_store *st, const struct serve_view *v, int64_t since_seq,
                            serve_row_fn fn, void *arg, struct lerr *e)
{
    sqlite3_stmt *q = since_seq < 0 ? st->speed.st[S_ALL] : st->speed.st[S_SINCE];

    if (!v->has_speed)
        return 0;
    return each_row(bind(q, NULL, since_seq, 0, speed_cut(v)), false, fn, arg, e);
}
