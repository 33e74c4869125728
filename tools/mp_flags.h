/* Flag values for the CLI: each parser checks range and syntax and fails with MP_ERR_USAGE naming
 * the flag and the value, so every command reports bad flags the same way (exit 2). */
#ifndef MP_FLAGS_H
#define MP_FLAGS_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"

/* Walks argv from index 1: returns the flag at *i and sets *val to its value (the next argument,
 * or the part after '=' in --flag=value), advancing *i. has_value says whether the flag takes one;
 * a missing value is MP_ERR_USAGE. */
int mp_flag_next(int argc, char **argv, int *i, const char **flag, const char **val,
                 int (*has_value)(const char *flag), struct mp_err *err);
int mp_flag_int(const char *flag, const char *val, long long min, long long max, long long *out,
                struct mp_err *err);
int mp_flag_double(const char *flag, const char *val, double min, double max, double *out,
                   struct mp_err *err);
/* Bytes with an optional K, M, G (powers of 1024) suffix. */
int mp_flag_bytes(const char *flag, const char *val, size_t *out, struct mp_err *err);
int mp_flag_choice(const char *flag, const char *val, const char *const *choices, int *out,
                   struct mp_err *err);
int mp_flag_is(const char *flag, const char *name);

#endif
