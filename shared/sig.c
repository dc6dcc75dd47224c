/* sig.c - one way to install the stop handler of a binary (sig.h). */
#include "sig.h"

#include <signal.h>
#include <string.h>

void sig_catch(int sig, void (*on_signal)(int sig), bool is_restarting)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = is_restarting ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

void sig_catch_stop(void (*on_signal)(int sig), bool is_restarting)
{
    sig_catch(SIGTERM, on_signal, is_restarting);
    sig_catch(SIGINT, on_signal, is_restarting);
}
