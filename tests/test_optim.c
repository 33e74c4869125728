/* Optimizers against values worked out independently: the literals below were printed by the
 * python3 script at the end of this file, which implements torch.optim's published update formulas
 * (SGD/momentum/Nesterov, Adam, AdamW, RMSprop) rounding every operation to float32 as torch's
 * float kernels do, and LAMB (You et al. 2019, Algorithm 2) in double. PyTorch is not installed
 * here, so torch itself did not produce them; the C code never did. Each case runs 3 steps on an
 * 11-float tensor (8 vector lanes plus a 3-element tail). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "mp_optim.h"

#define N 11

static const float p0[N] = {0.5f,  -1.0f, 2.0f,   0.0f,  -0.25f, 1.5f,
                            -2.0f, 0.75f, 0.125f, -0.5f, 3.0f};
static const float grads[3][N] = {
    {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, 0.05f, -0.6f, 0.7f, -0.01f, 0.2f, 1.0f},
    {-0.3f, 0.1f, 0.2f, 0.25f, -0.5f, 0.4f, 0.0f, -0.1f, 0.3f, -0.2f, 0.5f},
    {0.2f, 0.2f, -0.1f, 0.0f, 0.3f, -0.35f, 0.45f, 0.05f, -0.25f, 0.15f, -1.0f},
};

static const float expect_sgd[N] = {
    0.49999997f, -1.00999999f, 1.96000004f, 0.0149999987f, -0.280000001f, 1.49000001f, -1.98500001f,
    0.685000002f, 0.120999999f, -0.514999986f, 2.95000005f,
};
static const float expect_sgd_wd[N] = {
    0.485048503f, -0.980597019f, 1.90139508f, 0.0144539978f, -0.272079766f, 1.445948f, -1.92679203f,
    0.66401726f, 0.117567472f, -0.499951482f, 2.86338687f,
};
static const float expect_momentum[N] = {
    0.509900033f, -0.984799981f, 1.89069998f, 0.0609000027f, -0.320500016f, 1.44545007f,
    -1.88240004f, 0.574300051f, 0.0957100019f, -0.531199992f, 2.73399997f,
};
static const float expect_nesterov[N] = {
    0.504887044f, -0.98845464f, 1.84594083f, 0.0694886073f, -0.34110716f, 1.42904818f, -1.8637073f,
    0.521527946f, 0.0937326103f, -0.538928866f, 2.68770432f,
};
static const float expect_adam[N] = {
    0.494754046f, -0.990063608f, 1.97477758f, 0.0130778421f, -0.261595786f, 1.48118079f,
    -1.98299253f, 0.729665875f, 0.127591208f, -0.512109041f, 2.97957039f,
};
static const float expect_adam_l2[N] = {
    0.49054271f, -0.980489612f, 1.97160411f, 0.0130305616f, -0.260525584f, 1.47601974f,
    -1.97743356f, 0.727626562f, 0.106803559f, -0.506941855f, 2.97632146f,
};
static const float expect_adamw[N] = {
    0.494605541f, -0.989765882f, 1.97418058f, 0.0130756684f, -0.261518836f, 1.48073363f,
    -1.98239517f, 0.729443431f, 0.12755242f, -0.511957049f, 2.97867346f,
};
static const float expect_rmsprop[N] = {
    0.441252589f, -1.01190233f, 1.87127471f, 0.0468084961f, -0.318418324f, 1.36651635f,
    -1.96038568f, 0.65708828f, 0.189241409f, -0.576239705f, 2.92209983f,
};
static const float expect_lamb[N] = {
    0.495763752f, -0.993412544f, 1.93453225f, 0.0245606851f, -0.273326561f, 1.46352827f,
    -1.96798312f, 0.698713693f, 0.121676486f, -0.525745315f, 2.95717144f,
};

/* Runs 3 steps from p0 with state laid out as in an arena (slot stride larger than the tensor) and
 * compares with the reference. The tolerance covers float rounding differences of a few ulps
 * (e.g. torch's betas are Python doubles, ours floats). */
static void run_case(struct mp_optim_cfg cfg, float lr, const float *expect)
{
    float p[N], state[2 * 16];
    memcpy(p, p0, sizeof p);
    for (size_t i = 0; i < sizeof state / sizeof state[0]; i++)
        state[i] = 0.0f;
    for (uint64_t t = 1; t <= 3; t++)
        mp_optim_step(&cfg, lr, t, p, grads[t - 1], state, 16, N);
    for (int i = 0; i < N; i++) {
        double tol = 2e-6 + 2e-6 * fabs(expect[i]);
        if (fabs((double)p[i] - (double)expect[i]) > tol)
            fail_msg("%s: element %d is %.9g, expected %.9g", mp_optim_name(cfg.kind), i, p[i],
                     expect[i]);
    }
}

static struct mp_optim_cfg cfg_of(enum mp_optim_kind kind)
{
    struct mp_optim_cfg c;
    mp_optim_defaults(&c, kind);
    return c;
}

static void test_sgd_matches_torch_formula(void **state)
{
    (void)state;
    run_case(cfg_of(MP_OPT_SGD), 0.1f, expect_sgd);
    struct mp_optim_cfg c = cfg_of(MP_OPT_SGD);
    c.weight_decay = 0.1f;
    run_case(c, 0.1f, expect_sgd_wd);
}

static void test_momentum_starts_buffer_at_first_gradient(void **state)
{
    (void)state;
    run_case(cfg_of(MP_OPT_MOMENTUM), 0.1f, expect_momentum);
}

static void test_nesterov_with_weight_decay_matches_torch_formula(void **state)
{
    (void)state;
    struct mp_optim_cfg c = cfg_of(MP_OPT_NESTEROV);
    c.weight_decay = 0.01f;
    run_case(c, 0.1f, expect_nesterov);
}

static void test_adam_matches_torch_formula(void **state)
{
    (void)state;
    run_case(cfg_of(MP_OPT_ADAM), 0.01f, expect_adam);
}

static void test_adam_weight_decay_is_l2_on_the_gradient(void **state)
{
    (void)state;
    struct mp_optim_cfg c = cfg_of(MP_OPT_ADAM);
    c.weight_decay = 0.1f;
    run_case(c, 0.01f, expect_adam_l2);
}

static void test_adamw_weight_decay_is_decoupled(void **state)
{
    (void)state;
    run_case(cfg_of(MP_OPT_ADAMW), 0.01f, expect_adamw);
}

static void test_rmsprop_matches_torch_default(void **state)
{
    (void)state;
    run_case(cfg_of(MP_OPT_RMSPROP), 0.01f, expect_rmsprop);
}

static void test_lamb_matches_you_et_al_algorithm_2(void **state)
{
    (void)state;
    run_case(cfg_of(MP_OPT_LAMB), 0.01f, expect_lamb);
}

/* With all-zero weights ||w|| = 0, so the trust ratio is 1 and the first step is -lr * m^/(sqrt(v^)
 * + eps) = -lr * g/(|g| + eps), about -lr * sign(g). */
static void test_lamb_trust_ratio_is_one_when_weights_are_zero(void **state)
{
    (void)state;
    struct mp_optim_cfg c = cfg_of(MP_OPT_LAMB);
    float p[N] = {0}, s[2 * N] = {0};
    mp_optim_step(&c, 0.5f, 1, p, grads[0], s, N, N);
    for (int i = 0; i < N; i++) {
        double g = grads[0][i];
        double want = g == 0.0 ? 0.0 : -0.5 * g / (fabs(g) + 1e-6);
        assert_true(fabs(p[i] - want) < 1e-6);
    }
}

/* The same arithmetic for any length and alignment: a vectorised body and a scalar tail must not
 * make an element's result depend on where it sits. */
static void test_adam_element_result_independent_of_position(void **state)
{
    (void)state;
    struct mp_optim_cfg c = cfg_of(MP_OPT_ADAM);
    enum { M = 37 };
    float p[M], s[2 * M] = {0}, g[M];
    for (int i = 0; i < M; i++) {
        p[i] = 0.75f;
        g[i] = -0.3f;
    }
    for (uint64_t t = 1; t <= 3; t++)
        mp_optim_step(&c, 0.01f, t, p + 1, g + 1, s + 1, M, M - 1);
    for (int i = 2; i < M; i++)
        assert_memory_equal(&p[i], &p[1], sizeof(float));
}

/* A moment stuck in the subnormals (what a zero gradient leaves after ~800 steps) is flushed to 0
 * instead of costing microcode on every later step, and the weight's bits are those of an update
 * by an exactly zero moment. The caller's floating-point mode comes back: a subnormal product is
 * still a subnormal after the step. */
static void test_subnormal_moments_flush_to_zero_weights_unchanged(void **state)
{
    (void)state;
    static const enum mp_optim_kind kinds[] = {MP_OPT_MOMENTUM, MP_OPT_ADAM, MP_OPT_ADAMW,
                                               MP_OPT_RMSPROP, MP_OPT_LAMB};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct mp_optim_cfg c = cfg_of(kinds[k]);
        c.weight_decay = 0.0f;
        enum { M = 19 }; /* two vector blocks and a tail */
        float p[M], g[M] = {0}, s[2 * M], p_zero[M], s_zero[2 * M] = {0};
        for (int i = 0; i < M; i++)
            p[i] = p_zero[i] = 0.25f + 0.125f * (float)i;
        for (int i = 0; i < 2 * M; i++)
            s[i] = (float)(i % 5 + 1) * 1.4e-45f; /* 1 to 5 times the smallest subnormal */
        mp_optim_step(&c, 0.01f, 900, p, g, s, M, M);
        mp_optim_step(&c, 0.01f, 900, p_zero, g, s_zero, M, M);
        for (int i = 0; i < mp_optim_state_slots(c.kind) * M; i++)
            if (s[i] != 0.0f)
                fail_msg("%s: state %d is %g after the step, not 0", mp_optim_name(c.kind), i,
                         (double)s[i]);
        assert_memory_equal(p, p_zero, sizeof p);
    }
    volatile float tiny = 1e-39f, half = 0.5f;
    assert_true(tiny * half > 0.0f); /* not flushed out here: the mode was put back */
}

static void test_defaults_follow_torch_and_design(void **state)
{
    (void)state;
    struct mp_optim_cfg c = cfg_of(MP_OPT_MOMENTUM);
    assert_true(c.momentum == 0.9f && c.weight_decay == 0.0f);
    c = cfg_of(MP_OPT_ADAMW);
    assert_true(c.weight_decay == 0.01f && c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f);
    c = cfg_of(MP_OPT_LAMB);
    assert_true(c.weight_decay == 0.01f && c.eps == 1e-6f);
    c = cfg_of(MP_OPT_RMSPROP);
    assert_true(c.alpha == 0.99f && c.eps == 1e-8f && c.weight_decay == 0.0f);
    assert_int_equal(mp_optim_state_slots(MP_OPT_SGD), 0);
    assert_int_equal(mp_optim_state_slots(MP_OPT_NESTEROV), 1);
    assert_int_equal(mp_optim_state_slots(MP_OPT_ADAM), 2);
}

static void test_names_parse_back_to_their_kind(void **state)
{
    (void)state;
    for (int k = 0; k < MP_OPT_COUNT; k++) {
        enum mp_optim_kind got;
        assert_int_equal(mp_optim_parse(mp_optim_name((enum mp_optim_kind)k), &got), 0);
        assert_int_equal(got, k);
    }
    enum mp_optim_kind got;
    assert_int_equal(mp_optim_parse("adagrad", &got), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_matches_torch_formula),
        cmocka_unit_test(test_momentum_starts_buffer_at_first_gradient),
        cmocka_unit_test(test_nesterov_with_weight_decay_matches_torch_formula),
        cmocka_unit_test(test_adam_matches_torch_formula),
        cmocka_unit_test(test_adam_weight_decay_is_l2_on_the_gradient),
        cmocka_unit_test(test_adamw_weight_decay_is_decoupled),
        cmocka_unit_test(test_rmsprop_matches_torch_default),
        cmocka_unit_test(test_lamb_matches_you_et_al_algorithm_2),
        cmocka_unit_test(test_lamb_trust_ratio_is_one_when_weights_are_zero),
        cmocka_unit_test(test_adam_element_result_independent_of_position),
        cmocka_unit_test(test_subnormal_moments_flush_to_zero_weights_unchanged),
        cmocka_unit_test(test_defaults_follow_torch_and_design),
        cmocka_unit_test(test_names_parse_back_to_their_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The script that printed the expected values (python3, standard library only):
# Reference: torch.optim formulas (SGD, Adam, AdamW, RMSprop docs pseudo-code) and LAMB (You et al.
# 2019, Alg. 2 with Adam bias correction), each element rounded to float32 after every operation,
# as torch's float kernels do. Independent of the C code.
import math, struct
def f(x): return struct.unpack('f', struct.pack('f', x))[0]
P0 = [0.5, -1.0, 2.0, 0.0, -0.25, 1.5, -2.0, 0.75, 0.125, -0.5, 3.0]
G = [[0.1, -0.2, 0.3, -0.4, 0.5, 0.05, -0.6, 0.7, -0.01, 0.2, 1.0],
     [-0.3, 0.1, 0.2, 0.25, -0.5, 0.4, 0.0, -0.1, 0.3, -0.2, 0.5],
     [0.2, 0.2, -0.1, 0.0, 0.3, -0.35, 0.45, 0.05, -0.25, 0.15, -1.0]]
P0 = [f(x) for x in P0]; G = [[f(x) for x in g] for g in G]

def sgd(lr, mu, wd, nesterov):
    p = list(P0); buf = None
    for t, g in enumerate(G, 1):
        g = [f(gi + f(wd * pi)) for gi, pi in zip(g, p)]
        if mu:
            buf = list(g) if buf is None else [f(f(mu * b) + gi) for b, gi in zip(buf, g)]
            g = [f(gi + f(mu * b)) for gi, b in zip(g, buf)] if nesterov else buf
        p = [f(pi - f(lr * gi)) for pi, gi in zip(p, g)]
    return p

def adam(lr, b1, b2, eps, wd, decoupled):
    p = list(P0); m = [0.0] * len(p); v = [0.0] * len(p)
    for t, g in enumerate(G, 1):
        if decoupled:
            p = [f(pi * f(1 - lr * wd)) for pi in p]
        else:
            g = [f(gi + f(wd * pi)) for gi, pi in zip(g, p)]
        m = [f(mi + f(f(1 - b1) * f(gi - mi))) for mi, gi in zip(m, g)]
        v = [f(f(b2 * vi) + f(f(f(1 - b2) * gi) * gi)) for vi, gi in zip(v, g)]
        bc1 = 1 - b1 ** t; bc2 = 1 - b2 ** t
        ss = f(lr / bc1); bs = f(math.sqrt(bc2))
        p = [f(pi - f(ss * f(mi / f(f(f(math.sqrt(vi)) / bs) + eps))))
             for pi, mi, vi in zip(p, m, v)]
    return p

def rmsprop(lr, alpha, eps):
    p = list(P0); v = [0.0] * len(p)
    for g in G:
        v = [f(f(alpha * vi) + f(f(f(1 - alpha) * gi) * gi)) for vi, gi in zip(v, g)]
        p = [f(pi - f(lr * f(gi / f(f(math.sqrt(vi)) + eps)))) for pi, gi, vi in zip(p, g, v)]
    return p

def lamb(lr, b1, b2, eps, wd):  # plain double: the norms decide, not float rounding
    p = list(P0); m = [0.0] * len(p); v = [0.0] * len(p)
    for t, g in enumerate(G, 1):
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        u = [(mi / (1 - b1 ** t)) / (math.sqrt(vi / (1 - b2 ** t)) + eps) + wd * pi
             for mi, vi, pi in zip(m, v, p)]
        wn = math.sqrt(sum(x * x for x in p)); un = math.sqrt(sum(x * x for x in u))
        r = min(wn / un, 10.0) if wn > 0 and un > 0 else 1.0
        p = [pi - lr * r * ui for pi, ui in zip(p, u)]
    return p

cases = {
    'sgd': sgd(0.1, 0, 0, False),
    'sgd_wd': sgd(0.1, 0, 0.1, False),
    'momentum': sgd(0.1, 0.9, 0, False),
    'nesterov': sgd(0.1, 0.9, 0.01, True),
    'adam': adam(0.01, 0.9, 0.999, 1e-8, 0, False),
    'adam_l2': adam(0.01, 0.9, 0.999, 1e-8, 0.1, False),
    'adamw': adam(0.01, 0.9, 0.999, 1e-8, 0.01, True),
    'rmsprop': rmsprop(0.01, 0.99, 1e-8),
    'lamb': lamb(0.01, 0.9, 0.999, 1e-6, 0.01),
}
for k, p in cases.items():
    print('static const float expect_%s[N] = {' % k)
    print('    ' + ', '.join('%.9gf' % x for x in p) + ',\n};')
*/
