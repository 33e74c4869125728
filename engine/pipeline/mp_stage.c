/* A rank's chunks, parameter arena and activation slab pools (see mp_stage.h). Allocation happens
 * here and only here; the executor asks for slabs and hands them back. */
#include "mp_stage.h"

#include <stdlib.h>
#include <string.h>

#include "mp_mem.h"

#define ALIGN_FLOATS 16 /* 64 bytes */

static size_t round_up(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

/* n floats, zeroed, in huge pages from 2 MiB up (mp_mem.h). */
static float *alloc_floats(size_t n)
{
    size_t bytes = round_up(n ? n : 1) * sizeof(float);
    float *p = mp_mem_alloc(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

static size_t put(size_t *off, size_t floats)
{
    size_t at = *off;
    *off = round_up(*off + floats);
    return at;
}

/* MP_RC_SEGMENTS' segments of chunk c: each residual block alone (a unit whose last layer ends a
 * residual body), the top-level layers between blocks together. */
static void chunk_segments(struct mp_chunk *c, const struct mp_model *m)
{
    int open_run = 0; /* a run of top-level layers is being extended */
    c->n_seg = 0;
    for (int k = 0; k < c->n;) {
        int e = k;
        while (e + 1 < c->n && m->layers[c->first + e + 1].unit == m->layers[c->first + k].unit)
            e++;
        int block = m->layers[c->first + e].n_res > 0;
        if (block || !open_run)
            c->seg_first[c->n_seg++] = k;
        open_run = !block;
        k = e + 1;
    }
    c->seg_first[c->n_seg] = c->n;
}

/* Inner buffers of layers [k0, k1) from *off: outputs and their gradients of layers k0 .. k1 - 2
 * (the inputs of k0 + 1 .. k1 - 1), what each layer saves, a residual end's raw output. */
static void inner_offsets(struct mp_chunk *c, const struct mp_model *m, size_t mbs, int k0, int k1,
                          size_t *off)
{
    for (int k = k0 + 1; k < k1; k++) {
        size_t len = mbs * mp_layer_out_len(&m->layers[c->first + k - 1]);
        c->act_off[k] = put(off, len);
        c->grad_off[k] = put(off, len);
    }
    for (int k = k0; k < k1; k++) {
        const struct mp_layer *l = &m->layers[c->first + k];
        c->saved_off[k] = put(off, mbs * l->saved_per_sample);
        c->raw_off[k] = l->n_res && l->ops->y_in_backward ? put(off, mbs * mp_layer_out_len(l))
                                                          : SIZE_MAX;
    }
}

/* Offsets of every buffer of one micro-batch: first the light part (the chunk's input and output,
 * their gradients, the labels: what crosses to other stages and must outlive a recomputing chunk's
 * work buffer; with MP_RC_SEGMENTS also each segment's input), then the rest. Under
 * MP_RC_SEGMENTS the rest is the gradients at segment boundaries and one region every segment's
 * inner buffers share, as large as the largest segment needs. */
static void chunk_offsets(struct mp_chunk *c, const struct mp_model *m, size_t mbs)
{
    const struct mp_layer *in = &m->layers[c->first], *out = &m->layers[c->last];
    size_t off = 0, label_len = m->label_len ? m->label_len : 1;
    int segs = c->recompute == MP_RC_SEGMENTS;
    c->act_off[0] = put(&off, mbs * mp_layer_in_len(in));
    c->grad_off[0] = put(&off, mbs * mp_layer_in_len(in));
    c->act_off[c->n] = put(&off, mbs * mp_layer_out_len(out));
    c->grad_off[c->n] = put(&off, mbs * mp_layer_out_len(out));
    c->labels_off = put(&off, mbs * label_len);
    if (segs) {
        chunk_segments(c, m);
        for (int g = 1; g < c->n_seg; g++) {
            int k = c->seg_first[g];
            c->act_off[k] = put(&off, mbs * mp_layer_out_len(&m->layers[c->first + k - 1]));
        }
    }
    size_t light = off;
    if (!segs) {
        inner_offsets(c, m, mbs, 0, c->n, &off);
    } else {
        for (int g = 1; g < c->n_seg; g++) {
            int k = c->seg_first[g];
            c->grad_off[k] = put(&off, mbs * mp_layer_out_len(&m->layers[c->first + k - 1]));
        }
        size_t shared = off, end = off;
        for (int g = 0; g < c->n_seg; g++) {
            off = shared;
            inner_offsets(c, m, mbs, c->seg_first[g], c->seg_first[g + 1], &off);
            end = off > end ? off : end;
        }
        off = end;
    }
    c->slab_floats = off;
    c->light_floats = c->recompute ? light : off;
}

static int chunk_layout(struct mp_chunk *c, const struct mp_model *m, size_t mbs, struct mp_err *err)
{
    free(c->act_off), free(c->grad_off), free(c->saved_off), free(c->raw_off);
    free(c->skip_first), free(c->skip), free(c->seg_first);
    c->seg_first = calloc((size_t)c->n + 1, sizeof(int));
    c->act_off = calloc((size_t)c->n + 1, sizeof(size_t));
    c->grad_off = calloc((size_t)c->n + 1, sizeof(size_t));
    c->saved_off = calloc((size_t)c->n, sizeof(size_t));
    c->raw_off = calloc((size_t)c->n, sizeof(size_t));
    c->skip_first = calloc((size_t)c->n + 1, sizeof(int));
    c->skip = calloc((size_t)c->n * 4 + 1, sizeof(int));
    if (!c->act_off || !c->grad_off || !c->saved_off || !c->raw_off || !c->skip_first || !c->skip ||
        !c->seg_first)
        return MP_FAIL(err, NOMEM, "out of memory laying out stage %d", c->v);
    chunk_offsets(c, m, mbs);
    /* Residual blocks never straddle chunks: a stage boundary falls only between units. */
    int n_skip = 0;
    for (int k = 0; k < c->n; k++) {
        c->skip_first[k] = n_skip;
        for (int e = k; e < c->n; e++) {
            const struct mp_layer *end = &m->layers[c->first + e];
            for (int r = 0; r < end->n_res; r++)
                if (end->res_from[r] == c->first + k)
                    c->skip[n_skip++] = e;
        }
    }
    c->skip_first[c->n] = n_skip;
    return 0;
}

void mp_stage_slab_floats(const struct mp_model *m, int first, int last, size_t mbs, enum mp_rc rc,
                          size_t *light, size_t *work)
{
    struct mp_chunk c = {.first = first, .last = last, .n = last - first + 1, .recompute = rc};
    size_t *off = malloc(sizeof(size_t) * 4 * (size_t)(c.n + 1));
    c.seg_first = malloc(sizeof(int) * (size_t)(c.n + 1));
    if (!off || !c.seg_first) {
        *light = *work = SIZE_MAX;
        free(off), free(c.seg_first);
        return;
    }
    c.act_off = off, c.grad_off = off + c.n + 1, c.saved_off = off + 2 * (c.n + 1);
    c.raw_off = off + 3 * (c.n + 1);
    chunk_offsets(&c, m, mbs);
    *light = c.light_floats;
    *work = c.slab_floats - c.light_floats;
    free(off), free(c.seg_first);
}

int mp_stage_set_recompute(struct mp_stage *st, int chunk, enum mp_rc rc, struct mp_err *err)
{
    struct mp_chunk *c = &st->chunk[chunk];
    if (c->n_slabs || st->n_work)
        return MP_FAIL(err, INTERNAL, "recomputation set on stage %d after its first slab", c->v);
    c->recompute = rc;
    if (chunk_layout(c, st->model, st->mbs, err))
        return -1;
    if (c->slab_floats - c->light_floats > st->work_floats)
        st->work_floats = c->slab_floats - c->light_floats;
    return 0;
}

int mp_stage_work_get(struct mp_stage *st, int chunk, struct mp_slab *s, struct mp_err *err)
{
    struct mp_chunk *c = &st->chunk[chunk];
    if (!c->recompute || s->work)
        return 0;
    int w = 0;
    while (w < st->n_work && st->work_used[w])
        w++;
    if (w == st->n_work) {
        if (w == st->V * (st->M + 1))
            return MP_FAIL(err, INTERNAL, "stage %d holds more work buffers than micro-batches",
                           c->v);
        if (!(st->work_pool[w] = alloc_floats(st->work_floats)))
            return MP_FAIL(err, NOMEM, "out of memory for activations of stage %d", c->v);
        st->n_work++;
    }
    st->work_used[w] = 1;
    s->work = st->work_pool[w];
    st->act_bytes_now += st->work_floats * sizeof(float);
    if (st->act_bytes_now > st->act_bytes_peak)
        st->act_bytes_peak = st->act_bytes_now;
    return 0;
}

void mp_stage_work_release(struct mp_stage *st, struct mp_slab *s)
{
    if (!s->work)
        return;
    for (int w = 0; w < st->n_work; w++)
        if (st->work_pool[w] == s->work)
            st->work_used[w] = 0;
    s->work = NULL;
    st->act_bytes_now -= st->work_floats * sizeof(float);
}

/* Optimizer state for n parameters (state_slots floats each; a placeholder for SGD): calloc'd,
 * zero pages the kernel maps only when written, so a state that --zero 1 shards away before the
 * first step never costs memory; advised into huge pages before that first write. */
static float *state_alloc(const struct mp_stage *st, size_t n)
{
    size_t floats = n * (size_t)(st->state_slots ? st->state_slots : 1);
    float *s = calloc(floats + 1, sizeof(float));
    mp_mem_advise(s, floats * sizeof(float));
    return s;
}

static int arena_init(struct mp_stage *st, struct mp_err *err)
{
    const struct mp_model *m = st->model;
    st->layer_off = malloc((size_t)m->n_layers * sizeof(size_t));
    if (!st->layer_off)
        return MP_FAIL(err, NOMEM, "out of memory");
    size_t off = 0, scratch = 0;
    for (int i = 0; i < m->n_layers; i++)
        st->layer_off[i] = SIZE_MAX;
    for (int c = 0; c < st->V; c++) {
        for (int i = st->chunk[c].first; i <= st->chunk[c].last; i++) {
            const struct mp_layer *l = &m->layers[i];
            st->layer_off[i] = off;
            off = round_up(off + mp_layer_n_param(l));
            size_t s = l->scratch_per_sample * st->mbs + l->scratch_fixed;
            if (s > scratch)
                scratch = s;
        }
    }
    st->n_param = off;
    st->param = alloc_floats(off);
    st->grad = alloc_floats(off);
    st->state = state_alloc(st, off);
    st->state_lo = 0;
    st->state_len = off;
    st->scratch_len = scratch;
    st->scratch = alloc_floats(scratch);
    if (!st->param || !st->grad || !st->state || !st->scratch)
        return MP_FAIL(err, NOMEM, "out of memory for %zu parameters", off);
    return 0;
}

/* Where chunk c's neighbours live: their ranks, and their local chunk when they are here. */
static void chunk_neighbours(const struct mp_stage *st, struct mp_chunk *ch)
{
    int u[2] = {ch->v - 1, ch->v + 1}, rank[2], local[2];
    for (int d = 0; d < 2; d++) {
        rank[d] = local[d] = -1;
        if (u[d] < 0 || u[d] >= st->S)
            continue;
        rank[d] = mp_vstage_rank(st->place, u[d], st->P);
        if (rank[d] == st->rank)
            local[d] = mp_vstage_chunk(u[d], st->P);
    }
    ch->prev_rank = rank[0], ch->next_rank = rank[1];
    ch->prev_local = local[0], ch->next_local = local[1];
}

size_t mp_stage_recv_ahead_floats(const struct mp_model *m, const int *bounds,
                                  enum mp_vplace place, int rank, int P, int V, size_t mbs)
{
    size_t floats = 0;
    for (int c = 0; c < V; c++) {
        int v = mp_vstage_of(place, rank, c, P);
        size_t in = mbs * mp_layer_in_len(&m->layers[bounds[v]]);
        if (v > 0 && mp_vstage_rank(place, v - 1, P) != rank && in > floats)
            floats = in;
    }
    return floats;
}

size_t mp_stage_handoff_slot_bytes(size_t msg_bytes)
{
    return 64 + (msg_bytes + 63) / 64 * 64;
}

/* Bytes of virtual stage v's message in direction dir. */
static size_t handoff_msg_bytes(const struct mp_model *m, const int *bounds, int v, int dir,
                                size_t mbs)
{
    const struct mp_layer *l = dir == MP_HAND_ACT ? &m->layers[bounds[v + 1] - 1]
                                                  : &m->layers[bounds[v]];
    return mbs * (dir == MP_HAND_ACT ? mp_layer_out_len(l) : mp_layer_in_len(l)) * sizeof(float);
}

size_t mp_stage_handoff_region_bytes(const struct mp_model *m, const int *bounds, int v, int dir,
                                     size_t mbs)
{
    return MP_HANDOFF_SLOTS *
           mp_stage_handoff_slot_bytes(handoff_msg_bytes(m, bounds, v, dir, mbs));
}

int mp_stage_handoff_to(enum mp_vplace place, int v, int dir, int P, int V)
{
    int w = dir == MP_HAND_ACT ? v + 1 : v - 1;
    return w >= 0 && w < P * V ? mp_vstage_rank(place, w, P) : mp_vstage_rank(place, v, P);
}

size_t mp_stage_handoff_bytes(const struct mp_model *m, const int *bounds, enum mp_vplace place,
                              int rank, int P, int V, size_t mbs, size_t *at)
{
    size_t bytes = 0;
    for (int c = 0; c < V; c++) {
        int v = mp_vstage_of(place, rank, c, P);
        for (int dir = 0; dir < 2; dir++)
            if (mp_stage_handoff_to(place, v, dir, P, V) != rank) {
                if (at)
                    at[v * 2 + dir] = bytes + 1;
                bytes += mp_stage_handoff_region_bytes(m, bounds, v, dir, mbs);
            }
    }
    return bytes;
}

size_t mp_stage_handoff_in_bytes(const struct mp_model *m, const int *bounds,
                                 enum mp_vplace place, int rank, int P, int V, size_t mbs)
{
    size_t bytes = 0;
    for (int v = 0; v < P * V; v++)
        for (int dir = 0; dir < 2; dir++)
            if (mp_vstage_rank(place, v, P) != rank &&
                mp_stage_handoff_to(place, v, dir, P, V) == rank)
                bytes += mp_stage_handoff_region_bytes(m, bounds, v, dir, mbs);
    return bytes;
}

static int recv_ahead_init(struct mp_stage *st, const int *bounds, struct mp_err *err)
{
    size_t floats = mp_stage_recv_ahead_floats(st->model, bounds, st->place, st->rank, st->P,
                                               st->V, st->mbs);
    if (!floats)
        return 0;
    if (!(st->recv_ahead = alloc_floats(floats)))
        return MP_FAIL(err, NOMEM, "out of memory for the activation receive buffer");
    st->act_bytes_now = st->act_bytes_peak = floats * sizeof(float);
    return 0;
}

int mp_stage_init(struct mp_stage *st, const struct mp_model *m, const int *bounds, int rank,
                  int P, int V, enum mp_vplace place, int M, size_t mbs, int state_slots,
                  struct mp_err *err)
{
    memset(st, 0, sizeof *st);
    st->model = m;
    st->rank = rank;
    st->P = P;
    st->V = V;
    st->S = P * V;
    st->place = place;
    st->M = M;
    st->mbs = mbs;
    st->state_slots = state_slots;
    if (place == MP_VPLACE_VEE && V != 2)
        return MP_FAIL(err, USAGE, "a V placement has 2 chunks per rank, not %d", V);
    st->chunk = calloc((size_t)V, sizeof *st->chunk);
    if (!st->chunk)
        return MP_FAIL(err, NOMEM, "out of memory");
    for (int c = 0; c < V; c++) {
        struct mp_chunk *ch = &st->chunk[c];
        ch->v = mp_vstage_of(place, rank, c, P);
        chunk_neighbours(st, ch);
        ch->first = bounds[ch->v];
        ch->last = bounds[ch->v + 1] - 1;
        ch->n = ch->last - ch->first + 1;
        if (ch->n < 1)
            return MP_FAIL(err, USAGE, "stage %d has no layers", ch->v);
        if (m->layers[ch->first].unit == m->layers[ch->first - 1].unit)
            return MP_FAIL(err, USAGE, "stage %d would start at layer %d (line %d), inside a "
                           "residual block: a stage boundary falls only between top-level units",
                           ch->v, ch->first, m->layers[ch->first].line);
        ch->by_mb = calloc((size_t)M, sizeof *ch->by_mb);
        ch->slabs = calloc((size_t)M, sizeof *ch->slabs);
        if (!ch->by_mb || !ch->slabs)
            return MP_FAIL(err, NOMEM, "out of memory");
        if (chunk_layout(ch, m, mbs, err))
            return -1;
    }
    if (recv_ahead_init(st, bounds, err))
        return -1;
    st->work_pool = calloc((size_t)V * ((size_t)M + 1), sizeof *st->work_pool);
    st->work_used = calloc((size_t)V * ((size_t)M + 1), sizeof *st->work_used);
    if (!st->work_pool || !st->work_used)
        return MP_FAIL(err, NOMEM, "out of memory");
    return arena_init(st, err);
}

int mp_stage_shard_state(struct mp_stage *st, size_t lo, size_t hi, struct mp_err *err)
{
    float *s = state_alloc(st, hi - lo);
    if (!s)
        return MP_FAIL(err, NOMEM, "out of memory for optimizer state");
    free(st->state);
    st->state = s;
    st->state_lo = lo;
    st->state_len = hi - lo;
    return 0;
}

int mp_stage_prefault(struct mp_stage *st, const int *slabs, struct mp_err *err)
{
    /* The first Adam step of models/mlp.mp took 192 ms instead of 2 ms mapping 30 MB of calloc'd
     * pages (about 25 us a page on this VM), and its first forward 38 ms instead of 10 allocating
     * its slab: 8% of a 60-step run, counted as training time and in no prediction. */
    memset(st->state, 0, st->state_len * (size_t)st->state_slots * sizeof(float));
    for (int c = 0; c < st->V; c++) {
        struct mp_chunk *ch = &st->chunk[c];
        int want = slabs && slabs[c] > 1 ? slabs[c] : 1;
        if (want > st->M)
            want = st->M;
        for (int i = ch->n_slabs; i < want; i++) {
            /* zbv's 2-stage plan of mlp.mp holds two micro-batches of its first chunk at once: the
             * second slab, mapped in the first step, cost it 7 ms */
            if (!(ch->slabs[i].mem = alloc_floats(ch->light_floats)))
                return MP_FAIL(err, NOMEM, "out of memory for activations of stage %d", ch->v);
            ch->slabs[i].mb = -1;
            ch->n_slabs = i + 1;
        }
    }
    return 0;
}

void mp_stage_free(struct mp_stage *st)
{
    for (int c = 0; st->chunk && c < st->V; c++) {
        struct mp_chunk *ch = &st->chunk[c];
        for (int i = 0; i < ch->n_slabs; i++)
            free(ch->slabs[i].mem);
        free(ch->slabs);
        free(ch->by_mb);
        free(ch->act_off);
        free(ch->grad_off);
        free(ch->saved_off);
        free(ch->raw_off);
        free(ch->skip_first);
        free(ch->skip);
        free(ch->seg_first);
    }
    for (int i = 0; i < st->n_work; i++)
        free(st->work_pool[i]);
    free(st->work_pool);
    free(st->work_used);
    free(st->recv_ahead);
    free(st->chunk);
    free(st->layer_off);
    free(st->param);
    free(st->grad);
    free(st->state);
    free(st->scratch);
    memset(st, 0, sizeof *st);
}

struct mp_slab *mp_stage_slab_find(const struct mp_stage *st, int chunk, int mb)
{
    return st->chunk[chunk].by_mb[mb];
}

/* A slab of the chunk's pool that no micro-batch holds, or NULL. */
static struct mp_slab *free_slab(const struct mp_chunk *ch)
{
    for (int i = 0; i < ch->n_slabs; i++)
        if (ch->slabs[i].mb < 0)
            return &ch->slabs[i];
    return NULL;
}

struct mp_slab *mp_stage_slab_get(struct mp_stage *st, int chunk, int mb, struct mp_err *err)
{
    struct mp_chunk *ch = &st->chunk[chunk];
    if (ch->by_mb[mb])
        return ch->by_mb[mb];
    struct mp_slab *s = free_slab(ch);
    if (!s) {
        s = &ch->slabs[ch->n_slabs];
        s->mem = alloc_floats(ch->light_floats);
        if (!s->mem) {
            MP_FAIL(err, NOMEM, "out of memory for activations of stage %d", ch->v);
            return NULL;
        }
        ch->n_slabs++;
    }
    s->mb = mb;
    s->work = NULL;
    s->send_req[0] = s->send_req[1] = -1;
    s->f_done = s->b_done = s->w_done = s->grad_sent = 0;
    ch->by_mb[mb] = s;
    st->act_bytes_now += ch->light_floats * sizeof(float);
    if (st->act_bytes_now > st->act_bytes_peak)
        st->act_bytes_peak = st->act_bytes_now;
    return s;
}

int mp_stage_slab_ready(const struct mp_stage *st, int chunk, int mb)
{
    const struct mp_chunk *ch = &st->chunk[chunk];
    return ch->by_mb[mb] || free_slab(ch);
}

void mp_stage_slab_release(struct mp_stage *st, int chunk, struct mp_slab *s)
{
    struct mp_chunk *ch = &st->chunk[chunk];
    mp_stage_work_release(st, s);
    ch->by_mb[s->mb] = NULL;
    s->mb = -1;
    st->act_bytes_now -= ch->light_floats * sizeof(float);
}
