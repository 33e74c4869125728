/* `mpipe plan`'s layouts (mp_plan_build.h): a candidate (P, D, M) placed on the cluster, its layers
 * partitioned against the placement's links, its memory counted and its step predicted by the
 * engine's simulator; the best M, schedule and (for --stages auto) split of the ranks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_plan_build.h"
#include "mp_sched.h"
#include "mp_stage_mem.h"

/* The micro-batch counts a plan of (P, D) tries without --micro-batches: the divisors of B that
 * are multiples of D, up to 8 * P * D. The first after M (M 0: the first of all), 0 past them. */
int mp__plan_next_micro(size_t B, int P, int D, int M)
{
    for (size_t m = (size_t)M + (size_t)D; m <= B && m <= (size_t)(8 * P * D); m += (size_t)D)
        if (B % m == 0)
            return (int)m;
    return 0;
}

/* The link matrix between the P ranks of replica 0 (the simulator's view of one pipeline). */
static int set_links(struct mp_plan *p, const struct plan_env *e, const struct mp_placement *pl)
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
static enum mp_link_level replica_level(const struct plan_env *e, const struct mp_placement *pl,
                                        int P, int D, int s)
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
static int partition(struct mp_plan *p, const struct plan_env *e,
                     const struct mp_placement *pl, struct mp_err *err)
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
static void rank_step_costs(struct mp_plan *p, const struct plan_env *e,
                            const struct mp_placement *pl)
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

/* P stages of V chunks each need P * V partition units. */
static int check_split(const struct plan_args *a, const struct mp_model *m, int P,
                       struct mp_err *err)
{
    int V = mp_sched_chunks(a->schedule, a->chunks ? (int)a->chunks : 2);
    int n = m->n_units - 1;
    const char *units = n == m->n_layers - 1 ? "layers"
                                             : "partition units (layers and residual blocks)";
    if (P * V > n && V > 1 && n / P >= 2)
        return MP_FAIL(err, USAGE, "cannot split the %d %s of %s into %d stages (P x chunks): use "
                       "--chunks %d or fewer, or fewer --stages", n, units, m->path, P * V,
                       n / P);
    if (P * V > n)
        return MP_FAIL(err, USAGE, "cannot split the %d %s of %s into %d stages%s: use "
                       "--stages %d or fewer", n, units, m->path, P * V,
                       V > 1 ? " (P x chunks)" : "", n / V);
    return 0;
}

/* A plan priced from the rates cache names it, and leans its step as this layout's runs on this
 * machine did against their price (mp_cost_lean): the search then weighs every layout by what it
 * is known to run at, and a layout with no runs by its price. */
static void lean(struct mp_plan *p, const struct mp_cost_table *t)
{
    p->lean = 1;
    if (!t || !t->rates_key[0])
        return;
    snprintf(p->rates_key, sizeof p->rates_key, "%s", t->rates_key);
    p->priced_step_s = p->step_s;
    double q = mp_cost_lean(t, p->digest, p->P, p->D, p->batch, &p->lean_runs);
    if (!p->lean_runs)
        return;
    p->lean = q;
    p->step_s *= q;
    p->samples_per_s = p->step_s > 0 ? (double)p->batch / p->step_s : 0;
}

int mp__plan_build(const struct plan_env *e, int P, int D, int M, struct mp_plan *p,
                   struct mp_err *err)
{
    const struct plan_args *a = e->a;
    int V = mp_sched_chunks(a->schedule, a->chunks ? (int)a->chunks : 2);
    if (check_split(a, e->m, P, err))
        return -1;
    memset(p, 0, sizeof *p);
    snprintf(p->model, sizeof p->model, "%s", e->m->path);
    memcpy(p->digest, e->m->digest, sizeof p->digest);
    snprintf(p->partition, sizeof p->partition, "%s", mp_partition_name(a->partition));
    snprintf(p->optimizer, sizeof p->optimizer, "%s", mp_optim_name(a->optim));
    p->zero = a->zero;
    p->mem_cap = a->mem_cap; /* given: train takes it; not given, each host's own default */
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
    if (rc == 0)
        lean(p, cm.table);
    mp_placement_free(&pl);
    return rc;
}

/* A candidate layout against the best so far: the faster of the two kept in *best (the first of
 * equals: a tie keeps the one found first), the other freed. */
static void keep_faster(struct mp_plan *best, struct mp_plan *cand, int *found)
{
    if (!*found || cand->step_s < best->step_s) {
        if (*found)
            mp_plan_free(best);
        *best = *cand, *found = 1;
    } else {
        mp_plan_free(cand);
    }
}

/* build, and with --try the layout's key and price noted (mp_plan_try.h). */
static int build_noted(const struct plan_env *e, int P, int D, int M, struct mp_plan *p,
                       struct mp_err *err)
{
    if (mp__plan_build(e, P, D, M, p, err))
        return -1;
    if (e->priced)
        mp_try_list_add(e->priced, (struct mp_try_key){e->a->schedule, P, D, M, p->step_s});
    return 0;
}

/* Without --micro-batches, the M with the best predicted step among the divisors of B that are
 * multiples of D, up to 8 * P * D micro-batches: fewer, bigger micro-batches run faster GEMMs,
 * more of them shrink the bubble, and only the whole-schedule prediction can weigh the two. */
int mp__plan_best_m(const struct plan_env *e, int P, int D, int M0, struct mp_plan *p,
                    struct mp_err *err)
{
    if (e->a->micro)
        return build_noted(e, P, D, M0, p, err);
    size_t B = (size_t)e->a->batch;
    int found = 0;
    for (int M = mp__plan_next_micro(B, P, D, 0); M; M = mp__plan_next_micro(B, P, D, M)) {
        struct mp_plan cand;
        memset(&cand, 0, sizeof cand);
        if (build_noted(e, P, D, M, &cand, err)) {
            mp_plan_free(&cand);
            if (err->code == MP_ERR_NOMEM || err->code == MP_ERR_INPUT)
                return -1;
            continue;
        }
        keep_faster(p, &cand, &found);
    }
    return found ? 0 : build_noted(e, P, D, M0, p, err);
}

/* Without --schedule, the best predicted of the schedules that keep 1F1B's memory or trade a
 * little of it for a smaller bubble (gpipe only adds memory); the first of equals wins, so a tie
 * keeps the simpler schedule. One stage has no bubble to remove: 1f1b. */
static int build_best_sched(const struct plan_env *e, int P, int D, int M0,
                            struct mp_plan *p, struct mp_err *err)
{
    static const enum mp_sched_kind kinds[] = {MP_SCHED_1F1B, MP_SCHED_INTERLEAVED, MP_SCHED_ZB1,
                                               MP_SCHED_ZBV};
    if (e->a->schedule_given || P == 1)
        return mp__plan_best_m(e, P, D, M0, p, err);
    int found = 0;
    struct mp_err first = *err; /* 1f1b's reason: the one that holds for every schedule */
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct plan_args a = *e->a;
        struct plan_env ek = *e;
        struct mp_plan cand;
        memset(&cand, 0, sizeof cand);
        a.schedule = kinds[k], ek.a = &a;
        if (mp__plan_best_m(&ek, P, D, M0, &cand, err)) {
            mp_plan_free(&cand);
            if (err->code == MP_ERR_NOMEM || err->code == MP_ERR_INPUT)
                return -1;
            if (k == 0)
                first = *err;
            continue; /* e.g. fewer layers than 2P chunks */
        }
        keep_faster(p, &cand, &found);
    }
    if (!found)
        *err = first;
    return found ? 0 : -1;
}

int mp__plan_micro_for(const struct plan_args *a, int P, int D, int *M, struct mp_err *err)
{
    *M = a->micro ? (int)a->micro : mp_plan_default_micro((size_t)a->batch, P, D);
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
int mp__plan_search(const struct plan_env *e, int N, struct mp_plan *best, struct mp_err *err)
{
    struct mp_err last_err;
    mp_err_clear(&last_err);
    int found = 0;
    for (int D = 1; D <= N; D++) {
        int P = N / D, M;
        struct mp_plan cand;
        memset(&cand, 0, sizeof cand);
        if (N % D || (e->a->dp && D != e->a->dp) || mp__plan_micro_for(e->a, P, D, &M, &last_err))
            continue;
        if (build_best_sched(e, P, D, M, &cand, &last_err)) {
            mp_plan_free(&cand);
            if (last_err.code == MP_ERR_NOMEM || last_err.code == MP_ERR_INPUT)
                break;
            continue;
        }
        keep_faster(best, &cand, &found);
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

/* --stages P's layout: D from --dp or --ranks, the M to start from. */
static int fixed_layout(const struct plan_args *a, int *P, int *D, int *M, struct mp_err *err)
{
    *P = (int)a->stages, *D = a->dp ? (int)a->dp : 1;
    if (!a->dp && a->ranks) {
        if (a->ranks % *P)
            return MP_FAIL(err, USAGE, "--ranks %lld is not a multiple of --stages %d", a->ranks,
                           *P);
        *D = (int)(a->ranks / *P);
    }
    if (a->ranks && a->ranks != (long long)*P * *D)
        return MP_FAIL(err, USAGE, "--ranks %lld is not --stages %d x --dp %d", a->ranks, *P,
                       *D);
    return mp__plan_micro_for(a, *P, *D, M, err);
}

int mp__plan_check_fixed(const struct plan_args *a, const struct mp_model *m, struct mp_err *err)
{
    int P, D, M = 0;
    if (fixed_layout(a, &P, &D, &M, err))
        return -1;
    /* Without --schedule a plan also tries schedules of more chunks; 1f1b's single chunk is the
     * split every schedule needs at least. */
    struct plan_args one = *a;
    if (!a->schedule_given)
        one.schedule = MP_SCHED_1F1B;
    return check_split(&one, m, P, err);
}

int mp__plan_fixed(const struct plan_env *e, struct mp_plan *p, struct mp_err *err)
{
    int P, D, M = 0;
    if (fixed_layout(e->a, &P, &D, &M, err))
        return -1;
    return build_best_sched(e, P, D, M, p, err);
}
