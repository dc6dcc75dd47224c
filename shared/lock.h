/* lock.h - the data directory's lock files (flock), held for a process's life or a run.
 *
 * data_dir/speed.lock: held by lambda-speed for its whole life; lambda-batch takes it without
 * waiting to learn that no speed layer runs (DESIGN.md section 3). data_dir/batch.lock: one
 * batch run at a time. The kernel drops a lock when its holder dies, even by SIGKILL. */
#ifndef LAMBDA_LOCK_H
#define LAMBDA_LOCK_H

#include <stdbool.h>

#include "lerr.h"

/* Tries to take data_dir/name without waiting. Returns 1 and the held fd in *fd, 0 when
 * another process holds it (*fd = -1), or -1 when the file cannot be opened. */
int lock_try(const char *data_dir, const char *name, int *fd, struct lerr *e);

/* Whether some process holds data_dir/name, found without taking it (a probe that took it,
 * even for an instant, could make a lambda-speed starting then exit): the kernel's list of
 * flock locks in /proc/locks, matched by the file's device and inode. 1 held, 0 not (or the
 * file does not exist), -1 when /proc/locks cannot be read. */
int lock_held(const char *data_dir, const char *name, struct lerr *e);

/* Drops a lock taken by lock_try(); -1 is a no-op. */
void lock_release(int fd);

#endif
