/* tm.h - time as int64 epoch milliseconds (UTC): clocks, buckets, epochs, RFC 3339.
 *
 * Every time in lambda-stack is an int64_t count of milliseconds since 1970-01-01T00:00:00Z;
 * names carry the unit (_ms). Buckets are floor divisions, so a bucket's start is the largest
 * multiple of its width not after the time. Nothing here allocates. */
#ifndef LAMBDA_TM_H
#define LAMBDA_TM_H

#include <stddef.h>
#include <stdint.h>

#define TM_MINUTE_MS INT64_C(60000)
#define TM_HOUR_MS   INT64_C(3600000)
#define TM_DAY_MS    INT64_C(86400000)
/* The latest time an event may carry: 9999-12-31T23:59:59.999Z. */
#define TM_MAX_MS INT64_C(253402300799999)
/* "2026-11-21T10:15:30.123Z" plus its NUL. */
#define TM_RFC3339_LEN 25

/* Wall clock and a monotonic clock, both in milliseconds. */
int64_t tm_now_ms(void);
int64_t tm_mono_ms(void);

/* The start of the bucket of width_ms that holds t_ms (floor, also for negative times). */
int64_t tm_floor(int64_t t_ms, int64_t width_ms);

/* The epoch that holds wall-clock time wall_ms: floor(wall_ms / epoch_ms), epoch_ms > 0.
 * Batch cuts and the speed layer's intervals both number epochs this way (DESIGN.md
 * section 3). */
int64_t tm_epoch(int64_t wall_ms, int64_t epoch_ms);

/* The minute and the hour an event at event_ms counts in: the one mapping of an event to its
 * buckets, for batch's views and speed's deltas alike (DESIGN.md section 2). */
int64_t tm_minute_of(int64_t event_ms);
int64_t tm_hour_of(int64_t event_ms);

/* Parses RFC 3339 ("2026-11-21T10:15:30.123Z", "...T12:15:30+02:00", one or more fraction
 * digits however many, 'T' or 't', 'Z' or 'z') into UTC ms, truncating below the millisecond
 * (never rounding). Returns 0, or -1 when
 * s[0..len) is not such a time or lies outside 0..TM_MAX_MS; *out is untouched then. */
int tm_parse_rfc3339(const char *s, size_t len, int64_t *out);

/* Writes t_ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out (TM_RFC3339_LEN bytes). */
void tm_format_rfc3339(int64_t t_ms, char out[TM_RFC3339_LEN]);

/* Parses a duration: a bare integer is milliseconds, or one number with a unit among
 * ms, s, m, h, d ("200ms", "5s", "10m"). Returns 0, or -1 when s is not one (or negative). */
int tm_parse_duration(const char *s, int64_t *out_ms);

#endif
