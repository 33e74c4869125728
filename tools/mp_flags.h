/* Flag values for the CLI: each parser checks range and syntax and fails with MP_ERR_USAGE naming
 * the flag and the value, so every command reports bad flags the same way (exit 2). */
#ifndef MP_FLAGS_H
#define MP_FLAGS_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_lr.h"
#include "mp_optim.h"

/* Walks argv from index 1: returns the flag at *i and sets *val to its value (the next argument,
 * or the part after '=' in --flag=value), advancing *i. has_value says whether the flag takes one;
 * a missing value is MP_ERR_USAGE. */
/* Walks argv[1..]: one positional argument (the model file) into *model, every flag through
 * handle(ctx, flag, value), which returns 0 (taken), 1 (not a flag it knows) or -1 (bad value).
 * Unknown flags and a second positional argument are MP_ERR_USAGE naming `cmd`; a missing model
 * is MP_ERR_USAGE with `example` as the hint. */
int mp_flag_walk(int argc, char **argv, int (*takes_value)(const char *flag),
                 int (*handle)(void *ctx, const char *flag, const char *val, struct mp_err *err),
                 void *ctx, const char **model, const char *cmd, const char *example,
                 struct mp_err *err);
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

/* The optimisation flags of train and fed (mp_flags_optim.c). */
struct mp_optim_flags {
    struct mp_optim_cfg *optim;
    struct mp_lr_cfg *lr;
    int momentum_given, wd_given;
    double momentum, weight_decay;
};
/* 0: taken, 1: not an optimisation flag, -1: bad value. */
int mp_flag_optim(struct mp_optim_flags *o, const char *flag, const char *val, struct mp_err *err);
/* torch.optim's defaults for the chosen optimizer and LR schedule, then the user's values. */
void mp_flag_optim_finish(struct mp_optim_flags *o);

#endif
