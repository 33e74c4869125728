/* Learning-rate schedules: constant, step, cosine, reduce-on-plateau, each combinable with linear
 * warm-up. The LR is a pure function of (config, state, step); the state is a few numbers that
 * checkpoints store and that the plateau rule changes once per epoch, on every rank alike. */
#ifndef MP_LR_H
#define MP_LR_H

#include <stdint.h>

enum mp_lr_kind { MP_LR_CONSTANT, MP_LR_STEP, MP_LR_COSINE, MP_LR_PLATEAU, MP_LR_COUNT };

struct mp_lr_cfg {
    enum mp_lr_kind kind;
    double base_lr;
    uint64_t warmup;      /* steps of linear warm-up: lr * (step + 1) / warmup for step < warmup */
    uint64_t total_steps; /* cosine: the run's steps, warm-up included; anneals over the rest */
    double min_lr;        /* cosine floor */
    uint64_t step_size;   /* step: multiply by gamma every step_size steps */
    double gamma;
    double factor;        /* plateau: multiply by factor after `patience` bad epochs */
    int patience;
    double threshold;     /* plateau: relative improvement that counts (torch 'rel' mode) */
    int cooldown;
    double plateau_min_lr;
};

struct mp_lr_state {
    double scale;        /* plateau's accumulated factor (1 at start) */
    double best;         /* best epoch loss seen (plateau) */
    int bad_epochs;
    int cooldown_left;
};

int mp_lr_parse(const char *name, enum mp_lr_kind *kind);
const char *mp_lr_name(enum mp_lr_kind kind);
/* Defaults for the kind (step_size, gamma, factor, patience, ...) leaving base_lr/warmup alone. */
void mp_lr_defaults(struct mp_lr_cfg *cfg, enum mp_lr_kind kind);
void mp_lr_state_init(struct mp_lr_state *s);
/* LR for optimizer step `step` (0-based). */
double mp_lr_at(const struct mp_lr_cfg *cfg, const struct mp_lr_state *s, uint64_t step);
/* The plateau rule's reaction to an epoch's mean loss; a no-op for other kinds. Returns 1 if the
 * LR was reduced. */
int mp_lr_epoch_end(const struct mp_lr_cfg *cfg, struct mp_lr_state *s, double epoch_loss);

#endif
