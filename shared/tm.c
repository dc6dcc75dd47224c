/* tm.c - clocks, buckets, epochs, durations and RFC 3339 (see tm.h). */
#include "tm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tm_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t tm_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t tm_floor(int64_t t_ms, int64_t width_ms)
{
    int64_t q = t_ms / width_ms;

    if (t_ms % width_ms != 0 && t_ms < 0)
        q--;
    return q * width_ms;
}

int64_t tm_epoch(int64_t wall_ms, int64_t epoch_ms)
{
    return tm_floor(wall_ms, epoch_ms) / epoch_ms;
}

int64_t tm_minute_of(int64_t event_ms)
{
    return tm_floor(event_ms, TM_MINUTE_MS);
}

int64_t tm_hour_of(int64_t event_ms)
{
    return tm_floor(event_ms, TM_HOUR_MS);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int digits(const char *s, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int y, int m)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 ? 28 + leap : mdays[m - 1];
}

int tm_parse_rfc3339(const char *s, size_t len, int64_t *out)
{
    int y, mo, d, h, mi, sec, frac_ms = 0;
    size_t i = 19;
    int64_t off_min = 0, t;

    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return -1;
    y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
        sec > 60 || d > days_in_month(y, mo))
        return -1;
    /* RFC 3339's time-secfrac is one or more digits, however many: those past the third are
     * below the millisecond and dropped (truncated, never rounded into the next second). */
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (i - start < 3)
                frac_ms = frac_ms * 10 + (s[i] - '0');
            i++;
        }
        if (i == start)
            return -1;
        for (size_t k = i - start; k < 3; k++)
            frac_ms *= 10;
    }
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        off_min = (s[i] == '-' ? -1 : 1) * (int64_t)(oh * 60 + om);
        i += 6;
    } else {
        return -1;
    }
    if (i != len)
        return -1;
    t = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi - off_min) * 60 + sec;
    t = t * 1000 + frac_ms;
    if (t < 0 || t > TM_MAX_MS)
        return -1;
    *out = t;
    return 0;
}

void tm_format_rfc3339(int64_t t_ms, char out[TM_RFC3339_LEN])
{
    int64_t day = tm_floor(t_ms, TM_DAY_MS), in_day = t_ms - day;
    char buf[64];
    int y, m, d;

    civil_from_days(day / TM_DAY_MS, &y, &m, &d);
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y % 10000, m, d,
             (int)(in_day / TM_HOUR_MS), (int)(in_day / TM_MINUTE_MS % 60),
             (int)(in_day / 1000 % 60), (int)(in_day % 1000));
    memcpy(out, buf, TM_RFC3339_LEN - 1);
    out[TM_RFC3339_LEN - 1] = '\0';
}

int tm_parse_duration(const char *s, int64_t *out_ms)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"", 1},           {"ms", 1},       {"s", 1000}, {"m", TM_MINUTE_MS},
                 {"h", TM_HOUR_MS}, {"d", TM_DAY_MS}};
    char *end;
    long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v > INT64_MAX / units[i].ms)
                return -1;
            *out_ms = v * units[i].ms;
            return 0;
        }
    }
    return -1;
}
