/* ev.c - the order event contract: parsing and validating a message (see ev.h). */
#include "ev.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tm.h"

static const char *const reason_names[EV_REASON_COUNT] = {
    "ok",           "bad_json",        "not_object",   "missing_field", "bad_type",
    "out_of_range", "bad_merchant_id", "bad_order_id", "bad_time",      "future_time",
};

const char *ev_reason_name(enum ev_reason r)
{
    return (unsigned)r < EV_REASON_COUNT ? reason_names[r] : "unknown";
}

bool ev_merchant_id_valid(const char *s, size_t len)
{
    if (len < 1 || len > EV_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static bool order_id_valid(const char *s, size_t len)
{
    if (len < 1 || len > EV_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* A decimal integer with an optional leading '-', nothing else; -1 when it is not one, -2
 * when it is one but does not fit in 64 bits (as in JSON, that is a range error). */
static int parse_int(const char *s, long long *out)
{
    char *end;

    if (!*s || !(*s == '-' || (*s >= '0' && *s <= '9')))
        return -1;
    errno = 0;
    *out = strtoll(s, &end, 10);
    if (end == s || *end)
        return -1;
    return errno == ERANGE ? -2 : 0;
}

static enum ev_reason check_time(int64_t event_ms, int64_t ref_ts_ms, const struct ev_rules *r)
{
    if (event_ms < 0 || event_ms > TM_MAX_MS)
        return EV_BAD_TIME;
    if (ref_ts_ms >= 0 && event_ms > ref_ts_ms + r->max_future_skew_ms)
        return EV_FUTURE_TIME;
    return EV_OK;
}

static enum ev_reason set_ids(const char *mid, size_t mlen, const char *oid, size_t olen,
                              struct ev_order *out)
{
    if (!ev_merchant_id_valid(mid, mlen))
        return EV_BAD_MERCHANT_ID;
    if (!order_id_valid(oid, olen))
        return EV_BAD_ORDER_ID;
    memcpy(out->merchant_id, mid, mlen);
    out->merchant_id[mlen] = '\0';
    memcpy(out->order_id, oid, olen);
    out->order_id[olen] = '\0';
    return EV_OK;
}

static enum ev_reason classify(const struct ev_rules *r, json_t *root, int64_t msg_ts_ms,
                               struct ev_order *out)
{
    json_t *oid = json_object_get(root, "order_id"), *mid = json_object_get(root, "merchant_id");
    json_t *amt = json_object_get(root, "amount_cents"), *et = json_object_get(root, "event_time");
    enum ev_reason rc;
    int64_t event_ms;

    if (!oid || !mid || !amt || !et)
        return EV_MISSING_FIELD;
    if (!json_is_string(oid) || !json_is_string(mid) || !json_is_integer(amt) ||
        !(json_is_string(et) || json_is_integer(et)))
        return EV_BAD_TYPE;
    rc = set_ids(json_string_value(mid), json_string_length(mid), json_string_value(oid),
                 json_string_length(oid), out);
    if (rc != EV_OK)
        return rc;
    out->amount_cents = json_integer_value(amt);
    if (out->amount_cents < 0 || out->amount_cents > EV_AMOUNT_MAX)
        return EV_OUT_OF_RANGE;
    if (json_is_integer(et))
        event_ms = json_integer_value(et);
    else if (tm_parse_rfc3339(json_string_value(et), json_string_length(et), &event_ms) != 0)
        return EV_BAD_TIME;
    out->event_ms = event_ms;
    return check_time(event_ms, msg_ts_ms, r);
}

/* The jansson tree of one event lives in a per-thread arena, so that parsing an event
 * allocates nothing on the heap: jansson's allocator is swapped (once, process-wide) for one
 * that serves the calling thread's arena while a parse is under way and malloc() otherwise;
 * its free() ignores arena pointers. Safe at any moment, for every thread: memory from either
 * side is always released by the side that gave it out. A payload whose tree outgrows the
 * arena falls back to malloc() for the rest. */
#define ARENA_BYTES (64 * 1024)

static _Thread_local struct {
    _Alignas(16) char buf[ARENA_BYTES];
    size_t used;
    bool is_active;
    bool has_spilled; /* part of this parse's tree came from malloc() */
} arena;

static void *arena_malloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (arena.is_active && n <= ARENA_BYTES - arena.used) {
        void *p = arena.buf + arena.used;
        arena.used += n;
        return p;
    }
    if (arena.is_active)
        arena.has_spilled = true;
    return malloc(n);
}

static void arena_free(void *p)
{
    if ((char *)p >= arena.buf && (char *)p < arena.buf + ARENA_BYTES)
        return; /* reclaimed wholesale by the next parse */
    free(p);
}

static void arena_install(void)
{
    json_set_alloc_funcs(arena_malloc, arena_free);
}

/* Duplicate keys are rejected: "amount_cents" twice has no single meaning. An escaped NUL
 * (\u0000) in a string is valid JSON and DESIGN section 2 ignores every field but four, so it
 * must not reject the payload: it is allowed here, and in an id the id rule rejects it (a
 * byte below 0x20), in event_time the time rule (the parse goes by length). A NUL in an object
 * key is still bad_json: jansson cannot hold one. */
#define JSON_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL)
/* More numbers beyond int64 than this in one payload and it is refused as out_of_range. */
#define OVERFLOW_MAX 16

static bool is_number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* Parses the payload. jansson refuses a whole document for one integer beyond int64 (or a
 * real beyond double), but DESIGN section 2 ignores every field but four, so such a number
 * alone must not reject an event. Each one is overwritten, in a scratch copy, by "-1" and
 * blanks: out of range as amount_cents, a bad time as event_time, a wrong type as an id, and
 * ignored anywhere else. The copy is freed before returning (a rare path: the common one
 * allocates nothing but the tree). Returns the tree, or NULL with jerr set. */
static json_t *load_json(const char *buf, size_t len, json_error_t *jerr)
{
    json_t *root = json_loadb(buf, len, JSON_FLAGS, jerr);
    char *copy = NULL;

    for (int n = 0; !root && json_error_code(jerr) == json_error_numeric_overflow; n++) {
        size_t end = (size_t)jerr->position, start = end;
        if (n == OVERFLOW_MAX || end > len || (!copy && !(copy = malloc(len))))
            break;
        if (n == 0)
            memcpy(copy, buf, len);
        while (start > 0 && is_number_char(copy[start - 1]))
            start--;
        if (end - start < 2)
            break;
        copy[start] = '-';
        copy[start + 1] = '1';
        memset(copy + start + 2, ' ', end - start - 2);
        root = json_loadb(copy, len, JSON_FLAGS, jerr);
    }
    free(copy);
    return root;
}

enum ev_reason ev_parse(const struct ev_rules *r, const char *key, size_t key_len, const char *buf,
                        size_t len, int64_t msg_ts_ms, struct ev_order *out)
{
    json_error_t jerr;
    json_t *root;
    enum ev_reason rc;

    static pthread_once_t once = PTHREAD_ONCE_INIT;

    if (!buf || len == 0)
        return EV_BAD_JSON;
    pthread_once(&once, arena_install);
    arena.used = 0;
    arena.has_spilled = false;
    arena.is_active = true;
    root = load_json(buf, len, &jerr);
    arena.is_active = false;
    if (!root)
        return json_error_code(&jerr) == json_error_numeric_overflow ? EV_OUT_OF_RANGE
                                                                     : EV_BAD_JSON;
    if (!json_is_object(root))
        rc = EV_NOT_OBJECT;
    else
        rc = classify(r, root, msg_ts_ms, out);
    if (arena.has_spilled)
        json_decref(root); /* else the whole tree is in the arena: the next parse reuses it */
    if (rc == EV_OK)
        out->is_key_mismatch =
            key && (key_len != strlen(out->merchant_id) || memcmp(key, out->merchant_id, key_len));
    return rc;
}

enum ev_reason ev_parse_fields(const struct ev_rules *r, const char *order_id,
                               const char *merchant_id, const char *amount, const char *event_time,
                               int64_t ref_ts_ms, struct ev_order *out)
{
    long long v;
    int64_t event_ms;
    enum ev_reason rc;

    rc = set_ids(merchant_id, strlen(merchant_id), order_id, strlen(order_id), out);
    if (rc != EV_OK)
        return rc;
    switch (parse_int(amount, &v)) {
    case -1:
        return EV_BAD_TYPE;
    case -2:
        return EV_OUT_OF_RANGE;
    }
    if (v < 0 || v > EV_AMOUNT_MAX)
        return EV_OUT_OF_RANGE;
    out->amount_cents = v;
    if (parse_int(event_time, &v) == 0)
        event_ms = v;
    else if (tm_parse_rfc3339(event_time, strlen(event_time), &event_ms) != 0)
        return EV_BAD_TIME;
    out->event_ms = event_ms;
    out->is_key_mismatch = false;
    return check_time(event_ms, ref_ts_ms, r);
}
