/* heads.h - lambda-serve's bound on how long a client may take to send a request head.
 *
 * libmicrohttpd's connection timeout counts idle time only, so a client that sends its head a
 * byte at a time keeps a connection (and, at max_connections, everyone's turn) for as long as
 * it likes. serve.c registers each connection here when it opens and after each answer, and
 * marks it when a head has arrived; a thread of this module shuts down (shutdown(2), never
 * close: libmicrohttpd owns the descriptor and closes it on the error it then sees) every
 * connection whose head is still incomplete request_timeout after it began waiting. All entry
 * points are thread-safe. */
#ifndef LAMBDA_SERVE_HEADS_H
#define LAMBDA_SERVE_HEADS_H

#include <stdint.h>

#include "lerr.h"

struct serve_heads;
struct serve_head; /* one connection's entry: libmicrohttpd's socket context */

/* Starts the watch with its thread. NULL with e set when the thread cannot start. */
struct serve_heads *serve_heads_start(int64_t timeout_ms, struct lerr *e);
/* Stops the thread and frees h; every connection must be closed by then. NULL is a no-op. */
void serve_heads_stop(struct serve_heads *h);

/* A new connection on fd, waiting for its first head from now; NULL when out of memory (it is
 * then never shut down by this module). */
struct serve_head *serve_heads_open(struct serve_heads *h, int fd);
/* Its head has arrived: no deadline until serve_heads_wait(). NULL is a no-op. */
void serve_heads_arrived(struct serve_heads *h, struct serve_head *c);
/* An answer is done: the next head (keep-alive) is due within the timeout from now. */
void serve_heads_wait(struct serve_heads *h, struct serve_head *c);
/* The connection is closing: forgets and frees c. */
void serve_heads_close(struct serve_heads *h, struct serve_head *c);

/* How many connections were shut down for a late head. */
uint64_t serve_heads_dropped(struct serve_heads *h);

#endif
