/* cut.h - the cut in one place: which log positions a batch version covers, and where the
 * speed layer's epochs begin (DESIGN.md section 3, "The cut").
 *
 * batch.db's versions table holds each version's state (pending, published, failed) and
 * cut_epoch, cut_offsets its per-partition offsets (master holds every offset below them);
 * speed.db's boundaries table holds, for each epoch the speed layer began, every partition's
 * position then. batch (picking and publishing a cut, status), speed (where to start, what
 * to expire) and serving (which version answers) read them only through here. The epoch of a
 * wall-clock time is tm_epoch() (tm.h). Nothing here writes. */
#ifndef LAMBDA_CUT_H
#define LAMBDA_CUT_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "lerr.h"

/* One version of batch.db as the cut sees it. */
struct cut_version {
    int64_t id;         /* versions.id */
    int64_t epoch;      /* cut_epoch: the version covers every epoch below it */
    int64_t started_ms; /* when its run recorded the cut */
    int64_t orders;     /* orders it counts; 0 until it is published */
};

/* Receives one (partition, offset) of a cut or a boundary; -1 (e set) stops the reading. */
typedef int cut_offset_fn(void *arg, int32_t partition, int64_t offset, struct lerr *e);

/* The newest published version, for a caller that prepares the statement once (a snapshot's
 * statements, a poll): its columns are read by cut_step_published(). */
extern const char cut_published_sql[];

/* Steps a statement of cut_published_sql and resets it: *found and *out (untouched when none).
 * -1 with e naming the statement when SQLite fails. */
int cut_step_published(sqlite3_stmt *st, struct cut_version *out, bool *found, struct lerr *e);

/* The newest published version of bdb (batch.db, or a connection attaching it as main). */
int cut_published(sqlite3 *bdb, struct cut_version *out, bool *found, struct lerr *e);

/* The newest version that is not failed: the pending one if there is one, else the newest
 * published (a pending version is always the newest, and there is at most one). */
int cut_newest(sqlite3 *bdb, struct cut_version *out, bool *found, struct lerr *e);

/* The pending version, whose cut binds the next run. */
int cut_pending(sqlite3 *bdb, struct cut_version *out, bool *found, struct lerr *e);

/* Hands each (partition, offset) of version's cut to add, in partition order. */
int cut_offsets(sqlite3 *bdb, int64_t version, cut_offset_fn *add, void *arg, struct lerr *e);

/* The speed layer's newest boundary in data_dir/speed.db: its epoch and, when add is not
 * NULL, each (partition, offset) in partition order. *found is false when speed.db or its
 * boundaries do not exist yet. */
int cut_newest_boundary(const char *data_dir, int64_t *epoch, cut_offset_fn *add, void *arg,
                        bool *found, struct lerr *e);

#endif
