/* Schedules are data (DESIGN.md §1): for every rank an ordered list of actions. The model is cut
 * into S = P * V virtual stages, and where each one runs is data too (enum mp_vplace): in a loop
 * (Megatron's interleaving; V = 1 is a plain pipeline) virtual stage v runs on rank v % P as that
 * rank's chunk v / P; in a V (zbv, V = 2) rank r holds v = r as chunk 0 and v = 2P - 1 - r as
 * chunk 1, so the model runs down the ranks and back up and both ends sit on rank 0. Generators
 * make the lists, the validator proves a set of lists complete and deadlock-free, the simulator
 * (mp_sim.h) times them and the executor runs them. New schedules are new generators, never new
 * executors.
 *
 * Action meanings on rank r, for micro-batch mb and local chunk c (v = mp_vstage_of(...)):
 *   F          forward of v on mb (its input must be present: received, or v == 0)
 *   B          input-gradient backward of v on mb (needs F done and the output grad present)
 *   W          weight-gradient backward of v on mb (after B); W of a chunk runs in mb order
 *   SEND_ACT   send v's output for mb to the rank of v + 1                 (v < S - 1)
 *   RECV_ACT   receive v's input for mb from the rank of v - 1             (v > 0)
 *   SEND_GRAD  send v's input gradient for mb to the rank of v - 1         (v > 0)
 *   RECV_GRAD  receive v's output gradient for mb from the rank of v + 1   (v < S - 1)
 *   STEP       optimizer step (last action of every rank; mb = chunk = -1)
 * When neighbouring virtual stages share a rank (every pair when P == 1; v = P - 1 and v = P in a
 * V) there are no send/receive actions between them: the executor hands the buffers over in
 * memory, after the F (or B) that produced them. */
#ifndef MP_SCHED_H
#define MP_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"

enum mp_act_kind {
    MP_ACT_F,
    MP_ACT_B,
    MP_ACT_W,
    MP_ACT_SEND_ACT,
    MP_ACT_RECV_ACT,
    MP_ACT_SEND_GRAD,
    MP_ACT_RECV_GRAD,
    MP_ACT_STEP,
    MP_ACT_COUNT
};

struct mp_action {
    enum mp_act_kind kind;
    int mb;     /* micro-batch index 0..M-1, or -1 for STEP */
    int chunk;  /* local chunk index 0..V-1, or -1 for STEP */
};

enum mp_sched_kind {
    MP_SCHED_GPIPE,
    MP_SCHED_1F1B,
    MP_SCHED_INTERLEAVED,
    MP_SCHED_ZB1,
    MP_SCHED_ZBV,
    MP_SCHED_COUNT
};

/* Where virtual stages live (see the top of this file). */
enum mp_vplace { MP_VPLACE_LOOP, MP_VPLACE_VEE };

struct mp_sched {
    enum mp_sched_kind kind;
    enum mp_vplace place;     /* from kind: MP_VPLACE_VEE for zbv, else MP_VPLACE_LOOP */
    int P, V, M;
    struct mp_action **acts;  /* acts[r][0..n_acts[r]) */
    size_t *n_acts;
};

int mp_sched_parse(const char *name, enum mp_sched_kind *kind);
const char *mp_sched_name(enum mp_sched_kind kind);
const char *mp_act_name(enum mp_act_kind kind);

/* The chunk <-> virtual stage map, for either placement (in a V, V is 2 and v / P is the chunk
 * as in a loop; only the rank differs). */
static inline int mp_vstage_of(enum mp_vplace pl, int rank, int chunk, int P)
{
    return pl == MP_VPLACE_VEE && chunk == 1 ? 2 * P - 1 - rank : chunk * P + rank;
}
static inline int mp_vstage_rank(enum mp_vplace pl, int v, int P)
{
    return pl == MP_VPLACE_VEE && v >= P ? 2 * P - 1 - v : v % P;
}
static inline int mp_vstage_chunk(int v, int P) { return v / P; }
/* Owner rank of global layer i under bounds (S = P * V virtual stages placed by `place`), or -1. */
int mp_layer_owner(const int *bounds, int S, int P, enum mp_vplace place, int layer);

/* The placement and the chunks per rank a kind runs with: zbv a V of 2, interleaved the V asked
 * for, every other kind 1. */
enum mp_vplace mp_sched_place(enum mp_sched_kind kind);
int mp_sched_chunks(enum mp_sched_kind kind, int V);

/* Makes the action lists. V is used by `interleaved` only (zbv forces V = 2, other kinds V = 1).
 * Any M >= 1. MP_ERR_USAGE for P < 1, M < 1, V < 1. */
int mp_sched_make(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M,
                  struct mp_err *err);
/* An empty set of P lists (for hand-built schedules in tests). */
int mp_sched_alloc(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M);
int mp_sched_push(struct mp_sched *s, int rank, enum mp_act_kind kind, int mb, int chunk);
void mp_sched_free(struct mp_sched *s);
/* 1 when every B of `chunk` in rank r's list is followed at once by its own W (gpipe, 1f1b,
 * interleaved): that chunk's backward may then run B and W segment by segment, which recomputation
 * by segments needs (mp_stage.h). 0 for the split kinds (zb1, zbv) and for a chunk with no B. */
int mp_sched_w_follows_b(const struct mp_sched *s, int r, int chunk);

struct mp_sched_report {
    int peak_inflight[1024];  /* per rank: max micro-batch-chunks forwarded and not yet freed
                                 (after W); ranks beyond 1024 are not reported */
};
/* Checks completeness (every (mb, v) has F, B, W once; W after B after F; sends and receives
 * matched between the right ranks), per-chunk W in micro-batch order, and deadlock freedom
 * (abstract execution with buffered sends and blocking receives). On a defect: MP_ERR_INPUT naming
 * the rank, the action index and the action ("rank 1 action 7 (RECV_ACT mb 3 chunk 0): ..."). */
int mp_sched_validate(const struct mp_sched *s, struct mp_sched_report *rep, struct mp_err *err);

/* For the generators (mp_sched*.c) only: F with the receive of its input before it and the send
 * of its output after it; B with its receive and send, and W right after B when with_w. */
int mp__sched_emit_f(struct mp_sched *s, int r, int mb, int c);
int mp__sched_emit_b(struct mp_sched *s, int r, int mb, int c, int with_w);
/* zbv's generator (mp_sched_zbv.c), on lists allocated with P, V = 2 and M. */
int mp__sched_make_zbv(struct mp_sched *s);

#endif
