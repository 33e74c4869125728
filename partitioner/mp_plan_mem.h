/* The planner's memory step (DESIGN.md §10): every rank's exact predicted peak for a plan (the
 * engine's own allocation rules, mp_stage_mem.h), recomputation chosen per stage only where the
 * per-rank cap needs it, and what to tell the user when nothing fits. Pure: no MPI, no hwloc. */
#ifndef MP_PLAN_MEM_H
#define MP_PLAN_MEM_H

#include "mp_err.h"
#include "mp_layer.h"
#include "mp_plan.h"

enum mp_recompute { MP_RECOMPUTE_NONE, MP_RECOMPUTE_AUTO, MP_RECOMPUTE_ALL };

struct mp_plan_mem_cfg {
    int state_slots;         /* optimizer floats per parameter (Adam 2, momentum 1, SGD 0; the
                                stage still keeps one slot for SGD, counted by mp_stage_mem.c) */
    int zero;                /* --zero 1 */
    enum mp_recompute mode;
    double cap;              /* bytes per rank; 0: no cap */
    double data_bytes;       /* what every rank loads for the data (mp_data_bytes_estimate) */
};

/* Sets stages[].recompute (all, none, or auto: the stages of ranks over the cap) and
 * stages[].peak_mem_bytes (the peak of the rank that holds the stage). MP_ERR_USAGE when a rank is
 * over the cap even so; *need (may be NULL) receives the largest rank's bytes either way. */
int mp_plan_memory(struct mp_plan *p, const struct mp_model *m, const struct mp_plan_mem_cfg *c,
                   double *need, struct mp_err *err);

#endif
