/* log.h - one line per thing that happened, on stderr.
 *
 *     ts=2026-11-21T10:15:30.123Z level=info mod=speed msg=checkpoint_committed epoch=29463120
 *
 * Each line is built in a stack buffer and written with one write(2), so lines from threads
 * and processes sharing stderr never interleave. The level is a global set once at start. */
#ifndef LAMBDA_LOG_H
#define LAMBDA_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level written; returns -1 for a name that is not a level. */
int log_set_level(const char *name);

/* fmt starts with the event as one snake_case word, then key=value pairs. */
void log_at(enum log_level lv, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...) log_at(LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_at(LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_at(LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_at(LOG_ERROR, mod, __VA_ARGS__)

#endif
