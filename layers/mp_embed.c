/* The two ends of a language model (DESIGN.md §9). `embed V C [pos=learned|none]`: byte ids in,
 * y[t] = E[id_t] + P[t] out (nn.Embedding's token matrix E [V, C], learned positions P [T, C]); its
 * backward is a scatter-add in (sample, token) order, so the sum never depends on timing. `lm_head
 * [tied=1|0]`: logits = x·Eᵀ against the embed's E (tied: the layer holds a copy the engine keeps
 * bit-identical, DESIGN.md §9) or its own weight [V, C], one GEMM over batch · T rows.
 * Ids arrive as floats (exact below 2^24); the data loader has checked them against V. */
#include <assert.h>
#include <string.h>

#include "mp_gemm.h"
#include "mp_layer_ops.h"

#define EMBED_STD 0.02

/* ---- embed ---- */

static int embed_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    if (in.ndim != 2 || in.d[1] != 1)
        return MP_FAIL(err, INPUT, "embed: needs `input tokens T` right before it");
    if (l->vocab == 0 || l->n_out == 0)
        return MP_FAIL(err, INPUT, "embed: V and C must be positive (usage: embed V C)");
    size_t T = in.d[0], C = l->n_out;
    l->in = in;
    l->out = (struct mp_shape){.ndim = 2, .d = {T, C, 0}};
    l->n_weight = l->vocab * C + (l->pos_learned ? T * C : 0);
    l->n_bias = 0;
    l->saved_per_sample = l->scratch_per_sample = l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

static int embed_tensors(const struct mp_layer *l, struct mp_tensor *t)
{
    size_t T = l->in.d[0], C = l->n_out;
    int64_t e[2] = {(int64_t)l->vocab, (int64_t)C}, p[2] = {(int64_t)T, (int64_t)C};
    mp__layer_tensor_set(&t[0], "weight", 0, l->vocab * C, 2, e);
    if (!l->pos_learned)
        return 1;
    mp__layer_tensor_set(&t[1], "pos_weight", l->vocab * C, T * C, 2, p);
    return 2;
}

/* N(0, 0.02) for E then P, one draw per element in storage order (GPT-2's initialisation). */
static void embed_init(const struct mp_layer *l, float *param, struct mp_rng *rng)
{
    for (size_t i = 0; i < l->n_weight; i++)
        param[i] = (float)(EMBED_STD * mp_rng_normal(rng));
}

static void embed_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                          const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)saved;
    size_t T = l->in.d[0], C = l->n_out;
    const float *E = param;                                   /* (V, C) */
    const float *P = l->pos_learned ? param + l->vocab * C : NULL; /* (T, C) */
    for (size_t r = 0; r < batch * T; r++) { /* x: (batch, T) ids; y: (batch, T, C) */
        size_t id = (size_t)x[r];
        assert(id < l->vocab);
        const float *e = E + id * C;
        float *yr = y + r * C;
        if (P) {
            const float *p = P + (r % T) * C;
            for (size_t c = 0; c < C; c++)
                yr[c] = e[c] + p[c];
        } else {
            memcpy(yr, e, C * sizeof(float));
        }
    }
}

/* Nothing flows into byte ids; the engine never asks (the embed is layer 1), but a caller that
 * does gets zeros rather than garbage. */
static void embed_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                 const float *param, const float *x, const float *y,
                                 const float *saved, const float *dy, float *dx, size_t batch)
{
    (void)ctx, (void)param, (void)x, (void)y, (void)saved, (void)dy;
    memset(dx, 0, batch * mp_layer_in_len(l) * sizeof(float));
}

/* dE[id] += dy[r] and dP[t] += dy[r], rows r in (sample, token) order. */
static void embed_backward_weight(const struct mp_layer *l, const struct mp_ctx *ctx,
                                  const float *x, const float *y, const float *saved,
                                  const float *dy, float *dparam, size_t batch)
{
    (void)y, (void)saved;
    size_t T = l->in.d[0], C = l->n_out;
    float *dE = dparam;                                          /* (V, C) */
    float *dP = l->pos_learned ? dparam + l->vocab * C : NULL;    /* (T, C) */
    if (ctx->overwrite) /* rows no id hits must read zero: a scatter cannot overwrite */
        memset(dparam, 0, l->n_weight * sizeof(float));
    for (size_t r = 0; r < batch * T; r++) { /* dy: (batch, T, C) */
        const float *g = dy + r * C;
        float *de = dE + (size_t)x[r] * C;
        for (size_t c = 0; c < C; c++)
            de[c] += g[c];
        if (dP) {
            float *dp = dP + (r % T) * C;
            for (size_t c = 0; c < C; c++)
                dp[c] += g[c];
        }
    }
}

static struct mp_cost embed_cost(const struct mp_layer *l, size_t batch)
{
    struct mp_cost c = {0};
    double n = (double)batch * (double)mp_layer_out_len(l);
    c.flops_fwd = l->pos_learned ? n : 0;
    c.flops_bwd_weight = l->pos_learned ? 2 * n : n;
    c.bytes_fwd = 4.0 * (3 * n + (double)batch * (double)l->in.d[0]);
    c.bytes_bwd = 4.0 * (5 * n) + 4.0 * (double)l->n_weight; /* dy, dE/dP read and written, zeroing */
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    c.param_bytes = l->n_weight * sizeof(float);
    return c;
}

/* ---- lm_head ---- */

static int lm_head_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    if (in.ndim != 2)
        return MP_FAIL(err, INPUT, "lm_head: needs a sequence (T, C) input, from an embed");
    if (l->vocab == 0)
        return MP_FAIL(err, INPUT, "lm_head: needs an `embed V C` earlier (V is its vocabulary)");
    size_t T = in.d[0], C = in.d[1];
    l->in = in;
    l->out = (struct mp_shape){.ndim = 2, .d = {T, l->vocab, 0}};
    l->n_weight = l->vocab * C; /* tied: the copy of E this stage keeps */
    l->n_bias = 0;
    l->saved_per_sample = l->scratch_per_sample = l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

static int lm_head_tensors(const struct mp_layer *l, struct mp_tensor *t)
{
    int64_t shape[2] = {(int64_t)l->vocab, (int64_t)l->in.d[1]};
    mp__layer_tensor_set(&t[0], "weight", 0, l->n_weight, 2, shape);
    t[0].tied = l->tied;
    return 1;
}

/* Untied: N(0, 0.02). Tied: the embed's E exactly, drawn again from the embed's own stream (the
 * caller seeded rng from the embed's index for a tied head, see mp_layer_init_params), so every
 * stage starts its copy bit-identical without a message. */
static void lm_head_init(const struct mp_layer *l, float *param, struct mp_rng *rng)
{
    for (size_t i = 0; i < l->n_weight; i++)
        param[i] = (float)(EMBED_STD * mp_rng_normal(rng));
}

static void lm_head_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                            const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)saved;
    size_t rows = batch * l->in.d[0], C = l->in.d[1], V = l->vocab;
    /* x: (rows, C); E: (V, C); y: (rows, V) = x·Eᵀ */
    mp_gemm(0, 1, rows, V, C, 1.0f, x, C, param, C, 0.0f, y, V);
}

static void lm_head_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                   const float *param, const float *x, const float *y,
                                   const float *saved, const float *dy, float *dx, size_t batch)
{
    (void)ctx, (void)x, (void)y, (void)saved;
    size_t rows = batch * l->in.d[0], C = l->in.d[1], V = l->vocab;
    /* dy: (rows, V); dx: (rows, C) = dy·E */
    mp_gemm(0, 0, rows, C, V, 1.0f, dy, V, param, C, 0.0f, dx, C);
}

static void lm_head_backward_weight(const struct mp_layer *l, const struct mp_ctx *ctx,
                                    const float *x, const float *y, const float *saved,
                                    const float *dy, float *dparam, size_t batch)
{
    (void)y, (void)saved;
    size_t rows = batch * l->in.d[0], C = l->in.d[1], V = l->vocab;
    /* dE (+)= dyᵀ·x: (V, rows)·(rows, C); a tied head's own accumulator (DESIGN.md §9) */
    mp_gemm(1, 0, V, C, rows, 1.0f, dy, V, x, C, ctx->overwrite ? 0.0f : 1.0f, dparam, C);
}

static struct mp_cost lm_head_cost(const struct mp_layer *l, size_t batch)
{
    double rows = (double)batch * (double)l->in.d[0], C = (double)l->in.d[1];
    double V = (double)l->vocab, gemm = 2.0 * rows * C * V;
    struct mp_cost c = {0};
    c.flops_fwd = c.flops_bwd_input = c.flops_bwd_weight = gemm;
    c.bytes_fwd = 4.0 * (rows * C + V * C + rows * V);
    c.bytes_bwd = 4.0 * (rows * V + V * C + rows * C) + 4.0 * (rows * V + rows * C + 2 * V * C);
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    c.param_bytes = l->n_weight * sizeof(float);
    return c;
}

const struct mp_layer_ops mp__ops_embed = {
    .name = "embed", .npos_min = 2, .npos_max = 2, .options = "pos",
    .plan = embed_plan, .init = embed_init, .forward = embed_forward,
    .backward_input = embed_backward_input, .backward_weight = embed_backward_weight,
    .cost = embed_cost, .tensors = embed_tensors,
};
const struct mp_layer_ops mp__ops_lm_head = {
    .name = "lm_head", .npos_min = 0, .npos_max = 0, .options = "tied",
    .plan = lm_head_plan, .init = lm_head_init, .forward = lm_head_forward,
    .backward_input = lm_head_backward_input, .backward_weight = lm_head_backward_weight,
    .cost = lm_head_cost, .tensors = lm_head_tensors,
};
