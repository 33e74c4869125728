/* Attention's per-head kernels (mp_attention.h): scores, causal softmax, dropout on the
 * probabilities and their backward for one head of one sample. Every product of two matrices is
 * one BLIS call through mp_gemm.h on strided views of the fused qkv buffer (no copies, no
 * hand-written matrix multiply); the loops here are only the row-wise softmax and mask work, in
 * fp32, vectorised through mp_vmath.h. A causal head never computes the masked upper triangle:
 * its scores are a lower-triangular product (gemmt) and every product with the probabilities or
 * their gradient reads only their lower triangle (trmm), each in one call. */
#include <math.h>
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

/* The columns a row with m live ones works on: on to the next multiple of 16 (within T), so the
 * vector loops need no scalar remainder; the extra, masked columns hold zero probability. */
static size_t row_span(size_t m, size_t T)
{
    size_t m16 = (m + MP_VLANES - 1) / MP_VLANES * MP_VLANES;
    return m16 < T ? m16 : T;
}

/* Softmax of row p[0 .. m) in place (the row maximum subtracted first, so every exponent is
 * <= 0), then zeros in [m, n). The masked columns are set to -inf first and run through the same
 * vector loops (exp gives 0, the sum adds 0, the maximum ignores them): the lanes, and so the
 * bits, are those of a loop over [0, m). */
void mp__att_softmax_row(float *p, size_t m, size_t n)
{
    for (size_t j = m; j < n; j++)
        p[j] = -INFINITY;
    float mx = mp_vmax(p, n);
    float acc[MP_VLANES] = {0};
    size_t j = 0;
    for (; j + MP_VLANES <= n; j += MP_VLANES)
        for (int k = 0; k < MP_VLANES; k++) {
            float e = mp_expf(p[j + k] - mx);
            p[j + k] = e;
            acc[k] += e;
        }
    for (int k = 0; j + (size_t)k < n; k++) {
        float e = mp_expf(p[j + (size_t)k] - mx);
        p[j + (size_t)k] = e;
        acc[k] += e;
    }
    float inv = 1.0f / mp__lanes_sum(acc);
    for (j = 0; j < n; j++)
        p[j] *= inv;
}

/* S = scale · Q·Kᵀ (T, T): the lower triangle only when causal. */
static void scores(const struct mp_att_dims *d, const float *q, const float *k, float *S)
{
    size_t T = d->T, ld = 3 * d->C;
    if (d->causal)
        mp_gemmt_lower(0, 1, T, d->hd, d->scale, q, ld, k, ld, 0.0f, S, T);
    else
        mp_gemm(0, 1, T, T, d->hd, d->scale, q, ld, k, ld, 0.0f, S, T);
}

/* C (T, n) = alpha · op(A) · B for a (T, T) matrix A of probabilities or their gradient: only
 * its lower triangle when causal. */
static void times(const struct mp_att_dims *d, int trans, size_t n, float alpha, const float *A,
                  const float *B, size_t ldb, float *Cm, size_t ldc)
{
    size_t T = d->T;
    if (d->causal)
        mp_trmm_lower(trans, T, n, alpha, A, T, B, ldb, 0.0f, Cm, ldc);
    else
        mp_gemm(trans, 0, T, n, T, alpha, A, T, B, ldb, 0.0f, Cm, ldc);
}

void mp__att_head_forward(const struct mp_att_dims *d, const struct mp_att_drop *drop,
                          const float *q, const float *k, const float *v, float *P, float *A,
                          float *o)
{
    size_t T = d->T;
    scores(d, q, k, P);
    for (size_t i = 0; i < T; i++) {
        size_t m = d->causal ? i + 1 : T, n = row_span(m, T);
        mp__att_softmax_row(P + i * T, m, n);
        if (!drop->on)
            continue;
        const float *pi = P + i * T; /* (n) */
        float *ai = A + i * T;       /* (n) dropped probabilities */
        uint64_t g = drop->base + i * T;
        for (size_t j = 0; j < n; j++)
            ai[j] = pi[j] * keep_scale(drop, g + j);
    }
    /* O (T, hd) = A · V */
    times(d, 0, d->hd, 1.0f, drop->on ? A : P, v, 3 * d->C, o, d->C);
}

/* Row i of the softmax backward over its n columns (m live): dS = P ⊙ (dP − Σ_j P dP). dP
 * arrives in ds as dA (= dO·Vᵀ; a causal head's gemmt left the masked columns unwritten, so they
 * are zeroed first) and, under dropout, is multiplied by the mask, which also rebuilds the dropped
 * row of A that dV needs. P is 0 in the masked columns, so they add exact zeros. */
static void softmax_backward_row(const struct mp_att_drop *drop, uint64_t g, const float *p,
                                 float *ds, float *a, size_t m, size_t n)
{
    for (size_t j = m; j < n; j++)
        ds[j] = 0.0f;
    if (drop->on) {
        for (size_t j = 0; j < n; j++) {
            float ks = keep_scale(drop, g + j);
            ds[j] *= ks;
            a[j] = p[j] * ks;
        }
    }
    float dot = mp_vdot(p, ds, n);
    for (size_t j = 0; j < n; j++)
        ds[j] = p[j] * (ds[j] - dot);
}

void mp__att_head_backward(const struct mp_att_dims *d, const struct mp_att_drop *drop,
                           const float *q, const float *k, const float *v, const float *P,
                           const float *do_, float *dq, float *dk, float *dv, float *dS, float *A)
{
    size_t T = d->T, hd = d->hd, ld = 3 * d->C, C = d->C;
    /* dP (T, T) = dO · Vᵀ: the lower triangle only when causal */
    if (d->causal)
        mp_gemmt_lower(0, 1, T, hd, 1.0f, do_, C, v, ld, 0.0f, dS, T);
    else
        mp_gemm(0, 1, T, T, hd, 1.0f, do_, C, v, ld, 0.0f, dS, T);
    for (size_t i = 0; i < T; i++) {
        size_t m = d->causal ? i + 1 : T;
        softmax_backward_row(drop, drop->base + i * T, P + i * T, dS + i * T, A + i * T, m,
                             row_span(m, T));
    }
    /* dQ = scale · dS·K, dK = scale · dSᵀ·Q, dV = Aᵀ·dO */
    times(d, 0, hd, d->scale, dS, k, ld, dq, ld);
    times(d, 1, hd, d->scale, dS, q, ld, dk, ld);
    times(d, 1, hd, 1.0f, drop->on ? A : P, do_, C, dv, ld);
}
