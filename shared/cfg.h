/* cfg.h - configuration: key = value file, LAMBDA_<KEY> environment, --key value flags.
 *
 * Each binary declares its keys as a table of struct cfg_key (name, type, default, help);
 * cfg_load() fills a struct cfg from, in rising precedence: the defaults, the file named by
 * --config (or LAMBDA_CONFIG), the environment, the command line. An unknown key or a bad
 * value is an error naming it (the binary exits 2). Keys starting "kafka." pass through to
 * librdkafka untouched. One file can serve every binary: keys before any section are shared,
 * keys under [batch], [speed] or [serve] are read only by that binary (lambda-speed reads
 * [speed]), so a key one binary does not know can still sit in the common file. Flags accept
 * "--data-dir x", "--data_dir x" and "--data-dir=x"; boolean keys may be given as a bare flag
 * ("--json"). Arguments that are not flags are kept, in order, as positional arguments
 * (sub-commands, file names). */
#ifndef LAMBDA_CFG_H
#define LAMBDA_CFG_H

#include <stdbool.h>
#include <stdint.h>

#include "lerr.h"

enum cfg_type {
    CFG_STR,
    CFG_INT,  /* a decimal integer >= 0 */
    CFG_MS,   /* a duration: "200" (ms), "200ms", "5s", "10m", "1h" */
    CFG_BOOL, /* true/false, yes/no, 1/0 */
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    const char *def; /* the default as text; NULL for "unset" */
    const char *help;
};

#define CFG_MAX_KEYS  64
#define CFG_MAX_KAFKA 64
#define CFG_MAX_ARGS  64

struct cfg {
    const struct cfg_key *keys; /* borrowed: a static table ending in {NULL} */
    int nkeys;
    char *val[CFG_MAX_KEYS];                                    /* owned copies; NULL when unset */
    char *kafka_name[CFG_MAX_KAFKA], *kafka_val[CFG_MAX_KAFKA]; /* without the "kafka." */
    int nkafka;
    const char *args[CFG_MAX_ARGS]; /* borrowed from argv */
    int nargs;
    bool want_help;
};

/* The keys every binary shares (DESIGN.md section 6); tables include them with CFG_SHARED. */
#define CFG_SHARED                                                                                 \
    {"brokers", CFG_STR, NULL, "Kafka bootstrap servers (host:port,...)"},                         \
        {"topic", CFG_STR, "orders", "Kafka topic of order events"},                               \
        {"data_dir", CFG_STR, "./data", "data directory holding the SQLite files and locks"},      \
        {"group", CFG_STR, "lambda", "Kafka consumer group id (positions live in SQLite)"},        \
        {"epoch_ms", CFG_MS, "60000", "length of a speed-layer epoch"},                            \
        {"shard_partitions", CFG_STR, "all",                                                       \
         "partitions this data directory owns: all, or a list such as 0-3,8"},                     \
        {"partitioner", CFG_STR, NULL,                                                             \
         "the producers' partitioner (murmur2_random, consistent_random): a merchant's "           \
         "partition"},                                                                             \
        {"max_future_skew", CFG_MS, "5m",                                                          \
         "reject events this far ahead of the message timestamp"},                                 \
        {"kafka_timeout", CFG_MS, "10s", "how long a Kafka metadata or offset request may take"},  \
        {"log_level", CFG_STR, "info", "debug, info, warn or error"},                              \
    {                                                                                              \
        "config", CFG_STR, NULL, "read key = value lines from this file first"                     \
    }

/* Loads the configuration. Returns 0, or -1 with e naming the key, file or flag at fault;
 * c holds what it allocated either way, and cfg_release() frees it. */
int cfg_load(struct cfg *c, const struct cfg_key *keys, int argc, char **argv, struct lerr *e);
void cfg_release(struct cfg *c);

/* Typed getters. The key must be in the table (a bug otherwise: it asserts). cfg_str returns
 * NULL for an unset key without default; cfg_int and cfg_ms return the parsed value. */
const char *cfg_str(const struct cfg *c, const char *name);
int64_t cfg_int(const struct cfg *c, const char *name);
int64_t cfg_ms(const struct cfg *c, const char *name);
bool cfg_bool(const struct cfg *c, const char *name);

/* Prints usage, then every key with its type, default and meaning, to stdout. */
void cfg_print_help(const struct cfg *c, const char *usage);

/* Logs the effective configuration, one line. */
void cfg_log(const struct cfg *c, const char *mod);

#endif
