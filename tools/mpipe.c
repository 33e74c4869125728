/* The `mpipe` CLI: dispatches to the subcommands and is the only code that turns an error into a
 * message and an exit code (DESIGN.md §4: 0 ok, 2 bad usage or input, 3 I/O or checkpoint, 4 peer
 * or deadline, 5 numerical). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_cli.h"
#include "mp_gemm.h"
#include "mp_xport.h"

static const char usage[] =
    "usage: mpipe COMMAND [ARGS]   (mpipe COMMAND --help for each)\n"
    "\n"
    "  plan   MODEL.mp --stages P|auto ...   split a model across ranks, place it, predict it\n"
    "  sim    plan.json [--trace F] [--svg F]  simulate a plan: timeline, bubble, memory\n"
    "  train  MODEL.mp [...]                 train (one rank, or under mpirun -np N as a pipeline)\n"
    "  bench  p2p|gemm|layers|pipeline ...   topology-aware benchmarks\n"
    "  fed    MODEL.mp --clients C ...       federated training (under mpirun -np 1+C)\n"
    "  generate MODEL.mp --weights F ...     text from a trained token model (key/value cache)\n"
    "\n"
    "exit codes: 0 ok, 2 bad usage or input, 3 I/O or checkpoint error, 4 a peer failed or a\n"
    "deadline passed, 5 numerical failure (NaN/Inf loss)\n";

static int exit_code(enum mp_status s)
{
    switch (s) {
    case MP_OK: return 0;
    case MP_ERR_USAGE:
    case MP_ERR_INPUT: return 2;
    case MP_ERR_IO:
    case MP_ERR_CKPT:
    case MP_ERR_NOMEM: return 3;
    case MP_ERR_PEER:
    case MP_ERR_DEADLINE:
    case MP_ERR_MPI: return 4;
    case MP_ERR_NUMERIC: return 5;
    default: return 1;
    }
}

static void say(const char *cmd, const struct mp_err *err)
{
    if (err->rank >= 0)
        fprintf(stderr, "mpipe %s: rank %d: %s\n", cmd, err->rank, err->msg);
    else
        fprintf(stderr, "mpipe %s: %s\n", cmd, err->msg);
}

void mp_cli_report_shared(struct mp_xport *x, const char *cmd, struct mp_err *err)
{
    int size = mp_xport_size(x), rank = mp_xport_rank(x);
    err->rank = size > 1 ? rank : -1;
    if (!(err->shared || err->all_failed) || size < 2)
        return;
    if (err->shared && rank != 0)
        err->msg[0] = 0; /* rank 0 says it for every rank */
    if (err->msg[0]) {
        fflush(stdout);
        say(cmd, err);
        fflush(stderr);
        err->msg[0] = 0; /* said: main adds nothing but the exit code */
    }
    /* Should a peer never come (its rank died), the deadline ends the wait, and this rank exits
     * with the error it found all the same. */
    struct mp_err ignored;
    mp_err_clear(&ignored);
    mp_xport_barrier(x, err->shared ? "the report of an error every rank found"
                                    : "the reports of errors some ranks found", &ignored);
}

int mp_cli_under_mpirun(void)
{
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    return size && atoi(size) > 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("mpipe %s (%s)\n", MPIPE_VERSION, mp_git_hash());
        return 0;
    }
    /* BLIS picks its kernel set from the environment on first use: do that now, before MPI starts
     * threads (mp_gemm.c may choose the kernel set for this CPU, DESIGN.md §6). */
    (void)mp_gemm_arch();
    /* hwloc (ours, and Open MPI's at MPI_Init) would dlopen its GPU plugins, gl and opencl, which
     * find no device here (a CPU engine) but pull libX11 and libOpenCL into every rank; with them
     * loaded, LeakSanitizer's exit-time check on Debian 12 crashed reading their threads' TLS
     * ("Tracer caught signal 11"). A list of the user's own wins. */
    setenv("HWLOC_PLUGINS_BLACKLIST", "hwloc_gl,hwloc_opencl", 0);
    static const struct {
        const char *name;
        int (*run)(int, char **, struct mp_err *);
    } cmds[] = {{"train", mp_cmd_train}, {"plan", mp_cmd_plan}, {"sim", mp_cmd_sim},
                {"bench", mp_cmd_bench}, {"fed", mp_cmd_fed}, {"generate", mp_cmd_generate}};
    struct mp_err err;
    mp_err_clear(&err);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name))
            continue;
        if (cmds[i].run(argc - 1, argv + 1, &err) == 0)
            return 0;
        fflush(stdout);
        if (err.msg[0])
            say(cmds[i].name, &err);
        return exit_code(err.code);
    }
    fprintf(stderr, "mpipe: unknown command '%s'\n\n%s", argv[1], usage);
    return 2;
}
