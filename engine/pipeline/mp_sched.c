/* Schedule generators (DESIGN.md §1, §6): (kind, P, V, M) → one ordered action list per rank.
 * gpipe and 1f1b are closed forms; interleaved and zb1 come from a small deterministic
 * list-scheduling simulation with unit costs, so they accept any M (no M % P requirement); zbv
 * has its own greedy simulation in mp_sched_zbv.c.
 * Every generator runs F, B and W of each chunk in micro-batch order (the running-sum contract
 * of §6) and wraps them in the sends and receives the executor needs. The validator is in
 * mp_sched_check.c; this file never judges a hand-built list. */
#include "mp_sched.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *const sched_names[] = {"gpipe", "1f1b", "interleaved", "zb1", "zbv"};
static_assert(sizeof sched_names / sizeof sched_names[0] == MP_SCHED_COUNT, "schedule names");

static const char *const act_names[] = {"F",        "B",         "W",         "SEND_ACT",
                                        "RECV_ACT", "SEND_GRAD", "RECV_GRAD", "STEP"};
static_assert(sizeof act_names / sizeof act_names[0] == MP_ACT_COUNT, "action names");

int mp_sched_parse(const char *name, enum mp_sched_kind *kind)
{
    for (int k = 0; name && k < MP_SCHED_COUNT; k++) {
        if (strcmp(name, sched_names[k]) == 0) {
            *kind = (enum mp_sched_kind)k;
            return 0;
        }
    }
    return -1;
}

const char *mp_sched_name(enum mp_sched_kind kind)
{
    return (kind >= 0 && kind < MP_SCHED_COUNT) ? sched_names[kind] : "unknown";
}

const char *mp_act_name(enum mp_act_kind kind)
{
    return (kind >= 0 && kind < MP_ACT_COUNT) ? act_names[kind] : "unknown";
}

enum mp_vplace mp_sched_place(enum mp_sched_kind kind)
{
    return kind == MP_SCHED_ZBV ? MP_VPLACE_VEE : MP_VPLACE_LOOP;
}

int mp_sched_chunks(enum mp_sched_kind kind, int V)
{
    return kind == MP_SCHED_INTERLEAVED ? V : kind == MP_SCHED_ZBV ? 2 : 1;
}

int mp_sched_alloc(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M)
{
    memset(s, 0, sizeof *s);
    if (P < 1 || V < 1 || M < 1 || (mp_sched_place(kind) == MP_VPLACE_VEE && V != 2))
        return -1;
    s->kind = kind;
    s->place = mp_sched_place(kind);
    s->P = P;
    s->V = V;
    s->M = M;
    s->acts = calloc((size_t)P, sizeof *s->acts);
    s->n_acts = calloc((size_t)P, sizeof *s->n_acts);
    if (!s->acts || !s->n_acts) {
        mp_sched_free(s);
        return -1;
    }
    return 0;
}

int mp_sched_push(struct mp_sched *s, int rank, enum mp_act_kind kind, int mb, int chunk)
{
    if (rank < 0 || rank >= s->P)
        return -1;
    size_t n = s->n_acts[rank];
    /* The struct has no capacity field: capacities are 8, 16, 32, ... so a list needs to grow
     * exactly when its length reaches one of them (or is 0). */
    if (n == 0 || (n >= 8 && (n & (n - 1)) == 0)) {
        size_t cap = n ? 2 * n : 8;
        struct mp_action *p = realloc(s->acts[rank], cap * sizeof *p);
        if (!p)
            return -1;
        s->acts[rank] = p;
    }
    s->acts[rank][n] = (struct mp_action){kind, mb, chunk};
    s->n_acts[rank] = n + 1;
    return 0;
}

int mp_layer_owner(const int *bounds, int S, int P, enum mp_vplace place, int layer)
{
    for (int v = 0; v < S; v++)
        if (layer >= bounds[v] && layer < bounds[v + 1])
            return mp_vstage_rank(place, v, P);
    return -1;
}

int mp_sched_w_follows_b(const struct mp_sched *s, int r, int chunk)
{
    int any = 0;
    const struct mp_action *a = s->acts[r];
    for (size_t i = 0; i < s->n_acts[r]; i++) {
        if (a[i].kind != MP_ACT_B || a[i].chunk != chunk)
            continue;
        if (i + 1 == s->n_acts[r] || a[i + 1].kind != MP_ACT_W || a[i + 1].mb != a[i].mb ||
            a[i + 1].chunk != chunk)
            return 0;
        any = 1;
    }
    return any;
}

void mp_sched_free(struct mp_sched *s)
{
    if (!s)
        return;
    for (int r = 0; s->acts && r < s->P; r++)
        free(s->acts[r]);
    free(s->acts);
    free(s->n_acts);
    s->acts = NULL;
    s->n_acts = NULL;
}

/* ---- emitting compute actions with their communication ---------------------------------- */

/* Whether virtual stage u (a neighbour of one on rank r) lives on another rank. */
static int remote(const struct mp_sched *s, int r, int u)
{
    return u >= 0 && u < s->P * s->V && mp_vstage_rank(s->place, u, s->P) != r;
}

/* F with the receive of its input before it and the send of its output after it. */
int mp__sched_emit_f(struct mp_sched *s, int r, int mb, int c)
{
    int v = mp_vstage_of(s->place, r, c, s->P), rc = 0;
    if (remote(s, r, v - 1))
        rc |= mp_sched_push(s, r, MP_ACT_RECV_ACT, mb, c);
    rc |= mp_sched_push(s, r, MP_ACT_F, mb, c);
    if (remote(s, r, v + 1))
        rc |= mp_sched_push(s, r, MP_ACT_SEND_ACT, mb, c);
    return rc;
}

/* B with its receive and send. Non-split schedules (gpipe, 1f1b, interleaved) run W right after
 * B and send the gradient after both: backward is one unit there, as in classical 1F1B, so the
 * simulator reproduces the textbook (M + P - 1)(F + B + W) step. zb1 sends right after B. */
int mp__sched_emit_b(struct mp_sched *s, int r, int mb, int c, int with_w)
{
    int v = mp_vstage_of(s->place, r, c, s->P), rc = 0;
    if (remote(s, r, v + 1))
        rc |= mp_sched_push(s, r, MP_ACT_RECV_GRAD, mb, c);
    rc |= mp_sched_push(s, r, MP_ACT_B, mb, c);
    if (with_w)
        rc |= mp_sched_push(s, r, MP_ACT_W, mb, c);
    if (remote(s, r, v - 1))
        rc |= mp_sched_push(s, r, MP_ACT_SEND_GRAD, mb, c);
    return rc;
}

static int make_gpipe(struct mp_sched *s)
{
    int rc = 0;
    for (int r = 0; r < s->P; r++) {
        for (int mb = 0; mb < s->M; mb++)
            rc |= mp__sched_emit_f(s, r, mb, 0);
        for (int mb = 0; mb < s->M; mb++) /* mb 0 first: §6's running-sum order */
            rc |= mp__sched_emit_b(s, r, mb, 0, 1);
        rc |= mp_sched_push(s, r, MP_ACT_STEP, -1, -1);
    }
    return rc;
}

/* Rank r warms up with min(P - r - 1, M) forwards, alternates F and B, then drains the Bs, so
 * at most min(P - r, M) micro-batches are in flight on it. */
static int make_1f1b(struct mp_sched *s)
{
    int rc = 0, P = s->P, M = s->M;
    for (int r = 0; r < P; r++) {
        int warm = P - r - 1 < M ? P - r - 1 : M;
        for (int mb = 0; mb < warm; mb++)
            rc |= mp__sched_emit_f(s, r, mb, 0);
        for (int i = 0; i < M - warm; i++) {
            rc |= mp__sched_emit_f(s, r, warm + i, 0);
            rc |= mp__sched_emit_b(s, r, i, 0, 1);
        }
        for (int mb = M - warm; mb < M; mb++)
            rc |= mp__sched_emit_b(s, r, mb, 0, 1);
        rc |= mp_sched_push(s, r, MP_ACT_STEP, -1, -1);
    }
    return rc;
}

/* ---- list scheduling for interleaved and zb1 ---------------------------------------------- */

/* One unit-cost simulation. Each rank walks a fixed forward order and a fixed backward order
 * (Megatron's: groups of P micro-batches, chunk by chunk, backward chunks reversed; when P does
 * not divide M the last group takes the remainder, which is how any M works). When free, a rank
 * starts the first of: its next F if ready and fewer than limit[r] micro-batch-chunks are in
 * flight; its next B if ready; (split only) its next W. In flight = F started and W not yet
 * started (a non-split B carries its W). Every rank's list follows one global execution, so the
 * lists cannot deadlock whatever the real costs. */
struct ls {
    int P, V, M, S, split;
    int *limit, *inflight, *busy, *f_pos, *b_pos, *w_pos; /* per rank */
    int *f_fin, *b_fin;                                   /* [v * M + mb], INT_MAX = not run */
    struct mp_action *ops;                                /* rank r's ops at r * n_per */
    int *n_ops, n_per;
};

/* The k-th entry of a rank's forward order (backward: chunks reversed). */
static void ls_order(const struct ls *l, int k, int backward, int *mb, int *c)
{
    int P = l->P, V = l->V, full = l->M / P;
    if (l->M % P && full > 0)
        full--; /* the remainder joins the last full group (size P..2P-1): a group smaller than
                   P would leave ranks idle while its few micro-batches go round the ring */
    int g, rem, size;
    if (k < full * P * V) {
        g = k / (P * V), rem = k % (P * V), size = P;
    } else {
        g = full, rem = k - full * P * V, size = l->M - full * P;
    }
    *c = rem / size;
    *mb = g * P + rem % size;
    if (backward)
        *c = V - 1 - *c;
}

static int ls_ready_f(const struct ls *l, int r, int t, int *mb, int *c)
{
    if (l->f_pos[r] >= l->M * l->V || l->inflight[r] >= l->limit[r])
        return 0;
    ls_order(l, l->f_pos[r], 0, mb, c);
    int v = mp_vstage_of(MP_VPLACE_LOOP, r, *c, l->P);
    return v == 0 || l->f_fin[(v - 1) * l->M + *mb] <= t;
}

static int ls_ready_b(const struct ls *l, int r, int t, int *mb, int *c)
{
    if (l->b_pos[r] >= l->M * l->V)
        return 0;
    ls_order(l, l->b_pos[r], 1, mb, c);
    int v = mp_vstage_of(MP_VPLACE_LOOP, r, *c, l->P);
    if (l->f_fin[v * l->M + *mb] > t)
        return 0;
    return v == l->S - 1 || l->b_fin[(v + 1) * l->M + *mb] <= t;
}

/* W follows the backward order (per chunk: micro-batch order), once its B has finished. */
static int ls_ready_w(const struct ls *l, int r, int t, int *mb, int *c)
{
    if (!l->split || l->w_pos[r] >= l->b_pos[r])
        return 0;
    ls_order(l, l->w_pos[r], 1, mb, c);
    return l->b_fin[mp_vstage_of(MP_VPLACE_LOOP, r, *c, l->P) * l->M + *mb] <= t;
}

/* Starts one op on rank r at time t if any is allowed; returns 1 if it did. */
static int ls_start(struct ls *l, int r, int t)
{
    int mb, c, kind, cost;
    if (ls_ready_f(l, r, t, &mb, &c)) {
        kind = MP_ACT_F, cost = 1;
        l->f_pos[r]++;
        l->inflight[r]++;
        l->f_fin[mp_vstage_of(MP_VPLACE_LOOP, r, c, l->P) * l->M + mb] = t + cost;
    } else if (ls_ready_b(l, r, t, &mb, &c)) {
        kind = MP_ACT_B, cost = l->split ? 1 : 2; /* non-split B carries its W */
        l->b_pos[r]++;
        l->inflight[r] -= !l->split;
        l->b_fin[mp_vstage_of(MP_VPLACE_LOOP, r, c, l->P) * l->M + mb] = t + cost;
    } else if (ls_ready_w(l, r, t, &mb, &c)) {
        kind = MP_ACT_W, cost = 1;
        l->w_pos[r]++;
        l->inflight[r]--;
    } else {
        return 0;
    }
    l->busy[r] = t + cost;
    l->ops[(size_t)r * l->n_per + l->n_ops[r]++] = (struct mp_action){kind, mb, c};
    return 1;
}

/* Runs the simulation to the end; returns 0, or 1 if every rank got stuck (limits too tight). */
static int ls_run(struct ls *l)
{
    int P = l->P, total = P * l->n_per, done = 0;
    for (int r = 0; r < P; r++)
        l->inflight[r] = l->busy[r] = l->f_pos[r] = l->b_pos[r] = l->w_pos[r] = l->n_ops[r] = 0;
    for (int i = 0; i < l->S * l->M; i++)
        l->f_fin[i] = l->b_fin[i] = INT_MAX;
    for (int t = 0; done < total;) {
        int next = INT_MAX;
        for (int r = 0; r < P; r++) {
            if (l->busy[r] <= t)
                done += ls_start(l, r, t);
            if (l->busy[r] > t && l->busy[r] < next)
                next = l->busy[r];
        }
        if (next == INT_MAX && done < total)
            return 1;
        t = next;
    }
    return 0;
}

/* Warm-up depth (in-flight limit): 1F1B's P - r for V == 1 and for zb1 (whose B/W split must
 * not cost memory); for V > 1 Megatron's interleaved warm-up (P - r - 1) * 2 + (V - 1) * G plus
 * the one steady-state forward, with G the largest group (P when P divides M, else up to 2P - 1:
 * the bigger last group needs (V - 1) * (M % P) more chunks in flight to start its backward);
 * never more than the rank's M * V forwards. */
static int ls_limit(const struct ls *l, int r)
{
    int P = l->P, M = l->M, G = M < P ? M : P;
    if (M > P && M % P)
        G = P + M % P;
    int lim = l->V == 1 ? P - r : (P - r - 1) * 2 + (l->V - 1) * G + 1;
    return lim < M * l->V ? lim : M * l->V;
}

static int ls_emit(struct mp_sched *s, const struct ls *l)
{
    int rc = 0;
    for (int r = 0; r < s->P; r++) {
        for (int i = 0; i < l->n_ops[r]; i++) {
            const struct mp_action *a = &l->ops[(size_t)r * l->n_per + i];
            if (a->kind == MP_ACT_F)
                rc |= mp__sched_emit_f(s, r, a->mb, a->chunk);
            else if (a->kind == MP_ACT_B)
                rc |= mp__sched_emit_b(s, r, a->mb, a->chunk, !l->split);
            else
                rc |= mp_sched_push(s, r, MP_ACT_W, a->mb, a->chunk);
        }
        rc |= mp_sched_push(s, r, MP_ACT_STEP, -1, -1);
    }
    return rc;
}

static int make_list(struct mp_sched *s, int split)
{
    struct ls l = {.P = s->P, .V = s->V, .M = s->M, .S = s->P * s->V, .split = split};
    l.n_per = l.M * l.V * (split ? 3 : 2);
    size_t P = (size_t)l.P, SM = (size_t)l.S * (size_t)l.M;
    int *ibuf = malloc((7 * P + 2 * SM) * sizeof *ibuf);
    l.ops = malloc(P * (size_t)l.n_per * sizeof *l.ops);
    int rc = -1;
    if (!ibuf || !l.ops)
        goto done;
    l.limit = ibuf, l.inflight = ibuf + P, l.busy = ibuf + 2 * P, l.f_pos = ibuf + 3 * P;
    l.b_pos = ibuf + 4 * P, l.w_pos = ibuf + 5 * P, l.n_ops = ibuf + 6 * P;
    l.f_fin = ibuf + 7 * P, l.b_fin = ibuf + 7 * P + SM;
    for (int r = 0; r < l.P; r++)
        l.limit[r] = ls_limit(&l, r);
    /* A stuck run means the warm-up limits starve some rank; widening them all by one converges
     * (with limit M * V every rank runs its fixed orders unthrottled, which cannot deadlock). */
    while (ls_run(&l)) {
        for (int r = 0; r < l.P; r++)
            l.limit[r]++;
    }
    rc = ls_emit(s, &l);
done:
    free(ibuf);
    free(l.ops);
    return rc;
}

int mp_sched_make(struct mp_sched *s, enum mp_sched_kind kind, int P, int V, int M,
                  struct mp_err *err)
{
    memset(s, 0, sizeof *s);
    if (kind < 0 || kind >= MP_SCHED_COUNT)
        return MP_FAIL(err, USAGE, "unknown schedule kind %d", (int)kind);
    if (P < 1 || V < 1 || M < 1)
        return MP_FAIL(err, USAGE, "schedule %s needs stages, chunks and micro-batches >= 1 "
                       "(got P=%d V=%d M=%d)", sched_names[kind], P, V, M);
    V = mp_sched_chunks(kind, V);
    if (mp_sched_alloc(s, kind, P, V, M))
        return MP_FAIL(err, NOMEM, "schedule %s: out of memory", sched_names[kind]);
    int rc;
    switch (kind) {
    case MP_SCHED_GPIPE: rc = make_gpipe(s); break;
    case MP_SCHED_1F1B: rc = make_1f1b(s); break;
    case MP_SCHED_ZB1: rc = make_list(s, 1); break;
    case MP_SCHED_ZBV: rc = mp__sched_make_zbv(s); break;
    default: rc = make_list(s, 0); break;
    }
    if (rc) {
        mp_sched_free(s);
        return MP_FAIL(err, NOMEM, "schedule %s: out of memory", sched_names[kind]);
    }
    return 0;
}
