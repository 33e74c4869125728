/* layers/mp_vmath.h, the vectorisable math under softmax and GELU, against double precision over
 * their whole useful range: exp within 2 ulp, e^x - 1 and tanh within 2 ulp down to tiny
 * arguments, erfc and the normal CDF within a few ulp of
 * relative error (both tails of the CDF, where 1 + erf(x) would cancel), the gelu layer's forward
 * and backward against x·Phi(x) in double; and the fixed-order reductions: the same bits wherever
 * the data sits in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_layer.h"
#include "mp_vmath.h"

#define ULP (1.0 / 8388608.0) /* 2^-23: one ulp relative to a float's leading bit */

/* Worst relative error of f against ref over n points spread on [lo, hi] (plus the ends). */
static double worst_rel(float (*f)(float), double (*ref)(double), double lo, double hi, int n,
                        double floor_abs, double *at)
{
    double worst = 0;
    for (int i = 0; i <= n; i++) {
        float x = (float)(lo + (hi - lo) * i / n);
        double want = ref((double)x), got = (double)f(x);
        double err = fabs(got - want) / fmax(fabs(want), floor_abs);
        if (err > worst) {
            worst = err;
            *at = x;
        }
    }
    return worst;
}

static double ref_erfc(double z)
{
    return erfc(z);
}
static double ref_normcdf(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

static void test_expf_is_within_two_ulp_where_it_matters(void **state)
{
    (void)state;
    double at = 0;
    /* [-87, 88]: normal results. Softmax only ever passes x <= 0. */
    double w = worst_rel(mp_expf, exp, -87.0, 88.0, 2000003, 0, &at);
    if (w > 2 * ULP)
        fail_msg("mp_expf: relative error %.3g (%.2f ulp) at x = %.9g", w, w / ULP, at);
    assert_true(mp_expf(0.0f) == 1.0f);
    assert_true(mp_expf(-100.0f) == 0.0f);
    assert_true(mp_expf(-INFINITY) == 0.0f);
    assert_true(isfinite(mp_expf(1000.0f)));
}

/* Worst relative error of f over [-hi, -lo] and [lo, hi], points spread evenly in log|x|: near 0
 * is where expm1 and tanh would cancel. */
static double worst_rel_log(float (*f)(float), double (*ref)(double), double lo, double hi, int n,
                            double *at)
{
    double worst = 0;
    for (int i = 0; i <= n; i++)
        for (int sign = -1; sign <= 1; sign += 2) {
            float x = (float)(sign * lo * pow(hi / lo, (double)i / n));
            double want = ref((double)x), err = fabs((double)f(x) - want) / fabs(want);
            if (err > worst) {
                worst = err;
                *at = x;
            }
        }
    return worst;
}

static void test_expm1_and_tanh_hold_relative_accuracy_down_to_tiny_arguments(void **state)
{
    (void)state;
    double at = 0;
    double w = worst_rel(mp_expm1f, expm1, -87.0, 88.0, 2000003, 0, &at);
    w = fmax(w, worst_rel_log(mp_expm1f, expm1, 1e-30, 1.0, 200003, &at));
    if (w > 2 * ULP) /* 0.94 ulp at 17.0 on the machine this was written on */
        fail_msg("mp_expm1f: relative error %.3g (%.2f ulp) at x = %.9g", w, w / ULP, at);
    w = worst_rel(mp_tanhf, tanh, -12.0, 12.0, 2000003, 0, &at);
    w = fmax(w, worst_rel_log(mp_tanhf, tanh, 1e-30, 12.0, 200003, &at));
    if (w > 2 * ULP) /* 1.38 ulp at -0.204 */
        fail_msg("mp_tanhf: relative error %.3g (%.2f ulp) at x = %.9g", w, w / ULP, at);
    assert_true(mp_tanhf(0.0f) == 0.0f && !signbit(mp_tanhf(0.0f)));
    assert_true(mp_tanhf(-0.0f) == 0.0f && signbit(mp_tanhf(-0.0f)));
    assert_true(mp_tanhf(1e-40f) == 1e-40f); /* subnormal: exact */
    assert_true(mp_tanhf(30.0f) == 1.0f && mp_tanhf(-INFINITY) == -1.0f);
    assert_true(isnan(mp_tanhf(NAN)));
    assert_true(mp_expm1f(-100.0f) == -1.0f && mp_expm1f(0.0f) == 0.0f);
}

static void test_erfc_and_normal_cdf_hold_relative_accuracy_in_both_tails(void **state)
{
    (void)state;
    double at = 0;
    /* erfc(9.1) ~ 1e-37: the last decade before float underflow. */
    double w = worst_rel(mp_erfcf_pos, ref_erfc, 0.0, 9.1, 1000003, 0, &at);
    if (w > 8 * ULP)
        fail_msg("mp_erfcf_pos: relative error %.3g (%.2f ulp) at z = %.9g", w, w / ULP, at);
    w = worst_rel(mp_normcdf, ref_normcdf, -12.8, 12.8, 1000003, 0, &at);
    if (w > 8 * ULP)
        fail_msg("mp_normcdf: relative error %.3g (%.2f ulp) at x = %.9g", w, w / ULP, at);
    assert_true(mp_erfcf_pos(0.0f) == 1.0f);
    assert_true(mp_normcdf(0.0f) == 0.5f);
    assert_true(mp_normcdf(20.0f) == 1.0f);
    assert_true(mp_normcdf(-20.0f) == 0.0f);
}

/* The gelu layer (exact erf form) over a sweep: y = x·Phi(x) within a few ulp of the larger of y
 * and 1e-6 (|y| under 1e-6 only in the far negative tail), dx = dy·(Phi(x) + x·phi(x)) within a
 * few ulp of its terms. */
static void test_gelu_layer_matches_double_over_its_range(void **state)
{
    (void)state;
    const size_t n = 40001;
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    char spec[64];
    snprintf(spec, sizeof spec, "input %zu\ngelu\nmse\n", n);
    assert_int_equal(mp_model_parse(&m, "gelu", spec, strlen(spec), &err), 0);
    const struct mp_layer *l = &m.layers[1];
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *dy = malloc(n * sizeof *dy);
    float *dx = malloc(n * sizeof *dx);
    assert_non_null(x), assert_non_null(y), assert_non_null(dy), assert_non_null(dx);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(-10.0 + 20.0 * (double)i / (double)(n - 1));
        dy[i] = 1.0f;
    }
    struct mp_ctx ctx = {0};
    l->ops->forward(l, &ctx, NULL, x, y, NULL, 1);
    l->ops->backward_input(l, &ctx, NULL, x, y, NULL, dy, dx, 1);
    for (size_t i = 0; i < n; i++) {
        double xd = x[i], cdf = ref_normcdf(xd),
               pdf = exp(-0.5 * xd * xd) / sqrt(2 * 3.14159265358979323846);
        double wy = xd * cdf, wdx = cdf + xd * pdf;
        if (!(fabs(y[i] - wy) <= 8 * ULP * fmax(fabs(wy), 1e-6)))
            fail_msg("gelu(%.9g) = %.9g, want %.9g", xd, (double)y[i], wy);
        /* Phi + x·phi cancels near x = -0.75, where gelu' crosses 0: its error is measured
         * against the terms, as any float evaluation of the sum (torch's too) must be. */
        if (!(fabs(dx[i] - wdx) <= 8 * ULP * fmax(cdf + fabs(xd * pdf), 1e-6)))
            fail_msg("gelu'(%.9g) = %.9g, want %.9g", xd, (double)dx[i], wdx);
    }
    free(x), free(y), free(dy), free(dx);
    mp_model_free(&m);
}

/* vsum, vdot, vmax: right values, and the same bits at every alignment of the data. */
static void test_reductions_are_correct_and_independent_of_alignment(void **state)
{
    (void)state;
    float *buf = malloc(300 * sizeof *buf), *b2 = malloc(300 * sizeof *b2);
    assert_non_null(buf), assert_non_null(b2);
    for (size_t n = 1; n < 90; n += 7) {
        float ref_sum = 0, ref_dot = 0, ref_max = -INFINITY;
        for (size_t shift = 0; shift < 17; shift++) {
            float *p = buf + shift, *q = b2 + shift;
            double sum = 0, dot = 0, mx = -INFINITY;
            for (size_t j = 0; j < n; j++) {
                p[j] = (float)sin(0.37 * (double)(j + 1)) * 3.0f;
                q[j] = (float)cos(0.11 * (double)j);
                sum += p[j], dot += (double)p[j] * q[j], mx = fmax(mx, p[j]);
            }
            float s = mp_vsum(p, n), d = mp_vdot(p, q, n), m = mp_vmax(p, n);
            assert_true(fabs(s - sum) <= 1e-5 * (double)n);
            assert_true(fabs(d - dot) <= 1e-5 * (double)n);
            assert_true(m == (float)mx);
            if (shift == 0) {
                ref_sum = s, ref_dot = d, ref_max = m;
            }
            assert_true(s == ref_sum && d == ref_dot && m == ref_max);
        }
    }
    free(buf), free(b2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expf_is_within_two_ulp_where_it_matters),
        cmocka_unit_test(test_expm1_and_tanh_hold_relative_accuracy_down_to_tiny_arguments),
        cmocka_unit_test(test_erfc_and_normal_cdf_hold_relative_accuracy_in_both_tails),
        cmocka_unit_test(test_gelu_layer_matches_double_over_its_range),
        cmocka_unit_test(test_reductions_are_correct_and_independent_of_alignment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
