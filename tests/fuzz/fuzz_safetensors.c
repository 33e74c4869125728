/* libFuzzer target for the strict safetensors reader (engine/ckpt/mp_safetensors.c, mp_st_parse): any
 * bytes must either load, with every tensor's data inside the buffer, aligned and of the size its
 * shape says, and findable by name, or be rejected with "FILE: byte N: ...". The parser takes
 * ownership of a malloc'd copy (mp_st_open runs the same header checks on a file). Replayed
 * over its corpus and regressions by tests/test_fuzz_regressions.c (MP_FUZZ_REPLAY: no
 * libFuzzer entry point). */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "mp_safetensors.h"

static void st_touch(const struct mp_st_file *f)
{
    volatile float sum = 0;
    for (size_t i = 0; i < f->n; i++) {
        const struct mp_st_tensor *t = &f->t[i];
        size_t numel = 1;
        if (t->ndim < 0 || t->ndim > MP_ST_MAX_DIMS)
            abort();
        for (int d = 0; d < t->ndim; d++)
            numel *= (size_t)t->shape[d];
        if (numel != t->numel || mp_st_find(f, t->name) != t)
            abort();
        /* Read as floats on purpose: UBSan checks the alignment and ASan the bounds. */
        for (size_t j = 0; j < t->numel; j++)
            sum += t->data[j];
    }
    (void)sum;
}

static int fuzz_safetensors_one(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct mp_st_file f;
    struct mp_err err = {0};
    if (mp_st_parse(&f, "fuzz.safetensors", buf, size, &err) == 0)
        st_touch(&f);
    else
        fuzz_check_rejection(&err, "fuzz.safetensors");
    mp_st_free(&f);
    return 0;
}

#ifndef MP_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_safetensors_one(data, size);
}
#endif
