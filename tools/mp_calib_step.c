/* One training step of a model's first n layers (the whole of any model whose step is short) on
 * one rank, in place (mp_calib.c's correction of the warm per-shape rates): at mb samples, every
 * forward in layer order on activations that flow from layer to layer, then every input-grad and
 * every weight-grad from the last layer back (as the executor runs a chunk; a prefix without its
 * loss starts from a zero gradient), then the optimizer over one arena of parameters, gradients
 * and state. What each pass kind costs here, against the same passes timed warm one by one, is
 * what the caches cost a real step: weights come back cold after the optimizer streamed the
 * arena, a layer's output is still hot for the next one. Only timing: results are thrown away. */
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_calib.h"
#include "mp_calib_cache.h"
#include "mp_optim.h"

#define ALIGN 16 /* floats: 64 bytes */
#define STEP_MIN_S 0.05 /* timed steps: at least 3 and this long, at most STEP_MAX */
#define STEP_LONG_S 0.15 /* or fewer, once they took this long: a timer tick cannot bend them */
#define STEP_MAX 32

static size_t up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

struct chain {
    float **act, **grad, **saved; /* per layer i: its output, the gradient w.r.t. it, saved */
    float *param, *dparam, *state, *scratch;
    size_t *off, n_param, scratch_len;
    int32_t *labels;
};

static void chain_free(struct chain *c, int n)
{
    for (int i = 0; c->act && i < n; i++)
        free(c->act[i]), free(c->grad[i]), free(c->saved[i]);
    free(c->act), free(c->grad), free(c->saved), free(c->off);
    free(c->param), free(c->dparam), free(c->state), free(c->scratch), free(c->labels);
}

static float *zeros(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

static int chain_alloc(struct chain *c, const struct mp_model *m, int n, size_t mb)
{
    memset(c, 0, sizeof *c);
    c->act = calloc((size_t)n, sizeof *c->act), c->grad = calloc((size_t)n, sizeof *c->grad);
    c->saved = calloc((size_t)n, sizeof *c->saved), c->off = calloc((size_t)n, sizeof *c->off);
    if (!c->act || !c->grad || !c->saved || !c->off)
        return -1;
    for (int i = 0; i < n; i++) {
        const struct mp_layer *l = &m->layers[i];
        size_t s = l->scratch_per_sample * mb + l->scratch_fixed;
        c->scratch_len = s > c->scratch_len ? s : c->scratch_len;
        c->off[i] = c->n_param;
        c->n_param += up(mp_layer_n_param(l));
        c->act[i] = zeros(mb * mp_layer_out_len(l)), c->grad[i] = zeros(mb * mp_layer_out_len(l));
        c->saved[i] = zeros(mb * l->saved_per_sample);
        if (!c->act[i] || !c->grad[i] || !c->saved[i])
            return -1;
    }
    size_t rows = mb * m->label_len, in = mb * mp_layer_out_len(&m->layers[0]);
    c->param = zeros(c->n_param), c->dparam = zeros(c->n_param);
    c->state = zeros(2 * c->n_param), c->scratch = zeros(c->scratch_len);
    c->labels = calloc(rows ? rows : 1, sizeof *c->labels);
    if (!c->param || !c->dparam || !c->state || !c->scratch || !c->labels)
        return -1;
    for (size_t r = 0; r < rows; r++)
        c->labels[r] = (int32_t)(r % (m->n_classes ? m->n_classes : 1));
    for (size_t k = 0; k < in; k++) /* pixels in [0, 1), or token ids for a language model */
        c->act[0][k] = m->tokens ? (float)(k % m->layers[1].vocab) : (float)(k % 255) / 255.0f;
    for (int i = 1; i < n; i++)
        if (mp_layer_n_param(&m->layers[i]))
            mp_layer_init_params(&m->layers[i], c->param + c->off[i], 1);
    return 0;
}

/* One step; t[0..2] += seconds of all forwards, input-grads and weight-grads, *opt += the
 * optimizer's. */
static void step(const struct mp_model *m, int n, struct chain *c, size_t mb,
                 const struct mp_optim_cfg *cfg, uint64_t k, double t[3], double *opt)
{
    double loss = 0, t0;
    size_t correct = 0;
    struct mp_ctx ctx = {.labels = c->labels,
                         .training = 1,
                         .seed = 1,
                         .overwrite = 1,
                         .global_batch = mb * m->label_len,
                         .scratch = c->scratch,
                         .scratch_len = c->scratch_len,
                         .loss_sum = &loss,
                         .n_correct = &correct};
    t0 = mp__calib_now();
    for (int i = 1; i < n; i++) {
        const struct mp_layer *l = &m->layers[i];
        l->ops->forward(l, &ctx, c->param + c->off[i], c->act[i - 1], c->act[i], c->saved[i], mb);
    }
    t[0] += mp__calib_now() - t0, t0 = mp__calib_now();
    for (int i = n - 1; i >= m->dx_from; i--) {
        const struct mp_layer *l = &m->layers[i];
        l->ops->backward_input(l, &ctx, c->param + c->off[i], c->act[i - 1], c->act[i], c->saved[i],
                               l->is_loss ? NULL : c->grad[i], c->grad[i - 1], mb);
    }
    t[1] += mp__calib_now() - t0, t0 = mp__calib_now();
    for (int i = n - 1; i >= 1; i--) {
        const struct mp_layer *l = &m->layers[i];
        if (l->ops->backward_weight)
            l->ops->backward_weight(l, &ctx, c->act[i - 1], c->act[i], c->saved[i], c->grad[i],
                                    c->dparam + c->off[i], mb);
    }
    t[2] += mp__calib_now() - t0, t0 = mp__calib_now();
    for (int i = 1; i < n; i++) {
        size_t np = mp_layer_n_param(&m->layers[i]);
        if (np)
            mp_optim_step(cfg, 1e-6f, k, c->param + c->off[i], c->dparam + c->off[i],
                          c->state + c->off[i], c->n_param, np);
    }
    *opt += mp__calib_now() - t0;
}

int mp__calib_step(const struct mp_model *m, int n, size_t mb, enum mp_optim_kind optim,
                   double t[3], double *optim_s, struct mp_err *err)
{
    struct chain c;
    struct mp_optim_cfg cfg;
    mp_optim_defaults(&cfg, optim);
    int rc = 0;
    if (chain_alloc(&c, m, n, mb)) {
        rc = MP_FAIL(err, NOMEM, "out of memory for a step of %s on %zu samples", m->path, mb);
    } else {
        /* One step of a small model takes a millisecond or two: one timing of it was at the
         * mercy of a timer tick (models/tiny.mp predicted 29% slow). Each pass kind's median
         * over at least 3 steps and STEP_MIN_S, or fewer steps of STEP_LONG_S in all (gpt.mp's
         * 0.25 s steps, timed 3 times at each of 5 sizes, took 4 s of its 9 s calibration). */
        double warm[3] = {0, 0, 0}, warm_opt = 0, k_t[3][STEP_MAX], k_opt[STEP_MAX];
        step(m, n, &c, mb, &cfg, 1, warm, &warm_opt); /* first touches, BLIS's first calls */
        size_t k = 0;
        for (double start = mp__calib_now();
             k < STEP_MAX && (k < 3 || mp__calib_now() - start < STEP_MIN_S) &&
             (k == 0 || mp__calib_now() - start < STEP_LONG_S);
             k++) {
            double one[3] = {0, 0, 0}, opt = 0;
            step(m, n, &c, mb, &cfg, 2 + k, one, &opt);
            for (int p = 0; p < 3; p++)
                k_t[p][k] = one[p];
            k_opt[k] = opt;
        }
        for (int p = 0; p < 3; p++)
            t[p] = mp_median(k_t[p], k);
        *optim_s = mp_median(k_opt, k);
    }
    chain_free(&c, n);
    return rc;
}
