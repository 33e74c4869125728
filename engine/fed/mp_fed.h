/* Federated training (`mpipe fed`, issue 7): rank 0 is the server, ranks 1..C the clients, and
 * every process holds the whole model as one P = 1 stage. This header owns the run's
 * configuration, the data splits (mp_fed_split.c), the aggregation weights and client sampling
 * (mp_fed_agg.c), the wire format between server and clients, and the two roles' entry points
 * (mp_fed_server.c, mp_fed_client.c). It never calls MPI itself: all messages go through
 * mp_xport.h. */
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
#include "mp_sched.h"
#include "mp_stage.h"
#include "mp_xport.h"

/* ---- data splits (mp_fed_split.c) ---- */

enum mp_fed_split_kind { MP_FED_SPLIT_IID, MP_FED_SPLIT_DIRICHLET, MP_FED_SPLIT_SHARDS };

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

/* "iid", "dirichlet:A" (A > 0) or "shards:K" (K >= 1); MP_ERR_USAGE otherwise. */
int mp_fed_split_parse(const char *text, struct mp_fed_split_cfg *cfg, struct mp_err *err);
/* Deterministic from (cfg, labels, seed). MP_ERR_USAGE when the data cannot be split so (e.g.
 * fewer samples than clients, or fewer samples than C * K shards). */
int mp_fed_split_make(struct mp_fed_split *s, const struct mp_fed_split_cfg *cfg,
                      const int32_t *labels, size_t n, size_t n_classes, int C, uint64_t seed,
                      struct mp_err *err);
void mp_fed_split_free(struct mp_fed_split *s);
/* Gamma(shape, 1) and a Dirichlet(alpha, ..., alpha) draw of k proportions (sum 1), from r. */
double mp_fed_gamma(struct mp_rng *r, double shape);
void mp_fed_dirichlet(struct mp_rng *r, double alpha, int k, double *p);

/* ---- configuration ---- */

enum mp_fed_algo { MP_FED_FEDAVG, MP_FED_FEDPROX };
enum mp_fed_agg { MP_FED_AGG_SIZE, MP_FED_AGG_PERF };

struct mp_fed_cfg {
    const struct mp_model *model;
    const char *data_src;
    int clients, rounds, local_epochs;
    double fraction;               /* share of clients sampled per round (at least one) */
    struct mp_fed_split_cfg split;
    enum mp_fed_algo algo;
    double mu;                     /* FedProx proximal weight */
    enum mp_fed_agg agg;
    double round_deadline;         /* seconds the server waits for a round's replies */
    size_t batch;                  /* local mini-batch */
    struct mp_optim_cfg optim;     /* fresh state every round, as in FedAvg */
    struct mp_lr_cfg lr;           /* restarts every round over that round's local steps */
    uint64_t seed;
    const char *ckpt_dir;          /* per-round server checkpoints, or NULL */
    int resume;
};

struct mp_fed_result {
    double test_acc, test_loss;    /* the final global model on the test set */
    int rounds, clients;
};

/* Runs this rank's role (server on rank 0, client otherwise). MP_ERR_USAGE when the number of
 * ranks is not 1 + clients. Only the server fills *r. */
int mp_fed_run(const struct mp_fed_cfg *cfg, struct mp_xport *x, struct mp_fed_result *r,
               struct mp_err *err);

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

/* ---- wire format ---- */

enum { MP_FED_TAG_WORK = 1, MP_FED_TAG_STOP = 2, MP_FED_TAG_REPLY0 = 16 };
/* Replies carry their round in the tag (and the header), so a late reply is recognised. */
static inline int mp_fed_reply_tag(int round) { return MP_FED_TAG_REPLY0 + round % 16000; }

/* Header of every message; WORK and REPLY are followed by n_param floats (the flat arena). */
struct mp_fed_msg {
    int32_t round, client;
    uint64_t n_param;
    uint64_t n_samples;   /* reply: samples the client trained on */
    double loss;          /* reply: mean local train loss */
    double score;         /* reply: relative reduction of the local loss (perf weights) */
    double pad[3];        /* keeps the floats that follow 64-byte aligned */
};

/* ---- one process's model (mp_fed_model.c): the whole model as one P = 1 stage ---- */

struct mp_fed_model {
    int bounds[2];
    struct mp_sched sched;
    struct mp_stage st;
    struct mp_exec ex;
    int exec_ready;
};
int mp__fed_model_init(struct mp_fed_model *fm, const struct mp_model *m, size_t batch,
                       int state_slots, uint64_t seed, struct mp_xport *x, struct mp_err *err);
void mp__fed_model_free(struct mp_fed_model *fm);
/* Mean loss and accuracy of the stage's current parameters on ds. */
int mp__fed_model_eval(struct mp_fed_model *fm, const struct mp_dataset *ds, double *loss,
                       double *acc, struct mp_err *err);

/* The roles (mp_fed_server.c, mp_fed_client.c); data already loaded. */
int mp__fed_server(const struct mp_fed_cfg *cfg, struct mp_xport *x, const struct mp_data *d,
                   const struct mp_fed_split *split, struct mp_fed_result *r, struct mp_err *err);
int mp__fed_client(const struct mp_fed_cfg *cfg, struct mp_xport *x, const struct mp_data *d,
                   const struct mp_fed_split *split, struct mp_err *err);

/* Server checkpoints (mp_fed_ckpt.c): DIR/round-N/{global.safetensors,fed.json}, DIR/latest. */
int mp__fed_ckpt_save(const struct mp_fed_cfg *cfg, struct mp_fed_model *fm, struct mp_xport *x,
                      int round, const struct mp_fed_perf *perf, struct mp_err *err);
/* Loads DIR/latest into the stage's params and *perf; *round = rounds completed. */
int mp__fed_ckpt_load(const struct mp_fed_cfg *cfg, struct mp_fed_model *fm, int *round,
                      struct mp_fed_perf *perf, struct mp_err *err);

#endif
