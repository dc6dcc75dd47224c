/* mem.c - memory reserved up front, in huge pages where allowed (see mem.h). */
#include "mem.h"

#include <pthread.h>
#include <sys/mman.h>

#define REGIONS_MAX 16

/* The regions reserved and not released, for mem_prefault_all(). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *p;
    size_t bytes;
} regions[REGIONS_MAX];
static int nregions;

void *mem_reserve(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return NULL;
    madvise(p, bytes, MADV_HUGEPAGE); /* advice: fine if refused */
    pthread_mutex_lock(&mu);
    if (nregions < REGIONS_MAX) {
        regions[nregions].p = p;
        regions[nregions].bytes = bytes;
        nregions++;
    }
    pthread_mutex_unlock(&mu);
    return p;
}

void mem_prefault_all(void)
{
    pthread_mutex_lock(&mu); /* a release waits: nothing is unmapped under the advice */
#ifdef MADV_POPULATE_WRITE
    for (int i = 0; i < nregions; i++)
        madvise(regions[i].p, regions[i].bytes, MADV_POPULATE_WRITE);
#endif
    pthread_mutex_unlock(&mu);
}

void mem_release(void *p, size_t bytes)
{
    if (!p)
        return;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nregions; i++) {
        if (regions[i].p == p) {
            regions[i] = regions[--nregions];
            break;
        }
    }
    pthread_mutex_unlock(&mu);
    munmap(p, bytes);
}
