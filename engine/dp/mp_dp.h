/* Data parallelism across replicated pipelines (DESIGN.md §6). Replica r sums the gradients of its
 * contiguous block of micro-batches; the replicas' sums are then combined as Σ c_r·G_r with the
 * aggregation weights folded into one coefficient per replica (c_r = 1 exactly for equal shards
 * under `mean` and `size`, so equal weights cost no rounding). `ordered` adds in replica order, the
 * same whether the replicas run on D ranks per stage or one after another on the same rank
 * (emulated); `fast` uses MPI_Allreduce's own order. Real replicas reduce in buckets of layers that
 * start while the rest of the backward still runs (mp_dp_bucket.c). `perf` weights and speed-sized
 * shards are pure functions of values every rank holds after the step's allreduce. */
#ifndef MP_DP_H
#define MP_DP_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_xport.h"

#define MP_DP_MAX 256
/* perf: EMA factor of the score, and each weight's bounds relative to the mean weight (1). */
#define MP_DP_PERF_BETA 0.9
#define MP_DP_PERF_LO 0.5
#define MP_DP_PERF_HI 2.0
/* --shard-by speed re-balances every this many steps from that window's measured speeds. */
#define MP_DP_REBALANCE_EVERY 10
/* Real replicas: target bytes of one overlapped reduction bucket (whole layers). */
#define MP_DP_BUCKET_BYTES (4u << 20)

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
    /* perf: per replica, the EMA of its mean loss relative to the replicas' mean (1 = average). */
    double score[MP_DP_MAX];
    uint64_t perf_steps;        /* steps folded into score */
    /* Shards in whole micro-batches: replica r runs [first_mb[r], first_mb[r] + n_mb[r]). */
    int n_mb[MP_DP_MAX], first_mb[MP_DP_MAX];
    double win_time[MP_DP_MAX]; /* speed: compute seconds and micro-batches of this window */
    double win_mb[MP_DP_MAX];
    struct mp_dp_buckets *bk;   /* real mode: overlapped bucketed reduction (mp_dp_bucket.c) */
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
/* Real mode: replaces grad (this replica's sum) by Σ c_r·G_r over the stage's replicas, blocking,
 * the whole arena at once, with the same bits as the buckets below (the trainer uses those). */
int mp_dp_reduce_grads(struct mp_dp *dp, float *grad, struct mp_err *err);

/* perf: folds one step into the scores (loss_sum[r] over n_samples[r] samples: replica r's mean
 * loss ℓ_r; score_r ← β·score_r + (1 − β)·ℓ_r / mean(ℓ)) and sets weight_r ∝ 1 / score_r, bounded
 * to [LO, HI] times the mean weight, normalised to Σ w = D. Lower relative loss, more weight. */
void mp_dp_perf_update(struct mp_dp *dp, const double *loss_sum, const size_t *n_samples);
/* Scales w[0..D) to mean 1, then clamps each into [lo, hi] keeping the mean 1 (the exact
 * projection: clamped entries are fixed, the rest rescaled, until none moves). Needs lo <= 1 <= hi;
 * all-equal weights come out exactly 1. */
void mp_dp_bound_weights(double *w, int D, double lo, double hi);
/* Splits M micro-batches over D replicas in proportion to rate[] (largest remainder, ties to the
 * lower replica), each at least 1, Σ = M; fills dp->n_mb and dp->first_mb. Needs D <= M. */
void mp_dp_set_shards(struct mp_dp *dp, const double *rate, int M);
/* Speed: records replica r's compute seconds for its micro-batches this step; every
 * MP_DP_REBALANCE_EVERY steps re-splits M by the window's micro-batches per second. Returns 1
 * when the shards changed. */
int mp_dp_speed_update(struct mp_dp *dp, const double *seconds, uint64_t step, int M);

/* Checkpoint state: the perf scores and the shards (the speed window restarts on resume). Load
 * ignores state recorded for another D or M; the perf weights follow from the scores. */
void mp_dp_save_state(const struct mp_dp *dp, int *D, double *score, int *n_mb);
void mp_dp_load_state(struct mp_dp *dp, int D, const double *score, const int *n_mb, int M);

#endif
