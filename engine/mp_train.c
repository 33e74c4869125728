/* The training loop (mp_train.h): layout of ranks into stages and replicas, start-up agreement,
 * state, epochs, evaluation, checkpoints and the measured figures of the RESULT line. One step is
 * mp_train_step.c. Every rank sees the same loss, norm and LR, so decisions (plateau, NaN stop)
 * are identical everywhere. */
#include "mp_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "mp_ckpt.h"
#include "mp_clip.h"
#include "mp_data.h"
#include "mp_dp_bucket.h"
#include "mp_exec.h"
#include "mp_gemm.h"
#include "mp_stage.h"
#include "mp_stage_mem.h"
#include "mp_train_loop.h"
#include "mp_weights.h"

/* MPIPE_FAULT_INJECT=slow_start:SECONDS:RANK (tests only): world rank RANK ends its start-up
 * SECONDS late, as a rank that loads its data from a slow disk. */
static void fault_slow_start(const struct loop *L)
{
    const char *f = getenv("MPIPE_FAULT_INJECT");
    unsigned seconds;
    int who;
    char end;
    if (f && sscanf(f, "slow_start:%u:%d%c", &seconds, &who, &end) == 2 && who == L->wrank)
        sleep(seconds);
}

/* Ranks: P*D (real replicas, rank = replica * P + stage) or P (replicas emulated in turn). */
static int setup_ranks(struct loop *L, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    L->D = c->D > 0 ? c->D : 1;
    L->wsize = mp_xport_size(L->x);
    L->wrank = mp_xport_rank(L->x);
    if (L->wsize != c->P * L->D && L->wsize != c->P) {
        const char *ranks = L->wsize == 1 ? "" : "s", *stages = c->P == 1 ? "" : "s";
        if (L->D == 1)
            return MP_FAIL(err, USAGE, "%d rank%s for %d stage%s: run with mpirun -np %d",
                           L->wsize, ranks, c->P, stages, c->P);
        return MP_FAIL(err, USAGE, "%d rank%s for %d stage%s x %d replicas: run with mpirun -np %d "
                       "(or -np %d to emulate the replicas in turn)", L->wsize, ranks, c->P,
                       stages, L->D, c->P * L->D, c->P);
    }
    if (c->M % L->D)
        return MP_FAIL(err, USAGE, "--micro-batches %d is not divisible by --dp %d", c->M, L->D);
    L->Mr = c->M / L->D;
    L->px = L->x;
    L->replica = -1;
    if (L->wsize == c->P * L->D && L->D > 1) {
        L->replica = L->wrank / c->P;
        if (mp_xport_split(L->x, L->replica, L->wrank, &L->px, err) ||
            mp_xport_split(L->x, L->wrank % c->P, L->replica, &L->sx, err))
            return -1;
    } else if (L->D == 1) {
        L->replica = 0;
    }
    L->rank = mp_xport_rank(L->px);
    return 0;
}

static int setup_layout(struct loop *L, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    if (c->batch % (size_t)c->M)
        return MP_FAIL(err, USAGE, "--batch %zu is not divisible by --micro-batches %d", c->batch,
                       c->M);
    if (setup_ranks(L, err))
        return -1;
    if (mp_sched_chunks(c->schedule, c->V) != c->V)
        return MP_FAIL(err, USAGE, "schedule %s runs %d chunks per rank, not %d",
                       mp_sched_name(c->schedule), mp_sched_chunks(c->schedule, c->V), c->V);
    L->S = c->P * c->V;
    L->bounds = malloc(sizeof(int) * (size_t)(L->S + 1));
    if (!L->bounds)
        return MP_FAIL(err, NOMEM, "out of memory");
    if (c->bounds)
        memcpy(L->bounds, c->bounds, sizeof(int) * (size_t)(L->S + 1));
    else if (mp_split_for(c->model, c->schedule, c->P, c->V, L->Mr, c->batch / (size_t)c->M,
                          L->bounds, err))
        return -1;
    if (L->bounds[L->S] != c->model->n_layers)
        return MP_FAIL(err, USAGE, "the stages do not cover the model's %d layers",
                       c->model->n_layers - 1);
    if (mp_sched_make(&L->sched, c->schedule, c->P, c->V, L->Mr, err))
        return -1;
    return mp_sched_validate(&L->sched, NULL, err);
}

static int setup_state(struct loop *L, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    const struct mp_model *m = c->model;
    size_t mbs = c->batch / (size_t)c->M;
    /* Speed-sized shards give a replica up to M - D + 1 micro-batches. */
    int M_max = c->shard_speed ? c->M - L->D + 1 : L->Mr;
    if (c->shard_speed && !(L->scheds = calloc((size_t)c->M + 1, sizeof *L->scheds)))
        return MP_FAIL(err, NOMEM, "out of memory");
    int *recompute = NULL;
    /* Collective over the stage's replicas, as mp_dp_init's opening of their shared memory is;
     * replicas on several hosts reduce through messages and keep no sum slots. */
    if (L->replica >= 0 && L->D > 1 && c->dp_reduce == MP_DP_ORDERED &&
        mp_xport_one_host(L->sx, &L->dp_shared, err))
        return -1;
    /* Collective over the pipeline's ranks, as mp_exec_share is; before the memory check,
     * which counts the slots. */
    if (mp_exec_share_want(L->px, c->P, &L->hand_shared, err))
        return -1;
    if (mp__train_memory(L, &recompute, err) ||
        mp_stage_init(&L->st, m, L->bounds, L->rank, c->P, c->V, mp_sched_place(c->schedule),
                      M_max, mbs, mp_optim_state_slots(c->optim.kind), err) ||
        mp__train_apply_recompute(L, recompute, err)) {
        free(recompute);
        return -1;
    }
    free(recompute);
    for (int i = 0; i < m->n_layers; i++)
        if (L->st.layer_off[i] != SIZE_MAX && mp_layer_n_param(&m->layers[i]))
            mp_layer_init_params(&m->layers[i], L->st.param + L->st.layer_off[i], c->seed);
    if (c->init_path && mp_weights_load_init(&L->st, c->init_path, L->wrank != 0, err))
        return -1;
    if (mp_exec_init(&L->ex, &L->st, &L->sched, L->px, err) ||
        mp_exec_share(&L->ex, L->bounds, L->hand_shared, err))
        return -1;
    L->ex.trace_tid = L->wrank;
    if (mp_dp_init(&L->dp, L->D, L->replica < 0, L->replica, L->sx, c->dp_reduce, c->aggregate,
                   L->st.n_param, err))
        return -1;
    if (c->aggregate_weights && mp_dp_read_weights(&L->dp, c->aggregate_weights, err))
        return -1;
    double equal[MP_DP_MAX];
    for (int r = 0; r < L->D; r++)
        equal[r] = 1;
    mp_dp_set_shards(&L->dp, equal, c->M);
    L->reduce = calloc((size_t)m->n_layers + (size_t)L->D * (size_t)(1 + c->P), sizeof(double));
    L->pace = calloc((size_t)L->D * (size_t)(1 + c->P), sizeof(double));
    size_t *n_param = calloc((size_t)m->n_layers, sizeof(size_t));
    if (!L->reduce || !L->pace || !n_param) {
        free(n_param);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int i = 0; i < m->n_layers; i++)
        n_param[i] = mp_layer_n_param(&m->layers[i]);
    int rc = mp_dp_buckets_init(&L->dp, m->n_layers, L->st.layer_off, n_param, err);
    free(n_param);
    if (rc)
        return -1;
    mp__train_dp_hooks(L);
    if (mp__zero_setup(L, err))
        return -1;
    /* Start-up, not the first step, maps the memory (a resume loads into it). Past
     * MP_MEM_WALK_CHUNKS chunks a rank's slab peaks are not walked: one slab each. */
    int slabs[MP_MEM_WALK_CHUNKS], walked = L->st.V <= MP_MEM_WALK_CHUNKS;
    if (walked)
        mp_mem_slab_peaks(&L->sched, L->rank, c->P, L->st.V, slabs);
    if (mp_stage_prefault(&L->st, walked ? slabs : NULL, err))
        return -1;
    /* The pool of packed weights too: left to the first step, its pages' first touch cost
     * models/mlp.mp's first step 45 ms on this VM (85 ms against 37). */
    if (L->reuse_room) {
        mp_gemm_reuse_begin(L->st.param, L->st.n_param, L->reuse_room);
        mp_gemm_reuse_end();
    }
    if (c->trace_path) {
        mp_trace_init(&L->trace, L->wsize);
        L->ex.trace = &L->trace;
    }
    if (c->metrics_path && L->wrank == 0 && !(L->metrics = fopen(c->metrics_path, "w")))
        return MP_FAIL(err, IO, "%s: cannot write metrics", c->metrics_path);
    return 0;
}

/* This run's samples over its training time: the steps it took, not a resumed run's steps
 * before it (its train_time starts at the resume; counted from step 0, a run resumed at step 5
 * of 10 said 85 samples/s on its epoch line where RESULT said 42.6). */
static double samples_per_s(const struct loop *L)
{
    return L->train_time > 0 ? (double)(L->step - L->start.step) * (double)L->cfg->batch /
                                   L->train_time
                             : 0;
}

static void progress_line(const struct loop *L, int epoch, uint64_t s, uint64_t n_steps)
{
    const struct mp_train_cfg *c = L->cfg;
    double sps = samples_per_s(L);
    uint64_t total = (uint64_t)c->epochs * n_steps;
    if (c->max_steps >= 0 && (uint64_t)c->max_steps < total)
        total = (uint64_t)c->max_steps;
    double eta = sps > 0 ? (double)(total - L->step) * (double)c->batch / sps : 0;
    fprintf(stderr, "\repoch %d/%d step %llu/%llu loss %.4f %.0f samples/s ETA %dm%02ds ", epoch + 1,
            c->epochs, (unsigned long long)s, (unsigned long long)n_steps,
            L->epoch_steps ? L->epoch_loss / (double)L->epoch_steps : 0.0, sps, (int)eta / 60,
            (int)eta % 60);
}

/* Accuracy and mean loss per prediction on the test set (a token model's first --eval-windows
 * validation windows; T predictions each). */
static int evaluate(struct loop *L, double *acc, double *loss, struct mp_err *err)
{
    double r[2] = {0, 0};
    size_t correct = 0;
    struct mp_dataset ds = L->data.test;
    if (L->cfg->eval_windows && ds.n > L->cfg->eval_windows)
        ds.n = L->cfg->eval_windows;
    /* Replicas hold the same weights: replica 0's pipeline evaluates, every batch on one
     * packing of each weight where training keeps a pool for it (mp_gemm_reuse_begin). */
    if (L->reuse_room)
        mp_gemm_reuse_begin(L->st.param, L->st.n_param, L->reuse_room);
    int failed = L->replica <= 0 && mp_exec_eval(&L->ex, &ds, &r[0], &correct, err);
    mp_gemm_reuse_end();
    if (failed)
        return -1;
    r[1] = (double)correct;
    if (L->wsize > 1 && mp_xport_allreduce_sum(L->x, r, 2, "evaluation results", err))
        return -1;
    double preds = (double)ds.n * (double)L->cfg->model->label_len;
    *acc = preds > 0 ? r[1] / preds : 0;
    *loss = preds > 0 ? r[0] / preds : 0;
    return 0;
}

/* --eval-every K: the validation loss every K steps, on stderr and in --metrics. */
static int evaluate_every(struct loop *L, struct mp_err *err)
{
    double acc, loss;
    if (!L->cfg->eval_every || L->step % L->cfg->eval_every)
        return 0;
    if (evaluate(L, &acc, &loss, err))
        return -1;
    if (L->wrank == 0) {
        fprintf(stderr, "%sstep %llu val_loss %.4f val_acc %.4f\n", L->cfg->progress ? "\r" : "",
                (unsigned long long)L->step, loss, acc);
        if (L->metrics)
            fprintf(L->metrics, "{\"step\":%llu,\"val_loss\":%.6f,\"val_acc\":%.6f}\n",
                    (unsigned long long)L->step, loss, acc);
    }
    return 0;
}

/* Checkpoint hooks (mp_ckpt.h): no-ops without --checkpoint. */
static int ckpt_write(struct loop *L, int epoch, uint64_t cursor, struct mp_err *err);
static void ckpt_io(struct loop *L, struct mp_ckpt_io *io)
{
    *io = (struct mp_ckpt_io){.cfg = L->cfg, .lr = &L->lr, .st = &L->st, .bounds = L->bounds,
                              .x = L->px, .n_train = L->data.train.n, .quiet = L->wrank != 0};
}

static int ckpt_save(struct loop *L, int epoch, uint64_t cursor, struct mp_err *err)
{
    if (!L->cfg->ckpt_dir || L->ckpt_saved == (int64_t)L->step)
        return 0;
    if (L->replica > 0) { /* replicas hold the same state: replica 0 writes it */
        struct mp_ckpt_io io;
        ckpt_io(L, &io);
        return mp__zero_checkpoint(L, &io, err); /* --zero 1: its share of the state */
    }
    return ckpt_write(L, epoch, cursor, err);
}

static int ckpt_write(struct loop *L, int epoch, uint64_t cursor, struct mp_err *err)
{
    struct mp_ckpt_io io;
    ckpt_io(L, &io);
    if (mp__zero_checkpoint(L, &io, err)) /* --zero 1: the other replicas' state as it writes */
        return -1;
    struct mp_ckpt_pos p = {.step = L->step, .epoch = epoch, .cursor = cursor,
                            .epoch_loss = cursor ? L->epoch_loss : 0,
                            .epoch_steps = cursor ? L->epoch_steps : 0, .lr_state = L->lr_state};
    mp_dp_save_state(&L->dp, &p.dp_D, p.dp_score, p.dp_n_mb);
    L->ckpt_saved = (int64_t)L->step;
    if (mp_ckpt_save(&io, &p, err))
        return -1;
    mp__ckpt_hold(L->step, L->start.step, L->wrank);
    return 0;
}

static int ckpt_resume(struct loop *L, struct mp_err *err)
{
    struct mp_ckpt_io io;
    ckpt_io(L, &io);
    if (!L->cfg->resume)
        return 0;
    if (mp_ckpt_resume(&io, &L->start, err)) {
        /* A checkpoint made for another model, batch or optimizer: every rank read the same
         * manifest (resuming needs a directory all ranks share) and judged it alike. */
        if (err->code == MP_ERR_USAGE)
            mp_err_mark_shared(err);
        return -1;
    }
    L->step = L->start.step;
    L->lr_state = L->start.lr_state;
    mp_dp_load_state(&L->dp, L->start.dp_D, L->start.dp_score, L->start.dp_n_mb, L->cfg->M);
    L->ckpt_saved = (int64_t)L->step;
    return 0;
}

static int run_epochs(struct loop *L, double *test_acc, double *val_loss, double *last_loss,
                      struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    size_t n = L->data.train.n;
    uint64_t n_steps = n / c->batch;
    if (n_steps == 0) { /* every rank loaded the same set (its source is agreed) */
        MP_FAIL(err, USAGE, "--batch %zu is larger than the %zu training samples", c->batch, n);
        return mp_err_mark_shared(err);
    }
    L->lr.total_steps = (uint64_t)c->epochs * n_steps;
    if (c->max_steps >= 0 && (uint64_t)c->max_steps < L->lr.total_steps)
        L->lr.total_steps = (uint64_t)c->max_steps;
    if (ckpt_resume(L, err))
        return -1;
    struct mp_err lerr;
    mp_err_clear(&lerr);
    /* Advisory, rank 0 alone: a failure here only costs a supervised restart its pinned M (the
     * checkpoints themselves report I/O errors collectively). */
    if (L->wrank == 0 && mp_ckpt_write_layout(c, &lerr))
        fprintf(stderr, "mpipe train: note: %s (a restart by mpipe-run before the first checkpoint "
                "will not know this run's M)\n", lerr.msg);
    /* Every rank's start-up ends before the first step's clock starts: a rank that started sooner
     * would wait for the others' start-up inside its first step, counted as training time
     * (DESIGN.md §4: samples_per_s is the training loop's wall time only). */
    fault_slow_start(L);
    if (L->wsize > 1 && mp_xport_barrier(L->x, "every rank's start-up, before the first step", err))
        return -1;
    double last_tick = 0;
    int evaluated = 0;
    /* A resumed run whose checkpoint is already at its end (a restart of a finished job, or a
     * --max-steps below the checkpoint's step) trains nothing: said, so RESULT's 0 samples/s and
     * loss 0 are not read as a run's. */
    int at_max = c->max_steps >= 0 && L->step >= (uint64_t)c->max_steps;
    if (L->wrank == 0 && L->step > 0 && (at_max || L->start.epoch >= c->epochs))
        fprintf(stderr, "mpipe train: note: nothing to train: the checkpoint's step %llu is at or "
                "past this run's end (--%s %lld); RESULT gives its test accuracy, and with no "
                "step run, loss and samples/s 0\n", (unsigned long long)L->step,
                at_max ? "max-steps" : "epochs", at_max ? (long long)c->max_steps
                                                        : (long long)c->epochs);
    for (int epoch = L->start.epoch; epoch < c->epochs; epoch++) {
        if (c->max_steps >= 0 && L->step >= (uint64_t)c->max_steps)
            break;
        if (!L->data.train.text)
            mp_data_order(L->order, n, c->seed, (uint64_t)epoch, c->shuffle);
        L->epoch_loss = epoch == L->start.epoch ? L->start.epoch_loss : 0;
        L->epoch_steps = epoch == L->start.epoch ? L->start.epoch_steps : 0;
        for (uint64_t s = L->epoch_steps; s < n_steps; s++) {
            if (c->max_steps >= 0 && L->step >= (uint64_t)c->max_steps)
                break;
            const uint32_t *idx = L->order + s * c->batch;
            if (L->data.train.text) { /* windows drawn from (seed, step): no epoch order */
                mp_data_text_offsets(&L->data.train, L->order, c->batch, c->seed, L->step,
                                     c->shuffle);
                idx = L->order;
            }
            if (mp__train_step(L, idx, err) || evaluate_every(L, err) ||
                (c->after_step && c->after_step(c->after_step_arg, L->step, err)))
                return -1;
            if (c->ckpt_every && L->step % c->ckpt_every == 0 && s + 1 < n_steps &&
                ckpt_save(L, epoch, s + 1, err))
                return -1;
            if (c->progress && L->wrank == 0 && mp_xport_now() - last_tick > 0.5) {
                last_tick = mp_xport_now();
                progress_line(L, epoch, s + 1, n_steps);
            }
        }
        if (L->epoch_steps < n_steps && ckpt_save(L, epoch, L->epoch_steps, err))
            return -1; /* stopped by --max-steps: resumable mid-epoch, before the epoch's end */
        double mean = L->epoch_steps ? L->epoch_loss / (double)L->epoch_steps : 0;
        *last_loss = mean;
        mp_lr_epoch_end(&L->lr, &L->lr_state, mean);
        if (L->epoch_steps == n_steps && ckpt_save(L, epoch + 1, 0, err))
            return -1;
        int last = epoch == c->epochs - 1 ||
                   (c->max_steps >= 0 && L->step >= (uint64_t)c->max_steps);
        if (!c->quiet || last) {
            if (evaluate(L, test_acc, val_loss, err))
                return -1;
            evaluated = 1;
        }
        if (!c->quiet && L->wrank == 0)
            fprintf(stderr, "%sepoch %d/%d loss %.4f test_acc %.4f samples/s %.0f\n",
                    c->progress ? "\r" : "", epoch + 1, c->epochs, mean, *test_acc,
                    samples_per_s(L));
    }
    if (!evaluated && evaluate(L, test_acc, val_loss, err))
        return -1;
    return 0;
}

/* All ranks must agree on the model, schedule and flags; BLIS kernels that differ change bits. */
static int check_agreement(struct loop *L, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    if (L->wsize == 1)
        return 0;
    char mine[256];
    snprintf(mine, sizeof mine, "%s %d %d %d %d %d %zu %llu %d %g %d %.17g", c->model->digest,
             (int)c->schedule, c->P, c->V, c->M, c->D, c->batch, (unsigned long long)c->seed,
             (int)c->optim.kind, (double)c->clip_norm, c->epochs, c->lr.base_lr);
    uint64_t h[2] = {mp_hash4(0, 0, 0, 0), 0};
    for (const char *p = mine; *p; p++)
        h[0] = mp_hash4(h[0], (uint64_t)(unsigned char)*p, 1, 2);
    /* A plan's boundaries and per-stage recomputation too: with two plan files of the same stage
     * count but different cuts each rank built its own stages, and on mlp.mp, every cut the same
     * width, a wrong model trained without a word. */
    int S = c->P * c->V;
    for (int v = 0; c->bounds && v <= S; v++)
        h[0] = mp_hash4(h[0], (uint64_t)(unsigned)c->bounds[v], 5, 6);
    for (int v = 0; c->recompute_stages && v < S; v++)
        h[0] = mp_hash4(h[0], (uint64_t)(unsigned)c->recompute_stages[v], 7, 8);
    h[0] = mp_hash4(h[0], (uint64_t)(unsigned)c->recompute, (uint64_t)(unsigned)c->zero,
                    (uint64_t)(c->bounds != NULL));
    for (const char *p = c->data_src ? c->data_src : ""; *p; p++) /* stage 0 reads the inputs,
                                                                     the last stage the labels */
        h[0] = mp_hash4(h[0], (uint64_t)(unsigned char)*p, 9, 10);
    for (const char *p = mp_gemm_arch(); *p; p++)
        h[1] = mp_hash4(h[1], (uint64_t)(unsigned char)*p, 3, 4);
    uint64_t *all = calloc((size_t)L->wsize * 2, sizeof(uint64_t));
    if (!all)
        return MP_FAIL(err, NOMEM, "out of memory");
    int rc = mp_xport_allgather(L->x, h, all, sizeof h, "start-up agreement", err);
    for (int r = 1; !rc && r < L->wsize; r++) {
        if (all[2 * r] != all[0])
            rc = MP_FAIL(err, USAGE, "rank %d runs a different model, schedule, plan or flags "
                         "than rank 0: every rank must get the same command line, model file and "
                         "plan file", r);
        else if (all[2 * r + 1] != all[1] && L->wrank == 0)
            fprintf(stderr, "mpipe: warning: rank %d uses a different BLIS kernel set than rank 0 "
                    "(%s): results may differ in the last bits\n", r, mp_gemm_arch());
    }
    free(all);
    return rc;
}

static int finish(struct loop *L, struct mp_train_result *r, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double m[3] = {L->busy_wall > 0 ? L->busy_time / L->busy_wall : 1.0,
                   (double)L->st.act_bytes_peak, (double)ru.ru_maxrss * 1024.0 /* KiB */};
    double busy_frac = m[0];
    if (L->cfg->progress || !L->cfg->quiet)
        fprintf(stderr, "rank %d: peak_rss_bytes=%.0f predicted %.0f (params %.0f, grads %.0f, "
                "optimizer %.0f, activations %.0f, data %.0f, packed weights %.0f, other %.0f)\n",
                L->wrank, m[2], L->mem_pred.total, L->mem_pred.params, L->mem_pred.grads,
                L->mem_pred.optim, L->mem_pred.acts, L->mem_pred.data, L->mem_pred.packed,
                L->mem_pred.scratch + L->mem_pred.tied + L->mem_pred.dp + L->mem_pred.overhead +
                    L->mem_pred.hand_peers);
    if (c->P > 1 && (L->cfg->progress || !L->cfg->quiet))
        fprintf(stderr, "rank %d: hand-offs %llu through shared memory, %llu as MPI messages\n",
                L->wrank, L->ex.n_sent_shared, L->ex.n_sent_mpi);
    if (mp__train_report(L, &r->busy_pace, err))
        return -1;
    if (L->wsize > 1) {
        if (mp_xport_allreduce_sum(L->x, &busy_frac, 1, "the measured bubble", err) ||
            mp_xport_allreduce_max(L->x, &m[1], 2, "the peak memory", err))
            return -1;
        busy_frac /= L->wsize;
    }
    r->bubble = busy_frac < 1 ? 1 - busy_frac : 0;
    r->peak_act_bytes = m[1];
    r->peak_rss_bytes = m[2];
    r->steps = L->step;
    r->timed_steps = L->step - L->start.step;
    r->samples_per_s = samples_per_s(L);
    if (c->save_weights &&
        mp_weights_save(&L->st, L->st.param, L->bounds, L->x, c->save_weights, NULL, err))
        return -1;
    if (c->trace_path)
        return mp_train_write_trace(&L->trace, L->x, c->trace_path, err);
    return 0;
}

int mp_train_run(const struct mp_train_cfg *cfg, struct mp_xport *x, struct mp_train_result *r,
                 struct mp_err *err)
{
    struct loop L;
    memset(&L, 0, sizeof L);
    memset(r, 0, sizeof *r);
    L.cfg = cfg;
    L.x = x;
    L.wrank = mp_xport_rank(x);
    L.lr = cfg->lr;
    mp_lr_state_init(&L.lr_state);
    mp_xport_set_deadline(x, cfg->deadline_s);
    L.wsize = mp_xport_size(x);
    /* The agreement first: it judges values gathered from all ranks, and once they agree on the
     * model, schedule and flags, the layout's checks (the configuration, a plan's boundaries and
     * the number of ranks) fail alike on every rank. So every rank found any error so far
     * (mp_err_mark_shared: the CLI has rank 0 say it before any rank exits). */
    int rc = check_agreement(&L, err);
    if (!rc)
        rc = mp__train_check_outputs(&L, err);
    if (!rc)
        rc = setup_layout(&L, err);
    if (rc)
        mp_err_mark_shared(err);
    if (!rc && mp_data_load_model(&L.data, cfg->data_src, cfg->model, cfg->seed, err)) {
        rc = -1;
        if (err->code == MP_ERR_USAGE) /* --data's own syntax: every rank read the same flag */
            mp_err_mark_shared(err);
    }
    if (!rc && cfg->eval_windows_given && cfg->model->tokens && L.wrank == 0 &&
        L.data.test.n < cfg->eval_windows) /* what it asked for is not there: say what is */
        fprintf(stderr, "mpipe train: note: --eval-windows %zu: the validation split of %s holds "
                "%zu window%s of %zu bytes; %s evaluated\n", cfg->eval_windows, cfg->data_src,
                L.data.test.n, L.data.test.n == 1 ? "" : "s", cfg->model->label_len,
                L.data.test.n == 1 ? "it is" : "all are");
    if (!rc && !(L.order = malloc((L.data.train.n + cfg->batch) * sizeof *L.order)))
        rc = MP_FAIL(err, NOMEM, "out of memory");
    for (int i = 0; !rc && i < cfg->model->n_layers; i++) /* tie_gradients' receive buffer */
        if (mp_layer_is_tied(&cfg->model->layers[i]) &&
            !(L.tie_buf = malloc(cfg->model->layers[i].n_weight * sizeof(float))))
            rc = MP_FAIL(err, NOMEM, "out of memory");
    if (!rc)
        rc = setup_state(&L, err);
    if (!rc) {
        L.trace.n_ranks = L.wsize;
        L.ex.t_origin = mp_xport_now();
        if (cfg->max_steps == 0)
            r->test_acc = 0;
        rc = run_epochs(&L, &r->test_acc, &r->val_loss, &r->loss, err);
    }
    if (!rc)
        rc = finish(&L, r, err);
    if (L.metrics)
        fclose(L.metrics);
    mp_exec_free(&L.ex);
    mp_stage_free(&L.st);
    mp_data_free(&L.data);
    mp_sched_free(&L.sched);
    for (int k = 0; L.scheds && k <= cfg->M; k++)
        if (L.scheds[k].acts)
            mp_sched_free(&L.scheds[k]);
    free(L.scheds);
    mp_trace_free(&L.trace);
    mp_dp_buckets_free(&L.dp);
    mp_dp_free(&L.dp);
    if (L.px && L.px != x)
        mp_xport_finalize(L.px);
    if (L.sx)
        mp_xport_finalize(L.sx);
    free(L.order);
    free(L.tie_buf);
    free(L.zero_counts);
    free(L.zero_displs);
    free(L.reduce);
    free(L.pace);
    free(L.bounds);
    if (err && rc)
        err->rank = L.wrank;
    return rc;
}
