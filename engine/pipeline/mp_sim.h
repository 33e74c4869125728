/* Event simulator: times a schedule's action lists from per-action costs and a link model. Each
 * rank runs its list in order; compute actions take their cost; a send is non-blocking and its
 * message arrives after latency + bytes / bandwidth (the sender pays `send_overhead_s`); a receive
 * waits for its message (where the receiver copies, recv_copy below, the bytes / bandwidth are
 * the receiver's, after it has waited out the latency). The same simulator predicts plans
 * (partitioner) and is checked against measured runs (bench pipeline). */
#ifndef MP_SIM_H
#define MP_SIM_H

#include <stddef.h>

#include "mp_err.h"
#include "mp_sched.h"
#include "mp_trace.h"

struct mp_sim_costs {
    /* Per virtual stage v in 0..P*V-1, per micro-batch: */
    const double *f_s, *b_s, *w_s;      /* seconds of F, B, W */
    /* Optional (NULL: none), per v: seconds v's first F, B, W of the step take on top, where a
     * weight is packed once and kept for the step's later micro-batches (mp_gemm_reuse_begin). */
    const double *f_first_s, *b_first_s, *w_first_s;
    const double *act_bytes;            /* bytes of v's output activation (= grad sent back) */
    const double *held_bytes;           /* bytes v keeps per in-flight micro-batch (activations) */
    double step_s;                      /* optimizer STEP cost (per rank, same for all) */
    double latency_s, bandwidth_Bps;    /* link between any two distinct ranks */
    const double *link_latency_s;       /* optional P*P matrix overriding latency (NULL: uniform) */
    const double *link_bandwidth_Bps;   /* optional P*P matrix overriding bandwidth */
    double send_overhead_s;             /* CPU time a send costs its sender */
    /* Where the receiver itself moves the bytes (ranks of one host: it copies the message out of
     * the sender's slot in shared memory at its receive, mp_exec_share; through MPI, Open MPI's
     * single copy reads the sender's buffer at the receiver's wait too): the message is there
     * after the latency, and its bytes / bandwidth are the receiver's time, spent even when it
     * comes late to a message long sent. The sender's copy into the slot is not priced (a
     * 128 KB activation: under 10 us of non-temporal stores). Optional P*P matrix (1: the
     * receiver copies); NULL: recv_copy for every pair. 0 everywhere: a message travels on its
     * own (between hosts). */
    const unsigned char *link_recv_copy;
    int recv_copy;
};

struct mp_sim_result {
    double step_s;              /* time at which the last rank finishes */
    double bubble;              /* 1 - mean over ranks of busy / step_s */
    double busy_s[1024];        /* per rank */
    double peak_act_bytes[1024];/* per rank: max bytes held in activations + in-flight messages */
    double max_peak_act_bytes;
};

/* Runs the simulation (the schedule must be valid). trace may be NULL. MP_ERR_INPUT if the lists
 * deadlock. */
int mp_sim_run(const struct mp_sched *s, const struct mp_sim_costs *c, struct mp_sim_result *r,
               struct mp_trace *trace, struct mp_err *err);

#endif
