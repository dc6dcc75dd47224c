/* dedup_test.h - entry points of shared/dedup.c for tests only (tests/test_dedup*.c).
 *
 * They cut across the checkpoint protocol of dedup.h (a checkpoint in one call, an expiry
 * without one), so lambda-speed never calls them. None may run while a checkpoint's handle
 * is out. */
#ifndef LAMBDA_DEDUP_TEST_H
#define LAMBDA_DEDUP_TEST_H

#include "dedup.h"

/* Records an id checked new, as dedup_admit_key does after its check. */
int dedup_add(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
              int partition, int64_t offset, struct lerr *e);

/* dedup_key() then dedup_admit_key(). */
int dedup_admit(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
                int partition, int64_t offset, struct lerr *e);

/* A whole checkpoint inside the caller's transaction, the whole spill and merge under way
 * included; then drops the tables nothing lists. */
int dedup_flush(struct dedup *d, struct lerr *e);

/* dedup_flush, then forgets the ids tagged with an epoch < cut_epoch (rows and memory). */
int dedup_expire(struct dedup *d, int64_t cut_epoch, struct lerr *e);

/* Look-ups start new snapshots (what dedup_begin and dedup_end do first). */
void dedup_refresh(struct dedup *d);

#endif
