/* The server of `mpipe fed` (rank 0, mp_fed.h): per round it samples clients, sends each stage of
 * each sampled client its part of the global weights, collects the parts until the round's
 * deadline (or until --min-clients updates are in), rejects garbage (wrong size, NaN/Inf),
 * discards stale parts (their tag and header name an older round), hands the accepted client
 * models to mp_fed_update.c, evaluates the global model and logs the round. A client is accepted
 * only when every one of its stages replied in time with a valid part. A client still busy with
 * an older round is skipped until its late parts have been drained, so it rejoins the round
 * after. It owns the message buffers; it trains nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"
#include "mp_weights.h"

struct server {
    const struct mp_fed_cfg *cfg;
    struct mp_xport *x;
    const struct mp_data *d;
    int C, P, R, round;            /* clients, stages per client, client ranks (C P) */
    struct mp_fed_model fm;        /* st.param is the global model */
    struct mp_fed_layout lay;      /* the clients' layout: which layers each stage holds */
    size_t n_param, *part_len, rx_bytes;
    /* Per client rank r = 1..R (client 1 + (r - 1) / P, stage (r - 1) % P): */
    struct mp_fed_msg **out;       /* WORK being sent */
    struct mp_fed_msg *stop;       /* the STOP header */
    int *send_req, *stop_req;      /* outstanding sends, or -1 */
    int *owes;                     /* round whose reply the rank still owes, or -1 */
    /* Per client k = 1..C, the current round: */
    float **theta;                 /* the client's model, assembled from its parts */
    struct mp_fed_msg *last;       /* header of its last stage's part (samples, loss, score) */
    int *parts, *bad, *accepted, *sent;
    struct mp_fed_msg *rx;         /* receive buffer: header + the largest part */
    struct mp_fed_update upd;
    struct mp_fed_perf perf;
    int *ids;
    uint64_t *samples;
    double *scores, *w;
    int n_accepted;
    double test_acc, test_loss;
};

static int client_of(const struct server *s, int r) { return 1 + (r - 1) / s->P; }
static int stage_of(const struct server *s, int r) { return (r - 1) % s->P; }
static int rank_of(const struct server *s, int k, int stage) { return 1 + (k - 1) * s->P + stage; }

static size_t msg_bytes(const struct server *s, int stage)
{
    return sizeof(struct mp_fed_msg) + s->part_len[stage] * sizeof(float);
}

static struct mp_fed_msg *alloc_msg(size_t bytes)
{
    struct mp_fed_msg *m = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (m)
        memset(m, 0, sizeof *m);
    return m;
}

static int server_alloc(struct server *s, struct mp_err *err)
{
    size_t C1 = (size_t)s->C + 1, R1 = (size_t)s->R + 1;
    s->part_len = calloc((size_t)s->P, sizeof *s->part_len);
    s->out = calloc(R1, sizeof *s->out);
    s->stop = calloc(R1, sizeof *s->stop);
    s->send_req = malloc(sizeof(int) * R1);
    s->stop_req = malloc(sizeof(int) * R1);
    s->owes = malloc(sizeof(int) * R1);
    s->theta = calloc(C1, sizeof *s->theta);
    s->last = calloc(C1, sizeof *s->last);
    s->parts = calloc(C1, sizeof(int));
    s->bad = calloc(C1, sizeof(int));
    s->accepted = calloc(C1, sizeof(int));
    s->sent = calloc(C1, sizeof(int));
    s->ids = malloc(sizeof(int) * C1);
    s->samples = malloc(sizeof(uint64_t) * C1);
    s->scores = malloc(sizeof(double) * C1);
    s->w = malloc(sizeof(double) * C1);
    if (!s->part_len || !s->out || !s->stop || !s->send_req || !s->stop_req || !s->owes ||
        !s->theta || !s->last || !s->parts || !s->bad || !s->accepted || !s->sent || !s->ids ||
        !s->samples || !s->scores || !s->w)
        return MP_FAIL(err, NOMEM, "server: out of memory");
    size_t biggest = 0;
    for (int p = 0; p < s->P; p++) {
        s->part_len[p] = mp__fed_part_len(s->cfg->model, &s->lay, p);
        biggest = s->part_len[p] > biggest ? s->part_len[p] : biggest;
    }
    s->rx_bytes = sizeof(struct mp_fed_msg) + biggest * sizeof(float);
    if (!(s->rx = alloc_msg(s->rx_bytes)))
        return MP_FAIL(err, NOMEM, "server: out of memory");
    for (int r = 1; r <= s->R; r++) {
        s->send_req[r] = s->stop_req[r] = s->owes[r] = -1;
        if (!(s->out[r] = alloc_msg(msg_bytes(s, stage_of(s, r)))))
            return MP_FAIL(err, NOMEM, "server: out of memory for %d clients' messages", s->C);
    }
    for (int k = 1; k <= s->C; k++)
        if (!(s->theta[k] = aligned_alloc(64, (s->n_param * sizeof(float) + 63) / 64 * 64)))
            return MP_FAIL(err, NOMEM, "server: out of memory for %d clients' models", s->C);
        else
            memset(s->theta[k], 0, s->n_param * sizeof(float));
    if (mp__fed_update_init(&s->upd, s->cfg, &s->fm.st, err))
        return -1;
    return mp_fed_perf_init(&s->perf, s->C, err);
}

static void server_free(struct server *s)
{
    for (int r = 1; s->out && r <= s->R; r++)
        free(s->out[r]);
    for (int k = 1; s->theta && k <= s->C; k++)
        free(s->theta[k]);
    free(s->part_len), free(s->out), free(s->stop), free(s->send_req), free(s->stop_req);
    free(s->owes), free(s->theta), free(s->last), free(s->parts), free(s->bad);
    free(s->accepted), free(s->sent), free(s->ids), free(s->samples), free(s->scores);
    free(s->w), free(s->rx);
    mp__fed_update_free(&s->upd);
    mp_fed_perf_free(&s->perf);
    mp__fed_model_free(&s->fm);
}

static int all_finite(const float *v, size_t n)
{
    float bad = 0.0f;
    for (size_t i = 0; i < n; i++)
        bad += v[i] * 0.0f; /* 0 for finite values, NaN as soon as one is NaN or Inf */
    return bad == 0.0f;
}

static void reject(struct server *s, int r, const char *why, size_t bytes)
{
    int k = client_of(s, r);
    char stage[32] = "";
    if (s->P > 1)
        snprintf(stage, sizeof stage, "stage %d: ", stage_of(s, r));
    if (bytes)
        fprintf(stderr, "round %d: client %d rejected: %sreply of %zu bytes, expected %zu\n",
                s->round + 1, k, stage, bytes, msg_bytes(s, stage_of(s, r)));
    else
        fprintf(stderr, "round %d: client %d rejected: %s%s\n", s->round + 1, k, stage, why);
    s->bad[k] = 1;
}

/* Validates a part of the current round in s->rx from rank r and files it into theta[k]. */
static void judge_part(struct server *s, int r)
{
    const struct mp_fed_msg *h = s->rx;
    int k = client_of(s, r), p = stage_of(s, r), last = p == s->P - 1;
    const float *floats = (const float *)(h + 1);
    const char *why = NULL;
    if (h->client != k || h->stage != p || h->n_param != s->part_len[p])
        why = "its header does not match the model";
    else if ((last && !isfinite(h->loss)) || !all_finite(floats, s->part_len[p]))
        why = "NaN/Inf in its weights or loss";
    else if (h->n_samples == 0)
        why = "it trained on no samples";
    if (why) {
        reject(s, r, why, 0);
        return;
    }
    mp__fed_unpack(&s->fm.st, &s->lay, p, floats, s->theta[k]);
    if (last)
        s->last[k] = *h;
    if (++s->parts[k] == s->P && !s->bad[k]) {
        s->accepted[k] = 1;
        s->n_accepted++;
    }
}

/* Receives one probed message from rank r and decides what it is: a part of the current round
 * (judged), a stale one (discarded) or garbage (rejected). */
static int take_message(struct server *s, int r, int tag, size_t bytes, struct mp_err *err)
{
    int in_range = r >= 1 && r <= s->R;
    if (!in_range || bytes != msg_bytes(s, stage_of(s, r))) {
        void *junk = malloc(bytes ? bytes : 1);
        if (!junk)
            return MP_FAIL(err, NOMEM, "server: out of memory draining a bad message");
        int rc = mp_xport_recv(s->x, junk, bytes, r, tag, "a client's malformed reply", err);
        free(junk);
        if (rc)
            return -1;
        if (!in_range)
            return 0;
        if (s->owes[r] == s->round)
            reject(s, r, "", bytes);
        s->owes[r] = -1;
        return 0;
    }
    if (mp_xport_recv(s->x, s->rx, bytes, r, tag, "a client's update", err))
        return -1;
    int owed = s->owes[r];
    s->owes[r] = -1;
    if (s->rx->round != s->round || tag != mp_fed_reply_tag(s->round)) {
        char stage[32] = "";
        if (s->P > 1)
            snprintf(stage, sizeof stage, " stage %d", stage_of(s, r));
        fprintf(stderr, "round %d: client %d%s is back: its late update of round %d was "
                "discarded\n", s->round + 1, client_of(s, r), stage,
                (owed >= 0 ? owed : s->rx->round) + 1);
        return 0;
    }
    judge_part(s, r);
    return 0;
}

/* Takes messages until no reply of round `round` (-1: of any round) is owed, `close_at`
 * clients are accepted (0: no such limit) or `seconds` pass (0: only what is already there).
 * Late replies of older rounds never hold a round up. */
static int pump(struct server *s, int round, int close_at, double seconds, struct mp_err *err)
{
    double end = mp_xport_now() + seconds;
    for (;;) {
        int owed = 0;
        for (int r = 1; r <= s->R; r++)
            owed += s->owes[r] >= 0 && (round < 0 || s->owes[r] == round);
        if (!owed || (close_at > 0 && s->n_accepted >= close_at))
            return 0;
        double left = end - mp_xport_now();
        int found = 0, src = 0, tag = 0;
        size_t bytes = 0;
        if (mp_xport_probe(s->x, MP_XPORT_ANY, MP_XPORT_ANY, left > 0 ? left : 0, &found, &src,
                           &tag, &bytes, err))
            return -1;
        if (!found)
            return 0;
        if (take_message(s, src, tag, bytes, err))
            return -1;
    }
}

/* A client is busy while one of its stages owes an older reply or our last send to it has not
 * completed. Returns the busy stage's rank, 0 when free, -1 on error. */
static int busy(struct server *s, int k, struct mp_err *err)
{
    for (int p = 0; p < s->P; p++) {
        int r = rank_of(s, k, p), done = 1;
        if (mp_xport_test(s->x, &s->send_req[r], &done, err))
            return -1;
        if (s->owes[r] >= 0 || !done)
            return r;
    }
    return 0;
}

static int send_work(struct server *s, int k, struct mp_err *err)
{
    for (int p = 0; p < s->P; p++) {
        int r = rank_of(s, k, p);
        struct mp_fed_msg *m = s->out[r];
        *m = (struct mp_fed_msg){.round = s->round, .client = k, .n_param = s->part_len[p],
                                 .stage = p, .n_stages = s->P};
        mp__fed_pack(&s->fm.st, &s->lay, p, s->fm.st.param, (float *)(m + 1));
        s->owes[r] = s->round;
        if (mp_xport_isend(s->x, m, msg_bytes(s, p), r, MP_FED_TAG_WORK, &s->send_req[r], err))
            return -1;
    }
    return 0;
}

/* Sends the round's work to the sampled clients that are free. */
static int start_round(struct server *s, struct mp_err *err)
{
    int *sampled = s->ids, n = mp_fed_sample(s->cfg->seed, s->round, s->C, s->cfg->fraction,
                                             sampled);
    s->n_accepted = 0;
    for (int k = 1; k <= s->C; k++)
        s->accepted[k] = s->parts[k] = s->bad[k] = s->sent[k] = 0;
    for (int i = 0; i < n; i++) {
        int k = sampled[i], r = busy(s, k, err);
        if (r < 0)
            return -1;
        if (r > 0) {
            if (s->owes[r] >= 0)
                fprintf(stderr, "round %d: client %d is still busy with round %d: skipped\n",
                        s->round + 1, k, s->owes[r] + 1);
            else
                fprintf(stderr, "round %d: client %d has not taken its last weights: skipped\n",
                        s->round + 1, k);
            continue;
        }
        if (send_work(s, k, err))
            return -1;
        s->sent[k] = 1;
    }
    return 0;
}

/* The accepted clients in client order, with their samples and scores; returns how many. */
static int gather_accepted(struct server *s)
{
    int n = 0;
    for (int k = 1; k <= s->C; k++)
        if (s->accepted[k]) {
            s->ids[n] = k;
            s->samples[n] = s->last[k].n_samples;
            s->scores[n++] = s->last[k].score;
        }
    return n;
}

static void log_round(struct server *s, int n, double train_loss, double secs, const char *note)
{
    char who[1024] = "", wts[1536] = "", dp[96] = "";
    size_t a = 0, b = 0;
    for (int j = 0; j < n && a < sizeof who - 16 && b < sizeof wts - 16; j++) {
        a += (size_t)snprintf(who + a, sizeof who - a, "%s%d", j ? "," : "", s->ids[j]);
        b += (size_t)snprintf(wts + b, sizeof wts - b, "%s%.3f", j ? "," : "", s->w[j]);
    }
    if (s->cfg->noise_multiplier > 0)
        snprintf(dp, sizeof dp, " epsilon %.4f delta %.3g", s->upd.epsilon, s->upd.delta);
    fprintf(stderr, "round %d/%d clients %s weights %s train_loss %.4f test_acc %.4f "
            "test_loss %.4f time %.1fs%s%s%s\n", s->round + 1, s->cfg->rounds, n ? who : "-",
            n ? wts : "-", train_loss, s->test_acc, s->test_loss, secs, dp, *note ? " | " : "",
            note);
}

/* Why each client that got work this round is not in the aggregate, when it is not obvious. */
static void report_missing(struct server *s, int closed_early)
{
    for (int k = 1; k <= s->C; k++) {
        if (!s->sent[k] || s->accepted[k] || s->bad[k])
            continue;
        int missing = -1;
        for (int p = 0; p < s->P && missing < 0; p++)
            if (s->owes[rank_of(s, k, p)] == s->round)
                missing = p;
        if (missing < 0)
            continue;
        if (closed_early)
            fprintf(stderr, "round %d: client %d left out: the round closed with %d updates "
                    "(--min-clients)\n", s->round + 1, k, s->n_accepted);
        else if (s->P > 1)
            fprintf(stderr, "round %d: client %d missed the round deadline (%.1f s; stage %d): "
                    "left out\n", s->round + 1, k, s->cfg->round_deadline, missing);
        else
            fprintf(stderr, "round %d: client %d missed the round deadline (%.1f s): left out\n",
                    s->round + 1, k, s->cfg->round_deadline);
    }
}

static int run_round(struct server *s, struct mp_err *err)
{
    double t0 = mp_xport_now(), train_loss = NAN;
    int close_at = s->cfg->min_clients;
    if (pump(s, -1, 0, 0, err) || start_round(s, err))
        return -1;
    if (pump(s, s->round, close_at, s->cfg->round_deadline, err))
        return -1;
    report_missing(s, close_at > 0 && s->n_accepted >= close_at);
    int n = gather_accepted(s), applied = 0;
    char note[160];
    if (mp__fed_update_round(&s->upd, s->round, s->fm.st.param, s->theta, s->ids, s->samples,
                             s->scores, n, &s->perf, s->w, &applied, note, sizeof note, err))
        return -1;
    if (applied) { /* the clients' mean local loss, weighted by their share in the aggregate */
        double sum = 0, wsum = 0;
        for (int j = 0; j < n; j++) {
            sum += s->w[j] * s->last[s->ids[j]].loss;
            wsum += s->w[j];
        }
        train_loss = wsum > 0 ? sum / wsum : NAN;
    }
    mp__fed_update_account(&s->upd);
    if (!applied)
        fprintf(stderr, "round %d: no update %s: the global model is unchanged\n", s->round + 1,
                n ? "applied" : "accepted");
    if (mp__fed_model_eval(&s->fm, &s->d->test, &s->test_loss, &s->test_acc, err))
        return -1;
    log_round(s, applied ? n : 0, train_loss, mp_xport_now() - t0, note);
    if (s->cfg->ckpt_dir &&
        mp__fed_ckpt_save(s->cfg, &s->fm, s->x, s->round + 1, &s->perf, &s->upd, err))
        return -1;
    return 0;
}

/* STOP to every client rank, then late replies drained and every send completed, so that no
 * client is left blocked in a send when the job ends. */
static int finish(struct server *s, struct mp_err *err)
{
    for (int r = 1; r <= s->R; r++) {
        s->stop[r] = (struct mp_fed_msg){.round = -1, .client = client_of(s, r),
                                         .stage = stage_of(s, r), .n_stages = s->P};
        if (mp_xport_isend(s->x, &s->stop[r], sizeof s->stop[r], r, MP_FED_TAG_STOP,
                           &s->stop_req[r], err))
            return -1;
    }
    s->round = s->cfg->rounds;
    double wait = 2 * s->cfg->round_deadline + 60;
    if (pump(s, -1, 0, wait, err))
        return -1;
    for (int r = 1; r <= s->R; r++) {
        if (s->owes[r] >= 0)
            return MP_FAIL(err, DEADLINE, "server waited %.0f s for client %d's late update of "
                           "round %d (rank %d)", wait, client_of(s, r), s->owes[r] + 1, r);
        if (mp_xport_wait(s->x, &s->send_req[r], "a client to take the global weights", err) ||
            mp_xport_wait(s->x, &s->stop_req[r], "a client to take the stop", err))
            return -1;
    }
    return 0;
}

static void log_start(const struct server *s, const struct mp_fed_split *split, int start)
{
    const struct mp_fed_cfg *cfg = s->cfg;
    size_t lo = SIZE_MAX, hi = 0;
    for (int k = 0; k < s->C; k++) {
        size_t n = split->off[k + 1] - split->off[k];
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
    }
    fprintf(stderr, "fed: %d clients with %zu..%zu samples each, rounds %d..%d\n", s->C, lo, hi,
            start + 1, cfg->rounds);
    if (s->P > 1) {
        char parts[512] = "";
        for (int v = 0, a = 0; v < s->lay.S && a < (int)sizeof parts - 32; v++)
            a += snprintf(parts + a, sizeof parts - (size_t)a, "%s%d-%d", v ? " | " : "",
                          s->lay.bounds[v], s->lay.bounds[v + 1] - 1);
        fprintf(stderr, "fed: each client is a %d-stage %s pipeline, %d micro-batch%s a step, "
                "layers %s\n", s->P, mp_sched_name(cfg->schedule), s->lay.M,
                s->lay.M > 1 ? "es" : "", parts);
    }
    if (cfg->server_opt != MP_FED_OPT_AVG || s->upd.opt.lr != 1.0)
        fprintf(stderr, "fed: server optimizer %s, server lr %g (beta1 %g, beta2 %g, tau %g)\n",
                mp_fed_server_opt_name(cfg->server_opt), s->upd.opt.lr, MP_FED_OPT_BETA1,
                MP_FED_OPT_BETA2, MP_FED_OPT_TAU);
    if (cfg->attack.k > 0) {
        int is[4096], a = 0;
        char who[1024] = "";
        mp_fed_attackers(cfg->seed, s->C, cfg->attack.k, is);
        for (int k = 1; k <= s->C && a < (int)sizeof who - 8; k++)
            if (is[k])
                a += snprintf(who + a, sizeof who - (size_t)a, "%s%d", a ? "," : "", k);
        fprintf(stderr, "fed: clients %s attack (%s)\n", who,
                cfg->attack.kind == MP_FED_ATTACK_SIGNFLIP ? "signflip"
                : cfg->attack.kind == MP_FED_ATTACK_NOISE  ? "noise"
                                                           : "scale");
    }
    if (cfg->noise_multiplier > 0)
        fprintf(stderr, "fed: DP-FedAvg: updates clipped to %g, noise multiplier %g, %d of %d "
                "clients a round (q = %.4g), delta %.3g\n", cfg->clip_update,
                cfg->noise_multiplier, s->upd.sampled, s->C, (double)s->upd.sampled / s->C,
                s->upd.delta);
}

int mp__fed_server(const struct mp_fed_cfg *cfg, struct mp_xport *x, const struct mp_data *d,
                   const struct mp_fed_split *split, struct mp_fed_result *r, struct mp_err *err)
{
    struct server s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg, s.x = x, s.d = d, s.C = cfg->clients;
    mp_xport_set_deadline(x, cfg->round_deadline + 60);
    struct mp_fed_layout one = {.P = 1, .V = 1, .S = 1, .M = 1, .sched = MP_SCHED_1F1B,
                                .place = MP_VPLACE_LOOP, .mbs = cfg->batch,
                                .bounds = {1, cfg->model->n_layers}};
    int rc = mp__fed_layout(cfg, &s.lay, err);
    s.P = s.lay.P;
    s.R = s.C * s.P;
    if (!rc)
        rc = mp__fed_model_init(&s.fm, cfg->model, &one, 0, 0, cfg->seed, x, err);
    s.n_param = s.fm.st.n_param;
    if (!rc)
        rc = server_alloc(&s, err);
    int start = 0;
    if (!rc && cfg->resume)
        rc = mp__fed_ckpt_load(cfg, &s.fm, &start, &s.perf, &s.upd, err);
    if (!rc)
        log_start(&s, split, start);
    if (!rc && start >= cfg->rounds)
        rc = mp__fed_model_eval(&s.fm, &d->test, &s.test_loss, &s.test_acc, err);
    for (s.round = start; !rc && s.round < cfg->rounds; s.round++)
        rc = run_round(&s, err);
    if (!rc)
        rc = finish(&s, err);
    if (!rc && cfg->save_weights)
        rc = mp_weights_save(&s.fm.st, s.fm.st.param, s.fm.lay.bounds, x, cfg->save_weights,
                             NULL, err);
    *r = (struct mp_fed_result){.test_acc = s.test_acc, .test_loss = s.test_loss,
                                .rounds = cfg->rounds, .clients = s.C,
                                .dp = cfg->noise_multiplier > 0, .epsilon = s.upd.epsilon,
                                .delta = s.upd.delta};
    server_free(&s);
    return rc;
}
