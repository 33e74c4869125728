/* The executor: runs one rank's action list (any valid schedule) for one training step, and the
 * forward-only pass used for evaluation. Activation receives are pre-posted in list order within a
 * bounded window, a gradient's receive just before its activation's send, each straight into the
 * slab that will use it; sends go straight from slabs (or, between ranks of one host, through two
 * slots per boundary and direction in shared memory: mp_exec_share), and a slab still sending is
 * waited for rather than replaced, so memory is what the schedule keeps in flight
 * (mp_stage_mem.c), however late a peer takes a message. */
#ifndef MP_EXEC_H
#define MP_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "mp_data.h"
#include "mp_err.h"
#include "mp_sched.h"
#include "mp_stage.h"
#include "mp_trace.h"
#include "mp_xport.h"

struct mp_exec_io {
    const struct mp_dataset *ds;
    const uint32_t *idx;   /* sample indices of the global batch, M * mbs of them */
    int mb_offset;         /* global index of this rank's micro-batch 0 (data-parallel replica
                              r runs micro-batches [r * M / D, (r + 1) * M / D)) */
    uint64_t seed, step;
    size_t global_batch;
    /* Outputs, added to (the rank holding the loss layer fills them): */
    double loss_sum;
    size_t n_correct;
    double busy_s;         /* seconds spent in F/B/W on this rank */
    double hook_s;         /* of busy_s, the seconds in the data-parallel hooks: the reduction's
                              own work, run between backward kernels to overlap them */
};

struct mp_exec {
    struct mp_stage *st;
    const struct mp_sched *sched;
    struct mp_xport *x;
    const struct mp_action *acts;
    size_t n_acts;
    size_t *recv_at;       /* indexes of activation receives in list order (a gradient's
                              receive is posted by its activation's send) */
    size_t n_recv, next_post;
    int *recv_req;         /* per action index: posted request or -1 */
    size_t *grad_recv_for; /* per SEND_ACT action index: the RECV_GRAD of its chunk and
                              micro-batch, posted with the send (SIZE_MAX: none) */
    size_t ahead;          /* the activation receive posted ahead into the stage's recv_ahead and
                              not yet waited for, the only one at a time (SIZE_MAX: none) */
    struct mp_slab **pending; /* slabs done but with sends still in flight */
    int *pending_chunk;
    int n_pending;
    size_t cap;               /* actions recv_at/recv_req have room for */
    /* Real data parallelism (mp_dp.h): told when a layer's gradient is final (after the last
     * micro-batch's W) and polled between backward kernels, so that layer's reduction overlaps
     * the rest of the backward. NULL: no hooks. */
    int (*layer_done)(void *arg, int layer, struct mp_err *err);
    int (*poll)(void *arg, struct mp_err *err);
    void *hook_arg;
    double hook_s;         /* seconds spent in the two hooks so far (mp_exec_step reads it) */
    /* Hand-offs through shared memory (mp_exec_share, ranks of one host; mp_stage.h), or NULL:
     * every message through MPI. hand_at[v * 2 + dir]: offset + 1 of virtual stage v's slots
     * for its activation (dir 0) or input gradient (dir 1) in its rank's part, 0: none. */
    struct mp_shm *hand;
    size_t *hand_at;
    int hand_odd_by_mpi;      /* tests: odd micro-batches' messages through MPI anyway */
    unsigned long long n_sent_shared, n_sent_mpi; /* this rank's hand-offs so far, by path */
    struct mp_trace *trace;   /* NULL: no timeline */
    int trace_tid;            /* track of this rank's events (its world rank) */
    double t_origin;
};

int mp_exec_init(struct mp_exec *e, struct mp_stage *st, const struct mp_sched *s,
                 struct mp_xport *x, struct mp_err *err);
void mp_exec_free(struct mp_exec *e);
/* Collective over the executor's transport, after mp_exec_init on every rank (bounds: the
 * stages' as mp_stage_init had them): where all its ranks
 * share one host and want is 1 on every rank, each message between them goes through slots in
 * shared memory (mp_stage.h) and an empty MPI message says it is there. Open MPI hands a message
 * above its 4 KB eager limit over only when the sender's MPI runs again after the receiver
 * answered, and a sender inside a kernel does not run it: on a 2-core EPYC Zen4 VM tiny.mp's
 * 2-stage zb1 at M 2 waited 200 us of a 630 us step for it. Through the slots the sender's
 * copy completes the hand-off. Same bytes in the same buffers: the same bits. The slots count
 * in the stage's activation memory from the start. Nothing to do (no error) when the ranks span
 * hosts or /dev/shm cannot hold the slots (a warning says so). want 2 (tests): the same, but
 * odd micro-batches' messages go through MPI, so a run mixes both paths. */
int mp_exec_share(struct mp_exec *e, const int *bounds, int want, struct mp_err *err);
/* Collective over x, a pipeline of P ranks (none when P is 1): mp_exec_share's want. 1 where the
 * ranks share one host; 0 where they span hosts, or with MPIPE_STAGE_SHARED=0, which keeps every
 * hand-off in MPI messages (the path between hosts, for the tests to run on one); 2 with
 * MPIPE_STAGE_SHARED=odd on one host (tests: both paths in one run). */
int mp_exec_share_want(struct mp_xport *x, int P, int *want, struct mp_err *err);
/* Switches to another schedule of the same P and V (a replica's share of micro-batches changed,
 * --shard-by speed). The stage must have been sized for the largest M. */
int mp_exec_set_sched(struct mp_exec *e, const struct mp_sched *s, struct mp_err *err);
int mp_exec_step(struct mp_exec *e, struct mp_exec_io *io, struct mp_err *err);
/* Forward-only pass over samples [0, ds->n) in batches of the micro-batch size: the rank holding
 * the loss adds into *loss_sum / *n_correct. */
int mp_exec_eval(struct mp_exec *e, const struct mp_dataset *ds, double *loss_sum,
                 size_t *n_correct, struct mp_err *err);

#endif
