/* it_devkafka.c - lambda-devkafka is a real Kafka peer for a plain client (kcat): metadata,
 * produce, consume, broker outages on signal, a clean stop, and --persist across restarts.
 * Each wait inside a test has its own deadline; .timeout is the last resort. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itlib.h"

#define KCAT "/usr/bin/kcat"

static bool file_exists(void *path)
{
    return access(path, R_OK) == 0;
}

/* Starts lambda-devkafka with extra flags (NULL-terminated), tag names its logs; waits for the
 * bootstrap file and copies the address into bootstrap (256 bytes). */
static void start(struct it_proc *p, const char *dir, const char *tag, const char *const *flags,
                  char bootstrap[256])
{
    char bfile[600], *argv[32], *s;
    int n = 0;

    snprintf(bfile, sizeof(bfile), "%s/%s.bootstrap", dir, tag);
    unlink(bfile);
    argv[n++] = "lambda-devkafka";
    argv[n++] = "--bootstrap-file";
    argv[n++] = bfile;
    for (; *flags; flags++)
        argv[n++] = (char *)*flags;
    argv[n] = NULL;
    it_spawn(p, dir, tag, argv, NULL);
    cr_assert(it_wait_until(file_exists, bfile, 10000), "lambda-devkafka did not start");
    s = it_read_file(bfile, NULL);
    cr_assert_not_null(s);
    s[strcspn(s, "\n")] = '\0';
    snprintf(bootstrap, 256, "%s", s);
    free(s);
}

static char *read_path(const char *dir, const char *name)
{
    char path[700];
    char *s;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    s = it_read_file(path, NULL);
    cr_assert_not_null(s, "no %s", path);
    return s;
}

Test(devkafka, starts_and_answers_metadata, .timeout = 120)
{
    struct it_proc dk;
    char dir[512], bs[256];
    char *argv[] = {KCAT, "-L", "-b", bs, "-t", "orders", NULL};

    it_tmpdir("smoke", dir);
    it_devkafka(&dk, dir, 3, bs);
    cr_assert_eq(it_run(dir, "kcat", argv, NULL, 10000), 0);
    char *s = read_path(dir, "kcat.out");
    cr_assert(strstr(s, "with 3 partitions"), "kcat said: %s", s);
    free(s);
    it_stop(&dk);
}

Test(devkafka, prints_its_address_and_stops_with_exit_0_on_sigterm_and_sigint, .timeout = 120)
{
    static const int sigs[] = {SIGTERM, SIGINT};
    char dir[512], bs[256], tag[32];

    it_tmpdir("dk", dir);
    for (size_t i = 0; i < 2; i++) {
        struct it_proc dk;
        char *out, want[300];
        snprintf(tag, sizeof(tag), "dk%zu", i);
        start(&dk, dir, tag, (const char *[]){NULL}, bs);
        cr_expect(!strncmp(bs, "127.0.0.1:", 10), "bootstrap '%s'", bs);
        cr_assert(it_wait_log(&dk, "msg=ready", 10000), "no ready line");
        snprintf(tag, sizeof(tag), "dk%zu.out", i);
        out = read_path(dir, tag);
        snprintf(want, sizeof(want), "%s\n", bs);
        cr_expect_str_eq(out, want, "stdout holds the address, one line");
        free(out);
        cr_expect_eq(it_signal(&dk, sigs[i], 10000), 0, "signal %d: not exit 0", sigs[i]);
    }
}

Test(devkafka, serves_the_brokers_topic_and_partitions_asked_for, .timeout = 120)
{
    struct it_proc dk;
    char dir[512], bs[256];
    char *argv[] = {KCAT, "-L", "-b", bs, NULL};

    it_tmpdir("dk", dir);
    start(&dk, dir, "dk",
          (const char *[]){"--brokers", "3", "--partitions", "6", "--topic", "payments", NULL}, bs);
    cr_assert_eq(it_run(dir, "kcat", argv, NULL, 10000), 0);
    char *s = read_path(dir, "kcat.out");
    cr_expect(strstr(s, " 3 brokers:"), "kcat said: %s", s);
    cr_expect(strstr(s, "topic \"payments\" with 6 partitions"), "kcat said: %s", s);
    for (int p = 0; p < 6; p++) {
        char part[32];
        snprintf(part, sizeof(part), "partition %d,", p);
        cr_expect(strstr(s, part), "no %s in: %s", part, s);
    }
    free(s);
    it_stop(&dk);
}

Test(devkafka, refuses_bad_flags_with_exit_2, .timeout = 120)
{
    static const char *const bad[][4] = {
        {"lambda-devkafka", "--partitions", "0", NULL},
        {"lambda-devkafka", "--brokers", "17", NULL},
        {"lambda-devkafka", "stray-argument", NULL},
        {"lambda-devkafka", "--partition", "3", NULL},
    };
    char dir[512], tag[32];

    it_tmpdir("dk", dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(tag, sizeof(tag), "bad%zu", i);
        cr_expect_eq(it_run(dir, tag, (char *const *)bad[i], NULL, 10000), 2, "%s %s", bad[i][1],
                     bad[i][2] ? bad[i][2] : "");
    }
}

/* Produces lines "key:value" of dir/name with kcat; 0 on success. */
static int produce(const char *dir, const char *bs, const char *name, const char *text)
{
    char path[600];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    char *argv[] = {KCAT, "-P", "-b", (char *)bs, "-t", "orders", "-K", ":", "-l", path, NULL};
    return it_run(dir, "kcat-p", argv, NULL, 20000);
}

/* Consumes the whole topic as sorted "partition offset key:value" lines. */
static char *consume_sorted(const char *dir, const char *bs, const char *tag)
{
    char out[600], cmd[1400];
    char *argv[] = {KCAT, "-C", "-b", (char *)bs,         "-t", "orders", "-o", "beginning",
                    "-e", "-q", "-f", "%p %o %T %k:%s\n", NULL};

    cr_assert_eq(it_run(dir, tag, argv, NULL, 20000), 0, "kcat -C failed");
    snprintf(out, sizeof(out), "%s/%s.out", dir, tag);
    snprintf(cmd, sizeof(cmd), "sort -o '%s.sorted' '%s'", out, out);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "%s.out.sorted", tag);
    return read_path(dir, cmd);
}

/* Removes the "%p %o %T " prefix of each line, keeping "key:value". */
static void keep_key_values(char *s, char *out, size_t size)
{
    size_t n = 0;

    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        char *kv = strchr(strchr(strchr(line, ' ') + 1, ' ') + 1, ' ') + 1;
        n += (size_t)snprintf(out + n, size - n, "%s\n", kv);
    }
}

Test(devkafka, carries_messages_from_a_producer_to_a_consumer, .timeout = 120)
{
    struct it_proc dk;
    char dir[512], bs[256], got[4096];
    char *s;

    it_tmpdir("dk", dir);
    start(&dk, dir, "dk", (const char *[]){"--partitions", "1", NULL}, bs);
    cr_assert_eq(produce(dir, bs, "in.txt",
                         "m-1:{\"order_id\":\"o-1\"}\nm-2:second\nm-1:third, with spaces\n"),
                 0);
    s = consume_sorted(dir, bs, "c1");
    keep_key_values(s, got, sizeof(got));
    /* One partition: the log order is the produce order, offsets 0, 1, 2. */
    cr_expect_str_eq(got, "m-1:{\"order_id\":\"o-1\"}\nm-2:second\nm-1:third, with spaces\n");
    free(s);
    it_stop(&dk);
}

Test(devkafka, takes_brokers_down_on_sigusr1_and_up_on_sigusr2, .timeout = 120)
{
    struct it_proc dk;
    char dir[512], bs[256];
    char *meta[] = {KCAT, "-L", "-b", bs, "-m", "2", NULL};

    it_tmpdir("dk", dir);
    start(&dk, dir, "dk", (const char *[]){NULL}, bs);
    cr_assert(it_wait_log(&dk, "msg=ready", 10000));
    cr_assert_eq(it_run(dir, "meta-before", meta, NULL, 20000), 0);
    kill(dk.pid, SIGUSR1);
    cr_assert(it_wait_log(&dk, "msg=brokers_down", 10000), "no brokers_down line");
    cr_expect_neq(it_run(dir, "meta-down", meta, NULL, 20000), 0, "metadata while down");
    kill(dk.pid, SIGUSR2);
    cr_assert(it_wait_log(&dk, "msg=brokers_up", 10000), "no brokers_up line");
    cr_expect_eq(it_run(dir, "meta-up", meta, NULL, 20000), 0, "no metadata once up again");
    cr_expect_eq(it_signal(&dk, SIGTERM, 10000), 0);
}

Test(devkafka, persist_keeps_messages_offsets_and_timestamps_across_a_restart, .timeout = 120)
{
    struct it_proc dk;
    char dir[512], bs[256], persist[600];
    char *before, *after;

    it_tmpdir("dk", dir);
    snprintf(persist, sizeof(persist), "%s/topic.save", dir);
    start(&dk, dir, "dk1", (const char *[]){"--partitions", "2", "--persist", persist, NULL}, bs);
    cr_assert_eq(produce(dir, bs, "in.txt", "a:1\nb:2\nc:3\nd:4\ne:5\nf:6\n"), 0);
    before = consume_sorted(dir, bs, "before");
    size_t lines = 0;
    for (const char *q = before; (q = strchr(q, '\n')); q++)
        lines++;
    cr_assert_eq(lines, 6, "consumed before the restart: %s", before);
    cr_assert_eq(it_signal(&dk, SIGTERM, 60000), 0, "stop with --persist: not exit 0");
    cr_assert(file_exists(persist), "no persist file");

    start(&dk, dir, "dk2", (const char *[]){"--partitions", "2", "--persist", persist, NULL}, bs);
    after = consume_sorted(dir, bs, "after");
    cr_expect_str_eq(after, before, "partition, offset, timestamp, key and value survive");
    free(before);
    free(after);
    it_stop(&dk);
}
