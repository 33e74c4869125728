/* Claims about the schedule generators and the validator (engine/pipeline/mp_sched.c, mp_sched_check.c):
 * every generator yields valid lists for any P, V, M; each chunk runs F, B, W in micro-batch
 * order; in-flight peaks match 1F1B/GPipe theory; and hand-broken lists are each rejected with
 * the rank and the action in the message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mp_sched.h"

/* Builds rank lists from compact text, one string per rank: "F0 SA0 RG0 B0.1 W0 STEP", where
 * SA/RA/SG/RG are SEND_ACT/RECV_ACT/SEND_GRAD/RECV_GRAD and ".c" gives the chunk (default 0). */
static void build(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M, ...)
{
    static const char *const tok[] = {"F", "B", "W", "SA", "RA", "SG", "RG", "STEP"};
    assert_int_equal(mp_sched_alloc(s, kind, P, V, M), 0);
    va_list ap;
    va_start(ap, M);
    for (int r = 0; r < P; r++) {
        char buf[2048];
        snprintf(buf, sizeof buf, "%s", va_arg(ap, const char *));
        for (char *t = strtok(buf, " "); t; t = strtok(NULL, " ")) {
            int kind_i = -1, mb = -1, chunk = 0;
            for (int k = MP_ACT_COUNT - 1; k >= 0 && kind_i < 0; k--) /* "SA" before "S..." */
                if (strncmp(t, tok[k], strlen(tok[k])) == 0)
                    kind_i = k;
            assert_true(kind_i >= 0);
            if (kind_i == MP_ACT_STEP)
                chunk = -1;
            else
                sscanf(t + strlen(tok[kind_i]), "%d.%d", &mb, &chunk);
            assert_int_equal(mp_sched_push(s, r, (enum mp_act_kind)kind_i, mb, chunk), 0);
        }
    }
    va_end(ap);
}

/* Validation must fail with MP_ERR_INPUT and a message containing both fragments. */
static void expect_invalid(struct mp_sched *s, const char *where, const char *what)
{
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_sched_validate(s, NULL, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    if (!strstr(err.msg, where) || !strstr(err.msg, what))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", err.msg, where, what);
    mp_sched_free(s);
}

static void make_ok(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M,
                    struct mp_sched_report *rep)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_sched_make(s, kind, P, V, M, &err) || mp_sched_validate(s, rep, &err))
        fail_msg("%s P=%d V=%d M=%d: %s", mp_sched_name(kind), P, V, M, err.msg);
}

/* Per rank and chunk, F, B and W each appear in increasing micro-batch order. */
static void assert_chunk_mb_order(const struct mp_sched *s)
{
    for (int r = 0; r < s->P; r++) {
        int last[3][8];
        memset(last, -1, sizeof last);
        for (size_t i = 0; i < s->n_acts[r]; i++) {
            const struct mp_action *a = &s->acts[r][i];
            if (a->kind > MP_ACT_W)
                continue;
            assert_true(a->mb > last[a->kind][a->chunk]);
            last[a->kind][a->chunk] = a->mb;
        }
    }
}

static void test_every_generator_validates_for_any_P_M_V(void **state)
{
    (void)state;
    for (int kind = 0; kind < MP_SCHED_COUNT; kind++) {
        for (int P = 1; P <= 5; P++) {
            int Ms[] = {1, 2, 3, P, 2 * P + 1, 8};
            int maxV = kind == MP_SCHED_INTERLEAVED ? 3 : 1;
            for (int mi = 0; mi < 6; mi++) {
                for (int V = 1; V <= maxV; V++) {
                    struct mp_sched s;
                    make_ok(&s, (enum mp_sched_kind)kind, P, V, Ms[mi], NULL);
                    assert_chunk_mb_order(&s);
                    mp_sched_free(&s);
                }
            }
        }
    }
}

static void test_interleaved_validates_for_wide_range_of_M_not_multiple_of_P(void **state)
{
    (void)state;
    for (int P = 2; P <= 6; P++)
        for (int V = 2; V <= 4; V++)
            for (int M = 1; M <= 17; M++) {
                struct mp_sched s;
                make_ok(&s, MP_SCHED_INTERLEAVED, P, V, M, NULL);
                mp_sched_free(&s);
            }
}

static void test_1f1b_peak_inflight_is_min_of_P_minus_r_and_M(void **state)
{
    (void)state;
    for (int P = 1; P <= 5; P++)
        for (int M = 1; M <= 9; M++) {
            struct mp_sched s;
            struct mp_sched_report rep;
            make_ok(&s, MP_SCHED_1F1B, P, 1, M, &rep);
            for (int r = 0; r < P; r++)
                assert_int_equal(rep.peak_inflight[r], P - r < M ? P - r : M);
            mp_sched_free(&s);
        }
}

static void test_gpipe_rank0_holds_all_micro_batches(void **state)
{
    (void)state;
    for (int M = 1; M <= 9; M++) {
        struct mp_sched s;
        struct mp_sched_report rep;
        make_ok(&s, MP_SCHED_GPIPE, 3, 1, M, &rep);
        assert_int_equal(rep.peak_inflight[0], M);
        mp_sched_free(&s);
    }
}

static void test_zb1_never_holds_more_than_1f1b_per_rank(void **state)
{
    (void)state;
    for (int P = 1; P <= 5; P++)
        for (int M = 1; M <= 11; M++) {
            struct mp_sched z, o;
            struct mp_sched_report rz, ro;
            make_ok(&z, MP_SCHED_ZB1, P, 1, M, &rz);
            make_ok(&o, MP_SCHED_1F1B, P, 1, M, &ro);
            for (int r = 0; r < P; r++)
                assert_true(rz.peak_inflight[r] <= ro.peak_inflight[r]);
            mp_sched_free(&z);
            mp_sched_free(&o);
        }
}

static void test_interleaved_with_one_chunk_is_1f1b(void **state)
{
    (void)state;
    for (int P = 1; P <= 5; P++)
        for (int M = 1; M <= 9; M++) {
            struct mp_sched a, b;
            make_ok(&a, MP_SCHED_INTERLEAVED, P, 1, M, NULL);
            make_ok(&b, MP_SCHED_1F1B, P, 1, M, NULL);
            for (int r = 0; r < P; r++) {
                assert_int_equal(a.n_acts[r], b.n_acts[r]);
                assert_memory_equal(a.acts[r], b.acts[r], a.n_acts[r] * sizeof *a.acts[r]);
            }
            mp_sched_free(&a);
            mp_sched_free(&b);
        }
}

/* Non-zb schedules: W right after its B; zb1 and zbv: the gradient leaves right after B. STEP is
 * last; one rank has no communication at all. */
static void test_lists_follow_the_emission_rules(void **state)
{
    (void)state;
    for (int kind = 0; kind < MP_SCHED_COUNT; kind++)
        for (int P = 1; P <= 4; P++) {
            struct mp_sched s;
            make_ok(&s, (enum mp_sched_kind)kind, P, 2, 5, NULL);
            for (int r = 0; r < P; r++) {
                const struct mp_action *a = s.acts[r];
                size_t n = s.n_acts[r];
                assert_int_equal(a[n - 1].kind, MP_ACT_STEP);
                for (size_t i = 0; i + 1 < n; i++) {
                    if (P == 1)
                        assert_true(a[i].kind <= MP_ACT_W);
                    if (a[i].kind == MP_ACT_B && kind != MP_SCHED_ZB1 && kind != MP_SCHED_ZBV)
                        assert_int_equal(a[i + 1].kind, MP_ACT_W);
                    if (a[i].kind == MP_ACT_RECV_ACT)
                        assert_int_equal(a[i + 1].kind, MP_ACT_F);
                    if (a[i].kind == MP_ACT_RECV_GRAD)
                        assert_int_equal(a[i + 1].kind, MP_ACT_B);
                }
            }
            mp_sched_free(&s);
        }
}

/* The V: rank r holds virtual stages r and 2P - 1 - r, every virtual stage exactly once, and the
 * map between (rank, chunk) and virtual stage goes both ways. */
static void test_zbv_places_two_chunks_per_rank_in_a_V(void **state)
{
    (void)state;
    for (int P = 1; P <= 6; P++) {
        int seen[12] = {0};
        for (int r = 0; r < P; r++) {
            assert_int_equal(mp_vstage_of(MP_VPLACE_VEE, r, 0, P), r);
            assert_int_equal(mp_vstage_of(MP_VPLACE_VEE, r, 1, P), 2 * P - 1 - r);
            for (int c = 0; c < 2; c++) {
                int v = mp_vstage_of(MP_VPLACE_VEE, r, c, P);
                assert_int_equal(mp_vstage_rank(MP_VPLACE_VEE, v, P), r);
                assert_int_equal(mp_vstage_chunk(v, P), c);
                seen[v]++;
            }
        }
        for (int v = 0; v < 2 * P; v++)
            assert_int_equal(seen[v], 1);
    }
    struct mp_sched s;
    struct mp_err err;
    mp_err_clear(&err);
    make_ok(&s, MP_SCHED_ZBV, 3, 1, 4, NULL); /* zbv runs 2 chunks whatever V says */
    assert_int_equal(s.V, 2);
    assert_int_equal(s.place, MP_VPLACE_VEE);
    mp_sched_free(&s);
    assert_int_equal(mp_sched_alloc(&s, MP_SCHED_ZBV, 2, 3, 4), -1);
}

/* The rank at the turn of the V (P - 1) hands chunk 0's output to chunk 1 in memory: no message
 * between its chunks; rank 0 holds both ends of the model and messages go r -> r + 1 on the way
 * down and r + 1 -> r on the way back. */
static void test_zbv_messages_follow_the_V(void **state)
{
    (void)state;
    for (int P = 2; P <= 5; P++) {
        struct mp_sched s;
        make_ok(&s, MP_SCHED_ZBV, P, 2, 2 * P + 1, NULL);
        for (int r = 0; r < P; r++)
            for (size_t i = 0; i < s.n_acts[r]; i++) {
                const struct mp_action *a = &s.acts[r][i];
                int down = a->chunk == 0; /* chunk 0 runs down the ranks, chunk 1 back up */
                if (a->kind == MP_ACT_SEND_ACT || a->kind == MP_ACT_RECV_GRAD)
                    assert_true(down ? r < P - 1 : r > 0);
                if (a->kind == MP_ACT_RECV_ACT || a->kind == MP_ACT_SEND_GRAD)
                    assert_true(down ? r > 0 : r < P - 1);
            }
        mp_sched_free(&s);
    }
}

/* Memory: 1F1B's budget in half-stages, 2 min(P, M) chunk-micro-batches on every rank. */
static void test_zbv_holds_at_most_2_min_P_M_chunk_micro_batches(void **state)
{
    (void)state;
    for (int P = 1; P <= 6; P++)
        for (int M = 1; M <= 13; M++) {
            struct mp_sched s;
            struct mp_sched_report rep;
            make_ok(&s, MP_SCHED_ZBV, P, 2, M, &rep);
            for (int r = 0; r < P; r++)
                if (rep.peak_inflight[r] > 2 * (P < M ? P : M))
                    fail_msg("P=%d M=%d rank %d holds %d", P, M, r, rep.peak_inflight[r]);
            mp_sched_free(&s);
        }
}

/* W is split from B and moved: some W does not follow its own B, on every rank of a pipeline. */
static void test_zbv_defers_weight_gradients(void **state)
{
    (void)state;
    for (int P = 2; P <= 4; P++) {
        struct mp_sched s;
        make_ok(&s, MP_SCHED_ZBV, P, 2, 2 * P, NULL);
        for (int r = 0; r < P; r++) {
            int deferred = 0;
            for (size_t i = 0; i < s.n_acts[r]; i++) {
                const struct mp_action *a = &s.acts[r][i];
                if (a->kind != MP_ACT_W)
                    continue;
                size_t j = i;
                while (j > 0 && s.acts[r][j - 1].kind == MP_ACT_SEND_GRAD)
                    j--;
                const struct mp_action *b = j > 0 ? &s.acts[r][j - 1] : NULL;
                deferred |= !b || b->kind != MP_ACT_B || b->mb != a->mb || b->chunk != a->chunk;
            }
            if (!deferred)
                fail_msg("P=%d rank %d: every W right after its B", P, r);
        }
        mp_sched_free(&s);
    }
}

/* Recomputation by segments (mp_stage.h) needs each B's W right after it: so the non-split kinds
 * on every rank and chunk, and never zb1 or zbv (their W fill bubbles later). */
static void test_w_follows_b_exactly_for_the_non_split_kinds(void **state)
{
    (void)state;
    static const struct { enum mp_sched_kind kind; int V, follows; } cases[] = {
        {MP_SCHED_GPIPE, 1, 1}, {MP_SCHED_1F1B, 1, 1}, {MP_SCHED_INTERLEAVED, 2, 1},
        {MP_SCHED_INTERLEAVED, 3, 1}, {MP_SCHED_ZB1, 1, 0}, {MP_SCHED_ZBV, 2, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int P = 2; P <= 4; P++) {
            int M = 2 * P + 1, V = mp_sched_chunks(cases[k].kind, cases[k].V), any_not = 0;
            struct mp_sched s;
            make_ok(&s, cases[k].kind, P, V, M, NULL);
            for (int r = 0; r < P; r++)
                for (int c = 0; c < V; c++) {
                    int f = mp_sched_w_follows_b(&s, r, c);
                    if (cases[k].follows && !f)
                        fail_msg("%s P=%d rank %d chunk %d: a W not right after its B",
                                 mp_sched_name(cases[k].kind), P, r, c);
                    any_not |= !f;
                }
            if (!cases[k].follows && !any_not)
                fail_msg("%s P=%d: every W right after its B", mp_sched_name(cases[k].kind), P);
            mp_sched_free(&s);
        }
    }
}

static void test_names_round_trip_and_bad_arguments_are_usage_errors(void **state)
{
    (void)state;
    for (int k = 0; k < MP_SCHED_COUNT; k++) {
        enum mp_sched_kind got;
        assert_int_equal(mp_sched_parse(mp_sched_name((enum mp_sched_kind)k), &got), 0);
        assert_int_equal(got, k);
    }
    enum mp_sched_kind got;
    assert_int_equal(mp_sched_parse("2f2b", &got), -1);
    assert_string_equal(mp_act_name(MP_ACT_RECV_GRAD), "RECV_GRAD");
    struct mp_sched s;
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_sched_make(&s, MP_SCHED_1F1B, 2, 1, 0, &err), -1);
    assert_int_equal(err.code, MP_ERR_USAGE);
    assert_int_equal(mp_sched_make(&s, MP_SCHED_GPIPE, 0, 1, 4, &err), -1);
    assert_int_equal(mp_sched_make(&s, MP_SCHED_INTERLEAVED, 2, 0, 4, &err), -1);
}

/* ---- hand-broken lists (P = 2, M = 2, 1f1b as the valid baseline) ------------------------ */

#define R0 "F0 SA0 F1 SA1 RG0 B0 W0 RG1 B1 W1 STEP"
#define R1 "RA0 F0 B0 W0 SG0 RA1 F1 B1 W1 SG1 STEP"

static void test_hand_built_baseline_is_valid(void **state)
{
    (void)state;
    struct mp_sched s;
    struct mp_sched_report rep;
    struct mp_err err;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, R0, R1);
    assert_int_equal(mp_sched_validate(&s, &rep, &err), 0);
    assert_int_equal(rep.peak_inflight[0], 2);
    assert_int_equal(rep.peak_inflight[1], 1);
    mp_sched_free(&s);
}

static void test_missing_recv_is_caught_at_the_forward(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, R0, "RA0 F0 B0 W0 SG0 F1 B1 W1 SG1 STEP");
    expect_invalid(&s, "rank 1 action 5 (F mb 1 chunk 0)", "not received");
}

static void test_recv_without_send_names_the_sender_rank(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, "F0 F1 SA1 RG0 B0 W0 RG1 B1 W1 STEP", R1);
    expect_invalid(&s, "rank 1 action 0 (RECV_ACT mb 0 chunk 0)",
                   "no matching SEND_ACT on rank 0");
}

static void test_extra_send_is_caught(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, "F0 SA0 SA0 F1 SA1 RG0 B0 W0 RG1 B1 W1 STEP", R1);
    expect_invalid(&s, "rank 0 action 2 (SEND_ACT mb 0 chunk 0)", "duplicate");
    build(&s, MP_SCHED_1F1B, 2, 1, 2, R0, "RA0 F0 SA0 B0 W0 SG0 RA1 F1 B1 W1 SG1 STEP");
    expect_invalid(&s, "rank 1 action 2 (SEND_ACT mb 0 chunk 0)", "no next stage");
}

static void test_W_before_B_is_caught(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, R0, "RA0 F0 W0 B0 SG0 RA1 F1 B1 W1 SG1 STEP");
    expect_invalid(&s, "rank 1 action 2 (W mb 0 chunk 0)", "W before its B");
}

static void test_B_before_F_is_caught(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, R0, "RA0 B0 F0 W0 SG0 RA1 F1 B1 W1 SG1 STEP");
    expect_invalid(&s, "rank 1 action 1 (B mb 0 chunk 0)", "B before its F");
}

static void test_both_ranks_receiving_first_is_a_deadlock(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 1, "F0 RG0 SA0 B0 W0 STEP", "RA0 F0 B0 W0 SG0 STEP");
    expect_invalid(&s, "rank 0 action 1 (RECV_GRAD mb 0 chunk 0)", "deadlock");
}

static void test_missing_STEP_is_caught(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, R0, "RA0 F0 B0 W0 SG0 RA1 F1 B1 W1 SG1");
    expect_invalid(&s, "rank 1 action 9 (SEND_GRAD mb 1 chunk 0)", "STEP");
    build(&s, MP_SCHED_1F1B, 2, 1, 2, "F0 SA0 STEP F1 SA1 RG0 B0 W0 RG1 B1 W1 STEP", R1);
    expect_invalid(&s, "rank 0 action 2 (STEP)", "last");
}

static void test_duplicate_F_is_caught(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, "F0 SA0 F0 F1 SA1 RG0 B0 W0 RG1 B1 W1 STEP", R1);
    expect_invalid(&s, "rank 0 action 2 (F mb 0 chunk 0)", "duplicate");
}

static void test_W_out_of_micro_batch_order_is_caught(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_ZB1, 2, 1, 2, R0, "RA0 F0 B0 SG0 RA1 F1 B1 SG1 W1 W0 STEP");
    expect_invalid(&s, "rank 1 action 9 (W mb 0 chunk 0)", "out of micro-batch order");
}

static void test_missing_backward_is_reported_at_end_of_list(void **state)
{
    (void)state;
    struct mp_sched s;
    build(&s, MP_SCHED_1F1B, 2, 1, 2, "F0 SA0 F1 SA1 RG0 B0 W0 RG1 B1 STEP", R1);
    expect_invalid(&s, "rank 0 action 10 (end of list)", "no W for mb 1 chunk 0");
}

static void test_single_rank_needs_no_messages_and_rejects_them(void **state)
{
    (void)state;
    struct mp_sched s;
    struct mp_err err;
    build(&s, MP_SCHED_INTERLEAVED, 1, 2, 1, "F0 F0.1 B0.1 W0.1 B0 W0 STEP");
    assert_int_equal(mp_sched_validate(&s, NULL, &err), 0);
    mp_sched_free(&s);
    build(&s, MP_SCHED_INTERLEAVED, 1, 2, 1, "F0 F0.1 B0 W0 B0.1 W0.1 STEP");
    expect_invalid(&s, "rank 0 action 2 (B mb 0 chunk 0)", "B of chunk 1 not run");
    build(&s, MP_SCHED_1F1B, 1, 1, 1, "F0 SA0 B0 W0 STEP");
    expect_invalid(&s, "rank 0 action 1 (SEND_ACT mb 0 chunk 0)", "one rank");
}

/* zbv, P = 2, M = 1, by hand: rank 1 turns the V (virtual stages 1 and 2) in memory. */
#define V0 "F0 SA0 RA0.1 F0.1 B0.1 SG0.1 RG0 B0 W0.1 W0 STEP"
#define V1 "RA0 F0 F0.1 SA0.1 RG0.1 B0.1 B0 SG0 W0.1 W0 STEP"

static void test_zbv_hand_built_turn_is_valid_and_a_message_across_it_is_not(void **state)
{
    (void)state;
    struct mp_sched s;
    struct mp_err err;
    struct mp_sched_report rep;
    build(&s, MP_SCHED_ZBV, 2, 2, 1, V0, V1);
    assert_int_equal(mp_sched_validate(&s, &rep, &err), 0);
    assert_int_equal(rep.peak_inflight[1], 2);
    mp_sched_free(&s);
    build(&s, MP_SCHED_ZBV, 2, 2, 1, V0,
          "RA0 F0 SA0 RA0.1 F0.1 SA0.1 RG0.1 B0.1 B0 SG0 W0.1 W0 STEP");
    expect_invalid(&s, "rank 1 action 2 (SEND_ACT mb 0 chunk 0)", "share rank 1");
    build(&s, MP_SCHED_ZBV, 2, 2, 1, V0, "RA0 F0.1 F0 SA0.1 RG0.1 B0.1 B0 SG0 W0.1 W0 STEP");
    expect_invalid(&s, "rank 1 action 1 (F mb 0 chunk 1)", "F of chunk 0 not run");
    build(&s, MP_SCHED_ZBV, 2, 2, 1, V0, "RA0 F0 F0.1 SA0.1 RG0.1 B0 B0.1 SG0 W0.1 W0 STEP");
    expect_invalid(&s, "rank 1 action 5 (B mb 0 chunk 0)", "B of chunk 1 not run");
    /* Rank 0's chunk 1 takes its input from rank 1, not from its own chunk 0. */
    build(&s, MP_SCHED_ZBV, 2, 2, 1, "F0 SA0 F0.1 B0.1 SG0.1 RG0 B0 W0.1 W0 STEP", V1);
    expect_invalid(&s, "rank 0 action 2 (F mb 0 chunk 1)", "not received");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_generator_validates_for_any_P_M_V),
        cmocka_unit_test(test_w_follows_b_exactly_for_the_non_split_kinds),
        cmocka_unit_test(test_interleaved_validates_for_wide_range_of_M_not_multiple_of_P),
        cmocka_unit_test(test_1f1b_peak_inflight_is_min_of_P_minus_r_and_M),
        cmocka_unit_test(test_gpipe_rank0_holds_all_micro_batches),
        cmocka_unit_test(test_zb1_never_holds_more_than_1f1b_per_rank),
        cmocka_unit_test(test_interleaved_with_one_chunk_is_1f1b),
        cmocka_unit_test(test_lists_follow_the_emission_rules),
        cmocka_unit_test(test_zbv_places_two_chunks_per_rank_in_a_V),
        cmocka_unit_test(test_zbv_messages_follow_the_V),
        cmocka_unit_test(test_zbv_holds_at_most_2_min_P_M_chunk_micro_batches),
        cmocka_unit_test(test_zbv_defers_weight_gradients),
        cmocka_unit_test(test_names_round_trip_and_bad_arguments_are_usage_errors),
        cmocka_unit_test(test_hand_built_baseline_is_valid),
        cmocka_unit_test(test_missing_recv_is_caught_at_the_forward),
        cmocka_unit_test(test_recv_without_send_names_the_sender_rank),
        cmocka_unit_test(test_extra_send_is_caught),
        cmocka_unit_test(test_W_before_B_is_caught),
        cmocka_unit_test(test_B_before_F_is_caught),
        cmocka_unit_test(test_both_ranks_receiving_first_is_a_deadlock),
        cmocka_unit_test(test_missing_STEP_is_caught),
        cmocka_unit_test(test_duplicate_F_is_caught),
        cmocka_unit_test(test_W_out_of_micro_batch_order_is_caught),
        cmocka_unit_test(test_missing_backward_is_reported_at_end_of_list),
        cmocka_unit_test(test_single_rank_needs_no_messages_and_rejects_them),
        cmocka_unit_test(test_zbv_hand_built_turn_is_valid_and_a_message_across_it_is_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
