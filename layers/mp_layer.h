/* Layers: one const ops table per kind, the model spec parser, and the per-call context.
 * Layers know nothing of MPI, ranks or schedules. Kernels return void, never allocate, never
 * call MPI; all fallible work (argument and shape checks) happens in parse/plan. Pointers carry
 * shape comments; `batch` is the number of samples in the call (a micro-batch). */
#ifndef MP_LAYER_H
#define MP_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_rng.h"

enum mp_layer_kind {
    MP_LAYER_INPUT,
    MP_LAYER_DENSE,
    MP_LAYER_CONV2D,
    MP_LAYER_MAXPOOL,
    MP_LAYER_AVGPOOL,
    MP_LAYER_FLATTEN,
    MP_LAYER_RELU,
    MP_LAYER_GELU,
    MP_LAYER_TANH,
    MP_LAYER_SIGMOID,
    MP_LAYER_DROPOUT,
    MP_LAYER_LAYERNORM,
    MP_LAYER_SOFTMAX_XENT,
    MP_LAYER_MSE,
    MP_LAYER_EMBED,
    MP_LAYER_ATTENTION,
    MP_LAYER_LM_HEAD,
    MP_LAYER_COUNT
};

/* Per-sample shape: ndim 1 is (N), ndim 3 is (C, H, W), ndim 2 is a sequence (T, C): T tokens of
 * C features each (`input H W` is turned into (1, H, W) by the input layer, so after planning
 * ndim 2 always means a sequence). Layers that act per token (dense, layernorm, activations,
 * dropout) treat a sequence as batch * T rows of C. */
struct mp_shape {
    int ndim;
    size_t d[3];
};
size_t mp_shape_numel(struct mp_shape s);
/* Rows per sample (T for a sequence, else 1) and features per row (the last dimension for a
 * sequence, else all of them). */
static inline size_t mp_shape_rows(struct mp_shape s) { return s.ndim == 2 ? s.d[0] : 1; }
static inline size_t mp_shape_feat(struct mp_shape s)
{
    return s.ndim == 2 ? s.d[1] : mp_shape_numel(s);
}

/* Analytic cost of one call on `batch` samples. The partitioner turns flops and bytes into seconds
 * with measured machine rates. */
struct mp_cost {
    double flops_fwd, flops_bwd_input, flops_bwd_weight;
    double bytes_fwd, bytes_bwd;  /* bytes read + written by the kernels */
    size_t act_bytes_out;         /* bytes of the output activation */
    size_t saved_bytes;           /* bytes kept from forward to backward beyond input and output */
    size_t param_bytes;           /* bytes of parameters (weights + bias) */
};

/* Per call: labels (loss layers), train/eval, step and micro-batch (dropout's RNG), the global batch
 * size (loss scaling), scratch space (im2col) and where loss layers add their results. */
struct mp_ctx {
    const int32_t *labels; /* (batch) class indices; loss layers only */
    int training;          /* 1: dropout active; 0: evaluation */
    uint64_t seed, step, micro_batch;
    size_t sample_base;    /* index of this call's first sample within its micro-batch */
    size_t global_batch;   /* the loss is a mean over this many samples */
    float *scratch;        /* at least layer->scratch_per_sample * batch + scratch_fixed floats */
    size_t scratch_len;
    double *loss_sum;      /* loss layers add the sum of per-sample losses here (may be NULL) */
    size_t *n_correct;     /* loss layers add the number of argmax hits here (may be NULL) */
    /* labels and the loss scale are per row: a sequence loss has T labels per sample and
     * global_batch counts the rows (predictions) of the global batch. */
    int overwrite;         /* W only: 1 = the step's first micro-batch, dparam = (not +=) its
                              gradient, so the arena needs no zeroing pass before the step */
};

struct mp_layer;

/* One named parameter tensor of a layer: L{index}.{name}, PyTorch's shape, and where its floats
 * lie within the layer's parameters. A `tied` tensor is a copy of another layer's tensor (a tied
 * lm_head's E): it is trained like any tensor but saved, loaded and counted under its source's
 * name, L{tie_src}.{name}. */
#define MP_LAYER_MAX_TENSORS 4
struct mp_tensor {
    char name[24];     /* "weight", "bias", "pos_weight", "in_proj_weight", "out_proj.weight" … */
    size_t off, numel; /* floats, within the layer's parameters */
    int ndim;
    int64_t shape[4];
    int tied;          /* 1: a copy of layer tie_src's tensor of the same name */
};

struct mp_layer_ops {
    const char *name;  /* the spec keyword, e.g. "dense" */
    int npos_min, npos_max;  /* positional numeric arguments accepted */
    const char *options;     /* comma-separated key=value options accepted ("stride,pad") or "" */
    /* Checks arguments against the input shape and fills out, n_weight, n_bias, saved/scratch. */
    int (*plan)(struct mp_layer *l, struct mp_shape in, struct mp_err *err);
    /* Initial parameters (weight then bias), PyTorch's default distributions. May be NULL. */
    void (*init)(const struct mp_layer *l, float *param, struct mp_rng *rng);
    /* y = f(x). saved: saved_per_sample * batch floats the backward may read. */
    void (*forward)(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                    const float *x, float *y, float *saved, size_t batch);
    /* B: dx = dL/dx from dy = dL/dy. Loss layers ignore dy (NULL) and use ctx->labels. */
    void (*backward_input)(const struct mp_layer *l, const struct mp_ctx *ctx, const float *param,
                           const float *x, const float *y, const float *saved, const float *dy,
                           float *dx, size_t batch);
    /* W: dparam += dL/dparam (accumulates, beta = 1), or dparam = dL/dparam when
     * ctx->overwrite (the same bits as += onto zeros). NULL for layers without parameters. */
    void (*backward_weight)(const struct mp_layer *l, const struct mp_ctx *ctx, const float *x,
                            const float *y, const float *saved, const float *dy, float *dparam,
                            size_t batch);
    struct mp_cost (*cost)(const struct mp_layer *l, size_t batch);
    /* The named tensors of the parameters (mp_layer_tensors); NULL: `weight` then `bias` with
     * PyTorch's shapes for the kind. */
    int (*tensors)(const struct mp_layer *l, struct mp_tensor *t);
    /* 1 when backward_input or backward_weight reads y, the layer's own output. A layer that ends
     * a residual body and reads y keeps its raw output apart from the sum (mp_stage.h). */
    int y_in_backward;
};

struct mp_layer {
    const struct mp_layer_ops *ops;
    enum mp_layer_kind kind;
    int index;  /* global index in spec order; the `input` line is 0 */
    int line;   /* line of the spec file, for messages */
    /* Arguments as parsed (meaning per kind): */
    size_t n_out;            /* dense: features; conv2d: output channels */
    size_t kernel, stride, pad; /* conv2d, pools (stride = kernel for pools) */
    float rate;              /* dropout probability (dropout, attention's dropout=P) */
    size_t vocab;            /* embed, lm_head: V */
    size_t heads;            /* attention: H */
    int causal;              /* attention: 1 masks position j > i (default) */
    int pos_learned;         /* embed: 1 adds learned positions [T, C] (default) */
    int tied;                /* lm_head: 1 reads the embed's E (default) */
    int tokens;              /* input: 1 for `input tokens T` (out is (T, 1): byte ids) */
    int tie_src;             /* tied lm_head: global index of the embed whose E it copies; else -1 */
    /* Structure (DESIGN.md §9), set by the parser: */
    int unit;                /* partition unit: a stage boundary may fall before layer i only where
                                layers[i].unit != layers[i - 1].unit */
    int n_res;               /* residual bodies this layer ends, innermost first */
    int res_from[4];         /* for each, the global index of the body's first layer: the block's
                                input is that layer's input, added to this layer's output */
    /* Filled by plan: */
    struct mp_shape in, out;
    size_t n_weight, n_bias;    /* floats; parameters are stored weight then bias */
    size_t saved_per_sample;    /* floats kept from forward to backward */
    size_t scratch_per_sample;  /* floats of temporary space per sample during any call */
    size_t scratch_fixed;       /* floats of temporary space independent of batch */
    int is_loss;
};

static inline size_t mp_layer_n_param(const struct mp_layer *l) { return l->n_weight + l->n_bias; }
static inline size_t mp_layer_in_len(const struct mp_layer *l) { return mp_shape_numel(l->in); }
static inline size_t mp_layer_out_len(const struct mp_layer *l) { return mp_shape_numel(l->out); }

/* A tied lm_head: its parameters are a copy of layer tie_src's E (DESIGN.md §9). */
static inline int mp_layer_is_tied(const struct mp_layer *l)
{
    return l->kind == MP_LAYER_LM_HEAD && l->tied;
}

/* The named tensors of a layer's parameters into t[0 .. MP_LAYER_MAX_TENSORS), in storage order;
 * returns how many (0 for a layer without parameters). */
int mp_layer_tensors(const struct mp_layer *l, struct mp_tensor *t);

/* The ops table of a kind, and lookup by spec keyword (NULL if unknown). */
const struct mp_layer_ops *mp_layer_ops_of(enum mp_layer_kind kind);
const struct mp_layer_ops *mp_layer_ops_find(const char *name, enum mp_layer_kind *kind);
/* The known keyword closest to `name` (edit distance), for "did you mean" messages. */
const char *mp_layer_nearest_name(const char *name);

/* A parsed, planned model: layers[0] is the input, layers[n_layers-1] the loss. */
struct mp_model {
    struct mp_layer *layers;
    int n_layers;
    char path[512];
    char digest[17];    /* hex FNV-1a 64 of the canonical layer list (kinds, arguments) */
    size_t n_classes;   /* features entering the loss layer (per row for a sequence) */
    int tokens;         /* 1: `input tokens T`, a sample is T byte ids (a language model) */
    size_t seq_len;     /* T for a token model, else 0 */
    size_t label_len;   /* labels (predictions) per sample: T for a token model, else 1 */
    int n_units;        /* partition units (layers[i].unit runs 0 .. n_units - 1; the input is 0) */
    int dx_from;        /* the first layer whose input gradient anybody needs: one past the first
                           layer with parameters (the leading parameter-free layers, e.g. MLP's
                           flatten, only see the data), n_layers if none has any */
    size_t max_scratch_per_sample, max_scratch_fixed; /* over all layers */
};

/* Parses a model spec file (DESIGN.md §5). Errors are MP_ERR_INPUT with "FILE:LINE: what" (or
 * MP_ERR_IO if the file cannot be read). */
int mp_model_load(struct mp_model *m, const char *path, struct mp_err *err);
/* The same from text in memory; `name` stands for the file in messages. */
int mp_model_parse(struct mp_model *m, const char *name, const char *text, size_t len,
                   struct mp_err *err);
void mp_model_free(struct mp_model *m);

/* Total parameters and the per-layer initialisation used by every rank: layer i is initialised
 * from an RNG seeded by (seed, i), so initial weights do not depend on the partition. */
void mp_layer_init_params(const struct mp_layer *l, float *param, uint64_t seed);

#endif
