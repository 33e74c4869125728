/* What server and clients of `mpipe fed` share (mp_fed.h): the clients' pipeline layout (stages,
 * chunks, micro-batches, the cost-balanced split that `train` uses without a plan), the packed
 * message parts each stage exchanges with the server, and one process's model as a stage run by
 * the ordinary executor: a client stage of that layout, or the server's whole model as one
 * P = 1 stage. The roles live in mp_fed_server.c and mp_fed_client.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"
#include "mp_weights.h"

int mp__fed_layout(const struct mp_fed_cfg *cfg, struct mp_fed_layout *lay, struct mp_err *err)
{
    memset(lay, 0, sizeof *lay);
    lay->P = cfg->client_stages > 0 ? cfg->client_stages : 1;
    lay->V = mp_sched_chunks(cfg->schedule, cfg->chunks > 0 ? cfg->chunks : 2);
    lay->place = mp_sched_place(cfg->schedule);
    lay->S = lay->P * lay->V;
    lay->M = cfg->micro_batches > 0 ? cfg->micro_batches : 1;
    lay->sched = cfg->schedule;
    if (lay->S > 1024)
        return MP_FAIL(err, USAGE, "--client-stages %d x --chunks %d: at most 1024 virtual "
                       "stages", lay->P, lay->V);
    if (cfg->batch % (size_t)lay->M)
        return MP_FAIL(err, USAGE, "--batch %zu is not divisible by --micro-batches %d",
                       cfg->batch, lay->M);
    lay->mbs = cfg->batch / (size_t)lay->M;
    if (lay->S > cfg->model->n_layers - 1)
        return MP_FAIL(err, USAGE, "--client-stages %d (x %d chunks): the model has only %d "
                       "layers to split", lay->P, lay->V, cfg->model->n_layers - 1);
    if (lay->S == 1) {
        lay->bounds[0] = 1;
        lay->bounds[1] = cfg->model->n_layers;
        return 0;
    }
    return mp_split_for(cfg->model, lay->sched, lay->P, lay->V, lay->M, lay->mbs, lay->bounds,
                        err);
}

static int owner(const struct mp_fed_layout *lay, int layer)
{
    return mp_layer_owner(lay->bounds, lay->S, lay->P, lay->place, layer);
}

size_t mp__fed_part_len(const struct mp_model *m, const struct mp_fed_layout *lay, int stage)
{
    size_t n = 0;
    for (int i = 1; i < m->n_layers; i++)
        if (owner(lay, i) == stage)
            n += mp_layer_n_param(&m->layers[i]);
    return n;
}

void mp__fed_pack(const struct mp_stage *st, const struct mp_fed_layout *lay, int stage,
                  const float *arena, float *part)
{
    const struct mp_model *m = st->model;
    for (int i = 1; i < m->n_layers; i++) {
        size_t n = mp_layer_n_param(&m->layers[i]);
        if (n && owner(lay, i) == stage) {
            memcpy(part, arena + st->layer_off[i], n * sizeof(float));
            part += n;
        }
    }
}

void mp__fed_unpack(const struct mp_stage *st, const struct mp_fed_layout *lay, int stage,
                    const float *part, float *arena)
{
    const struct mp_model *m = st->model;
    for (int i = 1; i < m->n_layers; i++) {
        size_t n = mp_layer_n_param(&m->layers[i]);
        if (n && owner(lay, i) == stage) {
            memcpy(arena + st->layer_off[i], part, n * sizeof(float));
            part += n;
        }
    }
}

void mp__fed_layer_sq(const struct mp_stage *st, const float *a, const float *b, double *sq)
{
    const struct mp_model *m = st->model;
    for (int i = 0; i < m->n_layers; i++) {
        size_t n = mp_layer_n_param(&m->layers[i]), o = st->layer_off[i];
        if (mp_layer_is_tied(&m->layers[i])) /* a tied head's copy of E counts once, as E */
            n = 0;
        double s = 0;
        for (size_t j = 0; n && o != SIZE_MAX && j < n; j++) {
            double d = (double)a[o + j] - (double)b[o + j];
            s += d * d;
        }
        sq[i] = s;
    }
}

int mp__fed_model_init(struct mp_fed_model *fm, const struct mp_model *m,
                       const struct mp_fed_layout *lay, int rank, int state_slots, uint64_t seed,
                       struct mp_xport *x, struct mp_err *err)
{
    memset(fm, 0, sizeof *fm);
    fm->lay = *lay;
    if (mp_sched_make(&fm->sched, lay->sched, lay->P, lay->V, lay->M, err))
        return -1;
    if (mp_sched_validate(&fm->sched, NULL, err))
        return -1;
    if (mp_stage_init(&fm->st, m, lay->bounds, rank, lay->P, lay->V, lay->place, lay->M,
                      lay->mbs, state_slots, err))
        return -1;
    /* The same initial weights as `mpipe train --seed`: layer i from (seed, i). */
    for (int i = 0; i < m->n_layers; i++)
        if (fm->st.layer_off[i] != SIZE_MAX && mp_layer_n_param(&m->layers[i]))
            mp_layer_init_params(&m->layers[i], fm->st.param + fm->st.layer_off[i], seed);
    if (mp_exec_init(&fm->ex, &fm->st, &fm->sched, x, err))
        return -1;
    fm->exec_ready = 1;
    /* A client's stages on one host hand over through shared memory, as train's do. Both calls
     * are collective over x: the server's one-stage model (x: all ranks) makes neither. */
    int want;
    if (lay->P > 1 && (mp_exec_share_want(x, lay->P, &want, err) ||
                       mp_exec_share(&fm->ex, lay->bounds, want, err)))
        return -1;
    return 0;
}

void mp__fed_model_free(struct mp_fed_model *fm)
{
    if (fm->exec_ready)
        mp_exec_free(&fm->ex);
    mp_stage_free(&fm->st);
    mp_sched_free(&fm->sched);
    memset(fm, 0, sizeof *fm);
}

int mp__fed_model_eval(struct mp_fed_model *fm, const struct mp_dataset *ds, double *loss,
                       double *acc, struct mp_err *err)
{
    double loss_sum = 0;
    size_t correct = 0;
    if (mp_exec_eval(&fm->ex, ds, &loss_sum, &correct, err))
        return -1;
    double preds = (double)ds->n * (double)fm->st.model->label_len; /* T per sample for text */
    *loss = preds > 0 ? loss_sum / preds : 0;
    *acc = preds > 0 ? (double)correct / preds : 0;
    return 0;
}
