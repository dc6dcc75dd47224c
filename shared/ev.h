/* ev.h - the one definition of an order event: parse, validate, classify.
 *
 * lambda-batch (Kafka ingest and file import) and lambda-speed both call ev_parse(); nothing
 * else decides whether a message is an order (DESIGN.md section 2). On EV_OK: both ids are
 * NUL-terminated and 1..EV_ID_MAX bytes, 0 <= amount_cents <= EV_AMOUNT_MAX, 0 <= event_ms <=
 * TM_MAX_MS, and event_ms <= msg_ts_ms + rules->max_future_skew_ms when msg_ts_ms >= 0. Any
 * other result is a reject reason, and *out is unspecified. Nothing here allocates memory
 * that outlives a call. */
#ifndef LAMBDA_EV_H
#define LAMBDA_EV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EV_ID_MAX     64
#define EV_AMOUNT_MAX 1000000000000LL /* 10^12 cents */
/* A reject keeps this much of the payload. */
#define EV_REJECT_PAYLOAD_MAX 1024

enum ev_reason {
    EV_OK = 0,
    EV_BAD_JSON,        /* not valid UTF-8 JSON (also: empty payload, duplicate keys) */
    EV_NOT_OBJECT,      /* JSON, but not an object */
    EV_MISSING_FIELD,   /* one of the four fields is absent */
    EV_BAD_TYPE,        /* a field has the wrong JSON type (a float amount, say) */
    EV_OUT_OF_RANGE,    /* amount_cents outside 0..10^12 */
    EV_BAD_MERCHANT_ID, /* not 1..64 bytes of [A-Za-z0-9_.:-] */
    EV_BAD_ORDER_ID,    /* not 1..64 bytes of printable ASCII */
    EV_BAD_TIME,        /* event_time is neither RFC 3339 with a zone nor epoch ms in range */
    EV_FUTURE_TIME,     /* event_time more than max_future_skew after the message timestamp */
    EV_REASON_COUNT
};

struct ev_rules {
    int64_t max_future_skew_ms; /* DESIGN default: 5 minutes */
};

struct ev_order {
    char merchant_id[EV_ID_MAX + 1], order_id[EV_ID_MAX + 1];
    int64_t amount_cents; /* money is never a float */
    int64_t event_ms;     /* event time, UTC epoch milliseconds */
    bool is_key_mismatch; /* the message key differs from merchant_id (counted, not rejected) */
};

/* Parses one Kafka message payload. key may be NULL (no key: no mismatch is reported);
 * msg_ts_ms < 0 means the message has no timestamp and skips the future-time rule. */
enum ev_reason ev_parse(const struct ev_rules *r, const char *key, size_t key_len, const char *buf,
                        size_t len, int64_t msg_ts_ms, struct ev_order *out);

/* Validates an order given as text fields (a CSV line of an import). amount and time are the
 * field texts: amount a decimal integer, time RFC 3339 or decimal epoch ms. */
enum ev_reason ev_parse_fields(const struct ev_rules *r, const char *order_id,
                               const char *merchant_id, const char *amount, const char *event_time,
                               int64_t ref_ts_ms, struct ev_order *out);

/* The reason's stable snake_case name ("bad_json"), as stored in rejects tables and metrics. */
const char *ev_reason_name(enum ev_reason r);

/* True when s[0..len) is a valid merchant id (1..64 bytes of [A-Za-z0-9_.:-]). */
bool ev_merchant_id_valid(const char *s, size_t len);

#endif
