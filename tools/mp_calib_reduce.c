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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The rows of LAUNCHES jobs into reduce_bytes, reduce_s and *n_reduce (r's, or another set of the
 * same size), each size's seconds their median; the reason on failure. */
static const char *run(double *reduce_bytes, double *reduce_s, int *n_reduce)
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
        reduce_bytes[i] = bytes[0][i], reduce_s[i] = mp_median(s[i], LAUNCHES);
    *n_reduce = (int)n[0];
    return NULL;
}

/* A slow spell. This VM has spells in which every transfer between its two cores is 4-8x slower,
 * lasting minutes or changing from one job to the next (two `bench reduce` jobs seconds apart:
 * 1 MB in 87 µs, then 482), and a calibration that meets one caches its rows until
 * --recalibrate: one such plan measured 1 MB in 525 µs where other calibrations of the same build
 * measured 64-85, priced every 2-replica plan slow, and tiny_mlp.mp's 2 replicas ran 14% faster
 * than predicted. The yardstick is this core copying the same bytes itself (1 MB in 20-30 µs
 * here): the reduction copies each byte about twice and adds it once, across cores, so outside a
 * spell it takes 2-4 such copies here. Past SUSPECT the rows are measured once more, each size
 * keeping its faster time, and if they still are past it the plan says so (the rows are kept: the
 * spell may be this machine's normal). */
#define SUSPECT 8.0
#define PROBE_BYTES ((size_t)1 << 20)

/* Seconds this core takes to copy n bytes from one warm buffer to another: median of 15. */
static double local_copy_s(size_t n)
{
    char *a = malloc(n), *b = malloc(n);
    double t[15];
    if (!a || !b) {
        free(a), free(b);
        return 0;
    }
    memset(a, 1, n), memset(b, 2, n);
    for (int i = 0; i < 15; i++) {
        double t0 = mp__calib_now();
        memcpy(i % 2 ? a : b, i % 2 ? b : a, n);
        t[i] = mp__calib_now() - t0;
    }
    free(a), free(b);
    return mp_median(t, 15);
}

/* The reduction's seconds at PROBE_BYTES over copy_s (0: no such row, or no yardstick). */
static double slowness(const struct mp_calib_rates *r, double copy_s)
{
    for (int i = 0; i < r->n_reduce && copy_s > 0; i++)
        if (r->reduce_bytes[i] == (double)PROBE_BYTES)
            return r->reduce_s[i] / copy_s;
    return 0;
}

/* The rows, measured once more when they look like a slow spell (above). */
static const char *run_checked(struct mp_calib_rates *r, int *jobs)
{
    const char *why = run(r->reduce_bytes, r->reduce_s, &r->n_reduce);
    *jobs = LAUNCHES;
    double copy = why ? 0 : local_copy_s(PROBE_BYTES), q = slowness(r, copy);
    if (q <= SUSPECT)
        return why;
    double bytes[MP_CALIB_REDUCE_MAX], s[MP_CALIB_REDUCE_MAX];
    int n = 0;
    *jobs += LAUNCHES;
    if (!run(bytes, s, &n) && n == r->n_reduce)
        for (int i = 0; i < n; i++)
            r->reduce_s[i] = fmin(r->reduce_s[i], s[i]);
    q = slowness(r, copy);
    if (q > SUSPECT)
        fprintf(stderr,
                "mpipe plan: warning: the data-parallel reduction between 2 ranks moved 1 MB in "
                "%.0f us, %.0fx the %.0f us this core takes to copy it, twice in a row: if the "
                "machine was busy, every --dp plan is priced slow until `mpipe plan "
                "--recalibrate` measures it again\n",
                1e6 * q * copy, q, 1e6 * copy);
    return NULL;
}

void mp__calib_reduce(struct mp_calib_rates *r, int recalibrate)
{
    if (r->n_reduce && !recalibrate)
        return;
    r->n_reduce = 0;
    const char *why = mp__calib_mpirun_why_not();
    double t0 = mp__calib_now();
    int jobs = 0;
    if (!why)
        why = run_checked(r, &jobs);
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
            mp__calib_now() - t0, jobs);
}
