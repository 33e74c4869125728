/* mp_mem: large buffers asked for in huge pages (mp_mem.h). The claims: every size comes back
 * usable and 64-byte aligned (the micro-kernel loads whole vectors), sizes from 2 MiB up 2 MiB
 * aligned, and the advice reached the kernel: the buffer's whole 2 MiB pages carry the `hg` flag
 * of MADV_HUGEPAGE in /proc/self/smaps, a partial last one the `nh` of MADV_NOHUGEPAGE. Whether the kernel then finds a free huge page is its own
 * business (memory may be fragmented), so that is not claimed; the flag is deterministic. And
 * memory advised after calloc stays zero. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_mem.h"

#define MIB ((size_t)1 << 20)

/* 1 when the mapping holding address p has VmFlags flag `flag` (" hg": advised into huge pages,
 * " nh": advised out of them), 0 when it has not, -1 when no mapping holds p. */
static int has_flag(const void *p, const char *flag)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    int inside = 0, found = -1;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = a >= lo && a < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            found = strstr(line, flag) != NULL;
            break;
        }
    }
    fclose(f);
    return found;
}

static void test_small_sizes_are_64_byte_aligned_and_usable(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 63, 64, 65, 4096, 100000, 2 * MIB - 1};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = mp_mem_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        memset(p, 0xa5, sizes[i] ? sizes[i] : 1);
        free(p);
    }
}

static void test_large_sizes_are_2_mib_aligned_and_advised_huge(void **state)
{
    (void)state;
    const size_t sizes[] = {2 * MIB, 2 * MIB + 1, 7 * MIB + 12345, 64 * MIB};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = mp_mem_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % (2 * MIB), 0);
        size_t whole = sizes[i] / (2 * MIB) * (2 * MIB);
        assert_int_equal(has_flag(p, " hg"), 1);
        assert_int_equal(has_flag(p + whole - 1, " hg"), 1);
        /* a partial last huge page is advised out: faulted in whole, it would hold up to 2 MiB
         * past the buffer's end, which no memory prediction counts */
        if (whole < sizes[i])
            assert_int_equal(has_flag(p + sizes[i] - 1, " nh"), 1);
        memset(p, 0x5a, sizes[i]);
        assert_int_equal(p[sizes[i] - 1], 0x5a);
        free(p);
    }
}

static void test_an_overflowing_size_is_refused(void **state)
{
    (void)state;
    assert_null(mp_mem_alloc(SIZE_MAX - 1000));
}

static void test_advised_calloc_memory_stays_zero_and_is_advised_inside(void **state)
{
    (void)state;
    size_t n = 9 * MIB + 333;
    unsigned char *p = calloc(n, 1);
    assert_non_null(p);
    mp_mem_advise(p, n);
    uintptr_t first = ((uintptr_t)p + 2 * MIB - 1) / (2 * MIB) * (2 * MIB);
    assert_int_equal(has_flag((void *)first, " hg"), 1);
    for (size_t i = 0; i < n; i += 4093)
        assert_int_equal(p[i], 0);
    assert_int_equal(p[n - 1], 0);
    free(p);
    mp_mem_advise(NULL, 0); /* nothing to advise: no call reaches the kernel */
    unsigned char small[64];
    mp_mem_advise(small, sizeof small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_sizes_are_64_byte_aligned_and_usable),
        cmocka_unit_test(test_large_sizes_are_2_mib_aligned_and_advised_huge),
        cmocka_unit_test(test_an_overflowing_size_is_refused),
        cmocka_unit_test(test_advised_calloc_memory_stays_zero_and_is_advised_inside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
