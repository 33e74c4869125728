/* Server optimizers of `mpipe fed --server-opt` (mp_fed.h): FedAvg with a server learning rate
 * and FedAdam, FedYogi, FedAdagrad on the pseudo-gradient (Reddi et al. 2021, Algorithm 2). The
 * state (m, v) is kept in float, in the global model's arena layout, so a checkpoint stores it
 * with the weights' tensor names and a resumed run continues with the same bits. Arithmetic is
 * in double. Pure: no messages, no files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"

double mp_fed_opt_default_lr(enum mp_fed_server_opt kind)
{
    static const double lr[] = {MP_FED_SERVER_LR_AVG, MP_FED_SERVER_LR_ADAM,
                                MP_FED_SERVER_LR_YOGI, MP_FED_SERVER_LR_ADAGRAD};
    _Static_assert(sizeof lr / sizeof lr[0] == MP_FED_OPT_COUNT, "one default per optimizer");
    return lr[kind];
}

int mp_fed_opt_init(struct mp_fed_opt *o, enum mp_fed_server_opt kind, double lr, size_t n,
                    struct mp_err *err)
{
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->lr = lr > 0 ? lr : mp_fed_opt_default_lr(kind);
    o->n = n;
    if (kind == MP_FED_OPT_AVG)
        return 0;
    o->m = calloc(n ? n : 1, sizeof(float));
    o->v = malloc((n ? n : 1) * sizeof(float));
    if (!o->m || !o->v) {
        mp_fed_opt_free(o);
        return MP_FAIL(err, NOMEM, "out of memory for the server optimizer's state");
    }
    for (size_t i = 0; i < n; i++)
        o->v[i] = (float)(MP_FED_OPT_TAU * MP_FED_OPT_TAU);
    return 0;
}

void mp_fed_opt_free(struct mp_fed_opt *o)
{
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

static void step_avg(const struct mp_fed_opt *o, float *x, const double *agg)
{
    if (o->lr == 1.0) { /* plain FedAvg: the aggregate itself, no rounding through x + d */
        for (size_t i = 0; i < o->n; i++)
            x[i] = (float)agg[i];
        return;
    }
    for (size_t i = 0; i < o->n; i++)
        x[i] = (float)((double)x[i] + o->lr * (agg[i] - (double)x[i]));
}

void mp_fed_opt_step(struct mp_fed_opt *o, float *x, const double *agg)
{
    if (o->kind == MP_FED_OPT_AVG) {
        step_avg(o, x, agg);
        return;
    }
    const double b1 = MP_FED_OPT_BETA1, b2 = MP_FED_OPT_BETA2, tau = MP_FED_OPT_TAU;
    for (size_t i = 0; i < o->n; i++) {
        double d = agg[i] - (double)x[i], d2 = d * d;
        double m = b1 * (double)o->m[i] + (1 - b1) * d, v = (double)o->v[i];
        if (o->kind == MP_FED_OPT_ADAM)
            v = b2 * v + (1 - b2) * d2;
        else if (o->kind == MP_FED_OPT_YOGI)
            v = v - (1 - b2) * d2 * (v > d2 ? 1.0 : v < d2 ? -1.0 : 0.0);
        else
            v = v + d2;
        o->m[i] = (float)m;
        o->v[i] = (float)v;
        x[i] = (float)((double)x[i] + o->lr * (double)o->m[i] / (sqrt((double)o->v[i]) + tau));
    }
}
