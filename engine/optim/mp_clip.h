/* Global-norm gradient clipping (DESIGN.md §6). Each global layer's sum of squares is computed in
 * double in index order; the total adds the per-layer sums in global layer order, so the norm is
 * the same whatever the number of stages. The scale follows torch.nn.utils.clip_grad_norm_. */
#ifndef MP_CLIP_H
#define MP_CLIP_H

#include <stddef.h>

/* Sum of squares of n floats, accumulated in double in index order. */
double mp_sumsq(const float *g, size_t n);
/* Adds per_layer[0..n) in order. */
double mp_clip_total(const double *per_layer, size_t n);
/* The factor grads are multiplied by: min(1, max_norm / (sqrt(total_sumsq) + 1e-6)); 1 when
 * max_norm <= 0 (clipping off). */
float mp_clip_scale(double total_sumsq, float max_norm);
void mp_scale(float *g, size_t n, float s);

#endif
