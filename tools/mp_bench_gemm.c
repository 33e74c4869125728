/* `mpipe bench gemm`: GFLOPS of every BLIS call path (mp_gemm_path) for each GEMM shape a model
 * uses, so the rule in layers/mp_gemm.c (mp_gemm_path_for_op) can be checked against this machine,
 * and each against the single-core ceiling (the fastest path of 256x1024x1024, timed in the same
 * run). Default shapes: models/mlp.mp at batch 256; a model's shapes are the calls its layers'
 * passes really make (recorded through mp_gemm_record), so every layer kind is covered, and a
 * conv2d's per-sample GEMMs count once per sample. Under mpirun every rank runs the same shapes
 * at once (one core each) and the slowest rank's time is reported. */
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_flags.h"
#include "mp_gemm.h"

#define MAX_SHAPES 256

struct shape {
    size_t m, n, k;
    int ta, tb;
    size_t count;  /* calls per pass (a conv2d's per-sample GEMMs: one per sample) */
    char role[48]; /* "L2 dense forward", or "--shape" */
};

struct gemm_args {
    const char *model;
    long long batch;
    struct shape s[MAX_SHAPES];
    size_t n;
    int json;
    double budget_s;
};

static int takes_value(const char *f)
{
    return !strcmp(f, "--shape") || !strcmp(f, "--model") || !strcmp(f, "--batch") ||
           !strcmp(f, "--budget");
}

/* MxNxK with an optional :OP (NN, NT, TN, TT: the transposes of A and B; default NN). */
static int parse_shape(const char *v, struct shape *s, struct mp_err *err)
{
    unsigned long long m, n, k;
    char op[4] = "NN";
    int used = 0;
    if (sscanf(v, "%llux%llux%llu%n", &m, &n, &k, &used) != 3 || !m || !n || !k || m > 1 << 20 ||
        n > 1 << 20 || k > 1 << 20)
        return MP_FAIL(err, USAGE, "--shape: '%s' is not MxNxK[:OP] with sizes 1..1048576", v);
    if (v[used] == ':' && strlen(v + used + 1) == 2)
        memcpy(op, v + used + 1, 3);
    else if (v[used])
        return MP_FAIL(err, USAGE, "--shape: '%s': expected :NN, :NT, :TN or :TT after MxNxK", v);
    if ((op[0] != 'N' && op[0] != 'T') || (op[1] != 'N' && op[1] != 'T'))
        return MP_FAIL(err, USAGE, "--shape: '%s': expected :NN, :NT, :TN or :TT after MxNxK", v);
    *s = (struct shape){.m = m, .n = n, .k = k, .ta = op[0] == 'T', .tb = op[1] == 'T', .count = 1};
    snprintf(s->role, sizeof s->role, "--shape");
    return 0;
}

static int parse(struct gemm_args *a, int argc, char **argv, struct mp_err *err)
{
    a->batch = 256;
    a->budget_s = 0.15;
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-')
            return MP_FAIL(err, USAGE, "bench gemm: unexpected argument '%s' (use --model)",
                           argv[i]);
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err))
            return -1;
        if (mp_flag_is(f, "--json"))
            a->json = 1;
        else if (mp_flag_is(f, "--model"))
            a->model = v;
        else if (mp_flag_is(f, "--batch")) {
            if (mp_flag_int(f, v, 1, 1 << 20, &a->batch, err))
                return -1;
        } else if (mp_flag_is(f, "--budget")) {
            if (mp_flag_double(f, v, 0.001, 60, &a->budget_s, err))
                return -1;
        } else if (mp_flag_is(f, "--shape")) {
            if (a->n == MAX_SHAPES)
                return MP_FAIL(err, USAGE, "--shape: at most %d shapes", MAX_SHAPES);
            if (parse_shape(v, &a->s[a->n++], err))
                return -1;
        } else
            return MP_FAIL(err, USAGE, "bench gemm: unknown flag '%s' (see mpipe bench --help)", f);
    }
    if (!a->n && !a->model)
        a->model = "models/mlp.mp";
    return 0;
}

/* One row per distinct shape of each pass of each layer, in the order the layer calls them. */
static void add_calls(struct gemm_args *a, const struct mp_layer *l, const char *pass,
                      const struct mp_gemm_rec *rec)
{
    size_t first = a->n;
    for (size_t i = 0; i < rec->n && a->n < MAX_SHAPES; i++) {
        const struct mp_gemm_call *c = &rec->calls[i];
        struct shape *s = NULL;
        for (size_t j = first; j < a->n && !s; j++)
            if (a->s[j].m == c->m && a->s[j].n == c->n && a->s[j].k == c->k &&
                a->s[j].ta == c->trans_a && a->s[j].tb == c->trans_b)
                s = &a->s[j];
        if (s) {
            s->count++;
            continue;
        }
        s = &a->s[a->n++];
        *s = (struct shape){
            .m = c->m, .n = c->n, .k = c->k, .ta = c->trans_a, .tb = c->trans_b, .count = 1};
        snprintf(s->role, sizeof s->role, "L%d %s %s", l->index, l->ops->name, pass);
    }
}

/* The calls each layer's forward, input-grad and weight-grad make at this batch, recorded with
 * the GEMMs skipped (the engine never runs input-grads before the model's dx_from). */
static int model_shapes(struct gemm_args *a, struct mp_err *err)
{
    static const char *const pass[3] = {"forward", "input-grad", "weight-grad"};
    struct mp_model m;
    if (mp_model_load(&m, a->model, err))
        return -1;
    size_t B = (size_t)a->batch;
    struct mp_gemm_rec rec = {.cap = 8 * B + 256, .skip = 1};
    int rc = (rec.calls = malloc(rec.cap * sizeof *rec.calls))
                 ? 0
                 : MP_FAIL(err, NOMEM, "out of memory");
    for (int i = 1; !rc && i < m.n_layers; i++) {
        const struct mp_layer *l = &m.layers[i];
        struct mp_bench_bufs b;
        if ((rc = mp_bench_bufs_alloc(l, B, &b, err)))
            break;
        struct mp_ctx ctx = mp_bench_ctx(&b, B);
        for (int p = 0; p < 3; p++) {
            if ((p == 1 && i < m.dx_from) || (p == 2 && !l->ops->backward_weight))
                continue;
            rec.n = 0;
            mp_gemm_record(&rec);
            mp_bench_call(l, &ctx, &b, p, B);
            mp_gemm_record(NULL);
            add_calls(a, l, pass[p], &rec);
        }
        mp_bench_bufs_free(&b);
    }
    free(rec.calls);
    mp_model_free(&m);
    if (!rc && !a->n)
        rc = MP_FAIL(err, INPUT, "%s: no layer calls a GEMM, so there is nothing to measure",
                     a->model);
    return rc;
}

/* Median seconds of one call through `path` after two warm-up calls, repeating for the budget. */
static double time_path(enum mp_gemm_path path, const struct shape *s, const float *A,
                        const float *B, float *C, double budget)
{
    size_t lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    double t[200];
    size_t n = 0;
    for (int w = 0; w < 2; w++)
        mp_gemm_path(path, s->ta, s->tb, s->m, s->n, s->k, 1.0f, A, lda, B, ldb, 0.0f, C, s->n);
    double start = mp_xport_now();
    while (n < 200 && (n < 5 || mp_xport_now() - start < budget)) {
        double t0 = mp_xport_now();
        mp_gemm_path(path, s->ta, s->tb, s->m, s->n, s->k, 1.0f, A, lda, B, ldb, 0.0f, C, s->n);
        t[n++] = mp_xport_now() - t0;
    }
    return mp_median(t, n);
}

/* Both paths of shape s (the slowest rank's times); on rank 0 a row per path with its share of
 * the ceiling (-1: s is the ceiling's own shape), and the chosen path's seconds for all
 * s->count calls added to *chosen_s. */
static int run_shape(struct mp_bench *b, const struct shape *s, double budget, double ceiling,
                     double *chosen_s, struct mp_err *err)
{
    float *A = mp_bench_filled(s->m * s->k), *B = mp_bench_filled(s->k * s->n),
          *C = mp_bench_filled(s->m * s->n);
    double t[MP_GEMM_PATH_COUNT];
    int rc = (!A || !B || !C)
                 ? MP_FAIL(err, NOMEM, "out of memory for %zux%zux%zu", s->m, s->n, s->k)
                 : 0;
    for (int p = 0; !rc && p < MP_GEMM_PATH_COUNT; p++)
        t[p] = time_path((enum mp_gemm_path)p, s, A, B, C, budget);
    if (!rc && b->size > 1)
        rc = mp_xport_allreduce_max(b->x, t, MP_GEMM_PATH_COUNT, "the GEMM timings", err);
    free(A), free(B), free(C);
    if (rc || b->rank != 0)
        return rc;
    enum mp_gemm_path chosen = mp_gemm_path_for_op(s->ta, s->tb, s->m, s->n, s->k);
    double flops = 2.0 * (double)s->m * (double)s->n * (double)s->k;
    *chosen_s += (double)s->count * t[chosen];
    if (ceiling < 0) { /* the ceiling's own rows: against their best BLIS path */
        ceiling = 0;
        for (int p = 0; p < MP_GEMM_PATH_COUNT; p++)
            if (p != MP_GEMM_LOOPS)
                ceiling = flops / t[p] / 1e9 > ceiling ? flops / t[p] / 1e9 : ceiling;
    }
    for (int p = 0; p < MP_GEMM_PATH_COUNT; p++) {
        char op[3] = {s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', 0}, role[64];
        double gf = flops / t[p] / 1e9, share = ceiling > 0 ? gf / ceiling : 0;
        snprintf(role, sizeof role, s->count > 1 ? "%s (x%zu)" : "%s", s->role, s->count);
        fprintf(b->out, "%6zu %6zu %6zu  %-2s  %-7s%c %9.2f %8.2f %11.1f  %s\n", s->m, s->n, s->k,
                op, mp_gemm_path_name((enum mp_gemm_path)p), p == (int)chosen ? '*' : ' ', gf,
                share, t[p] * 1e6, role);
        mp_bench_row(b, json_pack("{s:I, s:I, s:I, s:s, s:f, s:s, s:b, s:f, s:s, s:I, s:f}", "m",
                                  (json_int_t)s->m, "n", (json_int_t)s->n, "k", (json_int_t)s->k,
                                  "path", mp_gemm_path_name((enum mp_gemm_path)p), "gflops", gf,
                                  "op", op, "chosen", p == (int)chosen, "time_s", t[p], "role",
                                  s->role, "count", (json_int_t)s->count, "of_ceiling", share));
    }
    fflush(b->out);
    return 0;
}

/* The single-core ceiling: the fastest BLIS path of 256x1024x1024 (DESIGN.md §8's reference
 * shape, "a direct BLIS sgemm"): mpipe's own loops around BLIS's micro-kernel are shown against
 * it, never part of it. */
static int ceiling_rate(struct mp_bench *b, double budget, double *gflops, struct mp_err *err)
{
    struct shape s = {.m = 256, .n = 1024, .k = 1024, .count = 1};
    snprintf(s.role, sizeof s.role, "ceiling (the reference shape)");
    double unused = 0;
    /* -1: shown against their own best path (they printed "of_ceil 0.00" before it was known) */
    if (run_shape(b, &s, budget, -1, &unused, err))
        return -1;
    double best = 0;
    json_t *row;
    size_t i;
    json_array_foreach(b->rows, i, row)
    {
        double gf = json_number_value(json_object_get(row, "gflops"));
        const char *path = json_string_value(json_object_get(row, "path"));
        if (path && strcmp(path, mp_gemm_path_name(MP_GEMM_LOOPS)) != 0)
            best = gf > best ? gf : best;
    }
    *gflops = best;
    return 0;
}

int mp_bench_gemm(int argc, char **argv, struct mp_err *err)
{
    struct gemm_args *a = calloc(1, sizeof *a);
    if (!a)
        return MP_FAIL(err, NOMEM, "out of memory");
    int rc = parse(a, argc, argv, err);
    if (!rc && a->model)
        rc = model_shapes(a, err);
    struct mp_bench b;
    if (!rc)
        rc = mp_bench_init(&b, a->json, &argc, &argv, err);
    if (rc) {
        free(a);
        return rc;
    }
    char method[400];
    snprintf(method, sizeof method,
             "shapes of %s at batch %lld; per shape and path: 2 warm-up calls, then the median of "
             "repeats for %.2f s (>= 5);\n# GFLOPS = 2mnk / median; max time over ranks; '*' = "
             "the path mp_gemm uses for the shape; of_ceil = GFLOPS / the first row's best BLIS path",
             a->model ? a->model : "--shape", a->batch, a->budget_s);
    mp_bench_header(&b, "gemm", method);
    if (b.rank == 0)
        fprintf(b.out, "#%5s %6s %6s  %-2s  %-8s %9s %8s %11s  %s\n", "m", "n", "k", "op", "path",
                "gflops", "of_ceil", "time_us", "role");
    double ceiling = 0, step_s = 0, flops = 0;
    rc = ceiling_rate(&b, a->budget_s, &ceiling, err);
    for (size_t i = 0; !rc && i < a->n; i++) {
        rc = run_shape(&b, &a->s[i], a->budget_s, ceiling, &step_s, err);
        flops +=
            2.0 * (double)a->s[i].m * (double)a->s[i].n * (double)a->s[i].k * (double)a->s[i].count;
    }
    if (!rc && b.rank == 0 && a->model && step_s > 0)
        fprintf(b.out,
                "# %s at batch %lld: the GEMMs of one training step (forward, input-grad, "
                "weight-grad; the chosen paths) take %.2f ms, %.2f MFLOP per sample, %.1f GFLOPS "
                "= %.2f of the ceiling (%.1f GFLOPS)\n",
                a->model, a->batch, step_s * 1e3, flops / (double)a->batch / 1e6,
                flops / step_s / 1e9, flops / step_s / 1e9 / ceiling, ceiling);
    free(a);
    mp_bench_finish(&b, rc == 0);
    return rc;
}
