/* Memory of the training loop's rank (DESIGN.md §10): its predicted peak by kind (the engine's own
 * allocation rules, mp_stage_mem.h), recomputation per stage (from the plan, --recompute, or where
 * the cap needs it), and the refusal to start a layout predicted above --memory-per-rank. */
#include <math.h>
#include <stdlib.h>

#include "mp_train_loop.h"
#include "mp_weights.h"

/* This rank's predicted peak with recomputation on the stages in `rc` (per virtual stage) and,
 * with reuse, the packed-weight pool. */
static double predict_memory(const struct loop *L, const int *rc, int reuse,
                             struct mp_mem_parts *parts)
{
    const struct mp_train_cfg *c = L->cfg;
    const struct mp_model *m = c->model;
    int tied_elsewhere = 0;
    for (int i = 0; i < m->n_layers; i++)
        if (mp_layer_is_tied(&m->layers[i]))
            tied_elsewhere = mp_layer_owner(L->bounds, L->S, c->P, L->sched.place, i) !=
                             mp_layer_owner(L->bounds, L->S, c->P, L->sched.place,
                                            m->layers[i].tie_src);
    struct mp_mem_query q = {.m = m, .bounds = L->bounds, .sched = &L->sched, .rank = L->rank,
                             .P = c->P, .V = c->V, .D = L->D, .mbs = c->batch / (size_t)c->M,
                             .state_slots = mp_optim_state_slots(c->optim.kind),
                             .zero = c->zero && L->replica >= 0 && L->D > 1,
                             .shared_sums = L->dp_shared,
                             .shared_handoffs = L->hand_shared,
                             .tied_elsewhere = tied_elsewhere, .recompute = rc,
                             .reuse_packed = reuse, .data_bytes = mp_data_bytes(&L->data),
                             .checkpoints = c->ckpt_dir != NULL};
    return mp_mem_predict(&q, parts);
}

/* Recomputation per stage (DESIGN.md §10) and the memory cap. A plan says which stages recompute;
 * else --recompute all or none, or auto: a rank whose predicted peak exceeds the cap recomputes its
 * stages. A layout still above the cap on any rank does not start (exit 2), rather than being
 * killed by the kernel later: this runs before the stage allocates anything (a 300 M-parameter
 * model's parameters and gradients alone took a refused rank to 2.3 GiB when it ran after).
 * Recomputation changes no bits, so ranks decide it alone; *recompute gets the per-chunk flags
 * for mp__train_apply_recompute (free it). */
int mp__train_memory(struct loop *L, int **recompute, struct mp_err *err)
{
    const struct mp_train_cfg *c = L->cfg;
    int *rc = calloc((size_t)L->S, sizeof(int));
    *recompute = NULL;
    if (!rc)
        return MP_FAIL(err, NOMEM, "out of memory");
    for (int v = 0; v < L->S; v++)
        rc[v] = c->recompute_stages ? c->recompute_stages[v] : c->recompute == 2;
    double pred = predict_memory(L, rc, 0, &L->mem_pred);
    double cap = (double)c->mem_cap;
    int auto_on = 0;
    if (cap > 0 && pred > cap && c->recompute == 1 && !c->recompute_stages) {
        for (int k = 0; k < c->V; k++)
            rc[mp_vstage_of(L->sched.place, L->rank, k, c->P)] = 1;
        pred = predict_memory(L, rc, 0, &L->mem_pred);
        auto_on = 1;
    }
    /* The packed-weight pool where it fits (mp_stage_mem.h) and the plan did not drop it: a rank
     * decides it alone, as it changes no bits. Emulated replicas run all M micro-batches here,
     * real ones Mr each. */
    L->reuse_room = 0;
    int dropped = 0; /* a plan's cap left this rank no room for it */
    for (int k = 0; c->pool_dropped_stages && k < c->V; k++)
        dropped |= c->pool_dropped_stages[mp_vstage_of(L->sched.place, L->rank, k, c->P)];
    if (!dropped && mp_mem_reuse_worth(L->replica >= 0 ? L->Mr : c->M)) {
        struct mp_mem_parts with;
        double pred_with = predict_memory(L, rc, 1, &with);
        if (with.packed > 0 && (cap <= 0 || pred_with <= cap)) {
            pred = pred_with, L->mem_pred = with;
            L->reuse_room = (size_t)with.packed;
        }
    }
    *recompute = rc;
    /* Each rank's prediction and its own cap (the default is its host's memory over its ranks,
     * which differs between hosts), gathered: every rank then judges every rank against that
     * rank's cap, and all refuse alike, so the refusal is shared (mp_err_mark_shared). */
    double mine[2] = {pred, cap};
    double *all = calloc(2 * (size_t)L->wsize, sizeof *all);
    if (!all)
        return MP_FAIL(err, NOMEM, "out of memory");
    if (L->wsize > 1 &&
        mp_xport_allgather(L->x, mine, all, sizeof mine, "the predicted memory", err)) {
        free(all);
        return -1;
    }
    if (L->wsize == 1)
        all[0] = pred, all[1] = cap;
    for (int r = 0; r < L->wsize; r++) {
        double need = all[2 * r], cap_r = all[2 * r + 1];
        if (cap_r > 0 && need > cap_r) {
            /* MiB to a tenth, and the cap to give rounded up: 92 723 254 bytes said "would need
             * 88 MiB, over --memory-per-rank 88 MiB ... a cap of at least 88 MiB", which does
             * not fit. */
            char b[32];
            MP_FAIL(err, USAGE, "rank %d would need %.1f MiB, over --memory-per-rank %s%s%s%s: "
                    "use more stages (mpipe plan --stages auto --memory-per-rank ... finds the "
                    "fewest that fit)%s, or a cap of at least %.0fM",
                    r, need / 1048576.0, mp_err_size(cap_r, b, sizeof b),
                    c->mem_cap_from ? " (the cap " : "", c->mem_cap_from ? c->mem_cap_from : "",
                    c->mem_cap_from ? " was made under; --memory-per-rank overrides it)" : "",
                    auto_on || c->recompute == 2 ? "" : ", --recompute all",
                    ceil(need / 1048576.0));
            free(all);
            return mp_err_mark_shared(err);
        }
    }
    free(all);
    return 0;
}

/* The recomputation mp__train_memory decided, on the stage's chunks (after mp_stage_init). */
int mp__train_apply_recompute(struct loop *L, const int *rc, struct mp_err *err)
{
    for (int k = 0; k < L->cfg->V; k++)
        if (rc[L->st.chunk[k].v] &&
            mp_stage_set_recompute(&L->st, k, mp_stage_rc_kind(&L->sched, L->rank, k), err))
            return -1;
    return 0;
}
