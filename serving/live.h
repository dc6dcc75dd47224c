/* live.h - every merchant's all-time totals held in memory, kept current from speed.db's change
 * feed and batch.db's publishes, and the events of committed changes (DESIGN.md sections 3-5).
 *
 * One follower thread per server polls both files' wal-index headers (every LIVE_POLL_MS,
 * no SQL while nothing commits) and, after a commit, reads one snapshot in the read order of
 * store.h: a new version (or a new speed.db, or a feed that went backwards) rebuilds the whole
 * state from merchant_totals and a sum of the version's speed rows; a checkpoint re-sums only
 * the merchants whose rows carry its number. The new state replaces the old one under a
 * write lock, all at once, so an answer (one merchant or a hundred) reads one snapshot: a
 * version is only ever paired with the speed rows of its epochs, and the state only moves
 * forward. It is used only once it is current (nothing committed while it was built), so a
 * reader that got a newer answer from SQLite meanwhile never sees an older one after.
 *
 * Memory: one entry per merchant with data, about 110 bytes plus the id (a 56-byte hash handle,
 * two pairs of sums, malloc's header, the hash's buckets: 23 MB for 200,000 merchants with
 * 7-byte ids); past max_merchants the state is dropped and every answer reads SQLite.
 *
 * Events: after each change that reached memory (a checkpoint that changed data, a publish,
 * a layer becoming unreadable or readable again) the follower calls on_change; about every
 * second it calls on_tick. Both run on the follower thread and must not block. */
#ifndef LAMBDA_SERVE_LIVE_H
#define LAMBDA_SERVE_LIVE_H

#include <stddef.h>
#include <stdint.h>

#include "lerr.h"
#include "store.h"

#define LIVE_POLL_MS       5
#define LIVE_EVENT_MAX     1024 /* an event's JSON fits, an error included */
#define LIVE_RECENT_MS     (5 * 60 * 1000)
#define LIVE_MERCHANTS_DEF 1000000

struct serve_live;

struct serve_live_opts {
    const char *data_dir;    /* borrowed for the follower's life */
    atomic_bool *speed_seen; /* borrowed: the server's, shared with its stores */
    size_t max_merchants;    /* serve_cache_merchants; 0: never hold state */
    void (*on_change)(void *arg, struct serve_live *l); /* l: before start returns it */
    void (*on_tick)(void *arg);
    void *arg;
};

struct serve_live;

/* Starts the follower. NULL with e set when the thread cannot start. */
struct serve_live *serve_live_start(const struct serve_live_opts *o, struct lerr *e);

/* Stops the follower and frees everything; NULL is a no-op. */
void serve_live_stop(struct serve_live *l);

/* The all-time totals of n merchants and the view they come from, all from one snapshot:
 * 1 when answered from memory, 0 when memory holds no current state (read SQLite), -1 when a
 * layer is unreadable (e says which and why, in the words of store.h). */
int serve_live_totals(struct serve_live *l, const char *const *ids, size_t n, struct serve_view *v,
                      struct serve_sums *batch, struct serve_sums *speed, struct lerr *e);

/* The newest event as JSON into buf (LIVE_EVENT_MAX bytes):
 * {"seq":N,"batch_version":V|null,"checkpoint_ms":T|null,"lag":N|null,"watermark":"..."|null,
 *  "recent":{"window_ms":300000,"late":N,"duplicates":N,"rejects":N}} and "error" while a
 * layer is unreadable. Returns its number, which grows with every change (0: none yet). */
uint64_t serve_live_event(struct serve_live *l, char *buf);

#endif
