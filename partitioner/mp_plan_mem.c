/* Every rank's predicted memory for a plan, and recomputation where the cap needs it (see
 * mp_plan_mem.h). The numbers come from the engine's allocation rules, so a plan and the run it
 * launches agree: the run reports both side by side. */
#include "mp_plan_mem.h"

#include <stdlib.h>

#include "mp_sched.h"
#include "mp_stage_mem.h"

/* 1 when the D replicas of rank r's stages share one host: only then do they reduce through
 * shared memory, where each keeps its buckets' sum slots (mp_dp_bucket.c). A plan without placed
 * ranks counts them, as one host is what it was made on. */
static int replicas_share_host(const struct mp_plan *p, int r)
{
    for (int d = 1; d < p->D; d++)
        if (!mp_plan_same_host(p, d * p->P + r, r))
            return 0;
    return 1;
}

/* Whether the P ranks of replica 0's pipeline share a host: they hand their messages over
 * through shared memory, whose slots count (mp_exec_share). */
static int pipeline_shares_host(const struct mp_plan *p)
{
    for (int r = 1; r < p->P; r++)
        if (!mp_plan_same_host(p, r, 0))
            return 0;
    return p->P > 1;
}

/* Ranks 0..P-1 of replica 0 stand for every replica (they hold the same stages). */
static double rank_bytes(const struct mp_plan *p, const struct mp_model *m, const int *bounds,
                         const struct mp_sched *s, const struct mp_plan_mem_cfg *c,
                         const int *rc, int reuse, int r)
{
    int tied_elsewhere = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        if (!mp_layer_is_tied(l))
            continue;
        int a = -1, b = -1;
        for (int v = 0; v < p->n_stages; v++) {
            if (i >= bounds[v] && i < bounds[v + 1])
                a = mp_vstage_rank(s->place, v, p->P);
            if (l->tie_src >= bounds[v] && l->tie_src < bounds[v + 1])
                b = mp_vstage_rank(s->place, v, p->P);
        }
        tied_elsewhere = a != b;
    }
    struct mp_mem_query q = {.m = m, .bounds = bounds, .sched = s, .rank = r, .P = p->P,
                             .V = p->V, .D = p->D, .mbs = p->batch / (size_t)p->M,
                             .state_slots = c->state_slots,
                             .zero = c->zero, .shared_sums = replicas_share_host(p, r),
                             .shared_handoffs = pipeline_shares_host(p),
                             .tied_elsewhere = tied_elsewhere, .recompute = rc,
                             .reuse_packed = reuse, .data_bytes = c->data_bytes};
    return mp_mem_predict(&q, NULL);
}

int mp_plan_memory(struct mp_plan *p, const struct mp_model *m, const struct mp_plan_mem_cfg *c,
                   double *need, struct mp_err *err)
{
    int S = p->n_stages, D = p->D > 0 ? p->D : 1;
    int *bounds = malloc(sizeof(int) * (size_t)(S + 1));
    int *rc = calloc((size_t)S, sizeof(int));
    struct mp_sched s;
    if (!bounds || !rc) {
        free(bounds), free(rc);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int v = 0; v < S; v++)
        bounds[v] = p->stages[v].first_layer;
    bounds[S] = p->stages[S - 1].last_layer + 1;
    if (mp_sched_make(&s, p->schedule, p->P, p->V, p->M / D, err)) {
        free(bounds), free(rc);
        return -1;
    }
    double worst = 0;
    int worst_rank = 0;
    for (int r = 0; r < p->P; r++) {
        for (int k = 0; k < p->V; k++)
            rc[mp_vstage_of(s.place, r, k, p->P)] = c->mode == MP_RECOMPUTE_ALL;
        double b = rank_bytes(p, m, bounds, &s, c, rc, 0, r);
        if (c->mode == MP_RECOMPUTE_AUTO && c->cap > 0 && b > c->cap) {
            for (int k = 0; k < p->V; k++)
                rc[mp_vstage_of(s.place, r, k, p->P)] = 1;
            b = rank_bytes(p, m, bounds, &s, c, rc, 0, r);
        }
        int dropped = 0;
        if (mp_mem_reuse_worth(p->M / D)) { /* the packed-weight pool where it fits, as train */
            double with = rank_bytes(p, m, bounds, &s, c, rc, 1, r);
            if (c->cap <= 0 || with <= c->cap)
                b = with;
            else
                dropped = 1; /* mp_cost_predict then prices the packing per micro-batch */
        }
        for (int k = 0; k < p->V; k++) {
            int v = mp_vstage_of(s.place, r, k, p->P);
            p->stages[v].recompute = rc[v];
            p->stages[v].pool_dropped = dropped;
            p->stages[v].peak_mem_bytes = (size_t)b;
        }
        if (b > worst)
            worst = b, worst_rank = r;
    }
    mp_sched_free(&s);
    free(bounds), free(rc);
    if (need)
        *need = worst;
    char a[32], b[32];
    if (c->cap > 0 && worst > c->cap)
        return MP_FAIL(err, USAGE, "rank %d needs %s, over --memory-per-rank %s", worst_rank,
                       mp_err_size(worst, a, sizeof a), mp_err_size(c->cap, b, sizeof b));
    return 0;
}
