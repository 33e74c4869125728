/* The lean of a layout's runs on this machine against its price (mp_cost.h mp_cost_lean). */
#include <string.h>

#include "mp_cost.h"
#include "mp_median.h"

double mp_cost_run_lean(const struct mp_cost_run *r)
{
    return r->priced_s > 0 && r->measured_s > 0 && r->pace > 0
               ? r->measured_s / (r->priced_s * r->pace)
               : 0;
}

double mp_cost_lean(const struct mp_cost_table *t, const char *digest, int P, int D, size_t batch,
                    int *n_runs)
{
    double ratio[MP_COST_LEAN_RUNS];
    int n = 0;
    *n_runs = 0;
    /* Newest first: the machine's present, not its past, is what the next run meets. */
    for (int i = t ? t->n_runs - 1 : -1; i >= 0 && n < MP_COST_LEAN_RUNS; i--) {
        const struct mp_cost_run *r = &t->runs[i];
        if (strcmp(r->digest, digest) || r->P != P || r->D != D || r->batch != batch)
            continue;
        double q = mp_cost_run_lean(r); /* 0 (a figure missing) is left out with the disturbed */
        if (q >= 0.5 && q <= 2.0)
            ratio[n++] = q;
    }
    if (n < MP_COST_LEAN_MIN)
        return 1.0;
    *n_runs = n;
    return mp_median(ratio, (size_t)n);
}
