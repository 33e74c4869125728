/* `mpipe plan`: flags → a plan (DESIGN.md §4, §5). Loads the model, the topology and the cost
 * sources (this machine's rates, measured and cached), plans the layout (mp_plan_build.c; what
 * fits no cap is explained by mp_plan_nofit.c), with --try runs the best-priced ones, then
 * prints a table or the plan JSON and writes the plan and rankfile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_calib.h"
#include "mp_cli.h"
#include "mp_data.h"
#include "mp_flags.h"
#include "mp_plan_build.h"
#include "mp_plan_print.h"

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
    "                           machine's minute to decide; a trial settles it. Without\n"
    "                           --try, a `close:` line names the layouts priced within 5%\n"
    "                           of the plan's step\n"
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


/* The flags that take a value: any other is read alone, so an unknown flag last on the line is
 * "unknown flag", not "needs a value". */
static int takes_value(const char *f)
{
    static const char *const with_value[] = {
        "--stages", "--ranks", "--dp", "--micro-batches", "--batch", "--schedule", "--chunks",
        "--topology", "--hosts", "--profile", "--links", "--rates", "--memory-per-rank",
        "--recompute", "--optimizer", "--zero", "--partition", "--out", "--rankfile", "--try",
        NULL};
    for (int i = 0; with_value[i]; i++)
        if (!strcmp(f, with_value[i]))
            return 1;
    return 0;
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


/* --try K: builds the shortlist's layouts again (the plan's own first), runs them
 * (mp_plan_try.h) and makes *p the one that ran fastest, every layout run recorded in p->tried. */
static int try_layouts(const struct plan_env *e, struct mp_plan *p, struct mp_err *err)
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
        struct plan_env ek = *e;
        a.schedule = keys[i].schedule, ek.a = &a, ek.priced = NULL;
        if (mp__plan_build(&ek, keys[i].P, keys[i].D, keys[i].M, &plans[n], err) == 0)
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
    if (!a->out) /* the line names a file no one wrote */
        fprintf(stderr, "mpipe plan: note: no plan file was written: add --out plan.json to "
                "write the one the launch line runs\n");
}

static int emit(const struct plan_args *a, const struct mp_plan *p,
                const struct mp_try_list *priced, struct mp_err *err)
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
    if (!a->try_k) /* a trial ran the close ones */
        mp_plan_close_print(priced, p, a->chunks ? (int)a->chunks : 2);
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
    struct plan_env e = {.a = &a, .m = &m, .cl = &cl};
    memset(&p, 0, sizeof p);
    mp_cost_defaults(&e.cm);
    if (a.rates && mp_cost_load_rates(&e.cm, a.rates, err))
        return -1;
    if (a.links && mp_cost_load_links(&e.cm, a.links, err))
        return -1;
    /* A model file that cannot be read is exit 3, as for train, bench and generate (DESIGN.md
     * §4); plan alone said exit 2 (a user tour). */
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
        if (a.stages)
            rc = mp__plan_check_fixed(&a, &m, err);
        if (rc == 0 && !a.profile && !a.rates)
            rc = calibrate(&a, &m, N, &table, &e.cm, err);
        /* This host's links, unless a file gives them or the topology is not this machine's. */
        int live = !a.hosts && (!a.topology || !strcmp(a.topology, "live"));
        char note[96] = "";
        if (rc == 0 && live && !a.links && !a.profile && !a.rates)
            rc = mp_calib_links(&e.cm, &cl, N, a.recalibrate, note, sizeof note, err);
        size_t len = strlen(e.cm.source);
        snprintf(e.cm.source + len, sizeof e.cm.source - len, "%s", note);
        struct mp_try_list priced = {0};
        e.priced = &priced; /* for --try, and the close ones named under the table */
        if (rc == 0 && a.stages)
            rc = mp__plan_fixed(&e, &p, err);
        else if (rc == 0)
            rc = mp__plan_search(&e, N, &p, err);
        if (rc && err->code == MP_ERR_USAGE && strstr(err->msg, "over --memory-per-rank")) {
            rc = mp__plan_explain_no_fit(&e, a.stages ? (int)a.stages : 1,
                                         a.dp ? (int)a.dp : 1, a.stages ? 0 : N, err);
            size_t len = strlen(err->msg); /* a cap nobody gave reads as one given */
            if (!a.mem_cap)
                snprintf(err->msg + len, sizeof err->msg - len, " (--memory-per-rank was not "
                         "given: the default is the host's memory over the ranks placed on it)");
        }
        if (rc == 0 && a.try_k)
            rc = try_layouts(&e, &p, err);
        if (rc == 0)
            rc = emit(&a, &p, &priced, err);
        free(priced.v);
        mp_plan_free(&p);
        mp_cluster_free(&cl);
    }
    mp_calib_free(&table);
    mp_model_free(&m);
    return rc;
}
