/* A client of `mpipe fed` (mp_fed.h): waits for the server's WORK (a round and the global
 * weights), trains them for E local epochs on its own split with a fresh optimizer state (as in
 * FedAvg), and replies with its weights, sample count, mean loss and loss-reduction score, tagged
 * with the round so that a late reply is recognised as stale. STOP ends it. The test hooks
 * MPIPE_FED_TEST_* (fault injection for tests/test_fed.sh) are read here and nowhere else. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mp_fed.h"
#include "mp_rng.h"

struct client {
    const struct mp_fed_cfg *cfg;
    struct mp_xport *x;
    int id;                       /* client number = rank, 1..C */
    const struct mp_dataset *train;
    const uint32_t *mine;         /* this client's sample indices */
    size_t n_mine;
    struct mp_fed_model fm;
    struct mp_lr_cfg lr;
    struct mp_fed_msg *msg;       /* header + n_param floats: global weights in, update out */
    size_t msg_bytes;
    uint32_t *perm, *batch_idx;
    /* Test hooks: sleep `sleep_s` before replying in round `sleep_round` (-1: the first round
     * trained, -3: every round, -2: never); reply with NaN weights; reply one float short. */
    double sleep_s;
    int sleep_round, nan_reply, short_reply;
};

static float *msg_floats(const struct client *c) { return (float *)(c->msg + 1); }

/* Hooks, for tests only (documented in docs/federated.md): MPIPE_FED_TEST_SLEEP_CLIENT is a
 * comma-separated list of k:SECONDS[:ROUND] (ROUND 0-based; omitted: the first round client k
 * trains; `*`: every round); MPIPE_FED_TEST_NAN_CLIENT=k; MPIPE_FED_TEST_SHORT_CLIENT=k. */
static void read_test_hooks(struct client *c)
{
    const char *v = getenv("MPIPE_FED_TEST_SLEEP_CLIENT");
    c->sleep_round = -2;
    for (; v && *v; v = strchr(v, ',') ? strchr(v, ',') + 1 : "") {
        int k = 0, round = -1, used = 0;
        double s = 0;
        if (sscanf(v, "%d:%lf%n", &k, &s, &used) < 2 || k != c->id)
            continue;
        c->sleep_s = s;
        c->sleep_round = -1;
        if (v[used] == ':' && v[used + 1] == '*')
            c->sleep_round = -3;
        else if (v[used] == ':' && sscanf(v + used + 1, "%d", &round) == 1)
            c->sleep_round = round;
    }
    v = getenv("MPIPE_FED_TEST_NAN_CLIENT");
    c->nan_reply = v && atoi(v) == c->id;
    v = getenv("MPIPE_FED_TEST_SHORT_CLIENT");
    c->short_reply = v && atoi(v) == c->id;
}

static void maybe_sleep(struct client *c, int round)
{
    if (c->sleep_round == -2 || (c->sleep_round >= 0 && c->sleep_round != round))
        return;
    if (c->sleep_round != -3)
        c->sleep_round = -2; /* once */
    struct timespec ts = {(time_t)c->sleep_s, (long)((c->sleep_s - floor(c->sleep_s)) * 1e9)};
    nanosleep(&ts, NULL);
}

/* One local optimizer step on the batch in c->batch_idx; FedProx adds mu (w - w_global). */
static double local_step(struct client *c, const float *global, uint64_t step, double lr,
                         uint64_t run_seed, struct mp_err *err)
{
    const struct mp_fed_cfg *cfg = c->cfg;
    struct mp_stage *st = &c->fm.st;
    struct mp_exec_io io = {.ds = c->train, .idx = c->batch_idx, .seed = run_seed, .step = step,
                            .global_batch = cfg->batch};
    if (mp_exec_step(&c->fm.ex, &io, err))
        return NAN;
    if (cfg->algo == MP_FED_FEDPROX) {
        float mu = (float)cfg->mu;
        for (size_t i = 0; i < st->n_param; i++)
            st->grad[i] += mu * (st->param[i] - global[i]);
    }
    const struct mp_model *m = cfg->model;
    for (int i = 0; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        for (int w = 0; w < 2; w++) {
            size_t n = w ? l->n_bias : l->n_weight, o = st->layer_off[i] + (w ? l->n_weight : 0);
            if (n)
                mp_optim_step(&cfg->optim, (float)lr, step + 1, st->param + o, st->grad + o,
                              st->state + o, st->n_param, n);
        }
    }
    return io.loss_sum / (double)cfg->batch;
}

/* E local epochs from the global weights. Every epoch visits the client's samples in a seeded
 * order; the last batch wraps around to the epoch's start, so every batch has B samples even on
 * a client smaller than B. *score: relative drop from the mean loss of the first tenth of the
 * steps to that of the last tenth. */
static int train_round(struct client *c, int round, double *mean_loss, double *score,
                       struct mp_err *err)
{
    const struct mp_fed_cfg *cfg = c->cfg;
    struct mp_stage *st = &c->fm.st;
    const float *global = msg_floats(c);
    memcpy(st->param, global, st->n_param * sizeof(float));
    if (st->state)
        memset(st->state, 0, st->n_param * (size_t)st->state_slots * sizeof(float));
    size_t B = cfg->batch, n = c->n_mine;
    uint64_t per_epoch = (n + B - 1) / B, total = per_epoch * (uint64_t)cfg->local_epochs;
    uint64_t k = total / 10 ? total / 10 : 1, step = 0;
    uint64_t run_seed = mp_hash4(cfg->seed, (uint64_t)c->id, (uint64_t)round, 0x4c4f43u);
    double first = 0, last = 0, sum = 0;
    struct mp_lr_state ls;
    mp_lr_state_init(&ls);
    c->lr.total_steps = total;
    for (int e = 0; e < cfg->local_epochs; e++) {
        mp_data_order(c->perm, n, run_seed, (uint64_t)e, 1);
        double epoch_sum = 0;
        for (uint64_t s = 0; s < per_epoch; s++, step++) {
            for (size_t j = 0; j < B; j++)
                c->batch_idx[j] = c->mine[c->perm[(s * B + j) % n]];
            double loss = local_step(c, global, step, mp_lr_at(&c->lr, &ls, step), run_seed, err);
            if (!isfinite(loss)) { /* error, or diverged: the server rejects what we send */
                *mean_loss = *score = NAN;
                return err && err->code != MP_OK ? -1 : 0;
            }
            epoch_sum += loss;
            first += step < k ? loss : 0;
            last += step >= total - k ? loss : 0;
        }
        sum += epoch_sum;
        mp_lr_epoch_end(&c->lr, &ls, epoch_sum / (double)per_epoch);
    }
    *mean_loss = sum / (double)total;
    *score = first > 0 ? (first - last) / first : 0;
    return 0;
}

/* Writes the reply into c->msg (header + trained weights) and sends it, tagged by round. */
static int reply(struct client *c, int round, double loss, double score, struct mp_err *err)
{
    struct mp_stage *st = &c->fm.st;
    float *w = msg_floats(c);
    memcpy(w, st->param, st->n_param * sizeof(float));
    *c->msg = (struct mp_fed_msg){.round = round, .client = c->id, .n_param = st->n_param,
                                  .n_samples = c->n_mine, .loss = loss, .score = score};
    if (c->nan_reply)
        for (size_t i = 0; i < st->n_param; i += 97)
            w[i] = NAN;
    size_t bytes = c->msg_bytes - (c->short_reply ? sizeof(float) : 0);
    char what[96];
    snprintf(what, sizeof what, "the server to take client %d's update of round %d", c->id,
             round + 1);
    return mp_xport_send(c->x, c->msg, bytes, 0, mp_fed_reply_tag(round), what, err);
}

static int serve(struct client *c, struct mp_err *err)
{
    const struct mp_fed_cfg *cfg = c->cfg;
    /* The server may leave a client unsampled for many rounds: wait as long as a whole run may
     * take. A server that died ends the job through mpirun long before. */
    double idle = (cfg->rounds + 1) * (cfg->round_deadline + 120.0);
    mp_xport_set_deadline(c->x, idle);
    for (;;) {
        int found = 0, src = 0, tag = 0;
        size_t bytes = 0;
        if (mp_xport_probe(c->x, 0, MP_XPORT_ANY, idle, &found, &src, &tag, &bytes, err))
            return -1;
        if (!found)
            return MP_FAIL(err, DEADLINE, "client %d waited %.0f s for the server (rank 0)", c->id,
                           idle);
        if (tag == MP_FED_TAG_STOP && bytes == sizeof *c->msg)
            return mp_xport_recv(c->x, c->msg, bytes, 0, tag, "the server's stop", err);
        if (tag != MP_FED_TAG_WORK || bytes != c->msg_bytes)
            return MP_FAIL(err, PEER, "client %d: unexpected message from the server (tag %d, "
                           "%zu bytes, expected %zu)", c->id, tag, bytes, c->msg_bytes);
        if (mp_xport_recv(c->x, c->msg, bytes, 0, tag, "the global weights", err))
            return -1;
        int round = c->msg->round;
        double loss = 0, score = 0;
        if (train_round(c, round, &loss, &score, err))
            return -1;
        maybe_sleep(c, round);
        if (reply(c, round, loss, score, err))
            return -1;
    }
}

int mp__fed_client(const struct mp_fed_cfg *cfg, struct mp_xport *x, const struct mp_data *d,
                   const struct mp_fed_split *split, struct mp_err *err)
{
    struct client c;
    memset(&c, 0, sizeof c);
    c.cfg = cfg;
    c.x = x;
    c.id = mp_xport_rank(x);
    c.train = &d->train;
    c.mine = split->idx + split->off[c.id - 1];
    c.n_mine = split->off[c.id] - split->off[c.id - 1];
    c.lr = cfg->lr;
    read_test_hooks(&c);
    int rc = mp__fed_model_init(&c.fm, cfg->model, cfg->batch,
                                mp_optim_state_slots(cfg->optim.kind), cfg->seed, x, err);
    if (!rc) {
        c.msg_bytes = sizeof *c.msg + c.fm.st.n_param * sizeof(float);
        c.msg = aligned_alloc(64, (c.msg_bytes + 63) / 64 * 64);
        c.perm = malloc(sizeof(uint32_t) * (c.n_mine ? c.n_mine : 1));
        c.batch_idx = malloc(sizeof(uint32_t) * cfg->batch);
        if (!c.msg || !c.perm || !c.batch_idx)
            rc = MP_FAIL(err, NOMEM, "client %d: out of memory", c.id);
    }
    if (!rc)
        rc = serve(&c, err);
    free(c.msg);
    free(c.perm);
    free(c.batch_idx);
    mp__fed_model_free(&c.fm);
    return rc;
}
