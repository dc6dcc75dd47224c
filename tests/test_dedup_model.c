/* test_dedup_model.c - shared/dedup.c against a model of what it must know, over random
 * schedules: ids added, looked up, checkpointed (sealed, written, committed, released),
 * expired below a cut, and crashes (the open transaction rolled back or committed, memory
 * lost, the dedup opened again with another cache size). Small caches, so every schedule
 * spills, merges and expires generations. Each seed is a fixed schedule: a failure names it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "dedup_test.h"
#include "itlib.h"
#include "log.h"

/* Where an id is, as the model knows it. */
enum { NEVER, CUR, SEALED, INFLIGHT, DONE, LOST };
#define MAXID 4000

struct model {
    int st[MAXID];
    int64_t ep[MAXID];
    int nids;
    char dir[512];
    sqlite3 *w, *r;
    struct dedup *d;
    struct dedup_txn *txn; /* the checkpoint begun and not yet ended */
    bool inflight;         /* a checkpoint's transaction is open on w */
    int64_t epoch, cut_posted, job_cut;
    unsigned seed, rs;
    struct lerr e;
};

static struct model M;

static unsigned rnd(void)
{
    M.rs = M.rs * 1103515245u + 12345u;
    return (M.rs >> 8) & 0xffffff;
}

static void mark(int from, int to)
{
    for (int i = 0; i < M.nids; i++)
        if (M.st[i] == from)
            M.st[i] = to;
}

/* The reading side's half of a committed checkpoint. */
static void finish(void)
{
    cr_assert_eq(dedup_end(M.txn, true, &M.e), 0, "end: %s", M.e.msg);
    M.txn = NULL;
    mark(INFLIGHT, DONE);
    M.job_cut = INT64_MIN;
}

static void commit_job(void)
{
    if (!M.inflight)
        return;
    cr_assert_eq(db_exec(M.w, "COMMIT", &M.e), 0, "%s", M.e.msg);
    M.inflight = false;
    mark(SEALED, INFLIGHT);
    finish();
}

static int quiesce(void *opaque, struct lerr *e)
{
    (void)opaque;
    (void)e;
    commit_job();
    return 0;
}

static void open_all(void)
{
    size_t cache = rnd() % 4 == 0 ? 2 + rnd() % 8 : 2 + rnd() % 64;

    cr_assert_eq(db_open_rw(M.dir, DB_SPEED, &M.w, &M.e), 0, "%s", M.e.msg);
    M.d = dedup_new(M.w, M.dir, cache, &M.e);
    cr_assert_not_null(M.d, "dedup_new: %s", M.e.msg);
    cr_assert_eq(db_open_ro(M.dir, DB_SPEED, &M.r, &M.e), 0, "%s", M.e.msg);
    dedup_set_reader(M.d, M.r, quiesce, NULL);
}

static void crash(void)
{
    if (M.inflight) {
        if (rnd() % 2) {
            db_exec(M.w, "ROLLBACK", NULL);
        } else {
            cr_assert_eq(db_exec(M.w, "COMMIT", &M.e), 0, "%s", M.e.msg);
            mark(SEALED, INFLIGHT);
        }
        M.inflight = false;
    }
    mark(CUR, LOST);
    mark(SEALED, LOST);
    mark(INFLIGHT, DONE);
    M.job_cut = INT64_MIN;
    M.txn = NULL; /* lost with the process */
    dedup_set_reader(M.d, NULL, NULL, NULL);
    dedup_free(M.d);
    cr_assert_eq(sqlite3_close(M.r), SQLITE_OK, "the reader's statements were all finalized");
    cr_assert_eq(sqlite3_close(M.w), SQLITE_OK, "the writer's statements were all finalized");
    open_all();
}

static void checkpoint(void)
{
    int64_t cut = DEDUP_NO_CUT;

    commit_job();
    if (rnd() % 25 == 0 && M.epoch - 4 > (M.cut_posted == INT64_MIN ? 0 : M.cut_posted)) {
        int64_t c = M.epoch - 3 - rnd() % 3;
        if (c > M.cut_posted)
            cut = c;
    }
    M.txn = dedup_begin(M.d, cut, &M.e);
    cr_assert_not_null(M.txn, "%s", M.e.msg);
    mark(CUR, SEALED);
    cr_assert_eq(db_exec(M.w, "BEGIN IMMEDIATE", &M.e), 0, "%s", M.e.msg);
    cr_assert_eq(dedup_write(M.txn, &M.e), 0, "seed %u, write: %s", M.seed, M.e.msg);
    if (cut != DEDUP_NO_CUT)
        M.cut_posted = M.job_cut = cut;
    M.inflight = true;
    if (rnd() % 12 == 0)
        M.epoch++;
}

static void check_one(int i)
{
    char o[32];
    int want, got;

    if (M.st[i] == NEVER || M.st[i] == LOST)
        want = 0;
    else if (M.cut_posted != INT64_MIN && M.ep[i] < M.cut_posted)
        return; /* expired: master.db would answer for it */
    else
        want = 1;
    snprintf(o, sizeof(o), "o-%d", i);
    got = dedup_check(M.d, "m", o, 0, 1, &M.e);
    cr_assert_geq(got, 0, "seed %u: %s", M.seed, M.e.msg);
    cr_assert_eq(got, want, "seed %u, id %d (state %d, epoch %lld, cut %lld): got %d want %d",
                 M.seed, i, M.st[i], (long long)M.ep[i], (long long)M.cut_posted, got, want);
}

static void admit(int i)
{
    char o[32];

    snprintf(o, sizeof(o), "o-%d", i);
    M.ep[i] = M.epoch;
    cr_assert_eq(dedup_admit(M.d, "m", o, M.epoch, 0, i, &M.e), 0, "seed %u, id %d: %s", M.seed, i,
                 M.e.msg);
    M.st[i] = CUR;
}

static void run(unsigned seed, int steps)
{
    memset(&M, 0, sizeof(M));
    M.seed = M.rs = seed;
    M.epoch = 1;
    M.cut_posted = M.job_cut = INT64_MIN;
    it_tmpdir("dedup-model", M.dir);
    open_all();
    for (int s = 0; s < steps; s++) {
        int op = (int)(rnd() % 100);
        if (op < 45 && M.nids < MAXID) {
            admit(M.nids++);
        } else if (op < 55) { /* a lost id comes again */
            for (int k = 0; k < 5 && M.nids; k++) {
                int i = (int)(rnd() % (unsigned)M.nids);
                if (M.st[i] == LOST) {
                    admit(i);
                    break;
                }
            }
        } else if (op < 85) {
            if (M.nids)
                check_one((int)(rnd() % (unsigned)(M.nids + 3)));
        } else if (op < 97) {
            checkpoint();
        } else {
            crash();
        }
    }
    crash();
    for (int i = 0; i < M.nids; i++)
        check_one(i);
    dedup_set_reader(M.d, NULL, NULL, NULL);
    dedup_free(M.d);
    sqlite3_close(M.r);
    sqlite3_close(M.w);
}

static void quiet(void)
{
    log_set_level("error");
}

/* Ten schedules per test; three under the sanitizers, which run them about ten times slower. */
#ifdef __SANITIZE_ADDRESS__
#define PER_TEST 3
#else
#define PER_TEST 10
#endif
#define SEEDS(n)                                                                                   \
    Test(dedup_model, seeds_##n, .init = quiet, .timeout = 120)                                    \
    {                                                                                              \
        for (unsigned s = 0; s < PER_TEST; s++)                                                    \
            run(n * 10 + s + 1, 3000);                                                             \
    }
SEEDS(0)
SEEDS(1)
SEEDS(2)
SEEDS(3)
