/* `mpipe plan`: flags → a plan (DESIGN.md §4, §5). Loads the model, the topology and the cost
 * sources, places P * D ranks, partitions the layers against the placement's links, predicts the
 * step with the engine's simulator (searching P and D for --stages auto), then prints a table or
 * the plan JSON and writes the plan and rankfile. No training, no MPI: planning is instant. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_calib.h"
#include "mp_cli.h"
#include "mp_cost.h"
#include "mp_flags.h"
#include "mp_partition.h"
#include "mp_place.h"
#include "mp_plan.h"
#include "mp_plan_mem.h"
#include "mp_plan_print.h"
#include "mp_plan_try.h"
#include "mp_data.h"
#include "mp_optim.h"
#include "mp_stage_mem.h"

static const char help[] =
    "usage: mpipe plan MODEL.mp --stages P|auto [options]\n"
    "\n"
    "Splits MODEL.mp into pipeline stages, places the ranks on cores and predicts the step time.\n"
    "\n"
    "  --stages P|auto          pipeline stages; auto searches P and D with P*D = ranks\n"
    "  --ranks N                ranks to plan for (default: P*D, or for auto the topology's\n"
    "                           cores / the hostfile's slots)\n"
    "  --dp D                   data-parallel replicas of every stage (default 1, or ranks/P)\n"
    "  --micro-batches M        micro-batches per step (default: the M with the best predicted\n"
    "                           step among the divisors of B that are multiples of D, up to\n"
    "                           8*P*D: bigger micro-batches run faster GEMMs, more shrink the\n"
    "                           bubble)\n"
    "  --batch B                global batch (default 256, as mpipe train; 32 for token models)\n"
    "  --schedule S             gpipe, 1f1b, interleaved, zb1, zbv (default: the best\n"
    "                           predicted of 1f1b, interleaved, zb1 and zbv; 1f1b on 1 stage)\n"
    "  --chunks V               virtual stages per rank for interleaved (default 2)\n"
    "  --topology live|FILE.xml machine topology: hwloc on this machine (default) or an XML\n"
    "                           export (lstopo-no-graphics --of xml FILE.xml)\n"
    "  --hosts FILE             Open MPI hostfile (`host slots=N`, optional topology=FILE.xml)\n"
    "  --profile PROFILE.json   measured layer times (mpipe bench layers --json) instead of\n"
    "                           this machine's own rates\n"
    "  --recalibrate            measure this machine's rates again instead of reusing the cache\n"
    "                           (a plan also does when the model's step, timed again, runs\n"
    "                           15% faster than the cache's three times in a row, or 15%\n"
    "                           slower at two checks 5 to 60 minutes apart)\n"
    "  --links P2P.json         measured links (mpipe bench p2p --json)\n"
    "  --rates GEMM.json        this machine's GEMM rate (mpipe bench gemm --json) instead of\n"
    "                           the documented default, for the analytic costs\n"
    "  --memory-per-rank BYTES  hard cap on each rank's predicted peak: params, grads,\n"
    "                           optimizer state, activations in flight, buffers, data and the\n"
    "                           process itself (suffixes K, M, G; default: the host's memory /\n"
    "                           the ranks on it); nothing fits: exit 2 naming what would\n"
    "  --recompute R            none | auto (default: recompute the stages of ranks over the\n"
    "                           cap) | all; priced as one more forward before each backward\n"
    "  --optimizer O            the optimizer whose state is counted (default adam: 2 floats\n"
    "                           per parameter; momentum, nesterov, rmsprop 1; sgd 1, unused)\n"
    "  --zero 0|1               1: optimizer state sharded over the D replicas\n"
    "  --partition KIND         optimal (default: exact min of the bottleneck stage, compute +\n"
    "                           its communication), params (balanced parameter bytes), uniform\n"
    "  --out plan.json          write the plan (read by mpipe train --plan and mpipe sim)\n"
    "  --rankfile FILE          write an Open MPI rankfile (rank N=host slot=S:C)\n"
    "  --json                   print the plan JSON on stdout instead of the table\n"
    "  --try K                  run the K best-predicted layouts (of those within 20% of the\n"
    "                           best) on this machine before picking: each trained about 1 s\n"
    "                           a round (mpirun ... mpipe train --plan, synthetic images or\n"
    "                           the token model's default text), 3 rounds in turns; the plan\n"
    "                           takes the one whose best run was fastest and records them\n"
    "                           all (\"tried\"). Prices a few per cent apart are the\n"
    "                           machine's minute to decide; a trial settles it\n"
    "\n"
    "Costs without --profile or --rates: this machine's, measured in a few seconds the first\n"
    "time: every GEMM shape the model's layers call (through the path training uses, warm),\n"
    "each layer pass's element-wise part in place, and the optimizer step. GEMM rates are\n"
    "cached in $XDG_CACHE_HOME/mpipe/ (default ~/.cache/mpipe/), one file per CPU model, BLIS\n"
    "configuration and mpipe version; a corrupt or foreign file is ignored with a warning and\n"
    "rewritten. The plan's cost_source says which. With --rates: GEMM layers (dense, conv2d)\n"
    "take max(FLOPs / rate, bytes / 10 GB/s), other layers bytes / 10 GB/s, plus 2 us per\n"
    "kernel call. Links: on this machine's own topology (no --topology FILE, no --hosts) every\n"
    "level the ranks span (same L3, NUMA node, socket, across sockets) is measured once with\n"
    "mpirun -np 2 mpipe bench p2p between two of the cores and cached with the rates; the\n"
    "reduction between replicas with mpirun -np 2 mpipe bench reduce. Otherwise, and without\n"
    "--links (latency, bandwidth): same L3 0.4 us 12 GB/s, same NUMA 0.6 us 10 GB/s, same\n"
    "socket 0.8 us 8 GB/s, cross-socket 1.5 us 5 GB/s, cross-host 25 us 1.1 GB/s. Memory per\n"
    "rank: 4 x params (weights, grads, Adam's 2 slots) + held micro-batches x activations\n"
    "(1f1b and zb1: stage s holds min(P-s, M); gpipe: M; interleaved: Megatron's warm-up;\n"
    "zbv: each of its 2 chunks min(P, M)).\n"
    "With interleaved and zbv, each of a rank's V chunks gets 1/V of --memory-per-rank.\n"
    "Ranks are replica-major (rank = replica*P + stage); consecutive stages take neighbouring\n"
    "cores. More ranks than cores is allowed: round-robin, a warning, \"oversubscribed\": true,\n"
    "and ranks sharing a core are predicted to run that many times slower.\n";

struct plan_args {
    const char *model, *topology, *hosts, *profile, *links, *rates, *out, *rankfile;
    long long stages, ranks, dp, micro, batch, chunks;  /* stages 0: auto */
    long long try_k;                                     /* --try K; 0: price only */
    enum mp_sched_kind schedule;
    int schedule_given;
    enum mp_part_kind partition;
    size_t mem_cap;
    int json, recalibrate;
    int batch_given, optim_slots, zero;
    enum mp_optim_kind optim;
    enum mp_recompute recompute;
};

static int takes_value(const char *f)
{
    return strcmp(f, "--json") && strcmp(f, "--help") && strcmp(f, "--recalibrate");
}

static int parse_flag(struct plan_args *a, const char *f, const char *v, struct mp_err *err)
{
    static const char *const scheds[] = {"gpipe", "1f1b", "interleaved", "zb1", "zbv", NULL};
    static const char *const parts[] = {"uniform", "params", "optimal", NULL};
    int k;
    if (mp_flag_is(f, "--stages"))
        return strcmp(v, "auto") == 0 ? (a->stages = 0, 0)
                                      : mp_flag_int(f, v, 1, 4096, &a->stages, err);
    if (mp_flag_is(f, "--ranks"))
        return mp_flag_int(f, v, 1, 1 << 20, &a->ranks, err);
    if (mp_flag_is(f, "--dp"))
        return mp_flag_int(f, v, 1, 4096, &a->dp, err);
    if (mp_flag_is(f, "--micro-batches"))
        return mp_flag_int(f, v, 1, 1 << 24, &a->micro, err);
    if (mp_flag_is(f, "--batch"))
        return mp_flag_int(f, v, 1, 1 << 30, &a->batch, err);
    if (mp_flag_is(f, "--chunks"))
        return mp_flag_int(f, v, 1, 64, &a->chunks, err);
    if (mp_flag_is(f, "--try"))
        return mp_flag_int(f, v, 1, 16, &a->try_k, err);
    if (mp_flag_is(f, "--schedule"))
        return mp_flag_choice(f, v, scheds, &k, err)
                   ? -1
                   : (mp_sched_parse(v, &a->schedule), a->schedule_given = 1, 0);
    if (mp_flag_is(f, "--partition"))
        return mp_flag_choice(f, v, parts, &k, err) ? -1 : (a->partition = (enum mp_part_kind)k, 0);
    if (mp_flag_is(f, "--memory-per-rank"))
        return mp_flag_bytes(f, v, &a->mem_cap, err);
    if (mp_flag_is(f, "--recompute")) {
        static const char *const modes[] = {"none", "auto", "all", NULL};
        return mp_flag_choice(f, v, modes, &k, err) ? -1 : (a->recompute = k, 0);
    }
    if (mp_flag_is(f, "--zero")) {
        static const char *const zero[] = {"0", "1", NULL};
        return mp_flag_choice(f, v, zero, &a->zero, err);
    }
    if (mp_flag_is(f, "--optimizer")) {
        enum mp_optim_kind o;
        if (mp_optim_parse(v, &o))
            return MP_FAIL(err, USAGE, "--optimizer %s: expected sgd, momentum, nesterov, adam, "
                           "adamw, rmsprop or lamb", v);
        a->optim_slots = mp_optim_state_slots(o);
        a->optim = o;
        return 0;
    }
    const char **dst = mp_flag_is(f, "--topology") ? &a->topology
                       : mp_flag_is(f, "--hosts")   ? &a->hosts
                       : mp_flag_is(f, "--profile") ? &a->profile
                       : mp_flag_is(f, "--links")   ? &a->links
                       : mp_flag_is(f, "--rates")   ? &a->rates
                       : mp_flag_is(f, "--out")     ? &a->out
                       : mp_flag_is(f, "--rankfile") ? &a->rankfile : NULL;
    if (!dst)
        return MP_FAIL(err, USAGE, "unknown flag '%s' (see mpipe plan --help)", f);
    *dst = v;
    return 0;
}

static int parse_args(struct plan_args *a, int argc, char **argv, struct mp_err *err)
{
    int stages_given = 0;
    memset(a, 0, sizeof *a);
    a->topology = "live", a->batch = 256, a->schedule = MP_SCHED_1F1B;
    a->partition = MP_PART_OPTIMAL;
    a->optim_slots = 2, a->optim = MP_OPT_ADAM, a->recompute = MP_RECOMPUTE_AUTO;
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-' || !argv[i][1]) {
            if (a->model)
                return MP_FAIL(err, USAGE, "unexpected argument '%s' (one model file only)",
                               argv[i]);
            a->model = argv[i++];
            continue;
        }
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err))
            return -1;
        if (mp_flag_is(f, "--json"))
            a->json = 1;
        else if (mp_flag_is(f, "--recalibrate"))
            a->recalibrate = 1;
        else if (parse_flag(a, f, v, err))
            return -1;
        stages_given |= mp_flag_is(f, "--stages");
        a->batch_given |= mp_flag_is(f, "--batch");
    }
    if (!a->model)
        return MP_FAIL(err, USAGE,
                       "no model file given (e.g. mpipe plan models/mlp.mp --stages 2)");
    if (!stages_given)
        return MP_FAIL(err, USAGE, "--stages P|auto is required (e.g. --stages 2)");
    if (a->chunks && a->schedule != MP_SCHED_INTERLEAVED && a->chunks != 1)
        return MP_FAIL(err, USAGE, "--chunks %lld needs --schedule interleaved", a->chunks);
    if (a->try_k && (a->hosts || strcmp(a->topology, "live")))
        return MP_FAIL(err, USAGE, "--try runs the layouts on this machine: not with %s (plan "
                       "here without it, or try each layout with mpirun ... mpipe train --plan)",
                       a->hosts ? "--hosts" : "--topology FILE");
    return 0;
}

static int default_micro(size_t batch, int P, int D)
{
    if (P == 1 && D == 1)
        return 1;
    for (size_t m = (size_t)(2 * P * D); m >= 1; m--)
        if (batch % m == 0 && m % (size_t)D == 0)
            return (int)m;
    return 0;
}

/* The micro-batch counts a plan of (P, D) tries without --micro-batches: the divisors of B that
 * are multiples of D, up to 8 * P * D. The first after M (M 0: the first of all), 0 past them. */
static int next_micro(size_t B, int P, int D, int M)
{
    for (size_t m = (size_t)M + (size_t)D; m <= B && m <= (size_t)(8 * P * D); m += (size_t)D)
        if (B % m == 0)
            return (int)m;
    return 0;
}

/* Everything one candidate (P, D, M) needs besides the model and flags. */
struct env {
    const struct plan_args *a;
    const struct mp_model *m;
    const struct mp_cluster *cl;
    struct mp_cost_model cm;
    struct mp_plan_mem_cfg mem; /* optimizer slots, zero, recompute, the cap, the data */
    struct mp_try_list *priced; /* --try: every layout priced, else NULL */
};

/* The link matrix between the P ranks of replica 0 (the simulator's view of one pipeline). */
static int set_links(struct mp_plan *p, const struct env *e, const struct mp_placement *pl)
{
    size_t PP = (size_t)p->P * (size_t)p->P;
    p->link_latency_s = malloc(sizeof(double) * PP);
    p->link_bandwidth_Bps = malloc(sizeof(double) * PP);
    if (!p->link_latency_s || !p->link_bandwidth_Bps)
        return -1;
    for (int x = 0; x < p->P; x++)
        for (int y = 0; y < p->P; y++) {
            const struct mp_link *l = &e->cm.link[mp_place_level(pl, e->cl, x, y)];
            p->link_latency_s[x * p->P + y] = l->latency_s;
            p->link_bandwidth_Bps[x * p->P + y] = l->bandwidth_Bps;
        }
    return 0;
}

/* The slowest link between the replicas of pipeline position s (what its allreduce crosses). */
static enum mp_link_level replica_level(const struct env *e, const struct mp_placement *pl, int P,
                                        int D, int s)
{
    enum mp_link_level worst = MP_LINK_L3;
    for (int d = 1; d < D; d++) {
        enum mp_link_level l = mp_place_level(pl, e->cl, s, d * P + s);
        worst = l > worst ? l : worst;
    }
    return worst;
}

/* Arrays of the partition problem: items are the model's partition units after the input (a layer,
 * or a whole residual block: a stage boundary never falls inside one, DESIGN.md §9), stages the
 * P * V virtual stages. */
static int partition(struct mp_plan *p, const struct env *e, const struct mp_placement *pl,
                     struct mp_err *err)
{
    int n = e->m->n_units - 1, S = p->n_stages, P = p->P, D = p->D;
    double *b = calloc((size_t)(4 * n + 6 * S), sizeof(double));
    int *last = malloc(sizeof(int) * (size_t)S);
    int *item_last = malloc(sizeof(int) * (size_t)n); /* global index of each item's last layer */
    if (!b || !last || !item_last) {
        free(b), free(last), free(item_last);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    double *comp = b, *par = b + n, *act = b + 2 * n, *held = b + 3 * n, *lat = b + 4 * n;
    double *bw = lat + S, *alpha = bw + S, *beta = alpha + S, *hmb = beta + S, *slow = hmb + S;
    for (int i = 1; i < p->n_layers; i++) {
        const struct mp_plan_layer *l = &p->layers[i];
        int k = e->m->layers[i].unit - 1;
        comp[k] += l->compute_s, par[k] += (double)l->param_bytes;
        act[k] = (double)l->act_bytes_out; /* the unit's output: its last layer's */
        held[k] += (double)(2 * l->act_bytes_out + l->saved_bytes); /* outputs and their grads */
        item_last[k] = i;
    }
    enum mp_vplace place = mp_sched_place(p->schedule);
    for (int v = 0; v < S; v++) {
        int x = mp_vstage_rank(place, v, P), y = mp_vstage_rank(place, (v + 1) % S, P);
        lat[v] = x == y ? 0 : p->link_latency_s[x * P + y];
        bw[v] = x == y ? 1e30 : p->link_bandwidth_Bps[x * P + y];
        mp_cost_reduce_linear(&e->cm, (int)replica_level(e, pl, P, D, x), D, &alpha[v], &beta[v]);
        int h = mp_cost_held_mb(p->schedule, P, p->V, p->M / D, x);
        hmb[v] = p->V > 1 ? (h + p->V - 1) / p->V : h;
        /* Ranks time-sharing a core (oversubscription) each run that much slower; so do
         * ranks on the efficiency cores of hybrid CPUs. Replicas step in lock-step, so the
         * stage runs at its slowest replica's pace. */
        slow[v] = 0;
        for (int d = 0; d < D; d++)
            slow[v] = fmax(slow[v], mp_place_sharing(pl, d * P + x) /
                                        mp_place_speed(pl, e->cl, d * P + x));
        p->stages[v].slowdown = slow[v];
    }
    struct mp_part_problem pr = {
        .n = n, .S = S, .compute_s = comp, .param_bytes = par, .act_out = act, .held = held,
        .in_bytes = (double)p->layers[0].act_bytes_out, .lat_s = lat, .Bps = bw,
        .K = p->M / D + P - 1, .slow = slow, .ar_alpha_s = alpha, .ar_beta = beta,
        .static_factor = 2.0 + e->mem.state_slots / (e->mem.zero ? (double)D : 1.0),
        .held_mb = hmb,
        .mem_cap = e->mem.mode == MP_RECOMPUTE_ALL || e->mem.cap <= 0 ? 0
                   : fmax(1, e->mem.cap - e->mem.data_bytes - MP_MEM_OVERHEAD_BYTES) / p->V};
    int rc = mp_partition_run(&pr, e->a->partition, last, err);
    if (rc && err->code == MP_ERR_USAGE && pr.mem_cap > 0) {
        /* No split fits the partitioner's coarse count. The exact one has the last word on the
         * fastest split (recomputation may make it fit): mp_plan_memory decides, and when it is
         * over the cap explain_no_fit says what would fit, under every --recompute alike. */
        pr.mem_cap = 0;
        rc = mp_partition_run(&pr, e->a->partition, last, err);
    }
    for (int v = 0; rc == 0 && v < S; v++) {
        p->stages[v].first_layer = v == 0 ? 1 : item_last[last[v - 1]] + 1;
        p->stages[v].last_layer = item_last[last[v]];
        p->stages[v].send_s = (v > 0 ? 2 * (lat[v - 1] + act[last[v - 1]] / bw[v - 1]) : 0) +
                              (v < S - 1 ? 2 * (lat[v] + act[last[v]] / bw[v]) : 0);
    }
    if (rc == 0)
        mp_partition_eval(&pr, last, &p->bottleneck);
    free(b), free(last), free(item_last);
    return rc;
}

/* Per-rank optimizer step and data-parallel allreduce: the slowest rank bounds the step. With
 * --zero 1 a replica updates a D-th of the parameters (whole layers, balanced: about a D-th) and
 * then all-gathers them, which the optimizer step counts. */
static void rank_step_costs(struct mp_plan *p, const struct env *e, const struct mp_placement *pl)
{
    for (int r = 0; r < p->P; r++) {
        double bytes = 0;
        for (int c = 0; c < p->V; c++)
            bytes += (double)p->stages[mp_vstage_of(mp_sched_place(p->schedule), r, c, p->P)]
                         .param_bytes;
        int level = (int)replica_level(e, pl, p->P, p->D, r), zero = e->mem.zero && p->D > 1;
        double opt = zero ? mp_cost_optim_s(&e->cm, bytes / p->D) +
                                mp_cost_gather_s(&e->cm, level, bytes, p->D)
                          : mp_cost_optim_s(&e->cm, bytes);
        double ar = mp_cost_reduce_s(&e->cm, level, bytes, p->D);
        p->optim_step_s = fmax(p->optim_step_s, opt);
        p->allreduce_s = fmax(p->allreduce_s, ar);
    }
}

static int build(const struct env *e, int P, int D, int M, struct mp_plan *p, struct mp_err *err)
{
    const struct plan_args *a = e->a;
    int V = mp_sched_chunks(a->schedule, a->chunks ? (int)a->chunks : 2);
    int n = e->m->n_units - 1;
    const char *units = n == e->m->n_layers - 1 ? "layers"
                                                : "partition units (layers and residual blocks)";
    if (P * V > n && V > 1 && n / P >= 2)
        return MP_FAIL(err, USAGE, "cannot split the %d %s of %s into %d stages (P x chunks): use "
                       "--chunks %d or fewer, or fewer --stages", n, units, e->m->path, P * V,
                       n / P);
    if (P * V > n)
        return MP_FAIL(err, USAGE, "cannot split the %d %s of %s into %d stages%s: use "
                       "--stages %d or fewer", n, units, e->m->path, P * V,
                       V > 1 ? " (P x chunks)" : "", n / V);
    memset(p, 0, sizeof *p);
    snprintf(p->model, sizeof p->model, "%s", e->m->path);
    memcpy(p->digest, e->m->digest, sizeof p->digest);
    snprintf(p->partition, sizeof p->partition, "%s", mp_partition_name(a->partition));
    snprintf(p->optimizer, sizeof p->optimizer, "%s", mp_optim_name(a->optim));
    p->zero = a->zero;
    p->schedule = a->schedule, p->P = P, p->D = D, p->V = V, p->M = M, p->batch = (size_t)a->batch;
    p->n_layers = e->m->n_layers, p->n_stages = P * V, p->bottleneck = -1;
    p->layers = calloc((size_t)p->n_layers, sizeof *p->layers);
    p->stages = calloc((size_t)p->n_stages, sizeof *p->stages);
    if (!p->layers || !p->stages)
        return MP_FAIL(err, NOMEM, "out of memory");
    struct mp_cost_model cm = e->cm;
    struct mp_placement pl;
    if (mp_cost_layers(e->m, p->batch / (size_t)M, &cm, a->profile, p->layers, err) ||
        mp_place_ranks(&pl, e->cl, P * D, err))
        return -1;
    snprintf(p->cost_source, sizeof p->cost_source, "%s", cm.source);
    p->oversubscribed = pl.oversubscribed;
    int rc = set_links(p, e, &pl) ? MP_FAIL(err, NOMEM, "out of memory") : 0;
    if (rc == 0)
        rc = partition(p, e, &pl, err);
    if (rc == 0)
        rc = mp_place_to_plan(p, &pl, e->cl, err);
    if (rc == 0) {
        mp_cost_fill_stages(p, cm.optim_slots);
        rc = mp_plan_memory(p, e->m, &e->mem, NULL, err);
    }
    if (rc == 0) {
        rank_step_costs(p, e, &pl);
        struct mp_sim_result *res = malloc(sizeof *res);
        rc = res ? mp_cost_predict(p, res, NULL, err) : MP_FAIL(err, NOMEM, "out of memory");
        free(res);
    }
    mp_placement_free(&pl);
    return rc;
}

/* build, and with --try the layout's key and price noted (mp_plan_try.h). */
static int build_noted(const struct env *e, int P, int D, int M, struct mp_plan *p,
                       struct mp_err *err)
{
    if (build(e, P, D, M, p, err))
        return -1;
    if (e->priced)
        mp_try_list_add(e->priced, (struct mp_try_key){e->a->schedule, P, D, M, p->step_s});
    return 0;
}

/* Without --micro-batches, the M with the best predicted step among the divisors of B that are
 * multiples of D, up to 8 * P * D micro-batches: fewer, bigger micro-batches run faster GEMMs,
 * more of them shrink the bubble, and only the whole-schedule prediction can weigh the two. */
static int build_best_m(const struct env *e, int P, int D, int M0, struct mp_plan *p,
                        struct mp_err *err)
{
    if (e->a->micro)
        return build_noted(e, P, D, M0, p, err);
    size_t B = (size_t)e->a->batch;
    int found = 0;
    for (int M = next_micro(B, P, D, 0); M; M = next_micro(B, P, D, M)) {
        struct mp_plan cand;
        memset(&cand, 0, sizeof cand);
        if (build_noted(e, P, D, M, &cand, err)) {
            mp_plan_free(&cand);
            if (err->code == MP_ERR_NOMEM || err->code == MP_ERR_INPUT)
                return -1;
            continue;
        }
        if (!found || cand.step_s < p->step_s) {
            if (found)
                mp_plan_free(p);
            *p = cand, found = 1;
        } else {
            mp_plan_free(&cand);
        }
    }
    return found ? 0 : build_noted(e, P, D, M0, p, err);
}

/* Without --schedule, the best predicted of the schedules that keep 1F1B's memory or trade a
 * little of it for a smaller bubble (gpipe only adds memory); the first of equals wins, so a tie
 * keeps the simpler schedule. One stage has no bubble to remove: 1f1b. */
static int build_best_sched(const struct env *e, int P, int D, int M0, struct mp_plan *p,
                            struct mp_err *err)
{
    static const enum mp_sched_kind kinds[] = {MP_SCHED_1F1B, MP_SCHED_INTERLEAVED, MP_SCHED_ZB1,
                                               MP_SCHED_ZBV};
    if (e->a->schedule_given || P == 1)
        return build_best_m(e, P, D, M0, p, err);
    int found = 0;
    struct mp_err first = *err; /* 1f1b's reason: the one that holds for every schedule */
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct plan_args a = *e->a;
        struct env ek = *e;
        struct mp_plan cand;
        memset(&cand, 0, sizeof cand);
        a.schedule = kinds[k], ek.a = &a;
        if (build_best_m(&ek, P, D, M0, &cand, err)) {
            mp_plan_free(&cand);
            if (err->code == MP_ERR_NOMEM || err->code == MP_ERR_INPUT)
                return -1;
            if (k == 0)
                first = *err;
            continue; /* e.g. fewer layers than 2P chunks */
        }
        if (!found || cand.step_s < p->step_s) {
            if (found)
                mp_plan_free(p);
            *p = cand, found = 1;
        } else {
            mp_plan_free(&cand);
        }
    }
    if (!found)
        *err = first;
    return found ? 0 : -1;
}

static int micro_for(const struct plan_args *a, int P, int D, int *M, struct mp_err *err)
{
    *M = a->micro ? (int)a->micro : default_micro((size_t)a->batch, P, D);
    if (*M < 1)
        return MP_FAIL(err, USAGE, "--batch %lld has no micro-batch count that is a multiple of "
                       "--dp %d: choose a batch divisible by %d", a->batch, D, D);
    if (a->batch % *M)
        return MP_FAIL(err, USAGE, "--batch %lld is not divisible by --micro-batches %d", a->batch,
                       *M);
    if (*M % D)
        return MP_FAIL(err, USAGE, "--micro-batches %d is not a multiple of --dp %d", *M, D);
    return 0;
}

/* --stages auto: every (P, D) with P * D = N; the best predicted step wins. */
static int search(const struct env *e, int N, struct mp_plan *best, struct mp_err *err)
{
    struct mp_err last_err;
    mp_err_clear(&last_err);
    int found = 0;
    for (int D = 1; D <= N; D++) {
        int P = N / D, M;
        struct mp_plan cand;
        memset(&cand, 0, sizeof cand);
        if (N % D || (e->a->dp && D != e->a->dp) || micro_for(e->a, P, D, &M, &last_err))
            continue;
        if (build_best_sched(e, P, D, M, &cand, &last_err)) {
            mp_plan_free(&cand);
            if (last_err.code == MP_ERR_NOMEM || last_err.code == MP_ERR_INPUT)
                break;
            continue;
        }
        if (!found || cand.step_s < best->step_s) {
            if (found)
                mp_plan_free(best);
            *best = cand, found = 1;
        } else {
            mp_plan_free(&cand);
        }
    }
    if (found)
        return 0;
    if (last_err.code != MP_OK) {
        *err = last_err;
        return -1;
    }
    return MP_FAIL(err, USAGE, "no split of %d ranks into stages x replicas fits: try --ranks, "
                   "--dp or --micro-batches", N);
}

static int plan_fixed(const struct env *e, struct mp_plan *p, struct mp_err *err)
{
    const struct plan_args *a = e->a;
    int P = (int)a->stages, D = a->dp ? (int)a->dp : 1, M;
    if (!a->dp && a->ranks) {
        if (a->ranks % P)
            return MP_FAIL(err, USAGE, "--ranks %lld is not a multiple of --stages %d", a->ranks,
                           P);
        D = (int)(a->ranks / P);
    }
    if (a->ranks && a->ranks != (long long)P * D)
        return MP_FAIL(err, USAGE, "--ranks %lld is not --stages %d x --dp %d", a->ranks, P, D);
    if (micro_for(a, P, D, &M, err))
        return -1;
    return build_best_sched(e, P, D, M, p, err);
}

/* --try K: builds the shortlist's layouts again (the plan's own first), runs them
 * (mp_plan_try.h) and makes *p the one that ran fastest, every layout run recorded in p->tried. */
static int try_layouts(const struct env *e, struct mp_plan *p, struct mp_err *err)
{
    int K = (int)e->a->try_k, n = 0, rc = 0;
    struct mp_try_key keys[16];
    struct mp_plan *plans = calloc((size_t)K, sizeof *plans);
    double *sps = calloc((size_t)K, sizeof *sps);
    struct mp_plan_trial *tried = calloc((size_t)K, sizeof *tried);
    if (!plans || !sps || !tried) {
        free(plans), free(sps), free(tried);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    int k = mp_try_list_best(e->priced, p, K, keys);
    plans[n++] = *p; /* the plan's own: its buffers stay p's */
    for (int i = 1; i < k && rc == 0; i++) {
        struct plan_args a = *e->a;
        struct env ek = *e;
        a.schedule = keys[i].schedule, ek.a = &a, ek.priced = NULL;
        if (build(&ek, keys[i].P, keys[i].D, keys[i].M, &plans[n], err) == 0)
            n++;
        else if (err->code == MP_ERR_NOMEM)
            rc = -1;
        else
            mp_plan_free(&plans[n]), mp_err_clear(err); /* priced once, so not expected */
    }
    if (rc == 0) {
        struct mp_try_job job = {.model = e->a->model, .tokens = e->m->tokens != 0,
                                 .oversubscribed = p->oversubscribed};
        rc = mp_plan_try(&job, plans, n, sps, err) < 0 ? -1 : 0;
    }
    int fastest = rc == 0 ? mp_plan_try_pick(plans, n, sps, tried) : 0;
    if (rc == 0 && fastest != 0) {
        mp_plan_free(p);
        *p = plans[fastest];
        memset(&plans[fastest], 0, sizeof plans[fastest]); /* now p's */
    }
    if (rc == 0)
        free(p->tried), p->tried = tried, p->n_tried = n;
    else
        free(tried);
    for (int i = 1; i < n; i++)
        mp_plan_free(&plans[i]);
    free(plans), free(sps);
    return rc;
}

static void print_launch(const struct plan_args *a, const struct mp_plan *p, FILE *f)
{
    fprintf(f, "launch: mpirun -np %d%s", p->P * p->D, p->oversubscribed ? " --oversubscribe" : "");
    if (a->hosts)
        fprintf(f, " --hostfile %s", a->hosts);
    if (a->rankfile)
        fprintf(f, " --rankfile %s", a->rankfile);
    else if (p->oversubscribed)
        fprintf(f, " --map-by core --bind-to none");  /* binding more ranks than cores fails */
    else
        fprintf(f, " --map-by core --bind-to core");
    fprintf(f, " mpipe train %s --plan %s\n", a->model, a->out ? a->out : "plan.json");
}

static int emit(const struct plan_args *a, const struct mp_plan *p, struct mp_err *err)
{
    if (p->oversubscribed)
        fprintf(stderr, "mpipe plan: warning: %d ranks on fewer cores: placed round-robin "
                "(oversubscribed); launch with mpirun --oversubscribe\n", p->P * p->D);
    if (a->out && mp_plan_write(p, a->out, err))
        return -1;
    if (a->rankfile && mp_place_write_rankfile(p, a->rankfile, err))
        return -1;
    if (a->json)
        return mp_plan_write(p, "-", err);
    mp_plan_print_table(p);
    mp_plan_try_print(p);
    print_launch(a, p, stdout);
    return 0;
}

/* This machine's rates for every micro-batch size the plan may try: B / M for each M dividing B
 * up to 8 micro-batches per rank (build_best_m's range), or B / M for a given M. */
static int calibrate(const struct plan_args *a, const struct mp_model *m, int ranks,
                     struct mp_cost_table *t, struct mp_cost_model *cm, struct mp_err *err)
{
    size_t B = (size_t)a->batch, mbs[64];
    int n = 0;
    for (size_t M = 1; M <= B && n < 64; M++) /* a given M beyond 8 per rank too */
        if (B % M == 0 && (a->micro ? M == (size_t)a->micro : M <= (size_t)(8 * ranks)))
            mbs[n++] = B / M;
    if (n == 0)
        return 0; /* no M fits: the plan says why */
    /* The data-parallel reduction is measured where the plan may have replicas (--dp 2 or more,
     * --ranks beyond --stages, or --stages auto on 2 or more ranks); the rows price replicas
     * within one socket, --links or the link defaults the rest. */
    int replicas = a->stages == 0 ? ranks >= 2 : a->dp ? a->dp >= 2 : ranks >= 2 * a->stages;
    if (mp_calib_table(m, mbs, n, a->optim, a->recalibrate, replicas, t, cm->source,
                       sizeof cm->source, err))
        return -1;
    cm->table = t;
    return 0;
}

/* --memory-per-rank's default (DESIGN.md §10): each host's memory (hwloc) over the ranks placed on
 * it, the smallest over hosts; 0 when no topology tells the memory. */
static double default_cap(const struct mp_cluster *cl, int ranks)
{
    double cap = 0;
    int left = ranks;
    for (int h = 0; h < cl->n_hosts && left > 0; h++) {
        int here = cl->hosts[h].slots < left ? cl->hosts[h].slots : left;
        if (h == cl->n_hosts - 1)
            here = left; /* oversubscribed: the last host takes the rest */
        left -= here;
        double c = here > 0 ? cl->hosts[h].topo.mem_bytes / here : 0;
        if (c > 0 && (cap == 0 || c < cap))
            cap = c;
    }
    return cap;
}

/* The cap layout (P, D) needs with recomputation `mode`, at M and this schedule, in whole MiB (0
 * if it cannot be built). First the split chosen without a cap: its largest rank's predicted peak
 * (under auto a rank recomputes only when that makes it smaller, as it would under the smallest
 * cap that fits, so the rank's figure is the smaller of the two; both counts see the same split).
 * That cap fits; a smaller one may, with another split, and is searched for. */
static double layout_need_at(const struct env *e, int P, int D, int M, enum mp_recompute mode,
                             struct mp_err *err)
{
    struct env x = *e;
    struct mp_plan keep, rc;
    memset(&keep, 0, sizeof keep);
    memset(&rc, 0, sizeof rc);
    double need = 0;
    x.mem.cap = 0;
    x.mem.mode = mode == MP_RECOMPUTE_ALL ? MP_RECOMPUTE_ALL : MP_RECOMPUTE_NONE;
    if (!build(&x, P, D, M, &keep, err)) {
        x.mem.mode = MP_RECOMPUTE_ALL;
        int both = mode == MP_RECOMPUTE_AUTO && !build(&x, P, D, M, &rc, err);
        for (int v = 0; v < keep.n_stages; v++) {
            double b = (double)keep.stages[v].peak_mem_bytes;
            if (both && rc.stages[v].first_layer == keep.stages[v].first_layer)
                b = fmin(b, (double)rc.stages[v].peak_mem_bytes);
            need = fmax(need, b);
        }
    }
    mp_plan_free(&keep);
    mp_plan_free(&rc);
    /* Under a cap the partitioner may also move layers to the rank with room: the smallest cap
     * in MiB that a plan with it accepts (gpt.mp, 2 stages, 1F1B, --recompute none: the split
     * chosen without a cap needs 89M, another fits 86M). */
    int hi = (int)ceil(need / 1048576.0), lo = 1;
    x.mem.mode = mode;
    while (need > 0 && lo < hi) {
        int mid = lo + (hi - lo) / 2;
        struct mp_plan q;
        struct mp_err ignored;
        memset(&q, 0, sizeof q);
        x.mem.cap = mid * 1048576.0;
        if (build(&x, P, D, M, &q, &ignored) == 0)
            hi = mid;
        else
            lo = mid + 1;
        mp_plan_free(&q);
    }
    return need > 0 ? hi * 1048576.0 : 0;
}

/* The smallest of layout_need_at over the micro-batch counts a plan of (P, D) would consider
 * (--micro-batches, else those of build_best_m): under a cap the plan takes whichever M fits,
 * and the advice at the default M alone asked gpt.mp's 2 stages for 91M where 64M planned. */
static double layout_need(const struct env *e, int P, int D, enum mp_recompute mode,
                          struct mp_err *err)
{
    int M0;
    if (micro_for(e->a, P, D, &M0, err))
        return 0;
    if (e->a->micro)
        return layout_need_at(e, P, D, M0, mode, err);
    size_t B = (size_t)e->a->batch;
    double best = 0;
    for (int M = next_micro(B, P, D, 0); M; M = next_micro(B, P, D, M)) {
        double need = layout_need_at(e, P, D, M, mode, err);
        if (need > 0 && (best <= 0 || need < best))
            best = need;
    }
    return best;
}

/* The planner's "rank R needs X MiB, over --memory-per-rank C" is the figure of the plan it makes
 * without a cap (its fastest split, M and schedule); the cap this layout needs (`need`, searched
 * over the splits the partitioner makes under a cap and the M a plan tries) can be less, and the
 * two read as a contradiction ("needs 87 MiB ... a cap of at least 82M", with --schedule and
 * --micro-batches given): said which plan the first figure is. */
static void qualify_need(char *what, size_t cap, double need)
{
    char *at = strstr(what, " needs "), *over = strstr(what, ", over --memory-per-rank");
    if (!at || !over || need <= 0 || strtod(at + 7, NULL) <= ceil(need / 1048576.0))
        return;
    char rest[sizeof ((struct mp_err *)0)->msg];
    snprintf(rest, sizeof rest, "%s", over);
    snprintf(over, cap - (size_t)(over - what), " in the plan made without a cap%s", rest);
}

/* Nothing fits the cap: say what would (DESIGN.md §10), the fewest stages that fit (one replica,
 * the same --recompute, at any M) and the cap the requested layout needs with that --recompute
 * (--stages auto on N ranks: the smallest over its splits of N, named); under --recompute none
 * also the cap it would need if it could recompute. */
static int explain_no_fit(struct env *e, int P, int D, int N_auto, struct mp_err *err)
{
    char what[sizeof err->msg], also[64] = "", layout[96] = "this layout";
    snprintf(what, sizeof what, "%s", err->msg);
    double need = 0, rc_need = 0;
    for (int d = 1; d <= (N_auto ? N_auto : 1); d++) {
        int p = N_auto ? N_auto / d : P, dd = N_auto ? d : D;
        if (N_auto && (N_auto % d || (e->a->dp && d != e->a->dp)))
            continue;
        double n = layout_need(e, p, dd, e->mem.mode, err);
        if (n > 0 && (need <= 0 || n < need)) {
            need = n;
            if (N_auto)
                snprintf(layout, sizeof layout, "the %d ranks (as %d stage%s x %d replica%s)",
                         N_auto, p, p > 1 ? "s" : "", dd, dd > 1 ? "s" : "");
        }
        if (e->mem.mode == MP_RECOMPUTE_NONE) {
            double r = layout_need(e, p, dd, MP_RECOMPUTE_AUTO, err);
            if (r > 0 && (rc_need <= 0 || r < rc_need))
                rc_need = r;
        }
    }
    if (rc_need > 0 && ceil(rc_need / 1048576.0) < ceil(need / 1048576.0))
        snprintf(also, sizeof also, " (%.0fM with --recompute auto)", ceil(rc_need / 1048576.0));
    qualify_need(what, sizeof what, need);
    struct mp_plan q;
    int M;
    for (int P2 = P + 1; P2 <= e->m->n_units - 1; P2++) {
        memset(&q, 0, sizeof q);
        if (micro_for(e->a, P2, 1, &M, err) == 0 && build_best_m(e, P2, 1, M, &q, err) == 0) {
            mp_plan_free(&q);
            return MP_FAIL(err, USAGE, "%s: the fewest stages that fit under this cap are %d "
                           "(mpipe plan %s --stages %d --memory-per-rank %.0fM), or give %s a "
                           "cap of at least %.0fM%s", what, P2, e->a->model, P2,
                           floor(e->mem.cap / 1048576.0), layout, ceil(need / 1048576.0), also);
        }
        mp_plan_free(&q);
    }
    return MP_FAIL(err, USAGE, "%s: no number of stages fits under this cap; give %s a cap of "
                   "at least %.0fM%s", what, layout, ceil(need / 1048576.0), also);
}

int mp_cmd_plan(int argc, char **argv, struct mp_err *err)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return fputs(help, stdout), 0;
    struct plan_args a;
    if (parse_args(&a, argc, argv, err))
        return -1;
    struct mp_model m;
    struct mp_cluster cl;
    struct mp_plan p;
    struct env e = {.a = &a, .m = &m, .cl = &cl};
    memset(&p, 0, sizeof p);
    mp_cost_defaults(&e.cm);
    if (a.rates && mp_cost_load_rates(&e.cm, a.rates, err))
        return -1;
    if (a.links && mp_cost_load_links(&e.cm, a.links, err))
        return -1;
    /* A model path that names nothing is a usage mistake (exit 2), not an I/O failure. */
    if (access(a.model, F_OK) != 0)
        return MP_FAIL(err, USAGE, "%s: no such model file (e.g. models/mlp.mp)", a.model);
    if (mp_model_load(&m, a.model, err))
        return -1;
    if (m.tokens && !a.batch_given)
        a.batch = 32; /* as mpipe train's default for token models */
    struct mp_cost_table table;
    memset(&table, 0, sizeof table);
    int rc = mp_cluster_init(&cl, a.topology, a.hosts, err);
    if (rc == 0) {
        int N = a.ranks ? (int)a.ranks : a.stages ? (int)a.stages * (a.dp ? (int)a.dp : 1)
                                                   : mp_cluster_slots(&cl);
        const char *src = m.tokens ? "text:fortunes" : "fashion-mnist";
        e.mem = (struct mp_plan_mem_cfg){
            .state_slots = a.optim_slots, .zero = a.zero, .mode = a.recompute,
            .cap = a.mem_cap ? (double)a.mem_cap : default_cap(&cl, N),
            .data_bytes = mp_data_bytes_estimate(src, mp_layer_in_len(&m.layers[1]),
                                                 m.label_len)};
        e.cm.optim_slots = a.optim_slots;
        if (!a.profile && !a.rates)
            rc = calibrate(&a, &m, N, &table, &e.cm, err);
        /* This host's links, unless a file gives them or the topology is not this machine's. */
        int live = !a.hosts && (!a.topology || !strcmp(a.topology, "live"));
        char note[96] = "";
        if (rc == 0 && live && !a.links && !a.profile && !a.rates)
            rc = mp_calib_links(&e.cm, &cl, N, a.recalibrate, note, sizeof note, err);
        size_t len = strlen(e.cm.source);
        snprintf(e.cm.source + len, sizeof e.cm.source - len, "%s", note);
        struct mp_try_list priced = {0};
        e.priced = a.try_k ? &priced : NULL;
        if (rc == 0 && a.stages)
            rc = plan_fixed(&e, &p, err);
        else if (rc == 0)
            rc = search(&e, N, &p, err);
        if (rc && err->code == MP_ERR_USAGE && strstr(err->msg, "over --memory-per-rank"))
            rc = explain_no_fit(&e, a.stages ? (int)a.stages : 1, a.dp ? (int)a.dp : 1,
                                a.stages ? 0 : N, err);
        if (rc == 0 && a.try_k)
            rc = try_layouts(&e, &p, err);
        if (rc == 0)
            rc = emit(&a, &p, err);
        free(priced.v);
        mp_plan_free(&p);
        mp_cluster_free(&cl);
    }
    mp_calib_free(&table);
    mp_model_free(&m);
    return rc;
}
