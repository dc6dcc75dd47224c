/* dedup.h - the duplicate rule of DESIGN.md section 2, with bounded memory.
 *
 * An order (merchant_id, order_id) read at (partition p, offset o) is a duplicate iff
 *   (a) the id is in the caller's own seen set (ids it counted since the cut), or
 *   (b) master.db `orders` holds the id with partition -1 (an import), another partition, or
 *       the same partition and an offset < o (an earlier copy; a row at o or later was
 *       ingested by a batch run ahead of the caller and is this very copy, or a later one).
 * lambda-speed calls it; the seen set is the `seen` table of speed.db plus the ids added
 * since they were last written.
 *
 * The seen table is an append-only log: each id gets the next sequence number (its rowid,
 * never given out twice), and epochs never decrease along it, so a checkpoint appends at the
 * end of one B-tree and expiry cuts a prefix. Nothing on disk is indexed by id; memory holds
 * at most cache_max fingerprints (64-bit XXH3 of "merchant\0order"), each with the sequence
 * number of its id, in two tables (dedup_ftab.h). While every seen id is in them a miss is
 * conclusive, and a hit is confirmed by reading that one id (from memory or its row), so a
 * collision can never drop an order. A full table is spilled into a generation on disk,
 * generations are merged (dedup_gens.h), and a Bloom filter over every spilled fingerprint
 * (dedup_bloom.h) spares most misses any read. Memory stays fixed however many ids are live;
 * a restart reloads the generations, the filter and the ids after them. Rule (b) is
 * dedup_master.h.
 *
 * A checkpoint writes the ids added since the last one, in three calls whose order the types
 * keep: dedup_begin() (the reading side) sets them aside and returns the checkpoint's
 * handle; dedup_write(handle) (the writing side: it may run on another thread, inside the
 * caller's transaction, while the reading side keeps adding) appends them, with the next
 * slices of a spill or merge under way and an expiry; dedup_end(handle) (the reading side,
 * once that transaction committed or rolled back) consumes the handle. One checkpoint at a
 * time: dedup_begin fails while a handle is out. */
#ifndef LAMBDA_DEDUP_H
#define LAMBDA_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lerr.h"

struct dedup;
struct dedup_txn; /* one checkpoint, from dedup_begin() to dedup_end() */

/* dedup_begin()'s cut_epoch when the checkpoint expires nothing. */
#define DEDUP_NO_CUT INT64_MIN

struct dedup_stats {
    size_t cache_ids;    /* fingerprints held in memory */
    size_t cache_max;    /* the bound */
    size_t pending;      /* ids added and not yet written */
    bool is_complete;    /* every seen id is in the cache: a miss needs no table look-up */
    size_t gens;         /* spilled generations (seen_gens) */
    bool is_spilling;    /* a full table is being written to its generation */
    bool is_merging;     /* generations are being merged into one */
    int64_t seen_reads;  /* rows read to confirm a fingerprint */
    int64_t spill_reads; /* generations asked for a fingerprint */
    int64_t master_reads;
};

/* A dedup over wdb's `seen` table (borrowed; it must outlive the dedup; speed.db opened
 * read-write) and data_dir/master.db, with at most cache_max fingerprints in memory. Loads
 * the spilled generations and the ids after them (dropping the tables of a spill or merge a
 * crash cut short). NULL with e set when the tables cannot be read or memory is short. */
struct dedup *dedup_new(sqlite3 *wdb, const char *data_dir, size_t cache_max, struct lerr *e);
/* Frees everything, a checkpoint's handle included (a crash: what it did not commit is lost
 * with the process). NULL is a no-op. */
void dedup_free(struct dedup *d);

/* Look-ups in the seen table go through rdb (borrowed, another connection to the same
 * speed.db; NULL: back to wdb) instead of wdb, for a writer on another thread. Then a full
 * table changes hands only while no write is under way: when one must while a checkpoint's
 * handle is out, dedup calls wait_end(opaque, e), which must return 0 only once dedup_end()
 * consumed that handle (after waiting for its write), else -1 with e set (the add fails). */
void dedup_set_reader(struct dedup *d, sqlite3 *rdb, int (*wait_end)(void *, struct lerr *),
                      void *opaque);

/* dedup_key() gives an order's fingerprint and starts loading its cache slot (so a batch's
 * memory latencies overlap); dedup_admit_key() takes it back and applies the rule: 1 a
 * duplicate, 0 new (and recorded, tagged with epoch), -1 with e set when a database cannot be
 * read (the caller should stop: the answer is unknown), when out of memory, or when a spill
 * that must finish first cannot be written. Orders are admitted one by one, in log order;
 * epochs must not decrease from one call to the next. */
uint64_t dedup_key(const struct dedup *d, const char *merchant_id, const char *order_id);
int dedup_admit_key(struct dedup *d, uint64_t key, const char *merchant_id, const char *order_id,
                    int64_t epoch, int partition, int64_t offset, struct lerr *e);

/* The rule without recording (1 a duplicate, 0 new, -1 with e set), for an order read at
 * (partition, offset): lambda-batch import, holding speed.lock while no speed layer runs,
 * checks its lines against the ids the speed layer counted since the cut with it. */
int dedup_check(struct dedup *d, const char *merchant_id, const char *order_id, int partition,
                int64_t offset, struct lerr *e);

/* Starts a checkpoint (no write may be under way): look-ups start new snapshots (so the
 * master.db one is never older than the publication of a cut being expired, nor than one
 * interval), the ids added so far are sealed (they still answer look-ups), and the spill or
 * merge under way is paced. cut_epoch: the checkpoint forgets the ids tagged with an epoch <
 * cut_epoch (call it only after a batch version with that cut was published: its master
 * dataset then holds them), or DEDUP_NO_CUT. The handle, or NULL with e set when a
 * checkpoint is under way or the ids of one that did not commit are still sealed. */
struct dedup_txn *dedup_begin(struct dedup *d, int64_t cut_epoch, struct lerr *e);

/* The writing side, inside the caller's transaction (which also commits the positions of
 * those events, so a crash neither forgets nor doubles an id), on any one thread: appends the
 * sealed ids to `seen` through wdb, the next slice of a spill or merge under way, and the
 * expiry's deletions. At most once per handle. -1 with e set: memory is as before the call,
 * and the caller rolls back and ends the handle uncommitted. */
int dedup_write(struct dedup_txn *t, struct lerr *e);

/* The reading side once the caller's transaction committed (is_committed, after a
 * dedup_write that succeeded) or rolled back; no write may be under way. Committed: the
 * sealed ids are forgotten from memory (their rows answer now), a finished spill frees its
 * table, the expiry reaches the cache, and look-ups start new snapshots. Rolled back: what
 * the write moved in memory is put back and the sealed ids stay (still answering look-ups,
 * and making the next dedup_begin fail): after a failed commit the caller must stop, and the
 * events replay at the next start. Consumes t. -1 with e set when memory is short. */
int dedup_end(struct dedup_txn *t, bool is_committed, struct lerr *e);

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out);

#endif
