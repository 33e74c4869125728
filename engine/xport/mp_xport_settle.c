/* The error agreement at a point every rank reaches (mp_xport.h): after a step each rank does
 * alone with the same inputs (loading the model, the plan, the data), the ranks count who failed.
 * An error all of them found is one error, said once by rank 0 (mp_cli_report_shared); one that
 * only some found is their own, and only they can say what it is; a rank that found none must not
 * go on into the run, where it would wait for the failed ranks until the deadline (a fed client
 * with another --data hung the job for a minute). */
#include "mp_xport.h"

/* A collective of the agreement failed (a peer died, the deadline passed): that error is this
 * rank's own, unless it already had one. */
static int lost(int rc, const struct mp_err *e, struct mp_err *err)
{
    if (!rc)
        *err = *e;
    err->shared = 0;
    return -1;
}

int mp_xport_settle(struct mp_xport *x, int rc, const char *what, struct mp_err *err)
{
    int size = mp_xport_size(x);
    if (size < 2)
        return rc;
    double n = rc ? 1 : 0;
    struct mp_err e;
    mp_err_clear(&e);
    if (mp_xport_allreduce_sum(x, &n, 1, what, &e))
        return lost(rc, &e, err);
    if (n == 0)
        return 0;
    /* The ranks that found nothing exit with the failed ranks' status (the largest, should they
     * differ): mpirun passes on the first exit code it sees, which is then the same whichever rank
     * exits first. */
    double code = rc ? (double)err->code : 0;
    if (mp_xport_allreduce_max(x, &code, 1, what, &e))
        return lost(rc, &e, err);
    if (rc && n >= size) /* usage or input: the same inputs gave the same error everywhere */
        mp_err_mark_shared(err);
    else if (rc)
        err->shared = 0;
    else {
        mp_err_set(err, (enum mp_status)code, __FILE__, __LINE__, "%.0f of the %d ranks found "
                   "an error in %s that rank 0 did not: every rank must be given the same", n,
                   size, what);
        if (mp_xport_rank(x) != 0) /* rank 0 says it for all the ranks that found nothing */
            err->msg[0] = 0;
    }
    /* Every rank leaves with an error from here: they can meet before exiting, so that mpirun,
     * seeing the first exit, does not end a rank before its line is out. */
    err->all_failed = 1;
    return -1;
}
