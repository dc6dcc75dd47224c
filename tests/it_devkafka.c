#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itlib.h"

Test(devkafka, starts_and_answers_metadata, .timeout = 30)
{
    struct it_proc dk;
    char dir[512], bs[256];
    char *argv[] = {"/usr/bin/kcat", "-L", "-b", bs, "-t", "orders", NULL};

    it_tmpdir("smoke", dir);
    it_devkafka(&dk, dir, 3, bs);
    cr_assert_eq(it_run(dir, "kcat", argv, NULL, 10000), 0);
    char path[600];
    snprintf(path, sizeof(path), "%s/kcat.out", dir);
    char *s = it_read_file(path, NULL);
    cr_assert(strstr(s, "with 3 partitions"), "kcat said: %s", s);
    free(s);
    it_stop(&dk);
}
