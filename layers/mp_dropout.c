/* dropout P: in training, each element is kept with probability 1 - P and scaled by 1/(1 - P)
 * (inverted dropout, as torch); in evaluation, or with P = 0, it is the identity. The mask is a
 * pure function of (ctx->seed, layer index, ctx->step, ctx->micro_batch, sample within the
 * micro-batch, feature): never of the rank, the schedule, or how a micro-batch is split into calls.
 * Backward recomputes the mask from the same ctx instead of saving it: one hash per element is
 * cheaper than keeping batch * features floats alive between F and B in every in-flight
 * micro-batch, which is what bounds a pipeline's activation memory. */
#include <string.h>

#include "mp_layer_ops.h"

/* splitmix64's output function: position g of a counter stream keyed by `key`. */
static inline uint64_t mask_hash(uint64_t key, uint64_t g)
{
    uint64_t z = key + (g + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int active(const struct mp_layer *l, const struct mp_ctx *ctx)
{
    return ctx->training && l->rate > 0.0f;
}

/* dst = src * mask * scale: the same loop serves forward (x → y) and backward (dy → dx). */
static void apply_mask(const struct mp_layer *l, const struct mp_ctx *ctx, const float *src,
                       float *dst, size_t batch)
{
    size_t n = mp_layer_out_len(l);
    uint64_t key = mp_hash4(ctx->seed, (uint64_t)l->index, ctx->step, ctx->micro_batch);
    float p = l->rate, scale = 1.0f / (1.0f - l->rate);
    for (size_t s = 0; s < batch; s++) {
        const float *a = src + s * n; /* (n) */
        float *b = dst + s * n;       /* (n) */
        uint64_t g0 = (uint64_t)(ctx->sample_base + s) * (uint64_t)n;
        for (size_t j = 0; j < n; j++) {
            int keep = mp_hash_uniform(mask_hash(key, g0 + j)) >= p;
            b[j] = keep ? a[j] * scale : 0.0f;
        }
    }
}

static int dropout_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    if (!(l->rate >= 0.0f && l->rate < 1.0f))
        return MP_FAIL(err, INPUT, "dropout: P must be in [0, 1), got %g", (double)l->rate);
    l->in = in;
    l->out = in;
    l->n_weight = l->n_bias = 0;
    l->saved_per_sample = l->scratch_per_sample = l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

static void dropout_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                            const float *x, float *y, float *saved, size_t batch)
{
    (void)param, (void)saved;
    if (active(l, ctx))
        apply_mask(l, ctx, x, y, batch); /* x, y: (batch, features) */
    else
        memcpy(y, x, batch * mp_layer_out_len(l) * sizeof(float));
}

/* Must be called with the ctx of the matching forward (same seed, step, micro_batch,
 * sample_base, training), which the executor does by construction. */
static void dropout_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                             const float *x, const float *y, const float *saved, const float *dy,
                             float *dx, size_t batch)
{
    (void)param, (void)x, (void)y, (void)saved;
    if (active(l, ctx))
        apply_mask(l, ctx, dy, dx, batch); /* dy, dx: (batch, features) */
    else
        memcpy(dx, dy, batch * mp_layer_out_len(l) * sizeof(float));
}

static struct mp_cost dropout_cost(const struct mp_layer *l, size_t batch)
{
    struct mp_cost c = {0};
    double n = (double)batch * (double)mp_layer_out_len(l);
    c.flops_fwd = 12 * n; /* the hash: a few multiplies and shifts per element */
    c.flops_bwd_input = 12 * n;
    c.bytes_fwd = 8 * n;
    c.bytes_bwd = 8 * n;
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    return c;
}

const struct mp_layer_ops mp__ops_dropout = {
    .name = "dropout", .npos_min = 1, .npos_max = 1, .options = "",
    .plan = dropout_plan, .forward = dropout_forward, .backward_input = dropout_backward,
    .cost = dropout_cost,
};
