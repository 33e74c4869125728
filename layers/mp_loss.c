/* Loss layers, always last: softmax_xent (fused log-softmax + NLL, torch's CrossEntropyLoss) and
 * mse (against the one-hot label; per-sample loss is the mean over features, so the mean over the
 * global batch equals torch's MSELoss(reduction="mean")). On a sequence (T, V) every token is a
 * row with its own label (next-token prediction), and "sample" below means row: ctx->labels holds
 * batch · T labels and ctx->global_batch counts the rows of the global batch. Forward adds per-sample losses, in sample
 * order, into *ctx->loss_sum and argmax hits into *ctx->n_correct; backward ignores dy (NULL) and
 * returns d(loss_sum / ctx->global_batch)/dx. Labels must lie in [0, features): the data loader
 * checks them; with ctx->labels NULL forward only predicts. No allocation, no MPI. */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "mp_layer_ops.h"

static int loss_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    (void)err;
    l->in = in;
    l->out = in; /* softmax_xent: probabilities; mse: the predictions */
    l->n_weight = l->n_bias = 0;
    l->saved_per_sample = l->scratch_per_sample = l->scratch_fixed = 0;
    l->is_loss = 1;
    return 0;
}

/* First index of the largest value (as torch.argmax on ties). */
static size_t argmax(const float *v, size_t n)
{
    size_t best = 0;
    for (size_t j = 1; j < n; j++)
        if (v[j] > v[best])
            best = j;
    return best;
}

static struct mp_cost loss_cost(const struct mp_layer *l, size_t batch, double flops_per)
{
    struct mp_cost c = {0};
    double n = (double)batch * (double)mp_layer_in_len(l);
    c.flops_fwd = flops_per * n;
    c.flops_bwd_input = 2 * n;
    c.bytes_fwd = 8 * n;
    c.bytes_bwd = 8 * n;
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    return c;
}

/* ---- softmax_xent: y = softmax(x); loss = logsumexp(x) - x[label] ---- */

static void xent_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                         const float *x, float *y, float *saved, size_t batch)
{
    (void)param, (void)saved;
    size_t n = mp_shape_feat(l->in);
    batch *= mp_shape_rows(l->in); /* rows */
    for (size_t s = 0; s < batch; s++) {
        const float *xs = x + s * n; /* (n) */
        float *ys = y + s * n;       /* (n) */
        size_t top = argmax(xs, n);
        float mx = xs[top];
        double sum = 0; /* shifting by the max keeps every exp in (0, 1]: no overflow */
        for (size_t j = 0; j < n; j++) {
            ys[j] = expf(xs[j] - mx);
            sum += ys[j];
        }
        float inv = (float)(1.0 / sum);
        for (size_t j = 0; j < n; j++)
            ys[j] *= inv;
        if (!ctx->labels)
            continue; /* prediction only */
        int32_t label = ctx->labels[s];
        assert(label >= 0 && (size_t)label < n);
        if (ctx->loss_sum)
            *ctx->loss_sum += log(sum) - ((double)xs[label] - (double)mx);
        if (ctx->n_correct)
            *ctx->n_correct += top == (size_t)label;
    }
}

/* dx = (p - onehot(label)) / global_batch, from the probabilities kept in y. */
static void xent_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                          const float *x, const float *y, const float *saved, const float *dy,
                          float *dx, size_t batch)
{
    (void)param, (void)x, (void)saved, (void)dy;
    size_t n = mp_shape_feat(l->in);
    batch *= mp_shape_rows(l->in); /* rows */
    float inv_b = 1.0f / (float)ctx->global_batch;
    for (size_t s = 0; s < batch; s++) {
        const float *ys = y + s * n; /* (n) */
        float *dxs = dx + s * n;     /* (n) */
        for (size_t j = 0; j < n; j++)
            dxs[j] = ys[j] * inv_b;
        dxs[ctx->labels[s]] -= inv_b;
    }
}

static struct mp_cost xent_cost(const struct mp_layer *l, size_t batch)
{
    return loss_cost(l, batch, 25);
}

/* ---- mse: loss = sum_j (x_j - onehot_j)^2 / features ---- */

static void mse_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                        const float *x, float *y, float *saved, size_t batch)
{
    (void)param, (void)saved;
    size_t n = mp_shape_feat(l->in);
    batch *= mp_shape_rows(l->in); /* rows */
    memcpy(y, x, batch * n * sizeof(float)); /* (batch, n) */
    for (size_t s = 0; s < batch && ctx->labels; s++) { /* without labels: prediction only */
        const float *xs = x + s * n; /* (n) */
        int32_t label = ctx->labels[s];
        assert(label >= 0 && (size_t)label < n);
        double sq = 0;
        for (size_t j = 0; j < n; j++) {
            double d = (double)xs[j] - (j == (size_t)label ? 1.0 : 0.0);
            sq += d * d;
        }
        if (ctx->loss_sum)
            *ctx->loss_sum += sq / (double)n;
        if (ctx->n_correct)
            *ctx->n_correct += argmax(xs, n) == (size_t)label;
    }
}

/* dx = 2 (x - t) / (features * global_batch). */
static void mse_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                         const float *x, const float *y, const float *saved, const float *dy,
                         float *dx, size_t batch)
{
    (void)param, (void)y, (void)saved, (void)dy;
    size_t n = mp_shape_feat(l->in);
    batch *= mp_shape_rows(l->in); /* rows */
    float k = (float)(2.0 / ((double)n * (double)ctx->global_batch));
    for (size_t s = 0; s < batch; s++) {
        const float *xs = x + s * n; /* (n) */
        float *dxs = dx + s * n;     /* (n) */
        for (size_t j = 0; j < n; j++)
            dxs[j] = k * xs[j];
        dxs[ctx->labels[s]] -= k;
    }
}

static struct mp_cost mse_cost(const struct mp_layer *l, size_t batch)
{
    return loss_cost(l, batch, 3);
}

const struct mp_layer_ops mp__ops_softmax_xent = {
    .name = "softmax_xent", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = loss_plan, .forward = xent_forward, .backward_input = xent_backward,
    .cost = xent_cost, .y_in_backward = 1,
};
const struct mp_layer_ops mp__ops_mse = {
    .name = "mse", .npos_min = 0, .npos_max = 0, .options = "",
    .plan = loss_plan, .forward = mse_forward, .backward_input = mse_backward,
    .cost = mse_cost,
};
