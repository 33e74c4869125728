/* A plan (DESIGN.md §5): stage boundaries, placement and the prediction, as written by `mpipe plan`
 * and read by `mpipe train --plan` and `mpipe sim`. The partitioner fills it; the CLI hands the
 * stage boundaries and schedule to the engine (the engine never includes this header). */
#ifndef MP_PLAN_H
#define MP_PLAN_H

#include <stddef.h>

#include "mp_err.h"
#include "mp_sched.h"

struct mp_plan_layer {
    int index;
    char kind[24];
    double compute_s;      /* F + B + W seconds per micro-batch */
    double fwd_s, bwd_input_s, bwd_weight_s;
    double pack_s[3];      /* of fwd_s, bwd_input_s, bwd_weight_s: packing weights, paid once a
                              step with several micro-batches (measured rates only; else 0) */
    size_t param_bytes, act_bytes_out;  /* act bytes per micro-batch */
    size_t saved_bytes;    /* bytes kept from forward to backward beyond input and output */
};

struct mp_plan_stage {          /* one virtual stage (P * V of them, in pipeline order) */
    int first_layer, last_layer; /* global layer indexes, inclusive; stage 0 starts at layer 1 */
    int ranks[64];              /* the D ranks that run it (replicas) */
    int n_ranks;
    char host[256];
    int cores[64];              /* hwloc logical core index per rank */
    double compute_s;           /* per micro-batch, F + B + W */
    size_t act_bytes;           /* output activation bytes per micro-batch */
    size_t param_bytes;
    size_t peak_mem_bytes;      /* predicted peak of the rank that runs it (DESIGN.md §10) */
    int recompute;              /* 1: reruns its forward before B, keeps only its input */
    int pool_dropped;           /* 1: its rank would keep its weights packed across its
                                   micro-batches, but the cap leaves no room for the pool
                                   (DESIGN.md §10): it packs them once per micro-batch */
    size_t held_bytes;          /* activation bytes kept per in-flight micro-batch */
    int held_mb;                /* micro-batches its rank holds at peak under the schedule */
    double send_s;              /* boundary communication per micro-batch (act out + grad in) */
    double slowdown;            /* compute slowdown: ranks time-sharing its core / core speed
                                   (1: a full-speed core of its own) */
};

/* Where each rank runs (rank = replica * P + stage: each replica is one contiguous pipeline). */
struct mp_plan_rank {
    int stage, replica;
    char host[256];
    int socket, core, pu;       /* hwloc logical indexes */
    char slot[32];              /* the rankfile slot, "S:C" (C within socket S) or "C" */
};

/* A layout `mpipe plan --try K` ran on this machine before it picked (written, never read: train
 * needs only the layout picked). */
struct mp_plan_trial {
    enum mp_sched_kind schedule;
    int P, D, V, M;
    double predicted_sps;
    double measured_sps;           /* its best run's; 0: none of its runs finished */
    int picked;                    /* 1: the plan's layout */
};
struct mp_plan {
    char model[512];
    char digest[17];
    enum mp_sched_kind schedule;
    int P, D, V, M;
    size_t batch;
    struct mp_plan_layer *layers;
    int n_layers;
    struct mp_plan_stage *stages;  /* P * V entries */
    int n_stages;
    double step_s, bubble, samples_per_s;
    int oversubscribed;
    char cost_source[256];         /* "analytic", "profile:FILE" or "measured ..." */
    /* Optional extras (written by `mpipe plan`; absent keys read as zero / NULL): */
    struct mp_plan_rank *ranks;    /* P * D entries */
    int n_ranks;
    double *link_latency_s;        /* P * P matrix between the ranks of replica 0, or NULL */
    double *link_bandwidth_Bps;
    double allreduce_s;            /* data-parallel gradient allreduce per step (D > 1) */
    double optim_step_s;           /* optimizer step per rank */
    int bottleneck;                /* the stage that bounds the step, -1 if unknown */
    char partition[16];            /* "uniform", "params" or "optimal" */
    char optimizer[16];            /* the optimizer whose state and step it priced (`train --plan`
                                      takes it unless --optimizer is given); "" when not recorded */
    int zero;                      /* the --zero it priced, 0 or 1; -1 when not recorded */
    struct mp_plan_trial *tried;   /* --try: the layouts run, best-predicted first; or NULL */
    int n_tried;
    /* Priced from this machine's rates cache (`mpipe train --plan` keeps its run there for the
     * next plans, mp_cost_lean): the cache's key ("" otherwise), the step from the rates alone,
     * and the lean of this layout's earlier runs that step_s includes (1, 0 runs: none). */
    char rates_key[17];
    double priced_step_s;
    double lean;
    int lean_runs;
    size_t mem_cap;                /* --memory-per-rank given to plan, bytes (`train --plan` takes
                                      it unless given its own); 0: not given (each host's own) */
};

/* The micro-batch count `mpipe plan` starts from and `mpipe train` runs without --micro-batches
 * (one function: the two must agree): 1 on one rank, else the largest M up to 2 * P * D that
 * divides the batch and is a multiple of D; 0 when none is. */
int mp_plan_default_micro(size_t batch, int P, int D);

/* 1 when ranks a and b of the plan run on one host, or when the plan places no ranks (a plan
 * without them is this host's). */
int mp_plan_same_host(const struct mp_plan *p, int a, int b);

/* Reads/writes plan.json. Malformed → MP_ERR_INPUT "FILE: ..." naming the key. */
int mp_plan_read(struct mp_plan *p, const char *path, struct mp_err *err);
int mp_plan_write(const struct mp_plan *p, const char *path, struct mp_err *err);
void mp_plan_free(struct mp_plan *p);

#endif
