/* With mp_gemm_loops.c, the only file that includes blis.h: row-major single-precision GEMM
 * through three call paths (cblas_sgemm, which takes BLIS's small/unpacked "sup" kernels;
 * bli_sgemm_ex with sup disabled, the packed large-kernel path; and mpipe's own loops and packing
 * around BLIS's micro-kernel, mp_gemm_loops.c), the fixed shape rule that picks between them, and
 * the one-time BLIS set-up (sub-configuration, one thread). The rule is a table of measurements,
 * never a timing taken at run time (DESIGN.md §6): a shape always runs the same kernel, same
 * bits. */
#include "mp_gemm.h"
#include "mp_gemm_loops.h"

#include <blis.h>
#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static rntm_t native_rntm;
static arch_t active_arch;
static int loops_ok; /* mp__gemm_loops serves this BLIS configuration */
static pthread_once_t native_once = PTHREAD_ONCE_INIT;

/* BLIS 0.9 picks `skx` (AVX-512 kernels) only when it can tell the core has two 512-bit FMA units;
 * under a hypervisor that hides the model it says "Number of FMA units unknown" and falls back to
 * `haswell` (AVX2). Measured on a 2-core Xeon VM, skx runs the MLP's GEMMs at 130-160 GFLOPS
 * against haswell's 95-110 (one 256-sample MLP step: 50 ms against 61 ms), so on an Intel CPU with
 * the AVX-512 subsets skx needs we ask for it, through BLIS's own BLIS_ARCH_TYPE, before BLIS
 * initialises. A BLIS_ARCH_TYPE set by the user wins. A core with one 512-bit FMA unit has the
 * same peak either way, so the choice should cost nothing there (not measured: no such machine).
 *
 * AMD: BLIS 0.9 knows the families up to 0x19 (Zen3). On a newer one it falls back to `generic`,
 * its reference kernels: on a 2-core EPYC of family 0x1A (Zen5, full-width AVX-512), sgemm
 * 256x1024x1024 ran at 36 GFLOPS generic, 60-105 zen3, 106 haswell and 197 skx. So a family of
 * 0x1A or later gets skx when it has the AVX-512 subsets, else zen3 (AVX2 + FMA). Zen4 (0x19 with
 * double-pumped AVX-512) is left to BLIS: not measured here. */
static unsigned amd_family(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    unsigned base = (a >> 8) & 0xf, ext = (a >> 20) & 0xff;
    return base == 0xf ? base + ext : base;
}

static int has_skx_subsets(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512cd");
}

static void choose_subconfig(void)
{
#if defined(__x86_64__) || defined(__i386__)
    if (getenv("BLIS_ARCH_TYPE"))
        return;
    __builtin_cpu_init();
    int arch = -1;
#if defined(BLIS_CONFIG_SKX)
    if (__builtin_cpu_is("intel") && has_skx_subsets())
        arch = BLIS_ARCH_SKX;
#endif
    if (__builtin_cpu_is("amd") && amd_family() >= 0x1a) {
#if defined(BLIS_CONFIG_ZEN3)
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            arch = BLIS_ARCH_ZEN3;
#endif
#if defined(BLIS_CONFIG_SKX)
        if (has_skx_subsets())
            arch = BLIS_ARCH_SKX;
#endif
    }
    if (arch < 0)
        return;
    char id[16];
    snprintf(id, sizeof id, "%d", arch);
    setenv("BLIS_ARCH_TYPE", id, 0);
#endif
}

/* Runs once before any other BLIS call (this file is the only door to BLIS). One BLIS thread per
 * rank (DESIGN.md §6): ranks share the cores, so BLIS threads would only oversubscribe them; set
 * globally, so both paths see it whatever the environment says. */
static void native_setup(void)
{
    choose_subconfig();
    bli_init();
    bli_thread_set_num_threads(1);
    bli_rntm_init_from_global(&native_rntm);
    bli_rntm_disable_l3_sup(&native_rntm);
    active_arch = bli_arch_query_id();
    loops_ok = mp__gemm_loops_available();
}

const char *mp_gemm_path_name(enum mp_gemm_path p)
{
    switch (p) {
    case MP_GEMM_CBLAS: return "cblas";
    case MP_GEMM_NATIVE: return "native";
    case MP_GEMM_LOOPS: return "mpipe";
    default: return "?";
    }
}

/* The rule, per BLIS sub-configuration, from measurements on this machine (2-core Xeon VM, 1
 * thread, best of 3 runs of C += op(A)·op(B)).
 *
 * skx: BLIS 0.9 has no single-precision sup kernels for skx, so both paths run the same packed
 * AVX-512 kernels and return the same bits (checked on every MLP and CNN shape). Both also pack
 * the 32-wide operand element by element (mp_gemm_loops.c), so skx takes mpipe's loops, which
 * return the same bits again (test_gemm) with packing that runs x·Wᵀ at 1.2-1.6x. GFLOPS of the
 * BLIS paths (two runs): dense 1024->1024 at B=256 fwd 128-142 / dx 136-148 / dW 145-162; at
 * B=32 48-54 / 73-80 / 110-121; 784->1024 at B=1024 fwd 143-165; conv2 per sample fwd 94-101 /
 * dcol 122-128 / dW 93; conv1 per sample fwd 65 / dW 32; 1024->10 fwd 14-25.
 * Thin shapes lose against haswell's sup kernels (1024->10 fwd 70-75, conv1 dW 71-80), but they
 * are ~1% of the MLP's and ~3% of the CNN's FLOPs; the wide ones gain 30-45%.
 *
 * haswell (AVX2 machines, or this one with BLIS_ARCH_TYPE naming haswell); GFLOPS cblas / native:
 *
 *   shape (role)                      m     n     k   op     cblas native  winner
 *   dense 784->1024 fwd  B=32        32  1024   784   A·Bt    75.3  60.0   cblas
 *   dense 784->1024 fwd  B=128      128  1024   784   A·Bt    84.2  93.5   native
 *   dense 1024->1024 fwd B=128      128  1024  1024   A·Bt    88.2  95.1   native
 *   dense 1024->1024 fwd B=256      256  1024  1024   A·Bt   101.3 102.8   native
 *   dense 3136->1024 fwd B=128      128  1024  3136   A·Bt    85.7  90.6   native
 *   dense 1024->1024 dx  B=32        32  1024  1024   A·B     86.3  54.5   cblas
 *   dense 1024->1024 dx  B=128      128  1024  1024   A·B     96.8  88.7   cblas
 *   dense 3136->1024 dx  B=128      128  3136  1024   A·B     97.7  79.3   cblas
 *   dense 1024->1024 dW  B=32      1024  1024    32   At·B    67.2  84.9   native
 *   dense 1024->1024 dW  B=128     1024  1024   128   At·B    76.4 109.6   native
 *   dense 1024->1024 dW  B=512     1024  1024   512   At·B   108.1 109.7   native
 *   dense 1024->10 (all roles)       ..    10    ..   any    ~80   ~40    cblas
 *   conv1 fwd per sample             32   784    25   A·B     99.3  61.2   cblas
 *   conv1 dW per sample              32    25   784   A·Bt    80.0  36.1   cblas
 *   conv2 fwd per sample             64   196   800   A·B    102.9  88.5   cblas
 *   conv2 dcol per sample           800   196    64   At·B   102.1  94.2   cblas
 *   conv2 dcol 4 samples            800   784    64   At·B   100.5 106.1   native
 *   conv2 dW per sample              64   800   196   A·Bt    84.1  98.6   native
 *   conv2 dW 4 samples               64   800   784   A·Bt    86.2  80.8   cblas
 *
 * So: a thin dimension (< 32) always goes to sup; A·B (no transpose) always goes to sup; At·B goes
 * to the packed path once n is wide; A·Bt goes to the packed path for tall C or a short inner
 * dimension. Elsewhere the two paths were within a few percent, about the run-to-run noise.
 *
 * zen, zen2, zen3 (AMD; measured on a 2-core EPYC Zen3 VM, `mpipe bench gemm`, 1 thread). There
 * the sup path is much slower on the MLP's wide shapes, A·B included, unlike haswell on Intel;
 * GFLOPS cblas / native:
 *
 *   shape (role)                      m     n     k   op     cblas native  winner
 *   dense 1024->1024 fwd  B=32        32  1024  1024   A·Bt    34.6  51.9   native
 *   dense 1024->1024 fwd  B=256      256  1024  1024   A·Bt    31-51 69-73  native
 *   dense 784->1024 fwd   B=512      512  1024   784   A·Bt    71.3  62.2   cblas (lone case)
 *   dense 784->1024 dx    B=32        32   784  1024   A·B     59.9  56.9   cblas (5%, noise)
 *   dense 1024->1024 dx   B=64        64  1024  1024   A·B     44.1  58.9   native
 *   dense 1024->1024 dx   B=256      256  1024  1024   A·B     50-54 70-79  native
 *   dense 1024->1024 dW   B=64      1024  1024    64   At·B    29.3  58.2   native
 *   dense 1024->1024 dW   B=256     1024  1024   256   At·B    75.0  75.3   (tie)
 *   dense 3136->1024 dx   B=128      128  3136  1024   A·B     56.7  58.0   native
 *   dense 1024->10 (all roles)       ..    10    ..   any    35-48 18-35  cblas
 *   conv1 fwd / dW per sample        32 784/25 25/784 A·B/A·Bt 52/50 34/18  cblas
 *   conv2 fwd per sample             64   196   800   A·B     65.5  57.6   cblas
 *   conv2 dcol per sample           800   196    64   At·B    66.1  59.3   cblas
 *   conv2 dW per sample              64   800   196   A·Bt    51.1  67.6   native
 *
 * So on zen: thin (< 32) goes to sup; a wide C (n >= 512) goes to the packed path whenever an
 * operand is transposed or the inner dimension is long; the rest (the CNN's per-sample shapes)
 * goes to sup. */
static enum mp_gemm_path rule_zen(int trans_a, int trans_b, size_t n, size_t k)
{
    if (n >= 512 && (trans_a || trans_b || k >= 512))
        return MP_GEMM_NATIVE;
    return MP_GEMM_CBLAS;
}

static int arch_is_zen(arch_t a)
{
    return a == BLIS_ARCH_ZEN || a == BLIS_ARCH_ZEN2 || a == BLIS_ARCH_ZEN3;
}

static enum mp_gemm_path rule_blis(int trans_a, int trans_b, size_t m, size_t n, size_t k)
{
    pthread_once(&native_once, native_setup);
    if (active_arch == BLIS_ARCH_SKX)
        return loops_ok ? MP_GEMM_LOOPS : MP_GEMM_NATIVE;
    size_t lo = m < n ? m : n;
    if (k < lo)
        lo = k;
    if (lo < 32)
        return MP_GEMM_CBLAS;
    if (arch_is_zen(active_arch))
        return rule_zen(trans_a, trans_b, n, k);
    if (trans_a)
        return n >= 512 ? MP_GEMM_NATIVE : MP_GEMM_CBLAS;
    if (trans_b)
        return (m >= 128 || k <= 256) ? MP_GEMM_NATIVE : MP_GEMM_CBLAS;
    return MP_GEMM_CBLAS;
}

/* Where mpipe's loops serve the configuration, they take every shape the rule sends to BLIS's
 * packed path: the same micro-kernel on the same blocks, so the same bits (test_gemm), and a
 * weight packed once a step instead of once a micro-batch (mp_gemm_reuse_begin). On the zen3
 * kernels of an EPYC Zen4 (one core, alternating builds): a 1-rank MLP step at 8 micro-batches of
 * 32 1.13x, at one micro-batch of 256 1.01x, GPT at 4 micro-batches 1.00x. */
static enum mp_gemm_path rule(int trans_a, int trans_b, size_t m, size_t n, size_t k)
{
    enum mp_gemm_path p = rule_blis(trans_a, trans_b, m, n, k);
    return p == MP_GEMM_NATIVE && loops_ok ? MP_GEMM_LOOPS : p;
}

enum mp_gemm_path mp_gemm_path_for(size_t m, size_t n, size_t k) { return rule(0, 0, m, n, k); }

enum mp_gemm_path mp_gemm_path_for_op(int trans_a, int trans_b, size_t m, size_t n, size_t k)
{
    return rule(trans_a, trans_b, m, n, k);
}

static void gemm_cblas(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                       size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (f77_int)m, (f77_int)n, (f77_int)k, alpha, a, (f77_int)lda, b, (f77_int)ldb, beta,
                c, (f77_int)ldc);
}

/* Row-major op(A) with leading dimension lda is, to BLIS, a matrix with row stride lda and column
 * stride 1; a transpose just swaps the two strides, so no trans_t flag is needed. */
static void gemm_native(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                        size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    rntm_t rntm = native_rntm; /* BLIS may write to the rntm it is given: keep the template clean */
    inc_t rsa = ta ? 1 : (inc_t)lda, csa = ta ? (inc_t)lda : 1;
    inc_t rsb = tb ? 1 : (inc_t)ldb, csb = tb ? (inc_t)ldb : 1;
    bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)m, (dim_t)n, (dim_t)k, &alpha,
                 (float *)a, rsa, csa, (float *)b, rsb, csb, &beta, c, (inc_t)ldc, 1, NULL, &rntm);
}

/* One row or one column of C, whichever path is asked: BLIS's gemv. The GEMM paths would pad the
 * single row to a whole micro-tile (32 rows on skx) and pack all of B for it: measured on one core
 * (a token of `mpipe generate` on models/gpt.mp), 1 x 768 x 256 took 207 µs as a GEMM and 9-11 µs
 * as a gemv, 1 x 256 x 1024 649 µs and 11 µs. A fixed function of the shape, like the rule. */
static void gemv(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                 size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    rntm_t rntm = native_rntm;
    if (m == 1) { /* c (n) = alpha op(B)ᵀ a + beta c: op(B)ᵀ (n, k), a row of A the vector */
        inc_t rs = tb ? (inc_t)ldb : 1, cs = tb ? 1 : (inc_t)ldb;
        bli_sgemv_ex(BLIS_NO_TRANSPOSE, BLIS_NO_CONJUGATE, (dim_t)n, (dim_t)k, &alpha, (float *)b,
                     rs, cs, (float *)a, ta ? (inc_t)lda : 1, &beta, c, 1, NULL, &rntm);
    } else { /* c (m) = alpha op(A) b + beta c: a column of B the vector, c strided by ldc */
        inc_t rs = ta ? 1 : (inc_t)lda, cs = ta ? (inc_t)lda : 1;
        bli_sgemv_ex(BLIS_NO_TRANSPOSE, BLIS_NO_CONJUGATE, (dim_t)m, (dim_t)k, &alpha, (float *)a,
                     rs, cs, (float *)b, tb ? 1 : (inc_t)ldb, &beta, c, (inc_t)ldc, NULL, &rntm);
    }
}

void mp_gemm_path(enum mp_gemm_path path, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                  float alpha, const float *a, size_t lda, const float *b, size_t ldb, float beta,
                  float *c, size_t ldc)
{
    pthread_once(&native_once, native_setup);
    if (m == 0 || n == 0)
        return;
    /* BLIS treats k == 0 as C = beta·C; so do we, but without reading A or B. */
    if (m == 1 || n == 1)
        gemv(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else if (path == MP_GEMM_LOOPS && loops_ok && k > 0)
        mp__gemm_loops(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else if (path == MP_GEMM_NATIVE || path == MP_GEMM_LOOPS)
        gemm_native(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        gemm_cblas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void mp_gemm_reuse_begin(const float *lo, size_t n, size_t room_bytes)
{
    pthread_once(&native_once, native_setup);
    if (loops_ok && lo)
        mp__gemm_loops_reuse(lo, n, room_bytes / sizeof(float));
}

void mp_gemm_reuse_end(void)
{
    if (loops_ok)
        mp__gemm_loops_reuse(NULL, 0, 0);
}

size_t mp_gemm_reuse_room(size_t n_param)
{
    pthread_once(&native_once, native_setup);
    return loops_ok ? (2 * n_param + ((size_t)1 << 18)) * sizeof(float) : 0;
}

void mp_gemm_reuse_evict(void)
{
    if (loops_ok)
        mp__gemm_loops_reuse_evict();
}

void mp_gemm_reuse_stats(unsigned long long *packed, unsigned long long *reused)
{
    *packed = *reused = 0;
    if (loops_ok)
        mp__gemm_loops_reuse_stats(packed, reused);
}

static struct mp_gemm_rec *recorder;

void mp_gemm_record(struct mp_gemm_rec *rec) { recorder = rec; }

const char *mp_gemm_blis_version(void)
{
    pthread_once(&native_once, native_setup);
    return bli_info_get_version_str();
}

const char *mp_gemm_blis_threading(void)
{
    pthread_once(&native_once, native_setup);
    return bli_info_get_enable_openmp()    ? "OpenMP"
           : bli_info_get_enable_pthreads() ? "pthreads"
                                            : "serial";
}

void mp_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, const float *a,
             size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    if (recorder) {
        if (recorder->n < recorder->cap)
            recorder->calls[recorder->n++] = (struct mp_gemm_call){
                trans_a, trans_b, beta == 0.0f, m, n, k, lda, ldb, ldc,
                loops_ok && mp__gemm_loops_in_scope(b)};
        else
            recorder->dropped++;
        if (recorder->skip)
            return;
    }
    mp_gemm_path(rule(trans_a, trans_b, m, n, k), trans_a, trans_b, m, n, k, alpha, a, lda, b,
                 ldb, beta, c, ldc);
}

/* BLIS's gemmt and trmm3 on row-major views (row stride ld, column stride 1; a transpose swaps the
 * strides). Measured per head of models/gpt.mp (T = 128, hd = 64, 1 thread): the causal product
 * as gemmt 18 µs against 19.5 for the square gemm, trmm3 13-14 µs against 19; at T = 512 gemmt
 * 133 µs against 201 and trmm3 125-133 against 237-262. */
void mp_gemmt_lower(int trans_a, int trans_b, size_t n, size_t k, float alpha, const float *a,
                    size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    pthread_once(&native_once, native_setup);
    if (n == 0)
        return;
    rntm_t rntm = native_rntm;
    inc_t rsa = trans_a ? 1 : (inc_t)lda, csa = trans_a ? (inc_t)lda : 1;
    inc_t rsb = trans_b ? 1 : (inc_t)ldb, csb = trans_b ? (inc_t)ldb : 1;
    bli_sgemmt_ex(BLIS_LOWER, BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)n, (dim_t)k, &alpha,
                  (float *)a, rsa, csa, (float *)b, rsb, csb, &beta, c, (inc_t)ldc, 1, NULL, &rntm);
}

void mp_trmm_lower(int trans_l, size_t m, size_t n, float alpha, const float *l, size_t ldl,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    pthread_once(&native_once, native_setup);
    if (m == 0 || n == 0)
        return;
    rntm_t rntm = native_rntm;
    bli_strmm3_ex(BLIS_LEFT, BLIS_LOWER, trans_l ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                  BLIS_NONUNIT_DIAG, BLIS_NO_TRANSPOSE, (dim_t)m, (dim_t)n, &alpha, (float *)l,
                  (inc_t)ldl, 1, (float *)b, (inc_t)ldb, 1, &beta, c, (inc_t)ldc, 1, NULL, &rntm);
}

const char *mp_gemm_arch(void)
{
    pthread_once(&native_once, native_setup);
    return bli_arch_string(bli_arch_query_id());
}
