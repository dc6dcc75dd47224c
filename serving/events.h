/* events.h - GET /events: Server-Sent Events of committed changes (DESIGN.md section 5).
 *
 * serve.c hands each GET /events to serve_events_answer() and calls serve_events_publish()
 * with each new event (live.h's JSON) and serve_events_tick() about every second, both from
 * the follower thread. A subscriber gets the newest event at once, then every event published
 * after, as "id: N\ndata: {...}\n\n", and a ": keep-alive" comment after SERVE_EVENTS_KEEPALIVE_MS
 * without one. Events are never queued per client: one that falls behind gets the newest when
 * it can take it, so a slow client costs no memory; one that stops reading is closed by the
 * connection timeout, and no worker ever waits for it (a connection with nothing to send is
 * suspended, not polled: libmicrohttpd 0.9.75 busy-waits on a content reader that returns 0).
 * At most max_clients subscribe at once; the others get 503. */
#ifndef LAMBDA_SERVE_EVENTS_H
#define LAMBDA_SERVE_EVENTS_H

#include <stdint.h>

#include <microhttpd.h>

#define SERVE_EVENTS_KEEPALIVE_MS 15000

struct serve_events;

/* NULL when out of memory. */
struct serve_events *serve_events_new(unsigned max_clients);

/* Called, from the thread that publishes, ticks or closes, after each subscriber's connection
 * is resumed: a daemon without an internal thread (serve.c's event loops) has no way of its
 * own to learn of it, and waits until told to run. fn NULL: none. */
typedef void (*serve_events_waker)(void *arg, struct MHD_Connection *conn);
void serve_events_set_waker(struct serve_events *ev, serve_events_waker fn, void *arg);

/* Ends every stream (each subscriber's connection closes once it is resumed) and waits, at
 * most timeout_ms, until none is left: libmicrohttpd must not be stopped while one is
 * suspended. Later subscribers get 503. */
void serve_events_close(struct serve_events *ev, int64_t timeout_ms);

/* Frees ev after serve_events_close() and the daemon's stop; NULL is a no-op. */
void serve_events_free(struct serve_events *ev);

/* Queues the stream (or a 503) on conn. */
enum MHD_Result serve_events_answer(struct serve_events *ev, struct MHD_Connection *conn,
                                    unsigned *status);

/* Makes json (NUL-terminated, copied) event number seq and wakes every subscriber. */
void serve_events_publish(struct serve_events *ev, uint64_t seq, const char *json);

/* Wakes the subscribers that are due a keep-alive comment. */
void serve_events_tick(struct serve_events *ev);

/* How many subscribe now. */
unsigned serve_events_clients(struct serve_events *ev);

#endif
