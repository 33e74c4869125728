/* mpipe's own loops and packing around BLIS's micro-kernel (mp_gemm_loops.c says why). Only
 * mp_gemm.c includes this header: it is one of mp_gemm's paths. */
#ifndef MP_GEMM_LOOPS_H
#define MP_GEMM_LOOPS_H

#include <stddef.h>

/* Whether this BLIS configuration is one the loops serve: a micro-kernel that prefers
 * column-stored C where BLIS would pack one operand of every sgemm element by element (no packing
 * kernel for its MR: skx), or one that prefers row-stored C where the panels can be packed fast
 * (BLIS's kernels for MR and NR, or AVX-512: zen3, haswell). Asked once, after BLIS is
 * initialised. */
int mp__gemm_loops_available(void);
/* Row-major C (m, n) = alpha op(A) op(B) + beta C, as mp_gemm; m, n, k > 0. Deterministic: the
 * blocking and the order of the k blocks are fixed functions of the shape. */
void mp__gemm_loops(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                    size_t ldc);

/* Packed-weight reuse (mp_gemm_reuse_begin): lo != NULL opens a scope over [lo, lo + n) with
 * room for room_floats packed floats; lo == NULL closes it. Counts since the process started. */
void mp__gemm_loops_reuse(const float *lo, size_t n, size_t room_floats);
void mp__gemm_loops_reuse_evict(void);
void mp__gemm_loops_reuse_stats(unsigned long long *packed, unsigned long long *reused);
/* Whether p lies in the open scope's range. */
int mp__gemm_loops_in_scope(const float *p);

#endif
