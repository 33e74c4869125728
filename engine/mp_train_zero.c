/* --zero 1 (DESIGN.md §10, ZeRO stage 1): with D real replicas of a stage, each keeps optimizer
 * state for one contiguous slice of whole layers of the stage's arena (balanced by parameters),
 * updates only those layers after the gradient reduction, and the replicas all-gather the updated
 * parameters. The update is the same per-tensor arithmetic on the same reduced gradient and state,
 * so the weights are bit-identical to --zero 0. A checkpoint holds the whole state: replica 0
 * writes it as an unsharded run would, taking the other replicas' tensors one at a time as it
 * writes them, so it loads into any layout; loading keeps each replica's slice. With
 * emulated replicas (one rank runs all D) there is nothing to shard. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_ckpt.h"
#include "mp_train_loop.h"

int mp__zero_active(const struct loop *L)
{
    return L->cfg->zero && L->replica >= 0 && L->D > 1 && L->sx;
}

/* Slice boundaries at layer starts nearest to r·n/D, the same on every replica. */
int mp__zero_setup(struct loop *L, struct mp_err *err)
{
    if (!mp__zero_active(L)) {
        if (L->cfg->zero && L->wrank == 0) /* it was accepted and did nothing, without a word */
            fprintf(stderr, "mpipe train: note: --zero 1 shards the optimizer state over "
                    "replicas on ranks of their own (--dp D on P*D ranks); %s, so each rank "
                    "keeps its stage's whole state\n", L->D > 1 ? "here one rank runs every "
                    "replica of its stage in turn" : "this run has one replica");
        return 0;
    }
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

/* The replica whose slice holds arena offset off. */
static int owner(const struct loop *L, size_t off)
{
    int r = 0;
    while (r + 1 < L->D && off >= (size_t)L->zero_displs[r + 1])
        r++;
    return r;
}

/* Replica 0, writing a checkpoint: another replica's state tensor, sent by its send_state. One
 * tag for all: between two ranks messages of one tag arrive in the order sent, and both sides
 * walk the stage files' order (mp_ckpt_send_state). */
static int fetch_state(void *ctx, size_t off, size_t numel, float *dst, struct mp_err *err)
{
    const struct loop *L = ctx;
    return mp_xport_recv(L->sx, dst, numel * sizeof(float), owner(L, off), 40000,
                         "a replica's optimizer state for the checkpoint", err);
}

static int send_state(void *ctx, const struct mp_st_tensor *t, struct mp_err *err)
{
    const struct loop *L = ctx;
    return mp_xport_send(L->sx, t->data, t->numel * sizeof(float), 0, 40000,
                         "replica 0 to take the optimizer state", err);
}

int mp__zero_checkpoint(struct loop *L, struct mp_ckpt_io *io, struct mp_err *err)
{
    if (!mp__zero_active(L) || L->st.state_slots == 0)
        return 0;
    if (L->replica > 0)
        return mp_ckpt_send_state(io, send_state, L, err);
    io->fetch_state = fetch_state;
    io->fetch_ctx = L;
    return 0;
}
