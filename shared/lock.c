/* lock.c - the data directory's lock files, taken with flock (see lock.h). */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
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
