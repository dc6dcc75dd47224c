/* dedup_master.c - the earlier copies in master.db, and inserts into its two levels (contract in
 * dedup_master.h). */
#include "dedup_master.h"

#include <stdio.h>
#include <unistd.h>

#include "db.h"

#define COLUMNS "merchant_id, order_id, amount_cents, event_time_ms, partition, offset, raw"

/* The key is in at most one level, so the first row found is the only one. */
static const char get_sql[] = "SELECT partition, offset FROM orders_base"
                              " WHERE merchant_id=?1 AND order_id=?2 UNION ALL"
                              " SELECT partition, offset FROM orders_recent"
                              " WHERE merchant_id=?1 AND order_id=?2";
/* Files no writer opened since the view: the table `orders` is the big level, beside the
 * recent level or, from before the two levels, alone. */
static const char get_old_sql[] = "SELECT partition, offset FROM orders"
                                  " WHERE merchant_id=?1 AND order_id=?2 UNION ALL"
                                  " SELECT partition, offset FROM orders_recent"
                                  " WHERE merchant_id=?1 AND order_id=?2";
static const char get_one_level_sql[] = "SELECT partition, offset FROM orders"
                                        " WHERE merchant_id=?1 AND order_id=?2";

void master_init(struct master *m, const char *data_dir)
{
    *m = (struct master){.is_due = true};
    snprintf(m->data_dir, sizeof(m->data_dir), "%s", data_dir);
}

void master_close(struct master *m)
{
    sqlite3_finalize(m->get);
    sqlite3_close(m->db);
    m->get = NULL;
    m->db = NULL;
    m->in_txn = false;
    m->is_old_layout = false;
}

static bool prepare_get(struct master *m, const char *sql)
{
    return sqlite3_prepare_v3(m->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &m->get, NULL) ==
           SQLITE_OK;
}

/* Opens master.db once it exists and has its orders table. A missing file holds no ids, so
 * not having it yet is not an error. */
static void master_try_open(struct master *m)
{
    char path[PATH_MAX];
    struct lerr ignored;

    /* Called per order, so it looks for the file once per master_refresh() (per checkpoint),
     * not per call: reading the clock here cost more than the rest of a new order's check. */
    if (m->db || !m->is_due)
        return;
    m->is_due = false;
    db_path(m->data_dir, DB_MASTER, path, sizeof(path));
    if (access(path, F_OK) != 0)
        return;
    if (db_open_ro(m->data_dir, DB_MASTER, &m->db, &ignored) != 0)
        return;
    if (prepare_get(m, get_sql))
        return;
    /* A file of an older layout (no orders_base: its table `orders` is the big level) holds
     * every id there and, once it has one, in the recent level, until a writer migrates it,
     * which the reopen after the next refresh then sees. */
    if (prepare_get(m, get_old_sql) || prepare_get(m, get_one_level_sql))
        m->is_old_layout = true;
    else
        master_close(m);
}

int master_has_earlier(struct master *m, const char *mid, const char *oid, int partition,
                       int64_t offset, struct lerr *e)
{
    sqlite3_stmt *st;
    int rc, dup = 0;

    master_try_open(m);
    if (!m->db)
        return 0;
    /* One read transaction until master_refresh(): a look-up then costs no lock calls. */
    if (!m->in_txn) {
        if (sqlite3_exec(m->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
            return lerr_set(e, "cannot read master.db: %s", sqlite3_errmsg(m->db));
        m->in_txn = true;
    }
    st = m->get;
    m->reads++;
    sqlite3_bind_text(st, 1, mid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, oid, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t p = sqlite3_column_int64(st, 0), off = sqlite3_column_int64(st, 1);
        dup = p == -1 || p != partition || off < offset;
    } else if (rc != SQLITE_DONE) {
        lerr_set(e, "cannot look up order in master.db: %s", sqlite3_errmsg(m->db));
        dup = -1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return dup;
}

void master_refresh(struct master *m)
{
    if (m->in_txn)
        sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL);
    m->in_txn = false;
    m->is_due = true;
    if (m->is_old_layout)
        master_close(m);
}

const char *master_level_table(enum master_level level)
{
    return level == MASTER_BIG ? "orders_base" : "orders_recent";
}

int master_pick_level(sqlite3 *master, enum master_level *out, struct lerr *e)
{
    int64_t has_big = 1;

    if (db_query_int(master, "SELECT EXISTS (SELECT 1 FROM orders_base)", &has_big, e) != 0)
        return -1;
    *out = has_big ? MASTER_RECENT : MASTER_BIG;
    return 0;
}

int master_insert_sql(enum master_level level, const char *select_sql, const char *mid,
                      const char *oid, const char *tail, char *sql, size_t size, struct lerr *e)
{
    enum master_level other = level == MASTER_BIG ? MASTER_RECENT : MASTER_BIG;
    int n =
        snprintf(sql, size,
                 "INSERT OR IGNORE INTO %s(" COLUMNS ") %s AND NOT EXISTS (SELECT 1 FROM %s"
                 " AS lv WHERE lv.merchant_id = %s AND lv.order_id = %s) %s",
                 master_level_table(level), select_sql, master_level_table(other), mid, oid, tail);

    if (n < 0 || (size_t)n >= size)
        return lerr_set(e, "cannot write the insert into '%s': too long",
                        master_level_table(level));
    return 0;
}
