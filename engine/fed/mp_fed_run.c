/* `mpipe fed`'s entry (mp_fed.h): checks the rank count, loads the data, makes the split
 * (identically on every rank from the seed, never sent) and starts each rank's role: rank 0 the
 * server (mp_fed_server.c), the others clients (mp_fed_client.c). The top of the fed room: it
 * includes the roles, and they include only the shared model helpers below them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"

int mp_fed_run(const struct mp_fed_cfg *cfg, struct mp_xport *x, struct mp_fed_result *r,
               struct mp_err *err)
{
    memset(r, 0, sizeof *r);
    int size = mp_xport_size(x);
    if (size != cfg->clients + 1)
        return MP_FAIL(err, USAGE, "%d ranks for %d clients: run with mpirun -np %d (rank 0 is "
                       "the server, ranks 1..%d the clients)", size, cfg->clients,
                       cfg->clients + 1, cfg->clients);
    struct mp_data d;
    const struct mp_model *m = cfg->model;
    if (mp_data_load(&d, cfg->data_src, mp_layer_in_len(&m->layers[1]), mp_model_data_classes(m),
                     cfg->seed, err))
        return -1;
    struct mp_fed_split split;
    int rc = mp_fed_split_make(&split, &cfg->split, d.train.y, d.train.n, d.n_classes,
                               cfg->clients, cfg->seed, err);
    if (!rc && mp_xport_rank(x) == 0)
        rc = mp__fed_server(cfg, x, &d, &split, r, err);
    else if (!rc)
        rc = mp__fed_client(cfg, x, &d, &split, err);
    mp_fed_split_free(&split);
    mp_data_free(&d);
    return rc;
}
