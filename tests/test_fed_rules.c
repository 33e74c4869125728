/* Claims about the federated server's rules (engine/fed: mp_fed_robust.c, mp_fed_opt.c,
 * mp_fed_dp.c, mp_fed_update.c, mp_fed_agg.c): each robust rule equals a direct computation by
 * sorting (qsort) or brute force, Krum ignores far-away attackers, the server optimizers follow
 * Reddi et al.'s Algorithm 2 step by step, the privacy accountant reproduces published epsilons,
 * the server's update clips, adds noise of the documented size and falls back when a rule cannot
 * run, and the option parsers accept exactly the documented syntax. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mp_fed.h"
#include "mp_rng.h"

#define LEN 64
#define MAXN 12

static float data[MAXN][LEN];
static const float *vec[MAXN];

static void fill(uint64_t seed, int n)
{
    struct mp_rng r;
    mp_rng_seed(&r, seed);
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < LEN; i++)
            data[k][i] = (float)mp_rng_normal(&r);
        vec[k] = data[k];
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Coordinate i of the n vectors, sorted by qsort. */
static void sorted_column(int n, int i, double *col)
{
    for (int k = 0; k < n; k++)
        col[k] = data[k][i];
    qsort(col, (size_t)n, sizeof *col, cmp_double);
}

static void test_median_is_the_middle_of_each_sorted_coordinate(void **state)
{
    (void)state;
    double out[LEN], col[MAXN];
    float scratch[MAXN];
    for (int n = 1; n <= 9; n++) {
        fill(100 + (uint64_t)n, n);
        mp_fed_median(vec, n, LEN, out, scratch);
        for (int i = 0; i < LEN; i++) {
            sorted_column(n, i, col);
            double want = n % 2 ? col[n / 2] : (col[n / 2 - 1] + col[n / 2]) / 2;
            assert_true(out[i] == want);
        }
    }
    /* By hand: {3, 1, 2} -> 2 and {4, 1, 3, 2} -> 2.5. */
    float a[] = {3}, b[] = {1}, c[] = {2}, d[] = {4};
    const float *three[] = {a, b, c}, *four[] = {d, b, a, c};
    mp_fed_median(three, 3, 1, out, scratch);
    assert_true(out[0] == 2.0);
    mp_fed_median(four, 4, 1, out, scratch);
    assert_true(out[0] == 2.5);
}

static void test_trimmed_mean_drops_the_extremes_of_each_coordinate(void **state)
{
    (void)state;
    double out[LEN], col[MAXN];
    float scratch[MAXN];
    for (int n = 3; n <= MAXN; n++) {
        int trim = (int)floor(0.25 * n);
        fill(200 + (uint64_t)n, n);
        mp_fed_trimmed_mean(vec, n, LEN, trim, out, scratch);
        for (int i = 0; i < LEN; i++) {
            sorted_column(n, i, col);
            double sum = 0;
            for (int k = trim; k < n - trim; k++)
                sum += col[k];
            assert_true(fabs(out[i] - sum / (n - 2 * trim)) <= 1e-15 * (1 + fabs(out[i])));
        }
    }
    /* By hand: trim 1 of {10, -50, 1, 2, 3} leaves {1, 2, 3}: mean 2. */
    float v[5][1] = {{10}, {-50}, {1}, {2}, {3}};
    const float *p[5] = {v[0], v[1], v[2], v[3], v[4]};
    mp_fed_trimmed_mean(p, 5, 1, 1, out, scratch);
    assert_true(out[0] == 2.0);
}

/* Krum by brute force: every pairwise distance, each row sorted by qsort. */
static int brute_krum(int n, int f, double *score)
{
    int best = 0;
    for (int i = 0; i < n; i++) {
        double d[MAXN];
        int m = 0;
        for (int j = 0; j < n; j++) {
            if (j == i)
                continue;
            double s = 0;
            for (int t = 0; t < LEN; t++)
                s += ((double)data[i][t] - data[j][t]) * ((double)data[i][t] - data[j][t]);
            d[m++] = s;
        }
        qsort(d, (size_t)m, sizeof *d, cmp_double);
        score[i] = 0;
        for (int j = 0; j < n - f - 2; j++)
            score[i] += d[j];
        if (score[i] < score[best])
            best = i;
    }
    return best;
}

static void test_krum_picks_the_brute_force_minimum_score(void **state)
{
    (void)state;
    double dist[MAXN * MAXN], score[MAXN], want[MAXN];
    int chosen[MAXN];
    for (int n = 5; n <= MAXN; n++)
        for (int f = 0; 2 * f + 3 <= n; f++) {
            fill(300 + (uint64_t)(n * 16 + f), n);
            mp_fed_krum(vec, n, LEN, f, 1, dist, score, chosen);
            int best = brute_krum(n, f, want);
            assert_int_equal(chosen[0], best);
            for (int i = 0; i < n; i++)
                assert_true(fabs(score[i] - want[i]) <= 1e-12 * want[i]);
        }
}

static void test_multikrum_averages_the_n_minus_f_lowest_scores(void **state)
{
    (void)state;
    enum { n = 9, f = 2 };
    double dist[n * n], score[n], want[n], out[LEN];
    int chosen[n];
    fill(77, n);
    mp_fed_krum(vec, n, LEN, f, n - f, dist, score, chosen);
    brute_krum(n, f, want);
    /* The n - f chosen are exactly those whose score is at most the (n - f)-th smallest. */
    double sorted[n];
    memcpy(sorted, want, sizeof sorted);
    qsort(sorted, n, sizeof *sorted, cmp_double);
    for (int t = 0; t < n - f; t++) {
        assert_true(want[chosen[t]] <= sorted[n - f - 1]);
        if (t)
            assert_true(chosen[t] > chosen[t - 1]);
    }
    mp_fed_mean_of(vec, chosen, n - f, LEN, out);
    for (int i = 0; i < LEN; i++) {
        double s = 0;
        for (int t = 0; t < n - f; t++)
            s += data[chosen[t]][i];
        assert_true(fabs(out[i] - s / (n - f)) <= 1e-15 * (1 + fabs(out[i])));
    }
}

static void test_krum_never_picks_far_away_attackers(void **state)
{
    (void)state;
    enum { n = 8, f = 2 };
    double dist[n * n], score[n];
    int chosen[n];
    for (uint64_t seed = 0; seed < 20; seed++) {
        fill(seed, n);
        for (int i = 0; i < LEN; i++) { /* clients 3 and 6: scaled and sign-flipped x 10 */
            data[3][i] *= 10;
            data[6][i] *= -10;
        }
        mp_fed_krum(vec, n, LEN, f, n - f, dist, score, chosen);
        for (int t = 0; t < n - f; t++)
            assert_true(chosen[t] != 3 && chosen[t] != 6);
    }
}

/* Reddi et al. 2021, Algorithm 2, in double for three rounds, against the float-state code. */
static void test_server_optimizers_follow_algorithm_2(void **state)
{
    (void)state;
    const enum mp_fed_server_opt kinds[] = {MP_FED_OPT_ADAM, MP_FED_OPT_YOGI,
                                            MP_FED_OPT_ADAGRAD};
    const double b1 = 0.9, b2 = 0.99, tau = 1e-3, lr = 0.01;
    for (int kk = 0; kk < 3; kk++) {
        struct mp_fed_opt o;
        struct mp_err err;
        assert_int_equal(mp_fed_opt_init(&o, kinds[kk], lr, 4, &err), 0);
        float x[4] = {0.5f, -0.25f, 0.0f, 1.0f};
        double xr[4], m[4] = {0}, v[4];
        for (int i = 0; i < 4; i++)
            xr[i] = x[i], v[i] = tau * tau;
        for (int t = 0; t < 3; t++) {
            double agg[4];
            for (int i = 0; i < 4; i++)
                agg[i] = x[i] + 0.01 * (i + 1) * (t % 2 ? -1 : 1) * (kk + 1);
            for (int i = 0; i < 4; i++) {
                double d = agg[i] - xr[i];
                m[i] = b1 * m[i] + (1 - b1) * d;
                if (kinds[kk] == MP_FED_OPT_ADAM)
                    v[i] = b2 * v[i] + (1 - b2) * d * d;
                else if (kinds[kk] == MP_FED_OPT_YOGI)
                    v[i] = v[i] - (1 - b2) * d * d * (v[i] > d * d ? 1 : v[i] < d * d ? -1 : 0);
                else
                    v[i] = v[i] + d * d;
                xr[i] += lr * m[i] / (sqrt(v[i]) + tau);
            }
            mp_fed_opt_step(&o, x, agg);
            for (int i = 0; i < 4; i++)
                assert_true(fabs(x[i] - xr[i]) < 1e-6);
        }
        mp_fed_opt_free(&o);
    }
}

static void test_avg_takes_the_aggregate_and_server_lr_scales_the_step(void **state)
{
    (void)state;
    struct mp_fed_opt o;
    struct mp_err err;
    float x[3] = {1, 2, 3};
    double agg[3] = {2, 2, 1.0 / 3};
    assert_int_equal(mp_fed_opt_init(&o, MP_FED_OPT_AVG, 1.0, 3, &err), 0);
    mp_fed_opt_step(&o, x, agg);
    for (int i = 0; i < 3; i++)
        assert_true(x[i] == (float)agg[i]);
    o.lr = 0.5;
    float y[3] = {0, 4, -2};
    double target[3] = {2, 0, 2};
    mp_fed_opt_step(&o, y, target);
    assert_true(y[0] == 1 && y[1] == 2 && y[2] == 0);
    mp_fed_opt_free(&o);
    assert_true(mp_fed_opt_default_lr(MP_FED_OPT_AVG) == 1.0);
}

static double epsilon_of(double q, double sigma, double steps, double delta)
{
    struct mp_fed_acct a;
    mp_fed_acct_init(&a);
    mp_fed_acct_add(&a, q, sigma, steps);
    return mp_fed_acct_epsilon(&a, delta, NULL);
}

/* TensorFlow Privacy, tutorials/README.md ("Select Parameters"; also the expected output of
 * mnist_dpsgd_tutorial.py): DP-SGD on MNIST, batch 256 of 60000 (q = 256/60000), 234 steps an
 * epoch, delta = 1e-5, its RDP accountant with the default orders: noise 1.12 for 60 epochs gives
 * epsilon 2.92, noise 1.2 for 10 epochs 1.20, noise 0.6 for 30 epochs 9.74 (the figures are
 * printed to two decimals; we allow 0.01). The DP-SGD example (noise 1.1, 60 epochs,
 * epsilon about 3) is the same computation. */
static void test_accountant_reproduces_tf_privacy_published_epsilons(void **state)
{
    (void)state;
    double q = 256.0 / 60000, steps_per_epoch = 60000 / 256;
    double e1 = epsilon_of(q, 1.12, 60 * steps_per_epoch, 1e-5);
    double e2 = epsilon_of(q, 1.2, 10 * steps_per_epoch, 1e-5);
    double e3 = epsilon_of(q, 0.6, 30 * steps_per_epoch, 1e-5);
    double e4 = epsilon_of(q, 1.1, 60 * steps_per_epoch, 1e-5);
    print_message("epsilon %.4f (2.92) %.4f (1.20) %.4f (9.74) %.4f (~3)\n", e1, e2, e3, e4);
    assert_true(fabs(e1 - 2.92) < 0.01);
    assert_true(fabs(e2 - 1.20) < 0.01);
    assert_true(fabs(e3 - 9.74) < 0.01);
    assert_true(fabs(e4 - 3.0) < 0.05);
}

static void test_accountant_without_sampling_is_the_gaussian_mechanism(void **state)
{
    (void)state;
    /* q = 1: RDP alpha / (2 sigma^2) per step, so T steps are one step of sigma / sqrt(T). */
    assert_true(fabs(mp_fed_rdp_sgm(1.0, 2.0, 3.0) - 3.0 / 8) < 1e-15);
    double a = epsilon_of(1.0, 1.0, 4, 1e-3), b = epsilon_of(1.0, 0.5, 1, 1e-3);
    assert_true(fabs(a - b) < 1e-12);
    /* Sampling only helps, more steps and less noise only hurt. */
    assert_true(epsilon_of(0.1, 1.0, 10, 1e-5) < epsilon_of(1.0, 1.0, 10, 1e-5));
    assert_true(epsilon_of(0.1, 1.0, 20, 1e-5) > epsilon_of(0.1, 1.0, 10, 1e-5));
    assert_true(epsilon_of(0.1, 0.8, 10, 1e-5) > epsilon_of(0.1, 1.0, 10, 1e-5));
    /* Integer and fractional orders agree where they meet. */
    double lo = mp_fed_rdp_sgm(0.01, 1.0, 2.0 - 1e-9), hi = mp_fed_rdp_sgm(0.01, 1.0, 2.0);
    assert_true(fabs(lo - hi) < 1e-6 * hi);
}

static void test_option_syntax(void **state)
{
    (void)state;
    struct mp_fed_cfg c;
    struct mp_err err;
    memset(&c, 0, sizeof c);
    assert_int_equal(mp_fed_agg_parse("trimmed:0.25", &c, &err), 0);
    assert_true(c.agg == MP_FED_AGG_TRIMMED && c.trim_beta == 0.25);
    assert_int_equal(mp_fed_agg_parse("krum:2", &c, &err), 0);
    assert_true(c.agg == MP_FED_AGG_KRUM && c.krum_f == 2);
    assert_int_equal(mp_fed_agg_parse("multikrum:0", &c, &err), 0);
    assert_true(c.agg == MP_FED_AGG_MULTIKRUM && c.krum_f == 0);
    assert_int_equal(mp_fed_agg_parse("median", &c, &err), 0);
    assert_true(c.agg == MP_FED_AGG_MEDIAN);
    const char *bad_agg[] = {"", "mean", "median:1", "trimmed", "trimmed:0.5", "trimmed:-0.1",
                             "trimmed:x", "krum", "krum:", "krum:-1", "krum:1.5", "size:1",
                             "multikrum:2x"};
    for (size_t i = 0; i < sizeof bad_agg / sizeof *bad_agg; i++) {
        assert_int_equal(mp_fed_agg_parse(bad_agg[i], &c, &err), -1);
        assert_int_equal(err.code, MP_ERR_USAGE);
    }
    struct mp_fed_attack a;
    assert_int_equal(mp_fed_attack_parse("2:signflip", &a, &err), 0);
    assert_true(a.k == 2 && a.kind == MP_FED_ATTACK_SIGNFLIP);
    assert_int_equal(mp_fed_attack_parse("3:scale:-4", &a, &err), 0);
    assert_true(a.k == 3 && a.kind == MP_FED_ATTACK_SCALE && a.scale == -4);
    assert_int_equal(mp_fed_attack_parse("0:noise", &a, &err), 0);
    assert_true(a.k == 0 && a.kind == MP_FED_ATTACK_NOISE);
    const char *bad_atk[] = {"", "2", "signflip", "2:", "2:flip", "-1:noise", "2:scale",
                             "2:scale:", "2:scale:inf", "x:noise", "2:noise:1"};
    for (size_t i = 0; i < sizeof bad_atk / sizeof *bad_atk; i++) {
        assert_int_equal(mp_fed_attack_parse(bad_atk[i], &a, &err), -1);
        assert_int_equal(err.code, MP_ERR_USAGE);
    }
}

static void test_attackers_are_k_clients_from_the_seed(void **state)
{
    (void)state;
    int a[17], b[17], c[17], differ = 0;
    for (int K = 0; K <= 16; K++) {
        mp_fed_attackers(9, 16, K, a);
        mp_fed_attackers(9, 16, K, b);
        mp_fed_attackers(10, 16, K, c);
        int n = 0;
        for (int k = 1; k <= 16; k++) {
            n += a[k];
            assert_int_equal(a[k], b[k]);
            differ += a[k] != c[k];
        }
        assert_int_equal(n, K);
    }
    assert_true(differ > 0);
}

/* ---- the server's update on a real arena (two dense layers, 403 parameters, padding) ---- */

static const char spec[] = "input 1 2 3\nflatten\ndense 40\nrelu\ndense 3\nsoftmax_xent\n";

struct rig {
    struct mp_model m;
    struct mp_stage st;
    struct mp_fed_cfg cfg;
    struct mp_fed_update u;
    float *x, *theta[MAXN + 1];
};

static void rig_init(struct rig *g, int clients)
{
    struct mp_err err;
    memset(g, 0, sizeof *g);
    assert_int_equal(mp_model_parse(&g->m, "rig.mp", spec, sizeof spec - 1, &err), 0);
    int bounds[2] = {1, g->m.n_layers};
    assert_int_equal(mp_stage_init(&g->st, &g->m, bounds, 0, 1, 1, MP_VPLACE_LOOP, 1, 4, 0, &err),
                     0);
    g->cfg.model = &g->m;
    g->cfg.clients = clients;
    g->cfg.fraction = 1;
    g->cfg.agg = MP_FED_AGG_SIZE;
    g->cfg.server_lr = 1;
    g->x = g->st.param;
    struct mp_rng r;
    mp_rng_seed(&r, 5);
    for (int k = 0; k <= clients; k++) {
        g->theta[k] = calloc(g->st.n_param, sizeof(float));
        for (int i = 0; i < g->m.n_layers; i++) {
            size_t o = g->st.layer_off[i], n = mp_layer_n_param(&g->m.layers[i]);
            for (size_t j = o; n && j < o + n; j++)
                (k ? g->theta[k] : g->x)[j] = (float)(0.1 * mp_rng_normal(&r));
        }
    }
}

static void rig_start(struct rig *g)
{
    struct mp_err err;
    assert_int_equal(mp_fed_cfg_check(&g->cfg, &err), 0);
    assert_int_equal(mp__fed_update_init(&g->u, &g->cfg, &g->st, &err), 0);
}

static void rig_free(struct rig *g)
{
    mp__fed_update_free(&g->u);
    for (int k = 0; k <= g->cfg.clients; k++)
        free(g->theta[k]);
    mp_stage_free(&g->st);
    mp_model_free(&g->m);
}

static double dist_to_x(struct rig *g, const float *t)
{
    double s = 0;
    for (size_t i = 0; i < g->st.n_param; i++)
        s += ((double)t[i] - g->x[i]) * ((double)t[i] - g->x[i]);
    return sqrt(s);
}

static int run(struct rig *g, int n, int *applied)
{
    int ids[MAXN];
    uint64_t samples[MAXN];
    double scores[MAXN], w[MAXN];
    char note[160];
    struct mp_err err;
    for (int j = 0; j < n; j++)
        ids[j] = j + 1, samples[j] = 10 * (uint64_t)(j + 1), scores[j] = 0;
    return mp__fed_update_round(&g->u, 0, g->x, g->theta, ids, samples, scores, n, NULL, w,
                                applied, note, sizeof note, &err);
}

static void test_update_weighted_mean_is_the_sample_weighted_sum(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 3);
    rig_start(&g);
    int applied = 0;
    assert_int_equal(run(&g, 3, &applied), 0);
    assert_true(applied);
    for (size_t i = 0; i < g.st.n_param; i++) {
        double want = (10.0 * g.theta[1][i] + 20.0 * g.theta[2][i] + 30.0 * g.theta[3][i]) / 60;
        assert_true(fabs(g.x[i] - want) <= 1e-7);
    }
    rig_free(&g);
}

static void test_update_clips_each_update_to_the_bound(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 4);
    g.cfg.agg = MP_FED_AGG_MEDIAN;
    g.cfg.clip_update = 0.05;
    rig_start(&g);
    float *before = malloc(g.st.n_param * sizeof(float));
    memcpy(before, g.x, g.st.n_param * sizeof(float));
    int applied = 0;
    double far = dist_to_x(&g, g.theta[2]);
    assert_true(far > 0.05);
    assert_int_equal(run(&g, 4, &applied), 0);
    for (int k = 1; k <= 4; k++) { /* clipped in place against the old global model */
        double s = 0;
        for (size_t i = 0; i < g.st.n_param; i++)
            s += ((double)g.theta[k][i] - before[i]) * ((double)g.theta[k][i] - before[i]);
        assert_true(fabs(sqrt(s) - 0.05) < 1e-6);
    }
    free(before);
    rig_free(&g);
}

static void test_update_noise_has_std_sigma_clip_over_sampled(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 4);
    g.cfg.clip_update = 1e6; /* nothing clipped: the mean of the updates plus the noise */
    g.cfg.noise_multiplier = 2e-7;
    rig_start(&g);
    double mean[1024], s2 = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < g.st.n_param; i++) {
        double d = 0;
        for (int k = 1; k <= 4; k++)
            d += (double)g.theta[k][i] - g.x[i];
        mean[i] = g.x[i] + d / 4;
    }
    int applied = 0;
    assert_int_equal(run(&g, 4, &applied), 0);
    for (int i = 0; i < g.m.n_layers; i++) {
        size_t o = g.st.layer_off[i], n = mp_layer_n_param(&g.m.layers[i]);
        for (size_t j = o; n && j < o + n; j++, cnt++)
            s2 += ((double)g.x[j] - mean[j]) * ((double)g.x[j] - mean[j]);
    }
    double std = sqrt(s2 / (double)cnt), want = 2e-7 * 1e6 / 4; /* sigma X / m = 0.05 */
    print_message("noise std %.4f over %zu parameters (want %.4f)\n", std, cnt, want);
    assert_true(fabs(std - want) < 0.25 * want);
    mp__fed_update_account(&g.u);
    assert_true(g.u.epsilon > 0 && isfinite(g.u.epsilon));
    assert_true(fabs(g.u.delta - pow(4, -1.1)) < 1e-12);
    rig_free(&g);
}

static void test_update_krum_without_enough_updates_leaves_the_model(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 5);
    g.cfg.agg = MP_FED_AGG_KRUM;
    g.cfg.krum_f = 1;
    rig_start(&g);
    float *before = malloc(g.st.n_param * sizeof(float));
    memcpy(before, g.x, g.st.n_param * sizeof(float));
    int applied = 1;
    assert_int_equal(run(&g, 4, &applied), 0); /* 4 < 2f + 3 */
    assert_false(applied);
    assert_memory_equal(before, g.x, g.st.n_param * sizeof(float));
    assert_int_equal(run(&g, 5, &applied), 0);
    assert_true(applied);
    int hit = 0; /* Krum moves the model onto one client's model */
    for (int k = 1; k <= 5; k++)
        hit += !memcmp(g.theta[k], g.x, g.st.n_param * sizeof(float));
    assert_int_equal(hit, 1);
    free(before);
    rig_free(&g);
}

static void test_config_checks_refuse_what_cannot_run(void **state)
{
    (void)state;
    struct mp_fed_cfg c;
    struct mp_err err;
    memset(&c, 0, sizeof c);
    c.clients = 8, c.fraction = 1, c.batch = 64, c.agg = MP_FED_AGG_SIZE;
    c.noise_multiplier = 1; /* no --clip-update */
    assert_int_equal(mp_fed_cfg_check(&c, &err), -1);
    c.clip_update = 1, c.agg = MP_FED_AGG_MEDIAN; /* noise with a robust rule */
    assert_int_equal(mp_fed_cfg_check(&c, &err), -1);
    c.agg = MP_FED_AGG_SIZE;
    assert_int_equal(mp_fed_cfg_check(&c, &err), 0);
    assert_true(fabs(c.delta - pow(8, -1.1)) < 1e-15);
    c.noise_multiplier = 0, c.clip_update = 0, c.delta = 0;
    c.agg = MP_FED_AGG_KRUM, c.krum_f = 3; /* 8 < 2 * 3 + 3 */
    assert_int_equal(mp_fed_cfg_check(&c, &err), -1);
    c.krum_f = 2;
    assert_int_equal(mp_fed_cfg_check(&c, &err), 0);
    c.fraction = 0.5; /* 4 sampled */
    assert_int_equal(mp_fed_cfg_check(&c, &err), -1);
    c.agg = MP_FED_AGG_SIZE, c.min_clients = 5;
    assert_int_equal(mp_fed_cfg_check(&c, &err), -1);
    c.min_clients = 4, c.attack.k = 9;
    assert_int_equal(mp_fed_cfg_check(&c, &err), -1);
    c.attack.k = 2, c.client_stages = 3, c.micro_batches = 0;
    assert_int_equal(mp_fed_cfg_check(&c, &err), 0);
    assert_int_equal(c.micro_batches, 4); /* the largest divisor of 64 up to 2P = 6 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median_is_the_middle_of_each_sorted_coordinate),
        cmocka_unit_test(test_trimmed_mean_drops_the_extremes_of_each_coordinate),
        cmocka_unit_test(test_krum_picks_the_brute_force_minimum_score),
        cmocka_unit_test(test_multikrum_averages_the_n_minus_f_lowest_scores),
        cmocka_unit_test(test_krum_never_picks_far_away_attackers),
        cmocka_unit_test(test_server_optimizers_follow_algorithm_2),
        cmocka_unit_test(test_avg_takes_the_aggregate_and_server_lr_scales_the_step),
        cmocka_unit_test(test_accountant_reproduces_tf_privacy_published_epsilons),
        cmocka_unit_test(test_accountant_without_sampling_is_the_gaussian_mechanism),
        cmocka_unit_test(test_option_syntax),
        cmocka_unit_test(test_attackers_are_k_clients_from_the_seed),
        cmocka_unit_test(test_update_weighted_mean_is_the_sample_weighted_sum),
        cmocka_unit_test(test_update_clips_each_update_to_the_bound),
        cmocka_unit_test(test_update_noise_has_std_sigma_clip_over_sampled),
        cmocka_unit_test(test_update_krum_without_enough_updates_leaves_the_model),
        cmocka_unit_test(test_config_checks_refuse_what_cannot_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
