/* Memory for the large buffers: parameter arenas, optimizer state, activation slabs, packed
 * weights, data sets. From 2 MiB up they are asked for in the kernel's 2 MiB pages (transparent
 * huge pages, which Debian grants only to memory that asks: `madvise` mode). In 4 KiB pages
 * every first touch of every page is a fault: models/gpt_300m.mp on one rank (7.8 GB) spent
 * 18-26 s of system time in them, its start-up took 22-28 s and its first step 10-14 s more than
 * the next; in 2 MiB pages 6-15 s and 2-4 s (docs/performance.md). A TLB entry also reaches 512x
 * further. Only the pages change, never a number. */
#ifndef MP_MEM_H
#define MP_MEM_H

#include <stddef.h>

/* bytes (any, 0 included) of uninitialised memory, 64-byte aligned; from 2 MiB up, 2 MiB aligned
 * and its whole 2 MiB pages advised into huge pages (the rest stays in small pages, so a touched
 * buffer holds its bytes rounded to 4 KiB, not to 2 MiB). Freed with free(). NULL when out of
 * memory. */
void *mp_mem_alloc(size_t bytes);
/* Advises the whole 2 MiB pages inside [p, p + bytes) into huge pages, before their first touch:
 * for memory that must come zeroed and unmapped from calloc (pages a shard never writes cost
 * nothing). */
void mp_mem_advise(void *p, size_t bytes);

#endif
