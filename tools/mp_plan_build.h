/* `mpipe plan`'s parts, private to tools/: the flags (mp_cmd_plan.c), building and searching
 * layouts (mp_plan_build.c), and what to say when no layout fits the memory cap
 * (mp_plan_nofit.c). */
#ifndef MP_PLAN_BUILD_H
#define MP_PLAN_BUILD_H
#include <stddef.h>

#include "mp_cost.h"
#include "mp_err.h"
#include "mp_optim.h"
#include "mp_partition.h"
#include "mp_place.h"
#include "mp_plan.h"
#include "mp_plan_mem.h"
#include "mp_plan_try.h"

/* The flags of `mpipe plan`, as parsed. */
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

/* Everything one candidate (P, D, M) needs besides the model and flags. */
struct plan_env {
    const struct plan_args *a;
    const struct mp_model *m;
    const struct mp_cluster *cl;
    struct mp_cost_model cm;
    struct mp_plan_mem_cfg mem; /* optimizer slots, zero, recompute, the cap, the data */
    struct mp_try_list *priced; /* --try: every layout priced, else NULL */
};

/* The layout (P, D, M) under a's schedule: placed, partitioned, its memory counted and its step
 * predicted into *p (zeroed first; mp_plan_free it either way). -1 with err set when it cannot
 * be built or does not fit the cap. */
int mp__plan_build(const struct plan_env *e, int P, int D, int M, struct mp_plan *p,
                   struct mp_err *err);
/* mp__plan_build at --micro-batches, or else at the M with the best predicted step among the
 * divisors of B that are multiples of D, up to 8 * P * D (M0 when none builds). */
int mp__plan_best_m(const struct plan_env *e, int P, int D, int M0, struct mp_plan *p,
                    struct mp_err *err);
/* The micro-batch counts a plan of (P, D) tries without --micro-batches: the divisors of B that
 * are multiples of D, up to 8 * P * D. The first after M (M 0: the first of all), 0 past them. */
int mp__plan_next_micro(size_t B, int P, int D, int M);
/* The M a plan of (P, D) starts from: --micro-batches, else the largest fitting up to 2 * P * D;
 * -1 with a usage error naming the flags when --batch, --micro-batches and --dp disagree. */
int mp__plan_micro_for(const struct plan_args *a, int P, int D, int *M, struct mp_err *err);
/* --stages P's usage errors (--ranks, --dp, --batch and --micro-batches that disagree, more
 * stages than the model has units), found before the machine is measured: they came after up
 * to 21 s of calibration. */
int mp__plan_check_fixed(const struct plan_args *a, const struct mp_model *m, struct mp_err *err);
/* --stages P: the best predicted schedule and M for P stages (x --dp, or --ranks / P). */
int mp__plan_fixed(const struct plan_env *e, struct mp_plan *p, struct mp_err *err);
/* --stages auto: every (P, D) with P * D = N; the best predicted step wins. */
int mp__plan_search(const struct plan_env *e, int N, struct mp_plan *best, struct mp_err *err);
/* After a plan failed "over --memory-per-rank": rewrites err to say what would fit (the fewest
 * stages under this cap, the cap this layout needs). N_auto: the ranks of --stages auto, else 0.
 * Always returns -1. */
int mp__plan_explain_no_fit(struct plan_env *e, int P, int D, int N_auto, struct mp_err *err);
#endif
