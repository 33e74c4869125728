/* safetensors files (https://github.com/huggingface/safetensors format): 8-byte little-endian
 * header length, a JSON header {name: {dtype, shape, data_offsets}}, then the data. The writer
 * sorts tensors by name, writes no volatile metadata, and writes to a temporary name, fsyncs and
 * renames, so two runs with the same numbers give the same bytes. The reader is strict: every
 * malformed header, overlap, gap or out-of-range offset is an error, never a read past the end. */
#ifndef MP_SAFETENSORS_H
#define MP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mp_err.h"

#define MP_ST_MAX_HEADER (100u * 1000u * 1000u)
#define MP_ST_MAX_DIMS 4

struct mp_st_tensor {
    char name[96];
    int ndim;
    int64_t shape[MP_ST_MAX_DIMS];
    const float *data;   /* writer: caller's data; mp_st_parse: points into the buffer */
    size_t numel;
    uint64_t at;         /* mp_st_open: the data's first byte in the file (read by mp_st_copy) */
};

struct mp_st_file {
    struct mp_st_tensor *t;  /* sorted by name */
    size_t n;
    uint8_t *buf;            /* mp_st_parse: the whole file */
    size_t len;
    FILE *fp;                /* mp_st_open: the file, whose data is read only when copied */
    char *name;              /* mp_st_open: its path, for errors */
};

/* Writes F32 tensors (any order given; written sorted by name). MP_ERR_IO on failure, with the
 * target left as it was. */
int mp_st_write(const char *path, const struct mp_st_tensor *t, size_t n, struct mp_err *err);
/* The same, where a tensor with no data (and numel > 0) gets it from fill(ctx, t, dst, err), asked
 * in the file's order (mp_st_order) into a buffer of t->numel floats just before it is written:
 * a file larger than memory can hold at once (replica 0 writing every replica's optimizer state
 * under --zero 1) passes through one tensor's buffer. fill is called exactly once per such tensor
 * unless it fails, also after a write error, so a producer on another rank is never left waiting;
 * its failure is the function's (its err). */
typedef int (*mp_st_fill_fn)(void *ctx, const struct mp_st_tensor *t, float *dst,
                             struct mp_err *err);
int mp_st_write_filled(const char *path, const struct mp_st_tensor *t, size_t n,
                       mp_st_fill_fn fill, void *ctx, struct mp_err *err);
/* The order a file holds tensors in: sorted by name (strcmp); sorted[i] points into t. */
void mp_st_order(const struct mp_st_tensor *t, size_t n, const struct mp_st_tensor **sorted);
/* The other side of mp_st_write_filled, on the rank that holds what the writer lacks: each
 * tensor of t with data (numel > 0), in the file's order, through send, the order the writer's
 * fill asks for them in (its own tensors and those of other producers left out: so each side's
 * messages arrive in the order asked for). MP_ERR_NOMEM, or send's failure. */
typedef int (*mp_st_send_fn)(void *ctx, const struct mp_st_tensor *t, struct mp_err *err);
int mp_st_send_in_order(const struct mp_st_tensor *t, size_t n, mp_st_send_fn send, void *ctx,
                        struct mp_err *err);
/* Opens a file of F32 tensors and reads its header only: a tensor's data is read by mp_st_copy
 * straight into its destination, so loading a checkpoint into a stage's arena costs no second
 * copy of the file in memory (a peak RSS the plan would not predict), and a rank reads only the
 * tensors it holds. MP_ERR_INPUT "FILE: byte N: ..." for malformed content (every header check
 * of mp_st_parse, the data's extent against the file's size), MP_ERR_IO for unreadable files. */
int mp_st_open(struct mp_st_file *f, const char *path, struct mp_err *err);
/* The same from a buffer the function takes ownership of (freed by mp_st_free; on failure it is
 * freed already and *f zeroed, so mp_st_free(f) is still safe). */
int mp_st_parse(struct mp_st_file *f, const char *name, uint8_t *buf, size_t len,
                struct mp_err *err);
const struct mp_st_tensor *mp_st_find(const struct mp_st_file *f, const char *name);
/* t's numel floats into dst, from the buffer (mp_st_parse) or the file (mp_st_open; MP_ERR_IO
 * naming the file and byte if it cannot be read, as when it shrank since it was opened). */
int mp_st_copy(const struct mp_st_file *f, const struct mp_st_tensor *t, float *dst,
               struct mp_err *err);
void mp_st_free(struct mp_st_file *f);

#endif
