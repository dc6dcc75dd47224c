/* csvrec.c - a CSV record split into fields through libcsv (see csvrec.h). */
#include "csvrec.h"

#include <stdlib.h>
#include <string.h>

static int put(struct csvrec *r, const void *s, size_t len)
{
    if (r->len + len + 1 > r->cap) {
        size_t cap = (r->len + len + 1) * 2;
        char *p = realloc(r->buf, cap);
        if (!p)
            return -1;
        r->buf = p;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, s, len);
    r->len += len;
    r->buf[r->len++] = '\0';
    return 0;
}

static void on_field(void *s, size_t len, void *arg)
{
    struct csvrec *r = arg;

    if (r->n == CSVREC_FIELDS_MAX) {
        r->is_too_wide = 1;
        return;
    }
    r->off[r->n] = r->len;
    if (put(r, s ? s : "", s ? len : 0) != 0) {
        r->is_oom = 1;
        return;
    }
    r->n++;
}

static void on_record(int c, void *arg)
{
    (void)c;
    (void)arg;
}

/* Blanks are data: " 100" is not the number 100 (libcsv trims them by default). */
static int no_space(unsigned char c)
{
    (void)c;
    return 0;
}

static int start(struct csvrec *r)
{
    if (csv_init(&r->p, CSV_STRICT | CSV_STRICT_FINI) != 0)
        return -1;
    csv_set_space_func(&r->p, no_space);
    return 0;
}

int csvrec_init(struct csvrec *r, struct lerr *e)
{
    memset(r, 0, sizeof(*r));
    if (start(r) != 0)
        return lerr_set(e, "cannot start a CSV reader: out of memory");
    return 0;
}

void csvrec_release(struct csvrec *r)
{
    csv_free(&r->p);
    free(r->buf);
    r->buf = NULL;
}

int csvrec_split(struct csvrec *r, const char *s, size_t len, struct lerr *e)
{
    r->len = 0;
    r->n = 0;
    r->is_too_wide = r->is_oom = 0;
    if (len == 0) {
        on_field(NULL, 0, r); /* libcsv sees no record in an empty line; we see one field */
        return r->is_oom ? lerr_set(e, "out of memory") : 1;
    }
    if (csv_parse(&r->p, s, len, on_field, on_record, r) != len ||
        csv_fini(&r->p, on_field, on_record, r) != 0) {
        int err = csv_error(&r->p);
        /* A parser that failed keeps its state: start a new one for the next record. */
        csv_free(&r->p);
        if (start(r) != 0 || err == CSV_ENOMEM)
            return lerr_set(e, "out of memory");
        /* libcsv's strict mode says "error parsing data" for both; ours tells them apart. */
        return lerr_set(e, "%s", memchr(s, '"', len) ? "bad quoting" : "malformed record");
    }
    if (r->is_oom)
        return lerr_set(e, "out of memory");
    if (r->is_too_wide)
        return lerr_set(e, "more than %d fields", CSVREC_FIELDS_MAX);
    return r->n;
}

const char *csvrec_field(const struct csvrec *r, int i)
{
    return r->buf + r->off[i];
}
