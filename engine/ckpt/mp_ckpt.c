/* Writing checkpoints (mp_ckpt.h). A save builds DIR/.step-N.tmp/ (each rank its stage files, rank
 * 0 the manifest last), fsyncs it, renames it to DIR/step-N, then points DIR/latest at it and
 * prunes: until that rename nothing that a resume could load has changed, so a crash or a full
 * disk at any moment leaves the previous checkpoint as it was. Also the helpers shared with
 * loading: digests, agreement across ranks, fault injection. */
#include "mp_ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_safetensors.h"
#include "mp_weights.h"

const char *mp__ckpt_slot_suffix(enum mp_optim_kind kind, int slot)
{
    /* rmsprop's only slot is a second moment; momentum's and adam's first slot a first moment. */
    if (kind == MP_OPT_RMSPROP)
        return ".v";
    return slot == 0 ? ".m" : ".v";
}

int mp__ckpt_fault(const char *what, uint64_t count)
{
    const char *f = getenv("MPIPE_FAULT_INJECT");
    size_t n = strlen(what);
    if (!f || strncmp(f, what, n) || (f[n] && f[n] != ':'))
        return 0;
    unsigned long long at = f[n] == ':' ? strtoull(f + n + 1, NULL, 10) : 1;
    return count == at;
}

void mp__ckpt_hold(uint64_t step, uint64_t start_step, int rank)
{
    const char *f = getenv("MPIPE_FAULT_INJECT");
    unsigned long long at;
    int who;
    char end;
    if (!f || sscanf(f, "hold:%llu:%d%c", &at, &who, &end) != 2)
        return;
    if (start_step != 0 || step != at || rank != who)
        return;
    for (;;)
        pause(); /* the SIGTERM hook returns here; mpirun's SIGKILL or the test's ends the rank */
}

int mp__ckpt_sha256_file(const char *path, char hex[65], uint64_t *bytes, struct mp_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return MP_FAIL(err, CKPT, "%s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -1;
    unsigned char buf[1 << 16], md[32];
    unsigned int md_len = 0;
    uint64_t total = 0;
    size_t k;
    while (!rc && (k = fread(buf, 1, sizeof buf, fp)) > 0) {
        total += k;
        rc = EVP_DigestUpdate(ctx, buf, k) == 1 ? 0 : -1;
    }
    if (!rc && ferror(fp))
        rc = -1;
    if (!rc)
        rc = EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 32 ? 0 : -1;
    EVP_MD_CTX_free(ctx);
    fclose(fp);
    if (rc)
        return MP_FAIL(err, CKPT, "%s: cannot read it to compute its SHA-256", path);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    *bytes = total;
    return 0;
}

struct verdict {
    int32_t code;
    char msg[512];
};

int mp__ckpt_agree(struct mp_xport *x, int rc, struct mp_err *err)
{
    int P = mp_xport_size(x);
    struct verdict mine = {.code = rc ? (int32_t)err->code : 0}, *all;
    if (P == 1)
        return rc;
    if (rc)
        snprintf(mine.msg, sizeof mine.msg, "%s", err->msg);
    if (!(all = calloc((size_t)P, sizeof *all)))
        return MP_FAIL(err, NOMEM, "out of memory");
    int crc = mp_xport_allgather(x, &mine, all, sizeof mine, "checkpoint agreement", err);
    for (int r = 0; !crc && r < P; r++) {
        if (!all[r].code)
            continue;
        crc = mp_err_set(err, (enum mp_status)all[r].code, __FILE__, __LINE__, "%s", all[r].msg);
        break;
    }
    free(all);
    return crc;
}

/* Removes a directory of plain files (a step directory never holds subdirectories). */
static void remove_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(path);
}

/* Chunk c's tensors as its stage file names them, E stored once: parameters and each optimizer
 * slot. where[k] = the slot (-1: the parameter) and arena offset of t[k]; a state tensor this
 * replica does not hold (--zero 1) has no data (mp_ckpt_io's fetch_state gives it). */
struct placed {
    int slot;
    size_t off;
};

static size_t chunk_tensors(const struct mp_ckpt_io *io, int c, struct mp_st_tensor *t,
                            struct placed *where)
{
    const struct mp_stage *st = io->st;
    const struct mp_model *m = st->model;
    const struct mp_chunk *ch = &st->chunk[c];
    size_t n = 0;
    for (int i = ch->first; i <= ch->last; i++) {
        const struct mp_layer *l = &m->layers[i];
        struct mp_tensor lt[MP_LAYER_MAX_TENSORS];
        int nlt = mp_layer_tensors(l, lt);
        for (int w = 0; w < nlt; w++)
            for (int s = -1; s < st->state_slots && !lt[w].tied; s++) { /* E is stored once */
                struct mp_st_tensor *tt = &t[n];
                memset(tt, 0, sizeof *tt);
                tt->ndim = lt[w].ndim;
                memcpy(tt->shape, lt[w].shape, sizeof lt[w].shape);
                size_t o = st->layer_off[i] + lt[w].off;
                snprintf(tt->name, sizeof tt->name, "L%d.%.23s%s", i, lt[w].name,
                         s < 0 ? "" : mp__ckpt_slot_suffix(io->cfg->optim.kind, s));
                tt->data = s < 0 ? st->param + o : mp_stage_state(st, s, o);
                tt->numel = lt[w].numel;
                where[n++] = (struct placed){.slot = s, .off = o};
            }
    }
    return n;
}

static size_t max_tensors(const struct mp_stage *st)
{
    return (size_t)st->model->n_layers * MP_LAYER_MAX_TENSORS * (size_t)(1 + st->state_slots) + 1;
}

struct fill_ctx {
    const struct mp_ckpt_io *io;
    const struct mp_st_tensor *t;
    const struct placed *where;
};

static int fill_state(void *ctx, const struct mp_st_tensor *t, float *dst, struct mp_err *err)
{
    const struct fill_ctx *f = ctx;
    const struct placed *w = &f->where[t - f->t];
    return f->io->fetch_state(f->io->fetch_ctx, w->off, t->numel, dst, err);
}

int mp_ckpt_send_state(const struct mp_ckpt_io *io, mp_st_send_fn send, void *ctx,
                       struct mp_err *err)
{
    const struct mp_stage *st = io->st;
    size_t cap = max_tensors(st);
    struct mp_st_tensor *t = calloc(cap, sizeof *t);
    struct placed *where = calloc(cap, sizeof *where);
    int rc = t && where ? 0 : MP_FAIL(err, NOMEM, "out of memory");
    for (int c = 0; c < st->V && !rc; c++) {
        size_t n = chunk_tensors(io, c, t, where);
        for (size_t k = 0; k < n; k++) /* replica 0 writes the parameters itself */
            if (where[k].slot < 0)
                t[k].data = NULL;
        rc = mp_st_send_in_order(t, n, send, ctx, err);
    }
    free(t), free(where);
    return rc;
}

/* This rank's stage files, one per chunk, with their digests in rec[chunk]. */
static int write_stages(const struct mp_ckpt_io *io, const char *tmp, uint64_t n_save,
                        struct mp__ckpt_file *rec, struct mp_err *err)
{
    const struct mp_stage *st = io->st;
    size_t cap = max_tensors(st);
    struct mp_st_tensor *t = calloc(cap, sizeof *t);
    struct placed *where = calloc(cap, sizeof *where);
    if (!t || !where) {
        free(t), free(where);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    int rc = 0;
    for (int c = 0; c < st->V && !rc; c++) {
        const struct mp_chunk *ch = &st->chunk[c];
        size_t n = chunk_tensors(io, c, t, where);
        struct fill_ctx fc = {.io = io, .t = t, .where = where};
        struct mp__ckpt_file *f = &rec[c];
        f->v = ch->v, f->first_layer = ch->first, f->last_layer = ch->last;
        snprintf(f->name, sizeof f->name, "stage-%d.safetensors", ch->v);
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", tmp, f->name);
        if (mp__ckpt_fault("ckpt_write", n_save) && mp_xport_rank(io->x) == st->P - 1) {
            FILE *fp = fopen(path, "wb"); /* a torn file, as a full disk leaves it */
            if (fp)
                fputs("partial", fp), fclose(fp);
            rc = MP_FAIL(err, IO, "%s: write failed: No space left on device "
                         "(injected by MPIPE_FAULT_INJECT)", path);
        } else if (!(rc = mp_st_write_filled(path, t, n, io->fetch_state ? fill_state : NULL,
                                             &fc, err))) {
            rc = mp__ckpt_sha256_file(path, f->sha256, &f->bytes, err);
        }
    }
    free(t), free(where);
    return rc;
}

/* Rank 0: the manifest from the run's configuration, the position and every rank's files. */
static void fill_manifest(const struct mp_ckpt_io *io, const struct mp_ckpt_pos *pos,
                          const struct mp__ckpt_file *all, struct mp__ckpt_manifest *m)
{
    const struct mp_train_cfg *c = io->cfg;
    const struct mp_stage *st = io->st;
    m->pos = *pos;
    m->P = st->P, m->V = st->V, m->S = st->S, m->M = c->M;
    m->batch = c->batch, m->n_train = io->n_train;
    memcpy(m->bounds, io->bounds, sizeof(int) * (size_t)(st->S + 1));
    snprintf(m->schedule, sizeof m->schedule, "%s", mp_sched_name(c->schedule));
    snprintf(m->model_digest, sizeof m->model_digest, "%s", st->model->digest);
    snprintf(m->data_src, sizeof m->data_src, "%s", c->data_src ? c->data_src : "");
    m->optim = c->optim;
    m->state_slots = st->state_slots;
    m->lr = *io->lr;
    m->clip_norm = c->clip_norm;
    m->seed = c->seed;
    m->shuffle = c->shuffle;
    for (int r = 0; r < st->P; r++)
        for (int k = 0; k < st->V; k++) {
            const struct mp__ckpt_file *f = &all[r * st->V + k];
            m->files[f->v] = *f; /* listed by virtual stage */
        }
}

static int step_cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The step this process last wrote or resumed from: step directories between it and the one
 * being written, or beyond that, were not written by this run's timeline (a future that a
 * fallback abandoned, or an older run's) and are removed. */
static uint64_t prev_step;

void mp__ckpt_mark(uint64_t step)
{
    prev_step = step;
}

/* Keeps the newest `keep` step directories of this run's timeline (see prev_step). */
static void prune(const char *dir, uint64_t now, int keep)
{
    uint64_t steps[4096];
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    unsigned long long s;
    char tail;
    while (d && (e = readdir(d)) && n < 4096)
        if (sscanf(e->d_name, "step-%llu%c", &s, &tail) == 1)
            steps[n++] = s;
    if (d)
        closedir(d);
    qsort(steps, (size_t)n, sizeof steps[0], step_cmp_desc);
    char p[4200];
    for (int i = 0, kept = 0; i < n; i++) {
        int stale = steps[i] > now || (steps[i] > prev_step && steps[i] < now);
        if (!stale && kept < keep) {
            kept += 1;
            continue;
        }
        snprintf(p, sizeof p, "%s/step-%llu", dir, (unsigned long long)steps[i]);
        remove_dir(p);
    }
    mp__ckpt_fsync_dir(dir);
}

/* Rank 0, after every stage file is in tmp: manifest, rename into place, `latest`, pruning. */
static int publish(const struct mp_ckpt_io *io, const struct mp__ckpt_manifest *m,
                   const char *tmp, struct mp_err *err)
{
    const char *dir = io->cfg->ckpt_dir;
    unsigned long long step = (unsigned long long)m->pos.step;
    char final[4200], old[4200], link_tmp[4200], link[4200], target[64];
    if (mp__ckpt_manifest_write(tmp, m, err))
        return -1;
    if (mp__ckpt_fsync_dir(tmp))
        return MP_FAIL(err, IO, "%s: fsync: %s", tmp, strerror(errno));
    snprintf(final, sizeof final, "%s/step-%llu", dir, step);
    snprintf(old, sizeof old, "%s/.step-%llu.old", dir, step);
    remove_dir(old);
    /* A step directory left by a run that fell back is replaced: moved aside, then removed. */
    if (rename(final, old) && errno != ENOENT)
        return MP_FAIL(err, IO, "%s: cannot move the old one aside: %s", final, strerror(errno));
    if (rename(tmp, final))
        return MP_FAIL(err, IO, "%s: cannot rename %s into place: %s", final, tmp,
                       strerror(errno));
    remove_dir(old);
    snprintf(target, sizeof target, "step-%llu", step);
    snprintf(link, sizeof link, "%s/latest", dir);
    snprintf(link_tmp, sizeof link_tmp, "%s/.latest.tmp", dir);
    unlink(link_tmp);
    if (symlink(target, link_tmp) || rename(link_tmp, link))
        return MP_FAIL(err, IO, "%s: cannot point it at %s: %s", link, target, strerror(errno));
    mp__ckpt_fsync_dir(dir);
    prune(dir, m->pos.step, io->cfg->ckpt_keep > 0 ? io->cfg->ckpt_keep : 2);
    mp__ckpt_mark(m->pos.step);
    return 0;
}

/* Rank 0: a fresh temporary directory for this step. */
static int make_tmp(const char *dir, const char *tmp, struct mp_err *err)
{
    if (mp__ckpt_make_dirs(dir, err))
        return -1;
    remove_dir(tmp);
    if (mkdir(tmp, 0755))
        return MP_FAIL(err, IO, "checkpoint directory %s: cannot create %s: %s", dir, tmp,
                       strerror(errno));
    return 0;
}

int mp_ckpt_save(const struct mp_ckpt_io *io, const struct mp_ckpt_pos *pos, struct mp_err *err)
{
    static uint64_t n_saves; /* for fault injection: the how-many-th save of this process */
    const char *dir = io->cfg->ckpt_dir;
    struct mp_xport *x = io->x;
    int rank = mp_xport_rank(x), P = io->st->P, V = io->st->V;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/.step-%llu.tmp", dir, (unsigned long long)pos->step);
    n_saves++;
    if (io->st->S > 1024)
        return MP_FAIL(err, USAGE, "checkpoints hold at most 1024 virtual stages");
    if (mp__ckpt_agree(x, rank == 0 ? make_tmp(dir, tmp, err) : 0, err))
        return -1;
    struct mp__ckpt_file *mine = calloc((size_t)V, sizeof *mine);
    struct mp__ckpt_file *all = calloc((size_t)(P * V), sizeof *all);
    struct mp__ckpt_manifest *m = calloc(1, sizeof *m);
    int rc = mine && all && m ? 0 : MP_FAIL(err, NOMEM, "out of memory");
    if (!rc)
        rc = write_stages(io, tmp, n_saves, mine, err);
    if ((rc = mp__ckpt_agree(x, rc, err)))
        goto out;
    if (P == 1)
        memcpy(all, mine, sizeof *mine * (size_t)V);
    else if ((rc = mp_xport_allgather(x, mine, all, sizeof *mine * (size_t)V,
                                      "checkpoint digests", err)))
        goto out;
    if (rank == 0) {
        fill_manifest(io, pos, all, m);
        rc = publish(io, m, tmp, err);
    }
    rc = mp__ckpt_agree(x, rc, err);
out:
    if (rc && rank == 0)
        remove_dir(tmp);
    if (rc && err->msg[0] && err->code != MP_ERR_DEADLINE && err->code != MP_ERR_MPI) {
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof err->msg - len, " (checkpoint of step %llu not written; "
                 "earlier checkpoints in %s are untouched)", (unsigned long long)pos->step, dir);
    }
    if (rc && rank != 0 && err->code != MP_ERR_DEADLINE && err->code != MP_ERR_MPI)
        err->msg[0] = 0; /* rank 0 says it */
    free(mine);
    free(all);
    free(m);
    return rc;
}
