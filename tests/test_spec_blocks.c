/* The model language of transformers (DESIGN.md §9), tested as claims: `input tokens`, `embed`,
 * `attention`, `lm_head`, the blocks `repeat N … end` and `residual … end`, the partition units
 * they make, the named tensors of models/gpt.mp, and every malformed spec of issue 15 rejected
 * as MP_ERR_INPUT "NAME:LINE:" on the line at fault. Also that the digests of the image models did
 * not move when the parser learnt blocks: plans store them, and users' plans must keep working. */
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
#include "mp_stage.h"

static void parse_ok(struct mp_model *m, const char *text)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(m, "ok.mp", text, strlen(text), &err) != 0)
        fail_msg("%s", err.msg);
}

static void load(struct mp_model *m, const char *path)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_load(m, path, &err) != 0)
        fail_msg("%s", err.msg);
}

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

/* A token model's first two lines, then the rest; HEAD is 2 lines. */
#define HEAD "input tokens 8\nembed 256 16\n"
#define TAIL "lm_head\nsoftmax_xent\n"

/* ---- the errors of issue 15, each on its line ---- */

static void test_unknown_word_is_rejected_on_its_line_with_block_suggestions(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "residual\n  layernorm\n  attenton 4\nend\n" TAIL, 5,
                 "unknown layer 'attenton' (did you mean 'attention'?)");
    EXPECT_ERROR(HEAD "# blocks\nresidul\nlayernorm\nend\n" TAIL, 4, "did you mean 'residual'?");
    EXPECT_ERROR(HEAD "repaet 2\nlayernorm\nend\n" TAIL, 3, "did you mean 'repeat'?");
    EXPECT_ERROR(HEAD "residual\nlayernorm\nedn\n" TAIL, 5, "did you mean 'end'?");
    EXPECT_ERROR(HEAD "transformer 4\n" TAIL, 3, "blocks: repeat N, residual, end");
}

static void test_end_with_no_open_block_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "layernorm\nend\n" TAIL, 4, "end with no open block");
    EXPECT_ERROR(HEAD "residual\nlayernorm\nend\n\nend\n" TAIL, 7, "end with no open block");
    EXPECT_ERROR(HEAD "residual\nlayernorm\nend 1\n" TAIL, 5, "end takes no arguments");
}

static void test_block_never_closed_is_rejected_on_its_opening_line(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "residual\nlayernorm\n" TAIL, 3, "residual: block never closed");
    EXPECT_ERROR(HEAD "repeat 2\n  residual\n  layernorm\n  end\n" TAIL, 3,
                 "repeat: block never closed");
    /* Nested and both open: the innermost is the one a reader fixes first. */
    EXPECT_ERROR(HEAD "repeat 2\n\n  residual # here\n  layernorm\n" TAIL, 5,
                 "residual: block never closed");
}

static void test_repeat_needs_a_whole_count_of_at_least_one(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "repeat 0\nlayernorm\nend\n" TAIL, 3, "repeat: N must be at least 1, got 0");
    EXPECT_ERROR(HEAD "repeat -2\nlayernorm\nend\n" TAIL, 3, "must be at least 1, got -2");
    EXPECT_ERROR(HEAD "repeat\nlayernorm\nend\n" TAIL, 3, "usage: repeat N");
    EXPECT_ERROR(HEAD "repeat two\nlayernorm\nend\n" TAIL, 3, "usage: repeat N");
    EXPECT_ERROR(HEAD "repeat 1.5\nlayernorm\nend\n" TAIL, 3, "usage: repeat N");
    EXPECT_ERROR(HEAD "repeat 2 3\nlayernorm\nend\n" TAIL, 3, "usage: repeat N");
    EXPECT_ERROR(HEAD "repeat 100001\nlayernorm\nend\n" TAIL, 3, "too many copies");
    EXPECT_ERROR(HEAD "repeat 99999999999999999999999\nlayernorm\nend\n" TAIL, 3,
                 "too many copies");
    EXPECT_ERROR(HEAD "repeat 2\n\nend\n" TAIL, 5, "the repeat opened on line 3 has no layers");
    EXPECT_ERROR(HEAD "residual\nend\n" TAIL, 4, "the residual opened on line 3 has no layers");
    EXPECT_ERROR(HEAD "residual 2\nlayernorm\nend\n" TAIL, 3, "residual takes no arguments");
    EXPECT_ERROR("residual\ninput 4\nend\nmse\n", 1, "residual before `input`");
}

static void test_residual_body_that_changes_the_shape_is_rejected_on_its_end(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "residual       # opened here\n  layernorm\n  dense 20\n\nend\n" TAIL, 7,
                 "the residual body opened on line 3 turns its 8x16 input into 8x20");
    /* In a repeat: the first copy's end, not a later one. */
    EXPECT_ERROR(HEAD "repeat 3\nresidual\ndense 4\nend\nend\n" TAIL, 6, "opened on line 4");
    /* An image model: (C, H, W) shapes are named too. */
    EXPECT_ERROR("input 1 4 4\nresidual\nconv2d 2 3 pad=1\nend\nflatten\nmse\n", 4,
                 "turns its 1x4x4 input into 2x4x4");
    /* A loss inside a residual block is refused at the block's end. */
    EXPECT_ERROR(HEAD "residual\nlm_head\nsoftmax_xent\nend\n", 6, "cannot be inside a residual");
}

static void test_attention_width_not_divisible_by_heads_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "residual\nlayernorm\nattention 3\nend\n" TAIL, 5,
                 "attention: width 16 is not divisible by 3 heads");
    EXPECT_ERROR(HEAD "attention 0\n" TAIL, 3, "heads H must be positive");
    EXPECT_ERROR(HEAD "attention 4 causal=2\n" TAIL, 3, "causal must be 1 or 0");
    EXPECT_ERROR(HEAD "attention 4 dropout=1\n" TAIL, 3, "P must be in [0, 1)");
    EXPECT_ERROR(HEAD "attention 4 heads=2\n" TAIL, 3, "unknown option 'heads'");
    EXPECT_ERROR("input 16\nattention 4\nmse\n", 2, "attention: needs a sequence");
}

static void test_lm_head_rules_no_embed_other_width_two_tied(void **state)
{
    (void)state;
    EXPECT_ERROR("input 16\ndense 8\nlm_head\nsoftmax_xent\n", 3, "lm_head needs an `embed V C`");
    EXPECT_ERROR("input 16\nlm_head tied=0\nsoftmax_xent\n", 2, "lm_head needs an `embed V C`");
    EXPECT_ERROR(HEAD "dense 12\nlm_head\nsoftmax_xent\n", 4,
                 "lm_head tied=1: its input width 12 differs from the embed's C = 16 on line 2");
    /* E ties to one head: a second tied head would train a second copy nobody keeps equal. */
    EXPECT_ERROR("input tokens 8\nembed 16 16\nlm_head\nlm_head\nsoftmax_xent\n", 4,
                 "already tied to the lm_head on line 3");
    EXPECT_ERROR("input tokens 8\nembed 16 16\nrepeat 2\nlm_head\nend\nsoftmax_xent\n", 4,
                 "already tied to the lm_head on line 4");
    EXPECT_ERROR(HEAD "lm_head tied=yes\nsoftmax_xent\n", 3, "tied must be 1 or 0");
    EXPECT_ERROR(HEAD "lm_head 256\nsoftmax_xent\n", 3, "lm_head: too many arguments");
    /* Accepted: an untied head of another width (its own [V, 12] weight), and an untied head
     * before a tied one. */
    struct mp_model m;
    parse_ok(&m, HEAD "dense 12\nlm_head tied=0\nsoftmax_xent\n");
    assert_int_equal(m.layers[3].n_weight, 256 * 12);
    assert_int_equal(m.layers[3].tie_src, -1);
    assert_int_equal(m.n_classes, 256);
    mp_model_free(&m);
    parse_ok(&m, "input tokens 8\nembed 16 16\nlm_head tied=0\nlm_head\nsoftmax_xent\n");
    assert_int_equal(m.layers[3].tie_src, 1);
    mp_model_free(&m);
}

static void test_image_layers_on_a_sequence_are_rejected_on_their_line(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "layernorm\nflatten\n" TAIL, 4, "flatten does not apply to a sequence");
    EXPECT_ERROR(HEAD "conv2d 4 3\n" TAIL, 3, "conv2d does not apply to a sequence (8 tokens x 16");
    EXPECT_ERROR(HEAD "maxpool 2\n" TAIL, 3, "maxpool does not apply to a sequence");
    EXPECT_ERROR(HEAD "residual\navgpool 1\nend\n" TAIL, 4, "avgpool does not apply to a sequence");
}

static void test_embed_only_right_after_input_tokens(void **state)
{
    (void)state;
    /* Two embeds cannot exist: the second is not right after `input tokens`. */
    EXPECT_ERROR(HEAD "embed 256 16\n" TAIL, 3, "embed must come right after `input tokens T`, "
                 "not after embed (line 2)");
    EXPECT_ERROR(HEAD "layernorm\nembed 256 16\n" TAIL, 4, "not after layernorm (line 3)");
    EXPECT_ERROR("input 16\nembed 256 16\n" TAIL, 2, "the input on line 1 is not tokens");
    EXPECT_ERROR("input tokens 8\nlayernorm\n" TAIL, 2, "the next layer must be `embed V C`");
    EXPECT_ERROR("input tokens 8\nresidual\nembed 256 16\nend\n" TAIL, 4,
                 "turns its 8x1 input into 8x16");
    EXPECT_ERROR("input tokens 8\nembed 256 16 pos=sin\n" TAIL, 2, "pos must be learned or none");
    EXPECT_ERROR("input tokens 8\nembed 256\n" TAIL, 2, "usage: embed V C");
    EXPECT_ERROR("input tokens 8\nembed 0 16\n" TAIL, 2, "must be positive");
    EXPECT_ERROR("input tokens\nembed 256 16\n" TAIL, 1, "usage: input tokens T");
    EXPECT_ERROR("input tokens 0\nembed 256 16\n" TAIL, 1, "must be positive");
    /* The only way into a token model's blocks is through the embed, even in a repeat of 1. */
    struct mp_model m;
    parse_ok(&m, "input tokens 8\nrepeat 1\nembed 256 16\nend\n" TAIL);
    assert_int_equal(m.layers[1].kind, MP_LAYER_EMBED);
    mp_model_free(&m);
}

static void test_loss_not_last_is_rejected_on_its_line(void **state)
{
    (void)state;
    EXPECT_ERROR(HEAD "lm_head\nsoftmax_xent\nlayernorm\n", 4, "a loss must be the last layer "
                 "(line 5 has layernorm after it)");
    EXPECT_ERROR(HEAD "lm_head\nsoftmax_xent\nresidual\nlayernorm\nend\n", 4,
                 "a loss must be the last layer (line 6");
    EXPECT_ERROR(HEAD "repeat 2\nlm_head tied=0\nsoftmax_xent\nend\n", 5,
                 "a loss must be the last");
    EXPECT_ERROR(HEAD "layernorm\n", 3, "must end with a loss layer");
}

/* Blocks nest, but not so deep that parsing them could exhaust the stack (it once crashed). */
static void test_nesting_is_bounded_without_crashing(void **state)
{
    (void)state;
    for (int kind = 0; kind < 2; kind++) {
        const char *open = kind ? "residual\n" : "repeat 1\n";
        size_t depth = 5000, len = 0, cap = depth * 16 + 64;
        char *text = malloc(cap);
        assert_non_null(text);
        len += (size_t)snprintf(text + len, cap - len, "input 4\n");
        for (size_t i = 0; i < depth; i++)
            len += (size_t)snprintf(text + len, cap - len, "%s", open);
        len += (size_t)snprintf(text + len, cap - len, "relu\n");
        for (size_t i = 0; i < depth; i++)
            len += (size_t)snprintf(text + len, cap - len, "end\n");
        snprintf(text + len, cap - len, "mse\n");
        expect_error(text, strlen(text), 66, "blocks nested more than 64 deep");
        free(text);
    }
    /* 64 deep is still a model; four residual blocks may end on one layer, not five. */
    char text[2048] = "input 4\n";
    for (int i = 0; i < 64; i++)
        strcat(text, i < 4 ? "residual\n" : "repeat 1\n");
    strcat(text, "relu\n");
    for (int i = 0; i < 64; i++)
        strcat(text, "end\n");
    strcat(text, "mse\n");
    struct mp_model m;
    parse_ok(&m, text);
    assert_int_equal(m.n_layers, 3);
    assert_int_equal(m.layers[1].n_res, 4);
    mp_model_free(&m);
    EXPECT_ERROR("input 4\nresidual\nresidual\nresidual\nresidual\nresidual\nrelu\nend\nend\n"
                 "end\nend\nend\nmse\n", 12, "too many residual blocks end at line 7");
}

/* The parser checks the whole file's bytes before any layer: a file that is not text is reported
 * as such even when an earlier line also has a syntax error. Chosen over strict line order because
 * blocks already report some errors at their end, and "binary data: not a model spec" is what the
 * user of a wrong file needs to read. */
static void test_bytes_are_checked_before_layers(void **state)
{
    (void)state;
    EXPECT_ERROR("input 4\ndens 3\n\x01\x02garbage\nmse\n", 3, "binary data");
    EXPECT_ERROR("input 4\nrepeat 0\nrelu\nend\n\xff\nmse\n", 5, "binary data");
}

/* ---- what the blocks build ---- */

static void test_repeat_expands_to_consecutive_indexes_with_the_body_lines(void **state)
{
    (void)state;
    struct mp_model m;
    parse_ok(&m, "input 6\n"          /* 1 */
                 "repeat 3\n"         /* 2 */
                 "  dense 6\n"        /* 3 */
                 "  repeat 2\n"       /* 4 */
                 "    relu\n"         /* 5 */
                 "  end\n"            /* 6 */
                 "end\n"              /* 7 */
                 "mse\n");            /* 8 */
    assert_int_equal(m.n_layers, 1 + 3 * 3 + 1);
    for (int i = 0; i < m.n_layers; i++)
        assert_int_equal(m.layers[i].index, i);
    for (int c = 0; c < 3; c++) {
        const struct mp_layer *d = &m.layers[1 + 3 * c];
        assert_int_equal(d->kind, MP_LAYER_DENSE);
        assert_int_equal(d->line, 3);
        assert_int_equal(d[1].kind, MP_LAYER_RELU);
        assert_int_equal(d[1].line, 5);
        assert_int_equal(d[2].line, 5);
    }
    assert_int_equal(m.layers[10].line, 8);
    mp_model_free(&m);
}

/* `repeat N` is shorthand: the same digest as the body written N times. */
static void test_repeat_has_the_digest_of_the_body_written_out(void **state)
{
    (void)state;
    struct mp_model a, b, c;
    parse_ok(&a, HEAD "repeat 2\nresidual\nlayernorm\ndense 16\nend\nend\n" TAIL);
    parse_ok(&b, HEAD "residual\nlayernorm\ndense 16\nend\nresidual\nlayernorm\ndense 16\nend\n"
                 TAIL);
    parse_ok(&c, HEAD "layernorm\ndense 16\nlayernorm\ndense 16\n" TAIL);
    assert_string_equal(a.digest, b.digest);
    assert_string_not_equal(a.digest, c.digest); /* a residual is part of the function */
    mp_model_free(&a);
    mp_model_free(&b);
    mp_model_free(&c);
}

/* Each copy of a repeat has its own parameters: same shapes, other initial values. */
static void test_repeat_copies_are_initialised_independently(void **state)
{
    (void)state;
    struct mp_model m;
    parse_ok(&m, HEAD "repeat 3\nresidual\nlayernorm\ndense 16\nend\nend\n" TAIL);
    const struct mp_layer *d[3] = {&m.layers[3], &m.layers[5], &m.layers[7]};
    size_t n = mp_layer_n_param(d[0]);
    float *w[3];
    for (int c = 0; c < 3; c++) {
        assert_int_equal(d[c]->kind, MP_LAYER_DENSE);
        assert_int_equal(mp_layer_n_param(d[c]), n);
        w[c] = malloc(n * sizeof(float));
        assert_non_null(w[c]);
        mp_layer_init_params(d[c], w[c], 5);
    }
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++) {
            size_t same = 0;
            for (size_t i = 0; i < n; i++)
                same += w[a][i] == w[b][i];
            if (same > n / 100)
                fail_msg("copies %d and %d share %zu of %zu initial values", a, b, same, n);
        }
    for (int c = 0; c < 3; c++)
        free(w[c]);
    mp_model_free(&m);
}

static void test_units_top_level_layers_and_whole_residual_blocks(void **state)
{
    (void)state;
    struct mp_model m;
    parse_ok(&m, HEAD              /* units 0 (input), 1 (embed) */
                 "repeat 2\n"
                 "  residual\n"    /* one unit per copy, nested block included */
                 "    layernorm\n"
                 "    residual\n"
                 "      dense 16\n"
                 "      gelu\n"
                 "    end\n"
                 "  end\n"
                 "  dense 16\n"    /* a top-level layer in a repeat: a unit of its own */
                 "end\n"
                 "layernorm\n" TAIL);
    /* layers: 0 input, 1 embed, [2 ln, 3 dense, 4 gelu], 5 dense, [6 ln, 7 dense, 8 gelu],
     * 9 dense, 10 ln, 11 lm_head, 12 softmax */
    static const int unit[] = {0, 1, 2, 2, 2, 3, 4, 4, 4, 5, 6, 7, 8};
    assert_int_equal(m.n_layers, 13);
    for (int i = 0; i < m.n_layers; i++)
        if (m.layers[i].unit != unit[i])
            fail_msg("layer %d (%s) in unit %d, expected %d", i, m.layers[i].ops->name,
                     m.layers[i].unit, unit[i]);
    assert_int_equal(m.n_units, 9);
    /* The inner block ends at gelu (4) and starts at 3; the outer ends there too, from 2:
     * innermost first. */
    assert_int_equal(m.layers[4].n_res, 2);
    assert_int_equal(m.layers[4].res_from[0], 3);
    assert_int_equal(m.layers[4].res_from[1], 2);
    assert_int_equal(m.layers[8].res_from[0], 7);
    assert_int_equal(m.layers[8].res_from[1], 6);
    assert_int_equal(m.layers[5].n_res, 0);
    mp_model_free(&m);
}

/* Every split the engine makes on its own lands on unit boundaries, and a boundary inside a
 * residual block is refused by the stage. */
static void test_stage_boundaries_fall_only_between_units(void **state)
{
    (void)state;
    struct mp_model m;
    load(&m, "models/gpt.mp");
    struct mp_err err;
    for (int S = 1; S <= m.n_units - 1; S++) {
        int bounds[64];
        mp_err_clear(&err);
        if (mp_split_balanced(&m, S, 2, bounds, &err))
            fail_msg("S=%d: %s", S, err.msg);
        assert_int_equal(bounds[0], 1);
        assert_int_equal(bounds[S], m.n_layers);
        for (int v = 1; v < S; v++) {
            assert_true(bounds[v] > bounds[v - 1]);
            if (m.layers[bounds[v]].unit == m.layers[bounds[v] - 1].unit)
                fail_msg("S=%d: stage %d starts at layer %d inside unit %d", S, v, bounds[v],
                         m.layers[bounds[v]].unit);
        }
    }
    mp_err_clear(&err);
    int too_many[64];
    assert_int_equal(mp_split_balanced(&m, m.n_units, 2, too_many, &err), -1);
    assert_non_null(strstr(err.msg, "partition units"));
    /* Layer 3 is the attention inside the first residual block (2..3). */
    int inside[3] = {1, 3, m.n_layers};
    struct mp_stage st;
    mp_err_clear(&err);
    assert_int_equal(mp_stage_init(&st, &m, inside, 1, 2, 1, MP_VPLACE_LOOP, 1, 2, 1, &err), -1);
    mp_stage_free(&st);
    assert_non_null(strstr(err.msg, "inside a residual block"));
    int between[3] = {1, 4, m.n_layers};
    mp_err_clear(&err);
    if (mp_stage_init(&st, &m, between, 1, 2, 1, MP_VPLACE_LOOP, 1, 2, 1, &err))
        fail_msg("%s", err.msg);
    mp_stage_free(&st);
    mp_model_free(&m);
}

/* ---- models/gpt.mp is exactly DESIGN.md §9 ---- */

struct want_tensor {
    const char *name;
    int64_t shape[2];
};

static void expect_tensors(const struct mp_layer *l, const struct want_tensor *w, int n)
{
    struct mp_tensor t[MP_LAYER_MAX_TENSORS];
    int got = mp_layer_tensors(l, t);
    if (got != n)
        fail_msg("layer %d (%s): %d tensors, expected %d", l->index, l->ops->name, got, n);
    for (int i = 0; i < n; i++) {
        assert_string_equal(t[i].name, w[i].name);
        int ndim = w[i].shape[1] ? 2 : 1;
        assert_int_equal(t[i].ndim, ndim);
        for (int d = 0; d < ndim; d++)
            assert_int_equal(t[i].shape[d], w[i].shape[d]);
        assert_int_equal(t[i].numel, (size_t)(w[i].shape[0] * (ndim == 2 ? w[i].shape[1] : 1)));
        assert_int_equal(t[i].off, i ? t[i - 1].off + t[i - 1].numel : 0);
        assert_int_equal(t[i].tied, 0);
    }
    assert_int_equal(t[n - 1].off + t[n - 1].numel, mp_layer_n_param(l));
}

static void test_gpt_spec_is_exactly_design_section_9(void **state)
{
    (void)state;
    struct mp_model m;
    load(&m, "models/gpt.mp");
    static const enum mp_layer_kind block[6] = {
        MP_LAYER_LAYERNORM, MP_LAYER_ATTENTION, MP_LAYER_LAYERNORM,
        MP_LAYER_DENSE, MP_LAYER_GELU, MP_LAYER_DENSE};
    assert_int_equal(m.n_layers, 2 + 4 * 6 + 3);
    assert_true(m.tokens);
    assert_int_equal(m.seq_len, 128);
    assert_int_equal(m.label_len, 128);
    assert_int_equal(m.n_classes, 256);
    assert_int_equal(m.layers[0].kind, MP_LAYER_INPUT);
    assert_int_equal(m.layers[1].kind, MP_LAYER_EMBED);
    for (int b = 0; b < 4; b++)
        for (int k = 0; k < 6; k++) {
            const struct mp_layer *l = &m.layers[2 + 6 * b + k];
            assert_int_equal(l->kind, block[k]);
            assert_int_equal(l->out.ndim, 2);
            assert_int_equal(l->out.d[0], 128);
            if (k == 1) {
                assert_int_equal(l->heads, 4);
                assert_int_equal(l->causal, 1);
                assert_int_equal(l->n_res, 1);
                assert_int_equal(l->res_from[0], 2 + 6 * b);
            }
            if (k == 5) {
                assert_int_equal(l->n_res, 1);
                assert_int_equal(l->res_from[0], 2 + 6 * b + 2);
            }
        }
    assert_int_equal(m.layers[26].kind, MP_LAYER_LAYERNORM);
    assert_int_equal(m.layers[27].kind, MP_LAYER_LM_HEAD);
    assert_int_equal(m.layers[28].kind, MP_LAYER_SOFTMAX_XENT);
    /* units: input, embed, 8 residual blocks, layernorm, lm_head, softmax_xent */
    assert_int_equal(m.n_units, 13);

    expect_tensors(&m.layers[1], (struct want_tensor[]){{"weight", {256, 256}},
                                                         {"pos_weight", {128, 256}}}, 2);
    expect_tensors(&m.layers[2], (struct want_tensor[]){{"weight", {256}}, {"bias", {256}}}, 2);
    expect_tensors(&m.layers[3], (struct want_tensor[]){{"in_proj_weight", {768, 256}},
                                                         {"in_proj_bias", {768}},
                                                         {"out_proj.weight", {256, 256}},
                                                         {"out_proj.bias", {256}}}, 4);
    expect_tensors(&m.layers[5], (struct want_tensor[]){{"weight", {1024, 256}},
                                                         {"bias", {1024}}}, 2);
    expect_tensors(&m.layers[7], (struct want_tensor[]){{"weight", {256, 1024}},
                                                         {"bias", {256}}}, 2);
    expect_tensors(&m.layers[26], (struct want_tensor[]){{"weight", {256}}, {"bias", {256}}}, 2);
    /* The tied head holds the engine's copy of E, marked tied (saved under L1.weight only). */
    const struct mp_layer *h = &m.layers[27];
    struct mp_tensor t[MP_LAYER_MAX_TENSORS];
    assert_int_equal(mp_layer_tensors(h, t), 1);
    assert_int_equal(t[0].tied, 1);
    assert_string_equal(t[0].name, "weight");
    assert_int_equal(h->tie_src, 1);
    assert_true(mp_layer_is_tied(h));
    /* Parameters a user counts (E once): nanoGPT's count for these sizes. */
    size_t C = 256, total = 0;
    for (int i = 0; i < m.n_layers; i++)
        if (!mp_layer_is_tied(&m.layers[i]))
            total += mp_layer_n_param(&m.layers[i]);
    size_t per_block = 2 * (2 * C) + (4 * C * C + 4 * C) + (4 * C * C + 4 * C) + (4 * C * C + C);
    assert_int_equal(total, 256 * C + 128 * C + 4 * per_block + 2 * C);
    mp_model_free(&m);
}

/* Embeds, attention and an untied head: N(0, 0.02) weights, zero biases; a tied head starts as an
 * exact copy of E; `pos=none` has no position tensor. */
static void test_sequence_layers_initialise_as_gpt2(void **state)
{
    (void)state;
    struct mp_model m;
    parse_ok(&m, "input tokens 9\nembed 61 12\nattention 3\nlm_head\nsoftmax_xent\n");
    const struct mp_layer *e = &m.layers[1], *a = &m.layers[2], *h = &m.layers[3];
    float *pe = malloc(mp_layer_n_param(e) * sizeof(float));
    float *pa = malloc(mp_layer_n_param(a) * sizeof(float));
    float *ph = malloc(mp_layer_n_param(h) * sizeof(float));
    assert_non_null(pe), assert_non_null(pa), assert_non_null(ph);
    mp_layer_init_params(e, pe, 3);
    mp_layer_init_params(a, pa, 3);
    mp_layer_init_params(h, ph, 3);
    assert_memory_equal(ph, pe, 61 * 12 * sizeof(float)); /* tied copy == E */
    double s2 = 0;
    size_t n = mp_layer_n_param(e);
    for (size_t i = 0; i < n; i++)
        s2 += (double)pe[i] * pe[i];
    double sd = sqrt(s2 / (double)n);
    assert_true(sd > 0.017 && sd < 0.023); /* 840 draws of N(0, 0.02): sd within ~4 sigma */
    size_t C = 12;
    for (size_t i = 0; i < 3 * C; i++)
        assert_true(pa[3 * C * C + i] == 0.0f); /* in_proj_bias */
    for (size_t i = 0; i < C; i++)
        assert_true(pa[4 * C * C + 3 * C + i] == 0.0f); /* out_proj.bias */
    assert_true(pa[0] != 0.0f && pa[3 * C * C + 3 * C] != 0.0f);
    mp_model_free(&m);
    free(pe), free(pa), free(ph);
    parse_ok(&m, "input tokens 9\nembed 61 12 pos=none\nlm_head tied=0\nsoftmax_xent\n");
    struct mp_tensor t[MP_LAYER_MAX_TENSORS];
    assert_int_equal(mp_layer_tensors(&m.layers[1], t), 1);
    assert_int_equal(m.layers[1].n_weight, 61 * 12);
    assert_int_equal(mp_layer_tensors(&m.layers[2], t), 1);
    assert_int_equal(t[0].tied, 0);
    float a1[61 * 12], a2[61 * 12];
    mp_layer_init_params(&m.layers[1], a1, 3);
    mp_layer_init_params(&m.layers[2], a2, 3);
    assert_memory_not_equal(a1, a2, sizeof a1); /* untied: its own draw */
    mp_model_free(&m);
}

/* ---- digests: the image models' did not move ---- */

/* Digests as the parser before blocks (commit 7694cc8) computed them, read from the `digest` of
 * `mpipe plan MODEL --stages 1 --out plan.json` built from that commit. A plan stores its model's
 * digest and `train --plan` refuses a mismatch, so a change here would break every saved plan. */
static void test_image_model_digests_are_unchanged_by_the_block_parser(void **state)
{
    (void)state;
    static const struct {
        const char *path, *digest;
    } files[] = {
        {"models/mlp.mp", "d15b27702c146a5c"},
        {"models/cnn.mp", "bdfd1f4a2f9dcf25"},
        {"models/tiny.mp", "75fc52fc8f9dd13a"},
        {"models/tiny_mlp.mp", "7656e92b37f4ffe5"},
        {"tests/data/four_layers.mp", "c59bf6f623505020"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct mp_model m;
        load(&m, files[i].path);
        if (strcmp(m.digest, files[i].digest))
            fail_msg("%s: digest %s, plans hold %s", files[i].path, m.digest, files[i].digest);
        mp_model_free(&m);
    }
    static const struct {
        const char *text, *digest;
    } texts[] = {
        {"input 3 9 9\nconv2d 4 3 stride=2 pad=1\nrelu\nmaxpool 2\nconv2d 2 1\ntanh\navgpool 1\n"
         "flatten\ndropout 0.3\ndense 7\nsigmoid\nlayernorm\ngelu\nmse\n", "b8eb32376bf19488"},
        {"input 5 6\nflatten\ndense 3\nsoftmax_xent\n", "257be2b697ef65af"},
        {"input 7\nlayernorm\nsoftmax_xent\n", "2118971a1a40be89"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct mp_model m;
        parse_ok(&m, texts[i].text);
        assert_string_equal(m.digest, texts[i].digest);
        mp_model_free(&m);
    }
}

static void test_token_model_digest_sees_every_option(void **state)
{
    (void)state;
    static const char *const variants[] = {
        HEAD "attention 4\n" TAIL,
        HEAD "attention 4 causal=0\n" TAIL,
        HEAD "attention 4 dropout=0.1\n" TAIL,
        HEAD "attention 2\n" TAIL,
        "input tokens 8\nembed 256 16 pos=none\nattention 4\n" TAIL,
        HEAD "attention 4\nlm_head tied=0\nsoftmax_xent\n",
        "input tokens 9\nembed 256 16\nattention 4\n" TAIL,
        HEAD "residual\nattention 4\nend\n" TAIL,
    };
    enum { N = sizeof variants / sizeof variants[0] };
    char d[N][17];
    for (int i = 0; i < N; i++) {
        struct mp_model m;
        parse_ok(&m, variants[i]);
        memcpy(d[i], m.digest, 17);
        mp_model_free(&m);
        for (int j = 0; j < i; j++)
            if (!strcmp(d[i], d[j]))
                fail_msg("variants %d and %d share digest %s", j, i, d[i]);
    }
    /* Defaults written out are the same model. */
    struct mp_model m;
    parse_ok(&m, "input tokens 8\nembed 256 16 pos=learned\nattention 4 causal=1 dropout=0\n"
                 "lm_head tied=1\nsoftmax_xent\n");
    assert_string_equal(m.digest, d[0]);
    mp_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_word_is_rejected_on_its_line_with_block_suggestions),
        cmocka_unit_test(test_end_with_no_open_block_is_rejected_on_its_line),
        cmocka_unit_test(test_block_never_closed_is_rejected_on_its_opening_line),
        cmocka_unit_test(test_repeat_needs_a_whole_count_of_at_least_one),
        cmocka_unit_test(test_residual_body_that_changes_the_shape_is_rejected_on_its_end),
        cmocka_unit_test(test_attention_width_not_divisible_by_heads_is_rejected_on_its_line),
        cmocka_unit_test(test_lm_head_rules_no_embed_other_width_two_tied),
        cmocka_unit_test(test_image_layers_on_a_sequence_are_rejected_on_their_line),
        cmocka_unit_test(test_embed_only_right_after_input_tokens),
        cmocka_unit_test(test_loss_not_last_is_rejected_on_its_line),
        cmocka_unit_test(test_nesting_is_bounded_without_crashing),
        cmocka_unit_test(test_bytes_are_checked_before_layers),
        cmocka_unit_test(test_repeat_expands_to_consecutive_indexes_with_the_body_lines),
        cmocka_unit_test(test_repeat_has_the_digest_of_the_body_written_out),
        cmocka_unit_test(test_repeat_copies_are_initialised_independently),
        cmocka_unit_test(test_units_top_level_layers_and_whole_residual_blocks),
        cmocka_unit_test(test_stage_boundaries_fall_only_between_units),
        cmocka_unit_test(test_gpt_spec_is_exactly_design_section_9),
        cmocka_unit_test(test_sequence_layers_initialise_as_gpt2),
        cmocka_unit_test(test_image_model_digests_are_unchanged_by_the_block_parser),
        cmocka_unit_test(test_token_model_digest_sees_every_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
