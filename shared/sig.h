/* sig.h - how every lambda binary is asked to stop: SIGTERM or SIGINT.
 *
 * Each binary's main.c keeps the one flag, `static volatile sig_atomic_t stop_requested`, and
 * a handler that stores the signal's number in it (all a handler may do); sig_catch_stop()
 * installs that handler. Long loops poll the flag, as librdkafka's example polls its run flag;
 * without SA_RESTART a blocking wait returns early with EINTR so that the loop sees it soon.
 * Nothing here logs or fails: the signals and the handler are the caller's own. */
#ifndef LAMBDA_SIG_H
#define LAMBDA_SIG_H

#include <stdbool.h>

/* Makes sig call on_signal. With is_restarting, a read or write the signal interrupts goes on
 * (SA_RESTART, as signal(2) does); without, it fails with EINTR. */
void sig_catch(int sig, void (*on_signal)(int sig), bool is_restarting);

/* sig_catch() for SIGTERM and SIGINT. */
void sig_catch_stop(void (*on_signal)(int sig), bool is_restarting);

#endif
