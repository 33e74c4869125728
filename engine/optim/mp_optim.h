/* Optimizers over a flat parameter arena, with torch.optim's update formulas and defaults
 * (DESIGN.md §4). A step updates one parameter tensor (a layer's weight or its bias) in one pass;
 * LAMB's trust ratio is per tensor. State lives beside the parameters: slot s of a tensor of n
 * floats starting at arena offset o is state[s * state_stride + o]. */
#ifndef MP_OPTIM_H
#define MP_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"

enum mp_optim_kind {
    MP_OPT_SGD,
    MP_OPT_MOMENTUM,
    MP_OPT_NESTEROV,
    MP_OPT_ADAM,
    MP_OPT_ADAMW,
    MP_OPT_RMSPROP,
    MP_OPT_LAMB,
    MP_OPT_COUNT
};

struct mp_optim_cfg {
    enum mp_optim_kind kind;
    float momentum;      /* momentum, nesterov (dampening 0) */
    float weight_decay;  /* L2 (sgd family, adam, rmsprop) or decoupled (adamw, lamb) */
    float beta1, beta2;  /* adam, adamw, lamb */
    float eps;           /* adam/adamw 1e-8, rmsprop 1e-8, lamb 1e-6 */
    float alpha;         /* rmsprop smoothing, 0.99 */
};

int mp_optim_parse(const char *name, enum mp_optim_kind *kind);
const char *mp_optim_name(enum mp_optim_kind kind);
/* torch.optim defaults for the kind (DESIGN.md §4), weight decay included. */
void mp_optim_defaults(struct mp_optim_cfg *cfg, enum mp_optim_kind kind);
/* Floats of optimizer state per parameter (0, 1 or 2). */
int mp_optim_state_slots(enum mp_optim_kind kind);

/* One update of a tensor of n floats. step counts optimizer steps from 1 (bias correction).
 * state points at the tensor's slot-0 state; slot s is at state + s * state_stride. */
void mp_optim_step(const struct mp_optim_cfg *cfg, float lr, uint64_t step, float *param,
                   const float *grad, float *state, size_t state_stride, size_t n);

#endif
