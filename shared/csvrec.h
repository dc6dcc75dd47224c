/* csvrec.h - one CSV record split into fields, the one CSV reader of the project.
 *
 * lambda-batch import (order lines) and lambda-serve's dimension file both read CSV through
 * this module, which wraps Debian's libcsv in strict mode: a quote inside an unquoted field,
 * text after a closing quote or a quote left open is an error, never a guess. Fields are
 * NUL-terminated copies owned by the reader and valid until the next csvrec_split() or
 * csvrec_release(); an empty field is "" (the caller decides what absent means). A record is
 * one line here: callers split their input at newlines, so a quoted newline is an error too
 * ("unterminated quote"). */
#ifndef LAMBDA_CSVREC_H
#define LAMBDA_CSVREC_H

#include <stddef.h>

#include <csv.h>

#include "lerr.h"

#define CSVREC_FIELDS_MAX 64

struct csvrec {
    struct csv_parser p;
    char *buf; /* every field of the record, each NUL-terminated */
    size_t len, cap;
    size_t off[CSVREC_FIELDS_MAX]; /* where field i starts in buf */
    int n;                         /* fields of the last record */
    int is_too_wide;               /* the record had more than CSVREC_FIELDS_MAX fields */
    int is_oom;
};

/* Prepares r; -1 with e set when out of memory. csvrec_release() frees what it holds. */
int csvrec_init(struct csvrec *r, struct lerr *e);
void csvrec_release(struct csvrec *r);

/* Splits the record s[0..len) (no line terminator) into fields. Returns the number of fields
 * (at least 1: an empty line is one empty field), or -1 with e saying why in a few words
 * ("unterminated quote", "text after a closing quote", "more than 64 fields"). */
int csvrec_split(struct csvrec *r, const char *s, size_t len, struct lerr *e);

/* Field i (0 <= i < the count csvrec_split returned). */
const char *csvrec_field(const struct csvrec *r, int i);

#endif
