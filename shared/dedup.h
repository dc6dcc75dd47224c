/* dedup.h - the duplicate rule of DESIGN.md section 2, with bounded memory.
 *
 * An order (merchant_id, order_id) read at (partition p, offset o) is a duplicate iff
 *   (a) the id is in the caller's own seen set (ids it counted since the cut), or
 *   (b) master.db `orders` holds the id with partition -1 (an import), another partition, or
 *       the same partition and an offset < o (an earlier copy; a row at o or later was
 *       ingested by a batch run ahead of the caller and is this very copy, or a later one).
 * lambda-speed calls it; the seen set is the `seen` table of the database given to
 * dedup_new() (speed.db) plus the ids added since the last dedup_flush().
 *
 * Memory stays bounded however long the stream runs: an in-memory table of 64-bit
 * fingerprints (XXH3 of "merchant\0order") holds at most cache_max ids. While every seen id
 * fits, a miss is conclusive and the common path (a new id) never touches the seen table;
 * once it overflowed, a miss asks the table (the authority). A fingerprint hit is always
 * confirmed against the exact ids, so a collision can never drop an order. master.db is read
 * through its own read-only connection, opened when the file appears. The seen table is read
 * on the caller's connection, inside whatever transaction the caller holds. */
#ifndef LAMBDA_DEDUP_H
#define LAMBDA_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lerr.h"

struct dedup;

struct dedup_stats {
    size_t cache_ids;   /* fingerprints held in memory */
    size_t cache_max;   /* the bound */
    size_t pending;     /* ids added since the last flush */
    bool is_complete;   /* every seen id is in the cache: a miss needs no table look-up */
    int64_t seen_reads; /* look-ups in the seen table (overflow or confirmation) */
    int64_t master_reads;
};

/* A dedup over seen_db's `seen` table (borrowed; it must outlive the dedup) and
 * data_dir/master.db. Loads the fingerprints of the seen table (up to cache_max). NULL with
 * e set when the table cannot be read or memory is short. */
struct dedup *dedup_new(sqlite3 *seen_db, const char *data_dir, size_t cache_max, struct lerr *e);
void dedup_free(struct dedup *d);

/* 1 when the order at (partition, offset) is a duplicate, 0 when it is new, -1 with e set
 * when a database cannot be read (the caller should stop: the answer is unknown). */
int dedup_check(struct dedup *d, const char *merchant_id, const char *order_id, int partition,
                int64_t offset, struct lerr *e);

/* Records a counted id (tagged with its epoch) in memory; dedup_flush() writes it. The id must
 * have been checked new. -1 only when out of memory. */
int dedup_add(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
              int partition, int64_t offset, struct lerr *e);

/* Writes the ids added since the last flush into `seen`. Call it inside the transaction that
 * also commits the positions of those events, so a crash neither forgets nor doubles an id.
 * On error nothing is forgotten in memory (the transaction should be rolled back). */
int dedup_flush(struct dedup *d, struct lerr *e);

/* Forgets ids tagged with an epoch < cut_epoch: deletes them from `seen` (inside the caller's
 * transaction) and from the cache. Call only after a batch version with that cut was
 * published (its master dataset then holds them). */
int dedup_expire(struct dedup *d, int64_t cut_epoch, struct lerr *e);

/* Look-ups in master.db share one read snapshot (no lock calls per look-up) until this ends
 * it; the next look-up sees everything master.db committed by then. Call it once per
 * checkpoint, after any expiry committed, so the snapshot is never older than one interval
 * and never older than a cut the caller has expired. */
void dedup_refresh(struct dedup *d);

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out);

#endif
