/* mp_rng: the streams every rank and every machine must agree on (initial weights, shuffles and
 * dropout masks depend on them, DESIGN.md §6). Known answers computed by an independent
 * implementation of splitmix64 seeding xoshiro256** and of the counter hash (Python, arbitrary
 * precision masked to 64 bits); the ranges of the derived uniforms, integers and normals; and the
 * hash depending on each of its four words. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "mp_rng.h"

static void test_sequential_stream_matches_known_answers(void **state)
{
    (void)state;
    static const uint64_t seed0[] = {0x99ec5f36cb75f2b4ULL, 0xbf6e1f784956452aULL,
                                     0x1a5f849d4933e6e0ULL, 0x6aa594f1262d2d2cULL};
    static const uint64_t seed42[] = {0x15780b2e0c2ec716ULL, 0x6104d9866d113a7eULL,
                                      0xae17533239e499a1ULL, 0xecb8ad4703b360a1ULL};
    struct mp_rng r;
    mp_rng_seed(&r, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(mp_rng_next(&r), seed0[i]);
    mp_rng_seed(&r, 42);
    for (int i = 0; i < 4; i++)
        assert_int_equal(mp_rng_next(&r), seed42[i]);
}

static void test_reseeding_restarts_the_stream(void **state)
{
    (void)state;
    struct mp_rng a, b;
    mp_rng_seed(&a, 7);
    for (int i = 0; i < 100; i++)
        mp_rng_next(&a);
    mp_rng_seed(&a, 7);
    mp_rng_seed(&b, 7);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(mp_rng_next(&a), mp_rng_next(&b));
    mp_rng_seed(&b, 8);
    int same = 0;
    for (int i = 0; i < 64; i++)
        same += mp_rng_next(&a) == mp_rng_next(&b);
    assert_int_equal(same, 0);
}

static void test_hash_matches_known_answers_and_uses_every_word(void **state)
{
    (void)state;
    assert_int_equal(mp_hash4(0, 0, 0, 0), 0x2130748aaac80268ULL);
    assert_int_equal(mp_hash4(1, 2, 3, 4), 0xf687e9f6977fbdc9ULL);
    assert_int_equal(mp_hash4(7, 0, 5, 123456789), 0x16443adb4d9df9e9ULL);
    uint64_t base = mp_hash4(11, 22, 33, 44);
    assert_int_not_equal(mp_hash4(12, 22, 33, 44), base);
    assert_int_not_equal(mp_hash4(11, 23, 33, 44), base);
    assert_int_not_equal(mp_hash4(11, 22, 34, 44), base);
    assert_int_not_equal(mp_hash4(11, 22, 33, 45), base);
    /* Swapped words are different masks (layer 1 step 2 is not layer 2 step 1). */
    assert_int_not_equal(mp_hash4(22, 11, 33, 44), base);
}

static void test_uniforms_lie_in_the_unit_interval_with_the_right_mean(void **state)
{
    (void)state;
    struct mp_rng r;
    mp_rng_seed(&r, 3);
    double sum = 0, hsum = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        float u = mp_rng_uniform(&r);
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
        float h = mp_hash_uniform(mp_hash4(5, 6, 7, (uint64_t)i));
        assert_true(h >= 0.0f && h < 1.0f);
        hsum += h;
    }
    /* Standard error of the mean of U(0,1) over n draws: 1/sqrt(12 n) ~ 0.00065; 6 of them. */
    assert_true(fabs(sum / n - 0.5) < 0.004);
    assert_true(fabs(hsum / n - 0.5) < 0.004);
    assert_true(mp_hash_uniform(UINT64_MAX) < 1.0f);
    assert_true(mp_hash_uniform(0) == 0.0f);
}

static void test_below_is_in_range_and_even(void **state)
{
    (void)state;
    struct mp_rng r;
    mp_rng_seed(&r, 9);
    int count[7] = {0};
    const int n = 70000;
    for (int i = 0; i < n; i++) {
        uint64_t k = mp_rng_below(&r, 7);
        assert_true(k < 7);
        count[k]++;
    }
    /* Chi-square with 6 degrees of freedom: 22.5 is its 0.999 quantile. */
    double chi = 0;
    for (int k = 0; k < 7; k++)
        chi += (count[k] - n / 7.0) * (count[k] - n / 7.0) / (n / 7.0);
    assert_true(chi < 22.5);
    for (int i = 0; i < 100; i++)
        assert_int_equal(mp_rng_below(&r, 1), 0);
    /* A bound just over half the range takes the rejection path often: still in range. */
    uint64_t big = (UINT64_MAX / 2) + 2;
    for (int i = 0; i < 1000; i++)
        assert_true(mp_rng_below(&r, big) < big);
}

static void test_normals_have_zero_mean_and_unit_variance(void **state)
{
    (void)state;
    struct mp_rng r;
    mp_rng_seed(&r, 1234);
    double s = 0, s2 = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        double z = mp_rng_normal(&r);
        assert_true(isfinite(z));
        s += z;
        s2 += z * z;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    assert_true(fabs(mean) < 0.02);      /* ~6 standard errors (1/sqrt(n) ~ 0.0032) */
    assert_true(fabs(var - 1.0) < 0.03); /* ~7 standard errors (sqrt(2/n) ~ 0.0045) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequential_stream_matches_known_answers),
        cmocka_unit_test(test_reseeding_restarts_the_stream),
        cmocka_unit_test(test_hash_matches_known_answers_and_uses_every_word),
        cmocka_unit_test(test_uniforms_lie_in_the_unit_interval_with_the_right_mean),
        cmocka_unit_test(test_below_is_in_range_and_even),
        cmocka_unit_test(test_normals_have_zero_mean_and_unit_variance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
