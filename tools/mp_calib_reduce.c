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
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_calib.h"
#include "mp_calib_cache.h"

const char *mp__calib_mpirun_why_not(void)
{
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK"))
        return "this plan runs inside an MPI job, which cannot start another";
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return "this machine has one core";
    if (geteuid() == 0 &&
        (!getenv("OMPI_ALLOW_RUN_AS_ROOT") || !getenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")))
        return "running as root without OMPI_ALLOW_RUN_AS_ROOT=1 and "
               "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, mpirun refuses";
    return NULL;
}

const char *mp__calib_self(char *exe, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", exe, len - 1);
    if (n <= 0)
        return "cannot name this mpipe (/proc/self/exe)";
    exe[n] = 0;
    if (strchr(exe, '\''))
        return "this mpipe's path has a quote in it";
    return NULL;
}

/* Runs the benchmark and reads its rows into r; the reason on failure. */
static const char *run(struct mp_calib_rates *r)
{
    char exe[4096], cmd[4400];
    const char *why_not = mp__calib_self(exe, sizeof exe);
    if (why_not)
        return why_not;
    snprintf(cmd, sizeof cmd,
             "timeout 120 mpirun -np 2 --bind-to core -x BLIS_NUM_THREADS=1 '%s' bench reduce "
             "--json 2>/dev/null",
             exe);
    FILE *p = popen(cmd, "r");
    if (!p)
        return "cannot start mpirun";
    json_error_t je;
    json_t *root = json_loadf(p, 0, &je);
    int status = pclose(p);
    json_t *rows = json_object_get(root, "rows"), *o;
    const char *why = NULL;
    if (status != 0 || !json_is_array(rows) || json_array_size(rows) < 2)
        why = "`mpirun -np 2 mpipe bench reduce` failed (is mpirun on the PATH?)";
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
