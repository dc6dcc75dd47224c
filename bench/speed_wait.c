/* speed_wait.c - for bench/speed.sh: waits until lambda-speed's committed positions in
 * DATA_DIR/speed.db sum to at least N, looking every 10 ms through one read-only connection
 * (a sqlite3 process per look cost the machine more CPU than the thing being timed), and
 * exits 0, or 1 after TIMEOUT_S seconds.
 *
 *   speed_wait DATA_DIR N TIMEOUT_S */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    char path[4096];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t want;
    double end;
    const struct timespec tick = {0, 10 * 1000000};

    if (argc != 4) {
        fprintf(stderr, "usage: speed_wait DATA_DIR N TIMEOUT_S\n");
        return 2;
    }
    snprintf(path, sizeof(path), "%s/speed.db", argv[1]);
    want = strtoll(argv[2], NULL, 10);
    end = now_s() + atof(argv[3]);
    while (now_s() < end) {
        if (!st) { /* the file and its table appear once lambda-speed has started */
            if (access(path, F_OK) == 0 &&
                sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
                sqlite3_prepare_v2(db, "SELECT coalesce(sum(next_offset), 0) FROM offsets", -1, &st,
                                   NULL) == SQLITE_OK) {
                sqlite3_busy_timeout(db, 1000);
            } else {
                sqlite3_close(db);
                db = NULL;
            }
        }
        if (st) {
            int64_t got = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
            sqlite3_reset(st);
            if (got >= want) {
                sqlite3_finalize(st);
                sqlite3_close(db);
                return 0;
            }
        }
        nanosleep(&tick, NULL);
    }
    fprintf(stderr, "speed_wait: positions never reached %" PRId64 "\n", want);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 1;
}
