/* What server and clients of `mpipe fed` share (mp_fed.h): the check of the rank count, data
 * loading and the split (computed identically on every rank from the seed, never sent), and one
 * process's model as a single P = 1 stage, run by the ordinary executor with one micro-batch per
 * step. The roles themselves live in mp_fed_server.c and mp_fed_client.c, and mp_fed.c starts
 * them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"

int mp__fed_model_init(struct mp_fed_model *fm, const struct mp_model *m, size_t batch,
                       int state_slots, uint64_t seed, struct mp_xport *x, struct mp_err *err)
{
    memset(fm, 0, sizeof *fm);
    fm->bounds[0] = 1;
    fm->bounds[1] = m->n_layers;
    if (mp_sched_make(&fm->sched, MP_SCHED_1F1B, 1, 1, 1, err))
        return -1;
    if (mp_stage_init(&fm->st, m, fm->bounds, 0, 1, 1, MP_VPLACE_LOOP, 1, batch, state_slots,
                      err))
        return -1;
    /* The same initial weights as `mpipe train --seed`: layer i from (seed, i). */
    for (int i = 0; i < m->n_layers; i++)
        if (mp_layer_n_param(&m->layers[i]))
            mp_layer_init_params(&m->layers[i], fm->st.param + fm->st.layer_off[i], seed);
    if (mp_exec_init(&fm->ex, &fm->st, &fm->sched, x, err))
        return -1;
    fm->exec_ready = 1;
    return 0;
}

void mp__fed_model_free(struct mp_fed_model *fm)
{
    if (fm->exec_ready)
        mp_exec_free(&fm->ex);
    mp_stage_free(&fm->st);
    mp_sched_free(&fm->sched);
    memset(fm, 0, sizeof *fm);
}

int mp__fed_model_eval(struct mp_fed_model *fm, const struct mp_dataset *ds, double *loss,
                       double *acc, struct mp_err *err)
{
    double loss_sum = 0;
    size_t correct = 0;
    if (mp_exec_eval(&fm->ex, ds, &loss_sum, &correct, err))
        return -1;
    *loss = ds->n ? loss_sum / (double)ds->n : 0;
    *acc = ds->n ? (double)correct / (double)ds->n : 0;
    return 0;
}
