/* span.c - a request's event-time span: parsed, then resolved against a snapshot (span.h). */
#include "span.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tm.h"

/* RFC 3339 or epoch milliseconds (a bare decimal integer). */
static int parse_time(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (*s >= '0' && *s <= '9' && strspn(s, "0123456789") == strlen(s)) {
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || v > TM_MAX_MS)
            return -1;
        *out = v;
        return 0;
    }
    return tm_parse_rfc3339(s, strlen(s), out);
}

int64_t serve_span_ceil(int64_t t_ms, int64_t step_ms)
{
    return tm_floor(t_ms + step_ms - 1, step_ms);
}

int serve_span_parse(serve_arg_fn arg, void *req, struct serve_span *sp, struct lerr *e)
{
    const char *w = arg(req, "window"), *from = arg(req, "from"), *to = arg(req, "to");

    memset(sp, 0, sizeof(*sp));
    if (w) {
        if (tm_parse_duration(w, &sp->window_ms) != 0 || sp->window_ms <= 0 ||
            sp->window_ms > 366 * TM_DAY_MS)
            return lerr_set(e, "bad window '%s': want a duration such as 5m, 1h or 7d", w);
        if (from || to)
            return lerr_set(e, "bad window '%s': give either window or from/to", w);
        sp->window = w;
    }
    if (from && parse_time(from, &sp->from_ms) != 0)
        return lerr_set(e, "bad from '%s': want RFC 3339 or epoch milliseconds", from);
    if (to && parse_time(to, &sp->to_ms) != 0)
        return lerr_set(e, "bad to '%s': want RFC 3339 or epoch milliseconds", to);
    if (to && !from)
        return lerr_set(e, "bad from: missing (to needs from)");
    sp->has_from = from != NULL;
    sp->has_to = to != NULL;
    if (from && to && sp->to_ms <= sp->from_ms)
        return lerr_set(e, "bad to '%s': must be after from", to);
    return 0;
}

bool serve_span_given(const struct serve_span *sp)
{
    return sp->window || sp->has_from;
}

/* Where a span without "to" ends: the bucket holding the stream watermark, else the newest
 * bucket with data, else the current one. Exclusive, aligned to step_ms. */
static int span_end(struct serve_store *st, const struct serve_view *v, int64_t step_ms,
                    int64_t *end_ms, struct lerr *e)
{
    bool found;
    int64_t newest;

    if (v->has_watermark) {
        *end_ms = tm_floor(v->watermark_ms, step_ms) + step_ms;
        return 0;
    }
    if (serve_store_newest_minute(st, v, &found, &newest, e) != 0)
        return -1;
    *end_ms = tm_floor(found ? newest : tm_now_ms(), step_ms) + step_ms;
    return 0;
}

int serve_span_resolve(struct serve_store *st, const struct serve_view *v,
                       const struct serve_span *sp, int64_t step_ms, int64_t def_window_ms,
                       int64_t *from_ms, int64_t *to_ms, struct lerr *e)
{
    if (sp->has_from) {
        *from_ms = tm_floor(sp->from_ms, step_ms);
        if (sp->has_to)
            *to_ms = serve_span_ceil(sp->to_ms, step_ms);
        else if (span_end(st, v, step_ms, to_ms, e) != 0)
            return -1;
        if (*to_ms <= *from_ms) /* from after the end of the data: an empty span */
            *to_ms = *from_ms;
        return 0;
    }
    if (span_end(st, v, step_ms, to_ms, e) != 0)
        return -1;
    *from_ms = *to_ms - serve_span_ceil(sp->window ? sp->window_ms : def_window_ms, step_ms);
    return 0;
}
