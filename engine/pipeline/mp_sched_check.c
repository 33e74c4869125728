/* Schedule validator (mp_sched.h): proves a set of action lists complete, ordered as DESIGN.md §6
 * requires (F, B and W of every chunk in micro-batch order), matched between the right ranks and
 * deadlock-free, before the executor runs them. It checks any hand-built list, so every defect is
 * reported as MP_ERR_INPUT naming the rank, the action index and the action. It never repairs a
 * list and never looks at costs (that is mp_sim.c). */
#include "mp_sched.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SLOTS 7 /* every action kind but STEP: F B W SEND_ACT RECV_ACT SEND_GRAD RECV_GRAD */

struct chk {
    const struct mp_sched *s;
    int P, V, M, S;
    long *at; /* at[(v * M + mb) * N_SLOTS + kind]: index of that action on v's rank, or -1 */
};

static int rank_of(const struct chk *k, int v)
{
    return mp_vstage_rank(k->s->place, v, k->P);
}

/* Whether virtual stages v and u = v +- 1 share a rank (buffers handed over in memory). */
static int local(const struct chk *k, int v, int u)
{
    return u >= 0 && u < k->S && rank_of(k, u) == rank_of(k, v);
}

static long *slot(const struct chk *k, int v, int mb, int kind)
{
    return &k->at[((size_t)v * (size_t)k->M + (size_t)mb) * N_SLOTS + (size_t)kind];
}

static void describe(char *buf, size_t n, const struct mp_sched *s, int r, size_t i)
{
    if (i >= s->n_acts[r]) {
        snprintf(buf, n, "rank %d action %zu (end of list)", r, i);
        return;
    }
    const struct mp_action *a = &s->acts[r][i];
    if (a->kind == MP_ACT_STEP)
        snprintf(buf, n, "rank %d action %zu (STEP)", r, i);
    else
        snprintf(buf, n, "rank %d action %zu (%s mb %d chunk %d)", r, i, mp_act_name(a->kind),
                 a->mb, a->chunk);
}

__attribute__((format(printf, 5, 6))) static int bad(struct mp_err *err, const struct mp_sched *s,
                                                     int r, size_t i, const char *fmt, ...)
{
    char where[128], what[320];
    describe(where, sizeof where, s, r, i);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return MP_FAIL(err, INPUT, "%s: %s", where, what);
}

/* Checks that a communication action makes sense on this rank at all. */
static int check_comm(const struct chk *k, int r, size_t i, int v, struct mp_err *err)
{
    int kind = k->s->acts[r][i].kind;
    int u = kind == MP_ACT_SEND_ACT || kind == MP_ACT_RECV_GRAD ? v + 1 : v - 1;
    if (k->P == 1)
        return bad(err, k->s, r, i, "no sends or receives with one rank (stages share memory)");
    if ((kind == MP_ACT_SEND_ACT || kind == MP_ACT_RECV_GRAD) && v == k->S - 1)
        return bad(err, k->s, r, i, "virtual stage %d is the last: it has no next stage", v);
    if ((kind == MP_ACT_RECV_ACT || kind == MP_ACT_SEND_GRAD) && v == 0)
        return bad(err, k->s, r, i, "virtual stage 0 is the first: it has no previous stage");
    if (local(k, v, u))
        return bad(err, k->s, r, i, "virtual stages %d and %d share rank %d: no message between "
                   "them (the buffers are handed over in memory)", v, u, r);
    return 0;
}

/* The local dependencies of one compute or communication action (mb/chunk already in range). */
static int check_deps(const struct chk *k, int r, size_t i, int v, int mb, struct mp_err *err)
{
    const struct mp_sched *s = k->s;
    int kind = s->acts[r][i].kind, c = mp_vstage_chunk(v, k->P);
    switch (kind) {
    case MP_ACT_F:
        if (v > 0 && !local(k, v, v - 1) && *slot(k, v, mb, MP_ACT_RECV_ACT) < 0)
            return bad(err, s, r, i, "input not received (no RECV_ACT mb %d chunk %d before it)",
                       mb, c);
        if (local(k, v, v - 1) && *slot(k, v - 1, mb, MP_ACT_F) < 0)
            return bad(err, s, r, i, "input not ready (F of chunk %d not run before it)",
                       mp_vstage_chunk(v - 1, k->P));
        return 0;
    case MP_ACT_B:
        if (*slot(k, v, mb, MP_ACT_F) < 0)
            return bad(err, s, r, i, "B before its F");
        if (v < k->S - 1 && !local(k, v, v + 1) && *slot(k, v, mb, MP_ACT_RECV_GRAD) < 0)
            return bad(err, s, r, i, "output gradient not received (no RECV_GRAD before it)");
        if (local(k, v, v + 1) && *slot(k, v + 1, mb, MP_ACT_B) < 0)
            return bad(err, s, r, i, "output gradient not ready (B of chunk %d not run)",
                       mp_vstage_chunk(v + 1, k->P));
        return 0;
    case MP_ACT_W:
        return *slot(k, v, mb, MP_ACT_B) < 0 ? bad(err, s, r, i, "W before its B") : 0;
    case MP_ACT_SEND_ACT:
        if (check_comm(k, r, i, v, err))
            return -1;
        return *slot(k, v, mb, MP_ACT_F) < 0 ? bad(err, s, r, i, "SEND_ACT before its F") : 0;
    case MP_ACT_SEND_GRAD:
        if (check_comm(k, r, i, v, err))
            return -1;
        return *slot(k, v, mb, MP_ACT_B) < 0 ? bad(err, s, r, i, "SEND_GRAD before its B") : 0;
    default:
        return check_comm(k, r, i, v, err);
    }
}

/* One pass over rank r's list: ranges, duplicates, per-chunk micro-batch order, local
 * dependencies, STEP last; records every action's index and the peak in-flight count. */
static int scan_rank(struct chk *k, int r, int *last, int *peak, struct mp_err *err)
{
    const struct mp_sched *s = k->s;
    size_t n = s->n_acts[r];
    int inflight = 0;
    *peak = 0;
    for (int i = 0; i < 3 * k->V; i++)
        last[i] = -1;
    for (size_t i = 0; i < n; i++) {
        const struct mp_action *a = &s->acts[r][i];
        if (a->kind < 0 || a->kind >= MP_ACT_COUNT)
            return bad(err, s, r, i, "unknown action kind %d", (int)a->kind);
        if (a->kind == MP_ACT_STEP) {
            if (i != n - 1)
                return bad(err, s, r, i, "STEP must be the last action, once");
            continue;
        }
        if (a->mb < 0 || a->mb >= k->M || a->chunk < 0 || a->chunk >= k->V)
            return bad(err, s, r, i, "micro-batch or chunk out of range (M=%d, V=%d)", k->M,
                       k->V);
        int v = mp_vstage_of(s->place, r, a->chunk, k->P);
        long *at = slot(k, v, a->mb, a->kind);
        if (*at >= 0)
            return bad(err, s, r, i, "duplicate (already at action %ld)", *at);
        if (a->kind <= MP_ACT_W) {
            int *lm = &last[a->kind * k->V + a->chunk];
            if (a->mb < *lm)
                return bad(err, s, r, i, "%s out of micro-batch order (after mb %d)",
                           mp_act_name(a->kind), *lm);
            *lm = a->mb;
        }
        if (check_deps(k, r, i, v, a->mb, err))
            return -1;
        *at = (long)i;
        inflight += a->kind == MP_ACT_F ? 1 : a->kind == MP_ACT_W ? -1 : 0;
        *peak = inflight > *peak ? inflight : *peak;
    }
    if (n == 0 || s->acts[r][n - 1].kind != MP_ACT_STEP)
        return bad(err, s, r, n ? n - 1 : 0, "the list does not end with STEP");
    return 0;
}

/* Every (mb, v) has F, B and W on v's rank. */
static int check_complete(const struct chk *k, struct mp_err *err)
{
    for (int v = 0; v < k->S; v++) {
        int r = rank_of(k, v);
        for (int mb = 0; mb < k->M; mb++) {
            for (int kind = MP_ACT_F; kind <= MP_ACT_W; kind++) {
                if (*slot(k, v, mb, kind) < 0)
                    return bad(err, k->s, r, k->s->n_acts[r], "no %s for mb %d chunk %d",
                               mp_act_name(kind), mb, mp_vstage_chunk(v, k->P));
            }
        }
    }
    return 0;
}

/* Every receive has its send on the neighbour and every send its receive. */
static int check_matching(const struct chk *k, struct mp_err *err)
{
    static const int pair[][3] = {/* recv kind, send kind, vstage offset of the sender */
                                  {MP_ACT_RECV_ACT, MP_ACT_SEND_ACT, -1},
                                  {MP_ACT_RECV_GRAD, MP_ACT_SEND_GRAD, +1}};
    for (int p = 0; p < 2; p++) {
        for (int v = 0; v < k->S; v++) {
            int u = v + pair[p][2];
            for (int mb = 0; u >= 0 && u < k->S && mb < k->M; mb++) {
                long ri = *slot(k, v, mb, pair[p][0]), si = *slot(k, u, mb, pair[p][1]);
                if (ri >= 0 && si < 0)
                    return bad(err, k->s, rank_of(k, v), (size_t)ri, "no matching %s on rank %d",
                               mp_act_name(pair[p][1]), rank_of(k, u));
                if (si >= 0 && ri < 0)
                    return bad(err, k->s, rank_of(k, u), (size_t)si, "no matching %s on rank %d",
                               mp_act_name(pair[p][0]), rank_of(k, v));
            }
        }
    }
    return 0;
}

/* Index of the send a receive waits for, and its rank. */
static long sender_of(const struct chk *k, const struct mp_action *a, int r, int *sr)
{
    int v = mp_vstage_of(k->s->place, r, a->chunk, k->P);
    int u = a->kind == MP_ACT_RECV_ACT ? v - 1 : v + 1;
    *sr = rank_of(k, u);
    return *slot(k, u, a->mb, a->kind == MP_ACT_RECV_ACT ? MP_ACT_SEND_ACT : MP_ACT_SEND_GRAD);
}

/* Abstract execution: sends never block, a receive blocks until its send has executed. */
static int check_deadlock(const struct chk *k, struct mp_err *err)
{
    const struct mp_sched *s = k->s;
    size_t *pos = calloc((size_t)k->P, sizeof *pos);
    if (!pos)
        return MP_FAIL(err, NOMEM, "schedule validation: out of memory");
    for (int progress = 1; progress;) {
        progress = 0;
        for (int r = 0; r < k->P; r++) {
            for (; pos[r] < s->n_acts[r]; pos[r]++, progress = 1) {
                const struct mp_action *a = &s->acts[r][pos[r]];
                int sr;
                if (a->kind != MP_ACT_RECV_ACT && a->kind != MP_ACT_RECV_GRAD)
                    continue;
                long si = sender_of(k, a, r, &sr);
                if ((long)pos[sr] <= si)
                    break;
            }
        }
    }
    int rc = 0;
    for (int r = 0; r < k->P && !rc; r++) {
        if (pos[r] < s->n_acts[r]) {
            int sr;
            long si = sender_of(k, &s->acts[r][pos[r]], r, &sr);
            char there[128];
            describe(there, sizeof there, s, sr, pos[sr]);
            rc = bad(err, s, r, pos[r], "deadlock: waits for %s (action %ld on rank %d), "
                     "which never runs: %s is blocked", mp_act_name(s->acts[sr][si].kind), si, sr,
                     there);
        }
    }
    free(pos);
    return rc;
}

int mp_sched_validate(const struct mp_sched *s, struct mp_sched_report *rep, struct mp_err *err)
{
    if (rep)
        memset(rep, 0, sizeof *rep);
    if (!s || !s->acts || !s->n_acts || s->P < 1 || s->V < 1 || s->M < 1)
        return MP_FAIL(err, INPUT, "schedule: empty or with P, V or M below 1");
    struct chk k = {.s = s, .P = s->P, .V = s->V, .M = s->M, .S = s->P * s->V};
    size_t n_at = (size_t)k.S * (size_t)k.M * N_SLOTS;
    k.at = malloc(n_at * sizeof *k.at);
    int *last = malloc(3 * (size_t)k.V * sizeof *last);
    int rc = -1;
    if (!k.at || !last) {
        MP_FAIL(err, NOMEM, "schedule validation: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_at; i++)
        k.at[i] = -1;
    for (int r = 0; r < k.P; r++) {
        int peak;
        if (scan_rank(&k, r, last, &peak, err))
            goto done;
        if (rep && r < (int)(sizeof rep->peak_inflight / sizeof rep->peak_inflight[0]))
            rep->peak_inflight[r] = peak;
    }
    if (check_complete(&k, err) || check_matching(&k, err) || check_deadlock(&k, err))
        goto done;
    rc = 0;
done:
    free(k.at);
    free(last);
    return rc;
}
