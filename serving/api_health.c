/* api_health.c - GET /health (the shard's state), /metrics (Prometheus text) and
 * /events?once=1 (the newest event as JSON). */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health.h"
#include "live.h"
#include "metrics.h"
#include "tm.h"

static void lag_sum(void *arg, const char *merchant_id, int64_t partition,
                    const struct serve_sums *s)
{
    (void)merchant_id, (void)partition;
    *(int64_t *)arg += s->order_count;
}

/* Each layer's key_mismatch: orders whose message key is not their merchant sit in a
 * partition (and so a shard) their merchant does not hash to. */
struct mismatch {
    int64_t batch, speed;
};

static void mismatch_add(void *arg, const char *layer, const char *name, int64_t value)
{
    struct mismatch *m = arg;

    if (strcmp(name, "key_mismatch") != 0)
        return;
    if (!strcmp(layer, "batch"))
        m->batch = value;
    else
        m->speed = value;
}

/* What a router learns of a shard (DESIGN.md section 7): its set, the topic's partition
 * count, its watermark and key_mismatch. Each layer counts every message it reads, and both
 * read the log before the cut (the speed layer from where it started, the batch up to the
 * cut), so their sum counted those messages twice; which messages both read is not recorded,
 * so key_mismatch is the larger count: every message once at most, exact while the speed
 * layer has read the log from its start, and above 0 as soon as either layer saw one. */
static json_t *shard_doc(const struct call *q, const struct serve_view *v, const struct mismatch *m)
{
    return json_pack("{s:s,s:o,s:o,s:o,s:I,s:I,s:I}", "partitions",
                     q->c->shard_partitions ? q->c->shard_partitions : "all", "topic_partitions",
                     v->topic_partitions > 0 ? json_integer(v->topic_partitions) : json_null(),
                     "watermark", v->has_watermark ? api_rfc3339(v->watermark_ms) : json_null(),
                     "watermark_ms", v->has_watermark ? json_integer(v->watermark_ms) : json_null(),
                     "key_mismatch", (json_int_t)(m->batch > m->speed ? m->batch : m->speed),
                     "key_mismatch_batch", (json_int_t)m->batch, "key_mismatch_speed",
                     (json_int_t)m->speed);
}

void api_handle_health(const struct call *q, struct serve_reply *out)
{
    struct serve_store *st = q->st;
    struct serve_health_facts facts;
    struct lerr e = {{0}};
    struct serve_view v;
    struct mismatch mismatch = {0, 0};
    int64_t lag = 0;
    unsigned status;
    json_t *doc;

    if (serve_health_read(q->c->data_dir, &facts, &e) != 0) {
        api_db_failed(out, "health", &e);
        return;
    }
    if (serve_store_begin(st, &v, &e) != 0) {
        api_db_failed(out, "health", &e);
        return;
    }
    if (v.has_speed && serve_store_lag(st, lag_sum, &lag, &e) != 0) {
        serve_store_end(st);
        api_db_failed(out, "health", &e);
        return;
    }
    serve_store_end(st);
    if (serve_store_counters(st, mismatch_add, &mismatch, &e) != 0) {
        api_db_failed(out, "health", &e);
        return;
    }
    doc = serve_health_judge(&v, &facts, lag, &q->c->health, tm_now_ms(), &status);
    json_object_set_new(doc, "shard", shard_doc(q, &v, &mismatch));
    api_reply_json(out, status, doc);
}

/* The metrics label of route r. */
static const char *route_label(int r)
{
    return serve_api_route_name((enum serve_route)r);
}

void api_handle_metrics(const struct call *q, struct serve_reply *out)
{
    struct lerr e = {{0}};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc;

    if (!f) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    serve_metrics_render(q->c->metrics, route_label, f);
    if (q->c->dim) {
        struct dim_stats ds;
        dim_source_stats(q->c->dim, &ds);
        serve_metrics_render_dimension(&ds, f);
    }
    struct serve_health_facts facts;
    rc = serve_health_read(q->c->data_dir, &facts, &e);
    if (rc == 0) {
        serve_metrics_render_health(&facts, tm_now_ms(), f);
        rc = serve_metrics_render_layers(q->st, f, &e);
    }
    fclose(f);
    if (rc != 0) {
        free(buf);
        api_db_failed(out, "metrics", &e);
        return;
    }
    out->status = 200;
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
    out->owned = buf;
    out->body = buf;
    out->len = len;
}

/* GET /events?once=1 (serve.c streams every other GET /events): the newest event as JSON,
 * for a client that cannot keep a stream open (the dashboard's fallback). */
void api_handle_events(const struct call *q, struct serve_reply *out)
{
    char buf[LIVE_EVENT_MAX];

    if (!q->c->live) {
        serve_api_error(out, 503, "no event source");
        return;
    }
    serve_live_event(q->c->live, buf);
    if (!(out->owned = strdup(buf))) {
        serve_api_error(out, 500, "out of memory");
        return;
    }
    out->status = 200;
    out->content_type = api_json_ctype;
    out->body = out->owned;
    out->len = strlen(out->body);
}
