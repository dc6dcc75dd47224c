/* test_cfg.c - configuration: defaults < file (--config) < LAMBDA_<KEY> < flags, and every
 * way a bad key or value is stopped with a message naming it.
 *
 * Criterion runs each test in its own process, so setenv() stays inside the test; every test
 * still starts by clearing the LAMBDA_ variables of its keys, so the caller's environment
 * cannot leak in. Each test writes its config files into its own mkdtemp() directory. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "itlib.h"

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"port", CFG_INT, "8080", "TCP port to listen on"},
    {"json", CFG_BOOL, "false", "print JSON"},
    {"checkpoint_ms", CFG_MS, "200", "checkpoint interval"},
    {NULL, 0, NULL, NULL},
};

#define N(t) (sizeof(t) / sizeof((t)[0]))

/* Unsets LAMBDA_<KEY> for every key of the table. */
static void clear_env(void)
{
    for (const struct cfg_key *k = keys; k->name; k++) {
        char env[128] = "LAMBDA_";
        size_t n = strlen(env);
        for (const char *p = k->name; *p; p++)
            env[n++] = (char)toupper((unsigned char)*p);
        env[n] = '\0';
        unsetenv(env);
    }
}

/* Runs cfg_load over "prog" followed by the NULL-terminated args. */
static int load(struct cfg *c, struct lerr *e, const char *const *args)
{
    char *argv[CFG_MAX_ARGS + 2];
    int argc = 0;

    argv[argc++] = "prog";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    memset(e, 0, sizeof(*e));
    return cfg_load(c, keys, argc, argv, e);
}

/* Writes text into dir/name; the path goes into path (600 bytes). */
static void write_file(const char *dir, const char *name, const char *text, char path[600])
{
    FILE *f;

    snprintf(path, 600, "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write '%s'", path);
    fputs(text, f);
    fclose(f);
}

static void load_ok(struct cfg *c, const char *const *args)
{
    struct lerr e;

    cr_assert_eq(load(c, &e, args), 0, "cfg_load failed: %s", e.msg);
}

/* cfg_load must fail with exactly this message; what it allocated is released. */
static void load_fails(const char *const *args, const char *want)
{
    struct cfg c;
    struct lerr e;

    cr_expect_eq(load(&c, &e, args), -1, "cfg_load succeeded, wanted: %s", want);
    cr_expect_str_eq(e.msg, want);
    cfg_release(&c);
}

Test(cfg, gives_the_documented_defaults)
{
    struct cfg c;

    clear_env();
    load_ok(&c, (const char *[]){NULL});
    cr_expect_null(cfg_str(&c, "brokers"));
    cr_expect_str_eq(cfg_str(&c, "topic"), "orders");
    cr_expect_str_eq(cfg_str(&c, "data_dir"), "./data");
    cr_expect_str_eq(cfg_str(&c, "group"), "lambda");
    cr_expect_eq(cfg_ms(&c, "epoch_ms"), 60000);
    cr_expect_eq(cfg_ms(&c, "max_future_skew"), 5 * 60 * 1000); /* DESIGN section 2 */
    cr_expect_eq(cfg_ms(&c, "kafka_timeout"), 10000);
    cr_expect_str_eq(cfg_str(&c, "log_level"), "info");
    cr_expect_null(cfg_str(&c, "config"));
    cr_expect_eq(cfg_int(&c, "port"), 8080);
    cr_expect_not(cfg_bool(&c, "json"));
    cr_expect_eq(cfg_ms(&c, "checkpoint_ms"), 200);
    cr_expect_eq(c.nargs, 0);
    cr_expect_eq(c.nkafka, 0);
    cr_expect_not(c.want_help);
    cfg_release(&c);
}

Test(cfg, ranks_default_below_file_below_environment_below_flag)
{
    char dir[512], path[600];
    struct cfg c;

    clear_env();
    it_tmpdir("cfg", dir);
    write_file(dir, "a.conf",
               "# comment\n"
               "; another comment\n"
               "\n"
               "topic = from-file\n"
               "data_dir=from-file\n"
               "group   =   from-file  \n"
               "port = 9000\n",
               path);
    setenv("LAMBDA_DATA_DIR", "from-env", 1);
    setenv("LAMBDA_GROUP", "from-env", 1);
    setenv("LAMBDA_PORT", "9001", 1);
    load_ok(&c, (const char *[]){"--config", path, "--port", "9002", NULL});
    cr_expect_str_eq(cfg_str(&c, "topic"), "from-file");
    cr_expect_str_eq(cfg_str(&c, "data_dir"), "from-env");
    cr_expect_str_eq(cfg_str(&c, "group"), "from-env");
    cr_expect_eq(cfg_int(&c, "port"), 9002);
    cr_expect_str_eq(cfg_str(&c, "max_future_skew"), "5m");
    cr_expect_str_eq(cfg_str(&c, "config"), path);
    cfg_release(&c);

    /* The flag wins over the environment even when it comes before --config. */
    load_ok(&c, (const char *[]){"--group", "from-flag", "--config", path, NULL});
    cr_expect_str_eq(cfg_str(&c, "group"), "from-flag");
    cr_expect_str_eq(cfg_str(&c, "data_dir"), "from-env");
    cr_expect_eq(cfg_int(&c, "port"), 9001);
    cfg_release(&c);
}

Test(cfg, reads_the_file_named_by_lambda_config_unless_a_flag_names_another)
{
    char dir[512], a[600], b[600], joined[700];
    struct cfg c;

    clear_env();
    it_tmpdir("cfg", dir);
    write_file(dir, "a.conf", "topic = a\n", a);
    write_file(dir, "b.conf", "topic = b\n", b);
    setenv("LAMBDA_CONFIG", a, 1);
    load_ok(&c, (const char *[]){NULL});
    cr_expect_str_eq(cfg_str(&c, "topic"), "a");
    cfg_release(&c);
    load_ok(&c, (const char *[]){"--config", b, NULL});
    cr_expect_str_eq(cfg_str(&c, "topic"), "b");
    cfg_release(&c);
    snprintf(joined, sizeof(joined), "--config=%s", b);
    load_ok(&c, (const char *[]){joined, NULL});
    cr_expect_str_eq(cfg_str(&c, "topic"), "b");
    cfg_release(&c);
}

Test(cfg, accepts_every_flag_spelling)
{
    static const struct {
        const char *args[4];
        const char *want;
    } t[] = {
        {{"--data_dir", "/d1", NULL}, "/d1"},
        {{"--data-dir", "/d2", NULL}, "/d2"},
        {{"--data-dir=/d3", NULL}, "/d3"},
        {{"--data_dir=/d4", NULL}, "/d4"},
        {{"--data-dir=a=b", NULL}, "a=b"},
        {{"--data-dir=", NULL}, ""},
        {{"--data-dir", "/first", "--data-dir=/last", NULL}, "/last"},
    };
    struct cfg c;

    clear_env();
    for (size_t i = 0; i < N(t); i++) {
        load_ok(&c, t[i].args);
        cr_expect_str_eq(cfg_str(&c, "data_dir"), t[i].want, "row %zu", i);
        cr_expect_eq(c.nargs, 0, "row %zu", i);
        cfg_release(&c);
    }
    load_ok(&c, (const char *[]){"--epoch-ms", "5s", "--max-future-skew=2m", "--checkpoint_ms",
                                 "150", NULL});
    cr_expect_eq(cfg_ms(&c, "epoch_ms"), 5000);
    cr_expect_eq(cfg_ms(&c, "max_future_skew"), 120000);
    cr_expect_eq(cfg_ms(&c, "checkpoint_ms"), 150);
    cfg_release(&c);
}

Test(cfg, takes_a_bare_bool_flag_as_true)
{
    static const struct {
        const char *args[3];
        const char *env;
        bool want;
        int nargs;
    } t[] = {
        {{"--json", NULL}, NULL, true, 0},
        {{"--json", "status", NULL}, NULL, true, 1}, /* the next word stays positional */
        {{"--json=false", NULL}, NULL, false, 0},
        {{"--json=no", NULL}, "true", false, 0},
        {{"--json=0", NULL}, NULL, false, 0},
        {{"--json=yes", NULL}, NULL, true, 0},
        {{"--json=1", NULL}, NULL, true, 0},
        {{NULL}, "yes", true, 0},
        {{NULL}, "false", false, 0},
        {{"--json", NULL}, "false", true, 0},
    };
    struct cfg c;

    clear_env();
    for (size_t i = 0; i < N(t); i++) {
        if (t[i].env)
            setenv("LAMBDA_JSON", t[i].env, 1);
        else
            unsetenv("LAMBDA_JSON");
        load_ok(&c, t[i].args);
        cr_expect_eq(cfg_bool(&c, "json"), t[i].want, "row %zu", i);
        cr_expect_eq(c.nargs, t[i].nargs, "row %zu", i);
        cfg_release(&c);
    }
}

Test(cfg, stops_at_an_unknown_key_naming_it)
{
    char dir[512], path[600], want[1024];
    struct cfg c;

    clear_env();
    it_tmpdir("cfg", dir);
    write_file(dir, "bad.conf", "topic = t\nbogus_key = 1\n", path);
    snprintf(want, sizeof(want), "unknown key 'bogus_key' (config %s); see --help", path);
    load_fails((const char *[]){"--config", path, NULL}, want);

    load_fails((const char *[]){"--bogus", "1", NULL}, "unknown flag '--bogus'; see --help");
    load_fails((const char *[]){"--bogus=1", NULL}, "unknown flag '--bogus'; see --help");
    load_fails((const char *[]){"--bogus", NULL}, "unknown flag '--bogus'; see --help");
    load_fails((const char *[]){"--kafka.", "x", NULL}, "unknown flag '--kafka.'; see --help");
    load_fails((const char *[]){"--topic", NULL}, "flag '--topic' needs a value");

    /* The environment is shared with everything else: unknown LAMBDA_ names are not ours. */
    setenv("LAMBDA_BOGUS", "1", 1);
    setenv("LAMBDA_BIN", "/nowhere", 1);
    load_ok(&c, (const char *[]){NULL});
    cfg_release(&c);
}

Test(cfg, stops_at_a_bad_value_naming_the_key_and_where_it_came_from)
{
    char dir[512], path[600], want[1024];

    clear_env();
    load_fails((const char *[]){"--port", "-1", NULL},
               "bad value for 'port': '-1' is not a non-negative integer (command line)");
    load_fails((const char *[]){"--port=80x", NULL},
               "bad value for 'port': '80x' is not a non-negative integer (command line)");
    load_fails((const char *[]){"--port", "99999999999999999999", NULL},
               "bad value for 'port': '99999999999999999999' is not a non-negative integer "
               "(command line)");
    load_fails((const char *[]){"--epoch-ms", "1.5s", NULL},
               "bad value for 'epoch_ms': '1.5s' is not a duration (200ms, 5s, 10m, 1h) "
               "(command line)");
    load_fails((const char *[]){"--json=maybe", NULL},
               "bad value for 'json': 'maybe' is not true or false (command line)");
    load_fails((const char *[]){"--log-level", "loud", NULL},
               "bad value for 'log_level': 'loud' is not debug, info, warn or error");

    setenv("LAMBDA_MAX_FUTURE_SKEW", "soon", 1);
    load_fails((const char *[]){NULL}, "bad value for 'max_future_skew': 'soon' is not a duration "
                                       "(200ms, 5s, 10m, 1h) (environment LAMBDA_MAX_FUTURE_SKEW)");
    unsetenv("LAMBDA_MAX_FUTURE_SKEW");

    it_tmpdir("cfg", dir);
    write_file(dir, "bad.conf", "json = perhaps\n", path);
    snprintf(want, sizeof(want), "bad value for 'json': 'perhaps' is not true or false (config %s)",
             path);
    load_fails((const char *[]){"--config", path, NULL}, want);
}

Test(cfg, stops_at_an_unreadable_or_malformed_file)
{
    char dir[512], path[600], want[1024];

    clear_env();
    it_tmpdir("cfg", dir);
    snprintf(path, sizeof(path), "%s/missing.conf", dir);
    snprintf(want, sizeof(want), "cannot open config '%s': No such file or directory", path);
    load_fails((const char *[]){"--config", path, NULL}, want);

    write_file(dir, "syntax.conf", "topic = t\nno equals sign here\n", path);
    snprintf(want, sizeof(want), "cannot parse config '%s': syntax error at line 2", path);
    load_fails((const char *[]){"--config", path, NULL}, want);

    write_file(dir, "section.conf", "[kafka]\nacks = all\n", path);
    snprintf(want, sizeof(want),
             "unknown section '[kafka]' (config %s): use [batch], [speed] or [serve]", path);
    load_fails((const char *[]){"--config", path, NULL}, want);
}

/* cfg_load as a binary named argv0 would run it. */
static int load_as(const char *argv0, struct cfg *c, struct lerr *e, const char *path)
{
    char *argv[] = {(char *)argv0, "--config", (char *)path, NULL};

    memset(e, 0, sizeof(*e));
    return cfg_load(c, keys, 3, argv, e);
}

Test(cfg, reads_shared_keys_and_only_its_own_section_of_a_common_file)
{
    char dir[512], path[600], want[1024];
    struct cfg c;
    struct lerr e;

    clear_env();
    it_tmpdir("cfg", dir);
    write_file(dir, "common.conf",
               "topic = shared\n"
               "group = shared\n"
               "[batch]\n"
               "keep_versions = 3\n"
               "group = batch\n"
               "[speed]\n"
               "group = speed\n"
               "port = 7000\n"
               "[serve]\n"
               "bind = 0.0.0.0\n",
               path);
    cr_assert_eq(load_as("/opt/bin/lambda-speed", &c, &e, path), 0, "%s", e.msg);
    cr_expect_str_eq(cfg_str(&c, "topic"), "shared");
    cr_expect_str_eq(cfg_str(&c, "group"), "speed");
    cr_expect_eq(cfg_int(&c, "port"), 7000);
    cfg_release(&c);

    /* A binary whose section is absent reads the shared keys and skips the others' keys. */
    cr_assert_eq(load_as("lambda-gen", &c, &e, path), 0, "%s", e.msg);
    cr_expect_str_eq(cfg_str(&c, "group"), "shared");
    cr_expect_eq(cfg_int(&c, "port"), 8080);
    cfg_release(&c);

    /* In its own section, an unknown key is still an error. */
    cr_expect_eq(load_as("lambda-serve", &c, &e, path), -1);
    snprintf(want, sizeof(want), "unknown key 'bind' (config %s); see --help", path);
    cr_expect_str_eq(e.msg, want);
    cfg_release(&c);
}

Test(cfg, passes_kafka_properties_through)
{
    char dir[512], path[600];
    struct cfg c;

    clear_env();
    it_tmpdir("cfg", dir);
    write_file(dir, "k.conf", "kafka.security.protocol = ssl\nkafka.acks = 1\n", path);
    load_ok(&c,
            (const char *[]){"--config", path, "--kafka.acks", "all", "--kafka.linger.ms=5", NULL});
    cr_assert_eq(c.nkafka, 3);
    cr_expect_str_eq(c.kafka_name[0], "security.protocol");
    cr_expect_str_eq(c.kafka_val[0], "ssl");
    cr_expect_str_eq(c.kafka_name[1], "acks");
    cr_expect_str_eq(c.kafka_val[1], "all"); /* the flag overrides the file */
    cr_expect_str_eq(c.kafka_name[2], "linger.ms");
    cr_expect_str_eq(c.kafka_val[2], "5");
    cfg_release(&c);
}

Test(cfg, keeps_positional_arguments_in_order)
{
    struct cfg c;

    clear_env();
    load_ok(&c, (const char *[]){"import", "--topic", "t", "a.ndjson", "-", "b.csv", "--",
                                 "--not-a-flag", "c", NULL});
    cr_assert_eq(c.nargs, 6);
    cr_expect_str_eq(c.args[0], "import");
    cr_expect_str_eq(c.args[1], "a.ndjson");
    cr_expect_str_eq(c.args[2], "-");
    cr_expect_str_eq(c.args[3], "b.csv");
    cr_expect_str_eq(c.args[4], "--not-a-flag");
    cr_expect_str_eq(c.args[5], "c");
    cr_expect_str_eq(cfg_str(&c, "topic"), "t");
    cfg_release(&c);
}

Test(cfg, sets_want_help_and_still_loads)
{
    struct cfg c;

    clear_env();
    load_ok(&c, (const char *[]){"--help", NULL});
    cr_expect(c.want_help);
    cfg_release(&c);
    load_ok(&c, (const char *[]){"run", "-h", "--topic", "x", NULL});
    cr_expect(c.want_help);
    cr_expect_eq(c.nargs, 1);
    cr_expect_str_eq(cfg_str(&c, "topic"), "x");
    cfg_release(&c);
}

Test(cfg, prints_every_key_with_its_default_in_help)
{
    char dir[512], path[600];
    struct cfg c;
    int fd, saved;
    char *out;

    clear_env();
    it_tmpdir("cfg", dir);
    snprintf(path, sizeof(path), "%s/help.txt", dir);
    load_ok(&c, (const char *[]){"--help", NULL});
    fflush(stdout);
    saved = dup(STDOUT_FILENO);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0 && saved >= 0);
    dup2(fd, STDOUT_FILENO);
    cfg_print_help(&c, "usage: prog [flags]");
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(fd);
    close(saved);
    cfg_release(&c);

    out = it_read_file(path, NULL);
    cr_assert_not_null(out);
    cr_expect(!strncmp(out, "usage: prog [flags]\n", 20), "help: %s", out);
    static const char *const lines[] = {
        "  brokers              text      Kafka bootstrap servers (host:port,...) (default: "
        "unset)\n",
        "  topic                text      Kafka topic of order events (default: orders)\n",
        "  data_dir             text      ",
        "(default: ./data)\n",
        "  group                text      ",
        "  epoch_ms             duration  ",
        "  max_future_skew      duration  ",
        "(default: 5m)\n",
        "  port                 integer   TCP port to listen on (default: 8080)\n",
        "  json                 bool      print JSON (default: false)\n",
        "  kafka.<property>     text      ",
    };
    for (size_t i = 0; i < N(lines); i++)
        cr_expect(strstr(out, lines[i]), "help lacks '%s':\n%s", lines[i], out);
    free(out);
}
