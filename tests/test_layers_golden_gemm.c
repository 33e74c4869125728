/* Golden vectors for dense, conv2d, maxpool and avgpool: tiny inputs whose outputs and gradients
 * were computed independently in python3 (plain loops over the textbook definitions: a direct
 * convolution with zero padding, not im2col; the formulas are in the comments below) and
 * pasted as literals. All inputs are small multiples of 1/4, so every result is exact in float
 * and the comparison is bitwise. Also: the initial weights follow PyTorch's bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "mp_layer_ops.h"

/* dense 3 -> 2, batch 2: W = [[1,-2,0.5],[0.25,3,-1]], b = [0.5,-1], x = [[1,2,3],[-1,0.5,2]],
 * dy = [[1,-0.5],[2,0.25]]; y = x·Wᵀ + b, dx = dy·W, dW = dyᵀ·x, db = Σ_s dy. */
static const float dense_param[] = {1.0f, -2.0f, 0.5f, 0.25f, 3.0f, -1.0f, 0.5f, -1.0f};
static const float dense_x[] = {1.0f, 2.0f, 3.0f, -1.0f, 0.5f, 2.0f};
static const float dense_dy[] = {1.0f, -0.5f, 2.0f, 0.25f};

/* conv2d 2 -> 2 channels, input 4x5, K 3, stride 2, pad 1 -> output 2x3, batch 1:
 * x[c][i][j] = ((7c + 3i + 5j) mod 9 − 4)/2, w[o][c][ki][kj] = ((11o + 5c + 3ki + kj) mod 7 − 3)/4,
 * b = [0.5, −0.25], dy[o][oy][ox] = ((2o + 3oy + ox) mod 5 − 2)/2. */
/* maxpool 2 / avgpool 2 over 1x4x5 (the last column is dropped); the top-left window holds a tie
 * (3 at (0,0) and (1,1)) and the first maximum gets the gradient; dy = [1, −2, 0.5, 4]. */
static const float pool_dy[] = {1.0f, -2.0f, 0.5f, 4.0f};

static const float dense_y[] = {
    -1.0f, 2.25f, -0.5f, -1.75f
};

static const float dense_dx[] = {
    0.875f, -3.5f, 1.0f, 2.0625f, -3.25f, 0.75f
};

static const float dense_dparam[] = {
    -1.0f, 3.0f, 7.0f, -0.75f, -0.875f, -1.0f, 3.0f, -0.25f
};

static const float conv_x[] = {
    -2.0f, 0.5f, -1.5f, 1.0f, -1.0f, -0.5f, 2.0f, 0.0f, -2.0f, 0.5f, 1.0f, -1.0f, 1.5f, -0.5f,
    2.0f, -2.0f, 0.5f, -1.5f, 1.0f, -1.0f, 1.5f, -0.5f, 2.0f, 0.0f, -2.0f, -1.5f, 1.0f, -1.0f,
    1.5f, -0.5f, 0.0f, -2.0f, 0.5f, -1.5f, 1.0f, 1.5f, -0.5f, 2.0f, 0.0f, -2.0f
};

static const float conv_param[] = {
    -0.75f, -0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 0.75f, -0.75f, -0.5f, 0.5f, 0.75f, -0.75f, -0.5f,
    -0.25f, 0.0f, 0.25f, 0.5f, 0.75f, 0.25f, 0.5f, 0.75f, -0.75f, -0.5f, -0.25f, 0.0f, 0.25f,
    0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 0.75f, -0.75f, -0.5f, -0.25f, 0.0f, 0.5f, -0.25f
};

static const float conv_y[] = {
    -0.75f, 3.75f, -1.0f, -0.25f, 1.0f, 3.625f, 3.375f, -0.125f, -2.5f, 1.875f, -0.625f, -1.25f
};

static const float conv_dy[] = {
    -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, -1.0f, 0.0f, 0.5f, 1.0f, -1.0f, -0.5f, 0.0f
};

static const float conv_dx[] = {
    -0.25f, -0.875f, -0.375f, -1.125f, -0.5f, 0.0f, -1.625f, -0.25f, 0.625f, 0.75f, 0.625f,
    0.875f, 0.5f, 0.625f, -0.25f, -0.625f, 0.0f, -0.875f, -1.5f, 0.75f, 0.25f, 0.5f, 0.5f, 0.125f,
    0.75f, -0.125f, -1.125f, 0.375f, -2.25f, -1.0f, -0.875f, 0.0f, -0.625f, 0.875f, 0.25f, 0.5f,
    0.875f, 0.625f, 0.5f, -0.5f
};

static const float conv_dparam[] = {
    4.0f, -0.75f, -1.0f, -0.75f, 2.75f, -2.0f, -1.5f, -1.0f, 0.25f, -0.5f, -1.25f, 2.0f, -0.25f,
    -3.0f, -2.0f, -1.0f, 6.75f, -2.0f, -1.0f, 0.5f, -1.0f, 1.75f, -3.5f, 1.75f, -1.25f, 3.25f,
    -2.0f, -0.5f, 2.0f, -1.75f, 0.75f, -1.25f, 2.75f, 2.25f, -3.5f, 1.25f, -1.0f, 0.0f
};

static const float pool_x[] = {
    3.0f, 1.0f, -2.0f, 5.0f, 9.0f, 0.0f, 3.0f, 4.0f, 4.0f, 8.0f, -1.0f, -3.0f, 2.0f, 0.5f, 7.0f,
    -2.0f, -0.5f, 2.0f, 1.0f, 6.0f
};

static const float max_y[] = {
    3.0f, 5.0f, -0.5f, 2.0f
};

static const float max_dx[] = {
    1.0f, 0.0f, 0.0f, -2.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 4.0f, 0.0f, 0.0f,
    0.0f, 0.5f, 0.0f, 0.0f, 0.0f
};

static const float avg_y[] = {
    1.75f, 2.75f, -1.625f, 1.375f
};

static const float avg_dx[] = {
    0.25f, 0.25f, -0.5f, -0.5f, 0.0f, 0.25f, 0.25f, -0.5f, -0.5f, 0.0f, 0.125f, 0.125f, 1.0f,
    1.0f, 0.0f, 0.125f, 0.125f, 1.0f, 1.0f, 0.0f
};

static struct mp_layer planned(const struct mp_layer_ops *ops, enum mp_layer_kind kind,
                               size_t n_out, size_t k, size_t stride, size_t pad,
                               struct mp_shape in)
{
    struct mp_layer l;
    struct mp_err err;
    memset(&l, 0, sizeof l);
    l.ops = ops;
    l.kind = kind;
    l.n_out = n_out;
    l.kernel = k;
    l.stride = stride;
    l.pad = pad;
    mp_err_clear(&err);
    assert_int_equal(ops->plan(&l, in, &err), 0);
    return l;
}

static void expect_floats(const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            print_error("[%zu]: got %.9g, want %.9g\n", i, (double)got[i], (double)want[i]);
            fail();
        }
}

static void test_dense_matches_golden_vectors(void **state)
{
    (void)state;
    struct mp_layer l = planned(&mp__ops_dense, MP_LAYER_DENSE, 2, 0, 0, 0,
                                (struct mp_shape){.ndim = 1, .d = {3, 0, 0}});
    float y[4], dx[6], dparam[8] = {0};
    struct mp_ctx ctx = {0};
    l.ops->forward(&l, &ctx, dense_param, dense_x, y, NULL, 2);
    expect_floats(y, dense_y, 4);
    l.ops->backward_input(&l, &ctx, dense_param, dense_x, y, NULL, dense_dy, dx, 2);
    expect_floats(dx, dense_dx, 6);
    l.ops->backward_weight(&l, &ctx, dense_x, y, NULL, dense_dy, dparam, 2);
    expect_floats(dparam, dense_dparam, 8);
}

static void test_conv2d_matches_golden_vectors(void **state)
{
    (void)state;
    struct mp_layer l = planned(&mp__ops_conv2d, MP_LAYER_CONV2D, 2, 3, 2, 1,
                                (struct mp_shape){.ndim = 3, .d = {2, 4, 5}});
    assert_int_equal(l.out.d[1], 2);
    assert_int_equal(l.out.d[2], 3);
    float y[12], dx[40], dparam[38] = {0}, scratch[2 * 9 * 6 + 2 * 6 * 7];
    assert_true(l.scratch_fixed <= sizeof scratch / sizeof scratch[0]);
    struct mp_ctx ctx = {.scratch = scratch, .scratch_len = l.scratch_fixed};
    l.ops->forward(&l, &ctx, conv_param, conv_x, y, NULL, 1);
    expect_floats(y, conv_y, 12);
    l.ops->backward_input(&l, &ctx, conv_param, conv_x, y, NULL, conv_dy, dx, 1);
    expect_floats(dx, conv_dx, 40);
    l.ops->backward_weight(&l, &ctx, conv_x, y, NULL, conv_dy, dparam, 1);
    expect_floats(dparam, conv_dparam, 38);
}

static void test_pools_match_golden_vectors(void **state)
{
    (void)state;
    struct mp_shape in = {.ndim = 3, .d = {1, 4, 5}};
    struct mp_layer mx = planned(&mp__ops_maxpool, MP_LAYER_MAXPOOL, 0, 2, 0, 0, in);
    struct mp_layer av = planned(&mp__ops_avgpool, MP_LAYER_AVGPOOL, 0, 2, 0, 0, in);
    float y[4], dx[20], saved[4];
    struct mp_ctx ctx = {0};
    assert_int_equal(mx.saved_per_sample, 4);
    mx.ops->forward(&mx, &ctx, NULL, pool_x, y, saved, 1);
    expect_floats(y, max_y, 4);
    mx.ops->backward_input(&mx, &ctx, NULL, pool_x, y, saved, pool_dy, dx, 1);
    expect_floats(dx, max_dx, 20);
    av.ops->forward(&av, &ctx, NULL, pool_x, y, NULL, 1);
    expect_floats(y, avg_y, 4);
    av.ops->backward_input(&av, &ctx, NULL, pool_x, y, NULL, pool_dy, dx, 1);
    expect_floats(dx, avg_dx, 20);
}

/* torch.nn.Linear and Conv2d draw weight and bias from U(−1/√fan_in, 1/√fan_in). */
static void test_init_follows_pytorch_bounds(void **state)
{
    (void)state;
    struct mp_layer d = planned(&mp__ops_dense, MP_LAYER_DENSE, 64, 0, 0, 0,
                                (struct mp_shape){.ndim = 1, .d = {100, 0, 0}});
    struct mp_layer c = planned(&mp__ops_conv2d, MP_LAYER_CONV2D, 8, 3, 1, 0,
                                (struct mp_shape){.ndim = 3, .d = {4, 6, 6}});
    static float p[6400 + 64];
    const struct mp_layer *ls[2] = {&d, &c};
    const double bound[2] = {0.1, 1.0 / 6.0};
    for (int i = 0; i < 2; i++) {
        struct mp_rng rng;
        mp_rng_seed(&rng, 5);
        size_t n = mp_layer_n_param(ls[i]);
        ls[i]->ops->init(ls[i], p, &rng);
        double maxabs = 0, mean = 0;
        for (size_t j = 0; j < n; j++) {
            maxabs = fmax(maxabs, fabs((double)p[j]));
            mean += p[j] / (double)n;
        }
        assert_true(maxabs <= bound[i] && maxabs > 0.9 * bound[i]);
        assert_true(fabs(mean) < 0.1 * bound[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_matches_golden_vectors),
        cmocka_unit_test(test_conv2d_matches_golden_vectors),
        cmocka_unit_test(test_pools_match_golden_vectors),
        cmocka_unit_test(test_init_follows_pytorch_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
