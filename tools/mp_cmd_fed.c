/* `mpipe fed`: federated training (issues 7 and 19, DESIGN.md §4). Flags → struct mp_fed_cfg,
 * checked before MPI starts; then every rank runs its role (engine/fed/mp_fed.h: rank 0 the
 * server, then each client's stages) and rank 0 prints the RESULT line. Owns flag syntax and
 * defaults only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_cli.h"
#include "mp_fed.h"
#include "mp_flags.h"
#include "mp_xport.h"

static const char help[] =
    "usage: mpirun -np 1+C*P mpipe fed MODEL.mp --clients C --rounds R [options]\n"
    "\n"
    "Rank 0 is the server, then each client's P ranks (--client-stages P, default 1: one rank\n"
    "holding the whole model). Each round the server samples clients, sends them the global\n"
    "weights, each trains locally on its own split of the training set, and the server combines\n"
    "the updates, steps the global model and tests it.\n"
    "\n"
    "Federation:\n"
    "  --clients C           number of clients (required; -np must be 1+C*P, else exit 2)\n"
    "  --rounds R            communication rounds (required)\n"
    "  --local-epochs E      local epochs per round (default 1)\n"
    "  --local-steps K       K local steps per round instead (whole epochs, the last cut short)\n"
    "  --fraction F          share of clients sampled per round from the seed, at least one\n"
    "                        (default 1.0)\n"
    "  --min-clients K       close a round as soon as K updates are accepted, and change the\n"
    "                        model only with at least K (default: wait for every sampled client\n"
    "                        up to the deadline, apply any)\n"
    "  --split S             iid (default) | dirichlet:A (per-class Dirichlet(A) proportions) |\n"
    "                        shards:K (sorted by label, K shards per client) | contiguous (the\n"
    "                        data's own order cut into C stretches; text: iid or contiguous)\n"
    "  --algo A              fedavg (default) | fedprox (adds mu (w - w_global) to local grads)\n"
    "  --mu X                FedProx proximal weight (default 0.01)\n"
    "  --round-deadline S    seconds the server waits for a round's updates; late clients are\n"
    "                        left out of that round and rejoin later (default 600)\n"
    "Aggregation:\n"
    "  --aggregate W         size (default: FedAvg, weights ~ client samples) | perf (samples x\n"
    "                        a bounded EMA of each client's local loss reduction; logged) |\n"
    "                        median (coordinate-wise) | trimmed:B (cut the B share from each end\n"
    "                        per coordinate, 0 <= B < 0.5) | krum:F | multikrum:F (F assumed bad\n"
    "                        clients; needs more than 2F+2 a round). Robust rules ignore the\n"
    "                        sample counts clients report\n"
    "  --server-opt O        avg (default) | adam | yogi | adagrad: the server's step on the\n"
    "                        pseudo-gradient (aggregate - global), Reddi et al. 2021\n"
    "  --server-lr X         server learning rate (default: avg 1, adam/yogi 0.01, adagrad 0.03)\n"
    "  --attack K:MODE       K clients, chosen from the seed, attack: signflip (send -update) |\n"
    "                        scale:X (X times the update) | noise (Gaussian, the update's norm)\n"
    "Privacy (DP-FedAvg, McMahan et al. 2018):\n"
    "  --clip-update X       clip each client's update to L2 norm X (server side)\n"
    "  --noise-multiplier S  add N(0, (S X / sampled clients)^2) to the mean update from the\n"
    "                        server's own generator; logs (epsilon, delta) every round\n"
    "  --delta D             the accountant's delta (default 1/C^1.1)\n"
    "Pipelined clients:\n"
    "  --client-stages P     each client is a P-stage pipeline of ranks (default 1)\n"
    "  --schedule S          the clients' schedule: gpipe | 1f1b (default) | interleaved | zb1 |\n"
    "                        zbv\n"
    "  --chunks V            virtual stages per rank for interleaved (default 2)\n"
    "  --micro-batches M     per local step (default: 1 for P = 1, else the largest divisor of B\n"
    "                        up to 2P, as train); the numbers depend on M, never on P\n"
    "Local training (fresh optimizer state every round):\n"
    "  --data SRC            fashion-mnist (default) | mnist-dir:DIR | synthetic:N, and for token\n"
    "                        models text:fortunes (their default) | text:FILE: a client's samples\n"
    "                        are windows of T + 1 bytes at multiples of T\n"
    "  --eval-windows N      validation windows the server tests a token model on (default 256)\n"
    "  --batch B             local mini-batch (default 64)\n"
    "  --optimizer O         sgd | momentum | nesterov | adam | adamw | rmsprop | lamb (default adam)\n"
    "  --lr X                (default 0.0002; 0.001 for token models, as train)\n"
    "  --lr-schedule K       constant (default) | step | cosine | plateau, over a round's steps\n"
    "  --warmup N            linear warm-up steps per round (default 0)\n"
    "  --momentum X          (default 0.9)   --weight-decay X  (default: torch.optim's)\n"
    "  --seed N              data split, sampling, attackers, init, shuffles, noise (default 0)\n"
    "Output:\n"
    "  --checkpoint DIR      server checkpoint after every round: DIR/round-N/ and DIR/latest\n"
    "  --resume              continue from DIR/latest (a dead client ends the MPI job: resume)\n"
    "  --save-weights FILE   the final global model as safetensors (as train writes it)\n"
    "\n"
    "Logs one line per round on stderr (clients, weights, train loss, test accuracy), and at the\n"
    "end on stdout: RESULT test_acc=... loss=... rounds=... clients=...\n"
    "(loss: the final global model's mean test loss), plus epsilon=... delta=... with\n"
    "--noise-multiplier\n";

struct fed_args {
    struct mp_fed_cfg cfg;
    const char *model_path;
    struct mp_optim_flags opt;
    int data_given; /* --data was on the command line */
    int lr_given;   /* --lr was */
};

static int takes_value(const char *f)
{
    static const char *const with_value[] = {
        "--clients", "--rounds", "--local-epochs", "--local-steps", "--fraction", "--split",
        "--algo", "--mu", "--aggregate", "--round-deadline", "--data", "--batch", "--optimizer",
        "--lr", "--lr-schedule", "--warmup", "--momentum", "--weight-decay", "--seed",
        "--checkpoint", "--min-clients", "--server-opt", "--server-lr", "--attack", "--clip-update",
        "--noise-multiplier", "--delta", "--client-stages", "--schedule", "--chunks",
        "--micro-batches", "--save-weights", "--eval-windows", NULL};
    for (int i = 0; with_value[i]; i++)
        if (!strcmp(f, with_value[i]))
            return 1;
    return 0;
}

static const char *const algo_names[] = {"fedavg", "fedprox", NULL};
static const char *const opt_names[] = {"avg", "adam", "yogi", "adagrad", NULL};

static int parse_fed_flag(struct fed_args *a, const char *f, const char *v, struct mp_err *err)
{
    struct mp_fed_cfg *c = &a->cfg;
    long long n;
    int k;
    if (mp_flag_is(f, "--clients")) {
        if (mp_flag_int(f, v, 1, 4095, &n, err))
            return -1;
        c->clients = (int)n;
    } else if (mp_flag_is(f, "--rounds")) {
        if (mp_flag_int(f, v, 1, 1 << 20, &n, err))
            return -1;
        c->rounds = (int)n;
    } else if (mp_flag_is(f, "--local-epochs")) {
        if (mp_flag_int(f, v, 1, 1 << 16, &n, err))
            return -1;
        c->local_epochs = (int)n;
    } else if (mp_flag_is(f, "--local-steps")) {
        if (mp_flag_int(f, v, 1, 1LL << 40, &n, err))
            return -1;
        c->local_steps = n;
    } else if (mp_flag_is(f, "--fraction"))
        return mp_flag_double(f, v, 1e-9, 1, &c->fraction, err);
    else if (mp_flag_is(f, "--split"))
        return mp_fed_split_parse(v, &c->split, err);
    else if (mp_flag_is(f, "--algo")) {
        if (mp_flag_choice(f, v, algo_names, &k, err))
            return -1;
        c->algo = (enum mp_fed_algo)k;
    } else if (mp_flag_is(f, "--mu"))
        return mp_flag_double(f, v, 0, 1e6, &c->mu, err);
    else if (mp_flag_is(f, "--aggregate"))
        return mp_fed_agg_parse(v, c, err);
    else if (mp_flag_is(f, "--min-clients")) {
        if (mp_flag_int(f, v, 1, 4095, &n, err))
            return -1;
        c->min_clients = (int)n;
    } else if (mp_flag_is(f, "--round-deadline"))
        return mp_flag_double(f, v, 0.001, 1e7, &c->round_deadline, err);
    else if (mp_flag_is(f, "--eval-windows")) {
        if (mp_flag_int(f, v, 1, 1LL << 40, &n, err))
            return -1;
        c->eval_windows = (size_t)n;
    } else
        return 1;
    return 0;
}

/* Server optimizer, attacks, privacy and pipelined clients (issue 19). */
static int parse_server_flag(struct fed_args *a, const char *f, const char *v, struct mp_err *err)
{
    struct mp_fed_cfg *c = &a->cfg;
    long long n;
    int k;
    if (mp_flag_is(f, "--server-opt")) {
        if (mp_flag_choice(f, v, opt_names, &k, err))
            return -1;
        c->server_opt = (enum mp_fed_server_opt)k;
    } else if (mp_flag_is(f, "--server-lr"))
        return mp_flag_double(f, v, 1e-12, 1e3, &c->server_lr, err);
    else if (mp_flag_is(f, "--attack"))
        return mp_fed_attack_parse(v, &c->attack, err);
    else if (mp_flag_is(f, "--clip-update"))
        return mp_flag_double(f, v, 1e-12, 1e12, &c->clip_update, err);
    else if (mp_flag_is(f, "--noise-multiplier"))
        return mp_flag_double(f, v, 1e-6, 1e6, &c->noise_multiplier, err);
    else if (mp_flag_is(f, "--delta"))
        return mp_flag_double(f, v, 1e-300, 0.999999, &c->delta, err);
    else if (mp_flag_is(f, "--client-stages")) {
        if (mp_flag_int(f, v, 1, 1024, &n, err))
            return -1;
        c->client_stages = (int)n;
    } else if (mp_flag_is(f, "--micro-batches")) {
        if (mp_flag_int(f, v, 1, 1 << 20, &n, err))
            return -1;
        c->micro_batches = (int)n;
    } else if (mp_flag_is(f, "--chunks")) {
        if (mp_flag_int(f, v, 1, 64, &n, err))
            return -1;
        c->chunks = (int)n;
    } else if (mp_flag_is(f, "--schedule")) {
        enum mp_sched_kind kind;
        if (mp_sched_parse(v, &kind))
            return MP_FAIL(err, USAGE, "--schedule %s: expected gpipe, 1f1b, interleaved, zb1 or "
                           "zbv", v);
        c->schedule = kind;
    } else if (mp_flag_is(f, "--save-weights"))
        c->save_weights = v;
    else
        return 1;
    return 0;
}

static int parse_local_flag(struct fed_args *a, const char *f, const char *v, struct mp_err *err)
{
    struct mp_fed_cfg *c = &a->cfg;
    long long n;
    if (mp_flag_is(f, "--data"))
        c->data_src = v, a->data_given = 1;
    else if (mp_flag_is(f, "--batch")) {
        if (mp_flag_int(f, v, 1, 1 << 20, &n, err))
            return -1;
        c->batch = (size_t)n;
    } else if (mp_flag_is(f, "--seed")) {
        if (mp_flag_int(f, v, 0, 1LL << 62, &n, err))
            return -1;
        c->seed = (uint64_t)n;
    } else if (mp_flag_is(f, "--checkpoint"))
        c->ckpt_dir = v;
    else if (mp_flag_is(f, "--resume"))
        c->resume = 1;
    else
        return 1;
    return 0;
}

static void defaults(struct fed_args *a)
{
    memset(a, 0, sizeof *a);
    a->opt.optim = &a->cfg.optim;
    a->opt.lr = &a->cfg.lr;
    struct mp_fed_cfg *c = &a->cfg;
    c->data_src = "fashion-mnist";
    c->local_epochs = 1;
    c->fraction = 1.0;
    c->split.kind = MP_FED_SPLIT_IID;
    c->algo = MP_FED_FEDAVG;
    c->mu = 0.01;
    c->agg = MP_FED_AGG_SIZE;
    c->server_opt = MP_FED_OPT_AVG;
    c->client_stages = 1;
    c->schedule = MP_SCHED_1F1B;
    c->round_deadline = 600;
    c->batch = 64;
    c->optim.kind = MP_OPT_ADAM;
    c->lr.kind = MP_LR_CONSTANT;
    /* 5e-4 plateaued at 0.843 on 8 Dirichlet(0.5) clients (client drift); 2e-4 reached 0.862. */
    c->lr.base_lr = 2e-4;
}

/* One flag through the federation, local-data and optimisation parsers; 1 when none knows it. */
static int parse_flag(void *ctx, const char *f, const char *v, struct mp_err *err)
{
    struct fed_args *a = ctx;
    a->lr_given |= mp_flag_is(f, "--lr");
    int rc = parse_fed_flag(a, f, v, err);
    if (rc == 1)
        rc = parse_server_flag(a, f, v, err);
    if (rc == 1)
        rc = parse_local_flag(a, f, v, err);
    if (rc == 1)
        rc = mp_flag_optim(&a->opt, f, v, err);
    return rc;
}

static int parse_args(struct fed_args *a, int argc, char **argv, struct mp_err *err)
{
    if (mp_flag_walk(argc, argv, takes_value, parse_flag, a, &a->model_path, "fed",
                     "mpipe fed models/mlp.mp ...", err))
        return -1;
    if (!a->cfg.clients || !a->cfg.rounds)
        return MP_FAIL(err, USAGE, "--clients C and --rounds R are required");
    if (a->cfg.resume && !a->cfg.ckpt_dir)
        return MP_FAIL(err, USAGE, "--resume needs --checkpoint DIR");
    return mp_fed_cfg_check(&a->cfg, err);
}

int mp_cmd_fed(int argc, char **argv, struct mp_err *err)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        }
    struct fed_args a;
    defaults(&a);
    int bad_flags = parse_args(&a, argc, argv, err);
    if (bad_flags && !mp_cli_under_mpirun())
        return -1;
    if (!bad_flags)
        mp_flag_optim_finish(&a.opt);
    struct mp_xport *x = NULL;
    if (mp_xport_init(&x, &argc, &argv, err))
        return -1;
    int rank = mp_xport_rank(x);
    struct mp_model m;
    memset(&m, 0, sizeof m);
    struct mp_fed_result r;
    int rc = mp_xport_settle(x, bad_flags ? bad_flags : mp_model_load(&m, a.model_path, err),
                             "the command line or the model file", err);
    a.cfg.model = &m;
    /* A token model's data and learning rate, as train's (DESIGN.md §9): fed's 2e-4 is tuned for
     * Fashion-MNIST clients and leaves a GPT's loss near its start after a round. */
    if (!rc && m.tokens && !a.data_given)
        a.cfg.data_src = "text:fortunes";
    if (!rc && m.tokens && !a.lr_given)
        a.cfg.lr.base_lr = 1e-3;
    if (!rc)
        rc = mp_fed_run(&a.cfg, x, &r, err);
    if (!rc && rank == 0) {
        fflush(stderr);
        printf("\nRESULT test_acc=%.4f loss=%.4f rounds=%d clients=%d", r.test_acc, r.test_loss,
               r.rounds, r.clients);
        if (r.dp)
            printf(" epsilon=%.4f delta=%.3g", r.epsilon, r.delta);
        printf("\n");
        fflush(stdout);
    }
    mp_model_free(&m);
    if (rc) {
        /* An error every rank found (the same options, model and data: mp_xport_settle), rank 0
         * says once, before any rank exits; any other is this rank's own, and only it can say it
         * (a client given another --data hung the job for a minute and nobody said why). */
        mp_cli_report_shared(x, "fed", err);
        mp_xport_release(x);
        return -1;
    }
    mp_xport_finalize(x);
    return 0;
}
