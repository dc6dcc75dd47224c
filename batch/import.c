/* import.c - backfill files into the import log, counted exactly once with the stream.
 *
 * The format is told by the first line: exactly "order_id,merchant_id,amount_cents,event_time"
 * is CSV (double-quoted fields, read by shared/csvrec), anything else NDJSON (one object per line;
 * blank lines are skipped). Valid lines are staged in master.db's import_log, each at the next
 * seq: the import log is consumed like a Kafka partition numbered -1 (DESIGN.md section 2,
 * "Imports meet the stream"); rejects name the file and the line. A file goes in transactions
 * of chunk_rows lines; each commits, with its lines, the file's progress in master's counters
 * ("import:<hash>:line" and its figures), so a killed import of the same content resumes after
 * the last committed line, losing and doubling nothing. The last transaction records the
 * content's hash in `imports`: a re-import of the same content adds nothing. The future-time
 * rule is checked against the wall clock.
 *
 * An import returns once its lines count, whoever takes them in. With a speed layer running
 * (speed.lock held by another process), that layer reads the staged lines as partition -1 in
 * its checkpoint intervals, through the same duplicate rule and aggregation as Kafka events:
 * the import waits (import_wait) until speed.db's committed position for -1 passes every
 * staged line. With none (the import gets speed.lock without waiting, or once it is freed
 * while waiting), it holds speed.lock and runs a batch version of its own
 * (batch_run_for_import): the lines no one judged yet are checked against the speed layer's
 * seen ids since the cut and the master dataset, go into orders, and are published with the
 * same cut_epoch before speed.lock is released. Either way the first copy durably taken in
 * wins, and no answer counts an order twice or not at all. */
#include "batch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "csvrec.h"
#include "db.h"
#include "ev.h"
#include "kafka.h"
#include "lock.h"
#include "log.h"
#include "pin.h"
#include "tm.h"

static const char csv_header[] = "order_id,merchant_id,amount_cents,event_time";

struct import {
    const struct cfg *c;
    const char *data_dir;
    sqlite3 *master;
    sqlite3_stmt *ins_line, *ins_reject, *find, *record;
    struct ev_rules rules;
    const char *path; /* the file being imported, as given */
    const char *pause_at;
    char hash[17]; /* of the file's content, hex */
    int64_t now_ms;
    int64_t chunk_rows; /* lines per transaction */
    int64_t chunk_n;    /* lines in the open transaction */
    int64_t done_line;  /* every line up to this one is staged */
    int64_t first_seq;  /* the file's first staged line in import_log, 0 while none */
    int64_t last_seq;   /* its last */
    int speed_fd;       /* speed.lock while this import holds it (no speed layer runs), else -1 */
    int64_t wait_ms;    /* import_wait: how long a running speed layer may take */
    struct csvrec csv;  /* the fields of one CSV line */
    int64_t lines, staged, rejects; /* of the file being imported, resumes included */
    int64_t orders, dups;           /* its staged lines counted, and found duplicates */
    bool is_tty;
    /* On a shard, only the orders whose merchant hashes into its set (DESIGN.md section 7). */
    struct shard_set shard;
    enum shard_partitioner partitioner;
    int nparts;             /* the topic's, for the hash */
    int64_t not_this_shard; /* valid orders of another shard's merchants, not imported */
};

static int prepare(struct import *im, struct lerr *e)
{
    sqlite3 *m = im->master;

    return db_prepare(m,
                      "INSERT INTO import_log(merchant_id, order_id, amount_cents, event_time_ms,"
                      " raw, file_hash, line) VALUES(?,?,?,?,?,?,?)",
                      &im->ins_line, e) ||
           db_prepare(m,
                      "INSERT INTO rejects(source, line, reason, payload, at_ms)"
                      " VALUES(?,?,?,?,?)",
                      &im->ins_reject, e) ||
           db_prepare(m, "SELECT path, at_ms FROM imports WHERE file_hash=?", &im->find, e) ||
           db_prepare(m,
                      "INSERT INTO imports(file_hash, path, lines, orders, rejects, at_ms)"
                      " VALUES(?,?,?,?,?,?)",
                      &im->record, e);
}

enum ev_reason batch_import_parse_line(const struct ev_rules *r, struct csvrec *csv, const char *s,
                                       size_t len, bool is_csv, int64_t now_ms, struct ev_order *o)
{
    struct lerr ignored;
    int n;

    if (!is_csv)
        return ev_parse(r, NULL, 0, s, len, now_ms, o);
    n = csvrec_split(csv, s, len, &ignored);
    if (n >= 0 && n < 4)
        return EV_MISSING_FIELD;
    if (n != 4)
        return EV_BAD_TYPE; /* more than four fields, or broken quoting */
    return ev_parse_fields(r, csvrec_field(csv, 0), csvrec_field(csv, 1), csvrec_field(csv, 2),
                           csvrec_field(csv, 3), now_ms, o);
}

static enum ev_reason parse_line(struct import *im, const char *s, size_t len, bool is_csv,
                                 struct ev_order *o)
{
    return batch_import_parse_line(&im->rules, &im->csv, s, len, is_csv, im->now_ms, o);
}

static int add_line(struct import *im, const char *s, size_t len, bool is_csv, int64_t line_no,
                    struct lerr *e)
{
    struct ev_order o;
    enum ev_reason r;
    sqlite3_stmt *st;

    r = parse_line(im, s, len, is_csv, &o);
    if (r != EV_OK) {
        st = im->ins_reject;
        sqlite3_bind_text(st, 1, im->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, line_no);
        sqlite3_bind_text(st, 3, ev_reason_name(r), -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, s,
                          (int)(len < EV_REJECT_PAYLOAD_MAX ? len : EV_REJECT_PAYLOAD_MAX),
                          SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, im->now_ms);
        im->rejects++;
        return db_step_done(st, e);
    }
    if (!im->shard.is_all &&
        !shard_set_has(&im->shard, shard_partition_of(im->partitioner, o.merchant_id,
                                                      strlen(o.merchant_id), im->nparts))) {
        im->not_this_shard++;
        return 0;
    }
    st = im->ins_line;
    sqlite3_bind_text(st, 1, o.merchant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, o.order_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, o.amount_cents);
    sqlite3_bind_int64(st, 4, o.event_ms);
    sqlite3_bind_blob(st, 5, s, (int)len, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, im->hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, line_no);
    if (db_step_done(st, e) != 0)
        return -1;
    im->last_seq = sqlite3_last_insert_rowid(im->master);
    if (im->first_seq == 0)
        im->first_seq = im->last_seq;
    im->staged++;
    return 0;
}

static bool is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

/* Reads or writes the file's progress counters ("import:<hash>:<what>"). */
static int progress(struct import *im, bool is_save, struct lerr *e)
{
    static const char *const what[] = {"line", "staged", "rejects", "not_this_shard", "first_seq"};
    int64_t *v[] = {&im->done_line, &im->staged, &im->rejects, &im->not_this_shard, &im->first_seq};
    const char *sql = is_save ? "INSERT OR REPLACE INTO counters(name, value) VALUES(?, ?)"
                              : "SELECT value FROM counters WHERE name=?";
    sqlite3_stmt *st = NULL;
    char name[64];
    int rc = 0;

    if (db_prepare(im->master, sql, &st, e) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]) && rc == 0; i++) {
        snprintf(name, sizeof(name), "import:%s:%s", im->hash, what[i]);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        if (is_save) {
            sqlite3_bind_int64(st, 2, *v[i]);
            rc = db_step_done(st, e);
        } else {
            *v[i] = 0;
            rc = db_step_int(st, v[i], e);
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Commits the lines up to line_no with the file's progress, and opens the next transaction. */
static int chunk_commit(struct import *im, int64_t line_no, struct lerr *e)
{
    im->done_line = line_no;
    if (progress(im, true, e) != 0 || db_exec(im->master, "COMMIT", e) != 0)
        return -1;
    im->chunk_n = 0;
    batch_pause(im->pause_at, "import");
    return db_exec(im->master, "BEGIN IMMEDIATE", e);
}

/* Imports every line of data[0..size) after im->done_line, inside the caller's transaction. */
static int import_lines(struct import *im, const char *data, size_t size, struct lerr *e)
{
    const char *p = data, *end = data + size;
    int64_t line_no = 0, shown = tm_mono_ms();
    bool is_csv = false;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        const char *s = p;

        p = nl ? nl + 1 : end;
        line_no++;
        if (len > 0 && s[len - 1] == '\r')
            len--;
        if (line_no == 1) {
            if (len >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
                s += 3, len -= 3; /* a UTF-8 byte order mark */
            is_csv = len == sizeof(csv_header) - 1 && !memcmp(s, csv_header, len);
            if (is_csv)
                continue;
        }
        if (line_no <= im->done_line || is_blank(s, len))
            continue;
        if (add_line(im, s, len, is_csv, line_no, e) != 0)
            return -1;
        if (++im->chunk_n >= im->chunk_rows && chunk_commit(im, line_no, e) != 0)
            return -1;
        if (im->is_tty && tm_mono_ms() - shown >= 200) {
            shown = tm_mono_ms();
            fprintf(stderr, "\rimport %s: %" PRId64 " lines (%d%%)   ", im->path, line_no,
                    (int)((p - data) * 100 / (end - data)));
        }
    }
    if (im->is_tty && line_no > 0)
        fprintf(stderr, "\rimport %s: %" PRId64 " lines (100%%)   \n", im->path, line_no);
    im->lines = line_no;
    return 0;
}

/* Finds an earlier import of the same content; prints it and sets *found. */
static int find_earlier(struct import *im, const char *hash, bool *found, struct lerr *e)
{
    int rc;

    sqlite3_bind_text(im->find, 1, hash, -1, SQLITE_STATIC);
    rc = sqlite3_step(im->find);
    *found = rc == SQLITE_ROW;
    if (*found) {
        char when[TM_RFC3339_LEN];
        tm_format_rfc3339(sqlite3_column_int64(im->find, 1), when);
        printf("already imported: %s (same content as %s, imported %s)\n", im->path,
               (const char *)sqlite3_column_text(im->find, 0), when);
        log_info("batch", "import_skipped file=\"%s\" reason=already_imported hash=%s", im->path,
                 hash);
    }
    sqlite3_reset(im->find);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return lerr_set(e, "cannot read imports: %s", sqlite3_errmsg(im->master));
    return 0;
}

static int record(struct import *im, const char *hash, struct lerr *e)
{
    sqlite3_stmt *st = im->record;
    int rc;

    /* orders: the staged lines until they are counted (figures() settles it). */
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, im->path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, im->lines);
    sqlite3_bind_int64(st, 4, im->staged);
    sqlite3_bind_int64(st, 5, im->rejects);
    sqlite3_bind_int64(st, 6, im->now_ms);
    if (db_step_done(st, e) != 0 ||
        db_prepare(im->master, "DELETE FROM counters WHERE name LIKE 'import:' || ? || ':%'", &st,
                   e) != 0)
        return -1;
    sqlite3_bind_text(st, 1, im->hash, -1, SQLITE_STATIC);
    rc = db_step_done(st, e);
    sqlite3_finalize(st);
    return rc;
}

/* The staged lines up to the import log's end minus one are counted once a running speed
 * layer's committed position for -1 has passed them all (*done). 1 when speed.lock came free
 * meanwhile (this import then holds it), 0 when counted, -1 with e set at import_wait. */
static int wait_for_speed(struct import *im, int64_t target, struct lerr *e)
{
    int64_t t0 = tm_mono_ms(), shown = t0, pos = -1, left = 1;
    sqlite3_stmt *st = NULL;
    int rc = -1;

    if (db_prepare(im->master,
                   "SELECT count(*) FROM import_log WHERE seq >= ?1 AND seq <= ?2 AND state = 0",
                   &st, e) != 0)
        return -1;
    for (;;) {
        if (batch_imports_speed_position(im->data_dir, &pos, e) != 0)
            break;
        /* Counted: no staged line at or after the speed layer's position (positions only move
         * forward to the next line after the last one judged). */
        sqlite3_bind_int64(st, 1, pos < 0 ? 0 : pos);
        sqlite3_bind_int64(st, 2, target);
        if (pos >= 0 && db_step_int(st, &left, e) != 0)
            break;
        if (pos >= 0 && left == 0) {
            rc = 0;
            break;
        }
        int got = lock_try(im->data_dir, "speed.lock", &im->speed_fd, e);
        if (got != 0) {
            rc = got > 0 ? 1 : -1; /* the speed layer stopped: this import takes them in */
            break;
        }
        if (tm_mono_ms() - t0 >= im->wait_ms) {
            lerr_set(e,
                     "lambda-speed holds '%s/speed.lock' but has not taken in the imported lines"
                     " after %" PRId64 " ms (%" PRId64 " of them left, its position for imports"
                     " is %" PRId64 " of %" PRId64
                     "): they are staged and count once it does, or at the next batch run",
                     im->data_dir, im->wait_ms, left, pos, target + 1);
            break;
        }
        if (im->is_tty && tm_mono_ms() - shown >= 200) {
            shown = tm_mono_ms();
            fprintf(stderr, "\rimport: waiting for lambda-speed to take in %" PRId64 " lines   ",
                    left);
        }
        nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
    }
    if (im->is_tty && shown != t0)
        fprintf(stderr, "\n");
    sqlite3_finalize(st);
    return rc;
}

/* Makes every staged line count (DESIGN.md section 2): the running speed layer takes them in,
 * or, with none, this import's own batch version. *version: that version, 0 when the speed
 * layer counted them. */
static int count_in(struct import *im, int64_t *version, struct lerr *e)
{
    int64_t end = 0;
    int rc = 1;

    *version = 0;
    if (batch_imports_end(im->master, &end, e) != 0)
        return -1;
    if (im->speed_fd < 0)
        rc = wait_for_speed(im, end - 1, e);
    if (rc <= 0)
        return rc;
    if (batch_run_for_import(im->c, version, e) != 0)
        return lerr_set(e, "%.160s (the lines are staged and count at the next batch run)", e->msg);
    return 0;
}

/* The file's figures once its lines count: duplicates are the lines this import's take-in
 * marked (state 2) and those the speed layer judged (speed.db's import_dups). */
static int figures(struct import *im, struct lerr *e)
{
    sqlite3 *sdb = NULL;
    sqlite3_stmt *st = NULL;
    int64_t last = 0, marked = 0, judged = 0, n = 0;
    char path[PATH_MAX];
    int rc = -1;

    im->orders = im->dups = 0;
    if (im->first_seq == 0)
        return 0;
    if (db_prepare(im->master,
                   "SELECT max(seq), count(*) FILTER (WHERE state = 2) FROM import_log"
                   " WHERE seq >= ?1 AND file_hash = ?2",
                   &st, e) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, im->first_seq);
    sqlite3_bind_text(st, 2, im->hash, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        last = sqlite3_column_int64(st, 0);
        marked = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    st = NULL;
    db_path(im->data_dir, DB_SPEED, path, sizeof(path));
    if (access(path, F_OK) == 0) {
        if (db_open_ro(im->data_dir, DB_SPEED, &sdb, e) != 0 ||
            db_query_int(sdb, "SELECT count(*) FROM sqlite_master WHERE name = 'import_dups'", &n,
                         e) != 0)
            goto out;
        if (n && (db_prepare(sdb, "SELECT count(*) FROM import_dups WHERE seq >= ?1 AND seq <= ?2",
                             &st, e) != 0 ||
                  (sqlite3_bind_int64(st, 1, im->first_seq), sqlite3_bind_int64(st, 2, last),
                   db_step_int(st, &judged, e) != 0)))
            goto out;
    }
    im->dups = marked + judged;
    im->orders = im->staged - im->dups;
    sqlite3_finalize(st);
    st = NULL;
    if (db_prepare(im->master, "UPDATE imports SET orders = ?1 WHERE file_hash = ?2", &st, e) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, im->orders);
    sqlite3_bind_text(st, 2, im->hash, -1, SQLITE_STATIC);
    rc = db_step_done(st, e);
out:
    sqlite3_finalize(st);
    sqlite3_close(sdb);
    return rc;
}

/* Stages the file's lines (nothing when the same content was imported before). */
static int stage(struct import *im, const char *data, size_t size, bool *found, struct lerr *e)
{
    snprintf(im->hash, sizeof(im->hash), "%016llx", (unsigned long long)XXH3_64bits(data, size));
    if (find_earlier(im, im->hash, found, e) != 0 || *found)
        return *found ? 0 : -1;
    im->now_ms = tm_now_ms();
    im->lines = im->chunk_n = im->last_seq = 0;
    if (db_exec(im->master, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    if (progress(im, false, e) != 0)
        goto fail;
    if (im->done_line > 0)
        log_info("batch", "import_resumed file=\"%s\" after_line=%" PRId64, im->path,
                 im->done_line);
    if (import_lines(im, data, size, e) != 0 || record(im, im->hash, e) != 0 ||
        db_exec(im->master, "COMMIT", e) != 0)
        goto fail;
    return 0;
fail:
    sqlite3_exec(im->master, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int import_data(struct import *im, const char *data, size_t size, struct lerr *e)
{
    int64_t t0 = tm_mono_ms(), version = 0;
    bool found;

    /* An earlier import of the same content may have been cut short after its lines were
     * staged: every staged line is made to count all the same. */
    if (stage(im, data, size, &found, e) != 0 || count_in(im, &version, e) != 0)
        return -1;
    if (found)
        return 0;
    if (figures(im, e) != 0)
        return -1;
    double secs = (double)(tm_mono_ms() - t0) / 1000.0;
    char by[64];
    if (version > 0)
        snprintf(by, sizeof(by), "batch version=%" PRId64, version);
    else
        snprintf(by, sizeof(by), "speed");
    printf("batch imported file=%s lines=%" PRId64 " orders=%" PRId64 " duplicates=%" PRId64
           " rejects=%" PRId64 " not_this_shard=%" PRId64 " counted_by=%s seconds=%.2f\n",
           im->path, im->lines, im->orders, im->dups, im->rejects, im->not_this_shard, by, secs);
    fflush(stdout);
    log_info("batch",
             "imported file=\"%s\" lines=%" PRId64 " orders=%" PRId64 " duplicates=%" PRId64
             " rejects=%" PRId64 " counted_by=\"%s\" seconds=%.2f",
             im->path, im->lines, im->orders, im->dups, im->rejects, by, secs);
    return 0;
}

static int import_file(struct import *im, const char *path, struct lerr *e)
{
    struct stat sb;
    void *data = NULL;
    int fd, rc;

    im->path = path;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lerr_set(e, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lerr_set(e, "cannot import '%s': not a regular file", path);
    }
    if (sb.st_size > 0) {
        data = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data == MAP_FAILED) {
            close(fd);
            return lerr_set(e, "cannot read '%s': %s", path, strerror(errno));
        }
        madvise(data, (size_t)sb.st_size, MADV_SEQUENTIAL);
    }
    close(fd);
    rc = import_data(im, data ? data : "", (size_t)sb.st_size, e);
    if (data)
        munmap(data, (size_t)sb.st_size);
    return rc;
}

/* Waits up to wait_ms for batch.lock: an import never runs beside a batch run. */
static int wait_lock(const char *data_dir, int64_t wait_ms, int *fd, struct lerr *e)
{
    int64_t end = tm_mono_ms() + wait_ms;

    for (;;) {
        int got = lock_try(data_dir, "batch.lock", fd, e);
        if (got != 0)
            return got > 0 ? 0 : -1;
        if (tm_mono_ms() >= end)
            return lerr_set(e,
                            "another batch run holds '%s/batch.lock' (waited %" PRId64
                            " ms); try again when it is done",
                            data_dir, wait_ms);
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }
}

static int record_pins(struct import *im, const struct cfg *c, const char *data_dir, struct lerr *e)
{
    struct pin_set p;

    pin_set_from_cfg(&p, c);
    return pin_record(im->master, data_dir, "master.db", &p, e) == 0 ? 0 : -1;
}

/* An import on a shard hashes each merchant as the producers do, among the topic's
 * partitions: it needs `partitioner` and asks Kafka for the count. */
static int shard_setup(struct import *im, const struct cfg *c, struct lerr *e)
{
    rd_kafka_t *rk;
    int rc;

    if (shard_set_parse(&im->shard, cfg_str(c, "shard_partitions"), e) != 0 ||
        shard_partitioner_parse(cfg_str(c, "partitioner"), &im->partitioner, e) != 0)
        return -1;
    if (im->shard.is_all)
        return 0;
    if (im->partitioner == SHARD_PARTITIONER_NONE)
        return lerr_set(e,
                        "an import on a shard (shard_partitions=%s) needs 'partitioner' to"
                        " tell which merchants are its own",
                        cfg_str(c, "shard_partitions"));
    if (!(rk = kafka_consumer_new(c, NULL, 0, NULL, NULL, e)))
        return -1;
    rc = kafka_partition_count(rk, cfg_str(c, "topic"), (int)cfg_ms(c, "kafka_timeout"),
                               &im->nparts, e);
    if (rc == 0)
        rc = shard_set_check_topic(&im->shard, im->nparts, e);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

int batch_import(const struct cfg *c, struct lerr *e)
{
    const char *data_dir = cfg_str(c, "data_dir");
    struct import im = {0};
    struct pin_set pins;
    int fd = -1, rc = -1;

    im.c = c;
    im.data_dir = data_dir;
    im.speed_fd = -1;
    im.wait_ms = cfg_ms(c, "import_wait");
    im.rules.max_future_skew_ms = cfg_ms(c, "max_future_skew");
    im.pause_at = cfg_str(c, "pause_at");
    im.chunk_rows = cfg_int(c, "chunk_rows") > 0 ? cfg_int(c, "chunk_rows") : 1;
    im.is_tty = isatty(STDERR_FILENO);
    if (shard_setup(&im, c, e) != 0 || csvrec_init(&im.csv, e) != 0)
        return -1;
    if (db_ensure_dir(data_dir, e) != 0 || wait_lock(data_dir, cfg_ms(c, "lock_wait"), &fd, e))
        goto out;
    /* Held from here to the end when no speed layer runs: none may start while this import
     * takes its lines in and publishes them. */
    if (lock_try(data_dir, "speed.lock", &im.speed_fd, e) < 0)
        goto out;
    pin_set_from_cfg(&pins, c);
    if (db_open_rw(data_dir, DB_MASTER, &im.master, e) != 0 ||
        pin_record(im.master, data_dir, "master.db", &pins, e) != 0 ||
        db_exec(im.master,
                "PRAGMA cache_size=-262144; PRAGMA mmap_size=4294967296;"
                " PRAGMA wal_autocheckpoint=65536",
                e) != 0 ||
        record_pins(&im, c, data_dir, e) != 0 || prepare(&im, e) != 0)
        goto out;
    for (int i = 1; i < c->nargs; i++)
        if (import_file(&im, c->args[i], e) != 0)
            goto out;
    rc = 0;
out:
    sqlite3_finalize(im.ins_line);
    sqlite3_finalize(im.ins_reject);
    sqlite3_finalize(im.find);
    sqlite3_finalize(im.record);
    sqlite3_close(im.master);
    csvrec_release(&im.csv);
    lock_release(im.speed_fd);
    lock_release(fd);
    return rc;
}
