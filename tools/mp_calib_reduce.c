/* Calibration of the data-parallel reduction (mp_calib_cache.h's reduce rows): `mpipe plan` is not
 * an MPI job, so it runs one, `mpirun -np 2 --bind-to core <this mpipe> bench reduce --json`, once
 * per machine (the rows are cached with the other rates). Why measure rather than price the link:
 * between processes of one host every byte of the reduction is copied and added by the ranks' own
 * cores, in two hand-shaken phases per bucket; on a 2-core EPYC Zen4 VM the link model priced
 * models/mlp.mp's 15.9 MB at 1.3 ms a step and the reduction took 3.5-5 ms (2 replicas predicted
 * +13-19% too fast), and 256 KB took 162 µs where the link model said 22.
 *
 * Where it cannot run (no mpirun on the PATH, root without Open MPI's two ALLOW variables, fewer
 * than 2 cores, already inside an MPI job, more than 2 minutes) the plan says why on stderr and
 * prices the reduction with the link model as before. */
#include <jansson.h>
#include <stdio.h>

#include "mp_calib.h"
#include "mp_calib_cache.h"

/* Runs the benchmark and reads its rows into r; the reason on failure. */
static const char *run(struct mp_calib_rates *r)
{
    json_t *root, *o;
    const char *why = mp__calib_bench_rows("--bind-to core", "reduce", "", 2, &root);
    json_t *rows = json_object_get(root, "rows");
    size_t i;
    r->n_reduce = 0;
    json_array_foreach(why ? NULL : rows, i, o)
    {
        double bytes = json_number_value(json_object_get(o, "bytes"));
        double s = json_number_value(json_object_get(o, "seconds"));
        if (r->n_reduce == MP_CALIB_REDUCE_MAX || !(bytes > 0) || !(s > 0) ||
            (r->n_reduce && bytes <= r->reduce_bytes[r->n_reduce - 1])) {
            why = "`mpipe bench reduce` gave rows out of order or out of range";
            r->n_reduce = 0;
            break;
        }
        r->reduce_bytes[r->n_reduce] = bytes, r->reduce_s[r->n_reduce] = s;
        r->n_reduce++;
    }
    json_decref(root);
    return why;
}

void mp__calib_reduce(struct mp_calib_rates *r, int recalibrate)
{
    if (r->n_reduce && !recalibrate)
        return;
    r->n_reduce = 0;
    const char *why = mp__calib_mpirun_why_not();
    double t0 = mp__calib_now();
    if (!why)
        why = run(r);
    if (why) {
        fprintf(stderr,
                "mpipe plan: warning: could not measure the data-parallel reduction between "
                "ranks: %s; it is priced from the link model\n",
                why);
        return;
    }
    r->dirty = 1;
    fprintf(stderr,
            "mpipe plan: measured the data-parallel reduction between 2 ranks in %.1f s "
            "(mpirun -np 2 mpipe bench reduce)\n",
            mp__calib_now() - t0);
}
