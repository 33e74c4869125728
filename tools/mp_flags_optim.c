/* The optimisation flags shared by `mpipe train` and `mpipe fed` (--optimizer, --lr,
 * --lr-schedule, --warmup, --momentum, --weight-decay): one parser, and one place that applies
 * torch.optim's defaults for the chosen optimizer before the user's overrides. */
#include "mp_flags.h"

static const char *const opt_names[] = {"sgd",   "momentum", "nesterov", "adam",
                                        "adamw", "rmsprop",  "lamb",     NULL};
static const char *const lr_names[] = {"constant", "step", "cosine", "plateau", NULL};

int mp_flag_optim(struct mp_optim_flags *o, const char *f, const char *v, struct mp_err *err)
{
    long long n;
    int k;
    if (mp_flag_is(f, "--optimizer")) {
        if (mp_flag_choice(f, v, opt_names, &k, err))
            return -1;
        o->optim->kind = (enum mp_optim_kind)k;
    } else if (mp_flag_is(f, "--lr")) {
        return mp_flag_double(f, v, 0, 1e3, &o->lr->base_lr, err);
    } else if (mp_flag_is(f, "--momentum")) {
        o->momentum_given = 1;
        return mp_flag_double(f, v, 0, 1, &o->momentum, err);
    } else if (mp_flag_is(f, "--weight-decay")) {
        o->wd_given = 1;
        return mp_flag_double(f, v, 0, 10, &o->weight_decay, err);
    } else if (mp_flag_is(f, "--lr-schedule")) {
        if (mp_flag_choice(f, v, lr_names, &k, err))
            return -1;
        o->lr->kind = (enum mp_lr_kind)k;
    } else if (mp_flag_is(f, "--warmup")) {
        if (mp_flag_int(f, v, 0, 1LL << 40, &n, err))
            return -1;
        o->lr->warmup = (uint64_t)n;
    } else {
        return 1;
    }
    return 0;
}

void mp_flag_optim_finish(struct mp_optim_flags *o)
{
    mp_optim_defaults(o->optim, o->optim->kind);
    if (o->momentum_given)
        o->optim->momentum = (float)o->momentum;
    if (o->wd_given)
        o->optim->weight_decay = (float)o->weight_decay;
    double base = o->lr->base_lr;
    uint64_t warmup = o->lr->warmup;
    mp_lr_defaults(o->lr, o->lr->kind);
    o->lr->base_lr = base;
    o->lr->warmup = warmup;
}
