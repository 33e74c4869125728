/* The executor: runs one rank's action list (any valid schedule) for one training step, and the
 * forward-only pass used for evaluation. Receives are pre-posted in list order within a bounded
 * window, straight into the slab that will use them; sends go straight from slabs, so no extra
 * message buffers exist and memory follows what the schedule keeps in flight. */
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
};

struct mp_exec {
    struct mp_stage *st;
    const struct mp_sched *sched;
    struct mp_xport *x;
    const struct mp_action *acts;
    size_t n_acts;
    size_t *recv_at;       /* indexes of receive actions in list order */
    size_t n_recv, next_post;
    int *recv_req;         /* per action index: posted request or -1 */
    int outstanding;
    struct mp_slab **pending; /* slabs done but with sends still in flight */
    int *pending_chunk;
    int n_pending;
    struct mp_trace *trace;   /* NULL: no timeline */
    int trace_tid;            /* track of this rank's events (its world rank) */
    double t_origin;
};

int mp_exec_init(struct mp_exec *e, struct mp_stage *st, const struct mp_sched *s,
                 struct mp_xport *x, struct mp_err *err);
void mp_exec_free(struct mp_exec *e);
int mp_exec_step(struct mp_exec *e, struct mp_exec_io *io, struct mp_err *err);
/* Forward-only pass over samples [0, ds->n) in batches of the micro-batch size: the rank holding
 * the loss adds into *loss_sum / *n_correct. */
int mp_exec_eval(struct mp_exec *e, const struct mp_dataset *ds, double *loss_sum,
                 size_t *n_correct, struct mp_err *err);

#endif
