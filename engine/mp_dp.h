/* Data parallelism across replicated pipelines (DESIGN.md §6). Replica r sums the gradients of its
 * contiguous block of micro-batches; the replicas' sums are then combined as Σ c_r·G_r with the
 * aggregation weights folded into one coefficient per replica (c_r = 1 exactly for equal shards
 * under `mean` and `size`, so equal weights cost no rounding). `ordered` adds in replica order, the
 * same whether the replicas run on D ranks per stage or one after another on the same rank
 * (emulated); `fast` uses MPI_Allreduce's own order. */
#ifndef MP_DP_H
#define MP_DP_H

#include <stddef.h>

#include "mp_err.h"
#include "mp_xport.h"

#define MP_DP_MAX 256

enum mp_dp_reduce { MP_DP_ORDERED, MP_DP_FAST };
enum mp_dp_aggregate { MP_AGG_MEAN, MP_AGG_SIZE, MP_AGG_PERF, MP_AGG_CUSTOM };

struct mp_dp {
    int D;
    int emulated;               /* 1: this rank runs all D replicas in turn */
    int replica;                /* real mode: this rank's replica */
    enum mp_dp_reduce reduce;
    enum mp_dp_aggregate agg;
    double weight[MP_DP_MAX];   /* custom weights (or 1) */
    float coef[MP_DP_MAX];      /* this step's coefficient per replica */
    struct mp_xport *stage_x;   /* real mode: the D ranks that hold this stage, by replica */
    float *acc;                 /* emulated: running sum; ordered: received chunks (n floats) */
    float *chunk;               /* ordered: this rank's summed chunk */
    size_t n;
    int *counts, *displs;       /* D chunk sizes and offsets (floats) */
};

int mp_dp_init(struct mp_dp *dp, int D, int emulated, int replica, struct mp_xport *stage_x,
               enum mp_dp_reduce reduce, enum mp_dp_aggregate agg, size_t n_param,
               struct mp_err *err);
void mp_dp_free(struct mp_dp *dp);
/* Reads D non-negative weights (whitespace or newline separated, `#` comments) for `custom`. */
int mp_dp_read_weights(struct mp_dp *dp, const char *path, struct mp_err *err);
/* Sets this step's coefficients from the samples each replica processed: c_r = w_r·B / (W·n_r),
 * W = Σ w (w_r = n_r for `size`, 1 for `mean`, the file's for `custom`). A replica with weight 0
 * contributes nothing. */
void mp_dp_set_coefficients(struct mp_dp *dp, const size_t *n_samples, size_t batch);
/* acc = c·g (first) or acc += c·g, skipping the multiply when c == 1. */
void mp_dp_accumulate(float *acc, const float *g, float c, size_t n, int first);
/* Real mode: replaces grad (this replica's sum) by Σ c_r·G_r over the stage's replicas. */
int mp_dp_reduce_grads(struct mp_dp *dp, float *grad, struct mp_err *err);

#endif
