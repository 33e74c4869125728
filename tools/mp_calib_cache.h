/* The cache of measured machine rates (tools/mp_calib.c's memory between plans): one JSON file per
 * CPU model, BLIS configuration and mpipe version under $XDG_CACHE_HOME/mpipe/, holding GEMM
 * shapes with their warm seconds, each layer pass's element-wise seconds and GEMM calls per model
 * and micro-batch size, whole in-place steps per model, optimizer and micro-batch size, and the
 * data-parallel reduction between 2 ranks by size (mp_calib_reduce.c), and the links between
 * ranks of this host per topology level (mp_calib_links.c). Reading
 * never fails: a corrupt or foreign file is ignored with a warning; writing is atomic, and a
 * failure is a warning. Only the calibration files (tools/mp_calib*.c) include this header. */
#ifndef MP_CALIB_CACHE_H
#define MP_CALIB_CACHE_H

#include <jansson.h>
#include <stddef.h>

#include "mp_cost.h"
#include "mp_err.h"
#include "mp_gemm.h"
#include "mp_layer.h"
#include "mp_optim.h"

struct mp_calib_shape {
    struct mp_gemm_call c;
    double s; /* seconds per call, warm */
    int used; /* by this model: 1 from the cache, 2 timed now */
    double s_fixed; /* c.b_fixed: seconds per call with B kept packed (mp_gemm_reuse_begin);
                       NaN until timed. Otherwise s */
};

/* n GEMM calls of shape number `shape` (an index into struct mp_calib_rates.v) in pass `pass`. */
struct mp_calib_calls {
    int pass;
    size_t shape, n;
};

/* One layer's passes (F, B, W) in one model at one micro-batch size: their element-wise parts
 * and their GEMM calls, so a later plan needs to run nothing. */
struct mp_calib_pass {
    char digest[17];
    size_t mbs;
    int layer;
    double t[3];
    struct mp_calib_calls *calls;
    size_t n_calls;
};

/* One step of one model's first layers (all of a small model; see mp_calib.c's step_layers) on
 * one rank in place (mp__calib_step) at mbs samples: seconds of all their forwards, input-grads
 * and weight-grads, and of the optimizer `kind` over their parameters. */
struct mp_calib_step {
    char digest[17];
    int kind; /* enum mp_optim_kind */
    size_t mbs;
    double t[3], optim;
};

#define MP_CALIB_REDUCE_MAX MP_COST_REDUCE_MAX /* the table takes the rows as they are */

struct mp_calib_rates {
    char cpu[128], blis[96], version[96], path[4096];
    struct mp_calib_shape *v;
    size_t n, cap;
    struct mp_calib_pass *e;
    size_t n_e, cap_e;
    struct mp_calib_step *o;
    size_t n_o, cap_o;
    int dirty; /* something was timed: rewrite the file */
    /* The data-parallel reduction between 2 ranks of this host (`mpipe bench reduce`, run by
     * mp__calib_reduce): seconds at each size, sizes ascending; n_reduce 0: not measured. */
    double reduce_bytes[MP_CALIB_REDUCE_MAX], reduce_s[MP_CALIB_REDUCE_MAX];
    int n_reduce;
    /* The links between 2 ranks of this host at each topology level (enum mp_link_level below
     * MP_LINK_NET, `mpipe bench p2p` run by mp_calib_links); bandwidth 0: not measured. */
    struct mp_link link[MP_LINK_COUNT];
    /* When (Unix seconds) a plan's check first found this machine slower than these rates and
     * kept them, as a passing slowdown may be (mp_calib.c's check_cache); 0: no such check
     * since the last that found them standing. */
    double slower_since;
    /* Runs of plans priced by these rates (mp_calib_runs.c), oldest first. */
    struct mp_cost_run runs[MP_COST_RUNS_MAX];
    int n_runs;
};

/* Fills r's key (CPU, BLIS, version) and path; -1 if no cache directory can be named. */
int mp__calib_key(struct mp_calib_rates *r);
void mp__calib_load(struct mp_calib_rates *r);
/* Writes r (its runs as the file holds them now, under the lock): plan's; a failure warns. */
void mp__calib_save(struct mp_calib_rates *r);
/* The cache's advisory lock (FILE.lock beside it, flock) around one read-modify-write of the
 * file, so that processes writing it at once (a plan measuring while train --plan runs end and
 * keep theirs) lose nothing: the descriptor, or -1 after LOCK_WAIT_S or on a file system without
 * flock, and the writer goes on unlocked (at worst one run lost, as before the lock). */
int mp__calib_lock(const struct mp_calib_rates *r);
void mp__calib_unlock(int fd);
/* The same without a word and without dropping what a bad file held: load 1 read, 0 no file,
 * -1 not this machine's or corrupt; save NULL written, or why not. For `mpipe train`, which
 * adds a run to a cache and rewrites no rates. */
int mp__calib_load_quiet(struct mp_calib_rates *r);
const char *mp__calib_save_quiet(const struct mp_calib_rates *r);
/* r's key as the 16 hex digits of its file name. */
void mp__calib_key_hex(const struct mp_calib_rates *r, char out[17]);
/* A number at o's key, >= 0 (> 0 with positive) into *out; -1 when not. */
int mp__calib_secs(json_t *o, const char *key, double *out, int positive);
/* An integer >= 0 at o's key into *out; -1 when not. */
int mp__calib_size(json_t *o, const char *key, size_t *out);
/* mp_calib_runs.c: the optional "runs" rows in and out; and r's file's runs into r, in place of
 * r's (kept when the file cannot be read): for a calibration that measures everything again, and
 * for a plan's write, which keeps the runs a train --plan added while it measured. */
void mp__calib_runs_carry(struct mp_calib_rates *r);
int mp__calib_read_runs(json_t *a, struct mp_calib_rates *r);
json_t *mp__calib_runs_json(const struct mp_calib_rates *r);
void mp__calib_release(struct mp_calib_rates *r);

struct mp_calib_shape *mp__calib_find(struct mp_calib_rates *r, const struct mp_gemm_call *c);
struct mp_calib_shape *mp__calib_add(struct mp_calib_rates *r, const struct mp_gemm_call *c,
                                     double s);
struct mp_calib_pass *mp__calib_find_elem(struct mp_calib_rates *r, const char *digest, size_t mbs,
                                          int layer);
struct mp_calib_pass *mp__calib_add_elem(struct mp_calib_rates *r, const char *digest, size_t mbs,
                                         int layer);
int mp__calib_add_call(struct mp_calib_pass *e, int pass, size_t shape, size_t n);
struct mp_calib_step *mp__calib_find_step(struct mp_calib_rates *r, const char *digest, int kind,
                                          size_t mbs);
struct mp_calib_step *mp__calib_add_step(struct mp_calib_rates *r, const char *digest, int kind,
                                         size_t mbs);

/* mp_calib_reduce.c: fills r's reduction rows by running `mpirun -np 2 mpipe bench reduce` unless
 * it has them (and not recalibrate); a failure is a warning naming why, and leaves none. */
void mp__calib_reduce(struct mp_calib_rates *r, int recalibrate);
/* mp_calib_mpirun.c: why `mpipe plan` cannot start an MPI job of its own here (inside an MPI
 * job, one core, root without Open MPI's ALLOW variables), or NULL. */
const char *mp__calib_mpirun_why_not(void);
/* Runs `timeout 120 mpirun -np 2 LAUNCH -x BLIS_NUM_THREADS=1 <this mpipe> bench NAME ARGS--json`
 * (ARGS empty or ending in a space); on success *root (json_decref it) holds the output, whose
 * "rows" array has at least min_rows entries, and it returns NULL; else why, *root NULL. */
const char *mp__calib_bench_rows(const char *launch, const char *name, const char *args,
                                 size_t min_rows, json_t **root);

/* mp_calib_step.c: one step of layers 0..n-1 of m in place at mb samples (see there). */
int mp__calib_step(const struct mp_model *m, int n, size_t mb, enum mp_optim_kind optim,
                   double t[3], double *optim_s, struct mp_err *err);

#endif
