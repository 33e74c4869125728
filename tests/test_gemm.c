/* mp_gemm: every call path (BLIS's two and mpipe's loops around BLIS's micro-kernel) against a double-accumulated reference on odd shapes, with
 * transposes, leading dimensions wider than the matrices and beta 0 or 1; bitwise determinism;
 * independence from buffer alignment; and the path rule being a fixed function of the shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_gemm.h"
#include "mp_rng.h"

struct shape {
    size_t m, n, k;
};

static const struct shape odd_shapes[] = {
    {1, 1, 1}, {1, 7, 3}, {5, 1, 9}, {3, 4, 1}, {17, 31, 33}, {33, 65, 129},
    {64, 10, 300}, {129, 257, 40}, {250, 37, 513}, {31, 600, 128},
};
#define N_ODD (sizeof odd_shapes / sizeof odd_shapes[0])

static float *fill(size_t n, struct mp_rng *rng)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = 2.0f * mp_rng_uniform(rng) - 1.0f;
    return p;
}

/* Element (i, j) of op(X) for a row-major X with leading dimension ld. */
static double at(const float *x, size_t ld, int trans, size_t i, size_t j)
{
    return trans ? (double)x[j * ld + i] : (double)x[i * ld + j];
}

/* Checks one call of `path` (or mp_gemm's own choice when path < 0) against the reference. */
static void check_one(int path, int ta, int tb, struct shape s, size_t pad, float alpha, float beta)
{
    struct mp_rng rng;
    mp_rng_seed(&rng, 1000 * s.m + 10 * s.n + s.k + (size_t)(ta * 2 + tb));
    size_t ar = ta ? s.k : s.m, ac = ta ? s.m : s.k, br = tb ? s.n : s.k, bc = tb ? s.k : s.n;
    size_t lda = ac + pad, ldb = bc + pad, ldc = s.n + pad;
    float *a = fill(ar * lda, &rng), *b = fill(br * ldb, &rng), *c = fill(s.m * ldc, &rng);
    float *c0 = malloc(s.m * ldc * sizeof(float));
    assert_non_null(c0);
    if (beta == 0.0f) /* beta = 0 means C is written, never read: NaN must not leak through */
        for (size_t i = 0; i < s.m * ldc; i++)
            if (i % ldc < s.n)
                c[i] = NAN;
    memcpy(c0, c, s.m * ldc * sizeof(float));
    if (path < 0)
        mp_gemm(ta, tb, s.m, s.n, s.k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        mp_gemm_path((enum mp_gemm_path)path, ta, tb, s.m, s.n, s.k, alpha, a, lda, b, ldb, beta,
                     c, ldc);
    for (size_t i = 0; i < s.m; i++) {
        for (size_t j = 0; j < ldc; j++) {
            float got = c[i * ldc + j];
            if (j >= s.n) { /* the padding of C's rows is not touched */
                assert_memory_equal(&got, &c0[i * ldc + j], sizeof got);
                continue;
            }
            double ref = 0, mag = 0;
            for (size_t p = 0; p < s.k; p++) {
                double t = at(a, lda, ta, i, p) * at(b, ldb, tb, p, j);
                ref += t;
                mag += fabs(t);
            }
            ref *= alpha;
            if (beta != 0.0f) {
                ref += (double)beta * c0[i * ldc + j];
                mag += fabs((double)c0[i * ldc + j]);
            }
            if (!(fabs(got - ref) <= 1e-5 * mag + 1e-6)) {
                print_error("path %d ta %d tb %d %zux%zux%zu C[%zu,%zu] = %.8g, reference %.8g\n",
                            path, ta, tb, s.m, s.n, s.k, i, j, (double)got, ref);
                fail();
            }
        }
    }
    free(a);
    free(b);
    free(c);
    free(c0);
}

static void test_both_paths_match_double_reference_on_odd_shapes(void **state)
{
    (void)state;
    for (int path = -1; path < MP_GEMM_PATH_COUNT; path++)
        for (size_t i = 0; i < N_ODD; i++)
            for (int t = 0; t < 4; t++) {
                check_one(path, t >> 1, t & 1, odd_shapes[i], 0, 1.0f, 0.0f);
                check_one(path, t >> 1, t & 1, odd_shapes[i], 0, 1.0f, 1.0f);
            }
}

static void test_leading_dims_wider_than_rows_are_honoured(void **state)
{
    (void)state;
    for (int path = 0; path < MP_GEMM_PATH_COUNT; path++)
        for (size_t i = 0; i < N_ODD; i++)
            for (int t = 0; t < 4; t++) {
                check_one(path, t >> 1, t & 1, odd_shapes[i], 5, 0.5f, 1.0f);
                check_one(path, t >> 1, t & 1, odd_shapes[i], 16, -2.0f, 0.0f);
            }
}

/* Runs one GEMM on copies of (a, b, c) placed `off` floats into fresh buffers; returns C. */
static float *run_at_offset(int path, int ta, int tb, struct shape s, const float *a,
                            const float *b, const float *c, size_t off)
{
    size_t na = s.m * s.k, nb = s.k * s.n, nc = s.m * s.n;
    float *ba = malloc((na + off) * sizeof(float)), *bb = malloc((nb + off) * sizeof(float));
    float *bc = malloc((nc + off) * sizeof(float)), *out = malloc(nc * sizeof(float));
    assert_true(ba && bb && bc && out);
    memcpy(ba + off, a, na * sizeof(float));
    memcpy(bb + off, b, nb * sizeof(float));
    memcpy(bc + off, c, nc * sizeof(float));
    mp_gemm_path((enum mp_gemm_path)path, ta, tb, s.m, s.n, s.k, 1.0f, ba + off, ta ? s.m : s.k,
                 bb + off, tb ? s.k : s.n, 1.0f, bc + off, s.n);
    memcpy(out, bc + off, nc * sizeof(float));
    free(ba);
    free(bb);
    free(bc);
    return out;
}

static const struct shape big_shapes[] = {
    {64, 1024, 784}, {1024, 784, 64}, {64, 196, 800}, {800, 196, 64}, {37, 10, 1024}, {3, 5, 7},
};

static void test_results_are_bitwise_deterministic_and_alignment_independent(void **state)
{
    (void)state;
    struct mp_rng rng;
    mp_rng_seed(&rng, 42);
    for (size_t i = 0; i < sizeof big_shapes / sizeof big_shapes[0]; i++) {
        struct shape s = big_shapes[i];
        float *a = fill(s.m * s.k, &rng), *b = fill(s.k * s.n, &rng), *c = fill(s.m * s.n, &rng);
        for (int path = 0; path < MP_GEMM_PATH_COUNT; path++)
            for (int t = 0; t < 4; t++) {
                float *ref = run_at_offset(path, t >> 1, t & 1, s, a, b, c, 0);
                float *again = run_at_offset(path, t >> 1, t & 1, s, a, b, c, 0);
                assert_memory_equal(ref, again, s.m * s.n * sizeof(float));
                free(again);
                /* 1..3 floats off a 16-byte malloc boundary, and 16 (64 bytes: a new cache line) */
                static const size_t offs[] = {1, 2, 3, 5, 16};
                for (size_t o = 0; o < sizeof offs / sizeof offs[0]; o++) {
                    float *moved = run_at_offset(path, t >> 1, t & 1, s, a, b, c, offs[o]);
                    assert_memory_equal(ref, moved, s.m * s.n * sizeof(float));
                    free(moved);
                }
                free(ref);
            }
        free(a);
        free(b);
        free(c);
    }
}

static void test_mp_gemm_runs_the_path_its_rule_names(void **state)
{
    (void)state;
    struct mp_rng rng;
    mp_rng_seed(&rng, 7);
    for (size_t i = 0; i < sizeof big_shapes / sizeof big_shapes[0]; i++) {
        struct shape s = big_shapes[i];
        float *a = fill(s.m * s.k, &rng), *b = fill(s.k * s.n, &rng);
        float *c1 = calloc(s.m * s.n, sizeof(float)), *c2 = calloc(s.m * s.n, sizeof(float));
        assert_true(c1 && c2);
        for (int t = 0; t < 4; t++) {
            int ta = t >> 1, tb = t & 1;
            size_t lda = ta ? s.m : s.k, ldb = tb ? s.k : s.n;
            enum mp_gemm_path p = mp_gemm_path_for_op(ta, tb, s.m, s.n, s.k);
            mp_gemm(ta, tb, s.m, s.n, s.k, 1.0f, a, lda, b, ldb, 0.0f, c1, s.n);
            mp_gemm_path(p, ta, tb, s.m, s.n, s.k, 1.0f, a, lda, b, ldb, 0.0f, c2, s.n);
            assert_memory_equal(c1, c2, s.m * s.n * sizeof(float));
        }
        free(a);
        free(b);
        free(c1);
        free(c2);
    }
}

/* The rule is a table of the measurements in mp_gemm.c; these are its documented regimes. */
static void test_path_rule_is_a_fixed_function_of_the_shape(void **state)
{
    (void)state;
    const char *arch = mp_gemm_arch();
    if (strcmp(arch, "skx") == 0) {
        /* No single-precision sup kernels there: every shape takes mpipe's loops around the
         * packed micro-kernel (BLIS's skx MR of 32 has no packing kernel). */
        assert_int_equal(mp_gemm_path_for(1, 1, 1), MP_GEMM_LOOPS);
        assert_int_equal(mp_gemm_path_for_op(0, 1, 256, 10, 1024), MP_GEMM_LOOPS);
        assert_int_equal(mp_gemm_path_for_op(1, 0, 1024, 784, 32), MP_GEMM_LOOPS);
        return;
    }
    assert_int_equal(mp_gemm_path_for(1, 1, 1), MP_GEMM_CBLAS);
    /* BLIS's packed path, or mpipe's loops around it where they serve this configuration. */
    enum mp_gemm_path packed = mp_gemm_reuse_room(1) ? MP_GEMM_LOOPS : MP_GEMM_NATIVE;
    if (strncmp(arch, "zen", 3) == 0) {
        /* AMD: wide C to the packed path, also without a transpose (mpipe's loops around the
         * same micro-kernel where they serve the configuration); the CNN's shapes to sup. */
        assert_int_equal(mp_gemm_path_for(256, 1024, 1024), packed);
        assert_int_equal(mp_gemm_path_for_op(0, 1, 32, 1024, 784), packed);
        assert_int_equal(mp_gemm_path_for_op(0, 1, 256, 10, 1024), MP_GEMM_CBLAS); /* thin n */
        assert_int_equal(mp_gemm_path_for_op(1, 0, 800, 196, 64), MP_GEMM_CBLAS);
        assert_int_equal(mp_gemm_path_for(64, 196, 800), MP_GEMM_CBLAS);
        assert_int_equal(mp_gemm_path_for_op(0, 1, 64, 800, 196), packed);
        for (int i = 0; i < 3; i++) /* asked again, the same answer: nothing is timed */
            assert_int_equal(mp_gemm_path_for(128, 1024, 1024), packed);
        return;
    }
    assert_int_equal(mp_gemm_path_for(256, 1024, 1024), MP_GEMM_CBLAS);
    assert_int_equal(mp_gemm_path_for_op(0, 1, 256, 10, 1024), MP_GEMM_CBLAS);   /* thin n */
    assert_int_equal(mp_gemm_path_for_op(0, 1, 128, 1024, 784), packed); /* fwd */
    assert_int_equal(mp_gemm_path_for_op(0, 1, 32, 1024, 784), MP_GEMM_CBLAS);
    assert_int_equal(mp_gemm_path_for_op(1, 0, 1024, 784, 32), packed); /* dW */
    assert_int_equal(mp_gemm_path_for_op(1, 0, 800, 196, 64), MP_GEMM_CBLAS);
    for (int i = 0; i < 3; i++) /* asked again, the same answer: nothing is timed */
        assert_int_equal(mp_gemm_path_for_op(0, 1, 128, 1024, 784), packed);
}

static void test_path_names_are_stable(void **state)
{
    (void)state;
    assert_string_equal(mp_gemm_path_name(MP_GEMM_CBLAS), "cblas");
    assert_string_equal(mp_gemm_path_name(MP_GEMM_NATIVE), "native");
    assert_string_equal(mp_gemm_path_name(MP_GEMM_LOOPS), "mpipe");
}

/* mpipe's loops (mp_gemm_loops.c) block the problem as BLIS does and call its micro-kernel on
 * the same micro-panels, so they return BLIS's native bits, on any shape: edge tiles, a last k
 * block BLIS merges (k = 784: 384 + 400; k = 2000: four of 384 and 464), each transpose, buffers
 * at two alignments. Where the loops do not serve the configuration the path is the native one,
 * and this holds trivially. */
static void test_loops_give_blis_native_bits(void **state)
{
    (void)state;
    static const struct shape shapes[] = {
        {256, 1024, 1024}, {256, 1024, 784}, {1024, 784, 256}, {17, 31, 33}, {250, 37, 513},
        {129, 257, 40},    {64, 64, 2000},   {33, 481, 385},  {2, 2, 1},
    };
    struct mp_rng rng;
    mp_rng_seed(&rng, 12);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        struct shape s = shapes[i];
        float *a = fill(s.m * s.k, &rng), *b = fill(s.k * s.n, &rng), *c = fill(s.m * s.n, &rng);
        for (int t = 0; t < 4; t++)
            for (size_t off = 0; off < 2; off++) {
                float *c1 = run_at_offset(MP_GEMM_NATIVE, t >> 1, t & 1, s, a, b, c, off);
                float *c2 = run_at_offset(MP_GEMM_LOOPS, t >> 1, t & 1, s, a, b, c, off);
                if (memcmp(c1, c2, s.m * s.n * sizeof(float)))
                    fail_msg("%zux%zux%zu ta %d tb %d offset %zu: loops differ from native",
                             s.m, s.n, s.k, t >> 1, t & 1, off);
                free(c1);
                free(c2);
            }
        free(a);
        free(b);
        free(c);
    }
}

/* C = op(A) op(B) + C through the loops, on copies of a and c; op(B) read from b in place. */
static float *run_in_place_b(int ta, int tb, struct shape s, const float *a, const float *b,
                             const float *c)
{
    float *out = malloc(s.m * s.n * sizeof(float));
    assert_non_null(out);
    memcpy(out, c, s.m * s.n * sizeof(float));
    mp_gemm_path(MP_GEMM_LOOPS, ta, tb, s.m, s.n, s.k, 1.0f, a, ta ? s.m : s.k, b,
                 tb ? s.k : s.n, 1.0f, out, s.n);
    return out;
}

/* Packed-weight reuse (mp_gemm_reuse_begin): a B operand in the fixed range is packed once per
 * scope and reused, with the bits of a call outside any scope; a new scope packs again (the
 * weights changed between steps); operands outside the range, or past the pool's room, are packed
 * per call. The shapes cover several k blocks (k > KC), several row blocks of A' (n > MC) and
 * several column blocks of C' (m > NC, where one call reuses its own packing). Evicting the pool
 * from the caches between two calls changes nothing but time. */
static void test_reused_packed_weights_give_the_same_bits(void **state)
{
    (void)state;
    if (!mp_gemm_reuse_room(1))
        skip(); /* the loops path does not run on this BLIS configuration */
    static const struct shape shapes[] = {{32, 1024, 1024}, {64, 1000, 784}, {3200, 70, 40},
                                          {33, 481, 385}};
    struct mp_rng rng;
    mp_rng_seed(&rng, 13);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        struct shape s = shapes[i];
        for (int t = 0; t < 4; t++) {
            int ta = t >> 1, tb = t & 1;
            float *x1 = fill(s.m * s.k, &rng), *x2 = fill(s.m * s.k, &rng);
            float *w = fill(s.k * s.n, &rng), *c = fill(s.m * s.n, &rng);
            float *want1 = run_in_place_b(ta, tb, s, x1, w, c);
            float *want2 = run_in_place_b(ta, tb, s, x2, w, c);
            unsigned long long p0, r0, p1, r1;
            mp_gemm_reuse_stats(&p0, &r0);
            mp_gemm_reuse_begin(w, s.k * s.n, mp_gemm_reuse_room(s.k * s.n));
            float *got1 = run_in_place_b(ta, tb, s, x1, w, c);
            mp_gemm_reuse_evict(); /* as calibration times it: the copy leaves the caches */
            float *got2 = run_in_place_b(ta, tb, s, x2, w, c);
            mp_gemm_reuse_end();
            mp_gemm_reuse_stats(&p1, &r1);
            assert_int_equal(p1 - p0, 1); /* packed once, */
            assert_int_equal(r1 - r0, 1); /* then served from the pool */
            assert_memory_equal(got1, want1, s.m * s.n * sizeof(float));
            assert_memory_equal(got2, want2, s.m * s.n * sizeof(float));
            /* The next step's weights: a new scope must not serve the old packing. */
            for (size_t e = 0; e < s.k * s.n; e++)
                w[e] = -w[e];
            float *want3 = run_in_place_b(ta, tb, s, x1, w, c);
            mp_gemm_reuse_begin(w, s.k * s.n, mp_gemm_reuse_room(s.k * s.n));
            float *got3 = run_in_place_b(ta, tb, s, x1, w, c);
            mp_gemm_reuse_end();
            assert_memory_equal(got3, want3, s.m * s.n * sizeof(float));
            /* B outside the range (an activation), and a pool with no room: packed per call. */
            mp_gemm_reuse_stats(&p0, &r0);
            mp_gemm_reuse_begin(x2, s.m * s.k, mp_gemm_reuse_room(s.m * s.k));
            free(run_in_place_b(ta, tb, s, x1, w, c));
            mp_gemm_reuse_end();
            mp_gemm_reuse_begin(w, s.k * s.n, 64);
            free(run_in_place_b(ta, tb, s, x1, w, c));
            free(run_in_place_b(ta, tb, s, x1, w, c));
            mp_gemm_reuse_end();
            mp_gemm_reuse_stats(&p1, &r1);
            assert_int_equal(p1 - p0, 0);
            assert_int_equal(r1 - r0, 0);
            free(x1), free(x2), free(w), free(c);
            free(want1), free(want2), free(want3), free(got1), free(got2), free(got3);
        }
    }
}

/* mp_gemm.c's rule rests on this: skx has no single-precision sup kernels, so there the two paths
 * are one and the same computation. */
static void test_on_skx_both_paths_give_the_same_bits(void **state)
{
    (void)state;
    if (strcmp(mp_gemm_arch(), "skx") != 0)
        skip();
    struct mp_rng rng;
    mp_rng_seed(&rng, 11);
    for (size_t i = 0; i < sizeof big_shapes / sizeof big_shapes[0]; i++) {
        struct shape s = big_shapes[i];
        float *a = fill(s.m * s.k, &rng), *b = fill(s.k * s.n, &rng), *c = fill(s.m * s.n, &rng);
        for (int t = 0; t < 4; t++) {
            float *c1 = run_at_offset(MP_GEMM_CBLAS, t >> 1, t & 1, s, a, b, c, 0);
            float *c2 = run_at_offset(MP_GEMM_NATIVE, t >> 1, t & 1, s, a, b, c, 0);
            assert_memory_equal(c1, c2, s.m * s.n * sizeof(float));
            free(c1);
            free(c2);
        }
        free(a);
        free(b);
        free(c);
    }
}

static void test_arch_names_a_blis_configuration(void **state)
{
    (void)state;
    const char *arch = mp_gemm_arch();
    assert_non_null(arch);
    assert_true(strlen(arch) > 0);
    assert_string_equal(arch, mp_gemm_arch());
}

/* An Intel or AMD core with AVX2 and FMA never runs BLIS's reference kernels: BLIS 0.9 falls
 * back to `generic` on CPUs it does not know (AMD family 0x1A: 36 GFLOPS against skx's 197
 * there), and mp_gemm must name a vector configuration for it. A user's BLIS_ARCH_TYPE wins. */
static int user_arch; /* BLIS_ARCH_TYPE was in the environment before mp_gemm set its own */

static void test_x86_with_avx2_never_runs_the_reference_kernels(void **state)
{
    (void)state;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    /* Other vendors (Hygon, Zhaoxin) are BLIS's own business: no sub-configuration knows them. */
    if (user_arch || !(__builtin_cpu_is("intel") || __builtin_cpu_is("amd")) ||
        !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        skip();
    assert_string_not_equal(mp_gemm_arch(), "generic");
#else
    skip();
#endif
}

/* The triangular entries for causal attention against a double-precision reference on odd
 * shapes with strided views: gemmt writes the lower triangle only (a sentinel above it survives),
 * trmm reads only L's lower triangle (NaN above it is ignored), both transposes. */
static void test_triangular_products_match_double_reference(void **state)
{
    (void)state;
    struct mp_rng rng;
    mp_rng_seed(&rng, 77);
    const size_t ns[3] = {1, 37, 131}, ks[3] = {3, 5, 64};
    for (int c = 0; c < 3; c++) {
        size_t n = ns[c], k = ks[c], ld = k + 3, ldc = n + 2;
        float *a = malloc(n * ld * sizeof *a), *b = malloc(n * ld * sizeof *b);
        float *l = malloc(n * ldc * sizeof *l), *out = malloc(n * ldc * sizeof *out);
        assert_non_null(a), assert_non_null(b), assert_non_null(l), assert_non_null(out);
        for (size_t i = 0; i < n * ld; i++)
            a[i] = 2.0f * mp_rng_uniform(&rng) - 1.0f, b[i] = 2.0f * mp_rng_uniform(&rng) - 1.0f;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < ldc; j++)
                l[i * ldc + j] = j <= i ? 2.0f * mp_rng_uniform(&rng) - 1.0f : NAN;
        /* C = 0.5 A·Bᵀ, lower triangle: A, B (n, k) with leading dimension ld */
        for (size_t i = 0; i < n * ldc; i++)
            out[i] = 7.0f;
        mp_gemmt_lower(0, 1, n, k, 0.5f, a, ld, b, ld, 0.0f, out, ldc);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double want = 0;
                for (size_t e = 0; e < k; e++)
                    want += 0.5 * (double)a[i * ld + e] * (double)b[j * ld + e];
                if (j > i)
                    assert_true(out[i * ldc + j] == 7.0f);
                else
                    assert_true(fabs(out[i * ldc + j] - want) <= 1e-5 * (1 + fabs(want)));
            }
        /* C = 2 op(L)·B: L (n, n) lower, B (n, k) with leading dimension ld, C (n, k) */
        for (int t = 0; t < 2; t++) {
            mp_trmm_lower(t, n, k, 2.0f, l, ldc, b, ld, 0.0f, out, ldc);
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < k; j++) {
                    double want = 0;
                    for (size_t e = 0; e < n; e++) {
                        size_t r = t ? e : i, col = t ? i : e; /* op(L)[i][e] */
                        if (col <= r)
                            want += 2.0 * (double)l[r * ldc + col] * (double)b[e * ld + j];
                    }
                    assert_true(fabs(out[i * ldc + j] - want) <= 1e-5 * (1 + fabs(want)));
                }
        }
        free(a), free(b), free(l), free(out);
    }
}

/* test_gemm_skx (tests/CMakeLists.txt): the same tests on BLIS's skx kernels, and so on mpipe's
 * loops and their packed-weight reuse, on CPUs with AVX-512 where BLIS picks another
 * configuration (a Zen4 gets zen3). BLIS 0.9 reads BLIS_ARCH_TYPE as its arch_t number, where skx
 * is 0; the run checks that skx is what it got. */
static int ask_for_skx(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd")) {
        setenv("BLIS_ARCH_TYPE", "0", 1);
        if (strcmp(mp_gemm_arch(), "skx") == 0)
            return 0;
        fprintf(stderr, "test_gemm: asked BLIS for skx, got %s\n", mp_gemm_arch());
        return 1;
    }
#endif
    fprintf(stderr, "test_gemm: skipped: the CPU lacks the AVX-512 subsets skx needs\n");
    return 77;
}

int main(void)
{
    user_arch = getenv("BLIS_ARCH_TYPE") != NULL;
    if (getenv("MP_TEST_GEMM_SKX")) {
        int rc = ask_for_skx();
        if (rc)
            return rc;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_paths_match_double_reference_on_odd_shapes),
        cmocka_unit_test(test_leading_dims_wider_than_rows_are_honoured),
        cmocka_unit_test(test_results_are_bitwise_deterministic_and_alignment_independent),
        cmocka_unit_test(test_mp_gemm_runs_the_path_its_rule_names),
        cmocka_unit_test(test_path_rule_is_a_fixed_function_of_the_shape),
        cmocka_unit_test(test_path_names_are_stable),
        cmocka_unit_test(test_loops_give_blis_native_bits),
        cmocka_unit_test(test_reused_packed_weights_give_the_same_bits),
        cmocka_unit_test(test_on_skx_both_paths_give_the_same_bits),
        cmocka_unit_test(test_arch_names_a_blis_configuration),
        cmocka_unit_test(test_x86_with_avx2_never_runs_the_reference_kernels),
        cmocka_unit_test(test_triangular_products_match_double_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
