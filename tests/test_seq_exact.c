/* The exactness contract (DESIGN.md §6, §9) for token models: for a fixed seed, model, batch and M,
 * every schedule, number of stages, partition (on unit boundaries) and data-parallel layout gives
 * final weights byte-identical to the single-rank run, and a checkpoint written with P stages and
 * resumed with P′ (1 included) gives the uninterrupted run's bytes. The models have residual
 * blocks, causal and non-causal attention (with dropout on its probabilities), a tied embedding
 * (embed and head on different ranks in most layouts), dropout, an untied head and an embed
 * without positions; the text is generated here. One mpirun (-np 4)
 * carries every configuration on its first P·D ranks; rank 0 computes each reference alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_train.h"
#include "mp_xport.h"

struct run {
    const char *model;
    enum mp_sched_kind sched;
    int P, V, M;
    enum mp_optim_kind opt;
    float clip;
    const int *bounds; /* P*V + 1 hand-made stage boundaries, or NULL: the engine's split */
    size_t batch;      /* 0: 2 samples per micro-batch */
    int D;             /* data-parallel replicas (0: none) */
    int ranks;         /* processes carrying the run: P * D (real replicas) or P (emulated) */
    int recompute;     /* 2: every stage recomputes its forward before B (DESIGN.md §10) */
    int zero;          /* 1: optimizer state sharded over real replicas */
};

static char dir[128], text_src[160];

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

/* 1000 bytes of word-shaped text in 32..96 (a vocabulary of 97 holds every byte). */
static int write_text(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint64_t z = 12345;
    for (int i = 0; i < 1000; i++) {
        z = z * 6364136223846793005ULL + 1442695040888963407ULL;
        int r = (int)(z >> 33) % 100;
        fputc(r < 18 ? ' ' : r < 20 ? '.' : 'A' + r % 26, f);
    }
    return fclose(f);
}

struct opts {
    int64_t max_steps;
    const char *ckpt_dir;
    int resume;
    int constant_lr; /* a schedule whose length does not depend on max_steps (resume tests) */
};

static int train(const struct run *r, int P, int V, const int *bounds, struct mp_xport *x,
                 const char *out, const struct opts *o, struct mp_model *m, struct mp_err *err)
{
    struct mp_train_cfg c;
    memset(&c, 0, sizeof c);
    c.model = m;
    c.data_src = text_src;
    c.P = P;
    c.V = V;
    c.bounds = bounds;
    c.schedule = r->sched;
    c.M = r->M;
    c.D = r->D ? r->D : 1;
    c.dp_reduce = MP_DP_ORDERED;
    c.recompute = r->recompute;
    c.zero = r->zero;
    c.batch = r->batch ? r->batch : (size_t)r->M * 2;
    c.epochs = 100;
    c.max_steps = o ? o->max_steps : 3;
    mp_optim_defaults(&c.optim, r->opt);
    mp_lr_defaults(&c.lr, MP_LR_COSINE);
    c.lr.kind = MP_LR_COSINE;
    c.lr.base_lr = 1e-2;
    c.lr.warmup = 1;
    if (o && o->constant_lr) {
        c.lr.kind = MP_LR_CONSTANT;
        c.lr.warmup = 2;
    }
    c.clip_norm = r->clip;
    c.seed = 7;
    c.shuffle = 1;
    c.save_weights = out;
    c.deadline_s = 60;
    c.quiet = 1;
    if (o && o->ckpt_dir) {
        c.ckpt_dir = o->ckpt_dir;
        c.ckpt_keep = 2;
        c.resume = o->resume;
    }
    struct mp_train_result res;
    return mp_train_run(&c, x, &res, err);
}

/* Runs r on its ranks and, on rank 0 alone, the one-rank reference; rank 0 compares the files. */
static int check(const struct run *r, struct mp_xport *world, int idx)
{
    int rank = mp_xport_rank(world);
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_load(&m, r->model, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char ref[256], got[256];
    snprintf(ref, sizeof ref, "%s/ref%d.st", dir, idx);
    snprintf(got, sizeof got, "%s/got%d.st", dir, idx);
    int bad = 0;
    struct mp_xport *sub = NULL;
    if (mp_xport_sub(world, r->ranks ? r->ranks : r->P, &sub, &err))
        bad = 1;
    if (sub && train(r, r->P, r->V, r->bounds, sub, got, NULL, &m, &err)) {
        fprintf(stderr, "rank %d: %s P=%d: %s\n", rank, r->model, r->P, err.msg);
        bad = 1;
    }
    if (sub)
        mp_xport_finalize(sub);
    struct mp_xport *self = NULL;
    mp_err_clear(&err);
    if (mp_xport_sub(world, 1, &self, &err))
        bad = 1;
    struct run plain = *r; /* the reference neither recomputes nor shards, and runs 1F1B */
    plain.sched = MP_SCHED_1F1B;
    plain.recompute = plain.zero = 0;
    if (self && train(&plain, 1, 1, NULL, self, ref, NULL, &m, &err)) {
        fprintf(stderr, "reference for %s failed: %s\n", r->model, err.msg);
        bad = 1;
    }
    if (self)
        mp_xport_finalize(self);
    if (rank == 0) {
        int same = !bad && files_equal(ref, got);
        printf("%-5s %-25s P=%d V=%d D=%d M=%d %-11s %-8s clip=%.1f %s%s%s on %d ranks: %s\n",
               same ? "ok" : "FAIL", r->model, r->P, r->V, r->D ? r->D : 1, r->M,
               mp_sched_name(r->sched), mp_optim_name(r->opt), r->clip,
               r->bounds ? "hand-made bounds" : "balanced", r->recompute ? " recompute" : "",
               r->zero ? " zero" : "", r->ranks ? r->ranks : r->P,
               same ? "bit-identical to one rank" : "DIFFERS from one rank");
        bad = !same;
        unlink(ref);
        unlink(got);
    }
    mp_model_free(&m);
    return bad;
}

/* Stops a P-stage run at step `stop` of `total` (a checkpoint), resumes it with each P′ in turn
 * from a checkpoint of its own, and compares with the uninterrupted one-rank run. An epoch of the
 * test's text is 128 windows, 16 steps of 8. */
static int resume_check(struct mp_xport *world, const char *model, int P, const int *resume_P,
                        int n_resume, int64_t stop, int64_t total, int *n_runs)
{
    int rank = mp_xport_rank(world), bad = 0, n_bad = 0;
    struct mp_model m;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_model_load(&m, model, &err))
        return 1;
    struct run r = {.model = model, .sched = MP_SCHED_1F1B, .P = P, .V = 1, .M = 4,
                    .opt = MP_OPT_ADAMW, .clip = 0.5f};
    char full[256], ck[256], got[256];
    snprintf(full, sizeof full, "%s/full.st", dir);
    struct opts all = {total, NULL, 0, 1};
    struct mp_xport *x = NULL;
    if (mp_xport_sub(world, 1, &x, &err) || (x && train(&r, 1, 1, NULL, x, full, &all, &m, &err)))
        bad = 1;
    if (x)
        mp_xport_finalize(x);
    for (int i = 0; i < n_resume; i++) {
        /* a directory of its own: a run that does not resume refuses one holding another
         * run's checkpoints (it used to prune them, here another model's) */
        snprintf(ck, sizeof ck, "%s/ck%d_%d_%d", dir, P, resume_P[i], *n_runs);
        snprintf(got, sizeof got, "%s/resumed.st", dir);
        struct opts first = {stop, ck, 0, 1}, rest = {total, ck, 1, 1};
        x = NULL;
        if (mp_xport_sub(world, P, &x, &err) ||
            (x && train(&r, P, 1, NULL, x, NULL, &first, &m, &err)))
            bad = 1;
        if (x)
            mp_xport_finalize(x);
        x = NULL;
        if (mp_xport_sub(world, resume_P[i], &x, &err) ||
            (x && train(&r, resume_P[i], 1, NULL, x, got, &rest, &m, &err))) {
            fprintf(stderr, "rank %d: resume %d -> %d: %s\n", rank, P, resume_P[i], err.msg);
            bad = 1;
        }
        if (x)
            mp_xport_finalize(x);
        if (rank == 0) {
            int same = !bad && files_equal(full, got);
            printf("%-5s %-25s checkpoint at step %lld with P=%d, resumed with P=%d to %lld: %s\n",
                   same ? "ok" : "FAIL", model, (long long)stop, P, resume_P[i], (long long)total,
                   same ? "the uninterrupted run's bytes" : "DIFFERS from the uninterrupted run");
            n_bad += !same;
            unlink(got);
        }
        (*n_runs)++;
    }
    if (rank == 0)
        unlink(full);
    mp_model_free(&m);
    return rank == 0 ? n_bad : bad;
}

/* Controls with teeth: training moves the weights, another M gives other bits, a repeated run the
 * same bits. Rank 0 only. */
static int controls(struct mp_xport *world)
{
    struct mp_model m;
    struct mp_err err;
    struct mp_xport *self = NULL;
    mp_err_clear(&err);
    int bad = mp_model_load(&m, "tests/data/seq_mlp.mp", &err) ||
              mp_xport_sub(world, 1, &self, &err);
    if (bad || !self) {
        if (!bad)
            mp_model_free(&m);
        return bad;
    }
    char a[256], b[256], c[256], z[256];
    snprintf(a, sizeof a, "%s/m2.st", dir);
    snprintf(b, sizeof b, "%s/m4.st", dir);
    snprintf(c, sizeof c, "%s/m4again.st", dir);
    snprintf(z, sizeof z, "%s/m4zero.st", dir);
    /* The same global batch of 8 as M = 2 and M = 4 micro-batches: sums in another order. */
    struct run r2 = {.model = "tests/data/seq_mlp.mp", .sched = MP_SCHED_1F1B, .P = 1, .V = 1,
                     .M = 2, .opt = MP_OPT_ADAM, .batch = 8};
    struct run r4 = r2;
    r4.M = 4;
    struct opts none = {0, NULL, 0, 0};
    bad = train(&r4, 1, 1, NULL, self, b, NULL, &m, &err) ||
          train(&r4, 1, 1, NULL, self, c, NULL, &m, &err) ||
          train(&r4, 1, 1, NULL, self, z, &none, &m, &err) ||
          train(&r2, 1, 1, NULL, self, a, NULL, &m, &err);
    int repeats = !bad && files_equal(b, c), moves = !bad && !files_equal(b, z);
    int differs = !bad && !files_equal(a, b);
    printf("%-5s control: the same run twice gives the same bits\n", repeats ? "ok" : "FAIL");
    printf("%-5s control: three steps move the weights\n", moves ? "ok" : "FAIL");
    printf("%-5s control: another M gives other bits\n", differs ? "ok" : "FAIL");
    unlink(a), unlink(b), unlink(c), unlink(z);
    mp_xport_finalize(self);
    mp_model_free(&m);
    return !repeats + !moves + !differs;
}

int main(int argc, char **argv)
{
    struct mp_xport *world;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_xport_init(&world, &argc, &argv, &err))
        return 1;
    int size = mp_xport_size(world), rank = mp_xport_rank(world);
    /* One directory every rank knows: named after rank 0's pid, made by rank 0. */
    double pid = rank == 0 ? (double)getpid() : 0;
    mp_xport_allreduce_max(world, &pid, 1, "the test directory", &err);
    snprintf(dir, sizeof dir, "/tmp/mpipe_seq_exact_%.0f", pid);
    snprintf(text_src, sizeof text_src, "text:%s/text.txt", dir);
    double ok = 1;
    if (rank == 0) {
        char path[160];
        snprintf(path, sizeof path, "%s/text.txt", dir);
        ok = mkdir(dir, 0700) == 0 && write_text(path) == 0;
    }
    mp_xport_allreduce_max(world, &ok, 1, "the test text", &err);
    if (!ok)
        return 1;

    const char *seq = "tests/data/seq_mlp.mp", *untied = "tests/data/seq_untied.mp";
    const char *gpt = "tests/data/gpt_tiny.mp", *attn = "tests/data/seq_attn.mp";
    const char *models[4] = {seq, untied, gpt, attn};
    const int units[4] = {8, 5, 8, 7}; /* partition units after the input */
    static const enum mp_sched_kind scheds[] = {MP_SCHED_GPIPE, MP_SCHED_1F1B, MP_SCHED_INTERLEAVED,
                                                MP_SCHED_ZB1, MP_SCHED_ZBV};
    static const enum mp_optim_kind opts[] = {MP_OPT_ADAM, MP_OPT_SGD, MP_OPT_MOMENTUM,
                                              MP_OPT_NESTEROV, MP_OPT_ADAMW, MP_OPT_RMSPROP,
                                              MP_OPT_LAMB};
    int n_runs = 0, n_bad = 0, k = 0;
    /* Every P and schedule; the model rotates over the four, M through M < P, M = P, 2P + 1. */
    for (int P = 2; P <= size; P++)
        for (int s = 0; s < 5; s++, k++) {
            int Ms[3] = {P - 1, P, 2 * P + 1};
            /* zbv: 2 chunks in a V, so a tied embed and head share rank 0 */
            int V = mp_sched_chunks(scheds[s], 2), mi = (P + s) % 4;
            const char *model = P * V <= units[mi] ? models[mi] : seq;
            struct run r = {.model = model, .sched = scheds[s], .P = P, .V = V, .M = Ms[k % 3],
                            .opt = opts[k % 7], .clip = (k % 2) ? 0.5f : 0.0f};
            n_bad += check(&r, world, n_runs++);
        }
    /* Hand-made uneven partitions on unit boundaries (seq_mlp's units start at layers 1, 2, 4, 9,
     * 11, 16, 17, 18; gpt_tiny's at 1, 2, 4, 8, 10, 14, 15, 16; seq_attn's at 1, 2, 4, 8, 10, 11,
     * 12): the embed alone, the head alone, the loss alone, attention with the embed. */
    static const int b2[] = {1, 17, 19}, b3[] = {1, 2, 16, 19}, b4[] = {1, 4, 9, 18, 19};
    static const int bi[] = {1, 2, 4, 17, 19}, b3c[] = {1, 2, 4, 9, 11, 16, 19};
    static const int g3[] = {1, 4, 15, 17}, g4[] = {1, 2, 8, 16, 17}, ai[] = {1, 4, 8, 11, 13};
    const struct run uneven[] = {
        {.model = seq, .sched = MP_SCHED_1F1B, .P = 2, .V = 1, .M = 3, .opt = MP_OPT_ADAM,
         .clip = 0.5f, .bounds = b2},
        {.model = seq, .sched = MP_SCHED_ZB1, .P = 3, .V = 1, .M = 4, .opt = MP_OPT_LAMB,
         .bounds = b3},
        {.model = seq, .sched = MP_SCHED_GPIPE, .P = 4, .V = 1, .M = 2, .opt = MP_OPT_ADAMW,
         .clip = 0.5f, .bounds = b4},
        {.model = seq, .sched = MP_SCHED_INTERLEAVED, .P = 2, .V = 2, .M = 4,
         .opt = MP_OPT_MOMENTUM, .bounds = bi},
        {.model = seq, .sched = MP_SCHED_INTERLEAVED, .P = 2, .V = 3, .M = 5, .opt = MP_OPT_ADAM,
         .clip = 0.5f, .bounds = b3c},
        {.model = gpt, .sched = MP_SCHED_ZB1, .P = 3, .V = 1, .M = 3, .opt = MP_OPT_ADAMW,
         .clip = 0.5f, .bounds = g3},
        {.model = gpt, .sched = MP_SCHED_1F1B, .P = 4, .V = 1, .M = 5, .opt = MP_OPT_ADAM,
         .bounds = g4},
        {.model = attn, .sched = MP_SCHED_INTERLEAVED, .P = 2, .V = 2, .M = 2, .opt = MP_OPT_LAMB,
         .clip = 0.5f, .bounds = ai},
    };
    for (size_t i = 0; i < sizeof uneven / sizeof uneven[0]; i++)
        if (uneven[i].P <= size)
            n_bad += check(&uneven[i], world, n_runs++);
    /* Data parallelism: the reference is one rank emulating the D replicas. */
    const struct run dp[] = {
        {.model = seq, .sched = MP_SCHED_1F1B, .P = 1, .V = 1, .M = 4, .opt = MP_OPT_ADAM,
         .clip = 0.5f, .D = 2, .ranks = 2},
        {.model = seq, .sched = MP_SCHED_ZB1, .P = 2, .V = 1, .M = 4, .opt = MP_OPT_ADAMW, .D = 2,
         .ranks = 4},
        {.model = untied, .sched = MP_SCHED_GPIPE, .P = 2, .V = 1, .M = 6, .opt = MP_OPT_SGD,
         .clip = 0.5f, .D = 2, .ranks = 2},
        {.model = gpt, .sched = MP_SCHED_1F1B, .P = 2, .V = 1, .M = 4, .opt = MP_OPT_ADAM,
         .clip = 0.5f, .D = 2, .ranks = 4},
        {.model = attn, .sched = MP_SCHED_ZB1, .P = 2, .V = 1, .M = 4, .opt = MP_OPT_LAMB,
         .clip = 0.5f, .D = 2, .ranks = 2}, /* replicas emulated in turn, E tied across ranks */
    };
    for (size_t i = 0; i < sizeof dp / sizeof dp[0]; i++)
        if (dp[i].ranks <= size)
            n_bad += check(&dp[i], world, n_runs++);
    /* Recomputation (a chunk reruns its forward, residual adds included, before B: by segments
     * under gpipe, 1f1b and interleaved, the whole chunk under zb1) and ZeRO-1 change no bits. */
    const struct run mem[] = {
        {.model = seq, .sched = MP_SCHED_1F1B, .P = 2, .V = 1, .M = 4, .opt = MP_OPT_ADAM,
         .clip = 0.5f, .recompute = 2},
        {.model = seq, .sched = MP_SCHED_ZB1, .P = 3, .V = 1, .M = 5, .opt = MP_OPT_LAMB,
         .bounds = b3, .recompute = 2},
        {.model = untied, .sched = MP_SCHED_INTERLEAVED, .P = 2, .V = 2, .M = 3,
         .opt = MP_OPT_ADAMW, .clip = 0.5f, .recompute = 2},
        {.model = seq, .sched = MP_SCHED_GPIPE, .P = 2, .V = 1, .M = 4, .opt = MP_OPT_ADAM,
         .clip = 0.5f, .D = 2, .ranks = 4, .zero = 1},
        {.model = seq, .sched = MP_SCHED_1F1B, .P = 1, .V = 1, .M = 2, .opt = MP_OPT_ADAMW, .D = 2,
         .ranks = 2, .recompute = 2, .zero = 1},
        {.model = gpt, .sched = MP_SCHED_ZB1, .P = 2, .V = 1, .M = 3, .opt = MP_OPT_ADAM,
         .recompute = 2},
        {.model = attn, .sched = MP_SCHED_1F1B, .P = 3, .V = 1, .M = 4, .opt = MP_OPT_ADAMW,
         .clip = 0.5f, .recompute = 2},
        {.model = gpt, .sched = MP_SCHED_GPIPE, .P = 2, .V = 1, .M = 3, .opt = MP_OPT_ADAM,
         .recompute = 2}, /* by segments: block by block, attention and dropout inside */
        {.model = seq, .sched = MP_SCHED_ZBV, .P = 2, .V = 2, .M = 4, .opt = MP_OPT_ADAMW,
         .clip = 0.5f, .recompute = 2}, /* whole chunks, two per rank, W deferred */
    };
    for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++)
        if ((mem[i].ranks ? mem[i].ranks : mem[i].P) <= size)
            n_bad += check(&mem[i], world, n_runs++);
    /* Checkpoints: written with P, resumed with P′ (resharding by tensor name, E stored once). */
    static const int from2[] = {1, 3}, from4[] = {2};
    n_bad += resume_check(world, seq, 2, from2, size >= 3 ? 2 : 1, 4, 10, &n_runs);
    if (size >= 4) /* across an epoch's end */
        n_bad += resume_check(world, seq, 4, from4, 1, 15, 18, &n_runs);
    static const int from3[] = {1};
    if (size >= 3)
        n_bad += resume_check(world, untied, 3, from3, 1, 4, 10, &n_runs);
    n_bad += resume_check(world, gpt, 2, from3, 1, 4, 10, &n_runs);
    if (rank != 0) {
        struct mp_xport *none = NULL;
        mp_xport_sub(world, 1, &none, &err); /* matches rank 0's split in controls() */
    } else {
        n_bad += controls(world);
        n_runs += 3;
        char cmd[192];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
        printf("%d passed, %d failed\n", n_runs - n_bad, n_bad);
    }
    double b = n_bad;
    mp_xport_allreduce_max(world, &b, 1, "the test verdict", &err);
    mp_xport_finalize(world);
    return b > 0;
}
