/* router_int.h - the insides of the router, shared by router.c (the shards, asking them,
 * their sets and metrics), router_merge.c (the routes: what each asks which shard),
 * router_sum.c (how their answers merge) and router_events.c (the event streams), no one
 * else. */
#ifndef LAMBDA_SERVE_ROUTER_INT_H
#define LAMBDA_SERVE_ROUTER_INT_H

#include "router.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include <curl/curl.h>
#include <jansson.h>

#include "shard.h"

struct router_shard {
    char *url;      /* base URL, no final '/' */
    char *url_json; /* url as a JSON string, quoted and escaped as json_dumps() writes it */
    /* what its /health told, under router.mu */
    bool has_set;
    struct shard_set set;
    char set_text[SHARD_TEXT_MAX];
    int64_t topic_partitions; /* 0 unknown */
    int64_t key_mismatch;
    char stream_err[200]; /* under router.mu: why its /events stream is not open, "" when it is */
    /* metrics */
    atomic_int is_up; /* its last answer came in time and was not 5xx */
    atomic_uint_fast64_t requests, errors, latency_us;
};

struct router {
    int n;
    struct router_shard shards[ROUTER_SHARDS_MAX];
    int64_t timeout_ms;
    enum shard_partitioner pt;
    pthread_mutex_t mu;
    char conflict[256]; /* under mu: why the known sets do not fit, "" when they do */
    /* the thread that asks every shard's /health once a second (router_start) */
    pthread_t refresher;
    pthread_cond_t cv;
    bool has_refresher, is_stopping; /* under mu */
    /* the shards' event streams (router_events.c); NULL until router_events_start() */
    struct router_feed *feed;
    uint64_t event_seq;         /* under mu: the newest router event's number, 0 none yet */
    char event[LIVE_EVENT_MAX]; /* under mu: that event's JSON */
};

struct router_client {
    struct router *r;
    CURLM *multi;                  /* owns the connection cache: kept alive between requests */
    CURL *easy[ROUTER_SHARDS_MAX]; /* the blocking client's, one per shard */
    char err[ROUTER_SHARDS_MAX][CURL_ERROR_SIZE]; /* their error buffers */
    /* The async client's (router_client_new_async): -1 and unused for a blocking one. */
    int ep;       /* the loop's epoll, borrowed: libcurl's sockets are watched there */
    uint8_t *fds; /* by socket: ROUTER_FD_* bits, what ep knows of it */
    int n_fds;
    int64_t due_us; /* when libcurl's timer expires (monotonic), -1 none */
    CURL **idle;    /* easy handles between transfers, reused: any shard, any request */
    int n_idle, cap_idle;
    struct router_call *call; /* while router_handle_call() runs: the request it handles */
    int stage;                /* the index of that call's next fan-out */
};

/* One shard's part of a fan-out. target NULL: the shard is not asked. */
struct router_answer {
    char *target; /* path and query, owned */
    CURLcode cc;
    long status;
    char *body; /* NUL-terminated, owned */
    size_t len, cap;
    char *err;   /* libcurl's words when the transfer failed, owned; NULL none */
    json_t *doc; /* the body parsed, when it is JSON; NULL while a lazy fan's is unparsed */
};

struct router_fan {
    struct router_answer a[ROUTER_SHARDS_MAX]; /* by shard */
    /* Set before router_fan_out(): the bodies stay text (doc NULL) until router_fan_failed()
     * parses those it must, so an answer spliced as text is never parsed at all. */
    bool is_lazy;
};

/* Asks every shard with a target at once. A blocking client returns true when all answered
 * or timed out. Within router_handle_call(), true when this fan-out's answers were already
 * gathered (f holds copies), false once it is started: the caller returns at once, without
 * an answer, and is called again when its shards answered. */
bool router_fan_out(struct router_client *c, struct router_fan *f);
void router_fan_release(struct router_fan *f);

/* True after filling out when an asked shard failed: its 4xx passed on, a timeout, a 5xx or
 * a body that is not JSON as 503 naming it. False when every asked shard answered a JSON 200:
 * then each asked answer's doc is its body parsed (a lazy fan's are parsed here). */
bool router_fan_failed(const struct router *r, struct router_fan *f, struct serve_reply *out);

/* What a failed answer says, for a 503 and the logs: libcurl's error, the shard's HTTP
 * status and message, or that its body is not JSON. */
void router_answer_why(const struct router_answer *a, char *buf, size_t len);

/* Takes shard i's set, partition count and key_mismatch from its /health answer. */
void router_learn(struct router *r, int i, const json_t *health);

/* Where a span asked of every shard ends, from their /health answers (docs[i] NULL: not asked;
 * status[i] its HTTP status): the minimum of the watermarks of the shards that serve, *found
 * false when none serves. -1 with why when one that serves has no watermark. */
int router_min_watermark(const struct router *r, json_t *const docs[], const long status[],
                         bool *found, int64_t *wm_ms, char *why, size_t len);

/* True, with the text in buf, while the known sets overlap or leave a partition unowned. */
bool router_conflict(struct router *r, char *buf, size_t len);

/* The shard that owns merchant_id, or -1 when it cannot be told (see router.h). */
int router_owner(struct router *r, const char *merchant_id);

/* True, with why in buf, while shard i's /events stream is not open (router_events.c). */
bool router_events_down(struct router *r, int i, char *buf, size_t len);

/* The merges (router_sum.c). Each returns the merged answer's JSON (the caller owns it), or
 * NULL when out of memory; f's answers of the shards that were asked are JSON 200s. */

/* Copies key from src to dst when src (NULL: none) has it. */
void router_copy_key(json_t *dst, const json_t *src, const char *key);

/* One merchant's answer from the shards' answers for it (docs by shard, NULL where a shard
 * was not asked): the sums, and each shard's batch and speed parts as provenance. */
json_t *router_merge_merchant(const struct router *r, const char *id, json_t *const docs[]);

/* router_merge_merchant()'s answer, as json_dumps(doc, JSON_COMPACT) writes it, for the asked
 * shards' answers a[] (by shard), spliced from their text without parsing it; *out_len its
 * length. NULL unless every asked shard answered 200 exactly in the shape api_text.c writes (its
 * fields in that order, nothing that jansson would write back otherwise: no white space, reals,
 * \u escapes or duplicate keys, nothing after it), or when out of memory: then parse and merge. */
char *router_splice_merchant(const struct router *r, const char *id, const struct router_answer a[],
                             size_t *out_len);

/* Point-wise sums of the shards' series; a point is final only when every shard says so, and
 * the watermark is the lowest. NULL also when their points do not line up. */
json_t *router_merge_series(const struct router *r, const struct router_fan *f);

/* The n best of the shards' top n lists, ordered as rank.c orders (ties by merchant id). */
json_t *router_merge_top(const struct router *r, const struct router_fan *f, bool is_revenue,
                         long n);

/* Sums per attribute value over the shards, ordered as rank.c orders (null group last). */
json_t *router_merge_groups(const struct router *r, const struct router_fan *f, bool is_revenue);

/* The per-shard lines of /metrics. */
void router_render_metrics(struct router *r, FILE *f);

#endif
