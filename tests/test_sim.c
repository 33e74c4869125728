/* Claims about the event simulator (engine/pipeline/mp_sim.c): textbook closed forms for GPipe and 1F1B,
 * interleaving and zero-bubble beating 1F1B, zbv beating zb1, link costs landing where expected
 * (in a V too), deadlocks
 * reported, and peak activation memory behaving as DESIGN.md §8 says (flat for 1F1B, linear
 * in M for GPipe). */
#include <setjmp.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mp_sim.h"

#define MAXS 64

/* cmocka 1.1.5 (Debian 12) compares floats only; the closed forms need doubles. */
#define assert_close(a, b, eps)                                                             \
    do {                                                                                    \
        double a_ = (a), b_ = (b);                                                          \
        if (!(fabs(a_ - b_) <= (eps)))                                                      \
            fail_msg("%s = %.12g, expected %.12g", #a, a_, b_);                             \
    } while (0)

/* Equal stages: every virtual stage costs f, b, w (the whole model's costs spread over V chunks
 * are passed already divided by the caller). */
struct costs {
    double f[MAXS], b[MAXS], w[MAXS], act[MAXS], held[MAXS];
    struct mp_sim_costs c;
};

static void equal_costs(struct costs *k, double f, double b, double w)
{
    memset(k, 0, sizeof *k);
    for (int v = 0; v < MAXS; v++)
        k->f[v] = f, k->b[v] = b, k->w[v] = w;
    k->c.f_s = k->f, k->c.b_s = k->b, k->c.w_s = k->w;
    k->c.act_bytes = k->act, k->c.held_bytes = k->held;
}

static struct mp_sim_result res; /* 16 KiB: not on the stack */

static double sim(enum mp_sched_kind kind, int P, int V, int M, const struct costs *k)
{
    struct mp_sched s;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_sched_make(&s, kind, P, V, M, &err) || mp_sim_run(&s, &k->c, &res, NULL, &err))
        fail_msg("%s P=%d V=%d M=%d: %s", mp_sched_name(kind), P, V, M, err.msg);
    mp_sched_free(&s);
    return res.step_s;
}

static void test_gpipe_and_1f1b_match_the_closed_forms(void **state)
{
    (void)state;
    struct costs k;
    equal_costs(&k, 1, 1, 1);
    enum mp_sched_kind kinds[] = {MP_SCHED_GPIPE, MP_SCHED_1F1B};
    for (int i = 0; i < 2; i++)
        for (int P = 1; P <= 5; P++)
            for (int M = 1; M <= 9; M++) {
                double step = sim(kinds[i], P, 1, M, &k);
                assert_close(step, (M + P - 1) * 3.0, 1e-9);
                assert_close(res.bubble, (P - 1.0) / (M + P - 1.0), 1e-9);
                assert_close(res.busy_s[P - 1], 3.0 * M, 1e-9);
            }
}

static void test_interleaving_shrinks_the_bubble_toward_the_megatron_form(void **state)
{
    (void)state;
    for (int P = 2; P <= 4; P++)
        for (int V = 2; V <= 3; V++)
            for (int M = P; M <= 2 * P + 1; M++) {
                struct costs k;
                equal_costs(&k, 1, 1, 1);
                sim(MP_SCHED_1F1B, P, 1, M, &k);
                double b1 = res.bubble;
                equal_costs(&k, 1.0 / V, 1.0 / V, 1.0 / V); /* same model cut into V chunks */
                sim(MP_SCHED_INTERLEAVED, P, V, M, &k);
                double ideal = (P - 1.0) / (V * M + P - 1.0);
                if (!(res.bubble < b1 && res.bubble > 0.99 * ideal && res.bubble < 1.1 * ideal))
                    fail_msg("P=%d V=%d M=%d: bubble %.4f (1f1b %.4f, ideal %.4f)", P, V, M,
                             res.bubble, b1, ideal);
            }
}

static void test_zb1_is_strictly_faster_than_1f1b(void **state)
{
    (void)state;
    struct costs k;
    equal_costs(&k, 1, 1, 1);
    for (int P = 2; P <= 5; P++)
        for (int M = P; M <= 2 * P + 1; M++) {
            double t1 = sim(MP_SCHED_1F1B, P, 1, M, &k), tz = sim(MP_SCHED_ZB1, P, 1, M, &k);
            if (!(tz < t1))
                fail_msg("P=%d M=%d: zb1 %.3f not below 1f1b %.3f", P, M, tz, t1);
        }
}

/* The same model cut into 2P half-stages in a V: faster than zb1 for every M, and for M >= 2P
 * with under a third of zb1's bubble (the W passes fill what 1F1B and zb1 leave idle). */
static void test_zbv_beats_zb1_and_nearly_closes_the_bubble(void **state)
{
    (void)state;
    struct costs whole, half;
    equal_costs(&whole, 1, 1, 1);
    equal_costs(&half, 0.5, 0.5, 0.5);
    for (int P = 2; P <= 5; P++)
        for (int M = 1; M <= 2 * P + 2; M++) {
            double tz = sim(MP_SCHED_ZB1, P, 1, M, &whole), bz = res.bubble;
            double tv = sim(MP_SCHED_ZBV, P, 2, M, &half), bv = res.bubble;
            assert_close(res.busy_s[0], 3.0 * M, 1e-9); /* same work per rank as one stage */
            if (!(tv < tz) || (M >= 2 * P && !(bv < bz / 3)))
                fail_msg("P=%d M=%d: zbv %.3f (bubble %.4f), zb1 %.3f (bubble %.4f)", P, M, tv,
                         bv, tz, bz);
        }
}

/* In the V a message crosses each link twice each way (down and back up through chunk 0, then
 * down and back up through chunk 1): P = 2, M = 1, unit passes, a W filling rank 0's wait. */
static void test_zbv_messages_cross_the_links_of_the_V(void **state)
{
    (void)state;
    struct costs k;
    equal_costs(&k, 1, 1, 1);
    double lat[4] = {0, 0.25, 0.75, 0}, bw[4] = {0, 0, 0, 0}; /* 0 -> 1 fast, 1 -> 0 slow */
    k.c.link_latency_s = lat;
    k.c.link_bandwidth_Bps = bw;
    assert_close(sim(MP_SCHED_ZBV, 2, 2, 1, &k), 9.0 + 2 * (0.25 + 0.75), 1e-9);
}

static void test_link_latency_and_bandwidth_add_once_per_hop(void **state)
{
    (void)state;
    struct costs k;
    equal_costs(&k, 1, 1, 1);
    k.c.latency_s = 0.5;
    /* P = 2, M = 1: one activation hop and one gradient hop lie on the critical path. */
    assert_close(sim(MP_SCHED_1F1B, 2, 1, 1, &k), 6.0 + 2 * 0.5, 1e-9);
    k.act[0] = 2e6;
    k.c.bandwidth_Bps = 1e9;
    assert_close(sim(MP_SCHED_1F1B, 2, 1, 1, &k), 6.0 + 2 * (0.5 + 2e-3), 1e-9);
    double lat[4] = {0, 0.25, 0.75, 0}; /* 0 -> 1 fast, 1 -> 0 slow */
    double bw[4] = {0, 2e9, 1e9, 0};
    k.c.link_latency_s = lat;
    k.c.link_bandwidth_Bps = bw;
    assert_close(sim(MP_SCHED_1F1B, 2, 1, 1, &k), 6.0 + 0.25 + 1e-3 + 0.75 + 2e-3, 1e-9);
}

/* Where the receiver copies (ranks of one host): a receiver that waits pays what it did before
 * (latency, then the bytes); one that comes late to a message long sent pays the bytes again,
 * as Open MPI's single copy runs at its wait. The copy is not busy time. */
static void test_a_late_receiver_copies_the_bytes_itself(void **state)
{
    (void)state;
    struct costs k;
    equal_costs(&k, 1, 1, 1);
    k.c.latency_s = 0.5;
    k.act[0] = 2e6;
    k.c.bandwidth_Bps = 1e9;
    double travels = sim(MP_SCHED_1F1B, 2, 1, 1, &k);
    k.c.recv_copy = 1;
    assert_close(sim(MP_SCHED_1F1B, 2, 1, 1, &k), travels, 1e-9); /* both receivers wait */
    /* GPipe, M = 2, 0.1 s of bytes each way: rank 1 takes micro-batch 1's activation after its
     * F of micro-batch 0, long after it was sent, and rank 0 the second gradient after its B and
     * W of the first: each 0.1 s on the critical path, where both travelled meanwhile before. */
    k.c.latency_s = 0, k.act[0] = 1e8, k.c.recv_copy = 0;
    double before = sim(MP_SCHED_GPIPE, 2, 1, 2, &k), busy1 = res.busy_s[1];
    k.c.recv_copy = 1;
    assert_close(sim(MP_SCHED_GPIPE, 2, 1, 2, &k), before + 0.2, 1e-9);
    assert_close(res.busy_s[1], busy1, 1e-12);
    /* A matrix overrides recv_copy pair by pair: none here, as between hosts. */
    unsigned char none[4] = {0, 0, 0, 0};
    k.c.link_recv_copy = none;
    assert_close(sim(MP_SCHED_GPIPE, 2, 1, 2, &k), before, 1e-9);
}

static void test_send_overhead_is_busy_time_of_the_sender(void **state)
{
    (void)state;
    struct costs k;
    equal_costs(&k, 1, 1, 1);
    k.c.send_overhead_s = 0.125;
    k.c.step_s = 0.5;
    sim(MP_SCHED_1F1B, 2, 1, 1, &k);
    assert_close(res.busy_s[0], 3.0 + 0.125 + 0.5, 1e-9);
    assert_close(res.busy_s[1], 3.0 + 0.125 + 0.5, 1e-9);
    assert_close(res.step_s, 6.0 + 2 * 0.125 + 0.5, 1e-9);
}

/* A weight packed on a stage's first micro-batch and kept for the rest: each stage's first F, B and
 * W of the step cost their extra once, not once per micro-batch; on one rank the step grows by
 * exactly the extras, on P ranks by at least one F extra (the fill waits for it) and at most P. */
static void test_first_pass_extras_are_paid_once_per_stage(void **state)
{
    (void)state;
    static double ff[MAXS], bf[MAXS], wf[MAXS];
    for (int v = 0; v < MAXS; v++)
        ff[v] = 0.5, bf[v] = 0.25, wf[v] = 0.125;
    enum mp_sched_kind kinds[] = {MP_SCHED_GPIPE, MP_SCHED_1F1B, MP_SCHED_ZB1};
    for (int i = 0; i < 3; i++)
        for (int P = 1; P <= 4; P++)
            for (int M = 1; M <= 6; M++) {
                struct costs k;
                equal_costs(&k, 1, 1, 1);
                double plain = sim(kinds[i], P, 1, M, &k);
                k.c.f_first_s = ff, k.c.b_first_s = bf, k.c.w_first_s = wf;
                double step = sim(kinds[i], P, 1, M, &k);
                for (int r = 0; r < P; r++)
                    assert_close(res.busy_s[r], 3.0 * M + 0.875, 1e-9);
                if (P == 1)
                    assert_close(step, plain + 0.875, 1e-9);
                if (step < plain + 0.5 - 1e-9 || step > plain + P * 0.875 + 1e-9)
                    fail_msg("%s P=%d M=%d: step %g against %g without extras",
                             mp_sched_name(kinds[i]), P, M, step, plain);
            }
}

static void test_deadlocked_lists_are_reported(void **state)
{
    (void)state;
    struct mp_sched s;
    struct costs k;
    struct mp_err err;
    equal_costs(&k, 1, 1, 1);
    mp_err_clear(&err);
    assert_int_equal(mp_sched_alloc(&s, MP_SCHED_1F1B, 2, 1, 1), 0);
    static const struct mp_action r0[] = {{MP_ACT_F, 0, 0}, {MP_ACT_RECV_GRAD, 0, 0},
                                          {MP_ACT_SEND_ACT, 0, 0}, {MP_ACT_B, 0, 0},
                                          {MP_ACT_W, 0, 0}, {MP_ACT_STEP, -1, -1}};
    static const struct mp_action r1[] = {{MP_ACT_RECV_ACT, 0, 0}, {MP_ACT_F, 0, 0},
                                          {MP_ACT_B, 0, 0}, {MP_ACT_W, 0, 0},
                                          {MP_ACT_SEND_GRAD, 0, 0}, {MP_ACT_STEP, -1, -1}};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(mp_sched_push(&s, 0, r0[i].kind, r0[i].mb, r0[i].chunk), 0);
        assert_int_equal(mp_sched_push(&s, 1, r1[i].kind, r1[i].mb, r1[i].chunk), 0);
    }
    assert_int_equal(mp_sim_run(&s, &k.c, &res, NULL, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    assert_non_null(strstr(err.msg, "rank 0 action 1 (RECV_GRAD mb 0 chunk 0)"));
    assert_non_null(strstr(err.msg, "deadlock"));
    mp_sched_free(&s);
}

static void test_peak_memory_1f1b_flat_gpipe_linear_zbv_as_1f1b(void **state)
{
    (void)state;
    struct costs k;
    equal_costs(&k, 1, 1, 1);
    for (int v = 0; v < MAXS; v++)
        k.held[v] = 10;
    for (int M = 2; M <= 8; M += 2) {
        sim(MP_SCHED_1F1B, 2, 1, M, &k);
        assert_close(res.peak_act_bytes[0], 20, 1e-9);
        assert_close(res.peak_act_bytes[1], 10, 1e-9);
        sim(MP_SCHED_GPIPE, 2, 1, M, &k);
        assert_close(res.peak_act_bytes[0], 10.0 * M, 1e-9);
        assert_close(res.max_peak_act_bytes, 10.0 * M, 1e-9);
        sim(MP_SCHED_ZB1, 2, 1, M, &k);
        assert_true(res.peak_act_bytes[0] <= 20 + 1e-9);
    }
    /* zbv's chunks are half-stages (half the held bytes): its peak is 1F1B's, on every rank. */
    struct costs h;
    equal_costs(&h, 0.5, 0.5, 0.5);
    for (int v = 0; v < MAXS; v++)
        h.held[v] = 5;
    for (int P = 2; P <= 4; P++)
        for (int M = 1; M <= 2 * P + 1; M++) {
            sim(MP_SCHED_1F1B, P, 1, M, &k);
            double one = res.max_peak_act_bytes;
            sim(MP_SCHED_ZBV, P, 2, M, &h);
            if (!(res.max_peak_act_bytes <= one + 1e-9))
                fail_msg("P=%d M=%d: zbv holds %.1f, 1f1b %.1f", P, M, res.max_peak_act_bytes,
                         one);
        }
    /* A slow link makes the sender hold its outgoing activation until delivery. */
    k.act[0] = 100;
    k.c.latency_s = 0.5;
    sim(MP_SCHED_1F1B, 2, 1, 1, &k);
    assert_close(res.peak_act_bytes[0], 10 + 100, 1e-9);
}

static void test_trace_gets_one_event_per_compute_action(void **state)
{
    (void)state;
    struct mp_sched s;
    struct mp_trace t;
    struct costs k;
    struct mp_err err;
    equal_costs(&k, 1, 1, 1);
    assert_int_equal(mp_sched_make(&s, MP_SCHED_INTERLEAVED, 2, 2, 3, &err), 0);
    mp_trace_init(&t, 2);
    assert_int_equal(mp_sim_run(&s, &k.c, &res, &t, &err), 0);
    int n_f = 0, n_w = 0, n_step = 0;
    for (size_t i = 0; i < t.n; i++) {
        n_f += t.ev[i].kind == MP_ACT_F;
        n_w += t.ev[i].kind == MP_ACT_W;
        n_step += t.ev[i].kind == MP_ACT_STEP;
        assert_true(t.ev[i].ts + t.ev[i].dur <= res.step_s + 1e-9);
    }
    assert_int_equal(n_f, 3 * 4);
    assert_int_equal(n_w, 3 * 4);
    assert_int_equal(n_step, 2);
    mp_trace_free(&t);
    mp_sched_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpipe_and_1f1b_match_the_closed_forms),
        cmocka_unit_test(test_interleaving_shrinks_the_bubble_toward_the_megatron_form),
        cmocka_unit_test(test_zb1_is_strictly_faster_than_1f1b),
        cmocka_unit_test(test_zbv_beats_zb1_and_nearly_closes_the_bubble),
        cmocka_unit_test(test_zbv_messages_cross_the_links_of_the_V),
        cmocka_unit_test(test_link_latency_and_bandwidth_add_once_per_hop),
        cmocka_unit_test(test_a_late_receiver_copies_the_bytes_itself),
        cmocka_unit_test(test_send_overhead_is_busy_time_of_the_sender),
        cmocka_unit_test(test_first_pass_extras_are_paid_once_per_stage),
        cmocka_unit_test(test_deadlocked_lists_are_reported),
        cmocka_unit_test(test_peak_memory_1f1b_flat_gpipe_linear_zbv_as_1f1b),
        cmocka_unit_test(test_trace_gets_one_event_per_compute_action),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
