/* Calibration: this machine's rates for the planner, measured when `mpipe plan` is given neither
 * --profile nor --rates, so that a plan's prediction holds on a machine nobody described
 * (DESIGN.md §8). For each micro-batch size the plan may use, every layer pass (F, B, W) is run
 * once with its GEMM calls recorded (mp_gemm_record) and then timed in place with the GEMMs
 * skipped (its element-wise part: bias, activations, pooling, im2col, losses); every distinct
 * GEMM shape is timed warm (after two calls) through mp_gemm itself, the call path training
 * takes (one above a gigaflop on a slice of its largest dimension, scaled); and the optimizer step
 * is timed over the model's parameters. A pass costs its element-wise time plus its GEMMs' times;
 * the first layer's forward also the copy of its micro-batch out of a training set.
 * Layers that cost the same (a repeat's copies) are timed once, so a calibration takes seconds:
 * 4 s for models/gpt.mp at 5 micro-batch sizes, 12 s for models/gpt_300m.mp at 4.
 *
 * GEMM shapes and the optimizer rate are machine rates: they are cached in
 * $XDG_CACHE_HOME/mpipe/ (default ~/.cache/mpipe/), one file per CPU model, BLIS configuration
 * and mpipe version, and reused by later plans of any model; shapes a model needs that the file
 * lacks are measured and added. A corrupt or foreign file is ignored with a warning on stderr and
 * rewritten; a cache that cannot be written is a warning, never an error. */
#ifndef MP_CALIB_H
#define MP_CALIB_H

#include <stddef.h>

#include "mp_cost.h"
#include "mp_err.h"
#include "mp_layer.h"
#include "mp_optim.h"

/* Fills t (free with mp_calib_free) for model m at the micro-batch sizes mbs[0..n) and the
 * optimizer `optim`, reusing the cache unless recalibrate; with `reduce`, also the data-parallel
 * reduction between 2 ranks (mp__calib_reduce: an MPI job of its own, once per machine).
 * `source` says where the rates came from (timed now or reused), for the plan's cost_source. */
int mp_calib_table(const struct mp_model *m, const size_t *mbs, int n, enum mp_optim_kind optim,
                   int recalibrate, int reduce, struct mp_cost_table *t, char *source,
                   size_t source_len, struct mp_err *err);
void mp_calib_free(struct mp_cost_table *t);

/* Sets cm's link for each topology level that n ranks placed on cl span on this host (the live
 * topology, one host), from `mpirun -np 2 mpipe bench p2p` between a pair of those cores at that
 * level, cached per machine unless recalibrate (mp_calib_links.c). A level that cannot be measured
 * keeps its link, with a warning naming why. `note` gets what to add to the plan's cost_source
 * (", links measured now (L3)", or from the cache; empty when nothing was). */
int mp_calib_links(struct mp_cost_model *cm, const struct mp_cluster *cl, int n, int recalibrate,
                   char *note, size_t note_len, struct mp_err *err);

/* The cache file for this machine ($XDG_CACHE_HOME/mpipe/rates-<key>.json); 0 or -1 if no
 * directory can be named (no XDG_CACHE_HOME and no HOME). */
int mp_calib_cache_path(char *out, size_t len);

/* Keeps a run of a plan priced from this machine's rates cache (its key rates_key) in that
 * cache, for the next plans' lean (mp_cost_lean); run->at is set here. 1 kept, 0 not this
 * machine's cache or none readable (nothing written), -1 the file could not be written; path
 * gets the file's name. */
int mp_calib_keep_run(const struct mp_cost_run *run, const char *rates_key, char *path,
                      size_t path_len);

/* Seconds the first stage's forward spends gathering mb samples and their labels from a training
 * set (mp_calib_input.c); 0 when out of memory. */
double mp__calib_input_s(const struct mp_model *m, size_t mb);
void mp__calib_input_free(void); /* its stand-in sets, kept across sizes */

/* Seconds on the monotonic clock, for calibration's timings (mp_calib.c, mp_calib_step.c). Not
 * mp_xport_now: `mpipe plan` calibrates without starting MPI. */
double mp__calib_now(void);

#endif
