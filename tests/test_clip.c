/* Gradient clipping: sums of squares of known vectors, torch's clip_grad_norm_ scale when the norm
 * is under or over the limit (and off when the limit is 0), in-place scaling, and the total norm
 * being the same however the per-layer sums are split between stages (DESIGN.md §6). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "mp_clip.h"

/* cmocka 1.1.5 (Debian 12) has no assert_double_equal. */
#define assert_near(a, b, tol) near_at((a), (b), (tol), #a, __LINE__)
static void near_at(double a, double b, double tol, const char *what, int line)
{
    if (!(fabs(a - b) <= tol))
        fail_msg("line %d: %s = %.17g, expected %.17g (tolerance %g)", line, what, a, b, tol);
}

static void test_sumsq_of_known_vectors(void **state)
{
    (void)state;
    const float a[] = {3.0f, 4.0f};
    assert_near(mp_sumsq(a, 2), 25.0, 0);
    const float b[] = {1.0f, -2.0f, 2.0f, 0.5f};
    assert_near(mp_sumsq(b, 4), 9.25, 0);
    assert_near(mp_sumsq(b, 0), 0.0, 0);
    /* Accumulated in double: 1e20^2 overflows float but not double. */
    const float big[] = {1e20f, 1e20f};
    assert_true(isfinite(mp_sumsq(big, 2)) && mp_sumsq(big, 2) > 1e40);
}

static void test_scale_is_one_under_the_limit_and_when_off(void **state)
{
    (void)state;
    assert_true(mp_clip_scale(25.0, 10.0f) == 1.0f);       /* norm 5 < 10 */
    assert_true(mp_clip_scale(24.0, 5.0f) == 1.0f);        /* norm 4.9 */
    assert_true(mp_clip_scale(1e12, 0.0f) == 1.0f);        /* clipping off */
    assert_true(mp_clip_scale(1e12, -1.0f) == 1.0f);
    assert_true(mp_clip_scale(0.0, 1.0f) == 1.0f);
}

static void test_scale_over_the_limit_is_max_norm_over_norm(void **state)
{
    (void)state;
    /* norm 5, max 1: coef = 1 / (5 + 1e-6) as in torch.nn.utils.clip_grad_norm_ */
    assert_near(mp_clip_scale(25.0, 1.0f), (float)(1.0 / (5.0 + 1e-6)), 1e-9);
    /* At exactly the limit torch still scales by max_norm / (norm + 1e-6), just under 1. */
    assert_near(mp_clip_scale(25.0, 5.0f), 5.0 / (5.0 + 1e-6), 1e-7);
    float g[] = {3.0f, 4.0f};
    mp_scale(g, 2, mp_clip_scale(mp_sumsq(g, 2), 2.5f));
    assert_near(sqrtf(g[0] * g[0] + g[1] * g[1]), 2.5f, 1e-5);
    assert_near(g[0] / g[1], 0.75f, 1e-6);
}

static void test_scale_by_one_leaves_bits_unchanged(void **state)
{
    (void)state;
    float g[] = {0.1f, -0.0f, 3e-38f};
    float copy[3];
    memcpy(copy, g, sizeof g);
    mp_scale(g, 3, 1.0f);
    assert_memory_equal(g, copy, sizeof g);
}

/* Layers 0..5 with awkward magnitudes; each stage computes its layers' sums; the total is formed
 * from the gathered per-layer array in global order, so any split gives the same bits. */
static void test_total_independent_of_stage_split(void **state)
{
    (void)state;
    static float layers[6][7];
    for (int l = 0; l < 6; l++)
        for (int i = 0; i < 7; i++)
            layers[l][i] = (float)((l * 7 + i) % 5 - 2) * powf(10.0f, (float)(l % 3) * 3 - 3);
    double ref[6];
    for (int l = 0; l < 6; l++)
        ref[l] = mp_sumsq(layers[l], 7);
    double total = mp_clip_total(ref, 6);
    const int splits[][3] = {{6, 0, 0}, {1, 5, 0}, {3, 3, 0}, {2, 2, 2}, {5, 1, 0}};
    for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++) {
        double gathered[6];
        int l = 0;
        for (int st = 0; st < 3; st++) /* each stage fills its own slice */
            for (int k = 0; k < splits[s][st]; k++, l++)
                gathered[l] = mp_sumsq(layers[l], 7);
        double t = mp_clip_total(gathered, 6);
        assert_memory_equal(&t, &total, sizeof t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sumsq_of_known_vectors),
        cmocka_unit_test(test_scale_is_one_under_the_limit_and_when_off),
        cmocka_unit_test(test_scale_over_the_limit_is_max_norm_over_norm),
        cmocka_unit_test(test_scale_by_one_leaves_bits_unchanged),
        cmocka_unit_test(test_total_independent_of_stage_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
