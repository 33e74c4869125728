/* `mpipe bench reduce`: seconds of the data-parallel gradient reduction itself, by arena size, on
 * the ranks mpirun started (each one replica of a one-stage model): the engine's own ordered,
 * bucketed reduction (mp_dp_bucket.c) over an arena of 1 MB layers, started and finished at once
 * as the end of a step does. The plan prices a step's reduction from these rows when its replicas
 * share a host (`mpipe plan` runs this benchmark itself on 2 ranks, tools/mp_calib_reduce.c),
 * because the link model (latency + bytes / bandwidth of `bench p2p`) leaves out what the ranks'
 * own cores do: the copies between processes, the adding, and the hand-shakes of each bucket's two
 * phases. Measured on a 2-core EPYC Zen4 VM: 15.9 MB (models/mlp.mp's gradients) reduced in about
 * 3.5 ms where the link model priced 1.3. */
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_cli.h"
#include "mp_dp.h"
#include "mp_dp_bucket.h"
#include "mp_flags.h"

#define LAYER_FLOATS ((size_t)1 << 18) /* 1 MB layers: several per bucket, as in a real arena */

struct reduce_args {
    size_t max_bytes;
    int json;
};

static int takes_value(const char *f)
{
    return !strcmp(f, "--max-bytes");
}

static int parse(struct reduce_args *a, int argc, char **argv, struct mp_err *err)
{
    a->max_bytes = (size_t)64 << 20;
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-')
            return MP_FAIL(err, USAGE, "bench reduce: unexpected argument '%s'", argv[i]);
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err))
            return -1;
        if (mp_flag_is(f, "--json"))
            a->json = 1;
        else if (mp_flag_is(f, "--max-bytes")) {
            if (mp_bench_max_bytes(f, v, 4096, &a->max_bytes, err))
                return -1;
        } else
            return MP_FAIL(err, USAGE, "bench reduce: unknown flag '%s' (see mpipe bench --help)",
                           f);
    }
    return 0;
}

/* Median over `reps` reductions of n floats among the ranks of b (each a replica) of the slowest
 * rank's seconds; *shared: the payload went through shared memory (mp_dp_bucket.c). */
static int time_size(struct mp_bench *b, size_t n, int reps, double *median, int *shared,
                     struct mp_err *err)
{
    int n_layers = (int)((n + LAYER_FLOATS - 1) / LAYER_FLOATS);
    size_t *off = malloc(sizeof(size_t) * (size_t)n_layers);
    size_t *len = malloc(sizeof(size_t) * (size_t)n_layers);
    float *grad = mp_bench_filled(n);
    double *t = malloc(sizeof(double) * (size_t)reps);
    struct mp_dp dp;
    memset(&dp, 0, sizeof dp);
    int rc = off && len && grad && t ? 0 : MP_FAIL(err, NOMEM, "out of memory for %zu floats", n);
    for (int i = 0; !rc && i < n_layers; i++) {
        off[i] = (size_t)i * LAYER_FLOATS;
        len[i] = n - off[i] < LAYER_FLOATS ? n - off[i] : LAYER_FLOATS;
    }
    if (!rc)
        rc = mp_dp_init(&dp, b->size, 0, b->rank, b->x, MP_DP_ORDERED, MP_AGG_MEAN, n, err);
    if (!rc)
        rc = mp_dp_buckets_init(&dp, n_layers, off, len, err);
    for (int r = -1; !rc && r < reps; r++) { /* r = -1: a warm-up (buffers, first touches) */
        rc = mp_xport_barrier(b->x, "the ranks to start a reduction", err);
        double t0 = mp_xport_now();
        mp_dp_buckets_begin(&dp, grad);
        if (!rc)
            rc = mp_dp_buckets_finish(&dp, err);
        double took = mp_xport_now() - t0; /* the slowest rank's, as every benchmark reports */
        if (!rc)
            rc = mp_xport_allreduce_max(b->x, &took, 1, "the reduction's time", err);
        if (r >= 0)
            t[r] = took;
    }
    if (!rc)
        *median = mp_median(t, (size_t)reps);
    *shared = mp_dp_buckets_shared(&dp);
    mp_dp_buckets_free(&dp);
    mp_dp_free(&dp);
    free(off), free(len), free(grad), free(t);
    return rc;
}

int mp_bench_reduce(int argc, char **argv, struct mp_err *err)
{
    struct reduce_args a = {0};
    int bad_flags = parse(&a, argc, argv, err);
    if (bad_flags && !mp_cli_under_mpirun())
        return -1;
    struct mp_bench b;
    if (mp_bench_init(&b, a.json, &argc, &argv, err))
        return -1;
    int rc = mp_xport_settle(b.x, bad_flags, "the command line", err);
    if (rc) {
        mp_cli_report_shared(b.x, "bench", err);
        mp_bench_finish(&b, 0);
        return rc;
    }
    if (b.size < 2) { /* a usage mistake: it exited 0 with no rows */
        mp_bench_finish(&b, 0);
        return MP_FAIL(err, USAGE, "one rank, nothing to reduce: run it under mpirun -np 2 or "
                       "more");
    }
    mp_bench_header(&b, "reduce",
                    "the engine's ordered reduction of an arena of 1 MB layers in 4 MB buckets, "
                    "started and finished at once; a warm-up, then the median of 20 (7 from 4 MB) "
                    "of the slowest rank's time");
    if (b.rank == 0)
        fprintf(b.out, "#  ranks          bytes      seconds     GBps\n");
    int shared = 0;
    for (size_t bytes = 4096; !rc && b.size > 1 && bytes <= a.max_bytes; bytes *= 4) {
        double s = 0;
        rc = time_size(&b, bytes / sizeof(float), bytes < ((size_t)4 << 20) ? 20 : 7, &s,
                       &shared, err);
        if (rc || b.rank != 0)
            continue;
        fprintf(b.out, "%8d %14zu %12.6f %8.2f\n", b.size, bytes, s, bytes / s * 1e-9);
        fflush(b.out);
        mp_bench_row(&b, json_pack("{s:i, s:I, s:f, s:f}", "ranks", b.size, "bytes",
                                   (json_int_t)bytes, "seconds", s, "GBps", bytes / s * 1e-9));
    }
    if (!rc && b.size > 1 && b.rank == 0)
        fprintf(b.out, "# the chunks went %s\n", shared ?
                "through the memory the replicas share (one host)" :
                "as MPI messages (replicas on several hosts, or MPIPE_DP_SHARED=0)");
    mp_bench_finish(&b, rc == 0);
    return rc;
}
