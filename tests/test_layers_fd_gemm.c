/* Finite-difference checks (tests/fd_check.h) of the GEMM-backed and pooling layers: dense,
 * conv2d over strides, paddings and odd sizes, maxpool and avgpool, at batch 1 and odd batches.
 * Layers are built directly (ops, arguments, plan) so the checks do not depend on the parser.
 * Also: plan rejects what the spec language forbids, with the messages users will see. */
#include "fd_check.h"

#include "mp_layer_ops.h"

static struct mp_layer make(const struct mp_layer_ops *ops, enum mp_layer_kind kind, size_t n_out,
                            size_t kernel, size_t stride, size_t pad)
{
    struct mp_layer l;
    memset(&l, 0, sizeof l);
    l.ops = ops;
    l.kind = kind;
    l.index = 1;
    l.line = 2;
    l.n_out = n_out;
    l.kernel = kernel;
    l.stride = stride;
    l.pad = pad;
    return l;
}

static struct mp_shape chw(size_t c, size_t h, size_t w)
{
    return (struct mp_shape){.ndim = 3, .d = {c, h, w}};
}

static void plan_ok(struct mp_layer *l, struct mp_shape in)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (l->ops->plan(l, in, &err) != 0) {
        print_error("plan failed: %s\n", err.msg);
        fail();
    }
}

static void test_dense_backward_matches_finite_differences(void **state)
{
    (void)state;
    static const size_t sizes[][2] = {{1, 1}, {7, 3}, {13, 10}, {64, 33}};
    static const size_t batches[] = {1, 3, 5};
    for (size_t i = 0; i < 4; i++)
        for (size_t b = 0; b < 3; b++) {
            struct mp_layer l = make(&mp__ops_dense, MP_LAYER_DENSE, sizes[i][1], 0, 0, 0);
            plan_ok(&l, (struct mp_shape){.ndim = 1, .d = {sizes[i][0], 0, 0}});
            assert_int_equal(l.out.d[0], sizes[i][1]);
            fd_check_layer(&l, batches[b], 100 + 10 * i + b);
        }
}

/* (C, H, W, OUT, K, stride, pad): 1x1, strides 1 and 2, pads 0..2, odd and non-square sizes. */
static const size_t conv_cases[][7] = {
    {1, 5, 5, 2, 3, 1, 0}, {2, 7, 6, 3, 3, 1, 1}, {3, 6, 7, 2, 5, 1, 2}, {2, 7, 7, 3, 3, 2, 0},
    {2, 8, 9, 2, 3, 2, 1}, {1, 9, 7, 2, 4, 2, 2}, {3, 5, 5, 4, 1, 1, 0}, {2, 6, 6, 2, 1, 2, 1},
    {1, 3, 3, 2, 5, 1, 1}, {2, 4, 5, 3, 2, 3, 1},
};

static void test_conv2d_backward_matches_finite_differences(void **state)
{
    (void)state;
    static const size_t batches[] = {1, 3};
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        for (size_t b = 0; b < 2; b++) {
            const size_t *c = conv_cases[i];
            struct mp_layer l = make(&mp__ops_conv2d, MP_LAYER_CONV2D, c[3], c[4], c[5], c[6]);
            plan_ok(&l, chw(c[0], c[1], c[2]));
            assert_int_equal(l.out.d[1], (c[1] + 2 * c[6] - c[4]) / c[5] + 1);
            assert_int_equal(l.out.d[2], (c[2] + 2 * c[6] - c[4]) / c[5] + 1);
            fd_check_layer(&l, batches[b], 200 + 10 * i + b);
        }
}

static void test_pools_backward_match_finite_differences(void **state)
{
    (void)state;
    static const size_t cases[][4] = {{1, 4, 4, 2}, {2, 5, 7, 2}, {3, 7, 6, 3}, {2, 3, 3, 3},
                                      {1, 5, 5, 1}};
    static const size_t batches[] = {1, 3};
    for (int kind = 0; kind < 2; kind++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            for (size_t b = 0; b < 2; b++) {
                size_t k = cases[i][3];
                struct mp_layer l = kind ? make(&mp__ops_avgpool, MP_LAYER_AVGPOOL, 0, k, 0, 0)
                                         : make(&mp__ops_maxpool, MP_LAYER_MAXPOOL, 0, k, 0, 0);
                plan_ok(&l, chw(cases[i][0], cases[i][1], cases[i][2]));
                assert_int_equal(l.out.d[1], cases[i][1] / cases[i][3]);
                fd_check_layer(&l, batches[b], 300 + 10 * i + b + 1000 * (size_t)kind);
            }
}

/* FD checks cannot see ties; the rule is PyTorch's: the first maximum in the window wins. */
static void test_maxpool_ties_send_the_gradient_to_the_first_maximum(void **state)
{
    (void)state;
    struct mp_layer l = make(&mp__ops_maxpool, MP_LAYER_MAXPOOL, 0, 2, 0, 0);
    plan_ok(&l, chw(1, 2, 2));
    float x[4] = {1.0f, 3.0f, 3.0f, 3.0f}, y[1], saved[1], dy[1] = {5.0f}, dx[4];
    struct mp_ctx ctx = {0};
    l.ops->forward(&l, &ctx, NULL, x, y, saved, 1);
    assert_true(y[0] == 3.0f);
    l.ops->backward_input(&l, &ctx, NULL, x, y, saved, dy, dx, 1);
    assert_true(dx[0] == 0.0f && dx[1] == 5.0f && dx[2] == 0.0f && dx[3] == 0.0f);
}

static void expect_plan_error(struct mp_layer *l, struct mp_shape in, const char *needle)
{
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_not_equal(l->ops->plan(l, in, &err), 0);
    assert_int_equal(err.code, MP_ERR_INPUT);
    if (!strstr(err.msg, needle)) {
        print_error("message \"%s\" lacks \"%s\"\n", err.msg, needle);
        fail();
    }
}

static void test_plan_rejects_bad_shapes_with_clear_messages(void **state)
{
    (void)state;
    struct mp_layer d = make(&mp__ops_dense, MP_LAYER_DENSE, 10, 0, 0, 0);
    expect_plan_error(&d, chw(1, 28, 28), "flatten");
    struct mp_layer c = make(&mp__ops_conv2d, MP_LAYER_CONV2D, 4, 7, 1, 0);
    expect_plan_error(&c, chw(1, 5, 5), "conv2d: kernel 7 larger than input 5x5");
    struct mp_layer c2 = make(&mp__ops_conv2d, MP_LAYER_CONV2D, 4, 3, 1, 0);
    expect_plan_error(&c2, (struct mp_shape){.ndim = 1, .d = {10, 0, 0}}, "conv2d");
    struct mp_layer m = make(&mp__ops_maxpool, MP_LAYER_MAXPOOL, 0, 4, 0, 0);
    expect_plan_error(&m, chw(2, 3, 8), "maxpool: window 4 larger than input 3x8");
    struct mp_layer a = make(&mp__ops_avgpool, MP_LAYER_AVGPOOL, 0, 6, 0, 0);
    expect_plan_error(&a, chw(2, 8, 5), "avgpool");
}

/* The CNN's shapes: pad 2 keeps 28x28, maxpool halves, and the costs are the analytic FLOPs. */
static void test_cnn_shapes_and_costs_match_pytorch(void **state)
{
    (void)state;
    struct mp_layer c = make(&mp__ops_conv2d, MP_LAYER_CONV2D, 32, 5, 1, 2);
    plan_ok(&c, chw(1, 28, 28));
    assert_int_equal(c.out.d[0], 32);
    assert_int_equal(c.out.d[1], 28);
    assert_int_equal(c.n_weight, 32 * 25);
    assert_int_equal(c.n_bias, 32);
    struct mp_cost cc = c.ops->cost(&c, 2);
    assert_true(fabs(cc.flops_bwd_weight - (2.0 * 2 * 32 * 25 * 784 + 2 * 32 * 784)) < 1);
    assert_int_equal(cc.act_bytes_out, 4 * 2 * 32 * 784);
    assert_int_equal(cc.param_bytes, 4 * (32 * 25 + 32));
    struct mp_layer p = make(&mp__ops_maxpool, MP_LAYER_MAXPOOL, 0, 2, 0, 0);
    plan_ok(&p, c.out);
    assert_int_equal(p.out.d[1], 14);
    assert_int_equal(p.ops->cost(&p, 3).saved_bytes, 3 * 4 * 32 * 14 * 14);
    struct mp_layer d = make(&mp__ops_dense, MP_LAYER_DENSE, 1024, 0, 0, 0);
    plan_ok(&d, (struct mp_shape){.ndim = 1, .d = {3136, 0, 0}});
    assert_true(fabs(d.ops->cost(&d, 4).flops_bwd_input - 2.0 * 4 * 3136 * 1024) < 1);
}

/* Through the spec parser: the layers as a model file declares them (defaults, options). */
static void test_parsed_layers_match_finite_differences(void **state)
{
    (void)state;
    static const char spec[] = "input 2 9 8\n"
                               "conv2d 3 3 stride=2 pad=1\n"
                               "conv2d 2 2\n"
                               "avgpool 2\n"
                               "flatten\n"
                               "dense 5\n"
                               "softmax_xent\n";
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(&m, "fd.mp", spec, strlen(spec), &err) != 0) {
        print_error("%s\n", err.msg);
        fail();
    }
    int checked = 0;
    for (int i = 1; i < m.n_layers; i++) {
        enum mp_layer_kind k = m.layers[i].kind;
        if (k == MP_LAYER_DENSE || k == MP_LAYER_CONV2D || k == MP_LAYER_MAXPOOL ||
            k == MP_LAYER_AVGPOOL) {
            fd_check_layer(&m.layers[i], 3, 500 + (uint64_t)i);
            checked++;
        }
    }
    assert_int_equal(checked, 4);
    assert_int_equal(m.layers[1].out.d[1], 5); /* (9 + 2 - 3) / 2 + 1 */
    assert_int_equal(m.layers[2].out.d[1], 4); /* stride 1, pad 0 by default */
    mp_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_backward_matches_finite_differences),
        cmocka_unit_test(test_conv2d_backward_matches_finite_differences),
        cmocka_unit_test(test_pools_backward_match_finite_differences),
        cmocka_unit_test(test_maxpool_ties_send_the_gradient_to_the_first_maximum),
        cmocka_unit_test(test_plan_rejects_bad_shapes_with_clear_messages),
        cmocka_unit_test(test_cnn_shapes_and_costs_match_pytorch),
        cmocka_unit_test(test_parsed_layers_match_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
