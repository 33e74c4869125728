/* The engine's split for zbv without a plan (mp_stage.h): ZB-V's promise is 1F1B's activation
 * memory (Qi et al. 2024), and the time-balanced split keeps it only when the layers are alike.
 * Rank r holds chunks r and 2P - 1 - r; on an MLP whose first layers have the widest activations,
 * rank 0 then holds those layers' inputs for up to 2P micro-batches, and measured 1.5 times
 * 1F1B's peak (models/mlp.mp, 2 ranks, M 4). So: take the time-balanced split when its activation
 * peak (as mp_mem_predict counts it from the zbv action lists) is no higher than 1F1B's for the
 * balanced P-stage split; otherwise the fastest split whose peak is no higher, among those whose
 * largest chunk costs at most COST_SLACK more than the balanced one's. When none is, the balanced
 * split stays: memory bought with a much slower chunk is not what zbv is chosen for (on mlp.mp
 * no split within 2x of the balanced cost reaches 1F1B's peak), and one that only lowers a peak
 * above 1F1B's keeps zbv's promise no better. On cnn.mp at M <= 2 a split at the same cost
 * holds 0.83x 1F1B's peak where the balanced one held 1.08x. The search is exhaustive up to
 * MAX_SPLITS candidates and keeps the balanced split beyond. The split never changes the numbers
 * (DESIGN.md §6). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_sched.h"
#include "mp_stage.h"
#include "mp_stage_mem.h"

#define MAX_SPLITS 200000
#define COST_SLACK 0.05

struct zsplit {
    const struct mp_model *m;
    int n, S, P;          /* units 1..n, S = 2P chunks */
    size_t mbs;
    int *first;           /* first global layer of unit u (n + 2) */
    double *cost;         /* prefix costs over units (n + 1) */
    struct mp_sched zbv;
    int *bounds;          /* scratch: S + 1 */
};

/* The largest over ranks of the activation bytes mp_mem_predict counts for bounds under s (each
 * chunk's pool at its own peak along the rank's action list, plus the buffer a receive posted ahead
 * lands in): what `train` measures as peak_act_bytes. */
static double acts_peak(const struct zsplit *z, const struct mp_sched *s, const int *bounds)
{
    struct mp_mem_query q = {.m = z->m, .bounds = bounds, .sched = s, .P = s->P, .V = s->V,
                             .D = 1, .mbs = z->mbs};
    double peak = 0;
    for (q.rank = 0; q.rank < s->P; q.rank++) {
        struct mp_mem_parts parts;
        mp_mem_predict(&q, &parts);
        peak = fmax(peak, parts.acts);
    }
    return peak;
}

/* cut[0] = 0 < cut[1] < ... < cut[S] = n: chunk v holds units cut[v] + 1 .. cut[v + 1]. */
static double zbv_peak(struct zsplit *z, const int *cut)
{
    for (int v = 0; v <= z->S; v++)
        z->bounds[v] = z->first[cut[v] + 1];
    return acts_peak(z, &z->zbv, z->bounds);
}

static double max_chunk_cost(const struct zsplit *z, const int *cut)
{
    double worst = 0;
    for (int v = 0; v < z->S; v++)
        worst = fmax(worst, z->cost[cut[v + 1]] - z->cost[cut[v]]);
    return worst;
}

/* 1F1B's activation peak for the time-balanced P-stage split. */
static int onef1b_peak(const struct zsplit *z, int M, double *peak, struct mp_err *err)
{
    struct mp_sched s;
    memset(&s, 0, sizeof s);
    int *b = malloc(sizeof(int) * (size_t)(z->P + 1));
    int rc = b ? 0 : MP_FAIL(err, NOMEM, "out of memory");
    if (!rc)
        rc = mp_split_balanced(z->m, z->P, z->mbs, b, err);
    if (!rc)
        rc = mp_sched_make(&s, MP_SCHED_1F1B, z->P, 1, M, err);
    if (!rc)
        *peak = acts_peak(z, &s, b);
    if (s.acts)
        mp_sched_free(&s);
    free(b);
    return rc;
}

/* Walks every split in lexicographic order of the cuts and leaves in best[], among those whose
 * largest chunk costs at most cost_cap, the cheapest whose peak is at most limit (then the lowest
 * peak); best[] is left alone when none is. */
static int search(struct zsplit *z, double limit, double cost_cap, int *best, struct mp_err *err)
{
    int S = z->S, *cut = malloc(sizeof(int) * (size_t)(S + 1));
    if (!cut)
        return MP_FAIL(err, NOMEM, "out of memory");
    double best_cost = INFINITY, best_peak = INFINITY;
    cut[0] = 0, cut[S] = z->n;
    for (int v = 1; v < S; v++)
        cut[v] = v;
    for (;;) {
        double cost = max_chunk_cost(z, cut);
        double peak = cost <= cost_cap ? zbv_peak(z, cut) : INFINITY;
        if (peak <= limit && (cost < best_cost || (cost == best_cost && peak < best_peak))) {
            best_cost = cost, best_peak = peak;
            memcpy(best, cut, sizeof(int) * (size_t)(S + 1));
        }
        int v = S - 1; /* the next combination of S - 1 cuts from 1..n-1 */
        while (v >= 1 && cut[v] == z->n - (S - v))
            v--;
        if (v < 1)
            break;
        cut[v]++;
        for (int w = v + 1; w < S; w++)
            cut[w] = cut[w - 1] + 1;
    }
    free(cut);
    return 0;
}

static double combinations(int n, int k)
{
    double c = 1;
    for (int i = 1; i <= k; i++)
        c = c * (double)(n - k + i) / (double)i;
    return c;
}

/* The units' first layers and prefix costs. */
static int zsplit_init(struct zsplit *z, struct mp_err *err)
{
    int n = z->n;
    z->first = malloc(sizeof(int) * (size_t)(n + 2));
    z->cost = malloc(sizeof(double) * (size_t)(n + 1));
    z->bounds = malloc(sizeof(int) * (size_t)(z->S + 1));
    if (!z->first || !z->cost || !z->bounds)
        return MP_FAIL(err, NOMEM, "out of memory");
    mp_split_units(z->m, z->mbs, z->first, z->cost);
    return 0;
}

int mp_split_for(const struct mp_model *m, enum mp_sched_kind kind, int P, int V, int M,
                 size_t mbs, int *bounds, struct mp_err *err)
{
    int S = P * mp_sched_chunks(kind, V);
    if (mp_split_balanced(m, S, mbs, bounds, err))
        return -1;
    int n = m->n_units - 1;
    if (kind != MP_SCHED_ZBV || P < 2 || combinations(n - 1, S - 1) > MAX_SPLITS)
        return 0;
    struct zsplit z = {.m = m, .n = n, .S = S, .P = P, .mbs = mbs};
    int *cut = malloc(sizeof(int) * (size_t)(S + 1));
    int *best = malloc(sizeof(int) * (size_t)(S + 1));
    double limit = 0;
    int rc = !cut || !best ? MP_FAIL(err, NOMEM, "out of memory") : 0;
    if (!rc)
        rc = zsplit_init(&z, err);
    if (!rc)
        rc = mp_sched_make(&z.zbv, MP_SCHED_ZBV, P, 2, M, err);
    if (!rc)
        rc = onef1b_peak(&z, M, &limit, err);
    if (!rc) {
        for (int v = 0; v <= S; v++) /* bounds[v] is the first layer of chunk v */
            for (int u = 1; u <= n + 1; u++)
                if (z.first[u] == bounds[v])
                    cut[v] = u - 1;
        if (zbv_peak(&z, cut) > limit) {
            memcpy(best, cut, sizeof(int) * (size_t)(S + 1));
            rc = search(&z, limit, max_chunk_cost(&z, cut) * (1 + COST_SLACK), best, err);
            for (int v = 0; !rc && v <= S; v++)
                bounds[v] = z.first[best[v] + 1];
        }
    }
    if (z.zbv.acts)
        mp_sched_free(&z.zbv);
    free(z.first), free(z.cost), free(z.bounds), free(cut), free(best);
    return rc;
}
