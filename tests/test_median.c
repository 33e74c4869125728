/* mp_median (mp_median.h): the statistic every benchmark, the calibration and a run's report
 * share. The claims: odd and even counts (the even one the mean of the middle two), order of the
 * input irrelevant, ties, one value, none (0), and the array left sorted (callers may rely on it
 * being reordered, never on it being kept). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mp_median.h"

static void test_odd_count_is_the_middle_value_whatever_the_order(void **state)
{
    (void)state;
    double v[] = {5, 1, 4, 2, 3};
    assert_true(mp_median(v, 5) == 3);
    for (size_t i = 1; i < 5; i++)
        assert_true(v[i - 1] <= v[i]);
}

static void test_even_count_is_the_mean_of_the_middle_two(void **state)
{
    (void)state;
    double v[] = {0.004, 0.001, 0.003, 0.002};
    assert_true(mp_median(v, 4) == 0.5 * (0.002 + 0.003));
    double ties[] = {7, 7, 1, 7};
    assert_true(mp_median(ties, 4) == 7);
}

static void test_one_value_and_none(void **state)
{
    (void)state;
    double one = 2.5;
    assert_true(mp_median(&one, 1) == 2.5);
    assert_true(mp_median(NULL, 0) == 0);
}

static void test_an_outlier_moves_the_median_by_no_more_than_a_rank(void **state)
{
    (void)state; /* why timings are summarised this way: one slow spell is one value */
    double v[] = {1.00, 1.02, 0.98, 40.0, 1.01};
    assert_true(mp_median(v, 5) == 1.01);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_odd_count_is_the_middle_value_whatever_the_order),
        cmocka_unit_test(test_even_count_is_the_mean_of_the_middle_two),
        cmocka_unit_test(test_one_value_and_none),
        cmocka_unit_test(test_an_outlier_moves_the_median_by_no_more_than_a_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
