/* libFuzzer target for the IDX reader (engine/data/mp_idx.c): the same bytes go through the in-memory
 * parser (mp_idx_parse) and through the file reader (mp_idx_read, via zlib, so gzip'd inputs reach
 * the decompression and truncation paths). Both must agree on acceptance for plain input, return
 * exactly the bytes the header promises, and reject everything else with "FILE: byte N: ...".
 * Replayed over its corpus and regressions by tests/test_fuzz_regressions.c (MP_FUZZ_REPLAY). */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "mp_data.h"

/* Touches every byte so a length that lies about the allocation is caught by ASan. */
static void idx_touch(const struct mp_idx *idx)
{
    size_t numel = 1;
    if (idx->ndim < 1 || idx->ndim > 4)
        abort();
    for (int i = 0; i < idx->ndim; i++)
        numel *= idx->dims[i];
    if (numel != idx->len)
        abort();
    volatile unsigned sum = 0;
    for (size_t i = 0; i < idx->len; i++)
        sum += idx->data[i];
    (void)sum;
}

static int fuzz_idx_one(const uint8_t *data, size_t size)
{
    struct mp_idx mem, file;
    struct mp_err err = {0};
    int rc_mem = mp_idx_parse(&mem, "fuzz.idx", data, size, &err);
    if (rc_mem == 0)
        idx_touch(&mem);
    else
        fuzz_check_rejection(&err, "fuzz.idx");

    const char *path = fuzz_as_file(data, size);
    int rc_file = mp_idx_read(&file, path, &err);
    if (rc_file == 0)
        idx_touch(&file);
    else
        fuzz_check_rejection(&err, path);
    /* zlib reads non-gzip input as-is, so plain bytes the memory parser accepts must read back
     * identically from a file. */
    if (rc_mem == 0 &&
        (rc_file != 0 || file.len != mem.len || memcmp(file.data, mem.data, mem.len) != 0))
        abort();
    mp_idx_free(&mem);
    mp_idx_free(&file);
    return 0;
}

#ifndef MP_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_idx_one(data, size);
}
#endif
