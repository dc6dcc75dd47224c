#include "mem.h"

#include <string.h>
#include <sys/mman.h>

void *mem_reserve(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return NULL;
    madvise(p, bytes, MADV_HUGEPAGE); /* advice: fine if refused */
#ifdef MADV_POPULATE_WRITE
    if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0)
        return p;
#endif
    memset(p, 0, bytes); /* older kernels: touch it ourselves */
    return p;
}

void mem_release(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}
