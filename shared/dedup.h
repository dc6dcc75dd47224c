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
 * The seen table is an append-only log: each id gets the next sequence number (its rowid), and
 * epochs never decrease along it, so a checkpoint appends at the end of one B-tree and expiry
 * cuts a prefix. Nothing on disk is indexed by id; memory holds at most cache_max fingerprints
 * (64-bit XXH3 of "merchant\0order"), each with the sequence number of its id:
 *   - two tables of cache_max/2: new ids go to the active one. While every seen id is in them
 *     a miss is conclusive, and a hit is confirmed by reading that one id (from memory or its
 *     row), so a collision can never drop an order;
 *   - when the active table is full it becomes the old one and is spilled, a slice per
 *     checkpoint in fingerprint order (so each slice appends), into a generation: a table
 *     seen_fp_<gen>(fp, seq) of its own. The commit of the last slice lists it in seen_gens
 *     and frees the memory table;
 *   - four generations of one level are merged into one of the next, a slice of the
 *     fingerprint range per checkpoint, so a look-up asks O(log n) tables;
 *   - a fixed Bloom filter covers every spilled fingerprint: most misses need no read at all,
 *     the rest look the fingerprint up in each generation and confirm by row.
 * Memory stays fixed however many ids are live; a generation goes (DROP TABLE) when expiry
 * passes its last id, and a restart reloads the generations, the filter and the ids after
 * them, dropping the tables of a spill or merge a crash cut short.
 * master.db is read through its own read-only connection, opened when the file appears.
 *
 * Threads: the writing side (dedup_write_sealed, dedup_expire_rows) may run on another thread
 * than the rest, as long as the caller never runs both at once on the write connection:
 * dedup_add hands a full table over to the writing side, or finishes a spill that did not
 * keep up, only after the quiesce callback returned, which must return only when no write is
 * under way. */
#ifndef LAMBDA_DEDUP_H
#define LAMBDA_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lerr.h"

struct dedup;

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
 * the spilled generations and the ids after them (finishing a spill a crash cut short). NULL
 * with e set when the tables cannot be read or memory is short. */
struct dedup *dedup_new(sqlite3 *wdb, const char *data_dir, size_t cache_max, struct lerr *e);
void dedup_free(struct dedup *d);

/* Look-ups in the seen table go through rdb (borrowed, another connection to the same
 * speed.db) instead of wdb, and a full table changes hands only after quiesce(opaque) (0 when
 * wdb is free, else -1 with e set). For a writer on another thread. */
void dedup_set_reader(struct dedup *d, sqlite3 *rdb, int (*quiesce)(void *, struct lerr *),
                      void *opaque);

/* 1 when the order at (partition, offset) is a duplicate, 0 when it is new, -1 with e set
 * when a database cannot be read (the caller should stop: the answer is unknown). */
int dedup_check(struct dedup *d, const char *merchant_id, const char *order_id, int partition,
                int64_t offset, struct lerr *e);

/* Records a counted id (tagged with its epoch) in memory. The id must have been checked new;
 * epochs must not decrease from one call to the next. -1 when out of memory, or when a spill
 * that must finish first cannot be written. */
int dedup_add(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
              int partition, int64_t offset, struct lerr *e);

/* dedup_check, then dedup_add when new, with one fingerprint: 1 a duplicate, 0 new (and
 * recorded), -1 with e set. */
int dedup_admit(struct dedup *d, const char *merchant_id, const char *order_id, int64_t epoch,
                int partition, int64_t offset, struct lerr *e);

/* The same in two steps for a batch of orders: dedup_key() gives an order's fingerprint and
 * starts loading its cache slot (so a batch's memory latencies overlap); dedup_admit_key()
 * takes it back. Orders must still be admitted one by one, in log order. */
uint64_t dedup_key(const struct dedup *d, const char *merchant_id, const char *order_id);
int dedup_admit_key(struct dedup *d, uint64_t key, const char *merchant_id, const char *order_id,
                    int64_t epoch, int partition, int64_t offset, struct lerr *e);

/* Writes the ids added since the last flush into `seen`, and the whole of a spill or merge
 * under way: seal, write, release in one call.
 * Call it inside the transaction that also commits the positions of those events, so a crash
 * neither forgets nor doubles an id. A failed write forgets nothing in memory (the caller
 * rolls the transaction back); after a failed commit the caller must stop. */
int dedup_flush(struct dedup *d, struct lerr *e);

/* The same in three steps, for a writer thread: seal sets the added ids aside (-1 when ids
 * sealed earlier were not released yet); write_sealed appends them to `seen` through wdb,
 * inside the caller's transaction, with the next slice of a spill under way (dedup_seal
 * sizes it); release forgets them once that transaction committed (until then they still
 * answer look-ups), and frees a table whose spill it completed. A failed write or commit keeps them
 * sealed: the caller rolls back and stops, and the events replay at the next start. */
int dedup_seal(struct dedup *d, struct lerr *e);
int dedup_write_sealed(struct dedup *d, struct lerr *e);
int dedup_release_sealed(struct dedup *d, struct lerr *e);

/* Forgets ids tagged with an epoch < cut_epoch. dedup_expire does both halves: expire_rows
 * deletes them from `seen` (inside the caller's transaction; writing side); expire_cache
 * drops them from memory once that committed. Call only after a batch version with that cut
 * was published (its master dataset then holds them). */
int dedup_expire(struct dedup *d, int64_t cut_epoch, struct lerr *e);
int dedup_expire_rows(struct dedup *d, int64_t cut_epoch, struct lerr *e);
int dedup_expire_cache(struct dedup *d, int64_t cut_epoch, struct lerr *e);

/* Look-ups in master.db and through a reader share one read snapshot each (no lock calls per
 * look-up) until this ends them; the next look-up sees everything committed by then. The
 * master.db snapshot must never be older than the publication of a cut being expired: call it
 * before handing over a write that expires. With a
 * reader, it also truncates speed.db's write-ahead log once it outgrew journal_size_limit
 * (our snapshots would otherwise keep the writer from ever restarting it), so call it only
 * while no write is under way. Call it once per checkpoint, after any expiry committed, so the
 * snapshot is never older than one interval and never older than a cut the caller has expired. */
void dedup_refresh(struct dedup *d);

void dedup_get_stats(const struct dedup *d, struct dedup_stats *out);

#endif
