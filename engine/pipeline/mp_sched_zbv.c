/* zbv: the zero-bubble V schedule (Qi et al., "Zero Bubble Pipeline Parallelism", 2024, ZB-V).
 * The model is cut into 2P chunks placed in a V (rank r holds virtual stages r and 2P - 1 - r,
 * mp_sched.h), backward is split into B (input gradient, on the critical path) and W (weight
 * gradient, free to move), and W passes fill what would otherwise be bubbles. Like the paper's
 * greedy, the lists come from a deterministic simulation with unit costs (F = B = W = 1, free
 * messages): a free rank starts the most urgent ready pass, and W only when nothing else is ready
 * or its memory is full. Memory is the paper's 1F1B budget counted in chunks: a rank holds at
 * most 2 min(P, M) chunk-micro-batches (F started, W not yet), i.e. min(P, M) micro-batches of
 * half a 1F1B stage each. In bytes that is more than 1F1B when chunks are not halves of a stage
 * (each chunk also keeps its input and that gradient); one chunk less already costs more bubble
 * than zb1 has, so the budget stays. A few variants of the priorities are simulated and the
 * shortest kept. This file never looks at real costs. */
#include "mp_sched.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* One unit-cost simulation of the V. Per rank r and chunk c (index r * 2 + c): the next
 * micro-batch to start F, B and W on. Rank P - 1 turns the V: its chunk 0 feeds its chunk 1 in
 * memory, and the executor takes chunk 1's slab when chunk 0's F hands its output over, so there
 * the two forwards of a micro-batch run as one pair (cost 2) and count as held together. */
struct zv {
    int P, M, T;           /* T: chunk-micro-batches a rank may hold */
    int b_first;           /* variant: a ready B goes before a ready F */
    int cap0_a, cap0_b;    /* variant: rank r's chunk 0 holds at most T - a - b r */
    int *nf, *nb, *nw;     /* [r * 2 + c] */
    int *busy;             /* per rank: the time it is free again */
    int *f_fin, *b_fin;    /* [v * M + mb]: when that F / B finished, INT_MAX if not yet */
    struct mp_action *ops; /* rank r's passes at r * n_per */
    int *n_ops, n_per;
};

static int vof(const struct zv *z, int r, int c)
{
    return mp_vstage_of(MP_VPLACE_VEE, r, c, z->P);
}

static int held(const struct zv *z, int r)
{
    return z->nf[2 * r] - z->nw[2 * r] + z->nf[2 * r + 1] - z->nw[2 * r + 1];
}

/* Rank r's cap on chunk 0's share of T: chunk 1 must always find room, or the micro-batches
 * held by chunk 0 could never come back down the V. */
static int cap0(const struct zv *z, int r)
{
    int cap = z->T - z->cap0_a - z->cap0_b * r;
    return cap < 1 ? 1 : cap > z->T - 1 ? z->T - 1 : cap;
}

static int ready_f(const struct zv *z, int r, int c, int t)
{
    int k = z->nf[2 * r + c], v = vof(z, r, c), turn = r == z->P - 1;
    if (k >= z->M || (turn && c == 1)) /* the turn's chunk 1 goes with its chunk 0 */
        return 0;
    if (held(z, r) + (turn ? 2 : 1) > z->T)
        return 0;
    if (c == 0 && !turn && z->nf[2 * r] - z->nw[2 * r] >= cap0(z, r))
        return 0;
    return v == 0 || z->f_fin[(v - 1) * z->M + k] <= t;
}

static int ready_b(const struct zv *z, int r, int c, int t)
{
    int k = z->nb[2 * r + c], v = vof(z, r, c);
    if (k >= z->nf[2 * r + c] || z->f_fin[v * z->M + k] > t)
        return 0;
    return v == 2 * z->P - 1 || z->b_fin[(v + 1) * z->M + k] <= t;
}

/* The chunk whose next W is ready and whose B finished first, or -1. */
static int ready_w(const struct zv *z, int r, int t)
{
    int best = -1, best_t = INT_MAX;
    for (int c = 0; c < 2; c++) {
        int k = z->nw[2 * r + c];
        if (k >= z->nb[2 * r + c])
            continue;
        int fin = z->b_fin[vof(z, r, c) * z->M + k];
        if (fin <= t && fin < best_t)
            best = c, best_t = fin;
    }
    return best;
}

static void push(struct zv *z, int r, enum mp_act_kind kind, int mb, int c)
{
    z->ops[(size_t)r * (size_t)z->n_per + (size_t)z->n_ops[r]++] = (struct mp_action){kind, mb, c};
}

static int start_f(struct zv *z, int r, int c, int t)
{
    int k = z->nf[2 * r + c]++;
    z->f_fin[vof(z, r, c) * z->M + k] = t + 1;
    push(z, r, MP_ACT_F, k, c);
    if (r != z->P - 1)
        return 1;
    z->nf[2 * r + 1]++; /* the turn: chunk 1's forward right after chunk 0's */
    z->f_fin[vof(z, r, 1) * z->M + k] = t + 2;
    push(z, r, MP_ACT_F, k, 1);
    return 2;
}

/* Starts one pass on rank r at time t if any is ready; returns its cost, 0 if none. Chunk 1 is
 * nearer the end of the model going down the V and nearer the loss coming back, so it goes
 * first in both directions. */
static int start(struct zv *z, int r, int t)
{
    for (int pass = 0; pass < 2; pass++) {
        int want_b = pass == (z->b_first ? 0 : 1);
        for (int c = 1; c >= 0; c--) {
            if (want_b && ready_b(z, r, c, t)) {
                int k = z->nb[2 * r + c]++;
                z->b_fin[vof(z, r, c) * z->M + k] = t + 1;
                push(z, r, MP_ACT_B, k, c);
                return 1;
            }
            if (!want_b && ready_f(z, r, c, t))
                return start_f(z, r, c, t);
        }
    }
    int c = ready_w(z, r, t);
    if (c < 0)
        return 0;
    push(z, r, MP_ACT_W, z->nw[2 * r + c]++, c);
    return 1;
}

/* Runs the simulation; returns the makespan, or -1 if every rank got stuck. */
static int run(struct zv *z)
{
    int P = z->P, total = P * z->n_per, done = 0, t = 0;
    memset(z->nf, 0, 3 * 2 * (size_t)P * sizeof *z->nf);
    for (int r = 0; r < P; r++)
        z->busy[r] = z->n_ops[r] = 0;
    for (size_t i = 0; i < 2 * (size_t)P * (size_t)z->M; i++)
        z->f_fin[i] = z->b_fin[i] = INT_MAX;
    while (done < total) {
        int next = INT_MAX;
        for (int r = 0; r < P; r++) {
            if (z->busy[r] <= t) {
                int before = z->n_ops[r], cost = start(z, r, t);
                done += z->n_ops[r] - before;
                z->busy[r] = t + cost;
            }
            if (z->busy[r] > t && z->busy[r] < next)
                next = z->busy[r];
        }
        if (next == INT_MAX)
            return -1;
        t = next;
    }
    int end = 0;
    for (int r = 0; r < P; r++)
        end = z->busy[r] > end ? z->busy[r] : end;
    return end;
}

static int emit(struct mp_sched *s, const struct zv *z)
{
    int rc = 0;
    for (int r = 0; r < s->P; r++) {
        for (int i = 0; i < z->n_ops[r]; i++) {
            const struct mp_action *a = &z->ops[(size_t)r * (size_t)z->n_per + (size_t)i];
            if (a->kind == MP_ACT_F)
                rc |= mp__sched_emit_f(s, r, a->mb, a->chunk);
            else if (a->kind == MP_ACT_B)
                rc |= mp__sched_emit_b(s, r, a->mb, a->chunk, 0);
            else
                rc |= mp_sched_push(s, r, MP_ACT_W, a->mb, a->chunk);
        }
        rc |= mp_sched_push(s, r, MP_ACT_STEP, -1, -1);
    }
    return rc;
}

/* Simulates every variant and emits the shortest (the first of equals): B or F first when both
 * are ready, and rank r's chunk 0 capped at T - a - b r of the T it may hold, a in 0..8, b in
 * 0..1. Over P <= 10 and M <= 32 this grid finds the same makespans as every a in 0..T with b in
 * 0..2, and no variant ever got stuck; a cap of 1 is always feasible (see cap0). */
int mp__sched_make_zbv(struct mp_sched *s)
{
    struct zv z = {.P = s->P, .M = s->M};
    z.T = 2 * (s->M < s->P ? s->M : s->P);
    z.n_per = 6 * z.M; /* F, B and W of two chunks */
    size_t P = (size_t)z.P, VM = 2 * P * (size_t)z.M, n_ops = P * (size_t)z.n_per;
    int *ibuf = malloc((8 * P + 2 * VM) * sizeof *ibuf);
    z.ops = malloc(n_ops * sizeof *z.ops);
    int rc = -1, best = INT_MAX, best_v[3] = {0, 0, 0};
    if (!ibuf || !z.ops)
        goto done;
    z.nf = ibuf, z.nb = ibuf + 2 * P, z.nw = ibuf + 4 * P, z.busy = ibuf + 6 * P;
    z.n_ops = ibuf + 7 * P, z.f_fin = ibuf + 8 * P, z.b_fin = z.f_fin + VM;
    for (int bf = 0; bf < 2; bf++)
        for (int a = 0; a <= 8 && a <= z.T; a++)
            for (int b = 0; b < 2; b++) {
                z.b_first = bf, z.cap0_a = a, z.cap0_b = b;
                int span = run(&z);
                if (span >= 0 && span < best)
                    best = span, best_v[0] = bf, best_v[1] = a, best_v[2] = b;
            }
    z.b_first = best_v[0], z.cap0_a = best_v[1], z.cap0_b = best_v[2];
    if (best < INT_MAX && run(&z) >= 0)
        rc = emit(s, &z);
done:
    free(ibuf);
    free(z.ops);
    return rc;
}
