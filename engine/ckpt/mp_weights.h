/* Weights in and out as safetensors (DESIGN.md §4): tensors named L{global_layer}.weight/.bias with
 * PyTorch's shapes. Saving gathers every stage's parameters on rank 0 in layer order; loading lets
 * every rank take its own layers from the file, so a file maps onto any partition. */
#ifndef MP_WEIGHTS_H
#define MP_WEIGHTS_H

#include "mp_err.h"
#include "mp_stage.h"
#include "mp_xport.h"

/* Rank 0 writes `path` with all parameters of `arena` (param, or another buffer laid out the same,
 * e.g. an optimizer state slot) gathered from the owners. Collective. */
int mp_weights_save(const struct mp_stage *st, const float *arena, const int *bounds,
                    struct mp_xport *x, const char *path, const char *suffix, struct mp_err *err);
/* Every rank copies its layers' tensors from `path` into arena (shapes must match). */
int mp_weights_load(struct mp_stage *st, float *arena, const char *path, const char *suffix,
                    struct mp_err *err);

#endif
