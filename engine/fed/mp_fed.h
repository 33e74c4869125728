/* Federated training (`mpipe fed`, issues 7 and 19): rank 0 is the server, the other ranks the
 * clients, each client a P-stage pipeline of ranks (P = 1: one process holding the whole model).
 * This header owns the run's configuration, the data splits (mp_fed_split.c), sampling, weights
 * and option syntax (mp_fed_agg.c), the robust rules (mp_fed_robust.c), the server optimizers
 * (mp_fed_opt.c), the privacy accountant (mp_fed_dp.c), the server's update (mp_fed_update.c),
 * the wire format, and the two roles (mp_fed_server.c, mp_fed_client.c). It never calls MPI
 * itself: all messages go through mp_xport.h. */
#ifndef MP_FED_H
#define MP_FED_H

#include <stddef.h>
#include <stdint.h>

#include "mp_data.h"
#include "mp_err.h"
#include "mp_exec.h"
#include "mp_layer.h"
#include "mp_lr.h"
#include "mp_optim.h"
#include "mp_rng.h"
#include "mp_sched.h"
#include "mp_stage.h"
#include "mp_xport.h"

/* ---- data splits (mp_fed_split.c) ---- */

enum mp_fed_split_kind {
    MP_FED_SPLIT_IID,
    MP_FED_SPLIT_DIRICHLET,
    MP_FED_SPLIT_SHARDS,
    MP_FED_SPLIT_CONTIGUOUS /* client k holds the k-th stretch of the data in file order */
};

struct mp_fed_split_cfg {
    enum mp_fed_split_kind kind;
    double alpha;   /* dirichlet: concentration; smaller is more skewed */
    int shards;     /* shards: shards per client */
};

/* A partition of the sample indices [0, n) among C clients: client c owns
 * idx[off[c] .. off[c + 1]), in increasing index order. */
struct mp_fed_split {
    int C;
    uint32_t *idx;  /* (n) */
    size_t *off;    /* (C + 1) */
};

/* "iid", "dirichlet:A" (A > 0), "shards:K" (K >= 1) or "contiguous"; MP_ERR_USAGE otherwise. */
int mp_fed_split_parse(const char *text, struct mp_fed_split_cfg *cfg, struct mp_err *err);
/* Deterministic from (cfg, labels, seed). labels NULL: samples without classes (the windows of
 * byte-level text), which only iid and contiguous can split. MP_ERR_USAGE when the data cannot be
 * split so (e.g. fewer samples than clients, fewer samples than C * K shards, no labels). */
int mp_fed_split_make(struct mp_fed_split *s, const struct mp_fed_split_cfg *cfg,
                      const int32_t *labels, size_t n, size_t n_classes, int C, uint64_t seed,
                      struct mp_err *err);
void mp_fed_split_free(struct mp_fed_split *s);
/* Gamma(shape, 1) and a Dirichlet(alpha, ..., alpha) draw of k proportions (sum 1), from r. */
double mp_fed_gamma(struct mp_rng *r, double shape);
void mp_fed_dirichlet(struct mp_rng *r, double alpha, int k, double *p);

/* ---- configuration ---- */

enum mp_fed_algo { MP_FED_FEDAVG, MP_FED_FEDPROX };
/* How the server combines the accepted client models (--aggregate): weighted means (size, perf)
 * or robust rules that ignore the clients' reported sample counts (a Byzantine client could lie
 * about them): coordinate-wise median, beta-trimmed mean (Yin et al. 2018), Krum and Multi-Krum
 * with f assumed bad clients (Blanchard et al. 2017). */
enum mp_fed_agg {
    MP_FED_AGG_SIZE,
    MP_FED_AGG_PERF,
    MP_FED_AGG_MEDIAN,
    MP_FED_AGG_TRIMMED,
    MP_FED_AGG_KRUM,
    MP_FED_AGG_MULTIKRUM,
    MP_FED_AGG_COUNT
};
/* The server's step on the pseudo-gradient (Reddi et al. 2021, Algorithm 2). */
enum mp_fed_server_opt { MP_FED_OPT_AVG, MP_FED_OPT_ADAM, MP_FED_OPT_YOGI, MP_FED_OPT_ADAGRAD,
                         MP_FED_OPT_COUNT };
/* What an attacking client sends instead of its update (--attack K:MODE). */
enum mp_fed_attack_kind { MP_FED_ATTACK_NONE, MP_FED_ATTACK_SIGNFLIP, MP_FED_ATTACK_SCALE,
                          MP_FED_ATTACK_NOISE };

struct mp_fed_attack {
    int k;                         /* attacking clients, chosen from the seed */
    enum mp_fed_attack_kind kind;
    double scale;                  /* scale:X */
};

struct mp_fed_cfg {
    const struct mp_model *model;
    const char *data_src;
    int clients, rounds, local_epochs;
    long long local_steps;         /* > 0: this many local steps a round instead of the epochs */
    double fraction;               /* share of clients sampled per round (at least one) */
    int min_clients;               /* 0: wait for every sampled client, apply >= 1 update; K:
                                      close the round at K accepted updates, apply only >= K */
    struct mp_fed_split_cfg split;
    enum mp_fed_algo algo;
    double mu;                     /* FedProx proximal weight */
    enum mp_fed_agg agg;
    double trim_beta;              /* trimmed: share cut from each end, [0, 0.5) */
    int krum_f;                    /* krum, multikrum: assumed bad clients */
    enum mp_fed_server_opt server_opt;
    double server_lr;              /* 0: the optimizer's default (MP_FED_SERVER_LR_*) */
    struct mp_fed_attack attack;
    double clip_update;            /* L2 bound on each client update, 0: none */
    double noise_multiplier;       /* DP-FedAvg: noise std = sigma * clip / sampled, 0: none */
    double delta;                  /* accountant's delta, 0: 1 / clients^1.1 */
    double round_deadline;         /* seconds the server waits for a round's replies */
    size_t eval_windows;           /* text: validation windows the server evaluates, 0: 256 */
    size_t batch;                  /* local mini-batch */
    int client_stages;             /* P: each client is a P-stage pipeline */
    int micro_batches;             /* per local step, 0: as `train` picks (1 when P = 1) */
    enum mp_sched_kind schedule;   /* the clients' pipeline schedule */
    int chunks;                    /* V for interleaved */
    struct mp_optim_cfg optim;     /* fresh state every round, as in FedAvg */
    struct mp_lr_cfg lr;           /* restarts every round over that round's local steps */
    uint64_t seed;
    const char *ckpt_dir;          /* per-round server checkpoints, or NULL */
    int resume;
    const char *save_weights;      /* the final global model as safetensors, or NULL */
};

struct mp_fed_result {
    double test_acc, test_loss;    /* the final global model on the test set */
    int rounds, clients;
    int dp;                        /* epsilon and delta are meaningful */
    double epsilon, delta;
};

/* Runs this rank's role (server on rank 0, client stages otherwise). MP_ERR_USAGE when the
 * number of ranks is not 1 + clients * client_stages. Only the server fills *r. */
int mp_fed_run(const struct mp_fed_cfg *cfg, struct mp_xport *x, struct mp_fed_result *r,
               struct mp_err *err);

/* Checks the combination of options that do not need the data: DP needs clipping and the plain
 * mean, Krum needs n > 2f + 2 sampled clients, K attackers and K min-clients fit, ... Fills the
 * defaults (server-lr, delta, micro-batches). MP_ERR_USAGE naming the flags otherwise. */
int mp_fed_cfg_check(struct mp_fed_cfg *cfg, struct mp_err *err);

/* ---- option syntax (mp_fed_agg.c; pure) ---- */

/* "size", "perf", "median", "trimmed:B" (0 <= B < 0.5), "krum:F", "multikrum:F" (F >= 0). */
int mp_fed_agg_parse(const char *text, struct mp_fed_cfg *cfg, struct mp_err *err);
/* "K:signflip", "K:scale:X" (X finite), "K:noise" with K >= 0. */
int mp_fed_attack_parse(const char *text, struct mp_fed_attack *a, struct mp_err *err);
const char *mp_fed_agg_name(enum mp_fed_agg agg);
const char *mp_fed_server_opt_name(enum mp_fed_server_opt opt);

/* ---- client sampling and aggregation weights (mp_fed_agg.c; pure functions) ---- */

/* The clients (1..C, ascending) sampled in `round`: max(1, round(F * C)) of them, a function of
 * (seed, round) only. Returns how many were written to out (C entries). */
int mp_fed_sample(uint64_t seed, int round, int C, double fraction, int *out);

/* The `perf` score's history per client (index 1..C; entry 0 unused). */
struct mp_fed_perf {
    int C;
    double *ema;   /* EMA of the client's score */
    int *seen;     /* rounds the client contributed to */
};
#define MP_FED_PERF_DECAY 0.5   /* ema <- decay * ema + (1 - decay) * score */
#define MP_FED_PERF_MIN 0.5     /* a client's factor is bounded to [MIN, MAX] x the mean */
#define MP_FED_PERF_MAX 2.0
int mp_fed_perf_init(struct mp_fed_perf *p, int C, struct mp_err *err);
void mp_fed_perf_free(struct mp_fed_perf *p);
/* Normalised weights w[0..n) for the accepted clients ids[0..n) with samples[] and this round's
 * scores[] (size: w ~ samples; perf: w ~ samples x bounded factor of the updated EMA). */
void mp_fed_weights(enum mp_fed_agg agg, struct mp_fed_perf *perf, const int *ids,
                    const uint64_t *samples, const double *scores, int n, double *w);

/* Whether client k (1..C) attacks: K of the C clients, a function of the seed only (a partial
 * Fisher-Yates draw). is_attacker has C + 1 entries; entry 0 is unused. */
void mp_fed_attackers(uint64_t seed, int C, int K, int *is_attacker);

/* ---- robust aggregation rules (mp_fed_robust.c; pure functions) ----
 * v[0..n) are the clients' models, each `len` floats; out gets the aggregate in double. */

/* Coordinate-wise median (the mean of the two middle values when n is even). scratch: n floats. */
void mp_fed_median(const float *const *v, int n, size_t len, double *out, float *scratch);
/* Coordinate-wise mean of the values left after cutting the `trim` smallest and `trim` largest
 * (n > 2 trim), added in ascending order. scratch: n floats. */
void mp_fed_trimmed_mean(const float *const *v, int n, size_t len, int trim, double *out,
                         float *scratch);
/* Krum scores: score[i] = the sum of the n - f - 2 smallest squared distances from v[i] to the
 * others (needs n >= 2f + 3). dist: n * n doubles (filled). Then the `m` lowest scores (ties: the
 * lower index) are written to chosen[0..m) in ascending index order: m = 1 is Krum, m = n - f
 * Multi-Krum. */
void mp_fed_krum(const float *const *v, int n, size_t len, int f, int m, double *dist,
                 double *score, int *chosen);
/* The plain mean of v[chosen[0..m)], added in that order. */
void mp_fed_mean_of(const float *const *v, const int *chosen, int m, size_t len, double *out);

/* ---- server optimizers (mp_fed_opt.c; pure) ----
 * x <- x + lr * m / (sqrt(v) + tau) on the pseudo-gradient d = aggregate - x, with
 * m <- b1 m + (1 - b1) d and v per optimizer (adam: b2 v + (1 - b2) d^2; yogi:
 * v - (1 - b2) d^2 sign(v - d^2); adagrad: v + d^2), v starting at tau^2 and no bias correction,
 * as in Reddi et al. 2021, Algorithm 2. avg: x <- x + lr d (lr 1: x <- the aggregate). */
#define MP_FED_OPT_BETA1 0.9
#define MP_FED_OPT_BETA2 0.99
#define MP_FED_OPT_TAU 1e-3
/* Default server learning rates, from 30-round runs of the 8-client Dirichlet 0.5 federation
 * (docs/federated.md): on mlp.mp adam and yogi at 1e-2 end 0.9 and 0.3 points below avg, adagrad
 * at 3e-2 0.04 above it (at 1e-1 it oscillated and ended 3.0 below); on tiny_mlp.mp these end
 * 1.6-1.8 above avg and adagrad 0.6 below. At 1e-3 (Reddi et al.'s smallest) adam and yogi ended
 * 11 points below avg on tiny_mlp.mp, adagrad 20. */
#define MP_FED_SERVER_LR_AVG 1.0
#define MP_FED_SERVER_LR_ADAM 1e-2
#define MP_FED_SERVER_LR_YOGI 1e-2
#define MP_FED_SERVER_LR_ADAGRAD 3e-2
struct mp_fed_opt {
    enum mp_fed_server_opt kind;
    double lr;
    size_t n;
    float *m, *v;   /* (n) each; NULL for avg */
};
int mp_fed_opt_init(struct mp_fed_opt *o, enum mp_fed_server_opt kind, double lr, size_t n,
                    struct mp_err *err);
void mp_fed_opt_free(struct mp_fed_opt *o);
double mp_fed_opt_default_lr(enum mp_fed_server_opt kind);
/* One server step: x (n floats) moves towards agg (n doubles). */
void mp_fed_opt_step(struct mp_fed_opt *o, float *x, const double *agg);

/* ---- differential privacy accounting (mp_fed_dp.c; pure) ----
 * Renyi DP of the sampled Gaussian mechanism (Mironov, Talwar and Zhang 2019) at a fixed set of
 * orders, composed over rounds by addition, converted to (epsilon, delta) with
 * epsilon = min over orders a of rdp(a) + log(1 / delta) / (a - 1) (Mironov 2017, Prop. 3). */
#define MP_FED_RDP_ORDERS 155   /* 1.1, 1.2 .. 10.9, 11 .. 63, 128, 256, 512 */
struct mp_fed_acct {
    double order[MP_FED_RDP_ORDERS];
    double rdp[MP_FED_RDP_ORDERS];   /* composed so far */
};
void mp_fed_acct_init(struct mp_fed_acct *a);
/* RDP at order alpha > 1 of one step with sampling rate q in (0, 1] and noise multiplier sigma. */
double mp_fed_rdp_sgm(double q, double sigma, double alpha);
void mp_fed_acct_add(struct mp_fed_acct *a, double q, double sigma, double steps);
/* The smallest epsilon over the orders for delta in (0, 1); *order gets the best order. */
double mp_fed_acct_epsilon(const struct mp_fed_acct *a, double delta, double *order);

/* ---- wire format ----
 * The server sends each stage of a client the parameters of the layers that stage holds, packed
 * in global layer order (weight then bias, no padding); the stage replies with the same layers
 * trained. A P = 1 client is one stage holding every layer. */

enum { MP_FED_TAG_WORK = 1, MP_FED_TAG_STOP = 2, MP_FED_TAG_REPLY0 = 16 };
/* Replies carry their round in the tag (and the header), so a late reply is recognised. */
static inline int mp_fed_reply_tag(int round) { return MP_FED_TAG_REPLY0 + round % 16000; }

/* Header of every message; WORK and REPLY are followed by n_param floats. */
struct mp_fed_msg {
    int32_t round, client;
    uint64_t n_param;     /* floats that follow */
    uint64_t n_samples;   /* reply: samples the client trained on */
    double loss;          /* reply of the last stage: mean local train loss */
    double score;         /* reply of the last stage: relative reduction of the local loss */
    int32_t stage, n_stages;
    double pad[2];        /* keeps the floats that follow 64-byte aligned */
};

/* ---- one process's model (mp_fed_model.c) ---- */

/* The layout of a client: P stages, V chunks each, S = P V virtual stages over bounds[0..S]
 * (balanced by cost, as `train` splits without a plan), M micro-batches of batch / M. */
struct mp_fed_layout {
    int P, V, S, M;
    enum mp_sched_kind sched;
    enum mp_vplace place;          /* where virtual stages live (a V for zbv) */
    size_t mbs;
    int bounds[1025];
};
int mp__fed_layout(const struct mp_fed_cfg *cfg, struct mp_fed_layout *lay, struct mp_err *err);
/* Floats of the layers stage `stage` of the layout holds (what a message to it carries). */
size_t mp__fed_part_len(const struct mp_model *m, const struct mp_fed_layout *lay, int stage);
/* Copies between an arena laid out as st (the server's whole-model stage or a client stage) and
 * a packed part: the layers owned by `stage` under lay, in global order. */
void mp__fed_pack(const struct mp_stage *st, const struct mp_fed_layout *lay, int stage,
                  const float *arena, float *part);
void mp__fed_unpack(const struct mp_stage *st, const struct mp_fed_layout *lay, int stage,
                    const float *part, float *arena);

/* A stage (or the server's whole model as one P = 1 stage) run by the ordinary executor. */
struct mp_fed_model {
    struct mp_fed_layout lay;
    struct mp_sched sched;
    struct mp_stage st;
    struct mp_exec ex;
    int exec_ready;
};
/* Stage `rank` of lay over transport x (the client's own stages); the server passes a P = 1
 * layout. Parameters start as `mpipe train --seed` initialises them. */
int mp__fed_model_init(struct mp_fed_model *fm, const struct mp_model *m,
                       const struct mp_fed_layout *lay, int rank, int state_slots, uint64_t seed,
                       struct mp_xport *x, struct mp_err *err);
void mp__fed_model_free(struct mp_fed_model *fm);
/* Mean loss and accuracy of the stage's current parameters on ds (P = 1 only). */
int mp__fed_model_eval(struct mp_fed_model *fm, const struct mp_dataset *ds, double *loss,
                       double *acc, struct mp_err *err);
/* Per-layer sums of squares of a - b over the layers st holds, in double (others 0). */
void mp__fed_layer_sq(const struct mp_stage *st, const float *a, const float *b, double *sq);

/* ---- the server's update (mp_fed_update.c): accepted client models -> next global model ---- */

struct mp_fed_update {
    const struct mp_fed_cfg *cfg;
    const struct mp_stage *st;     /* the server's whole-model arena: layout of every vector */
    int C, sampled;                /* clients; clients sampled per round */
    double *agg;                   /* (n_param) the aggregate */
    float *scratch;                /* (C) */
    double *dist, *score, *sq;     /* (C * C), (C), (n_layers) */
    int *chosen;                   /* (C) */
    struct mp_fed_opt opt;
    struct mp_fed_acct acct;
    double epsilon, delta;         /* after the rounds accounted so far */
    struct mp_rng noise;           /* the server's own noise generator, reseeded every round */
};
int mp__fed_update_init(struct mp_fed_update *u, const struct mp_fed_cfg *cfg,
                        const struct mp_stage *st, struct mp_err *err);
void mp__fed_update_free(struct mp_fed_update *u);
/* Clips (if asked), aggregates and steps the global model x (the server's param arena) from the
 * accepted models theta[ids[j]] (j < n, ascending ids; each clipped in place). w[j] gets each
 * client's share in the aggregate (for the log); *applied whether x moved; note gets a short
 * remark for the log ("" when none). perf: the `perf` weights' history. */
int mp__fed_update_round(struct mp_fed_update *u, int round, float *x, float *const *theta,
                         const int *ids, const uint64_t *samples, const double *scores, int n,
                         struct mp_fed_perf *perf, double *w, int *applied, char *note,
                         size_t note_len, struct mp_err *err);
/* Accounts one round of the DP mechanism (no-op without --noise-multiplier). */
void mp__fed_update_account(struct mp_fed_update *u);

/* The roles (mp_fed_server.c, mp_fed_client.c); data already loaded. cx: the client's own
 * stages (NULL on the server). */
int mp__fed_server(const struct mp_fed_cfg *cfg, struct mp_xport *x, const struct mp_data *d,
                   const struct mp_fed_split *split, struct mp_fed_result *r, struct mp_err *err);
int mp__fed_client(const struct mp_fed_cfg *cfg, struct mp_xport *x, struct mp_xport *cx,
                   const struct mp_data *d, const struct mp_fed_split *split, struct mp_err *err);

/* Server checkpoints (mp_fed_ckpt.c): DIR/round-N/{global.safetensors, fed.json and, with a
 * server optimizer, server_m/server_v.safetensors}, DIR/latest. */
int mp__fed_ckpt_save(const struct mp_fed_cfg *cfg, struct mp_fed_model *fm, struct mp_xport *x,
                      int round, const struct mp_fed_perf *perf, const struct mp_fed_update *u,
                      struct mp_err *err);
/* Loads DIR/latest into the stage's params, *perf and u's optimizer state and accountant;
 * *round = rounds completed. */
int mp__fed_ckpt_load(const struct mp_fed_cfg *cfg, struct mp_fed_model *fm, int *round,
                      struct mp_fed_perf *perf, struct mp_fed_update *u, struct mp_err *err);

#endif
