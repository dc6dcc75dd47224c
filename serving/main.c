/* lambda-serve - the serving layer (DESIGN.md sections 3 and 5). */
#include <stdio.h>

#include "cfg.h"
#include "log.h"

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"port", CFG_INT, "8080", "TCP port (0: any free port, logged as listening port=N)"},
    {"bind", CFG_STR, "127.0.0.1", "address to listen on"},
    {"threads", CFG_INT, "2", "worker threads"},
    {"allowed_lateness", CFG_MS, "10m",
     "a minute is final once the watermark passes its end + this"},
    {NULL, 0, NULL, NULL},
};

int main(int argc, char **argv)
{
    struct cfg c;
    struct lerr e = {{0}};

    if (cfg_load(&c, keys, argc, argv, &e) != 0) {
        fprintf(stderr, "lambda-serve: %s\n", e.msg);
        cfg_release(&c);
        return 2;
    }
    if (c.want_help) {
        cfg_print_help(&c, "usage: lambda-serve [--port 8080] [--bind 127.0.0.1]");
        cfg_release(&c);
        return 0;
    }
    fprintf(stderr, "lambda-serve: not built yet\n");
    cfg_release(&c);
    return 2;
}
