/* Internal to the training loop (mp_train.c, mp_train_step.c): the state of one run on one rank.
 * Ranks are laid out as rank = replica * P + stage; `px` is this replica's pipeline (P ranks),
 * `sx` the D ranks that hold the same stage (real data parallelism only). */
#ifndef MP_TRAIN_LOOP_H
#define MP_TRAIN_LOOP_H

#include <stdio.h>

#include "mp_ckpt.h"
#include "mp_data.h"
#include "mp_dp.h"
#include "mp_exec.h"
#include "mp_stage.h"
#include "mp_stage_mem.h"
#include "mp_train.h"

#define MP_RECENT_STEPS 4096 /* steps whose median step time the run sets beside the plan's */

struct loop {
    const struct mp_train_cfg *cfg;
    struct mp_xport *x;   /* all ranks */
    struct mp_xport *px;  /* this replica's pipeline (== x without real replicas) */
    struct mp_xport *sx;  /* this stage's replicas (NULL without real replicas) */
    int wrank, wsize;     /* rank and size in x */
    int rank, S;          /* stage index (rank in px); virtual stages */
    int D, replica;       /* replicas; this rank's replica, or -1 when it emulates all D */
    int dp_shared;        /* 1: the real replicas reduce through one host's shared memory, where
                             each keeps its buckets' sum slots (counted in its memory) */
    int hand_shared;      /* 1: the pipeline's ranks share a host and hand messages over through
                             slots in shared memory (mp_exec_share; counted in its memory) */
    int Mr;               /* micro-batches per replica with equal shards */
    struct mp_dp dp;
    int *bounds;
    struct mp_sched sched;    /* for Mr micro-batches */
    struct mp_sched *scheds;  /* --shard-by speed: [m] for m micro-batches, made when first used */
    struct mp_data data;
    struct mp_stage st;
    struct mp_exec ex;
    struct mp_trace trace;
    struct mp_lr_cfg lr;
    struct mp_lr_state lr_state;
    double *reduce;       /* n_layers sums of squares, D loss sums (one per replica), then D * P
                             compute seconds ([replica * P + stage]) */
    double *pace;         /* over the steps after the first: D * P compute seconds as in reduce,
                             then each replica's samples (say_replica_pace, mp_train_report.c) */
    uint32_t *order;
    float *tie_buf;
    struct mp_mem_parts mem_pred; /* this rank's predicted peak memory (mp_stage_mem.h) */
    size_t reuse_room;            /* bytes of packed weights kept across a step's micro-batches
                                     (mp_gemm_reuse_begin); 0: packed per call */
    int *zero_counts, *zero_displs; /* --zero 1: each replica's slice of the arena (floats) */       /* a tied head's E, the other holder's gradient (mp_train_step.c) */
    FILE *metrics;
    uint64_t step;
    double train_time, busy_time, busy_wall;
    double hook_time;     /* of busy_time, in the data-parallel hooks (the reduction's work) */
    double recent_step_s[MP_RECENT_STEPS]; /* the last steps' seconds, a ring (not the first) */
    uint64_t n_recent;                    /* steps put in it */
    double epoch_loss;
    uint64_t epoch_steps;
    struct mp_ckpt_pos start; /* where this run starts: zero, or a resumed checkpoint's position */
    int64_t ckpt_saved;       /* step of the last checkpoint written or loaded (0: none) */
};

/* One optimizer step on the global batch idx[0 .. batch). */
int mp__train_step(struct loop *L, const uint32_t *idx, struct mp_err *err);
/* Recomputation per stage and the memory cap (mp_train_mem.c), before the stage allocates; fills
 * L->mem_pred and *recompute (per virtual stage; free it). Collective. */
int mp__train_memory(struct loop *L, int **recompute, struct mp_err *err);
/* Rank 0's output files (--save-weights, --trace, --metrics) can be written: else an I/O error on
 * every rank alike (mp_train_outputs.c), before anything is trained. */
int mp__train_check_outputs(struct loop *L, struct mp_err *err);
/* Sets the decided recomputation on the stage's chunks (after mp_stage_init). */
int mp__train_apply_recompute(struct loop *L, const int *recompute, struct mp_err *err);
/* --zero 1 (mp_train_zero.c): whether this rank shards, the slices, the all-gather of updated
 * parameters, and a checkpoint's state (collective over the stage's replicas, as replica 0
 * writes): replicas other than 0 send theirs tensor by tensor (mp_ckpt_send_state) and are done;
 * replica 0's io gets the fetch that receives them as it writes. 0 and nothing else without. */
int mp__zero_active(const struct loop *L);
int mp__zero_setup(struct loop *L, struct mp_err *err);
int mp__zero_gather_params(struct loop *L, struct mp_err *err);
int mp__zero_checkpoint(struct loop *L, struct mp_ckpt_io *io, struct mp_err *err);
/* After the run (mp_train_report.c): rank 0's lines on the plan against the run and on a slower
 * replica. Collective (each rank's busy time is gathered). */
int mp__train_report(const struct loop *L, double *pace, struct mp_err *err);
/* Real replicas: lets the executor start the bucketed reduction as layers finish. */
void mp__train_dp_hooks(struct loop *L);

#endif
