/* log.c - the log line format and level, one write(2) per line (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tm.h"

static enum log_level min_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_set_level(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            min_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_at(enum log_level lv, const char *mod, const char *fmt, ...)
{
    char line[2048], ts[TM_RFC3339_LEN];
    va_list ap;
    int n;

    if (lv < min_level)
        return;
    tm_format_rfc3339(tm_now_ms(), ts);
    n = snprintf(line, sizeof(line), "ts=%s level=%s mod=%s msg=", ts, level_names[lv], mod);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return; /* nowhere left to say it */
}
