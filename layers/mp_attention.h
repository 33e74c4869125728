/* Multi-head self-attention (mp_attention.c): the pieces its forward and backward share with the
 * per-head kernels (mp_attention_head.c), and key/value-cache decoding for `mpipe generate`
 * (engine/gen), which runs one new token at a time through the same weights. No allocation, no
 * MPI; every matrix product goes through mp_gemm. */
#ifndef MP_ATTENTION_H
#define MP_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "mp_layer.h"

/* Sizes of one attention layer: T tokens of C features, H heads of hd = C / H, causal or not,
 * scores scaled by 1/√hd. */
struct mp_att_dims {
    size_t T, C, H, hd;
    int causal;
    float scale;
};
void mp__att_dims(const struct mp_layer *l, struct mp_att_dims *d);

/* Dropout on the attention probabilities: element (i, j) of head h of sample s is kept with
 * probability 1 - p, from a hash of (key, ((s_global · H + h) · T + i) · T + j), key =
 * mp_hash4(seed, layer index, step, micro-batch) (as layers/mp_dropout.c). off: p == 0 or eval. */
struct mp_att_drop {
    int on;
    float p, scale; /* scale = 1 / (1 - p) */
    uint64_t key;
    uint64_t base; /* element index of (i, j) = (0, 0) of this head */
};

/* Softmax of row p[0 .. m) in place, in fp32 with the row maximum subtracted, then zeros in
 * [m, n) (the masked columns a causal block computes anyway). */
void mp__att_softmax_row(float *p, size_t m, size_t n);

/* One head of one sample, forward. q, k, v: (T, hd) with row stride 3C (columns of the fused qkv);
 * P: (T, T) probabilities written (when causal, row i holds them in columns [0, i] and zeros on to
 * the next multiple of 16; what lies beyond is never written nor read); A: (T, T) scratch for the
 * dropped probabilities (used only when drop->on); o: (T, hd) with row stride C. */
void mp__att_head_forward(const struct mp_att_dims *d, const struct mp_att_drop *drop,
                          const float *q, const float *k, const float *v, float *P, float *A,
                          float *o);

/* One head of one sample, input gradient. do_: (T, hd) row stride C, dL/d(o); dq, dk, dv: (T, hd)
 * row stride 3C, written (not accumulated). dS, A: (T, T) scratch (A only when drop->on). */
void mp__att_head_backward(const struct mp_att_dims *d, const struct mp_att_drop *drop,
                           const float *q, const float *k, const float *v, const float *P,
                           const float *do_, float *dq, float *dk, float *dv, float *dS, float *A);

/* ---- key/value-cache decoding (generation, evaluation only: no dropout) ---- */

/* Floats of one layer's cache for one sequence: keys (T, C) then values (T, C). */
size_t mp_attention_cache_floats(const struct mp_layer *l);
/* Floats of scratch mp_attention_decode needs. */
size_t mp_attention_decode_scratch_floats(const struct mp_layer *l);
/* y (C) = attention output of one new token x (C) at position pos (< T) of a causal layer, whose
 * earlier positions' keys and values are rows 0 .. pos - 1 of cache; writes row pos. Costs
 * O(pos · C + C²), not a forward over the whole context. */
void mp_attention_decode(const struct mp_layer *l, const float *param, const float *x, size_t pos,
                         float *cache, float *scratch, float *y);
/* After a forward on one sample (batch 1) whose saved buffer is `saved`, copies the keys and
 * values of positions 0 .. n - 1 into cache: a prompt is prefilled with one ordinary forward. */
void mp_attention_cache_fill(const struct mp_layer *l, const float *saved, size_t n, float *cache);

#endif
