/* Generation (mp_gen.h): the model in evaluation mode on one sequence, a forward over a whole
 * window (prompt prefill, and every token once the context is full) and one-token steps through
 * the key/value caches; then greedy or top-k sampling. The layers' own kernels do the work: the
 * per-token ones (embed aside) run on a copy of the layer planned for T = 1, attention through
 * mp_attention_decode; residual blocks add their input as the executor does. */
#include "mp_gen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_attention.h"

static float *floats(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

/* What generation needs of the model; messages name the model file. */
static int check_model(const struct mp_model *m, struct mp_err *err)
{
    if (!m->tokens)
        return MP_FAIL(err, INPUT, "%s: generate needs a token model (`input tokens T`)", m->path);
    if (m->n_layers < 4 || m->layers[1].kind != MP_LAYER_EMBED)
        return MP_FAIL(err, INPUT, "%s: generate needs an embed right after the input", m->path);
    for (int i = 2; i < m->n_layers - 1; i++) {
        const struct mp_layer *l = &m->layers[i];
        if (l->kind == MP_LAYER_ATTENTION && !l->causal)
            return MP_FAIL(err, INPUT,
                           "%s:%d: generate needs causal attention (a later token "
                           "would change earlier ones); this layer has causal=0",
                           m->path, l->line);
        if (l->kind == MP_LAYER_EMBED)
            return MP_FAIL(err, INPUT, "%s:%d: generate supports one embed", m->path, l->line);
    }
    const struct mp_layer *head = &m->layers[m->n_layers - 2];
    if (head->out.ndim != 2 || head->out.d[1] != m->layers[1].vocab)
        return MP_FAIL(err, INPUT,
                       "%s:%d: generate reads next-token logits from the layer before "
                       "the loss, which must give V = %zu features per token",
                       m->path, head->line, m->layers[1].vocab);
    return 0;
}

/* Buffers for the window forward and the one-row steps. */
static int alloc_buffers(struct mp_gen *g, struct mp_err *err)
{
    const struct mp_model *m = g->m;
    int n = m->n_layers;
    size_t scratch = 0, dec = 0;
    g->act = calloc((size_t)n, sizeof *g->act), g->saved = calloc((size_t)n, sizeof *g->saved);
    g->row_act = calloc((size_t)n, sizeof *g->row_act);
    g->row_saved = calloc((size_t)n, sizeof *g->row_saved);
    g->cache = calloc((size_t)n, sizeof *g->cache);
    g->row = calloc((size_t)n, sizeof *g->row);
    g->window = calloc(g->T, sizeof *g->window);
    if (!g->act || !g->saved || !g->row_act || !g->row_saved || !g->cache || !g->row || !g->window)
        return MP_FAIL(err, NOMEM, "out of memory");
    for (int i = 0; i <= g->head; i++) {
        const struct mp_layer *l = &m->layers[i];
        struct mp_layer *r = &g->row[i];
        *r = *l; /* the per-token copy: one row in, one row out */
        r->in.d[0] = r->out.d[0] = 1;
        g->act[i] = floats(mp_layer_out_len(l));
        g->saved[i] = floats(l->saved_per_sample);
        g->row_act[i] = floats(mp_layer_out_len(r));
        g->row_saved[i] = floats(l->saved_per_sample); /* at least what one row needs */
        if (!g->act[i] || !g->saved[i] || !g->row_act[i] || !g->row_saved[i])
            return MP_FAIL(err, NOMEM, "out of memory");
        size_t s = l->scratch_per_sample + l->scratch_fixed;
        scratch = s > scratch ? s : scratch;
        if (l->kind == MP_LAYER_ATTENTION) {
            if (!(g->cache[i] = floats(mp_attention_cache_floats(l))))
                return MP_FAIL(err, NOMEM, "out of memory");
            size_t d = mp_attention_decode_scratch_floats(l);
            dec = d > dec ? d : dec;
        }
    }
    g->scratch = floats(scratch);
    g->scratch_len = scratch;
    g->dec_scratch = floats(dec);
    return g->scratch && g->dec_scratch ? 0 : MP_FAIL(err, NOMEM, "out of memory");
}

int mp_gen_init(struct mp_gen *g, const struct mp_model *m, struct mp_err *err)
{
    memset(g, 0, sizeof *g);
    g->m = m;
    if (check_model(m, err))
        return -1;
    g->T = m->seq_len;
    g->V = m->layers[1].vocab;
    g->head = m->n_layers - 2;
    g->off = calloc((size_t)m->n_layers + 1, sizeof *g->off);
    if (!g->off)
        return MP_FAIL(err, NOMEM, "out of memory");
    for (int i = 0; i < m->n_layers; i++)
        g->off[i + 1] = g->off[i] + mp_layer_n_param(&m->layers[i]);
    g->param = floats(g->off[m->n_layers]);
    if (!g->param)
        return MP_FAIL(err, NOMEM, "out of memory for %zu parameters", g->off[m->n_layers]);
    return alloc_buffers(g, err);
}

void mp_gen_free(struct mp_gen *g)
{
    float **arrays[5] = {g->act, g->saved, g->row_act, g->row_saved, g->cache};
    for (int k = 0; k < 5; k++)
        for (int i = 0; arrays[k] && i < g->m->n_layers; i++)
            free(arrays[k][i]);
    free(g->act), free(g->saved), free(g->row_act), free(g->row_saved), free(g->cache);
    free(g->row), free(g->window), free(g->scratch), free(g->dec_scratch);
    free(g->param), free(g->off);
    memset(g, 0, sizeof *g);
}

void mp_gen_init_params(struct mp_gen *g, uint64_t seed)
{
    for (int i = 0; i < g->m->n_layers; i++)
        mp_layer_init_params(&g->m->layers[i], g->param + g->off[i], seed);
    g->cached = 0;
}

/* Evaluation: no dropout, no labels (the loss layer is never run). */
static struct mp_ctx eval_ctx(const struct mp_gen *g)
{
    struct mp_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.global_batch = 1;
    ctx.scratch = g->scratch;
    ctx.scratch_len = g->scratch_len;
    return ctx;
}

/* y += the input of every residual block layer l ends (innermost first), as the executor adds. */
static void residual(const struct mp_layer *l, float *const *act, float *y, size_t n)
{
    for (int r = 0; r < l->n_res; r++) {
        const float *skip = act[l->res_from[r] - 1]; /* the block's input */
        for (size_t i = 0; i < n; i++)
            y[i] = y[i] + skip[i];
    }
}

/* One forward of window[0 .. n) (padded with id 0 to T: causal layers keep row t independent of
 * later rows), which refills every cache with the window's keys and values. Logits of row n - 1. */
static const float *window_forward(struct mp_gen *g, size_t n)
{
    const struct mp_model *m = g->m;
    struct mp_ctx ctx = eval_ctx(g);
    for (size_t t = 0; t < g->T; t++)
        g->act[0][t] = t < n ? (float)g->window[t] : 0.0f; /* (T) ids */
    for (int i = 1; i <= g->head; i++) {
        const struct mp_layer *l = &m->layers[i];
        l->ops->forward(l, &ctx, g->param + g->off[i], g->act[i - 1], g->act[i], g->saved[i], 1);
        residual(l, g->act, g->act[i], mp_layer_out_len(l));
        if (l->kind == MP_LAYER_ATTENTION)
            mp_attention_cache_fill(l, g->saved[i], n, g->cache[i]);
    }
    g->cached = n;
    return g->act[g->head] + (n - 1) * g->V;
}

/* The embed's row for token id at position pos: E[id] + P[pos], as embed's forward adds them. */
static void embed_row(const struct mp_gen *g, int32_t id, size_t pos, float *y)
{
    const struct mp_layer *l = &g->m->layers[1];
    struct mp_tensor t[MP_LAYER_MAX_TENSORS];
    int nt = mp_layer_tensors(l, t);
    size_t C = l->n_out;
    const float *E = g->param + g->off[1] + t[0].off + (size_t)id * C; /* (C) */
    if (nt < 2) {
        memcpy(y, E, C * sizeof(float));
        return;
    }
    const float *P = g->param + g->off[1] + t[1].off + pos * C; /* (C) */
    for (size_t c = 0; c < C; c++)
        y[c] = E[c] + P[c];
}

/* One new token at window position pos through the caches; logits of it. */
static const float *decode(struct mp_gen *g, int32_t id, size_t pos)
{
    const struct mp_model *m = g->m;
    struct mp_ctx ctx = eval_ctx(g);
    embed_row(g, id, pos, g->row_act[1]);
    for (int i = 2; i <= g->head; i++) {
        const struct mp_layer *l = &m->layers[i];
        const float *p = g->param + g->off[i], *x = g->row_act[i - 1];
        float *y = g->row_act[i];
        if (l->kind == MP_LAYER_ATTENTION)
            mp_attention_decode(l, p, x, pos, g->cache[i], g->dec_scratch, y);
        else
            l->ops->forward(&g->row[i], &ctx, p, x, y, g->row_saved[i], 1);
        residual(l, g->row_act, y, mp_layer_out_len(&g->row[i]));
    }
    g->window[pos] = id;
    g->cached = pos + 1;
    return g->row_act[g->head];
}

const float *mp_gen_logits(struct mp_gen *g, const int32_t *seq, size_t n, int use_cache)
{
    size_t w0 = n > g->T ? n - g->T : 0, len = n - w0;
    /* The caches serve if the tokens they hold are this window's first ones: positions count
     * from the window's start, so a moved window (past the context) starts over, unless its
     * tokens happen to be the very same. */
    int valid = use_cache && g->cached <= len;
    for (size_t t = 0; valid && t < g->cached; t++)
        valid = g->window[t] == seq[w0 + t];
    if (!valid)
        g->cached = 0;
    g->w0 = w0;
    if (g->cached == len) /* nothing new: the logits need the last token run again */
        g->cached = len - 1;
    if (!use_cache || (g->cached == 0 && len > 1)) {
        memcpy(g->window, seq + w0, len * sizeof *seq);
        return window_forward(g, len);
    }
    const float *logits = NULL;
    for (size_t t = g->cached; t < len; t++)
        logits = decode(g, seq[w0 + t], t);
    return logits;
}

struct cand {
    float v;
    int32_t id;
};

/* Largest first, then lower id first: a total order, so the kept set never depends on qsort. */
static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int32_t mp_gen_pick(const float *logits, size_t V, double temperature, size_t top_k,
                    struct mp_rng *rng)
{
    if (temperature <= 0) {
        size_t best = 0;
        for (size_t j = 1; j < V; j++)
            if (logits[j] > logits[best])
                best = j;
        return (int32_t)best;
    }
    struct cand *c = malloc(V * sizeof *c);
    if (!c) /* no memory for sampling: fall back to the argmax rather than fail mid-text */
        return mp_gen_pick(logits, V, 0, 0, rng);
    for (size_t j = 0; j < V; j++)
        c[j] = (struct cand){logits[j], (int32_t)j};
    qsort(c, V, sizeof *c, cand_cmp);
    size_t keep = top_k && top_k < V ? top_k : V;
    while (keep < V && c[keep].v == c[keep - 1].v) /* ties with the k-th stay in */
        keep++;
    double sum = 0, u = (double)(mp_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    for (size_t j = 0; j < keep; j++)
        sum += exp(((double)c[j].v - (double)c[0].v) / temperature);
    double target = u * sum, acc = 0;
    int32_t id = c[keep - 1].id;
    for (size_t j = 0; j < keep; j++) {
        acc += exp(((double)c[j].v - (double)c[0].v) / temperature);
        if (target < acc) {
            id = c[j].id;
            break;
        }
    }
    free(c);
    return id;
}
