/* A checkpoint's manifest.json and the run's layout.json (mp_ckpt_manifest.c), and the file-system
 * helpers both writers need. Below mp_ckpt.h: the stage files and resume logic include this, never
 * the other way round. */
#ifndef MP_CKPT_MANIFEST_H
#define MP_CKPT_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "mp_dp.h"
#include "mp_err.h"
#include "mp_lr.h"
#include "mp_optim.h"
#include "mp_train_cfg.h"

/* Where training stands: enough to continue exactly as if it had never stopped. The data order
 * is a pure function of (seed, epoch) (mp_data_order) and dropout's of (seed, step, micro-batch),
 * so seed + epoch + cursor + step are the whole RNG state. */
struct mp_ckpt_pos {
    uint64_t step;        /* optimizer steps done since the start of training */
    int epoch;            /* the epoch in progress (0-based) */
    uint64_t cursor;      /* steps of that epoch already done */
    double epoch_loss;    /* sum of that epoch's step losses so far (the plateau rule's input) */
    uint64_t epoch_steps; /* equals cursor; kept separately for clarity */
    struct mp_lr_state lr_state;
    /* Data parallelism's adaptive state (--aggregate perf scores, --shard-by speed shards), so a
     * resumed run weighs and shards as the uninterrupted one would. dp_D = 0: none recorded. */
    int dp_D;
    double dp_score[MP_DP_MAX];
    int dp_n_mb[MP_DP_MAX];
};

/* DIR/layout.json {"M", "batch", "P", "V", "D", "schedule", "optimizer"}: written by world rank 0
 * as training starts, before any checkpoint exists, so that a supervisor restarting a job that
 * died before its first checkpoint (tools/mpipe-run) can pin the same M and batch, and the fresh
 * start computes the uninterrupted run's numbers on whatever ranks remain; `train --resume` takes
 * M, batch, optimizer and D from it when not given. Nothing without a DIR. */
int mp_ckpt_write_layout(const struct mp_train_cfg *c, struct mp_err *err);

/* ---- internal (mp_ckpt*.c and tests) ---- */

struct mp__ckpt_file {
    char name[64];      /* "stage-3.safetensors" */
    char sha256[65];    /* lower-case hex */
    uint64_t bytes;
    int v, first_layer, last_layer; /* virtual stage and the global layers it holds, inclusive */
};

struct mp__ckpt_manifest {
    struct mp_ckpt_pos pos;
    int P, V, S, M;
    size_t batch, n_train;
    int bounds[1025];             /* S + 1 entries */
    char schedule[32], model_digest[17], data_src[512];
    struct mp_optim_cfg optim;
    int state_slots;
    struct mp_lr_cfg lr;
    double clip_norm;
    uint64_t seed;
    int shuffle;
    struct mp__ckpt_file files[1024]; /* S entries */
};

int mp__ckpt_manifest_write(const char *dir, const struct mp__ckpt_manifest *m, struct mp_err *err);
int mp__ckpt_manifest_read(const char *dir, struct mp__ckpt_manifest *m, struct mp_err *err);
/* mkdir -p DIR (MP_ERR_IO naming the part that failed). */
int mp__ckpt_make_dirs(const char *dir, struct mp_err *err);
/* fsync of a directory so renames inside it are durable. */
int mp__ckpt_fsync_dir(const char *dir);

#endif
