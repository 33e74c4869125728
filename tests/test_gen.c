/* engine/gen (mpipe generate's engine): the key/value-cache path gives the tokens full forwards
 * give, before and past the context (where the window is cropped and the cache recomputed), and
 * runs one row per new token; sampling is a function of the seed, top-k keeps the k largest, and
 * temperature 0 is the argmax; models that cannot generate are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_gen.h"

/* T = 7, C = 12, H = 3, two blocks (as tests/data/gpt_tiny.mp), V = 61, untied head. */
static const char spec[] = "input tokens 7\nembed 61 12\nrepeat 2\nresidual\nlayernorm\n"
                           "attention 3\nend\nresidual\nlayernorm\ndense 20\ngelu\ndense 12\nend\n"
                           "end\nlayernorm\nlm_head tied=0\nsoftmax_xent\n";

struct fixture {
    struct mp_model m;
    struct mp_gen g;
};

/* Parameters U(-0.6, 0.6) instead of the N(0, 0.02) start, so logits are far apart (an argmax
 * decided by float rounding would test nothing). */
static void setup(struct fixture *f, const char *text, uint64_t seed)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(&f->m, "gen.mp", text, strlen(text), &err))
        fail_msg("%s", err.msg);
    if (mp_gen_init(&f->g, &f->m, &err))
        fail_msg("%s", err.msg);
    struct mp_rng rng;
    mp_rng_seed(&rng, seed);
    for (size_t i = 0; i < f->g.off[f->m.n_layers]; i++)
        f->g.param[i] = 1.2f * (mp_rng_uniform(&rng) - 0.5f);
}

static void teardown(struct fixture *f)
{
    mp_gen_free(&f->g);
    mp_model_free(&f->m);
}

/* Greedy continuation of `prompt` for n tokens, with or without the cache; logits (n, V) of every
 * step kept when asked. */
static void greedy(struct fixture *f, const int32_t *prompt, size_t np, size_t n, int use_cache,
                   int32_t *seq, float *logits_out)
{
    memcpy(seq, prompt, np * sizeof *seq);
    for (size_t k = np; k < np + n; k++) {
        const float *logits = mp_gen_logits(&f->g, seq, k, use_cache);
        seq[k] = mp_gen_pick(logits, f->g.V, 0, 0, NULL);
        if (logits_out)
            memcpy(logits_out + (k - np) * f->g.V, logits, f->g.V * sizeof(float));
    }
}

static void test_cached_greedy_tokens_equal_full_forward_argmax(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, spec, 1);
    const int32_t prompts[3][9] = {{5}, {1, 2, 3}, {9, 8, 7, 6, 5, 4, 3, 2, 1}};
    const size_t lens[3] = {1, 3, 9}; /* one token, inside the context, longer than T = 7 */
    size_t n = 25, V = f.g.V;
    float *lc = malloc(n * V * sizeof *lc), *lf = malloc(n * V * sizeof *lf);
    assert_non_null(lc), assert_non_null(lf);
    for (int p = 0; p < 3; p++) {
        int32_t cached[40], full[40];
        greedy(&f, prompts[p], lens[p], n, 1, cached, lc);
        greedy(&f, prompts[p], lens[p], n, 0, full, lf);
        assert_memory_equal(cached, full, (lens[p] + n) * sizeof(int32_t));
        /* and the logits themselves agree to float rounding at every step */
        for (size_t i = 0; i < n * V; i++)
            if (!(fabsf(lc[i] - lf[i]) <= 1e-5f * (1.0f + fabsf(lf[i]))))
                fail_msg("prompt %d step %zu id %zu: cached logit %.9g, full forward %.9g", p,
                         i / V, i % V, (double)lc[i], (double)lf[i]);
    }
    free(lc), free(lf);
    teardown(&f);
}

/* Inside the context each new token is one decode step: the caches grow by one row and the
 * window stays put; past it the window moves by one and its cache holds the whole window. */
static void test_cache_grows_one_row_per_token_and_window_crops_past_context(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, spec, 2);
    int32_t seq[20] = {3, 1, 4};
    for (size_t k = 3; k < 20; k++) {
        seq[k] = mp_gen_pick(mp_gen_logits(&f.g, seq, k, 1), f.g.V, 0, 0, NULL);
        size_t T = f.g.T, len = k < T ? k : T;
        assert_int_equal(f.g.cached, len);
        assert_int_equal(f.g.w0, k > T ? k - T : 0);
        assert_memory_equal(f.g.window, seq + f.g.w0, len * sizeof(int32_t));
    }
    teardown(&f);
}

static void test_sampling_is_a_function_of_the_seed(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, spec, 3);
    int32_t a[30], b[30], c[30];
    const uint64_t seeds[3] = {7, 7, 8};
    int32_t *out[3] = {a, b, c};
    for (int r = 0; r < 3; r++) {
        struct mp_rng rng;
        mp_rng_seed(&rng, seeds[r]);
        out[r][0] = 1;
        for (size_t k = 1; k < 30; k++)
            out[r][k] = mp_gen_pick(mp_gen_logits(&f.g, out[r], k, 1), f.g.V, 1.5, 0, &rng);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    teardown(&f);
}

static void test_pick_greedy_top_k_and_temperature(void **state)
{
    (void)state;
    const float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, -3.0f};
    struct mp_rng rng;
    mp_rng_seed(&rng, 1);
    assert_int_equal(mp_gen_pick(logits, 6, 0, 0, &rng), 1); /* first of the tied maxima */
    size_t count[6] = {0};
    for (int i = 0; i < 3000; i++)
        count[mp_gen_pick(logits, 6, 1.0, 3, &rng)]++;
    /* top-3: 2.0, 2.0, 1.9 (ids 1, 3, 4); nothing else is ever drawn */
    assert_true(count[0] == 0 && count[2] == 0 && count[5] == 0);
    assert_true(count[1] > 700 && count[3] > 700 && count[4] > 600);
    /* top-1 with ties keeps both maxima, as nanoGPT's threshold does */
    memset(count, 0, sizeof count);
    for (int i = 0; i < 400; i++)
        count[mp_gen_pick(logits, 6, 1.0, 1, &rng)]++;
    assert_true(count[1] > 100 && count[3] > 100 && count[1] + count[3] == 400);
    /* all six at a high temperature: every id drawn */
    memset(count, 0, sizeof count);
    for (int i = 0; i < 3000; i++)
        count[mp_gen_pick(logits, 6, 50.0, 0, &rng)]++;
    for (int j = 0; j < 6; j++)
        assert_true(count[j] > 300);
}

static void expect_refused(const char *text, const char *what)
{
    struct mp_model m;
    struct mp_gen g;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_parse(&m, "gen.mp", text, strlen(text), &err))
        fail_msg("%s", err.msg);
    assert_int_equal(mp_gen_init(&g, &m, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    if (!strstr(err.msg, what))
        fail_msg("message '%s' does not say '%s'", err.msg, what);
    mp_gen_free(&g);
    mp_model_free(&m);
}

static void test_models_that_cannot_generate_are_refused(void **state)
{
    (void)state;
    expect_refused("input 4\ndense 3\nsoftmax_xent\n", "token model");
    expect_refused("input tokens 5\nembed 20 6\nattention 2 causal=0\nlm_head\nsoftmax_xent\n",
                   "causal");
    expect_refused("input tokens 5\nembed 20 6\ndense 7\nsoftmax_xent\n", "V = 20");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_greedy_tokens_equal_full_forward_argmax),
        cmocka_unit_test(test_cache_grows_one_row_per_token_and_window_crops_past_context),
        cmocka_unit_test(test_sampling_is_a_function_of_the_seed),
        cmocka_unit_test(test_pick_greedy_top_k_and_temperature),
        cmocka_unit_test(test_models_that_cannot_generate_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
