/* Claims about the federated data splits and weights (engine/fed/mp_fed_split.c, mp_fed_agg.c): every
 * split is a partition of all samples, the same for the same seed, Dirichlet skew grows as alpha
 * shrinks, shards give each client few labels, contiguous cuts the data's order into stretches and
 * text (no labels) splits only iid or contiguous, the sampler is deterministic and the aggregation
 * weights are normalised, size-proportional and bounded under `perf`. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mp_fed.h"

#define N 6000
#define K 10
#define C 8

static int32_t labels[N];

static int setup_labels(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        labels[i] = (int32_t)((i * 7 + i / 13) % K);
    return 0;
}

static struct mp_fed_split make(const char *spec, uint64_t seed)
{
    struct mp_fed_split_cfg cfg;
    struct mp_fed_split s;
    struct mp_err err;
    assert_int_equal(mp_fed_split_parse(spec, &cfg, &err), 0);
    assert_int_equal(mp_fed_split_make(&s, &cfg, labels, N, K, C, seed, &err), 0);
    return s;
}

static void assert_partition(const struct mp_fed_split *s)
{
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    assert_int_equal(s->off[0], 0);
    assert_int_equal(s->off[C], N);
    for (int c = 0; c < C; c++) {
        assert_true(s->off[c + 1] > s->off[c]); /* nobody is left without data */
        for (size_t j = s->off[c]; j < s->off[c + 1]; j++) {
            assert_true(s->idx[j] < N);
            assert_int_equal(seen[s->idx[j]], 0);
            seen[s->idx[j]] = 1;
            if (j > s->off[c])
                assert_true(s->idx[j] > s->idx[j - 1]);
        }
    }
}

static void test_every_split_is_a_partition_of_all_samples(void **state)
{
    (void)state;
    const char *specs[] = {"iid",           "dirichlet:0.1", "dirichlet:0.5",
                           "dirichlet:100", "shards:2",      "contiguous"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        struct mp_fed_split s = make(specs[i], 3);
        assert_partition(&s);
        mp_fed_split_free(&s);
    }
}

static void test_contiguous_cuts_the_order_into_near_equal_stretches(void **state)
{
    (void)state;
    struct mp_fed_split s = make("contiguous", 3), t = make("contiguous", 4);
    for (int c = 0; c < C; c++) {
        assert_int_equal(s.off[c], (size_t)c * N / C); /* 6000 / 8: 750 each, in file order */
        for (size_t j = s.off[c]; j < s.off[c + 1]; j++)
            assert_int_equal(s.idx[j], j);
    }
    assert_memory_equal(s.idx, t.idx, sizeof(uint32_t) * N); /* no seed in it */
    mp_fed_split_free(&s), mp_fed_split_free(&t);
}

/* Text windows have no labels: iid and contiguous split them, the class-based splits say why
 * not and name what works. */
static void test_unlabelled_samples_split_iid_or_contiguous_only(void **state)
{
    (void)state;
    const char *ok[] = {"iid", "contiguous"}, *refused[] = {"dirichlet:0.5", "shards:2"};
    struct mp_fed_split_cfg cfg;
    struct mp_fed_split s;
    struct mp_err err;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(mp_fed_split_parse(ok[i], &cfg, &err), 0);
        assert_int_equal(mp_fed_split_make(&s, &cfg, NULL, N, 0, C, 3, &err), 0);
        assert_partition(&s);
        mp_fed_split_free(&s);
        assert_int_equal(mp_fed_split_parse(refused[i], &cfg, &err), 0);
        mp_err_clear(&err);
        assert_int_equal(mp_fed_split_make(&s, &cfg, NULL, N, 0, C, 3, &err), -1);
        assert_int_equal(err.code, MP_ERR_USAGE);
        assert_non_null(strstr(err.msg, refused[i]));
        assert_non_null(strstr(err.msg, "use --split iid or --split contiguous"));
        assert_null(s.idx);
    }
}

static void test_same_seed_same_split_other_seed_other_split(void **state)
{
    (void)state;
    struct mp_fed_split a = make("dirichlet:0.5", 7), b = make("dirichlet:0.5", 7),
                        c = make("dirichlet:0.5", 8);
    assert_memory_equal(a.off, b.off, sizeof(size_t) * (C + 1));
    assert_memory_equal(a.idx, b.idx, sizeof(uint32_t) * N);
    assert_true(memcmp(a.idx, c.idx, sizeof(uint32_t) * N) != 0);
    mp_fed_split_free(&a), mp_fed_split_free(&b), mp_fed_split_free(&c);
}

/* Mean over clients of the total-variation distance between the client's label histogram and
 * the global one: 0 for identical mixes, near 1 for single-label clients. */
static double label_skew(const struct mp_fed_split *s)
{
    double total = 0;
    for (int c = 0; c < C; c++) {
        double h[K] = {0}, n = (double)(s->off[c + 1] - s->off[c]), tv = 0;
        for (size_t j = s->off[c]; j < s->off[c + 1]; j++)
            h[labels[s->idx[j]]] += 1;
        for (int k = 0; k < K; k++)
            tv += fabs(h[k] / n - 0.1);
        total += tv / 2;
    }
    return total / C;
}

static void test_dirichlet_skew_grows_as_alpha_shrinks(void **state)
{
    (void)state;
    const char *specs[] = {"dirichlet:100", "dirichlet:1", "dirichlet:0.3", "dirichlet:0.05"};
    double prev = -1;
    for (int i = 0; i < 4; i++) {
        struct mp_fed_split s = make(specs[i], 1);
        double skew = label_skew(&s);
        print_message("%s: mean label skew %.3f\n", specs[i], skew);
        assert_true(skew > prev);
        prev = skew;
        mp_fed_split_free(&s);
    }
    assert_true(prev > 0.5);
    struct mp_fed_split iid = make("iid", 1);
    assert_true(label_skew(&iid) < 0.1);
    mp_fed_split_free(&iid);
}

static void test_shards_give_each_client_k_equal_shards_of_few_labels(void **state)
{
    (void)state;
    struct mp_fed_split s = make("shards:2", 5);
    for (int c = 0; c < C; c++) {
        int present[K] = {0}, n = 0;
        for (size_t j = s.off[c]; j < s.off[c + 1]; j++)
            present[labels[s.idx[j]]] = 1;
        for (int k = 0; k < K; k++)
            n += present[k];
        assert_true(n <= 4); /* 2 shards of N/16 samples each span at most 2 labels each */
        assert_int_equal(s.off[c + 1] - s.off[c], 2 * (N / 16));
    }
    mp_fed_split_free(&s);
}

static void test_bad_split_specs_are_usage_errors(void **state)
{
    (void)state;
    const char *bad[] = {"", "dirichlet", "dirichlet:0", "dirichlet:-1", "dirichlet:x",
                         "shards:0", "shards:", "noniid"};
    struct mp_fed_split_cfg cfg;
    struct mp_err err;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(mp_fed_split_parse(bad[i], &cfg, &err), -1);
        assert_int_equal(err.code, MP_ERR_USAGE);
    }
}

static void test_gamma_mean_matches_its_shape(void **state)
{
    (void)state;
    struct mp_rng r;
    mp_rng_seed(&r, 11);
    const double shapes[] = {0.1, 0.5, 1.0, 4.0};
    for (int i = 0; i < 4; i++) {
        double sum = 0;
        for (int j = 0; j < 20000; j++)
            sum += mp_fed_gamma(&r, shapes[i]);
        assert_true(fabs(sum / 20000 - shapes[i]) < 0.05 * shapes[i] + 0.01);
    }
}

static void test_sampling_is_deterministic_sorted_and_at_least_one(void **state)
{
    (void)state;
    int a[C], b[C];
    assert_int_equal(mp_fed_sample(4, 9, C, 0.5, a), 4);
    assert_int_equal(mp_fed_sample(4, 9, C, 0.5, b), 4);
    assert_memory_equal(a, b, sizeof(int) * 4);
    for (int i = 1; i < 4; i++)
        assert_true(a[i] > a[i - 1] && a[i] >= 1 && a[i] <= C);
    assert_int_equal(mp_fed_sample(4, 9, C, 1e-6, a), 1);
    assert_int_equal(mp_fed_sample(4, 9, C, 1.0, a), C);
}

static void test_sampling_varies_by_round_and_is_fair_over_rounds(void **state)
{
    (void)state;
    int a[C], b[C], count[C + 1] = {0}, differ = 0;
    const int rounds = 4000;
    for (int r = 0; r < rounds; r++) {
        int n = mp_fed_sample(11, r, C, 0.25, a);
        assert_int_equal(n, 2);
        for (int i = 0; i < n; i++)
            count[a[i]]++;
        mp_fed_sample(11, r + 1, C, 0.25, b);
        differ += memcmp(a, b, sizeof(int) * 2) != 0;
    }
    assert_true(differ > rounds / 2);
    for (int k = 1; k <= C; k++) /* each client in a quarter of the rounds, within 10% */
        assert_true(fabs(count[k] / (double)rounds - 0.25) < 0.025);
}

static void test_size_weights_follow_samples_and_perf_stays_bounded(void **state)
{
    (void)state;
    int ids[3] = {1, 2, 3};
    uint64_t n[3] = {100, 300, 600};
    double sc[3] = {0.0, 0.5, 1.0}, w[3];
    mp_fed_weights(MP_FED_AGG_SIZE, NULL, ids, n, sc, 3, w);
    assert_true(fabs(w[0] - 0.1) < 1e-12 && fabs(w[1] - 0.3) < 1e-12 && fabs(w[2] - 0.6) < 1e-12);
    struct mp_fed_perf p;
    struct mp_err err;
    assert_int_equal(mp_fed_perf_init(&p, 3, &err), 0);
    uint64_t same[3] = {100, 100, 100};
    mp_fed_weights(MP_FED_AGG_PERF, &p, ids, same, sc, 3, w);
    assert_true(fabs(w[0] + w[1] + w[2] - 1) < 1e-12);
    assert_true(w[0] > 0 && w[0] < w[1] && w[1] < w[2]);   /* never zero, ordered by score */
    assert_true(w[2] / w[0] <= MP_FED_PERF_MAX / MP_FED_PERF_MIN + 1e-12);
    mp_fed_perf_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split_is_a_partition_of_all_samples),
        cmocka_unit_test(test_same_seed_same_split_other_seed_other_split),
        cmocka_unit_test(test_contiguous_cuts_the_order_into_near_equal_stretches),
        cmocka_unit_test(test_unlabelled_samples_split_iid_or_contiguous_only),
        cmocka_unit_test(test_dirichlet_skew_grows_as_alpha_shrinks),
        cmocka_unit_test(test_shards_give_each_client_k_equal_shards_of_few_labels),
        cmocka_unit_test(test_bad_split_specs_are_usage_errors),
        cmocka_unit_test(test_gamma_mean_matches_its_shape),
        cmocka_unit_test(test_sampling_is_deterministic_sorted_and_at_least_one),
        cmocka_unit_test(test_sampling_varies_by_round_and_is_fair_over_rounds),
        cmocka_unit_test(test_size_weights_follow_samples_and_perf_stays_bounded),
    };
    return cmocka_run_group_tests(tests, setup_labels, NULL);
}
