/* merge.c - a full run's merge of master's recent level into the big one (DESIGN.md section 5,
 * shared/dedup_master.h).
 *
 * Incremental runs insert into the recent level only, so that their writes follow what they
 * insert; a full run, whose cost follows all of history anyway, moves the recent level into the
 * big one before it scans. The move is one transaction: a run killed in it leaves both levels
 * as they were (what the two hold together never changes), and the rerun merges again. */
#include "batch.h"

#include <inttypes.h>

#include "db.h"
#include "log.h"
#include "tm.h"

int batch_merge_levels(struct batch *b, struct lerr *e)
{
    sqlite3 *m = b->master;
    int64_t t0 = tm_mono_ms(), n = 0;

    if (db_query_int(m, "SELECT count(*) FROM orders_recent", &n, e) != 0)
        return -1;
    if (n == 0)
        return 0;
    /* Plain INSERT: a key in both levels would be counted twice by every reader, so it stops
     * the run instead of being dropped. In key order the inserts sweep the big level once. */
    if (db_exec(m,
                "BEGIN IMMEDIATE; INSERT INTO orders_base(merchant_id, order_id, amount_cents,"
                " event_time_ms, partition, offset, raw) SELECT merchant_id, order_id,"
                " amount_cents, event_time_ms, partition, offset, raw FROM orders_recent"
                " ORDER BY merchant_id, order_id",
                e) != 0)
        goto fail;
    batch_pause(b->pause_at, "merge"); /* moved and not yet committed */
    if (db_exec(m, "DELETE FROM orders_recent; COMMIT", e) != 0)
        goto fail;
    log_info("batch", "levels_merged orders=%" PRId64 " ms=%" PRId64, n, tm_mono_ms() - t0);
    return 0;
fail:
    sqlite3_exec(m, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}
