/* The transport: the only code that talks MPI (mp_xport_mpi.c). It duplicates MPI_COMM_WORLD,
 * sets MPI_ERRORS_RETURN so failures become MP_ERR_MPI with MPI's own text, and gives every wait a
 * deadline: a wait that passes it fails with MP_ERR_DEADLINE and a message naming the rank, the
 * peer and what was awaited (the line contains "waited", DESIGN.md §4) instead of hanging. */
#ifndef MP_XPORT_H
#define MP_XPORT_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"

struct mp_xport;

/* Initialises MPI (if not already) and the transport. Works without mpirun (one rank). */
int mp_xport_init(struct mp_xport **x, int *argc, char ***argv, struct mp_err *err);
void mp_xport_finalize(struct mp_xport *x);
/* Frees the transport without finalising MPI: after an error, when peers may be gone and
 * MPI_Finalize could wait for them. */
void mp_xport_release(struct mp_xport *x);
/* Collective over x: ranks below n get a transport over ranks [0, n) in *out; the others get NULL.
 * Free it with mp_xport_finalize (which leaves MPI itself running). */
int mp_xport_sub(struct mp_xport *x, int n, struct mp_xport **out, struct mp_err *err);
/* Collective over x: *one_host = 1 when all its ranks share one host's memory (MPI's
 * MPI_COMM_TYPE_SHARED), the same answer on every rank. */
int mp_xport_one_host(struct mp_xport *x, int *one_host, struct mp_err *err);
int mp_xport_rank(const struct mp_xport *x);
int mp_xport_size(const struct mp_xport *x);
double mp_xport_now(void);
/* Seconds every wait may take before it fails (default 60). */
void mp_xport_set_deadline(struct mp_xport *x, double seconds);
double mp_xport_deadline(const struct mp_xport *x);
/* Every failed wait's `waited` line (and the line a rank writes when mpirun ends it) is also
 * appended to PATH as "rank R on host H: LINE": mpirun can drop a rank's last stderr while it tears
 * a job down. NULL stops it. */
void mp_xport_set_report_file(struct mp_xport *x, const char *path);
/* The name of this rank's host (MPI_Get_processor_name). */
const char *mp_xport_host(const struct mp_xport *x);

/* Nonblocking point-to-point. A request handle is a small non-negative int, -1 when none. */
int mp_xport_isend(struct mp_xport *x, const void *buf, size_t bytes, int peer, int tag, int *req,
                   struct mp_err *err);
int mp_xport_irecv(struct mp_xport *x, void *buf, size_t bytes, int peer, int tag, int *req,
                   struct mp_err *err);
/* Completes a request (no-op for -1) within the deadline; `what` describes it for the message, e.g.
 * "activation of micro-batch 6 from rank 0 (1f1b action 12)". Sets *req to -1. */
int mp_xport_wait(struct mp_xport *x, int *req, const char *what, struct mp_err *err);
/* mp_xport_wait of a receive that also tells how many bytes came in *bytes (a sender may send
 * fewer than the receive holds: the pipeline's hand-offs through shared memory send none). */
int mp_xport_wait_bytes(struct mp_xport *x, int *req, const char *what, size_t *bytes,
                        struct mp_err *err);
/* Non-blocking completion test; *done = 1 and *req = -1 when complete. */
int mp_xport_test(struct mp_xport *x, int *req, int *done, struct mp_err *err);
/* Lets MPI progress outstanding transfers (called between kernels to overlap communication). */
void mp_xport_progress(struct mp_xport *x);

/* Collective over x: ranks passing the same color >= 0 share a new transport, ordered by key;
 * color < 0 gives NULL. Free with mp_xport_finalize. */
int mp_xport_split(struct mp_xport *x, int color, int key, struct mp_xport **out,
                   struct mp_err *err);

/* Collectives over all ranks, each bounded by the deadline. */
int mp_xport_barrier(struct mp_xport *x, const char *what, struct mp_err *err);
int mp_xport_allreduce_sum(struct mp_xport *x, double *buf, size_t n, const char *what,
                           struct mp_err *err);
int mp_xport_allreduce_max(struct mp_xport *x, double *buf, size_t n, const char *what,
                           struct mp_err *err);
int mp_xport_bcast(struct mp_xport *x, void *buf, size_t bytes, int root, const char *what,
                   struct mp_err *err);
/* The error agreement after a step every rank does alone (mp_xport_settle.c): each tells whether
 * it failed (rc != 0). All failed: a usage or input error is marked shared, for rank 0 to say
 * once. Some failed: a failed rank's error stays its own; the ranks that did not fail get the
 * failed ranks' status (the largest) with "N of the S ranks found an error in WHAT that rank 0 did
 * not", its text kept on rank 0 only. Either way every rank is failing, and err->all_failed
 * says so (mp_cli_report_shared has them meet before exiting). Returns -1 when any rank failed. */
int mp_xport_settle(struct mp_xport *x, int rc, const char *what, struct mp_err *err);
/* Every rank contributes `bytes`; all receive size*bytes in rank order. */
int mp_xport_allgather(struct mp_xport *x, const void *mine, void *all, size_t bytes,
                       const char *what, struct mp_err *err);
/* Blocking send/recv of one message within the deadline (simple protocols: weights, traces). */
int mp_xport_send(struct mp_xport *x, const void *buf, size_t bytes, int peer, int tag,
                  const char *what, struct mp_err *err);
int mp_xport_recv(struct mp_xport *x, void *buf, size_t bytes, int peer, int tag,
                  const char *what, struct mp_err *err);

/* For protocols where the sender is not known in advance (added for `mpipe fed`): waits up to
 * `seconds` for a message from `peer` with `tag` (MP_XPORT_ANY matches any) without receiving it.
 * No message in time is not an error: *found = 0 and the caller decides what a missed deadline
 * means. Otherwise *src, *tag_out and *bytes describe the earliest matching message; receive it
 * with mp_xport_recv(src, tag_out). Idle polls sleep (up to 1 ms) so waiters leave the cores to
 * ranks that compute. */
#define MP_XPORT_ANY (-1)
int mp_xport_probe(struct mp_xport *x, int peer, int tag, double seconds, int *found, int *src,
                   int *tag_out, size_t *bytes, struct mp_err *err);

/* Benchmark loops for `mpipe bench p2p` (added for it), the methods of OSU's osu_latency, osu_bw
 * and osu_bibw, timed with MPI_Wtime on this rank. Both ranks of a pair call the same function
 * with each other as peer; `first` is 1 on exactly one of them (it sends first). `warmup`
 * iterations run untimed, then *seconds is the wall time of `iters` iterations. Waits poll without
 * sleeping (a sleep would be measured) and still fail at the deadline. */
/* Ping-pong: first sends `bytes`, the peer sends them back; one iteration is one round trip. */
int mp_xport_bench_pingpong(struct mp_xport *x, int peer, int first, void *buf, size_t bytes,
                            int warmup, int iters, double *seconds, struct mp_err *err);
/* Streaming: first posts `window` nonblocking sends of `bytes` (from one buffer), the peer
 * `window` receives, then the peer returns a 4-byte ack. bidir: both post both at once, then
 * exchange acks. One iteration is one window. window <= 256. */
int mp_xport_bench_window(struct mp_xport *x, int peer, int first, const void *sbuf, void *rbuf,
                          size_t bytes, int window, int bidir, int warmup, int iters,
                          double *seconds, struct mp_err *err);

/* Float collectives for gradient reduction (counts and displacements in floats). allgatherv with
 * send NULL gathers in place (each rank's part already at its displacement in recv). */
int mp_xport_alltoallv_f(struct mp_xport *x, const float *send, const int *scounts,
                         const int *sdispls, float *recv, const int *rcounts, const int *rdispls,
                         const char *what, struct mp_err *err);
int mp_xport_allgatherv_f(struct mp_xport *x, const float *send, int count, float *recv,
                          const int *counts, const int *displs, const char *what,
                          struct mp_err *err);
int mp_xport_allreduce_sum_f(struct mp_xport *x, float *buf, size_t n, const char *what,
                             struct mp_err *err);
/* Nonblocking form (added for bucketed data-parallel reduction): completes with mp_xport_test or
 * mp_xport_wait like a point-to-point request. Every rank must start these in the same order. */
int mp_xport_iallreduce_sum_f(struct mp_xport *x, float *buf, size_t n, int *req,
                              struct mp_err *err);

/* Ends the whole job with `code` (after a local failure that peers cannot know about). */
void mp_xport_abort(struct mp_xport *x, int code);

#endif
