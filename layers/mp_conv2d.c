/* The 2-D convolution `conv2d OUT K [stride=S] [pad=P]` over a (C, H, W) input, PyTorch's layout
 * (weight [out, in, kh, kw], then bias [out]) and torch.nn.Conv2d's initialisation. Each sample
 * is lowered with im2col into ctx->scratch and multiplied by BLIS; the backward runs the
 * transposed GEMM plus col2im (B) and a beta = 1 GEMM that accumulates the weight gradient (W).
 * Per-sample GEMMs write straight into the NCHW activations, so no layout copies are needed; their
 * shapes (e.g. 64×196×800 for the CNN's second conv) run at ~100 GFLOPS on a Xeon (skx) and at
 * 62-71 on an EPYC Zen3 core (peak 78); grouping samples into wider GEMMs was measured slower. */
#include <math.h>
#include <string.h>

#include "mp_gemm.h"
#include "mp_layer_ops.h"

/* Geometry of one sample, derived from the planned layer. */
struct geom {
    size_t c, h, w;     /* input channels, height, width */
    size_t k, s, p;     /* kernel, stride, padding */
    size_t oh, ow;      /* output height, width */
    size_t ckk, ohw;    /* rows and columns of the im2col matrix */
};

static struct geom geom_of(const struct mp_layer *l)
{
    struct geom g = {.c = l->in.d[0], .h = l->in.d[1], .w = l->in.d[2], .k = l->kernel,
                     .s = l->stride, .p = l->pad, .oh = l->out.d[1], .ow = l->out.d[2]};
    g.ckk = g.c * g.k * g.k;
    g.ohw = g.oh * g.ow;
    return g;
}

static int conv_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    if (in.ndim == 2) /* `input H W`: one channel */
        in = (struct mp_shape){.ndim = 3, .d = {1, in.d[0], in.d[1]}};
    if (in.ndim != 3)
        return MP_FAIL(err, INPUT, "conv2d: needs a (C, H, W) input but gets %zu features",
                       in.d[0]);
    if (l->n_out == 0 || l->kernel == 0)
        return MP_FAIL(err, INPUT, "conv2d: output channels and kernel must be at least 1");
    if (l->stride == 0)
        l->stride = 1;
    size_t k = l->kernel, ph = in.d[1] + 2 * l->pad, pw = in.d[2] + 2 * l->pad;
    if (k > ph || k > pw) {
        if (l->pad == 0)
            return MP_FAIL(err, INPUT, "conv2d: kernel %zu larger than input %zux%zu", k,
                           in.d[1], in.d[2]);
        return MP_FAIL(err, INPUT, "conv2d: kernel %zu larger than input %zux%zu padded by %zu",
                       k, in.d[1], in.d[2], l->pad);
    }
    l->in = in;
    l->out = (struct mp_shape){.ndim = 3,
                               .d = {l->n_out, (ph - k) / l->stride + 1, (pw - k) / l->stride + 1}};
    l->n_weight = l->n_out * in.d[0] * k * k;
    l->n_bias = l->n_out;
    l->saved_per_sample = 0; /* the backward rebuilds the columns from x */
    l->scratch_per_sample = 0;
    /* One sample's columns and its zero-padded copy; a pointwise convolution multiplies the input
     * itself. */
    l->scratch_fixed = in.d[0] * k * k * l->out.d[1] * l->out.d[2];
    if (l->pad)
        l->scratch_fixed += in.d[0] * ph * pw;
    if (k == 1 && l->stride == 1 && l->pad == 0)
        l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

/* torch.nn.Conv2d: U(−1/√fan_in, 1/√fan_in) for weight and bias, fan_in = in·k·k. */
static void conv_init(const struct mp_layer *l, float *param, struct mp_rng *rng)
{
    float bound = 1.0f / sqrtf((float)(l->in.d[0] * l->kernel * l->kernel));
    size_t n = l->n_weight + l->n_bias;
    for (size_t i = 0; i < n; i++)
        param[i] = (2.0f * mp_rng_uniform(rng) - 1.0f) * bound;
}

/* A zero-padded copy of one sample, (c, h + 2p, w + 2p), so that im2col and col2im are plain
 * strided copies with no bounds tests (the first version's per-row memcpy/memset calls on 14-float
 * rows took a quarter of the time of the GEMM they fed). With p = 0 the sample itself is used. */
static const float *pad_input(const struct geom *g, const float *x, float *padded)
{
    if (g->p == 0)
        return x;
    size_t ph = g->h + 2 * g->p, pw = g->w + 2 * g->p;
    for (size_t c = 0; c < g->c; c++)
        for (size_t i = 0; i < ph; i++) {
            float *d = padded + (c * ph + i) * pw;
            if (i < g->p || i >= g->p + g->h) {
                for (size_t j = 0; j < pw; j++)
                    d[j] = 0.0f;
                continue;
            }
            const float *s = x + (c * g->h + i - g->p) * g->w;
            for (size_t j = 0; j < g->p; j++)
                d[j] = d[g->p + g->w + j] = 0.0f;
            for (size_t j = 0; j < g->w; j++)
                d[g->p + j] = s[j];
        }
    return padded;
}

/* Row pieces are short (an output row: 28, 14 or 7 floats in the CNN) and there are ~11k of them
 * per sample, so loop overhead, not bandwidth, bounds im2col; widths known at compile time become
 * a few vector moves. */
static inline void copy_n(float *restrict d, const float *restrict s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = s[i];
}

static inline void add_n(float *restrict d, const float *restrict s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] += s[i];
}

static inline void copy_row(float *restrict d, const float *restrict s, size_t n)
{
    switch (n) {
    case 7: copy_n(d, s, 7); break;
    case 14: copy_n(d, s, 14); break;
    case 28: copy_n(d, s, 28); break;
    default: copy_n(d, s, n); break;
    }
}

static inline void add_row(float *restrict d, const float *restrict s, size_t n)
{
    switch (n) {
    case 7: add_n(d, s, 7); break;
    case 14: add_n(d, s, 14); break;
    case 28: add_n(d, s, 28); break;
    default: add_n(d, s, n); break;
    }
}

/* col (ckk, ohw): row (c, ki, kj), column (oy, ox) holds xpad[c, oy·s + ki, ox·s + kj]. */
static void im2col(const struct geom *g, const float *x, float *col, float *padded)
{
    const float *xp = pad_input(g, x, padded);
    size_t ph = g->h + 2 * g->p, pw = g->w + 2 * g->p;
    for (size_t c = 0; c < g->c; c++)
        for (size_t ki = 0; ki < g->k; ki++)
            for (size_t kj = 0; kj < g->k; kj++) {
                float *row = col + ((c * g->k + ki) * g->k + kj) * g->ohw;
                for (size_t oy = 0; oy < g->oh; oy++) {
                    const float *s = xp + (c * ph + oy * g->s + ki) * pw + kj;
                    float *d = row + oy * g->ow;
                    if (g->s == 1)
                        copy_row(d, s, g->ow);
                    else
                        for (size_t ox = 0; ox < g->ow; ox++)
                            d[ox] = s[ox * g->s];
                }
            }
}

/* The adjoint of im2col: every column entry is added back where it was read from, into a padded
 * buffer whose interior is then dx. The loop order is fixed, so overlapping windows always add in
 * the same order. */
static void col2im(const struct geom *g, const float *col, float *dx, float *padded)
{
    size_t ph = g->h + 2 * g->p, pw = g->w + 2 * g->p;
    float *acc = g->p ? padded : dx;
    memset(acc, 0, g->c * ph * pw * sizeof(float));
    for (size_t c = 0; c < g->c; c++)
        for (size_t ki = 0; ki < g->k; ki++)
            for (size_t kj = 0; kj < g->k; kj++) {
                const float *row = col + ((c * g->k + ki) * g->k + kj) * g->ohw;
                for (size_t oy = 0; oy < g->oh; oy++) {
                    const float *s = row + oy * g->ow;
                    float *d = acc + (c * ph + oy * g->s + ki) * pw + kj;
                    if (g->s == 1)
                        add_row(d, s, g->ow);
                    else
                        for (size_t ox = 0; ox < g->ow; ox++)
                            d[ox * g->s] += s[ox];
                }
            }
    if (g->p == 0)
        return;
    for (size_t c = 0; c < g->c; c++)
        for (size_t i = 0; i < g->h; i++)
            memcpy(dx + (c * g->h + i) * g->w, acc + (c * ph + i + g->p) * pw + g->p,
                   g->w * sizeof(float));
}

/* A 1×1, stride-1, unpadded convolution's columns are the input itself. */
static int is_pointwise(const struct geom *g) { return g->k == 1 && g->s == 1 && g->p == 0; }

/* Why one sample per GEMM: grouping G samples side by side into one (ckk, G·ohw) column matrix
 * (one out × G·ohw × ckk forward GEMM, one W GEMM with inner G·ohw, one dcol GEMM, plus copies
 * between the (out, G, ohw) GEMM layout and NCHW) was built and measured on the EPYC Zen3 VM, and
 * it does not pay. The wider GEMMs run slower, not faster, because their column operand no longer
 * stays in the 512 KiB L2 (GFLOPS, interleaved in one process, best path each; 1 sample vs 4):
 * conv2 forward 64×196×800 64.4 vs 64×784×800 57.2, dW 64×800×196 64.7 vs 64×800×784 59.0, dcol
 * 800×196×64 64.4 vs 800×784×64 67.3 (the only gain), conv1 forward 32×784×25 59.9 vs 32×3136×25
 * 51.2. Whole kernels, F + B + W on 128 samples (medians of 15-21 rounds, G values interleaved;
 * the median of 5 such runs): conv2 135.3 ms at G = 1, 139.5 at G = 2, 137.4 at G = 4, and 154 at
 * G = 8 (one run); conv1 13.8-14.1 ms at G = 1, 15.2-16.1 at G = 2..16 (two runs). */
static void conv_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                         const float *x, float *y, float *saved, size_t batch)
{
    (void)saved;
    struct geom g = geom_of(l);
    size_t out = l->n_out, in_len = g.c * g.h * g.w, out_len = out * g.ohw;
    const float *wt = param;              /* (out, ckk) */
    const float *bias = param + l->n_weight; /* (out) */
    float *col = ctx->scratch;            /* (ckk, ohw) */
    for (size_t s = 0; s < batch; s++) {
        const float *xs = x + s * in_len; /* (c, h, w) */
        float *ys = y + s * out_len;      /* (out, oh·ow) */
        const float *cs = xs;
        if (!is_pointwise(&g)) {
            im2col(&g, xs, col, col + g.ckk * g.ohw);
            cs = col;
        }
        /* Bias first, then the GEMM adds onto it (beta = 1): no second pass over y. */
        for (size_t o = 0; o < out; o++)
            for (size_t j = 0; j < g.ohw; j++)
                ys[o * g.ohw + j] = bias[o];
        mp_gemm(0, 0, out, g.ohw, g.ckk, 1.0f, wt, g.ckk, cs, g.ohw, 1.0f, ys, g.ohw);
    }
}

static void conv_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                const float *param, const float *x, const float *y,
                                const float *saved, const float *dy, float *dx, size_t batch)
{
    (void)x;
    (void)y;
    (void)saved;
    struct geom g = geom_of(l);
    size_t out = l->n_out, in_len = g.c * g.h * g.w, out_len = out * g.ohw;
    float *col = ctx->scratch; /* (ckk, ohw) */
    for (size_t s = 0; s < batch; s++) {
        const float *dys = dy + s * out_len; /* (out, ohw) */
        float *dxs = dx + s * in_len;        /* (c, h, w) */
        if (is_pointwise(&g)) {
            mp_gemm(1, 0, g.ckk, g.ohw, out, 1.0f, param, g.ckk, dys, g.ohw, 0.0f, dxs, g.ohw);
            continue;
        }
        /* dcol (ckk, ohw) = Wᵀ (ckk, out) · dy (out, ohw) */
        mp_gemm(1, 0, g.ckk, g.ohw, out, 1.0f, param, g.ckk, dys, g.ohw, 0.0f, col, g.ohw);
        col2im(&g, col, dxs, col + g.ckk * g.ohw);
    }
}

/* Sum of n floats in a fixed order: 16 interleaved partial sums, then the tail. A single running
 * sum is one dependent add per element (latency-bound, ~2 ms per CNN batch); lanes vectorise. */
static float row_sum(const float *v, size_t n)
{
    float lane[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (size_t j = 0; j < 16; j++)
            lane[j] += v[i + j];
    float sum = 0.0f;
    for (size_t j = 0; j < 16; j++)
        sum += lane[j];
    for (; i < n; i++)
        sum += v[i];
    return sum;
}

static void conv_backward_weight(const struct mp_layer *l, const struct mp_ctx *ctx,
                                 const float *x, const float *y, const float *saved,
                                 const float *dy, float *dparam, size_t batch)
{
    (void)y;
    (void)saved;
    struct geom g = geom_of(l);
    size_t out = l->n_out, in_len = g.c * g.h * g.w, out_len = out * g.ohw;
    float *dw = dparam;               /* (out, ckk) */
    float *db = dparam + l->n_weight; /* (out) */
    float *col = ctx->scratch;        /* (ckk, ohw) */
    if (ctx->overwrite) /* small next to the GEMMs: zero and accumulate as ever */
        memset(dparam, 0, (l->n_weight + l->n_bias) * sizeof(float));
    for (size_t s = 0; s < batch; s++) {
        const float *xs = x + s * in_len;
        const float *dys = dy + s * out_len; /* (out, ohw) */
        const float *cs = xs;
        if (!is_pointwise(&g)) {
            im2col(&g, xs, col, col + g.ckk * g.ohw);
            cs = col;
        }
        /* dW (out, ckk) += dy (out, ohw) · colᵀ (ohw, ckk), sample after sample. */
        mp_gemm(0, 1, out, g.ckk, g.ohw, 1.0f, dys, g.ohw, cs, g.ohw, 1.0f, dw, g.ckk);
        for (size_t o = 0; o < out; o++)
            db[o] += row_sum(dys + o * g.ohw, g.ohw);
    }
}

static struct mp_cost conv_cost(const struct mp_layer *l, size_t batch)
{
    struct geom g = geom_of(l);
    double b = (double)batch, out = (double)l->n_out, ckk = (double)g.ckk, ohw = (double)g.ohw;
    double in_len = (double)(g.c * g.h * g.w), gemm = 2.0 * b * out * ckk * ohw;
    double cols = b * ckk * ohw, w = out * ckk;
    struct mp_cost c = {0};
    c.flops_fwd = gemm + b * out * ohw;
    c.flops_bwd_input = gemm + cols; /* col2im adds every column entry */
    c.flops_bwd_weight = gemm + b * out * ohw;
    /* im2col reads x and writes the columns, which the GEMM reads back; y written and re-read. */
    c.bytes_fwd = 4.0 * (b * in_len + 2.0 * cols + w + out + 2.0 * b * out * ohw);
    c.bytes_bwd = 4.0 * (2.0 * b * out * ohw + w + 3.0 * cols + b * in_len)  /* B */
                  + 4.0 * (b * in_len + 2.0 * cols + 2.0 * (w + out));     /* W */
    c.act_bytes_out = sizeof(float) * (size_t)batch * l->n_out * g.ohw;
    c.saved_bytes = 0;
    c.param_bytes = sizeof(float) * (l->n_weight + l->n_bias);
    return c;
}

const struct mp_layer_ops mp__ops_conv2d = {
    .name = "conv2d",
    .npos_min = 2,
    .npos_max = 2,
    .options = "stride,pad",
    .plan = conv_plan,
    .init = conv_init,
    .forward = conv_forward,
    .backward_input = conv_backward_input,
    .backward_weight = conv_backward_weight,
    .cost = conv_cost,
};
