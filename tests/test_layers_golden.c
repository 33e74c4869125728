/* Golden vectors for the layers of mp_act.c, mp_dropout.c, mp_norm.c and mp_loss.c: small fixed
 * inputs whose outputs and gradients were computed independently in Python 3 (double precision,
 * math.erf / math.tanh / math.exp; layernorm gradients by central differences with h = 1e-6 on a
 * double-precision reimplementation; the dropout mask by a Python port of mp_hash4 and the
 * splitmix64 output function) and pasted as literals. The script is tests/data/golden_layers.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mp_layer.h"

/* Float kernels against double references: a few ulp, plus an absolute floor for values near 0. */
static void expect_close(const char *what, const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= 2e-6f * fmaxf(1.0f, fabsf(want[i]))))
            fail_msg("%s[%zu]: got %.9g, want %.9g", what, i, (double)got[i], (double)want[i]);
}

struct one {
    struct mp_model m;
    const struct mp_layer *l;
    struct mp_ctx ctx;
};

/* Parses a spec whose layer 1 is the layer under test. */
static void one_setup(struct one *o, const char *spec, const int32_t *labels, size_t global_batch)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(&o->m, "golden", spec, strlen(spec), &err) != 0)
        fail_msg("%s", err.msg);
    o->l = &o->m.layers[1];
    memset(&o->ctx, 0, sizeof o->ctx);
    o->ctx.labels = labels;
    o->ctx.training = 1;
    o->ctx.global_batch = global_batch;
}

static const float act_x[6] = {-2.0f, -0.5f, 0.25f, 0.7f, 1.5f, 3.0f};
static const float act_dy[6] = {0.3f, -1.2f, 0.8f, 0.5f, -0.7f, 1.1f};

/* Forward and backward of an element-wise activation on act_x (one sample of 6). */
static void check_activation(const char *name, const float *want_y, const float *want_dx)
{
    char spec[64];
    snprintf(spec, sizeof spec, "input 6\n%s\nmse\n", name);
    struct one o;
    one_setup(&o, spec, NULL, 1);
    float y[6], dx[6];
    o.l->ops->forward(o.l, &o.ctx, NULL, act_x, y, NULL, 1);
    expect_close("y", y, want_y, 6);
    o.l->ops->backward_input(o.l, &o.ctx, NULL, act_x, y, NULL, act_dy, dx, 1);
    expect_close("dx", dx, want_dx, 6);
    mp_model_free(&o.m);
}

static void test_relu_matches_golden_vector(void **state)
{
    (void)state;
    static const float y[6] = {0.0f, 0.0f, 0.25f, 0.7f, 1.5f, 3.0f};
    static const float dx[6] = {0.0f, 0.0f, 0.8f, 0.5f, -0.7f, 1.1f};
    check_activation("relu", y, dx);
}

static void test_gelu_matches_exact_erf_golden_vector(void **state)
{
    (void)state;
    static const float y[6] = {
        -0.0455002639f, -0.154268769f, 0.149676581f, 0.530625443f, 1.3997892f, 2.99595031f
    };
    static const float dx[6] = {
        -0.0255695403f, -0.15900585f, 0.556298684f, 0.488307051f, -0.789228435f, 1.11314021f
    };
    check_activation("gelu", y, dx);
}

static void test_tanh_matches_golden_vector(void **state)
{
    (void)state;
    static const float y[6] = {
        -0.96402758f, -0.462117157f, 0.244918662f, 0.604367777f, 0.905148254f, 0.995054754f
    };
    static const float dx[6] = {
        0.0211952475f, -0.94373728f, 0.752011879f, 0.317369795f, -0.126494647f, 0.0108526409f
    };
    check_activation("tanh", y, dx);
}

static void test_sigmoid_matches_golden_vector(void **state)
{
    (void)state;
    static const float y[6] = {
        0.119202922f, 0.377540669f, 0.562176501f, 0.668187772f, 0.817574476f, 0.952574127f
    };
    static const float dx[6] = {
        0.0314980756f, -0.282004455f, 0.196907266f, 0.110856437f, -0.104402516f, 0.0496943257f
    };
    check_activation("sigmoid", y, dx);
}

static void test_flatten_keeps_chw_order(void **state)
{
    (void)state;
    struct one o;
    one_setup(&o, "input 2 2 3\nflatten\nmse\n", NULL, 1);
    assert_int_equal(o.l->out.ndim, 1);
    assert_int_equal(o.l->out.d[0], 12);
    float x[24], y[24], dx[24];
    for (int i = 0; i < 24; i++)
        x[i] = (float)i;
    o.l->ops->forward(o.l, &o.ctx, NULL, x, y, NULL, 2);
    assert_memory_equal(x, y, sizeof x); /* (C, H, W) row-major is already C*H*W order */
    o.l->ops->backward_input(o.l, &o.ctx, NULL, x, y, NULL, y, dx, 2);
    assert_memory_equal(x, dx, sizeof x);
    mp_model_free(&o.m);
}

/* seed 42, layer 1, step 7, micro-batch 2, samples 1 and 2 of the micro-batch (sample_base 1). */
static void test_dropout_mask_matches_golden_vector(void **state)
{
    (void)state;
    static const float x[16] = {
        -1.75f, -1.25f, -0.75f, -0.25f, 0.25f, 0.75f, 1.25f, 1.75f, 2.25f, 2.75f, 3.25f, 3.75f,
        4.25f, 4.75f, 5.25f, 5.75f
    };
    static const float want[16] = {
        0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.5f, 2.5f, 0.0f, 0.0f, 0.0f, 0.0f, 7.5f, 0.0f, 9.5f, 0.0f,
        11.5f
    };
    struct one o;
    one_setup(&o, "input 8\ndropout 0.5\nmse\n", NULL, 1);
    o.ctx.seed = 42;
    o.ctx.step = 7;
    o.ctx.micro_batch = 2;
    o.ctx.sample_base = 1;
    float y[16], dx[16];
    o.l->ops->forward(o.l, &o.ctx, NULL, x, y, NULL, 2);
    expect_close("y", y, want, 16);
    o.l->ops->backward_input(o.l, &o.ctx, NULL, x, y, NULL, x, dx, 2);
    expect_close("dx", dx, want, 16);
    mp_model_free(&o.m);
}

static void test_layernorm_matches_golden_vector(void **state)
{
    (void)state;
    static const float x[10] = {1.0f, 2.0f, 3.0f, 4.0f, 6.0f, -1.0f, 0.5f, 0.0f, 2.0f, -0.5f};
    static const float param[10] = {1.0f, 0.5f, -1.0f, 2.0f, 1.5f, 0.0f, 0.1f, -0.2f, 0.3f, 0.0f};
    static const float dy[10] = {0.2f, -0.1f, 0.4f, 0.3f, -0.5f, 1.0f, 0.0f, -1.0f, 0.5f, 0.25f};
    static const float want_y[10] = {
        -1.27872187f, -0.248742327f, -0.0837525576f, 1.22997954f, 2.44119629f, -1.16553754f,
        0.245692192f, -0.00574374383f, 3.79661261f, -1.01984534f
    };
    static const float want_dx[10] = {
        -0.00314126214f, -0.0730470735f, -0.201076606f, 0.455564097f, -0.178299155f, 0.345904133f,
        -0.663174294f, 0.320706036f, 0.270309841f, -0.273745716f
    };
    static const float want_dw[5] = {
        -1.42128191f, 0.0697484654f, 0.147757279f, 1.01365008f, -0.983706321f
    };
    static const float want_db[5] = {1.2f, -0.1f, -0.6f, 0.8f, -0.25f};
    struct one o;
    one_setup(&o, "input 5\nlayernorm\nmse\n", NULL, 1);
    float y[10], saved[4], dx[10], dparam[10] = {0};
    o.l->ops->forward(o.l, &o.ctx, param, x, y, saved, 2);
    expect_close("y", y, want_y, 10);
    o.l->ops->backward_input(o.l, &o.ctx, param, x, y, saved, dy, dx, 2);
    expect_close("dx", dx, want_dx, 10);
    o.l->ops->backward_weight(o.l, &o.ctx, x, y, saved, dy, dparam, 2);
    expect_close("dweight", dparam, want_dw, 5);
    expect_close("dbias", dparam + 5, want_db, 5);
    mp_model_free(&o.m);
}

static const float loss_x[8] = {1.0f, 2.0f, 3.0f, 0.5f, -1.0f, 0.0f, 4.0f, 2.0f};
static const int32_t loss_labels[2] = {2, 0};

/* Two samples of 4 classes, labels {2, 0}, global batch 4 (the call holds half of it). */
static void test_softmax_xent_matches_golden_vector(void **state)
{
    (void)state;
    static const float want_p[8] = {
        0.0853688935f, 0.232056712f, 0.630795543f, 0.0517788513f, 0.00580662843f, 0.0157840526f,
        0.861780069f, 0.11662925f
    };
    static const float want_dx[8] = {
        0.0213422234f, 0.058014178f, -0.0923011142f, 0.0129447128f, -0.248548343f, 0.00394601314f,
        0.215445017f, 0.0291573124f
    };
    struct one o;
    one_setup(&o, "input 4\nsoftmax_xent\n", loss_labels, 4);
    double loss = 1.0; /* forward adds to it */
    size_t hits = 5;
    o.ctx.loss_sum = &loss;
    o.ctx.n_correct = &hits;
    float y[8], dx[8];
    o.l->ops->forward(o.l, &o.ctx, NULL, loss_x, y, NULL, 2);
    expect_close("p", y, want_p, 8);
    assert_float_equal(loss, 1.0 + 5.6095286701012519, 1e-6);
    assert_int_equal(hits, 5 + 1); /* sample 0: argmax 2 = label; sample 1: argmax 2 != 0 */
    o.l->ops->backward_input(o.l, &o.ctx, NULL, loss_x, y, NULL, NULL, dx, 2);
    expect_close("dx", dx, want_dx, 8);
    mp_model_free(&o.m);
}

/* The one-hot target of the label; per-sample loss is the mean over the 4 features. */
static void test_mse_matches_golden_vector(void **state)
{
    (void)state;
    static const float want_dx[8] = {0.125f, 0.25f, 0.25f, 0.0625f, -0.25f, 0.0f, 0.5f, 0.25f};
    struct one o;
    one_setup(&o, "input 4\nmse\n", loss_labels, 4);
    double loss = 0;
    size_t hits = 0;
    o.ctx.loss_sum = &loss;
    o.ctx.n_correct = &hits;
    float y[8], dx[8];
    o.l->ops->forward(o.l, &o.ctx, NULL, loss_x, y, NULL, 2);
    assert_memory_equal(y, loss_x, sizeof y);
    assert_float_equal(loss, 8.3125, 1e-6);
    assert_int_equal(hits, 1);
    o.l->ops->backward_input(o.l, &o.ctx, NULL, loss_x, y, NULL, NULL, dx, 2);
    expect_close("dx", dx, want_dx, 8);
    mp_model_free(&o.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relu_matches_golden_vector),
        cmocka_unit_test(test_gelu_matches_exact_erf_golden_vector),
        cmocka_unit_test(test_tanh_matches_golden_vector),
        cmocka_unit_test(test_sigmoid_matches_golden_vector),
        cmocka_unit_test(test_flatten_keeps_chw_order),
        cmocka_unit_test(test_dropout_mask_matches_golden_vector),
        cmocka_unit_test(test_layernorm_matches_golden_vector),
        cmocka_unit_test(test_softmax_xent_matches_golden_vector),
        cmocka_unit_test(test_mse_matches_golden_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
