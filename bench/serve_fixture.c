/* serve_fixture.c - a data directory for bench/serve.sh: N merchants in a published batch
 * version (totals, 24 hours of hour rows, 10 minutes of minute rows) and 5 minutes of speed
 * deltas over two epochs past the cut. Versions 2 and 3 then rewrite a tenth of the merchants
 * (same sums), so that serving reads version 3 over rows shared by versions and rows replaced
 * by newer ones, as after incremental runs. Files are made by db_open_rw(), the real schemas.
 * usage: serve_fixture DATA_DIR MERCHANTS */
#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "tm.h"

static int run(sqlite3 *db, const char *sql)
{
    struct lerr e = {{0}};

    if (db_exec(db, sql, &e) != 0) {
        fprintf(stderr, "serve_fixture: %s\n", e.msg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct lerr e = {{0}};
    sqlite3 *b = NULL, *s = NULL;
    sqlite3_stmt *tot = NULL, *hour = NULL, *minute = NULL, *delta = NULL;
    int64_t now = tm_now_ms(), cut_ms = tm_floor(now, TM_MINUTE_MS) - 5 * TM_MINUTE_MS;
    int64_t cut_epoch = cut_ms / 60000;
    char sql[1024];
    int n = argc == 3 ? atoi(argv[2]) : 0;

    if (n <= 0) {
        fprintf(stderr, "usage: serve_fixture DATA_DIR MERCHANTS\n");
        return 2;
    }
    if (db_ensure_dir(argv[1], &e) || db_open_rw(argv[1], DB_BATCH, &b, &e) ||
        db_open_rw(argv[1], DB_SPEED, &s, &e) ||
        db_prepare(b,
                   "INSERT INTO merchant_totals(valid_from, merchant_id, order_count, "
                   "revenue_cents) VALUES (1, ?1, ?2, ?3)",
                   &tot, &e) ||
        db_prepare(b,
                   "INSERT INTO hourly(valid_from, merchant_id, hour_ms, order_count, "
                   "revenue_cents) VALUES (1, ?1, ?4, ?2, ?3)",
                   &hour, &e) ||
        db_prepare(b,
                   "INSERT INTO minutely(valid_from, merchant_id, minute_ms, order_count, "
                   "revenue_cents) VALUES (1, ?1, ?4, ?2, ?3)",
                   &minute, &e) ||
        db_prepare(s, "INSERT INTO deltas VALUES (?1, ?4, ?5, ?2, ?3)", &delta, &e)) {
        fprintf(stderr, "serve_fixture: %s\n", e.msg);
        return 1;
    }
    snprintf(sql, sizeof(sql),
             "BEGIN; INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms)"
             " VALUES (1, 'published', %lld, %lld, %lld)",
             (long long)cut_epoch, (long long)cut_ms, (long long)cut_ms + 3000);
    if (run(b, sql) || run(s, "BEGIN"))
        return 1;
    snprintf(sql, sizeof(sql),
             "INSERT INTO meta VALUES ('checkpoint_ms', %lld), ('watermark_ms', %lld),"
             " ('allowed_lateness_ms', 600000), ('epoch', %lld), ('epoch_ms', 60000)",
             (long long)now, (long long)now - 5000, (long long)cut_epoch + 5);
    if (run(s, sql))
        return 1;
    for (int i = 0; i < n; i++) {
        char id[32];
        int64_t per = 1 + i % 17;
        snprintf(id, sizeof(id), "m-%05d", i);
        sqlite3_stmt *all[] = {tot, hour, minute, delta};
        for (int k = 0; k < 4; k++)
            sqlite3_bind_text(all[k], 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(tot, 2, per * 34 * 60);
        sqlite3_bind_int64(tot, 3, per * 34 * 60 * 1999);
        if (db_step_done(tot, &e))
            goto fail;
        for (int h = 0; h < 24; h++) {
            sqlite3_bind_int64(hour, 2, per * 60);
            sqlite3_bind_int64(hour, 3, per * 1999);
            sqlite3_bind_int64(hour, 4, tm_floor(cut_ms, TM_HOUR_MS) - (23 - h) * TM_HOUR_MS);
            if (db_step_done(hour, &e))
                goto fail;
        }
        for (int m = 0; m < 10; m++) {
            sqlite3_bind_int64(minute, 2, per);
            sqlite3_bind_int64(minute, 3, per * 1999);
            sqlite3_bind_int64(minute, 4, cut_ms - (10 - m) * TM_MINUTE_MS);
            if (db_step_done(minute, &e))
                goto fail;
        }
        for (int m = 0; m < 5; m++) {
            sqlite3_bind_int64(delta, 2, per);
            sqlite3_bind_int64(delta, 3, per * 2001);
            sqlite3_bind_int64(delta, 4, cut_ms + m * TM_MINUTE_MS);
            sqlite3_bind_int64(delta, 5, cut_epoch + m);
            if (db_step_done(delta, &e))
                goto fail;
        }
    }
    for (int v = 2; v <= 3; v++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO versions(id, state, cut_epoch, started_ms, finished_ms)"
                 " VALUES (%d, 'published', %lld, %lld, %lld)",
                 v, (long long)cut_epoch, (long long)cut_ms, (long long)cut_ms + 3000);
        if (run(b, sql))
            return 1;
        for (int t = 0; t < 3; t++) {
            static const char *const tables[] = {"merchant_totals", "hourly", "minutely"};
            static const char *const cols[] = {"", "hour_ms, ", "minute_ms, "};
            snprintf(sql, sizeof(sql),
                     "CREATE TEMP TABLE r AS SELECT * FROM %1$s WHERE valid_to = " DB_OPEN_SQL
                     " AND CAST(substr(merchant_id, 3) AS INTEGER) %% 10 = %2$d;"
                     "UPDATE %1$s SET valid_to = %2$d WHERE valid_to = " DB_OPEN_SQL " AND"
                     " CAST(substr(merchant_id, 3) AS INTEGER) %% 10 = %2$d;"
                     "INSERT INTO %1$s(merchant_id, %3$svalid_from, order_count, revenue_cents)"
                     " SELECT merchant_id, %3$s%2$d, order_count, revenue_cents FROM r;"
                     "DROP TABLE r",
                     tables[t], v, cols[t]);
            if (run(b, sql))
                return 1;
        }
    }
    if (run(b, "COMMIT") || run(s, "COMMIT"))
        return 1;
    sqlite3_finalize(tot), sqlite3_finalize(hour), sqlite3_finalize(minute);
    sqlite3_finalize(delta);
    sqlite3_close(b), sqlite3_close(s);
    return 0;
fail:
    fprintf(stderr, "serve_fixture: %s\n", e.msg);
    return 1;
}
