/* lock.c - the data directory's lock files, taken with flock (see lock.h). */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int lock_try(const char *data_dir, const char *name, int *fd, struct lerr *e)
{
    char path[PATH_MAX];
    int f;

    *fd = -1;
    snprintf(path, sizeof(path), "%s/%s", data_dir, name);
    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0)
        return lerr_set(e, "cannot open lock '%s': %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        close(f);
        if (err == EWOULDBLOCK)
            return 0;
        return lerr_set(e, "cannot lock '%s': %s", path, strerror(err));
    }
    *fd = f;
    return 1;
}

void lock_release(int fd)
{
    if (fd >= 0)
        close(fd); /* closing drops the flock */
}

/* One line of /proc/locks: "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter's line
 * ("1: -> FLOCK ...") is not a holder. */
static bool holds(const char *line, unsigned maj, unsigned min, unsigned long ino)
{
    char kind[16], mode[16], access_[16];
    unsigned a, b;
    unsigned long i;
    long pid;

    if (strstr(line, "->"))
        return false;
    if (sscanf(line, "%*d: %15s %15s %15s %ld %x:%x:%lu", kind, mode, access_, &pid, &a, &b, &i) !=
        7)
        return false;
    return !strcmp(kind, "FLOCK") && a == maj && b == min && i == ino;
}

int lock_held(const char *data_dir, const char *name, struct lerr *e)
{
    char path[PATH_MAX], line[256];
    struct stat st;
    FILE *f;
    int held = 0;

    snprintf(path, sizeof(path), "%s/%s", data_dir, name);
    if (stat(path, &st) != 0)
        return 0;
    if (!(f = fopen("/proc/locks", "re")))
        return lerr_set(e, "cannot read '/proc/locks': %s", strerror(errno));
    while (!held && fgets(line, sizeof(line), f))
        held = holds(line, major(st.st_dev), minor(st.st_dev), (unsigned long)st.st_ino);
    fclose(f);
    return held;
}
