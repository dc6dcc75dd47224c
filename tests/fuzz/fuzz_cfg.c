/* fuzz_cfg.c - the configuration loader (shared/cfg.c): a file, the environment and flags.
 *
 * Proves, for every input libFuzzer reaches: cfg_load() neither crashes nor leaks nor reads out
 * of bounds whatever the config file, LAMBDA_* variables and argv hold, fails only with a
 * message, and on success leaves every key of the table either unset or holding a value its
 * type accepts (so the typed getters, which trust it, are safe). It cannot prove precedence or
 * the meaning of each key: test_cfg does that.
 *
 * Input: three parts separated by NUL bytes. The first is the config file (read through a
 * memfd, as --config names it), the second "NAME=VALUE" lines put in the environment (LAMBDA_*
 * names only), the third the arguments after argv[0], one per line; argv[0] is one of the
 * binaries, picked by the first byte, so its [section] applies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cfg.h"
#include "fuzz.h"
#include "log.h"
#include "tm.h"

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"port", CFG_INT, "8080", "port"},
    {"checkpoint_interval", CFG_MS, "200ms", "a duration"},
    {"json", CFG_BOOL, "false", "a boolean"},
    {"pause_at", CFG_STR, NULL, "an unset text"},
    {NULL, 0, NULL, NULL},
};

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    memfd = memfd_create("fuzz_cfg", 0);
    if (memfd < 0)
        abort();
    unsetenv("LAMBDA_CONFIG");
    return 0;
}

/* The next part of [*p, end) up to a NUL (or the end), as a new NUL-terminated string. */
static char *part(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *z = memchr(*p, '\0', (size_t)(end - *p));
    size_t n = (size_t)((z ? z : end) - *p);
    char *s = malloc(n + 1);

    if (!s)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *p = z ? z + 1 : end;
    return s;
}

static void check_loaded(const struct cfg *c)
{
    for (int i = 0; keys[i].name; i++) {
        const char *v = cfg_str(c, keys[i].name);
        int64_t ms;

        if (!v)
            continue;
        switch (keys[i].type) {
        case CFG_INT:
            FUZZ_CHECK(*v >= '0' && *v <= '9' && cfg_int(c, keys[i].name) >= 0, "%s='%s'",
                       keys[i].name, v);
            break;
        case CFG_MS:
            FUZZ_CHECK(tm_parse_duration(v, &ms) == 0 && ms >= 0, "%s='%s'", keys[i].name, v);
            break;
        case CFG_BOOL:
            FUZZ_CHECK(!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "yes") ||
                           !strcmp(v, "no") || !strcmp(v, "1") || !strcmp(v, "0"),
                       "%s='%s'", keys[i].name, v);
            break;
        case CFG_STR:
            break;
        }
    }
    for (int i = 0; i < c->nkafka; i++)
        FUZZ_CHECK(c->kafka_name[i] && c->kafka_val[i] && *c->kafka_name[i], "kafka key %d", i);
    FUZZ_CHECK(c->nargs <= CFG_MAX_ARGS, "%d args", c->nargs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"lambda-batch", "lambda-speed", "lambda-serve",
                                        "/usr/bin/lambda-gen", "other"};
    const uint8_t *p = data, *end = data + size;
    char *file, *envs, *args, *set[16], *argv[CFG_MAX_ARGS + 16], path[64];
    int nset = 0, argc = 0;
    struct cfg c;
    struct lerr e = {{0}};
    bool has_file;

    if (size < 1)
        return 0;
    argv[argc++] = (char *)names[*p++ % 5];
    file = part(&p, end);
    envs = part(&p, end);
    args = part(&p, end);
    /* The file: only when it has content, so "no --config" is reached too. */
    has_file = *file != '\0';
    if (has_file) {
        if (ftruncate(memfd, 0) != 0 || pwrite(memfd, file, strlen(file), 0) < 0)
            abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
        argv[argc++] = "--config";
        argv[argc++] = path;
    }
    for (char *s = envs, *nl; s && *s && nset < 16; s = nl) {
        char *eq;
        if ((nl = strchr(s, '\n')))
            *nl++ = '\0';
        if (strncmp(s, "LAMBDA_", 7) != 0 || !(eq = strchr(s, '=')) || eq == s + 7)
            continue;
        *eq = '\0';
        if (setenv(s, eq + 1, 1) == 0)
            set[nset++] = s;
    }
    for (char *s = args, *nl; s && *s && argc < CFG_MAX_ARGS + 12; s = nl) {
        if ((nl = strchr(s, '\n')))
            *nl++ = '\0';
        argv[argc++] = s;
    }
    argv[argc] = NULL;
    if (cfg_load(&c, keys, argc, argv, &e) == 0)
        check_loaded(&c);
    else
        FUZZ_CHECK(e.msg[0] != '\0', "an error without a message");
    cfg_release(&c);
    for (int i = 0; i < nset; i++)
        unsetenv(set[i]);
    free(file);
    free(envs);
    free(args);
    log_set_level("info");
    return 0;
}
