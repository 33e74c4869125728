/* Large buffers in huge pages (see mp_mem.h). */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE: not in POSIX */
#include "mp_mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

/* The whole huge pages of the buffer are advised in and the last, partial one out: a huge page
 * there is faulted in whole by the first touch and holds up to 2 MiB past the buffer's end that
 * no prediction counts (gpt.mp, interleaved on 4 ranks, M = 4, measured 7-17 MB a rank over its
 * prediction, all of it this). Advised out, not left alone, as the kernel's `always` mode would
 * give it a huge page unasked. */
void *mp_mem_alloc(size_t bytes)
{
    if (bytes < HUGE_PAGE) /* aligned_alloc wants a multiple of the alignment */
        return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
    size_t n = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    size_t whole = bytes / HUGE_PAGE * HUGE_PAGE;
    if (n < bytes)
        return NULL; /* overflowed */
    char *p = aligned_alloc(HUGE_PAGE, n);
    if (p) { /* advice: nothing changes where refused */
        madvise(p, whole, MADV_HUGEPAGE);
        if (n > whole)
            madvise(p + whole, n - whole, MADV_NOHUGEPAGE);
    }
    return p;
}

void mp_mem_advise(void *p, size_t bytes)
{
    uintptr_t lo = ((uintptr_t)p + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    uintptr_t hi = ((uintptr_t)p + bytes) / HUGE_PAGE * HUGE_PAGE;
    if (p && hi > lo)
        madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}
