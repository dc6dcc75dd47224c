/* it_imports.c - imports meet the stream exactly (DESIGN.md section 2, "Imports meet the
 * stream"): real lambda-devkafka, lambda-speed, lambda-batch and lambda-serve. Each order is
 * sent twice with different amounts, by lambda-batch import and by the stream, in both orders
 * of arrival, before and after a batch run's cut, at the same time, and with no speed layer;
 * at every observation every merchant's /query equals the truth computed here: the first copy
 * durably taken in wins, with its amount. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "itlib.h"

#define MERCHANTS  4
#define ORDERS_MAX 8192
#define EVENT_MS   1795000000000LL

/* Every child runs with a one-second epoch, so cuts follow within the test's time. */
static char *child_env[] = {"LAMBDA_EPOCH_MS=1000", "LAMBDA_LOG_LEVEL=info", NULL};

struct order {
    char id[32];
    int merchant;   /* 1..MERCHANTS */
    int64_t amount; /* the winner's, -1 while no copy is counted */
};

struct env {
    char dir[512], data[600], bs[256];
    struct it_proc dk, speed, serve, kcat, imp;
    int runs, port, speeds;
    struct order orders[ORDERS_MAX];
    int norders;
    int64_t consumed; /* stream messages produced so far: speed consumes them all */
};

static struct env *current;

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fini(void)
{
    if (current) {
        it_stop(&current->kcat);
        it_stop(&current->imp);
        it_stop(&current->serve);
        it_stop(&current->speed);
        it_stop(&current->dk);
    }
}

static struct order *find(struct env *v, const char *id)
{
    for (int i = 0; i < v->norders; i++)
        if (strcmp(v->orders[i].id, id) == 0)
            return &v->orders[i];
    return NULL;
}

/* The order's record, created uncounted on first sight. */
static struct order *order(struct env *v, const char *id, int merchant)
{
    struct order *o = find(v, id);

    if (o)
        return o;
    cr_assert(v->norders < ORDERS_MAX);
    o = &v->orders[v->norders++];
    snprintf(o->id, sizeof(o->id), "%s", id);
    o->merchant = merchant;
    o->amount = -1;
    return o;
}

/* A copy taken in: it wins when no copy was counted before it. */
static void taken_in(struct env *v, const char *id, int merchant, int64_t amount)
{
    struct order *o = order(v, id, merchant);

    if (o->amount < 0)
        o->amount = amount;
}

/* The copies "<prefix>-<i>" (i < n) of orders_text(), amount base + i, taken in. */
static void taken_in_all(struct env *v, const char *prefix, int n, int64_t base)
{
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s-%d", prefix, i);
        taken_in(v, id, 1 + i % MERCHANTS, base + i);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* n orders "<prefix>-<i>", merchant 1 + i % MERCHANTS, amount base + i: as kcat lines
 * ("key|payload") or as NDJSON lines. */
static char *orders_text(const char *prefix, int n, int64_t base, bool is_kafka)
{
    size_t cap = (size_t)n * 200 + 1, len = 0;
    char *s = malloc(cap);

    cr_assert_not_null(s);
    s[0] = '\0';
    for (int i = 0; i < n; i++) {
        int m = 1 + i % MERCHANTS;
        char key[16] = "";
        if (is_kafka)
            snprintf(key, sizeof(key), "m-%d|", m);
        len += (size_t)snprintf(s + len, cap - len,
                                "%s{\"order_id\":\"%s-%d\",\"merchant_id\":\"m-%d\","
                                "\"amount_cents\":%lld,\"event_time\":%lld}\n",
                                key, prefix, i, m, (long long)(base + i),
                                (long long)(EVENT_MS + i * 60000LL));
    }
    return s;
}

static void kcat_argv(struct env *v, const char *path, char *argv[16])
{
    char *a[] = {"/usr/bin/kcat", "-P", "-b",         v->bs, "-t", "orders", "-K", "|", "-z",
                 "lz4",           "-l", (char *)path, NULL};
    memcpy(argv, a, sizeof(a));
}

/* Produces the stream copies (kcat, keyed by merchant); waits when is_wait. */
static void produce(struct env *v, const char *prefix, int n, int64_t base, bool is_wait)
{
    char path[700], tag[32], *argv[16];
    char *text = orders_text(prefix, n, base, true);

    snprintf(tag, sizeof(tag), "kcat%d", ++v->runs);
    snprintf(path, sizeof(path), "%s/%s.in", v->dir, tag);
    write_file(path, text);
    free(text);
    kcat_argv(v, path, argv);
    v->consumed += n;
    if (is_wait)
        cr_assert_eq(it_run(v->dir, tag, argv, NULL, 30000), 0, "kcat failed");
    else
        it_spawn(&v->kcat, v->dir, tag, argv, NULL);
}

/* Runs lambda-batch import of the import copies; its stdout into out (caller frees). */
/* Runs lambda-batch import of the import copies (in p, when not NULL: then it returns at
 * once and *out is NULL); its stdout into out (caller frees). */
static void import_in(struct env *v, struct it_proc *p, const char *prefix, int n, int64_t base,
                      char **out)
{
    char path[700], tag[32], file[700];
    char *text = orders_text(prefix, n, base, false);

    snprintf(tag, sizeof(tag), "import%d", ++v->runs);
    snprintf(file, sizeof(file), "%s/%s.ndjson", v->dir, tag);
    write_file(file, text);
    free(text);
    char *argv[] = {"lambda-batch", "import", "--data-dir", v->data, file, NULL};
    *out = NULL;
    if (p) {
        it_spawn(p, v->dir, tag, argv, child_env);
        return;
    }
    cr_assert_eq(it_run(v->dir, tag, argv, child_env, 90000), 0, "import failed");
    snprintf(path, sizeof(path), "%s/%s.out", v->dir, tag);
    *out = it_read_file(path, NULL);
    cr_assert_not_null(*out);
}

static void import(struct env *v, const char *prefix, int n, int64_t base, char **out)
{
    import_in(v, NULL, prefix, n, base, out);
}

static void batch_run(struct env *v)
{
    char tag[32];
    char *argv[] = {"lambda-batch", "run", "--data-dir", v->data, "--brokers", v->bs, NULL};

    snprintf(tag, sizeof(tag), "run%d", ++v->runs);
    cr_assert_eq(it_run(v->dir, tag, argv, child_env, 90000), 0, "batch run failed");
}

static void speed_start(struct env *v)
{
    char tag[32];
    char *argv[] = {"lambda-speed", "--brokers", v->bs, "--data-dir", v->data, NULL};

    snprintf(tag, sizeof(tag), "speed%d", ++v->speeds);
    it_spawn(&v->speed, v->dir, tag, argv, child_env);
    cr_assert(it_wait_log(&v->speed, "msg=started", 30000), "lambda-speed did not start");
}

static void speed_stop(struct env *v)
{
    cr_assert_eq(it_signal(&v->speed, SIGTERM, 20000), 0);
}

static int64_t db_int(struct env *v, const char *file, const char *sql)
{
    char path[700];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t r = -1;

    snprintf(path, sizeof(path), "%s/%s", v->data, file);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        r = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

static int64_t speed_int(struct env *v, const char *sql)
{
    return db_int(v, "speed.db", sql);
}

static bool all_consumed(void *arg)
{
    struct env *v = arg;

    return speed_int(v, "SELECT value FROM counters WHERE name='consumed'") >= v->consumed;
}

/* The speed layer counted every stream copy produced so far. */
static void wait_consumed(struct env *v)
{
    cr_assert(it_wait_until(all_consumed, v, 30000), "lambda-speed did not consume %lld",
              (long long)v->consumed);
}

struct epoch_wait {
    struct env *v;
    int64_t epoch;
};

static bool has_boundary(void *arg)
{
    struct epoch_wait *w = arg;

    return speed_int(w->v, "SELECT coalesce(max(epoch), 0) FROM boundaries") >= w->epoch;
}

/* Waits until the speed layer recorded a boundary two epochs on: a cut taken then covers
 * everything counted before this call. */
static void wait_next_epochs(struct env *v)
{
    struct epoch_wait w = {v, wall_ms() / 1000 + 2};

    cr_assert(it_wait_until(has_boundary, &w, 15000), "no boundary at epoch %lld",
              (long long)w.epoch);
}

static void serve_start(struct env *v)
{
    char *argv[] = {"lambda-serve", "--port", "0", "--data-dir", v->data, NULL};

    it_spawn(&v->serve, v->dir, "serve", argv, child_env);
    cr_assert(it_wait_log(&v->serve, "listening", 15000), "lambda-serve did not start");
    v->port = (int)it_log_int(&v->serve, "listening", "port");
}

static json_t *query(struct env *v, int m, char **body)
{
    char url[256];
    json_t *doc;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/query/m-%d", v->port, m);
    long status = it_http_get(url, body);
    cr_assert_eq(status, 200, "GET %s: %ld %s", url, status, *body ? *body : "");
    doc = json_loads(*body, 0, NULL);
    cr_assert_not_null(doc, "%s", *body);
    return doc;
}

struct caught_up {
    struct env *v;
    int64_t checkpoint_ms; /* speed.db's newest committed checkpoint */
    int64_t version;       /* batch.db's newest published version */
};

/* Serving answers from that checkpoint and version or newer ones (it follows the commits of
 * speed.db and batch.db within about 100 ms, DESIGN.md section 5's /events). */
static bool serve_caught_up(void *arg)
{
    struct caught_up *c = arg;
    char *body = NULL;
    json_t *doc = query(c->v, 1, &body);
    json_t *age = json_object_get(json_object_get(doc, "speed"), "checkpoint_age_ms");
    json_t *version = json_object_get(json_object_get(doc, "batch"), "version");
    bool ok = json_is_integer(age) && wall_ms() - json_integer_value(age) >= c->checkpoint_ms - 2 &&
              json_integer_value(version) >= c->version;

    json_decref(doc);
    free(body);
    return ok;
}

/* Every merchant's /query equals the truth once serving reads speed.db's newest checkpoint
 * (no other waiting: what was taken in counts). */
static void assert_exact(struct env *v, const char *when)
{
    struct caught_up c = {
        v, speed_int(v, "SELECT value FROM meta WHERE key='checkpoint_ms'"),
        db_int(v, "batch.db", "SELECT max(id) FROM versions WHERE state='published'")};

    cr_assert(it_wait_until(serve_caught_up, &c, 5000),
              "%s: serving never read checkpoint %lld and version %lld", when,
              (long long)c.checkpoint_ms, (long long)c.version);
    for (int m = 1; m <= MERCHANTS; m++) {
        int64_t count = 0, revenue = 0;
        char *body = NULL;
        for (int i = 0; i < v->norders; i++)
            if (v->orders[i].merchant == m && v->orders[i].amount >= 0)
                count++, revenue += v->orders[i].amount;
        json_t *doc = query(v, m, &body);
        cr_assert_eq(json_integer_value(json_object_get(doc, "order_count")), count,
                     "%s: m-%d: %s (want %lld orders, %lld cents)", when, m, body, (long long)count,
                     (long long)revenue);
        cr_assert_eq(json_integer_value(json_object_get(doc, "revenue_cents")), revenue,
                     "%s: m-%d: %s (want %lld orders, %lld cents)", when, m, body, (long long)count,
                     (long long)revenue);
        json_decref(doc);
        free(body);
    }
}

/* A data directory with a first version (seed orders, so that serving has a batch layer from
 * the start), a speed layer started after its cut and serving. */
static void env_start(struct env *v, const char *tag)
{
    memset(v, 0, sizeof(*v));
    current = v;
    it_tmpdir(tag, v->dir);
    snprintf(v->data, sizeof(v->data), "%s/data", v->dir);
    it_devkafka(&v->dk, v->dir, 2, v->bs);
    produce(v, "seed", 8, 100, true);
    taken_in_all(v, "seed", 8, 100);
    v->consumed = 0; /* the batch run takes these; the speed layer starts after its cut */
    batch_run(v);
    speed_start(v);
    serve_start(v);
}

/* The import copies of prefix come first: they win, and the stream copies are duplicates. */
static void import_first(struct env *v, const char *prefix, int n, const char *when)
{
    char *out, want[128];

    import(v, prefix, n, 1000, &out);
    snprintf(want, sizeof(want), " orders=%d duplicates=0 ", n);
    cr_assert(strstr(out, want), "%s: %s", when, out);
    free(out);
    taken_in_all(v, prefix, n, 1000);
    assert_exact(v, when);
    produce(v, prefix, n, 5000, true);
    wait_consumed(v);
    assert_exact(v, when);
}

/* The stream copies of prefix come first: the import skips every line. */
static void stream_first(struct env *v, const char *prefix, int n, const char *when)
{
    char *out, want[128];

    produce(v, prefix, n, 3000, true);
    wait_consumed(v);
    taken_in_all(v, prefix, n, 3000);
    assert_exact(v, when);
    import(v, prefix, n, 7000, &out);
    snprintf(want, sizeof(want), " orders=0 duplicates=%d ", n);
    cr_assert(strstr(out, want), "%s: %s", when, out);
    free(out);
    assert_exact(v, when);
}

static bool staged_e(void *arg)
{
    return db_int(arg, "master.db", "SELECT count(*) FROM import_log WHERE order_id LIKE 'e-%'") ==
           3000;
}

Test(imports, meet_the_stream_exactly_in_every_order_of_arrival, .timeout = 300, .fini = fini)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *out;

    env_start(&v, "imports");
    assert_exact(&v, "start");

    /* Before the next cut: both orders of arrival. */
    import_first(&v, "a", 40, "import first, before the cut");
    stream_first(&v, "b", 40, "stream first, before the cut");
    /* A cut (taken from the speed layer's boundary) covering them, published. */
    wait_next_epochs(&v);
    batch_run(&v);
    assert_exact(&v, "after the first cut");
    /* After that cut, both orders again, then another cut. */
    import_first(&v, "c", 40, "import first, after the cut");
    stream_first(&v, "d", 40, "stream first, after the cut");
    batch_run(&v);
    assert_exact(&v, "after the second run");

    /* An import while the speed layer consumes the stream copies of the same orders: the
     * winner of each is whichever copy the speed layer counted first; a lost import line is
     * in import_dups. */
    produce(&v, "e", 1500, 4000, true); /* the first half's stream copies come first */
    import_in(&v, &v.imp, "e", 3000, 8000, &out);
    /* Once its lines are staged (it then waits for the speed layer), the rest of the stream
     * copies race them into the speed layer. */
    cr_assert(it_wait_until(staged_e, &v, 30000), "the import did not stage its lines");
    produce(&v, "e", 3000, 4000, false); /* the first half again: third copies */
    cr_assert_eq(it_wait_exit(&v.imp, 60000), 0);
    cr_assert_eq(it_wait_exit(&v.kcat, 30000), 0);
    wait_consumed(&v);
    int64_t dups = speed_int(&v, "SELECT count(*) FROM import_dups");
    char path[700];
    sqlite3 *m = NULL, *sdb = NULL;
    snprintf(path, sizeof(path), "%s/master.db", v.data);
    cr_assert_eq(sqlite3_open_v2(path, &m, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    snprintf(path, sizeof(path), "%s/speed.db", v.data);
    cr_assert_eq(sqlite3_open_v2(path, &sdb, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL, *dq = NULL;
    cr_assert_eq(sqlite3_prepare_v2(m,
                                    "SELECT seq, order_id, amount_cents FROM import_log WHERE"
                                    " order_id LIKE 'e-%'",
                                    -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(
        sqlite3_prepare_v2(sdb, "SELECT count(*) FROM import_dups WHERE seq=?1", -1, &dq, NULL),
        SQLITE_OK);
    int lost = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 1);
        int i = atoi(id + 2);
        sqlite3_bind_int64(dq, 1, sqlite3_column_int64(st, 0));
        cr_assert_eq(sqlite3_step(dq), SQLITE_ROW);
        bool is_dup = sqlite3_column_int64(dq, 0) > 0;
        sqlite3_reset(dq);
        lost += is_dup;
        taken_in(&v, id, 1 + i % MERCHANTS, is_dup ? 4000 + i : sqlite3_column_int64(st, 2));
    }
    sqlite3_finalize(st);
    sqlite3_finalize(dq);
    sqlite3_close(m);
    sqlite3_close(sdb);
    cr_assert(lost <= dups);
    cr_assert(lost >= 1500, "%d", lost);
    cr_log_info("beside the stream: %d of 3000 import lines lost to their stream copy", lost);
    assert_exact(&v, "an import beside the stream");
    wait_next_epochs(&v);
    batch_run(&v);
    assert_exact(&v, "an import beside the stream, after the run");
    wait_next_epochs(&v);
    batch_run(&v);
    assert_exact(&v, "an import beside the stream, after the next run");

    /* No speed layer: the import publishes a version of its own. Import first, then the
     * stream copies once a speed layer runs again; stream first, then the import. */
    speed_stop(&v);
    import(&v, "f", 40, 1000, &out);
    cr_assert(strstr(out, " orders=40 duplicates=0 ") && strstr(out, " counted_by=batch version="),
              "%s", out);
    free(out);
    taken_in_all(&v, "f", 40, 1000);
    assert_exact(&v, "import first, no speed layer");
    speed_start(&v);
    produce(&v, "f", 40, 5000, true);
    wait_consumed(&v);
    assert_exact(&v, "import first, no speed layer, then the stream");
    produce(&v, "g", 40, 3000, true);
    wait_consumed(&v);
    taken_in_all(&v, "g", 40, 3000);
    assert_exact(&v, "stream first, then no speed layer");
    speed_stop(&v);
    import(&v, "g", 40, 7000, &out);
    cr_assert(strstr(out, " orders=0 duplicates=40 "), "%s", out);
    free(out);
    assert_exact(&v, "stream first, then the import with no speed layer");
    batch_run(&v);
    assert_exact(&v, "no speed layer, after a run");
    speed_start(&v);
    wait_next_epochs(&v);
    batch_run(&v);
    assert_exact(&v, "the end");
    speed_stop(&v);
    it_stop(&v.serve);
    it_stop(&v.dk);
}

static bool judged_h(void *arg)
{
    struct env *v = arg;

    return speed_int(v, "SELECT next_offset FROM offsets WHERE partition = -1") ==
           db_int(v, "master.db", "SELECT max(seq) + 1 FROM import_log");
}

/* Makes speed.db look like a speed layer's from before the import log: no position or
 * boundary for partition -1, no import_dups, no stamp (its schema is applied again at the next
 * writer's open). */
static void make_speed_db_old(struct env *v)
{
    char path[700];
    sqlite3 *db = NULL;

    snprintf(path, sizeof(path), "%s/speed.db", v->data);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    it_sql(db, "DELETE FROM offsets WHERE partition = -1; DELETE FROM boundaries WHERE"
               " partition = -1; DROP TABLE import_dups; PRAGMA user_version = 0");
    sqlite3_close(db);
    cr_assert_eq(speed_int(v, "SELECT count(*) FROM offsets WHERE partition >= 0"), 2);
}

/* An import that stops waiting (import_wait) for a speed layer that never reads its lines,
 * and that speed layer dies (with is_old, its speed.db is one of a speed layer from before the
 * import log: stream ids counted, no position for -1): a batch run with no speed layer must
 * not move those unjudged lines over the stream copies the speed layer counted (the winners),
 * and the speed layer, restarted, judges them duplicates. */
static void unjudged_lines_wait(const char *tag, bool is_old)
{
    static struct env v; /* static: fini() reads it after the test returns */
    char *env[] = {"LAMBDA_EPOCH_MS=1000", "LAMBDA_LOG_LEVEL=info", "LAMBDA_IMPORT_WAIT=300ms",
                   NULL};
    char file[700];

    env_start(&v, tag);
    produce(&v, "h", 20, 3000, true);
    wait_consumed(&v);
    taken_in_all(&v, "h", 20, 3000);
    assert_exact(&v, "stream first");

    /* The speed layer hangs (it keeps speed.lock), the import gives up, the speed layer dies. */
    cr_assert_eq(kill(v.speed.pid, SIGSTOP), 0);
    char *text = orders_text("h", 20, 7000, false);
    snprintf(file, sizeof(file), "%s/h.ndjson", v.dir);
    write_file(file, text);
    free(text);
    char *argv[] = {"lambda-batch", "import", "--data-dir", v.data, file, NULL};
    cr_assert_neq(it_run(v.dir, "import_h", argv, env, 30000), 0, "the import did not give up");
    cr_assert_eq(it_signal(&v.speed, SIGKILL, 20000), 128 + SIGKILL);
    if (is_old)
        make_speed_db_old(&v);
    assert_exact(&v, "the import gave up");

    batch_run(&v);
    assert_exact(&v, "a run with no speed layer");
    cr_assert_eq(db_int(&v, "master.db", "SELECT count(*) FROM import_log WHERE state = 0"), 20,
                 "the unjudged lines stay staged");
    speed_start(&v);
    cr_assert(it_wait_until(judged_h, &v, 30000), "lambda-speed did not read the import log");
    assert_exact(&v, "the speed layer read the lines");
    wait_next_epochs(&v);
    batch_run(&v);
    assert_exact(&v, "a run from the speed layer's cut");
    cr_assert_eq(db_int(&v, "master.db", "SELECT count(*) FROM orders WHERE partition = -1"), 0,
                 "every line lost to its stream copy");
    speed_stop(&v);
    it_stop(&v.serve);
    it_stop(&v.dk);
}

Test(imports, lines_no_speed_layer_judged_wait_for_it, .timeout = 120, .fini = fini)
{
    unjudged_lines_wait("imports_unjudged", false);
}

Test(imports, lines_an_old_speed_layer_never_judged_wait_for_it, .timeout = 120, .fini = fini)
{
    unjudged_lines_wait("imports_old_speed", true);
}
