/* lock.c - the data directory's lock files, taken with flock (see lock.h). */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

int lock_is_held(const char *data_dir, const char *name, bool *held, struct lerr *e)
{
    char path[PATH_MAX], line[256], want[64];
    struct stat sb;
    FILE *f;

    *held = false;
    snprintf(path, sizeof(path), "%s/%s", data_dir, name);
    if (stat(path, &sb) != 0)
        return 0;
    /* A line reads "1: FLOCK  ADVISORY  WRITE 8866 fe:00:10952823 0 EOF"; a waiter's line
     * has "->" after the number and holds nothing. */
    snprintf(want, sizeof(want), " %02x:%02x:%lu ", major(sb.st_dev), minor(sb.st_dev),
             (unsigned long)sb.st_ino);
    if (!(f = fopen("/proc/locks", "re")))
        return lerr_set(e, "cannot read '/proc/locks': %s", strerror(errno));
    while (!*held && fgets(line, sizeof(line), f))
        *held = strstr(line, " FLOCK ") && !strstr(line, "->") && strstr(line, want);
    fclose(f);
    return 0;
}
