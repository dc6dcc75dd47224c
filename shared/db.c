/* db.c - opening the data directory's SQLite files, their schemas and migrations, and small
 * statement helpers (see db.h). */
#include "db.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static const char master_schema[] =
    /* The master dataset's orders (DESIGN.md section 4) are the view `orders` over two levels
     * (db.h): orders_base, the big one, and orders_recent, what was taken in since the last
     * full run. The code reads and writes the tables; the view is the contract's name for
     * people and other tools. A file from before has the table `orders` (the big level),
     * which migrate_master() renames before this runs. */
    "CREATE TABLE IF NOT EXISTS orders_base(merchant_id TEXT NOT NULL, order_id TEXT NOT NULL,"
    " amount_cents INTEGER NOT NULL, event_time_ms INTEGER NOT NULL, partition INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, raw BLOB, PRIMARY KEY(merchant_id, order_id)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS orders_recent(merchant_id TEXT NOT NULL, order_id TEXT NOT NULL,"
    " amount_cents INTEGER NOT NULL, event_time_ms INTEGER NOT NULL, partition INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, raw BLOB, PRIMARY KEY(merchant_id, order_id)) WITHOUT ROWID;"
    "CREATE VIEW IF NOT EXISTS orders AS SELECT merchant_id, order_id, amount_cents,"
    " event_time_ms, partition, offset, raw FROM orders_base UNION ALL SELECT merchant_id,"
    " order_id, amount_cents, event_time_ms, partition, offset, raw FROM orders_recent;"
    "CREATE TABLE IF NOT EXISTS ingest_offsets(partition INTEGER PRIMARY KEY,"
    " next_offset INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS rejects(id INTEGER PRIMARY KEY, source TEXT NOT NULL,"
    " partition INTEGER, offset INTEGER, line INTEGER, reason TEXT NOT NULL, payload BLOB,"
    " at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS imports(file_hash TEXT PRIMARY KEY, path TEXT NOT NULL,"
    " lines INTEGER, orders INTEGER, rejects INTEGER, at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ingests(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " source TEXT NOT NULL, orders INTEGER NOT NULL, at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ingest_sums(seq INTEGER NOT NULL, merchant_id TEXT NOT NULL,"
    " minute_ms INTEGER NOT NULL, order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " PRIMARY KEY(seq, merchant_id, minute_ms)) WITHOUT ROWID;"
    /* The import log (DESIGN.md section 2, "Imports meet the stream"): lambda-batch import
     * stages valid lines here, each at the next seq (AUTOINCREMENT: never given out twice),
     * and they are consumed like a partition numbered -1 whose offsets are seqs. state: 0
     * staged (the speed layer or the next run's cut decides), 1 put into orders and 2 skipped
     * as a duplicate by an import that ran with no speed layer. */
    "CREATE TABLE IF NOT EXISTS import_log(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " merchant_id TEXT NOT NULL, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,"
    " event_time_ms INTEGER NOT NULL, raw BLOB, file_hash TEXT NOT NULL, line INTEGER NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0);"
    /* Rejects by reason as monotonic counters, kept by the insert itself (whoever inserts),
     * so that retention can delete rows and /metrics need not count them. A file from before
     * the trigger gets its counters from the rows once, as the trigger is created. */
    "INSERT OR IGNORE INTO counters SELECT 'rejects_' || reason, count(*) FROM rejects"
    " WHERE NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type='trigger' AND"
    " name='rejects_counted') GROUP BY reason;"
    "CREATE TRIGGER IF NOT EXISTS rejects_counted AFTER INSERT ON rejects BEGIN"
    " INSERT INTO counters(name, value) VALUES('rejects_' || NEW.reason, 1)"
    " ON CONFLICT(name) DO UPDATE SET value = value + 1; END;";

/* The partial indexes hold closed rows only (valid_to < DB_OPEN), so pruning and the clean-up
 * of a killed attempt cost what changed, not what is stored; a query uses one only when it
 * repeats the index's condition word for word. */
#define OPEN_SQL DB_OPEN_SQL

static const char batch_schema[] =
    "CREATE TABLE IF NOT EXISTS versions(id INTEGER PRIMARY KEY, state TEXT NOT NULL"
    " CHECK(state IN ('pending','published','failed')), cut_epoch INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL, finished_ms INTEGER, orders INTEGER, merchants INTEGER,"
    " ingested INTEGER, rejects INTEGER, duplicates INTEGER, checks TEXT, mode TEXT,"
    " ingest_seq INTEGER, max_minute_ms INTEGER, minute_from_ms INTEGER,"
    " merchants_rewritten INTEGER, buckets_rewritten INTEGER, differences INTEGER,"
    " first_difference TEXT, phases TEXT);"
    "CREATE TABLE IF NOT EXISTS cut_offsets(version INTEGER NOT NULL, partition INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, PRIMARY KEY(version, partition)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);"
    "CREATE TABLE IF NOT EXISTS merchant_totals(merchant_id TEXT NOT NULL,"
    " valid_from INTEGER NOT NULL, valid_to INTEGER NOT NULL DEFAULT " OPEN_SQL ","
    " order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " PRIMARY KEY(merchant_id, valid_from)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS hourly(merchant_id TEXT NOT NULL, hour_ms INTEGER NOT NULL,"
    " valid_from INTEGER NOT NULL, valid_to INTEGER NOT NULL DEFAULT " OPEN_SQL ","
    " order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " PRIMARY KEY(merchant_id, hour_ms, valid_from)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS minutely(merchant_id TEXT NOT NULL, minute_ms INTEGER NOT NULL,"
    " valid_from INTEGER NOT NULL, valid_to INTEGER NOT NULL DEFAULT " OPEN_SQL ","
    " order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " PRIMARY KEY(merchant_id, minute_ms, valid_from)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS minutely_by_minute ON minutely(minute_ms, valid_to);"
    "CREATE INDEX IF NOT EXISTS merchant_totals_from ON merchant_totals(valid_from);"
    "CREATE INDEX IF NOT EXISTS hourly_from ON hourly(valid_from);"
    "CREATE INDEX IF NOT EXISTS minutely_from ON minutely(valid_from);"
    "CREATE INDEX IF NOT EXISTS merchant_totals_closed ON merchant_totals(valid_to)"
    " WHERE valid_to < " OPEN_SQL ";"
    "CREATE INDEX IF NOT EXISTS hourly_closed ON hourly(valid_to) WHERE valid_to < " OPEN_SQL ";"
    "CREATE INDEX IF NOT EXISTS minutely_closed ON minutely(valid_to)"
    " WHERE valid_to < " OPEN_SQL ";"
    "CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, started_ms INTEGER NOT NULL,"
    " finished_ms INTEGER NOT NULL, ok INTEGER NOT NULL, version INTEGER, failed_check TEXT,"
    " error TEXT);"
    "CREATE TABLE IF NOT EXISTS run_counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);";

static const char speed_schema[] =
    "CREATE TABLE IF NOT EXISTS deltas(merchant_id TEXT NOT NULL, minute_ms INTEGER NOT NULL,"
    " epoch INTEGER NOT NULL, order_count INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,"
    " seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(merchant_id, minute_ms, epoch)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS deltas_by_minute ON deltas(minute_ms);"
    "CREATE INDEX IF NOT EXISTS deltas_by_seq ON deltas(seq);"
    "CREATE TABLE IF NOT EXISTS offsets(partition INTEGER PRIMARY KEY,"
    " next_offset INTEGER NOT NULL, max_event_ms INTEGER, high_watermark INTEGER,"
    " updated_ms INTEGER);"
    "CREATE TABLE IF NOT EXISTS boundaries(epoch INTEGER NOT NULL, partition INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, PRIMARY KEY(epoch, partition)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS seen(seq INTEGER PRIMARY KEY, merchant_id TEXT NOT NULL,"
    " order_id TEXT NOT NULL, epoch INTEGER NOT NULL, partition INTEGER NOT NULL,"
    " offset INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS seen_gens(gen INTEGER PRIMARY KEY, lo INTEGER NOT NULL,"
    " hi INTEGER NOT NULL, level INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS rejects(id INTEGER PRIMARY KEY, partition INTEGER,"
    " offset INTEGER, reason TEXT NOT NULL, payload BLOB, at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS late(id INTEGER PRIMARY KEY, partition INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, merchant_id TEXT NOT NULL, order_id TEXT NOT NULL,"
    " event_ms INTEGER NOT NULL, minute_ms INTEGER NOT NULL, watermark_ms INTEGER NOT NULL,"
    " late_ms INTEGER NOT NULL, at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);"
    /* Import lines (partition -1, offset = master.db's import_log seq) this layer judged
     * duplicates, with the epoch it applied them in: the batch run that moves them into the
     * master dataset skips them, so both layers agree on the winner. Expired with the epoch. */
    "CREATE TABLE IF NOT EXISTS import_dups(seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL);";

/* Every file: what the data directory is pinned to (shared/pin.h). */
static const char pins_schema[] =
    "CREATE TABLE IF NOT EXISTS pins(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

static const char *const names[] = {"master.db", "batch.db", "speed.db"};
static const char *const schemas[] = {master_schema, batch_schema, speed_schema};

const char *db_file_name(enum db_file f)
{
    return names[f];
}

void db_path(const char *data_dir, enum db_file f, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", data_dir, names[f]);
}

int db_exec(sqlite3 *db, const char *sql, struct lerr *e)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        lerr_set(e, "cannot run '%.60s': %s", sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int db_schema(sqlite3 *db, enum db_file f, struct lerr *e)
{
    return db_exec(db, schemas[f], e);
}

int db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, struct lerr *e)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return lerr_set(e, "cannot prepare '%.60s': %s", sql, sqlite3_errmsg(db));
    return 0;
}

int db_prepare_rows(sqlite3 *db, const char *head, int cols, int rows, sqlite3_stmt **out,
                    struct lerr *e)
{
    char sql[256 + DB_ROWS_MAX * 20];
    size_t n = (size_t)snprintf(sql, sizeof(sql), "%s", head);

    assert(rows <= DB_ROWS_MAX && cols <= 8 && n < 256);
    for (int i = 0; i < rows; i++) {
        sql[n++] = i ? ',' : ' ';
        sql[n++] = '(';
        for (int c = 0; c < cols; c++) {
            if (c)
                sql[n++] = ',';
            sql[n++] = '?';
        }
        sql[n++] = ')';
    }
    sql[n] = '\0';
    return db_prepare(db, sql, out, e);
}

int db_step_int(sqlite3_stmt *st, int64_t *out, struct lerr *e)
{
    int rc = sqlite3_step(st);

    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        *out = sqlite3_column_int64(st, 0);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        lerr_set(e, "cannot run '%.60s': %s", sqlite3_sql(st),
                 sqlite3_errmsg(sqlite3_db_handle(st)));
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

int db_query_int(sqlite3 *db, const char *sql, int64_t *out, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc = db_prepare(db, sql, &st, e);

    if (rc == 0)
        rc = db_step_int(st, out, e);
    sqlite3_finalize(st);
    return rc;
}

int db_step_done(sqlite3_stmt *st, struct lerr *e)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return lerr_set(e, "cannot run '%.60s': %s", sqlite3_sql(st),
                        sqlite3_errmsg(sqlite3_db_handle(st)));
    return 0;
}

int db_ensure_dir(const char *data_dir, struct lerr *e)
{
    char path[PATH_MAX];
    size_t n = strlen(data_dir);

    if (n == 0 || n >= sizeof(path))
        return lerr_set(e, "bad data directory '%s'", data_dir);
    memcpy(path, data_dir, n + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return lerr_set(e, "cannot create data directory '%s': %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return lerr_set(e, "cannot create data directory '%s': %s", path, strerror(errno));
    return 0;
}

/* 1 when table exists without column, else 0. */
static int lacks_column(sqlite3 *db, const char *table, const char *column, int64_t *out,
                        struct lerr *e)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '%s')"
             " - (SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s')",
             table, table, column);
    *out = 0;
    return db_query_int(db, sql, out, e);
}

/* speed.db files made before seen became an append-only log (seq) are moved over once; the
 * id index of the layout after it gave way to spilled generations (seen_gens); deltas made
 * before the change feed get its column, 0 for every row (a reader that sees no sequence
 * numbers reads the whole table). */
static int migrate_speed(sqlite3 *db, struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int64_t old = 0;

    if (db_exec(db, "DROP INDEX IF EXISTS seen_by_id", e) != 0)
        return -1;
    if (lacks_column(db, "deltas", "seq", &old, e) != 0)
        return -1;
    if (old == 1 &&
        db_exec(db, "ALTER TABLE deltas ADD COLUMN seq INTEGER NOT NULL DEFAULT 0", e) != 0)
        return -1;

    if (db_prepare(db,
                   "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
                   " name = 'seen') - (SELECT count(*) FROM pragma_table_info('seen') WHERE"
                   " name = 'seq')",
                   &st, e) != 0 ||
        db_step_int(st, &old, e) != 0) {
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    if (old != 1)
        return 0;
    return db_exec(db,
                   "ALTER TABLE seen RENAME TO seen_v1;"
                   "CREATE TABLE seen(seq INTEGER PRIMARY KEY, merchant_id TEXT NOT NULL,"
                   " order_id TEXT NOT NULL, epoch INTEGER NOT NULL, partition INTEGER NOT NULL,"
                   " offset INTEGER NOT NULL);"
                   "INSERT INTO seen SELECT row_number() OVER (ORDER BY epoch, partition, offset),"
                   " merchant_id, order_id, epoch, partition, offset FROM seen_v1;"
                   "DROP TABLE seen_v1",
                   e);
}

/* master.db files from before the view: their table `orders` is the big level (with
 * orders_recent beside it, and the view orders_all over both, or alone in a file from before
 * the two levels). It becomes orders_base, and the schema then creates what is missing: the
 * recent level and the view `orders`. */
static int migrate_master(sqlite3 *db, struct lerr *e)
{
    int64_t old = 0;

    if (db_query_int(db,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
                     " name = 'orders'",
                     &old, e) != 0)
        return -1;
    if (old == 0)
        return 0;
    return db_exec(db, "DROP VIEW IF EXISTS orders_all; ALTER TABLE orders RENAME TO orders_base",
                   e);
}

/* batch.db files made when every version had a copy of every row (a "version" column) are
 * moved over once: the newest published version's rows become open rows of that version, the
 * others go (they are derived data), and versions gain their new columns. The next run is then
 * a full recompute (meta baseline=unproven): orders ingested before the upgrade have no recorded
 * sums in master.db, so only a recompute from the master dataset knows what they add. Its
 * differences are repaired without being reported as a fault of the increments. */
static int migrate_batch(sqlite3 *db, struct lerr *e)
{
    static const char *const cols[] = {
        "mode TEXT",
        "ingest_seq INTEGER",
        "max_minute_ms INTEGER",
        "minute_from_ms INTEGER",
        "merchants_rewritten INTEGER",
        "buckets_rewritten INTEGER",
        "differences INTEGER",
        "first_difference TEXT",
        "phases TEXT",
    };
    char sql[256];
    int64_t old = 0;

    if (db_query_int(db,
                     "SELECT count(*) FROM pragma_table_info('merchant_totals') WHERE"
                     " name = 'version'",
                     &old, e) != 0)
        return -1;
    if (old == 0)
        return 0;
    if (db_exec(
            db,
            "DROP INDEX IF EXISTS minutely_by_minute;"
            " ALTER TABLE merchant_totals RENAME TO merchant_totals_v1;"
            " ALTER TABLE hourly RENAME TO hourly_v1; ALTER TABLE minutely RENAME TO minutely_v1",
            e) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
        int64_t has = 0;
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM pragma_table_info('versions') WHERE name = '%.*s'",
                 (int)strcspn(cols[i], " "), cols[i]);
        if (db_query_int(db, sql, &has, e) != 0)
            return -1;
        snprintf(sql, sizeof(sql), "ALTER TABLE versions ADD COLUMN %s", cols[i]);
        if (!has && db_exec(db, sql, e) != 0)
            return -1;
    }
    if (db_exec(db, batch_schema, e) != 0 ||
        db_exec(db,
                "CREATE TEMP TABLE v1(id INTEGER); INSERT INTO v1 SELECT coalesce(max(id), 0)"
                " FROM versions WHERE state = 'published';"
                "INSERT INTO merchant_totals(merchant_id, valid_from, order_count, revenue_cents)"
                " SELECT merchant_id, version, order_count, revenue_cents FROM merchant_totals_v1"
                " WHERE version = (SELECT id FROM v1);"
                "INSERT INTO hourly(merchant_id, hour_ms, valid_from, order_count, revenue_cents)"
                " SELECT merchant_id, hour_ms, version, order_count, revenue_cents FROM hourly_v1"
                " WHERE version = (SELECT id FROM v1);"
                "INSERT INTO minutely(merchant_id, minute_ms, valid_from, order_count,"
                " revenue_cents) SELECT merchant_id, minute_ms, version, order_count,"
                " revenue_cents FROM minutely_v1 WHERE version = (SELECT id FROM v1);"
                "UPDATE versions SET mode = 'migrated', ingest_seq = 0, max_minute_ms ="
                " (SELECT max(minute_ms) FROM minutely) WHERE id = (SELECT id FROM v1);"
                "DELETE FROM cut_offsets WHERE version IN (SELECT id FROM versions WHERE"
                " state = 'published' AND id < (SELECT id FROM v1));"
                "DELETE FROM versions WHERE state = 'published' AND id < (SELECT id FROM v1);"
                "INSERT OR REPLACE INTO meta(key, value) VALUES('baseline', 'unproven');"
                "DROP TABLE v1; DROP TABLE merchant_totals_v1; DROP TABLE hourly_v1;"
                " DROP TABLE minutely_v1",
                e) != 0)
        return -1;
    return 0;
}

/* Every commit is synced before it returns (and before readers see it): each file's commits
 * are acted on by another process - the speed layer expires its state against a published
 * version, a publish counts what ingest committed, an operator stops rerunning an import that
 * returned, a batch cut is taken at a boundary speed.db recorded. With NORMAL, a power loss
 * rolled back commits already acted on (it_powerloss: an import that returned, lost at the next
 * run's first sync; a pending cut taken at a speed boundary that was not yet on disk, so the
 * restarted speed layer skipped to the cut and undercounted until the next publish). */
const char *db_sync_pragma(enum db_file f)
{
    (void)f;
    return "PRAGMA synchronous=FULL";
}

/* Bumped when a migration changes while the schema text does not. */
#define MIGRATIONS_REVISION "1"

/* The stamp a file's user_version holds once its schema is applied whole: a hash of the schema
 * text and the migrations' revision, so that any change to either makes every file out of date
 * with no number to bump by hand. Never 0, what a file no version stamped holds. */
static int64_t schema_stamp(enum db_file f)
{
    const char *const parts[] = {schemas[f], pins_schema, MIGRATIONS_REVISION};
    uint32_t h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        for (const char *c = parts[i]; *c; c++)
            h = (h ^ (unsigned char)*c) * 16777619u;
    h &= 0x7fffffff; /* user_version is a signed 32-bit integer */
    return h ? h : 1;
}

/* Applies the schema unless the file's stamp says it is whole. The check only reads, so an
 * up-to-date file's writer takes no write lock to open it; a file out of date (new, of an older
 * layout, or left half made by an older version that created it statement by statement) gets
 * its migrations, tables and stamp in one transaction, checked again under the write lock (two
 * openers at once: the second finds it done), so a reader sees none of it or all of it. The
 * busy timeout bounds the wait for another writer's transaction. */
static int apply_schema(sqlite3 *db, enum db_file f, struct lerr *e)
{
    int64_t stamp = 0, want = schema_stamp(f);
    char sql[64];

    if (db_query_int(db, "PRAGMA user_version", &stamp, e) != 0)
        return -1;
    if (stamp == want)
        return 0;
    if (db_exec(db, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %" PRId64, want);
    if (db_query_int(db, "PRAGMA user_version", &stamp, e) != 0 ||
        (stamp != want &&
         ((f == DB_MASTER && migrate_master(db, e) != 0) ||
          (f == DB_SPEED && migrate_speed(db, e) != 0) ||
          (f == DB_BATCH && migrate_batch(db, e) != 0) || db_exec(db, schemas[f], e) != 0 ||
          db_exec(db, pins_schema, e) != 0 || db_exec(db, sql, e) != 0)) ||
        db_exec(db, "COMMIT", e) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/* Applies a writer's settings and the file's schema to a connection open on it. */
static int set_up_rw(sqlite3 *db, enum db_file f, struct lerr *e)
{
    sqlite3_busy_timeout(db, 5000);
    if (db_exec(db, "PRAGMA journal_mode=WAL", e) != 0 || db_exec(db, db_sync_pragma(f), e) != 0 ||
        apply_schema(db, f, e) != 0)
        return -1;
    return 0;
}

/* Removes a file and the journals SQLite keeps beside it, through SQLite's VFS (a shim such
 * as the tests' power-loss VFS forgets what it kept of them too); a missing one is no error. */
static void remove_db_files(const char *path)
{
    static const char *const sfx[] = {"", "-journal", "-wal", "-shm"};
    sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
    char name[PATH_MAX + 16];

    for (size_t i = 0; vfs && i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", path, sfx[i]);
        vfs->xDelete(vfs, name, 0);
    }
}

/* Whether name is one of f's temporary names: <file>.new-XXXXXX (mkstemp's six characters),
 * or <file>.new-<pid> of a version before them. */
static bool is_new_name(const char *name, enum db_file f, long *old_pid)
{
    size_t n = strlen(names[f]);
    char *end;

    *old_pid = 0;
    if (strncmp(name, names[f], n) != 0 || strncmp(name + n, ".new-", 5) != 0)
        return false;
    name += n + 5;
    *old_pid = strtol(name, &end, 10);
    if (*end != '\0' || *name < '0' || *name > '9' || *old_pid <= 0)
        *old_pid = 0;
    return *old_pid > 0 || strlen(name) == 6;
}

/* Removes a temporary file if no creator holds it: its creator keeps an flock on it while it
 * builds it, so one that is not locked was left by a creator killed half-way, whatever its pid
 * namespace. The inode is compared after the lock is taken, so a file that was removed and
 * made again under the same name in between is left to its creator. A <pid> name (no lock
 * then) also waits for its process to be gone, as it always did. */
static void remove_if_unlocked(const char *path, long old_pid)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat by_fd, by_path;

    if (fd < 0)
        return;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &by_fd) == 0 && stat(path, &by_path) == 0 &&
        by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino &&
        (old_pid == 0 || (kill((pid_t)old_pid, 0) != 0 && errno == ESRCH)))
        remove_db_files(path);
    close(fd); /* drops the lock, after the names are gone */
}

/* Removes what creators killed half-way left of f (see remove_if_unlocked). */
static void remove_stale_new(const char *data_dir, enum db_file f)
{
    DIR *d = opendir(data_dir);
    struct dirent *de;
    char path[PATH_MAX];
    long old_pid;

    while (d && (de = readdir(d))) {
        if (!is_new_name(de->d_name, f, &old_pid))
            continue;
        snprintf(path, sizeof(path), "%s/%s", data_dir, de->d_name);
        remove_if_unlocked(path, old_pid);
    }
    if (d)
        closedir(d);
}

/* Makes tmp (a mkstemp template) a new empty file under an flock of the returned fd, or -1
 * with e set. A cleaner may lock the file between its creation and this lock and remove it:
 * then its name no longer leads to this inode and another name is tried. */
static int make_locked_tmp(char *tmp, size_t size, const char *path, struct lerr *e)
{
    struct stat by_fd, by_path;

    for (int tries = 0; tries < 100; tries++) {
        int fd;

        if (snprintf(tmp, size, "%s.new-XXXXXX", path) >= (int)size)
            return lerr_set(e, "cannot create '%s': path too long", path);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
            return lerr_set(e, "cannot create '%s': %s", tmp, strerror(errno));
        /* mkstemp's 0600; SQLite makes its files 0644 and copies the mode to -wal and -shm. */
        if (fchmod(fd, 0644) != 0 || flock(fd, LOCK_EX) != 0 || fstat(fd, &by_fd) != 0) {
            lerr_set(e, "cannot create '%s': %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        if (stat(tmp, &by_path) == 0 && by_fd.st_dev == by_path.st_dev &&
            by_fd.st_ino == by_path.st_ino)
            return fd;
        close(fd);
    }
    return lerr_set(e, "cannot create '%s': its temporary files keep disappearing", path);
}

static int sync_dir(const char *data_dir, struct lerr *e)
{
    int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    if (fd < 0 || fsync(fd) != 0)
        rc = lerr_set(e, "cannot sync data directory '%s': %s", data_dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* A new file appears at its path whole or not at all: it is made under a name of this process
 * (path.new-XXXXXX, made with O_EXCL and flocked until it is gone), schema and all, its log copied
 * in and synced, then linked into place and the directory synced. Made at its path, a power loss
 * while its first transactions were on disk left what readers cannot read (an empty file, or page 1
 * torn beside a journal that only a writer may roll back: lambda-serve answered 503 until the next
 * batch run, lambda-batch refused to start), and a reader could find half its tables. When another
 * process linked the file first, its file stays and this one goes. */
static int create_db(const char *data_dir, enum db_file f, const char *path, struct lerr *e)
{
    char tmp[PATH_MAX];
    sqlite3 *db = NULL;
    int rc = -1, fd;

    remove_stale_new(data_dir, f);
    if ((fd = make_locked_tmp(tmp, sizeof(tmp), path, e)) < 0)
        return -1;
    if (sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        lerr_set(e, "cannot create '%s': %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    if (set_up_rw(db, f, e) != 0)
        goto out;
    if (sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) !=
        SQLITE_OK) {
        lerr_set(e, "cannot create '%s': %s", path, sqlite3_errmsg(db));
        goto out;
    }
    if (sqlite3_close(db) != SQLITE_OK) {
        lerr_set(e, "cannot create '%s': %s", path, sqlite3_errmsg(db));
        goto out;
    }
    db = NULL;
    if (link(tmp, path) != 0 && errno != EEXIST) {
        lerr_set(e, "cannot create '%s': %s", path, strerror(errno));
        goto out;
    }
    rc = sync_dir(data_dir, e);
out:
    sqlite3_close(db);
    remove_db_files(tmp);
    close(fd); /* the lock goes after the names: no cleaner finds this file unlocked */
    return rc;
}

static int open_db(const char *data_dir, enum db_file f, int flags, sqlite3 **out, struct lerr *e)
{
    char path[PATH_MAX];
    sqlite3 *db = NULL;
    bool is_ro = flags & SQLITE_OPEN_READONLY;
    int rc = -1;

    db_path(data_dir, f, path, sizeof(path));
    if (!is_ro && access(path, F_OK) != 0 && errno == ENOENT &&
        create_db(data_dir, f, path, e) != 0)
        return -1;
    if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        lerr_set(e, "cannot open '%s': %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    if (is_ro) {
        sqlite3_busy_timeout(db, 5000);
        if (db_exec(db, "PRAGMA query_only=1", e) != 0)
            goto out;
    } else if (set_up_rw(db, f, e) != 0) {
        goto out;
    }
    *out = db;
    db = NULL; /* the caller owns it now */
    rc = 0;
out:
    sqlite3_close(db); /* a harmless no-op on NULL */
    return rc;
}

int db_open_rw(const char *data_dir, enum db_file f, sqlite3 **out, struct lerr *e)
{
    return open_db(data_dir, f, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, out, e);
}

int db_open_ro(const char *data_dir, enum db_file f, sqlite3 **out, struct lerr *e)
{
    return open_db(data_dir, f, SQLITE_OPEN_READONLY, out, e);
}
