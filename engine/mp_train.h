/* The training loop shared by one-rank and pipelined runs: data order, micro-batches, the executor
 * per step, global-norm clipping, the per-stage optimizer step, LR schedules, evaluation, weights
 * in and out, progress, metrics and the measured figures of the RESULT line. */
#ifndef MP_TRAIN_H
#define MP_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_layer.h"
#include "mp_train_cfg.h"
#include "mp_xport.h"

struct mp_train_result {
    double samples_per_s, test_acc, loss, bubble, peak_act_bytes;
    double val_loss;       /* mean loss per prediction on the test/validation set */
    double peak_rss_bytes; /* largest ru_maxrss over ranks */
    uint64_t steps;
    uint64_t timed_steps;  /* the steps samples_per_s counts: this run's, not a resumed one's */
    double busy_pace;      /* after a plan's own layout: the ranks' mean busy time a step over
                              the plan's (their cores' pace against the rates); 0: none */
};

/* Gathers every rank's recorded events on rank 0, which writes the Chrome trace. Collective. */
struct mp_trace;
int mp_train_write_trace(const struct mp_trace *t, struct mp_xport *x, const char *path,
                         struct mp_err *err);

int mp_train_run(const struct mp_train_cfg *cfg, struct mp_xport *x, struct mp_train_result *r,
                 struct mp_err *err);

#endif
