/* speed_fresh.c - freshness of lambda-speed, for bench/speed.sh: produces paced order events
 * and watches speed.db; an event's freshness is the wall time of the first committed
 * checkpoint whose position covers it (meta checkpoint_ms) minus the wall time it was
 * produced. Prints "fresh events=N p50_ms=.. p99_ms=.. max_ms=..".
 *
 *   speed_fresh BROKERS TOPIC DATA_DIR RATE SECONDS */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#define MAXP 64

static int64_t *sent_ms;  /* by event index */
static int64_t *at[MAXP]; /* by partition, offset: event index + 1, 0 unknown (calloc) */
static int64_t cap_off, delivered;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    if (m->err || m->partition < 0 || m->partition >= MAXP || m->offset >= cap_off)
        return;
    at[m->partition][m->offset] = (int64_t)(intptr_t)m->_private + 1;
    delivered++;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    char err[512], path[4096], buf[256], key[32];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    sqlite3 *db = NULL;
    sqlite3_stmt *st_meta = NULL, *st_off = NULL;
    int64_t rate, secs, total, produced = 0, t0, pos[MAXP] = {0}, *lat, nlat = 0, ncommitted = 0,
                               end_wait;

    if (argc != 6) {
        fprintf(stderr, "usage: speed_fresh BROKERS TOPIC DATA_DIR RATE SECONDS\n");
        return 2;
    }
    rate = atoll(argv[4]);
    secs = atoll(argv[5]);
    total = rate * secs;
    cap_off = total + 1;
    sent_ms = calloc((size_t)total, sizeof(*sent_ms));
    lat = calloc((size_t)total, sizeof(*lat));
    for (int p = 0; p < MAXP; p++) {
        at[p] = calloc((size_t)cap_off, sizeof(int64_t));
    }
    rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof(err));
    rd_kafka_conf_set(conf, "compression.codec", "lz4", err, sizeof(err));
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err));
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "speed_fresh: %s\n", err);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/speed.db", argv[3]);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'checkpoint_ms'", -1, &st_meta,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT partition, next_offset FROM offsets", -1, &st_off, NULL) !=
            SQLITE_OK) {
        fprintf(stderr, "speed_fresh: cannot read '%s' (is lambda-speed running?)\n", path);
        return 1;
    }
    sqlite3_busy_timeout(db, 1000);
    /* Positions before this run are not ours. */
    while (sqlite3_step(st_off) == SQLITE_ROW)
        if (sqlite3_column_int(st_off, 0) < MAXP)
            pos[sqlite3_column_int(st_off, 0)] = sqlite3_column_int64(st_off, 1);
    sqlite3_reset(st_off);
    t0 = now_ms();
    end_wait = 0;
    for (;;) {
        int64_t now = now_ms(), due = (now - t0) * rate / 1000;
        int64_t ckpt = 0;
        while (produced < total && produced < due) {
            int n = snprintf(buf, sizeof(buf),
                             "{\"order_id\":\"f%" PRId64 "\",\"merchant_id\":\"m-%" PRId64
                             "\",\"amount_cents\":100,\"event_time\":%" PRId64 "}",
                             produced, produced % 1000, now);
            int kl = snprintf(key, sizeof(key), "m-%" PRId64, produced % 1000);
            sent_ms[produced] = now_ms();
            if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_KEY(key, (size_t)kl),
                                  RD_KAFKA_V_VALUE(buf, (size_t)n),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_OPAQUE((void *)(intptr_t)produced), RD_KAFKA_V_END))
                break;
            produced++;
        }
        rd_kafka_poll(rk, 1);
        /* One read transaction: the checkpoint time and the positions it committed. */
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        if (sqlite3_step(st_meta) == SQLITE_ROW)
            ckpt = sqlite3_column_int64(st_meta, 0);
        sqlite3_reset(st_meta);
        while (sqlite3_step(st_off) == SQLITE_ROW) {
            int p = sqlite3_column_int(st_off, 0);
            int64_t next = sqlite3_column_int64(st_off, 1);
            /* An offset whose delivery report is not in yet waits for the next round. */
            for (; p < MAXP && pos[p] < next && pos[p] < cap_off && at[p][pos[p]]; pos[p]++) {
                int64_t i = at[p][pos[p]] - 1;
                /* The first second warms up (producer metadata, first fetches). */
                if (i >= rate)
                    lat[nlat++] = ckpt - sent_ms[i];
                ncommitted++;
            }
        }
        sqlite3_reset(st_off);
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (produced == total && ncommitted >= total)
            break;
        if (produced == total && !end_wait)
            end_wait = now_ms() + 30000;
        if (end_wait && now_ms() > end_wait) {
            fprintf(stderr, "speed_fresh: only %" PRId64 " of %" PRId64 " events committed\n",
                    ncommitted, total);
            break;
        }
        nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
    }
    qsort(lat, (size_t)nlat, sizeof(*lat), cmp64);
    if (nlat)
        printf("fresh events=%" PRId64 " rate=%" PRId64 " p50_ms=%" PRId64 " p99_ms=%" PRId64
               " max_ms=%" PRId64 "\n",
               nlat, rate, lat[nlat / 2], lat[nlat * 99 / 100], lat[nlat - 1]);
    rd_kafka_flush(rk, 5000);
    rd_kafka_destroy(rk);
    sqlite3_finalize(st_meta);
    sqlite3_finalize(st_off);
    sqlite3_close(db);
    return nlat ? 0 : 1;
}
