/* `mpipe plan --try K` (mp_cmd_plan.c): the layouts the plan priced best, each run on this machine
 * for about a second a round, before it picks. Where the price of two layouts is a few per cent
 * apart, the machine decides which one runs faster (on a 2-core EPYC Zen5 VM the plan's pick lost
 * to a layout priced 1-4% behind it in 3 of 5 models' 2-rank plans, by 4.5-12%, docs/performance.md),
 * and a trial of a few seconds settles it where a price cannot. */
#ifndef MP_PLAN_TRY_H
#define MP_PLAN_TRY_H
#include <stddef.h>

#include "mp_err.h"
#include "mp_plan.h"

#define MP_TRY_ROUNDS 3     /* every layout once a round; its figure its best round's */
#define MP_TRY_SECONDS 1.0  /* about this long a run, by the plan's own step (6 steps at least) */
#define MP_TRY_WITHIN 1.20  /* layouts priced within this factor of the best's step are run */

/* Every layout a plan priced (its key and predicted step), for --try to build the best again. */
struct mp_try_key {
    enum mp_sched_kind schedule;
    int P, D, M;
    double step_s;
};
struct mp_try_list {
    struct mp_try_key *v;
    int n, cap;             /* free(v) when done */
};
/* Notes k (up to 4096 layouts; a plan of 2 to 8 ranks prices a few dozen: 4 schedules x up to 8
 * M x each (P, D)); out of memory, the rest go unnoted. */
void mp_try_list_add(struct mp_try_list *l, struct mp_try_key k);
/* The K best-priced layouts into out: p's own first, then by price (the first noted of equals
 * first), none priced over MP_TRY_WITHIN of p's step, each once. Returns how many. */
int mp_try_list_best(const struct mp_try_list *l, const struct mp_plan *p, int K,
                     struct mp_try_key *out);

struct mp_try_job {
    const char *model;      /* the model file, as `mpipe train` takes it */
    int tokens;             /* a token model: trained on its default text; else synthetic images */
    int oversubscribed;     /* more ranks than cores: launched as the plan's launch line says */
};

/* Runs plans[0..n) MP_TRY_ROUNDS times in turns (every layout once a round, the order reversed
 * every other round, so a slow minute of the machine falls on all of them), each as
 * `mpirun -np P*D ... mpipe train MODEL --plan FILE --max-steps S`, printing a line on stderr per
 * run. measured[i] gets the best samples/s of plan i's runs (each run's median step over the
 * batch), 0 when none finished: the machine's slow spells only ever slow a run down (on a 2-core
 * EPYC Zen5 VM, 2 replicas of tiny.mp ran 670-720k samples/s in some seconds and 890k in the
 * next, whatever the layout), so a layout's best run is its own speed and its median the luck
 * of its minutes: the median of 3 rounds once made M 8 "30% faster" than M 2 and M 4, which had
 * each run 2 of their 3 rounds in a slow spell. Returns how many plans were measured; -1 with err set only when
 * no job can start here at all (err says why and what to do). */
int mp_plan_try(const struct mp_try_job *job, const struct mp_plan *plans, int n,
                double *measured, struct mp_err *err);
/* After mp_plan_try: tried[0..n) filled from plans and their figures, the fastest (the first of
 * equals, so a tie keeps the best-predicted plans[0]) marked picked; says on stderr when the runs
 * overrode the price or none ran. Returns the index of the fastest. */
int mp_plan_try_pick(const struct mp_plan *plans, int n, const double *measured,
                     struct mp_plan_trial *tried);
/* The layouts p->tried on stdout, under the plan's table (nothing without --try). */
void mp_plan_try_print(const struct mp_plan *p);
/* A layout in a few words, as --try's lines print it: "zbv P=2 D=1 M=2". */
void mp_plan_try_name(const struct mp_plan *p, char *out, size_t len);

/* Layouts priced within this factor of the pick's step are named beside it: on a 2-core EPYC Zen5
 * VM the pick lost to a layout priced 1.4, 2.6, 3.5, 4.6 and 14% behind it in the five groups it
 * lost of two plan-vs-measured tables (2026-12-08), and by 0.3-4% in the tables before. */
#define MP_CLOSE_WITHIN 1.05
/* The layouts of l (every layout the plan priced) within MP_CLOSE_WITHIN of p's step, on stdout
 * in one `close:` line under the plan's table (the nearest 4 named, the rest counted), with the
 * --try that would settle it; nothing when none is. chunks: --chunks (the V of interleaved). */
void mp_plan_close_print(const struct mp_try_list *l, const struct mp_plan *p, int chunks);
#endif
