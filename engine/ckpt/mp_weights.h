/* Weights in and out as safetensors (DESIGN.md §4): tensors named L{global_layer}.weight/.bias with
 * PyTorch's shapes. Saving streams every stage's parameters through rank 0, tensor by tensor;
 * loading lets every rank take its own layers from the file, so a file maps onto any partition. */
#ifndef MP_WEIGHTS_H
#define MP_WEIGHTS_H

#include "mp_err.h"
#include "mp_stage.h"
#include "mp_xport.h"

/* Rank 0 writes `path` with all parameters of `arena` (param, or another buffer laid out the same,
 * e.g. an optimizer state slot), each other rank's tensors sent to it one at a time as the file
 * reaches them: rank 0 holds at most the largest of them beside its own arena. Collective. */
int mp_weights_save(const struct mp_stage *st, const float *arena, const int *bounds,
                    struct mp_xport *x, const char *path, const char *suffix, struct mp_err *err);
/* Every rank copies its layers' tensors from `path` into arena (shapes must match). */
int mp_weights_load(struct mp_stage *st, float *arena, const char *path, const char *suffix,
                    struct mp_err *err);
/* --init: mp_weights_load into st->param, after mp_weights_extras has found nothing of another
 * model in the file (a tensor of no layer of this model is MP_ERR_INPUT, where it was dropped
 * without a word: a spec changed since the file was written lost trained parameters). A
 * checkpoint's stage file holding the whole model loads its weights, with a note on stderr
 * unless quiet; one holding some stages is MP_ERR_INPUT saying what it is. */
int mp_weights_load_init(struct mp_stage *st, const char *path, int quiet, struct mp_err *err);
struct mp_st_file;
/* What f holds beyond model m's weights: -1 with MP_ERR_INPUT naming the first tensor that
 * belongs to no layer of m; else 0, with *state 1 when it also holds a checkpoint's optimizer
 * state (NAME.m, NAME.v beside m's tensors: a checkpoint's stage file), and *missing the number
 * of m's tensors it does not hold (a stage file of a multi-stage checkpoint holds only some). */
int mp_weights_extras(const struct mp_st_file *f, const struct mp_model *m, const char *path,
                      int *state, size_t *missing, struct mp_err *err);
/* A whole model's weights into place for --init and generate alike: copy(ctx, f, err) copies
 * this model's tensors. Another model's file is refused (copy's own error first, when it finds
 * a missing or misshapen tensor, as it names the layer); a stage file of a multi-stage
 * checkpoint is refused for what it is, with `advice` (what the command takes instead); a
 * 1-stage checkpoint's file is copied, *state 1 so the caller can say so. */
typedef int (*mp_weights_copy_fn)(void *ctx, const struct mp_st_file *f, struct mp_err *err);
int mp_weights_take(const struct mp_st_file *f, const struct mp_model *m, const char *path,
                    const char *advice, mp_weights_copy_fn copy, void *ctx, int *state,
                    struct mp_err *err);

#endif
