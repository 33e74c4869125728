/* Attention's per-head kernels (mp_attention.h): scores, causal softmax, dropout on the
 * probabilities and their backward for one head of one sample. Every product of two matrices is
 * an mp_gemm call on strided views of the fused qkv buffer (no copies, no hand-written matrix
 * multiply); the loops here are only the row-wise softmax and mask work, in fp32, vectorised
 * through mp_vmath.h. Causal heads run in row blocks of d->rb rows, and a block computes only the
 * columns up to its own last row: the upper triangle beyond the block is never touched. */
#include <string.h>

#include "mp_attention.h"
#include "mp_gemm.h"
#include "mp_vmath.h"

/* splitmix64's output function at position g of the stream keyed by `key` (as mp_dropout.c). */
static inline uint64_t mask_hash(uint64_t key, uint64_t g)
{
    uint64_t z = key + (g + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 1/(1 - p) where element g is kept, else 0. */
static inline float keep_scale(const struct mp_att_drop *drop, uint64_t g)
{
    return mp_hash_uniform(mask_hash(drop->key, g)) >= drop->p ? drop->scale : 0.0f;
}

/* Softmax of row p[0 .. m) in place (the row maximum subtracted first, so every exponent is
 * <= 0), then zeros in [m, n): the masked columns up to the end of the block. */
void mp__att_softmax_row(float *p, size_t m, size_t n)
{
    float mx = mp_vmax(p, m);
    for (size_t j = 0; j < m; j++)
        p[j] = mp_expf(p[j] - mx);
    float inv = 1.0f / mp_vsum(p, m);
    for (size_t j = 0; j < m; j++)
        p[j] *= inv;
    for (size_t j = m; j < n; j++)
        p[j] = 0.0f;
}

/* Columns a row block computes: up to its last row when causal, else all T. */
static size_t block_cols(const struct mp_att_dims *d, size_t r1)
{
    return d->causal ? r1 : d->T;
}

void mp__att_head_forward(const struct mp_att_dims *d, const struct mp_att_drop *drop,
                          const float *q, const float *k, const float *v, float *P, float *A,
                          float *o)
{
    size_t T = d->T, hd = d->hd, ld = 3 * d->C;
    const float *probs = drop->on ? A : P;
    for (size_t r0 = 0; r0 < T; r0 += d->rb) {
        size_t r1 = r0 + d->rb < T ? r0 + d->rb : T, n = block_cols(d, r1), m = r1 - r0;
        /* S[r0:r1, 0:n] = scale · Q[r0:r1] · K[0:n]ᵀ, into P's rows */
        mp_gemm(0, 1, m, n, hd, d->scale, q + r0 * ld, ld, k, ld, 0.0f, P + r0 * T, T);
        for (size_t i = r0; i < r1; i++) {
            mp__att_softmax_row(P + i * T, d->causal ? i + 1 : T, n);
            if (!drop->on)
                continue;
            const float *pi = P + i * T; /* (n) */
            float *ai = A + i * T;       /* (n) dropped probabilities */
            uint64_t g = drop->base + i * T;
            for (size_t j = 0; j < n; j++)
                ai[j] = pi[j] * keep_scale(drop, g + j);
        }
        /* O[r0:r1] = A[r0:r1, 0:n] · V[0:n] */
        mp_gemm(0, 0, m, hd, n, 1.0f, probs + r0 * T, T, v, ld, 0.0f, o + r0 * d->C, d->C);
    }
}

/* Row i of the softmax backward: dS = P ⊙ (dP − Σ_j P dP) over the row's m live columns, zeros up
 * to n; dP arrives in dS as dA (= dO·Vᵀ) and, under dropout, is first multiplied by the mask
 * (which also rebuilds the dropped row of A that dV needs). */
static void softmax_backward_row(const struct mp_att_drop *drop, uint64_t g, const float *p,
                                 float *ds, float *a, size_t m, size_t n)
{
    if (drop->on) {
        for (size_t j = 0; j < n; j++) {
            float ks = keep_scale(drop, g + j);
            ds[j] *= ks;
            a[j] = p[j] * ks;
        }
    }
    float dot = mp_vdot(p, ds, m);
    for (size_t j = 0; j < m; j++)
        ds[j] = p[j] * (ds[j] - dot);
    for (size_t j = m; j < n; j++)
        ds[j] = 0.0f;
}

void mp__att_head_backward(const struct mp_att_dims *d, const struct mp_att_drop *drop,
                           const float *q, const float *k, const float *v, const float *P,
                           const float *do_, float *dq, float *dk, float *dv, float *dS, float *A)
{
    size_t T = d->T, hd = d->hd, ld = 3 * d->C, C = d->C;
    /* Row blocks: dP = dO·Vᵀ, the softmax backward, dQ = scale · dS·K. */
    for (size_t r0 = 0; r0 < T; r0 += d->rb) {
        size_t r1 = r0 + d->rb < T ? r0 + d->rb : T, n = block_cols(d, r1), m = r1 - r0;
        mp_gemm(0, 1, m, n, hd, 1.0f, do_ + r0 * C, C, v, ld, 0.0f, dS + r0 * T, T);
        for (size_t i = r0; i < r1; i++)
            softmax_backward_row(drop, drop->base + i * T, P + i * T, dS + i * T, A + i * T,
                                 d->causal ? i + 1 : T, n);
        mp_gemm(0, 0, m, hd, n, d->scale, dS + r0 * T, T, k, ld, 0.0f, dq + r0 * ld, ld);
    }
    /* Column blocks: dK = scale · dSᵀ·Q and dV = Aᵀ·dO. Column block [c0, c1) of a causal head is
     * non-zero only in rows i >= c0, all of which the row pass wrote (zeros above the diagonal
     * within the diagonal block). */
    const float *probs = drop->on ? A : P;
    for (size_t c0 = 0; c0 < T; c0 += d->rb) {
        size_t c1 = c0 + d->rb < T ? c0 + d->rb : T, i0 = d->causal ? c0 : 0, m = c1 - c0;
        mp_gemm(1, 0, m, hd, T - i0, d->scale, dS + i0 * T + c0, T, q + i0 * ld, ld, 0.0f,
                dk + c0 * ld, ld);
        mp_gemm(1, 0, m, hd, T - i0, 1.0f, probs + i0 * T + c0, T, do_ + i0 * C, C, 0.0f,
                dv + c0 * ld, ld);
    }
}
