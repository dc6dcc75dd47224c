/* speed.h - the speed layer: a Kafka consumer keeping per (merchant, minute, epoch) deltas
 * of what the last batch cut has not covered (DESIGN.md sections 3 and 5).
 *
 * speed/main.c wires it: speed_open() takes data_dir/speed.lock and loads the committed state
 * of speed.db; speed_connect() learns the partitions and the start positions and assigns
 * them (no consumer group, no committed offsets in Kafka); speed_run() consumes until *stop
 * is set, committing one SQLite transaction per checkpoint interval, and writes a last
 * checkpoint before it returns; speed_close() releases everything, the lock last.
 *
 * Exactness rests on one rule: everything an event changes (its delta, its seen id, a reject
 * or late row, the counters) commits in the same transaction as the position after it, so a
 * crash replays exactly the events whose effects were lost. */
#ifndef LAMBDA_SPEED_H
#define LAMBDA_SPEED_H

#include <signal.h>
#include <stdint.h>

#include "cfg.h"
#include "lerr.h"
#include "pin.h"

struct speed; /* speed_int.h: private to speed/ */

/* What main.c logs at start and stop. */
struct speed_stats {
    int nparts;
    int64_t epoch, consumed, applied;
};

/* Takes the lock, opens speed.db and loads its committed state (positions, counters, meta),
 * creates the dedup. NULL with e set on any failure (nothing is left held); "another
 * lambda-speed" when the lock is busy. c is borrowed until speed_close(). */
struct speed *speed_open(const struct cfg *c, struct lerr *e);

/* Creates the consumer, waits (retrying while *stop is 0) for the topic's partitions, picks
 * the start positions (DESIGN section 3 "Speed start") and assigns them. Returns 0, 1 when
 * *stop was set before the broker answered, -1 with e set on failure. */
int speed_connect(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e);

/* Consumes and checkpoints until *stop is set; then writes a last checkpoint. -1 with e set
 * when a checkpoint cannot be written (what was not committed replays at the next start). */
int speed_run(struct speed *s, volatile sig_atomic_t *stop, struct lerr *e);

void speed_get_stats(const struct speed *s, struct speed_stats *out);

/* Releases the consumer, the databases and the lock, then s; speed_close(NULL) is a no-op. */
void speed_close(struct speed *s);

/* savepoint.c: the whole state as one SQLite file (backup API), and back. Restore takes
 * speed.lock itself and fails when a speed layer runs. */
int speed_savepoint_out(const char *data_dir, const char *file, struct lerr *e);
int speed_savepoint_restore(const char *data_dir, const char *file, struct lerr *e);

/* savepoint.c: compares the pins a savepoint carries (its shard_partitions, epoch_ms) with p,
 * as pin_compare() does: 0 agree (or none recorded), 1 mismatch naming both, -1 unreadable. */
int speed_savepoint_check_pins(const char *file, const char *data_dir, const struct pin_set *p,
                               struct lerr *e);

#endif
