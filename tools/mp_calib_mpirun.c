/* The 2-rank MPI jobs `mpipe plan` starts to measure this machine (mp_calib_cache.h): `plan` is
 * not an MPI job, so it runs `timeout 120 mpirun -np 2 ... <this mpipe> bench NAME --json` and
 * reads the rows (the data-parallel reduction, mp_calib_reduce.c; the links, mp_calib_links.c).
 * Both need the same checks first, the same command and the same reading of its output. The
 * checks and this mpipe's path serve `plan --try`'s runs too (mp_mpirun.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_calib_cache.h"
#include "mp_mpirun.h"

const char *mp_mpirun_why_not(void)
{
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK"))
        return "this plan runs inside an MPI job, which cannot start another";
    if (geteuid() == 0 &&
        (!getenv("OMPI_ALLOW_RUN_AS_ROOT") || !getenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")))
        return "running as root without OMPI_ALLOW_RUN_AS_ROOT=1 and "
               "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, mpirun refuses";
    return NULL;
}

const char *mp__calib_mpirun_why_not(void)
{
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return "this machine has one core";
    return mp_mpirun_why_not();
}

const char *mp_mpirun_self(char *exe, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", exe, len - 1);
    if (n <= 0)
        return "cannot name this mpipe (/proc/self/exe)";
    exe[n] = 0;
    if (strchr(exe, '\''))
        return "this mpipe's path has a quote in it";
    return NULL;
}

const char *mp__calib_bench_rows(const char *launch, const char *name, const char *args,
                                 size_t min_rows, json_t **root)
{
    static char failed[96];
    char exe[4096], cmd[8192];
    *root = NULL;
    const char *why = mp_mpirun_self(exe, sizeof exe);
    if (why)
        return why;
    snprintf(cmd, sizeof cmd,
             "timeout 120 mpirun -np 2 %s -x BLIS_NUM_THREADS=1 '%s' bench %s %s--json "
             "2>/dev/null",
             launch, exe, name, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return "cannot start mpirun";
    json_error_t je;
    *root = json_loadf(p, 0, &je);
    int status = pclose(p);
    json_t *rows = json_object_get(*root, "rows");
    if (status == 0 && json_is_array(rows) && json_array_size(rows) >= min_rows)
        return NULL;
    json_decref(*root);
    *root = NULL;
    snprintf(failed, sizeof failed, "`mpirun -np 2 mpipe bench %s` failed (is mpirun on the PATH?)",
             name);
    return failed;
}
