/* pin.h - what a data directory is pinned to at first use: epoch_ms, and a shard's partition
 * set (DESIGN.md sections 6 and 7).
 *
 * Two binaries that disagree on epoch_ms number epochs differently, so the batch layer waits
 * for a boundary the speed layer never records and the cut stalls; two that disagree on the
 * partition set count some orders twice or not at all. So the first binary to write a file of
 * the data directory records these values in its `pins(key, value)` table, every binary
 * compares its own values with what every existing file records before it does anything, and
 * a savepoint (a copy of speed.db) carries them. A mismatch is a configuration error: the
 * binary exits 2 with a message naming the key, the file and both values. */
#ifndef LAMBDA_PIN_H
#define LAMBDA_PIN_H

#include <stdint.h>

#include <sqlite3.h>

#include "cfg.h"
#include "db.h"
#include "lerr.h"

#define PIN_MAX       4
#define PIN_VALUE_MAX 256

/* The values a binary runs with, as text ("60000", "0-3,8"). */
struct pin_set {
    int n;
    const char *key[PIN_MAX];
    char value[PIN_MAX][PIN_VALUE_MAX];
};

/* The pins of a configuration: epoch_ms always, shard_partitions when the binary has that key
 * (its canonical text). */
void pin_set_from_cfg(struct pin_set *p, const struct cfg *c);

/* Adds or replaces one pin. */
void pin_set_put(struct pin_set *p, const char *key, const char *value);

/* Compares p with what db (any of the three files, named file in messages) records. 0 when
 * they agree or the file records nothing (yet, or from before pins existed), 1 on a mismatch
 * (e: "data directory 'd' was first used with epoch_ms=60000 (speed.db); this one has
 * epoch_ms=30000"), -1 when the file cannot be read. */
int pin_compare(sqlite3 *db, const char *data_dir, const char *file, const struct pin_set *p,
                struct lerr *e);

/* pin_compare over every file of data_dir that exists, each opened read-only for the look. A
 * mismatch in any file is 1 even when another cannot be read; -1 when one cannot be read and
 * the others agree (lambda-serve goes on then: it answers 503 for that layer). */
int pin_check_dir(const char *data_dir, const struct pin_set *p, struct lerr *e);

/* Records in db, opened for writing by its one writer, every pin it does not hold yet; 1 on a
 * mismatch with what it holds (nothing recorded then), -1 on a write error. */
int pin_record(sqlite3 *db, const char *data_dir, const char *file, const struct pin_set *p,
               struct lerr *e);

#endif
