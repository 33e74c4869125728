/* What one rank holds: its chunks (virtual stages) of the model, one flat parameter arena for all
 * of them (params, grads and optimizer state at matching offsets, 64-byte aligned), and per chunk a
 * pool of activation slabs, one per micro-batch in flight. A slab holds, for one micro-batch, the
 * chunk's input, every layer's output, the gradients w.r.t. the same buffers, what layers save for
 * backward, and the labels. A layer that ends a residual body holds the block's output, its raw
 * output plus the block's input (the add costs no buffer); when its backward reads its own output
 * it keeps the raw one apart too. Slabs are allocated the first time they are needed and recycled,
 * so memory follows what the schedule keeps in flight, not M, and the loop does not call malloc. */
#ifndef MP_STAGE_H
#define MP_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_layer.h"
#include "mp_sched.h"

struct mp_xport;

/* How a chunk trades compute for activation memory (DESIGN.md §10).
 * - MP_RC_CHUNK: per micro-batch in flight only the light part (the chunk's input and output and
 *   their gradients) is kept; B reruns the whole chunk's forward into a work buffer that lives
 *   until W. Any schedule, W deferred or not (zb1, zbv).
 * - MP_RC_SEGMENTS: the light part also keeps each segment's input (a segment is a residual block
 *   or a run of top-level layers between blocks); B reruns one segment at a time, last first, and
 *   runs that segment's B and W before the next, so the work buffer holds one segment, not the
 *   chunk (Megatron-LM's full recomputation with checkpointed layers). Needs W right after B
 *   (mp_sched_w_follows_b): gpipe, 1f1b, interleaved. */
enum mp_rc { MP_RC_OFF = 0, MP_RC_CHUNK = 1, MP_RC_SEGMENTS = 2 };

struct mp_slab {
    float *mem;            /* the light part: the chunk's input and output and their gradients,
                              the labels; everything when the chunk does not recompute */
    float *work;           /* a recomputing chunk's other buffers, held only while a forward
                              runs and from the forward it reruns before B until W is done
                              (NULL otherwise) */
    int mb;                /* micro-batch it holds, -1 when free */
    int send_req[2];       /* outstanding sends from it (activation, gradient) or -1 */
    int f_done, b_done, w_done, grad_sent;
};

struct mp_chunk {
    int v;                 /* virtual stage index */
    int prev_rank, next_rank;   /* ranks holding v - 1 and v + 1, -1 past either end */
    int prev_local, next_local; /* this rank's chunk index of v - 1 / v + 1 when this rank holds
                                   it (buffers handed over in memory), else -1 */
    int first, last;       /* global layer indexes, inclusive */
    int n;                 /* last - first + 1 */
    size_t *act_off;       /* n + 1 offsets: [0] input, [k] output of layer first + k - 1 */
    size_t *grad_off;      /* n + 1 offsets of the gradients w.r.t. the same buffers */
    size_t *saved_off;     /* n offsets */
    size_t *raw_off;       /* n offsets of a residual end's raw output, or SIZE_MAX (none kept) */
    int *skip_first;       /* n + 1: skip[skip_first[k] .. skip_first[k + 1]) are the local
                              indexes of the residual ends whose block starts at layer k: their
                              output gradient also flows into layer k's input gradient */
    int *skip;
    size_t labels_off;     /* mbs * label_len int32 labels (last virtual stage) */
    size_t slab_floats;    /* light + work: every buffer of one micro-batch */
    enum mp_rc recompute;  /* not MP_RC_OFF: keep only the light part per micro-batch in flight
                              and rerun the forward just before B (DESIGN.md §10); offsets >=
                              light_floats are then in a work buffer */
    size_t light_floats;
    int n_seg;             /* MP_RC_SEGMENTS: segments [seg_first[s], seg_first[s + 1]) of local
                              layer indexes (n_seg + 1 entries), each a residual block or a run
                              of top-level layers between blocks */
    int *seg_first;
    struct mp_slab *slabs; /* pool */
    int n_slabs;
    struct mp_slab **by_mb; /* M entries: the slab holding micro-batch mb, or NULL */
};

struct mp_stage {
    const struct mp_model *model;
    int rank, P, V, S, M;
    enum mp_vplace place;     /* where virtual stages live (mp_sched.h) */
    size_t mbs;               /* samples per micro-batch */
    struct mp_chunk *chunk;   /* V */
    /* Arena. */
    size_t n_param;
    float *param, *grad, *state;
    int state_slots;
    /* Optimizer state covers arena offsets [state_lo, state_lo + state_len): all of them, or with
     * --zero 1 this replica's slice (mp_stage_shard_state); slot k of offset o lives at
     * state[k * state_len + o - state_lo] (mp_stage_state). */
    size_t state_lo, state_len;
    size_t *layer_off;        /* per global layer: arena offset, or SIZE_MAX if not held here */
    float *scratch;
    size_t scratch_len;
    /* Recomputation's work buffers, one pool for all chunks (a rank rarely holds two at once, and
     * then seldom of the same chunk): each of work_floats, the largest any chunk needs, allocated
     * when first needed, at most V * (M + 1). */
    float **work_pool;
    int *work_used;
    int n_work;
    size_t work_floats;
    /* The buffer an activation receive posted ahead lands in (mp_exec.c post_ahead): the input of
     * the largest chunk fed by another rank, counted as held from the start; NULL when no chunk
     * is. */
    float *recv_ahead;
    /* Measured activation memory. */
    size_t act_bytes_now, act_bytes_peak;
};

/* Optimizer state slot `slot` at arena offset `off`, or NULL when this rank does not hold it. */
static inline float *mp_stage_state(const struct mp_stage *st, int slot, size_t off)
{
    if (off < st->state_lo || off >= st->state_lo + st->state_len)
        return NULL;
    return st->state + (size_t)slot * st->state_len + (off - st->state_lo);
}

/* bounds[0..S] with bounds[0] = 1 and bounds[S] = n_layers: virtual stage v covers global layers
 * [bounds[v], bounds[v + 1]); chunk c of this rank is virtual stage mp_vstage_of(place, rank, c,
 * P). */
int mp_stage_init(struct mp_stage *st, const struct mp_model *m, const int *bounds, int rank,
                  int P, int V, enum mp_vplace place, int M, size_t mbs, int state_slots,
                  struct mp_err *err);
void mp_stage_free(struct mp_stage *st);
/* --zero 1: keep optimizer state only for arena offsets [lo, hi) (whole layers). The full state was
 * never touched (calloc'd pages), so it never counted in the process's memory. */
int mp_stage_shard_state(struct mp_stage *st, size_t lo, size_t hi, struct mp_err *err);
/* Maps at start-up the memory the first step would otherwise fault in: writes the (zero)
 * optimizer state (none for SGD, whose placeholder stays unmapped) and fills each chunk c's pool
 * with slabs[c] free slabs (at least 1, at most M): the peak its schedule holds
 * (mp_mem_slab_peaks), which the first step would allocate anyway, so this never adds memory.
 * After any sharding and recomputation setting, before the first step. */
int mp_stage_prefault(struct mp_stage *st, const int *slabs, struct mp_err *err);

/* The slab holding (chunk, mb), acquiring a free one (or allocating) if none; NULL on OOM. */
struct mp_slab *mp_stage_slab_get(struct mp_stage *st, int chunk, int mb, struct mp_err *err);
struct mp_slab *mp_stage_slab_find(const struct mp_stage *st, int chunk, int mb);
/* Nonzero when mp_stage_slab_get(st, chunk, mb) would not allocate: mb holds a slab or one is free. */
int mp_stage_slab_ready(const struct mp_stage *st, int chunk, int mb);
void mp_stage_slab_release(struct mp_stage *st, int chunk, struct mp_slab *s);
/* Buffer at slab offset `off` of chunk c (light part or work buffer). */
static inline float *mp_slab_at(const struct mp_chunk *c, const struct mp_slab *s, size_t off)
{
    return off < c->light_floats ? s->mem + off : s->work + (off - c->light_floats);
}
/* A recomputing chunk's work buffer for slab s (taken from the pool, or allocated): 0, or -1 on
 * OOM. No-ops for chunks that do not recompute. */
int mp_stage_work_get(struct mp_stage *st, int chunk, struct mp_slab *s, struct mp_err *err);
void mp_stage_work_release(struct mp_stage *st, struct mp_slab *s);
/* Sets chunk `chunk`'s recomputation (before any slab of it exists). */
int mp_stage_set_recompute(struct mp_stage *st, int chunk, enum mp_rc rc, struct mp_err *err);
/* The recomputation a chunk of rank r runs under schedule s when it recomputes: by segments where
 * its W always follows its B, else the whole chunk. */
static inline enum mp_rc mp_stage_rc_kind(const struct mp_sched *s, int r, int chunk)
{
    return mp_sched_w_follows_b(s, r, chunk) ? MP_RC_SEGMENTS : MP_RC_CHUNK;
}
/* Floats of one micro-batch's slab for layers [first, last] of m under recomputation rc: the light
 * part (kept per micro-batch in flight) and the work buffer (0 for MP_RC_OFF). */
void mp_stage_slab_floats(const struct mp_model *m, int first, int last, size_t mbs, enum mp_rc rc,
                          size_t *light, size_t *work);
/* The pipeline's hand-offs through shared memory between ranks of one host (mp_exec.c): each
 * message a chunk sends to another rank (its output forward, its input's gradient back) has
 * MP_HANDOFF_SLOTS slots in the sender's part, micro-batch mb in slot mb % MP_HANDOFF_SLOTS; a
 * message whose slot its receiver has not emptied yet goes through MPI as before. */
#define MP_HANDOFF_SLOTS 2
/* What a stage hands over: its output forward, its input's gradient back. */
enum { MP_HAND_ACT = 0, MP_HAND_GRAD = 1 };
/* Bytes of one slot for a message of msg_bytes: a 64-byte line for its flag, the message rounded
 * up to 64 bytes. */
size_t mp_stage_handoff_slot_bytes(size_t msg_bytes);
/* Bytes of `rank`'s slots: for each of its chunks in order, the slots of its activation (when the
 * next stage is on another rank), then those of its input gradient (when the previous one is).
 * With at (2 per virtual stage, may be NULL): at[v * 2 + dir] = 1 + the offset in rank's part of
 * stage v's slots for its activation (dir 0) or input gradient (dir 1); other entries untouched. */
size_t mp_stage_handoff_bytes(const struct mp_model *m, const int *bounds, enum mp_vplace place,
                              int rank, int P, int V, size_t mbs, size_t *at);
/* The rank virtual stage v's message in direction dir goes to (MP_HAND_ACT: its output, forward;
 * MP_HAND_GRAD: its input's gradient, back; v's own rank at the ends of the pipeline, where there
 * is none), and the bytes of that message's MP_HANDOFF_SLOTS slots in its sender's part. */
int mp_stage_handoff_to(enum mp_vplace place, int v, int dir, int P, int V);
size_t mp_stage_handoff_region_bytes(const struct mp_model *m, const int *bounds, int v, int dir,
                                     size_t mbs);
/* Bytes of the slots in other ranks' parts that `rank` reads: those of the messages sent to it.
 * With its own slots, all of the hand-off segment its process touches (mp_exec_share). */
size_t mp_stage_handoff_in_bytes(const struct mp_model *m, const int *bounds,
                                 enum mp_vplace place, int rank, int P, int V, size_t mbs);
/* Floats of the buffer a receive posted ahead lands in on `rank` (mp_exec.c post_ahead): the
 * input of its largest chunk fed by another rank, 0 when none is. mp_stage_init allocates it,
 * mp_stage_mem.c predicts it. */
size_t mp_stage_recv_ahead_floats(const struct mp_model *m, const int *bounds,
                                  enum mp_vplace place, int rank, int P, int V, size_t mbs);

/* Tied embeddings (DESIGN.md §9): E's gradient has two accumulators, the embed's scatter-add and
 * the head's GEMM, each a running sum in micro-batch order. Once both are final (after any data-
 * parallel reduction), dE = dE_embed + dE_head, in that order, on both holders: locally when this
 * rank holds both, else by exchanging the two contributions with the other holder over x (ranks
 * placed by `bounds`, st->S, st->P, st->place). Every layout computes the same sum. *buf receives
 * the other holder's copy: allocated here when NULL (the caller frees it). */
int mp_stage_tie_gradients(struct mp_stage *st, struct mp_xport *x, const int *bounds,
                           float **buf, struct mp_err *err);

/* Balanced contiguous split of layers 1..n_layers-1 into S virtual stages by each layer's
 * analytic cost (forward + backward FLOPs plus a small per-layer term), exact (DP on the max). */
int mp_split_balanced(const struct mp_model *m, int S, size_t mbs, int *bounds, struct mp_err *err);
/* The partition units 1..n (n = m->n_units - 1) as split sees them (mp_split.c): first[u] the
 * first global layer of unit u (first[n + 1] = n_layers), pre[u] the analytic cost of units 1..u
 * (pre[0] = 0). first has n + 2 entries, pre n + 1. */
void mp_split_units(const struct mp_model *m, size_t mbs, int *first, double *pre);
/* The split a run without a plan uses for schedule `kind` on P ranks (V chunks each, M micro-
 * batches per replica): mp_split_balanced into P * V chunks, except that for zbv a split whose
 * activation peak exceeds 1F1B's is replaced by the fastest one that does not, if one costs at
 * most 5% more in its slowest chunk (mp_split_zbv.c). */
int mp_split_for(const struct mp_model *m, enum mp_sched_kind kind, int P, int V, int M,
                 size_t mbs, int *bounds, struct mp_err *err);

#endif
