/* mpipe's own GEMM loops and packing around BLIS's micro-kernel, for the configuration where
 * BLIS 0.9 packs slowly.
 *
 * BLIS copies each operand into micro-panels before its micro-kernel runs over them, through a
 * packing kernel chosen by the panel's width; its table of packing kernels ends at width 31
 * (BLIS_NUM_PACKM_KERS), and any wider panel is packed by the generic element-by-element scal2m.
 * The skx sgemm micro-kernel is 32 x 12, so on every AVX-512 machine every sgemm packs its
 * 32-wide operand that way. Measured on one core of an EPYC Zen5 (skx kernels, 256x1024x1024,
 * `perf`): the packing copy was 19% of x·W (182 GFLOPS) and 38% of x·Wᵀ (134 GFLOPS), where the
 * rows of Wᵀ are gathered from W's columns. This file runs BLIS's own five loops around the
 * micro-kernel (Goto's algorithm, with BLIS's blocksizes from its context), packs with AVX-512 and
 * software prefetch, and calls the same micro-kernel on the same micro-panel layout. The
 * arithmetic is all BLIS's: this file only copies and loops.
 *
 * The same loops serve BLIS's configurations whose micro-kernel prefers row-stored C (zen3,
 * haswell: 6 x 16), where BLIS packs fast with its own kernels, for one reason: packed-weight
 * reuse below. There the loops pack with BLIS's packing kernels (or the AVX-512 ones here where
 * the CPU has AVX-512), so a call outside a reuse scope runs what BLIS's native path runs.
 *
 * As BLIS does, the problem is oriented to the micro-kernel's preferred storage of C. Where it
 * prefers columns (skx) the loops compute C' = Cᵀ (n x m, column-stored: row-major C read with
 * the strides swapped) = A' B' with A' = op(B)ᵀ (n x k, packed MR rows at a time) and
 * B' = op(A)ᵀ (k x m, packed NR columns at a time); where it prefers rows, C' = C, A' = op(A),
 * B' = op(B). Its blocks are BLIS's (step), the k blocks in order, the first with the caller's
 * beta and the rest with 1: the bits are BLIS's own for the same shape, a fixed function of the
 * shape (DESIGN.md §6). */
#include "mp_gemm_loops.h"

#include <blis.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "mp_mem.h"

static struct {
    sgemm_ukr_ft ukr;
    cntx_t *cntx;
    int rows;                           /* the micro-kernel prefers row-stored C */
    spackm_cxk_ker_ft pack_mr, pack_nr; /* BLIS's packing kernels, MR and NR wide panels */
    size_t mr, nr, mc, kc, nc;          /* BLIS's default blocksizes */
    size_t mc_max, kc_max, nc_max;      /* and its maxima (see step) */
} k_;
static int have_avx512; /* the packing's fast path: asked once by mp__gemm_loops_available */

int mp__gemm_loops_available(void)
{
    cntx_t *cntx = bli_gks_query_cntx();
    dim_t mr = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_MR, cntx);
    dim_t nr = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NR, cntx);
    int rows = bli_cntx_l3_nat_ukr_prefers_rows_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cntx) ? 1 : 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    /* MP_GEMM_PACK_NO_AVX512 (tests): pack as on a CPU without AVX-512, through BLIS's kernels
     * where it has them, so an AVX-512 machine also runs what an AVX2 one does. */
    have_avx512 = __builtin_cpu_supports("avx512f") && !getenv("MP_GEMM_PACK_NO_AVX512");
#endif
    k_.pack_mr = (spackm_cxk_ker_ft)bli_cntx_get_packm_ker_dt(BLIS_FLOAT, (l1mkr_t)mr, cntx);
    k_.pack_nr = (spackm_cxk_ker_ft)bli_cntx_get_packm_ker_dt(BLIS_FLOAT, (l1mkr_t)nr, cntx);
    /* Only with the panel layout the loops write: packed widths equal to MR and NR (no padding
     * between rows of a micro-panel). A column-preferring kernel only where BLIS would pack
     * through scal2m (MR past its table of packing kernels); a row-preferring one only where BLIS
     * has packing kernels for both widths, or the CPU has AVX-512 for the loops' own. */
    if (bli_cntx_get_blksz_max_dt(BLIS_FLOAT, BLIS_MR, cntx) != mr ||
        bli_cntx_get_blksz_max_dt(BLIS_FLOAT, BLIS_NR, cntx) != nr)
        return 0;
    if (!rows && mr < BLIS_NUM_PACKM_KERS)
        return 0;
    if (rows && !have_avx512 && !(k_.pack_mr && k_.pack_nr))
        return 0;
    k_.rows = rows;
    k_.ukr = (sgemm_ukr_ft)bli_cntx_get_l3_nat_ukr_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cntx);
    k_.cntx = cntx;
    k_.mr = (size_t)mr, k_.nr = (size_t)nr;
    k_.mc = (size_t)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_MC, cntx);
    k_.kc = (size_t)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_KC, cntx);
    k_.nc = (size_t)bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NC, cntx);
    k_.mc_max = (size_t)bli_cntx_get_blksz_max_dt(BLIS_FLOAT, BLIS_MC, cntx);
    k_.kc_max = (size_t)bli_cntx_get_blksz_max_dt(BLIS_FLOAT, BLIS_KC, cntx);
    k_.nc_max = (size_t)bli_cntx_get_blksz_max_dt(BLIS_FLOAT, BLIS_NC, cntx);
    return k_.ukr && k_.kc > 0 && k_.mc_max >= k_.mc && k_.kc_max >= k_.kc &&
           k_.nc_max >= k_.nc;
}

/* The block at i of a dimension dim: BLIS's rule (bli_determine_blocksize_f_sub), the default
 * size, or all that is left when that is at most the maximum. The k blocks decide the bits: with
 * the same blocks in the same order, the same micro-kernel returns BLIS's own bits. */
static size_t step(size_t i, size_t dim, size_t def, size_t max)
{
    return dim - i <= max ? dim - i : def;
}

/* The packed blocks: MC x KC of A' and KC x NC of B', 64-byte aligned (the micro-kernel loads
 * whole vectors of a micro-panel), grown once and kept. Per thread, as BLIS's own pool is. */
static _Thread_local float *buf_a, *buf_b;
static _Thread_local size_t cap_a, cap_b;

static float *block(float **p, size_t *cap, size_t n)
{
    if (n > *cap) {
        free(*p);
        *p = mp_mem_alloc(n * sizeof(float));
        *cap = *p ? n : 0;
    }
    return *p;
}

/* Packs `w` x `len` of X into one micro-panel p (p[i + l*width], width = MR or NR): element
 * (i, l) of the panel is x[i*rs + l*cs], one of rs and cs being 1. Rows past w are zero (an edge
 * panel: the micro-kernel computes the whole tile and stores only its m x n). */
static void pack_panel_scalar(const float *x, size_t rs, size_t cs, size_t w, size_t len,
                              size_t width, float *restrict p)
{
    for (size_t l = 0; l < len; l++)
        for (size_t i = 0; i < width; i++)
            p[i + l * width] = i < w ? x[i * rs + l * cs] : 0.0f;
}

#if defined(__x86_64__)
/* Transposes 16 vectors in place: r[j] lane i becomes the old r[i] lane j. */
__attribute__((target("avx512f"))) static void transpose16(__m512 *r)
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d t0 = _mm512_castps_pd(t[i]), t1 = _mm512_castps_pd(t[i + 1]);
        __m512d t2 = _mm512_castps_pd(t[i + 2]), t3 = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int i = 0; i < 4; i++) { /* 128-bit lanes: 0x88 takes the even ones, 0xdd the odd */
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}

static __mmask16 first(size_t n) /* a mask of the first n (at most 16) lanes */
{
    return (__mmask16)((1u << (n < 16 ? n : 16)) - 1u);
}

/* pack_panel_scalar with AVX-512 (the micro-kernel's own instruction set) where the panel's rows
 * are rows of X (cs == 1): 16 x 16 blocks loaded row by row and stored transposed. */
__attribute__((target("avx512f"))) static void pack_panel_avx512(const float *x, size_t rs,
                                                                 size_t w, size_t len,
                                                                 size_t width, float *restrict p)
{
    for (size_t l0 = 0; l0 < len; l0 += 16) {
        size_t lb = len - l0 < 16 ? len - l0 : 16;
        for (size_t i0 = 0; i0 < width; i0 += 16) {
            __m512 r[16];
            for (size_t i = 0; i < 16; i++) {
                if (i0 + i >= w) {
                    r[i] = _mm512_setzero_ps();
                    continue;
                }
                /* Rows a leading dimension apart defeat the hardware prefetcher on cold weights:
                 * asked for two lines ahead, packing a cold 1024-wide W ran 1.6x faster. */
                _mm_prefetch((const char *)(x + (i0 + i) * rs + l0 + 32), _MM_HINT_T0);
                r[i] = _mm512_maskz_loadu_ps(first(lb), x + (i0 + i) * rs + l0);
            }
            transpose16(r);
            for (size_t j = 0; j < lb; j++)
                _mm512_mask_storeu_ps(p + (l0 + j) * width + i0, first(width - i0), r[j]);
        }
    }
}

/* pack_block where the panels' rows lie side by side in X (rs == 1): for each l, the block's run
 * of row l of X is read once, left to right, and dealt out to every panel's column l, with the
 * run 8 rows below asked for in advance. Panel by panel, each line of X was read again by the
 * next panel; without the prefetch, rows a leading dimension apart (4 KB for 1024 floats) came
 * from memory one miss at a time: packing a cold 480 x 384 block ran at 4-6 GB/s, 10-16 with it. */
__attribute__((target("avx512f"))) static void pack_block_side_avx512(const float *x, size_t cs,
                                                                      size_t rows, size_t len,
                                                                      size_t width, float *p)
{
    for (size_t l = 0; l < len; l++) {
        const float *src = x + l * cs;
        if (l + 8 < len)
            for (size_t i = 0; i < rows; i += 16)
                _mm_prefetch((const char *)(src + 8 * cs + i), _MM_HINT_T0);
        for (size_t i = 0; i < rows; i += width) {
            size_t w = rows - i < width ? rows - i : width;
            float *dst = p + i * len + l * width;
            for (size_t i0 = 0; i0 < width; i0 += 16)
                _mm512_mask_storeu_ps(dst + i0, first(width - i0),
                                      _mm512_maskz_loadu_ps(first(w > i0 ? w - i0 : 0),
                                                            src + i + i0));
        }
    }
}
#endif

/* Packs rows [0, rows) x columns [0, len) of X (element (i, l) at x[i*rs + l*cs]) as
 * consecutive micro-panels of `width` rows, each width*len floats: the one place that picks how
 * (AVX-512 beside or transposing; else BLIS's own packing kernel for the width, `ker`, where it
 * has one; else element by element). */
static void pack_block(const float *x, size_t rs, size_t cs, size_t rows, size_t len, size_t width,
                       spackm_cxk_ker_ft ker, float *p)
{
#if defined(__x86_64__)
    if (have_avx512 && rs == 1) {
        pack_block_side_avx512(x, cs, rows, len, width, p);
        return;
    }
#endif
    float one = 1.0f;
    for (size_t i = 0; i < rows; i += width) {
        size_t w = rows - i < width ? rows - i : width;
#if defined(__x86_64__)
        if (have_avx512) { /* cs == 1: rows of the panel are rows of X */
            pack_panel_avx512(x + i * rs, rs, w, len, width, p + i * len);
            continue;
        }
#endif
        if (ker) /* zero-fills the rows past w, as the panels here are */
            ker(BLIS_NO_CONJUGATE, width == k_.mr ? BLIS_PACKED_ROW_PANELS : BLIS_PACKED_COL_PANELS,
                (dim_t)w, (dim_t)len, (dim_t)len, &one, (float *)(x + i * rs), (inc_t)rs, (inc_t)cs,
                p + i * len, (inc_t)width, k_.cntx);
        else
            pack_panel_scalar(x + i * rs, rs, cs, w, len, width, p + i * len);
    }
}

/* Packed-weight reuse (mp_gemm_reuse_begin): while a scope is open, an A' that lies in the fixed
 * range [lo, hi) is packed once, into a pool kept from scope to scope, and its packed blocks serve
 * every later call of the same operand until the scope ends. Across the micro-batches of a step
 * the weights do not change, and the loops pack a weight again for every one of them: 20% of a
 * 1-rank MLP step at 8 micro-batches of 32 samples. The packed copy is the same bytes the call
 * would have packed, so the bits do not change. An operand that does not fit the pool's room is
 * packed per call, as outside a scope. */
#define REUSE_MAX 256 /* operands remembered per scope: 4 per layer of a 64-layer stage */

struct reuse_entry {
    const float *src; /* the operand as the caller passed it (op(B) of mp_gemm) */
    int trans;
    size_t rows, k, ld; /* A' is rows x k */
    float *packed;      /* its blocks in the loops' (pc, ic) order */
    int ready;          /* packed by an earlier call in this scope */
};

static _Thread_local struct {
    const float *lo, *hi;     /* the fixed range; lo == NULL: no scope open */
    float *pool;              /* 64-byte aligned, room floats, kept */
    size_t room, limit, used; /* limit: this scope's room (at most room) */
    struct reuse_entry e[REUSE_MAX];
    int n;
    unsigned long long packed, reused; /* operands packed into the pool, calls served from it */
} reuse_;

void mp__gemm_loops_reuse(const float *lo, size_t n, size_t room_floats)
{
    reuse_.lo = lo, reuse_.hi = lo ? lo + n : NULL;
    reuse_.used = 0, reuse_.n = 0;
    if (lo && room_floats > reuse_.room) {
        free(reuse_.pool);
        reuse_.pool = mp_mem_alloc(room_floats * sizeof(float));
        reuse_.room = reuse_.pool ? room_floats : 0;
        if (reuse_.pool) /* every page mapped now, by whoever opened the first scope (start-up) */
            memset(reuse_.pool, 0, room_floats * sizeof(float));
    }
    reuse_.limit = room_floats < reuse_.room ? room_floats : reuse_.room;
}

int mp__gemm_loops_in_scope(const float *p)
{
    return reuse_.lo && p >= reuse_.lo && p < reuse_.hi;
}

/* Out of every cache level, the packed copies of the open scope: what a step's later
 * micro-batch finds when the rest of the step has passed through the caches since (calibration
 * times kept-packed calls this way). Only cache state changes, never a value. */
void mp__gemm_loops_reuse_evict(void)
{
#if defined(__x86_64__) /* SSE2's clflush and mfence */
    const char *p = (const char *)reuse_.pool;
    for (size_t i = 0; p && i < reuse_.used * sizeof(float); i += 64)
        __builtin_ia32_clflush(p + i);
    __builtin_ia32_mfence();
#endif
}

void mp__gemm_loops_reuse_stats(unsigned long long *packed, unsigned long long *reused)
{
    *packed = reuse_.packed, *reused = reuse_.reused;
}

/* Floats the weight (rows x k, rows the n of C) takes packed: every block, its rows rounded up
 * to the panel width. It is A' in MC-row blocks where the micro-kernel prefers columns, B' in
 * NC-column blocks where it prefers rows; the order of the blocks does not change the sum. */
static size_t packed_floats(size_t rows, size_t k)
{
    size_t width = k_.rows ? k_.nr : k_.mr, blk = k_.rows ? k_.nc : k_.mc;
    size_t blk_max = k_.rows ? k_.nc_max : k_.mc_max, total = 0;
    for (size_t pc = 0, kc; pc < k; pc += kc) {
        kc = step(pc, k, k_.kc, k_.kc_max);
        for (size_t ic = 0, mc; ic < rows; ic += mc) {
            mc = step(ic, rows, blk, blk_max);
            total += (mc + width - 1) / width * width * kc;
        }
    }
    return total;
}

/* The scope's entry for this A', found or made (NULL: none open, not in the fixed range, or no
 * room left: pack per call). */
static struct reuse_entry *reuse_entry(const float *src, int trans, size_t rows, size_t k,
                                       size_t ld)
{
    if (!mp__gemm_loops_in_scope(src) || !reuse_.pool)
        return NULL;
    for (int i = 0; i < reuse_.n; i++) {
        struct reuse_entry *e = &reuse_.e[i];
        if (e->src == src && e->trans == trans && e->rows == rows && e->k == k && e->ld == ld)
            return e;
    }
    size_t need = (packed_floats(rows, k) + 15) / 16 * 16; /* the next operand 64-byte aligned */
    if (reuse_.n == REUSE_MAX || need > reuse_.limit - reuse_.used)
        return NULL;
    struct reuse_entry *e = &reuse_.e[reuse_.n++];
    *e = (struct reuse_entry){.src = src, .trans = trans, .rows = rows, .k = k, .ld = ld,
                              .packed = reuse_.pool + reuse_.used};
    reuse_.used += need;
    return e;
}

/* One problem as the loops see it: C' (m2 x n2, element (i, j) at c[i*rs_c + j*cs_c]) =
 * alpha A' B' + beta C', A' (m2 x k) element (i, l) at a[i*rs_a + l*cs_a], B' (k x n2) element
 * (l, j) at b[j*rs_b + l*cs_b] (B'ᵀ's rows are what a panel packs). */
struct problem {
    size_t m2, n2, k;
    const float *a, *b;
    size_t rs_a, cs_a, rs_b, cs_b, rs_c, cs_c;
    float *c;
};

/* The micro-panels of one MC x NC block of C', NR columns at a time, MR rows within them. */
static void macro_kernel(const struct problem *q, size_t ic, size_t jc, size_t mc, size_t nc,
                         size_t kc, float alpha, float beta_k, const float *pa, const float *pb,
                         auxinfo_t *aux)
{
    const size_t mr = k_.mr, nr = k_.nr;
    for (size_t jr = 0; jr < nc; jr += nr) {
        const float *b_panel = pb + jr * kc;
        for (size_t ir = 0; ir < mc; ir += mr) {
            const float *a_panel = pa + ir * kc;
            int last_i = ir + mr >= mc, last_j = jr + nr >= nc;
            bli_auxinfo_set_next_a((void *)(last_i ? pa : a_panel + mr * kc), aux);
            bli_auxinfo_set_next_b((void *)(last_i && !last_j ? b_panel + nr * kc : b_panel), aux);
            k_.ukr((dim_t)(mc - ir < mr ? mc - ir : mr), (dim_t)(nc - jr < nr ? nc - jr : nr),
                   (dim_t)kc, &alpha, (float *)a_panel, (float *)b_panel, &beta_k,
                   q->c + (ic + ir) * q->rs_c + (jc + jr) * q->cs_c, (inc_t)q->rs_c, (inc_t)q->cs_c,
                   aux, k_.cntx);
        }
    }
}

void mp__gemm_loops(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                    size_t ldc)
{
    const size_t mr = k_.mr, nr = k_.nr;
    /* op(A)(i, l) = a[i*ra + l*ca], op(B)(l, j) = b[l*rb + j*cb]. */
    size_t ra = trans_a ? 1 : lda, ca = trans_a ? lda : 1;
    size_t rb = trans_b ? 1 : ldb, cb = trans_b ? ldb : 1;
    struct problem q;
    if (k_.rows) /* C' = C, A' = op(A), B' = op(B) */
        q = (struct problem){m, n, k, a, b, ra, ca, cb, rb, ldc, 1, c};
    else /* C' = Cᵀ, A'(i, l) = op(B)(l, i), B'(l, j) = op(A)(j, l) */
        q = (struct problem){n, m, k, b, a, cb, rb, ra, ca, 1, ldc, c};
    size_t mc_max = q.m2 < k_.mc_max ? q.m2 : k_.mc_max, kc_max = k < k_.kc_max ? k : k_.kc_max;
    size_t nc_max = q.n2 < k_.nc_max ? q.n2 : k_.nc_max;
    float *pa = block(&buf_a, &cap_a, (mc_max + mr - 1) / mr * mr * kc_max);
    float *pb = block(&buf_b, &cap_b, (nc_max + nr - 1) / nr * nr * kc_max);
    if (!pa || !pb)
        abort(); /* a few MB, once per thread: as BLIS does when its own pool cannot grow */
    auxinfo_t aux;
    memset(&aux, 0, sizeof aux);
    bli_auxinfo_set_schema_a(BLIS_PACKED_ROW_PANELS, &aux);
    bli_auxinfo_set_schema_b(BLIS_PACKED_COL_PANELS, &aux);
    /* The weight is op(B): A' where the kernel prefers columns (its blocks in (pc, ic) order,
     * the same for every jc), B' where it prefers rows (blocks in (jc, pc) order). */
    struct reuse_entry *kept = reuse_entry(b, trans_b, n, k, ldb);
    if (kept && kept->ready)
        reuse_.reused++;
    float *kept_b = kept && k_.rows ? kept->packed : NULL;
    for (size_t jc = 0, nc; jc < q.n2; jc += nc) {
        nc = step(jc, q.n2, k_.nc, k_.nc_max);
        float *kept_a = kept && !k_.rows ? kept->packed : NULL;
        for (size_t pc = 0, kc; pc < k; pc += kc) {
            kc = step(pc, k, k_.kc, k_.kc_max);
            float beta_k = pc == 0 ? beta : 1.0f;
            float *bb = pb;
            if (kept_b) { /* packed by an earlier call of this scope, or now */
                bb = kept_b;
                kept_b += (nc + nr - 1) / nr * nr * kc;
            }
            if (!kept_b || !kept->ready)
                pack_block(q.b + jc * q.rs_b + pc * q.cs_b, q.rs_b, q.cs_b, nc, kc, nr, k_.pack_nr,
                           bb);
            bli_auxinfo_set_is_a((inc_t)(mr * kc), &aux);
            bli_auxinfo_set_is_b((inc_t)(nr * kc), &aux);
            for (size_t ic = 0, mc; ic < q.m2; ic += mc) {
                mc = step(ic, q.m2, k_.mc, k_.mc_max);
                float *aa = pa;
                if (kept_a) { /* packed by an earlier call, or by this one's first jc */
                    aa = kept_a;
                    kept_a += (mc + mr - 1) / mr * mr * kc;
                }
                if (!kept_a || (!kept->ready && jc == 0))
                    pack_block(q.a + ic * q.rs_a + pc * q.cs_a, q.rs_a, q.cs_a, mc, kc, mr,
                               k_.pack_mr, aa);
                macro_kernel(&q, ic, jc, mc, nc, kc, alpha, beta_k, aa, bb, &aux);
            }
        }
    }
    if (kept && !kept->ready) {
        kept->ready = 1;
        reuse_.packed++;
    }
}
