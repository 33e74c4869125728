/* Claims about partitioner/mp_partition.c: `optimal` finds the exact minimum bottleneck (checked
 * against brute force over every split of hundreds of random small instances, memory caps and
 * infeasible ones included), uniform/params do what they say, and large instances are fast (the
 * timing is printed, not asserted: machines differ). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mp_partition.h"

#define MAXN 12
#define MAXS 5

struct inst {
    struct mp_part_problem pr;
    double comp[MAXN], par[MAXN], act[MAXN], held[MAXN], lat[MAXS], bw[MAXS];
    double alpha[MAXS], beta[MAXS], hmb[MAXS], slow[MAXS];
};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void make_inst(struct inst *in, int n, int S, int with_dp)
{
    memset(in, 0, sizeof *in);
    for (int i = 0; i < n; i++) {
        in->comp[i] = urand() < 0.2 ? 0.0 : urand() * 1e-3;
        in->par[i] = urand() < 0.4 ? 0.0 : floor(urand() * 4e6);
        in->act[i] = floor(urand() * 1e6);
        in->held[i] = in->act[i] + floor(urand() * 1e5);
    }
    for (int s = 0; s < S; s++) {
        in->lat[s] = urand() * 1e-5;
        in->bw[s] = 1e9 * (1.0 + 20.0 * urand());
        in->alpha[s] = with_dp ? urand() * 1e-4 : 0.0;
        in->beta[s] = with_dp ? urand() * 1e-9 : 0.0;
        in->hmb[s] = (double)(S - s);
        in->slow[s] = with_dp && urand() < 0.5 ? 1.0 + floor(urand() * 3) : 1.0;
    }
    struct mp_part_problem *pr = &in->pr;
    pr->n = n, pr->S = S;
    pr->compute_s = in->comp, pr->param_bytes = in->par, pr->act_out = in->act;
    pr->held = in->held, pr->in_bytes = 3136.0, pr->lat_s = in->lat, pr->Bps = in->bw;
    pr->K = 1.0 + floor(urand() * 8);
    pr->ar_alpha_s = in->alpha, pr->ar_beta = in->beta, pr->slow = in->slow;
    pr->static_factor = 4.0, pr->held_mb = in->hmb;
}

/* The cost model written out again, independently of mp_partition.c. */
static double ref_cost(const struct inst *in, int s, int first, int last)
{
    const struct mp_part_problem *pr = &in->pr;
    double c = 0, p = 0;
    for (int i = first; i <= last; i++)
        c += in->comp[i], p += in->par[i];
    c *= in->slow[s];
    if (s > 0)
        c += 2 * (in->lat[s - 1] + in->act[first - 1] / in->bw[s - 1]);
    if (s < pr->S - 1)
        c += 2 * (in->lat[s] + in->act[last] / in->bw[s]);
    return pr->K * c + in->alpha[s] + in->beta[s] * p;
}

static double ref_mem(const struct inst *in, int s, int first, int last)
{
    double p = 0, h = first == 0 ? in->pr.in_bytes : in->act[first - 1];
    for (int i = first; i <= last; i++)
        p += in->par[i], h += in->held[i];
    return 4.0 * p + in->hmb[s] * h;
}

/* Best bottleneck over every split (cap applied), or INFINITY when none fits. */
static double brute(const struct inst *in, int s, int first, double worst)
{
    const int n = in->pr.n, S = in->pr.S;
    if (s == S - 1) {
        if (in->pr.mem_cap > 0 && ref_mem(in, s, first, n - 1) > in->pr.mem_cap)
            return INFINITY;
        return fmax(worst, ref_cost(in, s, first, n - 1));
    }
    double best = INFINITY;
    for (int last = first; last <= n - (S - s); last++) {
        if (in->pr.mem_cap > 0 && ref_mem(in, s, first, last) > in->pr.mem_cap)
            continue;
        best = fmin(best, brute(in, s + 1, last + 1, fmax(worst, ref_cost(in, s, first, last))));
    }
    return best;
}

static double brute_min_mem(const struct inst *in, int s, int first, double worst)
{
    const int n = in->pr.n, S = in->pr.S;
    if (s == S - 1)
        return fmax(worst, ref_mem(in, s, first, n - 1));
    double best = INFINITY;
    for (int last = first; last <= n - (S - s); last++)
        best = fmin(best,
                    brute_min_mem(in, s + 1, last + 1, fmax(worst, ref_mem(in, s, first, last))));
    return best;
}

static void check_instance(struct inst *in, int *n_infeasible)
{
    int last[MAXS];
    struct mp_err err;
    mp_err_clear(&err);
    double want = brute(in, 0, 0, 0.0);
    int rc = mp_partition_run(&in->pr, MP_PART_OPTIMAL, last, &err);
    if (isinf(want)) {
        assert_int_equal(rc, -1);
        assert_int_equal(err.code, MP_ERR_USAGE);
        assert_non_null(strstr(err.msg, "--memory-per-rank"));
        (*n_infeasible)++;
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(last[in->pr.S - 1], in->pr.n - 1);
    double got = 0;
    for (int s = 0, first = 0; s < in->pr.S; first = last[s] + 1, s++) {
        assert_true(last[s] >= first);
        got = fmax(got, ref_cost(in, s, first, last[s]));
        if (in->pr.mem_cap > 0)
            assert_true(ref_mem(in, s, first, last[s]) <= in->pr.mem_cap * (1 + 1e-12));
    }
    assert_true(fabs(got - want) <= 1e-9 * want);
}

static void test_optimal_matches_brute_force_on_random_instances(void **state)
{
    (void)state;
    int n_infeasible = 0, n_capped = 0;
    for (int t = 0; t < 600; t++) {
        struct inst in;
        int n = 1 + (int)(urand() * MAXN), S = 1 + (int)(urand() * MAXS);
        if (S > n)
            S = n;
        make_inst(&in, n, S, t % 3 == 0);
        if (t % 2) {  /* a cap around the leanest split: some fit, some do not */
            double lean = brute_min_mem(&in, 0, 0, 0.0);
            assert_true(fabs(mp_partition_min_mem(&in.pr) - lean) <= 1e-9 * lean);
            in.pr.mem_cap = lean * (0.9 + 0.5 * urand());
            n_capped++;
        }
        check_instance(&in, &n_infeasible);
    }
    printf("# 600 random instances, %d with memory caps, %d infeasible\n", n_capped, n_infeasible);
    assert_true(n_infeasible > 10);
}

static void test_more_stages_than_layers_is_a_usage_error(void **state)
{
    (void)state;
    struct inst in;
    int last[MAXS];
    struct mp_err err;
    make_inst(&in, 3, 3, 0);
    in.pr.S = 4;
    assert_int_equal(mp_partition_run(&in.pr, MP_PART_OPTIMAL, last, &err), -1);
    assert_int_equal(err.code, MP_ERR_USAGE);
    assert_non_null(strstr(err.msg, "--stages 3"));
}

static void test_uniform_splits_layer_counts_evenly(void **state)
{
    (void)state;
    struct inst in;
    int last[MAXS];
    struct mp_err err;
    make_inst(&in, 11, 4, 0);
    assert_int_equal(mp_partition_run(&in.pr, MP_PART_UNIFORM, last, &err), 0);
    int want[4] = {2, 5, 8, 10};  /* 3, 3, 3, 2 layers */
    assert_memory_equal(last, want, sizeof want);
}

static void test_params_minimises_the_largest_stage_parameters(void **state)
{
    (void)state;
    struct inst in;
    int last[MAXS];
    struct mp_err err;
    make_inst(&in, 6, 3, 0);
    double par[6] = {100, 0, 100, 0, 100, 0};
    memcpy(in.par, par, sizeof par);
    assert_int_equal(mp_partition_run(&in.pr, MP_PART_PARAMS, last, &err), 0);
    for (int s = 0, first = 0; s < 3; first = last[s] + 1, s++) {
        double p = 0;
        for (int i = first; i <= last[s]; i++)
            p += in.par[i];
        assert_true(p <= 100);
    }
}

/* With negligible communication the bottleneck is within 5% of the compute-only optimum. */
static void test_negligible_comm_bottleneck_near_compute_only_optimum(void **state)
{
    (void)state;
    for (int t = 0; t < 100; t++) {
        struct inst in;
        int last[MAXS];
        struct mp_err err;
        make_inst(&in, MAXN, 4, 0);
        for (int s = 0; s < MAXS; s++)
            in.lat[s] = 1e-9, in.bw[s] = 1e15;
        assert_int_equal(mp_partition_run(&in.pr, MP_PART_OPTIMAL, last, &err), 0);
        double got = 0;
        for (int s = 0, first = 0; s < 4; first = last[s] + 1, s++) {
            double c = 0;
            for (int i = first; i <= last[s]; i++)
                c += in.comp[i];
            got = fmax(got, c);
        }
        in.pr.lat_s = NULL;
        double want = brute(&in, 0, 0, 0.0) / in.pr.K;
        assert_true(got <= 1.05 * want + 1e-12);
    }
}

static double time_instance(int n, int S)
{
    double *a = malloc(sizeof(double) * 4 * (size_t)n), *l = malloc(sizeof(double) * 3 * S);
    int *last = malloc(sizeof(int) * (size_t)S);
    assert_non_null(a), assert_non_null(l), assert_non_null(last);
    for (int i = 0; i < 4 * n; i++)
        a[i] = floor(urand() * 1e6);
    for (int s = 0; s < S; s++)
        l[s] = 1e-6, l[S + s] = 1e10, l[2 * S + s] = (double)(S - s);
    struct mp_part_problem pr = {.n = n, .S = S, .compute_s = a, .param_bytes = a + n,
                                 .act_out = a + 2 * n, .held = a + 3 * n, .in_bytes = 1e5,
                                 .lat_s = l, .Bps = l + S, .K = 16, .static_factor = 4,
                                 .held_mb = l + 2 * S};
    pr.mem_cap = 1.3 * mp_partition_min_mem(&pr);
    struct mp_err err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(mp_partition_run(&pr, MP_PART_OPTIMAL, last, &err), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(a), free(l), free(last);
    return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

static void test_large_instances_print_their_timing(void **state)
{
    (void)state;
    printf("# optimal partition, memory-capped: 1000 layers -> 64 stages: %.3f s\n",
           time_instance(1000, 64));
    printf("# optimal partition, memory-capped: 10000 layers -> 256 stages: %.3f s\n",
           time_instance(10000, 256));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optimal_matches_brute_force_on_random_instances),
        cmocka_unit_test(test_more_stages_than_layers_is_a_usage_error),
        cmocka_unit_test(test_uniform_splits_layer_counts_evenly),
        cmocka_unit_test(test_params_minimises_the_largest_stage_parameters),
        cmocka_unit_test(test_negligible_comm_bottleneck_near_compute_only_optimum),
        cmocka_unit_test(test_large_instances_print_their_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
