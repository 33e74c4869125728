/* The engine's own stage split for runs without a plan: contiguous ranges of partition units (a
 * layer, or a whole residual block: DESIGN.md §9) balanced by the layers' analytic cost. Exact
 * minimisation of the largest stage by dynamic programming; the planner (partitioner/) does the
 * topology- and schedule-aware version. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_stage.h"

/* Seconds-like weight of a layer: FLOPs at ~50 GFLOPS plus bytes at ~10 GB/s, so elementwise
 * layers are not free. */
static double layer_weight(const struct mp_layer *l, size_t mbs)
{
    struct mp_cost c = l->ops->cost(l, mbs);
    double flops = c.flops_fwd + c.flops_bwd_input + c.flops_bwd_weight;
    return flops / 50e9 + (c.bytes_fwd + c.bytes_bwd) / 10e9 + 1e-7;
}

void mp_split_units(const struct mp_model *m, size_t mbs, int *first, double *pre)
{
    int n = m->n_units - 1;
    memset(pre, 0, sizeof(double) * (size_t)(n + 1));
    for (int i = 1; i < m->n_layers; i++) {
        int u = m->layers[i].unit;
        if (m->layers[i - 1].unit != u)
            first[u] = i;
        pre[u] += layer_weight(&m->layers[i], mbs);
    }
    first[n + 1] = m->n_layers;
    for (int u = 1; u <= n; u++)
        pre[u] += pre[u - 1];
}

int mp_split_balanced(const struct mp_model *m, int S, size_t mbs, int *bounds, struct mp_err *err)
{
    int n = m->n_units - 1; /* units 1..n */
    if (S < 1 || S > n)
        return MP_FAIL(err, USAGE, "cannot split %d %s into %d stages (at most %d)", n,
                       n == m->n_layers - 1 ? "layers" : "partition units (layers and residual "
                       "blocks)", S, n);
    double *pre = malloc(sizeof(double) * (size_t)(n + 1));
    double *best = malloc(sizeof(double) * (size_t)(n + 1) * (size_t)(S + 1));
    int *cut = malloc(sizeof(int) * (size_t)(n + 1) * (size_t)(S + 1));
    int *first = malloc(sizeof(int) * (size_t)(n + 2)); /* first global layer of unit u */
    if (!pre || !best || !cut || !first) {
        free(pre), free(best), free(cut), free(first);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    mp_split_units(m, mbs, first, pre);
#define BEST(i, s) best[(size_t)(i) * (size_t)(S + 1) + (size_t)(s)]
#define CUT(i, s) cut[(size_t)(i) * (size_t)(S + 1) + (size_t)(s)]
    /* BEST(i, s): smallest max-stage cost of the first i layers in s stages. */
    for (int i = 0; i <= n; i++)
        for (int s = 0; s <= S; s++)
            BEST(i, s) = INFINITY;
    BEST(0, 0) = 0;
    for (int s = 1; s <= S; s++)
        for (int i = s; i <= n; i++)
            for (int j = s - 1; j < i; j++) {
                double v = fmax(BEST(j, s - 1), pre[i] - pre[j]);
                if (v < BEST(i, s)) {
                    BEST(i, s) = v;
                    CUT(i, s) = j;
                }
            }
    int i = n;
    for (int s = S; s >= 1; s--) {
        bounds[s] = first[i + 1];
        i = CUT(i, s);
    }
    bounds[0] = 1;
#undef BEST
#undef CUT
    free(pre), free(best), free(cut), free(first);
    return 0;
}
