/* `attention H [causal=0|1] [dropout=P]`: multi-head self-attention over a sequence (T, C), with
 * nn.MultiheadAttention's parameter names and layout (DESIGN.md §9): in_proj_weight [3C, C] (q, k,
 * v rows in that order; head h uses rows h·C/H .. (h+1)·C/H − 1 of each), in_proj_bias [3C],
 * out_proj.weight [C, C], out_proj.bias [C]; weights N(0, 0.02), biases 0. Scores are scaled by
 * 1/√(C/H); position j > i is masked when causal. The q/k/v and output projections are one GEMM
 * each over all batch · T rows; the per-head work is in mp_attention_head.c. */
#include <math.h>
#include <string.h>

#include "mp_attention.h"
#include "mp_gemm.h"
#include "mp_layer_ops.h"

#define ATTN_STD 0.02

void mp__att_dims(const struct mp_layer *l, struct mp_att_dims *d)
{
    d->T = l->in.d[0];
    d->C = l->in.d[1];
    d->H = l->heads;
    d->hd = d->C / d->H;
    d->causal = l->causal;
    d->scale = (float)(1.0 / sqrt((double)d->hd));
}

/* What forward keeps per sample, in floats, as four sections each laid out over the whole call
 * (so the projections see one matrix of batch · T rows):
 *   qkv  (batch, T, 3C)     the fused projection: Q, K and V for the backward
 *   P    (batch, H, T, T)   softmax probabilities before dropout (the lower triangle when causal)
 *   o    (batch, T, C)      the heads' outputs before out_proj, for out_proj's weight gradient
 *   dqkv (batch, T, 3C)     written by B, read by W: the gradient of the fused projection, so
 *                           W (the weight gradients, run later by zero-bubble schedules) does
 *                           not redo the attention backward. Forward never writes it. */
struct att_saved {
    float *qkv, *P, *o, *dqkv;
};

static struct att_saved saved_sections(const struct mp_att_dims *d, const float *saved,
                                       size_t batch)
{
    struct att_saved s;
    s.qkv = (float *)saved;
    s.P = s.qkv + batch * d->T * 3 * d->C;
    s.o = s.P + batch * d->H * d->T * d->T;
    s.dqkv = s.o + batch * d->T * d->C;
    return s;
}

/* Parameter views, in storage order (attention_tensors). */
struct att_param {
    const float *w_in, *b_in, *w_out, *b_out; /* (3C, C), (3C), (C, C), (C) */
};

static struct att_param param_views(size_t C, const float *param)
{
    struct att_param p = {param, param + 3 * C * C, param + 3 * C * C + 3 * C,
                          param + 4 * C * C + 3 * C};
    return p;
}

static int attention_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    if (in.ndim != 2)
        return MP_FAIL(err, INPUT, "attention: needs a sequence (T, C) input (from an embed)");
    size_t T = in.d[0], C = in.d[1], H = l->heads;
    if (H == 0)
        return MP_FAIL(err, INPUT, "attention: needs at least 1 head (usage: attention H)");
    if (C % H)
        return MP_FAIL(err, INPUT, "attention: width %zu is not divisible by %zu heads", C, H);
    if (!(l->rate >= 0.0f && l->rate < 1.0f))
        return MP_FAIL(err, INPUT, "attention: dropout P must be in [0, 1), got %g",
                       (double)l->rate);
    l->in = in;
    l->out = in;
    l->n_weight = 4 * C * C + 4 * C; /* named by attention_tensors */
    l->n_bias = 0;
    l->saved_per_sample = 7 * T * C + H * T * T; /* struct att_saved */
    /* One head at a time: dS (T, T) in backward, and the dropped probabilities A (T, T) when
     * dropout is on. dL/do is kept in dx until dx itself is computed (no scratch). */
    l->scratch_per_sample = 0;
    l->scratch_fixed = (l->rate > 0.0f ? 2 : 1) * T * T;
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

/* y (rows, n) = x (rows, k) · Wᵀ + b: the bias is written first and the GEMM adds onto it. */
static void linear(size_t rows, size_t n, size_t k, const float *x, const float *w, const float *b,
                   float *y)
{
    for (size_t r = 0; r < rows; r++)
        memcpy(y + r * n, b, n * sizeof(float));
    mp_gemm(0, 1, rows, n, k, 1.0f, x, k, w, k, 1.0f, y, n);
}

/* Dropout state of head h of sample s of this call (off in evaluation or with P = 0). */
static struct mp_att_drop drop_of(const struct mp_layer *l, const struct mp_ctx *ctx,
                                  const struct mp_att_dims *d, size_t s, size_t h)
{
    struct mp_att_drop drop = {0};
    if (!ctx->training || l->rate <= 0.0f)
        return drop;
    drop.on = 1;
    drop.p = l->rate;
    drop.scale = 1.0f / (1.0f - l->rate);
    drop.key = mp_hash4(ctx->seed, (uint64_t)l->index, ctx->step, ctx->micro_batch);
    drop.base = ((uint64_t)(ctx->sample_base + s) * d->H + h) * d->T * d->T;
    return drop;
}

static void attention_forward(const struct mp_layer *l, const struct mp_ctx *ctx,
                              const float *param, const float *x, float *y, float *saved,
                              size_t batch)
{
    struct mp_att_dims d;
    mp__att_dims(l, &d);
    struct att_saved sv = saved_sections(&d, saved, batch);
    struct att_param p = param_views(d.C, param);
    size_t T = d.T, C = d.C, rows = batch * T;
    float *A = ctx->scratch; /* (T, T), dropout only */
    /* qkv (rows, 3C) = x (rows, C) · W_inᵀ + b_in */
    linear(rows, 3 * C, C, x, p.w_in, p.b_in, sv.qkv);
    for (size_t s = 0; s < batch; s++) {
        const float *qkv = sv.qkv + s * T * 3 * C; /* (T, 3C) */
        for (size_t h = 0; h < d.H; h++) {
            struct mp_att_drop drop = drop_of(l, ctx, &d, s, h);
            const float *q = qkv + h * d.hd;
            mp__att_head_forward(&d, &drop, q, q + C, q + 2 * C, sv.P + (s * d.H + h) * T * T, A,
                                 sv.o + s * T * C + h * d.hd);
        }
    }
    /* y (rows, C) = o (rows, C) · W_outᵀ + b_out */
    linear(rows, C, C, sv.o, p.w_out, p.b_out, y);
}

/* B. Writes dx and the dqkv section of saved (W reads it); `saved` is const in the ops table
 * because no other layer writes it, but it is this layer's own per-micro-batch memory, which the
 * executor keeps until W has run. Calling B again on the same inputs gives the same bits. */
static void attention_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                     const float *param, const float *x, const float *y,
                                     const float *saved, const float *dy, float *dx, size_t batch)
{
    (void)x, (void)y;
    struct mp_att_dims d;
    mp__att_dims(l, &d);
    struct att_saved sv = saved_sections(&d, saved, batch);
    struct att_param p = param_views(d.C, param);
    size_t T = d.T, C = d.C, rows = batch * T;
    float *dS = ctx->scratch, *A = ctx->scratch + T * T; /* (T, T) each */
    float *d_o = dx; /* (rows, C): dL/do lives in dx until dx is computed */
    mp_gemm(0, 0, rows, C, C, 1.0f, dy, C, p.w_out, C, 0.0f, d_o, C);
    for (size_t s = 0; s < batch; s++) {
        const float *qkv = sv.qkv + s * T * 3 * C; /* (T, 3C) */
        float *dqkv = sv.dqkv + s * T * 3 * C;     /* (T, 3C) */
        for (size_t h = 0; h < d.H; h++) {
            struct mp_att_drop drop = drop_of(l, ctx, &d, s, h);
            size_t c = h * d.hd;
            mp__att_head_backward(&d, &drop, qkv + c, qkv + C + c, qkv + 2 * C + c,
                                  sv.P + (s * d.H + h) * T * T, d_o + s * T * C + c, dqkv + c,
                                  dqkv + C + c, dqkv + 2 * C + c, dS, A);
        }
    }
    /* dx (rows, C) = dqkv (rows, 3C) · W_in (3C, C) */
    mp_gemm(0, 0, rows, C, 3 * C, 1.0f, sv.dqkv, 3 * C, p.w_in, C, 0.0f, dx, C);
}

/* db (+)= column sums of g (rows, n), row by row: a fixed order the compiler vectorises. */
static void bias_grad(const float *g, size_t rows, size_t n, int overwrite, float *db)
{
    if (overwrite)
        memset(db, 0, n * sizeof(float));
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++)
            db[j] += g[r * n + j];
}

/* W: reads x, dy, and saved's o and dqkv (written by this micro-batch's B). */
static void attention_backward_weight(const struct mp_layer *l, const struct mp_ctx *ctx,
                                      const float *x, const float *y, const float *saved,
                                      const float *dy, float *dparam, size_t batch)
{
    (void)y;
    struct mp_att_dims d;
    mp__att_dims(l, &d);
    struct att_saved sv = saved_sections(&d, saved, batch);
    size_t C = d.C, rows = batch * d.T;
    float *dw_in = dparam, *db_in = dw_in + 3 * C * C, *dw_out = db_in + 3 * C;
    float *db_out = dw_out + C * C;
    float beta = ctx->overwrite ? 0.0f : 1.0f;
    /* dW_in (3C, C) += dqkvᵀ · x; dW_out (C, C) += dyᵀ · o */
    mp_gemm(1, 0, 3 * C, C, rows, 1.0f, sv.dqkv, 3 * C, x, C, beta, dw_in, C);
    bias_grad(sv.dqkv, rows, 3 * C, ctx->overwrite, db_in);
    mp_gemm(1, 0, C, C, rows, 1.0f, dy, C, sv.o, C, beta, dw_out, C);
    bias_grad(dy, rows, C, ctx->overwrite, db_out);
}

/* Score elements one head computes: the lower triangle when causal (gemmt and trmm skip the rest,
 * up to their register blocks on the diagonal), else all T·T. */
static double head_elements(const struct mp_att_dims *d)
{
    double T = (double)d->T;
    return d->causal ? T * (T + 1) / 2 : T * T;
}

static struct mp_cost attention_cost(const struct mp_layer *l, size_t batch)
{
    struct mp_att_dims d;
    mp__att_dims(l, &d);
    double b = (double)batch, T = (double)d.T, C = (double)d.C, H = (double)d.H;
    double rows = b * T, heads = b * H, e = head_elements(&d), hd = (double)d.hd;
    double drop = l->rate > 0.0f ? 12.0 : 0.0;        /* hash flops per score, as mp_dropout.c */
    struct mp_cost c = {0};
    /* F: qkv and out projections, Q·Kᵀ and A·V on the computed scores, softmax (~20 flops per
     * score with its exp), dropout's hash per score. */
    c.flops_fwd = 2 * rows * C * 4 * C + heads * (4 * e * hd + 20 * e + drop * e);
    /* B: dO and dx GEMMs (4C² per row), dP, dQ, dK, dV (each 2·e·hd), softmax backward. */
    c.flops_bwd_input = 2 * rows * C * 4 * C + heads * (8 * e * hd + 4 * e + 2 * drop * e);
    /* W: dW_in, dW_out GEMMs and the bias sums. */
    c.flops_bwd_weight = 2 * rows * C * 4 * C + rows * 4 * C;
    double params = 4 * C * C + 4 * C;
    /* F reads x, params; writes qkv, P (read back by A·V), o, y. */
    c.bytes_fwd = 4.0 * (rows * C + params + rows * 3 * C + 2 * heads * e + 2 * rows * C);
    /* B reads dy, qkv, P, params, writes dO (in dx, read back), dS (read twice), dqkv, dx;
     * W reads x, dy, o, dqkv and reads and writes the gradients. */
    c.bytes_bwd = 4.0 * (rows * C + rows * 3 * C + heads * e + params + 2 * rows * C +
                         3 * heads * e + rows * 3 * C + rows * C) +
                  4.0 * (rows * C * 3 + rows * 3 * C + 2 * params);
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    c.saved_bytes = batch * l->saved_per_sample * sizeof(float);
    c.param_bytes = l->n_weight * sizeof(float);
    return c;
}

/* ---- key/value-cache decoding (mp_attention.h) ---- */

size_t mp_attention_cache_floats(const struct mp_layer *l)
{
    return 2 * l->in.d[0] * l->in.d[1];
}

/* qkv of the new token (3C), its head outputs (C), one row of scores (T). */
size_t mp_attention_decode_scratch_floats(const struct mp_layer *l)
{
    return 4 * l->in.d[1] + l->in.d[0];
}

void mp_attention_decode(const struct mp_layer *l, const float *param, const float *x, size_t pos,
                         float *cache, float *scratch, float *y)
{
    struct mp_att_dims d;
    mp__att_dims(l, &d);
    struct att_param p = param_views(d.C, param);
    size_t C = d.C, n = pos + 1;
    float *K = cache, *V = cache + d.T * C;             /* (T, C) each */
    float *qkv = scratch, *o = qkv + 3 * C, *s = o + C; /* (3C), (C), (T) */
    linear(1, 3 * C, C, x, p.w_in, p.b_in, qkv);
    memcpy(K + pos * C, qkv + C, C * sizeof(float));
    memcpy(V + pos * C, qkv + 2 * C, C * sizeof(float));
    for (size_t h = 0; h < d.H; h++) {
        size_t c = h * d.hd;
        /* s (1, n) = scale · q_h · K_h[0:n]ᵀ; softmax; o_h (1, hd) = s · V_h[0:n] */
        mp_gemm(0, 1, 1, n, d.hd, d.scale, qkv + c, d.hd, K + c, C, 0.0f, s, n);
        mp__att_softmax_row(s, n, n);
        mp_gemm(0, 0, 1, d.hd, n, 1.0f, s, n, V + c, C, 0.0f, o + c, d.hd);
    }
    linear(1, C, C, o, p.w_out, p.b_out, y);
}

void mp_attention_cache_fill(const struct mp_layer *l, const float *saved, size_t n, float *cache)
{
    struct mp_att_dims d;
    mp__att_dims(l, &d);
    struct att_saved sv = saved_sections(&d, saved, 1);
    float *K = cache, *V = cache + d.T * d.C; /* (T, C) each */
    for (size_t t = 0; t < n; t++) {
        memcpy(K + t * d.C, sv.qkv + t * 3 * d.C + d.C, d.C * sizeof(float));
        memcpy(V + t * d.C, sv.qkv + t * 3 * d.C + 2 * d.C, d.C * sizeof(float));
    }
}

const struct mp_layer_ops mp__ops_attention = {
    .name = "attention",
    .npos_min = 1,
    .npos_max = 1,
    .options = "causal,dropout",
    .plan = attention_plan,
    .init = attention_init,
    .forward = attention_forward,
    .backward_input = attention_backward_input,
    .backward_weight = attention_backward_weight,
    .cost = attention_cost,
    .tensors = attention_tensors,
};
