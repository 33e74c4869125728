/* Calibration of the data-parallel reduction (mp_calib_cache.h's reduce rows): `mpipe plan` is not
 * an MPI job, so it runs one, `mpirun -np 2 --bind-to core <this mpipe> bench reduce --json`, three
 * times, once per machine (the rows are cached with the other rates). Why measure rather than
 * price the link: between processes of one host every byte of the reduction is copied and added by
 * the ranks' own cores, in two hand-shaken phases per bucket; on a 2-core EPYC Zen4 VM the link
 * model priced models/mlp.mp's 15.9 MB at 1.3 ms a step and the reduction took 3.5-5 ms (2
 * replicas predicted +13-19% too fast), and 256 KB took 162 µs where the link model said 22.
 *
 * Where it cannot run (no mpirun on the PATH, root without Open MPI's two ALLOW variables, fewer
 * than 2 cores, already inside an MPI job, more than 2 minutes) the plan says why on stderr and
 * prices the reduction with the link model as before. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_calib.h"
#include "mp_calib_cache.h"

/* Separate 2-rank jobs the rows are the median of. One job's rows are all slow or all fast: on the
 * EPYC Zen4 VM 2 of 12 jobs moved 1 MB in 567-643 us where the others took 117-150, 2-replica
 * training met such jobs too (one rank 15-35% slower for the whole job, 4 of 24), and a plan that
 * met one priced tiny_mlp.mp's reduction at 163 us a step and its 2 replicas 16% slow. */
#define LAUNCHES 3

/* Runs the benchmark once: its rows into bytes[] and s[0], s[stride], ..., *n of them; the reason
 * on failure. */
static const char *launch(double *bytes, double *s, size_t stride, size_t *n)
{
    json_t *root, *o;
    const char *why = mp__calib_bench_rows("--bind-to core", "reduce", "", 2, &root);
    json_t *rows = json_object_get(root, "rows");
    size_t i;
    *n = 0;
    json_array_foreach(why ? NULL : rows, i, o)
    {
        double b = json_number_value(json_object_get(o, "bytes"));
        double t = json_number_value(json_object_get(o, "seconds"));
        if (*n == MP_CALIB_REDUCE_MAX || !(b > 0) || !(t > 0) || (*n && b <= bytes[*n - 1])) {
            why = "`mpipe bench reduce` gave rows out of order or out of range";
            *n = 0;
            break;
        }
        bytes[*n] = b, s[*n * stride] = t;
        (*n)++;
    }
    json_decref(root);
    return why;
}

/* The rows of LAUNCHES jobs into r, each size's seconds their median; the reason on failure. */
static const char *run(struct mp_calib_rates *r)
{
    double bytes[LAUNCHES][MP_CALIB_REDUCE_MAX], s[MP_CALIB_REDUCE_MAX][LAUNCHES];
    size_t n[LAUNCHES];
    for (int k = 0; k < LAUNCHES; k++) {
        const char *why = launch(bytes[k], &s[0][k], LAUNCHES, &n[k]);
        if (why)
            return why;
        if (n[k] != n[0] || memcmp(bytes[k], bytes[0], n[0] * sizeof bytes[0][0]))
            return "`mpipe bench reduce` gave other sizes from one run to the next";
    }
    for (size_t i = 0; i < n[0]; i++)
        r->reduce_bytes[i] = bytes[0][i], r->reduce_s[i] = mp_bench_median(s[i], LAUNCHES);
    r->n_reduce = n[0];
    return NULL;
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
            "(mpirun -np 2 mpipe bench reduce, %d times)\n",
            mp__calib_now() - t0, LAUNCHES);
}
