/* Training data: IDX files (gzip'd or plain, validated against the file size), the Debian
 * Fashion-MNIST package, a directory of MNIST-named IDX files, deterministic synthetic data, or
 * byte-level text (DESIGN.md §9). Image samples are stored as floats x/255 in NCHW order, labels
 * as int32 class indices; a text sample is a window of T byte ids (as floats) and its T next
 * bytes as labels. */
#ifndef MP_DATA_H
#define MP_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"

#define MP_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

struct mp_dataset {
    size_t n;           /* samples (a text training set: windows per epoch, ⌊bytes / T⌋) */
    size_t sample_len;  /* floats per sample */
    size_t label_len;   /* labels per sample: 1, or T for text */
    float *x;           /* (n, sample_len); NULL for a text training set */
    int32_t *y;         /* (n, label_len); NULL for a text training set */
    /* A text training set: the bytes windows are cut from; sample indices are byte offsets. */
    const uint8_t *text;
    size_t text_len;
};

struct mp_data {
    struct mp_dataset train, test; /* text: test holds every validation window, in order */
    size_t n_classes;
    char source[512];
    uint8_t *bytes;                /* text: the whole file (train is its first ⌊9N/10⌋ bytes) */
    size_t n_bytes;
};

#define MP_FORTUNES_DIR "/usr/share/games/fortunes"

/* An IDX file as read: dims and raw unsigned bytes (only type 0x08 is accepted). */
struct mp_idx {
    int ndim;
    uint32_t dims[4];
    uint8_t *data;   /* product of dims bytes */
    size_t len;
    int placed;      /* data is the caller's (mp_idx_read_placed): mp_idx_free leaves it */
};
/* Reads an IDX file, gzip'd or not (zlib detects). Bad magic/type/dims, or a size that does not
 * match the header: MP_ERR_INPUT "FILE: byte N: ..."; unreadable or truncated: MP_ERR_IO. */
int mp_idx_read(struct mp_idx *idx, const char *path, struct mp_err *err);
/* The same, with the data read straight into memory the caller gives once the header is known:
 * place(ctx, head, err) gets the dims and len (data NULL) and returns head->len bytes to read into,
 * or NULL with err set to refuse (nothing is read then). On failure the caller's memory is left
 * to the caller. A loader that converts the bytes can so hold them where the converted values
 * will go instead of beside them. */
typedef uint8_t *(*mp_idx_place_fn)(void *ctx, const struct mp_idx *head, struct mp_err *err);
int mp_idx_read_placed(struct mp_idx *idx, const char *path, mp_idx_place_fn place, void *ctx,
                       struct mp_err *err);
/* The same from bytes in memory (plain IDX; for tests and fuzzing). */
int mp_idx_parse(struct mp_idx *idx, const char *name, const uint8_t *buf, size_t len,
                 struct mp_err *err);
void mp_idx_free(struct mp_idx *idx);

/* src: "fashion-mnist", "mnist-dir:DIR", "synthetic:N", "text:fortunes" or "text:FILE".
 * sample_len and n_classes come from the model (input size, loss width; for text T and V); real
 * data must match them (MP_ERR_INPUT otherwise: an image of another size, a byte ≥ V, a split
 * shorter than T + 1 bytes). */
int mp_data_load(struct mp_data *d, const char *src, size_t sample_len, size_t n_classes,
                 uint64_t seed, struct mp_err *err);
/* The message of a text byte the model cannot take (mp_text.c). */
#define MP_DATA_NOT_AN_ID "is not an id of the model's vocabulary"
struct mp_model;
/* mp_data_load with the model's input size and the values its data may hold
 * (mp_model_data_classes); a byte its loss cannot take as a label, while its embed could, is
 * explained by the model's lines (mp_data_model.c). */
int mp_data_load_model(struct mp_data *d, const char *src, const struct mp_model *m,
                       uint64_t seed, struct mp_err *err);
void mp_data_free(struct mp_data *d);

/* perm[0..n) = a permutation fixed by (seed, epoch); identity when shuffle is 0. */
void mp_data_order(uint32_t *perm, size_t n, uint64_t seed, uint64_t epoch, int shuffle);
/* Gathers samples idx[0..count) into x (count, sample_len) and y (count, label_len). */
void mp_data_gather(const struct mp_dataset *ds, const uint32_t *idx, size_t count, float *x,
                    int32_t *y);
/* Only the labels of samples idx[0..count) into y (count, label_len): what the last stage needs. */
void mp_data_labels(const struct mp_dataset *ds, const uint32_t *idx, size_t count, int32_t *y);

/* Bytes a loaded data set holds (samples, labels, text). */
double mp_data_bytes(const struct mp_data *d);
/* What loading `src` would hold, without loading it (the planner's memory prediction): the
 * Fashion-MNIST or text file sizes on this machine, or the sample counts of synthetic:N; an
 * unreadable source counts as 0. */
double mp_data_bytes_estimate(const char *src, size_t sample_len, size_t label_len);

/* ---- byte-level text (mp_text.c) ---- */
/* Loads text:SRC's bytes (SRC "fortunes" or a file) and splits them: the first ⌊9N/10⌋ bytes
 * train, the rest validate (every window j·T .. j·T + T of it, materialised in d->test). */
int mp__text_load(struct mp_data *d, const char *src, size_t T, size_t V, struct mp_err *err);
/* The byte offsets of training step `step`'s `batch` windows: drawn from (seed, step, k), or with
 * shuffle off ((step · batch + k) · T) mod (train bytes − T). Never depends on P, D or M. */
/* Bytes of text:SRC on this machine without reading it (0 if unreadable). */
double mp__text_size(const char *src);
void mp_data_text_offsets(const struct mp_dataset *ds, uint32_t *idx, size_t batch,
                          uint64_t seed, uint64_t step, int shuffle);

#endif
