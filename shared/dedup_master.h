/* dedup_master.h - master_: rule (b) of shared/dedup.h, read from data_dir/master.db.
 *
 * An order is an earlier copy when master.db's `orders` holds its id with partition -1 (an
 * import), another partition, or the same partition and a smaller offset. master.db is read
 * through a read-only connection of its own, opened once the file with its orders table
 * exists (looked for at most once per master_refresh(), not per order). A caller may rely
 * on: look-ups share one read snapshot until master_refresh() ends it, so a look-up costs no
 * lock calls, and the next one sees everything committed by then. */
#ifndef LAMBDA_DEDUP_MASTER_H
#define LAMBDA_DEDUP_MASTER_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lerr.h"

struct master {
    char data_dir[PATH_MAX];
    sqlite3 *db; /* NULL until master.db with its orders table exists */
    sqlite3_stmt *get;
    bool is_due;   /* look for a missing master.db at the next look-up */
    bool in_txn;   /* a read transaction is open: look-ups share one snapshot */
    int64_t reads; /* look-ups that reached the file */
};

/* Nothing is opened until the first look-up. */
void master_init(struct master *m, const char *data_dir);
void master_close(struct master *m);

/* 1 when master.db holds an earlier copy of (mid, oid) read at (partition, offset), 0 when
 * not (or there is no master.db yet), -1 with e set on a read error. */
int master_has_earlier(struct master *m, const char *mid, const char *oid, int partition,
                       int64_t offset, struct lerr *e);

/* Ends the snapshot, and looks for a missing file again at the next look-up. */
void master_refresh(struct master *m);

#endif
