/* cfg.c - configuration: defaults, file, environment and flags, in that order (see cfg.h). */
#include "cfg.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "log.h"
#include "tm.h"

static int find_key(const struct cfg *c, const char *name, size_t len)
{
    for (int i = 0; i < c->nkeys; i++) {
        const char *k = c->keys[i].name;
        size_t j = 0;
        /* "data-dir" and "data_dir" name the same key */
        while (j < len && k[j] && (k[j] == name[j] || (k[j] == '_' && name[j] == '-')))
            j++;
        if (j == len && !k[j])
            return i;
    }
    return -1;
}

static int check_value(const struct cfg_key *k, const char *v, struct lerr *e)
{
    int64_t ms;
    char *end;

    switch (k->type) {
    case CFG_STR:
        return 0;
    case CFG_INT:
        errno = 0;
        if (!isdigit((unsigned char)*v) || (strtoll(v, &end, 10), *end) || errno)
            return lerr_set(e, "bad value for '%s': '%s' is not a non-negative integer", k->name,
                            v);
        return 0;
    case CFG_MS:
        if (tm_parse_duration(v, &ms) != 0)
            return lerr_set(e, "bad value for '%s': '%s' is not a duration (200ms, 5s, 10m, 1h)",
                            k->name, v);
        return 0;
    case CFG_BOOL:
        if (strcmp(v, "true") && strcmp(v, "false") && strcmp(v, "yes") && strcmp(v, "no") &&
            strcmp(v, "1") && strcmp(v, "0"))
            return lerr_set(e, "bad value for '%s': '%s' is not true or false", k->name, v);
        return 0;
    }
    return 0;
}

/* Sets one key from any source; where says which source, for the error message. */
static int set_key(struct cfg *c, const char *name, size_t len, const char *v, const char *where,
                   struct lerr *e)
{
    int i;

    if (len > 6 && strncmp(name, "kafka.", 6) == 0) {
        for (i = 0; i < c->nkafka; i++)
            if (strlen(c->kafka_name[i]) == len - 6 &&
                !strncmp(c->kafka_name[i], name + 6, len - 6))
                break;
        if (i == CFG_MAX_KAFKA)
            return lerr_set(e, "too many kafka.* keys (at most %d)", CFG_MAX_KAFKA);
        if (i == c->nkafka) {
            c->kafka_name[i] = strndup(name + 6, len - 6);
            c->nkafka++;
        }
        free(c->kafka_val[i]);
        c->kafka_val[i] = strdup(v);
        return 0;
    }
    i = find_key(c, name, len);
    if (i < 0)
        return lerr_set(e, "unknown key '%.*s' (%s); see --help", (int)len, name, where);
    if (check_value(&c->keys[i], v, e) != 0) {
        size_t n = strlen(e->msg);
        snprintf(e->msg + n, sizeof(e->msg) - n, " (%s)", where);
        return -1;
    }
    free(c->val[i]);
    c->val[i] = strdup(v);
    return 0;
}

struct file_ctx {
    struct cfg *c;
    struct lerr *e;
    const char *path, *section;
    int failed;
};

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *f = user;
    char where[300];

    if (f->failed)
        return 0;
    snprintf(where, sizeof(where), "config %s", f->path);
    if (section && *section) {
        static const char *const sections[] = {"batch", "speed", "serve", "gen", "devkafka"};
        bool known = false;
        for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
            known = known || !strcmp(section, sections[i]);
        if (!known) {
            lerr_set(f->e, "unknown section '[%s]' (%s): use [batch], [speed] or [serve]", section,
                     where);
            f->failed = 1;
            return 0;
        }
        if (strcmp(section, f->section) != 0)
            return 1; /* another binary's key */
    }
    if (set_key(f->c, name, strlen(name), value, where, f->e) != 0)
        f->failed = 1;
    return !f->failed;
}

/* The file's section for this binary: "lambda-speed" reads [speed]. */
static const char *own_section(const char *argv0)
{
    const char *base = strrchr(argv0, '/');

    base = base ? base + 1 : argv0;
    return strncmp(base, "lambda-", 7) == 0 ? base + 7 : base;
}

static int load_file(struct cfg *c, const char *path, const char *argv0, struct lerr *e)
{
    struct file_ctx f = {c, e, path, own_section(argv0), 0};
    int rc = ini_parse(path, on_ini, &f);

    if (f.failed)
        return -1;
    if (rc == -1)
        return lerr_set(e, "cannot open config '%s': %s", path, strerror(errno));
    if (rc != 0)
        return lerr_set(e, "cannot parse config '%s': syntax error at line %d", path, rc);
    return 0;
}

static int load_env(struct cfg *c, struct lerr *e)
{
    char env[128], where[160];

    for (int i = 0; i < c->nkeys; i++) {
        const char *v;
        size_t n = 0;
        n = (size_t)snprintf(env, sizeof(env), "LAMBDA_");
        for (const char *k = c->keys[i].name; *k && n + 1 < sizeof(env); k++)
            env[n++] = (char)toupper((unsigned char)*k);
        env[n] = '\0';
        v = getenv(env);
        snprintf(where, sizeof(where), "environment %s", env);
        if (v && set_key(c, c->keys[i].name, strlen(c->keys[i].name), v, where, e) != 0)
            return -1;
    }
    return 0;
}

/* Finds --config (or LAMBDA_CONFIG) before anything else, as the file is read first. */
static const char *config_path(int argc, char **argv)
{
    const char *path = getenv("LAMBDA_CONFIG");

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
    }
    return path;
}

static int load_flags(struct cfg *c, int argc, char **argv, struct lerr *e)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v;
        size_t len;
        int k;

        if (!strcmp(a, "--")) {
            while (++i < argc && c->nargs < CFG_MAX_ARGS)
                c->args[c->nargs++] = argv[i];
            break;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            c->want_help = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (c->nargs == CFG_MAX_ARGS)
                return lerr_set(e, "too many arguments (at most %d)", CFG_MAX_ARGS);
            c->args[c->nargs++] = a;
            continue;
        }
        a += 2;
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        k = find_key(c, a, len);
        /* The same message for "--bogus x" and "--bogus=x": the flag, never its value. */
        if (k < 0 && !(len > 6 && !strncmp(a, "kafka.", 6)))
            return lerr_set(e, "unknown flag '--%.*s'; see --help", (int)len, a);
        if (eq) {
            v = eq + 1;
        } else if (k >= 0 && c->keys[k].type == CFG_BOOL) {
            v = "true";
        } else {
            if (i + 1 >= argc)
                return lerr_set(e, "flag '--%s' needs a value", a);
            v = argv[++i];
        }
        if (set_key(c, a, len, v, "command line", e) != 0)
            return -1;
    }
    return 0;
}

int cfg_load(struct cfg *c, const struct cfg_key *keys, int argc, char **argv, struct lerr *e)
{
    const char *path;

    memset(c, 0, sizeof(*c));
    c->keys = keys;
    while (keys[c->nkeys].name)
        c->nkeys++;
    assert(c->nkeys <= CFG_MAX_KEYS);
    for (int i = 0; i < c->nkeys; i++)
        c->val[i] = keys[i].def ? strdup(keys[i].def) : NULL;
    path = config_path(argc, argv);
    if (path && load_file(c, path, argc > 0 ? argv[0] : "", e) != 0)
        return -1;
    if (load_env(c, e) != 0 || load_flags(c, argc, argv, e) != 0)
        return -1;
    if (log_set_level(cfg_str(c, "log_level")) != 0)
        return lerr_set(e, "bad value for 'log_level': '%s' is not debug, info, warn or error",
                        cfg_str(c, "log_level"));
    return 0;
}

void cfg_release(struct cfg *c)
{
    for (int i = 0; i < c->nkeys; i++)
        free(c->val[i]);
    for (int i = 0; i < c->nkafka; i++) {
        free(c->kafka_name[i]);
        free(c->kafka_val[i]);
    }
    memset(c, 0, sizeof(*c));
}

static int key_index(const struct cfg *c, const char *name)
{
    int i = find_key(c, name, strlen(name));

    assert(i >= 0 && "key not in this binary's table");
    return i;
}

const char *cfg_str(const struct cfg *c, const char *name)
{
    return c->val[key_index(c, name)];
}

int64_t cfg_int(const struct cfg *c, const char *name)
{
    const char *v = cfg_str(c, name);

    return v ? strtoll(v, NULL, 10) : 0;
}

int64_t cfg_ms(const struct cfg *c, const char *name)
{
    const char *v = cfg_str(c, name);
    int64_t ms = 0;

    if (v)
        tm_parse_duration(v, &ms);
    return ms;
}

bool cfg_bool(const struct cfg *c, const char *name)
{
    const char *v = cfg_str(c, name);

    return v && (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"));
}

void cfg_print_help(const struct cfg *c, const char *usage)
{
    static const char *const type_names[] = {"text", "integer", "duration", "bool"};

    printf("%s\n\nKeys (file: key = value; environment: LAMBDA_<KEY>; flag: --key value):\n",
           usage);
    for (int i = 0; i < c->nkeys; i++) {
        const struct cfg_key *k = &c->keys[i];
        printf("  %-20s %-9s %s (default: %s)\n", k->name, type_names[k->type], k->help,
               k->def ? k->def : "unset");
    }
    printf("  %-20s %-9s %s\n", "kafka.<property>", "text",
           "any librdkafka property, passed through (kafka.security.protocol = ssl)");
}

void cfg_log(const struct cfg *c, const char *mod)
{
    char line[1536];
    size_t n = 0;

    for (int i = 0; i < c->nkeys && n < sizeof(line); i++)
        if (c->val[i])
            n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s=%s", n ? " " : "",
                                  c->keys[i].name, c->val[i]);
    log_info(mod, "config %s", line);
}
