/* The server of `mpipe fed` (rank 0, mp_fed.h): per round it samples clients, sends each the
 * global weights, collects replies until the round's deadline, rejects garbage (wrong size,
 * NaN/Inf), discards stale replies (their tag and header name an older round), aggregates the
 * accepted updates in client order in double, evaluates the global model and logs the round.
 * A client still busy with an older round is skipped until its late reply has been drained, so
 * it rejoins the round after. It owns the per-client message buffers; it trains nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"

struct server {
    const struct mp_fed_cfg *cfg;
    struct mp_xport *x;
    const struct mp_data *d;
    int C, round;
    struct mp_fed_model fm;       /* st.param is the global model */
    size_t n_param, msg_bytes;
    struct mp_fed_msg **out, **in; /* per client 1..C: WORK being sent, reply received */
    struct mp_fed_msg *stop;       /* per client: the STOP header */
    int *send_req, *stop_req;      /* outstanding sends, or -1 */
    int *owes;                     /* round whose reply the client still owes, or -1 */
    int *accepted;                 /* reply of the current round accepted */
    double *acc;                   /* n_param: the weighted sum in double */
    struct mp_fed_perf perf;
    int *ids;
    uint64_t *samples;
    double *scores, *w;
    double test_acc, test_loss;
};

static struct mp_fed_msg *alloc_msg(size_t bytes)
{
    struct mp_fed_msg *m = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (m)
        memset(m, 0, sizeof *m);
    return m;
}

static int server_alloc(struct server *s, struct mp_err *err)
{
    int C = s->C;
    s->out = calloc((size_t)C + 1, sizeof *s->out);
    s->in = calloc((size_t)C + 1, sizeof *s->in);
    s->stop = calloc((size_t)C + 1, sizeof *s->stop);
    s->send_req = malloc(sizeof(int) * (size_t)(C + 1));
    s->stop_req = malloc(sizeof(int) * (size_t)(C + 1));
    s->owes = malloc(sizeof(int) * (size_t)(C + 1));
    s->accepted = calloc((size_t)C + 1, sizeof(int));
    s->acc = malloc(sizeof(double) * (s->n_param ? s->n_param : 1));
    s->ids = malloc(sizeof(int) * (size_t)(C + 1));
    s->samples = malloc(sizeof(uint64_t) * (size_t)(C + 1));
    s->scores = malloc(sizeof(double) * (size_t)(C + 1));
    s->w = malloc(sizeof(double) * (size_t)(C + 1));
    if (!s->out || !s->in || !s->stop || !s->send_req || !s->stop_req || !s->owes ||
        !s->accepted || !s->acc || !s->ids || !s->samples || !s->scores || !s->w)
        return MP_FAIL(err, NOMEM, "server: out of memory");
    for (int k = 1; k <= C; k++) {
        s->send_req[k] = s->stop_req[k] = s->owes[k] = -1;
        if (!(s->out[k] = alloc_msg(s->msg_bytes)) || !(s->in[k] = alloc_msg(s->msg_bytes)))
            return MP_FAIL(err, NOMEM, "server: out of memory for %d clients' messages", C);
    }
    return mp_fed_perf_init(&s->perf, C, err);
}

static void server_free(struct server *s)
{
    for (int k = 1; s->out && s->in && k <= s->C; k++) {
        free(s->out[k]);
        free(s->in[k]);
    }
    free(s->out), free(s->in), free(s->stop), free(s->send_req), free(s->stop_req);
    free(s->owes), free(s->accepted), free(s->acc), free(s->ids), free(s->samples);
    free(s->scores), free(s->w);
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

/* Validates a reply of the current round that arrived whole in s->in[k]. */
static void judge_reply(struct server *s, int k)
{
    const struct mp_fed_msg *h = s->in[k];
    const char *why = NULL;
    if (h->client != k || h->n_param != s->n_param)
        why = "its header does not match the model";
    else if (!isfinite(h->loss) || !all_finite((const float *)(h + 1), s->n_param))
        why = "NaN/Inf in its weights or loss";
    else if (h->n_samples == 0)
        why = "it trained on no samples";
    if (why)
        fprintf(stderr, "round %d: client %d rejected: %s\n", s->round + 1, k, why);
    else
        s->accepted[k] = 1;
}

/* Receives one probed message from client k and decides what it is: the current round's reply
 * (judged), a stale one (discarded) or garbage (rejected). */
static int take_message(struct server *s, int k, int tag, size_t bytes, struct mp_err *err)
{
    if (k < 1 || k > s->C || bytes != s->msg_bytes) {
        void *junk = malloc(bytes ? bytes : 1);
        if (!junk)
            return MP_FAIL(err, NOMEM, "server: out of memory draining a bad message");
        int rc = mp_xport_recv(s->x, junk, bytes, k, tag, "a client's malformed reply", err);
        free(junk);
        if (rc)
            return -1;
        fprintf(stderr, "round %d: client %d rejected: reply of %zu bytes, expected %zu\n",
                s->round + 1, k, bytes, s->msg_bytes);
        if (k >= 1 && k <= s->C)
            s->owes[k] = -1;
        return 0;
    }
    if (mp_xport_recv(s->x, s->in[k], bytes, k, tag, "a client's update", err))
        return -1;
    int owed = s->owes[k];
    s->owes[k] = -1;
    if (s->in[k]->round != s->round || tag != mp_fed_reply_tag(s->round)) {
        fprintf(stderr, "round %d: client %d is back: its late update of round %d was discarded\n",
                s->round + 1, k, (owed >= 0 ? owed : s->in[k]->round) + 1);
        return 0;
    }
    judge_reply(s, k);
    return 0;
}

/* Takes messages until no reply of round `round` (-1: of any round) is owed or `seconds` pass
 * (0: only what is already there). Late replies of older rounds never hold a round up. */
static int pump(struct server *s, int round, double seconds, struct mp_err *err)
{
    double end = mp_xport_now() + seconds;
    for (;;) {
        int owed = 0;
        for (int k = 1; k <= s->C; k++)
            owed += s->owes[k] >= 0 && (round < 0 || s->owes[k] == round);
        double left = end - mp_xport_now();
        if (!owed)
            return 0;
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

/* A client is busy while it owes an older reply or our last send to it has not completed. */
static int busy(struct server *s, int k, struct mp_err *err)
{
    int done = 1;
    if (mp_xport_test(s->x, &s->send_req[k], &done, err))
        return -1;
    return s->owes[k] >= 0 || !done;
}

static int send_work(struct server *s, int k, struct mp_err *err)
{
    struct mp_fed_msg *m = s->out[k];
    *m = (struct mp_fed_msg){.round = s->round, .client = k, .n_param = s->n_param};
    memcpy(m + 1, s->fm.st.param, s->n_param * sizeof(float));
    s->owes[k] = s->round;
    return mp_xport_isend(s->x, m, s->msg_bytes, k, MP_FED_TAG_WORK, &s->send_req[k], err);
}

/* Sends the round's work to the sampled clients that are free; returns how many got it. */
static int start_round(struct server *s, int *sent, struct mp_err *err)
{
    int *sampled = s->ids, n = mp_fed_sample(s->cfg->seed, s->round, s->C, s->cfg->fraction,
                                             sampled);
    *sent = 0;
    for (int k = 1; k <= s->C; k++)
        s->accepted[k] = 0;
    for (int i = 0; i < n; i++) {
        int k = sampled[i], b = busy(s, k, err);
        if (b < 0)
            return -1;
        if (b) {
            if (s->owes[k] >= 0)
                fprintf(stderr, "round %d: client %d is still busy with round %d: skipped\n",
                        s->round + 1, k, s->owes[k] + 1);
            else
                fprintf(stderr, "round %d: client %d has not taken its last weights: skipped\n",
                        s->round + 1, k);
            continue;
        }
        if (send_work(s, k, err))
            return -1;
        (*sent)++;
    }
    return 0;
}

/* The weighted mean of the accepted updates, summed in client order in double. Returns the
 * number of updates; fills s->ids/w and *train_loss (the same weights over the clients' loss). */
static int aggregate(struct server *s, double *train_loss)
{
    int n = 0;
    for (int k = 1; k <= s->C; k++)
        if (s->accepted[k]) {
            s->ids[n] = k;
            s->samples[n] = s->in[k]->n_samples;
            s->scores[n++] = s->in[k]->score;
        }
    *train_loss = NAN;
    if (!n)
        return 0;
    mp_fed_weights(s->cfg->agg, &s->perf, s->ids, s->samples, s->scores, n, s->w);
    memset(s->acc, 0, s->n_param * sizeof(double));
    *train_loss = 0;
    for (int j = 0; j < n; j++) {
        const float *theta = (const float *)(s->in[s->ids[j]] + 1);
        double wj = s->w[j];
        for (size_t i = 0; i < s->n_param; i++)
            s->acc[i] += wj * (double)theta[i];
        *train_loss += wj * s->in[s->ids[j]]->loss;
    }
    for (size_t i = 0; i < s->n_param; i++)
        s->fm.st.param[i] = (float)s->acc[i];
    return n;
}

static void log_round(struct server *s, int n, double train_loss, double secs)
{
    char who[1024] = "", wts[1536] = "";
    size_t a = 0, b = 0;
    for (int j = 0; j < n && a < sizeof who - 16 && b < sizeof wts - 16; j++) {
        a += (size_t)snprintf(who + a, sizeof who - a, "%s%d", j ? "," : "", s->ids[j]);
        b += (size_t)snprintf(wts + b, sizeof wts - b, "%s%.3f", j ? "," : "", s->w[j]);
    }
    fprintf(stderr, "round %d/%d clients %s weights %s train_loss %.4f test_acc %.4f "
            "test_loss %.4f time %.1fs\n", s->round + 1, s->cfg->rounds, n ? who : "-",
            n ? wts : "-", train_loss, s->test_acc, s->test_loss, secs);
}

static int run_round(struct server *s, struct mp_err *err)
{
    double t0 = mp_xport_now(), train_loss;
    int sent = 0;
    if (pump(s, -1, 0, err) || start_round(s, &sent, err))
        return -1;
    if (pump(s, s->round, s->cfg->round_deadline, err))
        return -1;
    for (int k = 1; k <= s->C; k++)
        if (s->owes[k] == s->round)
            fprintf(stderr, "round %d: client %d missed the round deadline (%.1f s): left out\n",
                    s->round + 1, k, s->cfg->round_deadline);
    int n = aggregate(s, &train_loss);
    if (!n)
        fprintf(stderr, "round %d: no update accepted: the global model is unchanged\n",
                s->round + 1);
    if (mp__fed_model_eval(&s->fm, &s->d->test, &s->test_loss, &s->test_acc, err))
        return -1;
    log_round(s, n, train_loss, mp_xport_now() - t0);
    if (s->cfg->ckpt_dir &&
        mp__fed_ckpt_save(s->cfg, &s->fm, s->x, s->round + 1, &s->perf, err))
        return -1;
    return 0;
}

/* STOP to every client, then late replies drained and every send completed, so that no client
 * is left blocked in a send when the job ends. */
static int finish(struct server *s, struct mp_err *err)
{
    for (int k = 1; k <= s->C; k++) {
        s->stop[k] = (struct mp_fed_msg){.round = -1, .client = k};
        if (mp_xport_isend(s->x, &s->stop[k], sizeof s->stop[k], k, MP_FED_TAG_STOP,
                           &s->stop_req[k], err))
            return -1;
    }
    s->round = s->cfg->rounds;
    if (pump(s, -1, 2 * s->cfg->round_deadline + 60, err))
        return -1;
    for (int k = 1; k <= s->C; k++) {
        if (s->owes[k] >= 0)
            return MP_FAIL(err, DEADLINE, "server waited %.0f s for client %d's late update of "
                           "round %d", 2 * s->cfg->round_deadline + 60, k, s->owes[k] + 1);
        if (mp_xport_wait(s->x, &s->send_req[k], "a client to take the global weights", err) ||
            mp_xport_wait(s->x, &s->stop_req[k], "a client to take the stop", err))
            return -1;
    }
    return 0;
}

int mp__fed_server(const struct mp_fed_cfg *cfg, struct mp_xport *x, const struct mp_data *d,
                   const struct mp_fed_split *split, struct mp_fed_result *r, struct mp_err *err)
{
    struct server s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg, s.x = x, s.d = d, s.C = cfg->clients;
    mp_xport_set_deadline(x, cfg->round_deadline + 60);
    int rc = mp__fed_model_init(&s.fm, cfg->model, cfg->batch, 0, cfg->seed, x, err);
    s.n_param = s.fm.st.n_param;
    s.msg_bytes = sizeof(struct mp_fed_msg) + s.n_param * sizeof(float);
    if (!rc)
        rc = server_alloc(&s, err);
    int start = 0;
    if (!rc && cfg->resume)
        rc = mp__fed_ckpt_load(cfg, &s.fm, &start, &s.perf, err);
    size_t lo = SIZE_MAX, hi = 0;
    for (int k = 0; k < s.C; k++) {
        size_t n = split->off[k + 1] - split->off[k];
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
    }
    if (!rc)
        fprintf(stderr, "fed: %d clients with %zu..%zu samples each, rounds %d..%d\n", s.C, lo,
                hi, start + 1, cfg->rounds);
    if (!rc && start >= cfg->rounds)
        rc = mp__fed_model_eval(&s.fm, &d->test, &s.test_loss, &s.test_acc, err);
    for (s.round = start; !rc && s.round < cfg->rounds; s.round++)
        rc = run_round(&s, err);
    if (!rc)
        rc = finish(&s, err);
    *r = (struct mp_fed_result){.test_acc = s.test_acc, .test_loss = s.test_loss,
                                .rounds = cfg->rounds, .clients = s.C};
    server_free(&s);
    return rc;
}
