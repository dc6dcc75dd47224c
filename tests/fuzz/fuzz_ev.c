/* fuzz_ev.c - the event parser (shared/ev.c) on arbitrary payloads, keys and timestamps.
 *
 * Proves, for every input libFuzzer reaches: ev_parse() and ev_parse_fields() neither crash
 * nor read out of bounds (ASan, UBSan), and an EV_OK answer keeps ev.h's promises (ids
 * NUL-terminated, 1..64 bytes, a valid merchant id, printable order id, amount and time in
 * range, the future-time rule); every reason has a name. It cannot prove that an event is
 * classified as DESIGN section 2 says (test_ev's table does that), only that whatever is
 * accepted is well formed.
 *
 * Input: byte 0 picks the mode (bit 0: text fields of an import line, split at '\n'; else a
 * Kafka message) and whether there is a key and a timestamp; bytes 1..8 are the message
 * timestamp; then, for a message, the key up to the first '\n', then the payload. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ev.h"
#include "fuzz.h"
#include "tm.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return 0;
}

static void check_ok(const struct ev_rules *r, int64_t ts, const struct ev_order *o)
{
    size_t m = strnlen(o->merchant_id, sizeof(o->merchant_id)),
           n = strnlen(o->order_id, sizeof(o->order_id));

    FUZZ_CHECK(m >= 1 && m <= EV_ID_MAX, "merchant_id of %zu bytes", m);
    FUZZ_CHECK(n >= 1 && n <= EV_ID_MAX, "order_id of %zu bytes", n);
    FUZZ_CHECK(ev_merchant_id_valid(o->merchant_id, m), "merchant_id '%s'", o->merchant_id);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(o->order_id[i] >= 0x20 && o->order_id[i] < 0x7f, "order_id byte %zu", i);
    FUZZ_CHECK(o->amount_cents >= 0 && o->amount_cents <= EV_AMOUNT_MAX, "amount %lld",
               (long long)o->amount_cents);
    FUZZ_CHECK(o->event_ms >= 0 && o->event_ms <= TM_MAX_MS, "event_ms %lld",
               (long long)o->event_ms);
    FUZZ_CHECK(ts < 0 || o->event_ms <= ts + r->max_future_skew_ms, "future event %lld > %lld",
               (long long)o->event_ms, (long long)ts);
}

static void check_reason(enum ev_reason rs)
{
    FUZZ_CHECK(rs >= EV_OK && rs < EV_REASON_COUNT, "reason %d", (int)rs);
    FUZZ_CHECK(ev_reason_name(rs) && *ev_reason_name(rs), "reason %d has no name", (int)rs);
}

/* Splits at '\n' into at most 4 NUL-terminated fields; missing ones are empty. */
static void fields(const uint8_t *p, size_t n, char *buf, const char *f[4])
{
    size_t k = 0;

    memcpy(buf, p, n);
    buf[n] = '\0';
    f[0] = f[1] = f[2] = f[3] = buf + n;
    f[0] = buf;
    for (size_t i = 0; i < n && k < 3; i++)
        if (buf[i] == '\n') {
            buf[i] = '\0';
            f[++k] = buf + i + 1;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ev_rules rules = {.max_future_skew_ms = 5 * TM_MINUTE_MS};
    struct ev_order o, again;
    enum ev_reason rs;
    int64_t ts = -1;
    uint8_t mode;

    if (size < 1)
        return 0;
    mode = data[0];
    data++, size--;
    if (size >= 8) {
        uint64_t u;
        memcpy(&u, data, 8);
        data += 8, size -= 8;
        /* Real timestamps: none, or 0..TM_MAX_MS (whatever librdkafka hands over). */
        if (mode & 4)
            ts = (int64_t)(u % (uint64_t)(TM_MAX_MS + 1));
    }
    if (mode & 1) {
        char *buf = malloc(size + 1);
        const char *f[4];

        if (!buf)
            return 0;
        fields(data, size, buf, f);
        rs = ev_parse_fields(&rules, f[0], f[1], f[2], f[3], ts, &o);
        check_reason(rs);
        if (rs == EV_OK)
            check_ok(&rules, ts, &o);
        free(buf);
        return 0;
    }
    {
        const uint8_t *nl = (mode & 2) ? memchr(data, '\n', size) : NULL;
        const char *key = NULL, *payload = (const char *)data;
        size_t key_len = 0, len = size;
        char *copy;

        if (nl) {
            key = (const char *)data;
            key_len = (size_t)(nl - data);
            payload = (const char *)nl + 1;
            len = size - key_len - 1;
        }
        /* The payload alone in its own allocation, so reading past it is caught. */
        copy = malloc(len ? len : 1);
        if (!copy)
            return 0;
        memcpy(copy, payload, len);
        rs = ev_parse(&rules, key, key_len, copy, len, ts, &o);
        check_reason(rs);
        if (rs == EV_OK) {
            check_ok(&rules, ts, &o);
            /* A decision is a function of its input. */
            FUZZ_CHECK(ev_parse(&rules, key, key_len, copy, len, ts, &again) == EV_OK &&
                           !strcmp(o.merchant_id, again.merchant_id) &&
                           !strcmp(o.order_id, again.order_id) &&
                           o.amount_cents == again.amount_cents && o.event_ms == again.event_ms &&
                           o.is_key_mismatch == again.is_key_mismatch,
                       "a second parse differs");
        }
        free(copy);
    }
    return 0;
}
