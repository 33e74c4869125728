/* What rank 0 sets beside a run at its end (mp_train_loop.h mp__train_report): the plan's step
 * against the run's, each rank's busy time against the plan's, and a replica slower than its
 * peers. Lines on stderr, for the user who asks why a run was not what the plan said. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_median.h"
#include "mp_train_loop.h"

/* Rank 0, after a run of a plan's own layout: its predicted step beside this run's, the mean (what
 * samples/s counts) and the median of the last MP_RECENT_STEPS steps. A mean well past a median
 * that matches the plan says some steps ran long (another process, a VM's stolen time); both past
 * it, that the plan priced this machine wrong (mpipe plan --recalibrate). Same sign as
 * tools/plan-vs-measured's error: predicted samples/s over measured, minus 1. */
static void say_against_plan(const struct loop *L)
{
    const struct mp_train_cfg *c = L->cfg;
    uint64_t steps = L->step - L->start.step;
    size_t n = L->n_recent < MP_RECENT_STEPS ? (size_t)L->n_recent : MP_RECENT_STEPS;
    if (L->wrank != 0 || c->plan_step_s <= 0 || !steps || !n || L->train_time <= 0 ||
        (!c->progress && c->quiet))
        return;
    double sorted[MP_RECENT_STEPS];
    memcpy(sorted, L->recent_step_s, n * sizeof(double));
    double median = mp_median(sorted, n);
    double mean = L->train_time / (double)steps;
    fprintf(stderr, "plan: predicted step %.3f ms; this run %.3f ms (prediction %+.1f%%), median "
            "of the last %zu steps %.3f ms (%+.1f%%)\n", c->plan_step_s * 1e3, mean * 1e3,
            100.0 * (mean / c->plan_step_s - 1.0), n, median * 1e3,
            100.0 * (median / c->plan_step_s - 1.0));
}

/* The data-parallel reduction's own work, run between the backward's kernels (inside the busy
 * time, and outside its price: the plan prices the reduction apart, after the step), each
 * rank's a step; a line only when some rank did any. */
static void say_reduction_work(const struct loop *L, const double *all)
{
    char line[512];
    int n = snprintf(line, sizeof line, "plan: and the data-parallel reduction's own work between "
                     "backward kernels, not in those figures (priced apart):"), any = 0;
    for (int r = 0; r < L->wsize && r < 8 && n < (int)sizeof line; r++) {
        any |= all[2 * r + 1] > 0;
        n += snprintf(line + n, sizeof line - (size_t)n, "%s rank %d %.3f ms", r ? "," : "", r,
                      all[2 * r + 1] * 1e3);
    }
    if (any)
        fprintf(stderr, "%s%s\n", line, L->wsize > 8 ? " ..." : "");
}

/* Rank 0, after a run of a plan's own layout (collective: every rank gives its figure): each
 * rank's busy seconds a step (its passes and its optimizer step, the steps after the first)
 * beside what the plan's simulator gave it. Where the step's error is, in one line: a rank over
 * its price computed slower than calibrated (its core, or a mispriced pass); ranks at their
 * price in a step past its own lost the time waiting (hand-offs, bubbles, the reduction). With
 * real replicas the reduction's own work runs inside the backward: it is taken out of the
 * figure (the plan prices it apart) and said on a line of its own; on 2 replicas of mlp.mp it
 * was 1-2 ms of a 23 ms step, which read as the ranks computing 7-17% over their price. */
static int say_busy_against_plan(const struct loop *L, double *pace, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    *pace = 0;
    if (!c->plan_busy_s || (L->replica < 0 && L->D > 1) || !L->n_recent)
        return 0;
    double mine[2] = {L->busy_time / (double)L->n_recent, L->hook_time / (double)L->n_recent};
    double *all = malloc(sizeof mine * (size_t)L->wsize);
    if (!all)
        return MP_FAIL(err, NOMEM, "out of memory");
    int rc = L->wsize > 1 ? mp_xport_allgather(L->x, mine, all, sizeof mine,
                                               "each rank's busy time", err)
                          : (all[0] = mine[0], all[1] = mine[1], 0);
    /* The ranks' mean pace against their price: what the machine's cores gave this run. */
    int n_pace = 0;
    for (int r = 0; !rc && r < L->wsize; r++) {
        double want = c->plan_busy_s[r % c->P], busy = all[2 * r] - all[2 * r + 1];
        if (want > 0 && busy > 0)
            *pace += busy / want, n_pace++;
    }
    *pace = n_pace ? *pace / n_pace : 0;
    if (!rc && L->wrank == 0 && (c->progress || !c->quiet)) {
        /* One write of the whole line: stderr is unbuffered, and under mpirun another rank's
         * line landed inside this one when it went out in pieces (test_cli_calib failed a CI
         * run on it). Nine ranks at most, each under 40 bytes. */
        char line[512];
        int n = snprintf(line, sizeof line,
                         "plan: busy a step (passes and optimizer), measured against predicted:");
        for (int r = 0; r < L->wsize && n < (int)sizeof line; r++) {
            double want = c->plan_busy_s[r % c->P];
            if (r == 8 && L->wsize > 9) {
                n += snprintf(line + n, sizeof line - (size_t)n, " ... (%d ranks more)",
                              L->wsize - 8);
                break;
            }
            double busy = all[2 * r] - all[2 * r + 1];
            n += snprintf(line + n, sizeof line - (size_t)n, "%s rank %d %.3f ms (%+.1f%%)",
                          r ? "," : "", r, busy * 1e3,
                          want > 0 ? 100.0 * (busy / want - 1.0) : 0.0);
        }
        fprintf(stderr, "%s\n", line);
        say_reduction_work(L, all);
    }
    free(all);
    return rc;
}

#define PACE_GAP 1.10 /* replicas of a stage this far apart per sample are named */

/* Rank 0, after a run whose replicas had ranks of their own: the replica of a stage that
 * computed PACE_GAP longer per sample than another. They run the same layers on the same
 * shapes, so the difference is their cores': on a 2-core EPYC Zen5 VM one vCPU ran a GEMM 10-20%
 * slower than the other for minutes at a time, alone or beside the other alike, and a 2-replica
 * job waits for the slower one every step (gpt.mp: rank 1's passes 15% longer than rank 0's). */
static void say_replica_pace(const struct loop *L)
{
    const struct mp_train_cfg *c = L->cfg;
    if (L->wrank != 0 || L->D < 2 || L->replica < 0 || (!c->progress && c->quiet))
        return;
    const double *samples = L->pace + (size_t)L->D * (size_t)c->P;
    for (int s = 0; s < c->P; s++) {
        int lo = -1, hi = -1;
        double v_lo = 0, v_hi = 0;
        for (int r = 0; r < L->D; r++) {
            double v = samples[r] > 0 ? L->pace[r * c->P + s] / samples[r] : 0;
            if (!(v > 0))
                continue;
            if (lo < 0 || v < v_lo)
                lo = r, v_lo = v;
            if (hi < 0 || v > v_hi)
                hi = r, v_hi = v;
        }
        if (lo >= 0 && v_hi > PACE_GAP * v_lo)
            fprintf(stderr, "replicas: rank %d computed %.0f%% longer per sample than rank %d on "
                    "the same layers: its core ran slower (another process on it, or a VM "
                    "whose host shares it); every step waits for the slowest replica\n",
                    hi * c->P + s, 100 * (v_hi / v_lo - 1), lo * c->P + s);
    }
}

int mp__train_report(const struct loop *L, double *pace, struct mp_err *err)
{
    say_against_plan(L);
    if (say_busy_against_plan(L, pace, err))
        return -1;
    say_replica_pace(L);
    return 0;
}
