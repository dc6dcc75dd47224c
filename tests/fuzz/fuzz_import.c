/* fuzz_import.c - lambda-batch import's line reader (batch_import_parse_line, batch/import.c) on
 * arbitrary files.
 *
 * Proves, for every input libFuzzer reaches: each line of a file, split as batch_import() splits
 * it (a UTF-8 byte order mark and the CSV header recognised on line 1, "\r\n" ends, blank lines
 * skipped), is read as NDJSON or CSV (quoted fields included) without a crash or an
 * out-of-bounds access (the CSV record through shared/csvrec, libcsv in strict mode), and every
 * accepted line is a well-formed order (ev.h's promises). It cannot prove the import's
 * transactions, resume and duplicate rules (it_batch tests those against a real master.db).
 *
 * Input: the file's content. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/batch.h"
#include "csvrec.h"
#include "ev.h"
#include "fuzz.h"
#include "tm.h"

static const char csv_header[] = "order_id,merchant_id,amount_cents,event_time";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return 0;
}

static void check_ok(const struct ev_order *o)
{
    size_t m = strnlen(o->merchant_id, sizeof(o->merchant_id)),
           n = strnlen(o->order_id, sizeof(o->order_id));

    FUZZ_CHECK(m >= 1 && m <= EV_ID_MAX && ev_merchant_id_valid(o->merchant_id, m),
               "merchant_id of %zu bytes", m);
    FUZZ_CHECK(n >= 1 && n <= EV_ID_MAX, "order_id of %zu bytes", n);
    FUZZ_CHECK(o->amount_cents >= 0 && o->amount_cents <= EV_AMOUNT_MAX, "amount %lld",
               (long long)o->amount_cents);
    FUZZ_CHECK(o->event_ms >= 0 && o->event_ms <= TM_MAX_MS, "event_ms %lld",
               (long long)o->event_ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A fixed "now", so a replay decides as the run that found the input did. */
    const int64_t now_ms = 1795255200000LL;
    struct ev_rules rules = {.max_future_skew_ms = 5 * TM_MINUTE_MS};
    const char *p = (const char *)data, *end = p + size;
    int64_t line_no = 0;
    bool is_csv = false;
    struct csvrec csv;
    struct lerr e;

    if (csvrec_init(&csv, &e) != 0)
        abort();

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p), blank = 0;
        const char *s = p;
        char *line;
        struct ev_order o;
        enum ev_reason rs;

        p = nl ? nl + 1 : end;
        line_no++;
        if (len > 0 && s[len - 1] == '\r')
            len--;
        if (line_no == 1) {
            if (len >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
                s += 3, len -= 3;
            is_csv = len == sizeof(csv_header) - 1 && !memcmp(s, csv_header, len);
            if (is_csv)
                continue;
        }
        while (blank < len && (s[blank] == ' ' || s[blank] == '\t'))
            blank++;
        if (blank == len)
            continue;
        /* The line in an allocation of its exact size. */
        line = malloc(len ? len : 1);
        if (!line)
            abort();
        memcpy(line, s, len);
        rs = batch_import_parse_line(&rules, &csv, line, len, is_csv, now_ms, &o);
        FUZZ_CHECK(rs >= EV_OK && rs < EV_REASON_COUNT, "reason %d", (int)rs);
        if (rs == EV_OK)
            check_ok(&o);
        free(line);
    }
    csvrec_release(&csv);
    return 0;
}
