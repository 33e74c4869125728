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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The CPU from /proc/cpuinfo (its first processor: the ranks of one host share it): model name,
 * family, model and stepping, since a hypervisor may show only "AMD EPYC" for several
 * generations. */
static float *filled(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = scale * ((float)((i * 2654435761u) % 1000u) * 1e-3f - 0.5f);
    return p;
}

/* Median seconds of one call of the shape through mp_gemm (the path training takes), after two
 * warm-up calls: at least 3 repeats and 20 ms, at most 50 repeats. */
static double time_gemm(const struct mp_gemm_call *c, struct mp_err *err)
{
    size_t rows_a = c->trans_a ? c->k : c->m, rows_b = c->trans_b ? c->n : c->k;
    float *a = filled(rows_a * c->lda, 1e-2f), *b = filled(rows_b * c->ldb, 1e-2f);
    float *cc = filled(c->m * c->ldc, 0);
    double t[50], s = -1;
    size_t n = 0;
    if (!a || !b || !cc) {
        MP_FAIL(err, NOMEM, "out of memory timing a %zux%zux%zu GEMM", c->m, c->n, c->k);
        goto done;
    }
    float beta = c->beta_zero ? 0.0f : 1.0f;
    for (int w = 0; w < 2; w++)
        mp_gemm(c->trans_a, c->trans_b, c->m, c->n, c->k, 1.0f, a, c->lda, b, c->ldb, beta, cc,
                c->ldc);
    double start = now_s();
    while (n < 50 && (n < 3 || now_s() - start < 0.02)) {
        double t0 = now_s();
        mp_gemm(c->trans_a, c->trans_b, c->m, c->n, c->k, 1.0f, a, c->lda, b, c->ldb, beta, cc,
                c->ldc);
        t[n++] = now_s() - t0;
    }
    s = mp_bench_median(t, n);
done:
    free(a), free(b), free(cc);
    return s;
}

/* The recorded calls of pass p into e's call counts, timing the shapes the cache lacks. */
static int count_calls(struct mp_calib_rates *r, const struct mp_gemm_rec *rec,
                       struct mp_calib_pass *e, int p, struct mp_err *err)
{
    for (size_t i = 0; i < rec->n; i++) {
        struct mp_calib_shape *s = mp__calib_find(r, &rec->calls[i]);
        if (!s) {
            double sec = time_gemm(&rec->calls[i], err);
            if (sec < 0)
                return -1;
            if (!(s = mp__calib_add(r, &rec->calls[i], sec)))
                return MP_FAIL(err, NOMEM, "out of memory");
            s->used = 2, r->dirty = 1;
        }
        if (mp__calib_add_call(e, p, (size_t)(s - r->v), 1))
            return MP_FAIL(err, NOMEM, "out of memory");
    }
    return 0;
}

/* The GEMM seconds of pass p from e's call counts. */
static double gemm_seconds(struct mp_calib_rates *r, const struct mp_calib_pass *e, int p)
{
    double s = 0;
    for (size_t i = 0; i < e->n_calls; i++) {
        struct mp_calib_shape *sh = &r->v[e->calls[i].shape];
        if (e->calls[i].pass != p)
            continue;
        s += (double)e->calls[i].n * sh->s;
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
    mp_bench_call(l, ctx, b, p, mb);
    size_t calls = rec->n, dropped = rec->dropped;
    double start = now_s();
    while (n < 50 && (n < 3 || now_s() - start < 0.002)) {
        rec->n = calls; /* the first call's record stands for all: same shapes */
        double t0 = now_s();
        mp_bench_call(l, ctx, b, p, mb);
        t[n++] = now_s() - t0;
    }
    mp_gemm_record(NULL);
    rec->n = calls;
    if (dropped)
        return MP_FAIL(err, INTERNAL, "calibration: layer %d makes more than %zu GEMM calls",
                       l->index, rec->cap);
    e->t[p] = mp_bench_median(t, n);
    r->dirty = 1;
    return count_calls(r, rec, e, p, err);
}

/* Layer i's passes (B before the model's dx_from and W of W-less layers cost nothing: the engine
 * never runs them), from the cache or timed now (again: always timed). */
static int time_layer(struct mp_calib_rates *r, const struct mp_model *m, int i, size_t mb,
                      int again, double out[3], struct mp_err *err)
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
        double loss = 0;
        size_t correct = 0;
        struct mp_ctx ctx = {.labels = b.labels,
                             .training = 1,
                             .seed = 1,
                             .global_batch = mb,
                             .scratch = b.scratch,
                             .scratch_len = b.scratch_len,
                             .loss_sum = &loss,
                             .n_correct = &correct};
        for (int p = 0; p < 3 && !rc; p++)
            if (!((p == 1 && i < m->dx_from) || (p == 2 && !l->ops->backward_weight)))
                rc = time_pass(r, l, &ctx, &b, p, mb, &rec, e, err);
        mp_bench_bufs_free(&b);
        free(rec.calls);
    }
    for (int p = 0; p < 3 && !rc; p++)
        out[p] = e->t[p] + gemm_seconds(r, e, p);
    return rc;
}

/* The in-place step at mb samples (mp_calib_step.c), from the cache or run now. */
static int in_place(struct mp_calib_rates *r, const struct mp_model *m, size_t mb,
                    enum mp_optim_kind kind, int again, const struct mp_calib_step **out,
                    struct mp_err *err)
{
    struct mp_calib_step *s = again ? NULL : mp__calib_find_step(r, m->digest, (int)kind, mb);
    if (!s) {
        double t[3], opt;
        if (mp__calib_step(m, mb, kind, t, &opt, err))
            return -1;
        if (!(s = mp__calib_find_step(r, m->digest, (int)kind, mb)) &&
            !(s = mp__calib_add_step(r, m->digest, (int)kind, mb)))
            return MP_FAIL(err, NOMEM, "out of memory");
        memcpy(s->t, t, sizeof t);
        s->optim = opt, r->dirty = 1;
    }
    *out = s;
    return 0;
}

/* Scales the warm per-layer times of every size by what the caches cost a real step: at the
 * largest and the smallest size, in-place pass totals over warm ones, per pass kind; sizes in
 * between take factors interpolated in log(size). The optimizer's rate is the in-place one. */
static int correct(struct mp_calib_rates *r, const struct mp_model *m, enum mp_optim_kind kind,
                   int again, struct mp_cost_table *t, struct mp_err *err)
{
    int ends[2] = {0, t->n_mbs - 1}, nl = t->n_layers;
    double f[2][3], lg[2];
    size_t n_param = 0;
    for (int i = 0; i < m->n_layers; i++)
        n_param += mp_layer_n_param(&m->layers[i]);
    for (int e = 0; e < 2; e++) {
        const struct mp_calib_step *s = NULL;
        int j = ends[e];
        if (in_place(r, m, t->mbs[j], kind, again, &s, err))
            return -1;
        for (int p = 0; p < 3; p++) {
            double warm = 0;
            for (int i = 1; i < nl; i++)
                warm += t->t[((size_t)j * (size_t)nl + (size_t)i) * 3 + (size_t)p];
            f[e][p] = warm > 0 && s->t[p] > 0 ? s->t[p] / warm : 1.0;
        }
        lg[e] = log((double)t->mbs[j]);
        if (e == 0 && n_param)
            t->optim_s_per_param = s->optim / (double)n_param;
    }
    for (int j = 0; j < t->n_mbs; j++) {
        double x = lg[0] > lg[1] ? (lg[0] - log((double)t->mbs[j])) / (lg[0] - lg[1]) : 0;
        for (int p = 0; p < 3; p++) {
            double fp = f[0][p] + x * (f[1][p] - f[0][p]);
            for (int i = 1; i < nl; i++)
                t->t[((size_t)j * (size_t)nl + (size_t)i) * 3 + (size_t)p] *= fp;
        }
    }
    return 0;
}

void mp_calib_free(struct mp_cost_table *t)
{
    free(t->mbs);
    free(t->t);
    memset(t, 0, sizeof *t);
}

int mp_calib_table(const struct mp_model *m, const size_t *mbs, int n, enum mp_optim_kind optim,
                   int recalibrate, struct mp_cost_table *t, char *source, size_t source_len,
                   struct mp_err *err)
{
    struct mp_calib_rates r;
    memset(&r, 0, sizeof r);
    memset(t, 0, sizeof *t);
    int have_path = mp__calib_key(&r) == 0;
    if (have_path && !recalibrate)
        mp__calib_load(&r);
    if (recalibrate)
        r.dirty = 1;
    double t0 = now_s();
    t->n_mbs = n, t->n_layers = m->n_layers;
    t->mbs = malloc((size_t)(n ? n : 1) * sizeof *t->mbs);
    t->t = calloc((size_t)n * (size_t)m->n_layers * 3 + 1, sizeof *t->t);
    int rc = t->mbs && t->t ? 0 : MP_FAIL(err, NOMEM, "out of memory");
    for (int j = 0; j < n && !rc; j++) {
        t->mbs[j] = mbs[j];
        for (int i = 1; i < m->n_layers && !rc; i++)
            rc = time_layer(&r, m, i, mbs[j], recalibrate,
                            &t->t[((size_t)j * (size_t)m->n_layers + (size_t)i) * 3], err);
    }
    if (!rc && n > 0)
        rc = correct(&r, m, optim, recalibrate, t, err);
    size_t now = 0, reused = 0;
    for (size_t i = 0; i < r.n; i++)
        now += r.v[i].used == 2, reused += r.v[i].used == 1;
    if (!rc && have_path && r.dirty)
        mp__calib_save(&r);
    if (!rc && r.dirty)
        fprintf(stderr,
                "mpipe plan: measured this machine's rates in %.1f s (%zu GEMM shapes "
                "timed; cached in %s)\n",
                now_s() - t0, now, have_path ? r.path : "nowhere: no HOME");
    if (!rc)
        snprintf(source, source_len,
                 "measured: %zu GEMM shapes (%zu timed now, %zu from the "
                 "cache), element-wise passes, in-place steps",
                 now + reused, now, reused);
    if (rc)
        mp_calib_free(t);
    mp__calib_release(&r);
    return rc;
}
