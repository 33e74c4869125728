/* `mpipe bench`: topology-aware benchmarks (DESIGN.md §7). */
#include <stdio.h>
#include <string.h>

#include "mp_cli.h"

int mp_cmd_bench(int argc, char **argv, struct mp_err *err)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs("usage: mpirun -np N mpipe bench p2p|gemm|layers|pipeline [...] [--json]\n",
                  stdout);
            return 0;
        }
    return MP_FAIL(err, USAGE, "mpipe bench is not implemented yet");
}
