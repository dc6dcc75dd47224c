/* router_int.h - the insides of the router, shared by router.c (the shards, asking them,
 * their sets and metrics) and router_merge.c (the routes and their merges), no one else. */
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
    char *url; /* base URL, no final '/' */
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
    CURLM *multi; /* owns the connection cache: kept alive between requests */
    CURL *easy[ROUTER_SHARDS_MAX];
};

/* One shard's part of a fan-out. target NULL: the shard is not asked. */
struct router_answer {
    char *target; /* path and query, owned */
    CURLcode cc;
    long status;
    char *body; /* NUL-terminated, owned */
    size_t len, cap;
    char err[CURL_ERROR_SIZE];
    json_t *doc; /* the body parsed, when it is JSON */
};

struct router_fan {
    struct router_answer a[ROUTER_SHARDS_MAX]; /* by shard */
};

/* Asks every shard with a target at once; returns when all answered or timed out. */
void router_fan_out(struct router_client *c, struct router_fan *f);
void router_fan_release(struct router_fan *f);

/* True after filling out when an asked shard failed: its 4xx passed on, a timeout, a 5xx or
 * a body that is not JSON as 503 naming it. */
bool router_fan_failed(const struct router *r, const struct router_fan *f, struct serve_reply *out);

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

/* The per-shard lines of /metrics. */
void router_render_metrics(struct router *r, FILE *f);

#endif
