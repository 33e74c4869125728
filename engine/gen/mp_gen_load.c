/* Weights for generation (mp_gen.h): from a --save-weights safetensors file, or from the newest
 * valid checkpoint of a directory. Tensors are found by global name (L{i}.{name}, a tied head's E
 * under the embed's name), so a checkpoint written with any number of stages loads. Checkpoints
 * are checked as --resume checks them (model digest, SHA-256 of every file, fallback to an older
 * step with a note on stderr), with ckpt/'s own manifest and digest readers; only parameters are
 * read, never optimizer state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_ckpt.h"
#include "mp_gen.h"
#include "mp_safetensors.h"
#include "mp_weights.h"

#define MAX_CANDIDATES 256

static void shape_str(char *buf, size_t len, int nd, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < nd && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < len)
        snprintf(buf + k, len - k, "]");
}

/* Copies layer i's tensors from f. `code` is the error for a missing or misshapen tensor: INPUT
 * for a weights file (another model), CKPT for a checkpoint (a damaged step: try an older one). */
static int copy_layer(struct mp_gen *g, const struct mp_st_file *f, const char *path, int i,
                      enum mp_status code, struct mp_err *err)
{
    const struct mp_layer *l = &g->m->layers[i];
    struct mp_tensor lt[MP_LAYER_MAX_TENSORS];
    int nlt = mp_layer_tensors(l, lt);
    for (int k = 0; k < nlt; k++) {
        char name[96], want[96], got[96];
        snprintf(name, sizeof name, "L%d.%.23s", lt[k].tied ? l->tie_src : i, lt[k].name);
        const struct mp_st_tensor *t = mp_st_find(f, name);
        int same = t && t->ndim == lt[k].ndim;
        for (int d = 0; same && d < lt[k].ndim; d++)
            same = t->shape[d] == lt[k].shape[d];
        if (!same) {
            shape_str(want, sizeof want, lt[k].ndim, lt[k].shape);
            if (!t)
                return mp_err_set(err, code, __FILE__, __LINE__,
                                  "%s: no tensor %s, which %s:%d "
                                  "(%s) needs as %s: written for another model",
                                  path, name, g->m->path, l->line, l->ops->name, want);
            shape_str(got, sizeof got, t->ndim, t->shape);
            return mp_err_set(err, code, __FILE__, __LINE__,
                              "%s: tensor %s is %s, but %s:%d (%s) "
                              "needs %s: written for another model",
                              path, name, got, g->m->path, l->line, l->ops->name, want);
        }
        if (mp_st_copy(f, t, g->param + g->off[i] + lt[k].off, err)) {
            if (code == MP_ERR_CKPT) /* changed since it was verified: try an older one */
                err->code = MP_ERR_CKPT;
            return -1;
        }
    }
    return 0;
}

struct copy_ctx {
    struct mp_gen *g;
    const char *path;
};

static int copy_all(void *ctx, const struct mp_st_file *f, struct mp_err *err)
{
    const struct copy_ctx *c = ctx;
    for (int i = 0; i < c->g->m->n_layers; i++)
        if (mp_layer_n_param(&c->g->m->layers[i]) &&
            copy_layer(c->g, f, c->path, i, MP_ERR_INPUT, err))
            return -1;
    return 0;
}

int mp_gen_load_weights(struct mp_gen *g, const char *path, struct mp_err *err)
{
    struct mp_st_file f;
    struct copy_ctx c = {g, path};
    int state = 0;
    if (mp_st_open(&f, path, err))
        return -1;
    /* What the file is first: a stage file of a checkpoint was told "written for another model"
     * by its first missing layer (or by its count of tensors, three a weight with Adam's state). */
    int rc = mp_weights_take(&f, g->m, path, "give generate the checkpoint's directory "
                             "(--checkpoint DIR)", copy_all, &c, &state, err);
    if (!rc && state)
        fprintf(stderr, "mpipe generate: note: %s is a checkpoint's stage file: its weights "
                "are used (--checkpoint DIR also checks its digests)\n", path);
    mp_st_free(&f);
    g->cached = 0;
    return rc;
}

/* One checkpoint step: manifest, model, digests, then each layer from the stage file holding it. */
static int try_step(struct mp_gen *g, const char *sdir, struct mp__ckpt_manifest *m,
                    struct mp_err *err)
{
    const struct mp_model *model = g->m;
    if (mp__ckpt_manifest_read(sdir, m, err))
        return -1;
    if (strcmp(m->model_digest, model->digest))
        return MP_FAIL(err, INPUT, "%s was written for another model (digest %s; %s has %s)", sdir,
                       m->model_digest, model->path, model->digest);
    if (m->S < 1 || m->S > 1024 || m->bounds[0] != 1 || m->bounds[m->S] != model->n_layers)
        return MP_FAIL(err, CKPT, "%s/manifest.json: layout does not describe this model", sdir);
    char path[4400], hex[65];
    for (int v = 0; v < m->S; v++) {
        uint64_t bytes = 0;
        snprintf(path, sizeof path, "%s/%s", sdir, m->files[v].name);
        if (mp__ckpt_sha256_file(path, hex, &bytes, err))
            return -1;
        if (bytes != m->files[v].bytes || strcmp(hex, m->files[v].sha256))
            return MP_FAIL(err, CKPT,
                           "%s: SHA-256 or size differs from the manifest (the file "
                           "is damaged or incomplete)",
                           path);
    }
    int rc = 0, cur = -1;
    struct mp_st_file f;
    memset(&f, 0, sizeof f);
    for (int i = 1; i < model->n_layers && !rc; i++) {
        const struct mp_layer *l = &model->layers[i];
        if (!mp_layer_n_param(l))
            continue;
        int src = mp_layer_is_tied(l) ? l->tie_src : i, v = 0;
        while (v < m->S && !(src >= m->bounds[v] && src < m->bounds[v + 1]))
            v++;
        if (v != cur) {
            mp_st_free(&f);
            cur = v;
            snprintf(path, sizeof path, "%s/%s", sdir, m->files[v].name);
            if (mp_st_open(&f, path, err)) {
                err->code = MP_ERR_CKPT;
                rc = -1;
                break;
            }
        }
        rc = copy_layer(g, &f, path, i, MP_ERR_CKPT, err);
    }
    mp_st_free(&f);
    return rc;
}

int mp_gen_load_checkpoint(struct mp_gen *g, const char *dir, uint64_t *step, struct mp_err *err)
{
    uint64_t steps[MAX_CANDIDATES];
    int n = mp__ckpt_candidates(dir, steps, MAX_CANDIDATES, err);
    if (n < 0)
        return -1;
    if (n == 0)
        return MP_FAIL(err, CKPT, "--checkpoint %s: no checkpoint there (no step-N directory)",
                       dir);
    struct mp__ckpt_manifest *m = calloc(1, sizeof *m);
    if (!m)
        return MP_FAIL(err, NOMEM, "out of memory");
    char sdir[4200];
    int rc = -1;
    for (int k = 0; k < n; k++) {
        snprintf(sdir, sizeof sdir, "%s/step-%llu", dir, (unsigned long long)steps[k]);
        rc = try_step(g, sdir, m, err);
        if (!rc || err->code != MP_ERR_CKPT)
            break;
        fprintf(stderr, "mpipe: checkpoint %s is unusable: %s%s", sdir, err->msg,
                k + 1 < n ? "; trying an older one\n" : "\n");
    }
    if (!rc)
        *step = m->pos.step;
    else if (err->code == MP_ERR_CKPT)
        rc = MP_FAIL(err, CKPT,
                     "--checkpoint %s: no valid checkpoint (every one failed its "
                     "checks, see above)",
                     dir);
    free(m);
    g->cached = 0;
    return rc;
}
