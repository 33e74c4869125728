/* One training step (mp_train_loop.h): the executor runs this rank's action list over its
 * replica's micro-batches (or, emulating data parallelism, over each replica's block in turn),
 * the replicas' gradient sums are combined (mp_dp.h), then one small allreduce carries each
 * global layer's gradient sum of squares, each replica's loss and each (replica, stage)'s compute
 * seconds (for perf weights and speed-sized shards). Every entry of it has exactly
 * one non-zero contributor, so the sums are exact in any order and every rank sees the same loss,
 * norm and LR; the totals add per-layer and per-replica values in index order (DESIGN.md §6). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mp_clip.h"
#include "mp_weights.h"
#include "mp_dp_bucket.h"
#include "mp_gemm.h"
#include "mp_train_loop.h"

/* Clipping and the optimizer step for this rank's layers, one named tensor at a time (LAMB's
 * trust ratio is per tensor). A tied head's copy of E gets the same gradient, state and update as
 * the embed's E, so the copies stay bit-identical without a message. */
static void update(struct loop *L, double lr, float clip_scale)
{
    const struct mp_model *m = L->cfg->model;
    struct mp_stage *st = &L->st;
    for (int i = 0; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        size_t off = st->layer_off[i];
        if (off == SIZE_MAX || !mp_layer_n_param(l))
            continue;
        if (off < st->state_lo || off >= st->state_lo + st->state_len)
            continue; /* --zero 1: another replica updates it; the all-gather brings it here */
        if (clip_scale != 1.0f)
            mp_scale(st->grad + off, mp_layer_n_param(l), clip_scale);
        struct mp_tensor t[MP_LAYER_MAX_TENSORS];
        int nt = mp_layer_tensors(l, t);
        for (int w = 0; w < nt; w++) {
            size_t o = off + t[w].off;
            mp_optim_step(&L->cfg->optim, (float)lr, L->step + 1, st->param + o, st->grad + o,
                          st->state + (o - st->state_lo), st->state_len, t[w].numel);
        }
    }
}

/* The schedule for a replica running m micro-batches: the run's own for the equal share, else
 * made once and kept (--shard-by speed). */
static const struct mp_sched *sched_for(struct loop *L, int m, struct mp_err *err)
{
    if (m == L->Mr)
        return &L->sched;
    struct mp_sched *s = &L->scheds[m];
    if (!s->acts) {
        struct mp_sched_report rep;
        const struct mp_train_cfg *c = L->cfg;
        if (mp_sched_make(s, c->schedule, c->P, c->V, m, err) ||
            mp_sched_validate(s, &rep, err))
            return NULL;
    }
    return s;
}

/* The executor over replica r's micro-batches, its gradient sum left in st.grad; the compute
 * seconds it took on this rank added to *secs and busy[0], those of them in the data-parallel
 * hooks to busy[1]. */
static int run_replica(struct loop *L, const uint32_t *idx, int r, double *loss, double *secs,
                       double *busy, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    const struct mp_sched *s = sched_for(L, L->dp.n_mb[r], err);
    if (!s || mp_exec_set_sched(&L->ex, s, err))
        return -1;
    /* The loss is the mean over the global batch's predictions (T per sample for a token model). */
    struct mp_exec_io io = {.ds = &L->data.train, .idx = idx, .seed = c->seed, .step = L->step,
                            .global_batch = c->batch * c->model->label_len,
                            .mb_offset = L->dp.first_mb[r]};
    if (mp_exec_step(&L->ex, &io, err))
        return -1;
    *loss = io.loss_sum;
    *secs += io.busy_s;
    busy[0] += io.busy_s, busy[1] += io.hook_s;
    return 0;
}

/* Gradients of the whole global batch in st.grad; each replica's loss sum in losses[], and the
 * compute seconds of replica r on stage s in secs[r * P + s]; this rank's in busy[0], of them in
 * the data-parallel hooks busy[1]. */
static int gradients(struct loop *L, const uint32_t *idx, double *losses, double *secs,
                     double *busy, struct mp_err *err)
{
    struct mp_dp *dp = &L->dp;
    size_t shard[MP_DP_MAX];
    for (int r = 0; r < L->D; r++)
        shard[r] = (size_t)dp->n_mb[r] * L->st.mbs;
    mp_dp_set_coefficients(dp, shard, L->cfg->batch);
    int P = L->cfg->P;
    if (L->replica >= 0) { /* the reduction runs in buckets, overlapped with the backward */
        mp_dp_buckets_begin(dp, L->st.grad);
        if (run_replica(L, idx, L->replica, &losses[L->replica],
                        &secs[L->replica * P + L->rank], busy, err))
            return -1;
        return mp_dp_buckets_finish(dp, err);
    }
    for (int r = 0; r < L->D; r++) { /* emulated replicas, one after another */
        if (run_replica(L, idx, r, &losses[r], &secs[r * P + L->rank], busy, err))
            return -1;
        if (L->D > 1)
            mp_dp_accumulate(dp->acc, L->st.grad, dp->coef[r], L->st.n_param, r == 0);
    }
    if (L->D > 1)
        memcpy(L->st.grad, dp->acc, L->st.n_param * sizeof(float));
    return 0;
}

static int hook_layer_done(void *arg, int layer, struct mp_err *err)
{
    return mp_dp_buckets_layer_done(arg, layer, err);
}

static int hook_poll(void *arg, struct mp_err *err)
{
    return mp_dp_buckets_poll(arg, err);
}

void mp__train_dp_hooks(struct loop *L)
{
    if (!L->dp.bk)
        return;
    L->ex.layer_done = hook_layer_done;
    L->ex.poll = hook_poll;
    L->ex.hook_arg = &L->dp;
}

/* After the step's allreduce every rank holds every replica's loss and compute time: the next
 * step's perf weights and (every MP_DP_REBALANCE_EVERY steps) shards follow identically. */
static void adapt(struct loop *L, const double *losses, const double *secs)
{
    const struct mp_train_cfg *c = L->cfg;
    size_t n[MP_DP_MAX];
    double t[MP_DP_MAX];
    for (int r = 0; r < L->D; r++) {
        n[r] = (size_t)L->dp.n_mb[r] * L->st.mbs;
        t[r] = 0;
        for (int s = 0; s < c->P; s++) /* a pipeline runs at its slowest stage's pace */
            t[r] = fmax(t[r], secs[r * c->P + s]);
    }
    if (c->aggregate == MP_AGG_PERF)
        mp_dp_perf_update(&L->dp, losses, n);
    if (c->shard_speed)
        mp_dp_speed_update(&L->dp, t, L->step, c->M);
}

static void log_metrics(struct loop *L, double loss, double lr, double sumsq, double step_s)
{
    const struct mp_train_cfg *c = L->cfg;
    fprintf(L->metrics, "{\"step\":%llu,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6g,"
            "\"step_s\":%.6f", (unsigned long long)L->step, loss, lr,
            c->clip_norm > 0 ? sqrt(sumsq) : -1.0, step_s);
    /* What this step's reduction used: with these, a perf or speed run can be replayed. */
    if (c->aggregate == MP_AGG_PERF && L->D > 1)
        for (int r = 0; r < L->D; r++)
            fprintf(L->metrics, "%s%.17g%s", r ? "," : ",\"weights\":[", L->dp.weight[r],
                    r == L->D - 1 ? "]" : "");
    if (c->shard_speed && L->D > 1)
        for (int r = 0; r < L->D; r++)
            fprintf(L->metrics, "%s%d%s", r ? "," : ",\"shards\":[", L->dp.n_mb[r],
                    r == L->D - 1 ? "]" : "");
    fputs("}\n", L->metrics);
    fflush(L->metrics); /* a line per step, visible as it happens (tail -f, tools/chaos) */
}

int mp__train_step(struct loop *L, const uint32_t *idx, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    const struct mp_model *m = c->model;
    struct mp_stage *st = &L->st;
    size_t n_red = (size_t)m->n_layers + (size_t)L->D * (size_t)(1 + c->P);
    double *losses = L->reduce + m->n_layers, *secs = losses + L->D;
    double t0 = mp_xport_now(), busy[2] = {0, 0};
    memset(L->reduce, 0, n_red * sizeof(double));
    /* From the first forward to update() the parameters do not change: the step's micro-batches
     * share one packing of each weight (mp_gemm_reuse_begin; same bits). */
    if (L->reuse_room)
        mp_gemm_reuse_begin(L->st.param, L->st.n_param, L->reuse_room);
    int failed = gradients(L, idx, losses, secs, busy, err);
    mp_gemm_reuse_end();
    if (failed || mp_stage_tie_gradients(&L->st, L->px, L->bounds, &L->tie_buf, err))
        return -1;
    /* After the reduction every replica holds the same gradients: replica 0 reports the norms.
     * A tied head's copy of E is counted once, as the embed's. */
    for (int i = 0; c->clip_norm > 0 && L->replica <= 0 && i < m->n_layers; i++)
        if (st->layer_off[i] != SIZE_MAX && !mp_layer_is_tied(&m->layers[i]))
            L->reduce[i] = mp_sumsq(st->grad + st->layer_off[i], mp_layer_n_param(&m->layers[i]));
    if (L->wsize > 1 && mp_xport_allreduce_sum(L->x, L->reduce, n_red,
                                               "the step's loss and gradient norms", err))
        return -1;
    double loss_sum = 0;
    for (int r = 0; r < L->D; r++)
        loss_sum += losses[r];
    double loss = loss_sum / ((double)c->batch * (double)m->label_len);
    if (!isfinite(loss))
        return MP_FAIL(err, NUMERIC, "step %llu: loss is %f; lower --lr or use --clip-norm",
                       (unsigned long long)L->step + 1, loss);
    double sumsq = mp_clip_total(L->reduce, (size_t)m->n_layers);
    double lr = mp_lr_at(&L->lr, &L->lr_state, L->step);
    double t2 = mp_xport_now();
    update(L, lr, mp_clip_scale(sumsq, c->clip_norm));
    if (mp__zero_gather_params(L, err))
        return -1;
    double t3 = mp_xport_now();
    if (L->ex.trace && L->ex.trace->n < 200000)
        mp_trace_add(L->ex.trace, L->wrank, MP_ACT_STEP, -1, -1, t2 - L->ex.t_origin, t3 - t2);
    L->step++;
    L->epoch_loss += loss;
    L->epoch_steps++;
    L->train_time += t3 - t0;
    if (L->step > 1) { /* the first step allocates slabs and warms caches */
        L->busy_time += busy[0] + (t3 - t2);
        L->hook_time += busy[1];
        L->busy_wall += t3 - t0;
        L->recent_step_s[L->n_recent++ % MP_RECENT_STEPS] = t3 - t0;
        for (int r = 0; r < L->D; r++) { /* every rank has every replica's (the reduction) */
            for (int s = 0; s < c->P; s++)
                L->pace[r * c->P + s] += secs[r * c->P + s];
            L->pace[(size_t)L->D * (size_t)c->P + (size_t)r] +=
                (double)L->dp.n_mb[r] * (double)L->st.mbs;
        }
    }
    if (L->metrics)
        log_metrics(L, loss, lr, sumsq, t3 - t0);
    adapt(L, losses, secs);
    return 0;
}
