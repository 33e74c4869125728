/* Schedules are data (DESIGN.md §1): for every rank an ordered list of actions. The model is cut
 * into S = P * V virtual stages; virtual stage v runs on rank v % P as that rank's chunk v / P
 * (Megatron's interleaving; V = 1 is a plain pipeline). Generators make the lists, the validator
 * proves a set of lists complete and deadlock-free, the simulator (mp_sim.h) times them and the
 * executor runs them. New schedules are new generators, never new executors.
 *
 * Action meanings on rank r, for micro-batch mb and local chunk c (v = c * P + r):
 *   F          forward of v on mb (its input must be present: received, or v == 0)
 *   B          input-gradient backward of v on mb (needs F done and the output grad present)
 *   W          weight-gradient backward of v on mb (after B); W of a chunk runs in mb order
 *   SEND_ACT   send v's output for mb to rank (v + 1) % P          (v < S - 1)
 *   RECV_ACT   receive v's input for mb from rank (v - 1) % P      (v > 0)
 *   SEND_GRAD  send v's input gradient for mb to rank (v - 1) % P  (v > 0)
 *   RECV_GRAD  receive v's output gradient for mb from (v + 1) % P (v < S - 1)
 *   STEP       optimizer step (last action of every rank; mb = chunk = -1)
 * When P == 1 neighbouring virtual stages share the rank: no send/receive actions, and the
 * executor hands the buffers over in memory. */
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

enum mp_sched_kind { MP_SCHED_GPIPE, MP_SCHED_1F1B, MP_SCHED_INTERLEAVED, MP_SCHED_ZB1, MP_SCHED_COUNT };

struct mp_sched {
    enum mp_sched_kind kind;
    int P, V, M;
    struct mp_action **acts;  /* acts[r][0..n_acts[r]) */
    size_t *n_acts;
};

int mp_sched_parse(const char *name, enum mp_sched_kind *kind);
const char *mp_sched_name(enum mp_sched_kind kind);
const char *mp_act_name(enum mp_act_kind kind);

static inline int mp_vstage_of(int rank, int chunk, int P) { return chunk * P + rank; }
static inline int mp_vstage_rank(int v, int P) { return v % P; }
static inline int mp_vstage_chunk(int v, int P) { return v / P; }

/* Makes the action lists. V is used by `interleaved` only (other kinds force V = 1). Any M >= 1.
 * MP_ERR_USAGE for P < 1, M < 1, V < 1. */
int mp_sched_make(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M,
                  struct mp_err *err);
/* An empty set of P lists (for hand-built schedules in tests). */
int mp_sched_alloc(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M);
int mp_sched_push(struct mp_sched *s, int rank, enum mp_act_kind kind, int mb, int chunk);
void mp_sched_free(struct mp_sched *s);

struct mp_sched_report {
    int peak_inflight[1024];  /* per rank: max micro-batch-chunks forwarded and not yet freed
                                 (after W); ranks beyond 1024 are not reported */
};
/* Checks completeness (every (mb, v) has F, B, W once; W after B after F; sends and receives
 * matched between the right ranks), per-chunk W in micro-batch order, and deadlock freedom
 * (abstract execution with buffered sends and blocking receives). On a defect: MP_ERR_INPUT naming
 * the rank, the action index and the action ("rank 1 action 7 (RECV_ACT mb 3 chunk 0): ..."). */
int mp_sched_validate(const struct mp_sched *s, struct mp_sched_report *rep, struct mp_err *err);

#endif
