/* Bucketed data-parallel reduction overlapped with the backward (mp_dp.h, real replicas only). A
 * bucket is a run of whole layers of this rank's arena; once the backward has finished all its
 * layers, its reduction starts and is advanced between kernels while the rest of the backward runs.
 * `ordered` is a point-to-point reduce-scatter (chunk q to replica q, who adds the D copies in
 * replica order) and allgather, so every element gets the emulated run's bits; `fast` is one
 * MPI_Iallreduce per bucket. Buckets start in a fixed order on every replica.
 *
 * Replicas on one host (`ordered`) move no payload through MPI: each copies the chunks it sends
 * into its own slots in shared memory (mp_xport_shm.h) and sends an empty message to say so, which
 * the owner waits for with the usual deadline before it reads them from there; the sums wait in
 * the owner's slots the same way. Through messages, every chunk above Open MPI's 4 KB eager limit
 * waited for a hand-shake with a peer that might still be inside a kernel, then crossed with a
 * system call (CMA): on a 2-core EPYC Zen4 VM the reduction of 2 replicas of tiny_mlp.mp (200 KB)
 * took 60-95 µs of a 460 µs step where the copies alone take 10. Each line crosses between the
 * cores once: written where it was computed, read by the core that adds it (writing into the
 * reader's slot made it cross twice, and measured no faster); the writes into the slots are
 * non-temporal (mp_shm_write says what they save). The sums are the same, added in the
 * same order: the same bits. MPIPE_DP_SHARED=0 keeps to messages (the path replicas on different
 * hosts take; the tests run both). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_dp_bucket.h"
#include "mp_mem.h"
#include "mp_xport_shm.h"

enum { B_IDLE, B_SCATTER, B_GATHER, B_DONE };

struct bucket {
    size_t lo, len;      /* arena range [lo, lo + len) */
    size_t per;          /* chunk length: ceil(len / D); chunk q is [q*per, (q+1)*per) ∩ range */
    int first, last;     /* global layers covered (for messages) */
    int n_layers, n_done;
    int state;
    float *recv;         /* ordered: D * per floats, replica r's copy of this rank's chunk;
                            shared: this rank's copy of chunk q, for replica q to read */
    size_t recv_off;     /* shared: recv's offset in every replica's part (floats) */
    size_t sum_off;      /* shared: where this rank's summed chunk waits for the others */
    int req[2 * MP_DP_MAX]; /* [q]: send to replica q; [D + r]: receive from replica r */
};

struct mp_dp_buckets {
    int nb, next;        /* buckets; the next one to start */
    struct bucket *b;
    int *bucket_of;      /* per global layer: its bucket, or -1 */
    float *grad;
    float *mem;          /* the recv buffers, unless shared */
    struct mp_shm *sh;   /* replicas on one host, ordered: every replica's recv and sum slots */
};

/* Replica q's slots at offset `off` (floats), as this process sees them. */
static float *part(const struct mp_dp_buckets *k, int q, size_t off)
{
    return (float *)mp_shm_part(k->sh, q) + off;
}

static size_t chunk_len(const struct bucket *b, int q)
{
    size_t lo = (size_t)q * b->per, hi = lo + b->per;
    lo = lo > b->len ? b->len : lo;
    hi = hi > b->len ? b->len : hi;
    return hi - lo;
}

/* Groups this rank's layers, last first, into buckets of about MP_DP_BUCKET_BYTES. */
static size_t layout(struct mp_dp_buckets *k, int D, int n_layers, const size_t *off,
                     const size_t *n_param)
{
    size_t cur = 0;
    for (int i = n_layers - 1; i >= 0; i--) {
        k->bucket_of[i] = -1;
        if (off[i] == SIZE_MAX || !n_param[i])
            continue;
        if (!cur) {
            struct bucket *b = &k->b[k->nb++];
            memset(b, 0, sizeof *b);
            b->last = i;
            b->lo = off[i] + n_param[i]; /* grows downwards */
        }
        struct bucket *b = &k->b[k->nb - 1];
        b->len += b->lo - off[i];
        b->lo = off[i];
        b->first = i;
        b->n_layers++;
        k->bucket_of[i] = k->nb - 1;
        cur += n_param[i] * sizeof(float);
        if (cur >= MP_DP_BUCKET_BYTES)
            cur = 0;
    }
    size_t floats = 0;
    for (int j = 0; j < k->nb; j++) {
        k->b[j].per = (k->b[j].len + (size_t)D - 1) / (size_t)D;
        k->b[j].recv_off = floats;
        floats += k->b[j].per * (size_t)D;
    }
    return floats;
}

/* The recv buffers: in memory the replicas share when they can (then each bucket's sum slot
 * follows them), else this rank's own. */
static int place_buffers(struct mp_dp *dp, size_t recv_floats, struct mp_err *err)
{
    struct mp_dp_buckets *k = dp->bk;
    size_t floats = recv_floats;
    for (int j = 0; j < k->nb; j++) {
        k->b[j].sum_off = floats;
        floats += k->b[j].per;
    }
    const char *env = getenv("MPIPE_DP_SHARED");
    int want = dp->reduce == MP_DP_ORDERED && !(env && strcmp(env, "0") == 0);
    if (mp_shm_open(dp->stage_x, floats * sizeof(float), want, "the replicas' reduction", &k->sh,
                    err))
        return -1;
    if (k->sh) /* every replica reads every part: the summed chunks the others wrote */
        mp_shm_touch(k->sh->map, k->sh->bytes * (size_t)k->sh->size);
    float *base = k->sh ? part(k, dp->replica, 0) : NULL;
    if (!base && !(base = k->mem = mp_mem_alloc(recv_floats * sizeof(float))))
        return MP_FAIL(err, NOMEM, "out of memory for reduction buckets");
    for (int j = 0; j < k->nb; j++)
        k->b[j].recv = base + k->b[j].recv_off;
    return 0;
}

int mp_dp_buckets_init(struct mp_dp *dp, int n_layers, const size_t *layer_off,
                       const size_t *n_param, struct mp_err *err)
{
    if (dp->D == 1 || dp->emulated)
        return 0;
    struct mp_dp_buckets *k = calloc(1, sizeof *k);
    if (!k)
        return MP_FAIL(err, NOMEM, "out of memory for reduction buckets");
    dp->bk = k;
    k->b = calloc((size_t)n_layers + 1, sizeof *k->b);
    k->bucket_of = malloc((size_t)n_layers * sizeof(int));
    if (!k->b || !k->bucket_of)
        return MP_FAIL(err, NOMEM, "out of memory for reduction buckets");
    if (place_buffers(dp, layout(k, dp->D, n_layers, layer_off, n_param), err))
        return -1;
    for (int j = 0; j < k->nb; j++)
        for (int q = 0; q < 2 * dp->D; q++)
            k->b[j].req[q] = -1;
    return 0;
}

int mp_dp_buckets_shared(const struct mp_dp *dp)
{
    return dp->bk && dp->bk->sh;
}

void mp_dp_buckets_free(struct mp_dp *dp)
{
    if (!dp->bk)
        return;
    free(dp->bk->b);
    free(dp->bk->bucket_of);
    free(dp->bk->mem);
    mp_shm_close(dp->bk->sh);
    free(dp->bk);
    dp->bk = NULL;
}

void mp_dp_buckets_begin(struct mp_dp *dp, float *grad)
{
    struct mp_dp_buckets *k = dp->bk;
    if (!k)
        return;
    k->grad = grad;
    k->next = 0;
    for (int j = 0; j < k->nb; j++) {
        k->b[j].n_done = 0;
        k->b[j].state = B_IDLE;
    }
}

/* A nonblocking send (send = 1) or receive of n floats with a replica; nothing when n = 0. Shared:
 * an empty message, saying the n floats are in place. */
static int xfer(struct mp_dp *dp, int send, float *buf, size_t n, int peer, int tag, int *req,
                struct mp_err *err)
{
    if (!n)
        return 0;
    size_t bytes = dp->bk->sh ? 0 : n * sizeof(float);
    return send ? mp_xport_isend(dp->stage_x, buf, bytes, peer, tag, req, err)
                : mp_xport_irecv(dp->stage_x, buf, bytes, peer, tag, req, err);
}

/* Phase 1: fast, the allreduce; ordered, chunk q to replica q and every copy of ours in. */
static int start_scatter(struct mp_dp *dp, int j, struct mp_err *err)
{
    struct bucket *b = &dp->bk->b[j];
    float *g = dp->bk->grad + b->lo;
    int me = dp->replica, D = dp->D, tag = 2 * j;
    b->state = B_SCATTER;
    if (dp->reduce == MP_DP_FAST) {
        float c = dp->coef[me];
        for (size_t i = 0; c != 1.0f && i < b->len; i++)
            g[i] *= c;
        return mp_xport_iallreduce_sum_f(dp->stage_x, g, b->len, &b->req[0], err);
    }
    size_t mine = chunk_len(b, me);
    if (dp->bk->sh) { /* chunk q into this rank's own slot q, for replica q to read */
        for (int q = 0; q < D; q++)
            if (q != me)
                mp_shm_write(b->recv + (size_t)q * b->per, g + (size_t)q * b->per,
                             chunk_len(b, q));
        mp_shm_publish(); /* the copies before the messages */
    }
    for (int q = 0; q < D; q++)
        if (q != me && (xfer(dp, 1, g + (size_t)q * b->per, chunk_len(b, q), q, tag, &b->req[q],
                             err) ||
                        xfer(dp, 0, b->recv + (size_t)q * b->per, mine, q, tag, &b->req[D + q],
                             err)))
            return -1;
    return 0;
}

/* Phase 2 (ordered): add the copies in replica order straight into this rank's chunk of the
 * arena, then send it to every replica and take theirs into the arena. The adding runs a block at
 * a time through a buffer on the stack (the chunk is one of the copies, so it cannot be the
 * running sum), with mp_dp_accumulate: every element goes through the emulated run's operations
 * in its order, so the bits are its bits. One pass over the chunk where a sum the chunk's size
 * and a copy back took three: measured on a 2-core EPYC Zen4 (2 replicas of models/mlp.mp,
 * 15.9 MB of gradients, a stand-alone reproduction), the adding fell from 1.3-1.9 ms a step to
 * 1.1-1.7, and training ran 1.01-1.05x. */
enum { COMBINE_BLOCK = 2048 }; /* floats: 8 KB, in L1 beside the copies' lines */

static void start_gather_combine(struct mp_dp *dp, const struct bucket *b, float *mine_at,
                                 size_t mine, float *also)
{
    float tmp[COMBINE_BLOCK];
    int me = dp->replica;
    for (size_t off = 0; off < mine; off += COMBINE_BLOCK) {
        size_t n = mine - off < COMBINE_BLOCK ? mine - off : COMBINE_BLOCK;
        for (int r = 0; r < dp->D; r++) {
            const float *src = r == me ? mine_at
                               : dp->bk->sh ? part(dp->bk, r, b->recv_off + (size_t)me * b->per)
                                            : b->recv + (size_t)r * b->per;
            mp_dp_accumulate(tmp, src + off, dp->coef[r], n, r == 0);
        }
        memcpy(mine_at + off, tmp, n * sizeof(float));
        if (also)
            mp_shm_write(also + off, tmp, n);
    }
}

static int start_gather(struct mp_dp *dp, int j, struct mp_err *err)
{
    struct bucket *b = &dp->bk->b[j];
    float *g = dp->bk->grad + b->lo;
    int me = dp->replica, D = dp->D, tag = 2 * j + 1;
    size_t mine = chunk_len(b, me);
    float *mine_at = g + (size_t)me * b->per;
    float *slot = dp->bk->sh ? part(dp->bk, me, b->sum_off) : NULL; /* for the others to read */
    start_gather_combine(dp, b, mine_at, mine, slot);
    if (slot)
        mp_shm_publish();
    b->state = B_GATHER;
    for (int q = 0; q < D; q++)
        if (q != me && (xfer(dp, 1, mine_at, mine, q, tag, &b->req[q], err) ||
                        xfer(dp, 0, g + (size_t)q * b->per, chunk_len(b, q), q, tag,
                             &b->req[D + q], err)))
            return -1;
    return 0;
}

/* Tests (block = 0) or waits for (block = 1) bucket j's requests; *done when all completed. */
static int settle(struct mp_dp *dp, int j, int block, int *done, struct mp_err *err)
{
    struct bucket *b = &dp->bk->b[j];
    *done = 1;
    for (int q = 0; q < 2 * dp->D; q++) {
        int d = 1;
        if (block) {
            char what[160];
            snprintf(what, sizeof what, "the data-parallel reduction of layers %d..%d (%s, "
                     "replica %d)", b->first, b->last, b->state == B_SCATTER ? "scatter" :
                     "gather", q % dp->D);
            if (mp_xport_wait(dp->stage_x, &b->req[q], what, err))
                return -1;
        } else if (mp_xport_test(dp->stage_x, &b->req[q], &d, err)) {
            return -1;
        }
        *done &= d;
    }
    return 0;
}

/* Shared: every other replica's summed chunk, from its slot into the arena. */
static void take_sums(struct mp_dp *dp, const struct bucket *b)
{
    float *g = dp->bk->grad + b->lo;
    for (int q = 0; q < dp->D; q++)
        if (q != dp->replica)
            memcpy(g + (size_t)q * b->per, part(dp->bk, q, b->sum_off),
                   chunk_len(b, q) * sizeof(float));
}

/* Moves bucket j forward as far as its completed requests allow. */
static int advance(struct mp_dp *dp, int j, int block, struct mp_err *err)
{
    struct bucket *b = &dp->bk->b[j];
    int done;
    while (b->state == B_SCATTER || b->state == B_GATHER) {
        if (settle(dp, j, block, &done, err))
            return -1;
        if (!done)
            return 0;
        atomic_thread_fence(memory_order_acquire); /* the messages before the slots' contents */
        if (b->state == B_GATHER && dp->bk->sh)
            take_sums(dp, b);
        if (b->state == B_GATHER || dp->reduce == MP_DP_FAST)
            b->state = B_DONE;
        else if (start_gather(dp, j, err))
            return -1;
    }
    return 0;
}

static int start_ready(struct mp_dp *dp, struct mp_err *err)
{
    struct mp_dp_buckets *k = dp->bk;
    while (k->next < k->nb && k->b[k->next].n_done >= k->b[k->next].n_layers)
        if (start_scatter(dp, k->next++, err))
            return -1;
    return 0;
}

int mp_dp_buckets_layer_done(struct mp_dp *dp, int layer, struct mp_err *err)
{
    struct mp_dp_buckets *k = dp->bk;
    if (!k || k->bucket_of[layer] < 0)
        return 0;
    k->b[k->bucket_of[layer]].n_done++;
    return start_ready(dp, err);
}

int mp_dp_buckets_poll(struct mp_dp *dp, struct mp_err *err)
{
    struct mp_dp_buckets *k = dp->bk;
    for (int j = 0; k && j < k->next; j++)
        if (advance(dp, j, 0, err))
            return -1;
    return 0;
}

int mp_dp_buckets_finish(struct mp_dp *dp, struct mp_err *err)
{
    struct mp_dp_buckets *k = dp->bk;
    if (!k)
        return 0;
    for (int j = 0; j < k->nb; j++)
        k->b[j].n_done = k->b[j].n_layers;
    if (start_ready(dp, err))
        return -1;
    for (int j = 0; j < k->nb; j++)
        if (advance(dp, j, 1, err))
            return -1;
    return 0;
}
