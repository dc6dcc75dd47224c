/* vfs.c - the "powerloss" SQLite VFS, preloaded into the real binaries (see powerloss.h).
 *
 * Proves nothing on its own; it lets it_powerloss cut the power at any sync point of any layer.
 * What it cannot model: reordering of writes between syncs inside one file (every unsynced
 * write of a file is lost together, or in tear mode all but the last survive), directory
 * entries (a file created or renamed since the last sync survives; SQLite's WAL mode creates
 * its -wal once and keeps it), and writes that do not go through SQLite (lock files). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "powerloss.h"

int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs);

struct pl_file {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, allocated right after this struct */
    char *undo_path;    /* NULL for files without a name (temporary) */
    int undo_fd;        /* -1 until the first write */
};

static sqlite3_vfs *real_vfs;
static sqlite3_vfs pl_vfs;
static sqlite3_io_methods pl_io;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const char *mark, *role, *sync_log;
static long at, syncs;

/* The power is out: die before touching anything. */
static void check_power(void)
{
    if (mark && access(mark, F_OK) == 0)
        kill(getpid(), SIGKILL);
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n, len -= (size_t)n;
    }
    return 0;
}

/* Opens the undo log at the first change; a new log starts with the size the file has now (what
 * an earlier process left unsynced has its own records in the existing log). */
static int undo_open(struct pl_file *f)
{
    sqlite3_int64 size = 0;
    char rec[9];
    uint64_t u;

    if (f->undo_fd >= 0 || !f->undo_path)
        return 0;
    f->undo_fd = open(f->undo_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (f->undo_fd >= 0)
        return 0;
    if (f->real->pMethods->xFileSize(f->real, &size) != SQLITE_OK)
        return -1;
    f->undo_fd = open(f->undo_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (f->undo_fd < 0)
        return -1;
    rec[0] = 'S';
    u = (uint64_t)size;
    memcpy(rec + 1, &u, 8);
    return write_all(f->undo_fd, rec, sizeof(rec));
}

/* Saves what [off, off + len) holds now, before it is overwritten (or cut off). */
static int undo_save(struct pl_file *f, sqlite3_int64 off, sqlite3_int64 len)
{
    sqlite3_int64 size = 0, old_len;
    char head[25], *old = NULL;
    uint64_t u[3];
    int rc = -1;

    if (!f->undo_path)
        return 0;
    if (undo_open(f) != 0 || f->real->pMethods->xFileSize(f->real, &size) != SQLITE_OK)
        return -1;
    old_len = off >= size ? 0 : (off + len <= size ? len : size - off);
    if (old_len > 0) {
        if (!(old = malloc((size_t)old_len)))
            return -1;
        if (f->real->pMethods->xRead(f->real, old, (int)old_len, off) != SQLITE_OK)
            goto out;
    }
    head[0] = 'W';
    u[0] = (uint64_t)off, u[1] = (uint64_t)len, u[2] = (uint64_t)old_len;
    memcpy(head + 1, u, sizeof(u));
    /* One write per record, so a record is whole or absent. */
    {
        char *rec = malloc(sizeof(head) + (size_t)old_len);
        if (!rec)
            goto out;
        memcpy(rec, head, sizeof(head));
        if (old_len > 0)
            memcpy(rec + sizeof(head), old, (size_t)old_len);
        rc = write_all(f->undo_fd, rec, sizeof(head) + (size_t)old_len);
        free(rec);
    }
out:
    free(old);
    return rc;
}

static int pl_close(sqlite3_file *pf)
{
    struct pl_file *f = (struct pl_file *)pf;
    int rc = f->real->pMethods ? f->real->pMethods->xClose(f->real) : SQLITE_OK;

    if (f->undo_fd >= 0)
        close(f->undo_fd);
    free(f->undo_path);
    return rc;
}

static int pl_read(sqlite3_file *pf, void *buf, int n, sqlite3_int64 off)
{
    struct pl_file *f = (struct pl_file *)pf;

    return f->real->pMethods->xRead(f->real, buf, n, off);
}

static int pl_write(sqlite3_file *pf, const void *buf, int n, sqlite3_int64 off)
{
    struct pl_file *f = (struct pl_file *)pf;

    check_power();
    if (undo_save(f, off, n) != 0)
        return SQLITE_IOERR_WRITE;
    return f->real->pMethods->xWrite(f->real, buf, n, off);
}

static int pl_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
    struct pl_file *f = (struct pl_file *)pf;
    sqlite3_int64 cur = 0;

    check_power();
    if (f->real->pMethods->xFileSize(f->real, &cur) != SQLITE_OK)
        return SQLITE_IOERR_TRUNCATE;
    if (cur > size && undo_save(f, size, cur - size) != 0)
        return SQLITE_IOERR_TRUNCATE;
    return f->real->pMethods->xTruncate(f->real, size);
}

static int pl_sync(sqlite3_file *pf, int flags)
{
    struct pl_file *f = (struct pl_file *)pf;
    const char *name = f->undo_path ? f->undo_path : "(temp)";
    sqlite3_int64 size = 0;
    long n;
    int rc;

    check_power();
    pthread_mutex_lock(&mu);
    n = ++syncs;
    pthread_mutex_unlock(&mu);
    if (at > 0 && n == at) {
        /* The power goes out instead of this sync: say where, then die with everyone. */
        char line[1200];
        int fd = open(mark, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int len = snprintf(line, sizeof(line), "%s %ld %.*s\n", role, n,
                           (int)(strlen(name) - (f->undo_path ? 5 : 0)), name);

        if (fd >= 0) {
            write_all(fd, line, (size_t)len);
            close(fd);
        }
        kill(getpid(), SIGKILL);
    }
    if ((rc = f->real->pMethods->xSync(f->real, flags)) != SQLITE_OK)
        return rc;
    /* Durable now: the log starts again from this size. */
    if (f->undo_fd >= 0 && f->real->pMethods->xFileSize(f->real, &size) == SQLITE_OK) {
        char rec[9];
        uint64_t u = (uint64_t)size;

        rec[0] = 'S';
        memcpy(rec + 1, &u, 8);
        if (ftruncate(f->undo_fd, 0) != 0 || write_all(f->undo_fd, rec, sizeof(rec)) != 0)
            return SQLITE_IOERR_FSYNC;
    }
    if (sync_log) {
        int fd = open(sync_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        char line[1200];
        int len = snprintf(line, sizeof(line), "%s %ld %.*s\n", role, n,
                           (int)(strlen(name) - (f->undo_path ? 5 : 0)), name);

        if (fd >= 0) {
            write_all(fd, line, (size_t)len);
            close(fd);
        }
    }
    return SQLITE_OK;
}

static int pl_file_size(sqlite3_file *pf, sqlite3_int64 *size)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xFileSize(f->real, size);
}
static int pl_lock(sqlite3_file *pf, int l)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xLock(f->real, l);
}
static int pl_unlock(sqlite3_file *pf, int l)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xUnlock(f->real, l);
}
static int pl_check_reserved(sqlite3_file *pf, int *out)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}
static int pl_file_control(sqlite3_file *pf, int op, void *arg)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}
static int pl_sector_size(sqlite3_file *pf)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xSectorSize(f->real);
}
static int pl_device_chars(sqlite3_file *pf)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}
static int pl_shm_map(sqlite3_file *pf, int pg, int pgsz, int extend, void volatile **pp)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
}
static int pl_shm_lock(sqlite3_file *pf, int offset, int n, int flags)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}
static void pl_shm_barrier(sqlite3_file *pf)
{
    struct pl_file *f = (struct pl_file *)pf;
    f->real->pMethods->xShmBarrier(f->real);
}
static int pl_shm_unmap(sqlite3_file *pf, int del)
{
    struct pl_file *f = (struct pl_file *)pf;
    return f->real->pMethods->xShmUnmap(f->real, del);
}
/* No memory-mapped I/O through the shim: every read is an xRead (SQLite falls back). */
static int pl_fetch(sqlite3_file *pf, sqlite3_int64 off, int n, void **pp)
{
    (void)pf, (void)off, (void)n;
    *pp = NULL;
    return SQLITE_OK;
}
static int pl_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *p)
{
    (void)pf, (void)off, (void)p;
    return SQLITE_OK;
}

static int pl_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags)
{
    struct pl_file *f = (struct pl_file *)pf;
    int rc;

    (void)vfs;
    memset(f, 0, sizeof(*f));
    f->undo_fd = -1;
    f->real = (sqlite3_file *)(f + 1);
    rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        f->base.pMethods = NULL;
        return rc;
    }
    if (name && !(flags & (SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TEMP_JOURNAL |
                           SQLITE_OPEN_TRANSIENT_DB | SQLITE_OPEN_SUBJOURNAL))) {
        size_t n = strlen(name);
        if ((f->undo_path = malloc(n + 6)))
            memcpy(f->undo_path, name, n), memcpy(f->undo_path + n, "-undo", 6);
    }
    f->base.pMethods = &pl_io;
    return SQLITE_OK;
}

/* A deleted file is gone for good (SQLite deletes a -wal only once the database is synced). */
static int pl_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    char undo[4096];

    (void)vfs;
    check_power();
    snprintf(undo, sizeof(undo), "%s-undo", name);
    unlink(undo);
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static void setup(void)
{
    const char *v;

    mark = getenv("POWERLOSS_MARK");
    role = getenv("POWERLOSS_ROLE") ? getenv("POWERLOSS_ROLE") : "?";
    sync_log = getenv("POWERLOSS_LOG");
    at = (v = getenv("POWERLOSS_AT")) ? strtol(v, NULL, 10) : 0;
    if (!mark)
        return;
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs)
        abort();
    pl_vfs = *real_vfs;
    pl_vfs.zName = "powerloss";
    pl_vfs.szOsFile = (int)sizeof(struct pl_file) + real_vfs->szOsFile;
    pl_vfs.pNext = NULL;
    pl_vfs.xOpen = pl_open;
    pl_vfs.xDelete = pl_delete;
    pl_io = (sqlite3_io_methods){
        .iVersion = 3,
        .xClose = pl_close,
        .xRead = pl_read,
        .xWrite = pl_write,
        .xTruncate = pl_truncate,
        .xSync = pl_sync,
        .xFileSize = pl_file_size,
        .xLock = pl_lock,
        .xUnlock = pl_unlock,
        .xCheckReservedLock = pl_check_reserved,
        .xFileControl = pl_file_control,
        .xSectorSize = pl_sector_size,
        .xDeviceCharacteristics = pl_device_chars,
        .xShmMap = pl_shm_map,
        .xShmLock = pl_shm_lock,
        .xShmBarrier = pl_shm_barrier,
        .xShmUnmap = pl_shm_unmap,
        .xFetch = pl_fetch,
        .xUnfetch = pl_unfetch,
    };
    if (sqlite3_vfs_register(&pl_vfs, 0) != SQLITE_OK)
        abort();
}

int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs)
{
    static int (*real_open)(const char *, sqlite3 **, int, const char *);

    if (!real_open)
        real_open = (int (*)(const char *, sqlite3 **, int, const char *))dlsym(RTLD_NEXT,
                                                                                "sqlite3_open_v2");
    pthread_once(&once, setup);
    return real_open(filename, db, flags, vfs || !mark ? vfs : "powerloss");
}
