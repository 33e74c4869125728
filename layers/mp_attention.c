/* `attention H [causal=0|1] [dropout=P]`: multi-head self-attention over a sequence (T, C), with
 * nn.MultiheadAttention's parameter names and layout (DESIGN.md §9): in_proj_weight [3C, C] (q, k,
 * v rows in that order; head h uses rows h·C/H .. (h+1)·C/H − 1 of each), in_proj_bias [3C],
 * out_proj.weight [C, C], out_proj.bias [C]; weights N(0, 0.02), biases 0. Scores are scaled by
 * 1/√(C/H); position j > i is masked when causal.
 * SKELETON: plan, tensors, init and cost are final; the kernels are being written (issue 15). */
#include <math.h>
#include <string.h>

#include "mp_gemm.h"
#include "mp_layer_ops.h"

#define ATTN_STD 0.02

static int attention_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    if (in.ndim != 2)
        return MP_FAIL(err, INPUT, "attention: needs a sequence (T, C) input (from an embed)");
    size_t T = in.d[0], C = in.d[1], H = l->heads;
    if (H == 0)
        return MP_FAIL(err, INPUT, "attention: needs at least 1 head (usage: attention H)");
    if (C % H)
        return MP_FAIL(err, INPUT, "attention: width %zu is not divisible by %zu heads", C, H);
    l->in = in;
    l->out = in;
    l->n_weight = 4 * C * C + 4 * C; /* named by attention_tensors */
    l->n_bias = 0;
    /* qkv (T, 3C), probabilities (H, T, T), per-head outputs before out_proj (T, C) */
    l->saved_per_sample = 3 * T * C + H * T * T + T * C;
    l->scratch_per_sample = 0;
    l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

static int attention_tensors(const struct mp_layer *l, struct mp_tensor *t)
{
    size_t C = l->in.d[1];
    int64_t w3[2] = {(int64_t)(3 * C), (int64_t)C}, b3[1] = {(int64_t)(3 * C)};
    int64_t w1[2] = {(int64_t)C, (int64_t)C}, b1[1] = {(int64_t)C};
    mp__layer_tensor_set(&t[0], "in_proj_weight", 0, 3 * C * C, 2, w3);
    mp__layer_tensor_set(&t[1], "in_proj_bias", 3 * C * C, 3 * C, 1, b3);
    mp__layer_tensor_set(&t[2], "out_proj.weight", 3 * C * C + 3 * C, C * C, 2, w1);
    mp__layer_tensor_set(&t[3], "out_proj.bias", 4 * C * C + 3 * C, C, 1, b1);
    return 4;
}

/* Weights N(0, 0.02) in storage order (in_proj_weight, then out_proj.weight), biases 0. */
static void attention_init(const struct mp_layer *l, float *param, struct mp_rng *rng)
{
    size_t C = l->in.d[1];
    float *w_in = param, *b_in = w_in + 3 * C * C, *w_out = b_in + 3 * C, *b_out = w_out + C * C;
    for (size_t i = 0; i < 3 * C * C; i++)
        w_in[i] = (float)(ATTN_STD * mp_rng_normal(rng));
    for (size_t i = 0; i < C * C; i++)
        w_out[i] = (float)(ATTN_STD * mp_rng_normal(rng));
    memset(b_in, 0, 3 * C * sizeof(float));
    memset(b_out, 0, C * sizeof(float));
}

static void attention_forward(const struct mp_layer *l, const struct mp_ctx *ctx,
                              const float *param, const float *x, float *y, float *saved,
                              size_t batch)
{
    (void)ctx, (void)param, (void)x, (void)saved;
    memset(y, 0, batch * mp_layer_out_len(l) * sizeof(float));
}

static void attention_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                     const float *param, const float *x, const float *y,
                                     const float *saved, const float *dy, float *dx,
                                     size_t batch)
{
    (void)ctx, (void)param, (void)x, (void)y, (void)saved, (void)dy;
    memset(dx, 0, batch * mp_layer_in_len(l) * sizeof(float));
}

static void attention_backward_weight(const struct mp_layer *l, const struct mp_ctx *ctx,
                                      const float *x, const float *y, const float *saved,
                                      const float *dy, float *dparam, size_t batch)
{
    (void)x, (void)y, (void)saved, (void)dy, (void)batch;
    if (ctx->overwrite)
        memset(dparam, 0, l->n_weight * sizeof(float));
}

static struct mp_cost attention_cost(const struct mp_layer *l, size_t batch)
{
    double b = (double)batch, T = (double)l->in.d[0], C = (double)l->in.d[1];
    double H = (double)l->heads;
    double proj = 2.0 * b * T * C * 4 * C;     /* qkv (3C) and out (C) projections */
    double att = 2.0 * b * T * T * C * 2;      /* Q·Kᵀ and A·V over all heads */
    if (l->causal)
        att *= 0.5;
    struct mp_cost c = {0};
    c.flops_fwd = proj + att + 5.0 * b * H * T * T;
    c.flops_bwd_input = 0.5 * proj + 2 * att + 5.0 * b * H * T * T;
    c.flops_bwd_weight = 0.5 * proj;
    c.bytes_fwd = 4.0 * (b * T * C * 5 + 4 * C * C + 2 * b * H * T * T);
    c.bytes_bwd = 4.0 * (b * T * C * 10 + 8 * C * C + 3 * b * H * T * T);
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    c.saved_bytes = batch * l->saved_per_sample * sizeof(float);
    c.param_bytes = l->n_weight * sizeof(float);
    return c;
}

const struct mp_layer_ops mp__ops_attention = {
    .name = "attention", .npos_min = 1, .npos_max = 1, .options = "causal,dropout",
    .plan = attention_plan, .init = attention_init, .forward = attention_forward,
    .backward_input = attention_backward_input, .backward_weight = attention_backward_weight,
    .cost = attention_cost, .tensors = attention_tensors,
};
