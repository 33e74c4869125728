/* Global-norm gradient clipping (DESIGN.md §6). Owns the per-tensor sum of squares (double, index
 * order), the in-order total over global layers and torch's clip_grad_norm_ scale factor. It never
 * talks to MPI: gathering per-layer sums across stages is the caller's job, which is what makes the
 * norm independent of how layers are split into stages. */
#include "mp_clip.h"

#include <math.h>

/* A single double accumulator in index order: the result must not depend on vector width or on the
 * compiler's choice to reassociate, so this loop is deliberately not split into partial sums. */
double mp_sumsq(const float *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * (double)g[i];
    return s;
}

double mp_clip_total(const double *per_layer, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += per_layer[i];
    return s;
}

/* torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1. */
float mp_clip_scale(double total_sumsq, float max_norm)
{
    if (!(max_norm > 0.0f))
        return 1.0f;
    double coef = (double)max_norm / (sqrt(total_sumsq) + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}

void mp_scale(float *g, size_t n, float s)
{
    if (s == 1.0f)
        return;
    for (size_t i = 0; i < n; i++)
        g[i] *= s;
}
