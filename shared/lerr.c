/* lerr.c - filling a struct lerr (see lerr.h). */
#include "lerr.h"

#include <stdarg.h>
#include <stdio.h>

int lerr_set(struct lerr *e, const char *fmt, ...)
{
    va_list ap;

    if (!e)
        return -1;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}
