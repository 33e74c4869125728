/* The description of one training run: model, data, layout, schedule, optimizer, LR, clipping,
 * checkpoints and outputs, as the CLI parsed them. Plain data, in a room of its own so that both
 * the training loop and the rooms it drives (checkpoints) can read it without including each
 * other. */
#ifndef MP_TRAIN_CFG_H
#define MP_TRAIN_CFG_H

#include <stddef.h>
#include <stdint.h>

#include "mp_dp.h"
#include "mp_err.h"
#include "mp_layer.h"
#include "mp_lr.h"
#include "mp_optim.h"
#include "mp_sched.h"

struct mp_train_cfg {
    const struct mp_model *model;
    const char *data_src;        /* "fashion-mnist", "mnist-dir:DIR", "synthetic:N" */
    int P, V;                    /* pipeline stages (ranks) and chunks per rank */
    const int *bounds;           /* P*V + 1 stage boundaries (mp_stage.h), or NULL: balanced */
    enum mp_sched_kind schedule;
    int M;                       /* micro-batches per step (global: D replicas share them) */
    int D;                       /* data-parallel replicas (0 or 1: none) */
    enum mp_dp_reduce dp_reduce;
    enum mp_dp_aggregate aggregate;
    const char *aggregate_weights; /* --aggregate custom: one weight per replica */
    int shard_speed;             /* --shard-by speed: micro-batches per replica by measured speed */
    size_t batch;                /* global batch */
    int batch_given;             /* --batch was on the command line (a plan's batch yields) */
    int epochs;
    int64_t max_steps;           /* -1: no limit */
    struct mp_optim_cfg optim;
    struct mp_lr_cfg lr;         /* total_steps is filled in by the loop for cosine */
    float clip_norm;             /* 0: off */
    uint64_t seed;
    int shuffle;
    const char *init_path, *save_weights, *trace_path, *metrics_path;
    double deadline_s;
    const char *ckpt_dir;        /* --checkpoint DIR, or NULL (mp_ckpt.h) */
    uint64_t ckpt_every;         /* steps between checkpoints; 0: at epoch ends only */
    int ckpt_keep;               /* newest checkpoints kept (default 2) */
    int resume;                  /* start from DIR's newest valid checkpoint */
    int progress;                /* rank 0 prints a progress line on stderr */
    int recompute;               /* --recompute: 0 none, 1 auto (only where the memory cap needs
                                    it), 2 all */
    const int *recompute_stages; /* per virtual stage, from a plan (NULL: by `recompute`) */
    const int *pool_dropped_stages; /* per virtual stage, from a plan: 1 where its cap left no
                                       room for the packed-weight pool (NULL: where it fits) */
    int zero;                    /* --zero 1: optimizer state sharded over the D replicas */
    size_t mem_cap;              /* --memory-per-rank (0: the host's memory / ranks on it) */
    const char *mem_cap_from;    /* the plan file whose cap mem_cap is, or NULL (the flag's) */
    uint64_t eval_every;         /* evaluate every K steps too (0: at epoch ends only) */
    size_t eval_windows;         /* token models: validation windows evaluated (0: all) */
    int eval_windows_given;      /* --eval-windows was on the command line */
    int quiet;                   /* no epoch lines */
    double plan_step_s;          /* a plan's predicted step for exactly this layout, M and batch,
                                    which rank 0 sets beside the run's at the end (0: none) */
    const double *plan_busy_s;   /* with plan_step_s: per stage rank (P), the seconds of its
                                    passes and optimizer step the plan predicts a step takes
                                    (mp_cost_predict's busy), set beside each rank's (NULL: none) */
    /* Called on every rank after each step, outside the step's timing (train_time and the
     * metrics' step_s): `mpipe bench pipeline --ceiling` times the GEMM ceiling there, between
     * the steps it compares it with. NULL: nothing. A nonzero return stops the run with err. */
    int (*after_step)(void *arg, uint64_t step, struct mp_err *err);
    void *after_step_arg;
};

#endif
