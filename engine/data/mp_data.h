/* Training data: IDX files (gzip'd or plain, validated against the file size), the Debian
 * Fashion-MNIST package, a directory of MNIST-named IDX files, or deterministic synthetic data.
 * Samples are stored as floats x/255 in NCHW order; labels as int32 class indices. */
#ifndef MP_DATA_H
#define MP_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"

#define MP_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

struct mp_dataset {
    size_t n;           /* samples */
    size_t sample_len;  /* floats per sample */
    float *x;           /* (n, sample_len) */
    int32_t *y;         /* (n) */
};

struct mp_data {
    struct mp_dataset train, test;
    size_t n_classes;
    char source[512];
};

/* An IDX file as read: dims and raw unsigned bytes (only type 0x08 is accepted). */
struct mp_idx {
    int ndim;
    uint32_t dims[4];
    uint8_t *data;   /* product of dims bytes */
    size_t len;
};
/* Reads an IDX file, gzip'd or not (zlib detects). Bad magic/type/dims, or a size that does not
 * match the header: MP_ERR_INPUT "FILE: byte N: ..."; unreadable or truncated: MP_ERR_IO. */
int mp_idx_read(struct mp_idx *idx, const char *path, struct mp_err *err);
/* The same from bytes in memory (plain IDX; for tests and fuzzing). */
int mp_idx_parse(struct mp_idx *idx, const char *name, const uint8_t *buf, size_t len,
                 struct mp_err *err);
void mp_idx_free(struct mp_idx *idx);

/* src: "fashion-mnist", "mnist-dir:DIR" or "synthetic:N". sample_len and n_classes come from the
 * model (input size, loss width); real data must match them (MP_ERR_INPUT otherwise). */
int mp_data_load(struct mp_data *d, const char *src, size_t sample_len, size_t n_classes,
                 uint64_t seed, struct mp_err *err);
void mp_data_free(struct mp_data *d);

/* perm[0..n) = a permutation fixed by (seed, epoch); identity when shuffle is 0. */
void mp_data_order(uint32_t *perm, size_t n, uint64_t seed, uint64_t epoch, int shuffle);
/* Gathers samples idx[0..count) into x (count, sample_len) and y (count). */
void mp_data_gather(const struct mp_dataset *ds, const uint32_t *idx, size_t count, float *x,
                    int32_t *y);

#endif
