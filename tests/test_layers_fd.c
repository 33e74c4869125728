/* Finite-difference checks (tests/fd_check.h) for the parameter-free, norm and loss layers:
 * flatten, relu, gelu, tanh, sigmoid, dropout, layernorm, softmax_xent and mse, on several shapes
 * (odd sizes, batch 1). Also dropout's determinism contract: the mask depends only on
 * (seed, layer, step, micro-batch, sample, feature), and evaluation is the identity. */
#include "fd_check.h"

#include "mp_layer.h"

static void test_flatten_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 3 5 7\nflatten\nmse\n", 3, 1);
    fd_check_spec("input 1 1 1\nflatten\nsoftmax_xent\n", 1, 2);
}

static void test_relu_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 2 3 5\nrelu\nmse\n", 4, 3);
    fd_check_spec("input 1\nrelu\nmse\n", 1, 4);
    fd_check_spec("input 33\nrelu\nsoftmax_xent\n", 7, 5);
}

static void test_gelu_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 17\ngelu\nmse\n", 5, 6);
    fd_check_spec("input 2 4 4\ngelu\nmse\n", 1, 7);
}

static void test_tanh_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 17\ntanh\nmse\n", 5, 8);
    fd_check_spec("input 3 3 3\ntanh\nmse\n", 1, 9);
}

static void test_sigmoid_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 17\nsigmoid\nmse\n", 5, 10);
    fd_check_spec("input 2 1 9\nsigmoid\nmse\n", 2, 11);
}

static void test_dropout_backward_matches_finite_differences_in_training(void **state)
{
    (void)state;
    fd_check_spec("input 4 3 3\ndropout 0.3\nmse\n", 3, 12);
    fd_check_spec("input 29\ndropout 0.5\nmse\n", 1, 13);
    fd_check_spec("input 29\ndropout 0\nmse\n", 2, 14);
}

static void test_layernorm_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 13\nlayernorm\nmse\n", 3, 15);
    fd_check_spec("input 2 3 3\nlayernorm\nsoftmax_xent\n", 1, 16);
    fd_check_spec("input 1 1 3\nlayernorm\nmse\n", 4, 17);
}

static void test_softmax_xent_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 10\nsoftmax_xent\n", 6, 18);
    fd_check_spec("input 3\nsoftmax_xent\n", 1, 19);
    fd_check_spec("input 2 2 3\nsoftmax_xent\n", 2, 20);
}

static void test_mse_backward_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input 10\nmse\n", 6, 21);
    fd_check_spec("input 1\nmse\n", 1, 22);
}

/* Random small shapes and batches through a chain of every kind owned here. */
static void test_random_shapes_match_finite_differences(void **state)
{
    (void)state;
    struct mp_rng rng;
    mp_rng_seed(&rng, 99);
    for (int trial = 0; trial < 8; trial++) {
        char spec[256];
        size_t c = 1 + mp_rng_below(&rng, 3), h = 1 + mp_rng_below(&rng, 5);
        size_t w = 1 + mp_rng_below(&rng, 6), batch = 1 + mp_rng_below(&rng, 4);
        snprintf(spec, sizeof spec,
                 "input %zu %zu %zu\nrelu\ngelu\nlayernorm\ndropout 0.2\nflatten\ntanh\n"
                 "sigmoid\n%s\n",
                 c, h, w, trial % 2 ? "mse" : "softmax_xent");
        fd_check_spec(spec, batch, 100 + (uint64_t)trial);
    }
}

/* ---- dropout determinism ---- */

struct drop {
    struct mp_model m;
    const struct mp_layer *l;
    struct mp_ctx ctx;
};

static void drop_setup(struct drop *d, const char *spec)
{
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_model_parse(&d->m, "drop", spec, strlen(spec), &err), 0);
    d->l = &d->m.layers[1];
    memset(&d->ctx, 0, sizeof d->ctx);
    d->ctx.training = 1;
    d->ctx.seed = 42;
    d->ctx.step = 7;
    d->ctx.micro_batch = 2;
    d->ctx.global_batch = 8;
}

/* y = dropout(ones) for `batch` samples starting at ctx.sample_base. */
static void drop_ones(const struct drop *d, const struct mp_ctx *ctx, float *y, size_t batch)
{
    size_t n = mp_layer_in_len(d->l) * batch;
    float *x = fd_alloc(n);
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0f;
    d->l->ops->forward(d->l, ctx, NULL, x, y, NULL, batch);
    free(x);
}

static void test_dropout_same_ctx_gives_same_mask_and_backward_uses_it(void **state)
{
    (void)state;
    struct drop d;
    drop_setup(&d, "input 64\ndropout 0.5\nmse\n");
    float y1[4 * 64], y2[4 * 64], dx[4 * 64], dy[4 * 64];
    drop_ones(&d, &d.ctx, y1, 4);
    drop_ones(&d, &d.ctx, y2, 4);
    assert_memory_equal(y1, y2, sizeof y1);
    size_t kept = 0;
    for (size_t i = 0; i < 4 * 64; i++) {
        assert_true(y1[i] == 0.0f || y1[i] == 2.0f);
        kept += y1[i] != 0.0f;
        dy[i] = 1.0f;
    }
    assert_true(kept > 64 && kept < 192); /* about half of 256 */
    d.l->ops->backward_input(d.l, &d.ctx, NULL, NULL, NULL, NULL, dy, dx, 4);
    assert_memory_equal(dx, y1, sizeof y1);
    mp_model_free(&d.m);
}

static void test_dropout_mask_changes_with_micro_batch_step_and_layer_seed(void **state)
{
    (void)state;
    struct drop d;
    drop_setup(&d, "input 64\ndropout 0.5\nmse\n");
    float base[2 * 64], other[2 * 64];
    drop_ones(&d, &d.ctx, base, 2);
    struct mp_ctx c = d.ctx;
    c.micro_batch = 3;
    drop_ones(&d, &c, other, 2);
    assert_memory_not_equal(base, other, sizeof base);
    c = d.ctx;
    c.step = 8;
    drop_ones(&d, &c, other, 2);
    assert_memory_not_equal(base, other, sizeof base);
    c = d.ctx;
    c.seed = 43;
    drop_ones(&d, &c, other, 2);
    assert_memory_not_equal(base, other, sizeof base);
    mp_model_free(&d.m);
}

static void test_dropout_in_eval_or_with_p0_is_identity(void **state)
{
    (void)state;
    struct drop d;
    drop_setup(&d, "input 2 3 5\ndropout 0.9\nmse\n");
    float x[3 * 30], y[3 * 30], dx[3 * 30];
    for (size_t i = 0; i < 90; i++)
        x[i] = (float)i - 40.0f;
    d.ctx.training = 0;
    d.l->ops->forward(d.l, &d.ctx, NULL, x, y, NULL, 3);
    assert_memory_equal(x, y, sizeof x);
    d.l->ops->backward_input(d.l, &d.ctx, NULL, x, y, NULL, x, dx, 3);
    assert_memory_equal(x, dx, sizeof x);
    mp_model_free(&d.m);

    drop_setup(&d, "input 30\ndropout 0\nmse\n");
    d.l->ops->forward(d.l, &d.ctx, NULL, x, y, NULL, 3);
    assert_memory_equal(x, y, sizeof x);
    mp_model_free(&d.m);
}

/* A micro-batch run as one call or as calls over sample ranges gives the same mask. */
static void test_dropout_mask_independent_of_split_by_sample_base(void **state)
{
    (void)state;
    struct drop d;
    drop_setup(&d, "input 3 2 5\ndropout 0.4\nmse\n");
    float whole[6 * 30], parts[6 * 30];
    drop_ones(&d, &d.ctx, whole, 6);
    struct mp_ctx c = d.ctx;
    c.sample_base = 0;
    drop_ones(&d, &c, parts, 2);
    c.sample_base = 2;
    drop_ones(&d, &c, parts + 2 * 30, 1);
    c.sample_base = 3;
    drop_ones(&d, &c, parts + 3 * 30, 3);
    assert_memory_equal(whole, parts, sizeof whole);
    mp_model_free(&d.m);
}

static void test_dropout_keeps_about_one_minus_p(void **state)
{
    (void)state;
    struct drop d;
    drop_setup(&d, "input 1000\ndropout 0.3\nmse\n");
    float *y = fd_alloc(20 * 1000);
    drop_ones(&d, &d.ctx, y, 20);
    size_t kept = 0;
    for (size_t i = 0; i < 20000; i++)
        kept += y[i] != 0.0f;
    /* Binomial(20000, 0.7): mean 14000, sd ~65; allow 5 sd. */
    assert_in_range(kept, 14000 - 325, 14000 + 325);
    for (size_t i = 0; i < 20000; i++) /* kept elements are scaled by 1/(1 - P), as torch */
        if (y[i] != 0.0f)
            assert_float_equal(y[i], 1.0f / (1.0f - 0.3f), 1e-6);
    free(y);
    mp_model_free(&d.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flatten_backward_matches_finite_differences),
        cmocka_unit_test(test_relu_backward_matches_finite_differences),
        cmocka_unit_test(test_gelu_backward_matches_finite_differences),
        cmocka_unit_test(test_tanh_backward_matches_finite_differences),
        cmocka_unit_test(test_sigmoid_backward_matches_finite_differences),
        cmocka_unit_test(test_dropout_backward_matches_finite_differences_in_training),
        cmocka_unit_test(test_layernorm_backward_matches_finite_differences),
        cmocka_unit_test(test_softmax_xent_backward_matches_finite_differences),
        cmocka_unit_test(test_mse_backward_matches_finite_differences),
        cmocka_unit_test(test_random_shapes_match_finite_differences),
        cmocka_unit_test(test_dropout_same_ctx_gives_same_mask_and_backward_uses_it),
        cmocka_unit_test(test_dropout_mask_changes_with_micro_batch_step_and_layer_seed),
        cmocka_unit_test(test_dropout_in_eval_or_with_p0_is_identity),
        cmocka_unit_test(test_dropout_mask_independent_of_split_by_sample_base),
        cmocka_unit_test(test_dropout_keeps_about_one_minus_p),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
