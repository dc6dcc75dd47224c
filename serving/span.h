/* span.h - the event-time span of a request: ?window= or ?from=&to=, parsed, then resolved
 * against a snapshot to a half-open [from, to) aligned to a step.
 *
 * A window ends where the data does: at the bucket holding the stream watermark, else the
 * newest bucket with data, else the current one; only the snapshot knows which, so parsing
 * (which can answer 400) and resolving (which reads the store) are two steps. Times are RFC
 * 3339 or epoch milliseconds; a window is a duration of at most 366 days. api.c's handlers
 * use it; the parse is the same for every route that takes a span. */
#ifndef LAMBDA_SERVE_SPAN_H
#define LAMBDA_SERVE_SPAN_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "lerr.h"
#include "store.h"

struct serve_span {
    const char *window; /* the parameter's text, or NULL */
    int64_t window_ms;
    bool has_from, has_to;
    int64_t from_ms, to_ms;
};

/* Reads window, from and to through arg(req, name). On a bad one returns -1 with the message
 * (naming the parameter) in e. */
int serve_span_parse(serve_arg_fn arg, void *req, struct serve_span *sp, struct lerr *e);

/* Whether the request named a span at all (else: all time, or the route's default window). */
bool serve_span_given(const struct serve_span *sp);

/* Turns a span into [from, to) aligned to step_ms, def_window_ms back from the end when nothing
 * was given. -1 with e set when the store cannot be read. */
int serve_span_resolve(struct serve_store *st, const struct serve_view *v,
                       const struct serve_span *sp, int64_t step_ms, int64_t def_window_ms,
                       int64_t *from_ms, int64_t *to_ms, struct lerr *e);

/* t_ms rounded up to a multiple of step_ms. */
int64_t serve_span_ceil(int64_t t_ms, int64_t step_ms);

#endif
