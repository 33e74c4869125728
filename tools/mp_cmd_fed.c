/* `mpipe fed`: federated training (issue 7). Not built yet: the command says so and exits 2, so
 * scripts fail clearly instead of training something else. */
#include <stdio.h>
#include <string.h>

#include "mp_cli.h"

int mp_cmd_fed(int argc, char **argv, struct mp_err *err)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs("usage: mpirun -np 1+C mpipe fed MODEL.mp --clients C --rounds R ...\n"
                  "Federated training is not implemented in this version of mpipe.\n", stdout);
            return 0;
        }
    return MP_FAIL(err, USAGE, "federated training (mpipe fed) is not implemented yet");
}
