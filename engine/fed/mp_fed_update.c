/* The server's step from a round's accepted client models to the next global model (mp_fed.h):
 * optional clipping of each update to an L2 bound, the aggregation rule (weighted mean, median,
 * trimmed mean, Krum, Multi-Krum), DP-FedAvg's Gaussian noise from the server's own generator,
 * and the server optimizer. Every vector is in the server arena's layout (padding between layers
 * is zero everywhere and stays zero); every sum runs in a fixed order, so the result depends only
 * on the accepted models. No messages: the server protocol (mp_fed_server.c) calls this. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"
#include "mp_rng.h"

int mp__fed_update_init(struct mp_fed_update *u, const struct mp_fed_cfg *cfg,
                        const struct mp_stage *st, struct mp_err *err)
{
    memset(u, 0, sizeof *u);
    u->cfg = cfg;
    u->st = st;
    u->C = cfg->clients;
    int scratch[4096];
    u->sampled = mp_fed_sample(cfg->seed, 0, u->C, cfg->fraction, scratch);
    size_t C = (size_t)u->C;
    u->agg = malloc((st->n_param ? st->n_param : 1) * sizeof(double));
    u->scratch = malloc(C * sizeof(float));
    u->dist = malloc(C * C * sizeof(double));
    u->score = malloc(C * sizeof(double));
    u->sq = malloc((size_t)st->model->n_layers * sizeof(double));
    u->chosen = malloc(C * sizeof(int));
    if (!u->agg || !u->scratch || !u->dist || !u->score || !u->sq || !u->chosen)
        return MP_FAIL(err, NOMEM, "server: out of memory for the aggregation");
    mp_fed_acct_init(&u->acct);
    u->delta = cfg->delta;
    return mp_fed_opt_init(&u->opt, cfg->server_opt, cfg->server_lr, st->n_param, err);
}

void mp__fed_update_free(struct mp_fed_update *u)
{
    free(u->agg), free(u->scratch), free(u->dist), free(u->score), free(u->sq), free(u->chosen);
    mp_fed_opt_free(&u->opt);
    memset(u, 0, sizeof *u);
}

/* ||theta - x|| with per-layer sums in double added in layer order (the same on any layout). */
static double update_norm(struct mp_fed_update *u, const float *theta, const float *x)
{
    mp__fed_layer_sq(u->st, theta, x, u->sq);
    double s = 0;
    for (int i = 0; i < u->st->model->n_layers; i++)
        s += u->sq[i];
    return sqrt(s);
}

/* theta <- x + c (theta - x) with c = min(1, X / ||theta - x||); returns 1 when it clipped. */
static int clip(struct mp_fed_update *u, float *theta, const float *x, double *norm)
{
    double X = u->cfg->clip_update;
    *norm = update_norm(u, theta, x);
    if (*norm <= X)
        return 0;
    double c = X / *norm;
    for (size_t i = 0; i < u->st->n_param; i++)
        theta[i] = (float)((double)x[i] + c * ((double)theta[i] - (double)x[i]));
    return 1;
}

/* DP-FedAvg (McMahan et al. 2018): the clipped updates summed in client order over the fixed
 * denominator (the clients sampled per round, whoever replied), plus N(0, (sigma X / m)^2) per
 * parameter drawn from the server's generator seeded by (seed, round), layer by layer. */
static void dp_mean(struct mp_fed_update *u, int round, const float *x, float *const *theta,
                    const int *ids, int n, double *w)
{
    size_t N = u->st->n_param;
    double m = u->sampled, std = u->cfg->noise_multiplier * u->cfg->clip_update / m;
    for (size_t i = 0; i < N; i++)
        u->agg[i] = 0;
    for (int j = 0; j < n; j++) {
        const float *t = theta[ids[j]];
        for (size_t i = 0; i < N; i++)
            u->agg[i] += (double)t[i] - (double)x[i];
        w[j] = 1 / m;
    }
    mp_rng_seed(&u->noise, mp_hash4(u->cfg->seed, (uint64_t)round, 0x44504e5au, 0));
    const struct mp_model *mod = u->st->model;
    for (int l = 0; l < mod->n_layers; l++) {
        size_t o = u->st->layer_off[l], k = mp_layer_n_param(&mod->layers[l]);
        for (size_t i = o; k && i < o + k; i++)
            u->agg[i] = (double)x[i] + u->agg[i] / m + std * mp_rng_normal(&u->noise);
    }
}

static void weighted_mean(struct mp_fed_update *u, float *const *theta, const int *ids,
                          const uint64_t *samples, const double *scores, int n,
                          struct mp_fed_perf *perf, double *w)
{
    mp_fed_weights(u->cfg->agg, perf, ids, samples, scores, n, w);
    memset(u->agg, 0, u->st->n_param * sizeof(double));
    for (int j = 0; j < n; j++) {
        const float *t = theta[ids[j]];
        for (size_t i = 0; i < u->st->n_param; i++)
            u->agg[i] += w[j] * (double)t[i];
    }
}

/* The robust rules on the accepted models. Returns 0 when the rule cannot run on n updates. */
static int robust(struct mp_fed_update *u, float *const *theta, const int *ids, int n,
                  double *w, char *note, size_t note_len)
{
    const float *v[4096];
    size_t N = u->st->n_param;
    for (int j = 0; j < n; j++)
        v[j] = theta[ids[j]];
    enum mp_fed_agg a = u->cfg->agg;
    int f = u->cfg->krum_f;
    if (a == MP_FED_AGG_MEDIAN || a == MP_FED_AGG_TRIMMED) {
        int trim = a == MP_FED_AGG_TRIMMED ? (int)floor(u->cfg->trim_beta * n) : 0;
        if (a == MP_FED_AGG_MEDIAN)
            mp_fed_median(v, n, N, u->agg, u->scratch);
        else
            mp_fed_trimmed_mean(v, n, N, trim, u->agg, u->scratch);
        for (int j = 0; j < n; j++)
            w[j] = 1.0 / n;
        return 1;
    }
    if (n < 2 * f + 3) {
        snprintf(note, note_len, "%s:%d needs %d updates, got %d", mp_fed_agg_name(a), f,
                 2 * f + 3, n);
        return 0;
    }
    int m = a == MP_FED_AGG_KRUM ? 1 : n - f;
    mp_fed_krum(v, n, N, f, m, u->dist, u->score, u->chosen);
    mp_fed_mean_of(v, u->chosen, m, N, u->agg);
    for (int j = 0; j < n; j++)
        w[j] = 0;
    for (int t = 0; t < m; t++)
        w[u->chosen[t]] = 1.0 / m;
    return 1;
}

/* A tied head's copy of E is derived (DESIGN.md §9): the rules see it as zeros everywhere (so
 * distances and norms count E once) and after the step it is E again, bit for bit. */
static void untie(const struct mp_fed_update *u, float *x, float *const *theta, const int *ids,
                  int n)
{
    const struct mp_model *m = u->st->model;
    for (int h = 0; h < m->n_layers; h++) {
        if (!mp_layer_is_tied(&m->layers[h]))
            continue;
        size_t o = u->st->layer_off[h], len = mp_layer_n_param(&m->layers[h]) * sizeof(float);
        memset(x + o, 0, len);
        for (int j = 0; j < n; j++)
            memset(theta[ids[j]] + o, 0, len);
    }
}

static void retie(const struct mp_fed_update *u, float *x)
{
    const struct mp_model *m = u->st->model;
    for (int h = 0; h < m->n_layers; h++)
        if (mp_layer_is_tied(&m->layers[h]))
            memcpy(x + u->st->layer_off[h], x + u->st->layer_off[m->layers[h].tie_src],
                   m->layers[h].n_weight * sizeof(float));
}

int mp__fed_update_round(struct mp_fed_update *u, int round, float *x, float *const *theta,
                         const int *ids, const uint64_t *samples, const double *scores, int n,
                         struct mp_fed_perf *perf, double *w, int *applied, char *note,
                         size_t note_len, struct mp_err *err)
{
    (void)err;
    const struct mp_fed_cfg *cfg = u->cfg;
    *applied = 0;
    note[0] = 0;
    int need = cfg->min_clients > 0 ? cfg->min_clients : 1;
    if (n < need) {
        if (n > 0)
            snprintf(note, note_len, "%d updates, --min-clients %d", n, need);
        return 0;
    }
    untie(u, x, theta, ids, n);
    int clipped = 0;
    double lo = INFINITY, hi = 0, norm;
    for (int j = 0; cfg->clip_update > 0 && j < n; j++) {
        clipped += clip(u, theta[ids[j]], x, &norm);
        lo = fmin(lo, norm);
        hi = fmax(hi, norm);
    }
    if (cfg->clip_update > 0)
        snprintf(note, note_len, "clipped %d/%d (norms %.3g..%.3g)", clipped, n, lo, hi);
    if (cfg->noise_multiplier > 0)
        dp_mean(u, round, x, theta, ids, n, w);
    else if (cfg->agg == MP_FED_AGG_SIZE || cfg->agg == MP_FED_AGG_PERF)
        weighted_mean(u, theta, ids, samples, scores, n, perf, w);
    else if (!robust(u, theta, ids, n, w, note, note_len)) {
        retie(u, x);
        return 0;
    }
    mp_fed_opt_step(&u->opt, x, u->agg);
    retie(u, x);
    *applied = 1;
    return 0;
}

void mp__fed_update_account(struct mp_fed_update *u)
{
    if (u->cfg->noise_multiplier <= 0)
        return;
    double q = (double)u->sampled / u->C;
    mp_fed_acct_add(&u->acct, q, u->cfg->noise_multiplier, 1);
    u->epsilon = mp_fed_acct_epsilon(&u->acct, u->delta, NULL);
}
