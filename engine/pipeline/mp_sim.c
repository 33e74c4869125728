/* Event simulator (mp_sim.h): times per-rank action lists from per-virtual-stage costs and a
 * link model. A rank runs its list in order on its own clock; a send costs its sender
 * send_overhead_s and the message is available latency + bytes / bandwidth after the overhead;
 * a receive waits for that moment (idle time). Where the receiver copies (ranks of one host),
 * the message is available after the latency and the receive then takes bytes / bandwidth. The
 * planner predicts with it and `bench pipeline` compares it with measured runs, so it must stay
 * deterministic and free of heuristics. */
#include "mp_sim.h"

#include <stdlib.h>
#include <string.h>

struct mem_ev {
    double t, delta;
};

struct sim {
    const struct mp_sched *s;
    const struct mp_sim_costs *c;
    int P, S, M;
    double *act_at, *grad_at; /* [v * M + mb]: when v's message for mb is available, -1 unsent */
    size_t *pos;
    double *clock, *busy;
    unsigned char *begun; /* [kind * S + v], kind 0..2 = F, B, W: v ran one already this step */
    struct mem_ev *mem; /* rank r's memory events at mem_off[r], count mem_n[r] */
    size_t *mem_off, *mem_n;
};

/* Optional byte arrays: NULL means the schedule is timed without memory accounting. */
static double held(const struct sim *m, int v)
{
    return m->c->held_bytes ? m->c->held_bytes[v] : 0;
}

static double abytes(const struct sim *m, int v)
{
    return m->c->act_bytes ? m->c->act_bytes[v] : 0;
}

static void mem_add(struct sim *m, int r, double t, double delta)
{
    if (delta != 0)
        m->mem[m->mem_off[r] + m->mem_n[r]++] = (struct mem_ev){t, delta};
}

/* Transfer time of `bytes` from rank a to rank b; a bandwidth <= 0 means infinitely fast. */
static double link_s(const struct sim *m, int a, int b, double bytes)
{
    const struct mp_sim_costs *c = m->c;
    double lat = c->link_latency_s ? c->link_latency_s[a * m->P + b] : c->latency_s;
    double bw = c->link_bandwidth_Bps ? c->link_bandwidth_Bps[a * m->P + b] : c->bandwidth_Bps;
    return lat + (bw > 0 ? bytes / bw : 0);
}

/* Whether the receiver b moves the bytes a sends it (mp_sim.h, link_recv_copy). */
static int recv_copies(const struct sim *m, int a, int b)
{
    const struct mp_sim_costs *c = m->c;
    return c->link_recv_copy ? c->link_recv_copy[a * m->P + b] != 0 : c->recv_copy != 0;
}

/* A send: the sender pays its overhead, then the message travels (or, where the receiver copies
 * it, waits after the latency for the receiver to take it). The sender holds the buffer until
 * delivery (counted in its peak memory when delivery takes time). */
static double do_send(struct sim *m, int r, const struct mp_action *a, int v)
{
    int act = a->kind == MP_ACT_SEND_ACT;
    int dst = mp_vstage_rank(m->s->place, act ? v + 1 : v - 1, m->P);
    double bytes = act ? abytes(m, v) : abytes(m, v - 1); /* a gradient has its input's size */
    double t0 = m->clock[r], ov = m->c->send_overhead_s;
    double avail = t0 + ov + link_s(m, r, dst, recv_copies(m, r, dst) ? 0 : bytes);
    (act ? m->act_at : m->grad_at)[v * m->M + a->mb] = avail;
    if (avail > t0) {
        mem_add(m, r, t0, bytes);
        mem_add(m, r, avail, -bytes);
    }
    return ov;
}

/* What v's pass of this kind costs on top the first time it runs in the step (its packing). */
static double first(struct sim *m, const double *extra_s, int kind, int v)
{
    unsigned char *begun = &m->begun[kind * m->S + v];
    if (!extra_s || *begun)
        return 0;
    *begun = 1;
    return extra_s[v];
}

/* Executes rank r's next action if it can; returns 1 if it did, 0 if it waits for a message. */
static int step_rank(struct sim *m, int r, struct mp_trace *trace, int *oom)
{
    const struct mp_action *a = &m->s->acts[r][m->pos[r]];
    int v = mp_vstage_of(m->s->place, r, a->chunk, m->P);
    double t0 = m->clock[r], dur = 0;
    switch (a->kind) {
    case MP_ACT_RECV_ACT:
    case MP_ACT_RECV_GRAD: {
        int is_act = a->kind == MP_ACT_RECV_ACT, from = is_act ? v - 1 : v + 1;
        double at = is_act ? m->act_at[from * m->M + a->mb] : m->grad_at[from * m->M + a->mb];
        if (at < 0)
            return 0;
        int src = mp_vstage_rank(m->s->place, from, m->P);
        /* The copy is the receiver's wait in the measured run too, not its busy time. */
        double copy = recv_copies(m, src, r)
                          ? link_s(m, src, r, is_act ? abytes(m, v - 1) : abytes(m, v)) -
                                link_s(m, src, r, 0)
                          : 0;
        m->clock[r] = (at > t0 ? at : t0) + copy;
        m->pos[r]++;
        return 1;
    }
    case MP_ACT_SEND_ACT:
    case MP_ACT_SEND_GRAD: dur = do_send(m, r, a, v); break;
    case MP_ACT_F:
        dur = m->c->f_s[v] + first(m, m->c->f_first_s, 0, v);
        mem_add(m, r, t0, held(m, v));
        break;
    case MP_ACT_B: dur = m->c->b_s[v] + first(m, m->c->b_first_s, 1, v); break;
    case MP_ACT_W:
        dur = m->c->w_s[v] + first(m, m->c->w_first_s, 2, v);
        mem_add(m, r, t0 + dur, -held(m, v));
        break;
    default: dur = m->c->step_s; break;
    }
    m->clock[r] = t0 + dur;
    m->busy[r] += dur;
    m->pos[r]++;
    if (trace && mp_trace_add(trace, r, a->kind, a->mb, a->chunk, t0, dur))
        *oom = 1;
    return 1;
}

static int cmp_mem(const void *pa, const void *pb)
{
    const struct mem_ev *a = pa, *b = pb;
    if (a->t != b->t)
        return a->t < b->t ? -1 : 1;
    return (a->delta > b->delta) - (a->delta < b->delta); /* frees first at equal times */
}

static double peak_mem(struct sim *m, int r)
{
    struct mem_ev *e = m->mem + m->mem_off[r];
    qsort(e, m->mem_n[r], sizeof *e, cmp_mem);
    double cur = 0, peak = 0;
    for (size_t i = 0; i < m->mem_n[r]; i++) {
        cur += e[i].delta;
        peak = cur > peak ? cur : peak;
    }
    return peak;
}

/* Rejects what would make the simulation read out of bounds (the rest is the validator's). */
static int check_input(const struct mp_sched *s, const struct mp_sim_costs *c, struct mp_err *err)
{
    if (!s || !s->acts || s->P < 1 || s->V < 1 || s->M < 1 || !c || !c->f_s || !c->b_s || !c->w_s)
        return MP_FAIL(err, USAGE, "simulator: missing schedule or F/B/W costs");
    for (int r = 0; r < s->P; r++) {
        for (size_t i = 0; i < s->n_acts[r]; i++) {
            const struct mp_action *a = &s->acts[r][i];
            int v = mp_vstage_of(s->place, r, a->chunk, s->P), S = s->P * s->V;
            int bad = a->kind < 0 || a->kind >= MP_ACT_COUNT;
            if (!bad && a->kind != MP_ACT_STEP)
                bad = a->mb < 0 || a->mb >= s->M || a->chunk < 0 || a->chunk >= s->V ||
                      ((a->kind == MP_ACT_RECV_ACT || a->kind == MP_ACT_SEND_GRAD) && v == 0) ||
                      ((a->kind == MP_ACT_SEND_ACT || a->kind == MP_ACT_RECV_GRAD) && v == S - 1);
            if (bad)
                return MP_FAIL(err, INPUT, "rank %d action %zu (%s mb %d chunk %d): invalid",
                               r, i, mp_act_name(a->kind), a->mb, a->chunk);
        }
    }
    return 0;
}

static int sim_alloc(struct sim *m)
{
    size_t P = (size_t)m->P, SM = (size_t)m->S * (size_t)m->M, n_mem = 0;
    m->act_at = malloc(2 * SM * sizeof *m->act_at);
    m->pos = calloc(P, sizeof *m->pos);
    m->clock = calloc(2 * P, sizeof *m->clock);
    m->mem_off = calloc(2 * P, sizeof *m->mem_off);
    m->begun = calloc(3 * (size_t)m->S, 1);
    if (!m->act_at || !m->pos || !m->clock || !m->mem_off || !m->begun)
        return -1;
    m->grad_at = m->act_at + SM;
    m->busy = m->clock + P;
    m->mem_n = m->mem_off + P;
    for (size_t i = 0; i < 2 * SM; i++)
        m->act_at[i] = -1;
    for (size_t r = 0; r < P; r++) {
        m->mem_off[r] = n_mem;
        n_mem += 2 * m->s->n_acts[r]; /* each action adds at most two memory events */
    }
    m->mem = malloc((n_mem ? n_mem : 1) * sizeof *m->mem);
    return m->mem ? 0 : -1;
}

static void sim_free(struct sim *m)
{
    free(m->act_at);
    free(m->pos);
    free(m->clock);
    free(m->mem_off);
    free(m->mem);
    free(m->begun);
}

/* Runs every rank as far as it can, round after round, until all finish or none can move. */
static int run_ranks(struct sim *m, struct mp_trace *trace, struct mp_err *err)
{
    int oom = 0;
    for (int progress = 1; progress;) {
        progress = 0;
        for (int r = 0; r < m->P; r++) {
            while (m->pos[r] < m->s->n_acts[r] && step_rank(m, r, trace, &oom))
                progress = 1;
        }
    }
    if (oom)
        return MP_FAIL(err, NOMEM, "simulator: out of memory for the trace");
    for (int r = 0; r < m->P; r++) {
        if (m->pos[r] < m->s->n_acts[r]) {
            const struct mp_action *a = &m->s->acts[r][m->pos[r]];
            return MP_FAIL(err, INPUT, "rank %d action %zu (%s mb %d chunk %d): deadlock: waits "
                           "for a message that is never sent", r, m->pos[r], mp_act_name(a->kind),
                           a->mb, a->chunk);
        }
    }
    return 0;
}

int mp_sim_run(const struct mp_sched *s, const struct mp_sim_costs *c, struct mp_sim_result *r,
               struct mp_trace *trace, struct mp_err *err)
{
    memset(r, 0, sizeof *r);
    if (check_input(s, c, err))
        return -1;
    struct sim m = {.s = s, .c = c, .P = s->P, .S = s->P * s->V, .M = s->M};
    int rc = -1;
    if (sim_alloc(&m)) {
        MP_FAIL(err, NOMEM, "simulator: out of memory");
        goto done;
    }
    if (run_ranks(&m, trace, err))
        goto done;
    double busy_sum = 0;
    for (int q = 0; q < m.P; q++) {
        r->step_s = m.clock[q] > r->step_s ? m.clock[q] : r->step_s;
        busy_sum += m.busy[q];
        double pk = peak_mem(&m, q);
        r->max_peak_act_bytes = pk > r->max_peak_act_bytes ? pk : r->max_peak_act_bytes;
        if (q < (int)(sizeof r->busy_s / sizeof r->busy_s[0])) {
            r->busy_s[q] = m.busy[q];
            r->peak_act_bytes[q] = pk;
        }
    }
    r->bubble = r->step_s > 0 ? 1.0 - busy_sum / m.P / r->step_s : 0;
    rc = 0;
done:
    sim_free(&m);
    return rc;
}
