/* dedup_master.c - the earlier copies in master.db (contract in dedup_master.h). */
#include "dedup_master.h"

#include <stdio.h>
#include <unistd.h>

#include "db.h"

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
    if (sqlite3_prepare_v3(m->db,
                           "SELECT partition, offset FROM orders"
                           " WHERE merchant_id=?1 AND order_id=?2",
                           -1, SQLITE_PREPARE_PERSISTENT, &m->get, NULL) != SQLITE_OK)
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
}
