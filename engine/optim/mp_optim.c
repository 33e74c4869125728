/* Optimizer updates over one parameter tensor (DESIGN.md §4 --optimizer): SGD, momentum, Nesterov,
 * Adam, AdamW, RMSprop with torch.optim's formulas in float arithmetic, and LAMB (You et al. 2019,
 * Algorithm 2) with its per-tensor trust ratio. Owns the defaults and the state layout; it never
 * allocates, and each kernel is one fused loop over the tensor (LAMB needs a second, because its
 * trust ratio needs the norm of the whole update before any weight may change). */
#include "mp_optim.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#if defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(__SSE2__)
#include <xmmintrin.h>
#define MXCSR_FTZ_DAZ 0x8040u /* flush-to-zero (bit 15) and denormals-are-zero (bit 6) */
#endif

static const char *const optim_names[] = {"sgd",  "momentum", "nesterov", "adam",
                                          "adamw", "rmsprop", "lamb"};
static_assert(sizeof optim_names / sizeof optim_names[0] == MP_OPT_COUNT, "optimizer names");

static const int optim_slots[] = {0, 1, 1, 2, 2, 1, 2};
static_assert(sizeof optim_slots / sizeof optim_slots[0] == MP_OPT_COUNT, "optimizer slots");

int mp_optim_parse(const char *name, enum mp_optim_kind *kind)
{
    for (int k = 0; k < MP_OPT_COUNT; k++) {
        if (strcmp(name, optim_names[k]) == 0) {
            *kind = (enum mp_optim_kind)k;
            return 0;
        }
    }
    return -1;
}

const char *mp_optim_name(enum mp_optim_kind kind)
{
    return (kind >= 0 && kind < MP_OPT_COUNT) ? optim_names[kind] : "unknown";
}

int mp_optim_state_slots(enum mp_optim_kind kind)
{
    return (kind >= 0 && kind < MP_OPT_COUNT) ? optim_slots[kind] : 0;
}

void mp_optim_defaults(struct mp_optim_cfg *cfg, enum mp_optim_kind kind)
{
    cfg->kind = kind;
    cfg->momentum = (kind == MP_OPT_MOMENTUM || kind == MP_OPT_NESTEROV) ? 0.9f : 0.0f;
    cfg->weight_decay = (kind == MP_OPT_ADAMW || kind == MP_OPT_LAMB) ? 0.01f : 0.0f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps = kind == MP_OPT_LAMB ? 1e-6f : 1e-8f;
    cfg->alpha = 0.99f;
}

/* torch.optim.SGD with dampening 0: g += wd*p; buf = g on the first step, else mu*buf + g;
 * Nesterov uses g + mu*buf, plain momentum uses buf. */
static void step_sgd(const struct mp_optim_cfg *c, float lr, uint64_t step, float *restrict p,
                     const float *restrict g, float *restrict buf, size_t n)
{
    const float wd = c->weight_decay, mu = c->momentum;
    if (!buf) {
        for (size_t i = 0; i < n; i++)
            p[i] -= lr * (g[i] + wd * p[i]);
        return;
    }
    const int nesterov = c->kind == MP_OPT_NESTEROV;
    const float keep = step <= 1 ? 0.0f : mu; /* first step: the buffer becomes the gradient */
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        float b = keep * buf[i] + gi;
        buf[i] = b;
        p[i] -= lr * (nesterov ? gi + mu * b : b);
    }
}

/* Adam's per-element scalars, computed once per step. */
struct adam_k {
    float step_size, bc2_sqrt, w1, b2, w2, eps, l2, shrink;
};

#if defined(__AVX__)
/* sqrtf may set errno, and without -fno-math-errno that alone stops GCC vectorising the loop, which
 * makes Adam (the default optimizer) ~4x slower. So 8 lanes by hand: exactly the scalar loop's
 * operations in the same order, no FMA, hence the same bits. Returns how many elements it did. */
static size_t adam_avx(const struct adam_k *k, float *restrict p, const float *restrict g,
                       float *restrict m, float *restrict v, size_t n)
{
    const __m256 ss = _mm256_set1_ps(k->step_size), bc2s = _mm256_set1_ps(k->bc2_sqrt);
    const __m256 w1 = _mm256_set1_ps(k->w1), b2 = _mm256_set1_ps(k->b2);
    const __m256 w2 = _mm256_set1_ps(k->w2), eps = _mm256_set1_ps(k->eps);
    const __m256 l2 = _mm256_set1_ps(k->l2), shrink = _mm256_set1_ps(k->shrink);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), shrink);
        __m256 gi = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(l2, pi));
        __m256 mo = _mm256_loadu_ps(m + i);
        __m256 mi = _mm256_add_ps(mo, _mm256_mul_ps(w1, _mm256_sub_ps(gi, mo)));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                  _mm256_mul_ps(_mm256_mul_ps(w2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2s), eps);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(ss, _mm256_div_ps(mi, den))));
    }
    return i;
}
#endif

/* torch.optim.Adam / AdamW (single-tensor path): m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g;
 * p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps). Adam's weight decay is L2 added to the gradient,
 * AdamW's scales the weights by 1 - lr*wd first. Scalars in double like torch's Python side, the
 * per-element math in float, one pass and no branches in the loop. */
static void step_adam(const struct mp_optim_cfg *c, float lr, uint64_t step, float *restrict p,
                      const float *restrict g, float *restrict m, float *restrict v, size_t n)
{
    const double bc1 = 1.0 - pow((double)c->beta1, (double)step);
    const double bc2 = 1.0 - pow((double)c->beta2, (double)step);
    const int decoupled = c->kind == MP_OPT_ADAMW;
    const struct adam_k k = {
        .step_size = (float)((double)lr / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
        .w1 = 1.0f - c->beta1,
        .b2 = c->beta2,
        .w2 = 1.0f - c->beta2,
        .eps = c->eps,
        .l2 = decoupled ? 0.0f : c->weight_decay,
        .shrink = decoupled ? (float)(1.0 - (double)lr * c->weight_decay) : 1.0f,
    };
    size_t i = 0;
#if defined(__AVX__)
    i = adam_avx(&k, p, g, m, v, n);
#endif
    for (; i < n; i++) {
        float pi = p[i] * k.shrink;
        float gi = g[i] + k.l2 * pi;
        float mi = m[i] + k.w1 * (gi - m[i]);
        float vi = k.b2 * v[i] + k.w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - k.step_size * (mi / (sqrtf(vi) / k.bc2_sqrt + k.eps));
    }
}

/* torch.optim.RMSprop defaults (no momentum, not centred): v = a*v + (1-a)*g*g;
 * p -= lr * g / (sqrt(v) + eps). */
static void step_rmsprop(const struct mp_optim_cfg *c, float lr, float *restrict p,
                         const float *restrict g, float *restrict v, size_t n)
{
    const float a = c->alpha, w = 1.0f - c->alpha, eps = c->eps, wd = c->weight_decay;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        float vi = a * v[i] + w * gi * gi;
        v[i] = vi;
        p[i] -= lr * (gi / (sqrtf(vi) + eps));
    }
}

/* LAMB (You et al. 2019, Algorithm 2, with Adam's bias correction): u = m^/(sqrt(v^)+eps) + wd*w,
 * w -= lr * ratio * u with ratio = ||w|| / ||u|| clamped to [0, 10], or 1 when either norm is 0.
 * Pass 1 updates the moments and the two norms (in double); pass 2 recomputes u and applies it. */
static void step_lamb(const struct mp_optim_cfg *c, float lr, uint64_t step, float *restrict p,
                      const float *restrict g, float *restrict m, float *restrict v, size_t n)
{
    const float inv_bc1 = (float)(1.0 / (1.0 - pow((double)c->beta1, (double)step)));
    const float inv_bc2 = (float)(1.0 / (1.0 - pow((double)c->beta2, (double)step)));
    const float b1 = c->beta1, w1 = 1.0f - c->beta1, b2 = c->beta2, w2 = 1.0f - c->beta2;
    const float eps = c->eps, wd = c->weight_decay;
    double wsq = 0.0, usq = 0.0;
    for (size_t i = 0; i < n; i++) {
        float mi = b1 * m[i] + w1 * g[i];
        float vi = b2 * v[i] + w2 * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        float u = (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps) + wd * p[i];
        wsq += (double)p[i] * (double)p[i];
        usq += (double)u * (double)u;
    }
    double wn = sqrt(wsq), un = sqrt(usq), ratio = 1.0;
    if (wn > 0.0 && un > 0.0)
        ratio = fmin(wn / un, 10.0);
    const float scale = (float)((double)lr * ratio);
    for (size_t i = 0; i < n; i++) {
        float u = (m[i] * inv_bc1) / (sqrtf(v[i] * inv_bc2) + eps) + wd * p[i];
        p[i] -= scale * u;
    }
}

/* noinline: the kernels must run between the MXCSR writes of mp_optim_step, not be folded into it
 * where the compiler might schedule their arithmetic across them. */
__attribute__((noinline)) static void dispatch(const struct mp_optim_cfg *cfg, float lr,
                                               uint64_t step, float *param, const float *grad,
                                               float *s0, float *s1, size_t n)
{
    switch (cfg->kind) {
    case MP_OPT_SGD:
        step_sgd(cfg, lr, step, param, grad, NULL, n);
        break;
    case MP_OPT_MOMENTUM:
    case MP_OPT_NESTEROV:
        step_sgd(cfg, lr, step, param, grad, s0, n);
        break;
    case MP_OPT_ADAM:
    case MP_OPT_ADAMW:
        step_adam(cfg, lr, step, param, grad, s0, s1, n);
        break;
    case MP_OPT_RMSPROP:
        step_rmsprop(cfg, lr, param, grad, s0, n);
        break;
    case MP_OPT_LAMB:
        step_lamb(cfg, lr, step, param, grad, s0, s1, n);
        break;
    case MP_OPT_COUNT:
        break;
    }
}

/* The kernels run with subnormals flushed to zero, inputs and results alike, and the caller's
 * floating-point mode is put back after. Why: a parameter whose gradient is zero step after step
 * (a Fashion-MNIST border pixel's weights, a dead ReLU's) has its moments decay by beta each step
 * until they reach the subnormals, and there they stick: m + 0.1 * (0 - m) rounds back to m below
 * 5 * 2^-149. Every later step then does arithmetic on subnormals, which this CPU finishes in
 * microcode: on models/mlp.mp with Fashion-MNIST, 12% of Adam's moments were subnormal by step
 * 1,000 and the update took 5.1 ms a step instead of 2.5. Flushed, those moments become 0. The
 * weights keep their bits: a moment below 2^-126 over a denominator of at least eps (1e-8) moves a
 * weight by under 1.2e-30 times the step size, below half an ulp of any weight larger than 1e-22
 * (at step sizes up to 1). Every layout runs the same kernel, so DESIGN.md §6 holds as before. */
void mp_optim_step(const struct mp_optim_cfg *cfg, float lr, uint64_t step, float *param,
                   const float *grad, float *state, size_t state_stride, size_t n)
{
    float *s0 = state, *s1 = state ? state + state_stride : NULL;
#if defined(__SSE2__)
    const unsigned int mode = _mm_getcsr();
    _mm_setcsr(mode | MXCSR_FTZ_DAZ);
    dispatch(cfg, lr, step, param, grad, s0, s1, n);
    _mm_setcsr(mode);
#else
    dispatch(cfg, lr, step, param, grad, s0, s1, n);
#endif
}
