/* hwloc bitmaps read from topology text before hwloc sees it (mp_topo_bits.c). Internal to the
 * partitioner's topology check. */
#ifndef MP_TOPO_BITS_H
#define MP_TOPO_BITS_H

#include <stddef.h>
#include <stdint.h>

#define MP_BITS_MAX_WORDS 2048 /* 65536 CPUs or NUMA nodes per bitmap */

/* An hwloc bitmap as 32-bit words, least significant first; n words, the top one non-zero. */
struct mp_bits {
    uint32_t *w;
    size_t n;
};

void mp__bits_free(struct mp_bits *b);
int mp__bits_get(const struct mp_bits *b, size_t bit);
int mp__bits_subset(const struct mp_bits *a, const struct mp_bits *b);   /* a inside b */
int mp__bits_intersects(const struct mp_bits *a, const struct mp_bits *b);
int mp__bits_equal(const struct mp_bits *a, const struct mp_bits *b);
int mp__bits_is_only(const struct mp_bits *b, size_t bit);              /* exactly {bit} */
int mp__bits_or(struct mp_bits *dst, const struct mp_bits *src);        /* -1: out of memory */
int mp__bits_set(struct mp_bits *b, size_t bit);                        /* -1: out of memory */
/* hwloc's text form: comma-separated 32-bit words, most significant first, each "0x" and 1-8 hex
 * digits or empty for a zero word ("0x00000001,,0x0"). Infinite sets ("0xf...f") are refused.
 * 0 ok, -1 malformed, -2 too large (more than MP_BITS_MAX_WORDS words) or out of memory. */
int mp__bits_parse(const char *s, struct mp_bits *b);

#endif
