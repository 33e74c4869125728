/* Checkpoints (DESIGN.md §5): DIR/step-N/stage-S.safetensors (S = virtual stage index, one file per
 * virtual stage, tensors named by global layer: L{i}.weight, L{i}.bias and optimizer state
 * L{i}.weight.m / .v ...), DIR/step-N/manifest.json (position, LR and optimizer state, layout,
 * SHA-256 of every stage file) and DIR/latest -> step-N. Saving and resuming are collective; the
 * files are found by global layer name, so a checkpoint loads onto any number of stages. This
 * module never decides exit codes and never prints except rank 0's fallback and resume notes. */
#ifndef MP_CKPT_H
#define MP_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_lr.h"
#include "mp_safetensors.h"
#include "mp_stage.h"
#include "mp_ckpt_manifest.h"
#include "mp_train_cfg.h"
#include "mp_xport.h"

/* What a checkpoint reads from or writes into the training loop (all borrowed). */
struct mp_ckpt_io {
    const struct mp_train_cfg *cfg; /* ckpt_dir, ckpt_keep, model, M, batch, optim, seed ... */
    const struct mp_lr_cfg *lr;     /* with total_steps filled in */
    struct mp_stage *st;            /* params and optimizer state of this rank's layers */
    const int *bounds;              /* S + 1 virtual-stage boundaries of this run */
    struct mp_xport *x;
    size_t n_train;                 /* training samples (recorded, checked on resume) */
    int quiet;                      /* 1: another pipeline's rank 0 says what resuming found
                                       (the replicas of --dp D each load the same checkpoint) */
    /* --zero 1 on replica 0: an optimizer state tensor at arena offset `off` that another
     * replica holds (its owner by offset), numel floats into dst, as its stage file is written
     * (NULL: st holds all). */
    int (*fetch_state)(void *ctx, size_t off, size_t numel, float *dst, struct mp_err *err);
    void *fetch_ctx;
};

/* --zero 1 on replicas other than 0, while replica 0 writes: this replica's optimizer state
 * tensors, each whole, in the order replica 0's fetch_state asks for them (its stage files' order,
 * chunk by chunk), through send (mp_st_send_in_order). Replica 0 so holds one tensor of another
 * replica's state at a time: gathering it whole raised its peak above the unsharded run's (gpt.mp,
 * 2 replicas: 197.8 MB against 174.3 predicted, 184.2 measured with --zero 0). */
int mp_ckpt_send_state(const struct mp_ckpt_io *io, mp_st_send_fn send, void *ctx,
                       struct mp_err *err);

/* Writes DIR/step-<pos->step> collectively: every rank its stage files into a temporary
 * directory, rank 0 the manifest, then the rename, `latest` and pruning to the newest K. On any
 * failure (MP_ERR_IO, the same on every rank) the previous checkpoints are untouched. */
int mp_ckpt_save(const struct mp_ckpt_io *io, const struct mp_ckpt_pos *pos, struct mp_err *err);

/* Loads the newest valid checkpoint of DIR into io->st and *pos, verifying digests, shapes and
 * the layout, falling back to older ones with a note on stderr. MP_ERR_CKPT when none is valid,
 * MP_ERR_USAGE when the run is incompatible (other model, M, batch or optimizer). Collective. */
int mp_ckpt_resume(const struct mp_ckpt_io *io, struct mp_ckpt_pos *pos, struct mp_err *err);

/* Before training, rank 0: DIR can be made and written (MP_ERR_IO naming it: found at the first
 * save, it cost the steps before it), and a run that does not resume may not write into a DIR
 * holding step-N checkpoints, which its saves would prune as another timeline's (a forgotten
 * --resume cost an earlier run's newer checkpoints, silently): MP_ERR_USAGE naming the newest
 * and what to do. Local (the caller shares the verdict). */
int mp_ckpt_check_dir(const char *dir, int resuming, struct mp_err *err);

/* ---- internal (mp_ckpt*.c and tests) ---- */

/* Optimizer state slot s of a kind as a tensor-name suffix (".m", ".v"). */
const char *mp__ckpt_slot_suffix(enum mp_optim_kind kind, int slot);
/* SHA-256 of a whole file as 64 hex digits; its size in *bytes. */
int mp__ckpt_sha256_file(const char *path, char hex[65], uint64_t *bytes, struct mp_err *err);
/* Every rank contributes (rc, err); all return the first failing rank's error (code and message),
 * or 0, so every rank takes the same branch afterwards. */
int mp__ckpt_agree(struct mp_xport *x, int rc, struct mp_err *err);
/* The newest-first step numbers to try: latest's target, then every step-N by N descending. */
int mp__ckpt_candidates(const char *dir, uint64_t *steps, int max, struct mp_err *err);
/* MPIPE_FAULT_INJECT=ckpt_write[:N]: nonzero when the N-th (default 1st) save of this process
 * should fail, as if the disk were full (tests only). */
int mp__ckpt_fault(const char *what, uint64_t count);
/* MPIPE_FAULT_INJECT=hold:STEP:RANK: in a run that started at step 0, rank RANK stops making
 * progress once the checkpoint of step STEP is saved, until a signal ends it; its peers then wait
 * on it as on a stuck rank (tests only: the failure tests signal a job that is certain to be
 * still running, however fast it trains and however slowly the test finds the rank). */
void mp__ckpt_hold(uint64_t step, uint64_t start_step, int rank);
/* Records the step this run's timeline continues from (saves and resumes call it). */
void mp__ckpt_mark(uint64_t step);

#endif
