/* itlib.c - what integration tests share: children, waits, the embedded Kafka, the truth file
 * and an HTTP client (see itlib.h). */
#include "itlib.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "ev.h"

extern char **environ;

#ifdef __SANITIZE_ADDRESS__
/* Criterion 2.4.1 (Debian 12) leaks 48 bytes in its runner, the parent process, when tests with
 * different .timeout values overlap under --jobs 2; LeakSanitizer then fails the whole binary.
 * The suppression names the runner's entry point, so it needs full stacks (the library has no
 * frame pointers), and it cannot hide a leak of a test: tests run in children that are started
 * afresh, whose stacks never pass through criterion_run_all_tests. */
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void);

const char *__lsan_default_suppressions(void)
{
    return "leak:criterion_run_all_tests\n";
}

const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}
#endif

int64_t it_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How often it_wait_until() asks its condition again. */
static const struct timespec wait_until_tick = {.tv_nsec = 20 * 1000 * 1000};

bool it_wait_until(bool (*cond)(void *), void *arg, int64_t timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;

    do {
        if (cond(arg))
            return true;
        nanosleep(&wait_until_tick, NULL);
    } while (it_now_ms() < end);
    return cond(arg);
}

void it_tmpdir(const char *tag, char out[512])
{
    const char *base = getenv("TMPDIR");

    snprintf(out, 512, "%s/lambda-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    cr_assert_not_null(mkdtemp(out), "mkdtemp %s: %s", out, strerror(errno));
}

void it_bin(const char *name, char out[512])
{
    const char *dir = getenv("LAMBDA_BIN");

    if (strchr(name, '/'))
        snprintf(out, 512, "%s", name);
    else
        snprintf(out, 512, "%s/%s", dir && *dir ? dir : "bin", name);
}

void it_spawn(struct it_proc *p, const char *dir, const char *tag, char *const argv[],
              char *const env[])
{
    char path[512];
    pid_t pid;

    memset(p, 0, sizeof(*p));
    snprintf(p->out, sizeof(p->out), "%s/%s.out", dir, tag);
    snprintf(p->err, sizeof(p->err), "%s/%s.err", dir, tag);
    it_bin(argv[0], path);
    pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int o = open(p->out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int e = open(p->err, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (o < 0 || e < 0)
            _exit(126);
        dup2(o, STDOUT_FILENO);
        dup2(e, STDERR_FILENO);
        setpgid(0, 0);
        /* A test that fails or times out must not leave its servers running. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (size_t i = 0; env && env[i]; i++)
            putenv(env[i]);
        execv(path, argv);
        dprintf(e, "exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    p->pid = pid;
}

static int decode(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

static bool reaped(void *arg)
{
    struct it_proc *p = arg;

    if (p->pid > 0 && waitpid(p->pid, &p->status, WNOHANG) == p->pid)
        p->pid = 0;
    return p->pid == 0;
}

int it_wait_exit(struct it_proc *p, int64_t timeout_ms)
{
    if (p->pid != 0 && !(timeout_ms <= 0 ? reaped(p) : it_wait_until(reaped, p, timeout_ms)))
        return -1;
    return decode(p->status);
}

int it_signal(struct it_proc *p, int sig, int64_t timeout_ms)
{
    if (p->pid > 0)
        kill(p->pid, sig);
    return it_wait_exit(p, timeout_ms);
}

void it_stop(struct it_proc *p)
{
    if (p->pid <= 0)
        return;
    if (it_signal(p, SIGTERM, 5000) < 0)
        it_signal(p, SIGKILL, 5000);
}

int it_run(const char *dir, const char *tag, char *const argv[], char *const env[],
           int64_t timeout_ms)
{
    struct it_proc p;
    int rc;

    it_spawn(&p, dir, tag, argv, env);
    rc = it_wait_exit(&p, timeout_ms);
    if (rc < 0)
        it_signal(&p, SIGKILL, 5000);
    return rc;
}

char *it_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;

    if (!f)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

bool it_log_has(const struct it_proc *p, const char *needle)
{
    char *s = it_read_file(p->err, NULL);
    bool has = s && strstr(s, needle);

    free(s);
    return has;
}

struct log_wait {
    struct it_proc *p;
    const char *needle;
};

static bool log_cond(void *arg)
{
    struct log_wait *w = arg;

    return it_log_has(w->p, w->needle) || it_wait_exit(w->p, 0) >= 0;
}

bool it_wait_log(struct it_proc *p, const char *needle, int64_t timeout_ms)
{
    struct log_wait w = {p, needle};

    it_wait_until(log_cond, &w, timeout_ms);
    return it_log_has(p, needle);
}

int it_log_count(const struct it_proc *p, const char *needle)
{
    char *log = it_read_file(p->err, NULL);
    int n = 0;

    for (char *q = log; q && (q = strstr(q, needle)); q++)
        n++;
    free(log);
    return n;
}

struct count_wait {
    const struct it_proc *p;
    const char *needle;
    int n;
};

static bool count_cond(void *arg)
{
    const struct count_wait *w = arg;

    return it_log_count(w->p, w->needle) >= w->n;
}

bool it_wait_log_count(const struct it_proc *p, const char *needle, int n, int64_t timeout_ms)
{
    struct count_wait w = {p, needle, n};

    return it_wait_until(count_cond, &w, timeout_ms);
}

void it_sql(struct sqlite3 *db, const char *fmt, ...)
{
    char buf[4096];
    struct lerr e = {{0}};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    cr_assert_eq(db_exec(db, buf, &e), 0, "%s", e.msg);
}

int64_t it_log_int(const struct it_proc *p, const char *needle, const char *key)
{
    char *s = it_read_file(p->err, NULL), *line = NULL, pat[128];
    int64_t v = -1;

    if (!s)
        return -1;
    for (char *q = s; (q = strstr(q, needle)); q++)
        line = q;
    snprintf(pat, sizeof(pat), " %s=", key);
    if (line) {
        char *eol = strchr(line, '\n'), *k = strstr(line, pat);
        if (k && (!eol || k < eol))
            v = strtoll(k + strlen(pat), NULL, 10);
    }
    free(s);
    return v;
}

static bool file_exists(void *path)
{
    return access(path, R_OK) == 0;
}

void it_devkafka(struct it_proc *p, const char *dir, int partitions, char bootstrap[256])
{
    char bfile[600], parts[16];
    char *s;

    snprintf(bfile, sizeof(bfile), "%s/bootstrap", dir);
    snprintf(parts, sizeof(parts), "%d", partitions);
    char *argv[] = {"lambda-devkafka", "--partitions", parts, "--bootstrap-file", bfile, NULL};
    it_spawn(p, dir, "devkafka", argv, NULL);
    cr_assert(it_wait_until(file_exists, bfile, 10000), "lambda-devkafka did not start");
    s = it_read_file(bfile, NULL);
    cr_assert_not_null(s);
    s[strcspn(s, "\n")] = '\0';
    snprintf(bootstrap, 256, "%s", s);
    free(s);
}

static int reason_index(const char *name)
{
    for (int r = 0; r < EV_REASON_COUNT; r++)
        if (!strcmp(ev_reason_name((enum ev_reason)r), name))
            return r;
    return -1;
}

void it_truth_load(struct it_truth *t, const char *path)
{
    char *s = it_read_file(path, NULL), *save = NULL;
    size_t capm = 0, capn = 0;

    memset(t, 0, sizeof(*t));
    cr_assert_not_null(s, "no truth file '%s'", path);
    for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char word[32], id[65], reason[32];
        long long a, b, c;
        if (line[0] == '#' || sscanf(line, "%31s", word) != 1)
            continue;
        if (!strcmp(word, "merchant") && sscanf(line, "%*s %64s %lld %lld", id, &a, &b) == 3) {
            if (t->nmerchants == capm) {
                capm = capm ? capm * 2 : 256;
                t->merchants = realloc(t->merchants, capm * sizeof(*t->merchants));
            }
            struct it_truth_merchant *m = &t->merchants[t->nmerchants++];
            snprintf(m->merchant_id, sizeof(m->merchant_id), "%s", id);
            m->order_count = a, m->revenue_cents = b;
        } else if (!strcmp(word, "minute") &&
                   sscanf(line, "%*s %64s %lld %lld %lld", id, &a, &b, &c) == 4) {
            if (t->nminutes == capn) {
                capn = capn ? capn * 2 : 1024;
                t->minutes = realloc(t->minutes, capn * sizeof(*t->minutes));
            }
            struct it_truth_minute *m = &t->minutes[t->nminutes++];
            snprintf(m->merchant_id, sizeof(m->merchant_id), "%s", id);
            m->minute_ms = a, m->order_count = b, m->revenue_cents = c;
        } else if (!strcmp(word, "reject") && sscanf(line, "%*s %31s %lld", reason, &a) == 2) {
            int r = reason_index(reason);
            cr_assert(r > 0, "unknown reason '%s' in truth file", reason);
            t->rejects[r] = a;
        } else if (sscanf(line, "%*s %lld", &a) == 1) {
            if (!strcmp(word, "produced"))
                t->produced = a;
            else if (!strcmp(word, "valid"))
                t->valid = a;
            else if (!strcmp(word, "duplicates"))
                t->duplicates = a;
            else if (!strcmp(word, "late"))
                t->late = a;
            else if (!strcmp(word, "invalid"))
                t->invalid = a;
        }
    }
    free(s);
}

void it_truth_free(struct it_truth *t)
{
    free(t->merchants);
    free(t->minutes);
    memset(t, 0, sizeof(*t));
}

const struct it_truth_merchant *it_truth_find(const struct it_truth *t, const char *merchant_id)
{
    for (size_t i = 0; i < t->nmerchants; i++)
        if (!strcmp(t->merchants[i].merchant_id, merchant_id))
            return &t->merchants[i];
    return NULL;
}

void it_truth_add(struct it_truth *a, const struct it_truth *b)
{
    a->produced += b->produced, a->valid += b->valid, a->duplicates += b->duplicates;
    a->late += b->late, a->invalid += b->invalid;
    for (int r = 0; r < 16; r++)
        a->rejects[r] += b->rejects[r];
    for (size_t i = 0; i < b->nmerchants; i++) {
        struct it_truth_merchant *m =
            (struct it_truth_merchant *)it_truth_find(a, b->merchants[i].merchant_id);
        if (!m) {
            a->merchants = realloc(a->merchants, (a->nmerchants + 1) * sizeof(*a->merchants));
            m = &a->merchants[a->nmerchants++];
            *m = b->merchants[i];
            continue;
        }
        m->order_count += b->merchants[i].order_count;
        m->revenue_cents += b->merchants[i].revenue_cents;
    }
    a->minutes = realloc(a->minutes, (a->nminutes + b->nminutes + 1) * sizeof(*a->minutes));
    memcpy(a->minutes + a->nminutes, b->minutes, b->nminutes * sizeof(*b->minutes));
    a->nminutes += b->nminutes; /* the same merchant-minute may now appear twice: sum on use */
}

struct body {
    char *buf;
    size_t len;
};

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    struct body *b = user;

    b->buf = realloc(b->buf, b->len + size * n + 1);
    memcpy(b->buf + b->len, data, size * n);
    b->len += size * n;
    b->buf[b->len] = '\0';
    return size * n;
}

long it_http_get(const char *url, char **body)
{
    CURL *c = curl_easy_init();
    struct body b = {NULL, 0};
    long status = 0;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (body)
        *body = b.buf ? b.buf : strdup("");
    else
        free(b.buf);
    return status;
}

/* Chromium driven through the DevTools protocol on a pipe (--remote-debugging-pipe: it reads
 * commands on fd 3 and writes answers on fd 4, each a JSON text ended by a NUL). The page keeps
 * an EventSource open, which stalls --dump-dom --virtual-time-budget, so the test asks the live
 * page instead. */

void it_cdp_start(struct it_cdp *c, const char *dir, const char *profile)
{
    int to[2], from[2];
    char udd[700], home[620], out[700];

    memset(c, 0, sizeof(*c));
    cr_assert_eq(pipe(to), 0);
    cr_assert_eq(pipe(from), 0);
    snprintf(udd, sizeof(udd), "--user-data-dir=%s", profile);
    snprintf(home, sizeof(home), "HOME=%s", dir);
    snprintf(out, sizeof(out), "%s/chromium.err", dir);
    c->pid = fork();
    cr_assert(c->pid >= 0);
    if (c->pid == 0) {
        char *env[] = {home, NULL};
        char *argv[] = {"/usr/bin/chromium",
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--hide-scrollbars",
                        "--window-size=1280,900",
                        udd,
                        "--remote-debugging-pipe",
                        "about:blank",
                        NULL};
        int e = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int t3 = dup(to[0]), f4 = dup(from[1]);
        dup2(t3, 3);
        dup2(f4, 4);
        if (e >= 0) {
            dup2(e, 1);
            dup2(e, 2);
        }
        for (int fd = 5; fd < 1024; fd++)
            close(fd);
        execve(argv[0], argv, env);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    c->to = to[1];
    c->from = from[0];
    c->next_id = 1;
}

/* True once the browser has exited; reaps it then, so the waitpid below does not block. */
static bool cdp_exited(void *arg)
{
    struct it_cdp *c = arg;
    return waitpid(c->pid, NULL, WNOHANG) == c->pid;
}

void it_cdp_stop(struct it_cdp *c)
{
    if (c->pid <= 0)
        return;
    close(c->to);
    close(c->from);
    kill(c->pid, SIGTERM);
    if (!it_wait_until(cdp_exited, c, 5000))
        kill(c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
    free(c->buf);
    c->pid = 0;
}

/* The next message from chromium (caller decrefs), or NULL after timeout_ms. */
static json_t *cdp_read(struct it_cdp *c, int64_t timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;

    for (;;) {
        char *nul = c->len ? memchr(c->buf, '\0', c->len) : NULL;
        if (nul) {
            json_t *m = json_loads(c->buf, 0, NULL);
            size_t used = (size_t)(nul - c->buf) + 1;
            memmove(c->buf, nul + 1, c->len - used);
            c->len -= used;
            return m;
        }
        int64_t left = end - it_now_ms();
        struct pollfd p = {.fd = c->from, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return NULL;
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? 2 * c->cap : 1 << 20;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t n = read(c->from, c->buf + c->len, c->cap - c->len);
        if (n <= 0)
            return NULL;
        c->len += (size_t)n;
    }
}

/* Sends method with params (stolen), in the page's session once there is one; returns the
 * answer's "result" (caller decrefs). */
static json_t *cdp_call(struct it_cdp *c, const char *method, json_t *params)
{
    int id = c->next_id++;
    json_t *msg = json_pack("{s:i,s:s,s:o}", "id", id, "method", method, "params", params);
    char *text;

    if (c->session[0])
        json_object_set_new(msg, "sessionId", json_string(c->session));
    text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    cr_assert_eq(write(c->to, text, strlen(text) + 1), (ssize_t)strlen(text) + 1);
    free(text);
    for (;;) {
        json_t *m = cdp_read(c, 30000), *r;
        cr_assert_not_null(m, "chromium did not answer %s", method);
        if (json_integer_value(json_object_get(m, "id")) != id) {
            json_decref(m);
            continue;
        }
        cr_assert_null(json_object_get(m, "error"), "%s failed", method);
        r = json_incref(json_object_get(m, "result"));
        json_decref(m);
        return r;
    }
}

/* Opens url in a new page and attaches to it. */
void it_cdp_open(struct it_cdp *c, const char *url)
{
    json_t *r = cdp_call(c, "Target.createTarget", json_pack("{s:s}", "url", url));
    json_t *a =
        cdp_call(c, "Target.attachToTarget",
                 json_pack("{s:s,s:b}", "targetId",
                           json_string_value(json_object_get(r, "targetId")), "flatten", 1));

    snprintf(c->session, sizeof(c->session), "%s",
             json_string_value(json_object_get(a, "sessionId")));
    json_decref(r);
    json_decref(a);
}

/* The string a JavaScript expression evaluates to in the page (caller frees); "" when it is
 * not a string (yet). */
char *it_cdp_eval(struct it_cdp *c, const char *expr)
{
    json_t *r = cdp_call(c, "Runtime.evaluate",
                         json_pack("{s:s,s:b}", "expression", expr, "returnByValue", 1));
    const char *v = json_string_value(json_object_get(json_object_get(r, "result"), "value"));
    char *out = strdup(v ? v : "");

    json_decref(r);
    return out;
}

struct cdp_want {
    struct it_cdp *c;
    const char *expr, *want;
};

static bool cdp_evaluates(void *arg)
{
    const struct cdp_want *w = arg;
    char *v = it_cdp_eval(w->c, w->expr);
    bool ok = !strcmp(v, w->want);
    free(v);
    return ok;
}

/* Waits until expr evaluates to want; false after timeout_ms. */
bool it_cdp_wait(struct it_cdp *c, const char *expr, const char *want, int64_t timeout_ms)
{
    struct cdp_want w = {c, expr, want};
    return it_wait_until(cdp_evaluates, &w, timeout_ms);
}

static int b64_value(char ch)
{
    const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = ch ? strchr(abc, ch) : NULL;

    return p ? (int)(p - abc) : -1;
}

/* Saves a screenshot of the page to path; its size in bytes. */
size_t it_cdp_screenshot(struct it_cdp *c, const char *path)
{
    json_t *r = cdp_call(c, "Page.captureScreenshot", json_pack("{s:s}", "format", "png"));
    const char *d = json_string_value(json_object_get(r, "data"));
    FILE *f = fopen(path, "wb");
    unsigned acc = 0;
    int bits = 0;
    size_t n = 0;

    cr_assert(d && f);
    for (; *d; d++) {
        int v = b64_value(*d);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            fputc((int)((acc >> bits) & 0xff), f);
            n++;
        }
    }
    fclose(f);
    json_decref(r);
    return n;
}
