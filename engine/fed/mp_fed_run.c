/* `mpipe fed`'s entry (mp_fed.h): checks the options and the rank count, loads the data, makes
 * the split (identically on every rank from the seed, never sent), gives each client's P stages a
 * transport of their own and starts each rank's role: rank 0 the server (mp_fed_server.c), ranks
 * 1 + (k - 1) P .. k P client k's stages (mp_fed_client.c). The top of the fed room: it includes
 * the roles, and they include only the shared helpers below them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"
#include "mp_output.h"

/* `train`'s default M without a plan: the largest divisor of B that is at most 2P (1 for P = 1). */
static int default_micro_batches(size_t batch, int P)
{
    if (P == 1)
        return 1;
    int best = 1;
    for (int m = 1; m <= 2 * P; m++)
        if (batch % (size_t)m == 0)
            best = m;
    return best;
}

static int check_dp(struct mp_fed_cfg *c, struct mp_err *err)
{
    if (c->noise_multiplier > 0 && c->clip_update <= 0)
        return MP_FAIL(err, USAGE, "--noise-multiplier needs --clip-update X (the noise is "
                       "calibrated to the clipped updates' L2 bound)");
    if (c->delta > 0 && c->noise_multiplier <= 0)
        return MP_FAIL(err, USAGE, "--delta is the privacy accountant's: it needs "
                       "--noise-multiplier S");
    if (c->noise_multiplier > 0 && c->agg != MP_FED_AGG_SIZE)
        return MP_FAIL(err, USAGE, "--noise-multiplier adds DP-FedAvg's noise to the plain mean "
                       "of the clipped updates: it does not combine with --aggregate %s",
                       mp_fed_agg_name(c->agg));
    if (c->noise_multiplier > 0 && c->delta <= 0)
        c->delta = 1.0 / pow((double)c->clients, 1.1);
    if (c->noise_multiplier > 0 && c->delta >= 1)
        return MP_FAIL(err, USAGE, "--delta must be below 1 (the default 1/clients^1.1 is %g "
                       "with %d clients: give --delta)", c->delta, c->clients);
    return 0;
}

int mp_fed_cfg_check(struct mp_fed_cfg *c, struct mp_err *err)
{
    int scratch[4096], m = mp_fed_sample(c->seed, 0, c->clients, c->fraction, scratch);
    if (c->attack.k > c->clients)
        return MP_FAIL(err, USAGE, "--attack %d:...: only %d clients", c->attack.k, c->clients);
    if (c->min_clients > m)
        return MP_FAIL(err, USAGE, "--min-clients %d: only %d clients are sampled a round "
                       "(--fraction %g of %d)", c->min_clients, m, c->fraction, c->clients);
    if ((c->agg == MP_FED_AGG_KRUM || c->agg == MP_FED_AGG_MULTIKRUM) && m < 2 * c->krum_f + 3)
        return MP_FAIL(err, USAGE, "--aggregate %s:%d needs at least %d clients a round "
                       "(n > 2f + 2), %d are sampled", mp_fed_agg_name(c->agg), c->krum_f,
                       2 * c->krum_f + 3, m);
    if (c->agg == MP_FED_AGG_TRIMMED && 2 * (int)floor(c->trim_beta * m) >= m)
        return MP_FAIL(err, USAGE, "--aggregate trimmed:%g cuts every one of %d updates",
                       c->trim_beta, m);
    if (c->client_stages < 1)
        c->client_stages = 1;
    if (c->schedule != MP_SCHED_INTERLEAVED && c->chunks > 0 &&
        c->chunks != mp_sched_chunks(c->schedule, c->chunks))
        return MP_FAIL(err, USAGE, "--chunks %d: --schedule %s runs %d chunk%s a rank", c->chunks,
                       mp_sched_name(c->schedule), mp_sched_chunks(c->schedule, c->chunks),
                       mp_sched_chunks(c->schedule, c->chunks) > 1 ? "s" : "");
    if (c->micro_batches <= 0)
        c->micro_batches = default_micro_batches(c->batch, c->client_stages);
    if (c->server_lr <= 0)
        c->server_lr = mp_fed_opt_default_lr(c->server_opt);
    return check_dp(c, err);
}

/* Byte-level text (DESIGN.md §9): the samples to deal out are the training split's windows
 * j·T .. j·T + T (T + 1 bytes each, the last one ending at or before the split's end), and
 * a client's sample indices are their byte offsets, as mp_data_gather takes them. */
static int split_text(struct mp_fed_split *s, const struct mp_fed_cfg *cfg,
                      const struct mp_data *d, struct mp_err *err)
{
    memset(s, 0, sizeof *s);
    size_t T = d->train.sample_len, windows = (d->train.text_len - 1) / T;
    if ((double)windows * (double)T > (double)UINT32_MAX)
        return MP_FAIL(err, USAGE, "fed: %s: %zu training bytes: federated text is limited to "
                       "4 GiB (sample offsets are 32-bit)", cfg->data_src, d->train.text_len);
    if (mp_fed_split_make(s, &cfg->split, NULL, windows, 0, cfg->clients, cfg->seed, err))
        return -1;
    for (size_t i = 0; i < windows; i++)
        s->idx[i] *= (uint32_t)T;
    return 0;
}

int mp_fed_run(const struct mp_fed_cfg *cfg, struct mp_xport *x, struct mp_fed_result *r,
               struct mp_err *err)
{
    memset(r, 0, sizeof *r);
    int size = mp_xport_size(x), rank = mp_xport_rank(x), P = cfg->client_stages, rc = 0;
    if (size != 1 + cfg->clients * P && P == 1)
        rc = MP_FAIL(err, USAGE, "%d ranks for %d clients: run with mpirun -np %d (rank 0 is the "
                     "server, ranks 1..%d the clients)", size, cfg->clients, cfg->clients + 1,
                     cfg->clients);
    else if (size != 1 + cfg->clients * P)
        rc = MP_FAIL(err, USAGE, "%d ranks for %d clients of %d stages: run with mpirun -np %d "
                     "(rank 0 is the server, then each client's %d stages)", size, cfg->clients,
                     P, 1 + cfg->clients * P, P);
    struct mp_fed_layout lay;
    if (!rc)
        rc = mp__fed_layout(cfg, &lay, err);
    struct mp_data d;
    struct mp_fed_split split;
    memset(&d, 0, sizeof d);
    memset(&split, 0, sizeof split);
    const struct mp_model *m = cfg->model;
    if (!rc)
        rc = mp_data_load_model(&d, cfg->data_src, m, cfg->seed, err);
    size_t eval = cfg->eval_windows ? cfg->eval_windows : 256;
    if (!rc && d.train.text && d.test.n > eval)
        d.test.n = eval; /* the server tests the first windows, as `train` does at the end */
    if (!rc && d.train.text)
        rc = split_text(&split, cfg, &d, err);
    else if (!rc)
        rc = mp_fed_split_make(&split, &cfg->split, d.train.y, d.train.n, d.n_classes,
                               cfg->clients, cfg->seed, err);
    /* The server writes --save-weights after the last round: a path it cannot write stops the
     * run now, not after every round was trained. */
    if (!rc && rank == 0 && cfg->save_weights)
        rc = mp_output_writable(cfg->save_weights, "--save-weights", err);
    /* Every rank checked the same options, model and data: an error all of them found, rank 0
     * says; one only some found (another --data on one host), they say, and nobody waits. */
    rc = mp_xport_settle(x, rc, "the options, the model or the data", err);
    struct mp_xport *cx = NULL;
    if (!rc)
        rc = mp_xport_split(x, rank == 0 ? -1 : (rank - 1) / P, rank, &cx, err);
    if (!rc && rank == 0)
        rc = mp__fed_server(cfg, x, &d, &split, r, err);
    else if (!rc)
        rc = mp__fed_client(cfg, x, cx, &d, &split, err);
    mp_fed_split_free(&split);
    mp_data_free(&d);
    if (!rc)
        mp_xport_finalize(cx);
    return rc;
}
