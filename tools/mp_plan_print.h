/* The human-readable table of a plan on stdout (`mpipe plan` without --json): the header line,
 * each stage's layers, ranks, host, cores, compute, messages, memory and recomputation, the
 * predicted step and the bottleneck. */
#ifndef MP_PLAN_PRINT_H
#define MP_PLAN_PRINT_H
#include "mp_plan.h"

void mp_plan_print_table(const struct mp_plan *p);

#endif
