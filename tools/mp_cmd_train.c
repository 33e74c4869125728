/* `mpipe train`: flags (DESIGN.md §4) → struct mp_train_cfg, a plan's stage boundaries if given,
 * then the engine's training loop on every rank; rank 0 prints the RESULT line. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_calib.h"
#include "mp_cli.h"
#include "mp_cost.h"
#include "mp_flags.h"
#include "mp_plan.h"
#include "mp_topo.h"
#include "mp_train.h"
#include "mp_xport.h"

static const char help[] =
    "usage: mpirun -np N mpipe train MODEL.mp [options]      (or plain `mpipe train` on one rank)\n"
    "\n"
    "Pipeline layout:\n"
    "  --plan FILE           stage boundaries, schedule, M, batch, recomputation, optimizer\n"
    "                        and --zero from `mpipe plan --out` (flags given here win)\n"
    "  --stages P            pipeline stages (default: number of ranks / D)\n"
    "  --dp D                data-parallel replicas of the pipeline (default 1); run on P*D ranks\n"
    "                        (rank = replica*P + stage), or on P ranks to emulate them in turn\n"
    "  --dp-reduce MODE      ordered (default: replicas' sums added in replica order, the same\n"
    "                        bits on any number of processes) | fast (MPI_Allreduce's order)\n"
    "  --aggregate A         mean (default) | size (by samples processed) | custom |\n"
    "                        perf (EMA of each replica's loss relative to the others: lower loss,\n"
    "                        more weight, within [0.5, 2] x the mean; logged in --metrics)\n"
    "  --aggregate-weights F one weight per replica, for --aggregate custom\n"
    "  --shard-by S          equal (default) | speed (whole micro-batches per replica in\n"
    "                        proportion to its measured speed, re-balanced every 10 steps)\n"
    "  --schedule S          gpipe | 1f1b | interleaved | zb1 | zbv (default 1f1b)\n"
    "  --chunks V            virtual stages per rank for interleaved (default 2)\n"
    "  --micro-batches M     micro-batches per step (default: largest divisor of B <= 2*P*D;\n"
    "                        1 on one rank)\n"
    "Data and length:\n"
    "  --data SRC            fashion-mnist (default) | mnist-dir:DIR | synthetic:N |\n"
    "                        text:fortunes (default for token models) | text:FILE\n"
    "  --epochs E            (default 10)    --max-steps N   stop after N optimizer steps\n"
    "  --batch B             global batch (default 256; 32 for token models)\n"
    "  --eval-every K        also evaluate every K steps (logged on stderr and in --metrics)\n"
    "  --eval-windows N      validation windows a token model is evaluated on (default 256)\n"
    "  --shuffle on|off      (default on)    --seed N        (default 0)\n"
    "Optimisation:\n"
    "  --optimizer O         sgd | momentum | nesterov | adam | adamw | rmsprop | lamb (default adam)\n"
    "  --lr X                (default 0.001)\n"
    "  --momentum X          (default 0.9; momentum and nesterov only)\n"
    "  --weight-decay X      (default: torch.optim's: 0.01 for adamw and lamb, else 0)\n"
    "  --lr-schedule K       constant | step | cosine | plateau (default cosine)\n"
    "  --warmup N            linear warm-up steps (default 0; 100 for token models)\n"
    "  --clip-norm X         clip the global gradient norm to X (default 0: off; 1 for token\n"
    "                        models)\n"
    "Memory:\n"
    "  --memory-per-rank B   hard cap per rank (suffixes K, M, G; default: the host's memory /\n"
    "                        the ranks on it); a layout predicted above it does not start\n"
    "  --recompute R         none | auto (default: only stages the cap needs) | all: a\n"
    "                        recomputing stage keeps only its input per micro-batch in flight\n"
    "                        and reruns its forward before the backward (same bits)\n"
    "  --zero 0|1            1: with --dp D on P*D ranks each replica keeps optimizer state for\n"
    "                        1/D of its stage's parameters (ZeRO-1; same bits); with one\n"
    "                        replica, or replicas one rank runs in turn, a note: no effect\n"
    "Input and output:\n"
    "  --init FILE           start from a safetensors file (as written by --save-weights)\n"
    "  --save-weights FILE   write all parameters as safetensors (L{layer}.weight/.bias)\n"
    "  --trace FILE.json     per-rank timeline (Chrome trace; open in Perfetto)\n"
    "  --metrics FILE.jsonl  one JSON object per step\n"
    "  --deadline SECONDS    longest any wait may take before the job fails with exit 4 (default 60)\n"
    "  --checkpoint DIR      write DIR/step-N/ (stage files, manifest.json) and DIR/latest at\n"
    "                        each epoch's end and when --max-steps stops the run; a rank that\n"
    "                        fails or is ended also appends its `waited` line to DIR/failures.log\n"
    "  --checkpoint-every N  also every N steps      --keep K  newest checkpoints kept (default 2)\n"
    "  --resume              continue from DIR's newest valid checkpoint, on any number of\n"
    "                        stages (same --batch and --micro-batches: by default the\n"
    "                        checkpointed run's, from DIR/layout.json; exit 3 if none is valid)\n"
    "\n"
    "Prints a progress line on stderr when it is a terminal, and at the end on stdout:\n"
    "  RESULT samples_per_s=... test_acc=... loss=... steps=... stages=... dp=... bubble=...\n"
    "         peak_act_bytes=... peak_rss_bytes=... [tokens_per_s=... val_loss=... val_bpb=...]\n"
    "  (token models: test_acc is next-byte accuracy on the validation windows, val_loss their\n"
    "  mean loss in nats per byte, val_bpb = val_loss / ln 2)\n"
    "Exit codes: 0 ok, 2 bad usage/input, 3 I/O, 4 peer failed or deadline passed, 5 NaN/Inf loss.\n";

struct train_args {
    struct mp_train_cfg cfg;
    int argc;
    char **argv;             /* to tell a default from a given flag */
    const char *model_path, *plan_path;
    long long stages, dp, chunks, micro;
    struct mp_optim_flags opt;
    int *recompute_stages;   /* from a plan */
    int *pool_dropped;       /* from a plan: the stages its cap left no room for the pool */
    double *plan_busy;       /* from a plan: its predicted busy seconds per stage rank */
    /* From a plan priced by a rates cache, trained as planned on one host: the cache's key and
     * the plan's price from the rates alone, to keep this run beside them (keep_run). */
    char plan_rates_key[17];
    double plan_priced_s;
};

/* Flags that take a value; anything else starting with "-" is unknown (or --resume). */
static int takes_value(const char *f)
{
    static const char *const with_value[] = {
        "--plan", "--stages", "--dp", "--data", "--epochs", "--batch", "--micro-batches",
        "--schedule", "--chunks", "--optimizer", "--lr", "--momentum", "--weight-decay",
        "--lr-schedule", "--warmup", "--clip-norm", "--seed", "--init", "--shuffle", "--max-steps",
        "--save-weights", "--checkpoint", "--checkpoint-every", "--keep", "--trace", "--metrics",
        "--deadline", "--aggregate", "--aggregate-weights", "--dp-reduce", "--shard-by",
        "--eval-every", "--eval-windows", "--recompute", "--memory-per-rank", "--zero", NULL};
    for (int i = 0; with_value[i]; i++)
        if (!strcmp(f, with_value[i]))
            return 1;
    return 0;
}

static const char *const sched_names[] = {"gpipe", "1f1b", "interleaved", "zb1", "zbv", NULL};
static const char *const onoff[] = {"off", "on", NULL};

static int parse_optim_flag(struct train_args *a, const char *f, const char *v, struct mp_err *err)
{
    if (!mp_flag_is(f, "--clip-norm"))
        return mp_flag_optim(&a->opt, f, v, err);
    double d;
    if (mp_flag_double(f, v, 0, 1e30, &d, err))
        return -1;
    a->cfg.clip_norm = (float)d;
    return 0;
}

static int parse_run_flag(struct train_args *a, const char *f, const char *v, struct mp_err *err)
{
    struct mp_train_cfg *c = &a->cfg;
    long long n;
    double d;
    int k;
    if (mp_flag_is(f, "--plan"))
        a->plan_path = v;
    else if (mp_flag_is(f, "--stages"))
        return mp_flag_int(f, v, 1, 4096, &a->stages, err);
    else if (mp_flag_is(f, "--dp"))
        return mp_flag_int(f, v, 1, 4096, &a->dp, err);
    else if (mp_flag_is(f, "--chunks"))
        return mp_flag_int(f, v, 1, 64, &a->chunks, err);
    else if (mp_flag_is(f, "--micro-batches"))
        return mp_flag_int(f, v, 1, 1 << 20, &a->micro, err);
    else if (mp_flag_is(f, "--schedule")) {
        if (mp_flag_choice(f, v, sched_names, &k, err))
            return -1;
        c->schedule = (enum mp_sched_kind)k;
    } else if (mp_flag_is(f, "--data"))
        c->data_src = v;
    else if (mp_flag_is(f, "--epochs")) {
        if (mp_flag_int(f, v, 1, 1 << 20, &n, err))
            return -1;
        c->epochs = (int)n;
    } else if (mp_flag_is(f, "--batch")) {
        if (mp_flag_int(f, v, 1, 1 << 24, &n, err))
            return -1;
        c->batch = (size_t)n;
    } else if (mp_flag_is(f, "--max-steps")) {
        if (mp_flag_int(f, v, 0, 1LL << 50, &n, err))
            return -1;
        c->max_steps = n;
    } else if (mp_flag_is(f, "--seed")) {
        if (mp_flag_int(f, v, 0, 1LL << 62, &n, err))
            return -1;
        c->seed = (uint64_t)n;
    } else if (mp_flag_is(f, "--shuffle")) {
        if (mp_flag_choice(f, v, onoff, &k, err))
            return -1;
        c->shuffle = k;
    } else if (mp_flag_is(f, "--init"))
        c->init_path = v;
    else if (mp_flag_is(f, "--save-weights"))
        c->save_weights = v;
    else if (mp_flag_is(f, "--trace"))
        c->trace_path = v;
    else if (mp_flag_is(f, "--metrics"))
        c->metrics_path = v;
    else if (mp_flag_is(f, "--eval-every")) {
        if (mp_flag_int(f, v, 1, 1LL << 50, &n, err))
            return -1;
        c->eval_every = (uint64_t)n;
    } else if (mp_flag_is(f, "--recompute")) {
        static const char *const modes[] = {"none", "auto", "all", NULL};
        if (mp_flag_choice(f, v, modes, &k, err))
            return -1;
        c->recompute = k;
    } else if (mp_flag_is(f, "--zero")) {
        static const char *const zero[] = {"0", "1", NULL};
        return mp_flag_choice(f, v, zero, &c->zero, err);
    } else if (mp_flag_is(f, "--memory-per-rank")) {
        return mp_flag_bytes(f, v, &c->mem_cap, err);
    } else if (mp_flag_is(f, "--eval-windows")) {
        if (mp_flag_int(f, v, 1, 1LL << 40, &n, err))
            return -1;
        c->eval_windows = (size_t)n, c->eval_windows_given = 1;
    } else if (mp_flag_is(f, "--deadline")) {
        if (mp_flag_double(f, v, 0.001, 1e7, &d, err))
            return -1;
        c->deadline_s = d;
    } else
        return 1;
    return 0;
}

/* Checkpoint flags (engine/ckpt/mp_ckpt.h); --resume takes no value. */
static int parse_ckpt_flag(struct train_args *a, const char *f, const char *v, struct mp_err *err)
{
    struct mp_train_cfg *c = &a->cfg;
    long long n;
    if (mp_flag_is(f, "--checkpoint"))
        c->ckpt_dir = v;
    else if (mp_flag_is(f, "--checkpoint-every")) {
        if (mp_flag_int(f, v, 1, 1LL << 50, &n, err))
            return -1;
        c->ckpt_every = (uint64_t)n;
    } else if (mp_flag_is(f, "--keep")) {
        if (mp_flag_int(f, v, 1, 1 << 20, &n, err))
            return -1;
        c->ckpt_keep = (int)n;
    } else if (mp_flag_is(f, "--resume"))
        c->resume = 1;
    else
        return 1;
    return 0;
}

/* Data-parallel flags: --dp-reduce, --aggregate, --aggregate-weights, --shard-by. */
static int parse_dp_flag(struct train_args *a, const char *f, const char *v, struct mp_err *err)
{
    static const char *const reduce[] = {"ordered", "fast", NULL};
    static const char *const agg[] = {"mean", "size", "perf", "custom", NULL};
    static const char *const shard[] = {"equal", "speed", NULL};
    struct mp_train_cfg *c = &a->cfg;
    int k;
    if (mp_flag_is(f, "--dp-reduce")) {
        if (mp_flag_choice(f, v, reduce, &k, err))
            return -1;
        c->dp_reduce = (enum mp_dp_reduce)k;
    } else if (mp_flag_is(f, "--aggregate")) {
        if (mp_flag_choice(f, v, agg, &k, err))
            return -1;
        c->aggregate = (enum mp_dp_aggregate)k;
    } else if (mp_flag_is(f, "--aggregate-weights")) {
        c->aggregate_weights = v;
    } else if (mp_flag_is(f, "--shard-by")) {
        if (mp_flag_choice(f, v, shard, &k, err))
            return -1;
        c->shard_speed = k == 1;
    } else {
        return 1;
    }
    return 0;
}

/* One flag through the parsers of each group; 1 when none knows it. */
static int parse_flag(void *ctx, const char *f, const char *v, struct mp_err *err)
{
    struct train_args *a = ctx;
    int rc = parse_run_flag(a, f, v, err);
    if (rc == 1)
        rc = parse_dp_flag(a, f, v, err);
    if (rc == 1)
        rc = parse_optim_flag(a, f, v, err);
    if (rc == 1)
        rc = parse_ckpt_flag(a, f, v, err);
    return rc;
}

static int parse_args(struct train_args *a, int argc, char **argv, struct mp_err *err)
{
    if (mp_flag_walk(argc, argv, takes_value, parse_flag, a, &a->model_path, "train",
                     "mpipe train models/mlp.mp", err))
        return -1;
    if (!a->cfg.ckpt_dir && (a->cfg.resume || a->cfg.ckpt_every || a->cfg.ckpt_keep))
        return MP_FAIL(err, USAGE, "--resume, --checkpoint-every and --keep need --checkpoint DIR");
    return 0;
}

static void defaults(struct train_args *a)
{
    memset(a, 0, sizeof *a);
    a->opt.optim = &a->cfg.optim;
    a->opt.lr = &a->cfg.lr;
    struct mp_train_cfg *c = &a->cfg;
    c->data_src = "fashion-mnist";
    c->schedule = MP_SCHED_1F1B;
    c->batch = 256;
    c->epochs = 10;
    c->max_steps = -1;
    c->optim.kind = MP_OPT_ADAM;
    c->lr.kind = MP_LR_COSINE;
    c->lr.base_lr = 1e-3;
    c->shuffle = 1;
    c->deadline_s = 60;
    c->recompute = 1;
}

/* Whether the command line gave `flag` (as "--flag V" or "--flag=V"). */
static int given(const struct train_args *a, const char *flag)
{
    size_t n = strlen(flag);
    for (int i = 1; i < a->argc; i++)
        if (!strncmp(a->argv[i], flag, n) && (a->argv[i][n] == '\0' || a->argv[i][n] == '='))
            return 1;
    return 0;
}

/* Trains with optimizer `kind`: its defaults, then the flags' overrides. */
static void use_optimizer(struct train_args *a, enum mp_optim_kind kind)
{
    a->cfg.optim.kind = kind;
    mp_flag_optim_finish(&a->opt);
}

/* The optimizer and --zero the plan priced (its memory and its step), unless the flags say
 * otherwise; 0 when they do and differ, as the prediction is then not this run's. */
static int take_plan_optimizer(struct train_args *a, const struct mp_plan *p)
{
    int same = 1;
    enum mp_optim_kind kind;
    if (p->optimizer[0] && !mp_optim_parse(p->optimizer, &kind)) { /* mp_plan_read checked it */
        if (!given(a, "--optimizer"))
            use_optimizer(a, kind);
        same &= a->cfg.optim.kind == kind;
    }
    if (p->zero >= 0) {
        if (!given(a, "--zero"))
            a->cfg.zero = p->zero;
        same &= a->cfg.zero == p->zero;
    }
    return same;
}

/* The plan's predicted busy seconds a step of each stage rank (its passes and its optimizer
 * step, as the simulator counts them), for train to set beside each rank's own. A plan the
 * simulator cannot time (as `mpipe sim` would say) trains all the same, without that line. */
static int plan_busy(struct train_args *a, struct mp_plan *p, struct mp_err *err)
{
    struct mp_sim_result *res = malloc(sizeof *res);
    if (!res || !(a->plan_busy = malloc((size_t)p->P * sizeof *a->plan_busy))) {
        free(res);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    struct mp_err why;
    memset(&why, 0, sizeof why);
    if (mp_cost_predict(p, res, NULL, &why)) { /* rewrites p's step: taken already */
        fprintf(stderr, "mpipe train: warning: %s: no busy time per rank to set beside the run's "
                "(%s)\n", a->plan_path, why.msg);
    } else {
        for (int r = 0; r < p->P; r++)
            a->plan_busy[r] = res->busy_s[r];
        a->cfg.plan_busy_s = a->plan_busy;
    }
    free(res);
    return 0;
}

/* Takes P, V, M, batch, schedule, optimizer, --zero, boundaries and recomputation from a plan
 * whose digest matches the model. */
static int apply_plan(struct train_args *a, const struct mp_model *m, int **bounds,
                      struct mp_err *err)
{
    struct mp_plan p;
    if (mp_plan_read(&p, a->plan_path, err))
        return -1;
    int rc = 0;
    /* The prediction holds for the plan's own M, batch, optimizer and --zero only. */
    int as_planned = (!a->micro || a->micro == p.M) &&
                     (!a->cfg.batch_given || a->cfg.batch == p.batch);
    if (strcmp(p.digest, m->digest))
        rc = MP_FAIL(err, INPUT, "%s: plan was made for another model (digest %s, %s has %s): "
                     "re-run mpipe plan", a->plan_path, p.digest, m->path, m->digest);
    else if (p.n_layers != m->n_layers)
        rc = MP_FAIL(err, INPUT, "%s: plan has %d layers, %s has %d: re-run mpipe plan",
                     a->plan_path, p.n_layers, m->path, m->n_layers);
    /* Every rank checks every boundary, so the rank-0 report names the bad one (a stage's own
     * rank would find it alone and be silenced as a duplicate usage error). */
    for (int v = 1; !rc && v < p.n_stages; v++) {
        const struct mp_layer *l = &m->layers[p.stages[v].first_layer];
        if (l->unit == m->layers[l->index - 1].unit)
            rc = MP_FAIL(err, INPUT, "%s: stage %d starts at layer %d (%s, line %d), inside a "
                         "residual block: a stage boundary falls only between top-level units",
                         a->plan_path, v, l->index, l->ops->name, l->line);
    }
    if (!rc && !(*bounds = malloc(sizeof(int) * (size_t)(p.n_stages + 1))))
        rc = MP_FAIL(err, NOMEM, "out of memory");
    if (!rc && (!(a->recompute_stages = calloc((size_t)p.n_stages, sizeof(int))) ||
                !(a->pool_dropped = calloc((size_t)p.n_stages, sizeof(int)))))
        rc = MP_FAIL(err, NOMEM, "out of memory");
    if (!rc) {
        for (int v = 0; v < p.n_stages; v++) {
            (*bounds)[v] = p.stages[v].first_layer;
            a->recompute_stages[v] = p.stages[v].recompute;
            a->pool_dropped[v] = p.stages[v].pool_dropped;
        }
        if (!given(a, "--recompute")) /* the plan chose per stage; a flag given overrides it */
            a->cfg.recompute_stages = a->recompute_stages;
        /* ... and so the step: recomputing is one more forward (a 60M plan of gpt.mp trained
         * with --recompute none was set beside the price of its recomputing stages). Under
         * auto, train's own cap decides, as the plan's did. */
        for (int v = 0; v < p.n_stages && given(a, "--recompute") && a->cfg.recompute != 1; v++)
            as_planned &= p.stages[v].recompute == (a->cfg.recompute == 2);
        /* The plan's cap left these stages' ranks no room for the packed-weight pool: without
         * it (a plan made under --memory-per-rank 64M, trained under the default cap), gpt.mp's
         * 2 stages kept the pool and peaked at 80 MB a rank. A cap given to train decides. */
        if (!given(a, "--memory-per-rank"))
            a->cfg.pool_dropped_stages = a->pool_dropped;
        /* The cap the plan was made under, when one was given to it, is this run's unless train
         * is given one: a plan made under 64M and trained with --recompute none ran over it
         * without a word (the plan did not record it). */
        if (!given(a, "--memory-per-rank") && p.mem_cap > 0) {
            a->cfg.mem_cap = p.mem_cap;
            a->cfg.mem_cap_from = a->plan_path;
        }
        (*bounds)[p.n_stages] = p.stages[p.n_stages - 1].last_layer + 1;
        a->cfg.P = p.P;
        a->cfg.D = p.D;
        a->cfg.V = p.V;
        a->cfg.schedule = p.schedule;
        if (!a->micro)
            a->micro = p.M;
        if (!a->cfg.batch_given)
            a->cfg.batch = p.batch;
        as_planned &= take_plan_optimizer(a, &p);
        a->cfg.plan_step_s = as_planned ? p.step_s : 0;
        int one_host = 1;
        for (int k = 1; k < p.n_ranks; k++)
            one_host &= mp_plan_same_host(&p, 0, k);
        if (as_planned && one_host && p.rates_key[0] && p.priced_step_s > 0) {
            snprintf(a->plan_rates_key, sizeof a->plan_rates_key, "%s", p.rates_key);
            a->plan_priced_s = p.priced_step_s;
        }
    }
    if (!rc && a->cfg.plan_step_s > 0 && plan_busy(a, &p, err))
        rc = -1;
    mp_plan_free(&p);
    return rc;
}

/* A language model's defaults (DESIGN.md §9; the README's table): its own data, a batch of 32
 * windows, 100 warm-up steps into the cosine decay, clipping at 1 (what nanoGPT does), and 256
 * validation windows. Flags given on the command line win. */
static void token_defaults(struct train_args *a)
{
    struct mp_train_cfg *c = &a->cfg;
    if (!given(a, "--data"))
        c->data_src = "text:fortunes";
    if (!c->batch_given)
        c->batch = 32;
    if (!given(a, "--warmup"))
        c->lr.warmup = 100;
    if (!given(a, "--clip-norm"))
        c->clip_norm = 1.0f;
    if (!c->eval_windows)
        c->eval_windows = 256;
}

/* --resume without --micro-batches, --batch, --optimizer or --dp: the checkpointed run's own
 * (DIR/layout.json, which train writes as it starts, as tools/mpipe-run reads it): the numbers
 * continue exactly only with them (DESIGN.md §6), and before, a resume on another number of ranks
 * without them stopped with exit 2 asking for them. --dp D is part of the numbers too (replicas
 * sum their own micro-batches): a --dp 2 run resumed on one rank without it continued as --dp 1,
 * other numbers and no word of it; now its D replicas are emulated there. A DIR without the file
 * (nothing trained there yet) keeps the defaults; so does a malformed one, with a warning naming
 * it: it was exit 2, which blocked resuming from sound checkpoints with every flag given. */
static void resume_defaults(struct train_args *a, int rank)
{
    struct mp_train_cfg *c = &a->cfg;
    int opt_given = given(a, "--optimizer");
    if (!c->resume || !c->ckpt_dir || (a->micro && c->batch_given && opt_given && a->dp))
        return;
    char path[4200];
    snprintf(path, sizeof path, "%s/layout.json", c->ckpt_dir);
    if (access(path, F_OK) != 0)
        return;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    json_int_t M = 0, batch = 0, D = 1;
    const char *format = "", *optim = NULL; /* layouts before 2026-12-07 lack the optimizer */
    enum mp_optim_kind kind = c->optim.kind;
    int bad = !root || json_unpack(root, "{s:s, s:I, s:I, s?s, s?I}", "format", &format, "M", &M,
                                   "batch", &batch, "optimizer", &optim, "D", &D) ||
              strcmp(format, "mpipe-layout") || M < 1 || M > (1 << 24) || batch < M ||
              batch % M || (optim && mp_optim_parse(optim, &kind)) || D < 1 || D > 4096;
    json_decref(root); /* optim pointed into it: only kind is used below */
    if (bad) { /* the checkpoints may be fine: their manifests still decide (check_compat) */
        if (rank == 0)
            fprintf(stderr, "mpipe train: warning: %s: %s; ignored: the flags given, or their "
                    "defaults, are checked against the checkpoint itself\n", path,
                    !root ? je.text : "expected {\"format\": \"mpipe-layout\", \"M\": M, "
                    "\"batch\": B, \"optimizer\": O, \"D\": D} with B a multiple of M >= 1, "
                    "O an optimizer mpipe knows and D from 1 to 4096");
        return;
    }
    int took_m = !a->micro, took_b = !c->batch_given, took_o = !opt_given && kind != c->optim.kind;
    int took_d = !a->dp && D > 1;
    if (took_m)
        a->micro = M;
    if (took_b)
        c->batch = (size_t)batch, c->batch_given = 1;
    if (took_o)
        use_optimizer(a, kind);
    if (took_d)
        a->dp = D;
    if (rank == 0 && (took_m || took_b || took_o || took_d)) {
        char what[128] = "";
        if (took_b)
            snprintf(what, sizeof what, "--batch %lld ", (long long)batch);
        if (took_m)
            snprintf(what + strlen(what), sizeof what - strlen(what), "--micro-batches %lld ",
                     (long long)M);
        if (took_o)
            snprintf(what + strlen(what), sizeof what - strlen(what), "--optimizer %s ",
                     mp_optim_name(kind));
        if (took_d)
            snprintf(what + strlen(what), sizeof what - strlen(what), "--dp %lld ",
                     (long long)D);
        fprintf(stderr, "mpipe train: resuming with the checkpointed run's %s(%s)\n", what, path);
    }
}

/* --memory-per-rank's default (DESIGN.md §10): this host's memory (hwloc) over the ranks Open MPI
 * placed on it; 0 (no cap) when hwloc cannot tell. */
static size_t default_mem_cap(void)
{
    struct mp_topo t;
    struct mp_err e;
    mp_err_clear(&e);
    if (mp_topo_load(&t, "live", &e))
        return 0;
    double mem = t.mem_bytes;
    mp_topo_free(&t);
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    long n = local ? strtol(local, NULL, 10) : 1;
    return mem > 0 ? (size_t)(mem / (double)(n > 0 ? n : 1)) : 0;
}

static int setup(struct train_args *a, struct mp_model *m, struct mp_xport *x, int **bounds,
                 struct mp_err *err)
{
    struct mp_train_cfg *c = &a->cfg;
    if (mp_model_load(m, a->model_path, err))
        return -1;
    c->model = m;
    resume_defaults(a, mp_xport_rank(x));
    if (m->tokens)
        token_defaults(a);
    if (!c->mem_cap)
        c->mem_cap = default_mem_cap();
    c->D = a->dp ? (int)a->dp : 1;
    c->P = a->stages ? (int)a->stages : (mp_xport_size(x) % c->D ? mp_xport_size(x)
                                                                   : mp_xport_size(x) / c->D);
    c->V = mp_sched_chunks(c->schedule, a->chunks ? (int)a->chunks : 2);
    if (a->plan_path && apply_plan(a, m, bounds, err))
        return -1;
    if (c->P * c->V > m->n_units - 1)
        return MP_FAIL(err, USAGE, "%d stages x %d chunks is more than the %d %s of %s", c->P,
                       c->V, m->n_units - 1, m->n_units == m->n_layers ? "layers" :
                       "partition units (layers and residual blocks)", a->model_path);
    if (c->aggregate == MP_AGG_CUSTOM && !c->aggregate_weights)
        return MP_FAIL(err, USAGE, "--aggregate custom needs --aggregate-weights FILE");
    /* none that D divides: 1, which the check of M against --dp then refuses, naming both */
    c->M = a->micro ? (int)a->micro : mp_plan_default_micro(c->batch, c->P, c->D);
    if (c->M == 0)
        c->M = 1;
    if (c->M % c->D)
        return MP_FAIL(err, USAGE, "--micro-batches %d is not divisible by --dp %d", c->M, c->D);
    if (c->batch % (size_t)c->M)
        return MP_FAIL(err, USAGE, "--batch %zu is not divisible by --micro-batches %d", c->batch,
                       c->M);
    c->bounds = *bounds;
    return 0;
}

/* Rank 0, after a run of a plan's own layout priced from this machine's rates cache: the run's
 * mean step and its ranks' pace beside the plan's price, kept in the cache, so the next plans of
 * this layout lean as its runs did (mp_cost_lean). Only runs that measure the layout: a second
 * or more of 50 steps or more (a tiny model's first steps and one hiccup bend a short run by
 * 10-60%), without checkpoints, whose writing no plan prices. A trace costs little (tiny_mlp.mp,
 * 0.4 ms a step, one rank: 2% in samples/s, median of 5 pairs; less on longer steps), and
 * tools/demo's run, the one users make first, traces: it counts. */
static void keep_run(const struct train_args *a, const struct mp_model *m,
                     const struct mp_train_result *r)
{
    const struct mp_train_cfg *c = &a->cfg;
    double mean = r->samples_per_s > 0 ? (double)c->batch / r->samples_per_s : 0;
    if (!a->plan_rates_key[0] || c->plan_step_s <= 0 || c->ckpt_dir ||
        r->timed_steps < 50 || mean * (double)r->timed_steps < 1.0 || !(r->busy_pace > 0))
        return;
    struct mp_cost_run run = {.P = c->P, .D = c->D, .M = c->M, .batch = c->batch,
                              .priced_s = a->plan_priced_s, .measured_s = mean,
                              .pace = r->busy_pace};
    memcpy(run.digest, m->digest, sizeof run.digest);
    char path[4200];
    int kept = mp_calib_keep_run(&run, a->plan_rates_key, path, sizeof path);
    if (kept < 0)
        fprintf(stderr, "mpipe train: warning: cannot keep this run beside its plan's rates in "
                "%s (the next plans price this layout without it)\n", path);
    else if (kept && (c->progress || !c->quiet))
        fprintf(stderr, "plan: this run's mean step, %.2fx the price from the rates with its "
                "ranks at %.2fx their price (a lean of %.2fx), is kept in %s: the next plans of "
                "this layout lean by its last runs\n", mean / a->plan_priced_s, r->busy_pace,
                mp_cost_run_lean(&run), path);
}

static void print_result(const struct mp_train_cfg *c, const struct mp_train_result *r)
{
    fflush(stderr);
    printf("\nRESULT samples_per_s=%.1f test_acc=%.4f loss=%.4f steps=%llu stages=%d dp=%d "
           "bubble=%.4f peak_act_bytes=%.0f peak_rss_bytes=%.0f",
           r->samples_per_s, r->test_acc, r->loss, (unsigned long long)r->steps, c->P, c->D, r->bubble,
           r->peak_act_bytes, r->peak_rss_bytes);
    if (c->model->tokens)
        printf(" tokens_per_s=%.1f val_loss=%.4f val_bpb=%.4f",
               r->samples_per_s * (double)c->model->seq_len, r->val_loss, r->val_loss / log(2.0));
    printf("\n");
    fflush(stdout);
}

int mp_cmd_train(int argc, char **argv, struct mp_err *err)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        }
    struct train_args a;
    defaults(&a);
    a.argc = argc;
    a.argv = argv;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--batch") || !strncmp(argv[i], "--batch=", 8))
            a.cfg.batch_given = 1;
    int bad_flags = parse_args(&a, argc, argv, err);
    if (bad_flags && !mp_cli_under_mpirun())
        return -1;
    if (!bad_flags)
        mp_flag_optim_finish(&a.opt);
    struct mp_xport *x = NULL;
    if (mp_xport_init(&x, &argc, &argv, err))
        return -1;
    int rank = mp_xport_rank(x);
    char failures[4200]; /* DIR/failures.log: each rank's `waited` line survives mpirun's exit */
    if (a.cfg.ckpt_dir && mp_xport_size(x) > 1) {
        snprintf(failures, sizeof failures, "%s/failures.log", a.cfg.ckpt_dir);
        mp_xport_set_report_file(x, failures);
    }
    struct mp_model m;
    memset(&m, 0, sizeof m);
    int *bounds = NULL;
    struct mp_train_result r;
    /* The flags and setup read only the command line, the number of ranks and the model and plan
     * files: with the same ones (as every rank must get) every rank fails alike, and rank 0 says
     * it once; otherwise each failed rank says its own error (a flag an older mpipe on one host
     * does not know) and the others refuse to start. */
    int rc = mp_xport_settle(x, bad_flags ? bad_flags : setup(&a, &m, x, &bounds, err),
                             "the command line or the model or plan file", err);
    a.cfg.progress = rank == 0 && isatty(STDERR_FILENO);
    if (!rc)
        rc = mp_train_run(&a.cfg, x, &r, err);
    if (!rc && rank == 0) {
        keep_run(&a, &m, &r);
        print_result(&a.cfg, &r);
    }
    if (rc) /* an error every rank found rank 0 says once; any other, its own rank */
        mp_cli_report_shared(x, "train", err);
    free(bounds);
    free(a.recompute_stages);
    free(a.pool_dropped);
    free(a.plan_busy);
    mp_model_free(&m);
    if (!rc)
        mp_xport_finalize(x);
    else
        mp_xport_release(x);
    return rc;
}
