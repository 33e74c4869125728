/* Predicted memory of one rank (mp_stage_mem.c): the bytes the engine will allocate and touch for a
 * layout, by kind, so the planner can respect --memory-per-rank and `train` can refuse a layout that
 * would not fit before it starts. */
#ifndef MP_STAGE_MEM_H
#define MP_STAGE_MEM_H

#include <stddef.h>

#include "mp_layer.h"
#include "mp_sched.h"

/* The process before it holds any model: MPI (shared-memory segments included), BLIS's packing
 * buffers, the C and MPI libraries. Measured with a 4-float model under mpirun on the 2-core EPYC
 * (ru_maxrss 15.8–18.3 MB for 1–4 ranks) plus BLIS's skx packing blocks (~6 MB once a large GEMM
 * ran); see docs for the measurement. */
#define MP_MEM_OVERHEAD_BYTES (24.0 * 1024 * 1024)
/* What writing checkpoints adds to a process (OpenSSL's SHA-256 and its library pages, the
 * writer's lists): measured +2.0 MB for tiny_mlp.mp and mlp.mp, +2.6 for gpt.mp on one rank with
 * --checkpoint against without, every other figure the same (2026-12-07). `train` counts it when
 * it checkpoints; `plan` has no --checkpoint. */
#define MP_MEM_CKPT_BYTES (3.0 * 1024 * 1024)

struct mp_mem_query {
    const struct mp_model *m;
    const int *bounds;            /* S + 1 virtual-stage boundaries */
    const struct mp_sched *sched; /* the schedule one replica runs (its M) */
    int rank, P, V, D;
    size_t mbs;                   /* samples per micro-batch */
    int state_slots;              /* optimizer floats per parameter */
    int zero;                     /* --zero 1: optimizer state for 1/D of the arena */
    int shared_sums;              /* real replicas, ordered: the summed chunks' slots too */
    int shared_handoffs;          /* the pipeline's ranks on one host: its hand-off slots
                                     (mp_stage_handoff_bytes) */
    int tied_elsewhere;           /* the tied head is on another rank than the embed */
    const int *recompute;         /* per virtual stage, or NULL: none */
    int reuse_packed;             /* 1: weights stay packed across the micro-batches of a step
                                     (mp_gemm_reuse_begin), in mp_gemm_reuse_room's bytes */
    double data_bytes;            /* the data set every rank loads */
    int checkpoints;              /* the run writes or reads checkpoints: MP_MEM_CKPT_BYTES */
};

struct mp_mem_parts {
    double params, grads, optim, acts, scratch, tied, dp, data, overhead, total;
    double packed; /* the packed-weight pool (reuse_packed) */
    double hand_peers; /* the hand-off slots this rank reads in its senders' parts */
};

/* The chunks per rank the walk of a rank's actions counts (mp_mem_predict, mp_mem_slab_peaks);
 * chunks past it are not counted. */
#define MP_MEM_WALK_CHUNKS 64
/* Per chunk c < V (at most MP_MEM_WALK_CHUNKS) of pipeline rank `rank` under schedule s, the slabs
 * its pool grows to: slabs[c]. What the first step would allocate; mp_stage_prefault maps them at
 * start-up. */
void mp_mem_slab_peaks(const struct mp_sched *s, int rank, int P, int V, int *slabs);
/* Bytes rank q->rank holds at its peak; the parts in *out (may be NULL). */
double mp_mem_predict(const struct mp_mem_query *q, struct mp_mem_parts *out);
/* Whether a rank that runs `micro_batches` micro-batches of each chunk per step keeps its weights
 * packed across them where the memory allows: from 2 on (with one there is nothing to reuse).
 * Train and plan both ask for it only when the peak with the pool stays under the cap, after
 * recomputation was decided without it (the pool saves packing; recomputation costs a forward). */
int mp_mem_reuse_worth(int micro_batches);

#endif
