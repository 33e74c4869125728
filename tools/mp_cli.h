/* The subcommands of the `mpipe` CLI. Each parses its own flags, does its work and returns 0, or
 * -1 with *err filled; only mpipe.c turns an error into a message and an exit code (DESIGN.md §4).
 * A subcommand that prints its own --help returns 0. */
#ifndef MP_CLI_H
#define MP_CLI_H

#include "mp_err.h"

int mp_cmd_train(int argc, char **argv, struct mp_err *err);  /* mp_cmd_train.c */
int mp_cmd_plan(int argc, char **argv, struct mp_err *err);   /* mp_cmd_plan.c */
int mp_cmd_sim(int argc, char **argv, struct mp_err *err);    /* mp_cmd_sim.c */
int mp_cmd_bench(int argc, char **argv, struct mp_err *err);  /* mp_cmd_bench.c */
int mp_cmd_fed(int argc, char **argv, struct mp_err *err);    /* mp_cmd_fed.c */
int mp_cmd_generate(int argc, char **argv, struct mp_err *err); /* mp_cmd_generate.c */

#endif
