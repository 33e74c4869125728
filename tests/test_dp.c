/* Weighted gradient aggregation (mp_dp.h): the coefficients, the accumulation, the weights file,
 * perf weights (bounded, deterministic) and speed-sized shards, checked against direct
 * computations; and the non-temporal copy into shared memory (mp_xport_shm.h) against memcpy. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mp_dp.h"
#include "mp_xport_shm.h"

static void test_equal_shards_give_unit_coefficients_for_mean_and_size(void **state)
{
    (void)state;
    struct mp_dp dp;
    size_t n[3] = {4, 4, 4};
    for (int agg = MP_AGG_MEAN; agg <= MP_AGG_SIZE; agg++) {
        assert_int_equal(mp_dp_init(&dp, 3, 1, 0, NULL, MP_DP_ORDERED, agg, 10, NULL), 0);
        mp_dp_set_coefficients(&dp, n, 12);
        for (int r = 0; r < 3; r++)
            assert_true(dp.coef[r] == 1.0f); /* exactly: equal weights cost no rounding */
        mp_dp_free(&dp);
    }
}

static void test_weighted_reduction_matches_direct_weighted_mean(void **state)
{
    (void)state;
    /* Replica r saw n_r samples; its mean gradient is g_r; mpipe holds G_r = g_r * n_r / B. */
    size_t n[3] = {2, 5, 1}, B = 8;
    double w[3] = {1.0, 3.0, 0.5}, g[3][4] = {{1, -2, 3, 0.5}, {0.25, 4, -1, 2}, {7, 0, 1, -3}};
    struct mp_dp dp;
    assert_int_equal(mp_dp_init(&dp, 3, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_CUSTOM, 4, NULL), 0);
    for (int r = 0; r < 3; r++)
        dp.weight[r] = w[r];
    mp_dp_set_coefficients(&dp, n, B);
    float acc[4], G[4];
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < 4; i++)
            G[i] = (float)(g[r][i] * (double)n[r] / (double)B);
        mp_dp_accumulate(acc, G, dp.coef[r], 4, r == 0);
    }
    for (int i = 0; i < 4; i++) {
        double direct = (w[0] * g[0][i] + w[1] * g[1][i] + w[2] * g[2][i]) / (w[0] + w[1] + w[2]);
        assert_true(fabs(acc[i] - direct) < 1e-5 * (1 + fabs(direct)));
    }
    mp_dp_free(&dp);
}

static void test_size_weights_make_the_global_mean_for_uneven_shards(void **state)
{
    (void)state;
    size_t n[2] = {3, 5};
    struct mp_dp dp;
    assert_int_equal(mp_dp_init(&dp, 2, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_SIZE, 1, NULL), 0);
    mp_dp_set_coefficients(&dp, n, 8);
    /* Σ_r (n_r / 8)·g_r is already the mean over all 8 samples: no reweighting. */
    assert_true(dp.coef[0] == 1.0f && dp.coef[1] == 1.0f);
    mp_dp_free(&dp);
}

static void test_a_replica_with_weight_zero_changes_nothing(void **state)
{
    (void)state;
    size_t n[2] = {4, 4};
    struct mp_dp dp;
    assert_int_equal(mp_dp_init(&dp, 2, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_CUSTOM, 3, NULL), 0);
    dp.weight[0] = 1;
    dp.weight[1] = 0;
    mp_dp_set_coefficients(&dp, n, 8);
    float g0[3] = {1, 2, 3}, g1[3] = {100, -50, 7}, acc[3];
    mp_dp_accumulate(acc, g0, dp.coef[0], 3, 1);
    float once[3];
    for (int i = 0; i < 3; i++)
        once[i] = acc[i];
    mp_dp_accumulate(acc, g1, dp.coef[1], 3, 0);
    for (int i = 0; i < 3; i++)
        assert_true(acc[i] == once[i] && once[i] == 2 * g0[i]);
    mp_dp_free(&dp);
}

static void test_weights_file_errors_name_the_line(void **state)
{
    (void)state;
    char path[] = "/tmp/mpipe_w_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("# weights\n1.0\n-2\n", f);
    fclose(f);
    struct mp_dp dp;
    struct mp_err err;
    assert_int_equal(mp_dp_init(&dp, 2, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_CUSTOM, 1, NULL), 0);
    assert_int_equal(mp_dp_read_weights(&dp, path, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    char want[64];
    snprintf(want, sizeof want, "%s:3:", path);
    assert_non_null(strstr(err.msg, want));
    f = fopen(path, "w");
    fputs("0.5 1.5\n", f);
    fclose(f);
    assert_int_equal(mp_dp_read_weights(&dp, path, &err), 0);
    assert_true(dp.weight[0] == 0.5 && dp.weight[1] == 1.5);
    unlink(path);
    mp_dp_free(&dp);
}

static void test_perf_weights_stay_bounded_and_are_deterministic(void **state)
{
    (void)state;
    struct mp_dp a, b;
    size_t n[4] = {8, 8, 8, 8};
    assert_int_equal(mp_dp_init(&a, 4, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_PERF, 1, NULL), 0);
    assert_int_equal(mp_dp_init(&b, 4, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_PERF, 1, NULL), 0);
    unsigned seed = 7;
    for (int step = 0; step < 200; step++) {
        double loss[4];
        for (int r = 0; r < 4; r++) /* replica 3's loss is 1000x the others': extreme history */
            loss[r] = 8.0 * (r == 3 ? 1000.0 : 0.1 + (rand_r(&seed) % 1000) / 1000.0);
        mp_dp_perf_update(&a, loss, n);
        mp_dp_perf_update(&b, loss, n);
        double sum = 0;
        for (int r = 0; r < 4; r++) {
            assert_true(a.weight[r] >= MP_DP_PERF_LO - 1e-12);
            assert_true(a.weight[r] <= MP_DP_PERF_HI + 1e-12);
            sum += a.weight[r];
        }
        assert_true(fabs(sum - 4) < 1e-9);
        assert_memory_equal(a.weight, b.weight, sizeof a.weight); /* same inputs, same bits */
    }
    assert_true(a.weight[3] < a.weight[0]); /* the replica with the higher loss weighs less */
    assert_true(fabs(a.weight[3] - MP_DP_PERF_LO) < 1e-9); /* ... but never less than the bound */
    mp_dp_free(&a);
    mp_dp_free(&b);
}

static void test_perf_with_equal_losses_keeps_mean_bits(void **state)
{
    (void)state;
    struct mp_dp dp;
    size_t n[3] = {4, 4, 4};
    double loss[3] = {2.5, 2.5, 2.5};
    assert_int_equal(mp_dp_init(&dp, 3, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_PERF, 1, NULL), 0);
    for (int step = 0; step < 5; step++)
        mp_dp_perf_update(&dp, loss, n);
    mp_dp_set_coefficients(&dp, n, 12);
    for (int r = 0; r < 3; r++)
        assert_true(dp.weight[r] == 1.0 && dp.coef[r] == 1.0f);
    mp_dp_free(&dp);
}

static void test_bounded_weights_keep_the_mean_even_from_zeros(void **state)
{
    (void)state;
    double w[4] = {0, 0, 0, 1};
    mp_dp_bound_weights(w, 4, 0.5, 2.0);
    assert_true(fabs(w[0] + w[1] + w[2] + w[3] - 4) < 1e-9);
    assert_true(fabs(w[3] - 2.0) < 1e-9 && fabs(w[0] - 2.0 / 3.0) < 1e-9);
    double v[2] = {3, 1}; /* already within [0.5, 2] of the mean: only normalised */
    mp_dp_bound_weights(v, 2, 0.5, 2.0);
    assert_true(v[0] == 1.5 && v[1] == 0.5);
}

static void test_shards_from_speeds_sum_to_M_and_are_at_least_one(void **state)
{
    (void)state;
    struct mp_dp dp;
    unsigned seed = 3;
    for (int D = 1; D <= 6; D++) {
        assert_int_equal(mp_dp_init(&dp, D, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_SIZE, 1, NULL), 0);
        for (int M = D; M <= 4 * D; M++) {
            for (int trial = 0; trial < 50; trial++) {
                double rate[6];
                for (int r = 0; r < D; r++) /* zeros, ties and 1000x spreads included */
                    rate[r] = (rand_r(&seed) % 4 == 0) ? 0 : (double)(rand_r(&seed) % 1000);
                mp_dp_set_shards(&dp, rate, M);
                int sum = 0;
                for (int r = 0; r < D; r++) {
                    assert_true(dp.n_mb[r] >= 1);
                    assert_int_equal(dp.first_mb[r], sum);
                    sum += dp.n_mb[r];
                }
                assert_int_equal(sum, M);
            }
        }
        mp_dp_free(&dp);
    }
    assert_int_equal(mp_dp_init(&dp, 2, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_SIZE, 1, NULL), 0);
    double equal[2] = {1, 1}, twice[2] = {2, 1};
    mp_dp_set_shards(&dp, equal, 8);
    assert_true(dp.n_mb[0] == 4 && dp.n_mb[1] == 4);
    mp_dp_set_shards(&dp, twice, 6); /* twice as fast, twice the micro-batches */
    assert_true(dp.n_mb[0] == 4 && dp.n_mb[1] == 2 && dp.first_mb[1] == 4);
    mp_dp_free(&dp);
}

static void test_speed_rebalances_only_every_K_steps(void **state)
{
    (void)state;
    struct mp_dp dp;
    double equal[2] = {1, 1};
    assert_int_equal(mp_dp_init(&dp, 2, 1, 0, NULL, MP_DP_ORDERED, MP_AGG_SIZE, 1, NULL), 0);
    mp_dp_set_shards(&dp, equal, 8);
    for (uint64_t step = 1; step <= MP_DP_REBALANCE_EVERY; step++) {
        /* Replica 1 takes 3x as long per micro-batch. */
        double secs[2] = {0.01 * dp.n_mb[0], 0.03 * dp.n_mb[1]};
        int changed = mp_dp_speed_update(&dp, secs, step, 8);
        assert_int_equal(changed, step == MP_DP_REBALANCE_EVERY);
    }
    assert_true(dp.n_mb[0] == 6 && dp.n_mb[1] == 2);
    mp_dp_free(&dp);
}


/* Every alignment of source and destination and every length around a line's 16 floats, and a
 * long run: the same bits as memcpy (NaN payloads and negative zeros included), nothing written
 * past either end. */
static void test_shm_write_is_memcpy_at_every_alignment(void **state)
{
    (void)state;
    enum { LONG = 10007, GUARD = 8 };
    float *src = malloc((LONG + 32) * sizeof(float));
    float *dst = malloc((LONG + 32 + 2 * GUARD) * sizeof(float));
    float *want = malloc((LONG + 32 + 2 * GUARD) * sizeof(float));
    assert_non_null(src), assert_non_null(dst), assert_non_null(want);
    uint32_t x = 12345;
    for (size_t i = 0; i < LONG + 32; i++) {
        x = x * 1664525u + 1013904223u; /* any bits: NaNs, subnormals, -0 among them */
        memcpy(&src[i], &x, sizeof x);
    }
    size_t lens[] = {0, 1, 3, 15, 16, 17, 31, 32, 33, 47, 64, 100, LONG};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (size_t so = 0; so < 5; so++)
            for (size_t d = 0; d < 17; d++) {
                size_t n = lens[li], total = n + d + 2 * GUARD;
                memset(dst, 0xa5, total * sizeof(float));
                memcpy(want, dst, total * sizeof(float));
                memcpy(want + GUARD + d, src + so, n * sizeof(float));
                mp_shm_write(dst + GUARD + d, src + so, n);
                mp_shm_publish();
                assert_memory_equal(dst, want, total * sizeof(float));
            }
    free(src), free(dst), free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_shards_give_unit_coefficients_for_mean_and_size),
        cmocka_unit_test(test_weighted_reduction_matches_direct_weighted_mean),
        cmocka_unit_test(test_size_weights_make_the_global_mean_for_uneven_shards),
        cmocka_unit_test(test_a_replica_with_weight_zero_changes_nothing),
        cmocka_unit_test(test_weights_file_errors_name_the_line),
        cmocka_unit_test(test_perf_weights_stay_bounded_and_are_deterministic),
        cmocka_unit_test(test_perf_with_equal_losses_keeps_mean_bits),
        cmocka_unit_test(test_bounded_weights_keep_the_mean_even_from_zeros),
        cmocka_unit_test(test_shards_from_speeds_sum_to_M_and_are_at_least_one),
        cmocka_unit_test(test_speed_rebalances_only_every_K_steps),
        cmocka_unit_test(test_shm_write_is_memcpy_at_every_alignment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
