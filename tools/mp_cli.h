/* The subcommands of the `mpipe` CLI. Each parses its own flags, does its work and returns 0, or
 * -1 with *err filled; only mpipe.c turns an error into a message and an exit code (DESIGN.md §4).
 * A subcommand that prints its own --help returns 0. */
#ifndef MP_CLI_H
#define MP_CLI_H

#include "mp_err.h"

struct mp_xport;

/* The commit this binary was built from, short hash ("unknown" outside git): written at build time
 * (cmake/version_hash.cmake), for --version, benchmark headers and the rates cache key. */
const char *mp_git_hash(void);

int mp_cmd_train(int argc, char **argv, struct mp_err *err);  /* mp_cmd_train.c */
int mp_cmd_plan(int argc, char **argv, struct mp_err *err);   /* mp_cmd_plan.c */
int mp_cmd_sim(int argc, char **argv, struct mp_err *err);    /* mp_cmd_sim.c */
int mp_cmd_bench(int argc, char **argv, struct mp_err *err);  /* mp_cmd_bench.c */
int mp_cmd_fed(int argc, char **argv, struct mp_err *err);    /* mp_cmd_fed.c */
int mp_cmd_generate(int argc, char **argv, struct mp_err *err); /* mp_cmd_generate.c */

/* For a subcommand under MPI that failed, before it releases the transport: names this rank in
 * *err (err->rank, -1 for one rank). For an error every rank found (err->shared): rank 0 prints
 * the message now, the other ranks' copies are emptied, and every rank waits at a barrier
 * (bounded by the transport's deadline) until all have come, so no rank exits before rank 0's
 * line is out. Without it mpirun, seeing a quiet rank's exit 2 first, can end rank 0 before it
 * prints. The same when every rank failed at one agreement point with errors of its own
 * (err->all_failed, mp_xport_settle): each prints its own, then they meet. Nothing more for one
 * rank or an unshared error: its peers may be waiting elsewhere. (mpipe.c) */
void mp_cli_report_shared(struct mp_xport *x, const char *cmd, struct mp_err *err);
/* 1 under an mpirun of more than one rank: a bad command line is then settled after MPI starts
 * (mp_xport_settle), so that a rank whose flags differ says its own error; alone, a subcommand
 * says it at once, without MPI. (mpipe.c) */
int mp_cli_under_mpirun(void);

#endif
