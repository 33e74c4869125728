/* The only door to BLIS (mp_gemm.c and its mp_gemm_loops.c). Row-major C = alpha * op(A) * op(B) + beta * C with explicit leading
 * dimensions. Which BLIS call path runs is a fixed function of the shape (DESIGN.md §6: never
 * decided by timing at run time), chosen from `mpipe bench gemm` measurements. */
#ifndef MP_GEMM_H
#define MP_GEMM_H

#include <stddef.h>

enum mp_gemm_path {
    MP_GEMM_CBLAS,  /* cblas_sgemm: BLIS's default, takes the small/unpacked "sup" kernels */
    MP_GEMM_NATIVE, /* bli_sgemm_ex with sup disabled: packed, large-kernel path */
    MP_GEMM_LOOPS,  /* mpipe's own loops and packing around BLIS's micro-kernel, the native
                       path's bits (where BLIS packs element by element, and where its kernel
                       prefers row-stored C: mp_gemm_loops.c); elsewhere the native path */
    MP_GEMM_PATH_COUNT
};

const char *mp_gemm_path_name(enum mp_gemm_path p);
/* The path mp_gemm uses for this shape (m rows of C, n columns, inner k). */
enum mp_gemm_path mp_gemm_path_for(size_t m, size_t n, size_t k);
/* The same rule including the transposes, which change which path wins (mp_gemm uses this one;
 * mp_gemm_path_for is the no-transpose case). */
enum mp_gemm_path mp_gemm_path_for_op(int trans_a, int trans_b, size_t m, size_t n, size_t k);

/* A C of one row or one column runs as BLIS's gemv on either path (mp_gemm.c says why). */
void mp_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, const float *a,
             size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);
/* The same through a named path (benchmarks and tests). */
void mp_gemm_path(enum mp_gemm_path path, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                  float alpha, const float *a, size_t lda, const float *b, size_t ldb, float beta,
                  float *c, size_t ldc);
/* Packed-weight reuse, for one training step's micro-batches. Between begin and end the n floats
 * at lo (a stage's parameters, from its first forward to its optimizer update) must not change;
 * the `mpipe` path then packs a GEMM operand B that lies there once, into a pool of up to
 * room_bytes (grown at a begin that asks for more, kept for the next scope), and every later call
 * with the same operand, shape and transpose runs on that packed copy instead of packing it again.
 * Packing is a copy: the bits are those of a call outside the scope. Elsewhere (other paths, other
 * operands, a full pool) calls pack as usual. mp_gemm_reuse_room: the room_bytes a stage of
 * n_param parameters asks for (both orientations of every weight matrix, each rounded up to the
 * micro-kernel's panel width, and 1 MB for thin matrices' rounding); 0 where the `mpipe` path
 * does not run. Not thread-safe: one scope per thread. */
void mp_gemm_reuse_begin(const float *lo, size_t n, size_t room_bytes);
/* (room_bytes may be 0: a scope that keeps nothing, for the recorder's b_fixed.) */
void mp_gemm_reuse_end(void);
size_t mp_gemm_reuse_room(size_t n_param);
/* The open scope's packed copies out of every cache level (x86-64; elsewhere nothing): calibration
 * times a kept-packed call as a step's later micro-batch meets it. Values do not change. */
void mp_gemm_reuse_evict(void);
/* Since the process started: operands packed into the pool, and calls served from it. */
void mp_gemm_reuse_stats(unsigned long long *packed, unsigned long long *reused);
/* Lower-triangular products, for causal attention: BLIS computes only the blocks the triangle
 * needs (about half the flops of the square product, in one call). One BLIS path each, with the
 * same one-thread set-up as mp_gemm.
 * mp_gemmt_lower: the lower triangle (diagonal included) of C (n, n) = alpha op(A) op(B) +
 *   beta C, op(A) (n, k), op(B) (k, n); the strictly upper part of C is neither read nor written.
 * mp_trmm_lower: C (m, n) = alpha op(L) B + beta C, L (m, m) lower triangular: only its lower
 *   triangle, diagonal included, is read (whatever lies above it is ignored); op(L) is L or Lᵀ. */
void mp_gemmt_lower(int trans_a, int trans_b, size_t n, size_t k, float alpha, const float *a,
                    size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);
void mp_trmm_lower(int trans_l, size_t m, size_t n, float alpha, const float *l, size_t ldl,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc);
/* Calibration (`mpipe plan` measuring this machine's rates): while a recorder is set, mp_gemm
 * appends every call's shape to it (up to cap; `dropped` counts the rest) and, with skip, does not
 * run it, so a layer pass can be timed without its GEMMs and its GEMMs timed one by one through
 * the same path. Not thread-safe: one recorder for the process. NULL stops recording. */
struct mp_gemm_call {
    int trans_a, trans_b, beta_zero;
    size_t m, n, k, lda, ldb, ldc;
    int b_fixed; /* op(B) lay in an open reuse scope's range (mp_gemm_reuse_begin): a weight, which
                    a step with several micro-batches packs once */
};
struct mp_gemm_rec {
    struct mp_gemm_call *calls;
    size_t n, cap, dropped;
    int skip;
};
void mp_gemm_record(struct mp_gemm_rec *rec);
/* BLIS's version string (e.g. "0.9.0"), part of what a cache of measured rates is keyed by. */
const char *mp_gemm_blis_version(void);
/* How the linked BLIS was built: "serial", "OpenMP" or "pthreads" (cmake/FindBLIS.cmake prefers
 * the serial build; the others open a one-thread parallel region around every call). */
const char *mp_gemm_blis_threading(void);

/* BLIS's active sub-configuration name (e.g. "skx", "zen3"): ranks compare it at start-up.
 * The first call into this module initialises BLIS (one thread; on AVX-512 Intel CPUs it selects
 * BLIS's `skx` kernels via setenv("BLIS_ARCH_TYPE"), see mp_gemm.c), so call this early in main,
 * before MPI_Init or anything else starts threads. */
const char *mp_gemm_arch(void);

#endif
