/* dedup_gens.h - gens_: the generations of spilled fingerprints of shared/dedup.c, and the
 * spills and merges that make them.
 *
 * A generation is a table seen_fp_<gen>(fp, seq) of its own in speed.db, keyed by
 * fingerprint, holding the ids numbered lo..hi that left memory; seen_gens lists it once it
 * is written whole. A full fingerprint table is spilled into a new one a slice per checkpoint
 * (in slot order, so each slice appends); MERGE_FAN or more adjacent generations of one level
 * are merged into one of the next level a slice of the fingerprint range per checkpoint, so a
 * look-up asks O(log n) tables. A generation goes whole (DROP TABLE) once expiry passes hi.
 *
 * What a caller may rely on:
 *   - the list in memory is the set of tables look-ups ask, in sequence order; a table is
 *     dropped only after no look-up can ask it: the writing side unlists it from seen_gens
 *     (gens_unlist_below, or the end of a merge), the reading side forgets it after that
 *     commit (gens_forget_unlisted), the next write drops it (gens_write). A crash in
 *     between leaves a table no generation lists, dropped by gens_load.
 *   - threads: gens_write, gens_unlist_below and gens_spill_write are the writing side (wdb,
 *     inside the caller's transaction); the rest is the reading side. Both may run at once
 *     except gens_spill_start, gens_spill_retire and gens_merge_retire, which need the
 *     writing side idle. A failed write is undone in memory by gens_progress_undo().
 *   - look-ups go through rdb (wdb unless gens_set_reader() named another connection) and
 *     read whatever snapshot the caller holds open on it. */
#ifndef LAMBDA_DEDUP_GENS_H
#define LAMBDA_DEDUP_GENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "dedup_bloom.h"
#include "dedup_ftab.h"
#include "lerr.h"

#define MERGE_FAN  4
#define MERGE_MAX  64    /* a backlog of small generations collapses at once, up to this */
#define SLICE_ROWS 32768 /* the rows a merge slice aims at */

struct gen {
    int64_t gen, lo, hi; /* sequence numbers lo..hi */
    int level;
    sqlite3_stmt *probe; /* on the reader: the seqs of a fingerprint; NULL until first use */
};

/* The spill of a full table into a new generation, in slot order, a slice per checkpoint.
 * The reading side starts it and paces it (`until`), both while no write is under way; the
 * writing side moves `next` and sets is_done in the transaction that writes the last slice
 * and the generation's seen_gens row. */
struct gens_spill {
    const struct ftab *t; /* NULL when no spill is under way */
    int64_t gen, lo, hi;
    size_t next, until;
    bool is_done;
    sqlite3_stmt *w_one, *w_many; /* the writer's inserts into seen_fp_<gen> */
};

/* The merge of nsrc adjacent generations of one level into a new one of the next, a slice of
 * the fingerprint range per step; started and paced like a spill. The sources stay whole
 * until the transaction that writes the last slice lists the new generation and unlists
 * them. */
struct gens_merge {
    bool is_on, is_done;
    int nsrc;
    int64_t src[MERGE_MAX];
    int64_t gen, lo, hi;
    int level;
    uint32_t next, until, slices;
};

struct idlist {
    int64_t *v;
    size_t n, cap;
};

struct gens {
    sqlite3 *wdb;  /* borrowed: writes */
    sqlite3 *rdb;  /* borrowed: look-ups */
    struct gen *v; /* oldest first */
    size_t n, cap;
    struct gens_spill sp;
    struct gens_merge mg;
    struct idlist unlisted; /* unlisted by the writing side, not yet forgotten */
    struct idlist doomed;   /* forgotten, their tables not yet dropped */
    bool is_bloom_stale;    /* generations went by expiry: the filter still holds their bits */
    int64_t next_gen;
    sqlite3_stmt *w_below;
    int64_t reads; /* generations asked for a fingerprint */
};

/* What a write moves in memory, put back when its transaction is rolled back. */
struct gens_progress {
    size_t sp_next, doomed, unlisted;
    bool sp_done, mg_done;
    uint32_t mg_next;
};

/* No generations, writing and reading through wdb (borrowed; it must outlive g). */
void gens_init(struct gens *g, sqlite3 *wdb);
void gens_release(struct gens *g);

/* Drops the tables of generations never written whole (a spill or merge a crash cut short:
 * their ids are in the generations they came from, or in `seen`), then reads the list.
 * *max_hi: the highest number a generation holds (0 when none). -1 with e set on an error. */
int gens_load(struct gens *g, int64_t *max_hi, struct lerr *e);

/* Look-ups go through rdb from now on; every probe prepared on the former one is finalized. */
void gens_set_reader(struct gens *g, sqlite3 *rdb);

/* Asks the generations, newest first, for fingerprint h: for each number a table holds for
 * it, is_id(arg, seq, e) says 1 (the id), 0 (a collision), -1 (an error). The first non-zero
 * answer, 0 when none, or -1 with e set when a table cannot be read. */
int gens_lookup(struct gens *g, uint64_t h, int (*is_id)(void *, int64_t, struct lerr *), void *arg,
                struct lerr *e);

/* Adds every spilled fingerprint to b, each table read through rdb. */
int gens_fill_bloom(const struct gens *g, struct bloom *b, struct lerr *e);

/* Starts the spill of t (full; it must stay unchanged until gens_spill_retire()). */
void gens_spill_start(struct gens *g, const struct ftab *t);

/* Paces the spill and the merge under way for the next write: the spill is done by the time
 * the active table act is 3/4 full, and a merge moves SLICE_ROWS and twice the sealed ids
 * per checkpoint. */
void gens_pace(struct gens *g, const struct ftab *act, size_t sealed);

/* The next write finishes the spill and the merge under way (no writer to pace). */
void gens_pace_whole(struct gens *g);

/* Makes the next write start the spill over (its table was swept: slots moved). */
void gens_spill_restart(struct gens *g);

/* The writing side of a checkpoint: drops the doomed tables, writes the spill's and the
 * merge's next slices (with the seen_gens rows of what they finish). 0, or -1 with e set (the
 * caller undoes the progress and rolls back). */
int gens_write(struct gens *g, struct lerr *e);

/* Writes the whole rest of the spill under way (the writing side). */
int gens_spill_write(struct gens *g, struct lerr *e);

/* Unlists the generations wholly below the first id `seen` keeps, or below first_unwritten
 * when it keeps none (a merge's sources go when it ends). The writing side. */
int gens_unlist_below(struct gens *g, int64_t first_unwritten, struct lerr *e);

/* The reading side once a commit finished a spill: its generation joins the list (the caller
 * frees the table and must end its snapshot, so that the next look-up sees the new table). */
int gens_spill_retire(struct gens *g, struct lerr *e);

/* The same once a commit finished a merge: the new generation answers for its sources. */
int gens_merge_retire(struct gens *g, struct lerr *e);

/* The reading side after a commit: what it unlisted is forgotten, its tables doomed. */
int gens_forget_unlisted(struct gens *g, struct lerr *e);

/* Drops the doomed tables (the writing side, or no reader left to ask them). */
int gens_drop_doomed(struct gens *g, struct lerr *e);

/* Starts a merge when MERGE_FAN adjacent generations share a level (the oldest such run).
 * Only while no write is under way, and after what a commit unlisted was forgotten. */
void gens_maybe_merge(struct gens *g);

struct gens_progress gens_progress_of(const struct gens *g);
void gens_progress_undo(struct gens *g, const struct gens_progress *p);

#endif
