/* pin.c - a data directory's pinned epoch_ms and partition set (see pin.h). */
#include "pin.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shard.h"

void pin_set_put(struct pin_set *p, const char *key, const char *value)
{
    int i = 0;

    while (i < p->n && strcmp(p->key[i], key) != 0)
        i++;
    if (i == PIN_MAX)
        return; /* a bug: the table of pins is fixed (asserted in tests) */
    p->key[i] = key;
    snprintf(p->value[i], sizeof(p->value[i]), "%s", value);
    if (i == p->n)
        p->n++;
}

void pin_set_from_cfg(struct pin_set *p, const struct cfg *c)
{
    char ms[32];

    p->n = 0;
    snprintf(ms, sizeof(ms), "%lld", (long long)cfg_ms(c, "epoch_ms"));
    pin_set_put(p, "epoch_ms", ms);
    for (int i = 0; i < c->nkeys; i++) {
        struct shard_set set;
        char text[SHARD_TEXT_MAX];
        if (strcmp(c->keys[i].name, "shard_partitions") != 0)
            continue;
        /* The canonical text, so that "0,1" and "0-1" are the same set; a bad one is pinned
         * as written and refused by the binary's own parse. */
        if (shard_set_parse(&set, cfg_str(c, "shard_partitions"), NULL) == 0)
            shard_set_format(&set, text, sizeof(text));
        else
            snprintf(text, sizeof(text), "%s", cfg_str(c, "shard_partitions"));
        pin_set_put(p, "shard_partitions", text);
    }
}

/* Whether db has a pins table: files written before pins existed have none. */
static int has_pins(sqlite3 *db, struct lerr *e)
{
    int64_t n = 0;
    if (db_query_int(db, "SELECT count(*) FROM sqlite_master WHERE name='pins'", &n, e) != 0)
        return -1;
    return n > 0;
}

int pin_compare(sqlite3 *db, const char *data_dir, const char *file, const struct pin_set *p,
                struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc = has_pins(db, e);

    if (rc <= 0)
        return rc;
    if (db_prepare(db, "SELECT value FROM pins WHERE key=?", &st, e) != 0)
        return -1;
    rc = 0;
    for (int i = 0; i < p->n && rc == 0; i++) {
        sqlite3_bind_text(st, 1, p->key[i], -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(st, 0);
            if (v && strcmp(v, p->value[i]) != 0) {
                lerr_set(e,
                         "data directory '%s' was first used with %s=%s (%s); this one has %s=%s",
                         data_dir, p->key[i], v, file, p->key[i], p->value[i]);
                rc = 1;
            }
        } else if (step != SQLITE_DONE) {
            rc = lerr_set(e, "cannot read the pins of '%s/%s': %s", data_dir, file,
                          sqlite3_errmsg(db));
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return rc;
}

int pin_check_dir(const char *data_dir, const struct pin_set *p, struct lerr *e)
{
    static const enum db_file files[] = {DB_MASTER, DB_BATCH, DB_SPEED};
    struct lerr unread = {{0}};
    int rc = 0;

    /* A file that cannot be read does not hide a mismatch in the others: that is said first. */
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[4096];
        sqlite3 *db = NULL;
        struct lerr fe;
        int frc;

        db_path(data_dir, files[i], path, sizeof(path));
        if (access(path, F_OK) != 0)
            continue;
        if (db_open_ro(data_dir, files[i], &db, &fe) != 0)
            frc = -1;
        else
            frc = pin_compare(db, data_dir, db_file_name(files[i]), p, &fe);
        sqlite3_close(db);
        if (frc > 0) {
            *e = fe;
            return 1;
        }
        if (frc < 0 && rc == 0) {
            unread = fe;
            rc = -1;
        }
    }
    if (rc < 0)
        *e = unread;
    return rc;
}

int pin_record(sqlite3 *db, const char *data_dir, const char *file, const struct pin_set *p,
               struct lerr *e)
{
    sqlite3_stmt *st = NULL;
    int rc = pin_compare(db, data_dir, file, p, e);

    if (rc != 0)
        return rc;
    if (db_prepare(db, "INSERT OR IGNORE INTO pins(key, value) VALUES(?,?)", &st, e) != 0)
        return -1;
    for (int i = 0; i < p->n && rc == 0; i++) {
        sqlite3_bind_text(st, 1, p->key[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, p->value[i], -1, SQLITE_STATIC);
        rc = db_step_done(st, e);
    }
    sqlite3_finalize(st);
    return rc;
}
