/* Resuming from checkpoints (mp_ckpt.h). Rank 0 lists the candidates (latest's target first, then
 * every step-N, newest first) and verifies every file's SHA-256; every rank then reads the tensors
 * of the layers it holds from whichever stage file the manifest says has them, so a checkpoint
 * written with P stages loads with any P'. The ranks agree on each candidate's verdict: damage
 * falls back to the next one, an incompatible run (model, M, batch, optimizer) stops at once. */
#include "mp_ckpt.h"

#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_output.h"
#include "mp_safetensors.h"
#include "mp_weights.h"

#define MAX_CANDIDATES 256

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int mp__ckpt_candidates(const char *dir, uint64_t *steps, int max, struct mp_err *err)
{
    char link[4200], target[256];
    unsigned long long s;
    char tail;
    int n = 0, have_latest = 0;
    snprintf(link, sizeof link, "%s/latest", dir);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len > 0) {
        target[len] = 0;
        if (sscanf(target, "step-%llu%c", &s, &tail) == 1 && n < max)
            steps[n++] = s, have_latest = 1;
    }
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : MP_FAIL(err, CKPT, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) && n < max)
        if (sscanf(e->d_name, "step-%llu%c", &s, &tail) == 1 && !(have_latest && s == steps[0]))
            steps[n++] = s;
    closedir(d);
    qsort(steps + have_latest, (size_t)(n - have_latest), sizeof *steps, cmp_desc);
    return n;
}

int mp_ckpt_check_dir(const char *dir, int resuming, struct mp_err *err)
{
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/layout.json", dir); /* a file train writes there anyway */
    if (mp__ckpt_make_dirs(dir, err) || mp_output_writable(probe, "--checkpoint", err))
        return -1;
    if (resuming)
        return 0;
    uint64_t steps[MAX_CANDIDATES];
    int n = mp__ckpt_candidates(dir, steps, MAX_CANDIDATES, err);
    if (n <= 0)
        return n < 0 ? -1 : 0;
    uint64_t newest = steps[0];
    for (int i = 1; i < n; i++)
        newest = steps[i] > newest ? steps[i] : newest;
    return MP_FAIL(err, USAGE, "--checkpoint %s holds an earlier run's checkpoints (newest "
                   "step-%llu): --resume continues that run; to start over, give another "
                   "directory or remove %s/step-* (this run's checkpoints would replace them)",
                   dir, (unsigned long long)newest, dir);
}

/* What must match for the numbers to continue exactly (MP_ERR_USAGE), and a layout that must
 * describe the model (MP_ERR_CKPT). */
static int check_compat(const struct mp_ckpt_io *io, const char *sdir,
                        const struct mp__ckpt_manifest *m, struct mp_err *err)
{
    const struct mp_train_cfg *c = io->cfg;
    const struct mp_model *model = io->st->model;
    if (strcmp(m->model_digest, model->digest))
        return MP_FAIL(err, USAGE, "%s was written for another model (digest %s; %s has %s)",
                       sdir, m->model_digest, model->path, model->digest);
    if (m->M != c->M || m->batch != c->batch)
        return MP_FAIL(err, USAGE, "%s was written with --batch %zu --micro-batches %d and this "
                       "run has --batch %zu --micro-batches %d: resuming keeps the numbers exact "
                       "only with the same batch and M, so pass those", sdir, m->batch, m->M,
                       c->batch, c->M);
    if (m->optim.kind != c->optim.kind)
        return MP_FAIL(err, USAGE, "%s holds %s optimizer state and this run uses --optimizer %s",
                       sdir, mp_optim_name(m->optim.kind), mp_optim_name(c->optim.kind));
    if (m->state_slots != io->st->state_slots || m->bounds[0] != 1 ||
        m->bounds[m->S] != model->n_layers)
        return MP_FAIL(err, CKPT, "%s/manifest.json: layout does not describe this model", sdir);
    for (int v = 0; v < m->S; v++)
        if (m->bounds[v + 1] <= m->bounds[v] || m->files[v].first_layer != m->bounds[v] ||
            m->files[v].last_layer != m->bounds[v + 1] - 1)
            return MP_FAIL(err, CKPT, "%s/manifest.json: stage %d's layers do not match the "
                           "bounds", sdir, v);
    return 0;
}

static int verify_file(const char *sdir, const struct mp__ckpt_file *f, struct mp_err *err)
{
    char path[4400], hex[65];
    uint64_t bytes = 0;
    snprintf(path, sizeof path, "%s/%s", sdir, f->name);
    if (mp__ckpt_sha256_file(path, hex, &bytes, err))
        return -1;
    if (bytes != f->bytes || strcmp(hex, f->sha256))
        return MP_FAIL(err, CKPT, "%s: SHA-256 or size differs from the manifest (the file is "
                       "damaged or incomplete)", path);
    return 0;
}

/* Copies layer i's parameters and optimizer state from file f into the arena. A tied head's copy
 * of E comes from the embed's tensors (f is then the file that holds the embed). */
static int load_layer(const struct mp_ckpt_io *io, const struct mp_st_file *f, const char *path,
                      int i, struct mp_err *err)
{
    struct mp_stage *st = io->st;
    const struct mp_layer *l = &st->model->layers[i];
    struct mp_tensor lt[MP_LAYER_MAX_TENSORS];
    int nlt = mp_layer_tensors(l, lt);
    for (int w = 0; w < nlt; w++)
        for (int s = -1; s < st->state_slots; s++) {
            int nd = lt[w].ndim;
            const int64_t *shape = lt[w].shape;
            char name[96];
            snprintf(name, sizeof name, "L%d.%.23s%s", lt[w].tied ? l->tie_src : i, lt[w].name,
                     s < 0 ? "" : mp__ckpt_slot_suffix(io->cfg->optim.kind, s));
            const struct mp_st_tensor *t = mp_st_find(f, name);
            int same = t && t->ndim == nd;
            for (int d = 0; same && d < nd; d++)
                same = t->shape[d] == shape[d];
            if (!same)
                return MP_FAIL(err, CKPT, "%s: tensor %s is %s", path, name,
                               t ? "of the wrong shape" : "missing");
            size_t o = st->layer_off[i] + lt[w].off;
            float *dst = s < 0 ? st->param + o : mp_stage_state(st, s, o);
            if (dst && mp_st_copy(f, t, dst, err)) { /* --zero 1: this replica's slice only */
                err->code = MP_ERR_CKPT; /* changed since it was verified: try an older one */
                return -1;
            }
        }
    return 0;
}

/* This rank's layers from whichever stage files hold them (each file read at most once). */
static int load_layers(const struct mp_ckpt_io *io, const char *sdir,
                       const struct mp__ckpt_manifest *m, struct mp_err *err)
{
    const struct mp_model *model = io->st->model;
    int rank = mp_xport_rank(io->x), cur = -1, rc = 0;
    struct mp_st_file f;
    char path[4400];
    memset(&f, 0, sizeof f);
    for (int i = 0; i < model->n_layers && !rc; i++) {
        const struct mp_layer *l = &model->layers[i];
        if (io->st->layer_off[i] == SIZE_MAX || !mp_layer_n_param(l))
            continue;
        int src = mp_layer_is_tied(l) ? l->tie_src : i; /* the layer whose tensors hold it */
        int v = 0;
        while (v < m->S && !(src >= m->bounds[v] && src < m->bounds[v + 1]))
            v++;
        if (v != cur) {
            mp_st_free(&f);
            cur = v;
            snprintf(path, sizeof path, "%s/%s", sdir, m->files[v].name);
            /* rank 0 verified every digest already */
            if ((rank != 0 && verify_file(sdir, &m->files[v], err)) || mp_st_open(&f, path, err)) {
                err->code = MP_ERR_CKPT;
                rc = -1;
                break;
            }
        }
        rc = load_layer(io, &f, path, i, err);
    }
    mp_st_free(&f);
    return rc;
}

static int try_load(const struct mp_ckpt_io *io, const char *sdir, struct mp__ckpt_manifest *m,
                    struct mp_err *err)
{
    if (mp__ckpt_manifest_read(sdir, m, err) || check_compat(io, sdir, m, err))
        return -1;
    for (int v = 0; mp_xport_rank(io->x) == 0 && v < m->S; v++)
        if (verify_file(sdir, &m->files[v], err))
            return -1;
    return load_layers(io, sdir, m, err);
}

/* "2 stages", or with chunks "2 ranks x 2 chunks" (zbv's 4 virtual stages on 2 ranks were said
 * as "4 stages"). */
static const char *stages_str(char *buf, size_t cap, int P, int V)
{
    if (V > 1)
        snprintf(buf, cap, "%d rank%s x %d chunks", P, P > 1 ? "s" : "", V);
    else
        snprintf(buf, cap, "%d stage%s", P, P > 1 ? "s" : "");
    return buf;
}

/* Rank 0: what differs from the checkpoint but is allowed, said once. */
static void note_differences(const struct mp_ckpt_io *io, const char *sdir,
                             const struct mp__ckpt_manifest *m)
{
    const struct mp_train_cfg *c = io->cfg;
    const struct mp_lr_cfg *a = &m->lr, *b = io->lr;
    const char *what = NULL;
    if (m->seed != c->seed || m->shuffle != c->shuffle)
        what = "--seed or --shuffle";
    else if (m->pos.dp_D >= 1 && m->pos.dp_D != (c->D > 1 ? c->D : 1))
        what = "--dp (replicas sum their own micro-batches)";
    else if (a->kind != b->kind || a->base_lr != b->base_lr || a->warmup != b->warmup ||
             (a->kind == MP_LR_COSINE && a->total_steps != b->total_steps))
        what = "LR schedule (kind, --lr, --warmup, or its length from --epochs/--max-steps)";
    else if (m->clip_norm != (double)c->clip_norm || memcmp(&m->optim, &c->optim, sizeof m->optim))
        what = "--clip-norm or optimizer settings";
    else if (m->n_train != io->n_train)
        what = "training set";
    char was[48], now[48];
    fprintf(stderr, "mpipe: resumed from %s (step %llu, epoch %d, %llu steps into it; written "
            "with %s, loaded on %s)\n", sdir, (unsigned long long)m->pos.step, m->pos.epoch + 1,
            (unsigned long long)m->pos.cursor, stages_str(was, sizeof was, m->P, m->V),
            stages_str(now, sizeof now, io->st->P, io->st->V));
    if (what)
        fprintf(stderr, "mpipe: note: this run's %s differs from the checkpoint's: it will not "
                "match an uninterrupted run\n", what);
}

/* Rank 0 lists the candidates; every rank gets the list. */
static int share_candidates(const struct mp_ckpt_io *io, uint64_t *steps, int64_t *n,
                            struct mp_err *err)
{
    int rc = 0;
    if (mp_xport_rank(io->x) == 0) {
        int k = mp__ckpt_candidates(io->cfg->ckpt_dir, steps, MAX_CANDIDATES, err);
        rc = k < 0 ? -1 : 0;
        *n = k < 0 ? 0 : k;
    }
    if (mp__ckpt_agree(io->x, rc, err))
        return -1;
    if (mp_xport_size(io->x) > 1 &&
        (mp_xport_bcast(io->x, n, sizeof *n, 0, "the checkpoint list", err) ||
         mp_xport_bcast(io->x, steps, sizeof *steps * MAX_CANDIDATES, 0, "the checkpoint list",
                        err)))
        return -1;
    return 0;
}

int mp_ckpt_resume(const struct mp_ckpt_io *io, struct mp_ckpt_pos *pos, struct mp_err *err)
{
    const char *dir = io->cfg->ckpt_dir;
    int rank = mp_xport_rank(io->x), rc = -1;
    uint64_t steps[MAX_CANDIDATES] = {0};
    int64_t n = 0;
    if (share_candidates(io, steps, &n, err))
        return -1;
    struct mp__ckpt_manifest *m = calloc(1, sizeof *m);
    if (!m)
        return MP_FAIL(err, NOMEM, "out of memory");
    char sdir[4200];
    int says = rank == 0 && !io->quiet;
    for (int64_t k = 0; k < n; k++) {
        snprintf(sdir, sizeof sdir, "%s/step-%llu", dir, (unsigned long long)steps[k]);
        rc = mp__ckpt_agree(io->x, try_load(io, sdir, m, err), err);
        if (!rc || err->code != MP_ERR_CKPT)
            break;
        if (says && k + 1 < n)
            fprintf(stderr, "mpipe: checkpoint %s is unusable: %s; falling back to %s/step-%llu\n",
                    sdir, err->msg, dir, (unsigned long long)steps[k + 1]);
        else if (says)
            fprintf(stderr, "mpipe: checkpoint %s is unusable: %s\n", sdir, err->msg);
    }
    if (!rc) {
        *pos = m->pos;
        mp__ckpt_mark(m->pos.step);
        if (says)
            note_differences(io, sdir, m);
    } else if (n == 0 || err->code == MP_ERR_CKPT) {
        rc = MP_FAIL(err, CKPT, "--resume: no valid checkpoint in %s%s", dir,
                     n ? " (every one failed its checks, see above)" : " (no step-N directory)");
    }
    if (rc && rank != 0 && err->code != MP_ERR_DEADLINE && err->code != MP_ERR_MPI)
        err->msg[0] = 0; /* rank 0 says it */
    free(m);
    return rc;
}
