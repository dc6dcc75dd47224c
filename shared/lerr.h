/* lerr.h - error messages that say what failed.
 *
 * What can fail returns int (0 or -1) and fills the caller's struct lerr, as librdkafka fills
 * errstr. Messages follow git's habit: what failed first, subject in quotes, cause after a
 * colon, lowercase, no final period. */
#ifndef LAMBDA_LERR_H
#define LAMBDA_LERR_H

struct lerr {
    char msg[256];
};

/* Formats the message into e (which may be NULL) and returns -1, so that
 * `return lerr_set(e, ...)` reads like git's `return error(...)`. */
int lerr_set(struct lerr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
