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

/* Whether some process holds data_dir/name, found without taking it (a reader that took it,
 * even for a moment, would make lambda-batch take itself for the only user): the kernel's
 * table of locks (/proc/locks) lists the holder of every flock by device and inode. *held is
 * false when the file does not exist. -1 when the table cannot be read. */
int lock_is_held(const char *data_dir, const char *name, bool *held, struct lerr *e);

/* Drops a lock taken by lock_try(); -1 is a no-op. */
void lock_release(int fd);

#endif
