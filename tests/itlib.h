/* itlib.h - what integration tests share: temp dirs, child processes, waiting for conditions,
 * the embedded Kafka, lambda-gen's truth file, and an HTTP client (libcurl).
 *
 * Binaries are found in $LAMBDA_BIN (make check sets it; bin/ otherwise). A child's stdout and
 * stderr go to files in the test's directory, so a failing test can show what the child said.
 * Every wait has a deadline: nothing here sleeps and hopes. */
#ifndef LAMBDA_ITLIB_H
#define LAMBDA_ITLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct it_proc {
    pid_t pid;     /* 0 once reaped */
    int status;    /* wait status once reaped */
    char out[512]; /* path of captured stdout */
    char err[512]; /* path of captured stderr */
};

/* A new directory under /tmp (or $TMPDIR), path written into out (512 bytes). */
void it_tmpdir(const char *tag, char out[512]);

/* Path of a project binary ("lambda-speed") into out (512 bytes). */
void it_bin(const char *name, char out[512]);

int64_t it_now_ms(void);

/* Calls cond(arg) every 20 ms until it is true or timeout_ms pass; returns its last answer. */
bool it_wait_until(bool (*cond)(void *), void *arg, int64_t timeout_ms);

/* Starts argv[0] (a project binary name, or a path with '/') with argv, stdout and stderr
 * captured under dir as <tag>.out / <tag>.err. env: NULL or a NULL-terminated list of
 * "KEY=VALUE" added to the environment. Aborts the test on failure to start. */
void it_spawn(struct it_proc *p, const char *dir, const char *tag, char *const argv[],
              char *const env[]);

/* Runs a child to completion (bounded by timeout_ms; killed past it) and returns its exit
 * code, or 128+signal, or -1 on timeout. */
int it_run(const char *dir, const char *tag, char *const argv[], char *const env[],
           int64_t timeout_ms);

/* Waits for the child to exit within timeout_ms; returns exit code, 128+signal, or -1. */
int it_wait_exit(struct it_proc *p, int64_t timeout_ms);

/* Sends sig; then waits up to timeout_ms for exit. Returns as it_wait_exit. */
int it_signal(struct it_proc *p, int sig, int64_t timeout_ms);

/* SIGTERM, bounded wait, SIGKILL: for .fini and cleanup. Safe on a reaped or unstarted child. */
void it_stop(struct it_proc *p);

/* True when the child's stderr file contains needle (a log line such as "msg=ready"). */
bool it_log_has(const struct it_proc *p, const char *needle);

/* Waits until the child's stderr contains needle; false at timeout or if it exited. */
bool it_wait_log(struct it_proc *p, const char *needle, int64_t timeout_ms);

/* How many times needle occurs in the child's stderr. */
int it_log_count(const struct it_proc *p, const char *needle);

/* Waits until needle occurs at least n times in the child's stderr. */
bool it_wait_log_count(const struct it_proc *p, const char *needle, int n, int64_t timeout_ms);

/* Runs printf-formatted SQL on db (a fixture); aborts the test when it fails. */
struct sqlite3;
void it_sql(struct sqlite3 *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Finds "key=<integer>" in the last stderr line containing needle; -1 when absent. */
int64_t it_log_int(const struct it_proc *p, const char *needle, const char *key);

/* Reads a whole file (NUL-terminated, caller frees), NULL when missing. */
char *it_read_file(const char *path, size_t *len);

/* Starts lambda-devkafka with the given partitions; writes the bootstrap address into
 * bootstrap (256 bytes). Aborts the test when it does not come up within 10 s. */
void it_devkafka(struct it_proc *p, const char *dir, int partitions, char bootstrap[256]);

/* lambda-gen's truth file: totals and one row per merchant (and per merchant-minute). */
struct it_truth_merchant {
    char merchant_id[65];
    int64_t order_count, revenue_cents;
};
struct it_truth_minute {
    char merchant_id[65];
    int64_t minute_ms, order_count, revenue_cents;
};
struct it_truth {
    int64_t produced, valid, duplicates, late, invalid;
    int64_t rejects[16]; /* by enum ev_reason */
    struct it_truth_merchant *merchants;
    size_t nmerchants;
    struct it_truth_minute *minutes;
    size_t nminutes;
};

/* Parses a truth file; aborts the test when it cannot. it_truth_free releases it. */
void it_truth_load(struct it_truth *t, const char *path);
void it_truth_free(struct it_truth *t);
/* Adds b's counts into a (several lambda-gen runs with distinct seeds make one stream). */
void it_truth_add(struct it_truth *a, const struct it_truth *b);
/* The merchant's row, or NULL. */
const struct it_truth_merchant *it_truth_find(const struct it_truth *t, const char *merchant_id);

/* GET url with libcurl; returns the HTTP status (0 when the request failed) and the body
 * (NUL-terminated, caller frees) in *body when body is not NULL. */
long it_http_get(const char *url, char **body);

/* Chromium driven through the DevTools protocol on a pipe (--remote-debugging-pipe): a page
 * that keeps an EventSource open stalls --dump-dom --virtual-time-budget, so a test asks the
 * live page instead. it_cdp_start() runs chromium (its log in dir/chromium.err, its profile in
 * profile); it_cdp_open() opens url in a page that the calls after it talk to. */
#include <sys/types.h>
struct it_cdp {
    pid_t pid;
    int to, from; /* our ends of the pipes */
    int next_id;
    char session[128];
    char *buf;
    size_t len, cap;
};
void it_cdp_start(struct it_cdp *c, const char *dir, const char *profile);
void it_cdp_open(struct it_cdp *c, const char *url);
/* The string a JavaScript expression evaluates to (caller frees); "" when not a string. */
char *it_cdp_eval(struct it_cdp *c, const char *expr);
/* Waits until expr evaluates to want; false after timeout_ms. */
bool it_cdp_wait(struct it_cdp *c, const char *expr, const char *want, int64_t timeout_ms);
/* Saves a PNG screenshot of the page to path; its size in bytes. */
size_t it_cdp_screenshot(struct it_cdp *c, const char *path);
void it_cdp_stop(struct it_cdp *c);

#endif
