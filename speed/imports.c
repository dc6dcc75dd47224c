/* imports.c - the import log read as partition -1 (DESIGN.md section 2, "Imports meet the
 * stream").
 *
 * lambda-batch import stages its valid lines in master.db's import_log, each at the next seq
 * (never given out twice; a line becomes visible only when its transaction commits, and
 * commits are serialized, so the visible seqs only grow). At the end of each checkpoint
 * interval the lines committed after our position are counted through the same duplicate rule
 * and delta code as Kafka events (speed.c's speed_count_order), tagged with the interval's
 * epoch; a duplicate is recorded for speed.db's import_dups. The position, the boundary and
 * import_dups commit in the interval's checkpoint, so a batch run's cut covers the lines as
 * any partition, and its move into the master dataset skips the lines we judged duplicates.
 * Import lines move no watermark and are never late: a backfill is old by nature. */
#include "speed_int.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "log.h"

static const char lines_sql[] =
    "SELECT seq, merchant_id, order_id, amount_cents, event_time_ms FROM import_log"
    " WHERE seq >= ?1 ORDER BY seq LIMIT ?2";

void speed_imports_close(struct speed *s)
{
    sqlite3_finalize(s->st_import_lines);
    sqlite3_close(s->master_db);
    s->st_import_lines = NULL;
    s->master_db = NULL;
}

/* Opens master.db read-only once it has import_log; false while it does not. */
static bool open_log(struct speed *s)
{
    char path[PATH_MAX];
    struct lerr ignored;
    int64_t n = 0;

    if (s->st_import_lines)
        return true;
    db_path(s->data_dir, DB_MASTER, path, sizeof(path));
    if (access(path, F_OK) != 0 || db_open_ro(s->data_dir, DB_MASTER, &s->master_db, &ignored))
        return false;
    if (db_query_int(s->master_db, "SELECT count(*) FROM sqlite_master WHERE name = 'import_log'",
                     &n, &ignored) != 0 ||
        n == 0 || db_prepare(s->master_db, lines_sql, &s->st_import_lines, &ignored) != 0) {
        speed_imports_close(s);
        return false;
    }
    return true;
}

static int add_dup(struct speed *s, int64_t seq, struct lerr *e)
{
    struct speed_rows *r = &s->rows;

    if (r->nidups == r->capidups) {
        size_t cap = r->capidups ? 2 * r->capidups : 64;
        struct speed_import_dup *v = realloc(r->idups, cap * sizeof(*v));
        if (!v)
            return lerr_set(e, "out of memory");
        r->idups = v;
        r->capidups = cap;
    }
    r->idups[r->nidups++] = (struct speed_import_dup){seq, s->epoch};
    return 0;
}

/* One line of the log, counted or recorded a duplicate; the position moves past it. */
static int count_line(struct speed *s, sqlite3_stmt *st, struct lerr *e)
{
    struct speed_parsed pm;
    int64_t seq = sqlite3_column_int64(st, 0);
    const char *mid = (const char *)sqlite3_column_text(st, 1);
    const char *oid = (const char *)sqlite3_column_text(st, 2);
    int counted;

    memset(&pm.o, 0, sizeof(pm.o));
    /* import.c staged only lines ev_parse accepted: the ids fit. */
    if (!mid || !oid || strlen(mid) > EV_ID_MAX || strlen(oid) > EV_ID_MAX)
        return lerr_set(e, "import_log line %" PRId64 " has a bad merchant or order id", seq);
    memcpy(pm.o.merchant_id, mid, strlen(mid));
    memcpy(pm.o.order_id, oid, strlen(oid));
    pm.o.amount_cents = sqlite3_column_int64(st, 3);
    pm.o.event_ms = sqlite3_column_int64(st, 4);
    speed_parsed_fill(s, &pm, &pm.o);
    counted = speed_count_order(s, &pm, SPEED_IMPORT_PARTITION, seq, e);
    if (counted < 0 || (counted == 1 && add_dup(s, seq, e) != 0))
        return -1;
    s->imports.next_offset = seq + 1;
    return 0;
}

int speed_imports_read(struct speed *s, int64_t max, struct lerr *e)
{
    sqlite3_stmt *st;
    int64_t from = s->imports.next_offset, n = 0;
    int rc = 0, step;

    if (from < 0 || !open_log(s))
        return 0;
    st = s->st_import_lines;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, max);
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        rc = count_line(s, st, e);
        n++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = lerr_set(e, "cannot read import_log of master.db: %s", sqlite3_errmsg(s->master_db));
    sqlite3_reset(st);
    if (rc == 0 && n > 0)
        log_info("speed",
                 "imports_read epoch=%" PRId64 " from=%" PRId64 " to=%" PRId64 " lines=%" PRId64,
                 s->epoch, from, s->imports.next_offset, n);
    return rc;
}
