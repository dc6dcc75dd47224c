/* powerloss.h - the test-only SQLite VFS that simulates a power loss (vfs.c), and the rollback
 * that makes it real (undo_apply, in it_powerloss.c).
 *
 * vfs.c is built as a shared object and preloaded (LD_PRELOAD) into the real binaries. It
 * interposes sqlite3_open_v2() to open every database through the "powerloss" VFS, a shim over
 * SQLite's default VFS, registered on the first open (never from a constructor: that would
 * initialise SQLite before lambda-speed's SQLITE_CONFIG_PAGECACHE). The shim writes through and,
 * before each write or truncation of a file, appends the bytes it replaces to an undo log,
 * <file>-undo, so the log is on disk before the change it undoes; an xSync that completes empties
 * the log (what was written is now durable). The log survives a SIGKILL of the writer because it
 * is an ordinary file: the kernel keeps what write() returned.
 *
 * Environment of a preloaded process:
 *   POWERLOSS_MARK  path of the power-loss mark (required: without it the shim only passes through)
 *   POWERLOSS_AT    N > 0: the N-th xSync of this process does not happen; the shim writes the
 *                   mark ("<role> <n> <file>") and SIGKILLs its own process
 *   POWERLOSS_ROLE  a name for the process in the mark and the log
 *   POWERLOSS_LOG   append "<role> <n> <file>" per completed xSync (a dry run counts the points)
 * Once the mark exists, any preloaded process dies by SIGKILL at its next write, truncation or
 * sync, before doing it: no layer changes a file after the power went out. The test SIGKILLs
 * whatever is still alive, then undo_apply() rolls every file back to its last synced state and
 * removes the -shm files.
 *
 * Undo log records (host byte order): 'S' u64 size - the file's size when it was last synced
 * (first record); 'W' u64 offset u64 len u64 old_len, then old_len bytes - a write (or a
 * truncation) of len bytes at offset, of which the first old_len existed before. */
#ifndef LAMBDA_POWERLOSS_H
#define LAMBDA_POWERLOSS_H

#include <stdbool.h>

/* Rolls back every file of dir that has an undo log, then deletes the logs and the -shm files.
 * torn: the file the mark names (its sync was cut short) keeps its unsynced writes except
 * the last, of which only the first half reached the disk (a torn page); every other file is
 * rolled back whole. Returns the number of files rolled back, or -1 on an I/O error (errno). */
int undo_apply(const char *dir, const char *mark_path, bool torn);

#endif
