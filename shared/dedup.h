/* dedup.h - the duplicate rule of DESIGN.md section 2, with bounded memory.
 *
 * An order (merchant_id, order_id) read at (partition p, offset o) is a duplicate iff
 *   (a) the id is in the caller's own seen set (ids it counted since the cut), or
 *   (b) master.db `orders` holds the id with partition -1 (an import), another partition, or
 *       the same partition and an offset < o (an earlier copy; a row at o or later was
 *       ingested by a batch run ahead of the caller and is this very copy, or a later one).
 * lambda-speed calls it; the seen set is the `seen` table of speed.db plus the ids added and
 * not yet committed (in memory).
 *
 * Memory stays bounded however long the stream runs: an in-memory table of 64-bit
 * fingerprints (XXH3 of "merchant\0order") holds at most cache_max ids. While every seen id
 * fits, a miss is conclusive and the common path (a new id) never touches the seen table;
 * once it overflowed, a miss asks the table (the authority). A fingerprint hit is always
 * confirmed against the exact ids, so a collision can never drop an order. master.db is read
 * through its own read-only connection, opened when the file appears; so is speed.db's seen
 * table, so that another thread may write it meanwhile.
 *
 * Threads: everything but dedup_flush() and dedup_expire_rows() belongs to one thread (the
 * consumer). Those two only read the detached ids and use seen_db, so a writer thread may
 * run them between dedup_detach() and dedup_release() while the consumer goes on. */
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

/* A dedup over speed.db's `seen` table and data_dir/master.db. seen_db (borrowed; it must
 * outlive the dedup) is the connection that writes speed.db; the dedup reads through its own.
 * Loads the fingerprints of the seen table (up to cache_max). NULL with e set when the table
 * cannot be read or memory is short. */
struct dedup *dedup_new(sqlite3 *seen_db, const char *data_dir, size_t cache_max, struct lerr *e);
void dedup_free(struct dedup *d);

/* 1 when the order at (partition, offset) is a duplicate, 0 when it is new, -1 with e set
 * when a database cannot be read (the caller should stop: the answer is unknown). */
int dedup_check(struct dedup *d, const char *merchant_id, const char *order_id, int partition,
                int64_t offset, struct lerr *e);

/* Records a counted id (tagged with its epoch) in memory; it is written after the next
 * dedup_detach() by dedup_flush(). The id must have been checked new. -1 only when out of
 * memory. */
int dedup_add(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
              int partition, int64_t offset, struct lerr *e);

/* Sets the ids added so far aside for writing (they stay duplicates for dedup_check); new
 * adds start a fresh set. The previous detached set must have been released. */
void dedup_detach(struct dedup *d);

/* Writes the detached ids into `seen` through seen_db. Call it inside the transaction that
 * also commits the positions of those events, so a crash neither forgets nor doubles an id.
 * On error nothing is forgotten in memory (the transaction should be rolled back). */
int dedup_flush(struct dedup *d, struct lerr *e);

/* Forgets the detached ids once their transaction committed (the table answers for them);
 * ends the read snapshots first (dedup_refresh), so no look-up can miss them. */
void dedup_release(struct dedup *d);

/* Expiry of ids tagged with an epoch < cut_epoch, only after a batch version with that cut
 * was published (its master dataset then holds them): dedup_expire_rows() deletes them from
 * `seen` through seen_db (inside the caller's transaction); after that commit and
 * dedup_release(), dedup_expire_cache() drops them from the cache. */
int dedup_expire_rows(struct dedup *d, int64_t cut_epoch, struct lerr *e);
int dedup_expire_cache(struct dedup *d, int64_t cut_epoch, struct lerr *e);

/* Look-ups in master.db and in the seen table share one read snapshot each (no lock calls
 * per look-up) until this ends them; the next look-up sees everything committed by then.
 * Call it after each checkpoint commit (before dedup_expire_cache), so a snapshot is never
 * older than one interval nor than a cut the caller has expired. */
void dedup_refresh(struct dedup *d);

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out);

#endif
