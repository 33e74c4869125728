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

/* Bytes of the message chunk c sends in direction dir (forward: its output; back: its input). */
static size_t msg_bytes(const struct mp_stage *st, const struct mp_chunk *c, int dir)
{
    const struct mp_layer *l = &st->model->layers[dir == MP_HAND_ACT ? c->last : c->first];
    return st->mbs * (dir == MP_HAND_ACT ? mp_layer_out_len(l) : mp_layer_in_len(l)) *
           sizeof(float);
}

int mp_exec_share(struct mp_exec *e, int want, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    size_t n = (size_t)st->S * 2, off = 0;
    double *at = calloc(n, sizeof *at);
    e->hand_at = calloc(n, sizeof *e->hand_at);
    if (!at || !e->hand_at) {
        free(at);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int c = 0; c < st->V; c++) { /* the order of mp_stage_handoff_bytes */
        const struct mp_chunk *ch = &st->chunk[c];
        int sends[2] = {ch->next_rank >= 0 && ch->next_local < 0,
                        ch->prev_rank >= 0 && ch->prev_local < 0};
        for (int dir = 0; dir < 2; dir++)
            if (sends[dir]) {
                at[ch->v * 2 + dir] = (double)off + 1;
                off += MP_HANDOFF_SLOTS * mp_stage_handoff_slot_bytes(msg_bytes(st, ch, dir));
            }
    }
    int rc = mp_xport_allreduce_max(e->x, at, n, "where the stages' hand-off slots are", err);
    if (!rc)
        rc = mp_shm_open(e->x, off, want, "the pipeline's hand-offs", &e->hand, err);
    e->hand_odd_by_mpi = want == 2;
    if (!rc && e->hand) {
        for (size_t k = 0; k < n; k++)
            e->hand_at[k] = (size_t)at[k];
        e->hand_bytes = off;
        st->act_bytes_now += off; /* message buffers, held from the start (DESIGN.md §4) */
        if (st->act_bytes_now > st->act_bytes_peak)
            st->act_bytes_peak = st->act_bytes_now;
    }
    free(at);
    return rc;
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
