/* --zero 1 (DESIGN.md §10, ZeRO stage 1): with D real replicas of a stage, each keeps optimizer
 * state for one contiguous slice of whole layers of the stage's arena (balanced by parameters),
 * updates only those layers after the gradient reduction, and the replicas all-gather the updated
 * parameters. The update is the same per-tensor arithmetic on the same reduced gradient and state,
 * so the weights are bit-identical to --zero 0. A checkpoint gathers the whole state on replica 0,
 * which writes it as usual, so it loads into any layout; loading keeps each replica's slice. With
 * emulated replicas (one rank runs all D) there is nothing to shard. */
#include <stdlib.h>
#include <string.h>

#include "mp_train_loop.h"

int mp__zero_active(const struct loop *L)
{
    return L->cfg->zero && L->replica >= 0 && L->D > 1 && L->sx;
}

/* Slice boundaries at layer starts nearest to r·n/D, the same on every replica. */
int mp__zero_setup(struct loop *L, struct mp_err *err)
{
    if (!mp__zero_active(L))
        return 0;
    const struct mp_stage *st = &L->st;
    const struct mp_model *m = L->cfg->model;
    int D = L->D;
    L->zero_counts = calloc((size_t)D, sizeof(int));
    L->zero_displs = calloc((size_t)D, sizeof(int));
    if (!L->zero_counts || !L->zero_displs)
        return MP_FAIL(err, NOMEM, "out of memory");
    if (st->n_param > (size_t)0x7fffffff)
        return MP_FAIL(err, USAGE, "--zero 1: a stage of %zu parameters is too large for one "
                       "all-gather (at most 2^31 - 1 floats)", st->n_param);
    size_t prev = 0;
    for (int r = 0; r < D; r++) {
        size_t target = st->n_param * (size_t)(r + 1) / (size_t)D, best = st->n_param;
        for (int i = 0; r < D - 1 && i < m->n_layers; i++) {
            size_t o = st->layer_off[i];
            if (o == SIZE_MAX || o < prev)
                continue;
            size_t d = o > target ? o - target : target - o, bd = best > target ? best - target
                                                                                : target - best;
            if (d < bd)
                best = o;
        }
        L->zero_displs[r] = (int)prev;
        L->zero_counts[r] = (int)(best - prev);
        prev = best;
    }
    size_t lo = (size_t)L->zero_displs[L->replica];
    return mp_stage_shard_state(&L->st, lo, lo + (size_t)L->zero_counts[L->replica], err);
}

int mp__zero_gather_params(struct loop *L, struct mp_err *err)
{
    if (!mp__zero_active(L))
        return 0;
    return mp_xport_allgatherv_f(L->sx, NULL, L->zero_counts[L->replica], L->st.param,
                                 L->zero_counts, L->zero_displs,
                                 "the replicas' updated parameters (--zero 1)", err);
}

/* Replica 0 receives every slice of every slot into *full (n_param x slots, the unsharded layout);
 * the other replicas send theirs and get NULL. Collective over the stage's replicas. */
int mp__zero_full_state(struct loop *L, float **full, struct mp_err *err)
{
    *full = NULL;
    if (!mp__zero_active(L) || L->st.state_slots == 0)
        return 0;
    struct mp_stage *st = &L->st;
    size_t n = st->n_param;
    int slots = st->state_slots, rc = 0;
    if (L->replica == 0) {
        if (!(*full = calloc(n * (size_t)slots + 1, sizeof(float))))
            return MP_FAIL(err, NOMEM, "out of memory gathering the optimizer state");
        for (int k = 0; k < slots && !rc; k++)
            for (int r = 0; r < L->D && !rc; r++) {
                float *dst = *full + (size_t)k * n + (size_t)L->zero_displs[r];
                size_t bytes = (size_t)L->zero_counts[r] * sizeof(float);
                if (r == 0)
                    memcpy(dst, st->state + (size_t)k * st->state_len, bytes);
                else
                    rc = mp_xport_recv(L->sx, dst, bytes, r, 40000 + k,
                                       "a replica's optimizer state for the checkpoint", err);
            }
        if (rc) {
            free(*full);
            *full = NULL;
        }
        return rc;
    }
    for (int k = 0; k < slots && !rc; k++)
        rc = mp_xport_send(L->sx, st->state + (size_t)k * st->state_len,
                           st->state_len * sizeof(float), 0, 40000 + k,
                           "replica 0 to take the optimizer state", err);
    return rc;
}
