/* `mpipe bench layers`: forward, input-grad (B) and weight-grad (W) seconds of every layer of a
 * model on one micro-batch, measured by calling the layer's own kernels (median of repeats after
 * warm-up), beside the planner's analytic estimate (partitioner/mp_cost.c) and their ratio.
 * Writes PROFILE.json for `mpipe plan --profile`; `bench pipeline` reuses mp_bench_profile. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_cost.h"
#include "mp_flags.h"
#include "mp_rng.h"

struct layers_args {
    const char *model, *out;
    long long batch;
    double budget_s;  /* per layer */
    int json;
};

/* n values in [-scale/2, scale/2), hashed from their index: in no order a branch predictor could
 * learn, as a layer's inputs in training are. A linear sequence (i * 2654435761 mod 1000, which
 * is 761 i mod 1000) made maxpool's compares predictable: tiny.mp's maxpool timed 17 us here and
 * ran 87 us in training. */
static float *floats(size_t n, float scale)
{
    if (scale == 0) /* outputs and zeroed buffers: hashing values to multiply them by 0 took a fifth
                       of gpt_300m.mp's 41 s first calibration */
        return calloc(n ? n : 1, sizeof(float));
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = scale * (mp_hash_uniform(mp_hash4(i, n, 0, 0)) - 0.5f);
    return p;
}

void mp_bench_bufs_free(struct mp_bench_bufs *b)
{
    free(b->x), free(b->y), free(b->saved), free(b->dy), free(b->dx), free(b->param);
    free(b->dparam), free(b->scratch), free(b->labels);
}

struct mp_ctx mp_bench_ctx(struct mp_bench_bufs *b, size_t mb)
{
    return (struct mp_ctx){.labels = b->labels,
                           .training = 1,
                           .seed = 1,
                           .global_batch = mb,
                           .scratch = b->scratch,
                           .scratch_len = b->scratch_len,
                           .loss_sum = &b->loss,
                           .n_correct = &b->correct};
}

int mp_bench_bufs_alloc(const struct mp_layer *l, size_t mb, struct mp_bench_bufs *b,
                        struct mp_err *err)
{
    size_t in = mb * mp_layer_in_len(l), out = mb * mp_layer_out_len(l);
    size_t rows = mb * mp_shape_rows(l->in), classes = mp_shape_feat(l->in);
    memset(b, 0, sizeof *b);
    b->scratch_len = l->scratch_per_sample * mb + l->scratch_fixed;
    b->x = floats(in, 1), b->y = floats(out, 0), b->dy = floats(out, 0.01f);
    b->dx = floats(in, 0), b->saved = floats(l->saved_per_sample * mb, 0);
    b->param = floats(mp_layer_n_param(l), 0), b->dparam = floats(mp_layer_n_param(l), 0);
    b->scratch = floats(b->scratch_len, 0);
    b->labels = calloc(rows ? rows : 1, sizeof *b->labels); /* a loss on (T, V) has T per sample */
    if (!b->x || !b->y || !b->dy || !b->dx || !b->saved || !b->param || !b->dparam ||
        !b->scratch || !b->labels) {
        mp_bench_bufs_free(b);
        return MP_FAIL(err, NOMEM, "out of memory for layer %d on %zu samples", l->index, mb);
    }
    for (size_t i = 0; i < rows; i++)
        b->labels[i] = (int32_t)(i % (classes ? classes : 1));
    if (l->kind == MP_LAYER_EMBED) /* its input is byte ids, which must lie in [0, V) */
        for (size_t i = 0; i < in; i++)
            b->x[i] = (float)((i * 2654435761u) % l->vocab);
    if (mp_layer_n_param(l))
        mp_layer_init_params(l, b->param, 1);
    return 0;
}

void mp_bench_call(const struct mp_layer *l, const struct mp_ctx *ctx, struct mp_bench_bufs *b,
                   int which, size_t mb)
{
    if (which == 0)
        l->ops->forward(l, ctx, b->param, b->x, b->y, b->saved, mb);
    else if (which == 1)
        l->ops->backward_input(l, ctx, b->param, b->x, b->y, b->saved, l->is_loss ? NULL : b->dy,
                               b->dx, mb);
    else
        l->ops->backward_weight(l, ctx, b->x, b->y, b->saved, b->dy, b->dparam, mb);
}

/* In training a layer's weights and activations come back to a kernel after every other layer of
 * the chunk has run over them, so they are no longer in cache; timing a kernel called again and
 * again on the same buffers measured it on hot caches and made the simulator 8-14% optimistic.
 * Each timed call therefore starts after 64 MB of other data went through the caches. */
static void evict_caches(void)
{
    static unsigned char *junk;
    static const size_t len = 64u << 20;
    if (!junk && !(junk = malloc(len)))
        return;
    memset(junk, (int)(mp_xport_now() * 1e6) & 0xff, len);
    __asm__ volatile("" : : "r"(junk) : "memory");
}

/* Median seconds of one call after two warm-up calls, repeated for the budget (5 to 200). */
static double time_call(const struct mp_layer *l, const struct mp_ctx *ctx,
                        struct mp_bench_bufs *b, int which, size_t mb, double budget, int cold,
                        int *reps)
{
    double t[200];
    size_t n = 0;
    for (int w = 0; w < 2; w++)
        mp_bench_call(l, ctx, b, which, mb);
    double start = mp_xport_now();
    while (n < 200 && (n < 5 || mp_xport_now() - start < 2 * budget)) {
        if (cold)
            evict_caches();
        double t0 = mp_xport_now();
        mp_bench_call(l, ctx, b, which, mb);
        t[n++] = mp_xport_now() - t0;
    }
    if (reps && (int)n > *reps)
        *reps = (int)n;
    return mp_median(t, n);
}

int mp_bench_profile(const struct mp_model *m, size_t mb, double budget_s, int cold,
                     struct mp_bench_layer_time *out, int *reps, struct mp_err *err)
{
    memset(out, 0, sizeof *out * (size_t)m->n_layers);
    for (int i = 1; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        struct mp_bench_bufs b;
        if (mp_bench_bufs_alloc(l, mb, &b, err))
            return -1;
        struct mp_ctx ctx = mp_bench_ctx(&b, mb);
        out[i].f = time_call(l, &ctx, &b, 0, mb, budget_s / 3, cold, reps);
        out[i].b = time_call(l, &ctx, &b, 1, mb, budget_s / 3, cold, reps);
        if (l->ops->backward_weight)
            out[i].w = time_call(l, &ctx, &b, 2, mb, budget_s / 3, cold, reps);
        mp_bench_bufs_free(&b);
    }
    return 0;
}

static int takes_value(const char *f)
{
    return !strcmp(f, "--batch") || !strcmp(f, "--out") || !strcmp(f, "--budget");
}

static int parse(struct layers_args *a, int argc, char **argv, struct mp_err *err)
{
    a->batch = 256;
    a->budget_s = 0.3;
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-') {
            if (a->model)
                return MP_FAIL(err, USAGE, "bench layers: one model file only ('%s')", argv[i]);
            a->model = argv[i++];
            continue;
        }
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err))
            return -1;
        if (mp_flag_is(f, "--json"))
            a->json = 1;
        else if (mp_flag_is(f, "--out"))
            a->out = v;
        else if (mp_flag_is(f, "--batch")) {
            if (mp_flag_int(f, v, 1, 1 << 20, &a->batch, err))
                return -1;
        } else if (mp_flag_is(f, "--budget")) {
            if (mp_flag_double(f, v, 0.001, 60, &a->budget_s, err))
                return -1;
        } else
            return MP_FAIL(err, USAGE, "bench layers: unknown flag '%s' (see mpipe bench --help)",
                           f);
    }
    if (!a->model)
        return MP_FAIL(err, USAGE, "bench layers: no model file given (e.g. models/mlp.mp)");
    return 0;
}

/* One row: measured times, bytes and the analytic estimate the planner would use. The engine
 * never runs B of the layers before the model's dx_from (it would reach only the data), so
 * neither does the sum. */
static json_t *layer_row(struct mp_bench *b, const struct mp_layer *l, int dx_from, size_t mb,
                         const struct mp_bench_layer_time *t, const struct mp_plan_layer *an)
{
    struct mp_cost c = l->ops->cost(l, mb);
    double measured = t->f + (l->index < dx_from ? 0 : t->b) + t->w;
    double ratio = an->compute_s > 0 ? measured / an->compute_s : 0;
    double bytes = c.bytes_fwd + c.bytes_bwd;
    fprintf(b->out, "%5d  %-12s %11.1f %11.1f %11.1f %12.0f %11.1f %7.2f\n", l->index,
            l->ops->name, t->f * 1e6, t->b * 1e6, t->w * 1e6, bytes, an->compute_s * 1e6, ratio);
    /* Byte counts are integers in JSON too: as reals at 6 digits 1471230 bytes read 1.47123e6. */
    return json_pack("{s:i, s:s, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:f, s:f}", "index", l->index,
                     "kind", l->ops->name, "forward_s", t->f, "backward_input_s", t->b,
                     "backward_weight_s", t->w, "batch", (json_int_t)mb, "bytes",
                     (json_int_t)llround(bytes),
                     "act_bytes_out", (json_int_t)c.act_bytes_out, "param_bytes",
                     (json_int_t)c.param_bytes, "analytic_s", an->compute_s,
                     "measured_over_analytic", ratio);
}

static int write_profile(const struct layers_args *a, const struct mp_model *m, json_t *rows,
                         struct mp_err *err)
{
    json_t *root = json_pack("{s:O, s:I, s:s, s:s, s:s}", "rows", rows, "batch",
                             (json_int_t)a->batch, "model", a->model, "digest", m->digest,
                             "source", "mpipe bench layers");
    int rc = 0;
    if (!root)
        return MP_FAIL(err, NOMEM, "out of memory");
    if (json_dump_file(root, a->out, JSON_INDENT(1) | JSON_PRESERVE_ORDER |
                                         JSON_REAL_PRECISION(6)))
        rc = MP_FAIL(err, IO, "%s: cannot write the profile", a->out);
    json_decref(root);
    return rc;
}

static int report(struct mp_bench *b, const struct layers_args *a, const struct mp_model *m,
                  struct mp_bench_layer_time *t, int reps, struct mp_err *err)
{
    size_t mb = (size_t)a->batch;
    struct mp_cost_model cm;
    mp_cost_defaults(&cm);
    struct mp_plan_layer *an = calloc((size_t)m->n_layers, sizeof *an);
    if (!an)
        return MP_FAIL(err, NOMEM, "out of memory");
    int rc = mp_cost_layers(m, mb, &cm, NULL, an, err);
    char method[300];
    snprintf(method, sizeof method, "%s (digest %s) on %zu samples per call; per kernel: 2 "
             "warm-up calls, median of up to %d repeats\n# (%.2f s per layer); max over ranks; "
             "analytic = partitioner/mp_cost.c at its default rates", a->model, m->digest, mb,
             reps, a->budget_s);
    mp_bench_header(b, "layers", method);
    fprintf(b->out, "#%4s  %-12s %11s %11s %11s %12s %11s %7s\n", "idx", "kind", "forward_us",
            "bwd_in_us", "bwd_w_us", "bytes", "analytic_us", "ratio");
    double sum[2] = {0, 0};
    for (int i = 1; !rc && i < m->n_layers; i++) {
        mp_bench_row(b, layer_row(b, &m->layers[i], m->dx_from, mb, &t[i], &an[i]));
        sum[0] += t[i].f + (i < m->dx_from ? 0 : t[i].b) + t[i].w, sum[1] += an[i].compute_s;
    }
    fprintf(b->out, "# total measured %.3f ms, analytic %.3f ms per %zu samples (ratio %.2f)\n",
            sum[0] * 1e3, sum[1] * 1e3, mb, sum[1] > 0 ? sum[0] / sum[1] : 0);
    if (!rc && a->out) {
        rc = write_profile(a, m, b->rows, err);
        if (!rc)
            fprintf(b->out, "# wrote %s (mpipe plan %s --profile %s)\n", a->out, a->model, a->out);
    }
    free(an);
    return rc;
}

int mp_bench_layers(int argc, char **argv, struct mp_err *err)
{
    struct layers_args a = {0};
    struct mp_model m;
    memset(&m, 0, sizeof m);
    if (parse(&a, argc, argv, err) || mp_model_load(&m, a.model, err))
        return -1;
    struct mp_bench b;
    struct mp_bench_layer_time *t = calloc((size_t)m.n_layers, sizeof *t);
    int rc = t ? 0 : MP_FAIL(err, NOMEM, "out of memory"), reps = 0;
    if (!rc)
        rc = mp_bench_init(&b, a.json, &argc, &argv, err);
    if (!rc)
        rc = mp_bench_profile(&m, (size_t)a.batch, a.budget_s, 1, t, &reps, err);
    if (!rc && b.size > 1)
        rc = mp_xport_allreduce_max(b.x, (double *)t, 3 * (size_t)m.n_layers,
                                    "the layer timings", err);
    if (!rc && b.rank == 0)
        rc = report(&b, &a, &m, t, reps, err);
    free(t);
    mp_model_free(&m);
    if (b.x)
        mp_bench_finish(&b, rc == 0);
    return rc;
}
