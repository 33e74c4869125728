/* The layer registry: one ops table per kind (indexed by enum mp_layer_kind), lookup by spec
 * keyword with "did you mean" suggestions, the `input` layer, and per-layer parameter
 * initialisation. The spec parser lives in mp_spec.c. No MPI, no allocation in kernels. */
#include "mp_layer.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "mp_layer_ops.h"

size_t mp_shape_numel(struct mp_shape s)
{
    size_t n = 1;
    for (int i = 0; i < s.ndim && i < 3; i++)
        n *= s.d[i];
    return s.ndim > 0 ? n : 0;
}

static const struct mp_layer_ops *const registry[] = {
    [MP_LAYER_INPUT] = &mp__ops_input,
    [MP_LAYER_DENSE] = &mp__ops_dense,
    [MP_LAYER_CONV2D] = &mp__ops_conv2d,
    [MP_LAYER_MAXPOOL] = &mp__ops_maxpool,
    [MP_LAYER_AVGPOOL] = &mp__ops_avgpool,
    [MP_LAYER_FLATTEN] = &mp__ops_flatten,
    [MP_LAYER_RELU] = &mp__ops_relu,
    [MP_LAYER_GELU] = &mp__ops_gelu,
    [MP_LAYER_TANH] = &mp__ops_tanh,
    [MP_LAYER_SIGMOID] = &mp__ops_sigmoid,
    [MP_LAYER_DROPOUT] = &mp__ops_dropout,
    [MP_LAYER_LAYERNORM] = &mp__ops_layernorm,
    [MP_LAYER_SOFTMAX_XENT] = &mp__ops_softmax_xent,
    [MP_LAYER_MSE] = &mp__ops_mse,
    [MP_LAYER_EMBED] = &mp__ops_embed,
    [MP_LAYER_ATTENTION] = &mp__ops_attention,
    [MP_LAYER_LM_HEAD] = &mp__ops_lm_head,
};
static_assert(sizeof registry / sizeof registry[0] == MP_LAYER_COUNT, "one ops table per kind");

const struct mp_layer_ops *mp_layer_ops_of(enum mp_layer_kind kind)
{
    return (kind >= 0 && kind < MP_LAYER_COUNT) ? registry[kind] : NULL;
}

const struct mp_layer_ops *mp_layer_ops_find(const char *name, enum mp_layer_kind *kind)
{
    for (int k = 0; k < MP_LAYER_COUNT; k++) {
        if (strcmp(registry[k]->name, name) == 0) {
            if (kind)
                *kind = (enum mp_layer_kind)k;
            return registry[k];
        }
    }
    return NULL;
}

/* Levenshtein distance, with names capped at 63 characters (longer ones are far from all). */
size_t mp__layer_name_distance(const char *a, const char *b)
{
    size_t la = strnlen(a, 63), lb = strnlen(b, 63);
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *mp_layer_nearest_name(const char *name)
{
    const char *best = registry[0]->name;
    size_t best_d = (size_t)-1;
    for (int k = 0; k < MP_LAYER_COUNT; k++) {
        size_t d = mp__layer_name_distance(name, registry[k]->name);
        if (d < best_d) {
            best_d = d;
            best = registry[k]->name;
        }
    }
    return best;
}

static void tensor_set(struct mp_tensor *t, const char *name, size_t off, size_t numel, int ndim,
                       const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->off = off;
    t->numel = numel;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
}

int mp_layer_tensors(const struct mp_layer *l, struct mp_tensor *t)
{
    if (mp_layer_n_param(l) == 0)
        return 0;
    if (l->ops->tensors)
        return l->ops->tensors(l, t);
    int n = 0;
    if (l->n_weight) {
        int64_t shape[4] = {(int64_t)l->n_weight, 0, 0, 0};
        int ndim = 1;
        if (l->kind == MP_LAYER_DENSE) { /* [out, in] per row */
            shape[0] = (int64_t)l->n_out;
            shape[1] = (int64_t)mp_shape_feat(l->in);
            ndim = 2;
        } else if (l->kind == MP_LAYER_CONV2D) { /* [out, in, kh, kw] */
            shape[0] = (int64_t)l->n_out;
            shape[1] = (int64_t)l->in.d[0];
            shape[2] = shape[3] = (int64_t)l->kernel;
            ndim = 4;
        }
        tensor_set(&t[n++], "weight", 0, l->n_weight, ndim, shape);
    }
    if (l->n_bias) {
        int64_t shape[1] = {(int64_t)l->n_bias};
        tensor_set(&t[n++], "bias", l->n_weight, l->n_bias, 1, shape);
    }
    return n;
}

void mp__layer_tensor_set(struct mp_tensor *t, const char *name, size_t off, size_t numel,
                          int ndim, const int64_t *shape)
{
    tensor_set(t, name, off, numel, ndim, shape);
}

void mp_layer_init_params(const struct mp_layer *l, float *param, uint64_t seed)
{
    size_t n = mp_layer_n_param(l);
    if (n == 0)
        return;
    if (!l->ops->init) {
        memset(param, 0, n * sizeof(float));
        return;
    }
    /* Seeded by (seed, global layer index) only: every partition initialises layer i alike. A
     * tied lm_head draws its copy of E from the embed's stream, so the copies start equal. */
    uint64_t who = (uint64_t)(mp_layer_is_tied(l) ? l->tie_src : l->index);
    struct mp_rng rng;
    mp_rng_seed(&rng, mp_hash4(seed, who, 0x696e6974ULL /* "init" */, 0));
    l->ops->init(l, param, &rng);
}

/* ---- the `input` layer: declares the per-sample shape; forward copies, it never trains ---- */

/* The parser hands the dims it read to plan as `in` (1 to 3 positive sizes). */
static int input_plan(struct mp_layer *l, struct mp_shape in, struct mp_err *err)
{
    if (in.ndim < 1 || in.ndim > 3)
        return MP_FAIL(err, INPUT, "input: expected 1 to 3 sizes (input C H W, or input N)");
    struct mp_shape s = in;
    if (in.ndim == 2 && !l->tokens) {
        /* (H, W) is a single-channel image. */
        s.ndim = 3;
        s.d[0] = 1;
        s.d[1] = in.d[0];
        s.d[2] = in.d[1];
    }
    l->in = s;
    l->out = s;
    l->n_weight = l->n_bias = 0;
    l->saved_per_sample = l->scratch_per_sample = l->scratch_fixed = 0;
    l->is_loss = 0;
    return 0;
}

static void input_forward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                          const float *x, float *y, float *saved, size_t batch)
{
    (void)ctx, (void)param, (void)saved;
    memmove(y, x, batch * mp_layer_out_len(l) * sizeof(float)); /* (batch, numel) */
}

static void input_backward(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                           const float *x, const float *y, const float *saved, const float *dy,
                           float *dx, size_t batch)
{
    (void)ctx, (void)param, (void)x, (void)y, (void)saved;
    memmove(dx, dy, batch * mp_layer_out_len(l) * sizeof(float)); /* (batch, numel) */
}

static struct mp_cost input_cost(const struct mp_layer *l, size_t batch)
{
    struct mp_cost c = {0};
    c.act_bytes_out = batch * mp_layer_out_len(l) * sizeof(float);
    return c;
}

const struct mp_layer_ops mp__ops_input = {
    .name = "input",
    .npos_min = 1,
    .npos_max = 3,
    .options = "",
    .plan = input_plan,
    .init = NULL,
    .forward = input_forward,
    .backward_input = input_backward,
    .backward_weight = NULL,
    .cost = input_cost,
};
