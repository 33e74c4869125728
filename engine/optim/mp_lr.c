/* Learning-rate schedules (DESIGN.md §4 --lr-schedule, --warmup). Owns the LR as a pure function
 * of (config, state, step) and the plateau rule's once-per-epoch state update. It keeps no hidden
 * state: everything the LR depends on is in struct mp_lr_state, which checkpoints store, so a
 * resumed run continues with exactly the LR it would have had. */
#include "mp_lr.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* M_PI is POSIX/XSI, not C11. */
static const double pi = 3.14159265358979323846;

static const char *const lr_names[] = {"constant", "step", "cosine", "plateau"};
static_assert(sizeof lr_names / sizeof lr_names[0] == MP_LR_COUNT, "lr names");

int mp_lr_parse(const char *name, enum mp_lr_kind *kind)
{
    for (int k = 0; k < MP_LR_COUNT; k++) {
        if (strcmp(name, lr_names[k]) == 0) {
            *kind = (enum mp_lr_kind)k;
            return 0;
        }
    }
    return -1;
}

const char *mp_lr_name(enum mp_lr_kind kind)
{
    return (kind >= 0 && kind < MP_LR_COUNT) ? lr_names[kind] : "unknown";
}

/* Defaults, chosen for runs of a few thousand steps (Fashion-MNIST at batch 256 is 235 steps per
 * epoch, so 10 epochs are ~2350 steps):
 * - step: x0.1 every 1000 steps (torch's StepLR gamma; StepLR has no default step_size).
 * - cosine: anneal to 0 (torch's CosineAnnealingLR eta_min); total_steps is set by the caller.
 * - plateau: torch's ReduceLROnPlateau (mode min, factor 0.1, threshold 1e-4 relative, cooldown
 *   0, min_lr 0) except patience 2 instead of 10, because the rule sees one loss per epoch and a
 *   run has ~10-15 epochs; patience 10 would never fire. */
void mp_lr_defaults(struct mp_lr_cfg *cfg, enum mp_lr_kind kind)
{
    cfg->kind = kind;
    cfg->total_steps = 0;
    cfg->min_lr = 0.0;
    cfg->step_size = 1000;
    cfg->gamma = 0.1;
    cfg->factor = 0.1;
    cfg->patience = 2;
    cfg->threshold = 1e-4;
    cfg->cooldown = 0;
    cfg->plateau_min_lr = 0.0;
}

/* best starts at DBL_MAX rather than infinity so the state stays representable in JSON (jansson
 * refuses non-finite reals); any finite loss improves on it. */
void mp_lr_state_init(struct mp_lr_state *s)
{
    s->scale = 1.0;
    s->best = DBL_MAX;
    s->bad_epochs = 0;
    s->cooldown_left = 0;
}

/* The schedule proper, s steps after warm-up. */
static double schedule_at(const struct mp_lr_cfg *cfg, const struct mp_lr_state *st, uint64_t s)
{
    switch (cfg->kind) {
    case MP_LR_STEP:
        if (cfg->step_size == 0)
            return cfg->base_lr;
        return cfg->base_lr * pow(cfg->gamma, (double)(s / cfg->step_size));
    case MP_LR_COSINE: {
        /* T = total_steps - warmup: total_steps counts the whole run, so the LR reaches min_lr
           exactly when training ends; past T it stays at min_lr. */
        uint64_t t = cfg->total_steps > cfg->warmup ? cfg->total_steps - cfg->warmup : 0;
        if (s >= t)
            return cfg->min_lr;
        double c = (1.0 + cos(pi * (double)s / (double)t)) / 2.0;
        return cfg->min_lr + (cfg->base_lr - cfg->min_lr) * c;
    }
    case MP_LR_PLATEAU:
        return cfg->base_lr * st->scale;
    case MP_LR_CONSTANT:
    case MP_LR_COUNT:
        break;
    }
    return cfg->base_lr;
}

/* Linear warm-up ramps towards the schedule's starting value: lr * (step + 1) / warmup. */
double mp_lr_at(const struct mp_lr_cfg *cfg, const struct mp_lr_state *s, uint64_t step)
{
    if (step < cfg->warmup) {
        double top = schedule_at(cfg, s, 0);
        if (cfg->kind == MP_LR_COSINE && cfg->total_steps <= cfg->warmup)
            top = cfg->base_lr; /* the run ends inside its warm-up: no decay phase, no min_lr */
        return top * (double)(step + 1) / (double)cfg->warmup;
    }
    return schedule_at(cfg, s, step - cfg->warmup);
}

/* torch.optim.lr_scheduler.ReduceLROnPlateau.step (mode 'min', threshold_mode 'rel'): a loss is an
 * improvement when it is below best * (1 - threshold); the LR drops once the count of bad epochs
 * exceeds patience (so patience 2 reduces on the third bad epoch in a row); epochs in cooldown do
 * not count as bad. A reduction smaller than 1e-8 (torch's eps) is ignored. */
int mp_lr_epoch_end(const struct mp_lr_cfg *cfg, struct mp_lr_state *s, double epoch_loss)
{
    if (cfg->kind != MP_LR_PLATEAU)
        return 0;
    if (epoch_loss < s->best * (1.0 - cfg->threshold)) {
        s->best = epoch_loss;
        s->bad_epochs = 0;
    } else {
        s->bad_epochs++;
    }
    if (s->cooldown_left > 0) {
        s->cooldown_left--;
        s->bad_epochs = 0;
    }
    if (s->bad_epochs <= cfg->patience)
        return 0;
    s->bad_epochs = 0;
    s->cooldown_left = cfg->cooldown;
    double old_lr = cfg->base_lr * s->scale;
    double new_lr = fmax(old_lr * cfg->factor, cfg->plateau_min_lr);
    if (old_lr - new_lr <= 1e-8)
        return 0;
    s->scale = cfg->base_lr > 0.0 ? new_lr / cfg->base_lr : s->scale * cfg->factor;
    return 1;
}
