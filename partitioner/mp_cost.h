/* The planner's cost model: seconds per layer per micro-batch (this machine's measured rates from
 * the calibration in tools/mp_calib.c, analytic FLOPs and bytes at documented machine rates, or a
 * measured profile), links per topology level (documented defaults or `mpipe bench p2p --json`),
 * memory per stage under a schedule, and the plan's predicted step (the engine's own schedule
 * generator and simulator). Planning is pure and fast: nothing here measures the machine; the
 * measurements come in as a table or as files. */
#ifndef MP_COST_H
#define MP_COST_H

#include <stddef.h>

#include "mp_err.h"
#include "mp_layer.h"
#include "mp_place.h"
#include "mp_plan.h"
#include "mp_sim.h"

/* Defaults, documented in `mpipe plan --help`. */
#define MP_COST_GEMM_FLOPS 60e9  /* BLIS sgemm on one Zen3 core, packed path (DESIGN.md §2) */
#define MP_COST_MEM_BPS 10e9     /* one core's streaming bandwidth for elementwise kernels */
#define MP_COST_CALL_S 2e-6      /* fixed overhead per kernel call */

struct mp_link {
    double latency_s, bandwidth_Bps;
};

#define MP_COST_REDUCE_MAX 16 /* measured reduction sizes a table holds at most */
#define MP_COST_RUNS_MAX 256  /* runs of plans a rates cache keeps, the newest */

/* One `mpipe train --plan` run of a plan priced from this machine's rates cache, as train kept it
 * there (tools/mp_calib_runs.c): the layout, its price and its measured mean step. */
struct mp_cost_run {
    char digest[17];  /* the model's */
    int P, D, M;
    size_t batch;
    double priced_s;   /* the plan's step from the rates alone (before any lean) */
    double measured_s; /* the run's mean step: train time over timed steps */
    double pace;       /* its ranks' mean busy time a step over the plan's (> 0) */
    double at;         /* Unix seconds at the run's end */
};

/* Measured seconds per layer pass (tools/mp_calib.c) at each micro-batch size mbs[j]:
 * t[(j * n_layers + i) * 3 + pass] for layer i and pass 0 F, 1 B, 2 W. */
struct mp_cost_table {
    int n_mbs, n_layers;
    size_t *mbs;
    double *t;
    double *pack;               /* laid out as t, or NULL: the part of each pass's time that packs
                                   weights, which a stage keeping them packed across a step's
                                   micro-batches pays once a step (mp_gemm_reuse_begin) */
    double optim_s_per_param;   /* the optimizer's step, seconds per parameter (0: unknown) */
    /* The data-parallel reduction between 2 ranks of this host, measured (`mpipe bench reduce`):
     * seconds at each arena size, ascending; n_reduce 0: not measured (the link model prices it) */
    double reduce_bytes[MP_COST_REDUCE_MAX], reduce_s[MP_COST_REDUCE_MAX];
    int n_reduce;
    /* This machine's runs of earlier plans, oldest first (mp_cost_lean), and the rates cache's
     * key ("" when the rates were not a cache's): a run counts for the cache it was priced by. */
    struct mp_cost_run runs[MP_COST_RUNS_MAX];
    int n_runs;
    char rates_key[17];
};

struct mp_cost_model {
    double gemm_flops, mem_Bps, call_s;
    const struct mp_cost_table *table; /* measured layer times, or NULL: analytic */
    struct mp_link link[MP_LINK_COUNT];
    int optim_slots;        /* floats of optimizer state per parameter (Adam: 2) */
    char source[256];       /* "analytic", "profile:FILE" or what the table's rates came from */
};

void mp_cost_defaults(struct mp_cost_model *cm);
/* Link levels from `mpipe bench p2p --json` rows: per relation, the smallest latency_us and the
 * largest bandwidth_GBps. Levels the file does not cover keep their defaults. */
int mp_cost_load_links(struct mp_cost_model *cm, const char *path, struct mp_err *err);
/* The machine's GEMM rate from `mpipe bench gemm --json` rows ({m, n, k, path, gflops}): the best
 * figure at 256 or more rows, the regime the analytic rate stands for (fewer rows are scaled by the
 * model's row efficiency). */
int mp_cost_load_rates(struct mp_cost_model *cm, const char *path, struct mp_err *err);

/* out[0..m->n_layers) for micro-batches of mb samples: from cm->table when it has mb (else the
 * table's nearest size scaled by samples), analytic without a table, or from `profile` (NULL: none;
 * rows {index, kind, forward_s, backward_input_s, backward_weight_s[, batch]}; a row measured at
 * another batch is scaled linearly). Sets cm->source. */
int mp_cost_layers(const struct mp_model *m, size_t mb, struct mp_cost_model *cm,
                   const char *profile, struct mp_plan_layer *out, struct mp_err *err);

/* Micro-batches (micro-batch-chunks for interleaved and zbv) that `rank` holds at peak. */
int mp_cost_held_mb(enum mp_sched_kind kind, int P, int V, int M, int rank);
/* Ring allreduce of `bytes` over D ranks on the link l. */
double mp_cost_allreduce_s(const struct mp_link *l, double bytes, int D);
/* A step's data-parallel reduction of `bytes` over D replicas whose slowest link is `level`: from
 * the measured rows of cm's table where the replicas share a socket (the measurement's 2 ranks do;
 * D replicas move 2(D-1)/D of the arena each, as 2 ranks move all of it), else the link model. */
double mp_cost_reduce_s(const struct mp_cost_model *cm, int level, double bytes, int D);
/* The same as alpha + beta * bytes, for the partitioner's linear objective: from the link model,
 * or from the measured rows (alpha the smallest size's seconds, beta the largest's per byte). */
void mp_cost_reduce_linear(const struct mp_cost_model *cm, int level, int D, double *alpha,
                           double *beta);
/* --zero 1's all-gather of the updated parameters, `bytes` of them over D replicas at `level`:
 * the second half of a reduction of the same bytes (each replica's slice to every other, no
 * adds), so half of mp_cost_reduce_s. */
double mp_cost_gather_s(const struct mp_cost_model *cm, int level, double bytes, int D);
/* Optimizer step over param_bytes: reads params, grads and state, writes params and state. */
double mp_cost_optim_s(const struct mp_cost_model *cm, double param_bytes);

/* Fills each stage's compute_s, act_bytes, param_bytes, held_bytes, held_mb and peak_mem_bytes
 * from p->layers and its boundaries. */
void mp_cost_fill_stages(struct mp_plan *p, int optim_slots);
/* One run's lean: measured step / (priced step x pace); 0 when a figure is missing. */
double mp_cost_run_lean(const struct mp_cost_run *r);
/* The lean of this machine's runs of the layout (digest, P, D, batch) against their price: the
 * median over its last MP_COST_LEAN_RUNS runs in t (any M) of measured step / (priced step x
 * pace), the part of its step its ranks' computing does not explain (a run leaning more than 2x
 * or under half is left out as disturbed). 1 with *n_runs 0 when fewer than MP_COST_LEAN_MIN
 * runs count. Why: the rates are single-core medians, and a layout's run pays what they leave
 * out (2 replicas in lock-step wait out each core's slow moments: tiny models' --dp 2 ran 9-24%
 * over their price in every table of docs/performance.md), which only its runs measure. Why
 * over the pace: this VM's cores run 20-70% slow for minutes at a time, every layout alike; a
 * lean of raw ratios learned in such minutes priced the calm ones after them that much slow
 * (the plan's cache check keeps the rates within 15% of the machine; the lean adds what the
 * rates cannot hold). */
#define MP_COST_LEAN_RUNS 5
#define MP_COST_LEAN_MIN 2
double mp_cost_lean(const struct mp_cost_table *t, const char *digest, int P, int D, size_t batch,
                    int *n_runs);

/* Rebuilds the schedule (M / D micro-batches per replica), simulates it with the plan's costs and
 * links, and sets p->step_s (plus the allreduce), bubble and samples_per_s. trace may be NULL. */
int mp_cost_predict(struct mp_plan *p, struct mp_sim_result *res, struct mp_trace *trace,
                    struct mp_err *err);

#endif
