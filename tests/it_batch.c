/* it_batch.c - lambda-batch against real files and a real embedded Kafka: the command line,
 * import (NDJSON and CSV, rejects by line, re-import), the lock, the data-quality checks. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "itlib.h"
#include "lock.h"

struct env {
    char dir[512];  /* the test's directory */
    char data[600]; /* its data directory */
    char bs[256];   /* bootstrap address; "" without Kafka */
    struct it_proc dk;
    struct it_proc held; /* a run the test holds paused */
    int runs;            /* numbers the captured outputs */
};

/* The test's environment, for fini(): a failed assertion ends the test before its own
 * clean-up, and an embedded Kafka must not outlive it. */
static struct env *current;

static void fini(void)
{
    if (current) {
        it_stop(&current->held);
        it_stop(&current->dk);
    }
}

static void env_init(struct env *v, const char *tag, int partitions)
{
    memset(v, 0, sizeof(*v));
    current = v;
    it_tmpdir(tag, v->dir);
    snprintf(v->data, sizeof(v->data), "%s/data", v->dir);
    if (partitions > 0)
        it_devkafka(&v->dk, v->dir, partitions, v->bs);
}

static void env_fini(struct env *v)
{
    it_stop(&v->held);
    it_stop(&v->dk);
}

/* Builds "lambda-batch <cmd> --data-dir D [--brokers B] <extra...>" into argv (64 slots). */
static void batch_argv(struct env *v, char *argv[64], const char *cmd, va_list ap)
{
    int n = 0;
    const char *a;

    argv[n++] = "lambda-batch";
    argv[n++] = (char *)cmd;
    argv[n++] = "--data-dir";
    argv[n++] = v->data;
    if (v->bs[0]) {
        argv[n++] = "--brokers";
        argv[n++] = v->bs;
    }
    while ((a = va_arg(ap, const char *)) && n < 63)
        argv[n++] = (char *)a;
    argv[n] = NULL;
}

/* Runs lambda-batch to completion; its output lands in <dir>/batchN.{out,err}. */
static int batch(struct env *v, char tag[32], const char *cmd, ...)
{
    char *argv[64];
    va_list ap;

    va_start(ap, cmd);
    batch_argv(v, argv, cmd, ap);
    va_end(ap);
    snprintf(tag, 32, "batch%d", ++v->runs);
    return it_run(v->dir, tag, argv, NULL, 60000);
}

static void batch_spawn(struct env *v, struct it_proc *p, const char *cmd, ...)
{
    char *argv[64], tag[32];
    va_list ap;

    va_start(ap, cmd);
    batch_argv(v, argv, cmd, ap);
    va_end(ap);
    snprintf(tag, 32, "batch%d", ++v->runs);
    it_spawn(p, v->dir, tag, argv, NULL);
}

static char *output(struct env *v, const char *tag, const char *ext)
{
    char path[700];
    char *s;

    snprintf(path, sizeof(path), "%s/%s.%s", v->dir, tag, ext);
    s = it_read_file(path, NULL);
    return s ? s : strdup("");
}

static sqlite3 *db_open(struct env *v, const char *file)
{
    char path[700];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/%s", v->data, file);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK,
                 "cannot open %s", path);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* The first column of the first row of sql over data/<file>; -1 when there is no row. */
static int64_t sql_int(struct env *v, const char *file, const char *sql)
{
    sqlite3 *db = db_open(v, file);
    sqlite3_stmt *st = NULL;
    int64_t r = -1;

    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        r = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

/* The rows of sql as text: columns joined by ' ', rows ended by '\n' (caller frees). */
static char *sql_text(struct env *v, const char *file, const char *sql)
{
    sqlite3 *db = db_open(v, file);
    sqlite3_stmt *st = NULL;
    size_t n = 0, cap = 1 << 16;
    char *out = calloc(1, cap);

    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const char *t = (const char *)sqlite3_column_text(st, i);
            n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? " " : "", t ? t : "NULL");
        }
        n += (size_t)snprintf(out + n, cap - n, "\n");
        cr_assert(n < cap - 1, "result too long");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

static void sql_exec(struct env *v, const char *file, const char *sql)
{
    sqlite3 *db = db_open(v, file);
    char *err = NULL;

    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK, "%s: %s", sql, err);
    sqlite3_close(db);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Produces "key|payload" lines with kcat (lz4, like lambda-gen), to one partition when
 * partition >= 0, else by key. */
static void produce_to(struct env *v, int partition, const char *lines)
{
    char path[700], tag[32], part[16];
    char *argv[] = {"/usr/bin/kcat", "-P", "-b", v->bs, "-t", "orders", "-K", "|", "-z",
                    "lz4",           "-l", path, "-p",  part, NULL};

    snprintf(tag, sizeof(tag), "kcat%d", ++v->runs);
    snprintf(path, sizeof(path), "%s/%s.in", v->dir, tag);
    snprintf(part, sizeof(part), "%d", partition);
    write_file(path, lines);
    if (partition < 0)
        argv[12] = NULL;
    cr_assert_eq(it_run(v->dir, tag, argv, NULL, 30000), 0, "kcat failed");
}

static void produce(struct env *v, const char *lines)
{
    produce_to(v, -1, lines);
}

/* --- the command line -------------------------------------------------------------------- */

Test(batch_cli, bad_usage_exits_2_naming_the_problem, .timeout = 30)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32];
    char *err;

    env_init(&v, "bcli", 0);
    cr_assert_eq(batch(&v, tag, "run", "--no-such-flag", "1", NULL), 2);
    err = output(&v, tag, "err");
    cr_assert(strstr(err, "unknown flag '--no-such-flag'"), "stderr: %s", err);
    free(err);
    cr_assert_eq(batch(&v, tag, "frobnicate", NULL), 2);
    err = output(&v, tag, "err");
    cr_assert(strstr(err, "unknown command 'frobnicate'") && strstr(err, "usage:"), "%s", err);
    free(err);
    cr_assert_eq(batch(&v, tag, "run", "--keep-versions", "many", NULL), 2);
    cr_assert_eq(batch(&v, tag, "import", NULL), 2);
    cr_assert_eq(batch(&v, tag, "run", "--pause-at", "lunch", NULL), 2);
    err = output(&v, tag, "err");
    cr_assert(strstr(err, "'pause_at'"), "%s", err);
    free(err);
    cr_assert_eq(batch(&v, tag, "status", "--help", NULL), 0);
    char *out = output(&v, tag, "out");
    cr_assert(strstr(out, "keep_versions") && strstr(out, "minute_series_hours"), "%s", out);
    free(out);
}

Test(batch_cli, unreachable_broker_fails_within_the_timeout, .timeout = 30, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32];
    int64_t t0 = it_now_ms();

    env_init(&v, "bunreach", 0);
    snprintf(v.bs, sizeof(v.bs), "127.0.0.1:1");
    cr_assert_eq(batch(&v, tag, "run", "--kafka-timeout", "2s", NULL), 1);
    cr_assert(it_now_ms() - t0 < 15000, "took %lld ms", (long long)(it_now_ms() - t0));
    char *err = output(&v, tag, "err");
    cr_assert(strstr(err, "lambda-batch: run failed: cannot read metadata of topic 'orders' "
                          "within 2000 ms"),
              "stderr: %s", err);
    free(err);
    /* Nothing was recorded: no cut was picked without Kafka. */
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions"), 0);
}

Test(batch_cli, data_dir_that_cannot_be_created_is_a_clear_error, .timeout = 30, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32], file[600];

    env_init(&v, "bdir", 0);
    snprintf(file, sizeof(file), "%s/plainfile", v.dir);
    write_file(file, "x");
    snprintf(v.data, sizeof(v.data), "%s/plainfile/data", v.dir);
    snprintf(v.bs, sizeof(v.bs), "127.0.0.1:1");
    cr_assert_eq(batch(&v, tag, "run", NULL), 1);
    char *err = output(&v, tag, "err");
    cr_assert(strstr(err, "cannot create data directory"), "stderr: %s", err);
    free(err);
}

/* --- import ----------------------------------------------------------------------------- */

static const char ndjson[] =
    "{\"order_id\":\"a1\",\"merchant_id\":\"m-1\",\"amount_cents\":100,"
    "\"event_time\":\"2026-11-21T10:15:30Z\"}\n" /* 1 */
    "{\"order_id\":\"a2\",\n"                    /* 2 */
    "\n"                                         /* 3 */
    "{\"order_id\":\"a3\",\"merchant_id\":\"m-1\",\"amount_cents\":250,"
    "\"event_time\":\"2026-11-21T11:15:30+01:00\",\"note\":\"kept in raw\"}\r\n" /* 4 */
    "{\"order_id\":\"a4\",\"merchant_id\":\"m-1\",\"amount_cents\":1}\n"         /* 5 */
    "{\"order_id\":\"a1\",\"merchant_id\":\"m-1\",\"amount_cents\":999,"
    "\"event_time\":\"2026-11-21T10:15:31Z\"}\n" /* 6 */
    "[1,2]\n"                                    /* 7 */
    "{\"order_id\":\"a5\",\"merchant_id\":\"m-1\",\"amount_cents\":\"1\","
    "\"event_time\":1795000000000}\n" /* 8 */
    "{\"order_id\":\"a6\",\"merchant_id\":\"m-1\",\"amount_cents\":-1,"
    "\"event_time\":1795000000000}\n" /* 9 */
    "{\"order_id\":\"a7\",\"merchant_id\":\"m 1\",\"amount_cents\":1,"
    "\"event_time\":1795000000000}\n" /* 10 */
    "{\"order_id\":\"a8\",\"merchant_id\":\"m-1\",\"amount_cents\":1,"
    "\"event_time\":\"2099-01-01T00:00:00Z\"}\n" /* 11 */
    "{\"order_id\":\"a9\",\"merchant_id\":\"m-2\",\"amount_cents\":7,"
    "\"event_time\":1795000000000}\n" /* 12 */
    "{\"order_id\":\"\",\"merchant_id\":\"m-2\",\"amount_cents\":7,"
    "\"event_time\":1795000000000}\n" /* 13 */
    "{\"order_id\":\"a10\",\"merchant_id\":\"m-2\",\"amount_cents\":7,"
    "\"event_time\":\"yesterday\"}"; /* 14 */

/* lambda-batch import of ndjson written to file: its 14 lines are 3 orders, a duplicate and 9
 * rejects. */
static void import_ndjson(struct env *v, char tag[32], const char *file)
{
    char *s;

    write_file(file, ndjson);
    cr_assert_eq(batch(v, tag, "import", file, NULL), 0);
    s = output(v, tag, "out");
    cr_assert(strstr(s, "lines=14 orders=3 duplicates=1 rejects=9"), "stdout: %s", s);
    free(s);
}

Test(batch_import, ndjson_rejects_by_line_and_reimport_adds_nothing, .timeout = 60, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32], file[600];
    char *s;

    env_init(&v, "bimp", 0);
    snprintf(file, sizeof(file), "%s/orders.ndjson", v.dir);
    import_ndjson(&v, tag, file);

    s = sql_text(&v, "master.db",
                 "SELECT line, reason, partition IS NULL FROM rejects ORDER BY line");
    cr_assert_str_eq(s, "2 bad_json 1\n5 missing_field 1\n7 not_object 1\n8 bad_type 1\n"
                        "9 out_of_range 1\n10 bad_merchant_id 1\n11 future_time 1\n"
                        "13 bad_order_id 1\n14 bad_time 1\n");
    free(s);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(DISTINCT source) FROM rejects"), 1);
    s = sql_text(&v, "master.db", "SELECT source FROM rejects LIMIT 1");
    cr_assert(strncmp(s, file, strlen(file)) == 0, "source %s", s);
    free(s);
    s = sql_text(&v, "master.db", "SELECT payload FROM rejects WHERE line=7");
    cr_assert_str_eq(s, "[1,2]\n");
    free(s);
    /* The first copy wins: a1 keeps 100, not 999; offsets are the lines' seqs in the import
     * log (partition -1). */
    s = sql_text(&v, "master.db",
                 "SELECT merchant_id, order_id, amount_cents, event_time_ms, partition, offset"
                 " FROM orders ORDER BY offset");
    cr_assert_str_eq(s, "m-1 a1 100 1795256130000 -1 1\n"
                        "m-1 a3 250 1795256130000 -1 2\n"
                        "m-2 a9 7 1795000000000 -1 4\n");
    free(s);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT value FROM counters WHERE name='duplicates'"), 1);
    cr_assert_eq(sql_int(&v, "master.db",
                         "SELECT instr(raw, 'kept in raw') > 0 FROM orders"
                         " WHERE order_id='a3'"),
                 1);

    /* The same content again, even under another name, adds nothing. */
    char copy[620];
    snprintf(copy, sizeof(copy), "%s/copy.ndjson", v.dir);
    write_file(copy, ndjson);
    cr_assert_eq(batch(&v, tag, "import", copy, NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "already imported"), "stdout: %s", s);
    free(s);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM orders"), 3);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM rejects"), 9);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM imports"), 1);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT value FROM counters WHERE name='duplicates'"), 1);

    /* A missing file is an error naming it. */
    char missing[620];
    snprintf(missing, sizeof(missing), "%s/nope.csv", v.dir);
    cr_assert_eq(batch(&v, tag, "import", missing, NULL), 1);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "cannot open '") && strstr(s, "nope.csv"), "stderr: %s", s);
    free(s);
}

/* A power loss before a file's first sync leaves it empty (and its journal): status says there
 * is nothing yet, and an import and a status after it find the schema made. */
Test(batch_import, files_left_empty_by_a_power_loss_hold_nothing_yet, .timeout = 60, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    static const char *const empty[] = {"master.db", "batch.db", "batch.db-journal", "speed.db"};
    char tag[32], file[600], path[700];
    char *s;

    env_init(&v, "bempty", 0);
    cr_assert_eq(mkdir(v.data, 0755), 0);
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", v.data, empty[i]);
        write_file(path, "");
    }
    cr_assert_eq(batch(&v, tag, "status", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "versions: none") &&
                  strstr(s, "master: 0 orders (0 in the recent level), 0 imported files"),
              "stdout: %s", s);
    free(s);
    snprintf(file, sizeof(file), "%s/orders.ndjson", v.dir);
    import_ndjson(&v, tag, file);
    cr_assert_eq(batch(&v, tag, "status", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "master: 3 orders (0 in the recent level), 1 imported files"), "stdout: %s",
              s);
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db",
                         "SELECT orders FROM versions WHERE state = 'published' ORDER BY id DESC"),
                 3);
}

static const char csv[] = "order_id,merchant_id,amount_cents,event_time\r\n"        /* 1 */
                          "c1,m-1,100,2026-11-21T10:00:00Z\r\n"                     /* 2 */
                          "\"c,2\",m-1,200,1795000000000\r\n"                       /* 3 */
                          "c3,m-2,abc,2026-11-21T10:00:00Z\r\n"                     /* 4 */
                          "c4,m-2,5\r\n"                                            /* 5 */
                          "c5,m-2,5,2026-11-21T10:00:00Z,extra\r\n"                 /* 6 */
                          "\"c6,m-2,5,2026-11-21T10:00:00Z\r\n"                     /* 7 */
                          "\"say \"\"hi\"\"\",\"m-3\",\"42\",\"1795000000000\"\r\n" /* 8 */
                          "c1,m-1,300,2026-11-21T10:00:00Z\r\n";                    /* 9 */

Test(batch_import, csv_with_quotes_and_bad_lines, .timeout = 60, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32], file[600];
    char *s;

    env_init(&v, "bcsv", 0);
    snprintf(file, sizeof(file), "%s/orders.csv", v.dir);
    write_file(file, csv);
    cr_assert_eq(batch(&v, tag, "import", file, NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "lines=9 orders=3 duplicates=1 rejects=4"), "stdout: %s", s);
    free(s);
    s = sql_text(&v, "master.db", "SELECT line, reason FROM rejects ORDER BY line");
    cr_assert_str_eq(s, "4 bad_type\n5 missing_field\n6 bad_type\n7 bad_type\n");
    free(s);
    s = sql_text(&v, "master.db",
                 "SELECT merchant_id, order_id, amount_cents, offset FROM orders ORDER BY offset");
    cr_assert_str_eq(s, "m-1 c1 100 1\nm-1 c,2 200 2\nm-3 say \"hi\" 42 3\n");
    free(s);
}

/* --- runs against Kafka ------------------------------------------------------------------- */

/* Six orders of two merchants, one duplicate (different amount), one bad message. */
static const char small_stream[] =
    "m-1|{\"order_id\":\"k1\",\"merchant_id\":\"m-1\",\"amount_cents\":100,"
    "\"event_time\":\"2026-11-21T10:00:01Z\"}\n"
    "m-1|{\"order_id\":\"k2\",\"merchant_id\":\"m-1\",\"amount_cents\":200,"
    "\"event_time\":\"2026-11-21T10:59:59Z\"}\n"
    "m-1|{\"order_id\":\"k3\",\"merchant_id\":\"m-1\",\"amount_cents\":300,"
    "\"event_time\":\"2026-11-21T11:00:00Z\"}\n"
    "m-2|{\"order_id\":\"k1\",\"merchant_id\":\"m-2\",\"amount_cents\":5,"
    "\"event_time\":1795341600000}\n"
    "m-2|{\"order_id\":\"k2\",\"merchant_id\":\"m-2\",\"amount_cents\":6,"
    "\"event_time\":1795341600000}\n"
    "m-1|{\"order_id\":\"k2\",\"merchant_id\":\"m-1\",\"amount_cents\":777,"
    "\"event_time\":\"2026-11-21T10:00:00Z\"}\n"
    "m-2|{\"order_id\":\"k9\",\"merchant_id\":\"m-2\",\"amount_cents\":1.5,"
    "\"event_time\":1795341600000}\n"
    "m-9|{\"order_id\":\"k4\",\"merchant_id\":\"m-2\",\"amount_cents\":7,"
    "\"event_time\":1795341600000}\n";

/* A second copy of small_stream's m-2 k1: a new offset, no new order. */
static const char duplicate_line[] =
    "m-2|{\"order_id\":\"k1\",\"merchant_id\":\"m-2\",\"amount_cents\":5,"
    "\"event_time\":1795341600000}\n";

Test(batch_run, small_stream_and_an_import_publish_exact_views, .timeout = 90, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32], file[600];
    char *s;

    env_init(&v, "bsmall", 2);
    produce(&v, small_stream);
    snprintf(file, sizeof(file), "%s/backfill.csv", v.dir);
    write_file(file, "order_id,merchant_id,amount_cents,event_time\n"
                     "i1,m-3,1000,2026-11-20T23:59:59.999Z\n"
                     "k1,m-1,5555,2026-11-20T23:59:59.999Z\n");
    /* With no speed layer an import publishes its own version (1); the run is version 2. */
    cr_assert_eq(batch(&v, tag, "import", file, NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "orders=2 duplicates=0") && strstr(s, "counted_by=batch version=1"),
              "stdout: %s", s);
    free(s);
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "batch published version=2 cut_epoch="), "stdout: %s", s);
    cr_assert(strstr(s, " mode=incremental ingested=8 orders=7 merchants=3 merchants_rewritten=2"
                        " buckets_rewritten=6 rejects=1 duplicates=2 ingest_ms="),
              "stdout: %s", s);
    free(s);
    /* The import went into the big level, empty then; the run's orders into the recent one,
     * Kafka's k1 of m-1 found in the big level and counted a duplicate. */
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM orders_base"), 2);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM orders_recent"), 5);
    cr_assert_eq(sql_int(&v, "master.db",
                         "SELECT amount_cents FROM orders WHERE merchant_id='m-1' AND"
                         " order_id='k1'"),
                 5555);
    /* The import came first, so its k1 of m-1 wins over Kafka's. */
    s = sql_text(&v, "batch.db",
                 "SELECT merchant_id, order_count, revenue_cents FROM merchant_totals"
                 " WHERE valid_from<=2 AND valid_to>2 ORDER BY 1");
    cr_assert_str_eq(s, "m-1 3 6055\nm-2 3 18\nm-3 1 1000\n");
    free(s);
    s = sql_text(&v, "batch.db",
                 "SELECT merchant_id, hour_ms, order_count, revenue_cents FROM hourly"
                 " WHERE valid_from<=2 AND valid_to>2 ORDER BY 1, 2");
    cr_assert_str_eq(s, "m-1 1795215600000 1 5555\nm-1 1795255200000 1 200\n"
                        "m-1 1795258800000 1 300\nm-2 1795341600000 3 18\n"
                        "m-3 1795215600000 1 1000\n");
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db",
                         "SELECT count(*) FROM minutely WHERE valid_from<=2 AND valid_to>2 AND"
                         " merchant_id='m-1'"),
                 3);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT value FROM counters WHERE name='key_mismatch'"),
                 1);
    s = sql_text(&v, "master.db", "SELECT source, reason FROM rejects");
    cr_assert_str_eq(s, "kafka bad_type\n");
    free(s);
    /* Both cuts cover the import log (partition -1) to its end, the seq after its two lines. */
    cr_assert_eq(sql_int(&v, "batch.db",
                         "SELECT sum(offset) FROM cut_offsets WHERE version=2 AND partition>=0"),
                 8);
    cr_assert_eq(
        sql_int(&v, "batch.db", "SELECT offset FROM cut_offsets WHERE version=2 AND partition=-1"),
        3);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT sum(next_offset) FROM ingest_offsets WHERE partition>=0"),
        8);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT next_offset FROM ingest_offsets WHERE partition=-1"), 3);

    /* status shows it, as text and as JSON. */
    cr_assert_eq(batch(&v, tag, "status", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "published") && strstr(s, "pending cut: none") &&
                  strstr(s, "rejects: 1 bad_type=1"),
              "status: %s", s);
    free(s);
    cr_assert_eq(batch(&v, tag, "status", "--json", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "\"state\":\"published\"") && strstr(s, "\"pending\":null") &&
                  strstr(s, "\"orders\":7"),
              "status: %s", s);
    free(s);
    env_fini(&v);
}

Test(batch_run, a_second_concurrent_run_skips_and_a_pending_cut_binds, .timeout = 90, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    struct it_proc *first = &v.held;
    char tag[32];
    char *s;

    env_init(&v, "block", 2);
    produce(&v, small_stream);
    batch_spawn(&v, first, "run", "--pause-at", "publish", NULL);
    cr_assert(it_wait_log(first, "msg=paused at=publish", 30000), "first run did not pause");

    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "msg=skipped reason=another_run"), "stderr: %s", s);
    free(s);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "batch skipped"), "stdout: %s", s);
    free(s);
    /* An import waits a bounded time, then says why it did nothing. */
    cr_assert_eq(batch(&v, tag, "import", "--lock-wait", "300ms", "/dev/null", NULL), 1);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "batch.lock"), "stderr: %s", s);
    free(s);

    cr_assert_eq(it_signal(first, SIGKILL, 10000), 128 + SIGKILL);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions WHERE state='published'"),
                 0);
    /* More data arrives; the pending cut still binds the next run to the first 8 messages. */
    produce(&v, "m-5|{\"order_id\":\"late\",\"merchant_id\":\"m-5\",\"amount_cents\":1,"
                "\"event_time\":1795341600000}\n");
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "msg=cut_reused version=1"), "stderr: %s", s);
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT orders FROM versions WHERE id=1"), 6);
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT orders FROM versions WHERE id=2"), 7);
    env_fini(&v);
}

Test(batch_run, failing_checks_keep_the_previous_version_published, .timeout = 90, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32];
    char *s;

    env_init(&v, "bcheck", 2);
    produce(&v, small_stream);
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);

    /* A doctored master row: a negative amount makes a negative sum. It went around ingest, so
     * only a full run, which reads every order, sees it. */
    sql_exec(&v, "master.db",
             "INSERT INTO orders_base VALUES('m-bad', 'x1', -5, 1795341600000, -1, 1, NULL)");
    cr_assert_eq(batch(&v, tag, "run", "--full", NULL), 1);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "data-quality check 'no_negative_sums' failed for version 2"), "stderr: %s",
              s);
    cr_assert(strstr(s, "level=error mod=batch msg=check_failed version=2 check=no_negative_sums"),
              "stderr: %s", s);
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT max(id) FROM versions WHERE state='published'"),
                 1);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions WHERE state='pending'"), 1);
    cr_assert_eq(sql_int(&v, "batch.db",
                         "SELECT revenue_cents FROM merchant_totals WHERE valid_from<=1 AND"
                         " valid_to>1 AND merchant_id='m-1'"),
                 600);

    /* Rows lost from master: the order count would shrink. */
    sql_exec(&v, "master.db",
             "DELETE FROM orders_base WHERE merchant_id IN ('m-bad', 'm-2');"
             " DELETE FROM orders_recent WHERE merchant_id IN ('m-bad', 'm-2')");
    cr_assert_eq(batch(&v, tag, "run", "--full", NULL), 1);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "data-quality check 'orders_not_shrunk' failed for version 2: master "
                        "holds 3 orders, the previous version had 6"),
              "stderr: %s", s);
    free(s);
    cr_assert_eq(batch(&v, tag, "status", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert(strstr(s, "FAILED") && strstr(s, "pending cut: version 2"), "status: %s", s);
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT max(id) FROM versions WHERE state='published'"),
                 1);
    env_fini(&v);
}

Test(batch_run, keeps_only_keep_versions, .timeout = 90, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32];

    env_init(&v, "bkeep", 1);
    produce(&v, small_stream);
    /* After the first, only a duplicate each time: its offset is new, so --full publishes, and
     * shares every row (a --full with nothing new would publish nothing). */
    cr_assert_eq(batch(&v, tag, "run", "--keep-versions", "2", NULL), 0);
    for (int i = 0; i < 3; i++) {
        produce(&v, duplicate_line);
        cr_assert_eq(batch(&v, tag, "run", "--keep-versions", "2", "--full", NULL), 0);
    }
    char *s = sql_text(&v, "batch.db",
                       "SELECT (SELECT group_concat(id) FROM versions),"
                       " (SELECT group_concat(DISTINCT valid_from) FROM merchant_totals),"
                       " (SELECT count(*) FROM hourly),"
                       " (SELECT count(DISTINCT version) FROM cut_offsets),"
                       " (SELECT min(valid_from) FROM minutely)");
    cr_assert_str_eq(s, "3,4 1 3 2 1\n");
    free(s);
    /* A changed bucket replaces its row; pruning drops the old one once no kept version sees
     * it (version 5 and 6 kept: the rows that ended at 5 go). */
    produce(&v, "m-2|{\"order_id\":\"k9\",\"merchant_id\":\"m-2\",\"amount_cents\":7,"
                "\"event_time\":1795341600000}\n");
    cr_assert_eq(batch(&v, tag, "run", "--keep-versions", "2", NULL), 0);
    s = sql_text(&v, "batch.db",
                 "SELECT valid_from, valid_to = 9223372036854775807, order_count FROM"
                 " merchant_totals WHERE merchant_id = 'm-2' ORDER BY 1");
    cr_assert_str_eq(s, "1 0 3\n5 1 4\n");
    free(s);
    produce(&v, duplicate_line);
    cr_assert_eq(batch(&v, tag, "run", "--keep-versions", "2", "--full", NULL), 0);
    s = sql_text(&v, "batch.db",
                 "SELECT (SELECT group_concat(id) FROM versions), valid_from, order_count FROM"
                 " merchant_totals WHERE merchant_id = 'm-2' ORDER BY 1");
    cr_assert_str_eq(s, "5,6 5 4\n");
    free(s);
    env_fini(&v);
}

static const char *order_line(char *buf, size_t size, const char *order_id)
{
    snprintf(buf, size,
             "m-7|{\"order_id\":\"%s\",\"merchant_id\":\"m-7\",\"amount_cents\":10,"
             "\"event_time\":1795341600000}\n",
             order_id);
    return buf;
}

Test(batch_run, a_running_speed_layer_fixes_the_cut_at_its_newest_boundary, .timeout = 90,
     .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32], line[256], lines[2048] = "";
    int fd = -1;
    sqlite3 *speed = NULL;
    struct lerr e;
    char *s;

    env_init(&v, "bspeed", 2);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "p0-%d", i);
        strcat(lines, order_line(line, sizeof(line), id));
    }
    produce_to(&v, 0, lines);
    produce_to(&v, 1, order_line(line, sizeof(line), "p1-0"));
    produce_to(&v, 1, order_line(line, sizeof(line), "p1-1"));

    /* Play the speed layer: hold speed.lock, record boundaries, the newest at (2, 1). */
    cr_assert_eq(db_ensure_dir(v.data, &e), 0);
    cr_assert_eq(lock_try(v.data, "speed.lock", &fd, &e), 1);
    cr_assert_eq(batch(&v, tag, "run", "--kafka-timeout", "1s", NULL), 1);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "a speed layer runs (speed.lock is held) but speed.db has no boundary "
                        "after 1000 ms"),
              "stderr: %s", s);
    free(s);
    cr_assert_eq(db_open_rw(v.data, DB_SPEED, &speed, &e), 0, "%s", e.msg);
    cr_assert_eq(db_exec(speed,
                         "INSERT INTO boundaries VALUES(100, 0, 0), (100, 1, 0),"
                         " (101, 0, 2), (101, 1, 1)",
                         &e),
                 0, "%s", e.msg);
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "msg=cut_recorded version=1 cut_epoch=101 partitions=2 speed_running=1"),
              "stderr: %s", s);
    free(s);
    s = sql_text(&v, "master.db", "SELECT order_id FROM orders ORDER BY order_id");
    cr_assert_str_eq(s, "p0-0\np0-1\np1-0\n");
    free(s);
    s = sql_text(&v, "batch.db", "SELECT partition, offset FROM cut_offsets WHERE version=1");
    cr_assert_str_eq(s, "0 2\n1 1\n");
    free(s);

    /* No speed layer any more: the high watermarks, one epoch past its newest boundary. */
    lock_release(fd);
    cr_assert_eq(db_exec(speed, "INSERT INTO boundaries VALUES(999999999, 0, 2)", &e), 0);
    sqlite3_close(speed);
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT cut_epoch FROM versions WHERE id=2"), 1000000000);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT orders FROM versions WHERE id=2"), 7);
    /* Nothing new: nothing published, no pending cut left. */
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert_str_eq(s, "batch unchanged version=2\n");
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions"), 2);
    /* Epochs never go backwards, even when the wall clock's epoch is smaller (--full records a
     * cut with nothing new, proves version 2 against master, then drops the cut). */
    cr_assert_eq(batch(&v, tag, "run", "--full", NULL), 0);
    s = output(&v, tag, "out");
    cr_assert_str_eq(s, "batch unchanged version=2 mode=full differences=0\n");
    free(s);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "msg=cut_recorded version=3 cut_epoch=1000000000 "), "stderr: %s", s);
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT count(*) FROM versions"), 2);

    /* A speed layer starts again: until it records a boundary from the newest cut on, its
     * old boundaries (behind master) must not become a cut. */
    cr_assert_eq(lock_try(v.data, "speed.lock", &fd, &e), 1);
    cr_assert_eq(batch(&v, tag, "run", "--kafka-timeout", "1s", NULL), 1);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "no boundary at or after epoch 1000000000 (the newest cut)"), "%s", s);
    free(s);
    cr_assert_eq(db_open_rw(v.data, DB_SPEED, &speed, &e), 0, "%s", e.msg);
    cr_assert_eq(
        db_exec(speed, "INSERT INTO boundaries VALUES(1000000000, 0, 5), (1000000000, 1, 2)", &e),
        0, "%s", e.msg);
    sqlite3_close(speed);
    cr_assert_eq(batch(&v, tag, "run", "--full", NULL), 0);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "msg=cut_recorded version=3 cut_epoch=1000000000 "), "stderr: %s", s);
    free(s);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT cut_epoch FROM versions WHERE id=3"), 1000000000);
    cr_assert_eq(sql_int(&v, "batch.db", "SELECT orders FROM versions WHERE id=3"), 7);
    lock_release(fd);
    env_fini(&v);
}

Test(batch_run, offsets_kafka_deleted_are_counted_loudly, .timeout = 120, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32];
    size_t n = 80, len = 100000;
    char *lines = malloc(n * (len + 1) + 1), *p = lines;
    char *s;

    env_init(&v, "bdeleted", 1);
    /* 8 MB of incompressible messages: the embedded Kafka keeps only the newest ~5 MiB. */
    srand(7);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < len; j++)
            *p++ = (char)('a' + rand() % 26);
        *p++ = '\n';
    }
    *p = '\0';
    produce_to(&v, 0, lines);
    free(lines);
    cr_assert_eq(batch(&v, tag, "run", NULL), 0);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "level=warn mod=batch msg=offsets_deleted partition=0 lost="), "%s", s);
    cr_assert(strstr(s, "lambda-batch: WARNING: Kafka already deleted "), "%s", s);
    free(s);
    int64_t lost =
        sql_int(&v, "master.db", "SELECT value FROM counters WHERE name='deleted_offsets'");
    cr_assert(lost > 0 && lost < 80, "lost %lld", (long long)lost);
    cr_assert_eq(sql_int(&v, "master.db",
                         "SELECT count(*) FROM rejects WHERE reason='bad_json'"
                         " AND length(payload)=1024"),
                 80 - lost);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT min(offset) FROM rejects"), lost);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT next_offset FROM ingest_offsets WHERE partition=0"), 80);
    env_fini(&v);
}

Test(batch_import, a_killed_import_resumes_without_loss_or_doubles, .timeout = 90, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char tag[32], file[600], want[256];
    int64_t orders = 0, dups = 0, rejects = 0, revenue = 0;
    FILE *f;
    char *s;

    env_init(&v, "bresume", 0);
    snprintf(file, sizeof(file), "%s/big.ndjson", v.dir);
    f = fopen(file, "w");
    cr_assert_not_null(f);
    for (int i = 1; i <= 3000; i++) {
        if (i % 17 == 0) {
            fprintf(f, "{\"order_id\":\"r%d\"\n", i); /* bad_json */
            rejects++;
        } else if (i % 10 == 0) { /* the previous line's order again, another amount */
            fprintf(f,
                    "{\"order_id\":\"r%d\",\"merchant_id\":\"m-%d\",\"amount_cents\":1,"
                    "\"event_time\":1795000000000}\n",
                    i - 1, (i - 1) % 7);
            dups += (i - 1) % 17 != 0;
            orders += (i - 1) % 17 == 0, revenue += (i - 1) % 17 == 0;
        } else {
            fprintf(f,
                    "{\"order_id\":\"r%d\",\"merchant_id\":\"m-%d\",\"amount_cents\":%d,"
                    "\"event_time\":1795000000000}\n",
                    i, i % 7, i);
            orders++, revenue += i;
        }
    }
    fclose(f);
    cr_assert_eq(orders + dups + rejects, 3000);

    batch_spawn(&v, &v.held, "import", "--chunk-rows", "500", "--pause-at", "import", file, NULL);
    cr_assert(it_wait_log(&v.held, "msg=paused at=import", 30000), "import did not pause");
    cr_assert_eq(it_signal(&v.held, SIGKILL, 10000), 128 + SIGKILL);
    /* Killed while staging: its lines are in the import log, counted by no one yet. */
    cr_assert_eq(
        sql_int(&v, "master.db",
                "SELECT (SELECT count(*) FROM import_log) + (SELECT count(*) FROM rejects)"),
        500);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM orders"), 0);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM imports"), 0);

    cr_assert_eq(batch(&v, tag, "import", "--chunk-rows", "700", file, NULL), 0);
    s = output(&v, tag, "err");
    cr_assert(strstr(s, "msg=import_resumed file=") && strstr(s, " after_line=500"), "%s", s);
    free(s);
    s = output(&v, tag, "out");
    snprintf(want, sizeof(want), "lines=3000 orders=%lld duplicates=%lld rejects=%lld",
             (long long)orders, (long long)dups, (long long)rejects);
    cr_assert(strstr(s, want), "stdout: %s\nwant: %s", s, want);
    free(s);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM orders"), orders);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT sum(amount_cents) FROM orders"), revenue);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(*) FROM rejects"), rejects);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT count(DISTINCT line) FROM rejects"), rejects);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT value FROM counters WHERE name='duplicates'"),
                 dups);
    cr_assert_eq(
        sql_int(&v, "master.db", "SELECT count(*) FROM counters WHERE name LIKE 'import:%'"), 0);
    cr_assert_eq(sql_int(&v, "master.db", "SELECT orders FROM imports"), orders);
    env_fini(&v);
}
