/* Partitioning a chain of layers into S contiguous stages (pure: no MPI, no hwloc, no model types).
 * The caller turns a model, a cost source and a placement into a `struct mp_part_problem` of plain
 * arrays; this module chooses the boundaries. `optimal` minimises the bottleneck stage
 * exactly (bisection on the bottleneck with an exact feasibility test), subject to a per-rank
 * memory cap. */
#ifndef MP_PARTITION_H
#define MP_PARTITION_H

#include "mp_err.h"

enum mp_part_kind { MP_PART_UNIFORM, MP_PART_PARAMS, MP_PART_OPTIMAL, MP_PART_COUNT };

int mp_partition_parse(const char *name, enum mp_part_kind *kind);
const char *mp_partition_name(enum mp_part_kind kind);

/* Items are the layers to split (model layers 1..n; the input layer is not an item). Stage s owns
 * items [first, last]. Its predicted cost is
 *     K * (slow[s] * compute + comm_in + comm_out) + ar_alpha_s[s] + ar_beta[s] * params
 * where comm over boundary b (between stages b and b+1) is 2 * (lat_s[b] + bytes / Bps[b]):
 * the activation forward and its gradient back. Its memory is
 *     static_factor * params + held_mb[s] * (input bytes + sum of held bytes of its items). */
struct mp_part_problem {
    int n, S;                  /* items, stages (1 <= S <= n) */
    const double *compute_s;   /* [n] F + B + W seconds per micro-batch */
    const double *param_bytes; /* [n] */
    const double *act_out;     /* [n] output activation bytes per micro-batch */
    const double *held;        /* [n] bytes kept per in-flight micro-batch (output + saved) */
    double in_bytes;           /* model input bytes per micro-batch (stage 0's input) */
    const double *lat_s;       /* [S-1] link latency per boundary; NULL: no communication */
    const double *Bps;         /* [S-1] link bandwidth per boundary */
    double K;                  /* micro-batch multiplier of per-micro-batch costs (>= 1) */
    const double *slow;        /* [S] compute slowdown >= 1 (shared or slower core), or NULL */
    const double *ar_alpha_s;  /* [S] fixed allreduce seconds per stage, or NULL */
    const double *ar_beta;     /* [S] allreduce seconds per parameter byte, or NULL */
    double static_factor;      /* params + grads + optimizer slots, e.g. 4 for Adam */
    const double *held_mb;     /* [S] micro-batches held at peak by stage s, or NULL (none) */
    double mem_cap;            /* bytes per stage; <= 0 means unlimited */
};

/* Fills last[0..S-1] (item index of each stage's last item, last[S-1] == n-1). MP_ERR_USAGE when
 * S > n or no partition fits the memory cap (the message gives the smallest cap that would fit). */
int mp_partition_run(const struct mp_part_problem *pr, enum mp_part_kind kind, int *last,
                     struct mp_err *err);

/* Cost and memory of stage s over items [first, last], as defined above. */
double mp_partition_stage_cost(const struct mp_part_problem *pr, int s, int first, int last);
double mp_partition_stage_mem(const struct mp_part_problem *pr, int s, int first, int last);
/* The bottleneck (max stage cost) of a partition; *stage receives its index (may be NULL). */
double mp_partition_eval(const struct mp_part_problem *pr, const int *last, int *stage);
/* The smallest per-stage memory cap under which S stages fit (exact min-max of stage memory). */
double mp_partition_min_mem(const struct mp_part_problem *pr);

#endif
