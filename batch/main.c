/* lambda-batch - the batch layer (DESIGN.md sections 3 to 5): run | import | status. */
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "log.h"

static const struct cfg_key keys[] = {
    CFG_SHARED,
    {"keep_versions", CFG_INT, "3", "published versions kept in batch.db"},
    {"minute_series_hours", CFG_INT, "48", "hours of minute series kept per version"},
    {"json", CFG_BOOL, "false", "status: print JSON"},
    {NULL, 0, NULL, NULL},
};

int main(int argc, char **argv)
{
    struct cfg c;
    struct lerr e = {{0}};

    if (cfg_load(&c, keys, argc, argv, &e) != 0) {
        fprintf(stderr, "lambda-batch: %s\n", e.msg);
        cfg_release(&c);
        return 2;
    }
    if (c.want_help) {
        cfg_print_help(&c, "usage: lambda-batch run | import FILE... | status [--json]");
        cfg_release(&c);
        return 0;
    }
    fprintf(stderr, "lambda-batch: not built yet\n");
    cfg_release(&c);
    return 2;
}
