/* The files rank 0 of a training run writes (mp_train_loop.h mp__train_check_outputs), checked
 * before the run starts. */
#include <stdlib.h>

#include "mp_ckpt.h"
#include "mp_output.h"
#include "mp_train_loop.h"

/* Rank 0 writes --save-weights and --trace after the last step and --metrics from the first: a
 * path it cannot write is an error before training, on every rank alike (a typo in
 * --save-weights used to cost a whole run: 30 steps of gpt.mp on 2 ranks, then exit 3). And a
 * --checkpoint directory it cannot make or write, or, for a run that does not resume, one holding
 * another run's checkpoints, which its saves would prune (mp_ckpt_check_dir). */
int mp__train_check_outputs(struct loop *L, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    const char *path[3] = {c->save_weights, c->trace_path, c->metrics_path};
    const char *flag[3] = {"--save-weights", "--trace", "--metrics"};
    int bad = 0; /* rank 0's verdict: 0 or its error's code */
    for (int i = 0; L->wrank == 0 && i < 3 && !bad; i++)
        bad = path[i] && mp_output_writable(path[i], flag[i], err) ? (int)err->code : 0;
    if (L->wrank == 0 && !bad && c->ckpt_dir && mp_ckpt_check_dir(c->ckpt_dir, c->resume, err))
        bad = (int)err->code;
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
            mp_err_set(err, (enum mp_status)all[0], __FILE__, __LINE__,
                       "rank 0 found an output it cannot write to");
        bad = all[0];
        free(all);
    }
    if (!bad)
        return 0;
    /* Every rank has rank 0's verdict: rank 0 says it once (set here, as mp_err_mark_shared
     * takes usage and input errors only and this may be an I/O one). */
    err->shared = 1;
    return -1;
}
