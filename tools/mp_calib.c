/* Calibration (mp_calib.h): measures this machine's GEMM shapes, each layer pass's element-wise
 * part and the optimizer step, keeps them in the rates cache (mp_calib_cache.c), and hands the
 * planner a table of per-layer times per micro-batch size. It only times kernels the training
 * would run, the way it runs them; it never decides a kernel or a path (DESIGN.md §6: those
 * follow the shape). */
#include "mp_calib.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mp_bench.h"
#include "mp_calib_cache.h"
#include "mp_gemm.h"
#include "mp_optim.h"

double mp__calib_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A GEMM above this many flops is timed on a slice (below): ~10 ms at this machine's rates. */
#define SLICE_FLOPS 1.0e9
#define SLICE_MIN 1024 /* the sliced dimension keeps at least this many: past BLIS's cache
                          blocks (MC, KC, NC are at most a few thousand), time is linear in it */

/* The operands of the GEMMs being timed, grown as shapes need and kept across shapes: fresh
 * buffers for each of 65 shapes spent a fifth of a calibration in page faults. */
static struct operand {
    float *p;
    size_t n;
} ops[3];

static float *operand(struct operand *o, size_t n)
{
    if (n > o->n) {
        float *p = realloc(o->p, n * sizeof *p);
        if (!p)
            return NULL;
        for (size_t i = o->n; i < n; i++) /* small, varied values: never denormal or zero */
            p[i] = 1e-2f * ((float)((i * 2654435761u) % 1000u) * 1e-3f - 0.5f);
        o->p = p, o->n = n;
    }
    return o->p;
}

static void operands_free(void)
{
    for (int i = 0; i < 3; i++)
        free(ops[i].p), ops[i].p = NULL, ops[i].n = 0;
}

/* Median seconds of one call of c through mp_gemm (the path training takes) over at least one call
 * and 3 ms, at most 50 calls; after two warm-up calls when `warm_up` (the shape's first round).
 * fixed: with B kept packed, as a step's micro-batches after the first find a weight
 * (mp_gemm_reuse_begin): one call packs it, the timed ones reuse it, each finding the packed copy
 * out of the caches (mp_gemm_reuse_evict) as a step's later micro-batch does: since its last use
 * the rest of the step went through them. Timed hot, models/mlp.mp's forward and input-grad
 * passes at 64 samples ran 8-12% over their price on 1 and 2 ranks alike (the weight-grads, with
 * no weight operand, on it); the 1-rank step at 4 micro-batches was priced 4,135 samples/s and
 * ran 3,840, tools/demo's 2-stage zbv 6,860 and ran 6,075-6,183. Flushed: 3,751 and 6,330, and
 * every model of tools/plan-vs-measured within 5% on 1 rank (EPYC Zen4 VM). */
static double time_call(const struct mp_gemm_call *c, int warm_up, int fixed, struct mp_err *err)
{
    size_t rows_a = c->trans_a ? c->k : c->m, rows_b = c->trans_b ? c->n : c->k;
    float *a = operand(&ops[0], rows_a * c->lda + 1), *b = operand(&ops[1], rows_b * c->ldb + 1);
    float *cc = operand(&ops[2], c->m * c->ldc + 1);
    double t[50];
    size_t n = 0;
    if (!a || !b || !cc)
        return MP_FAIL(err, NOMEM, "out of memory timing a %zux%zux%zu GEMM", c->m, c->n, c->k);
    float beta = c->beta_zero ? 0.0f : 1.0f;
    if (fixed)
        mp_gemm_reuse_begin(b, rows_b * c->ldb, mp_gemm_reuse_room(rows_b * c->ldb));
    for (int w = 0; (warm_up && w < 2) || (fixed && w < 1); w++)
        mp_gemm(c->trans_a, c->trans_b, c->m, c->n, c->k, 1.0f, a, c->lda, b, c->ldb, beta, cc,
                c->ldc);
    double start = mp__calib_now();
    while (n < 50 && (n < 1 || mp__calib_now() - start < 0.003)) {
        if (fixed)
            mp_gemm_reuse_evict();
        double t0 = mp__calib_now();
        mp_gemm(c->trans_a, c->trans_b, c->m, c->n, c->k, 1.0f, a, c->lda, b, c->ldb, beta, cc,
                c->ldc);
        t[n++] = mp__calib_now() - t0;
    }
    mp_gemm_reuse_end();
    return mp_median(t, n);
}

/* Seconds of one call of the shape. A large one (a 300 M-parameter model's 8192 x 1024 x 4096
 * takes half a second, and five calls of each of 50 shapes took minutes) is timed with its
 * largest dimension cut to SLICE_FLOPS worth, but never below SLICE_MIN, and scaled back by the
 * cut: BLIS's loops around its micro-kernel make the time linear in m, n and k once each spans
 * its cache blocks, and the strides stay the shape's own, so memory is walked as training walks
 * it. (Sliced against whole on the shapes of models/gpt*.mp: within a few per cent.) */
static double time_gemm(const struct mp_gemm_call *c, int warm_up, int fixed, struct mp_err *err)
{
    double flops = 2.0 * (double)c->m * (double)c->n * (double)c->k;
    struct mp_gemm_call s = *c;
    size_t *d = &s.m;
    if (s.n > *d)
        d = &s.n;
    if (s.k > *d)
        d = &s.k;
    size_t full = *d, cut = (size_t)((double)full * SLICE_FLOPS / flops);
    if (flops <= SLICE_FLOPS || full <= SLICE_MIN)
        return time_call(c, warm_up, fixed, err);
    *d = cut < SLICE_MIN ? SLICE_MIN : cut;
    double sec = time_call(&s, warm_up, fixed, err);
    return sec < 0 ? sec : sec * (double)full / (double)*d;
}

/* The recorded calls of pass p into e's call counts; a shape the cache lacks is added untimed (NaN
 * seconds) for time_pending. */
static int count_calls(struct mp_calib_rates *r, const struct mp_gemm_rec *rec,
                       struct mp_calib_pass *e, int p, struct mp_err *err)
{
    for (size_t i = 0; i < rec->n; i++) {
        struct mp_calib_shape *s = mp__calib_find(r, &rec->calls[i]);
        if (!s) {
            if (!(s = mp__calib_add(r, &rec->calls[i], NAN)))
                return MP_FAIL(err, NOMEM, "out of memory");
            s->used = 2, r->dirty = 1;
        }
        if (mp__calib_add_call(e, p, (size_t)(s - r->v), 1))
            return MP_FAIL(err, NOMEM, "out of memory");
    }
    return 0;
}

#define ROUNDS 3 /* of time_pending */

/* Times every shape added untimed, in ROUNDS rounds over all of them: a shape's seconds are the
 * median of its rounds, so a burst of noise (another process, a VM's stolen time) spoils one
 * round of a few shapes, not a shape. Timed one after another, each shape's 10 ms could fall
 * wholly inside one: three caches of this VM disagreed 2-4x on single shapes (128x1024x784
 * transposed: 143, 136 and 31 GFLOPS), and a cache keeps what it was told. A shape whose B is a
 * weight (b_fixed) is timed both ways in each round: packing B, and with B kept packed. */
static int time_pending(struct mp_calib_rates *r, struct mp_err *err)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < r->n; i++)
        n += isnan(r->v[i].s) || isnan(r->v[i].s_fixed);
    if (n == 0)
        return 0;
    size_t *at = malloc(n * sizeof *at);
    double *t = malloc(2 * n * ROUNDS * sizeof *t);
    if (!at || !t) {
        free(at), free(t);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (size_t i = 0; i < r->n; i++)
        if (isnan(r->v[i].s) || isnan(r->v[i].s_fixed))
            at[k++] = i;
    int rc = 0;
    for (int round = 0; round < ROUNDS && !rc; round++)
        for (size_t j = 0; j < n && !rc; j++)
            for (int fixed = 0; fixed <= r->v[at[j]].c.b_fixed && !rc; fixed++) {
                double sec = time_gemm(&r->v[at[j]].c, round == 0, fixed, err);
                if (sec < 0)
                    rc = -1;
                t[(j * 2 + (size_t)fixed) * ROUNDS + (size_t)round] = sec;
            }
    for (size_t j = 0; j < n && !rc; j++) {
        struct mp_calib_shape *s = &r->v[at[j]];
        s->s = mp_median(t + j * 2 * ROUNDS, ROUNDS);
        s->s_fixed = s->c.b_fixed ? mp_median(t + (j * 2 + 1) * ROUNDS, ROUNDS) : s->s;
    }
    free(at), free(t);
    return rc;
}

/* The GEMM seconds of pass p from e's call counts; *pack: the part of them that packs weights
 * (what a call whose B is a weight saves when the weight is kept packed). */
static double gemm_seconds(struct mp_calib_rates *r, const struct mp_calib_pass *e, int p,
                           double *pack)
{
    double s = 0;
    *pack = 0;
    for (size_t i = 0; i < e->n_calls; i++) {
        struct mp_calib_shape *sh = &r->v[e->calls[i].shape];
        if (e->calls[i].pass != p)
            continue;
        s += (double)e->calls[i].n * sh->s;
        *pack += (double)e->calls[i].n * fmax(0.0, sh->s - sh->s_fixed);
        sh->used = sh->used ? sh->used : 1;
    }
    return s;
}

/* Pass p of layer l on mb samples, run once with its GEMMs recorded (into e's call counts) and
 * skipped, then timed in place the same way: its element-wise part, the median of at least 3
 * calls and 2 ms. */
static int time_pass(struct mp_calib_rates *r, const struct mp_layer *l, const struct mp_ctx *ctx,
                     struct mp_bench_bufs *b, int p, size_t mb, struct mp_gemm_rec *rec,
                     struct mp_calib_pass *e, struct mp_err *err)
{
    double t[50];
    size_t n = 0;
    rec->n = rec->dropped = 0;
    rec->skip = 1;
    mp_gemm_record(rec);
    /* A scope over the layer's parameters that keeps nothing: the recorder marks the calls whose
     * B is a weight (b_fixed), which a step with several micro-batches packs once. */
    mp_gemm_reuse_begin(b->param, mp_layer_n_param(l), 0);
    mp_bench_call(l, ctx, b, p, mb);
    mp_gemm_reuse_end();
    size_t calls = rec->n, dropped = rec->dropped;
    double start = mp__calib_now();
    while (n < 50 && (n < 3 || mp__calib_now() - start < 0.002)) {
        rec->n = calls; /* the first call's record stands for all: same shapes */
        double t0 = mp__calib_now();
        mp_bench_call(l, ctx, b, p, mb);
        t[n++] = mp__calib_now() - t0;
    }
    mp_gemm_record(NULL);
    rec->n = calls;
    if (dropped)
        return MP_FAIL(err, INTERNAL, "calibration: layer %d makes more than %zu GEMM calls",
                       l->index, rec->cap);
    e->t[p] = mp_median(t, n);
    r->dirty = 1;
    return count_calls(r, rec, e, p, err);
}

/* Layer i's passes (B before the model's dx_from and W of W-less layers cost nothing: the engine
 * never runs them), from the cache or timed now (again: always timed). */
static int time_layer(struct mp_calib_rates *r, const struct mp_model *m, int i, size_t mb,
                      int again, double out[3], double pack[3], struct mp_err *err)
{
    const struct mp_layer *l = &m->layers[i];
    struct mp_calib_pass *e = again ? NULL : mp__calib_find_elem(r, m->digest, mb, i);
    int rc = 0;
    if (!e) {
        if (!(e = mp__calib_add_elem(r, m->digest, mb, i)))
            return MP_FAIL(err, NOMEM, "out of memory");
        struct mp_bench_bufs b;
        struct mp_gemm_rec rec = {.cap = 8 * mb + 256};
        if (!(rec.calls = malloc(rec.cap * sizeof *rec.calls)))
            return MP_FAIL(err, NOMEM, "out of memory");
        if (mp_bench_bufs_alloc(l, mb, &b, err)) {
            free(rec.calls);
            return -1;
        }
        struct mp_ctx ctx = mp_bench_ctx(&b, mb);
        for (int p = 0; p < 3 && !rc; p++)
            if (!((p == 1 && i < m->dx_from) || (p == 2 && !l->ops->backward_weight)))
                rc = time_pass(r, l, &ctx, &b, p, mb, &rec, e, err);
        mp_bench_bufs_free(&b);
        free(rec.calls);
    }
    for (int p = 0; p < 3 && !rc; p++)
        out[p] = e->t[p] + gemm_seconds(r, e, p, &pack[p]);
    return rc;
}

#define STEP_FLOPS 2.0e10 /* the in-place step's work: about a fifth of a second at this machine's
                             rates, run twice (a warm-up and the timed one) at two sizes */

/* How many of m's layers (from 0) the in-place step at mb samples runs: all of them when their
 * forward and backward passes are at most STEP_FLOPS, else the longest prefix within that, but
 * at least one layer past the input. Counted from the layers' analytic flops, so the same model
 * and size always give the same prefix (the cache keeps its times by model and size). */
static double layer_flops(const struct mp_model *m, int i, size_t mb)
{
    struct mp_cost c = m->layers[i].ops->cost(&m->layers[i], mb);
    return c.flops_fwd + c.flops_bwd_input + c.flops_bwd_weight;
}

static int step_layers(const struct mp_model *m, size_t mb)
{
    double f = 0;
    for (int i = 1; i < m->n_layers; i++) {
        f += layer_flops(m, i, mb);
        if (f > STEP_FLOPS)
            return i > 1 ? i : 2;
    }
    return m->n_layers;
}

#define STEP_ROUNDS 3      /* of a short in-place step, round-robin over the sizes */
#define SHORT_STEP_S 0.005 /* a step under this is short: all its timings fit in a few ms */

/* The rounds a size's step runs, from its first round's times (forward, input-grad, weight-grad,
 * optimizer): all of them, or that one alone when it was long. */
static int rounds_of(const double v[4][STEP_ROUNDS])
{
    return v[0][0] + v[1][0] + v[2][0] + v[3][0] < SHORT_STEP_S ? STEP_ROUNDS : 1;
}

#define SPIKE 1.10 /* a size's step this much slower per flop than both its neighbours' */

/* Seconds per analytic flop of the cached in-place step at mb samples (0: none). */
static double per_flop(struct mp_calib_rates *r, const struct mp_model *m, int kind, size_t mb)
{
    const struct mp_calib_step *s = mp__calib_find_step(r, m->digest, kind, mb);
    double f = 0;
    for (int i = 1, n = step_layers(m, mb); i < n; i++)
        f += layer_flops(m, i, mb);
    return s && f > 0 ? (s->t[0] + s->t[1] + s->t[2]) / f : 0;
}

/* Times size j's step again when it came out slower per flop than both neighbouring sizes' by
 * SPIKE, keeping each pass kind's faster time: the machine only ever adds time. A long step has
 * one round, and this VM's slow spells (a core running everything 1.2-1.6x long for seconds)
 * can cover it: one calibration timed cnn.mp's 128-sample step 18-23% slower per sample than
 * its 64- and 256-sample neighbours, priced 2 replicas at 4 micro-batches 19% faster than at 2,
 * and they measured 9% slower. A real cost that rises from one size to the next (a cache the
 * working set leaves) is a step up, not a spike, and a spike that is real is timed twice. */
static int retime_spike(struct mp_calib_rates *r, const struct mp_model *m, int kind,
                        const size_t *mbs, int j, struct mp_err *err)
{
    double here = per_flop(r, m, kind, mbs[j]), a = per_flop(r, m, kind, mbs[j - 1]);
    double b = per_flop(r, m, kind, mbs[j + 1]);
    if (!(a > 0 && b > 0 && here > SPIKE * fmax(a, b)))
        return 0;
    double tt[3], opt;
    if (mp__calib_step(m, step_layers(m, mbs[j]), mbs[j], (enum mp_optim_kind)kind, tt, &opt,
                       err))
        return -1;
    struct mp_calib_step *st = mp__calib_find_step(r, m->digest, kind, mbs[j]);
    for (int p = 0; p < 3; p++)
        st->t[p] = fmin(st->t[p], tt[p]);
    st->optim = fmin(st->optim, opt);
    fprintf(stderr,
            "mpipe plan: %s's step at %zu samples ran %.0f%% slower per flop than at %zu and "
            "%zu: timed again, now %+.0f%%\n",
            m->path, mbs[j], 100 * (here / fmax(a, b) - 1), mbs[j - 1], mbs[j + 1],
            100 * (per_flop(r, m, kind, mbs[j]) / fmax(a, b) - 1));
    return 0;
}

/* Tests only: MPIPE_CALIB_SLOW=MB:FACTOR stretches every first timing of the in-place step at MB
 * samples by FACTOR, as a slow spell of the machine would; MPIPE_CALIB_SLOW=all:FACTOR every
 * timing of the in-place step at any size (and the drift probe's), as a slower machine would. */
static double injected_slowness(size_t mb)
{
    const char *e = getenv("MPIPE_CALIB_SLOW");
    unsigned long long at;
    double f;
    if (e && sscanf(e, "all:%lf", &f) == 1 && f > 0)
        return f;
    return e && sscanf(e, "%llu:%lf", &at, &f) == 2 && at == mb && f > 0 ? f : 1.0;
}

#define DRIFT 1.15     /* a cached step this far off this machine's, either way, is stale */
#define DRIFT_PROBES 3 /* and it must be, the same way, in each of this many timings */
#define PROBE_MIN_S 1e-3 /* the probe's step: the smallest size's that lasts this long (or the
                            largest): one of tiny_mlp.mp's 50 us steps is a few timer ticks */

/* Whether the cache's rates no longer describe this machine: m's in-place step at the smallest
 * size of mbs whose cached step lasts PROBE_MIN_S, timed again (50 ms or more), came out DRIFT
 * slower or faster in each of DRIFT_PROBES timings; *ratio is the timing nearest the cache's,
 * over it, and *probes how many were taken, either way (0: nothing to check against). The cache
 * is keyed by CPU model, BLIS and mpipe, not by what else the machine runs or how fast its host
 * lets it run: on a 2-core VM one calibration of cnn.mp came out 19% slower than another taken
 * 20 minutes before, and the slow one priced every plan until --recalibrate. One timing off is a
 * moment's noise (another process); a timing within DRIFT ends the probe at once. */
static int drifted(struct mp_calib_rates *r, const struct mp_model *m, const size_t *mbs, int n,
                   enum mp_optim_kind kind, size_t *probe_mb, double *ratio, int *probes,
                   struct mp_err *err)
{
    size_t mb = 0;
    double cached = 0;
    *probes = 0;
    for (int j = n - 1; j >= 0 && cached < PROBE_MIN_S; j--) { /* sizes descend */
        const struct mp_calib_step *s = mp__calib_find_step(r, m->digest, (int)kind, mbs[j]);
        if (s)
            mb = mbs[j], cached = s->t[0] + s->t[1] + s->t[2] + s->optim;
    }
    if (!(cached > 0))
        return 0;
    const char *off = getenv("MPIPE_CALIB_DRIFT"); /* tests of the cache itself: =0, no probe */
    if (off && strcmp(off, "0") == 0)
        return 0;
    double nearest = 0;
    *probe_mb = mb;
    for (int k = 0; k < DRIFT_PROBES; k++) {
        double tt[3], opt;
        if (mp__calib_step(m, step_layers(m, mb), mb, kind, tt, &opt, err))
            return -1;
        double q = (tt[0] + tt[1] + tt[2] + opt) * injected_slowness(mb) / cached;
        int turned = k > 0 && (q > 1) != (nearest > 1);
        nearest = k == 0 || fabs(log(q)) < fabs(log(nearest)) ? q : nearest;
        *ratio = nearest, *probes = k + 1;
        if ((q < DRIFT && q > 1 / DRIFT) || turned)
            return 0;
    }
    return 1;
}

/* The in-place steps (mp_calib_step.c) of m's prefix (step_layers) at every size of t that the
 * cache lacks (again: every size). A short step is run in STEP_ROUNDS rounds over the sizes, its
 * kinds' medians kept: all the timings of one short step fit inside one of this VM's slow spells
 * (passes 55-60% long for a while), and one calibration of models/tiny.mp met one at 64 samples
 * (forward 121 µs against 77 in another), which priced its 2 replicas at 4 micro-batches 536k
 * samples/s where they ran 698-747k. A long step keeps its one round: its timings span 50 ms or
 * more, and a round of gpt.mp's costs half a second. */
static int step_all(struct mp_calib_rates *r, const struct mp_model *m,
                    const struct mp_cost_table *t, enum mp_optim_kind kind, int again,
                    struct mp_err *err)
{
    int n = t->n_mbs, rc = 0;
    double(*v)[4][STEP_ROUNDS] = calloc((size_t)(n ? n : 1), sizeof *v);
    int *todo = calloc((size_t)(n ? n : 1), sizeof *todo);
    if (!v || !todo) {
        free(v), free(todo);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int j = 0; j < n; j++)
        todo[j] = again || !mp__calib_find_step(r, m->digest, (int)kind, t->mbs[j]);
    for (int round = 0; round < STEP_ROUNDS && !rc; round++)
        for (int j = 0; j < n && !rc; j++) {
            if (!todo[j] || (round > 0 && rounds_of(v[j]) == 1))
                continue;
            double tt[3], opt;
            rc = mp__calib_step(m, step_layers(m, t->mbs[j]), t->mbs[j], kind, tt, &opt, err);
            double slow = injected_slowness(t->mbs[j]);
            for (int p = 0; p < 3; p++)
                v[j][p][round] = tt[p] * slow;
            v[j][3][round] = opt * slow;
        }
    for (int j = 0; j < n && !rc; j++) {
        if (!todo[j])
            continue;
        size_t k = (size_t)rounds_of(v[j]);
        struct mp_calib_step *st = mp__calib_find_step(r, m->digest, (int)kind, t->mbs[j]);
        if (!st && !(st = mp__calib_add_step(r, m->digest, (int)kind, t->mbs[j]))) {
            rc = MP_FAIL(err, NOMEM, "out of memory");
            break;
        }
        for (int p = 0; p < 3; p++)
            st->t[p] = mp_median(v[j][p], k);
        st->optim = mp_median(v[j][3], k), r->dirty = 1;
    }
    for (int j = 1; j + 1 < n && !rc; j++) /* sizes descend: j's neighbours are j - 1, j + 1 */
        if (todo[j])
            rc = retime_spike(r, m, (int)kind, t->mbs, j, err);
    free(v), free(todo);
    return rc;
}

/* Scales the warm per-layer times of every size by what the caches cost a real step at that
 * size: in-place pass totals over warm ones of the same layers (the step's prefix, step_layers),
 * per pass kind. Each size is stepped itself: factors interpolated in log(size) between the
 * largest and the smallest size let the smallest's speak for the rest, and mlp.mp's 16-sample
 * step (weights streamed for few rows, factors near 2) priced its 128-sample input-grads 30% slow,
 * enough to pick a 2-stage pipeline that measured 7% slower than 2 replicas. The optimizer's
 * rate is the in-place one per parameter of the prefix, the median over the sizes. */
static int correct(struct mp_calib_rates *r, const struct mp_model *m, enum mp_optim_kind kind,
                   int again, struct mp_cost_table *t, struct mp_err *err)
{
    int nl = t->n_layers, n_rate = 0;
    double *rate = malloc((size_t)(t->n_mbs ? t->n_mbs : 1) * sizeof *rate);
    if (!rate)
        return MP_FAIL(err, NOMEM, "out of memory");
    if (step_all(r, m, t, kind, again, err)) {
        free(rate);
        return -1;
    }
    for (int j = 0; j < t->n_mbs; j++) {
        const struct mp_calib_step *s = mp__calib_find_step(r, m->digest, (int)kind, t->mbs[j]);
        int prefix = step_layers(m, t->mbs[j]);
        if (!s) {
            free(rate);
            return MP_FAIL(err, INTERNAL, "calibration: no in-place step at %zu samples",
                           t->mbs[j]);
        }
        for (int p = 0; p < 3; p++) {
            double warm = 0;
            for (int i = 1; i < prefix; i++)
                warm += t->t[((size_t)j * (size_t)nl + (size_t)i) * 3 + (size_t)p];
            double fp = warm > 0 && s->t[p] > 0 ? s->t[p] / warm : 1.0;
            for (int i = 1; i < nl; i++) { /* the packing part scales with its pass */
                size_t at = ((size_t)j * (size_t)nl + (size_t)i) * 3 + (size_t)p;
                t->t[at] *= fp, t->pack[at] *= fp;
            }
        }
        size_t n_param = 0;
        for (int i = 0; i < prefix; i++)
            n_param += mp_layer_n_param(&m->layers[i]);
        if (n_param)
            rate[n_rate++] = s->optim / (double)n_param;
    }
    if (n_rate)
        t->optim_s_per_param = mp_median(rate, (size_t)n_rate);
    free(rate);
    return 0;
}

/* Adds to *fwd the input gather at mb samples, kept in the cache as layer 0's forward (the input
 * layer has no pass of its own), timed now when absent or again. */
static int input_gather(struct mp_calib_rates *r, const struct mp_model *m, size_t mb, int again,
                        double *fwd, struct mp_err *err)
{
    struct mp_calib_pass *e = again ? NULL : mp__calib_find_elem(r, m->digest, mb, 0);
    if (!e) {
        if (!(e = mp__calib_add_elem(r, m->digest, mb, 0)))
            return MP_FAIL(err, NOMEM, "out of memory");
        e->t[0] = mp__calib_input_s(m, mb);
        r->dirty = 1;
    }
    *fwd += e->t[0];
    return 0;
}

static int shape_eq(struct mp_shape a, struct mp_shape b)
{
    return a.ndim == b.ndim && a.d[0] == b.d[0] && a.d[1] == b.d[1] && a.d[2] == b.d[2];
}

/* Whether layers a and b of m cost the same on every pass: same kind, arguments, shapes and
 * sizes, and both (or neither) before the model's dx_from. A repeat's N copies of a block are
 * timed once (gpt_300m.mp's 148 layers are 9 different ones). */
static int same_cost(const struct mp_model *m, const struct mp_layer *a, const struct mp_layer *b)
{
    return a->kind == b->kind && a->n_out == b->n_out && a->kernel == b->kernel &&
           a->stride == b->stride && a->pad == b->pad && a->rate == b->rate &&
           a->vocab == b->vocab && a->heads == b->heads && a->causal == b->causal &&
           a->pos_learned == b->pos_learned && a->tied == b->tied && a->n_res == b->n_res &&
           shape_eq(a->in, b->in) && shape_eq(a->out, b->out) &&
           a->n_weight == b->n_weight && a->n_bias == b->n_bias &&
           a->saved_per_sample == b->saved_per_sample &&
           a->scratch_per_sample == b->scratch_per_sample &&
           a->scratch_fixed == b->scratch_fixed && a->is_loss == b->is_loss &&
           (a->index < m->dx_from) == (b->index < m->dx_from);
}

void mp_calib_free(struct mp_cost_table *t)
{
    free(t->mbs);
    free(t->t);
    free(t->pack);
    memset(t, 0, sizeof *t);
}

/* t's rows: each layer's passes at each size (a layer costing what an earlier one does, its
 * twin's), timing what the cache lacks (again: everything). */
static int fill_rows(struct mp_calib_rates *r, const struct mp_model *m, const size_t *mbs,
                     int again, struct mp_cost_table *t, struct mp_err *err)
{
    int rc = 0;
    for (int j = 0; j < t->n_mbs && !rc; j++) {
        t->mbs[j] = mbs[j];
        for (int i = 1; i < m->n_layers && !rc; i++) {
            size_t at = ((size_t)j * (size_t)m->n_layers + (size_t)i) * 3;
            double *row = &t->t[at], *pack = &t->pack[at];
            int twin = 1;
            while (twin < i && !same_cost(m, &m->layers[twin], &m->layers[i]))
                twin++;
            if (twin < i) {
                memcpy(row, row - (size_t)(i - twin) * 3, 3 * sizeof *row);
                memcpy(pack, pack - (size_t)(i - twin) * 3, 3 * sizeof *pack);
            } else {
                rc = time_layer(r, m, i, mbs[j], again, row, pack, err);
            }
        }
    }
    return rc;
}

#define SLOWER_AGAIN_S 300.0   /* a machine still slower this long after the first check that */
#define SLOWER_FORGET_S 3600.0 /* found it so (and not past this: a slowdown of its own) is
                                  measured again */

/* Whether the cache's rates are measured again (1), kept (0) or the check failed (-1), after
 * drifted() checked them, said on stderr. Faster than its cache, the machine is measured again at
 * once: a timing can only be stretched, so the cache was timed in a slow moment. Slower may be
 * a passing slowdown: this EPYC Zen5 VM's cores run 5-35% slow for seconds to minutes, and a
 * calibration a check made again inside one priced tiny.mp's 2 replicas 643k samples/s where
 * they ran 903k minutes later (2026-12-07). So the first check to find it slower keeps the rates
 * and marks the cache (slower_since); one SLOWER_AGAIN_S to SLOWER_FORGET_S after the mark that
 * finds it slower still measures again; one that finds the cache standing clears the mark.
 * *marked: the mark changed, the cache is to be written. */
static int check_cache(struct mp_calib_rates *r, const struct mp_model *m, const size_t *mbs,
                       int n, enum mp_optim_kind optim, int *marked, struct mp_err *err)
{
    double ratio = 0;
    size_t mb = 0;
    int probes = 0;
    int stale = drifted(r, m, mbs, n, optim, &mb, &ratio, &probes, err);
    *marked = 0;
    if (stale < 0 || !probes)
        return stale;
    double now = (double)time(NULL), age = r->slower_since > 0 ? now - r->slower_since : -1;
    if (!stale) {
        /* Said every time: how near the machine is to its cache now, at the size checked. A
         * user whose run then misses its plan sees whether the cache stood by a hair or with
         * room. */
        fprintf(stderr,
                "mpipe plan: the cached rates stand: %s's step at %zu samples took %.2fx its "
                "cached time (measured again past %.2fx or %.2fx in %d timings in a row)\n",
                m->path, mb, ratio, 1 / DRIFT, DRIFT, DRIFT_PROBES);
        *marked = r->slower_since > 0, r->slower_since = 0;
        return 0;
    }
    if (ratio > 1 && (age < SLOWER_AGAIN_S || age > SLOWER_FORGET_S)) {
        if (age < 0 || age > SLOWER_FORGET_S) {
            r->slower_since = now, *marked = 1;
            age = 0;
        }
        fprintf(stderr,
                "mpipe plan: %s's step at %zu samples took %.2fx its cached time in %d "
                "timings: the cached rates are kept for now, as a passing slowdown (a VM's "
                "host, a busy neighbour) would be; first found slower %.0f s ago, they are "
                "measured again by a plan %.0f to %.0f minutes after that which still finds it "
                "slower (--recalibrate: at once)\n",
                m->path, mb, ratio, DRIFT_PROBES, age, SLOWER_AGAIN_S / 60, SLOWER_FORGET_S / 60);
        return 0;
    }
    char since[64] = "";
    if (ratio > 1)
        snprintf(since, sizeof since, " (slower since a check %.0f minutes ago)", age / 60);
    fprintf(stderr,
            "mpipe plan: %s's step at %zu samples took %.2fx its cached time in %d "
            "timings: this machine's rates are measured again%s\n",
            m->path, mb, ratio, DRIFT_PROBES, since);
    return 1;
}

int mp_calib_table(const struct mp_model *m, const size_t *mbs, int n, enum mp_optim_kind optim,
                   int recalibrate, int reduce, struct mp_cost_table *t, char *source,
                   size_t source_len, struct mp_err *err)
{
    struct mp_calib_rates r;
    memset(&r, 0, sizeof r);
    memset(t, 0, sizeof *t);
    int have_path = mp__calib_key(&r) == 0;
    if (have_path && !recalibrate)
        mp__calib_load(&r);
    double t0 = mp__calib_now();
    int marked = 0;
    int stale = recalibrate ? 0 : check_cache(&r, m, mbs, n, optim, &marked, err);
    if (stale < 0) {
        mp__calib_release(&r);
        return -1;
    }
    if (stale) { /* as --recalibrate: every rate of the cache is this machine's no more */
        mp__calib_release(&r);
        memset(&r, 0, sizeof r);
        mp__calib_key(&r);
        recalibrate = 1;
    }
    if (recalibrate)
        r.dirty = 1;
    if (recalibrate && have_path) /* the runs stand over new rates (mp_calib_runs.c) */
        mp__calib_runs_carry(&r);
    t->n_mbs = n, t->n_layers = m->n_layers;
    t->mbs = malloc((size_t)(n ? n : 1) * sizeof *t->mbs);
    t->t = calloc((size_t)n * (size_t)m->n_layers * 3 + 1, sizeof *t->t);
    t->pack = calloc((size_t)n * (size_t)m->n_layers * 3 + 1, sizeof *t->pack);
    int rc = t->mbs && t->t && t->pack ? 0 : MP_FAIL(err, NOMEM, "out of memory");
    /* Every pass's element-wise part and GEMM calls, then the shapes new to the cache timed
     * together, then the rows from both. */
    if (!rc)
        rc = fill_rows(&r, m, mbs, recalibrate, t, err);
    if (!rc)
        rc = time_pending(&r, err);
    if (!rc)
        rc = fill_rows(&r, m, mbs, 0, t, err);
    if (!rc && n > 0)
        rc = correct(&r, m, optim, recalibrate, t, err);
    for (int j = 0; !rc && j < n && m->n_layers > 1; j++) { /* the batch's copy, stage 0's F */
        double *fwd1 = &t->t[((size_t)j * (size_t)m->n_layers + 1) * 3];
        rc = input_gather(&r, m, mbs[j], recalibrate, fwd1, err);
    }

    int reduce_cached = r.n_reduce > 0 && !recalibrate;
    if (!rc && reduce) {
        mp__calib_reduce(&r, recalibrate);
        t->n_reduce = r.n_reduce;
        memcpy(t->reduce_bytes, r.reduce_bytes, sizeof t->reduce_bytes);
        memcpy(t->reduce_s, r.reduce_s, sizeof t->reduce_s);
    }
    /* The runs of earlier plans priced by these rates, for the lean of each layout's step; a
     * cache that cannot be named has neither runs nor a key for a run to name. */
    if (!rc && have_path) {
        memcpy(t->runs, r.runs, (size_t)r.n_runs * sizeof r.runs[0]);
        t->n_runs = r.n_runs;
        mp__calib_key_hex(&r, t->rates_key);
    }
    size_t now = 0, reused = 0;
    for (size_t i = 0; i < r.n; i++)
        now += r.v[i].used == 2, reused += r.v[i].used == 1;
    if (!rc && have_path && (r.dirty || marked))
        mp__calib_save(&r);
    if (!rc && r.dirty)
        fprintf(stderr,
                "mpipe plan: measured this machine's rates in %.1f s (%zu GEMM shapes "
                "timed; cached in %s)\n",
                mp__calib_now() - t0, now, have_path ? r.path : "nowhere: no HOME");
    if (!rc)
        snprintf(source, source_len,
                 "measured: %zu GEMM shapes (%zu timed now, %zu from the "
                 "cache), element-wise passes, in-place steps%s",
                 now + reused, now, reused,
                 !reduce         ? ""
                 : !t->n_reduce  ? ", the reduction from the link model"
                 : reduce_cached ? ", the reduction between 2 ranks (from the cache)"
                                 : ", the reduction between 2 ranks (measured now)");
    if (rc)
        mp_calib_free(t);
    mp__calib_release(&r);
    operands_free();
    mp__calib_input_free();

    return rc;
}
