/* Real data parallelism's overlapped reduction (mp_dp_bucket.c), built on mp_dp.h's reduction
 * and coefficients: it includes mp_dp.h, never the other way round. */
#ifndef MP_DP_BUCKET_H
#define MP_DP_BUCKET_H

#include <stddef.h>

#include "mp_dp.h"
#include "mp_err.h"

/* Real mode, bucketed reduction overlapped with the backward (mp_dp_bucket.c). The buckets are
 * whole layers of this rank's arena (offsets layer_off[], sizes n_param[]), about
 * MP_DP_BUCKET_BYTES each, in descending layer order: the order the backward finishes them. */
int mp_dp_buckets_init(struct mp_dp *dp, int n_layers, const size_t *layer_off,
                       const size_t *n_param, struct mp_err *err);
/* 1 when the replicas write their chunks into memory they share (one host, ordered), 0 when the
 * chunks go as MPI messages. */
int mp_dp_buckets_shared(const struct mp_dp *dp);
/* Frees the buckets (before mp_dp_free; nothing if none were made). */
void mp_dp_buckets_free(struct mp_dp *dp);
/* Before the step's backward: no layer ready yet; grad is the arena being filled. */
void mp_dp_buckets_begin(struct mp_dp *dp, float *grad);
/* Layer `layer`'s gradient is final on this replica: its bucket may start reducing. */
int mp_dp_buckets_layer_done(struct mp_dp *dp, int layer, struct mp_err *err);
/* Advances started reductions without blocking (called between kernels). */
int mp_dp_buckets_poll(struct mp_dp *dp, struct mp_err *err);
/* Starts whatever is left and completes every bucket (within the deadline): grad = Σ c_r·G_r. */
int mp_dp_buckets_finish(struct mp_dp *dp, struct mp_err *err);

#endif
