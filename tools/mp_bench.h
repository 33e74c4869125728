/* Shared pieces of `mpipe bench` (DESIGN.md §7): the options every benchmark takes, the `#`
 * header lines (version, ranks, hosts, BLIS threads, warm-up and iterations), and the rows, kept
 * as JSON objects so the table and the `--json` twin come from the same numbers. With --json,
 * stdout carries only {"rows": [...]}; headers, tables and progress go to stderr. */
#ifndef MP_BENCH_H
#define MP_BENCH_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "mp_err.h"
#include "mp_median.h"
#include "mp_layer.h"
#include "mp_xport.h"

struct mp_bench {
    struct mp_xport *x;
    int rank, size;
    int json;          /* --json: rows as JSON on stdout, everything else on stderr */
    FILE *out;         /* where headers and tables go: stdout, or stderr under --json */
    json_t *rows;      /* array of row objects (rank 0) */
    int n_hosts;
};

/* Starts MPI (the transport) and counts the hosts. Collective. */
int mp_bench_init(struct mp_bench *b, int json, int *argc, char ***argv, struct mp_err *err);
/* Prints the JSON rows (if --json) on rank 0, frees everything and finalizes MPI. */
void mp_bench_finish(struct mp_bench *b, int ok);
/* The `#` header lines of every benchmark; `what` is e.g. "p2p", `method` one line on how it
 * measures (warm-up, iterations, statistic). Rank 0 only prints. */
void mp_bench_header(const struct mp_bench *b, const char *what, const char *method);
/* Appends a row (steals the reference). */
void mp_bench_row(struct mp_bench *b, json_t *row);
/* Prints a JSON document {"rows": [...]} one row per line (used for stdout and files). */
void mp_bench_dump_rows(FILE *f, json_t *rows);

/* n floats of GEMM operands (malloc'd; NULL on OOM): small, varied, never denormal. */
float *mp_bench_filled(size_t n);
/* --max-bytes of p2p and reduce: BYTES (K/M/G suffixes, powers of 1024) within [lo, 1G]. */
int mp_bench_max_bytes(const char *flag, const char *v, size_t lo, size_t *out,
                       struct mp_err *err);
/* True when argv[i] is --help or -h somewhere in argv. */
int mp_bench_wants_help(int argc, char **argv);

/* Per-layer times (seconds per call on mb samples) measured by `bench layers`, reused by
 * `bench pipeline` as the simulator's inputs: median of repeats after warm-up. */
struct mp_bench_layer_time {
    double f, b, w;
};
/* Per-layer median times at micro-batch mb; cold: each timed call after 64 MB of other data went
 * through the caches (what PROFILE.json holds), else on the caches the previous call left. */
int mp_bench_profile(const struct mp_model *m, size_t mb, double budget_s, int cold,
                     struct mp_bench_layer_time *out, int *reps, struct mp_err *err);

/* Buffers for one layer call on mb samples, filled with small deterministic values (parameters
 * initialised as training does, labels in range), and one call of its forward (which 0), input-
 * grad (1) or weight-grad (2) kernel on them. */
struct mp_bench_bufs {
    float *x, *y, *saved, *dy, *dx, *param, *dparam, *scratch;
    int32_t *labels;
    size_t scratch_len;
    double loss;    /* where a loss layer's calls add their loss and hits (thrown away) */
    size_t correct;
};
int mp_bench_bufs_alloc(const struct mp_layer *l, size_t mb, struct mp_bench_bufs *b,
                        struct mp_err *err);
/* The context of a timed call on b's buffers: training, seed 1, a global batch of mb. */
struct mp_ctx mp_bench_ctx(struct mp_bench_bufs *b, size_t mb);
void mp_bench_bufs_free(struct mp_bench_bufs *b);
void mp_bench_call(const struct mp_layer *l, const struct mp_ctx *ctx, struct mp_bench_bufs *b,
                   int which, size_t mb);

/* The benchmarks (mp_bench_*.c); argv[0] is the benchmark name. */
int mp_bench_p2p(int argc, char **argv, struct mp_err *err);
int mp_bench_gemm(int argc, char **argv, struct mp_err *err);
int mp_bench_layers(int argc, char **argv, struct mp_err *err);
int mp_bench_pipeline(int argc, char **argv, struct mp_err *err);
int mp_bench_reduce(int argc, char **argv, struct mp_err *err);

#endif
