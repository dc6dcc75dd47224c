/* it_cli.c - the command line contract of every binary (DESIGN.md section 6): --help exits 0
 * and lists every key, a bad flag or a bad value exits 2 naming it on stderr.
 *
 * Only what the contract promises is checked (exit codes, key names), not the help text, which
 * each layer owns. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itlib.h"

#define N(t) (sizeof(t) / sizeof((t)[0]))
#define SHARED_KEYS                                                                                \
    "brokers", "topic", "data_dir", "group", "epoch_ms", "shard_partitions", "partitioner"

struct binary {
    const char *name;
    const char *keys[16];  /* NULL-terminated */
    const char *bad_value; /* a flag and a value it must refuse, naming the key */
    const char *bad_arg, *bad_key;
};

static const struct binary binaries[] = {
    {"lambda-batch", {SHARED_KEYS, NULL}, "--epoch-ms", "soon", "epoch_ms"},
    {"lambda-speed", {SHARED_KEYS, NULL}, "--epoch-ms", "soon", "epoch_ms"},
    {"lambda-serve", {SHARED_KEYS, NULL}, "--port", "http", "port"},
    {"lambda-devkafka",
     {"brokers", "partitions", "topic", "bootstrap_file", NULL},
     "--partitions",
     "many",
     "partitions"},
    {"lambda-gen",
     {"brokers", "topic", "count", "rate", "merchants", "late_pct", "dup_pct", "invalid_pct",
      "seed", "start_time", "time_step", "truth", "stdout", "partitioner", NULL},
     "--count",
     "-5",
     "count"},
};

/* True when a line of text lists key: leading blanks, an optional "--", the key with '_' or
 * '-', then a blank, '=' or the end of the line. */
static bool lists_key(const char *text, const char *key)
{
    for (const char *line = text; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const char *p = line;
        size_t i = 0;
        while (*p == ' ' || *p == '\t')
            p++;
        if (p[0] == '-' && p[1] == '-')
            p += 2;
        while (key[i] && (p[i] == key[i] || (key[i] == '_' && p[i] == '-')))
            i++;
        if (!key[i] && (p[i] == ' ' || p[i] == '\t' || p[i] == '=' || p[i] == '\n' || !p[i]))
            return true;
    }
    return false;
}

static char *read_out(const char *dir, const char *tag, const char *ext)
{
    char path[700];
    char *s;

    snprintf(path, sizeof(path), "%s/%s.%s", dir, tag, ext);
    s = it_read_file(path, NULL);
    cr_assert_not_null(s, "no %s", path);
    return s;
}

Test(cli, every_binary_answers_help_with_exit_0_listing_its_keys, .timeout = 120)
{
    char dir[512];

    it_tmpdir("cli", dir);
    for (size_t b = 0; b < N(binaries); b++) {
        const struct binary *x = &binaries[b];
        char *argv[] = {(char *)x->name, "--help", NULL};
        char *out;

        cr_expect_eq(it_run(dir, x->name, argv, NULL, 30000), 0, "%s --help did not exit 0",
                     x->name);
        out = read_out(dir, x->name, "out");
        for (size_t k = 0; x->keys[k]; k++)
            cr_expect(lists_key(out, x->keys[k]), "%s --help does not list '%s':\n%s", x->name,
                      x->keys[k], out);
        free(out);
    }
}

Test(cli, every_binary_stops_at_a_bad_flag_with_exit_2_naming_it, .timeout = 120)
{
    char dir[512], tag[64];

    it_tmpdir("cli", dir);
    for (size_t b = 0; b < N(binaries); b++) {
        const struct binary *x = &binaries[b];
        char *argv[] = {(char *)x->name, "--no-such-flag", "1", NULL};
        char *err;

        snprintf(tag, sizeof(tag), "%s-flag", x->name);
        cr_expect_eq(it_run(dir, tag, argv, NULL, 30000), 2, "%s --no-such-flag: not exit 2",
                     x->name);
        err = read_out(dir, tag, "err");
        cr_expect(strstr(err, "--no-such-flag"), "%s does not name the flag: %s", x->name, err);
        free(err);
    }
}

Test(cli, every_binary_stops_at_a_bad_value_with_exit_2_naming_the_key, .timeout = 120)
{
    char dir[512], tag[64];

    it_tmpdir("cli", dir);
    for (size_t b = 0; b < N(binaries); b++) {
        const struct binary *x = &binaries[b];
        char *argv[] = {(char *)x->name, (char *)x->bad_value, (char *)x->bad_arg, NULL};
        char *err;

        snprintf(tag, sizeof(tag), "%s-value", x->name);
        cr_expect_eq(it_run(dir, tag, argv, NULL, 30000), 2, "%s %s %s: not exit 2", x->name,
                     x->bad_value, x->bad_arg);
        err = read_out(dir, tag, "err");
        cr_expect(strstr(err, x->bad_key), "%s does not name '%s': %s", x->name, x->bad_key, err);
        free(err);
    }
}

Test(cli, an_unknown_key_in_the_config_file_stops_every_layer, .timeout = 120)
{
    static const char *const layers[] = {"lambda-batch", "lambda-speed", "lambda-serve"};
    char dir[512], path[600], tag[64];
    FILE *f;

    it_tmpdir("cli", dir);
    snprintf(path, sizeof(path), "%s/bad.conf", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("topic = orders\nno_such_key = 1\n", f);
    fclose(f);
    for (size_t b = 0; b < N(layers); b++) {
        char *argv[] = {(char *)layers[b], "--config", path, NULL};
        char *err;

        snprintf(tag, sizeof(tag), "%s-conf", layers[b]);
        cr_expect_eq(it_run(dir, tag, argv, NULL, 30000), 2, "%s: not exit 2", layers[b]);
        err = read_out(dir, tag, "err");
        cr_expect(strstr(err, "no_such_key"), "%s does not name the key: %s", layers[b], err);
        free(err);
    }
}
