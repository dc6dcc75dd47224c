/* it_demo.c - `make demo` as a newcomer runs it: scripts/demo.sh starts the embedded Kafka,
 * every layer and the producer, and Ctrl-C stops all of it.
 *
 * The script runs in a process group of its own, as under a terminal, and gets SIGINT the way
 * Ctrl-C delivers it: to the whole group at once. It must then leave no process behind within
 * 15 s (no batch loop's sleep, no batch run in flight), say that it stopped, and never take the
 * stop for a layer that died. What it cannot show: a real terminal's job control. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itlib.h"

struct demo {
    pid_t pid; /* also the process group's id */
    int status;
    bool is_reaped;
    char dir[512], out[600], data[600];
};

static void demo_start(struct demo *d, const char *batch_seconds)
{
    const char *src = getenv("LAMBDA_SRC");
    char script[600], bin[512];

    it_tmpdir("demo", d->dir);
    snprintf(d->out, sizeof(d->out), "%s/demo.out", d->dir);
    snprintf(d->data, sizeof(d->data), "%s/data", d->dir);
    snprintf(script, sizeof(script), "%s/scripts/demo.sh", src ? src : ".");
    it_bin("lambda-serve", bin);
    *strrchr(bin, '/') = '\0';
    d->pid = fork();
    cr_assert(d->pid >= 0);
    if (d->pid == 0) {
        setpgid(0, 0);
        if (!freopen(d->out, "w", stdout) || dup2(fileno(stdout), 2) < 0)
            _exit(127);
        setenv("DEMO_BIN", bin, 1);
        setenv("DEMO_PORT", "0", 1);
        setenv("DEMO_RATE", "200", 1);
        setenv("DEMO_BATCH_SECONDS", batch_seconds, 1);
        setenv("LAMBDA_DATA_DIR", d->data, 1);
        unsetenv("LAMBDA_BROKERS");
        unsetenv("LAMBDA_CONFIG");
        execl("/bin/sh", "sh", script, (char *)NULL);
        _exit(127);
    }
    setpgid(d->pid, d->pid); /* either side may win the race; both ask the same */
}

static bool demo_says(void *arg)
{
    struct demo *d = arg;
    char *text = it_read_file(d->out, NULL);
    bool has = text && strstr(text, "lambda-stack is running");
    free(text);
    return has;
}

/* True once the script is reaped and no process of its group is left. */
static bool group_is_empty(void *arg)
{
    struct demo *d = arg;
    if (!d->is_reaped && waitpid(d->pid, &d->status, WNOHANG) == d->pid)
        d->is_reaped = true;
    return d->is_reaped && kill(-d->pid, 0) == -1 && errno == ESRCH;
}

static void demo_kill(struct demo *d)
{
    if (d->pid > 0 && !group_is_empty(d)) {
        kill(-d->pid, SIGKILL);
        if (!d->is_reaped)
            waitpid(d->pid, &d->status, 0);
    }
}

static bool file_has(const char *path, const char *needle)
{
    char *text = it_read_file(path, NULL);
    bool has = text && strstr(text, needle);
    free(text);
    return has;
}

struct batch_wait {
    const char *log;
};

static bool batch_published(void *arg)
{
    const struct batch_wait *w = arg;
    return file_has(w->log, "batch published");
}

/* A batch interval far longer than the 15 s allowed: the old loop's sleep outlived the demo. */
Test(demo, ctrl_c_leaves_no_process_behind_and_says_it_stopped, .timeout = 90)
{
    struct demo d = {0};
    char serve_log[700];

    demo_start(&d, "40");
    if (!it_wait_until(demo_says, &d, 30000)) {
        demo_kill(&d);
        cr_assert_fail("the demo did not come up; it said:\n%s", it_read_file(d.out, NULL));
    }
    snprintf(serve_log, sizeof(serve_log), "%s/logs/serve.log", d.data);
    cr_assert(file_has(serve_log, "listening"));

    kill(-d.pid, SIGINT);
    bool is_empty = it_wait_until(group_is_empty, &d, 15000);
    char *out = it_read_file(d.out, NULL);
    demo_kill(&d);
    cr_assert(is_empty, "processes of the demo were left 15 s after Ctrl-C; it said:\n%s", out);
    cr_assert(WIFEXITED(d.status) && WEXITSTATUS(d.status) == 0, "demo exit status %d\n%s",
              d.status, out);
    cr_assert(strstr(out, "stopped; data in"), "%s", out);
    cr_assert(!strstr(out, "a layer exited"), "a normal stop was reported as a crash:\n%s", out);
    free(out);
}

/* Ctrl-C while the batch loop has runs going every second: a run in flight is stopped too. */
Test(demo, ctrl_c_during_batch_runs_leaves_no_process_behind, .timeout = 90)
{
    struct demo d = {0};
    char batch_log[700];

    demo_start(&d, "1");
    snprintf(batch_log, sizeof(batch_log), "%s/logs/batch.log", d.data);
    struct batch_wait w = {batch_log};
    if (!it_wait_until(demo_says, &d, 30000) || !it_wait_until(batch_published, &w, 30000)) {
        demo_kill(&d);
        cr_assert_fail("the demo did not publish a batch; it said:\n%s", it_read_file(d.out, NULL));
    }
    kill(-d.pid, SIGINT);
    bool is_empty = it_wait_until(group_is_empty, &d, 15000);
    char *out = it_read_file(d.out, NULL);
    demo_kill(&d);
    cr_assert(is_empty, "processes of the demo were left 15 s after Ctrl-C; it said:\n%s", out);
    cr_assert(WIFEXITED(d.status) && WEXITSTATUS(d.status) == 0, "%s", out);
    cr_assert(!strstr(out, "a layer exited"), "%s", out);
    free(out);
}
