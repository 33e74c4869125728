/* The files rank 0 of a training run writes (mp_train_loop.h mp__train_check_outputs), checked
 * before the run starts. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_train_loop.h"

/* Whether path can be written where rank 0 will write it: not a directory, and a file can be
 * made beside it (the writers make PATH.tmp.PID there, then rename it). */
static int can_write(const char *path, const char *flag, struct mp_err *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return MP_FAIL(err, IO, "%s %s: is a directory: give a file name", flag, path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return MP_FAIL(err, IO, "%s %s: cannot write: %s (checked before training, so that "
                       "nothing is lost at the end)", flag, path, strerror(errno));
    close(fd);
    unlink(tmp);
    return 0;
}

/* Rank 0 writes --save-weights and --trace after the last step and --metrics from the first: a
 * path it cannot write is an error before training, on every rank alike (a typo in
 * --save-weights used to cost a whole run: 30 steps of gpt.mp on 2 ranks, then exit 3). */
int mp__train_check_outputs(struct loop *L, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    const char *path[3] = {c->save_weights, c->trace_path, c->metrics_path};
    const char *flag[3] = {"--save-weights", "--trace", "--metrics"};
    int bad = 0;
    for (int i = 0; L->wrank == 0 && i < 3 && !bad; i++)
        bad = path[i] && can_write(path[i], flag[i], err);
    if (L->wsize > 1) {
        int *all = calloc((size_t)L->wsize, sizeof(int));
        if (!all)
            return MP_FAIL(err, NOMEM, "out of memory");
        struct mp_err kept; /* rank 0's own error stays in err */
        mp_err_clear(&kept);
        if (mp_xport_allgather(L->x, &bad, all, sizeof bad, "rank 0's check of its output files",
                               bad ? &kept : err)) {
            free(all);
            return -1;
        }
        if (all[0] && L->wrank != 0)
            MP_FAIL(err, IO, "rank 0 cannot write an output file");
        bad = all[0];
        free(all);
    }
    if (!bad)
        return 0;
    /* Every rank has rank 0's verdict: rank 0 says it once (mp_err_mark_shared takes usage and
     * input errors only, and this is an I/O one). */
    err->shared = 1;
    return -1;
}
