/* Vectorisable float math for the element-wise kernels (softmax, GELU, tanh): exp, e^x - 1,
 * tanh, the normal CDF and reductions written so that GCC turns a loop calling them into SIMD
 * code without -ffast-math, which libm's expf/erff/tanhf calls prevent. Every function is plain
 * arithmetic in a fixed order: the result depends only on the argument (and the build), never on
 * alignment, length or timing (DESIGN.md §6). Accuracy against double precision
 * (tests/test_vmath.c), relative error over the whole range where the result is a normal float:
 * mp_expf under 1e-7, mp_expm1f and mp_tanhf under 2 units of 2^-23, mp_erfcf_pos and
 * mp_normcdf under 5e-7 (about 4 units of 2^-23). */
#ifndef MP_VMATH_H
#define MP_VMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float mp__bits_to_float(int32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* x clamped to [-87, 88] and split as n ln 2 + r with |r| <= ln2 / 2 (n by the 1.5 * 2^23
 * rounding trick, ln 2 split in a high part with zero low bits and a correction, so n ln2_hi is
 * exact); returns r, and 2^n as a float in *scale. */
static inline float mp__exp_split(float x, float *scale)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f;
    const float ln2_lo = 1.42860682030941723212e-6f, shifter = 12582912.0f;
    float xc = x > -87.0f ? x : -87.0f; /* selects, not fmaxf/fminf: those keep GCC scalar */
    xc = xc < 88.0f ? xc : 88.0f;
    float n = fmaf(xc, log2e, shifter) - shifter;
    float r = fmaf(-n, ln2_hi, xc);
    *scale = mp__bits_to_float(((int32_t)n + 127) << 23);
    return fmaf(-n, ln2_lo, r);
}

/* (e^r - 1 - r) / r^2 = 1/2 + r/6 + ... + r^5/5040, the Taylor series to r^7 of e^r after its
 * first two terms (truncation < 6e-9 relative for |r| <= ln2 / 2). */
static inline float mp__exp_tail(float r)
{
    float q = 1.0f / 5040.0f;
    q = fmaf(q, r, 1.0f / 720.0f);
    q = fmaf(q, r, 1.0f / 120.0f);
    q = fmaf(q, r, 1.0f / 24.0f);
    q = fmaf(q, r, 1.0f / 6.0f);
    return fmaf(q, r, 0.5f);
}

/* e^x = 2^n e^r (mp__exp_split), e^r = (tail r + 1) r + 1 (mp__exp_tail). Below -87 (where e^x
 * is under 2^-125) it returns 0; above 88 it is clamped to e^88. */
static inline float mp_expf(float x)
{
    float scale, r = mp__exp_split(x, &scale);
    float p = fmaf(mp__exp_tail(r), r, 1.0f);
    p = fmaf(p, r, 1.0f);
    return x < -87.0f ? 0.0f : p * scale;
}

/* e^x - 1, accurate where e^x - 1 cancels (x near 0, which tanh needs): with x = n ln 2 + r,
 * e^r - 1 = r + r^2 tail(r) (mp__exp_tail; < 2e-8 relative), then e^x - 1 = 2^n (e^r - 1) +
 * (2^n - 1) in one fma. Below -87 it returns -1; above 88 it is clamped to e^88 - 1. A tiny or
 * subnormal x comes back exact (r^2 underflows). */
static inline float mp_expm1f(float x)
{
    float scale, r = mp__exp_split(x, &scale);
    float p = fmaf(mp__exp_tail(r), r * r, r);
    return fmaf(scale, p, scale - 1.0f);
}

/* tanh(x) = (e^2|x| - 1) / (e^2|x| - 1 + 2) with x's sign: within 1.4 ulp everywhere (no
 * 1 - 2/(e^2x + 1) cancellation near 0), no branch on the argument's range as libm's tanhf has,
 * so the layer's loop vectorises and its time does not depend on the data. Past |x| = 10 the
 * float result is 1 (1 - tanh 10 = 4e-9 is under half an ulp of 1); NaN stays NaN. */
static inline float mp_tanhf(float x)
{
    float a = fabsf(x);
    a = a < 10.0f ? a : 10.0f;
    float e = mp_expm1f(2.0f * a);
    float t = copysignf(e / (e + 2.0f), x);
    return x == x ? t : x;
}

/* erfc(z) e^(z^2) for z >= 0 (the scaled complementary error function), as t q(t) with
 * t = 1 / (1 + z/2) and q(t) = 1 + (t - 1) g(t) = 1 - (z/2) t g(t), g a degree-9 polynomial
 * fitted (in double, Chebyshev least squares over z in [0, 9.3]) so that q approximates
 * erfc(z) e^(z^2) / t, which is smooth and bounded on the whole half-line; q(1) = 1, so erfc(0)
 * is 1 exactly. Fitted for this file (tests/data/fit_erfc.py), not taken from a library. */
static inline float mp__erfcx(float z)
{
    float t = 1.0f / fmaf(0.5f, z, 1.0f);
    float g = 0.0229846127f;
    g = fmaf(g, t, -0.0928378329f);
    g = fmaf(g, t, 0.0947668254f);
    g = fmaf(g, t, 0.0925930738f);
    g = fmaf(g, t, -0.200361967f);
    g = fmaf(g, t, 0.00438428298f);
    g = fmaf(g, t, -0.0115937861f);
    g = fmaf(g, t, 0.193560213f);
    g = fmaf(g, t, 0.435337156f);
    g = fmaf(g, t, 0.717925787f);
    return t * fmaf(-0.5f * z * t, g, 1.0f);
}

/* e^(-x^2 / 2), with x^2 carried as a float plus its exact rounding error (fma), so the large
 * exponent of the tails loses nothing: e^(-(a + lo)/2) = e^(-a/2) (1 - lo/2). */
static inline float mp__gauss(float x)
{
    float x2 = x * x, lo = fmaf(x, x, -x2);
    return mp_expf(-0.5f * x2) * (1.0f - 0.5f * lo);
}

/* erfc(z) for z >= 0: relative error about 1e-7 typical, under 5e-7 everywhere it is a normal
 * float (e^(-z^2) with z^2 split as in mp__gauss). */
static inline float mp_erfcf_pos(float z)
{
    float z2 = z * z, lo = fmaf(z, z, -z2);
    return mp__erfcx(z) * (mp_expf(-z2) * (1.0f - lo));
}

/* The standard normal CDF Phi(x) = erfc(|x| / sqrt 2) / 2 or 1 minus that, taken from the side
 * where it is small so both tails keep their relative accuracy (no 1 + erf(x) cancellation for
 * negative x), given gauss = mp__gauss(x) = e^(-x^2 / 2), which GELU's backward needs anyway as
 * the density: one exp for both. */
static inline float mp_normcdf_g(float x, float gauss)
{
    float half_tail = 0.5f * mp__erfcx(fabsf(x) * 0.70710678118654752f) * gauss;
    return x < 0.0f ? half_tail : 1.0f - half_tail;
}

static inline float mp_normcdf(float x) { return mp_normcdf_g(x, mp__gauss(x)); }

/* Reductions over n floats in a fixed order: 16 interleaved partial results (lane j % 16), then
 * the lanes combined pairwise. GCC vectorises the lane loop; the result never depends on the
 * pointer's alignment. */
#define MP_VLANES 16

static inline float mp__lanes_sum(float *acc)
{
    for (int w = MP_VLANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++)
            acc[j] += acc[j + w];
    return acc[0];
}

static inline float mp_vsum(const float *p, size_t n)
{
    float acc[MP_VLANES] = {0};
    size_t j = 0;
    for (; j + MP_VLANES <= n; j += MP_VLANES)
        for (int k = 0; k < MP_VLANES; k++)
            acc[k] += p[j + k];
    for (int k = 0; j + (size_t)k < n; k++)
        acc[k] += p[j + (size_t)k];
    return mp__lanes_sum(acc);
}

/* sum_j a[j] * b[j] */
static inline float mp_vdot(const float *a, const float *b, size_t n)
{
    float acc[MP_VLANES] = {0};
    size_t j = 0;
    for (; j + MP_VLANES <= n; j += MP_VLANES)
        for (int k = 0; k < MP_VLANES; k++)
            acc[k] += a[j + k] * b[j + k];
    for (int k = 0; j + (size_t)k < n; k++)
        acc[k] += a[j + (size_t)k] * b[j + (size_t)k];
    return mp__lanes_sum(acc);
}

/* The largest of p[0 .. n), n >= 1 (NaN-free input assumed; max is exact, so order is moot). */
static inline float mp_vmax(const float *p, size_t n)
{
    float acc[MP_VLANES];
    for (int k = 0; k < MP_VLANES; k++)
        acc[k] = p[0];
    size_t j = 0;
    for (; j + MP_VLANES <= n; j += MP_VLANES)
        for (int k = 0; k < MP_VLANES; k++)
            acc[k] = acc[k] > p[j + k] ? acc[k] : p[j + k];
    for (int k = 0; j + (size_t)k < n; k++)
        acc[k] = acc[k] > p[j + (size_t)k] ? acc[k] : p[j + (size_t)k];
    for (int w = MP_VLANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++)
            acc[k] = acc[k] > acc[k + w] ? acc[k] : acc[k + w];
    return acc[0];
}

#endif
