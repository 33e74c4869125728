/* `mpipe bench pipeline`: for every stage count P' (the first P' ranks, via mp_xport_sub),
 * schedule and micro-batch count M, runs real training steps (synthetic data, mp_train_run) and
 * simulates the same configuration with the engine's simulator, fed with what this machine
 * measured a moment before: per-layer times at the micro-batch size (hot and cold caches, mixed
 * per rank by its share of the last-level cache), the optimizer's per-parameter
 * cost and a ping-pong link model. Reports measured vs simulated step time and their error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_bench_ceiling.h"
#include "mp_bench_pipe.h"
#include "mp_cli.h"
#include "mp_flags.h"
#include "mp_optim.h"
#include "mp_sim.h"
#include "mp_stage.h"
#include "mp_trace.h"
#include "mp_train.h"

#define MAX_LIST 16

struct pipe_args {
    const char *model, *csv, *svg, *trace;
    long long batch, steps, chunks;
    int stages[MAX_LIST], n_stages, sched[MAX_LIST], n_sched, M[MAX_LIST], n_M;
    int json, ceiling; /* --ceiling: the GEMM ceiling timed between the steps */
    double budget_s;
};

/* What the simulator is fed, measured on this machine before the sweep. */
struct machine {
    double lat_s, bw_Bps;         /* ping-pong between ranks 0 and 1 */
    int one_host;                 /* all ranks on one host: receivers copy (mp_sim.h) */
    double opt_s_per_param;       /* the Adam update, per parameter */
    size_t mbs[MAX_LIST];         /* distinct micro-batch sizes */
    struct mp_bench_layer_time *prof_cold[MAX_LIST]; /* cold caches (64 MB evicted per call) */
    struct mp_bench_layer_time *prof_hot[MAX_LIST]; /* hot: the same kernel just ran */
    int n_mbs;
    double llc_bytes;             /* last-level cache of rank 0's core, 0 if unknown */
    int llc_cpus;                 /* cpus sharing it */
};

static int takes_value(const char *f)
{
    static const char *const v[] = {"--batch", "--stages", "--schedules", "--micro-batches",
                                    "--steps", "--csv", "--svg", "--trace", "--chunks",
                                    "--budget", NULL};
    for (int i = 0; v[i]; i++)
        if (!strcmp(f, v[i]))
            return 1;
    return 0;
}

/* "a,b,c" of integers in [1, max] or of schedule names. */
static int parse_list(const char *flag, const char *v, int names, long long max, int *out,
                      int *n, struct mp_err *err)
{
    static const char *const sched[] = {"gpipe", "1f1b", "interleaved", "zb1", "zbv", NULL};
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long long x;
        int k;
        if (*n == MAX_LIST)
            return MP_FAIL(err, USAGE, "%s: at most %d values", flag, MAX_LIST);
        if (names ? mp_flag_choice(flag, t, sched, &k, err) : mp_flag_int(flag, t, 1, max, &x, err))
            return -1;
        for (int j = 0; j < *n; j++) /* a value twice ran its rows twice */
            if (out[j] == (names ? k : (int)x))
                return MP_FAIL(err, USAGE, "%s: '%s' given twice", flag, t);
        out[(*n)++] = names ? k : (int)x;
    }
    if (!*n)
        return MP_FAIL(err, USAGE, "%s: empty list", flag);
    return 0;
}

static int parse_flag(struct pipe_args *a, const char *f, const char *v, struct mp_err *err)
{
    if (mp_flag_is(f, "--json"))
        a->json = 1;
    else if (mp_flag_is(f, "--ceiling"))
        a->ceiling = 1;
    else if (mp_flag_is(f, "--csv") || mp_flag_is(f, "--svg") || mp_flag_is(f, "--trace"))
        *(f[2] == 'c' ? &a->csv : f[2] == 's' ? &a->svg : &a->trace) = v;
    else if (mp_flag_is(f, "--batch"))
        return mp_flag_int(f, v, 1, 1 << 20, &a->batch, err);
    else if (mp_flag_is(f, "--steps"))
        return mp_flag_int(f, v, 2, 100000, &a->steps, err);
    else if (mp_flag_is(f, "--chunks"))
        return mp_flag_int(f, v, 1, 64, &a->chunks, err);
    else if (mp_flag_is(f, "--budget"))
        return mp_flag_double(f, v, 0.001, 60, &a->budget_s, err);
    else if (mp_flag_is(f, "--stages"))
        return parse_list(f, v, 0, 4096, a->stages, &a->n_stages, err);
    else if (mp_flag_is(f, "--schedules"))
        return parse_list(f, v, 1, 0, a->sched, &a->n_sched, err);
    else if (mp_flag_is(f, "--micro-batches"))
        return parse_list(f, v, 0, 1 << 20, a->M, &a->n_M, err);
    else
        return MP_FAIL(err, USAGE, "bench pipeline: unknown flag '%s' (see mpipe bench --help)",
                       f);
    return 0;
}

static int parse(struct pipe_args *a, int argc, char **argv, struct mp_err *err)
{
    a->batch = 256, a->steps = 20, a->chunks = 2, a->budget_s = 0.15;
    a->n_sched = MP_SCHED_COUNT, a->n_M = 4;
    for (int i = 0; i < MP_SCHED_COUNT; i++)
        a->sched[i] = i;
    for (int i = 0; i < 4; i++)
        a->M[i] = 1 << i;
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-') {
            if (a->model)
                return MP_FAIL(err, USAGE, "bench pipeline: one model file only ('%s')", argv[i]);
            a->model = argv[i++];
            continue;
        }
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err) ||
            parse_flag(a, f, v, err))
            return -1;
    }
    if (!a->model)
        return MP_FAIL(err, USAGE, "bench pipeline: no model file given (e.g. models/mlp.mp)");
    return 0;
}

/* Latency from 1-byte ping-pongs, bandwidth from ping-pongs of the largest activation the sweep
 * sends: what a pipeline message costs here. Ranks 0 and 1 only; one rank: no link. */
static int measure_link(struct mp_bench *b, size_t bytes, struct machine *mc, struct mp_err *err)
{
    mc->lat_s = 0, mc->bw_Bps = 0, mc->one_host = 0;
    if (b->size < 2)
        return 0;
    if (mp_xport_one_host(b->x, &mc->one_host, err))
        return -1;
    double t[2] = {0, 0};
    int rc = 0;
    if (b->rank < 2) {
        char *buf = calloc(bytes ? bytes : 1, 1);
        if (!buf)
            return MP_FAIL(err, NOMEM, "out of memory");
        rc = mp_xport_bench_pingpong(b->x, 1 - b->rank, b->rank == 0, buf, 1, 100, 2000, &t[0],
                                     err);
        if (!rc)
            rc = mp_xport_bench_pingpong(b->x, 1 - b->rank, b->rank == 0, buf, bytes, 3, 20,
                                         &t[1], err);
        free(buf);
    }
    if (!rc)
        rc = mp_xport_allreduce_max(b->x, t, 2, "the link measurement", err);
    mc->lat_s = t[0] / 2000 / 2;
    double half = t[1] / 20 / 2 - mc->lat_s;
    mc->bw_Bps = half > 0 ? (double)bytes / half : 0;
    return rc;
}

/* Everything a step does besides F/B/W, per parameter: the Adam update (one loop over params,
 * grads and two state slots; the gradients need no zeroing, the first W overwrites them). Median
 * of 3 after a warm-up. */
static int measure_optimizer(struct mp_bench *b, size_t n, struct machine *mc, struct mp_err *err)
{
    float *p = calloc(4 * n, sizeof *p);
    if (!p)
        return MP_FAIL(err, NOMEM, "out of memory");
    struct mp_optim_cfg oc;
    mp_optim_defaults(&oc, MP_OPT_ADAM);
    double t[4];
    for (int i = 0; i < 4; i++) {
        double t0 = mp_xport_now();
        mp_optim_step(&oc, 1e-3f, (uint64_t)i + 1, p, p + n, p + 2 * n, n, n);
        t[i] = mp_xport_now() - t0;
    }
    free(p);
    double s = mp_median(t + 1, 3) / (double)n;
    int rc = b->size > 1 ? mp_xport_allreduce_max(b->x, &s, 1, "the optimizer timing", err) : 0;
    mc->opt_s_per_param = s;
    return rc;
}

/* A layer profile for every micro-batch size of the sweep; every rank measures at once (so the
 * cores are as busy as in training) and the slowest rank's times are kept. */
static int measure_layers(struct mp_bench *b, const struct mp_model *m, const struct pipe_args *a,
                          struct machine *mc, struct mp_err *err)
{
    for (int i = 0; i < a->n_M; i++) {
        size_t mbs = (size_t)a->batch / (size_t)a->M[i];
        int seen = 0;
        for (int k = 0; k < mc->n_mbs; k++)
            seen |= mc->mbs[k] == mbs;
        if (seen || (size_t)a->batch % (size_t)a->M[i])
            continue;
        struct mp_bench_layer_time *t = calloc((size_t)m->n_layers, sizeof *t);
        struct mp_bench_layer_time *h = calloc((size_t)m->n_layers, sizeof *h);
        if (!t || !h) {
            free(t), free(h);
            return MP_FAIL(err, NOMEM, "out of memory");
        }
        mc->mbs[mc->n_mbs] = mbs, mc->prof_hot[mc->n_mbs] = h, mc->prof_cold[mc->n_mbs++] = t;
        for (int cold = 0; cold < 2; cold++) {
            struct mp_bench_layer_time *p = cold ? t : h;
            if (mp_bench_profile(m, mbs, a->budget_s, cold, p, NULL, err) ||
                (b->size > 1 && mp_xport_allreduce_max(b->x, (double *)p,
                                                        3 * (size_t)m->n_layers,
                                                        "the layer timings", err)))
                return -1;
        }
    }
    return 0;
}

/* The last-level cache of cpu 0 and how many cpus share it, from Linux's sysfs (the level hwloc
 * reports as L3); 0 when unknown, which keeps the simulator on cold-cache times. */
static void read_llc(struct machine *mc)
{
    mc->llc_bytes = 0, mc->llc_cpus = 1;
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    unsigned long kib = 0;
    if (!f)
        return;
    if (fscanf(f, "%luK", &kib) != 1)
        kib = 0;
    fclose(f);
    char list[256] = "";
    if ((f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list", "r"))) {
        if (!fgets(list, sizeof list, f))
            list[0] = 0;
        fclose(f);
    }
    int cpus = 0; /* "0-1,4,6-7": a, or a-b, separated by commas */
    for (char *s = list; *s && *s != '\n';) {
        char *end;
        long lo = strtol(s, &end, 10), hi = lo;
        if (end == s)
            break;
        if (*end == '-')
            hi = strtol(end + 1, &end, 10);
        cpus += (int)(hi - lo + 1);
        s = *end == ',' ? end + 1 : end;
    }
    mc->llc_bytes = (double)kib * 1024.0;
    mc->llc_cpus = cpus > 0 ? cpus : 1;
}

static int profile_index(const struct machine *mc, size_t mbs)
{
    for (int k = 0; k < mc->n_mbs; k++)
        if (mc->mbs[k] == mbs)
            return k;
    return -1;
}

/* What missed: a rank's kernels find their data in the last-level cache when its working set
 * fits in its share of that cache, else in proportion to the excess. The working set is what a
 * kernel's next call finds touched in between: the weights and gradients of the rank's layers and
 * one micro-batch's slab per chunk (slabs held for later are written once and read once, so
 * counting all of them made GPipe at M = 8 look 22% slower than it ran). So each kernel time is
 * hot + miss · (cold − hot), miss = max(0, 1 − share / working set). On a 2-core EPYC with 32 MB
 * of L3 the cold profiles alone made 256-sample MLP pipelines 15-45% too slow at 32-64 samples per
 * micro-batch (their stage fits in L3), while 1024-sample runs, which do not fit, were within 10%. */
static double miss_fraction(const struct machine *mc, int ranks, double ws_bytes)
{
    if (mc->llc_bytes <= 0 || ws_bytes <= 0)
        return 1.0;
    double share = mc->llc_bytes / (double)(ranks < mc->llc_cpus ? ranks : mc->llc_cpus);
    return fmax(0.0, 1.0 - share / ws_bytes);
}

static void mix_profile(const struct mp_bench_layer_time *hot,
                        const struct mp_bench_layer_time *cold, double miss, int first, int last,
                        struct mp_bench_layer_time *out)
{
    for (int i = first; i < last; i++) {
        out[i].f = hot[i].f + miss * (cold[i].f - hot[i].f);
        out[i].b = hot[i].b + miss * (cold[i].b - hot[i].b);
        out[i].w = hot[i].w + miss * (cold[i].w - hot[i].w);
    }
}

/* Per-virtual-stage costs from the layer profile and the same balanced split train uses. */
static int stage_costs(const struct mp_model *m, const struct mp_bench_layer_time *t, size_t mbs,
                       int S, const int *bounds, double *f, double *bw, double *w, double *act,
                       double *held, double *params)
{
    for (int v = 0; v < S; v++) {
        f[v] = bw[v] = w[v] = held[v] = params[v] = 0;
        for (int i = bounds[v]; i < bounds[v + 1]; i++) {
            const struct mp_layer *l = &m->layers[i];
            struct mp_cost c = l->ops->cost(l, mbs);
            f[v] += t[i].f, w[v] += t[i].w;
            bw[v] += i < m->dx_from ? 0 : t[i].b; /* the engine skips the data's gradient */
            /* A slab keeps every output and its gradient, plus what layers save. */
            held[v] += (double)(2 * c.act_bytes_out + c.saved_bytes);
            params[v] += (double)mp_layer_n_param(l);
        }
        const struct mp_layer *last = &m->layers[bounds[v + 1] - 1];
        act[v] = (double)(sizeof(float) * mbs * mp_layer_out_len(last));
        held[v] += (double)(2 * sizeof(float) * mbs * mp_layer_in_len(&m->layers[bounds[v]]));
    }
    return 0;
}

/* One simulation of configuration r from per-layer times t; par[v]: parameters of virtual stage v. */
static int sim_once(const struct mp_model *m, const struct machine *mc, const struct mp_sched *s,
                    const struct pipe_row *r, size_t mbs, const int *bounds,
                    const struct mp_bench_layer_time *t, double *buf, struct mp_sim_result *res,
                    struct mp_err *err)
{
    int S = r->P * r->V;
    double *f = buf, *b = f + S, *w = b + S, *act = w + S, *held = act + S, *par = held + S;
    stage_costs(m, t, mbs, S, bounds, f, b, w, act, held, par);
    double max_rank = 0;
    for (int q = 0; q < r->P; q++) {
        double n = 0;
        for (int c = 0; c < r->V; c++)
            n += par[mp_vstage_of(s->place, q, c, r->P)];
        max_rank = fmax(max_rank, n);
    }
    /* The step's small allreduce (loss, norms) is a few latencies, then each rank updates. */
    struct mp_sim_costs c = {.f_s = f, .b_s = b, .w_s = w, .act_bytes = act,
                             .held_bytes = held, .latency_s = mc->lat_s,
                             .bandwidth_Bps = mc->bw_Bps, .recv_copy = mc->one_host,
                             .step_s = max_rank * mc->opt_s_per_param +
                                       (r->P > 1 ? 2 * ceil(log2(r->P)) * mc->lat_s : 0)};
    return mp_sim_run(s, &c, res, NULL, err);
}

/* The simulator's prediction for one configuration, on kernel times mixed per rank by how much of
 * its working set misses the last-level cache (miss_fraction). */
static int simulate(const struct mp_model *m, const struct machine *mc, size_t batch,
                    struct pipe_row *r, struct mp_err *err)
{
    int S = r->P * r->V;
    size_t mbs = batch / (size_t)r->M;
    int k = profile_index(mc, mbs);
    double *buf = calloc(6 * (size_t)S, sizeof *buf);
    int *bounds = calloc((size_t)S + 1, sizeof *bounds);
    struct mp_bench_layer_time *mix = calloc((size_t)m->n_layers, sizeof *mix);
    struct mp_sim_result *res = calloc(1, sizeof *res);
    int rc = (k < 0 || !buf || !bounds || !mix || !res) ? MP_FAIL(err, NOMEM, "out of memory") : 0;
    if (!rc)
        rc = mp_split_for(m, r->sched, r->P, r->V, r->M, mbs, bounds, err);
    struct mp_sched s;
    memset(&s, 0, sizeof s);
    if (!rc)
        rc = mp_sched_make(&s, r->sched, r->P, r->V, r->M, err);
    if (!rc) {
        /* Only the bytes each virtual stage holds and its parameters are read here; they do not
         * depend on the times, which sim_once recomputes from the mixed profile. */
        double *held = buf + 4 * (size_t)S, *par = buf + 5 * (size_t)S;
        stage_costs(m, mc->prof_cold[k], mbs, S, bounds, buf, buf + S, buf + 2 * S, buf + 3 * S,
                    held, par);
        for (int q = 0; q < r->P; q++) {
            double ws = 0;
            for (int c = 0; c < r->V; c++) {
                int v = mp_vstage_of(s.place, q, c, r->P);
                ws += 2.0 * sizeof(float) * par[v] + held[v]; /* weights, grads, one slab */
            }
            double miss = miss_fraction(mc, r->P, ws);
            for (int c = 0; c < r->V; c++) {
                int v = mp_vstage_of(s.place, q, c, r->P);
                mix_profile(mc->prof_hot[k], mc->prof_cold[k], miss, bounds[v], bounds[v + 1], mix);
            }
        }
        rc = sim_once(m, mc, &s, r, mbs, bounds, mix, buf, res, err);
    }
    if (!rc) {
        r->simulated_s = res->step_s, r->sim_bubble = res->bubble;
        r->sim_peak_act = res->max_peak_act_bytes;
    }
    mp_sched_free(&s);
    free(buf), free(bounds), free(mix), free(res);
    return rc;
}

/* Per-step wall times from the --metrics file of rank 0, in step order, into t[0..*n): at most
 * cap. */
static int read_steps(const char *path, double *t, size_t cap, size_t *n, struct mp_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot read the step times", path);
    char line[512];
    *n = 0;
    while (*n < cap && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"step_s\":");
        if (p)
            t[(*n)++] = strtod(p + 9, NULL);
    }
    fclose(f);
    if (*n == 0)
        return MP_FAIL(err, IO, "%s: no step times", path);
    return 0;
}

/* The analytic FLOPs of one training step of the whole model at M micro-batches of mbs: every
 * forward, input-grad (from dx_from on: the engine skips the data's gradient) and weight-grad. */
static double step_flops(const struct mp_model *m, size_t mbs, int M)
{
    double f = 0;
    for (int i = 1; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        struct mp_cost c = l->ops->cost(l, mbs);
        f += c.flops_fwd + (i >= m->dx_from ? c.flops_bwd_input : 0) + c.flops_bwd_weight;
    }
    return f * (double)M;
}

/* Real training steps for one configuration on the ranks of `sub` (collective over them). */
static int measure(struct mp_xport *sub, const struct mp_model *m, const struct pipe_args *a,
                   struct pipe_row *r, const char *metrics, const char *trace, struct mp_err *err)
{
    char data[64];
    snprintf(data, sizeof data, "synthetic:%lld", a->batch * a->steps);
    struct mp_train_cfg c;
    memset(&c, 0, sizeof c);
    c.model = m, c.data_src = data, c.P = r->P, c.V = r->V, c.schedule = r->sched, c.M = r->M;
    c.batch = (size_t)a->batch, c.batch_given = 1, c.epochs = 1, c.max_steps = a->steps;
    mp_optim_defaults(&c.optim, MP_OPT_ADAM);
    mp_lr_defaults(&c.lr, MP_LR_CONSTANT);
    c.lr.base_lr = 1e-3;
    c.seed = 1, c.shuffle = 1, c.quiet = 1, c.deadline_s = 300;
    c.metrics_path = metrics, c.trace_path = trace;
    struct mp_bench_ceiling ceil;
    if (a->ceiling) {
        if (mp_bench_ceiling_open(&ceil, sub, (size_t)a->steps, err))
            return -1;
        c.after_step = mp_bench_ceiling_after_step, c.after_step_arg = &ceil;
    }
    struct mp_train_result res;
    double *t = calloc((size_t)a->steps, sizeof *t);
    size_t n = 0;
    int rc = t ? mp_train_run(&c, sub, &res, err) : MP_FAIL(err, NOMEM, "out of memory");
    int read_rc = 0;
    if (!rc && mp_xport_rank(sub) == 0)
        read_rc = read_steps(metrics, t, (size_t)a->steps, &n, err);
    /* Collective (every rank's ceilings are summed): rank 0 takes part even when it could not
     * read its step times (n = 0), so that the others do not wait for it until the deadline. */
    if (!rc && a->ceiling)
        rc = mp_bench_ceiling_share(&ceil, t, n, step_flops(m, (size_t)a->batch / (size_t)r->M,
                                                            r->M),
                                    &r->of_ceiling, &r->ceiling_gflops, err);
    if (!rc)
        rc = read_rc;
    if (a->ceiling)
        mp_bench_ceiling_close(&ceil);
    if (!rc && n) { /* rank 0: the first step alone, the median of the others (the first
                       allocates slabs and warms caches; DESIGN.md's figures are steady state) */
        r->first_step_s = t[0];
        r->measured_s = n > 1 ? mp_median(t + 1, n - 1) : t[0];
    }
    free(t);
    if (rc)
        return -1;
    r->bubble = res.bubble, r->peak_act = res.peak_act_bytes;
    if (mp_xport_rank(sub) != 0)
        return 0;
    r->samples_per_s = (double)a->batch / r->measured_s;
    r->error = r->measured_s > 0 ? r->simulated_s / r->measured_s - 1 : 0;
    return 0;
}

/* Is the configuration runnable? A reason on stderr (rank 0) if not: the sweep skips it. */
static int runnable(const struct mp_bench *b, const struct mp_model *m, const struct pipe_args *a,
                    const struct pipe_row *r)
{
    const char *why = NULL;
    if ((size_t)a->batch % (size_t)r->M)
        why = "batch not divisible by M";
    else if (r->P * r->V > m->n_layers - 1)
        why = "more virtual stages than layers";
    if (why && b->rank == 0)
        fprintf(b->out, "# skipped %s P=%d M=%d: %s\n", mp_sched_name(r->sched), r->P, r->M, why);
    return why == NULL;
}

struct sweep {
    struct pipe_row *rows;
    size_t n;
    double best;
    char metrics[4200], trace[4200];
};

/* The fastest row's trace (tmp, and the picture train drew beside it) moved to --trace FILE (and
 * FILE.svg when FILE ends in .json, as train's --trace). */
static int keep_trace(const char *tmp, const char *path, struct mp_err *err)
{
    char tmp_svg[4200], svg[4200];
    if (rename(tmp, path))
        return MP_FAIL(err, IO, "%s: cannot write the trace", path);
    if (mp_trace_svg_path(tmp, tmp_svg, sizeof tmp_svg) && mp_trace_svg_path(path, svg, sizeof svg) &&
        rename(tmp_svg, svg))
        return MP_FAIL(err, IO, "%s: cannot write the trace's picture", svg);
    return 0;
}

/* All schedules and M for one stage count P, on the first P ranks; the others wait. */
static int sweep_stages(struct mp_bench *b, const struct mp_model *m, const struct pipe_args *a,
                        const struct machine *mc, int P, struct sweep *sw, struct mp_err *err)
{
    struct mp_xport *sub = NULL;
    int rc = mp_xport_sub(b->x, P, &sub, err);
    for (int si = 0; !rc && sub && si < a->n_sched; si++) {
        for (int mi = 0; !rc && mi < a->n_M; mi++) {
            struct pipe_row r = {.sched = (enum mp_sched_kind)a->sched[si], .P = P, .M = a->M[mi]};
            r.V = mp_sched_chunks(r.sched, (int)a->chunks);
            if (!runnable(b, m, a, &r))
                continue;
            if (b->rank == 0)
                rc = simulate(m, mc, (size_t)a->batch, &r, err);
            if (!rc)
                rc = measure(sub, m, a, &r, sw->metrics, sw->trace, err);
            if (rc || b->rank != 0)
                continue;
            mp_pipe_row_out(b, &r, (size_t)a->batch);
            sw->rows[sw->n++] = r;
            if (a->trace && r.samples_per_s > sw->best) {
                sw->best = r.samples_per_s;
                rc = keep_trace(sw->trace, a->trace, err);
            }
        }
    }
    if (sub)
        mp_xport_finalize(sub);
    if (rc)
        return rc; /* a failed run leaves the other ranks at the barrier: exit ends the job */
    return mp_xport_barrier(b->x, "the other stage counts to finish", err);
}

static int measure_machine(struct mp_bench *b, const struct mp_model *m,
                           const struct pipe_args *a, struct machine *mc, struct mp_err *err)
{
    int min_m = a->M[0];
    size_t out = 1, params = 0;
    for (int i = 1; i < a->n_M; i++)
        min_m = a->M[i] < min_m ? a->M[i] : min_m;
    for (int i = 1; i < m->n_layers; i++) {
        size_t o = mp_layer_out_len(&m->layers[i]);
        out = o > out ? o : out;
        params += mp_layer_n_param(&m->layers[i]);
    }
    size_t bytes = sizeof(float) * out * ((size_t)a->batch / (size_t)min_m);
    if (bytes > ((size_t)256 << 20))
        bytes = (size_t)256 << 20;
    if (b->rank == 0)
        fprintf(b->out, "# measuring the simulator's inputs: link, optimizer, layers...\n");
    read_llc(mc);
    if (measure_link(b, bytes, mc, err) || measure_optimizer(b, params ? params : 1, mc, err) ||
        measure_layers(b, m, a, mc, err))
        return -1;
    if (b->rank == 0)
        fprintf(b->out, "# link %.2f us + %.2f GB/s (ping-pong of %zu B); optimizer (adam) %.3f "
                        "ns/param; %d layer profiles, hot and cold\n",
                mc->lat_s * 1e6, mc->bw_Bps / 1e9, bytes, mc->opt_s_per_param * 1e9, mc->n_mbs);
    if (b->rank == 0 && mc->llc_bytes > 0)
        fprintf(b->out, "# last-level cache %.0f MB shared by %d cpus: each rank's kernel times lie "
                        "between hot and cold by the part of its working set that misses it\n",
                mc->llc_bytes / 1048576.0, mc->llc_cpus);
    return 0;
}

static void header(struct mp_bench *b, const struct pipe_args *a, const struct mp_model *m)
{
    char method[800];
    snprintf(method, sizeof method,
             "%s (digest %s), batch %lld, adam, synthetic data; %lld steps per row: the first "
             "is reported apart,\n# measured = median of the others (rank 0's step wall time); "
             "simulated = engine simulator fed with measured layer,\n# optimizer and link costs; "
             "error = simulated / measured - 1%s", a->model, m->digest, a->batch, a->steps,
             a->ceiling ? ";\n# --ceiling: after every step all ranks time the GEMM ceiling "
                          "(256x1024x1024, fastest direct\n# BLIS path) at once; of_ceil = "
                          "median of (step GFLOPS / mean of the ceilings just before and after)"
                        : "");
    mp_bench_header(b, "pipeline", method);
}

static int write_outputs(const struct pipe_args *a, const struct sweep *sw, struct mp_err *err)
{
    char title[256];
    snprintf(title, sizeof title, "mpipe bench pipeline %s, batch %lld", a->model, a->batch);
    if (a->csv && mp_pipe_write_csv(a->csv, sw->rows, sw->n, (size_t)a->batch, err))
        return -1;
    if (a->svg && mp_pipe_write_svg(a->svg, sw->rows, sw->n, title, err))
        return -1;
    return 0;
}

int mp_bench_pipeline(int argc, char **argv, struct mp_err *err)
{
    struct pipe_args a;
    memset(&a, 0, sizeof a);
    struct mp_model m;
    memset(&m, 0, sizeof m);
    int bad_flags = parse(&a, argc, argv, err);
    if (bad_flags && !mp_cli_under_mpirun())
        return -1;
    struct mp_bench b;
    struct machine mc;
    memset(&mc, 0, sizeof mc);
    struct sweep sw = {.best = -1};
    int rc = mp_bench_init(&b, a.json, &argc, &argv, err);
    /* The flags and the model are read by every rank: an error only some ranks find (a flag an
     * older mpipe on one host does not know, another copy of the model) is theirs to say, and the
     * others must not start the sweep and wait for them. */
    if (!rc)
        rc = mp_xport_settle(b.x, bad_flags ? bad_flags : mp_model_load(&m, a.model, err),
                             "the command line or the model file", err);
    if (!a.n_stages)
        for (int p = 1; p <= b.size && p <= MAX_LIST; p++)
            a.stages[a.n_stages++] = p;
    for (int i = 0; !rc && i < a.n_stages; i++)
        if (a.stages[i] > b.size) { /* the flags are agreed: every rank finds it, rank 0 says it */
            rc = MP_FAIL(err, USAGE, "--stages %d: only %d ranks (mpirun -np %d)", a.stages[i],
                         b.size, a.stages[i]);
            mp_err_mark_shared(err);
        }
    const char *tmp = getenv("TMPDIR");
    tmp = tmp && *tmp && strlen(tmp) < 4000 ? tmp : "/tmp";
    snprintf(sw.metrics, sizeof sw.metrics, "%s/mpipe-bench-%d-steps.jsonl", tmp, (int)getpid());
    snprintf(sw.trace, sizeof sw.trace, "%s/mpipe-bench-%d-trace.json", tmp, (int)getpid());
    sw.rows = calloc((size_t)a.n_stages * MAX_LIST * MAX_LIST, sizeof *sw.rows);
    if (!rc && !sw.rows)
        rc = MP_FAIL(err, NOMEM, "out of memory");
    if (!rc)
        header(&b, &a, &m);
    if (!rc)
        rc = measure_machine(&b, &m, &a, &mc, err);
    if (!rc && b.rank == 0)
        mp_pipe_table_header(b.out, a.ceiling);
    for (int i = 0; !rc && i < a.n_stages; i++)
        rc = sweep_stages(&b, &m, &a, &mc, a.stages[i], &sw, err);
    if (!rc && b.rank == 0)
        rc = write_outputs(&a, &sw, err);
    char trace_svg[4200]; /* every row's run draws it beside the trace */
    remove(sw.metrics), remove(sw.trace);
    if (mp_trace_svg_path(sw.trace, trace_svg, sizeof trace_svg))
        remove(trace_svg);
    for (int k = 0; k < mc.n_mbs; k++)
        free(mc.prof_cold[k]), free(mc.prof_hot[k]);
    free(sw.rows);
    mp_model_free(&m);
    if (rc && b.x)
        mp_cli_report_shared(b.x, "bench", err);
    if (b.x)
        mp_bench_finish(&b, rc == 0);
    return rc;
}
