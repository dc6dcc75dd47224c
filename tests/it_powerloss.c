/* it_powerloss.c - power loss at every sync point of every layer, as SQLite's crash tests do.
 *
 * One scripted run drives the real binaries, each with the powerloss VFS preloaded
 * (tests/powerloss/): a stream into the speed layer (checkpoints), a batch run (ingest and
 * publish), the speed layer's expiry against it and a graceful restart, more stream, an import,
 * a second batch run and expiry. A dry run counts each process's xSync calls; then, for a point
 * (process, N), the run is repeated with the power going out at that process's N-th xSync: every
 * layer is SIGKILLed at once (no preloaded process writes after the mark), every file is rolled
 * back to its last synced state (or, in tear mode, the file being synced keeps its unsynced
 * writes but its last page is torn), the -shm files are removed. The layers restart and every
 * merchant's /query answer must equal the truth of what was durably taken in - the whole stream
 * (Kafka holds it) plus the import once it returned (with a speed layer running it returns
 * once a speed checkpoint counted its lines) - first before any new batch run (a
 * rolled-back publish that the speed layer already expired against shows here as an undercount),
 * then after the import is rerun (an operator reruns what did not return) and a batch run.
 *
 * What it cannot prove: lambda-devkafka keeps Kafka in memory and keeps running, so broker
 * durability is out of scope; the VFS does not model reordered writes within a file between
 * syncs nor lost directory entries (see vfs.c); the sync points are those this script reaches,
 * and their numbering depends on timing (autocheckpoints), so a point is a place in this run,
 * not a fixed line of code. make test runs a sample of the points (release build only: the
 * preload is not built for the sanitizers); make faults runs every point in both modes.
 * POWERLOSS_POINT=<role>:<n> runs one point (0: only the dry run). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itlib.h"
#include "tests/powerloss/powerloss.h"

#define MAX_POINTS 512

/* One undo record header: 'W', offset, len, old_len. */
struct undo_rec {
    uint64_t off, len, old_len;
    long pos; /* where its old bytes start in the log */
};

/* Reads the log at path into recs (caller frees); *synced gets the 'S' size. */
static int undo_read(const char *path, struct undo_rec **recs, size_t *n, uint64_t *synced,
                     FILE **keep)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 0;
    int c;

    *recs = NULL, *n = 0, *synced = 0;
    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF) {
        uint64_t u[3];
        if (c == 'S') {
            if (fread(u, 8, 1, f) != 1)
                break;
            *synced = u[0];
        } else if (c == 'W') {
            if (fread(u, 8, 3, f) != 3)
                break;
            if (*n == cap) {
                cap = cap ? cap * 2 : 64;
                *recs = realloc(*recs, cap * sizeof(**recs));
                if (!*recs)
                    abort();
            }
            (*recs)[*n] = (struct undo_rec){u[0], u[1], u[2], ftell(f)};
            if (fseek(f, (long)u[2], SEEK_CUR) != 0)
                break;
            ++*n;
        } else {
            break; /* a record cut short by the kill: what follows it never happened */
        }
    }
    *keep = f;
    return 0;
}

/* Writes len bytes at off of fd: the old bytes from the log, zeros where there were none. */
static int restore_range(int fd, FILE *log, const struct undo_rec *r, uint64_t from, uint64_t to)
{
    char buf[65536];

    for (uint64_t at = from; at < to;) {
        size_t k = (size_t)(to - at < sizeof(buf) ? to - at : sizeof(buf));
        uint64_t rel = at - r->off;

        memset(buf, 0, k);
        if (rel < r->old_len) {
            size_t have = (size_t)(r->old_len - rel < k ? r->old_len - rel : k);
            if (fseek(log, r->pos + (long)rel, SEEK_SET) != 0 || fread(buf, 1, have, log) != have)
                return -1;
        }
        if (pwrite(fd, buf, k, (off_t)at) != (ssize_t)k)
            return -1;
        at += k;
    }
    return 0;
}

static int undo_one(const char *file, const char *log_path, bool torn)
{
    struct undo_rec *recs;
    size_t n;
    uint64_t synced;
    FILE *log;
    int fd, rc = 0;

    if (undo_read(log_path, &recs, &n, &synced, &log) != 0)
        return -1;
    fd = open(file, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        fclose(log);
        free(recs);
        return -1;
    }
    if (torn) {
        /* Everything reached the disk but the second half of the last write. */
        if (n > 0) {
            const struct undo_rec *r = &recs[n - 1];
            rc = restore_range(fd, log, r, r->off + r->len / 2, r->off + r->len);
        }
    } else {
        for (size_t i = n; i-- > 0 && rc == 0;)
            rc = restore_range(fd, log, &recs[i], recs[i].off, recs[i].off + recs[i].len);
        if (rc == 0 && ftruncate(fd, (off_t)synced) != 0)
            rc = -1;
    }
    close(fd);
    fclose(log);
    free(recs);
    return rc;
}

int undo_apply(const char *dir, const char *mark_path, bool torn)
{
    char torn_file[1024] = "", path[1200], file[1200];
    DIR *d = opendir(dir);
    struct dirent *de;
    int count = 0;
    FILE *m;

    if (!d)
        return -1;
    if (torn && (m = fopen(mark_path, "r"))) {
        char role[64];
        long n;
        if (fscanf(m, "%63s %ld %1023s", role, &n, torn_file) != 3)
            torn_file[0] = '\0';
        fclose(m);
    }
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len > 5 && !strcmp(de->d_name + len - 5, "-undo")) {
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            snprintf(file, sizeof(file), "%s/%.*s", dir, (int)(len - 5), de->d_name);
            if (undo_one(file, path, torn && !strcmp(file, torn_file)) != 0) {
                closedir(d);
                return -1;
            }
            unlink(path);
            count++;
        } else if (len > 4 && !strcmp(de->d_name + len - 4, "-shm")) {
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return count;
}

/* The stack of one scripted run. */
struct run {
    char dir[512], data[600], bs[256], url[128], mark[700], synclog[700], so[600];
    char imp_file[700];
    struct it_proc kafka, speed, serve, job;
    struct it_truth stream, imp;
    bool import_done;      /* lambda-batch import returned */
    bool import_published; /* and its orders count (the speed layer counted them) */
    bool import_in_flight; /* the power went out during it: they may count */
    bool lost, torn;
    const char *target; /* the role whose at-th sync loses the power; NULL for the dry run */
    long at;
    int speed_starts, serve_starts;
    /* The preload's environment for the next process. */
    char env_so[700], env_mark[720], env_role[64], env_at[32], env_log[720];
    char *env[6];
};

static char **preload_env(struct run *r, const char *role)
{
    snprintf(r->env_so, sizeof(r->env_so), "LD_PRELOAD=%s", r->so);
    snprintf(r->env_mark, sizeof(r->env_mark), "POWERLOSS_MARK=%s", r->mark);
    snprintf(r->env_role, sizeof(r->env_role), "POWERLOSS_ROLE=%s", role);
    snprintf(r->env_at, sizeof(r->env_at), "POWERLOSS_AT=%ld",
             r->target && !strcmp(r->target, role) ? r->at : 0L);
    snprintf(r->env_log, sizeof(r->env_log), "POWERLOSS_LOG=%s", r->synclog);
    r->env[0] = r->env_so, r->env[1] = r->env_mark, r->env[2] = r->env_role;
    r->env[3] = r->env_at, r->env[4] = r->env_log, r->env[5] = NULL;
    return r->env;
}

static bool power_out(struct run *r)
{
    if (!r->lost && access(r->mark, F_OK) == 0)
        r->lost = true;
    return r->lost;
}

static void start_speed(struct run *r, bool preload)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "speed%d", ++r->speed_starts);
    char *argv[] = {"lambda-speed", "--brokers",       r->bs,  "--data-dir",
                    r->data,        "--epoch-ms",      "1000", "--checkpoint-ms",
                    "100",          "--kafka-timeout", "5s",   NULL};
    it_spawn(&r->speed, r->dir, tag, argv, preload ? preload_env(r, tag) : NULL);
}

static void start_serve(struct run *r)
{
    int64_t port;
    char tag[32];

    snprintf(tag, sizeof(tag), "serve%d", ++r->serve_starts);
    char *argv[] = {"lambda-serve", "--port",     "0",    "--data-dir",
                    r->data,        "--epoch-ms", "1000", NULL};
    it_spawn(&r->serve, r->dir, tag, argv, NULL);
    cr_assert(it_wait_log(&r->serve, "listening", 15000), "lambda-serve did not start");
    port = it_log_int(&r->serve, "listening", "port");
    cr_assert(port > 0);
    snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%" PRId64, port);
}

/* lambda-gen into Kafka (or, with file, NDJSON into it); the truth is added to t. */
static void gen(struct run *r, int seed, int count, const char *file, struct it_truth *t)
{
    char sd[16], cnt[16], truth[700], tag[32], start[32];
    struct it_truth g;

    snprintf(sd, sizeof(sd), "%d", seed);
    snprintf(cnt, sizeof(cnt), "%d", count);
    snprintf(truth, sizeof(truth), "%s/truth%d", r->dir, seed);
    snprintf(tag, sizeof(tag), "gen%d", seed);
    snprintf(start, sizeof(start), "%" PRId64, (int64_t)1795255200000 + (int64_t)seed * 600000);
    char *argv[] = {"lambda-gen", "--brokers",
                    r->bs,        "--count",
                    cnt,          "--merchants",
                    "40",         "--late-pct",
                    "2",          "--dup-pct",
                    "4",          "--invalid-pct",
                    "2",          "--seed",
                    sd,           "--start-time",
                    start,        "--time-step",
                    "100ms",      "--truth",
                    truth,        file ? "--stdout" : NULL,
                    NULL};
    cr_assert_eq(it_run(r->dir, tag, argv, NULL, 60000), 0, "lambda-gen failed");
    if (file) {
        char out[700];
        snprintf(out, sizeof(out), "%s/%s.out", r->dir, tag);
        cr_assert_eq(rename(out, file), 0);
    }
    it_truth_load(&g, truth);
    it_truth_add(t, &g);
    it_truth_free(&g);
}

/* The truth of what was durably taken in: the stream, and the import once it returned (or,
 * cut short, while the speed layer may have counted it). */
static void truth_now(const struct run *r, struct it_truth *t, bool with_import)
{
    memset(t, 0, sizeof(*t));
    it_truth_add(t, &r->stream);
    if (with_import)
        it_truth_add(t, &r->imp);
}

/* How many merchants' answers differ from t; the first difference in first. */
static size_t mismatches(const struct run *r, const struct it_truth *t, char *first, size_t size)
{
    size_t bad = 0, cap = 64 + t->nmerchants * 70;
    char *url = malloc(cap), *body = NULL;
    size_t n = (size_t)snprintf(url, cap, "%s/query?ids=", r->url);
    json_t *doc, *arr;
    long status;

    for (size_t i = 0; i < t->nmerchants; i++)
        n += (size_t)snprintf(url + n, cap - n, "%s%s", i ? "," : "", t->merchants[i].merchant_id);
    status = it_http_get(url, &body);
    free(url);
    doc = status == 200 ? json_loads(body, 0, NULL) : NULL;
    arr = json_object_get(doc, "merchants");
    if (!json_is_array(arr) || json_array_size(arr) != t->nmerchants) {
        snprintf(first, size, "status %ld body %.200s", status, body ? body : "");
        free(body);
        json_decref(doc);
        return t->nmerchants ? t->nmerchants : 1;
    }
    for (size_t i = 0; i < t->nmerchants; i++) {
        const struct it_truth_merchant *m = &t->merchants[i];
        json_t *a = json_array_get(arr, i);
        int64_t c = json_integer_value(json_object_get(a, "order_count"));
        int64_t v = json_integer_value(json_object_get(a, "revenue_cents"));
        if (c != m->order_count || v != m->revenue_cents) {
            if (!bad)
                snprintf(first, size, "%s: got %" PRId64 "/%" PRId64 " want %" PRId64 "/%" PRId64,
                         m->merchant_id, c, v, m->order_count, m->revenue_cents);
            bad++;
        }
    }
    free(body);
    json_decref(doc);
    return bad;
}

/* Waits until every answer is exact (true), the power goes out (false, before it) or the
 * deadline passes (a failure naming step). */
/* What wait_exact() waits for: every answer exact under either truth, or the power out. */
struct exact_wait {
    struct run *r;
    const struct it_truth *t, *alt;
    bool watch_power;
    char *first; /* 300 bytes: the first mismatch seen */
    size_t bad;
    bool is_exact;
};

static bool exact_or_out(void *arg)
{
    struct exact_wait *w = arg;
    char other[300];

    if (w->watch_power && power_out(w->r))
        return true;
    w->is_exact = (w->bad = mismatches(w->r, w->t, w->first, 300)) == 0 ||
                  (w->r->import_in_flight && mismatches(w->r, w->alt, other, sizeof(other)) == 0);
    return w->is_exact;
}

static bool wait_exact(struct run *r, const char *step, bool watch_power)
{
    char first[300] = "";
    struct it_truth t, alt;
    size_t bad = 0, nm;
    bool ok = false;

    /* A batch run cut short after the import may or may not have published it: both are
     * exact, a mix of them is not. */
    truth_now(r, &t, r->import_published);
    truth_now(r, &alt, r->import_in_flight);
    nm = t.nmerchants;
    struct exact_wait w = {r, &t, &alt, watch_power, first, 0, false};
    it_wait_until(exact_or_out, &w, 60000);
    bad = w.bad;
    ok = w.is_exact;
    it_truth_free(&t);
    it_truth_free(&alt);
    if (!ok && !(watch_power && r->lost))
        cr_assert_fail("power loss at %s sync %ld (%s): after %s, %zu of %zu merchants differ "
                       "from the truth; first: %s (logs in %s)",
                       r->target ? r->target : "-", r->at, r->torn ? "torn" : "dropped", step, bad,
                       nm, first, r->dir);
    return ok;
}

struct job_wait {
    struct run *r;
    int rc; /* the job's exit code once it ended, else -1 */
};

static bool job_done_or_out(void *arg)
{
    struct job_wait *w = arg;
    return (w->rc = it_wait_exit(&w->r->job, 0)) >= 0 || power_out(w->r);
}

/* Runs a batch command with the preload; false when the power went out during it. */
static bool batch_job(struct run *r, const char *role, char *const argv[])
{
    int rc;

    it_spawn(&r->job, r->dir, role, argv, preload_env(r, role));
    struct job_wait w = {r, -1};
    it_wait_until(job_done_or_out, &w, 120000);
    if (power_out(r))
        return false;
    rc = w.rc;
    cr_assert(rc >= 0, "%s did not finish", role);
    cr_assert_eq(rc, 0, "%s failed (exit %d, logs in %s)", role, rc, r->dir);
    return true;
}

static bool batch_run(struct run *r, const char *role)
{
    char *argv[] = {"lambda-batch", "run",  "--brokers",       r->bs, "--data-dir", r->data,
                    "--epoch-ms",   "1000", "--kafka-timeout", "5s",  NULL};
    bool imported = r->import_done && !r->import_published;

    if (!batch_job(r, role, argv)) {
        r->import_in_flight = imported;
        return false;
    }
    r->import_published = r->import_published || imported;
    return true;
}

static bool batch_import(struct run *r, const char *role)
{
    char *argv[] = {"lambda-batch", "import", r->imp_file,  "--brokers", r->bs,
                    "--data-dir",   r->data,  "--epoch-ms", "1000",      NULL};
    /* With a speed layer running, an import returns once a speed checkpoint counted its
     * lines: they count from then on. Cut short, they may count or not. */
    if (!batch_job(r, role, argv)) {
        r->import_in_flight = true;
        return false;
    }
    r->import_done = true;
    r->import_published = true;
    return true;
}

/* Waits until the running speed layer has logged needle more than seen times (an expiry after
 * a publish); false when the power went out. */
struct log_wait {
    struct run *r;
    const char *needle;
    int seen;
};

static bool logged_or_out(void *arg)
{
    struct log_wait *w = arg;
    return power_out(w->r) || it_log_count(&w->r->speed, w->needle) > w->seen;
}

static bool wait_speed_log(struct run *r, const char *needle, int seen)
{
    struct log_wait w = {r, needle, seen};
    bool is_done = it_wait_until(logged_or_out, &w, 30000);

    if (power_out(r))
        return false;
    cr_assert(is_done, "speed never logged %s (logs in %s)", needle, r->dir);
    return true;
}

/* SIGTERM: the last checkpoint and a clean close; then a new speed layer. */
static bool restart_speed(struct run *r)
{
    it_signal(&r->speed, SIGTERM, 15000);
    if (power_out(r))
        return false;
    start_speed(r, true);
    return true;
}

/* The script; returns when it is done or the power went out (r->lost). */
static void script(struct run *r)
{
    int expired, epochs;

    gen(r, 1, 2000, NULL, &r->stream);
    gen(r, 9, 600, r->imp_file, &r->imp);
    start_speed(r, true);
    start_serve(r);
    if (!wait_exact(r, "the first stream", true) || !batch_run(r, "batch1") ||
        !wait_speed_log(r, "msg=expired", 0) || !restart_speed(r))
        return;
    gen(r, 2, 2000, NULL, &r->stream);
    if (!wait_exact(r, "the second stream", true) || !batch_import(r, "import"))
        return;
    /* The second run must find a newer boundary than the first's cut: when the stream, the
     * restart and the import all fell inside one epoch, the speed layer's newest boundary is
     * still the first run's and the run is rightly "unchanged" (no expiry would follow). The
     * next epoch's start means a boundary covering the second stream and the import is kept. */
    epochs = it_log_count(&r->speed, "msg=epoch_started");
    if (!wait_speed_log(r, "msg=epoch_started", epochs))
        return;
    expired = it_log_count(&r->speed, "msg=expired");
    if (!batch_run(r, "batch2") || !wait_speed_log(r, "msg=expired", expired) || !restart_speed(r))
        return;
    wait_exact(r, "the end of the script", true);
}

static void kill9(struct it_proc *p)
{
    if (p->pid > 0)
        it_signal(p, SIGKILL, 5000);
}

static void run_init(struct run *r, const char *target, long at, bool torn)
{
    char exe[512];
    ssize_t n;

    memset(r, 0, sizeof(*r));
    r->target = target, r->at = at, r->torn = torn;
    it_tmpdir("powerloss", r->dir);
    snprintf(r->data, sizeof(r->data), "%s/data", r->dir);
    snprintf(r->mark, sizeof(r->mark), "%s/power.mark", r->dir);
    snprintf(r->synclog, sizeof(r->synclog), "%s/syncs.log", r->dir);
    snprintf(r->imp_file, sizeof(r->imp_file), "%s/import.ndjson", r->dir);
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    cr_assert(n > 0);
    exe[n] = '\0';
    snprintf(r->so, sizeof(r->so), "%s/powerloss_vfs.so", dirname(exe));
    cr_assert_eq(access(r->so, R_OK), 0, "no %s", r->so);
    cr_assert_eq(mkdir(r->data, 0755), 0);
    it_devkafka(&r->kafka, r->dir, 4, r->bs);
}

static void run_fini(struct run *r)
{
    kill9(&r->job);
    it_stop(&r->serve);
    it_stop(&r->speed);
    it_stop(&r->kafka);
    it_truth_free(&r->stream);
    it_truth_free(&r->imp);
}

/* One point: the script until the power goes out, the loss, the restart and the checks. */
static void one_point(const char *target, long at, bool torn)
{
    struct run r;
    char mark[256] = "";
    int rolled;

    run_init(&r, target, at, torn);
    script(&r);
    if (!r.lost) {
        /* The point lies past what this run reached (the numbering follows timing). */
        cr_log_info("powerloss %s sync %ld: not reached", target, at);
        run_fini(&r);
        return;
    }
    kill9(&r.job);
    kill9(&r.speed);
    kill9(&r.serve);
    {
        char *s = it_read_file(r.mark, NULL);
        if (s)
            snprintf(mark, sizeof(mark), "%.*s", (int)strcspn(s, "\n"), s);
        free(s);
    }
    rolled = undo_apply(r.data, r.mark, torn);
    cr_assert(rolled >= 0, "rollback failed: %s", strerror(errno));
    unlink(r.mark);
    fprintf(stderr, "powerloss point=%s:%ld mode=%s mark=\"%s\" files_rolled_back=%d import=%s\n",
            target, at, torn ? "torn" : "dropped", mark, rolled,
            r.import_done ? "returned" : "not returned");
    /* Restart with nothing preloaded; every answer must be exact before any batch run. */
    start_speed(&r, false);
    start_serve(&r);
    wait_exact(&r, "the restart", false);
    if (!r.import_done) {
        char *argv[] = {"lambda-batch", "import", r.imp_file,   "--brokers", r.bs,
                        "--data-dir",   r.data,   "--epoch-ms", "1000",      NULL};
        cr_assert_eq(it_run(r.dir, "import-again", argv, NULL, 120000), 0, "the rerun import");
        r.import_done = true;
        r.import_published = true; /* counted by the speed layer when it returns */
        r.import_in_flight = false;
        wait_exact(&r, "the rerun import", false);
    }
    {
        char *argv[] = {"lambda-batch", "run",  "--brokers",       r.bs, "--data-dir", r.data,
                        "--epoch-ms",   "1000", "--kafka-timeout", "5s", NULL};
        cr_assert_eq(it_run(r.dir, "batch-after", argv, NULL, 120000), 0, "the batch run after");
        r.import_published = true;
        r.import_in_flight = false;
    }
    wait_exact(&r, "the batch run after the restart", false);
    run_fini(&r);
}

/* The sync points of the dry run: role and count, in the order the roles first synced. */
struct point {
    char role[32];
    long n;
};

static size_t dry_run(struct point *pts, size_t max)
{
    struct run r;
    char *log, *line, *save = NULL;
    size_t np = 0;

    run_init(&r, NULL, 0, false);
    script(&r);
    cr_assert(!r.lost, "the dry run lost power");
    it_stop(&r.speed);
    log = it_read_file(r.synclog, NULL);
    for (line = log ? strtok_r(log, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        char role[32];
        long n;
        size_t i;

        if (sscanf(line, "%31s %ld", role, &n) != 2)
            continue;
        for (i = 0; i < np && strcmp(pts[i].role, role); i++)
            ;
        if (i == np && np < max)
            snprintf(pts[np++].role, sizeof(pts[0].role), "%s", role);
        if (i < np && n > pts[i].n)
            pts[i].n = n;
    }
    free(log);
    for (size_t i = 0; i < np; i++)
        fprintf(stderr, "powerloss dry run: %s syncs=%ld\n", pts[i].role, pts[i].n);
    run_fini(&r);
    return np;
}

/* Every point (make faults: POWERLOSS_ALL=1), or a sample: each process's first and last sync
 * and one in the middle. */
static void points(bool torn)
{
    struct point pts[64] = {{{0}, 0}};
    const char *one = getenv("POWERLOSS_POINT");
    bool all = getenv("POWERLOSS_ALL") && !strcmp(getenv("POWERLOSS_ALL"), "1");
    size_t np;
    int tried = 0;

    /* POWERLOSS_POINT=role:n runs that point alone (to chase a failure), 0 the dry run alone. */
    if (one) {
        char role[32];
        long n;
        if (sscanf(one, "%31[^:]:%ld", role, &n) == 2)
            one_point(role, n, torn);
        else
            dry_run(pts, 64);
        return;
    }
    np = dry_run(pts, 64);
    cr_assert(np > 0, "no layer synced in the dry run");
    for (size_t i = 0; i < np; i++)
        for (long n = 1; n <= pts[i].n; n++) {
            if (!all && n != 1 && n != pts[i].n && n != (pts[i].n + 1) / 2)
                continue;
            /* The sample tears only the last sync of each process. */
            if (!all && torn && n != pts[i].n)
                continue;
            one_point(pts[i].role, n, torn);
            tried++;
        }
    fprintf(stderr, "powerloss mode=%s points_tried=%d\n", torn ? "torn" : "dropped", tried);
}

Test(powerloss, dropped_writes_at_sync_points_are_exact_after_restart, .timeout = 7200)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("the preloaded VFS runs on the release build only");
#endif
    points(false);
}

Test(powerloss, torn_last_page_at_sync_points_is_exact_after_restart, .timeout = 7200)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("the preloaded VFS runs on the release build only");
#endif
    points(true);
}
