/* router.h - lambda-serve in front of shards (DESIGN.md section 7): one endpoint that answers
 * every route by asking the shards' own lambda-serve instances and merging their answers.
 *
 * With `shards = URL,URL,...` lambda-serve owns no data directory. main.c makes one struct
 * router (the shard list, what their /health told of their partition sets, per-shard metrics)
 * and checks the sets at start with router_check(). serve.c gives each of its event loops a
 * struct router_client from router_client_new_async() (one libcurl multi handle driven by
 * curl_multi_socket_action, whose connections stay alive between requests) and hands routed
 * requests to router_handle_call(): a request's fan-out to the shards never blocks the loop,
 * the request waits (its connection suspended) while the loop answers others, and is handled
 * again when its shards have answered. With router_io = threads, each worker thread has a
 * blocking client from router_client_new() and calls router_handle(), which returns when the
 * shards answered. Layering as for api.c: no HTTP server here, only the client.
 *
 * What a caller may rely on:
 * - Shards are asked in parallel, each for at most shard_timeout. An answer is exact or an
 *   error: a shard that does not answer in time, or answers 5xx, makes the answer 503
 *   {"error":"shard http://... did not answer: ..."}, never a partial sum. A shard's 4xx (the
 *   request is bad) is passed on as it came.
 * - A `window=` (and a missing `to`) asked of every shard is resolved once, here, to absolute
 *   minutes ending at the minimum of their watermarks, so every shard sums the same minutes; a
 *   shard that serves with no watermark makes it a 503 saying so (a single lambda-serve would
 *   end at its newest data, which differs per shard). Asked of a merchant's own shard only,
 *   the span goes to it as given, and it ends the window exactly as a single lambda-serve.
 * - /top and /groups are refused (503 naming the shard) while a shard reports key_mismatch
 *   above 0: a merchant with orders in two shards makes the top n of the shards' top n and a
 *   group's merchant count inexact; never an inexact answer with a 200.
 * - Sets that overlap or leave a partition unowned are refused: at start (router_check()
 *   returns 1) and whenever a /health tells the sets (answers are 503 naming the conflict
 *   until it is gone).
 * - With `partitioner`, the topic's partition count and every set known and no shard
 *   reporting key_mismatch, a merchant's own routes ask only the shard that owns it. */
#ifndef LAMBDA_SERVE_ROUTER_H
#define LAMBDA_SERVE_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "lerr.h"

#define ROUTER_SHARDS_MAX 64

struct router;
struct router_call;
struct router_client;
struct serve_events;

struct router_opts {
    const char *shards;      /* "http://host:port,http://..." */
    int64_t timeout_ms;      /* shard_timeout */
    const char *partitioner; /* NULL: a merchant's shard is unknown, every shard is asked */
};

/* A router for o's shards; asks nothing yet. NULL with e naming a bad URL list or
 * partitioner. */
struct router *router_new(const struct router_opts *o, struct lerr *e);

/* Frees r (after every client); NULL is a no-op. */
void router_free(struct router *r);

/* Asks every shard's /health once and learns their sets. 0 when the sets known so far are
 * consistent (a shard that does not answer is simply not known yet), 1 when they overlap or
 * leave a partition unowned (e names the shards and the partition), -1 out of memory. */
int router_check(struct router *r, struct lerr *e);

/* Starts a thread that asks every shard's /health once a second, so sets learned late (a shard
 * that was down, a speed layer that had not yet told the partition count) and conflicts are
 * seen without a client asking for /health; router_free() stops it. -1 with e set. */
int router_start(struct router *r, struct lerr *e);

/* Starts the thread that keeps a GET /events open to every shard and publishes each of their
 * events into ev (serve.c's subscribers) as one event of the router's:
 * {"seq":N,"shard":URL,"shard_seq":M,...the shard's fields: batch_version, checkpoint_ms...},
 * and a stream that drops as {"seq":N,"shard":URL,"error":"shard URL: event stream dropped:
 * ..."} once, then retried (100 ms, doubling up to 2 s). While a shard's stream is not open the
 * router's /health is degraded naming it. ev must outlive router_events_stop(). -1 with e set. */
int router_events_start(struct router *r, struct serve_events *ev, struct lerr *e);

/* Stops that thread and closes the streams; a no-op when none runs (router_free() calls it). */
void router_events_stop(struct router *r);

/* The router's newest event as JSON into buf ({"seq":0} before the first); false when no
 * event thread runs. */
bool router_events_newest(struct router *r, char *buf, size_t len);

/* A worker thread's connections to the shards, asked with blocking fan-outs; NULL when out of
 * memory. */
struct router_client *router_client_new(struct router *r);
/* Frees c (after every call it ran: see router_call_free()); NULL is a no-op. */
void router_client_free(struct router_client *c);

/* Answers a GET of path on route r by asking the shards (see above), on a client from
 * router_client_new(); the dashboard is served from here. Always fills out; the caller frees
 * out->owned. */
void router_handle(struct router_client *c, const struct serve_ctx *ctx, enum serve_route r,
                   const char *path, serve_arg_fn arg, void *req, struct serve_reply *out);

/* An event loop's connections to the shards, their sockets watched by the loop's own epoll ep
 * (borrowed: it outlives the client), each registered with data.u64 = ROUTER_EPOLL_TAG | fd,
 * so the loop waits on one epoll rather than on a second one nested in it. A kept-alive
 * connection stays registered between its transfers (no epoll_ctl per request). Its transfers
 * run only in router_client_event() and router_client_run(). One thread uses it. NULL when out
 * of memory. */
#define ROUTER_EPOLL_TAG (UINT64_C(1) << 32)
struct router_client *router_client_new_async(struct router *r, int ep);
/* One event of ep whose data.u64 has ROUTER_EPOLL_TAG: moves that socket's transfer on (the
 * loop then calls router_client_run()). */
void router_client_event(struct router_client *c, uint64_t data, uint32_t events);
/* Milliseconds until router_client_run() is due whatever the sockets say; -1: none. */
int router_client_timeout_ms(const struct router_client *c);
/* Runs libcurl's timer when it is due and, for every request whose fan-out is now complete,
 * calls its on_ready (in this thread, before returning). */
void router_client_run(struct router_client *c);

/* One routed request on an async client: the shards' answers gathered so far, kept between
 * its calls of router_handle_call(). on_ready(arg) is called from router_client_run() each
 * time a fan-out it waits for is complete. NULL when out of memory. */
struct router_call *router_call_new(void (*on_ready)(void *arg), void *arg);
/* Stops the transfers call still waits for and frees it; NULL is a no-op. */
void router_call_free(struct router_call *call);

/* As router_handle(), on an async client: true once out holds the answer (the caller frees
 * out->owned); false while call waits for shards (out is empty): call again with the same
 * call and request after on_ready. A request makes at most a few fan-outs one after the
 * other (a window first asks every /health); each call answers the finished ones from call
 * and starts the next, so what a handler decides is decided again on the same answers. */
bool router_handle_call(struct router_client *c, struct router_call *call,
                        const struct serve_ctx *ctx, enum serve_route r, const char *path,
                        serve_arg_fn arg, void *req, struct serve_reply *out);

#endif
