/* attention (layers/mp_attention.c): its forward, input gradient (B) and weight gradient (W)
 * against a double-precision reference written here from the definition (naive loops, no GEMM,
 * no shared code with the kernels), with odd sizes (T, C, H not powers of two, T from 1 to 300:
 * several of BLIS's blocks along the triangle), causal and not, dropout on the probabilities; causality (a future token
 * changes no earlier output or gradient); W accumulating and overwriting over NaN; golden values
 * from PyTorch's nn.MultiheadAttention (tests/data/golden_attention.py); the key/value-cache
 * decode against the full forward; and the finite-difference harness of tests/fd_check.h. */
#include "fd_check.h"

#include "mp_attention.h"
#include "mp_layer.h"

/* ---- a parsed attention layer with float buffers ---- */

struct att {
    struct mp_model m;
    const struct mp_layer *l;
    size_t B, T, C, H, nx, np, nsaved, nscratch;
    float *x, *param, *y, *saved, *scratch, *dy, *dx, *dparam;
    struct mp_ctx ctx;
};

/* `input tokens T / embed 16 C / attention H OPTS / lm_head / softmax_xent`: layer 2. */
static void att_setup(struct att *a, size_t B, size_t T, size_t C, size_t H, const char *opts,
                      uint64_t seed)
{
    char spec[256];
    snprintf(spec, sizeof spec,
             "input tokens %zu\nembed 16 %zu\nattention %zu %s\nlm_head\nsoftmax_xent\n", T, C, H,
             opts);
    memset(a, 0, sizeof *a);
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(&a->m, "att", spec, strlen(spec), &err))
        fail_msg("%s", err.msg);
    a->l = &a->m.layers[2];
    assert_int_equal(a->l->kind, MP_LAYER_ATTENTION);
    a->B = B, a->T = T, a->C = C, a->H = H;
    a->nx = B * T * C;
    a->np = mp_layer_n_param(a->l);
    a->nsaved = B * a->l->saved_per_sample;
    a->nscratch = B * a->l->scratch_per_sample + a->l->scratch_fixed;
    a->x = fd_alloc(a->nx), a->y = fd_alloc(a->nx), a->dy = fd_alloc(a->nx);
    a->dx = fd_alloc(a->nx), a->param = fd_alloc(a->np), a->dparam = fd_alloc(a->np);
    a->saved = fd_alloc(a->nsaved), a->scratch = fd_alloc(a->nscratch);
    /* Saved and scratch start as NaN: a kernel that reads what it did not write fails. */
    fd_fill_nan(a->saved, a->nsaved);
    fd_fill_nan(a->scratch, a->nscratch);
    struct mp_rng rng;
    mp_rng_seed(&rng, seed);
    for (size_t i = 0; i < a->nx; i++)
        a->x[i] = 2.0f * mp_rng_uniform(&rng) - 1.0f;
    /* scores of order 1: the softmax neither flat nor saturated */
    for (size_t i = 0; i < a->np; i++)
        a->param[i] = (mp_rng_uniform(&rng) - 0.5f) * (i < 3 * C * C ? 1.2f : 0.5f);
    for (size_t i = 0; i < a->nx; i++)
        a->dy[i] = 2.0f * mp_rng_uniform(&rng) - 1.0f;
    a->ctx.training = 1;
    a->ctx.seed = seed ^ 0xa77e;
    a->ctx.step = 5;
    a->ctx.micro_batch = 3;
    a->ctx.global_batch = B;
    a->ctx.scratch = a->scratch;
    a->ctx.scratch_len = a->nscratch;
}

static void att_free(struct att *a)
{
    free(a->x), free(a->y), free(a->dy), free(a->dx), free(a->param), free(a->dparam);
    free(a->saved), free(a->scratch);
    mp_model_free(&a->m);
}

static void att_forward(struct att *a)
{
    a->l->ops->forward(a->l, &a->ctx, a->param, a->x, a->y, a->saved, a->B);
}

static void att_backward(struct att *a)
{
    a->l->ops->backward_input(a->l, &a->ctx, a->param, a->x, a->y, a->saved, a->dy, a->dx, a->B);
}

static void att_weight(struct att *a)
{
    a->l->ops->backward_weight(a->l, &a->ctx, a->x, a->y, a->saved, a->dy, a->dparam, a->B);
}

/* ---- the double-precision reference, from the definition ---- */

/* The dropout mask as specified (mp_attention.h): kept iff the splitmix64 output at
 * ((s_global · H + h) · T + i) · T + j of the stream keyed by mp_hash4(seed, layer, step, mb),
 * as a 24-bit uniform, is >= P. */
static double ref_keep(const struct att *a, size_t s, size_t h, size_t i, size_t j)
{
    const struct mp_layer *l = a->l;
    if (!a->ctx.training || l->rate <= 0.0f)
        return 1.0;
    uint64_t key = mp_hash4(a->ctx.seed, (uint64_t)l->index, a->ctx.step, a->ctx.micro_batch);
    uint64_t g = (((uint64_t)(a->ctx.sample_base + s) * a->H + h) * a->T + i) * a->T + j;
    uint64_t z = key + (g + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    double u = (double)(z >> 40) / 16777216.0;
    return u >= (double)l->rate ? 1.0 / (1.0 - (double)l->rate) : 0.0;
}

/* y (B, T, C) of the layer in double, from x and param in double. */
static void ref_forward(const struct att *a, const double *x, const double *param, double *y)
{
    size_t T = a->T, C = a->C, H = a->H, hd = C / H;
    const double *w_in = param, *b_in = param + 3 * C * C, *w_out = b_in + 3 * C;
    const double *b_out = w_out + C * C;
    double *qkv = malloc(T * 3 * C * sizeof *qkv), *o = malloc(T * C * sizeof *o);
    double *p = malloc(T * sizeof *p);
    assert_non_null(qkv), assert_non_null(o), assert_non_null(p);
    double scale = 1.0 / sqrt((double)hd);
    for (size_t s = 0; s < a->B; s++) {
        const double *xs = x + s * T * C;
        for (size_t t = 0; t < T; t++)
            for (size_t j = 0; j < 3 * C; j++) {
                double acc = b_in[j];
                for (size_t c = 0; c < C; c++)
                    acc += xs[t * C + c] * w_in[j * C + c];
                qkv[t * 3 * C + j] = acc;
            }
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < T; i++) {
                size_t n = a->l->causal ? i + 1 : T;
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j < n; j++) {
                    double dot = 0;
                    for (size_t e = 0; e < hd; e++)
                        dot += qkv[i * 3 * C + h * hd + e] * qkv[j * 3 * C + C + h * hd + e];
                    p[j] = dot * scale;
                    mx = fmax(mx, p[j]);
                }
                for (size_t j = 0; j < n; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (size_t e = 0; e < hd; e++)
                    o[i * C + h * hd + e] = 0;
                for (size_t j = 0; j < n; j++) {
                    double aij = p[j] / sum * ref_keep(a, s, h, i, j);
                    for (size_t e = 0; e < hd; e++)
                        o[i * C + h * hd + e] += aij * qkv[j * 3 * C + 2 * C + h * hd + e];
                }
            }
        for (size_t t = 0; t < T; t++)
            for (size_t c = 0; c < C; c++) {
                double acc = b_out[c];
                for (size_t e = 0; e < C; e++)
                    acc += o[t * C + e] * w_out[c * C + e];
                y[(s * T + t) * C + c] = acc;
            }
    }
    free(qkv), free(o), free(p);
}

/* L = sum dy · y in double. */
static double ref_loss(const struct att *a, const double *x, const double *param, double *ybuf)
{
    ref_forward(a, x, param, ybuf);
    double L = 0;
    for (size_t i = 0; i < a->nx; i++)
        L += (double)a->dy[i] * ybuf[i];
    return L;
}

/* dL/dv[i] by a central difference in double (h = 1e-5: truncation ~1e-10, rounding ~1e-11). */
static double ref_grad(const struct att *a, double *x, double *param, double *v, size_t i,
                       double *ybuf)
{
    double v0 = v[i], h = 1e-5 * fmax(1.0, fabs(v0));
    v[i] = v0 + h;
    double lp = ref_loss(a, x, param, ybuf);
    v[i] = v0 - h;
    double lm = ref_loss(a, x, param, ybuf);
    v[i] = v0;
    return (lp - lm) / (2 * h);
}

/* Float kernels against the double reference. Every value here is a sum of at most a few hundred
 * products of O(1) floats, so float32 rounding (unit 6e-8) stays below ~1e-5 of the largest entry;
 * 1e-4 of the largest entry plus 1e-3 relative leaves a 10x margin, while a real mistake (a
 * missing mask entry, a wrong scale, a head reading another head's columns, a lost bias) is off by
 * a sizeable fraction of the largest entry. */
static void expect_near(const char *what, const float *got, const double *want, const size_t *idx,
                        size_t n)
{
    double big = 0;
    for (size_t c = 0; c < n; c++)
        big = fmax(big, fabs(want[c]));
    assert_true(big > 0);
    for (size_t c = 0; c < n; c++) {
        size_t i = idx ? idx[c] : c;
        double d = fabs((double)got[i] - want[c]);
        if (!(d <= 1e-4 * big + 1e-3 * fabs(want[c])))
            fail_msg("%s[%zu]: got %.9g, want %.9g (largest %.3g)", what, i, (double)got[i],
                     want[c], big);
    }
}

static double *to_double(const float *v, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}

/* Compares up to `most` entries (all when there are fewer) of the analytic gradient `got` of
 * tensor v with the reference's central differences. */
static void check_grad(struct att *a, const char *what, double *x, double *param, double *v,
                       const float *got, size_t n, size_t most, double *ybuf)
{
    size_t count = n < most ? n : most;
    size_t *idx = malloc(count * sizeof *idx);
    double *want = malloc(count * sizeof *want);
    assert_non_null(idx), assert_non_null(want);
    struct mp_rng rng;
    mp_rng_seed(&rng, n);
    for (size_t c = 0; c < count; c++) {
        idx[c] = n == count ? c : (size_t)mp_rng_below(&rng, n);
        want[c] = ref_grad(a, x, param, v, idx[c], ybuf);
    }
    expect_near(what, got, want, idx, count);
    free(idx), free(want);
}

/* y, dx and every parameter gradient of one configuration against the reference. */
static void check_against_double(size_t B, size_t T, size_t C, size_t H, const char *opts,
                                 uint64_t seed)
{
    struct att a;
    att_setup(&a, B, T, C, H, opts, seed);
    a.ctx.sample_base = 2; /* the mask must follow the sample's place in its micro-batch */
    double *x = to_double(a.x, a.nx), *param = to_double(a.param, a.np);
    double *ybuf = malloc(a.nx * sizeof *ybuf);
    assert_non_null(ybuf);
    att_forward(&a);
    ref_forward(&a, x, param, ybuf);
    expect_near("y", a.y, ybuf, NULL, a.nx);
    fd_fill_nan(a.dx, a.nx);
    att_backward(&a);
    fd_fill_nan(a.dparam, a.np);
    a.ctx.overwrite = 1;
    att_weight(&a);
    check_grad(&a, "dx", x, param, x, a.dx, a.nx, 400, ybuf);
    check_grad(&a, "dparam", x, param, param, a.dparam, a.np, 600, ybuf);
    free(x), free(param), free(ybuf);
    att_free(&a);
}

static void test_causal_attention_matches_double_reference_odd_sizes(void **state)
{
    (void)state;
    check_against_double(2, 7, 12, 3, "", 1);  /* T, C, H odd-ish */
    check_against_double(1, 5, 6, 1, "", 2);   /* one head */
    check_against_double(3, 1, 4, 2, "", 3);   /* T = 1: each token sees only itself */
    check_against_double(1, 45, 10, 5, "", 4); /* hd = 2 */
    check_against_double(1, 150, 4, 2, "", 5); /* the triangle across BLIS's blocks */
    check_against_double(1, 300, 3, 3, "", 6); /* hd = 1 */
}

static void test_full_attention_matches_double_reference(void **state)
{
    (void)state;
    check_against_double(2, 7, 12, 3, "causal=0", 7);
    check_against_double(1, 45, 10, 2, "causal=0", 8);
}

static void test_attention_dropout_matches_double_reference(void **state)
{
    (void)state;
    check_against_double(2, 7, 12, 3, "dropout=0.3", 9);
    check_against_double(1, 140, 4, 2, "dropout=0.5", 10);
    check_against_double(2, 9, 6, 2, "causal=0 dropout=0.2", 11);
}

/* The harness shared by every layer: forward twice gives the same bits, B and W against float
 * finite differences, W accumulating, W with ctx->overwrite over NaN equal to += onto zeros. */
static void test_attention_passes_layer_fd_harness(void **state)
{
    (void)state;
    const char *specs[] = {
        "input tokens 5\nembed 16 6\nattention 3\nlm_head\nsoftmax_xent\n",
        "input tokens 4\nembed 16 6\nattention 2 causal=0\nlm_head\nsoftmax_xent\n",
        "input tokens 6\nembed 16 4\nattention 2 dropout=0.25\nlm_head\nsoftmax_xent\n",
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        struct mp_model m;
        struct mp_err err;
        mp_err_clear(&err);
        assert_int_equal(mp_model_parse(&m, "att", specs[i], strlen(specs[i]), &err), 0);
        fd_check_layer(&m.layers[2], 2, 40 + i);
        mp_model_free(&m);
    }
}

/* Changing token t (every feature) of one sample changes no output row before t, bit for bit,
 * and changes row t; and a gradient arriving only at row i reaches no input row after i. */
static void test_future_token_changes_no_earlier_output_or_gradient(void **state)
{
    (void)state;
    struct att a;
    att_setup(&a, 2, 150, 10, 5, "", 12);
    float *y0 = fd_alloc(a.nx);
    att_forward(&a);
    memcpy(y0, a.y, a.nx * sizeof(float));
    size_t T = a.T, C = a.C;
    const size_t ts[] = {0, 1, 127, 128, 129, 149};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) {
        size_t t = ts[k];
        float *xt = a.x + (1 * T + t) * C; /* sample 1, token t */
        float keep[10];
        memcpy(keep, xt, sizeof keep);
        for (size_t c = 0; c < C; c++)
            xt[c] += 0.75f;
        att_forward(&a);
        assert_memory_equal(a.y, y0, (T + t) * C * sizeof(float)); /* sample 0, and rows < t */
        assert_memory_not_equal(a.y + (T + t) * C, y0 + (T + t) * C, C * sizeof(float));
        memcpy(xt, keep, sizeof keep);
    }
    att_forward(&a);
    for (size_t i = 0; i < T; i += 21) {
        memset(a.dy, 0, a.nx * sizeof(float));
        for (size_t c = 0; c < C; c++)
            a.dy[(T + i) * C + c] = 1.0f - 0.1f * (float)c;
        att_backward(&a);
        for (size_t r = 0; r < 2 * T; r++)
            for (size_t c = 0; c < C; c++)
                if (r < T || r > T + i)
                    assert_true(a.dx[r * C + c] == 0.0f);
        for (size_t c = 0; c < C; c++) /* and it does reach row i itself */
            assert_true(a.dx[(T + i) * C + c] != 0.0f);
    }
    free(y0);
    att_free(&a);
}

/* A micro-batch run in one call or in two calls (sample_base 0 and 3) gives the same outputs and
 * gradients, dropout included; a different micro-batch, step or seed gives another mask; in
 * evaluation dropout is off. */
static void test_attention_dropout_mask_is_a_function_of_ctx_and_sample(void **state)
{
    (void)state;
    struct att whole, part;
    att_setup(&whole, 5, 9, 6, 2, "dropout=0.4", 13);
    att_setup(&part, 3, 9, 6, 2, "dropout=0.4", 13);
    size_t per = 9 * 6;
    memcpy(whole.x, part.x, 3 * per * sizeof(float)); /* samples 0-2 from part, 3-4 own */
    memcpy(whole.param, part.param, part.np * sizeof(float));
    att_forward(&whole);
    att_forward(&part);
    assert_memory_equal(part.y, whole.y, 3 * per * sizeof(float));
    part.B = 2;
    part.ctx.sample_base = 3;
    memcpy(part.x, whole.x + 3 * per, 2 * per * sizeof(float));
    att_forward(&part);
    assert_memory_equal(part.y, whole.y + 3 * per, 2 * per * sizeof(float));

    float *y0 = fd_alloc(whole.nx);
    memcpy(y0, whole.y, whole.nx * sizeof(float));
    whole.ctx.micro_batch++;
    att_forward(&whole);
    assert_memory_not_equal(y0, whole.y, whole.nx * sizeof(float));
    whole.ctx.micro_batch--;
    whole.ctx.step++;
    att_forward(&whole);
    assert_memory_not_equal(y0, whole.y, whole.nx * sizeof(float));
    whole.ctx.step--;
    att_forward(&whole);
    assert_memory_equal(y0, whole.y, whole.nx * sizeof(float));

    /* Evaluation: the same as the layer without dropout. */
    struct att plain;
    att_setup(&plain, 5, 9, 6, 2, "", 13);
    memcpy(plain.x, whole.x, whole.nx * sizeof(float));
    memcpy(plain.param, whole.param, whole.np * sizeof(float));
    att_forward(&plain);
    whole.ctx.training = 0;
    att_forward(&whole);
    assert_memory_equal(plain.y, whole.y, whole.nx * sizeof(float));
    free(y0);
    att_free(&plain), att_free(&whole), att_free(&part);
}

/* W with ctx->overwrite over NaN gives the bits += gives onto zeros; a second W adds; B and W run
 * twice on the same inputs give the same bits (B's dqkv in saved is rewritten, not accumulated). */
static void test_attention_weight_grad_overwrites_nan_and_accumulates(void **state)
{
    (void)state;
    struct att a;
    att_setup(&a, 2, 140, 6, 2, "dropout=0.1", 14);
    size_t np = a.np;
    att_forward(&a);
    att_backward(&a);
    float *dx1 = fd_alloc(a.nx), *g1 = fd_alloc(np), *g2 = fd_alloc(np);
    memcpy(dx1, a.dx, a.nx * sizeof(float));
    memset(a.dparam, 0, np * sizeof(float));
    att_weight(&a);
    memcpy(g1, a.dparam, np * sizeof(float));
    att_weight(&a);
    float gmax = 0;
    for (size_t i = 0; i < np; i++)
        gmax = fmaxf(gmax, fabsf(g1[i]));
    for (size_t i = 0; i < np; i++) /* g1 + g vs 2 g1: the same terms, summed in another order */
        assert_true(fabsf(a.dparam[i] - 2.0f * g1[i]) <= 1e-5f * (fabsf(g1[i]) + gmax));
    fd_fill_nan(a.dparam, np);
    a.ctx.overwrite = 1;
    att_weight(&a);
    memcpy(g2, a.dparam, np * sizeof(float));
    for (size_t i = 0; i < np; i++)
        assert_true(g2[i] == g1[i]);
    fd_fill_nan(a.scratch, a.nscratch);
    att_backward(&a);
    assert_memory_equal(dx1, a.dx, a.nx * sizeof(float));
    fd_fill_nan(a.dparam, np);
    att_weight(&a);
    assert_memory_equal(g2, a.dparam, np * sizeof(float));
    free(dx1), free(g1), free(g2);
    att_free(&a);
}

/* ---- golden values from PyTorch (tests/data/golden_attention.py) ---- */

static const double causal_y[60] = {
    -0.112304688,   0.276855469,   0.0947265625, -0.0810546875,  0.308105469,   -0.0302734375,
    -0.108601039,   0.251640562,   0.133998401,  -0.0773510394,  0.282890562,   0.00899840113,
    -0.0357121955,  0.109417466,   0.0807027338, -0.00446219548, 0.140667466,   -0.0442972662,
    -0.00664970934, 0.0175452685,  0.0739637167, 0.0246002907,   0.0487952685,  -0.0510362833,
    -0.0267465397,  -0.0167558384, 0.0871453647, 0.00450346026,  0.0144941616,  -0.0378546353,
    -0.107421875,   0.243652344,   0.146484375,  -0.076171875,   0.274902344,   0.021484375,
    -0.0970172887,  0.0992339527,  0.102192242,  -0.0657672887,  0.130483953,   -0.0228077576,
    -0.0287886363,  -0.0121954684, 0.0732643014, 0.0024613637,   0.0190545316,  -0.0517356986,
    -0.0243176494,  -0.0533151176, 0.0873864424, 0.0069323506,   -0.0220651176, -0.0376135576,
    -0.0389868233,  -0.0107303909, 0.0966339696, -0.00773682333, 0.0205196091,  -0.0283660304};
static const double causal_dx[60] = {
    -0.0233123463,  0.0786620771,   -0.0315506238,  0.0616579115,   -0.040002142,   -0.0373633129,
    -0.0309413377,  -0.015617474,   -0.0198870684,  -0.0115738494,  -0.00763003396, 0.000434381743,
    -0.0105801594,  0.00936074156,  -0.0101143404,  0.0186953494,   -0.0104920759,  -0.0142304146,
    0.00416442177,  -0.00625956449, 0.0097060142,   -0.00172565764, 0.00694528173,  -0.010649954,
    0.0133681507,   -0.00449100739, 0.00535337293,  -0.00563419251, 0.00445111315,  0.0072381621,
    0.0492349103,   -0.0316724048,  0.0508350521,   -0.0499461547,  0.045704545,    0.0190164668,
    -0.00399474802, -0.00875230208, -0.00089953637, -0.00336016122, 0.0024061356,   -0.00264059424,
    0.0120391631,   0.027296757,    -0.00310802725, 0.0305094575,   -0.0126176295,  -0.0104033186,
    0.00666501187,  -0.00387626864, 0.00707465817,  -0.00233473051, 0.00580321277,  -0.0147210171,
    0.0110155756,   -0.00207615033, 0.00465249039,  -0.00539290484, 0.00581424833,  0.00281789182};
static const double causal_d_in_w[108] = {
    0.00204490815,  -0.002057516,   0.0175817584,  -0.00950496954, 0.0121450747,   -0.0102172084,
    0.00264506533,  -0.0020399494,  0.00513101372, -0.00214395684, 0.0030564769,   -0.00236823596,
    -0.00291155683, 0.000895449137, -0.0204784452, 0.0125550443,   -0.0144542097,  0.0132699157,
    0.00611239559,  -0.0231606897,  0.00998217743, 0.00469204125,  0.00852931039,  0.00402917852,
    0.0150859981,   -0.0342559187,  0.0352562826,  -0.0176392065,  0.0265186893,   -0.0140581943,
    -0.00606805835, 0.0183978006,   -0.0151508384, 0.0056810769,   -0.0129736749,  0.00437059064,
    -0.00802774431, 0.0098636512,   -0.0122170988, 0.011712418,    -0.0114240554,  0.011712418,
    -0.00969424957, 0.00950754029,  -0.0102557095, 0.0112323719,   -0.00810803166, 0.0112323719,
    0.00762584923,  -0.00936609341, 0.00926703966, -0.00861820501, 0.00755417688,  -0.00861820501,
    0.0282663081,   -0.0288805323,  0.0282743081,  -0.0320873544,  0.0237731158,   -0.0320873544,
    -0.0301706794,  0.0340998867,   -0.0301732509, 0.0299797629,   -0.0233170351,  0.0299797629,
    -0.0130840521,  0.00978008111,  -0.0130831949, 0.018737579,    -0.0101845619,  0.018737579,
    -0.0427885958,  -0.0866984285,  -0.0303064755, -0.0491136523,  -0.0381172663,  -0.0286058398,
    -0.0350797877,  -0.0796403716,  -0.0251441978, -0.0278057054,  -0.00673440544, -0.0190166429,
    0.00548024201,  0.0196036833,   0.0291122644,  -0.0121802636,  0.0281951951,   -0.0195044824,
    0.0108091765,   0.0733139049,   -0.0261419511, 0.0726836788,   -0.0365279315,  0.0712188351,
    0.0256300789,   0.0783465236,   -0.0129008604, 0.0844066108,   -0.00115298347, 0.071223017,
    -0.0350588131,  -0.0775283006,  -0.0242124774, -0.0541272577,  -0.0183119911,  -0.0394788202};
static const double causal_d_in_b[18] = {
    -0.00569791108, -0.00179423297,  0.00571897114,   -0.00530290179, 0.0286480976,
    -0.0104838901,  -4.33680869e-19, -6.07153217e-18, 3.90312782e-18, -7.80625564e-18,
    1.30104261e-18, 5.20417043e-18,  0.1640625,       0.0703125,      -0.05859375,
    -0.01171875,    -0.10546875,     0.1171875};
static const double causal_d_out_w[36] = {
    -0.0404985521, 0.0763479619, -0.0582208332, 0.0492845279,  -0.0290491881, 0.0418667517,
    -0.366726208,  0.214699745,  0.235113388,   -0.294769811,  -0.0376114292, 0.134485907,
    0.18784587,    -0.176459323, -0.143127627,  0.129318814,   0.118313666,   -0.13811781,
    -0.0332360975, 0.0565012573, 0.0808297354,  -0.0670820204, -0.0976642294, 0.0905552773,
    0.44613261,    -0.293171958, -0.279069372,  0.440336365,   0.0478695871,  -0.264743737,
    -0.191401674,  0.139325649,  0.15215432,    -0.154736531,  -0.0900915709, 0.113330964};
static const double causal_d_out_b[6] = {-0.25, 0.4375, 0.0625, -0.3125, -0.6875, 0};
static const double full_y[24] = {
    0.00905046073, -0.0273954032, 0.0642438635, 0.0403004607, 0.0038545968,  -0.0607561365,
    0.00880324255, -0.0412578809, 0.0698764931, 0.0400532426, -0.0100078809, -0.0551235069,
    -0.0140111466, 0.0220712718,  0.0734579,    0.0172388534, 0.0533212718,  -0.0515421,
    -0.0142156509, 0.00805720327, 0.0791253898, 0.0170343491, 0.0393072033,  -0.0458746102};
static const double full_dx[24] = {
    -0.0269195967, 0.0352856314, -0.0287161492, 0.0294407759, -0.0252126686, -0.0188588496,
    -0.0419522987, 0.0289603481, -0.0330288497, 0.0269191031, -0.0295167979, -0.00449775833,
    -0.0225401604, 0.0154141642, -0.0250872285, 0.023339223,  -0.0231377144, -0.0161191065,
    -0.0240606413, 0.0113554742, -0.0214623067, 0.0216579414, -0.0200859277, -0.0177153764};
static const double full_d_in_w[108] = {
    0.0060837905,    0.0042792128,    0.00550865186,   0.00370407416,   0.00493351322,
    0.00312893552,   0.00145872859,   0.00106764049,   0.0013246757,    0.000933587602,
    0.00119062281,   0.000799534712,  -0.0113716407,   0.0284003079,    -0.0176347744,
    0.0221371742,    -0.0238979081,   0.0158740405,    0.00241083954,   -0.0062180918,
    0.00377260554,   -0.00485632581,  0.00513437153,   -0.00349455982,  -0.00939449706,
    -0.0158799598,   -0.00743147118,  -0.0139169339,   -0.0054684453,   -0.011953908,
    0.00441447452,   0.0074597374,    0.0034924381,    0.00653770099,   0.00257040169,
    0.00561566458,   -0.000792051112, 0.00100508572,   -0.000792051112, 0.00100508572,
    -0.000792051112, 0.00100508572,   0.000679696365,  -0.000557582886, 0.000679696365,
    -0.000557582886, 0.000679696365,  -0.000557582886, 0.0151523609,    -0.0146748996,
    0.0151523609,    -0.0146748996,   0.0151523609,    -0.0146748996,   0.0187757276,
    -0.017683593,    0.0187757276,    -0.017683593,    0.0187757276,    -0.017683593,
    -0.000165864105, 0.000113879312,  -0.000165864105, 0.000113879312,  -0.000165864105,
    0.000113879312,  -0.00190738975,  0.00237396475,   -0.00190738975,  0.00237396475,
    -0.00190738975,  0.00237396475,   -0.0115172207,   -0.00849988616,  -0.00370472066,
    -0.000687386157, 0.00410777934,   0.00712511384,   -0.00622672822,  -0.00385680882,
    -0.00232047822,  4.94411768e-05,  0.00158577178,   0.00395569118,   -0.0362883761,
    -0.0193826972,   -0.0143157198,   0.00258995905,   0.00765693641,   0.0245626153,
    0.0470626293,    0.0171337767,    0.021183723,     -0.0087451295,   -0.00469518322,
    -0.0346240358,   0.0496027284,    0.0245603876,    0.0198175721,    -0.0052247687,
    -0.00996758412,  -0.0350099249,   -0.00564474364,  -0.00922481703,  0.00021463136,
    -0.00336544203,  0.00607400636,   0.00249393297};
static const double full_d_in_b[18] = {
    -0.00460110913, -0.00107242313, -0.0501050695,  0.010894128,    0.015704207,    -0.00737629131,
    4.33680869e-19, 2.71050543e-18, 1.73472348e-18, 1.73472348e-18, 2.16840434e-18, 0,
    0.0625,         0.03125,        0.17578125,     -0.20703125,    -0.23828125,    0.046875};
static const double full_d_out_w[36] = {
    0.027746074,    0.0093254393,  0.0282734338,  0.0310638876,  -0.0622165024, 0.0381487711,
    -0.0954397306,  0.0149251154,  -0.0382697995, -0.0833981684, 0.0994909988,  -0.0227548816,
    0.013125721,    0.0105143983,  0.0488433534,  -0.0163214409, -0.0375304292, 0.0169567831,
    0.0453494719,   -0.0216981108, -0.0122315202, 0.0471428312,  -0.0146470442, -0.0162616842,
    0.000604711107, 0.0104281186,  0.0064951456,  0.0142947058,  -0.0279611454, 0.028220855,
    0.031783016,    -0.0211503603, -0.0232833457, 0.0389576507,  0.00247814491, -0.0212202849};
static const double full_d_out_b[6] = {-0.375, 0.75, -0.25, -0.1875, -0.125, -0.0625};

static float golden_val(size_t i, size_t mul, size_t mod, size_t off, float den)
{
    return (float)((long)((i * mul) % mod) - (long)off) / den;
}

/* Rebuilds the script's inputs (exact dyadic fractions) and compares against nn.MultiheadAttention
 * in double: within float rounding (2e-6 of the largest value of each tensor). */
static void check_golden(size_t B, size_t T, size_t C, size_t H, const char *opts,
                         const double *const want[6])
{
    struct att a;
    att_setup(&a, B, T, C, H, opts, 1);
    for (size_t i = 0; i < a.nx; i++) {
        a.x[i] = golden_val(i, 7, 13, 6, 8);
        a.dy[i] = golden_val(i, 13, 17, 8, 16);
    }
    float *w_in = a.param, *b_in = w_in + 3 * C * C, *w_out = b_in + 3 * C, *b_out = w_out + C * C;
    for (size_t i = 0; i < 3 * C * C; i++)
        w_in[i] = golden_val(i, 5, 11, 5, 16);
    for (size_t i = 0; i < 3 * C; i++)
        b_in[i] = golden_val(i, 3, 7, 3, 32);
    for (size_t i = 0; i < C * C; i++)
        w_out[i] = golden_val(i, 11, 9, 4, 16);
    for (size_t i = 0; i < C; i++)
        b_out[i] = golden_val(i, 2, 5, 2, 32);
    att_forward(&a);
    att_backward(&a);
    a.ctx.overwrite = 1;
    att_weight(&a);
    const float *got[6] = {a.y,
                           a.dx,
                           a.dparam,
                           a.dparam + 3 * C * C,
                           a.dparam + 3 * C * C + 3 * C,
                           a.dparam + 4 * C * C + 3 * C};
    const size_t len[6] = {a.nx, a.nx, 3 * C * C, 3 * C, C * C, C};
    const char *names[6] = {"y",
                            "dx",
                            "in_proj_weight.grad",
                            "in_proj_bias.grad",
                            "out_proj.weight.grad",
                            "out_proj.bias.grad"};
    for (int k = 0; k < 6; k++) {
        double big = 0;
        for (size_t i = 0; i < len[k]; i++)
            big = fmax(big, fabs(want[k][i]));
        for (size_t i = 0; i < len[k]; i++)
            if (!(fabs((double)got[k][i] - want[k][i]) <= 2e-6 * big))
                fail_msg("%s[%zu]: got %.9g, PyTorch %.9g", names[k], i, (double)got[k][i],
                         want[k][i]);
    }
    att_free(&a);
}

static void test_attention_matches_pytorch_multihead_attention(void **state)
{
    (void)state;
    const double *const causal[6] = {causal_y,      causal_dx,      causal_d_in_w,
                                     causal_d_in_b, causal_d_out_w, causal_d_out_b};
    const double *const full[6] = {full_y,      full_dx,      full_d_in_w,
                                   full_d_in_b, full_d_out_w, full_d_out_b};
    check_golden(2, 5, 6, 2, "", causal);
    check_golden(1, 4, 6, 3, "causal=0", full);
}

/* ---- key/value-cache decoding ---- */

/* Decoding tokens 0 .. T-1 one at a time gives the forward's outputs (to float rounding: the
 * products run as other GEMM shapes), and its cache equals one filled from the forward's saved
 * keys and values, bit for bit. */
static void test_decode_with_cache_matches_forward(void **state)
{
    (void)state;
    struct att a;
    att_setup(&a, 1, 150, 10, 5, "", 15);
    a.ctx.training = 0;
    att_forward(&a);
    size_t C = a.C, cache_len = mp_attention_cache_floats(a.l);
    assert_int_equal(cache_len, 2 * a.T * C);
    float *cache = fd_alloc(cache_len), *filled = fd_alloc(cache_len);
    float *scratch = fd_alloc(mp_attention_decode_scratch_floats(a.l)), *y = fd_alloc(C);
    fd_fill_nan(cache, cache_len);
    for (size_t t = 0; t < a.T; t++) {
        mp_attention_decode(a.l, a.param, a.x + t * C, t, cache, scratch, y);
        for (size_t c = 0; c < C; c++) {
            float want = a.y[t * C + c];
            if (!(fabsf(y[c] - want) <= 1e-5f * (1.0f + fabsf(want))))
                fail_msg("token %zu feature %zu: decode %.9g, forward %.9g", t, c, (double)y[c],
                         (double)want);
        }
    }
    fd_fill_nan(filled, cache_len);
    mp_attention_cache_fill(a.l, a.saved, a.T, filled);
    assert_memory_equal(cache, filled, cache_len * sizeof(float));
    free(cache), free(filled), free(scratch), free(y);
    att_free(&a);
}

/* The planner prices attention from its cost: the saved bytes include the H·T·T probabilities,
 * and the causal kernels' flops count only the blocks they compute. */
static void test_attention_cost_counts_probabilities_and_causal_blocks(void **state)
{
    (void)state;
    struct att c, f;
    att_setup(&c, 1, 128, 16, 4, "", 16);
    att_setup(&f, 1, 128, 16, 4, "causal=0", 16);
    struct mp_cost cc = c.l->ops->cost(c.l, 8), cf = f.l->ops->cost(f.l, 8);
    assert_int_equal(cc.saved_bytes, 8 * (7 * 128 * 16 + 4 * 128 * 128) * sizeof(float));
    assert_int_equal(cc.param_bytes, (4 * 16 * 16 + 4 * 16) * sizeof(float));
    assert_true(cc.flops_bwd_input >= cc.flops_fwd);
    assert_true(cc.flops_bwd_weight == cf.flops_bwd_weight);
    att_free(&c), att_free(&f);
    /* hd = 64, so the score products dominate the attention flops: a causal head computes the
     * T(T + 1)/2 scores of the lower triangle, about half of a full head's T·T. */
    const size_t Ts[2] = {128, 512};
    const double lo[2] = {0.48, 0.48}, hi[2] = {0.53, 0.52};
    for (int k = 0; k < 2; k++) {
        att_setup(&c, 1, Ts[k], 128, 2, "", 16);
        att_setup(&f, 1, Ts[k], 128, 2, "causal=0", 16);
        cc = c.l->ops->cost(c.l, 2), cf = f.l->ops->cost(f.l, 2);
        double proj = 2.0 * 2 * (double)Ts[k] * 128 * 4 * 128;
        double r = (cc.flops_fwd - proj) / (cf.flops_fwd - proj);
        if (!(r > lo[k] && r < hi[k]))
            fail_msg("T = %zu: causal / full attention flops %.3f, want (%.2f, %.2f)", Ts[k], r,
                     lo[k], hi[k]);
        att_free(&c), att_free(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_causal_attention_matches_double_reference_odd_sizes),
        cmocka_unit_test(test_full_attention_matches_double_reference),
        cmocka_unit_test(test_attention_dropout_matches_double_reference),
        cmocka_unit_test(test_attention_passes_layer_fd_harness),
        cmocka_unit_test(test_future_token_changes_no_earlier_output_or_gradient),
        cmocka_unit_test(test_attention_dropout_mask_is_a_function_of_ctx_and_sample),
        cmocka_unit_test(test_attention_weight_grad_overwrites_nan_and_accumulates),
        cmocka_unit_test(test_attention_matches_pytorch_multihead_attention),
        cmocka_unit_test(test_decode_with_cache_matches_forward),
        cmocka_unit_test(test_attention_cost_counts_probabilities_and_causal_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
