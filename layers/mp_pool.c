/* Pooling layers `maxpool K` and `avgpool K`: a K×K window moved by K over each channel of a
 * (C, H, W) input, output ⌊H/K⌋ × ⌊W/K⌋ (trailing rows and columns that do not fill a window are
 * dropped, as in PyTorch). No parameters. maxpool saves the argmax of every window (the first
 * maximum on ties) so its backward needs neither x nor a search; avgpool needs nothing saved. */
#include <string.h>

#include "mp_layer_ops.h"

static int pool_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    const char *name = l->ops->name;
    if (in.ndim == 2) /* `input H W`: one channel */
        in = (struct mp_shape){.ndim = 3, .d = {1, in.d[0], in.d[1]}};
    if (in.ndim != 3)
        return MP_FAIL(err, INPUT, "%s: needs a (C, H, W) input but gets %zu features", name,
                       in.d[0]);
    size_t k = l->kernel;
    if (k == 0)
        return MP_FAIL(err, INPUT, "%s: window must be at least 1", name);
    if (k > in.d[1] || k > in.d[2])
        return MP_FAIL(err, INPUT, "%s: window %zu larger than input %zux%zu", name, k, in.d[1],
                       in.d[2]);
    l->stride = k;
    l->pad = 0;
    l->in = in;
    l->out = (struct mp_shape){.ndim = 3, .d = {in.d[0], in.d[1] / k, in.d[2] / k}};
    l->n_weight = 0;
    l->n_bias = 0;
    /* maxpool: one argmax per output, a uint32 input offset stored bit for bit in a float slot */
    l->saved_per_sample = l->ops == &mp__ops_maxpool ? mp_shape_numel(l->out) : 0;
    l->scratch_per_sample = 0;
    l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

/* Window index `at` when x > *v, else best; *v becomes the larger. As a mask, not a branch or a
 * select: GCC turns either of those back into a jump, and whether x wins is a coin toss on
 * training's activations (a 2x2 window cost 12 ns with jumps against 2-3 ns so). */
static inline uint32_t take_if_greater(float x, float *v, uint32_t at, uint32_t best)
{
    uint32_t m = 0u - (uint32_t)(x > *v);
    *v = x > *v ? x : *v; /* maxss */
    return (at & m) | (best & ~m);
}

/* The CNN's 2x2 windows, unrolled: the generic loop's index arithmetic cost 3x the compares.
 * Same visiting order (row by row) and the same strict comparison, so the same argmax. Its time
 * does not depend on the data: with jumps, the planner's calibration (the same inputs call after
 * call, which the branch predictor learns) timed tiny.mp's maxpool at 17 us per 128 samples and
 * training ran it in 87. */
static void maxpool2_plane(const float *xp, float *yp, float *sp, size_t w, size_t oh, size_t ow)
{
    for (size_t oy = 0; oy < oh; oy++) {
        const float *r0 = xp + 2 * oy * w, *r1 = r0 + w;
        uint32_t at0 = (uint32_t)(2 * oy * w), at1 = at0 + (uint32_t)w; /* each row's first */
        for (size_t ox = 0; ox < ow; ox++, at0 += 2, at1 += 2) {
            float v = r0[2 * ox];
            uint32_t best = at0;
            best = take_if_greater(r0[2 * ox + 1], &v, at0 + 1, best);
            best = take_if_greater(r1[2 * ox], &v, at1, best);
            best = take_if_greater(r1[2 * ox + 1], &v, at1 + 1, best);
            yp[oy * ow + ox] = v;
            memcpy(&sp[oy * ow + ox], &best, sizeof best);
        }
    }
}

static void maxpool_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                            const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx;
    (void)param;
    size_t k = l->kernel, h = l->in.d[1], w = l->in.d[2], oh = l->out.d[1], ow = l->out.d[2];
    size_t planes = batch * l->in.d[0];
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * h * w; /* (h, w) */
        float *yp = y + p * oh * ow;     /* (oh, ow) */
        float *sp = saved + p * oh * ow; /* (oh, ow) argmax offsets within the plane */
        if (k == 2) {
            maxpool2_plane(xp, yp, sp, w, oh, ow);
            continue;
        }
        for (size_t oy = 0; oy < oh; oy++)
            for (size_t ox = 0; ox < ow; ox++) {
                uint32_t best = (uint32_t)(oy * k * w + ox * k);
                for (size_t i = 0; i < k; i++)
                    for (size_t j = 0; j < k; j++) {
                        uint32_t at = (uint32_t)((oy * k + i) * w + ox * k + j);
                        if (xp[at] > xp[best]) /* strict: ties keep the first maximum */
                            best = at;
                    }
                yp[oy * ow + ox] = xp[best];
                memcpy(&sp[oy * ow + ox], &best, sizeof best);
            }
    }
}

static void maxpool_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                   const float *param, const float *x, const float *y,
                                   const float *saved, const float *dy, float *dx, size_t batch)
{
    (void)ctx;
    (void)param;
    (void)x;
    (void)y;
    size_t hw = l->in.d[1] * l->in.d[2], ohw = l->out.d[1] * l->out.d[2];
    size_t planes = batch * l->in.d[0];
    memset(dx, 0, planes * hw * sizeof(float));
    for (size_t p = 0; p < planes; p++) {
        float *dxp = dx + p * hw;
        for (size_t o = 0; o < ohw; o++) {
            uint32_t at;
            memcpy(&at, &saved[p * ohw + o], sizeof at);
            dxp[at] += dy[p * ohw + o]; /* windows do not overlap: each input gets one term */
        }
    }
}

static void avgpool_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                            const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx;
    (void)param;
    (void)saved;
    size_t k = l->kernel, h = l->in.d[1], w = l->in.d[2], oh = l->out.d[1], ow = l->out.d[2];
    size_t planes = batch * l->in.d[0];
    float inv = 1.0f / (float)(k * k);
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * h * w;
        float *yp = y + p * oh * ow;
        for (size_t oy = 0; oy < oh; oy++)
            for (size_t ox = 0; ox < ow; ox++) {
                float sum = 0.0f;
                for (size_t i = 0; i < k; i++)
                    for (size_t j = 0; j < k; j++)
                        sum += xp[(oy * k + i) * w + ox * k + j];
                yp[oy * ow + ox] = sum * inv;
            }
    }
}

static void avgpool_backward_input(const struct mp_layer *l, const struct mp_ctx *ctx,
                                   const float *param, const float *x, const float *y,
                                   const float *saved, const float *dy, float *dx, size_t batch)
{
    (void)ctx;
    (void)param;
    (void)x;
    (void)y;
    (void)saved;
    size_t k = l->kernel, h = l->in.d[1], w = l->in.d[2], oh = l->out.d[1], ow = l->out.d[2];
    size_t planes = batch * l->in.d[0];
    float inv = 1.0f / (float)(k * k);
    memset(dx, 0, planes * h * w * sizeof(float)); /* rows/columns outside every window */
    for (size_t p = 0; p < planes; p++) {
        float *dxp = dx + p * h * w;
        const float *dyp = dy + p * oh * ow;
        for (size_t oy = 0; oy < oh; oy++)
            for (size_t ox = 0; ox < ow; ox++) {
                float g = dyp[oy * ow + ox] * inv;
                for (size_t i = 0; i < k; i++)
                    for (size_t j = 0; j < k; j++)
                        dxp[(oy * k + i) * w + ox * k + j] = g;
            }
    }
}

static struct mp_cost pool_cost(const struct mp_layer *l, size_t batch)
{
    double b = (double)batch, in = (double)mp_shape_numel(l->in);
    double out = (double)mp_shape_numel(l->out), kk = (double)(l->kernel * l->kernel);
    struct mp_cost c = {0};
    c.flops_fwd = b * out * kk;
    c.flops_bwd_input = l->ops == &mp__ops_maxpool ? b * out : b * out * kk;
    c.flops_bwd_weight = 0;
    c.bytes_fwd = 4.0 * b * (in + out) + (l->ops == &mp__ops_maxpool ? 4.0 * b * out : 0.0);
    c.bytes_bwd = 4.0 * b * (in + out) + (l->ops == &mp__ops_maxpool ? 4.0 * b * out : 0.0);
    c.act_bytes_out = sizeof(float) * (size_t)batch * mp_shape_numel(l->out);
    c.saved_bytes = sizeof(float) * (size_t)batch * l->saved_per_sample;
    c.param_bytes = 0;
    return c;
}

const struct mp_layer_ops mp__ops_maxpool = {
    .name = "maxpool",
    .npos_min = 1,
    .npos_max = 1,
    .options = "",
    .plan = pool_plan,
    .init = NULL,
    .forward = maxpool_forward,
    .backward_input = maxpool_backward_input,
    .backward_weight = NULL,
    .cost = pool_cost,
};

const struct mp_layer_ops mp__ops_avgpool = {
    .name = "avgpool",
    .npos_min = 1,
    .npos_max = 1,
    .options = "",
    .plan = pool_plan,
    .init = NULL,
    .forward = avgpool_forward,
    .backward_input = avgpool_backward_input,
    .backward_weight = NULL,
    .cost = pool_cost,
};
