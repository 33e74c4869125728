/* Layers on sequences (DESIGN.md §9), tested as claims: embed (both position modes, scatter-add
 * with repeated ids, the overwrite that leaves untouched rows at zero), lm_head tied and untied,
 * and dense, layernorm, activations, dropout and the losses acting per token on (T, C) with odd T,
 * C and V, all against finite differences (tests/fd_check.h); per-token labels and loss scaling by
 * rows; the tied rule dE = dE_embed + dE_head checked against the derivative of the composed loss;
 * and the costs the planner prices sequences with. Attention's kernels are not here yet. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd_check.h"
#include "mp_layer.h"

static void parse_ok(struct mp_model *m, const char *text)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(m, "seq.mp", text, strlen(text), &err) != 0)
        fail_msg("%s", err.msg);
}

/* ---- finite differences, layer by layer (odd T, C, V; batch 3) ---- */

static void test_embed_and_tied_head_match_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input tokens 5\nembed 13 7\nlm_head\nsoftmax_xent\n", 3, 1);
    fd_check_spec("input tokens 5\nembed 13 7 pos=none\nlm_head\nsoftmax_xent\n", 3, 2);
    fd_check_spec("input tokens 1\nembed 3 1\nlm_head\nsoftmax_xent\n", 1, 3);
}

static void test_untied_head_of_another_width_matches_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input tokens 5\nembed 11 7\ndense 9\nlm_head tied=0\nsoftmax_xent\n", 3, 4);
    fd_check_spec("input tokens 3\nembed 11 7 pos=none\nlm_head tied=0\nmse\n", 2, 5);
}

static void test_per_token_layers_match_finite_differences(void **state)
{
    (void)state;
    fd_check_spec("input tokens 5\nembed 11 7\ndense 9\nlayernorm\ngelu\ndropout 0.3\ndense 7\n"
                  "lm_head\nsoftmax_xent\n", 3, 6);
    fd_check_spec("input tokens 3\nembed 5 9\nrelu\ntanh\nsigmoid\ndense 5\nmse\n", 3, 7);
    fd_check_spec("input tokens 7\nembed 9 3\nlayernorm\ndropout 0.5\nsoftmax_xent\n", 1, 8);
}

/* ---- golden cases ---- */

/* y[t] = E[id_t] + P[t]; dE[id] sums the rows holding id in (sample, token) order, dP[t] sums over
 * samples; with ctx->overwrite, rows no id hits are exact zeros over a NaN-filled dparam. */
static void test_embed_gathers_and_scatters_exactly(void **state)
{
    (void)state;
    struct mp_model m;
    parse_ok(&m, "input tokens 3\nembed 6 2\nlm_head\nsoftmax_xent\n");
    const struct mp_layer *e = &m.layers[1];
    float param[6 * 2 + 3 * 2], y[2 * 3 * 2], dp[6 * 2 + 3 * 2];
    for (int i = 0; i < 18; i++)
        param[i] = (float)(i + 1) * 0.5f; /* E rows 0..5, then P rows 0..2 */
    const float x[6] = {2, 2, 0, 0, 2, 5};  /* 2 samples of 3 ids */
    struct mp_ctx ctx = {.training = 1, .step = 1};
    e->ops->forward(e, &ctx, param, x, y, NULL, 2);
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 2; c++)
            assert_true(y[r * 2 + c] == param[(int)x[r] * 2 + c] + param[12 + (r % 3) * 2 + c]);
    float dy[12];
    for (int i = 0; i < 12; i++)
        dy[i] = 1.0f / (float)(i + 3);
    fd_fill_nan(dp, 18);
    ctx.overwrite = 1;
    e->ops->backward_weight(e, &ctx, x, y, NULL, dy, dp, 2);
    for (int c = 0; c < 2; c++) {
        /* id 2 at rows 0, 1, 4; id 0 at rows 2, 3; id 5 at row 5; ids 1, 3, 4 nowhere. */
        assert_true(dp[2 * 2 + c] == (0.0f + dy[0 + c]) + dy[2 + c] + dy[8 + c]);
        assert_true(dp[0 * 2 + c] == (0.0f + dy[4 + c]) + dy[6 + c]);
        assert_true(dp[5 * 2 + c] == 0.0f + dy[10 + c]);
        for (int id = 1; id < 5; id += (id == 1 ? 2 : 1))
            assert_true(dp[id * 2 + c] == 0.0f && !signbit(dp[id * 2 + c]));
        for (int t = 0; t < 3; t++)
            assert_true(dp[12 + t * 2 + c] == (0.0f + dy[t * 2 + c]) + dy[6 + t * 2 + c]);
    }
    /* Without overwrite it accumulates onto what is there. */
    float again[18];
    memcpy(again, dp, sizeof again);
    ctx.overwrite = 0;
    e->ops->backward_weight(e, &ctx, x, y, NULL, dy, dp, 2);
    for (int c = 0; c < 2; c++) {
        assert_true(dp[2 * 2 + c] == ((again[2 * 2 + c] + dy[0 + c]) + dy[2 + c]) + dy[8 + c]);
        assert_true(dp[3 * 2 + c] == 0.0f);
        assert_true(dp[12 + 2 * 2 + c] == (again[12 + 2 * 2 + c] + dy[4 + c]) + dy[10 + c]);
    }
    mp_model_free(&m);
}

/* softmax_xent on (T, V): one label per token, the loss is a sum over rows that the caller turns
 * into a mean over every prediction of the global batch (ctx->global_batch counts rows). */
static void test_sequence_loss_has_one_label_per_token_and_scales_by_rows(void **state)
{
    (void)state;
    struct mp_model m;
    parse_ok(&m, "input tokens 3\nembed 5 5\nlm_head\nsoftmax_xent\n");
    const struct mp_layer *l = &m.layers[3];
    assert_true(l->is_loss);
    assert_int_equal(m.label_len, 3);
    assert_int_equal(m.n_classes, 5);
    float x[2 * 3 * 5], y[2 * 3 * 5], dx[2 * 3 * 5];
    for (int i = 0; i < 30; i++)
        x[i] = 0.25f; /* uniform logits: each row's loss is ln 5 */
    x[1 * 5 + 3] = 4.0f; /* row 1 predicts 3 */
    const int32_t labels[6] = {0, 3, 4, 1, 2, 0};
    double loss = 0;
    size_t hits = 0;
    struct mp_ctx ctx = {.labels = labels, .training = 1, .global_batch = 6, .loss_sum = &loss,
                         .n_correct = &hits};
    l->ops->forward(l, &ctx, NULL, x, y, NULL, 2);
    double row1 = -(4.0 - log(4 * exp(0.25) + exp(4.0)));
    assert_true(fabs(loss - (5 * log(5.0) + row1)) < 1e-5);
    /* Ties (uniform rows) go to the first maximum: label 0 at rows 0 and 5 count. */
    assert_int_equal(hits, 3);
    l->ops->backward_input(l, &ctx, NULL, x, y, NULL, NULL, dx, 2);
    for (int r = 0; r < 6; r++) {
        double sum = 0;
        for (int v = 0; v < 5; v++)
            sum += dx[r * 5 + v];
        assert_true(fabs(sum) < 1e-6); /* softmax - onehot sums to zero per row */
        if (r != 1)
            assert_true(fabs(dx[r * 5 + labels[r]] - (0.2 - 1.0) / 6.0) < 1e-6);
    }
    mp_model_free(&m);
}

/* ---- the tied rule, composed: embed(E) → lm_head(E) → softmax_xent ---- */

struct tied {
    struct mp_model m;
    const struct mp_layer *e, *h, *loss;
    size_t batch, T, C, V;
    float *pe, *ph;          /* the embed's (E, P) and the head's copy of E */
    float *x, *a, *logits, *prob;
    int32_t *labels;
};

static double tied_loss(struct tied *t)
{
    double loss = 0;
    size_t hits = 0;
    struct mp_ctx ctx = {.labels = t->labels, .training = 1, .global_batch = t->batch * t->T,
                         .loss_sum = &loss, .n_correct = &hits};
    t->e->ops->forward(t->e, &ctx, t->pe, t->x, t->a, NULL, t->batch);
    t->h->ops->forward(t->h, &ctx, t->ph, t->a, t->logits, NULL, t->batch);
    t->loss->ops->forward(t->loss, &ctx, NULL, t->logits, t->prob, NULL, t->batch);
    return loss / (double)(t->batch * t->T);
}

static void test_tied_gradient_is_the_sum_of_both_accumulators(void **state)
{
    (void)state;
    struct tied t = {.batch = 3, .T = 5, .C = 7, .V = 11};
    parse_ok(&t.m, "input tokens 5\nembed 11 7\nlm_head\nsoftmax_xent\n");
    t.e = &t.m.layers[1], t.h = &t.m.layers[2], t.loss = &t.m.layers[3];
    size_t rows = t.batch * t.T, nE = t.V * t.C, ne = mp_layer_n_param(t.e);
    t.pe = fd_alloc(ne), t.ph = fd_alloc(nE);
    t.x = fd_alloc(rows), t.a = fd_alloc(rows * t.C);
    t.logits = fd_alloc(rows * t.V), t.prob = fd_alloc(rows * t.V);
    t.labels = calloc(rows, sizeof(int32_t));
    assert_non_null(t.labels);
    mp_layer_init_params(t.e, t.pe, 9);
    mp_layer_init_params(t.h, t.ph, 9);
    assert_memory_equal(t.pe, t.ph, nE * sizeof(float));
    for (size_t i = 0; i < ne; i++) /* larger than N(0, 0.02) so the gradient is well above noise */
        t.pe[i] *= 40.0f;
    memcpy(t.ph, t.pe, nE * sizeof(float));
    struct mp_rng rng;
    mp_rng_seed(&rng, 4);
    for (size_t r = 0; r < rows; r++) {
        t.x[r] = (float)mp_rng_below(&rng, t.V);
        t.labels[r] = (int32_t)mp_rng_below(&rng, t.V);
    }
    tied_loss(&t);
    float *dlogits = fd_alloc(rows * t.V), *da = fd_alloc(rows * t.C);
    float *ge = fd_alloc(ne), *gh = fd_alloc(nE);
    struct mp_ctx ctx = {.labels = t.labels, .training = 1, .global_batch = rows, .overwrite = 1};
    t.loss->ops->backward_input(t.loss, &ctx, NULL, t.logits, t.prob, NULL, NULL, dlogits, t.batch);
    t.h->ops->backward_input(t.h, &ctx, t.ph, t.a, t.logits, NULL, dlogits, da, t.batch);
    t.h->ops->backward_weight(t.h, &ctx, t.a, t.logits, NULL, dlogits, gh, t.batch);
    t.e->ops->backward_weight(t.e, &ctx, t.x, t.a, NULL, da, ge, t.batch);
    double nn = 0, dd = 0, only_e = 0, only_h = 0;
    for (size_t i = 0; i < nE; i++) {
        float e0 = t.pe[i];
        double h = 1e-2 * fmax(1.0, fabs((double)e0));
        t.pe[i] = t.ph[i] = (float)(e0 + h);
        double lp = tied_loss(&t);
        t.pe[i] = t.ph[i] = (float)(e0 - h);
        double lm = tied_loss(&t);
        t.pe[i] = t.ph[i] = e0;
        double num = (lp - lm) / (2 * h), sum = (double)ge[i] + (double)gh[i];
        nn += num * num;
        dd += (sum - num) * (sum - num);
        only_e += (ge[i] - num) * (ge[i] - num);
        only_h += (gh[i] - num) * (gh[i] - num);
    }
    /* The sum matches to 1%; either accumulator alone is far off (the check has teeth). */
    if (!(sqrt(dd) <= 1e-2 * sqrt(nn)))
        fail_msg("||dE_embed + dE_head - fd|| = %.3g vs ||fd|| = %.3g", sqrt(dd), sqrt(nn));
    assert_true(sqrt(only_e) > 0.1 * sqrt(nn));
    assert_true(sqrt(only_h) > 0.1 * sqrt(nn));
    free(dlogits), free(da), free(ge), free(gh);
    free(t.pe), free(t.ph), free(t.x), free(t.a), free(t.logits), free(t.prob), free(t.labels);
    mp_model_free(&t.m);
}

/* ---- costs: what the planner prices a sequence with ---- */

static void test_sequence_layer_costs_scale_with_tokens(void **state)
{
    (void)state;
    struct mp_model m;
    parse_ok(&m, "input tokens 9\nembed 61 12\nresidual\nlayernorm\nattention 3\nend\n"
                 "residual\nlayernorm\ndense 20\ngelu\ndense 12\nend\nlayernorm\nlm_head\n"
                 "softmax_xent\n");
    for (int i = 0; i < m.n_layers; i++) {
        const struct mp_layer *l = &m.layers[i];
        struct mp_cost c = l->ops->cost(l, 4);
        assert_int_equal(c.act_bytes_out, 4 * mp_layer_out_len(l) * sizeof(float));
        if (!mp_layer_is_tied(l))
            assert_int_equal(c.param_bytes, mp_layer_n_param(l) * sizeof(float));
        assert_true(c.flops_fwd >= 0 && c.flops_bwd_input >= 0 && c.flops_bwd_weight >= 0);
        if (l->kind != MP_LAYER_INPUT)
            assert_true(c.flops_fwd + c.flops_bwd_weight > 0);
    }
    /* dense 20 on (9, 12): one GEMM of 4 * 9 rows. */
    struct mp_cost d = m.layers[5].ops->cost(&m.layers[5], 4);
    assert_true(d.flops_fwd >= 2.0 * 4 * 9 * 12 * 20);
    assert_true(d.flops_fwd < 2.0 * 4 * 9 * 12 * 20 * 1.1);
    /* The head's GEMM: 2 · rows · C · V per pass. */
    struct mp_cost h = m.layers[9].ops->cost(&m.layers[9], 4);
    assert_true(h.flops_fwd == 2.0 * 4 * 9 * 12 * 61);
    /* Attention keeps the T x T probabilities of every head for its backward. */
    struct mp_cost a = m.layers[3].ops->cost(&m.layers[3], 4);
    assert_true(a.saved_bytes >= 4 * 3 * 9 * 9 * sizeof(float));
    mp_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_and_tied_head_match_finite_differences),
        cmocka_unit_test(test_untied_head_of_another_width_matches_finite_differences),
        cmocka_unit_test(test_per_token_layers_match_finite_differences),
        cmocka_unit_test(test_embed_gathers_and_scatters_exactly),
        cmocka_unit_test(test_sequence_loss_has_one_label_per_token_and_scales_by_rows),
        cmocka_unit_test(test_tied_gradient_is_the_sum_of_both_accumulators),
        cmocka_unit_test(test_sequence_layer_costs_scale_with_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
