/* mem.h - fixed memory reserved up front.
 *
 * A long-running layer's bounded caches (the dedup fingerprints, SQLite's page pool) are
 * reserved whole at start: zeroed anonymous memory, in huge pages where the kernel allows them
 * (random probes then miss the TLB far less), and faulted in at once, so the resident size is
 * the configured bound from the first event on instead of creeping up to it. */
#ifndef LAMBDA_MEM_H
#define LAMBDA_MEM_H

#include <stddef.h>

/* bytes of zeroed memory, resident; NULL when the system refuses. */
void *mem_reserve(size_t bytes);
void mem_release(void *p, size_t bytes);

#endif
