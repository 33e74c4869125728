/* Runs one rank's action list for a training step (see mp_exec.h). It decides nothing about order:
 * the schedule did. It owns the mechanics: which buffer each action reads and writes, pre-posting
 * receives, handing buffers between chunks of the same rank, and recycling slabs whose sends are
 * done. Exactness rests on the kernels seeing the same inputs in the same micro-batch order as on
 * one rank; nothing here adds floating-point operations of its own. */
#include "mp_exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_exec_hand.h"
#include "mp_xport_shm.h"

enum { DIR_ACT = MP_HAND_ACT, DIR_GRAD = MP_HAND_GRAD };

static int msg_tag(const struct mp_stage *st, int mb, int v_src, int dir)
{
    return ((mb * st->S) + v_src) * 2 + dir;
}

static float *act_buf(const struct mp_chunk *c, const struct mp_slab *s, int k)
{
    return mp_slab_at(c, s, c->act_off[k]);
}

static float *grad_buf(const struct mp_chunk *c, const struct mp_slab *s, int k)
{
    return mp_slab_at(c, s, c->grad_off[k]);
}

static float *saved_buf(const struct mp_chunk *c, const struct mp_slab *s, int k)
{
    return mp_slab_at(c, s, c->saved_off[k]);
}

/* What layer k's backward sees as its output y: the raw output a residual end kept apart, or the
 * output buffer itself. */
static float *y_buf(const struct mp_chunk *c, const struct mp_slab *s, int k)
{
    return c->raw_off[k] != SIZE_MAX ? mp_slab_at(c, s, c->raw_off[k]) : act_buf(c, s, k + 1);
}

static int32_t *labels_buf(const struct mp_chunk *c, const struct mp_slab *s)
{
    return (int32_t *)mp_slab_at(c, s, c->labels_off);
}

static size_t in_len(const struct mp_stage *st, const struct mp_chunk *c)
{
    return mp_layer_in_len(&st->model->layers[c->first]);
}

static size_t out_len(const struct mp_stage *st, const struct mp_chunk *c)
{
    return mp_layer_out_len(&st->model->layers[c->last]);
}

/* Points the executor at rank st->rank's list in s, indexes its receives, and pairs each
 * activation's send with its gradient's receive. */
static int use_sched(struct mp_exec *e, const struct mp_sched *s, struct mp_err *err)
{
    size_t n = s->n_acts[e->st->rank];
    if (n + 1 > e->cap) {
        size_t *at = realloc(e->recv_at, (n + 1) * sizeof *at);
        if (at)
            e->recv_at = at;
        int *rq = realloc(e->recv_req, (n + 1) * sizeof *rq);
        if (rq)
            e->recv_req = rq;
        size_t *gr = realloc(e->grad_recv_for, (n + 1) * sizeof *gr);
        if (gr)
            e->grad_recv_for = gr;
        if (!at || !rq || !gr)
            return MP_FAIL(err, NOMEM, "out of memory");
        e->cap = n + 1;
    }
    size_t keys = (size_t)e->st->V * (size_t)s->M;
    size_t *send_of = malloc((keys ? keys : 1) * sizeof *send_of); /* (chunk, mb) -> SEND_ACT */
    if (!send_of)
        return MP_FAIL(err, NOMEM, "out of memory");
    for (size_t k = 0; k < keys; k++)
        send_of[k] = SIZE_MAX;
    e->sched = s;
    e->acts = s->acts[e->st->rank];
    e->n_acts = n;
    e->n_recv = 0;
    for (size_t i = 0; i < e->n_acts; i++) {
        const struct mp_action *a = &e->acts[i];
        size_t key = (size_t)a->chunk * (size_t)s->M + (size_t)a->mb;
        e->recv_req[i] = -1;
        e->grad_recv_for[i] = SIZE_MAX;
        if (a->kind == MP_ACT_RECV_ACT)
            e->recv_at[e->n_recv++] = i;
        else if (a->kind == MP_ACT_SEND_ACT)
            send_of[key] = i;
        else if (a->kind == MP_ACT_RECV_GRAD && send_of[key] != SIZE_MAX)
            e->grad_recv_for[send_of[key]] = i; /* the validator put the send first */
    }
    free(send_of);
    return 0;
}

int mp_exec_init(struct mp_exec *e, struct mp_stage *st, const struct mp_sched *s,
                 struct mp_xport *x, struct mp_err *err)
{
    memset(e, 0, sizeof *e);
    e->st = st;
    e->x = x;
    e->trace_tid = st->rank;
    int max_pending = st->V * st->M + 1;
    e->pending = malloc((size_t)max_pending * sizeof *e->pending);
    e->pending_chunk = malloc((size_t)max_pending * sizeof *e->pending_chunk);
    if (!e->pending || !e->pending_chunk)
        return MP_FAIL(err, NOMEM, "out of memory");
    return use_sched(e, s, err);
}

int mp_exec_set_sched(struct mp_exec *e, const struct mp_sched *s, struct mp_err *err)
{
    return s == e->sched ? 0 : use_sched(e, s, err);
}

void mp_exec_free(struct mp_exec *e)
{
    mp_shm_close(e->hand);
    free(e->hand_at);
    free(e->recv_at);
    free(e->recv_req);
    free(e->grad_recv_for);
    free(e->pending);
    free(e->pending_chunk);
    memset(e, 0, sizeof *e);
}

static void describe(const struct mp_exec *e, size_t i, char *buf, size_t len)
{
    const struct mp_action *a = &e->acts[i];
    const struct mp_chunk *c = &e->st->chunk[a->chunk];
    int is_act = a->kind == MP_ACT_RECV_ACT || a->kind == MP_ACT_SEND_ACT;
    int peer = is_act ? c->prev_rank : c->next_rank;
    snprintf(buf, len, "%s of micro-batch %d %s rank %d (%s action %zu: %s chunk %d)",
             is_act ? "activation" : "gradient", a->mb,
             a->kind == MP_ACT_RECV_ACT || a->kind == MP_ACT_RECV_GRAD ? "from" : "to", peer,
             mp_sched_name(e->sched->kind), i, mp_act_name(a->kind), a->chunk);
}

enum { BLOCK_NONE = -2, BLOCK_ALL = -1 }; /* drain_pending: which sends to wait for */
static int drain_pending(struct mp_exec *e, int block, struct mp_err *err);

/* The slab of micro-batch mb of chunk ci for its forward or its activation's receive, in *s. When
 * the pool has no free slab but holds one whose only business left is a send (a gradient the
 * previous rank has not taken yet), it waits for that send rather than grow: otherwise, whenever
 * the previous rank was slow to take one, the rank held a slab more than the schedule does and
 * than mp_stage_mem.c predicts (cnn.mp, zbv, M = 4: 131.7 MB for 110.8, 3 runs in 40). The wait
 * ends as soon as that rank's MPI progresses, as the receive was posted with the activation's
 * send (do_send). */
static int slab_for(struct mp_exec *e, int ci, int mb, struct mp_slab **s, struct mp_err *err)
{
    *s = NULL;
    if (!mp_stage_slab_ready(e->st, ci, mb)) {
        int sending = 0;
        for (int k = 0; k < e->n_pending && !sending; k++)
            sending = e->pending_chunk[k] == ci;
        if (sending && drain_pending(e, ci, err))
            return -1;
    }
    return (*s = mp_stage_slab_get(e->st, ci, mb, err)) ? 0 : -1;
}

/* Bytes of a micro-batch's input to chunk c, or of its gradient: one message between ranks. */
static size_t act_in_bytes(const struct mp_stage *st, const struct mp_chunk *c)
{
    return st->mbs * in_len(st, c) * sizeof(float);
}

/* Bytes of a micro-batch's output of chunk c, or of its gradient. */
static size_t act_out_bytes(const struct mp_stage *st, const struct mp_chunk *c)
{
    return st->mbs * out_len(st, c) * sizeof(float);
}

/* Posts the receive of activation action i into buf, or when buf is NULL straight into its slab,
 * taken now. Gradients' receives are posted by their activation's send. */
static int post_act_recv(struct mp_exec *e, size_t i, float *buf, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    const struct mp_action *a = &e->acts[i];
    struct mp_chunk *c = &st->chunk[a->chunk];
    struct mp_slab *s;
    if (!buf && slab_for(e, a->chunk, a->mb, &s, err))
        return -1;
    return mp_xport_irecv(e->x, buf ? buf : act_buf(c, s, 0), act_in_bytes(st, c), c->prev_rank,
                          msg_tag(st, a->mb, c->v - 1, DIR_ACT), &e->recv_req[i], err);
}

/* Posts gradient receive action i into slab s of its micro-batch, just before the activation
 * goes out: the next rank can then never send a gradient that no receive awaits, which the wait
 * in slab_for relies on. */
static int post_grad_recv(struct mp_exec *e, size_t i, struct mp_slab *s, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    const struct mp_action *a = &e->acts[i];
    struct mp_chunk *c = &st->chunk[a->chunk];
    return mp_xport_irecv(e->x, grad_buf(c, s, c->n), act_out_bytes(st, c),
                          c->next_rank, msg_tag(st, a->mb, c->v + 1, DIR_GRAD), &e->recv_req[i],
                          err);
}

/* Posts the next activation receive ahead, so the message can land while this rank computes:
 * into the stage's receive buffer (mp_stage.h recv_ahead), the only one posted ahead at a time.
 * Not into the micro-batch's slab: taken that early, it was a slab more than the schedule holds
 * (on the last stage of gpt.mp, 1F1B, micro-batches of 4: 77.6 MB of activations where the
 * schedule needs 38.8), and whether one was free then depended on when the previous rank took a
 * gradient. Its receive action copies it into the slab, taken where the schedule says. */
static int post_ahead(struct mp_exec *e, struct mp_err *err)
{
    if (e->ahead != SIZE_MAX || e->next_post >= e->n_recv || !e->st->recv_ahead)
        return 0;
    size_t i = e->recv_at[e->next_post];
    if (post_act_recv(e, i, e->st->recv_ahead, err))
        return -1;
    e->ahead = i;
    e->next_post++;
    return 0;
}

static int do_recv(struct mp_exec *e, size_t i, struct mp_err *err)
{
    const struct mp_action *a = &e->acts[i];
    int is_act = a->kind == MP_ACT_RECV_ACT;
    if (e->recv_req[i] < 0) { /* not posted ahead: post it now */
        if (!is_act || e->next_post >= e->n_recv || e->recv_at[e->next_post] != i)
            return MP_FAIL(err, INTERNAL, "rank %d: receive %zu was not posted", e->st->rank, i);
        if (post_act_recv(e, i, NULL, err))
            return -1;
        e->next_post++;
    }
    char what[256];
    describe(e, i, what, sizeof what);
    size_t came = 0;
    if (mp_xport_wait_bytes(e->x, &e->recv_req[i], what, &came, err))
        return -1;
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[a->chunk];
    size_t bytes = is_act ? act_in_bytes(st, c) : act_out_bytes(st, c);
    int from = is_act ? c->v - 1 : c->v + 1, dir = is_act ? DIR_ACT : DIR_GRAD;
    int in_slot = e->hand && came == 0; /* an empty message: the bytes wait in the sender's slot */
    struct mp_slab *s = NULL;
    if (is_act && e->ahead == i) { /* posted into recv_ahead before the slab was taken */
        if (slab_for(e, a->chunk, a->mb, &s, err))
            return -1;
        if (!in_slot)
            memcpy(act_buf(c, s, 0), st->recv_ahead, bytes);
        e->ahead = SIZE_MAX;
    } else if (in_slot && !(s = mp_stage_slab_find(st, a->chunk, a->mb))) {
        return MP_FAIL(err, INTERNAL, "rank %d: no slab for micro-batch %d", st->rank, a->mb);
    }
    if (in_slot)
        return mp__exec_hand_take(e, from, dir, a->mb,
                                  is_act ? act_buf(c, s, 0) : grad_buf(c, s, c->n), bytes, err);
    return 0;
}

static void make_ctx(const struct mp_exec *e, const struct mp_exec_io *io, int mb,
                     const int32_t *labels, int training, struct mp_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->labels = labels;
    ctx->training = training;
    ctx->seed = io ? io->seed : 0;
    ctx->step = io ? io->step : 0;
    ctx->micro_batch = (uint64_t)mb + (uint64_t)(io ? io->mb_offset : 0);
    /* W runs in micro-batch order per chunk (the validator proves it), so micro-batch 0 of this
     * replica's block is each layer's first gradient of the step: it overwrites, the rest add. */
    ctx->overwrite = io && mb == 0;
    ctx->global_batch = io ? io->global_batch : 1;
    ctx->scratch = e->st->scratch;
    ctx->scratch_len = e->st->scratch_len;
}

/* y = raw + the input of each residual block layer k ends, innermost first (y may be raw). */
static void residual_add(const struct mp_layer *l, const struct mp_chunk *c, struct mp_slab *s,
                         int k, size_t batch)
{
    size_t n = batch * mp_layer_out_len(l);
    float *y = act_buf(c, s, k + 1);
    const float *raw = y_buf(c, s, k);
    for (int r = 0; r < l->n_res; r++, raw = y) {
        const float *skip = act_buf(c, s, l->res_from[r] - c->first); /* the block's input */
        for (size_t i = 0; i < n; i++) /* (batch, numel) */
            y[i] = raw[i] + skip[i];
    }
}

/* Forward of layers [k0, k1) of chunk c on `batch` samples held in slab s. */
static void forward_layers(struct mp_exec *e, int ci, struct mp_slab *s, struct mp_ctx *ctx,
                           size_t batch, int k0, int k1)
{
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[ci];
    for (int k = k0; k < k1; k++) {
        const struct mp_layer *l = &st->model->layers[c->first + k];
        l->ops->forward(l, ctx, st->param + st->layer_off[l->index], act_buf(c, s, k),
                        y_buf(c, s, k), saved_buf(c, s, k), batch);
        if (l->n_res)
            residual_add(l, c, s, k, batch);
        mp_xport_progress(e->x);
    }
}

static void chunk_forward(struct mp_exec *e, int ci, struct mp_slab *s, struct mp_ctx *ctx,
                          size_t batch)
{
    forward_layers(e, ci, s, ctx, batch, 0, e->st->chunk[ci].n);
}

/* A residual block's output gradient also reaches its input: after B of the block's first layer k
 * wrote dx, add the gradient of each block output that starts at k (in a fixed order). */
static void skip_gradients(const struct mp_stage *st, const struct mp_chunk *c, struct mp_slab *s,
                           int k)
{
    size_t n = st->mbs * mp_layer_in_len(&st->model->layers[c->first + k]);
    float *dx = grad_buf(c, s, k);
    for (int j = c->skip_first[k]; j < c->skip_first[k + 1]; j++) {
        const float *dy = grad_buf(c, s, c->skip[j] + 1);
        for (size_t i = 0; i < n; i++) /* (mbs, numel) */
            dx[i] += dy[i];
    }
}

static int do_forward(struct mp_exec *e, const struct mp_action *a, struct mp_exec_io *io,
                      struct mp_err *err)
{
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[a->chunk];
    struct mp_slab *s;
    if (slab_for(e, a->chunk, a->mb, &s, err))
        return -1;
    const uint32_t *idx = io->idx + (size_t)(io->mb_offset + a->mb) * st->mbs;
    if (c->v == 0)
        mp_data_gather(io->ds, idx, st->mbs, act_buf(c, s, 0), labels_buf(c, s));
    else if (c->v == st->S - 1)
        mp_data_labels(io->ds, idx, st->mbs, labels_buf(c, s));
    struct mp_ctx ctx;
    make_ctx(e, io, a->mb, labels_buf(c, s), 1, &ctx);
    ctx.loss_sum = &io->loss_sum;
    ctx.n_correct = &io->n_correct;
    if (mp_stage_work_get(st, a->chunk, s, err))
        return -1;
    chunk_forward(e, a->chunk, s, &ctx, st->mbs);
    mp_stage_work_release(st, s); /* recomputing: only the light part stays */
    s->f_done = 1;
    if (c->next_local >= 0) { /* hand the output to the next chunk of this rank */
        struct mp_chunk *next = &st->chunk[c->next_local];
        struct mp_slab *ns;
        if (slab_for(e, c->next_local, a->mb, &ns, err))
            return -1;
        memcpy(act_buf(next, ns, 0), act_buf(c, s, c->n), act_out_bytes(st, c));
    }
    return 0;
}

/* Kernels between which MPI and the data-parallel reduction get a chance to progress. */
static int after_kernel(struct mp_exec *e, struct mp_err *err)
{
    mp_xport_progress(e->x);
    if (!e->poll)
        return 0;
    double t0 = mp_xport_now();
    int rc = e->poll(e->hook_arg, err);
    e->hook_s += mp_xport_now() - t0;
    return rc;
}

/* W of layer k of chunk c for the micro-batch in s; on the replica's last micro-batch that layer's
 * gradient is final, which the data-parallel hook hears at once. */
static int weight_layer(struct mp_exec *e, struct mp_chunk *c, struct mp_slab *s, int k,
                        const struct mp_ctx *ctx, int last, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    const struct mp_layer *l = &st->model->layers[c->first + k];
    if (!l->ops->backward_weight)
        return 0;
    l->ops->backward_weight(l, ctx, act_buf(c, s, k), y_buf(c, s, k),
                            saved_buf(c, s, k), grad_buf(c, s, k + 1),
                            st->grad + st->layer_off[l->index], st->mbs);
    if (last && e->layer_done) {
        double t0 = mp_xport_now();
        int rc = e->layer_done(e->hook_arg, l->index, err);
        e->hook_s += mp_xport_now() - t0;
        if (rc)
            return -1;
    }
    return after_kernel(e, err);
}

/* B of layers [k0, k1) of chunk c, last first; with fuse_w each layer's W follows its B (`last`:
 * the replica's last micro-batch, whose W the data-parallel hook hears). Each kernel sees the same
 * inputs either way: W of layer k reads only buffers of layer k and k + 1, which B of earlier
 * layers never writes. */
static int backward_layers(struct mp_exec *e, struct mp_chunk *c, struct mp_slab *s,
                           const struct mp_ctx *ctx, int k0, int k1, int fuse_w, int last,
                           struct mp_err *err)
{
    struct mp_stage *st = e->st;
    for (int k = k1 - 1; k >= k0; k--) {
        const struct mp_layer *l = &st->model->layers[c->first + k];
        if (l->index >= st->model->dx_from) { /* else it would reach only the data */
            const float *dy = l->is_loss ? NULL : grad_buf(c, s, k + 1);
            l->ops->backward_input(l, ctx, st->param + st->layer_off[l->index],
                                   act_buf(c, s, k), y_buf(c, s, k),
                                   saved_buf(c, s, k), dy, grad_buf(c, s, k), st->mbs);
            skip_gradients(st, c, s, k);
            if (after_kernel(e, err))
                return -1;
        }
        if (fuse_w && weight_layer(e, c, s, k, ctx, last, err))
            return -1;
    }
    return 0;
}

/* B and W of a chunk that recomputes by segments (MP_RC_SEGMENTS), in slab s whose work buffer is
 * held, last segment first: its forward again from the segment's kept input (same inputs and
 * dropout masks, no loss counted), then its B and W, so one segment's buffers are live at a time.
 * A segment's output gradient is complete when it runs: every later segment is done, and skips
 * never leave a residual block. */
static int backward_segments(struct mp_exec *e, const struct mp_action *a, struct mp_slab *s,
                             struct mp_ctx *ctx, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[a->chunk];
    for (int g = c->n_seg - 1; g >= 0; g--) {
        int k0 = c->seg_first[g], k1 = c->seg_first[g + 1];
        forward_layers(e, a->chunk, s, ctx, st->mbs, k0, k1);
        if (backward_layers(e, c, s, ctx, k0, k1, 1, a->mb == e->sched->M - 1, err))
            return -1;
    }
    return 0;
}

/* B of chunk c. With fuse_w (the replica's last micro-batch, W right after B in the list, hooks
 * set), each layer's W follows its B so the reduction of the last layers starts while the first
 * ones are still in backward. A chunk recomputing by segments always runs its W here (the list
 * has it next: mp_sched_w_follows_b). */
static int do_backward_input(struct mp_exec *e, size_t i, struct mp_exec_io *io, int fuse_w,
                             struct mp_err *err)
{
    const struct mp_action *a = &e->acts[i];
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[a->chunk];
    struct mp_slab *s = mp_stage_slab_find(st, a->chunk, a->mb);
    if (!s || !s->f_done)
        return MP_FAIL(err, INTERNAL, "rank %d: B of micro-batch %d before its F", st->rank, a->mb);
    struct mp_ctx ctx;
    make_ctx(e, io, a->mb, labels_buf(c, s), 1, &ctx);
    if (mp_stage_work_get(st, a->chunk, s, err)) /* recomputing: held until W is done */
        return -1;
    if (c->recompute == MP_RC_SEGMENTS) {
        const struct mp_action *w = i + 1 < e->n_acts ? &e->acts[i + 1] : NULL;
        if (!w || w->kind != MP_ACT_W || w->mb != a->mb || w->chunk != a->chunk)
            return MP_FAIL(err, INTERNAL, "rank %d: stage %d recomputes by segments but W of "
                           "micro-batch %d does not follow its B", st->rank, c->v, a->mb);
        if (backward_segments(e, a, s, &ctx, err))
            return -1;
        fuse_w = 1;
    } else {
        if (c->recompute) /* the forward again, same inputs and dropout masks, no loss counted */
            chunk_forward(e, a->chunk, s, &ctx, st->mbs);
        if (backward_layers(e, c, s, &ctx, 0, c->n, fuse_w, 1, err))
            return -1;
    }
    s->b_done = 1;
    s->w_done = fuse_w;
    if (fuse_w)
        mp_stage_work_release(st, s);
    if (c->prev_local >= 0) { /* hand the input gradient to the previous chunk */
        struct mp_chunk *prev = &st->chunk[c->prev_local];
        struct mp_slab *ps = mp_stage_slab_find(st, c->prev_local, a->mb);
        if (!ps)
            return MP_FAIL(err, INTERNAL, "rank %d: no slab for chunk %d", st->rank, c->prev_local);
        memcpy(grad_buf(prev, ps, prev->n), grad_buf(c, s, 0), act_in_bytes(st, c));
    }
    return 0;
}

static int release_or_defer(struct mp_exec *e, int chunk, struct mp_slab *s, struct mp_err *err)
{
    for (int d = 0; d < 2; d++) {
        int done = 1;
        if (mp_xport_test(e->x, &s->send_req[d], &done, err))
            return -1;
        if (!done) {
            e->pending[e->n_pending] = s;
            e->pending_chunk[e->n_pending++] = chunk;
            return 0;
        }
    }
    mp_stage_slab_release(e->st, chunk, s);
    return 0;
}

static int maybe_release(struct mp_exec *e, int chunk, struct mp_slab *s, struct mp_err *err)
{
    const struct mp_chunk *c = &e->st->chunk[chunk];
    int needs_grad_send = c->prev_rank >= 0 && c->prev_local < 0;
    if (!s->w_done || (needs_grad_send && !s->grad_sent))
        return 0;
    return release_or_defer(e, chunk, s, err);
}

static int do_backward_weight(struct mp_exec *e, const struct mp_action *a, struct mp_exec_io *io,
                              struct mp_err *err)
{
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[a->chunk];
    struct mp_slab *s = mp_stage_slab_find(st, a->chunk, a->mb);
    if (!s || !s->b_done)
        return MP_FAIL(err, INTERNAL, "rank %d: W of micro-batch %d before its B", st->rank, a->mb);
    if (!s->w_done) { /* else it ran fused with B */
        struct mp_ctx ctx;
        make_ctx(e, io, a->mb, labels_buf(c, s), 1, &ctx);
        /* Last layer first: layers are independent here, and the last ones' reductions can then
         * start earliest. */
        for (int k = c->n - 1; k >= 0; k--)
            if (weight_layer(e, c, s, k, &ctx, a->mb == e->sched->M - 1, err))
                return -1;
        s->w_done = 1;
        mp_stage_work_release(st, s);
    }
    return maybe_release(e, a->chunk, s, err);
}

static int do_send(struct mp_exec *e, const struct mp_action *a, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[a->chunk];
    struct mp_slab *s = mp_stage_slab_find(st, a->chunk, a->mb);
    if (!s)
        return MP_FAIL(err, INTERNAL, "rank %d: send of micro-batch %d without data", st->rank,
                       a->mb);
    size_t g = e->grad_recv_for[a - e->acts];
    if (a->kind == MP_ACT_SEND_ACT && g != SIZE_MAX && post_grad_recv(e, g, s, err))
        return -1;
    /* Through the stage's slot when it is free: the message is then empty (mp_exec_share) */
    if (a->kind == MP_ACT_SEND_ACT) {
        const float *y = act_buf(c, s, c->n);
        size_t bytes = act_out_bytes(st, c);
        if (mp__exec_hand_put(e, c->v, DIR_ACT, a->mb, y, bytes))
            bytes = 0;
        return mp_xport_isend(e->x, y, bytes, c->next_rank, msg_tag(st, a->mb, c->v, DIR_ACT),
                              &s->send_req[0], err);
    }
    const float *dx = grad_buf(c, s, 0);
    size_t bytes = act_in_bytes(st, c);
    if (mp__exec_hand_put(e, c->v, DIR_GRAD, a->mb, dx, bytes))
        bytes = 0;
    if (mp_xport_isend(e->x, dx, bytes, c->prev_rank, msg_tag(st, a->mb, c->v, DIR_GRAD),
                       &s->send_req[1], err))
        return -1;
    s->grad_sent = 1;
    return maybe_release(e, a->chunk, s, err);
}

/* Releases the slabs whose sends are done; waits for those of chunk `block` (BLOCK_ALL: every
 * chunk's, BLOCK_NONE: none). */
static int drain_pending(struct mp_exec *e, int block, struct mp_err *err)
{
    int kept = 0;
    for (int i = 0; i < e->n_pending; i++) {
        struct mp_slab *s = e->pending[i];
        int all = 1, wait = block == BLOCK_ALL || block == e->pending_chunk[i];
        for (int d = 0; d < 2; d++) {
            int done = 1;
            if (wait && s->send_req[d] >= 0) {
                const struct mp_chunk *c = &e->st->chunk[e->pending_chunk[i]];
                char what[96]; /* names the peer and micro-batch, as receives do */
                snprintf(what, sizeof what, "%s of micro-batch %d to be taken by rank %d",
                         d ? "gradient" : "activation", s->mb, d ? c->prev_rank : c->next_rank);
                if (mp_xport_wait(e->x, &s->send_req[d], what, err))
                    return -1;
            } else if (mp_xport_test(e->x, &s->send_req[d], &done, err)) {
                return -1;
            }
            all &= done;
        }
        if (all) {
            mp_stage_slab_release(e->st, e->pending_chunk[i], s);
        } else {
            e->pending[kept] = s;
            e->pending_chunk[kept++] = e->pending_chunk[i];
        }
    }
    e->n_pending = kept;
    return 0;
}

/* B action i may run its W layer by layer (do_backward_input) when the list does W right after. */
static int fuse_w(const struct mp_exec *e, size_t i)
{
    const struct mp_action *a = &e->acts[i], *w = &e->acts[i + 1];
    return e->layer_done && a->mb == e->sched->M - 1 && i + 1 < e->n_acts &&
           w->kind == MP_ACT_W && w->mb == a->mb && w->chunk == a->chunk;
}

static int run_action(struct mp_exec *e, size_t i, struct mp_exec_io *io, struct mp_err *err)
{
    const struct mp_action *a = &e->acts[i];
    switch (a->kind) {
    case MP_ACT_F: return do_forward(e, a, io, err);
    case MP_ACT_B: return do_backward_input(e, i, io, fuse_w(e, i), err);
    case MP_ACT_W: return do_backward_weight(e, a, io, err);
    case MP_ACT_SEND_ACT:
    case MP_ACT_SEND_GRAD: return do_send(e, a, err);
    case MP_ACT_RECV_ACT:
    case MP_ACT_RECV_GRAD: return do_recv(e, i, err);
    case MP_ACT_STEP: return 0; /* the training loop steps the optimizer after the list */
    default: return MP_FAIL(err, INTERNAL, "unknown action %d", (int)a->kind);
    }
}

int mp_exec_step(struct mp_exec *e, struct mp_exec_io *io, struct mp_err *err)
{
    e->next_post = 0;
    e->ahead = SIZE_MAX;
    for (size_t i = 0; i < e->n_acts; i++) {
        if (post_ahead(e, err) || (e->n_pending && drain_pending(e, BLOCK_NONE, err)))
            return -1;
        const struct mp_action *a = &e->acts[i];
        double t0 = mp_xport_now(), h0 = e->hook_s;
        if (run_action(e, i, io, err))
            return -1;
        double t1 = mp_xport_now();
        int compute = a->kind == MP_ACT_F || a->kind == MP_ACT_B || a->kind == MP_ACT_W;
        if (compute)
            io->busy_s += t1 - t0, io->hook_s += e->hook_s - h0;
        if (e->trace && (compute || t1 - t0 > 1e-5) && e->trace->n < 200000)
            mp_trace_add(e->trace, e->trace_tid, (int)a->kind, a->mb, a->chunk, t0 - e->t_origin,
                         t1 - t0);
    }
    return drain_pending(e, BLOCK_ALL, err);
}

/* One chunk's share of evaluating samples [first, first + batch). */
static int eval_chunk(struct mp_exec *e, int ci, const struct mp_dataset *ds, size_t first,
                      size_t batch, double *loss_sum, size_t *n_correct, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    struct mp_chunk *c = &st->chunk[ci];
    struct mp_slab *s = mp_stage_slab_get(st, ci, 0, err);
    if (!s)
        return -1;
    int tag_base = 1 << 24; /* apart from training tags */
    char what[64]; /* names the peer, as training waits do (DESIGN.md §4) */
    if (c->v == 0) {
        for (size_t i = 0; i < batch; i++) {
            memcpy(act_buf(c, s, 0) + i * ds->sample_len, ds->x + (first + i) * ds->sample_len,
                   ds->sample_len * sizeof(float));
        }
    } else if (c->prev_local >= 0) {
        const struct mp_chunk *p = &st->chunk[c->prev_local];
        memcpy(act_buf(c, s, 0), act_buf(p, mp_stage_slab_find(st, c->prev_local, 0), p->n),
               batch * in_len(st, c) * sizeof(float));
    } else if (snprintf(what, sizeof what, "evaluation activation from rank %d", c->prev_rank) &&
               mp_xport_recv(e->x, act_buf(c, s, 0), batch * in_len(st, c) * sizeof(float),
                             c->prev_rank, tag_base + c->v, what, err)) {
        return -1;
    }
    if (c->v == st->S - 1) {
        size_t L = ds->label_len ? ds->label_len : 1;
        memcpy(labels_buf(c, s), ds->y + first * L, batch * L * sizeof(int32_t));
    }
    struct mp_ctx ctx;
    make_ctx(e, NULL, 0, labels_buf(c, s), 0, &ctx);
    ctx.loss_sum = loss_sum;
    ctx.n_correct = n_correct;
    if (mp_stage_work_get(st, ci, s, err))
        return -1;
    chunk_forward(e, ci, s, &ctx, batch);
    mp_stage_work_release(st, s);
    if (c->next_rank >= 0 && c->next_local < 0) {
        snprintf(what, sizeof what, "evaluation activation to rank %d", c->next_rank);
        return mp_xport_send(e->x, act_buf(c, s, c->n), batch * out_len(st, c) * sizeof(float),
                             c->next_rank, tag_base + c->v + 1, what, err);
    }
    return 0;
}

int mp_exec_eval(struct mp_exec *e, const struct mp_dataset *ds, double *loss_sum,
                 size_t *n_correct, struct mp_err *err)
{
    struct mp_stage *st = e->st;
    int rc = 0;
    for (size_t first = 0; first < ds->n && !rc; first += st->mbs) {
        size_t batch = ds->n - first < st->mbs ? ds->n - first : st->mbs;
        for (int ci = 0; ci < st->V && !rc; ci++)
            rc = eval_chunk(e, ci, ds, first, batch, loss_sum, n_correct, err);
    }
    for (int ci = 0; ci < st->V; ci++) {
        struct mp_slab *s = mp_stage_slab_find(st, ci, 0);
        if (s)
            mp_stage_slab_release(st, ci, s);
    }
    return rc;
}
