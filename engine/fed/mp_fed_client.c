/* A client stage of `mpipe fed` (mp_fed.h): waits for the server's WORK (a round and the
 * parameters of the layers this stage holds), trains them with the client's other stages for E
 * local epochs on the client's split through the ordinary executor, with a fresh optimizer state
 * (as in FedAvg), and replies with its layers, the sample count and (last stage) the mean loss
 * and loss-reduction score, tagged with the round so that a late reply is recognised as stale.
 * An attacking client (--attack) replaces its update before replying. STOP ends it. The test
 * hooks MPIPE_FED_TEST_* (fault injection for tests/test_fed.sh) are read here and nowhere else. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mp_fed.h"
#include "mp_rng.h"
#include "mp_weights.h"

struct client {
    const struct mp_fed_cfg *cfg;
    struct mp_xport *x;           /* world: the server is rank 0 */
    struct mp_xport *cx;          /* this client's stages */
    int id, stage, P, last;       /* client number 1..C; this stage; stages; holds the loss */
    int attacker;
    const struct mp_dataset *train;
    const uint32_t *mine;         /* this client's sample indices */
    size_t n_mine;
    struct mp_fed_model fm;
    float *global;                /* the round's global weights, in the stage's arena layout */
    double *sq, *sq_all;          /* per-layer sums of squares: this stage's, every stage's */
    float *tie_buf;               /* the other holder's gradient of a tied E (P > 1) */
    struct mp_lr_cfg lr;
    struct mp_fed_msg *msg;       /* header + this stage's floats: weights in, update out */
    size_t n_part, msg_bytes;
    uint32_t *perm, *batch_idx;
    /* Test hooks: sleep `sleep_s` before replying in round `sleep_round` (-1: the first round
     * trained, -3: every round, -2: never); reply with NaN weights; reply one float short. */
    double sleep_s;
    int sleep_round, nan_reply, short_reply;
};

static float *msg_floats(const struct client *c) { return (float *)(c->msg + 1); }

/* Whether a hook's target "k" or "k.s" names this stage (k alone: every stage of client k). */
static int hook_targets(const struct client *c, const char *v, int *used)
{
    int k = 0, s = -1, n = 0;
    if (sscanf(v, "%d%n", &k, &n) < 1)
        return 0;
    if (v[n] == '.' && sscanf(v + n + 1, "%d", &s) == 1)
        while (v[++n] >= '0' && v[n] <= '9')
            ;
    if (used)
        *used = n;
    return k == c->id && (s < 0 || s == c->stage);
}

/* Hooks, for tests only (documented with `mpipe fed`): MPIPE_FED_TEST_SLEEP_CLIENT is a
 * comma-separated list of T:SECONDS[:ROUND] (ROUND 0-based; omitted: the first round client k
 * trains; `*`: every round); MPIPE_FED_TEST_NAN_CLIENT=T; MPIPE_FED_TEST_SHORT_CLIENT=T. A target
 * T is a client k (all its stages) or k.s (its stage s). */
static void read_test_hooks(struct client *c)
{
    const char *v = getenv("MPIPE_FED_TEST_SLEEP_CLIENT");
    c->sleep_round = -2;
    for (; v && *v; v = strchr(v, ',') ? strchr(v, ',') + 1 : "") {
        int t = 0, round = -1, used = 0;
        double s = 0;
        if (!hook_targets(c, v, &t) || sscanf(v + t, ":%lf%n", &s, &used) < 1)
            continue;
        used += t;
        c->sleep_s = s;
        c->sleep_round = -1;
        if (v[used] == ':' && v[used + 1] == '*')
            c->sleep_round = -3;
        else if (v[used] == ':' && sscanf(v + used + 1, "%d", &round) == 1)
            c->sleep_round = round;
    }
    v = getenv("MPIPE_FED_TEST_NAN_CLIENT");
    c->nan_reply = v && hook_targets(c, v, NULL);
    v = getenv("MPIPE_FED_TEST_SHORT_CLIENT");
    c->short_reply = v && hook_targets(c, v, NULL);
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

/* One local optimizer step on the batch in c->batch_idx, one named tensor at a time (LAMB's
 * trust ratio is per tensor); FedProx adds mu (w - w_global). *loss: the batch's mean loss per
 * prediction on the last stage, 0 on the others. */
static int local_step(struct client *c, uint64_t step, double lr, uint64_t run_seed,
                      double *loss, struct mp_err *err)
{
    const struct mp_fed_cfg *cfg = c->cfg;
    const struct mp_model *m = cfg->model;
    struct mp_stage *st = &c->fm.st;
    size_t preds = cfg->batch * m->label_len;
    struct mp_exec_io io = {.ds = c->train, .idx = c->batch_idx, .seed = run_seed, .step = step,
                            .global_batch = preds};
    if (mp_exec_step(&c->fm.ex, &io, err) ||
        mp_stage_tie_gradients(&c->fm.st, c->cx, c->fm.lay.bounds, &c->tie_buf, err))
        return -1;
    if (cfg->algo == MP_FED_FEDPROX) {
        float mu = (float)cfg->mu;
        for (size_t i = 0; i < st->n_param; i++)
            st->grad[i] += mu * (st->param[i] - c->global[i]);
    }
    for (int i = 0; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        if (st->layer_off[i] == SIZE_MAX || !mp_layer_n_param(l))
            continue;
        struct mp_tensor t[MP_LAYER_MAX_TENSORS];
        int nt = mp_layer_tensors(l, t);
        for (int w = 0; w < nt; w++) {
            size_t o = st->layer_off[i] + t[w].off;
            mp_optim_step(&cfg->optim, (float)lr, step + 1, st->param + o, st->grad + o,
                          st->state + o, st->n_param, t[w].numel);
        }
    }
    *loss = io.loss_sum / (double)preds;
    return 0;
}

/* The epoch's loss sum, known on the last stage, given to every stage (the LR plateau rule and
 * the divergence stop must agree across the pipeline). */
static int share_epoch_loss(struct client *c, double *sum, struct mp_err *err)
{
    if (c->P == 1)
        return 0;
    return mp_xport_bcast(c->cx, sum, sizeof *sum, c->P - 1, "the epoch's loss from the last "
                          "stage of this client", err);
}

/* E local epochs (or K local steps) from the global weights. Every epoch visits the client's
 * samples in a seeded order; the last batch wraps around to the epoch's start, so every batch has
 * B samples even on a client smaller than B. K steps run whole epochs and cut the last one short
 * (the learning-rate schedule spans the K steps). *score: relative drop from the mean loss of
 * the first tenth of the steps to that of the last tenth (last stage). */
static int train_round(struct client *c, int round, double *mean_loss, double *score,
                       struct mp_err *err)
{
    const struct mp_fed_cfg *cfg = c->cfg;
    struct mp_stage *st = &c->fm.st;
    memcpy(st->param, c->global, st->n_param * sizeof(float));
    if (st->state)
        memset(st->state, 0, st->n_param * (size_t)st->state_slots * sizeof(float));
    size_t B = cfg->batch, n = c->n_mine;
    uint64_t per_epoch = (n + B - 1) / B, total = per_epoch * (uint64_t)cfg->local_epochs;
    if (cfg->local_steps > 0)
        total = (uint64_t)cfg->local_steps;
    uint64_t epochs = (total + per_epoch - 1) / per_epoch;
    uint64_t k = total / 10 ? total / 10 : 1, step = 0;
    uint64_t run_seed = mp_hash4(cfg->seed, (uint64_t)c->id, (uint64_t)round, 0x4c4f43u);
    double first = 0, last = 0, sum = 0;
    struct mp_lr_state ls;
    mp_lr_state_init(&ls);
    c->lr.total_steps = total;
    for (uint64_t e = 0; e < epochs; e++) {
        mp_data_order(c->perm, n, run_seed, e, 1);
        double epoch_sum = 0;
        uint64_t steps = total - step < per_epoch ? total - step : per_epoch;
        for (uint64_t s = 0; s < steps; s++, step++) {
            for (size_t j = 0; j < B; j++)
                c->batch_idx[j] = c->mine[c->perm[(s * B + j) % n]];
            double loss = 0;
            if (local_step(c, step, mp_lr_at(&c->lr, &ls, step), run_seed, &loss, err))
                return -1;
            if (!isfinite(loss) && c->P == 1) { /* diverged: the server rejects what we send */
                *mean_loss = *score = NAN;
                return 0;
            }
            epoch_sum += loss;
            first += step < k ? loss : 0;
            last += step >= total - k ? loss : 0;
        }
        if (share_epoch_loss(c, &epoch_sum, err))
            return -1;
        if (!isfinite(epoch_sum)) {
            *mean_loss = *score = NAN;
            return 0;
        }
        sum += epoch_sum;
        mp_lr_epoch_end(&c->lr, &ls, epoch_sum / (double)steps);
    }
    *mean_loss = sum / (double)total;
    *score = first > 0 ? (first - last) / first : 0;
    return 0;
}

/* An attacking client replaces its update d = w - w_global before replying: -d (signflip),
 * X d (scale:X) or Gaussian noise with the norm of d in expectation (noise), drawn per layer
 * from (seed, round, client, layer) so every layout draws the same numbers. The norm needs every
 * stage's layers: per-layer sums are gathered and added in layer order, as on one rank. */
static int attack(struct client *c, int round, struct mp_err *err)
{
    const struct mp_fed_attack *a = &c->cfg->attack;
    struct mp_stage *st = &c->fm.st;
    const struct mp_model *m = c->cfg->model;
    double f = a->kind == MP_FED_ATTACK_SIGNFLIP ? -1.0 : a->scale, std = 0;
    if (a->kind == MP_FED_ATTACK_NOISE) {
        size_t L = (size_t)m->n_layers, d = 0;
        mp__fed_layer_sq(st, st->param, c->global, c->sq);
        if (mp_xport_allgather(c->cx, c->sq, c->sq_all, L * sizeof(double),
                               "the other stages' update norms", err))
            return -1;
        double total = 0;
        for (size_t i = 0; i < L; i++) {
            size_t n = mp_layer_n_param(&m->layers[i]);
            if (!n || mp_layer_is_tied(&m->layers[i])) /* a tied copy of E counts once */
                continue;
            int owner = mp_layer_owner(c->fm.lay.bounds, c->fm.lay.S, c->P, c->fm.lay.place,
                                       (int)i);
            total += c->sq_all[(size_t)owner * L + i];
            d += n;
        }
        std = sqrt(total / (double)(d ? d : 1));
    }
    for (int i = 0; i < m->n_layers; i++) {
        size_t o = st->layer_off[i], n = mp_layer_n_param(&m->layers[i]);
        if (o == SIZE_MAX || !n)
            continue;
        struct mp_rng r;
        mp_rng_seed(&r, mp_hash4(c->cfg->seed, (uint64_t)round, (uint64_t)c->id,
                                 0x4e4f0000u + (uint64_t)i));
        for (size_t j = o; j < o + n; j++) {
            double g = c->global[j], dlt = (double)st->param[j] - g;
            st->param[j] = (float)(a->kind == MP_FED_ATTACK_NOISE ? g + std * mp_rng_normal(&r)
                                                                  : g + f * dlt);
        }
    }
    return 0;
}

/* Writes the reply into c->msg (header + this stage's trained layers) and sends it. */
static int reply(struct client *c, int round, double loss, double score, struct mp_err *err)
{
    float *w = msg_floats(c);
    mp__fed_pack(&c->fm.st, &c->fm.lay, c->stage, c->fm.st.param, w);
    *c->msg = (struct mp_fed_msg){.round = round, .client = c->id, .n_param = c->n_part,
                                  .n_samples = c->n_mine, .loss = c->last ? loss : 0,
                                  .score = c->last ? score : 0, .stage = c->stage,
                                  .n_stages = c->P};
    if (c->nan_reply)
        for (size_t i = 0; i < c->n_part; i += 97)
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
        mp__fed_unpack(&c->fm.st, &c->fm.lay, c->stage, msg_floats(c), c->global);
        double loss = 0, score = 0;
        if (train_round(c, round, &loss, &score, err))
            return -1;
        if (c->attacker && attack(c, round, err))
            return -1;
        maybe_sleep(c, round);
        if (reply(c, round, loss, score, err))
            return -1;
    }
}

static int client_alloc(struct client *c, struct mp_err *err)
{
    const struct mp_fed_cfg *cfg = c->cfg;
    struct mp_fed_layout lay;
    if (mp__fed_layout(cfg, &lay, err) ||
        mp__fed_model_init(&c->fm, cfg->model, &lay, c->stage,
                           mp_optim_state_slots(cfg->optim.kind), cfg->seed, c->cx, err))
        return -1;
    mp_xport_set_deadline(c->cx, cfg->round_deadline + 60);
    c->P = lay.P;
    c->last = c->stage == lay.P - 1;
    c->n_part = mp__fed_part_len(cfg->model, &lay, c->stage);
    c->msg_bytes = sizeof *c->msg + c->n_part * sizeof(float);
    size_t L = (size_t)cfg->model->n_layers;
    c->msg = aligned_alloc(64, (c->msg_bytes + 63) / 64 * 64);
    c->global = calloc(c->fm.st.n_param ? c->fm.st.n_param : 1, sizeof(float));
    c->sq = calloc(L, sizeof(double));
    c->sq_all = calloc(L * (size_t)lay.P, sizeof(double));
    c->perm = malloc(sizeof(uint32_t) * (c->n_mine ? c->n_mine : 1));
    c->batch_idx = malloc(sizeof(uint32_t) * cfg->batch);
    if (!c->msg || !c->global || !c->sq || !c->sq_all || !c->perm || !c->batch_idx)
        return MP_FAIL(err, NOMEM, "client %d: out of memory", c->id);
    return 0;
}

int mp__fed_client(const struct mp_fed_cfg *cfg, struct mp_xport *x, struct mp_xport *cx,
                   const struct mp_data *d, const struct mp_fed_split *split, struct mp_err *err)
{
    struct client c;
    memset(&c, 0, sizeof c);
    c.cfg = cfg;
    c.x = x;
    c.cx = cx;
    int P = cfg->client_stages > 0 ? cfg->client_stages : 1;
    c.id = 1 + (mp_xport_rank(x) - 1) / P;
    c.stage = mp_xport_rank(cx);
    c.train = &d->train;
    c.mine = split->idx + split->off[c.id - 1];
    c.n_mine = split->off[c.id] - split->off[c.id - 1];
    c.lr = cfg->lr;
    int is[4096];
    mp_fed_attackers(cfg->seed, cfg->clients, cfg->attack.k, is);
    c.attacker = cfg->attack.kind != MP_FED_ATTACK_NONE && is[c.id];
    read_test_hooks(&c);
    int rc = client_alloc(&c, err);
    if (!rc)
        rc = serve(&c, err);
    if (!rc && P > 1) /* as train's rank line: whether the stages met in shared memory */
        fprintf(stderr, "client %d stage %d: hand-offs %llu through shared memory, %llu as MPI "
                "messages\n", c.id, c.stage, c.fm.ex.n_sent_shared, c.fm.ex.n_sent_mpi);
    free(c.msg), free(c.global), free(c.sq), free(c.sq_all), free(c.perm), free(c.batch_idx);
    free(c.tie_buf);
    mp__fed_model_free(&c.fm);
    return rc;
}
