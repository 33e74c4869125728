/* The GEMM ceiling timed between training steps (`mpipe bench pipeline --ceiling`): what share of
 * the machine's GEMM rate a training run reaches, measured in the same run. DESIGN.md §8's ceiling
 * is a direct BLIS sgemm of 256x1024x1024 through its fastest path; on a VM whose cores change
 * speed from minute to minute (125 to 182 GFLOPS here), a ceiling timed apart from the training
 * made the share swing from 0.89 to 1.13. Timed after every step instead, on every rank at once
 * (the cores as busy as in training), each step is set against the ceiling of the moments around
 * it, and the median of those ratios is the share. */
#ifndef MP_BENCH_CEILING_H
#define MP_BENCH_CEILING_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_xport.h"

struct mp_bench_ceiling {
    struct mp_xport *x; /* the ranks that train */
    float *a, *b, *c;   /* the reference shape's operands */
    double *gflops;     /* after step k (1-based), at [k - 1]: this rank's best-path rate */
    size_t cap;
};

/* Room for `steps` steps and the reference shape's operands; x: the ranks that train. */
int mp_bench_ceiling_open(struct mp_bench_ceiling *c, struct mp_xport *x, size_t steps,
                          struct mp_err *err);
void mp_bench_ceiling_close(struct mp_bench_ceiling *c);
/* The mp_train_cfg.after_step hook (arg: the struct mp_bench_ceiling): the ranks line up, each
 * times the reference shape through every direct BLIS path (a warm-up call, then the best of two),
 * and line up again so the next step starts together. */
int mp_bench_ceiling_after_step(void *arg, uint64_t step, struct mp_err *err);
/* Collective over c->x. The ceiling of the ranks together (the sum of their rates) after each
 * step, and on rank 0: *share = the median over steps 2..n of (flops_per_step / step_s[k]) / the
 * mean of the ceilings timed just before and just after step k; *ceiling_gflops = their median.
 * step_s: rank 0's step wall times, n of them (other ranks pass NULL, 0). */
int mp_bench_ceiling_share(struct mp_bench_ceiling *c, const double *step_s, size_t n,
                           double flops_per_step, double *share, double *ceiling_gflops,
                           struct mp_err *err);

#endif
