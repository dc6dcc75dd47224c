/* mem.h - fixed memory reserved up front.
 *
 * A long-running layer's bounded caches (the dedup fingerprints, SQLite's page pool) are
 * reserved whole at start: zeroed anonymous memory, in huge pages where the kernel allows them
 * (random probes then miss the TLB far less), and faulted in early (mem_prefault), so the
 * resident size is the configured bound from the first event on instead of creeping up to
 * it. */
#ifndef LAMBDA_MEM_H
#define LAMBDA_MEM_H

#include <stddef.h>

/* bytes of zeroed memory (in huge pages where allowed); NULL when the system refuses. */
void *mem_reserve(size_t bytes);
void mem_release(void *p, size_t bytes);

/* Faults in every region reserved and not released so far. It never writes to them, so any
 * thread may call it while others use the memory (lambda-speed's writer thread does, taking
 * the cost off the consumer's start); on a kernel without MADV_POPULATE_WRITE (before Linux
 * 5.14) the memory is faulted in as it is used instead. */
void mem_prefault_all(void);

#endif
