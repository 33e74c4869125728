/* One training step (mp_train_loop.h): the executor runs this rank's action list over its
 * replica's micro-batches (or, emulating data parallelism, over each replica's block in turn),
 * the replicas' gradient sums are combined (mp_dp.h), then one small allreduce carries each
 * global layer's gradient sum of squares and each replica's loss. Every entry of it has exactly
 * one non-zero contributor, so the sums are exact in any order and every rank sees the same loss,
 * norm and LR; the totals add per-layer and per-replica values in index order (DESIGN.md §6). */
#include <math.h>
#include <string.h>

#include "mp_clip.h"
#include "mp_train_loop.h"

/* Clipping and the optimizer step for this rank's layers. */
static void update(struct loop *L, double lr, float clip_scale)
{
    const struct mp_model *m = L->cfg->model;
    struct mp_stage *st = &L->st;
    for (int i = 0; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        size_t off = st->layer_off[i];
        if (off == SIZE_MAX || !mp_layer_n_param(l))
            continue;
        if (clip_scale != 1.0f)
            mp_scale(st->grad + off, mp_layer_n_param(l), clip_scale);
        for (int w = 0; w < 2; w++) {
            size_t n = w ? l->n_bias : l->n_weight, o = off + (w ? l->n_weight : 0);
            if (n)
                mp_optim_step(&L->cfg->optim, (float)lr, L->step + 1, st->param + o, st->grad + o,
                              st->state + o, st->n_param, n);
        }
    }
}

/* The executor over replica r's micro-batches, its gradient sum left in st.grad. */
static int run_replica(struct loop *L, const uint32_t *idx, int r, double *loss, double *busy,
                       struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    memset(L->st.grad, 0, L->st.n_param * sizeof(float));
    struct mp_exec_io io = {.ds = &L->data.train, .idx = idx, .seed = c->seed, .step = L->step,
                            .global_batch = c->batch, .mb_offset = r * L->Mr};
    if (mp_exec_step(&L->ex, &io, err))
        return -1;
    *loss = io.loss_sum;
    *busy += io.busy_s;
    return 0;
}

/* Gradients of the whole global batch in st.grad; each replica's loss sum in losses[]. */
static int gradients(struct loop *L, const uint32_t *idx, double *losses, double *busy,
                     struct mp_err *err)
{
    size_t shard[MP_DP_MAX];
    for (int r = 0; r < L->D; r++)
        shard[r] = (size_t)L->Mr * L->st.mbs;
    mp_dp_set_coefficients(&L->dp, shard, L->cfg->batch);
    if (L->replica >= 0) {
        if (run_replica(L, idx, L->replica, &losses[L->replica], busy, err))
            return -1;
        return mp_dp_reduce_grads(&L->dp, L->st.grad, err);
    }
    for (int r = 0; r < L->D; r++) { /* emulated replicas, one after another */
        if (run_replica(L, idx, r, &losses[r], busy, err))
            return -1;
        if (L->D > 1)
            mp_dp_accumulate(L->dp.acc, L->st.grad, L->dp.coef[r], L->st.n_param, r == 0);
    }
    if (L->D > 1)
        memcpy(L->st.grad, L->dp.acc, L->st.n_param * sizeof(float));
    return 0;
}

static void log_metrics(struct loop *L, double loss, double lr, double sumsq, double step_s)
{
    fprintf(L->metrics, "{\"step\":%llu,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6g,"
            "\"step_s\":%.6f}\n", (unsigned long long)L->step, loss, lr,
            L->cfg->clip_norm > 0 ? sqrt(sumsq) : -1.0, step_s);
}

int mp__train_step(struct loop *L, const uint32_t *idx, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    const struct mp_model *m = c->model;
    struct mp_stage *st = &L->st;
    size_t n_red = (size_t)m->n_layers + (size_t)L->D;
    double t0 = mp_xport_now(), busy = 0;
    memset(L->reduce, 0, n_red * sizeof(double));
    if (gradients(L, idx, L->reduce + m->n_layers, &busy, err))
        return -1;
    /* After the reduction every replica holds the same gradients: replica 0 reports the norms. */
    for (int i = 0; c->clip_norm > 0 && L->replica <= 0 && i < m->n_layers; i++)
        if (st->layer_off[i] != SIZE_MAX)
            L->reduce[i] = mp_sumsq(st->grad + st->layer_off[i], mp_layer_n_param(&m->layers[i]));
    if (L->wsize > 1 && mp_xport_allreduce_sum(L->x, L->reduce, n_red,
                                               "the step's loss and gradient norms", err))
        return -1;
    double loss_sum = 0;
    for (int r = 0; r < L->D; r++)
        loss_sum += L->reduce[m->n_layers + r];
    double loss = loss_sum / (double)c->batch;
    if (!isfinite(loss))
        return MP_FAIL(err, NUMERIC, "step %llu: loss is %f; lower --lr or use --clip-norm",
                       (unsigned long long)L->step + 1, loss);
    double sumsq = mp_clip_total(L->reduce, (size_t)m->n_layers);
    double lr = mp_lr_at(&L->lr, &L->lr_state, L->step);
    double t2 = mp_xport_now();
    update(L, lr, mp_clip_scale(sumsq, c->clip_norm));
    double t3 = mp_xport_now();
    if (L->ex.trace && L->ex.trace->n < 200000)
        mp_trace_add(L->ex.trace, L->wrank, MP_ACT_STEP, -1, -1, t2 - L->ex.t_origin, t3 - t2);
    L->step++;
    L->epoch_loss += loss;
    L->epoch_steps++;
    L->train_time += t3 - t0;
    if (L->step > 1) { /* the first step allocates slabs and warms caches */
        L->busy_time += busy + (t3 - t2);
        L->busy_wall += t3 - t0;
    }
    if (L->metrics)
        log_metrics(L, loss, lr, sumsq, t3 - t0);
    return 0;
}
