/* Finite-difference gradient checks for any planned layer, for cmocka tests (header-only).
 * fd_check_layer() fills random inputs and parameters from a seed, runs forward, B and W, and
 * compares every analytic gradient (or a random sample of at most FD_MAX_CHECK per tensor) with a
 * central difference of a scalar L computed in double. fd_check_spec() parses a tiny spec and
 * checks each of its layers. It never changes the layers: it only calls their ops. */
#ifndef FD_CHECK_H
#define FD_CHECK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_layer.h"

/* The scalar L:
 *   - ordinary layers: L = sum_i r_i * y_i with a random r, so dL/dy = r is the dy given to B/W;
 *   - loss layers (is_loss): L = loss_sum / global_batch, B is called with dy = NULL.
 * global_batch is 2 * batch (rows: 2 * batch * T on a sequence) so that a loss dividing by `batch`
 * instead of ctx->global_batch fails. On a sequence (T, C) a loss gets one label per token.
 * An embed's input is byte ids, not a variable: its x holds integer ids in [0, V) with repeats (so
 * the scatter-add sums several rows into one E row), and only its parameters are checked.
 *
 * Kinks (relu at 0, maxpool ties): inputs are drawn so that no perturbation crosses one. Within a
 * sample, values alternate in sign with magnitudes on a jittered grid starting at FD_MARGIN: every
 * |x| >= FD_MARGIN and any two values of a sample differ by at least half the grid spacing, which
 * is >= 4 * FD_H. The values are then shuffled. A step of at most FD_H * max(1, |v|) therefore
 * never changes a sign or the order of two inputs. Keep per-sample sizes small (<= ~1000) so the
 * grid stays in roughly [-2, 2], where tanh and sigmoid still have useful slopes.
 *
 * Steps and tolerances: L is accumulated in double, but y is float, so L carries float rounding
 * of about 1e-7 |y| per affected output; with h = 1e-3 that is < 1e-3 of a typical gradient. The
 * central difference's truncation error h^2 f'''/6 is ~1e-7. An entry passes if
 * |a - n| <= FD_RTOL * |n| + FD_STOL * max|n| + FD_ATOL, and the tensor passes if additionally
 * ||a - n||_2 <= FD_NTOL * ||n||_2 + FD_ATOL * sqrt(count). */
#define FD_H 1e-3
#define FD_MARGIN 0.05
#define FD_RTOL 2e-2
#define FD_STOL 5e-3
#define FD_NTOL 1e-2
#define FD_ATOL 1e-5
#define FD_MAX_CHECK 1024

struct fd_bufs {
    const struct mp_layer *l;
    struct mp_ctx ctx;
    size_t batch, nx, ny, np, nsaved, nscratch, nlabels;
    float *x, *param, *y, *saved, *scratch, *r, *dx, *dparam;
    int32_t *labels;
    double loss_sum;
    size_t n_correct;
};

static inline void *fd_alloc(size_t n_floats)
{
    /* At least one element, so a zero-sized tensor still has a valid pointer. */
    void *p = calloc(n_floats ? n_floats : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

static inline void fd_fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

/* One sample's inputs: distinct, away from 0, shuffled (see the comment at the top). */
static inline void fd_fill_sample(float *x, size_t n, struct mp_rng *rng)
{
    double s = 2.0 / (double)(n ? n : 1);
    if (s < 8 * FD_H)
        s = 8 * FD_H;
    for (size_t k = 0; k < n; k++) {
        double mag = FD_MARGIN + ((double)(k / 2) + 0.25 + 0.5 * mp_rng_uniform(rng)) * s;
        x[k] = (float)((k % 2) ? -mag : mag);
    }
    for (size_t k = n; k > 1; k--) {
        size_t j = (size_t)mp_rng_below(rng, k);
        float t = x[k - 1];
        x[k - 1] = x[j];
        x[j] = t;
    }
}

static inline void fd_setup(struct fd_bufs *b, const struct mp_layer *l, size_t batch,
                            uint64_t seed)
{
    memset(b, 0, sizeof *b);
    b->l = l;
    b->batch = batch;
    b->nx = mp_layer_in_len(l) * batch;
    b->ny = mp_layer_out_len(l) * batch;
    b->np = mp_layer_n_param(l);
    b->nsaved = l->saved_per_sample * batch;
    b->nscratch = l->scratch_per_sample * batch + l->scratch_fixed;
    b->x = fd_alloc(b->nx);
    b->param = fd_alloc(b->np);
    b->y = fd_alloc(b->ny);
    b->saved = fd_alloc(b->nsaved);
    b->scratch = fd_alloc(b->nscratch);
    b->r = fd_alloc(b->ny);
    b->dx = fd_alloc(b->nx);
    b->dparam = fd_alloc(b->np);
    size_t rows = mp_shape_rows(l->in), feat = mp_shape_feat(l->in);
    b->nlabels = batch * rows;
    b->labels = calloc(b->nlabels ? b->nlabels : 1, sizeof(int32_t));
    assert_non_null(b->labels);

    struct mp_rng rng;
    mp_rng_seed(&rng, seed);
    size_t in_len = mp_layer_in_len(l);
    for (size_t s = 0; s < batch; s++)
        fd_fill_sample(b->x + s * in_len, in_len, &rng);
    if (l->kind == MP_LAYER_EMBED) /* ids: every third row reuses id 1 % V, the rest any id */
        for (size_t r = 0; r < b->nx; r++)
            b->x[r] = (float)(r % 3 == 1 ? 1 % l->vocab : mp_rng_below(&rng, l->vocab));
    for (size_t i = 0; i < b->np; i++)
        b->param[i] = 2.0f * mp_rng_uniform(&rng) - 1.0f;
    for (size_t i = 0; i < b->ny; i++)
        b->r[i] = 2.0f * mp_rng_uniform(&rng) - 1.0f;
    for (size_t s = 0; s < b->nlabels; s++)
        b->labels[s] = (int32_t)mp_rng_below(&rng, feat ? feat : 1);

    b->ctx.labels = b->labels;
    b->ctx.training = 1;
    b->ctx.seed = seed ^ 0x5eedULL;
    b->ctx.step = 3;
    b->ctx.micro_batch = 1;
    b->ctx.sample_base = 0;
    b->ctx.global_batch = 2 * b->nlabels;
    b->ctx.scratch = b->scratch;
    b->ctx.scratch_len = b->nscratch;
}

static inline void fd_teardown(struct fd_bufs *b)
{
    free(b->x);
    free(b->param);
    free(b->y);
    free(b->saved);
    free(b->scratch);
    free(b->r);
    free(b->dx);
    free(b->dparam);
    free(b->labels);
}

/* Runs forward on the current x and param and returns L in double. */
static inline double fd_eval(struct fd_bufs *b)
{
    b->loss_sum = 0;
    b->n_correct = 0;
    b->ctx.loss_sum = &b->loss_sum;
    b->ctx.n_correct = &b->n_correct;
    fd_fill_nan(b->scratch, b->nscratch);
    b->l->ops->forward(b->l, &b->ctx, b->param, b->x, b->y, b->saved, b->batch);
    if (b->l->is_loss)
        return b->loss_sum / (double)b->ctx.global_batch;
    double L = 0;
    for (size_t i = 0; i < b->ny; i++)
        L += (double)b->r[i] * (double)b->y[i];
    return L;
}

/* Central difference of L with respect to v[i]; restores v[i]. */
static inline double fd_numeric(struct fd_bufs *b, float *v, size_t i)
{
    float v0 = v[i];
    double h = FD_H * fmax(1.0, fabs((double)v0));
    float vp = (float)(v0 + h), vm = (float)(v0 - h);
    v[i] = vp;
    double lp = fd_eval(b);
    v[i] = vm;
    double lm = fd_eval(b);
    v[i] = v0;
    return (lp - lm) / ((double)vp - (double)vm);
}

/* Compares analytic gradient a (of tensor v, n entries) with finite differences. */
static inline void fd_compare(struct fd_bufs *b, const char *what, float *v, const float *a,
                              size_t n, uint64_t seed)
{
    if (n == 0)
        return;
    size_t count = n <= FD_MAX_CHECK ? n : FD_MAX_CHECK;
    size_t *idx = malloc(count * sizeof *idx);
    double *num = malloc(count * sizeof *num);
    assert_non_null(idx);
    assert_non_null(num);
    struct mp_rng rng;
    mp_rng_seed(&rng, seed ^ 0xfdULL);
    double scale = 0, nn = 0, dd = 0;
    for (size_t c = 0; c < count; c++) {
        idx[c] = n <= FD_MAX_CHECK ? c : (size_t)mp_rng_below(&rng, n);
        num[c] = fd_numeric(b, v, idx[c]);
        scale = fmax(scale, fabs(num[c]));
    }
    for (size_t c = 0; c < count; c++) {
        double an = (double)a[idx[c]], d = fabs(an - num[c]);
        nn += num[c] * num[c];
        dd += d * d;
        if (!(d <= FD_RTOL * fabs(num[c]) + FD_STOL * scale + FD_ATOL)) {
            print_error("%s (line %d) %s[%zu]: analytic %.8g, finite difference %.8g "
                        "(max |fd| %.3g)\n",
                        b->l->ops->name, b->l->line, what, idx[c], an, num[c], scale);
            free(idx);
            free(num);
            fail();
        }
    }
    free(idx);
    free(num);
    if (!(sqrt(dd) <= FD_NTOL * sqrt(nn) + FD_ATOL * sqrt((double)count))) {
        print_error("%s %s: ||a - fd|| = %.3g vs ||fd|| = %.3g\n", b->l->ops->name, what, sqrt(dd),
                    sqrt(nn));
        fail();
    }
}

/* Forward twice gives the same bits; loss layers count argmax hits like the harness does. */
static inline void fd_check_forward(struct fd_bufs *b)
{
    fd_fill_nan(b->y, b->ny);
    fd_eval(b);
    float *y1 = fd_alloc(b->ny);
    memcpy(y1, b->y, b->ny * sizeof(float));
    fd_fill_nan(b->y, b->ny);
    fd_eval(b);
    assert_memory_equal(y1, b->y, b->ny * sizeof(float));
    free(y1);
    for (size_t i = 0; i < b->ny; i++)
        assert_true(isfinite(b->y[i]));
    if (!b->l->is_loss)
        return;
    size_t n = mp_shape_feat(b->l->in), hits = 0;
    for (size_t s = 0; s < b->nlabels; s++) { /* one prediction per row */
        const float *xs = b->x + s * n;
        size_t best = 0;
        for (size_t j = 1; j < n; j++)
            if (xs[j] > xs[best])
                best = j;
        hits += best == (size_t)b->labels[s];
    }
    assert_int_equal(b->n_correct, hits);
    assert_true(isfinite(b->loss_sum));
}

/* W into zeroed dparam, then again: the second call must accumulate (2x the first); then with
 * ctx->overwrite over garbage, which must give the first call's values. */
static inline void fd_weight_grad(struct fd_bufs *b, const float *dy)
{
    const struct mp_layer *l = b->l;
    memset(b->dparam, 0, b->np * sizeof(float));
    fd_fill_nan(b->scratch, b->nscratch);
    l->ops->backward_weight(l, &b->ctx, b->x, b->y, b->saved, dy, b->dparam, b->batch);
    float *g1 = fd_alloc(b->np);
    memcpy(g1, b->dparam, b->np * sizeof(float));
    double gmax = 0;
    for (size_t i = 0; i < b->np; i++)
        gmax = fmax(gmax, fabs((double)g1[i]));
    fd_fill_nan(b->scratch, b->nscratch);
    l->ops->backward_weight(l, &b->ctx, b->x, b->y, b->saved, dy, b->dparam, b->batch);
    for (size_t i = 0; i < b->np; i++) {
        double want = 2.0 * g1[i], got = b->dparam[i];
        if (!(fabs(got - want) <= 1e-5 * (fabs(want) + gmax) + 1e-30)) {
            print_error("%s: backward_weight does not accumulate: dparam[%zu] %.8g after two "
                        "calls, %.8g after one\n", l->ops->name, i, got, (double)g1[i]);
            free(g1);
            fail();
        }
    }
    /* The step's first micro-batch overwrites: over garbage (NaN) it must give the very values
     * that accumulating onto zeros gave (== also equates the zero of either sign). */
    fd_fill_nan(b->dparam, b->np);
    fd_fill_nan(b->scratch, b->nscratch);
    b->ctx.overwrite = 1;
    l->ops->backward_weight(l, &b->ctx, b->x, b->y, b->saved, dy, b->dparam, b->batch);
    b->ctx.overwrite = 0;
    for (size_t i = 0; i < b->np; i++) {
        if (!(b->dparam[i] == g1[i])) {
            print_error("%s: backward_weight with ctx->overwrite: dparam[%zu] %.9g, but %.9g "
                        "accumulated onto zeros\n", l->ops->name, i, (double)b->dparam[i],
                        (double)g1[i]);
            free(g1);
            fail();
        }
    }
    memcpy(b->dparam, g1, b->np * sizeof(float));
    free(g1);
}

/* Checks forward determinism, B (dx) and W (dparam, accumulation) of a planned layer. */
static inline void fd_check_layer(const struct mp_layer *l, size_t batch, uint64_t seed)
{
    struct fd_bufs b;
    assert_non_null(l->ops->forward);
    assert_non_null(l->ops->backward_input);
    fd_setup(&b, l, batch, seed);
    fd_check_forward(&b);

    /* Forward once more to leave y and saved consistent with x for B and W. */
    fd_eval(&b);
    const float *dy = l->is_loss ? NULL : b.r;
    fd_fill_nan(b.dx, b.nx);
    fd_fill_nan(b.scratch, b.nscratch);
    l->ops->backward_input(l, &b.ctx, b.param, b.x, b.y, b.saved, dy, b.dx, batch);
    if (b.np > 0) {
        assert_non_null(l->ops->backward_weight);
        fd_weight_grad(&b, dy);
    }
    for (size_t i = 0; i < b.nx; i++)
        assert_true(isfinite(b.dx[i]));

    if (l->kind == MP_LAYER_EMBED) /* nothing flows into ids: zeros if anyone asks */
        for (size_t i = 0; i < b.nx; i++)
            assert_true(b.dx[i] == 0.0f);
    else
        fd_compare(&b, "dx", b.x, b.dx, b.nx, seed);
    fd_compare(&b, "dparam", b.param, b.dparam, b.np, seed + 1);
    fd_teardown(&b);
}

/* Parses `spec_text` (a whole model: input first, loss last) and checks every layer after the
 * input. Each layer gets its own random input of its planned shape. */
static inline void fd_check_spec(const char *spec_text, size_t batch, uint64_t seed)
{
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(&m, "fd_spec", spec_text, strlen(spec_text), &err) != 0) {
        print_error("fd_check_spec: %s\n", err.msg);
        fail();
    }
    for (int i = 1; i < m.n_layers; i++)
        fd_check_layer(&m.layers[i], batch, seed + 7919u * (uint64_t)i);
    mp_model_free(&m);
}

#endif
