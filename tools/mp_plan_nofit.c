/* `mpipe plan` when no layout fits --memory-per-rank (DESIGN.md §10): the cap a layout needs,
 * searched over the splits and micro-batch counts a plan would try, and the fewest stages that
 * fit, said in the error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_plan_build.h"

/* The cap layout (P, D) needs with recomputation `mode`, at M and this schedule, in whole MiB (0
 * if it cannot be built). First the split chosen without a cap: its largest rank's predicted peak
 * (under auto a rank recomputes only when that makes it smaller, as it would under the smallest
 * cap that fits, so the rank's figure is the smaller of the two; both counts see the same split).
 * That cap fits; a smaller one may, with another split, and is searched for. */
static double layout_need_at(const struct plan_env *e, int P, int D, int M,
                             enum mp_recompute mode, struct mp_err *err)
{
    struct plan_env x = *e;
    struct mp_plan keep, rc;
    memset(&keep, 0, sizeof keep);
    memset(&rc, 0, sizeof rc);
    double need = 0;
    x.mem.cap = 0;
    x.mem.mode = mode == MP_RECOMPUTE_ALL ? MP_RECOMPUTE_ALL : MP_RECOMPUTE_NONE;
    if (!mp__plan_build(&x, P, D, M, &keep, err)) {
        x.mem.mode = MP_RECOMPUTE_ALL;
        int both = mode == MP_RECOMPUTE_AUTO && !mp__plan_build(&x, P, D, M, &rc, err);
        for (int v = 0; v < keep.n_stages; v++) {
            double b = (double)keep.stages[v].peak_mem_bytes;
            if (both && rc.stages[v].first_layer == keep.stages[v].first_layer)
                b = fmin(b, (double)rc.stages[v].peak_mem_bytes);
            need = fmax(need, b);
        }
    }
    mp_plan_free(&keep);
    mp_plan_free(&rc);
    /* Under a cap the partitioner may also move layers to the rank with room: the smallest cap
     * in MiB that a plan with it accepts (gpt.mp, 2 stages, 1F1B, --recompute none: the split
     * chosen without a cap needs 89M, another fits 86M). */
    int hi = (int)ceil(need / 1048576.0), lo = 1;
    x.mem.mode = mode;
    while (need > 0 && lo < hi) {
        int mid = lo + (hi - lo) / 2;
        struct mp_plan q;
        struct mp_err ignored;
        memset(&q, 0, sizeof q);
        x.mem.cap = mid * 1048576.0;
        if (mp__plan_build(&x, P, D, M, &q, &ignored) == 0)
            hi = mid;
        else
            lo = mid + 1;
        mp_plan_free(&q);
    }
    return need > 0 ? hi * 1048576.0 : 0;
}

/* The smallest of layout_need_at over the micro-batch counts a plan of (P, D) would consider
 * (--micro-batches, else those of build_best_m): under a cap the plan takes whichever M fits,
 * and the advice at the default M alone asked gpt.mp's 2 stages for 91M where 64M planned. */
static double layout_need(const struct plan_env *e, int P, int D, enum mp_recompute mode,
                          struct mp_err *err)
{
    int M0;
    if (mp__plan_micro_for(e->a, P, D, &M0, err))
        return 0;
    if (e->a->micro)
        return layout_need_at(e, P, D, M0, mode, err);
    size_t B = (size_t)e->a->batch;
    double best = 0;
    for (int M = mp__plan_next_micro(B, P, D, 0); M; M = mp__plan_next_micro(B, P, D, M)) {
        double need = layout_need_at(e, P, D, M, mode, err);
        if (need > 0 && (best <= 0 || need < best))
            best = need;
    }
    return best;
}

/* The planner's "rank R needs X MiB, over --memory-per-rank C" is the figure of the plan it makes
 * without a cap (its fastest split, M and schedule); the cap this layout needs (`need`, searched
 * over the splits the partitioner makes under a cap and the M a plan tries) can be less, and the
 * two read as a contradiction ("needs 87 MiB ... a cap of at least 82M", with --schedule and
 * --micro-batches given): said which plan the first figure is (1 when it did). */
static int qualify_need(char *what, size_t cap, double need)
{
    char *at = strstr(what, " needs "), *over = strstr(what, ", over --memory-per-rank");
    if (!at || !over || need <= 0 || strtod(at + 7, NULL) <= ceil(need / 1048576.0))
        return 0;
    char rest[sizeof ((struct mp_err *)0)->msg];
    snprintf(rest, sizeof rest, "%s", over);
    snprintf(over, cap - (size_t)(over - what), " in the plan made without a cap%s", rest);
    return 1;
}

/* Nothing fits the cap: say what would (DESIGN.md §10), the fewest stages that fit (one replica,
 * the same --recompute, at any M) and the cap the requested layout needs with that --recompute
 * (--stages auto on N ranks: the smallest over its splits of N, named); under --recompute none
 * also the cap it would need if it could recompute. */
int mp__plan_explain_no_fit(struct plan_env *e, int P, int D, int N_auto, struct mp_err *err)
{
    char what[sizeof err->msg], also[64] = "", layout[96] = "this layout", how[64] = "";
    snprintf(what, sizeof what, "%s", err->msg);
    double need = 0, rc_need = 0;
    for (int d = 1; d <= (N_auto ? N_auto : 1); d++) {
        int p = N_auto ? N_auto / d : P, dd = N_auto ? d : D;
        if (N_auto && (N_auto % d || (e->a->dp && d != e->a->dp)))
            continue;
        double n = layout_need(e, p, dd, e->mem.mode, err);
        if (n > 0 && (need <= 0 || n < need)) {
            need = n;
            if (N_auto)
                snprintf(layout, sizeof layout, "the %d ranks (as %d stage%s x %d replica%s)",
                         N_auto, p, p > 1 ? "s" : "", dd, dd > 1 ? "s" : "");
        }
        if (e->mem.mode == MP_RECOMPUTE_NONE) {
            double r = layout_need(e, p, dd, MP_RECOMPUTE_AUTO, err);
            if (r > 0 && (rc_need <= 0 || r < rc_need))
                rc_need = r;
        }
    }
    if (rc_need > 0 && ceil(rc_need / 1048576.0) < ceil(need / 1048576.0))
        snprintf(also, sizeof also, " (%.0fM with --recompute auto)", ceil(rc_need / 1048576.0));
    /* The two figures read as a contradiction without the reason (a user tour): say it. */
    if (qualify_need(what, sizeof what, need))
        snprintf(how, sizeof how, ", under which it splits and micro-batches to fit");
    struct mp_plan q;
    int M;
    for (int P2 = P + 1; P2 <= e->m->n_units - 1; P2++) {
        memset(&q, 0, sizeof q);
        if (mp__plan_micro_for(e->a, P2, 1, &M, err) == 0 &&
            mp__plan_best_m(e, P2, 1, M, &q, err) == 0) {
            mp_plan_free(&q);
            return MP_FAIL(err, USAGE, "%s: the fewest stages that fit under this cap are %d "
                           "(mpipe plan %s --stages %d --memory-per-rank %.0fM), or give %s a "
                           "cap of at least %.0fM%s%s", what, P2, e->a->model, P2,
                           floor(e->mem.cap / 1048576.0), layout, ceil(need / 1048576.0), how,
                           also);
        }
        mp_plan_free(&q);
    }
    return MP_FAIL(err, USAGE, "%s: no number of stages fits under this cap; give %s a cap of "
                   "at least %.0fM%s%s", what, layout, ceil(need / 1048576.0), how, also);
}
