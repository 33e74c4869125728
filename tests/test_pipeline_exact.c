/* The exactness contract (DESIGN.md §6), tested: for a fixed seed, model, batch and M, every
 * schedule and every number of stages gives final weights byte-identical to the single-rank run.
 * One mpirun (-np 4) covers P = 1..4 by running each configuration on the first P ranks; rank 0
 * computes each single-rank reference on its own. Optimizers, clipping and dropout are varied across
 * configurations rather than crossed, to keep the suite fast. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_gemm.h"
#include "mp_train.h"
#include "mp_xport.h"

struct run {
    const char *model;
    enum mp_sched_kind sched;
    int P, V, M;
    enum mp_optim_kind opt;
    float clip;
    size_t batch; /* 0: 3 samples per micro-batch */
    int D;        /* data-parallel replicas (0: none) */
    int ranks;    /* processes carrying the run: P * D (real replicas) or P (emulated) */
    enum mp_dp_reduce reduce;
};

static int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static int train(const struct run *r, int P, int V, struct mp_xport *x, const char *out,
                 struct mp_model *m, struct mp_err *err)
{
    int D = r->D ? r->D : 1;
    struct mp_train_cfg c;
    memset(&c, 0, sizeof c);
    c.model = m;
    c.data_src = "synthetic:96";
    c.P = P;
    c.V = V;
    c.schedule = r->sched;
    c.M = r->M;
    c.D = D;
    c.dp_reduce = r->reduce;
    c.batch = r->batch ? r->batch : (size_t)r->M * 3;
    c.epochs = 10;
    c.max_steps = 3;
    mp_optim_defaults(&c.optim, r->opt);
    c.lr.kind = MP_LR_COSINE;
    mp_lr_defaults(&c.lr, c.lr.kind);
    c.lr.base_lr = 1e-2;
    c.lr.warmup = 1;
    c.clip_norm = r->clip;
    c.seed = 7;
    c.shuffle = 1;
    c.save_weights = out;
    c.deadline_s = 60;
    c.quiet = 1;
    struct mp_train_result res;
    return mp_train_run(&c, x, &res, err);
}

static int check(const struct run *r, struct mp_xport *world, const char *dir, int idx)
{
    int rank = mp_xport_rank(world);
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_load(&m, r->model, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char ref[512], got[512];
    snprintf(ref, sizeof ref, "%s/ref%d.st", dir, idx);
    snprintf(got, sizeof got, "%s/got%d.st", dir, idx);
    int bad = 0;
    struct mp_xport *sub = NULL;
    if (mp_xport_sub(world, r->ranks ? r->ranks : r->P, &sub, &err))
        bad = 1;
    if (sub && train(r, r->P, r->V, sub, got, &m, &err)) {
        fprintf(stderr, "rank %d: %s P=%d: %s\n", rank, r->model, r->P, err.msg);
        bad = 1;
    }
    if (sub)
        mp_xport_finalize(sub);
    if (rank == 0) {
        struct mp_xport *self = NULL;
        struct run one = *r; /* the single-rank run: one stage, one chunk, 1F1B */
        one.sched = MP_SCHED_1F1B;
        if (mp_xport_sub(world, 1, &self, &err) || train(&one, 1, 1, self, ref, &m, &err)) {
            fprintf(stderr, "reference for %s failed: %s\n", r->model, err.msg);
            bad = 1;
        }
        if (self)
            mp_xport_finalize(self);
    } else {
        struct mp_xport *none = NULL;
        mp_xport_sub(world, 1, &none, &err);
    }
    if (rank == 0) {
        int same = !bad && files_equal(ref, got);
        printf("%-5s %-26s P=%d V=%d D=%d M=%-2d %-11s %-8s clip=%.1f on %d ranks: %s\n",
               same ? "ok" : "FAIL", r->model, r->P, r->V, r->D ? r->D : 1, r->M,
               mp_sched_name(r->sched), mp_optim_name(r->opt), r->clip,
               r->ranks ? r->ranks : r->P,
               same ? "bit-identical to one rank" : "DIFFERS from one rank");
        bad = !same;
        unlink(ref);
        unlink(got);
    }
    mp_model_free(&m);
    return bad;
}

/* Controls that show the comparison has teeth: training changes the weights, and a different M
 * (a different order of additions) changes the bits. Rank 0 only. */
static int controls(struct mp_xport *world, const char *dir)
{
    struct mp_model m;
    struct mp_err err;
    struct mp_xport *self = NULL;
    mp_err_clear(&err);
    if (mp_model_load(&m, "models/mlp.mp", &err) || mp_xport_sub(world, 1, &self, &err) || !self)
        return 1;
    char a[512], b[512], c[512];
    snprintf(a, sizeof a, "%s/m2.st", dir);
    snprintf(b, sizeof b, "%s/m4.st", dir);
    snprintf(c, sizeof c, "%s/m4again.st", dir);
    struct run r2 = {"models/mlp.mp", MP_SCHED_1F1B, 1, 1, 2, MP_OPT_ADAM, 0, 12, 0, 0, MP_DP_ORDERED};
    struct run r4 = r2;
    r4.M = 4;
    /* The first dense layer's input gradient would reach only flatten and the data: a step makes
     * no such GEMM (12 samples in 2 micro-batches: dy (6 x 1024) times W (1024 x 784)). */
    struct mp_gemm_rec rec = {.cap = 1 << 16};
    struct mp_gemm_call *calls = rec.calls = malloc(rec.cap * sizeof *calls);
    mp_gemm_record(calls ? &rec : NULL);
    int bad = train(&r2, 1, 1, self, a, &m, &err);
    mp_gemm_record(NULL);
    int wasted = 0;
    for (size_t i = 0; i < rec.n; i++)
        wasted += !calls[i].trans_a && !calls[i].trans_b && calls[i].n == 784 && calls[i].k == 1024;
    int waste = wasted || !rec.n || rec.dropped;
    printf("%-5s control: no GEMM computes the gradient the data would get (%d of %zu calls)\n",
           waste ? "FAIL" : "ok", wasted, rec.n);
    free(calls);
    bad = bad || train(&r4, 1, 1, self, b, &m, &err) || train(&r4, 1, 1, self, c, &m, &err);
    /* Same global batch (12) needs M dividing it: M = 2 and M = 4 with 6 and 3 samples each. */
    int differs = !bad && !files_equal(a, b), repeats = !bad && files_equal(b, c);
    printf("%-5s control: M=2 and M=4 give different bits (sums in another order)\n",
           differs ? "ok" : "FAIL");
    printf("%-5s control: the same run twice gives the same bits\n", repeats ? "ok" : "FAIL");
    unlink(a), unlink(b), unlink(c);
    mp_xport_finalize(self);
    mp_model_free(&m);
    return !differs + !repeats + waste;
}

int main(int argc, char **argv)
{
    struct mp_xport *world;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_xport_init(&world, &argc, &argv, &err))
        return 1;
    int size = mp_xport_size(world), rank = mp_xport_rank(world);
    char dir[] = "/tmp/mpipe_exact_XXXXXX";
    if (rank == 0 && !mkdtemp(dir))
        return 1;
    static const char *const models[] = {"models/mlp.mp", "models/cnn.mp", "models/tiny.mp",
                                         "tests/data/four_layers.mp"};
    static const enum mp_optim_kind opts[] = {MP_OPT_ADAM, MP_OPT_SGD, MP_OPT_MOMENTUM,
                                              MP_OPT_NESTEROV, MP_OPT_ADAMW, MP_OPT_RMSPROP,
                                              MP_OPT_LAMB};
    int n_runs = 0, n_bad = 0, k = 0;
    for (int P = 1; P <= size; P++)
        for (int mi = 0; mi < 4; mi++)
            for (int s = 0; s < MP_SCHED_COUNT; s++) {
                if (mi == 3 && P != 4)
                    continue; /* the four-layer model is for P = number of layers */
                if (mi == 3 && s == MP_SCHED_ZBV)
                    continue; /* 2P chunks need 2P layers */
                /* zbv also runs an M between 1 and P: its V must turn with few in flight */
                int Ms[4] = {1, P, 2 * P + 1, P - 1}, nM = s == MP_SCHED_ZBV && P >= 3 ? 4 : 3;
                for (int j = 0; j < nM; j++, k++) {
                    if (j == 1 && P == 1)
                        continue;
                    struct run r = {models[mi], (enum mp_sched_kind)s, P, 1, Ms[j],
                                    opts[k % 7], (k % 3 == 0) ? 0.5f : 0.0f, 0, 0, 0, MP_DP_ORDERED};
                    if (s == MP_SCHED_INTERLEAVED)
                        r.V = (mi == 3) ? 1 : 2;
                    if (s == MP_SCHED_ZBV)
                        r.V = 2;
                    n_bad += check(&r, world, dir, n_runs);
                    n_runs++;
                }
            }
    /* Data parallelism (DESIGN.md §6): with --dp D the bits depend on D, not on how many
     * processes carry the replicas: the reference is one rank emulating the D replicas. */
    static const struct run dp_runs[] = {
        {"models/mlp.mp", MP_SCHED_1F1B, 1, 1, 2, MP_OPT_ADAM, 0.5f, 0, 2, 2, MP_DP_ORDERED},
        {"models/cnn.mp", MP_SCHED_1F1B, 1, 1, 4, MP_OPT_MOMENTUM, 0, 0, 4, 4, MP_DP_ORDERED},
        {"models/tiny.mp", MP_SCHED_ZB1, 1, 1, 3, MP_OPT_LAMB, 0.5f, 0, 3, 3, MP_DP_ORDERED},
        {"models/mlp.mp", MP_SCHED_1F1B, 2, 1, 4, MP_OPT_ADAMW, 0, 0, 2, 4, MP_DP_ORDERED},
        {"models/tiny.mp", MP_SCHED_GPIPE, 2, 1, 6, MP_OPT_RMSPROP, 0.5f, 0, 2, 2, MP_DP_ORDERED},
        {"models/cnn.mp", MP_SCHED_INTERLEAVED, 2, 2, 4, MP_OPT_SGD, 0, 0, 2, 4, MP_DP_ORDERED},
        {"models/mlp.mp", MP_SCHED_ZB1, 1, 1, 2, MP_OPT_ADAM, 0, 0, 2, 2, MP_DP_FAST},
        {"models/tiny.mp", MP_SCHED_ZBV, 2, 2, 4, MP_OPT_ADAM, 0.5f, 0, 2, 4, MP_DP_ORDERED},
    };
    for (size_t i = 0; i < sizeof dp_runs / sizeof dp_runs[0]; i++) {
        if (dp_runs[i].ranks > size)
            continue;
        n_bad += check(&dp_runs[i], world, dir, n_runs);
        n_runs++;
    }
    if (rank != 0) {
        struct mp_xport *none = NULL;
        mp_xport_sub(world, 1, &none, &err); /* matches rank 0's split in controls() */
    } else {
        int c = controls(world, dir);
        n_bad += c;
        n_runs += 3;
        rmdir(dir);
        printf("%d passed, %d failed\n", n_runs - n_bad, n_bad);
    }
    double b = n_bad;
    mp_xport_allreduce_max(world, &b, 1, "the test verdict", &err);
    mp_xport_finalize(world);
    return b > 0;
}
