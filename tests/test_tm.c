/* test_tm.c - time helpers: buckets, RFC 3339 both ways, durations.
 *
 * Expected epoch milliseconds come from `date -u -d <time> +%s%3N`. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "tm.h"

#define N(t) (sizeof(t) / sizeof((t)[0]))

/* 2026-11-21T10:15:30.123Z */
#define T0 1795256130123LL

Test(tm, floors_to_the_bucket_start_also_before_the_epoch)
{
    static const struct {
        int64_t t, width, want;
    } t[] = {
        {0, TM_MINUTE_MS, 0},
        {59999, TM_MINUTE_MS, 0},
        {60000, TM_MINUTE_MS, 60000},
        {60001, TM_MINUTE_MS, 60000},
        {-1, TM_MINUTE_MS, -60000},
        {-59999, TM_MINUTE_MS, -60000},
        {-60000, TM_MINUTE_MS, -60000},
        {-60001, TM_MINUTE_MS, -120000},
        {-1, TM_DAY_MS, -86400000LL},        /* 1969-12-31T00:00:00Z */
        {-1, TM_HOUR_MS, -3600000LL},        /* 1969-12-31T23:00:00Z */
        {T0, TM_MINUTE_MS, 1795256100000LL}, /* 2026-11-21T10:15:00Z */
        {T0, TM_HOUR_MS, 1795255200000LL},   /* 2026-11-21T10:00:00Z */
        {T0, TM_DAY_MS, 1795219200000LL},    /* 2026-11-21T00:00:00Z */
        {T0, 1, T0},
        {T0, 200, 1795256130000LL},
        {7, 3, 6},
        {-7, 3, -9},
    };

    for (size_t i = 0; i < N(t); i++)
        cr_expect_eq(tm_floor(t[i].t, t[i].width), t[i].want, "floor(%lld, %lld) = %lld",
                     (long long)t[i].t, (long long)t[i].width,
                     (long long)tm_floor(t[i].t, t[i].width));
}

Test(tm, bucket_widths_are_a_minute_an_hour_a_day)
{
    cr_expect_eq(TM_MINUTE_MS, 60LL * 1000);
    cr_expect_eq(TM_HOUR_MS, 60LL * 60 * 1000);
    cr_expect_eq(TM_DAY_MS, 24LL * 60 * 60 * 1000);
    cr_expect_eq(TM_MAX_MS, 253402300799999LL); /* date -u -d 9999-12-31T23:59:59.999Z */
}

Test(tm, an_event_counts_in_its_minute_and_its_hour)
{
    cr_expect_eq(tm_minute_of(T0), 1795256100000LL); /* 2026-11-21T10:15:00Z */
    cr_expect_eq(tm_hour_of(T0), 1795255200000LL);   /* 2026-11-21T10:00:00Z */
    cr_expect_eq(tm_minute_of(1795256100000LL), 1795256100000LL);
    cr_expect_eq(tm_minute_of(1795256099999LL), 1795256040000LL);
    cr_expect_eq(tm_hour_of(-1), -3600000LL);
}

Test(tm, an_epoch_is_the_floor_of_wall_time_over_its_length)
{
    cr_expect_eq(tm_epoch(T0, 1000), 1795256130LL);
    cr_expect_eq(tm_epoch(T0, TM_MINUTE_MS), 29920935LL);
    cr_expect_eq(tm_epoch(59999, 60000), 0);
    cr_expect_eq(tm_epoch(60000, 60000), 1);
    cr_expect_eq(tm_epoch(-1, 60000), -1);
}

Test(tm, formats_rfc3339_with_milliseconds_and_z)
{
    static const struct {
        int64_t t;
        const char *want;
    } t[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {T0, "2026-11-21T10:15:30.123Z"},
        {951782400000LL, "2000-02-29T00:00:00.000Z"},
        {1798779599000LL, "2027-01-01T04:59:59.000Z"},
        {TM_MAX_MS, "9999-12-31T23:59:59.999Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
        {-86400000LL, "1969-12-31T00:00:00.000Z"},
    };
    char buf[TM_RFC3339_LEN];

    for (size_t i = 0; i < N(t); i++) {
        memset(buf, 'x', sizeof(buf));
        tm_format_rfc3339(t[i].t, buf);
        cr_expect_str_eq(buf, t[i].want, "format(%lld)", (long long)t[i].t);
    }
}

Test(tm, parse_of_format_gives_back_the_same_millisecond)
{
    char buf[TM_RFC3339_LEN];
    int64_t back;

    /* A prime stride visits every month, day, hour, minute and millisecond over the years. */
    for (int64_t t = 0; t <= TM_MAX_MS; t += 99991234567LL) {
        tm_format_rfc3339(t, buf);
        cr_assert_eq(tm_parse_rfc3339(buf, strlen(buf), &back), 0, "cannot parse '%s'", buf);
        cr_assert_eq(back, t, "'%s' parsed to %lld, want %lld", buf, (long long)back, (long long)t);
    }
    tm_format_rfc3339(TM_MAX_MS, buf);
    cr_assert_eq(tm_parse_rfc3339(buf, strlen(buf), &back), 0);
    cr_assert_eq(back, TM_MAX_MS);
}

Test(tm, format_of_parse_gives_back_canonical_text)
{
    static const char *const t[] = {
        "1970-01-01T00:00:00.000Z", "2026-11-21T10:15:30.123Z", "2024-02-29T23:59:59.999Z",
        "2026-12-31T23:59:59.000Z", "9999-12-31T23:59:59.999Z",
    };
    char buf[TM_RFC3339_LEN];
    int64_t ms;

    for (size_t i = 0; i < N(t); i++) {
        cr_assert_eq(tm_parse_rfc3339(t[i], strlen(t[i]), &ms), 0, "%s", t[i]);
        tm_format_rfc3339(ms, buf);
        cr_expect_str_eq(buf, t[i]);
    }
}

Test(tm, parses_rfc3339_by_length_and_leaves_output_alone_on_failure)
{
    int64_t ms = 42;
    const char *s = "2026-11-21T10:15:30.123Zjunk";

    cr_expect_eq(tm_parse_rfc3339(s, 24, &ms), 0);
    cr_expect_eq(ms, T0);
    ms = 42;
    cr_expect_eq(tm_parse_rfc3339(s, strlen(s), &ms), -1);
    cr_expect_eq(tm_parse_rfc3339(s, 23, &ms), -1);
    cr_expect_eq(tm_parse_rfc3339(s, 0, &ms), -1);
    cr_expect_eq(tm_parse_rfc3339("2026-02-30T00:00:00Z", 20, &ms), -1);
    cr_expect_eq(ms, 42);
}

Test(tm, parses_only_times_from_the_epoch_to_9999)
{
    static const struct {
        const char *s;
        int rc;
        int64_t want;
    } t[] = {
        {"1970-01-01T00:00:00Z", 0, 0},
        {"1969-12-31T23:59:59.999Z", -1, 42},
        {"1970-01-01T00:59:59.999+01:00", -1, 42},
        {"0000-01-01T00:00:00Z", -1, 42},
        {"9999-12-31T23:59:59.999Z", 0, TM_MAX_MS},
        {"9999-12-31T23:59:59.999-00:01", -1, 42},
    };

    for (size_t i = 0; i < N(t); i++) {
        int64_t ms = 42;
        cr_expect_eq(tm_parse_rfc3339(t[i].s, strlen(t[i].s), &ms), t[i].rc, "%s", t[i].s);
        cr_expect_eq(ms, t[i].want, "%s", t[i].s);
    }
}

Test(tm, parses_durations_with_units)
{
    static const struct {
        const char *s;
        int64_t want;
    } t[] = {
        {"200", 200},     {"200ms", 200},       {"5s", 5000},   {"10m", 600000},
        {"1h", 3600000},  {"1d", 86400000},     {"0", 0},       {"0s", 0},
        {"60000", 60000}, {"48h", 172800000LL}, {"007s", 7000}, {"1000ms", 1000},
    };
    int64_t ms;

    for (size_t i = 0; i < N(t); i++) {
        ms = -42;
        cr_expect_eq(tm_parse_duration(t[i].s, &ms), 0, "'%s' rejected", t[i].s);
        cr_expect_eq(ms, t[i].want, "'%s' = %lld", t[i].s, (long long)ms);
    }
}

Test(tm, rejects_what_is_not_a_duration)
{
    static const char *const t[] = {
        "",
        "-1",
        "5x",
        "1.5s",
        "s",
        "ms",
        "5 s",
        " 5",
        "5S",
        "5ms5",
        "5sm",
        "+5",
        "5Ms",
        "1e3",
        "0x10",
        "99999999999999999999", /* beyond int64 */
        "106751991168d",        /* fits, but not once in ms: INT64_MAX / 86400000 = 106751991167 */
        "2562047788016h",       /* INT64_MAX / 3600000 = 2562047788015 */
    };
    int64_t ms;

    for (size_t i = 0; i < N(t); i++) {
        ms = -42;
        cr_expect_eq(tm_parse_duration(t[i], &ms), -1, "'%s' accepted as %lld", t[i],
                     (long long)ms);
        cr_expect_eq(ms, -42, "'%s' changed the output", t[i]);
    }
    cr_expect_eq(tm_parse_duration("106751991167d", &ms), 0);
    cr_expect_eq(ms, 106751991167LL * 86400000LL);
}

Test(tm, clocks_are_in_milliseconds)
{
    int64_t a = tm_mono_ms(), b = tm_mono_ms();

    cr_expect_geq(b, a);
    /* 2020-01-01T00:00:00Z and 2100-01-01T00:00:00Z: a wall clock in ms, not s or us. */
    cr_expect_gt(tm_now_ms(), 1577836800000LL);
    cr_expect_lt(tm_now_ms(), 4102444800000LL);
}

Test(tm, parses_any_number_of_fraction_digits_truncating_to_the_millisecond)
{
    static const struct {
        const char *s;
        int64_t want;
    } t[] = {
        {"2026-01-01T00:00:00.1Z", 1767225600100LL},
        {"2026-01-01T00:00:00.123456789Z", 1767225600123LL},
        {"2026-01-01T00:00:00.1234567891Z", 1767225600123LL},
        {"2026-01-01T00:00:00.99999999999999999999Z", 1767225600999LL},
        {"2026-01-01T02:00:00.00099999999999+02:00", 1767225600000LL},
    };

    for (size_t i = 0; i < N(t); i++) {
        int64_t ms = 42;
        cr_expect_eq(tm_parse_rfc3339(t[i].s, strlen(t[i].s), &ms), 0, "%s", t[i].s);
        cr_expect_eq(ms, t[i].want, "%s: %lld", t[i].s, (long long)ms);
    }
}
