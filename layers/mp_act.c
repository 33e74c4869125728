/* Parameter-free shape and element-wise layers: flatten, relu, gelu (exact erf form, as torch's
 * default nn.GELU()), tanh and sigmoid. Each is a plain loop over batch * features that the
 * compiler vectorises (gelu and tanh through mp_vmath.h); nothing is saved beyond x and y, which
 * backward gets anyway.
 * No allocation, no MPI. */
#include <math.h>
#include <string.h>

#include "mp_layer_ops.h"
#include "mp_vmath.h"

/* Same shape out as in, nothing saved, no parameters. */
static int same_shape_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    (void)err;
    l->in = in;
    l->out = in;
    l->n_weight = l->n_bias = 0;
    l->saved_per_sample = l->scratch_per_sample = l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

/* flops_per: per element forward; backward input costs about the same. */
static struct mp_cost elementwise_cost(const struct mp_layer *l, size_t batch, double flops_per)
{
    struct mp_cost c = {0};
    double n = (double)batch * (double)mp_layer_out_len(l);
    c.flops_fwd = flops_per * n;
    c.flops_bwd_input = (flops_per + 1) * n;
    c.bytes_fwd = 8 * n;  /* read x, write y */
    c.bytes_bwd = 16 * n; /* read x or y (sometimes both), dy; write dx */
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    return c;
}

/* ---- flatten: (C, H, W) → (C*H*W) in that order, which is already the memory order ---- */

static int flatten_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    same_shape_plan(l, in, err);
    l->out.ndim = 1;
    l->out.d[0] = mp_shape_numel(in);
    l->out.d[1] = l->out.d[2] = 0;
    return 0;
}

static void flatten_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                            const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)param, (void)saved;
    memcpy(y, x, batch * mp_layer_out_len(l) * sizeof(float)); /* (batch, numel) */
}

static void flatten_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                             const float *x, const float *y, const float *saved, const float *dy,
                             float *dx, size_t batch)
{
    (void)ctx, (void)param, (void)x, (void)y, (void)saved;
    memcpy(dx, dy, batch * mp_layer_out_len(l) * sizeof(float)); /* (batch, numel) */
}

static struct mp_cost flatten_cost(const struct mp_layer *l, size_t batch)
{
    struct mp_cost c = elementwise_cost(l, batch, 0);
    c.bytes_bwd = c.bytes_fwd;
    return c;
}

/* ---- relu ---- */

static void relu_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                         const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)param, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    for (size_t i = 0; i < n; i++) /* x, y: (batch, features) */
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* The derivative at exactly 0 is taken as 0, as torch does. */
static void relu_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                          const float *x, const float *y, const float *saved, const float *dy,
                          float *dx, size_t batch)
{
    (void)ctx, (void)param, (void)y, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    for (size_t i = 0; i < n; i++) /* x, dy, dx: (batch, features) */
        dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

static struct mp_cost relu_cost(const struct mp_layer *l, size_t batch)
{
    return elementwise_cost(l, batch, 1);
}

/* ---- gelu: x * Phi(x), Phi the standard normal CDF ----
 * Exact (erf) GELU as torch's default F.gelu, through mp_vmath.h's vectorisable Phi and exp: the
 * loops below compile to SIMD code (libm's erff and expf calls would keep them scalar, and GELU
 * runs on the widest activation of a transformer block). Phi comes from erfc on the side where it
 * is small, so both tails are accurate to a few ulp. */

static void gelu_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                         const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)param, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    for (size_t i = 0; i < n; i++) /* x, y: (batch, features) */
        y[i] = x[i] * mp_normcdf(x[i]);
}

/* d/dx x Phi(x) = Phi(x) + x phi(x). */
static void gelu_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                          const float *x, const float *y, const float *saved, const float *dy,
                          float *dx, size_t batch)
{
    (void)ctx, (void)param, (void)y, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    const float inv_sqrt_2pi = 0.39894228040143268f;
    for (size_t i = 0; i < n; i++) { /* x, dy, dx: (batch, features) */
        float gauss = mp__gauss(x[i]); /* one exp serves the density and the CDF */
        dx[i] = dy[i] * (mp_normcdf_g(x[i], gauss) + x[i] * (inv_sqrt_2pi * gauss));
    }
}

static struct mp_cost gelu_cost(const struct mp_layer *l, size_t batch)
{
    return elementwise_cost(l, batch, 20);
}

/* ---- tanh: backward uses y, dtanh = 1 - y^2 ---- */

static void tanh_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                         const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)param, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    for (size_t i = 0; i < n; i++) /* x, y: (batch, features) */
        y[i] = mp_tanhf(x[i]);
}

static void tanh_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                          const float *x, const float *y, const float *saved, const float *dy,
                          float *dx, size_t batch)
{
    (void)ctx, (void)param, (void)x, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    for (size_t i = 0; i < n; i++) /* y, dy, dx: (batch, features) */
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

static struct mp_cost tanh_cost(const struct mp_layer *l, size_t batch)
{
    return elementwise_cost(l, batch, 20);
}

/* ---- sigmoid: backward uses y, dsigma = y (1 - y) ---- */

static void sigmoid_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                            const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)param, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    /* For very negative x, expf overflows to inf and 1/(1+inf) = 0, the right limit. */
    for (size_t i = 0; i < n; i++) /* x, y: (batch, features) */
        y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void sigmoid_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                             const float *x, const float *y, const float *saved, const float *dy,
                             float *dx, size_t batch)
{
    (void)ctx, (void)param, (void)x, (void)saved;
    size_t n = batch * mp_layer_out_len(l);
    for (size_t i = 0; i < n; i++) /* y, dy, dx: (batch, features) */
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

static struct mp_cost sigmoid_cost(const struct mp_layer *l, size_t batch)
{
    return elementwise_cost(l, batch, 4);
}

const struct mp_layer_ops mp__ops_flatten = {
    .name = "flatten", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = flatten_plan, .forward = flatten_forward, .backward_input = flatten_backward,
    .cost = flatten_cost,
};
const struct mp_layer_ops mp__ops_relu = {
    .name = "relu", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = same_shape_plan, .forward = relu_forward, .backward_input = relu_backward,
    .cost = relu_cost,
};
const struct mp_layer_ops mp__ops_gelu = {
    .name = "gelu", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = same_shape_plan, .forward = gelu_forward, .backward_input = gelu_backward,
    .cost = gelu_cost,
};
const struct mp_layer_ops mp__ops_tanh = {
    .name = "tanh", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = same_shape_plan, .forward = tanh_forward, .backward_input = tanh_backward,
    .cost = tanh_cost, .y_in_backward = 1,
};
const struct mp_layer_ops mp__ops_sigmoid = {
    .name = "sigmoid", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = same_shape_plan, .forward = sigmoid_forward, .backward_input = sigmoid_backward,
    .cost = sigmoid_cost, .y_in_backward = 1,
};
