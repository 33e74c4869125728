/* The model spec parser and layer registry: the shipped models parse to PyTorch's shapes and
 * parameter counts, digests are canonical, initial weights depend only on (seed, layer index), and
 * every malformed spec is rejected as MP_ERR_INPUT with "NAME:LINE:" naming the line at fault. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_layer.h"

static size_t total_params(const struct mp_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->n_layers; i++)
        n += mp_layer_n_param(&m->layers[i]);
    return n;
}

static void load(struct mp_model *m, const char *path)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_load(m, path, &err) != 0)
        fail_msg("%s", err.msg);
}

static void test_mlp_spec_matches_pytorch_shapes_and_param_count(void **state)
{
    (void)state;
    struct mp_model m;
    load(&m, "models/mlp.mp");
    assert_int_equal(m.n_layers, 12);
    assert_int_equal(m.layers[0].kind, MP_LAYER_INPUT);
    assert_int_equal(m.layers[0].out.ndim, 3);
    assert_int_equal(mp_layer_out_len(&m.layers[0]), 784);
    assert_int_equal(m.layers[1].out.ndim, 1);
    assert_int_equal(m.layers[1].out.d[0], 784);
    assert_int_equal(m.layers[2].n_weight, 1024 * 784);
    assert_int_equal(m.layers[2].n_bias, 1024);
    assert_int_equal(m.layers[11].kind, MP_LAYER_SOFTMAX_XENT);
    assert_true(m.layers[11].is_loss);
    assert_int_equal(m.n_classes, 10);
    assert_int_equal(total_params(&m),
                     784 * 1024 + 1024 + 3 * (1024 * 1024 + 1024) + 1024 * 10 + 10);
    for (int i = 0; i < m.n_layers; i++) {
        assert_int_equal(m.layers[i].index, i);
        assert_int_equal(m.layers[i].line, i + 3); /* two comment lines first */
    }
    assert_int_equal(strlen(m.digest), 16);
    mp_model_free(&m);
}

/* The engine computes input gradients only where they reach a layer with parameters: from one
 * past the first such layer (the MLP's flatten, then its first dense, only see the data). */
static void test_dx_from_is_one_past_the_first_layer_with_parameters(void **state)
{
    (void)state;
    struct mp_model m;
    struct mp_err err;
    load(&m, "models/mlp.mp"); /* input, flatten, dense, ... */
    assert_int_equal(m.dx_from, 3);
    mp_model_free(&m);
    load(&m, "models/cnn.mp"); /* input, conv2d, ... */
    assert_int_equal(m.dx_from, 2);
    mp_model_free(&m);
    static const char text[] = "input 1 4 4\nflatten\nrelu\ndropout 0.5\ndense 3\nsoftmax_xent\n";
    mp_err_clear(&err);
    assert_int_equal(mp_model_parse(&m, "mem.mp", text, sizeof text - 1, &err), 0);
    assert_int_equal(m.dx_from, 5);
    mp_model_free(&m);
}

static void test_cnn_spec_matches_pytorch_shapes_and_param_count(void **state)
{
    (void)state;
    struct mp_model m;
    load(&m, "models/cnn.mp");
    assert_int_equal(m.n_layers, 12);
    const struct mp_layer *c1 = &m.layers[1], *p2 = &m.layers[6], *fl = &m.layers[7];
    assert_int_equal(c1->kind, MP_LAYER_CONV2D);
    assert_int_equal(c1->stride, 1);
    assert_int_equal(c1->pad, 2);
    assert_int_equal(c1->out.d[0], 32);
    assert_int_equal(c1->out.d[1], 28);
    assert_int_equal(p2->out.d[0], 64);
    assert_int_equal(p2->out.d[1], 7);
    assert_int_equal(p2->out.d[2], 7);
    assert_int_equal(fl->out.d[0], 64 * 7 * 7);
    assert_int_equal(m.n_classes, 10);
    assert_int_equal(total_params(&m), (32 * 25 + 32) + (64 * 32 * 25 + 64)
                                           + (3136 * 1024 + 1024) + (1024 * 10 + 10));
    mp_model_free(&m);
}

static void test_tiny_and_tiny_mlp_specs_parse(void **state)
{
    (void)state;
    struct mp_model m;
    load(&m, "models/tiny.mp");
    assert_int_equal(m.n_layers, 13);
    assert_int_equal(m.n_classes, 10);
    assert_int_equal(total_params(&m), 40 + (64 * 32 + 32) + 64 + (32 * 16 + 16) + (16 * 10 + 10));
    assert_int_equal(m.layers[7].kind, MP_LAYER_DROPOUT);
    assert_float_equal(m.layers[7].rate, 0.25f, 0);
    mp_model_free(&m);
    load(&m, "models/tiny_mlp.mp");
    assert_int_equal(mp_layer_in_len(&m.layers[1]), 784);
    assert_int_equal(total_params(&m), 784 * 64 + 64 + 64 * 10 + 10);
    mp_model_free(&m);
}

static void parse_ok(struct mp_model *m, const char *text)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(m, "ok.mp", text, strlen(text), &err) != 0)
        fail_msg("%s", err.msg);
}

static void test_spec_accepts_comments_tabs_crlf_and_defaults_in_digest(void **state)
{
    (void)state;
    struct mp_model a, b, c;
    parse_ok(&a, "input 1 8 8\nconv2d 4 3 pad=1\nflatten\nsoftmax_xent\n");
    parse_ok(&b, "# header\n\n  input\t1 8 8   # trailing\r\n"
                 "conv2d 4 3 stride=1 pad=1\r\n\t\nflatten\nsoftmax_xent");
    parse_ok(&c, "input 1 8 8\nconv2d 4 3 pad=0\nflatten\nsoftmax_xent\n");
    assert_string_equal(a.digest, b.digest);
    assert_string_not_equal(a.digest, c.digest);
    assert_int_equal(b.layers[1].line, 4);
    mp_model_free(&a);
    mp_model_free(&b);
    mp_model_free(&c);
    /* Two sizes are (H, W): a single-channel image. One is a feature vector. */
    parse_ok(&a, "input 5 6\nrelu\nmse\n");
    assert_int_equal(a.layers[0].out.ndim, 3);
    assert_int_equal(a.layers[0].out.d[0], 1);
    assert_int_equal(a.layers[0].out.d[2], 6);
    mp_model_free(&a);
    parse_ok(&a, "input 7\nsigmoid\nmse\n");
    assert_int_equal(a.layers[0].out.ndim, 1);
    assert_int_equal(a.n_classes, 7);
    mp_model_free(&a);
}

static void test_registry_round_trips_every_kind_and_suggests_nearest(void **state)
{
    (void)state;
    for (int k = 0; k < MP_LAYER_COUNT; k++) {
        const struct mp_layer_ops *ops = mp_layer_ops_of((enum mp_layer_kind)k);
        assert_non_null(ops);
        enum mp_layer_kind kind = MP_LAYER_COUNT;
        assert_ptr_equal(mp_layer_ops_find(ops->name, &kind), ops);
        assert_int_equal(kind, k);
        assert_string_equal(mp_layer_nearest_name(ops->name), ops->name);
    }
    assert_null(mp_layer_ops_find("dens", NULL));
    assert_null(mp_layer_ops_of(MP_LAYER_COUNT));
    assert_string_equal(mp_layer_nearest_name("dens"), "dense");
    assert_string_equal(mp_layer_nearest_name("maxpol"), "maxpool");
    assert_string_equal(mp_layer_nearest_name("softmax_xnt"), "softmax_xent");
    assert_string_equal(mp_layer_nearest_name("Relu"), "relu");
}

static void test_init_params_depend_only_on_seed_and_layer_index(void **state)
{
    (void)state;
    struct mp_model a, b;
    parse_ok(&a, "input 6\ndense 5\nlayernorm\nsoftmax_xent\n");
    parse_ok(&b, "input 6\nrelu\ndense 5\nlayernorm\nsoftmax_xent\n");
    float w1[35], w2[35], w3[35];
    mp_layer_init_params(&a.layers[1], w1, 11);
    mp_layer_init_params(&a.layers[1], w2, 11);
    assert_memory_equal(w1, w2, sizeof w1);
    mp_layer_init_params(&a.layers[1], w3, 12);
    assert_memory_not_equal(w1, w3, sizeof w1);
    /* The same dense at index 2 of another model draws different numbers: index is in the seed. */
    mp_layer_init_params(&b.layers[2], w3, 11);
    assert_memory_not_equal(w1, w3, sizeof w1);
    float ln[10];
    mp_layer_init_params(&a.layers[2], ln, 11);
    for (int j = 0; j < 5; j++) {
        assert_float_equal(ln[j], 1.0f, 0);
        assert_float_equal(ln[5 + j], 0.0f, 0);
    }
    mp_model_free(&a);
    mp_model_free(&b);
}

static void test_every_layer_cost_reports_output_and_param_bytes(void **state)
{
    (void)state;
    const char *paths[] = {"models/mlp.mp", "models/cnn.mp", "models/tiny.mp"};
    for (size_t p = 0; p < 3; p++) {
        struct mp_model m;
        load(&m, paths[p]);
        for (int i = 0; i < m.n_layers; i++) {
            const struct mp_layer *l = &m.layers[i];
            struct mp_cost c = l->ops->cost(l, 8);
            assert_int_equal(c.act_bytes_out, 8 * mp_layer_out_len(l) * sizeof(float));
            assert_int_equal(c.param_bytes, mp_layer_n_param(l) * sizeof(float));
            assert_true(c.flops_fwd >= 0 && c.flops_bwd_input >= 0 && c.flops_bwd_weight >= 0);
            if (l->kind != MP_LAYER_INPUT && l->kind != MP_LAYER_FLATTEN)
                assert_true(c.flops_fwd > 0);
        }
        mp_model_free(&m);
    }
}

/* ---- malformed specs: each is MP_ERR_INPUT on the right line, with a clear message ---- */

static void expect_error(const char *text, size_t len, int line, const char *needle)
{
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_model_parse(&m, "bad.mp", text, len, &err), -1);
    char where[32];
    snprintf(where, sizeof where, "bad.mp:%d: ", line);
    if (err.code != MP_ERR_INPUT || strncmp(err.msg, where, strlen(where)) != 0
        || !strstr(err.msg, needle))
        fail_msg("want %s...%s, got [%s] %s", where, needle, mp_status_name(err.code), err.msg);
    assert_null(m.layers);
}
#define EXPECT_ERROR(text, line, needle) expect_error((text), strlen(text), (line), (needle))

static void test_unknown_layer_is_rejected_with_suggestion(void **state)
{
    (void)state;
    EXPECT_ERROR("input 1 28 28\nflatten\ndens 10\nsoftmax_xent\n", 3,
                 "unknown layer 'dens' (did you mean 'dense'?)");
}

static void test_missing_argument_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 4\n\ndense\nsoftmax_xent\n", 3, "dense: missing argument");
    EXPECT_ERROR("input 1 9 9\nconv2d 4\nflatten\nmse\n", 2, "usage: conv2d OUT K");
    EXPECT_ERROR("input\nmse\n", 1, "input: missing argument");
}

static void test_extra_argument_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 4\nrelu 3\nmse\n", 2, "relu: too many arguments");
    EXPECT_ERROR("input 1 2 3 4\nmse\n", 1, "input: too many arguments");
    EXPECT_ERROR("input 4\ndense 3 4\nmse\n", 2, "dense: too many arguments");
}

static void test_non_numeric_argument_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 4\ndense ten\nmse\n", 2, "is not a number: 'ten'");
    EXPECT_ERROR("input 4\ndense 2.5\nmse\n", 2, "must be a whole number");
    EXPECT_ERROR("input 4\ndropout half\nmse\n", 2, "dropout: P is not a number");
    EXPECT_ERROR("input 1 8 8\nconv2d 2 3 pad=x\nflatten\nmse\n", 2, "pad is not a number");
}

static void test_unknown_option_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 1 8 8\nconv2d 2 3 padding=1\nflatten\nmse\n", 2,
                 "conv2d: unknown option 'padding'");
    EXPECT_ERROR("input 4\nrelu inplace=1\nmse\n", 2, "relu takes no options");
    EXPECT_ERROR("input 1 8 8\nconv2d 2 3 pad=1 pad=1\nflatten\nmse\n", 2, "given twice");
    EXPECT_ERROR("input 1 8 8\nconv2d 2 3 pad=\nflatten\nmse\n", 2, "needs a value");
}

static void test_zero_or_negative_sizes_are_rejected_on_their_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 4\ndense 0\nmse\n", 2, "dense: size N must be positive, got 0");
    EXPECT_ERROR("input 4\ndense -5\nmse\n", 2, "must be positive, got -5");
    EXPECT_ERROR("input 0 28 28\nflatten\nmse\n", 1, "input: size must be positive");
    EXPECT_ERROR("input 1 8 8\nconv2d 2 3 stride=0\nflatten\nmse\n", 2, "stride must be positive");
    EXPECT_ERROR("input 1 8 8\nconv2d 2 3 pad=-1\nflatten\nmse\n", 2, "must be non-negative");
    EXPECT_ERROR("input 1 8 8\nmaxpool 0\nflatten\nmse\n", 2, "maxpool: kernel K must be positive");
    EXPECT_ERROR("input 4\ndropout 1\nmse\n", 2, "dropout: P must be in [0, 1)");
    EXPECT_ERROR("input 4\ndropout -0.1\nmse\n", 2, "dropout: P must be in [0, 1)");
}

static void test_kernel_larger_than_input_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 1 5 5\nconv2d 2 7\nflatten\nmse\n", 2,
                 "conv2d: kernel 7 larger than input 5x5");
    EXPECT_ERROR("input 1 5 5\nconv2d 2 9 pad=1\nflatten\nmse\n", 2, "padded by 1");
    EXPECT_ERROR("input 2 6 6\nmaxpool 2\navgpool 4\nflatten\nmse\n", 3,
                 "avgpool: kernel 4 larger than input 3x3");
}

static void test_shapes_that_do_not_connect_are_rejected_on_the_consumer_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 1 28 28\ndense 10\nsoftmax_xent\n", 2, "add `flatten`");
    EXPECT_ERROR("input 784\nconv2d 4 3\nflatten\nmse\n", 2, "conv2d needs a (C, H, W) input");
    EXPECT_ERROR("input 1 8 8\nflatten\nmaxpool 2\nmse\n", 3, "maxpool needs a (C, H, W) input");
}

static void test_input_must_be_first_and_only(void **state)
{
    (void)state;
    EXPECT_ERROR("# no input\ndense 10\nsoftmax_xent\n", 2, "first layer must be `input`");
    EXPECT_ERROR("input 4\nrelu\ninput 4\nmse\n", 3, "a second `input`");
}

static void test_missing_loss_is_reported_on_the_last_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 4\nrelu\ndense 3\n", 3, "must end with a loss layer");
    EXPECT_ERROR("input 4\nrelu\ndense 3\n# trailing comment\n\n", 3, "must end with a loss");
    EXPECT_ERROR("input 4\n", 1, "must end with a loss layer");
}

static void test_loss_before_the_end_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR("input 4\nsoftmax_xent\nrelu\nmse\n", 2, "a loss must be the last layer");
}

static void test_empty_model_is_rejected(void **state)
{
    (void)state;
    EXPECT_ERROR("", 1, "empty model");
    EXPECT_ERROR("# only a comment\n\n   \n", 1, "empty model");
}

static void test_binary_garbage_is_rejected_on_its_line(void **state)
{
    (void)state;
    static const char nul[] = "input 4\nre\0lu\nmse\n";
    expect_error(nul, sizeof nul - 1, 2, "binary data (byte 0x00");
    EXPECT_ERROR("input 4\nrelu\n\xff\xfe\x01garbage\nmse\n", 3, "binary data");
    EXPECT_ERROR("input 4\nrelu # caf\xc3\n", 2, "binary data"); /* truncated UTF-8 */
    struct mp_model m;
    parse_ok(&m, "# model \xc3\xa9t\xc3\xa9 \xe2\x86\x92 10 classes\ninput 4\nmse\n");
    mp_model_free(&m);
}

static void test_line_over_4k_is_rejected_on_its_line(void **state)
{
    (void)state;
    size_t n = 5000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    strcpy(text, "input 4\nrelu ");
    size_t len = strlen(text);
    memset(text + len, '#', n);
    strcpy(text + len + n, "\nmse\n");
    EXPECT_ERROR(text, 2, "line longer than 4096 bytes");
    free(text);
}

static void test_absurd_sizes_are_rejected_without_overflow(void **state)
{
    (void)state;
    EXPECT_ERROR("input 16777216 16777216 16777216\nflatten\nmse\n", 1, "too large");
    EXPECT_ERROR("input 99999999999999999999999\nmse\n", 1, "too large");
    EXPECT_ERROR("input 4096 4096\nflatten\ndense 16777216\nmse\n", 3, "too many");
    struct mp_model m; /* 16 Mi features per sample is large but well-formed */
    parse_ok(&m, "input 16777216\nrelu\nmse\n");
    mp_model_free(&m);
}

static void test_unreadable_file_is_an_io_error(void **state)
{
    (void)state;
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_model_load(&m, "models/does-not-exist.mp", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    assert_non_null(strstr(err.msg, "models/does-not-exist.mp: cannot read: No such file"));
    mp_err_clear(&err);
    assert_int_equal(mp_model_load(&m, "models", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_spec_matches_pytorch_shapes_and_param_count),
        cmocka_unit_test(test_dx_from_is_one_past_the_first_layer_with_parameters),
        cmocka_unit_test(test_cnn_spec_matches_pytorch_shapes_and_param_count),
        cmocka_unit_test(test_tiny_and_tiny_mlp_specs_parse),
        cmocka_unit_test(test_spec_accepts_comments_tabs_crlf_and_defaults_in_digest),
        cmocka_unit_test(test_registry_round_trips_every_kind_and_suggests_nearest),
        cmocka_unit_test(test_init_params_depend_only_on_seed_and_layer_index),
        cmocka_unit_test(test_every_layer_cost_reports_output_and_param_bytes),
        cmocka_unit_test(test_unknown_layer_is_rejected_with_suggestion),
        cmocka_unit_test(test_missing_argument_is_rejected_on_its_line),
        cmocka_unit_test(test_extra_argument_is_rejected_on_its_line),
        cmocka_unit_test(test_non_numeric_argument_is_rejected_on_its_line),
        cmocka_unit_test(test_unknown_option_is_rejected_on_its_line),
        cmocka_unit_test(test_zero_or_negative_sizes_are_rejected_on_their_line),
        cmocka_unit_test(test_kernel_larger_than_input_is_rejected_on_its_line),
        cmocka_unit_test(test_shapes_that_do_not_connect_are_rejected_on_the_consumer_line),
        cmocka_unit_test(test_input_must_be_first_and_only),
        cmocka_unit_test(test_missing_loss_is_reported_on_the_last_line),
        cmocka_unit_test(test_loss_before_the_end_is_rejected_on_its_line),
        cmocka_unit_test(test_empty_model_is_rejected),
        cmocka_unit_test(test_binary_garbage_is_rejected_on_its_line),
        cmocka_unit_test(test_line_over_4k_is_rejected_on_its_line),
        cmocka_unit_test(test_absurd_sizes_are_rejected_without_overflow),
        cmocka_unit_test(test_unreadable_file_is_an_io_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
