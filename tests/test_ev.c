/* test_ev.c - the event contract of DESIGN.md section 2, table by table.
 *
 * Every expected value is written out here, computed apart from the code under test: UTC
 * epoch milliseconds come from `date -u -d <time> +%s%3N`, id lengths from counted chunks.
 * Each rule of section 2 has a row on both sides of its edge, so changing any one rule
 * (a length, a character class, the amount range, a time format, the future skew) fails
 * at least one row. A failing row names itself. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "ev.h"

/* 2026-11-21T10:15:30.123Z, the time of the base event and its message timestamp. */
#define T0 1795256130123LL
/* The DESIGN default max_future_skew: 5 minutes. */
#define SKEW 300000LL
/* A message timestamp far after every valid event time used below (2100-02-28T12:00:00Z), so
 * that only the row under test decides; -1 means "no timestamp" and skips the future rule. */
#define TS_LATE 4107499200000LL

static const struct ev_rules rules = {.max_future_skew_ms = SKEW};

/* Ids of exactly 64 and 65 bytes, built from eight 8-byte chunks. */
#define C8     "abcdefgh"
#define ID64   C8 C8 C8 C8 C8 C8 C8 C8
#define ID65   ID64 "x"
#define MID64  "Az09_.:-" C8 C8 C8 C8 C8 C8 C8
#define OID64  "o !~/{}|" C8 C8 C8 C8 C8 C8 C8
#define OID65  OID64 "x"
#define MID65  MID64 "x"
#define STR(s) "\"" s "\""

/* One JSON event from four JSON value texts, in a fixed order. */
#define EV(oid, mid, amt, et)                                                                      \
    "{\"order_id\":" oid ",\"merchant_id\":" mid ",\"amount_cents\":" amt ",\"event_time\":" et "}"
#define OID_OK    STR("o-1")
#define MID_OK    STR("m-42")
#define AMT_OK    "1250"
#define ET_OK     STR("2026-11-21T10:15:30.123Z")
#define EV_OID(v) EV(v, MID_OK, AMT_OK, ET_OK)
#define EV_MID(v) EV(OID_OK, v, AMT_OK, ET_OK)
#define EV_AMT(v) EV(OID_OK, MID_OK, v, ET_OK)
#define EV_ET(v)  EV(OID_OK, MID_OK, AMT_OK, v)

/* A row whose payload must be rejected: the order fields are not looked at. */
#define REJ(name, json, ts, reason)                                                                \
    {                                                                                              \
        name, json, 0, ts, reason, NULL, NULL, 0, 0                                                \
    }

struct ev_case {
    const char *name;
    const char *json;
    size_t len; /* 0: strlen(json) */
    int64_t msg_ts_ms;
    enum ev_reason want;
    /* checked on EV_OK only; NULL ids mean the base event's "o-1" and "m-42" */
    const char *order_id, *merchant_id;
    int64_t amount_cents, event_ms;
};

static void check_case(const struct ev_case *c, const struct ev_rules *r)
{
    struct ev_order o;
    size_t len = c->len ? c->len : strlen(c->json);
    enum ev_reason got;

    memset(&o, 0xa5, sizeof(o));
    got = ev_parse(r, NULL, 0, c->json, len, c->msg_ts_ms, &o);
    cr_expect_eq(got, c->want, "%s: got %s, want %s (payload %s)", c->name, ev_reason_name(got),
                 ev_reason_name(c->want), c->json);
    if (got != EV_OK || c->want != EV_OK)
        return;
    cr_expect_str_eq(o.order_id, c->order_id ? c->order_id : "o-1", "%s: order_id", c->name);
    cr_expect_str_eq(o.merchant_id, c->merchant_id ? c->merchant_id : "m-42", "%s: merchant_id",
                     c->name);
    cr_expect_eq(o.amount_cents, c->amount_cents, "%s: amount_cents %lld, want %lld", c->name,
                 (long long)o.amount_cents, (long long)c->amount_cents);
    cr_expect_eq(o.event_ms, c->event_ms, "%s: event_ms %lld, want %lld", c->name,
                 (long long)o.event_ms, (long long)c->event_ms);
    cr_expect_not(o.is_key_mismatch, "%s: no key, so no mismatch", c->name);
}

static void check_table(const struct ev_case *t, size_t n, const struct ev_rules *r)
{
    for (size_t i = 0; i < n; i++)
        check_case(&t[i], r);
}

#define N(t) (sizeof(t) / sizeof((t)[0]))

Test(ev, accepts_the_base_event)
{
    static const struct ev_case t[] = {
        {"base", EV(OID_OK, MID_OK, AMT_OK, ET_OK), 0, T0, EV_OK, NULL, NULL, 1250, T0},
        {"fields in another order",
         "{\"event_time\":\"2026-11-21T10:15:30.123Z\",\"amount_cents\":1250,"
         "\"merchant_id\":\"m-42\",\"order_id\":\"o-1\"}",
         0, T0, EV_OK, NULL, NULL, 1250, T0},
        {"whitespace around and inside",
         " \n{ \"order_id\" : \"o-1\" ,\t\"merchant_id\":\"m-42\","
         "\"amount_cents\" : 1250, \"event_time\": "
         "\"2026-11-21T10:15:30.123Z\" }\n",
         0, T0, EV_OK, NULL, NULL, 1250, T0},
        {"no message timestamp skips the future rule", EV_ET("1795256130123"), 0, -1, EV_OK, NULL,
         NULL, 1250, T0},
    };
    check_table(t, N(t), &rules);
}

Test(ev, rejects_what_is_not_utf8_json_as_bad_json)
{
    static const struct ev_case t[] = {
        REJ("empty payload", "", T0, EV_BAD_JSON),
        REJ("a lone brace", "{", T0, EV_BAD_JSON),
        REJ("truncated", "{\"order_id\":\"o-1\",\"merchant_id\":", T0, EV_BAD_JSON),
        REJ("plain text", "order o-1 of m-42", T0, EV_BAD_JSON),
        REJ("single quotes", "{'order_id':'o-1'}", T0, EV_BAD_JSON),
        REJ("trailing garbage", EV_OID(OID_OK) " x", T0, EV_BAD_JSON),
        REJ("two objects", EV_OID(OID_OK) EV_OID(OID_OK), T0, EV_BAD_JSON),
        REJ("trailing comma", "{\"order_id\":\"o-1\",}", T0, EV_BAD_JSON),
        REJ("invalid UTF-8 byte in a string", EV_OID("\"o-\xff\""), T0, EV_BAD_JSON),
        REJ("overlong UTF-8 encoding", EV_OID("\"o-\xc0\xaf\""), T0, EV_BAD_JSON),
        REJ("UTF-8 encoded surrogate", EV_OID("\"o-\xed\xa0\x80\""), T0, EV_BAD_JSON),
        REJ("truncated UTF-8 sequence", EV_OID("\"o-\xc3\""), T0, EV_BAD_JSON),
        REJ("invalid UTF-8 in an ignored field",
            "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1,"
            "\"event_time\":0,\"note\":\"\xfe\"}",
            T0, EV_BAD_JSON),
        REJ("lone surrogate escape", EV_OID("\"o-\\ud800\""), T0, EV_BAD_JSON),
        /* Documented choice (ev.h): "amount_cents" twice has no single meaning. */
        REJ("duplicate key",
            "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1,"
            "\"amount_cents\":2,\"event_time\":0}",
            T0, EV_BAD_JSON),
        REJ("duplicate ignored key",
            "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\","
            "\"amount_cents\":1,\"event_time\":0,\"x\":1,\"x\":1}",
            T0, EV_BAD_JSON),
    };
    check_table(t, N(t), &rules);
}

Test(ev, an_escaped_nul_is_judged_by_the_rule_of_the_field_that_holds_it)
{
    static const struct ev_case t[] = {
        {"escaped NUL in an ignored field",
         "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1250,"
         "\"event_time\":\"2026-11-21T10:15:30.123Z\",\"note\":\"a\\u0000b\"}",
         0, T0, EV_OK, NULL, NULL, 1250, T0},
        {"escaped NUL inside an ignored nested object",
         "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1250,"
         "\"event_time\":\"2026-11-21T10:15:30.123Z\",\"meta\":{\"tags\":[\"\\u0000\"]}}",
         0, T0, EV_OK, NULL, NULL, 1250, T0},
        REJ("escaped NUL in order_id", EV_OID("\"o-\\u0000\""), T0, EV_BAD_ORDER_ID),
        REJ("escaped NUL ending order_id", EV_OID("\"o-1\\u0000\""), T0, EV_BAD_ORDER_ID),
        REJ("escaped NUL in merchant_id", EV_MID("\"m-42\\u0000\""), T0, EV_BAD_MERCHANT_ID),
        REJ("escaped NUL in event_time", EV_ET("\"2026-11-21T10:15:30.123Z\\u0000\""), TS_LATE,
            EV_BAD_TIME),
        /* jansson holds no NUL in a key, whatever the flags: that alone stays bad_json. */
        REJ("escaped NUL in an ignored key",
            "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1,"
            "\"event_time\":0,\"n\\u0000\":1}",
            T0, EV_BAD_JSON),
    };
    check_table(t, N(t), &rules);
}

Test(ev, rejects_a_payload_with_a_nul_byte_inside_its_length)
{
    static const char buf[] = EV_OID(OID_OK) "\0";
    struct ev_order o;

    /* sizeof counts the explicit NUL and the literal's own terminator: two bytes past '}'. */
    cr_assert_eq(ev_parse(&rules, NULL, 0, buf, sizeof(buf) - 1, T0, &o), EV_BAD_JSON);
    cr_assert_eq(ev_parse(&rules, NULL, 0, buf, sizeof(buf) - 2, T0, &o), EV_OK);
    cr_assert_eq(ev_parse(&rules, NULL, 0, NULL, 0, T0, &o), EV_BAD_JSON);
}

Test(ev, rejects_json_that_is_not_an_object_as_not_object)
{
    static const struct ev_case t[] = {
        REJ("empty array", "[]", T0, EV_NOT_OBJECT),
        REJ("array of the event", "[" EV_OID(OID_OK) "]", T0, EV_NOT_OBJECT),
        REJ("string", "\"o-1\"", T0, EV_NOT_OBJECT),
        REJ("integer", "42", T0, EV_NOT_OBJECT),
        REJ("real", "4.2", T0, EV_NOT_OBJECT),
        REJ("null", "null", T0, EV_NOT_OBJECT),
        REJ("true", "true", T0, EV_NOT_OBJECT),
    };
    check_table(t, N(t), &rules);
}

Test(ev, rejects_each_absent_field_as_missing_field)
{
    static const struct ev_case t[] = {
        REJ("no order_id",
            "{\"merchant_id\":\"m-42\",\"amount_cents\":1250,\"event_time\":1795256130123}", T0,
            EV_MISSING_FIELD),
        REJ("no merchant_id",
            "{\"order_id\":\"o-1\",\"amount_cents\":1250,\"event_time\":1795256130123}", T0,
            EV_MISSING_FIELD),
        REJ("no amount_cents",
            "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"event_time\":1795256130123}", T0,
            EV_MISSING_FIELD),
        REJ("no event_time",
            "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1250}", T0,
            EV_MISSING_FIELD),
        REJ("empty object", "{}", T0, EV_MISSING_FIELD),
        REJ("Order_id is not order_id",
            "{\"Order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1250,"
            "\"event_time\":1795256130123}",
            T0, EV_MISSING_FIELD),
        REJ("eventTime is not event_time",
            "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1250,"
            "\"eventTime\":1795256130123}",
            T0, EV_MISSING_FIELD),
    };
    check_table(t, N(t), &rules);
}

Test(ev, rejects_each_field_of_the_wrong_json_type_as_bad_type)
{
    static const struct ev_case t[] = {
        REJ("order_id integer", EV_OID("1"), T0, EV_BAD_TYPE),
        REJ("order_id null", EV_OID("null"), T0, EV_BAD_TYPE),
        REJ("order_id array", EV_OID("[\"o-1\"]"), T0, EV_BAD_TYPE),
        REJ("merchant_id integer", EV_MID("42"), T0, EV_BAD_TYPE),
        REJ("merchant_id object", EV_MID("{\"id\":\"m-42\"}"), T0, EV_BAD_TYPE),
        REJ("merchant_id false", EV_MID("false"), T0, EV_BAD_TYPE),
        REJ("amount float 10.0", EV_AMT("10.0"), T0, EV_BAD_TYPE),
        REJ("amount float 12.5", EV_AMT("12.5"), T0, EV_BAD_TYPE),
        REJ("amount exponent 1e3", EV_AMT("1e3"), T0, EV_BAD_TYPE),
        REJ("amount string", EV_AMT(STR("1250")), T0, EV_BAD_TYPE),
        REJ("amount null", EV_AMT("null"), T0, EV_BAD_TYPE),
        REJ("amount true", EV_AMT("true"), T0, EV_BAD_TYPE),
        REJ("event_time float", EV_ET("1795256130123.0"), T0, EV_BAD_TYPE),
        REJ("event_time true", EV_ET("true"), T0, EV_BAD_TYPE),
        REJ("event_time false", EV_ET("false"), T0, EV_BAD_TYPE),
        REJ("event_time null", EV_ET("null"), T0, EV_BAD_TYPE),
        REJ("event_time object", EV_ET("{}"), T0, EV_BAD_TYPE),
    };
    check_table(t, N(t), &rules);
}

Test(ev, accepts_amounts_from_0_to_10e12_and_rejects_the_rest_as_out_of_range)
{
    static const struct ev_case t[] = {
        {"amount 0", EV_AMT("0"), 0, T0, EV_OK, NULL, NULL, 0, T0},
        {"amount -0 is 0", EV_AMT("-0"), 0, T0, EV_OK, NULL, NULL, 0, T0},
        {"amount 1", EV_AMT("1"), 0, T0, EV_OK, NULL, NULL, 1, T0},
        {"amount 10^12", EV_AMT("1000000000000"), 0, T0, EV_OK, NULL, NULL, 1000000000000LL, T0},
        {"amount 10^12-1", EV_AMT("999999999999"), 0, T0, EV_OK, NULL, NULL, 999999999999LL, T0},
        REJ("amount 10^12+1", EV_AMT("1000000000001"), T0, EV_OUT_OF_RANGE),
        REJ("amount -1", EV_AMT("-1"), T0, EV_OUT_OF_RANGE),
        REJ("amount int64 max", EV_AMT("9223372036854775807"), T0, EV_OUT_OF_RANGE),
        REJ("amount int64 min", EV_AMT("-9223372036854775808"), T0, EV_OUT_OF_RANGE),
        REJ("amount past int64", EV_AMT("9223372036854775808"), T0, EV_OUT_OF_RANGE),
        REJ("amount far past int64", EV_AMT("123456789012345678901234567890"), T0, EV_OUT_OF_RANGE),
        REJ("amount below int64", EV_AMT("-9223372036854775809"), T0, EV_OUT_OF_RANGE),
    };
    check_table(t, N(t), &rules);
}

Test(ev, checks_merchant_ids_against_1_to_64_bytes_of_the_allowed_set)
{
    static const struct ev_case t[] = {
        {"1 byte", EV_MID(STR("m")), 0, T0, EV_OK, NULL, "m", 1250, T0},
        {"64 bytes of every allowed class", EV_MID(STR(MID64)), 0, T0, EV_OK, NULL, MID64, 1250,
         T0},
        {"every allowed punctuation", EV_MID(STR("a_b.c:d-e")), 0, T0, EV_OK, NULL, "a_b.c:d-e",
         1250, T0},
        {"digits and capitals", EV_MID(STR("ZZ09")), 0, T0, EV_OK, NULL, "ZZ09", 1250, T0},
        REJ("empty", EV_MID(STR("")), T0, EV_BAD_MERCHANT_ID),
        REJ("65 bytes", EV_MID(STR(MID65)), T0, EV_BAD_MERCHANT_ID),
        REJ("a space", EV_MID(STR("m 42")), T0, EV_BAD_MERCHANT_ID),
        REJ("a slash", EV_MID(STR("m/42")), T0, EV_BAD_MERCHANT_ID),
        REJ("a comma", EV_MID(STR("m,42")), T0, EV_BAD_MERCHANT_ID),
        REJ("an at sign", EV_MID(STR("m@42")), T0, EV_BAD_MERCHANT_ID),
        REJ("a plus", EV_MID(STR("m+42")), T0, EV_BAD_MERCHANT_ID),
        REJ("a tilde", EV_MID(STR("m~42")), T0, EV_BAD_MERCHANT_ID),
        REJ("a tab", EV_MID(STR("m\\t42")), T0, EV_BAD_MERCHANT_ID),
        REJ("non-ASCII (UTF-8 e-acute)", EV_MID(STR("m\xc3\xa9")), T0, EV_BAD_MERCHANT_ID),
        REJ("non-ASCII (escaped e-acute)", EV_MID(STR("m\\u00e9")), T0, EV_BAD_MERCHANT_ID),
    };
    check_table(t, N(t), &rules);
}

Test(ev, checks_order_ids_against_1_to_64_printable_ascii_bytes)
{
    static const struct ev_case t[] = {
        {"1 byte", EV_OID(STR("o")), 0, T0, EV_OK, "o", NULL, 1250, T0},
        {"64 bytes with space and punctuation", EV_OID(STR(OID64)), 0, T0, EV_OK, OID64, NULL, 1250,
         T0},
        {"escaped quote and backslash", EV_OID(STR("o\\\"\\\\")), 0, T0, EV_OK, "o\"\\", NULL, 1250,
         T0},
        {"64 plain bytes", EV_OID(STR(ID64)), 0, T0, EV_OK, ID64, NULL, 1250, T0},
        REJ("empty", EV_OID(STR("")), T0, EV_BAD_ORDER_ID),
        REJ("65 bytes", EV_OID(STR(OID65)), T0, EV_BAD_ORDER_ID),
        REJ("65 plain bytes", EV_OID(STR(ID65)), T0, EV_BAD_ORDER_ID),
        REJ("a control char (0x01)", EV_OID(STR("o\\u0001")), T0, EV_BAD_ORDER_ID),
        REJ("a newline", EV_OID(STR("o\\n1")), T0, EV_BAD_ORDER_ID),
        REJ("a tab", EV_OID(STR("o\\t1")), T0, EV_BAD_ORDER_ID),
        REJ("unit separator (0x1f)", EV_OID(STR("o\\u001f")), T0, EV_BAD_ORDER_ID),
        REJ("DEL (0x7f)", EV_OID(STR("o\\u007f")), T0, EV_BAD_ORDER_ID),
        REJ("non-ASCII (UTF-8 e-acute)", EV_OID(STR("o\xc3\xa9")), T0, EV_BAD_ORDER_ID),
    };
    check_table(t, N(t), &rules);
}

Test(ev, turns_every_event_time_form_into_utc_milliseconds)
{
    /* Expected values: date -u -d <the time> +%s%3N (fractions truncated by hand). */
    static const struct ev_case t[] = {
        {"Z with ms", EV_ET(STR("2026-11-21T10:15:30.123Z")), 0, TS_LATE, EV_OK, NULL, NULL, 1250,
         1795256130123LL},
        {"no fraction", EV_ET(STR("2026-11-21T10:15:30Z")), 0, TS_LATE, EV_OK, NULL, NULL, 1250,
         1795256130000LL},
        {"1 fraction digit", EV_ET(STR("2026-11-21T10:15:30.1Z")), 0, TS_LATE, EV_OK, NULL, NULL,
         1250, 1795256130100LL},
        {"2 fraction digits", EV_ET(STR("2026-11-21T10:15:30.12Z")), 0, TS_LATE, EV_OK, NULL, NULL,
         1250, 1795256130120LL},
        {"4 fraction digits truncate", EV_ET(STR("2026-11-21T10:15:30.1239Z")), 0, TS_LATE, EV_OK,
         NULL, NULL, 1250, 1795256130123LL},
        {"6 fraction digits", EV_ET(STR("2026-11-21T10:15:30.123456Z")), 0, TS_LATE, EV_OK, NULL,
         NULL, 1250, 1795256130123LL},
        {"9 fraction digits truncate, never round", EV_ET(STR("2026-11-21T10:15:30.999999999Z")), 0,
         TS_LATE, EV_OK, NULL, NULL, 1250, 1795256130999LL},
        {"10 fraction digits", EV_ET(STR("2026-11-21T10:15:30.1234567891Z")), 0, TS_LATE, EV_OK,
         NULL, NULL, 1250, 1795256130123LL},
        {"30 fraction digits truncate",
         EV_ET(STR("2026-11-21T10:15:30.999999999999999999999999999999Z")), 0, TS_LATE, EV_OK, NULL,
         NULL, 1250, 1795256130999LL},
        {"12 fraction digits before an offset",
         EV_ET(STR("2026-11-21T12:15:30.000999999999+02:00")), 0, TS_LATE, EV_OK, NULL, NULL, 1250,
         1795256130000LL},
        {"offset +02:00", EV_ET(STR("2026-11-21T12:15:30+02:00")), 0, TS_LATE, EV_OK, NULL, NULL,
         1250, 1795256130000LL},
        {"offset -05:30", EV_ET(STR("2026-11-21T04:45:30-05:30")), 0, TS_LATE, EV_OK, NULL, NULL,
         1250, 1795256130000LL},
        {"offset -05:30 crossing the day", EV_ET(STR("2026-11-21T23:30:00-05:30")), 0, TS_LATE,
         EV_OK, NULL, NULL, 1250, 1795323600000LL},
        {"offset -05:00 crossing the year", EV_ET(STR("2026-12-31T23:59:59-05:00")), 0, TS_LATE,
         EV_OK, NULL, NULL, 1250, 1798779599000LL},
        {"offset +23:00", EV_ET(STR("2026-11-22T09:15:30+23:00")), 0, TS_LATE, EV_OK, NULL, NULL,
         1250, 1795256130000LL},
        {"offset +00:00 with fraction", EV_ET(STR("2026-11-21T10:15:30.5+00:00")), 0, TS_LATE,
         EV_OK, NULL, NULL, 1250, 1795256130500LL},
        {"offset -00:00", EV_ET(STR("2026-11-21T10:15:30-00:00")), 0, TS_LATE, EV_OK, NULL, NULL,
         1250, 1795256130000LL},
        {"lower-case t and z", EV_ET(STR("2026-11-21t10:15:30.123z")), 0, TS_LATE, EV_OK, NULL,
         NULL, 1250, 1795256130123LL},
        {"leap day 2024", EV_ET(STR("2024-02-29T00:00:00Z")), 0, TS_LATE, EV_OK, NULL, NULL, 1250,
         1709164800000LL},
        {"leap day 2000", EV_ET(STR("2000-02-29T00:00:00Z")), 0, TS_LATE, EV_OK, NULL, NULL, 1250,
         951782400000LL},
        {"the epoch", EV_ET(STR("1970-01-01T00:00:00Z")), 0, TS_LATE, EV_OK, NULL, NULL, 1250, 0},
        {"the last representable time", EV_ET(STR("9999-12-31T23:59:59.999Z")), 0, -1, EV_OK, NULL,
         NULL, 1250, 253402300799999LL},
        {"epoch ms integer", EV_ET("1795256130123"), 0, TS_LATE, EV_OK, NULL, NULL, 1250,
         1795256130123LL},
        {"epoch ms 0", EV_ET("0"), 0, TS_LATE, EV_OK, NULL, NULL, 1250, 0},
    };
    check_table(t, N(t), &rules);
}

Test(ev, rejects_malformed_or_impossible_event_times_as_bad_time)
{
    static const struct ev_case t[] = {
        REJ("garbage", EV_ET(STR("yesterday")), TS_LATE, EV_BAD_TIME),
        REJ("empty string", EV_ET(STR("")), TS_LATE, EV_BAD_TIME),
        REJ("missing zone", EV_ET(STR("2026-11-21T10:15:30")), TS_LATE, EV_BAD_TIME),
        REJ("missing zone after fraction", EV_ET(STR("2026-11-21T10:15:30.123")), TS_LATE,
            EV_BAD_TIME),
        REJ("date only", EV_ET(STR("2026-11-21")), TS_LATE, EV_BAD_TIME),
        REJ("month 13", EV_ET(STR("2026-13-01T00:00:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("month 00", EV_ET(STR("2026-00-10T00:00:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("day 00", EV_ET(STR("2026-11-00T00:00:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("Feb 30", EV_ET(STR("2026-02-30T00:00:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("Feb 29 of a common year", EV_ET(STR("2023-02-29T00:00:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("Feb 29 of 2100", EV_ET(STR("2100-02-29T00:00:00Z")), -1, EV_BAD_TIME),
        REJ("Nov 31", EV_ET(STR("2026-11-31T00:00:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("hour 24", EV_ET(STR("2026-11-21T24:00:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("minute 60", EV_ET(STR("2026-11-21T10:60:00Z")), TS_LATE, EV_BAD_TIME),
        REJ("a dot without digits", EV_ET(STR("2026-11-21T10:15:30.Z")), TS_LATE, EV_BAD_TIME),
        REJ("offset without colon", EV_ET(STR("2026-11-21T10:15:30+0200")), TS_LATE, EV_BAD_TIME),
        REJ("offset hours only", EV_ET(STR("2026-11-21T10:15:30+02")), TS_LATE, EV_BAD_TIME),
        REJ("offset hour 24", EV_ET(STR("2026-11-21T10:15:30+24:00")), TS_LATE, EV_BAD_TIME),
        REJ("text after the zone", EV_ET(STR("2026-11-21T10:15:30Zjunk")), TS_LATE, EV_BAD_TIME),
        REJ("unpadded month", EV_ET(STR("2026-1-21T10:15:30Z")), TS_LATE, EV_BAD_TIME),
        REJ("epoch ms as a string", EV_ET(STR("1795256130123")), TS_LATE, EV_BAD_TIME),
        REJ("before the epoch (RFC 3339)", EV_ET(STR("1969-12-31T23:59:59.999Z")), TS_LATE,
            EV_BAD_TIME),
        REJ("before the epoch by offset", EV_ET(STR("1970-01-01T01:00:00+02:00")), TS_LATE,
            EV_BAD_TIME),
        REJ("epoch ms -1", EV_ET("-1"), TS_LATE, EV_BAD_TIME),
        REJ("epoch ms negative", EV_ET("-1795256130123"), TS_LATE, EV_BAD_TIME),
        REJ("epoch ms past 9999-12-31", EV_ET("253402300800000"), -1, EV_BAD_TIME),
    };
    check_table(t, N(t), &rules);
}

Test(ev, rejects_event_time_beyond_future_skew_of_the_message_timestamp)
{
    /* T0 + 5 min = 2026-11-21T10:20:30.123Z = 1795256430123. */
    static const struct ev_case t[] = {
        {"at the skew limit (ms)", EV_ET("1795256430123"), 0, T0, EV_OK, NULL, NULL, 1250,
         1795256430123LL},
        REJ("one ms past (ms)", EV_ET("1795256430124"), T0, EV_FUTURE_TIME),
        {"at the skew limit (RFC 3339)", EV_ET(STR("2026-11-21T10:20:30.123Z")), 0, T0, EV_OK, NULL,
         NULL, 1250, 1795256430123LL},
        REJ("one ms past (RFC 3339)", EV_ET(STR("2026-11-21T10:20:30.124Z")), T0, EV_FUTURE_TIME),
        {"at the limit via an offset", EV_ET(STR("2026-11-21T12:20:30.123+02:00")), 0, T0, EV_OK,
         NULL, NULL, 1250, 1795256430123LL},
        REJ("one ms past via an offset", EV_ET(STR("2026-11-21T12:20:30.124+02:00")), T0,
            EV_FUTURE_TIME),
        REJ("a day ahead", EV_ET("1795342530123"), T0, EV_FUTURE_TIME),
        {"far in the past is fine", EV_ET("1"), 0, T0, EV_OK, NULL, NULL, 1250, 1},
        {"the reference is the message, not the clock", EV_ET("1000300000"), 0, 1000000000, EV_OK,
         NULL, NULL, 1250, 1000300000},
        REJ("the reference is the message, one ms past", EV_ET("1000300001"), 1000000000,
            EV_FUTURE_TIME),
        REJ("message timestamp 0", EV_ET("300001"), 0, EV_FUTURE_TIME),
    };
    check_table(t, N(t), &rules);
}

Test(ev, takes_the_future_skew_from_the_rules)
{
    static const struct ev_rules one_s = {.max_future_skew_ms = 1000}, none = {0};
    static const struct ev_case t1[] = {
        {"skew 1 s, at", EV_ET("1795256131123"), 0, T0, EV_OK, NULL, NULL, 1250, 1795256131123LL},
        REJ("skew 1 s, past", EV_ET("1795256131124"), T0, EV_FUTURE_TIME),
        REJ("skew 1 s, 5 min ahead", EV_ET("1795256430123"), T0, EV_FUTURE_TIME),
    };
    static const struct ev_case t0[] = {
        {"skew 0, at", EV_ET("1795256130123"), 0, T0, EV_OK, NULL, NULL, 1250, T0},
        REJ("skew 0, past", EV_ET("1795256130124"), T0, EV_FUTURE_TIME),
    };
    check_table(t1, N(t1), &one_s);
    check_table(t0, N(t0), &none);
}

Test(ev, ignores_extra_fields)
{
    static const struct ev_case t[] = {
        {"extra scalars, objects and arrays",
         "{\"order_id\":\"o-1\",\"note\":\"gift\",\"merchant_id\":\"m-42\",\"amount_cents\":1250,"
         "\"event_time\":\"2026-11-21T10:15:30.123Z\",\"currency\":\"EUR\",\"amount\":12.5,"
         "\"items\":[{\"sku\":1},null,true],\"meta\":{\"order_id\":\"other\"},\"z\":null}",
         0, T0, EV_OK, NULL, NULL, 1250, T0},
    };
    check_table(t, N(t), &rules);
}

#define EV_EXTRA(extra)                                                                            \
    "{\"order_id\":\"o-1\",\"merchant_id\":\"m-42\",\"amount_cents\":1250,"                        \
    "\"event_time\":\"2026-11-21T10:15:30.123Z\"," extra "}"

Test(ev, ignores_numbers_beyond_int64_in_extra_fields_and_classifies_them_elsewhere)
{
    static const struct ev_case t[] = {
        {"2^64 in an extra field", EV_EXTRA("\"span\":18446744073709551616"), 0, T0, EV_OK, NULL,
         NULL, 1250, T0},
        {"-2^64 and a huge real in extra fields",
         EV_EXTRA("\"a\":-18446744073709551616,\"b\":1e999"), 0, T0, EV_OK, NULL, NULL, 1250, T0},
        {"big integers nested in an extra array",
         EV_EXTRA("\"ids\":[99999999999999999999,1,99999999999999999999]"), 0, T0, EV_OK, NULL,
         NULL, 1250, T0},
        {"a big integer before the fields",
         "{\"span\":99999999999999999999,\"order_id\":\"o-1\",\"merchant_id\":\"m-42\","
         "\"amount_cents\":7,\"event_time\":0}",
         0, T0, EV_OK, NULL, NULL, 7, 0},
        REJ("event_time beyond int64", EV_ET("99999999999999999999"), T0, EV_BAD_TIME),
        REJ("order_id a number beyond int64", EV_OID("99999999999999999999"), T0, EV_BAD_TYPE),
        REJ("merchant_id a number beyond int64", EV_MID("-99999999999999999999"), T0, EV_BAD_TYPE),
        REJ("an array of a number beyond int64", "[99999999999999999999]", T0, EV_NOT_OBJECT),
        REJ("a bare number beyond int64", "99999999999999999999", T0, EV_NOT_OBJECT),
        REJ("a big integer and broken JSON", EV_EXTRA("\"a\":99999999999999999999,"), T0,
            EV_BAD_JSON),
        REJ("a big integer and a duplicate key",
            EV_EXTRA("\"a\":99999999999999999999,\"amount_cents\":1"), T0, EV_BAD_JSON),
    };
    check_table(t, N(t), &rules);
}

Test(ev, flags_a_key_that_differs_from_merchant_id_and_still_accepts)
{
    static const struct {
        const char *key;
        size_t key_len;
        bool want_mismatch;
    } t[] = {
        {"m-42", 4, false},  {"m-43", 4, true}, {"m-4", 3, true}, {"m-42x", 5, true},
        {"m-42x", 4, false}, {"M-42", 4, true}, {"", 0, true},    {NULL, 0, false},
    };
    static const char ev[] = EV(OID_OK, MID_OK, AMT_OK, ET_OK);

    for (size_t i = 0; i < N(t); i++) {
        struct ev_order o;
        cr_expect_eq(ev_parse(&rules, t[i].key, t[i].key_len, ev, strlen(ev), T0, &o), EV_OK,
                     "key %zu", i);
        cr_expect_eq(o.is_key_mismatch, t[i].want_mismatch, "key '%.*s' (len %zu)",
                     (int)t[i].key_len, t[i].key ? t[i].key : "", t[i].key_len);
        cr_expect_str_eq(o.merchant_id, "m-42", "counted under its merchant_id");
    }
}

Test(ev, names_every_reason)
{
    static const char *const want[] = {
        "ok",           "bad_json",        "not_object",   "missing_field", "bad_type",
        "out_of_range", "bad_merchant_id", "bad_order_id", "bad_time",      "future_time",
    };

    cr_assert_eq(EV_REASON_COUNT, N(want));
    cr_assert_eq(EV_OK, 0);
    for (size_t i = 0; i < N(want); i++)
        cr_expect_str_eq(ev_reason_name((enum ev_reason)i), want[i]);
    cr_expect_str_eq(ev_reason_name(EV_REASON_COUNT), "unknown");
    cr_expect_str_eq(ev_reason_name((enum ev_reason) - 1), "unknown");
}

Test(ev, validates_merchant_ids_by_length_not_by_terminator)
{
    cr_expect(ev_merchant_id_valid("m-42", 4));
    cr_expect(ev_merchant_id_valid("m-42/", 4));
    cr_expect_not(ev_merchant_id_valid("m-42/", 5));
    cr_expect_not(ev_merchant_id_valid("", 0));
    cr_expect(ev_merchant_id_valid(MID64, 64));
    cr_expect_not(ev_merchant_id_valid(MID65, 65));
    cr_expect_not(ev_merchant_id_valid("a\0b", 3));
}

/* ev_parse_fields: the same contract for an import's text fields. */
struct fields_case {
    const char *name, *order_id, *merchant_id, *amount, *event_time;
    int64_t ref_ms;
    enum ev_reason want;
    int64_t amount_cents, event_ms;
};

#define FREJ(name, oid, mid, amount, time, ref, reason)                                            \
    {                                                                                              \
        name, oid, mid, amount, time, ref, reason, 0, 0                                            \
    }

Test(ev, validates_text_fields_with_the_same_rules)
{
    static const struct fields_case t[] = {
        {"base, RFC 3339", "o-1", "m-42", "1250", "2026-11-21T10:15:30.123Z", T0, EV_OK, 1250, T0},
        {"epoch ms", "o-1", "m-42", "1250", "1795256130123", T0, EV_OK, 1250, T0},
        {"offset", "o-1", "m-42", "1250", "2026-11-21T04:45:30-05:30", T0, EV_OK, 1250,
         1795256130000LL},
        {"amount 0", "o-1", "m-42", "0", "0", T0, EV_OK, 0, 0},
        {"amount 10^12", "o-1", "m-42", "1000000000000", "0", T0, EV_OK, 1000000000000LL, 0},
        {"no reference time", "o-1", "m-42", "1", "253402300799999", -1, EV_OK, 1,
         253402300799999LL},
        {"64-byte ids", OID64, MID64, "1", "0", T0, EV_OK, 1, 0},
        FREJ("amount 10^12+1", "o-1", "m-42", "1000000000001", "0", T0, EV_OUT_OF_RANGE),
        FREJ("amount -1", "o-1", "m-42", "-1", "0", T0, EV_OUT_OF_RANGE),
        FREJ("amount past int64", "o-1", "m-42", "9223372036854775808", "0", T0, EV_OUT_OF_RANGE),
        FREJ("amount 10.0", "o-1", "m-42", "10.0", "0", T0, EV_BAD_TYPE),
        FREJ("amount empty", "o-1", "m-42", "", "0", T0, EV_BAD_TYPE),
        FREJ("amount text", "o-1", "m-42", "ten", "0", T0, EV_BAD_TYPE),
        FREJ("amount with a space", "o-1", "m-42", " 10", "0", T0, EV_BAD_TYPE),
        FREJ("amount with a plus", "o-1", "m-42", "+10", "0", T0, EV_BAD_TYPE),
        FREJ("amount 1e3", "o-1", "m-42", "1e3", "0", T0, EV_BAD_TYPE),
        FREJ("merchant empty", "o-1", "", "1", "0", T0, EV_BAD_MERCHANT_ID),
        FREJ("merchant 65 bytes", "o-1", MID65, "1", "0", T0, EV_BAD_MERCHANT_ID),
        FREJ("merchant slash", "o-1", "m/1", "1", "0", T0, EV_BAD_MERCHANT_ID),
        FREJ("order empty", "", "m-42", "1", "0", T0, EV_BAD_ORDER_ID),
        FREJ("order 65 bytes", OID65, "m-42", "1", "0", T0, EV_BAD_ORDER_ID),
        FREJ("order control char", "o\x01", "m-42", "1", "0", T0, EV_BAD_ORDER_ID),
        FREJ("time garbage", "o-1", "m-42", "1", "soon", T0, EV_BAD_TIME),
        FREJ("time empty", "o-1", "m-42", "1", "", T0, EV_BAD_TIME),
        FREJ("time without zone", "o-1", "m-42", "1", "2026-11-21T10:15:30", T0, EV_BAD_TIME),
        FREJ("time Feb 30", "o-1", "m-42", "1", "2026-02-30T00:00:00Z", T0, EV_BAD_TIME),
        FREJ("time epoch ms negative", "o-1", "m-42", "1", "-1", T0, EV_BAD_TIME),
        FREJ("time epoch ms float", "o-1", "m-42", "1", "1795256130123.0", T0, EV_BAD_TIME),
        {"at the skew limit", "o-1", "m-42", "1", "1795256430123", T0, EV_OK, 1, 1795256430123LL},
        FREJ("one ms past the skew", "o-1", "m-42", "1", "1795256430124", T0, EV_FUTURE_TIME),
        FREJ("one ms past the skew (RFC 3339)", "o-1", "m-42", "1", "2026-11-21T10:20:30.124Z", T0,
             EV_FUTURE_TIME),
    };

    for (size_t i = 0; i < N(t); i++) {
        struct ev_order o;
        enum ev_reason got;
        memset(&o, 0xa5, sizeof(o));
        got = ev_parse_fields(&rules, t[i].order_id, t[i].merchant_id, t[i].amount, t[i].event_time,
                              t[i].ref_ms, &o);
        cr_expect_eq(got, t[i].want, "%s: got %s, want %s", t[i].name, ev_reason_name(got),
                     ev_reason_name(t[i].want));
        if (got != EV_OK || t[i].want != EV_OK)
            continue;
        cr_expect_str_eq(o.order_id, t[i].order_id, "%s", t[i].name);
        cr_expect_str_eq(o.merchant_id, t[i].merchant_id, "%s", t[i].name);
        cr_expect_eq(o.amount_cents, t[i].amount_cents, "%s", t[i].name);
        cr_expect_eq(o.event_ms, t[i].event_ms, "%s", t[i].name);
        cr_expect_not(o.is_key_mismatch, "%s", t[i].name);
    }
}
