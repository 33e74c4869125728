/* The pipeline's hand-offs through shared memory (mp_exec.h mp_exec_share): where each stage's
 * slots are, and the sender's and receiver's halves. A slot's first 64-byte line holds its flag,
 * 1 while a message waits in it: the sender fills only an empty slot and sets the flag after the
 * data (release); the receiver copies, then clears it (release), so the sender's next fill of
 * that slot comes after the copy. Micro-batch mb uses slot mb % MP_HANDOFF_SLOTS; a message whose
 * slot is still full goes through MPI with its bytes, and the receiver tells the two apart by the
 * bytes that came (none: in the slot). */
#include "mp_exec_hand.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mp_xport_shm.h"

/* Maps the slots this rank uses: its own part's and, in the senders' parts, those of the
 * messages sent to it; no other rank's. Its resident size then holds its own slots and what it
 * receives (as mp_stage_mem.c predicts): with the whole segment mapped, every rank of a P-stage
 * pipeline on one host held all P ranks' slots. */
static void touch_slots(const struct mp_exec *e, const int *bounds)
{
    const struct mp_stage *st = e->st;
    for (int v = 0; v < st->S; v++)
        for (int dir = 0; dir < 2; dir++) {
            int from = mp_vstage_rank(st->place, v, st->P);
            size_t at = e->hand_at[v * 2 + dir];
            if (at && (from == st->rank ||
                       mp_stage_handoff_to(st->place, v, dir, st->P, st->V) == st->rank))
                mp_shm_touch((char *)mp_shm_part(e->hand, from) + (at - 1),
                             mp_stage_handoff_region_bytes(st->model, bounds, v, dir, st->mbs));
        }
}

int mp_exec_share(struct mp_exec *e, const int *bounds, int want, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    if (!(e->hand_at = calloc((size_t)st->S * 2, sizeof *e->hand_at)))
        return MP_FAIL(err, NOMEM, "out of memory");
    size_t mine = 0; /* every rank's slots from the same rule: where the peers' are too */
    for (int r = 0; r < st->P; r++) {
        size_t bytes = mp_stage_handoff_bytes(st->model, bounds, st->place, r, st->P, st->V,
                                              st->mbs, e->hand_at);
        mine = r == st->rank ? bytes : mine;
    }
    int rc = mp_shm_open(e->x, mine, want, "the pipeline's hand-offs", &e->hand, err);
    e->hand_odd_by_mpi = want == 2;
    if (!rc && e->hand)
        touch_slots(e, bounds);
    if (!rc && e->hand) {
        st->act_bytes_now += mine; /* message buffers, held from the start (DESIGN.md §4) */
        if (st->act_bytes_now > st->act_bytes_peak)
            st->act_bytes_peak = st->act_bytes_now;
    }
    return rc;
}

int mp_exec_share_want(struct mp_xport *x, int P, int *want, struct mp_err *err)
{
    *want = 0;
    if (P < 2)
        return 0;
    if (mp_xport_one_host(x, want, err))
        return -1;
    const char *env = getenv("MPIPE_STAGE_SHARED");
    if (env && strcmp(env, "0") == 0)
        *want = 0;
    else if (*want && env && strcmp(env, "odd") == 0)
        *want = 2;
    return 0;
}

/* Stage v's slot for micro-batch mb's message in direction dir, or NULL when it has none. */
static unsigned char *slot(const struct mp_exec *e, int v, int dir, int mb, size_t bytes)
{
    size_t at = e->hand ? e->hand_at[v * 2 + dir] : 0;
    if (!at)
        return NULL;
    int r = mp_vstage_rank(e->st->place, v, e->st->P);
    return (unsigned char *)mp_shm_part(e->hand, r) + (at - 1) +
           (size_t)(mb % MP_HANDOFF_SLOTS) * mp_stage_handoff_slot_bytes(bytes);
}

int mp__exec_hand_put(struct mp_exec *e, int v, int dir, int mb, const float *src, size_t bytes)
{
    unsigned char *s = slot(e, v, dir, mb, bytes);
    _Atomic uint32_t *full = (_Atomic uint32_t *)s;
    if (!s || (e->hand_odd_by_mpi && mb % 2) || atomic_load_explicit(full, memory_order_acquire)) {
        e->n_sent_mpi++;
        return 0;
    }
    e->n_sent_shared++;
    mp_shm_write((float *)(s + 64), src, bytes / sizeof(float));
    mp_shm_publish();
    atomic_store_explicit(full, 1, memory_order_release);
    return 1;
}

int mp__exec_hand_take(struct mp_exec *e, int v, int dir, int mb, float *dst, size_t bytes,
                       struct mp_err *err)
{
    unsigned char *s = slot(e, v, dir, mb, bytes);
    _Atomic uint32_t *full = (_Atomic uint32_t *)s;
    if (!s || !atomic_load_explicit(full, memory_order_acquire))
        return MP_FAIL(err, INTERNAL, "rank %d: stage %d's %s of micro-batch %d came empty, and "
                       "no slot holds it", e->st->rank, v, dir == MP_HAND_ACT ? "activation" :
                       "gradient", mb);
    memcpy(dst, s + 64, bytes);
    atomic_store_explicit(full, 0, memory_order_release);
    return 0;
}
