/* replay.c - runs a harness over files and directories of inputs, once each, without
 * libFuzzer: `replay_<name> tests/fuzz/<name>` is how make test replays a corpus. Prints how
 * many inputs ran; exits non-zero when a path cannot be read (a harness that finds a broken
 * rule aborts on its own). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;

    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: cannot read '%s': %s\n", path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    /* A copy of exactly n bytes, so a read past the input shows under the sanitizers. */
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
        fprintf(stderr, "replay: cannot read '%s'\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

static int compare(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir, in name order; adds to *ran. */
static int run_dir(const char *dir, long *ran)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL, path[4096];
    size_t n = 0, cap = 0;
    int rc = 0;

    if (!d) {
        fprintf(stderr, "replay: cannot open '%s': %s\n", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(*names));
            if (!names)
                abort();
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), compare);
    for (size_t i = 0; i < n; i++) {
        struct stat sb;

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (rc == 0 && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            rc = run_file(path);
            ++*ran;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    long ran = 0;
    int rc = 0;

    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc && rc == 0; i++) {
        struct stat sb;

        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: no such input '%s'\n", argv[i]);
            rc = -1;
        } else if (S_ISDIR(sb.st_mode)) {
            rc = run_dir(argv[i], &ran);
        } else {
            rc = run_file(argv[i]);
            ran++;
        }
    }
    printf("replay %s: %ld inputs%s\n", argc > 1 ? argv[1] : "", ran, rc == 0 ? "" : ", FAILED");
    return rc == 0 ? 0 : 1;
}
