/* Claims about partitioner/mp_plan.c: a plan survives write → read unchanged, and every malformed
 * plan (missing or mistyped keys, stages that do not tile the layers, P * V != stages, unknown
 * schedule, broken JSON) is rejected as MP_ERR_INPUT naming the file and the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_cost.h"
#include "mp_place.h"
#include "mp_plan.h"

static char path[64];

static void make_plan(struct mp_plan *p)
{
    static const char *kinds[] = {"input", "flatten", "dense", "relu", "dense", "softmax_xent"};
    memset(p, 0, sizeof *p);
    snprintf(p->model, sizeof p->model, "models/x.mp");
    snprintf(p->digest, sizeof p->digest, "0123456789abcdef");
    snprintf(p->cost_source, sizeof p->cost_source, "analytic");
    snprintf(p->partition, sizeof p->partition, "optimal");
    p->schedule = MP_SCHED_1F1B, p->P = 2, p->D = 1, p->V = 1, p->M = 4, p->batch = 256;
    p->n_layers = 6, p->n_stages = 2, p->n_ranks = 2, p->bottleneck = 1;
    p->layers = calloc(6, sizeof *p->layers);
    p->stages = calloc(2, sizeof *p->stages);
    p->ranks = calloc(2, sizeof *p->ranks);
    p->link_latency_s = calloc(4, sizeof(double));
    p->link_bandwidth_Bps = calloc(4, sizeof(double));
    for (int i = 0; i < 6; i++) {
        p->layers[i].index = i;
        snprintf(p->layers[i].kind, sizeof p->layers[i].kind, "%s", kinds[i]);
        p->layers[i].fwd_s = 0.001 * i, p->layers[i].bwd_input_s = 0.002 * i;
        p->layers[i].bwd_weight_s = 0.0005 * i;
        p->layers[i].compute_s = 0.0035 * i;
        p->layers[i].param_bytes = 1000u * (size_t)i, p->layers[i].act_bytes_out = 4096;
        p->layers[i].saved_bytes = (size_t)i;
        p->layers[i].pack_s[0] = 1e-4 * i, p->layers[i].pack_s[2] = 2e-4 * i;
    }
    for (int v = 0; v < 2; v++) {
        struct mp_plan_stage *s = &p->stages[v];
        s->first_layer = v ? 3 : 1, s->last_layer = v ? 5 : 2;
        s->ranks[0] = v, s->n_ranks = 1, s->cores[0] = v;
        snprintf(s->host, sizeof s->host, "vm");
        s->compute_s = 0.01 + v, s->act_bytes = 4096, s->param_bytes = 2000;
        s->peak_mem_bytes = 123456789012ull, s->held_bytes = 777, s->held_mb = 2 - v;
        s->send_s = 1e-5, s->pool_dropped = v;
        p->ranks[v].stage = v;
        snprintf(p->ranks[v].host, sizeof p->ranks[v].host, "vm");
        p->ranks[v].core = v, p->ranks[v].pu = v;
        snprintf(p->ranks[v].slot, sizeof p->ranks[v].slot, "0:%d", v);
    }
    for (int i = 0; i < 4; i++)
        p->link_latency_s[i] = 4e-7, p->link_bandwidth_Bps[i] = 1.2e10;
    p->step_s = 0.0737, p->bubble = 0.21, p->samples_per_s = 3473.5, p->oversubscribed = 1;
    p->allreduce_s = 0, p->optim_step_s = 0.005;
}

static void test_plan_round_trips_through_json(void **state)
{
    (void)state;
    struct mp_plan a, b;
    struct mp_err err;
    make_plan(&a);
    assert_int_equal(mp_plan_write(&a, path, &err), 0);
    assert_int_equal(mp_plan_read(&b, path, &err), 0);
    assert_string_equal(a.model, b.model);
    assert_string_equal(a.digest, b.digest);
    assert_int_equal(b.schedule, MP_SCHED_1F1B);
    assert_int_equal(b.P, 2), assert_int_equal(b.D, 1), assert_int_equal(b.V, 1);
    assert_int_equal(b.M, 4), assert_int_equal(b.batch, 256);
    assert_int_equal(b.n_layers, 6), assert_int_equal(b.n_stages, 2),
        assert_int_equal(b.n_ranks, 2);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(a.layers[i].kind, b.layers[i].kind);
        assert_true(a.layers[i].compute_s == b.layers[i].compute_s);
        assert_true(a.layers[i].bwd_input_s == b.layers[i].bwd_input_s);
        assert_int_equal(a.layers[i].param_bytes, b.layers[i].param_bytes);
        assert_int_equal(a.layers[i].saved_bytes, b.layers[i].saved_bytes);
        for (int k = 0; k < 3; k++) /* plans carry 10 significant digits */
            assert_true(fabs(a.layers[i].pack_s[k] - b.layers[i].pack_s[k]) <=
                        1e-9 * a.layers[i].pack_s[k]);
    }
    for (int v = 0; v < 2; v++) {
        assert_int_equal(a.stages[v].first_layer, b.stages[v].first_layer);
        assert_int_equal(a.stages[v].last_layer, b.stages[v].last_layer);
        assert_int_equal(a.stages[v].peak_mem_bytes, b.stages[v].peak_mem_bytes);
        assert_int_equal(a.stages[v].held_mb, b.stages[v].held_mb);
        assert_int_equal(b.stages[v].pool_dropped, v);
        assert_string_equal(a.ranks[v].slot, b.ranks[v].slot);
    }
    assert_true(b.link_bandwidth_Bps[3] == 1.2e10);
    assert_true(b.step_s == a.step_s), assert_true(b.samples_per_s == a.samples_per_s);
    assert_int_equal(b.oversubscribed, 1), assert_int_equal(b.bottleneck, 1);
    assert_string_equal(b.cost_source, "analytic");
    /* Without a rates cache: no key, no price apart, no lean (the keys are not written). */
    assert_string_equal(b.rates_key, ""), assert_int_equal(b.lean_runs, 0);
    assert_true(b.lean == 1.0), assert_true(b.priced_step_s == 0);
    mp_plan_free(&b);
    snprintf(a.rates_key, sizeof a.rates_key, "8d5b2a59c9893011");
    a.priced_step_s = 0.0601, a.lean = 1.125, a.lean_runs = 3;
    assert_int_equal(mp_plan_write(&a, path, &err), 0);
    assert_int_equal(mp_plan_read(&b, path, &err), 0);
    assert_string_equal(b.rates_key, "8d5b2a59c9893011");
    assert_true(b.priced_step_s == 0.0601), assert_true(b.lean == 1.125);
    assert_int_equal(b.lean_runs, 3);
    mp_plan_free(&a);
    mp_plan_free(&b);
}

/* Writes a good plan, lets `edit` break it with JSON Pointer-like edits, and expects rejection
 * with `key` in the message. */
static void expect_rejected(const char *edit, const char *key)
{
    struct mp_plan a, b;
    struct mp_err err;
    mp_err_clear(&err);
    make_plan(&a);
    assert_int_equal(mp_plan_write(&a, path, &err), 0);
    mp_plan_free(&a);
    json_t *root = json_load_file(path, 0, NULL);
    json_t *st = json_object_get(root, "stages"), *ly = json_object_get(root, "layers");
    if (!strcmp(edit, "no digest"))
        json_object_del(root, "digest");
    else if (!strcmp(edit, "P string"))
        json_object_set_new(root, "P", json_string("2"));
    else if (!strcmp(edit, "P 3"))
        json_object_set_new(root, "P", json_integer(3));
    else if (!strcmp(edit, "gap"))
        json_object_set_new(json_array_get(st, 1), "first_layer", json_integer(4));
    else if (!strcmp(edit, "short"))
        json_object_set_new(json_array_get(st, 1), "last_layer", json_integer(4));
    else if (!strcmp(edit, "reversed"))
        json_object_set_new(json_array_get(st, 0), "last_layer", json_integer(0));
    else if (!strcmp(edit, "schedule"))
        json_object_set_new(root, "schedule", json_string("2f2b"));
    else if (!strcmp(edit, "index"))
        json_object_set_new(json_array_get(ly, 2), "index", json_integer(7));
    else if (!strcmp(edit, "kind"))
        json_object_del(json_array_get(ly, 1), "kind");
    else if (!strcmp(edit, "oversub"))
        json_object_set_new(root, "oversubscribed", json_integer(1));
    else if (!strcmp(edit, "M vs D"))
        json_object_set_new(root, "D", json_integer(3));
    else if (!strcmp(edit, "V"))
        json_object_set_new(root, "V", json_integer(2));
    else if (!strcmp(edit, "ranks"))
        json_object_set_new(json_array_get(st, 0), "ranks", json_string("0"));
    else if (!strcmp(edit, "negative"))
        json_object_set_new(json_array_get(st, 0), "param_bytes", json_integer(-5));
    else if (!strcmp(edit, "links"))
        json_object_set_new(root, "link_latency_s", json_array());
    else if (!strcmp(edit, "pack"))
        json_object_set_new(json_array_get(ly, 2), "pack_s", json_pack("[f, f]", 0.0, 0.0));
    else if (!strcmp(edit, "pool"))
        json_object_set_new(json_array_get(st, 0), "pool_dropped", json_integer(1));
    else if (!strcmp(edit, "negative time"))
        json_object_set_new(root, "allreduce_s", json_real(-1));
    else if (!strcmp(edit, "time string"))
        json_object_set_new(root, "optim_step_s", json_string("fast"));
    else if (!strcmp(edit, "negative pass"))
        json_object_set_new(json_array_get(ly, 2), "backward_weight_s", json_real(-0.01));
    else if (!strcmp(edit, "huge pass"))
        json_object_set_new(json_array_get(ly, 2), "forward_s", json_real(1e300));
    else if (!strcmp(edit, "bubble"))
        json_object_set_new(root, "bubble", json_real(1.5));
    else if (!strcmp(edit, "rates_key"))
        json_object_set_new(root, "rates_key", json_string("../../etc/passwd"));
    else if (!strcmp(edit, "lean"))
        json_object_set_new(root, "lean", json_real(7.0));
    else
        fail_msg("unknown edit %s", edit);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
    assert_int_equal(mp_plan_read(&b, path, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    if (!strstr(err.msg, path) || !strstr(err.msg, key))
        fail_msg("%s: expected '%s' and the file in '%s'", edit, key, err.msg);
}

static void test_malformed_plans_are_rejected_naming_the_key(void **state)
{
    (void)state;
    expect_rejected("no digest", "'digest': missing");
    expect_rejected("P string", "'P': not an integer");
    expect_rejected("P 3", "'stages': must have P * V");
    expect_rejected("gap", "'stages[1].first_layer'");
    expect_rejected("short", "last stage must end at the last layer");
    expect_rejected("reversed", "'stages[0].last_layer'");
    expect_rejected("schedule", "'schedule'");
    expect_rejected("index", "layers[2]");
    expect_rejected("kind", "'layers[1].kind': missing");
    expect_rejected("oversub", "'oversubscribed': not a boolean");
    expect_rejected("M vs D", "'M': must be a multiple of D");
    expect_rejected("V", "'V'");
    expect_rejected("ranks", "'stages[0].ranks': not an array");
    expect_rejected("negative", "'stages[0].param_bytes': negative");
    expect_rejected("links", "'link_latency_s'");
    expect_rejected("pool", "'pool_dropped'");
    expect_rejected("pack", "'layers[2].pack_s'");
    /* Times: a negative one, or a string read as 0, made `mpipe sim` print a step of -970 ms,
     * exit 0; an optional key malformed is an error, not its default. */
    expect_rejected("negative time", "'allreduce_s': negative");
    expect_rejected("time string", "'optim_step_s': not a number");
    expect_rejected("negative pass", "'layers[2].backward_weight_s': negative");
    expect_rejected("huge pass", "'layers[2].forward_s': 1e+300 is out of range");
    expect_rejected("bubble", "'bubble': 1.5 is out of range [0, 1]");
    expect_rejected("rates_key", "'rates_key': expected 16 hexadecimal digits");
    expect_rejected("lean", "'lean': 7 is out of range [0.5, 2]");
}

/* The lean of a layout's runs (mp_cost_lean): the median of measured over priced of its newest
 * MP_COST_LEAN_RUNS runs, other layouts and disturbed runs (past 2x or under half) left out, none
 * below MP_COST_LEAN_MIN runs. */
static void test_lean_is_the_median_of_the_layouts_newest_runs(void **state)
{
    (void)state;
    static struct mp_cost_table t;
    const char *dg = "7656e92b37f4ffe5";
    int n = -1;
    memset(&t, 0, sizeof t);
    assert_true(mp_cost_lean(NULL, dg, 1, 2, 256, &n) == 1.0), assert_int_equal(n, 0);
    /* layout (P 1, D 2, batch 256) of dg: ratios 1.5 (oldest), then 3.0 (disturbed), 1.1, 1.2 */
    struct mp_cost_run mk = {.P = 1, .D = 2, .M = 2, .batch = 256, .priced_s = 0.001, .pace = 1};
    snprintf(mk.digest, sizeof mk.digest, "%s", dg);
    double ratios[] = {1.5, 3.0, 1.1};
    for (int i = 0; i < 3; i++)
        t.runs[t.n_runs] = mk, t.runs[t.n_runs++].measured_s = ratios[i] * 0.001;
    /* others: another model, another D, another batch, a pipeline */
    struct mp_cost_run other = mk;
    other.measured_s = 0.0019;
    t.runs[t.n_runs++] = other;
    t.runs[t.n_runs - 1].digest[0] = 'f';
    t.runs[t.n_runs] = other, t.runs[t.n_runs++].D = 1;
    t.runs[t.n_runs] = other, t.runs[t.n_runs++].batch = 128;
    t.runs[t.n_runs] = other, t.runs[t.n_runs++].P = 2;
    /* two that count: 1.5 and 1.1 (3.0 is left out) */
    double q = mp_cost_lean(&t, dg, 1, 2, 256, &n);
    assert_int_equal(n, 2);
    assert_true(fabs(q - 1.3) < 1e-12);
    /* one more, 1.2 over the price at a pace of 1.5 (a slow minute of its cores): 1.2 / 1.5 = 0.8
     * of what they explain; the median of three (0.8, 1.1, 1.5) */
    t.runs[t.n_runs] = mk, t.runs[t.n_runs].pace = 1.5, t.runs[t.n_runs++].measured_s = 1.2 * 0.001;
    q = mp_cost_lean(&t, dg, 1, 2, 256, &n);
    assert_int_equal(n, 3);
    assert_true(fabs(q - 1.1) < 1e-12);
    /* a run without a pace is not counted */
    t.runs[t.n_runs] = mk, t.runs[t.n_runs].pace = 0, t.runs[t.n_runs++].measured_s = 0.001;
    q = mp_cost_lean(&t, dg, 1, 2, 256, &n);
    assert_int_equal(n, 3);
    /* one more, 1.2 at pace 1: the median of (1.2, 0.8, 1.1, 1.5) */
    t.runs[t.n_runs] = mk, t.runs[t.n_runs++].measured_s = 1.2 * 0.001;
    q = mp_cost_lean(&t, dg, 1, 2, 256, &n);
    assert_int_equal(n, 4);
    assert_true(fabs(q - 1.15) < 1e-12);
    /* four newer at 0.9: the newest five are 0.9 x4 and 1.2; the others have aged out */
    for (int i = 0; i < 4; i++)
        t.runs[t.n_runs] = mk, t.runs[t.n_runs++].measured_s = 0.9 * 0.001;
    q = mp_cost_lean(&t, dg, 1, 2, 256, &n);
    assert_int_equal(n, MP_COST_LEAN_RUNS);
    assert_true(fabs(q - 0.9) < 1e-12);
    /* a layout with one run: below MP_COST_LEAN_MIN, no lean */
    q = mp_cost_lean(&t, dg, 2, 2, 256, &n);
    assert_true(q == 1.0), assert_int_equal(n, 0);
}

/* A step's data-parallel reduction (mp_cost_reduce_s): from the measured rows of `mpipe bench
 * reduce` where the replicas share a socket (log-log between rows, the smallest row's seconds
 * below it, the largest's seconds per byte above it; D replicas move 2(D-1)/D of the arena, as 2
 * move all of it), else, and without rows, the link model. */
static void test_reduction_is_priced_from_measured_rows_within_a_socket(void **state)
{
    (void)state;
    struct mp_cost_model cm;
    mp_cost_defaults(&cm);
    double link = mp_cost_allreduce_s(&cm.link[MP_LINK_L3], 1 << 20, 2);
    assert_true(mp_cost_reduce_s(&cm, MP_LINK_L3, 1 << 20, 2) == link); /* no table */
    struct mp_cost_table t;
    memset(&t, 0, sizeof t);
    t.n_reduce = 3;
    t.reduce_bytes[0] = 4096, t.reduce_bytes[1] = 65536, t.reduce_bytes[2] = 1 << 20;
    t.reduce_s[0] = 1e-5, t.reduce_s[1] = 4e-5, t.reduce_s[2] = 1e-3;
    cm.table = &t;
    assert_true(mp_cost_reduce_s(&cm, MP_LINK_L3, 1 << 20, 1) == 0);          /* no replicas */
    assert_true(fabs(mp_cost_reduce_s(&cm, MP_LINK_L3, 65536, 2) - 4e-5) < 1e-12); /* a row */
    assert_true(mp_cost_reduce_s(&cm, MP_LINK_NUMA, 100, 2) == 1e-5);        /* the floor */
    assert_true(fabs(mp_cost_reduce_s(&cm, MP_LINK_SOCKET, 1 << 22, 2) - 4e-3) < 1e-12);
    double mid = mp_cost_reduce_s(&cm, MP_LINK_L3, 16384, 2); /* halfway in log: sqrt(1e-5 4e-5) */
    assert_true(fabs(mid - 2e-5) < 1e-9);
    /* 4 replicas move 1.5x what 2 do: the row at 1.5x the bytes. */
    assert_true(fabs(mp_cost_reduce_s(&cm, MP_LINK_L3, 1 << 22, 4) - 6e-3) < 1e-12);
    assert_true(mp_cost_reduce_s(&cm, MP_LINK_L3, 1 << 20, 2) > link); /* measured, not the link */
    /* Between sockets and hosts the rows do not hold: the link model. */
    assert_true(mp_cost_reduce_s(&cm, MP_LINK_HOST, 1 << 20, 2) ==
                mp_cost_allreduce_s(&cm.link[MP_LINK_HOST], 1 << 20, 2));
    assert_true(mp_cost_reduce_s(&cm, MP_LINK_NET, 1 << 20, 2) ==
                mp_cost_allreduce_s(&cm.link[MP_LINK_NET], 1 << 20, 2));
    double alpha, beta;
    mp_cost_reduce_linear(&cm, MP_LINK_L3, 2, &alpha, &beta);
    assert_true(alpha == 1e-5 && fabs(beta - 1e-3 / (1 << 20)) < 1e-18);
    mp_cost_reduce_linear(&cm, MP_LINK_NET, 2, &alpha, &beta);
    assert_true(alpha == 2 * cm.link[MP_LINK_NET].latency_s);
}

static void test_broken_json_and_missing_file(void **state)
{
    (void)state;
    struct mp_plan p;
    struct mp_err err;
    FILE *f = fopen(path, "w");
    fputs("{\"model\": \"x\",\n  \"P\": }\n", f);
    fclose(f);
    assert_int_equal(mp_plan_read(&p, path, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(mp_plan_read(&p, "/nonexistent/plan.json", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/mp_test_plan_%d.json", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_round_trips_through_json),
        cmocka_unit_test(test_malformed_plans_are_rejected_naming_the_key),
        cmocka_unit_test(test_broken_json_and_missing_file),
        cmocka_unit_test(test_reduction_is_priced_from_measured_rows_within_a_socket),
        cmocka_unit_test(test_lean_is_the_median_of_the_layouts_newest_runs),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    remove(path);
    return rc;
}
