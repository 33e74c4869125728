/* The GEMM ceiling between training steps (mp_bench_ceiling.h says why). */
#include "mp_bench_ceiling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_gemm.h"

#define REF_M 256
#define REF_N 1024
#define REF_K 1024

int mp_bench_ceiling_open(struct mp_bench_ceiling *c, struct mp_xport *x, size_t steps,
                          struct mp_err *err)
{
    memset(c, 0, sizeof *c);
    c->x = x, c->cap = steps;
    c->a = mp_bench_filled((size_t)REF_M * REF_K), c->b = mp_bench_filled((size_t)REF_K * REF_N);
    c->c = mp_bench_filled((size_t)REF_M * REF_N);
    c->gflops = calloc(steps ? steps : 1, sizeof *c->gflops);
    if (!c->a || !c->b || !c->c || !c->gflops) {
        mp_bench_ceiling_close(c);
        return MP_FAIL(err, NOMEM, "out of memory for the GEMM ceiling's operands");
    }
    return 0;
}

void mp_bench_ceiling_close(struct mp_bench_ceiling *c)
{
    free(c->a), free(c->b), free(c->c), free(c->gflops);
    memset(c, 0, sizeof *c);
}

static double call_s(enum mp_gemm_path path, struct mp_bench_ceiling *c)
{
    double t0 = mp_xport_now();
    mp_gemm_path(path, 0, 0, REF_M, REF_N, REF_K, 1.0f, c->a, REF_K, c->b, REF_N, 0.0f, c->c,
                 REF_N);
    return mp_xport_now() - t0;
}

int mp_bench_ceiling_after_step(void *arg, uint64_t step, struct mp_err *err)
{
    struct mp_bench_ceiling *c = arg;
    if (mp_xport_size(c->x) > 1 && mp_xport_barrier(c->x, "the GEMM ceiling's start", err))
        return -1;
    /* "A direct BLIS sgemm through its fastest path": BLIS's two entry points, never mpipe's own
     * loops (they are what is measured against it). The step left other data in the caches; the
     * warm-up call brings the operands back, as bench gemm's ceiling times them warm. */
    double best_s = INFINITY;
    for (int p = 0; p < MP_GEMM_PATH_COUNT; p++) {
        if (p == MP_GEMM_LOOPS)
            continue;
        call_s((enum mp_gemm_path)p, c);
        for (int r = 0; r < 2; r++)
            best_s = fmin(best_s, call_s((enum mp_gemm_path)p, c));
    }
    if (step >= 1 && step <= c->cap)
        c->gflops[step - 1] = 2.0 * REF_M * REF_N * REF_K / best_s / 1e9;
    if (mp_xport_size(c->x) > 1 && mp_xport_barrier(c->x, "the GEMM ceiling's end", err))
        return -1;
    return 0;
}

int mp_bench_ceiling_share(struct mp_bench_ceiling *c, const double *step_s, size_t n,
                           double flops_per_step, double *share, double *ceiling_gflops,
                           struct mp_err *err)
{
    *share = 0, *ceiling_gflops = 0;
    if (mp_xport_size(c->x) > 1 &&
        mp_xport_allreduce_sum(c->x, c->gflops, c->cap, "the GEMM ceilings", err))
        return -1;
    if (mp_xport_rank(c->x) != 0)
        return 0;
    if (n > c->cap)
        n = c->cap;
    double *ratio = calloc(n ? n : 1, sizeof *ratio), *ceil = calloc(n ? n : 1, sizeof *ceil);
    if (!ratio || !ceil) {
        free(ratio), free(ceil);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    size_t k_ratio = 0, k_ceil = 0;
    for (size_t k = 0; k < n; k++) /* step k + 1 ran between the ceilings at [k - 1] and [k] */
        if (c->gflops[k] > 0)
            ceil[k_ceil++] = c->gflops[k];
    for (size_t k = 1; k < n; k++) { /* the first step (slabs, first touches) is left out */
        double around = 0.5 * (c->gflops[k - 1] + c->gflops[k]);
        if (step_s[k] > 0 && around > 0)
            ratio[k_ratio++] = flops_per_step / step_s[k] / 1e9 / around;
    }
    *share = k_ratio ? mp_median(ratio, k_ratio) : 0;
    *ceiling_gflops = k_ceil ? mp_median(ceil, k_ceil) : 0;
    free(ratio), free(ceil);
    return 0;
}
