/* dedup_master.h - master_: rule (b) of shared/dedup.h, read from data_dir/master.db, and the
 * one definition of how an order gets into master.db's two levels.
 *
 * master.db's orders are one set kept in two tables (db.h): the big level `orders_base` and the
 * recent level `orders_recent`, a key in at most one of them (the view `orders` reads both). Batch
 * runs insert new orders into the recent level (a full run merges it into the big one), so an
 * incremental run dirties pages in proportion to what it inserts, not pages scattered over all of
 * history. The duplicate rule is the same for both: an order is inserted only when neither level
 * holds its key, and the first copy inserted wins (master_insert_sql()).
 *
 * Look-ups: an order is an earlier copy when either level holds its id with partition -1 (an
 * import), another partition, or the same partition and a smaller offset. master.db is read
 * through a read-only connection of its own, opened once the file with its orders table
 * exists (looked for at most once per master_refresh(), not per order). A caller may rely
 * on: look-ups share one read snapshot until master_refresh() ends it, so a look-up costs no
 * lock calls, and the next one sees everything committed by then. A file of an older layout
 * (no orders_base until a batch run or import opens it for writing) is read as it is: its
 * table `orders` is the big level, beside orders_recent or, from before the two levels,
 * alone; it is opened again after each master_refresh() until it has been migrated. */
#ifndef LAMBDA_DEDUP_MASTER_H
#define LAMBDA_DEDUP_MASTER_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lerr.h"

struct master {
    char data_dir[PATH_MAX];
    sqlite3 *db; /* NULL until master.db with its orders table exists */
    sqlite3_stmt *get;
    bool is_due;        /* look for a missing master.db at the next look-up */
    bool in_txn;        /* a read transaction is open: look-ups share one snapshot */
    bool is_old_layout; /* a file of an older layout (no orders_base): reopened at each refresh */
    int64_t reads;      /* look-ups that reached the file */
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

/* The level a batch step writes its orders into. */
enum master_level { MASTER_BIG, MASTER_RECENT };

/* "orders_base" or "orders_recent". */
const char *master_level_table(enum master_level level);

/* The level a step that inserts orders writes into (read on master, a read-write connection of
 * master.db): the big level while it is empty (a directory's first load has no history to
 * scatter over, and needs no merge later), else the recent level. */
int master_pick_level(sqlite3 *master, enum master_level *out, struct lerr *e);

/* Writes into sql (size bytes) the statement that inserts into level the rows of select_sql
 * whose key neither level holds: select_sql is a SELECT of the seven columns of orders in
 * their order (merchant_id, order_id, amount_cents, event_time_ms, partition, offset, raw)
 * ending in a WHERE clause, mid and oid its expressions for the key, tail what follows the
 * condition (ORDER BY, RETURNING; may be ""). The other level is asked, then INSERT OR IGNORE
 * keeps the first copy the select gives of a key. A row not inserted is a duplicate: the
 * statement's change count (or what it returns) tells which were. -1 when it does not fit. */
int master_insert_sql(enum master_level level, const char *select_sql, const char *mid,
                      const char *oid, const char *tail, char *sql, size_t size, struct lerr *e);

#endif
