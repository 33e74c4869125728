/* layernorm: normalises all features of a sample (torch's LayerNorm(normalized_shape = the whole
 * per-sample shape)), or of each token of a sequence (T, C) (LayerNorm(C), as in a transformer),
 * eps 1e-5, biased variance, then applies an element-wise weight and bias (params: weight[n] then
 * bias[n], n the features normalised together; init 1 and 0). Forward saves the mean and 1/std of
 * each row (2 floats) so B and W never recompute the statistics. Mean and variance are accumulated
 * in double (a row may have thousands of features), over 16 lanes in a fixed order so the loops
 * vectorise. No allocation, no MPI. */
#include <math.h>
#include <string.h>

#include "mp_layer_ops.h"

#define LN_EPS 1e-5

static int layernorm_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    (void)err;
    size_t n = mp_shape_feat(in);
    l->in = in;
    l->out = in;
    l->n_weight = n;
    l->n_bias = n;
    l->saved_per_sample = 2 * mp_shape_rows(in); /* mean, rstd per row */
    l->scratch_per_sample = l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

static void layernorm_init(const struct mp_layer *l, float *param, struct mp_rng *rng)
{
    (void)rng;
    for (size_t j = 0; j < l->n_weight; j++)
        param[j] = 1.0f;
    memset(param + l->n_weight, 0, l->n_bias * sizeof(float));
}

/* sum_j (a[j] - sa) * (b ? b[j] - sb : 1) in double, over 16 interleaved lanes combined pairwise:
 * a fixed order (the result never depends on alignment) that the compiler vectorises, where a
 * single running double sum would stay scalar. */
static double dsum(const float *a, double sa, const float *b, double sb, size_t n)
{
    double acc[16] = {0};
    size_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += ((double)a[j + k] - sa) * (b ? (double)b[j + k] - sb : 1.0);
    for (int k = 0; j + (size_t)k < n; k++)
        acc[k] += ((double)a[j + k] - sa) * (b ? (double)b[j + k] - sb : 1.0);
    for (int w = 8; w > 0; w /= 2)
        for (int k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return acc[0];
}

static void layernorm_forward(const struct mp_layer *l, const struct mp_ctx *ctx,
                              const float *param, const float *x, float *y, float *saved,
                              size_t batch)
{
    (void)ctx;
    size_t n = mp_shape_feat(l->in);
    batch *= mp_shape_rows(l->in); /* rows */
    const float *w = param, *b = param + n; /* (n), (n) */
    for (size_t s = 0; s < batch; s++) {
        const float *xs = x + s * n; /* (n) */
        float *ys = y + s * n;       /* (n) */
        double mean = dsum(xs, 0.0, NULL, 0.0, n) / (double)n;
        double sq = dsum(xs, mean, xs, mean, n);
        float m = (float)mean;
        float rstd = (float)(1.0 / sqrt(sq / (double)n + LN_EPS));
        for (size_t j = 0; j < n; j++)
            ys[j] = (xs[j] - m) * rstd * w[j] + b[j];
        saved[2 * s] = m; /* saved: (batch, 2) */
        saved[2 * s + 1] = rstd;
    }
}

/* With xhat = (x - mean) rstd and g = dy * w:
 * dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)). */
static void layernorm_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                     const float *param, const float *x, const float *y,
                                     const float *saved, const float *dy, float *dx, size_t batch)
{
    (void)ctx, (void)y;
    size_t n = mp_shape_feat(l->in);
    batch *= mp_shape_rows(l->in); /* rows */
    const float *w = param; /* (n) */
    for (size_t s = 0; s < batch; s++) {
        const float *xs = x + s * n, *dys = dy + s * n; /* (n), (n) */
        float *dxs = dx + s * n;                         /* (n) */
        float m = saved[2 * s], rstd = saved[2 * s + 1];
        /* g = dy * w into dx first (dx is this row's output anyway): the two sums read it */
        for (size_t j = 0; j < n; j++)
            dxs[j] = dys[j] * w[j];
        double sg = dsum(dxs, 0.0, NULL, 0.0, n), sgx = dsum(xs, m, dxs, 0.0, n) * rstd;
        float mg = (float)(sg / (double)n), mgx = (float)(sgx / (double)n);
        for (size_t j = 0; j < n; j++) {
            float xh = (xs[j] - m) * rstd;
            dxs[j] = rstd * (dxs[j] - mg - xh * mgx);
        }
    }
}

/* dweight += sum_s dy * xhat, dbias += sum_s dy; samples in order, so the sum is deterministic. */
static void layernorm_backward_weight(const struct mp_layer *l, const struct mp_ctx *ctx,
                                      const float *x, const float *y, const float *saved,
                                      const float *dy, float *dparam, size_t batch)
{
    (void)y;
    size_t n = mp_shape_feat(l->in);
    batch *= mp_shape_rows(l->in); /* rows */
    float *dw = dparam, *db = dparam + n; /* (n), (n) */
    if (ctx->overwrite)
        memset(dparam, 0, 2 * n * sizeof(float));
    for (size_t s = 0; s < batch; s++) {
        const float *xs = x + s * n, *dys = dy + s * n; /* (n), (n) */
        float m = saved[2 * s], rstd = saved[2 * s + 1];
        for (size_t j = 0; j < n; j++) {
            dw[j] += dys[j] * ((xs[j] - m) * rstd);
            db[j] += dys[j];
        }
    }
}

static struct mp_cost layernorm_cost(const struct mp_layer *l, size_t batch)
{
    struct mp_cost c = {0};
    double n = (double)batch * (double)mp_layer_in_len(l);
    c.flops_fwd = 8 * n;
    c.flops_bwd_input = 10 * n;
    c.flops_bwd_weight = 5 * n;
    c.bytes_fwd = 16 * n;  /* x read twice, y written, params */
    c.bytes_bwd = 28 * n;  /* x, dy read by B and W; dx written; dparam read and written */
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    c.saved_bytes = batch * l->saved_per_sample * sizeof(float);
    c.param_bytes = mp_layer_n_param(l) * sizeof(float);
    return c;
}

const struct mp_layer_ops mp__ops_layernorm = {
    .name = "layernorm", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = layernorm_plan, .init = layernorm_init, .forward = layernorm_forward,
    .backward_input = layernorm_backward_input, .backward_weight = layernorm_backward_weight,
    .cost = layernorm_cost,
};
