/* Output files a run writes at its end (--save-weights, --trace) or as it goes (--metrics),
 * checked before it starts (mp_output.c), so that a typo costs nothing but a message. */
#ifndef MP_OUTPUT_H
#define MP_OUTPUT_H

#include "mp_err.h"

/* 0 when path can be written where the writers put it: not a directory, and a file can be made
 * beside it (they make PATH.tmp.PID there, then rename it). Else MP_ERR_IO naming `flag` and path,
 * and why. Local: the caller shares the verdict. */
int mp_output_writable(const char *path, const char *flag, struct mp_err *err);

#endif
