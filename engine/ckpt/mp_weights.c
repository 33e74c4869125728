/* safetensors weights in and out for a partitioned model (mp_weights.h). Names are global, so the
 * file does not know or care how the model was split. */
#include "mp_weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_safetensors.h"
#include "mp_sched.h"

/* L{i}.{name}{suffix}; a tied tensor is named after its source layer (DESIGN.md §9). */
static void tensor_name(char *buf, size_t len, const struct mp_layer *l, const struct mp_tensor *t,
                        const char *suffix)
{
    snprintf(buf, len, "L%d.%.23s%.16s", t->tied ? l->tie_src : l->index, t->name,
             suffix ? suffix : "");
}

/* Rank 0, writing (mp_st_write_filled): a tensor another rank holds, sent by its owner as the
 * writer reaches it. One tag for all: between two ranks the messages of one tag arrive in the
 * order sent, and every owner sends in the file's order (mp_st_send_in_order), the order they
 * are asked for in. */
#define WEIGHTS_TAG 30000
struct save_ctx {
    struct mp_xport *x;
    const struct mp_st_tensor *t; /* the whole file's tensors ... */
    const int *owner;             /* ... and the rank holding each */
};

static int fetch_tensor(void *ctx, const struct mp_st_tensor *t, float *dst, struct mp_err *err)
{
    const struct save_ctx *c = ctx;
    return mp_xport_recv(c->x, dst, t->numel * sizeof(float), c->owner[t - c->t], WEIGHTS_TAG,
                         "weights from their owner", err);
}

static int send_tensor(void *ctx, const struct mp_st_tensor *t, struct mp_err *err)
{
    return mp_xport_send(ctx, t->data, t->numel * sizeof(float), 0, WEIGHTS_TAG,
                         "rank 0 to take the weights", err);
}

int mp_weights_save(const struct mp_stage *st, const float *arena, const int *bounds,
                    struct mp_xport *x, const char *path, const char *suffix, struct mp_err *err)
{
    const struct mp_model *m = st->model;
    int rank = mp_xport_rank(x);
    size_t cap = (size_t)m->n_layers * MP_LAYER_MAX_TENSORS + 1, n_t = 0;
    struct mp_st_tensor *t = calloc(cap, sizeof *t);
    int *owner = calloc(cap, sizeof *owner);
    int rc = t && owner ? 0 : MP_FAIL(err, NOMEM, "out of memory listing the weights");
    /* Every rank lists the whole file alike, its own tensors with their data. Rank 0 writes and
     * takes each other tensor from its owner as the writer reaches it: it held a copy of every
     * parameter at once before (all of gpt_300m.mp's 1.2 GB on a rank planned for a fraction). */
    for (int i = 0; i < m->n_layers && !rc; i++) {
        const struct mp_layer *l = &m->layers[i];
        if (!mp_layer_n_param(l) || mp_layer_is_tied(l)) /* a tied head's E: the embed's, once */
            continue;
        int who = mp_layer_owner(bounds, st->S, st->P, st->place, i);
        struct mp_tensor lt[MP_LAYER_MAX_TENSORS];
        int nlt = mp_layer_tensors(l, lt);
        for (int k = 0; k < nlt; k++, n_t++) {
            struct mp_st_tensor *tt = &t[n_t];
            tt->ndim = lt[k].ndim;
            memcpy(tt->shape, lt[k].shape, sizeof lt[k].shape);
            tensor_name(tt->name, sizeof tt->name, l, &lt[k], suffix);
            tt->data = rank == who ? arena + st->layer_off[i] + lt[k].off : NULL;
            tt->numel = lt[k].numel;
            owner[n_t] = who;
        }
    }
    if (!rc && rank == 0) {
        struct save_ctx c = {.x = x, .t = t, .owner = owner};
        rc = mp_st_write_filled(path, t, n_t, fetch_tensor, &c, err);
    } else if (!rc) { /* its own tensors are those with data */
        rc = mp_st_send_in_order(t, n_t, send_tensor, x, err);
    }
    free(t), free(owner);
    return rc;
}

int mp_weights_extras(const struct mp_st_file *f, const struct mp_model *m, const char *path,
                      int *state, size_t *missing, struct mp_err *err)
{
    unsigned char *ours = calloc(f->n ? f->n : 1, 1); /* ours[j]: f->t[j] is one of m's */
    if (!ours)
        return MP_FAIL(err, NOMEM, "out of memory");
    size_t have = 0, want = 0;
    for (int i = 0; i < m->n_layers; i++) {
        struct mp_tensor lt[MP_LAYER_MAX_TENSORS];
        int nlt = mp_layer_n_param(&m->layers[i]) ? mp_layer_tensors(&m->layers[i], lt) : 0;
        for (int k = 0; k < nlt; k++) {
            char name[96];
            tensor_name(name, sizeof name, &m->layers[i], &lt[k], NULL);
            const struct mp_st_tensor *t = mp_st_find(f, name);
            want += !lt[k].tied; /* a tied head's tensor is its embed's */
            if (t && !ours[t - f->t])
                ours[t - f->t] = 1, have++;
        }
    }
    int rc = 0;
    *state = 0, *missing = want > have ? want - have : 0;
    for (size_t j = 0; j < f->n && !rc; j++) {
        const char *name = f->t[j].name;
        size_t len = strlen(name);
        if (ours[j])
            continue;
        /* A checkpoint's stage file holds each weight's optimizer state beside it as NAME.m and
         * NAME.v (mp_ckpt.h): the weights are there, the state is the file's own business. */
        if (len > 2 && name[len - 2] == '.' && (name[len - 1] == 'm' || name[len - 1] == 'v')) {
            char base[96];
            snprintf(base, sizeof base, "%.*s", (int)(len - 2), name);
            const struct mp_st_tensor *b = mp_st_find(f, base);
            if (b && ours[b - f->t]) {
                *state = 1;
                continue;
            }
        }
        rc = MP_FAIL(err, INPUT, "%s: tensor '%s' belongs to no layer of %s (the file holds %zu "
                     "tensors, %zu of them this model's): written for another model", path, name,
                     m->path, f->n, have);
    }
    free(ours);
    return rc;
}

static int load_layers(struct mp_stage *st, float *arena, const struct mp_st_file *f,
                       const char *path, const char *suffix, struct mp_err *err)
{
    const struct mp_model *m = st->model;
    int rc = 0;
    for (int i = 0; i < m->n_layers && !rc; i++) {
        const struct mp_layer *l = &m->layers[i];
        if (st->layer_off[i] == SIZE_MAX || !mp_layer_n_param(l))
            continue;
        struct mp_tensor lt[MP_LAYER_MAX_TENSORS];
        int nlt = mp_layer_tensors(l, lt);
        for (int k = 0; k < nlt && !rc; k++) {
            int nd = lt[k].ndim;
            const int64_t *shape = lt[k].shape;
            char name[96];
            tensor_name(name, sizeof name, l, &lt[k], suffix);
            const struct mp_st_tensor *t = mp_st_find(f, name);
            if (!t) {
                rc = MP_FAIL(err, INPUT, "%s: no tensor '%s' (layer %d, %s, line %d)", path, name, i,
                             l->ops->name, l->line);
                break;
            }
            int same = t->ndim == nd;
            for (int d = 0; same && d < nd; d++)
                same = t->shape[d] == shape[d];
            if (!same) {
                rc = MP_FAIL(err, INPUT, "%s: tensor '%s' has the wrong shape for layer %d (%s)",
                             path, name, i, l->ops->name);
                break;
            }
            rc = mp_st_copy(f, t, arena + st->layer_off[i] + lt[k].off, err);
        }
    }
    return rc;
}

int mp_weights_load(struct mp_stage *st, float *arena, const char *path, const char *suffix,
                    struct mp_err *err)
{
    struct mp_st_file f;
    if (mp_st_open(&f, path, err))
        return -1;
    int rc = load_layers(st, arena, &f, path, suffix, err);
    mp_st_free(&f);
    return rc;
}

int mp_weights_take(const struct mp_st_file *f, const struct mp_model *m, const char *path,
                    const char *advice, mp_weights_copy_fn copy, void *ctx, int *state,
                    struct mp_err *err)
{
    size_t missing;
    if (mp_weights_extras(f, m, path, state, &missing, err)) {
        /* another model's file: a missing or misshapen tensor of this one says more */
        struct mp_err foreign = *err;
        if (copy(ctx, f, err) == 0)
            *err = foreign;
        return -1;
    }
    if (*state && missing) /* the file's, found alike by every rank: said once */
        return MP_FAIL(err, INPUT, "%s is one stage file of a checkpoint (weights and optimizer "
                       "state), without %zu of %s's tensors: %s", path, missing, m->path, advice),
               mp_err_mark_shared(err);
    return copy(ctx, f, err);
}

struct init_ctx {
    struct mp_stage *st;
    const char *path;
};

static int init_copy(void *ctx, const struct mp_st_file *f, struct mp_err *err)
{
    const struct init_ctx *c = ctx;
    return load_layers(c->st, c->st->param, f, c->path, NULL, err);
}

int mp_weights_load_init(struct mp_stage *st, const char *path, int quiet, struct mp_err *err)
{
    struct mp_st_file f;
    struct init_ctx c = {st, path};
    int state = 0;
    if (mp_st_open(&f, path, err))
        return -1;
    int rc = mp_weights_take(&f, st->model, path, "--init takes a whole model's weights (train "
                             "--save-weights, or a 1-stage checkpoint's file); to continue that "
                             "run, --checkpoint DIR --resume", init_copy, &c, &state, err);
    if (!rc && state && !quiet)
        fprintf(stderr, "mpipe train: note: %s is a checkpoint's stage file: --init takes its "
                "weights and leaves its optimizer state (to continue that run with its state, "
                "--checkpoint DIR --resume)\n", path);
    mp_st_free(&f);
    return rc;
}
