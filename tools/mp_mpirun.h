/* Starting an MPI job from `mpipe plan`, which is not one: the checks first and the path of this
 * mpipe for the job to run (mp_calib_mpirun.c). The calibration's 2-rank benchmarks
 * (mp_calib_cache.h) and the trial runs of `plan --try` (mp_plan_try.h) both start jobs. */
#ifndef MP_MPIRUN_H
#define MP_MPIRUN_H
#include <stddef.h>

/* Why no MPI job can be started from here (this process runs inside one; root without Open MPI's
 * ALLOW variables, which makes mpirun refuse), or NULL. */
const char *mp_mpirun_why_not(void);
/* This mpipe's path into exe (for the job to run); why not, or NULL. */
const char *mp_mpirun_self(char *exe, size_t len);
#endif
