/* Learning-rate schedules: linear warm-up, step decay, cosine endpoints and midpoint, the plateau
 * rule (patience, relative threshold, cooldown, floor) and the constant schedule. Expected values
 * are worked out by hand from the formulas in engine/optim/mp_lr.h and torch's ReduceLROnPlateau. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "mp_lr.h"

/* cmocka 1.1.5 (Debian 12) has no assert_double_equal. */
#define assert_near(a, b, tol) near_at((a), (b), (tol), #a, __LINE__)
static void near_at(double a, double b, double tol, const char *what, int line)
{
    if (!(fabs(a - b) <= tol))
        fail_msg("line %d: %s = %.17g, expected %.17g (tolerance %g)", line, what, a, b, tol);
}

static struct mp_lr_cfg cfg_of(enum mp_lr_kind kind, double base, uint64_t warmup)
{
    struct mp_lr_cfg c = {0};
    mp_lr_defaults(&c, kind);
    c.base_lr = base;
    c.warmup = warmup;
    return c;
}

static void test_constant_is_base_lr_at_every_step(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_CONSTANT, 0.05, 0);
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    assert_true(mp_lr_at(&c, &s, 0) == 0.05);
    assert_true(mp_lr_at(&c, &s, 123456) == 0.05);
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.0), 0);
}

static void test_warmup_ramps_linearly_to_base(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_CONSTANT, 0.1, 4);
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    assert_near(mp_lr_at(&c, &s, 0), 0.025, 1e-15);
    assert_near(mp_lr_at(&c, &s, 1), 0.05, 1e-15);
    assert_near(mp_lr_at(&c, &s, 3), 0.1, 1e-15);
    assert_near(mp_lr_at(&c, &s, 4), 0.1, 1e-15);
}

static void test_step_multiplies_by_gamma_every_step_size_after_warmup(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_STEP, 1.0, 10);
    c.step_size = 100;
    c.gamma = 0.5;
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    assert_near(mp_lr_at(&c, &s, 4), 0.5, 1e-15);    /* warm-up: 5/10 */
    assert_near(mp_lr_at(&c, &s, 10), 1.0, 1e-15);   /* schedule step 0 */
    assert_near(mp_lr_at(&c, &s, 109), 1.0, 1e-15);  /* schedule step 99 */
    assert_near(mp_lr_at(&c, &s, 110), 0.5, 1e-15);  /* schedule step 100 */
    assert_near(mp_lr_at(&c, &s, 310), 0.125, 1e-15);
    struct mp_lr_cfg d = cfg_of(MP_LR_STEP, 1.0, 0);
    assert_int_equal(d.step_size, 1000);
    assert_near(d.gamma, 0.1, 0);
}

static void test_cosine_endpoints_and_midpoint(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_COSINE, 0.1, 10);
    c.total_steps = 110; /* T = 100 after warm-up */
    c.min_lr = 0.001;
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    assert_near(mp_lr_at(&c, &s, 9), 0.1, 1e-15);    /* end of warm-up */
    assert_near(mp_lr_at(&c, &s, 10), 0.1, 1e-15);   /* cos(0) */
    assert_near(mp_lr_at(&c, &s, 60), 0.0505, 1e-12); /* halfway: mean of base, min */
    assert_near(mp_lr_at(&c, &s, 35), 0.001 + 0.099 * (1 + sqrt(0.5)) / 2, 1e-12);
    assert_near(mp_lr_at(&c, &s, 110), 0.001, 1e-15); /* s = T */
    assert_near(mp_lr_at(&c, &s, 5000), 0.001, 1e-15);
    assert_true(mp_lr_at(&c, &s, 109) > 0.001);
}

/* A run shorter than its warm-up (token models warm up for 100 steps; `--max-steps 50` is a
 * short try) ramps towards base_lr as nanoGPT does: the cosine has no steps left to start from,
 * and its end value (min_lr, 0 by default) once made the whole run train at LR 0. */
static void test_cosine_run_inside_its_warmup_ramps_to_base(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_COSINE, 0.1, 100);
    c.total_steps = 6;
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    assert_near(mp_lr_at(&c, &s, 0), 0.001, 1e-15);
    assert_near(mp_lr_at(&c, &s, 5), 0.006, 1e-15);
    c.total_steps = 100; /* exactly the warm-up: still no decay phase */
    assert_near(mp_lr_at(&c, &s, 99), 0.1, 1e-15);
    c.total_steps = 101; /* one step of decay: the warm-up ramps to cos(0), the base */
    assert_near(mp_lr_at(&c, &s, 99), 0.1, 1e-15);
}

/* torch semantics: a bad epoch is one whose loss is not below best * (1 - threshold); the LR is
 * multiplied by factor when the count of bad epochs exceeds patience. */
static void test_plateau_reduces_after_patience_bad_epochs(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_PLATEAU, 0.1, 0);
    assert_int_equal(c.patience, 2);
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.0), 0); /* first epoch: improvement */
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.0), 0); /* bad 1 */
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.5), 0); /* bad 2 = patience */
    assert_near(mp_lr_at(&c, &s, 1000), 0.1, 1e-15);
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.0), 1); /* bad 3 > patience */
    assert_near(mp_lr_at(&c, &s, 1000), 0.01, 1e-15);
    assert_int_equal(s.bad_epochs, 0);
}

static void test_plateau_improvement_must_beat_relative_threshold(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_PLATEAU, 1.0, 0);
    c.patience = 0;
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    mp_lr_epoch_end(&c, &s, 1.0);
    /* 0.99995 is an improvement of 5e-5 < 1e-4 relative: bad, and patience 0 reduces at once. */
    assert_int_equal(mp_lr_epoch_end(&c, &s, 0.99995), 1);
    assert_near(s.best, 1.0, 0);
    /* 0.9998 beats 1.0 * (1 - 1e-4) = 0.9999: improvement, best moves. */
    assert_int_equal(mp_lr_epoch_end(&c, &s, 0.9998), 0);
    assert_near(s.best, 0.9998, 0);
}

static void test_plateau_cooldown_ignores_bad_epochs(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_PLATEAU, 1.0, 0);
    c.patience = 0;
    c.cooldown = 2;
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    mp_lr_epoch_end(&c, &s, 1.0);
    assert_int_equal(mp_lr_epoch_end(&c, &s, 2.0), 1); /* reduce, cooldown 2 starts */
    assert_int_equal(mp_lr_epoch_end(&c, &s, 2.0), 0); /* cooldown */
    assert_int_equal(mp_lr_epoch_end(&c, &s, 2.0), 0); /* cooldown */
    assert_int_equal(mp_lr_epoch_end(&c, &s, 2.0), 1); /* counts again */
    assert_near(mp_lr_at(&c, &s, 0), 0.01, 1e-15);
}

static void test_plateau_never_goes_below_its_floor(void **state)
{
    (void)state;
    struct mp_lr_cfg c = cfg_of(MP_LR_PLATEAU, 1.0, 0);
    c.patience = 0;
    c.plateau_min_lr = 0.05;
    struct mp_lr_state s;
    mp_lr_state_init(&s);
    mp_lr_epoch_end(&c, &s, 1.0);
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.0), 1);
    assert_near(mp_lr_at(&c, &s, 0), 0.1, 1e-15);
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.0), 1);
    assert_near(mp_lr_at(&c, &s, 0), 0.05, 1e-15);
    assert_int_equal(mp_lr_epoch_end(&c, &s, 1.0), 0); /* already at the floor */
    assert_near(mp_lr_at(&c, &s, 0), 0.05, 1e-15);
}

static void test_names_parse_back_to_their_kind(void **state)
{
    (void)state;
    for (int k = 0; k < MP_LR_COUNT; k++) {
        enum mp_lr_kind got;
        assert_int_equal(mp_lr_parse(mp_lr_name((enum mp_lr_kind)k), &got), 0);
        assert_int_equal(got, k);
    }
    enum mp_lr_kind got;
    assert_int_equal(mp_lr_parse("linear", &got), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_is_base_lr_at_every_step),
        cmocka_unit_test(test_warmup_ramps_linearly_to_base),
        cmocka_unit_test(test_step_multiplies_by_gamma_every_step_size_after_warmup),
        cmocka_unit_test(test_cosine_endpoints_and_midpoint),
        cmocka_unit_test(test_cosine_run_inside_its_warmup_ramps_to_base),
        cmocka_unit_test(test_plateau_reduces_after_patience_bad_epochs),
        cmocka_unit_test(test_plateau_improvement_must_beat_relative_threshold),
        cmocka_unit_test(test_plateau_cooldown_ignores_bad_epochs),
        cmocka_unit_test(test_plateau_never_goes_below_its_floor),
        cmocka_unit_test(test_names_parse_back_to_their_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
