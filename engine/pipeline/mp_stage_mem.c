/* Memory one rank holds (DESIGN.md §10), predicted from the same layout rules mp_stage.c allocates
 * by: the arena (parameters, gradients, optimizer state, a slice of it with --zero 1), activation
 * slabs as the rank's own action list keeps them (each chunk's pool grows to its own peak), the
 * buffer a receive posted ahead lands in, a recomputing chunk's work buffers (one segment's or the
 * whole chunk's, mp_stage.h) from its rerun forward to its W, scratch, the tied-E buffer,
 * data-parallel buffers, the data set and the process's fixed overhead. The planner prints it per
 * stage; `train` refuses a layout above --memory-per-rank. */
#include <stdlib.h>
#include <string.h>

#include "mp_gemm.h"
#include "mp_stage.h"
#include "mp_stage_mem.h"

#define FLOAT_BYTES 4.0
#define ALIGN_FLOATS 16

static double arena_floats(size_t n) { return (double)((n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS); }

/* Per chunk of this rank the slabs its pool grows to, and the most work buffers the rank holds at
 * once (one pool for all chunks, mp_stage.h), walking the rank's action list in order. */
static void walk_actions(const struct mp_mem_query *q, int *slabs, int *works)
{
    const struct mp_sched *s = q->sched;
    int V = q->V, held[MP_MEM_WALK_CHUNKS] = {0}, work = 0;
    const struct mp_action *a = s->acts[q->rank];
    *works = 0;
    for (size_t i = 0; i < s->n_acts[q->rank]; i++) {
        int c = a[i].chunk;
        if (c < 0 || c >= V || c >= MP_MEM_WALK_CHUNKS)
            continue;
        int v = mp_vstage_of(s->place, q->rank, c, q->P);
        int rc = q->recompute && q->recompute[v];
        switch (a[i].kind) {
        case MP_ACT_F:
            held[c]++;
            if (held[c] > slabs[c])
                slabs[c] = held[c];
            if (rc && *works < work + 1) /* the forward's own, released right after */
                *works = work + 1;
            break;
        case MP_ACT_B:
            if (rc && ++work > *works)
                *works = work;
            break;
        case MP_ACT_W:
            held[c]--;
            if (rc)
                work--;
            break;
        default:
            break;
        }
    }
}

void mp_mem_slab_peaks(const struct mp_sched *s, int rank, int P, int V, int *slabs)
{
    struct mp_mem_query q = {.sched = s, .rank = rank, .P = P, .V = V};
    int works;
    for (int c = 0; c < V && c < MP_MEM_WALK_CHUNKS; c++)
        slabs[c] = 0;
    walk_actions(&q, slabs, &works);
}

/* The pipeline's hand-off slots on one host: this rank's own, counted with the activations as the
 * engine counts them (message buffers), and those it reads in its senders' parts, which its
 * process maps too (mp_exec_share touches both). gpt.mp on 2 stages, M = 1 (4 MiB messages):
 * counting its own slots only left each rank 8.4 MB over its prediction with 1F1B (twice that
 * with zbv). Until then every rank mapped the whole segment (all P ranks' slots). */
static void hand_slots(const struct mp_mem_query *q, struct mp_mem_parts *p)
{
    p->acts += (double)mp_stage_handoff_bytes(q->m, q->bounds, q->sched->place, q->rank, q->P,
                                              q->V, q->mbs, NULL);
    p->hand_peers = (double)mp_stage_handoff_in_bytes(q->m, q->bounds, q->sched->place, q->rank,
                                                      q->P, q->V, q->mbs);
}

double mp_mem_predict(const struct mp_mem_query *q, struct mp_mem_parts *out)
{
    const struct mp_model *m = q->m;
    struct mp_mem_parts p;
    memset(&p, 0, sizeof p);
    int slabs[MP_MEM_WALK_CHUNKS] = {0}, works = 0;
    walk_actions(q, slabs, &works);
    double arena = 0, scratch = 0, work_floats = 0;
    for (int c = 0; c < q->V && c < MP_MEM_WALK_CHUNKS; c++) {
        int v = mp_vstage_of(q->sched->place, q->rank, c, q->P);
        int first = q->bounds[v], last = q->bounds[v + 1] - 1;
        for (int i = first; i <= last; i++) {
            const struct mp_layer *l = &m->layers[i];
            arena += arena_floats(mp_layer_n_param(l));
            double s = (double)(l->scratch_per_sample * q->mbs + l->scratch_fixed);
            scratch = s > scratch ? s : scratch;
            if (mp_layer_is_tied(l) || (l->kind == MP_LAYER_EMBED && q->tied_elsewhere))
                p.tied = (double)l->vocab * (double)m->layers[1].n_out * FLOAT_BYTES;
        }
        size_t light, work;
        enum mp_rc rc = q->recompute && q->recompute[v] ? mp_stage_rc_kind(q->sched, q->rank, c)
                                                        : MP_RC_OFF;
        mp_stage_slab_floats(m, first, last, q->mbs, rc, &light, &work);
        double light_b = (double)light * FLOAT_BYTES;
        p.acts += slabs[c] * light_b;
        work_floats = (double)work > work_floats ? (double)work : work_floats;
    }
    p.acts += (double)mp_stage_recv_ahead_floats(m, q->bounds, q->sched->place, q->rank, q->P,
                                                 q->V, q->mbs) * FLOAT_BYTES;
    p.acts += works * work_floats * FLOAT_BYTES;
    if (q->shared_handoffs)
        hand_slots(q, &p);
    p.params = p.grads = arena * FLOAT_BYTES;
    int slots = q->state_slots ? q->state_slots : 1; /* SGD's arena still has one slot */
    p.optim = arena * slots * FLOAT_BYTES;
    if (q->zero && q->D > 1)
        p.optim /= q->D;
    p.scratch = scratch * FLOAT_BYTES;
    /* Real replicas: D received chunks of each bucket and, on one host, the summed chunk the
     * others read (mp_dp_bucket.c: arena / D more). On one host that is each replica's part of a
     * segment the replicas share, touched whole by every process (mp_dp_bucket.c), whose resident
     * size counts all D parts: arena (D + 1). Counted as one part until 2026-12-07, gpt.mp's 2
     * replicas measured 299.3 MB against 277.8 predicted. Emulated: a running sum. */
    if (q->D > 1)
        p.dp = arena * FLOAT_BYTES * (q->shared_sums ? (double)q->D + 1.0 : 1.0);
    p.data = q->data_bytes;
    p.overhead = MP_MEM_OVERHEAD_BYTES + (q->checkpoints ? MP_MEM_CKPT_BYTES : 0);
    p.packed = q->reuse_packed ? (double)mp_gemm_reuse_room((size_t)arena) : 0;
    p.total = p.params + p.grads + p.optim + p.acts + p.scratch + p.tied + p.dp + p.data +
              p.overhead + p.packed + p.hand_peers;
    if (out)
        *out = p;
    return p.total;
}

int mp_mem_reuse_worth(int micro_batches)
{
    return micro_batches >= 2;
}
