/* manifest.json of a checkpoint (mp_ckpt.h): the position, LR and optimizer configuration and
 * state, clipping, the layout it was written with and the SHA-256 of every stage file. Doubles are
 * written with 17 significant digits (jansson's default), which round-trips them exactly. The
 * reader checks every field it needs and reports a missing or mistyped one as MP_ERR_CKPT. Also the
 * file-system helpers every checkpoint writer shares (mkdir -p, directory fsync). */
#include "mp_ckpt_manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_ckpt.h"

#define MANIFEST_SUM "manifest.sha256" /* the manifest's own digest, beside it */

int mp__ckpt_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int mp__ckpt_make_dirs(const char *dir, struct mp_err *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1;; s++) {
        if (*s && *s != '/')
            continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST)
            return MP_FAIL(err, IO, "checkpoint directory %s: cannot create %s: %s", dir, p,
                           strerror(errno));
        *s = c;
        if (!c)
            break;
    }
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
        return MP_FAIL(err, IO, "checkpoint directory %s: not a directory", dir);
    return 0;
}

static json_t *lr_json(const struct mp_lr_cfg *l, const struct mp_lr_state *s)
{
    return json_pack("{s:s, s:f, s:I, s:I, s:f, s:I, s:f, s:f, s:i, s:f, s:i, s:f, "
                     "s:{s:f, s:f, s:i, s:i}}",
                     "kind", mp_lr_name(l->kind), "base_lr", l->base_lr, "warmup",
                     (json_int_t)l->warmup, "total_steps", (json_int_t)l->total_steps, "min_lr",
                     l->min_lr, "step_size", (json_int_t)l->step_size, "gamma", l->gamma,
                     "factor", l->factor, "patience", l->patience, "threshold", l->threshold,
                     "cooldown", l->cooldown, "plateau_min_lr", l->plateau_min_lr, "state",
                     "scale", s->scale, "best", s->best, "bad_epochs", s->bad_epochs,
                     "cooldown_left", s->cooldown_left);
}

static json_t *manifest_json(const struct mp__ckpt_manifest *m)
{
    const struct mp_optim_cfg *o = &m->optim;
    json_t *bounds = json_array(), *files = json_array();
    for (int v = 0; v <= m->S; v++)
        json_array_append_new(bounds, json_integer(m->bounds[v]));
    for (int v = 0; v < m->S; v++) {
        const struct mp__ckpt_file *f = &m->files[v];
        json_array_append_new(files, json_pack("{s:s, s:s, s:I, s:i, s:i, s:i}", "name", f->name,
                                               "sha256", f->sha256, "bytes", (json_int_t)f->bytes,
                                               "stage", f->v, "first_layer", f->first_layer,
                                               "last_layer", f->last_layer));
    }
    return json_pack(
        "{s:s, s:i, s:I, s:i, s:I, s:f, s:I, "
        "s:{s:I, s:i, s:s, s:s}, s:o, "
        "s:{s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:I}, s:f, "
        "s:{s:i, s:i, s:i, s:o, s:s, s:i, s:I, s:s}, s:s, s:I, s:o}",
        "format", "mpipe-checkpoint", "version", 1, "step", (json_int_t)m->pos.step, "epoch",
        m->pos.epoch, "cursor", (json_int_t)m->pos.cursor, "epoch_loss_sum", m->pos.epoch_loss,
        "epoch_steps", (json_int_t)m->pos.epoch_steps,
        "rng", "seed", (json_int_t)m->seed, "shuffle", m->shuffle, "data_order",
        "a pure function of (seed, epoch): mp_data_order", "dropout",
        "a pure function of (seed, step, micro-batch)",
        "lr", lr_json(&m->lr, &m->pos.lr_state),
        "optimizer", "kind", mp_optim_name(o->kind), "momentum", (double)o->momentum,
        "weight_decay", (double)o->weight_decay, "beta1", (double)o->beta1, "beta2",
        (double)o->beta2, "eps", (double)o->eps, "alpha", (double)o->alpha, "state_slots",
        m->state_slots, "step", (json_int_t)m->pos.step, "clip_norm", m->clip_norm,
        "layout", "P", m->P, "V", m->V, "S", m->S, "bounds", bounds, "schedule", m->schedule,
        "M", m->M, "batch", (json_int_t)m->batch, "model_digest", m->model_digest,
        "data", m->data_src, "n_train", (json_int_t)m->n_train, "files", files);
}

/* Optional "data_parallel": {"perf_score": [...], "shards": [...]} (older manifests lack it). */
static void dp_json(json_t *root, const struct mp_ckpt_pos *p)
{
    if (!root || p->dp_D < 1 || p->dp_D > MP_DP_MAX)
        return;
    json_t *score = json_array(), *shards = json_array();
    for (int r = 0; r < p->dp_D; r++) {
        json_array_append_new(score, json_real(p->dp_score[r]));
        json_array_append_new(shards, json_integer(p->dp_n_mb[r]));
    }
    json_object_set_new(root, "data_parallel",
                        json_pack("{s:o, s:o}", "perf_score", score, "shards", shards));
}

static void dp_read(json_t *root, struct mp_ckpt_pos *p)
{
    json_t *dp = json_object_get(root, "data_parallel");
    json_t *score = json_object_get(dp, "perf_score"), *shards = json_object_get(dp, "shards");
    size_t n = json_array_size(score);
    if (!n || n > MP_DP_MAX || json_array_size(shards) != n)
        return;
    for (size_t r = 0; r < n; r++) {
        p->dp_score[r] = json_number_value(json_array_get(score, r));
        p->dp_n_mb[r] = (int)json_integer_value(json_array_get(shards, r));
    }
    p->dp_D = (int)n;
}

/* text and a newline into DIR/NAME, through DIR/.NAME.tmp fsynced and renamed over it: a reader
 * sees the old file or the whole new one. */
static int text_write(const char *dir, const char *name, const char *text, struct mp_err *err)
{
    char path[4200], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    size_t len = strlen(text), done = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644), rc = fd < 0 ? -1 : 0;
    while (!rc && done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        rc = w <= 0 ? -1 : 0;
        done += w > 0 ? (size_t)w : 0;
    }
    if (!rc && (write(fd, "\n", 1) != 1 || fsync(fd)))
        rc = -1;
    int saved = errno;
    if (fd >= 0 && close(fd) && !rc)
        rc = -1, saved = errno;
    if (!rc && rename(tmp, path))
        rc = -1, saved = errno;
    if (rc) {
        unlink(tmp);
        return MP_FAIL(err, IO, "%s: cannot write: %s", path, strerror(saved));
    }
    return 0;
}

/* root as indented JSON into DIR/NAME (text_write). Takes the reference to root. */
static int json_write(const char *dir, const char *name, json_t *root, struct mp_err *err)
{
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!text)
        return MP_FAIL(err, NOMEM, "%s/%s: cannot build the JSON", dir, name);
    int rc = text_write(dir, name, text, err);
    free(text);
    return rc;
}

int mp__ckpt_manifest_write(const char *dir, const struct mp__ckpt_manifest *m, struct mp_err *err)
{
    json_t *root = manifest_json(m);
    dp_json(root, &m->pos);
    if (json_write(dir, "manifest.json", root, err))
        return -1;
    /* The manifest's own digest, in sha256sum's format (`sha256sum -c manifest.sha256` checks it
     * by hand): the manifest holds every stage file's digest but nothing held its own, and a bit
     * flipped in it went unnoticed when it landed in a value the reader accepts (1 of 200 faults
     * of a chaos campaign: the run resumed from the damaged step; a flip in the LR schedule's
     * state would have resumed with another learning rate). */
    char path[4200], hex[65], line[128];
    uint64_t bytes;
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    if (mp__ckpt_sha256_file(path, hex, &bytes, err))
        return -1;
    snprintf(line, sizeof line, "%s  manifest.json", hex);
    return text_write(dir, MANIFEST_SUM, line, err);
}

/* The manifest at path (DIR/manifest.json) against its digest file: 0 when they match or the
 * digest file is absent (a checkpoint written before there was one), else MP_ERR_CKPT naming the
 * damage. */
static int manifest_verify(const char *dir, const char *path, struct mp_err *err)
{
    char sum[4200], hex[65], want[80] = "", name[64] = "";
    uint64_t bytes;
    snprintf(sum, sizeof sum, "%s/%s", dir, MANIFEST_SUM);
    FILE *f = fopen(sum, "r");
    if (!f && errno == ENOENT)
        return 0;
    if (!f)
        return MP_FAIL(err, CKPT, "%s: cannot read: %s", sum, strerror(errno));
    int fields = fscanf(f, "%79s %63s", want, name);
    fclose(f);
    if (fields != 2 || strlen(want) != 64 || strcmp(name, "manifest.json"))
        return MP_FAIL(err, CKPT, "%s: not a sha256sum line for manifest.json (damaged)", sum);
    if (mp__ckpt_sha256_file(path, hex, &bytes, err))
        return -1;
    if (strcmp(hex, want))
        return MP_FAIL(err, CKPT, "%s: SHA-256 %.12s... is not the %.12s... that %s records "
                       "(the manifest is damaged)", path, hex, want, MANIFEST_SUM);
    return 0;
}

int mp_ckpt_write_layout(const struct mp_train_cfg *c, struct mp_err *err)
{
    if (!c->ckpt_dir)
        return 0;
    if (mp__ckpt_make_dirs(c->ckpt_dir, err))
        return -1;
    json_t *root = json_pack("{s:s, s:i, s:I, s:i, s:i, s:i, s:s, s:s}", "format",
                             "mpipe-layout", "M", c->M, "batch", (json_int_t)c->batch, "P", c->P,
                             "V", c->V, "D", c->D > 1 ? c->D : 1, "schedule",
                             mp_sched_name(c->schedule), "optimizer",
                             mp_optim_name(c->optim.kind));
    return json_write(c->ckpt_dir, "layout.json", root, err);
}

/* ---- reader ---- */

static int lr_read(json_t *j, struct mp_lr_cfg *l, struct mp_lr_state *s)
{
    const char *kind;
    json_int_t warmup, total, step_size;
    enum mp_lr_kind k;
    if (json_unpack(j, "{s:s, s:F, s:I, s:I, s:F, s:I, s:F, s:F, s:i, s:F, s:i, s:F, "
                    "s:{s:F, s:F, s:i, s:i}}",
                    "kind", &kind, "base_lr", &l->base_lr, "warmup", &warmup, "total_steps",
                    &total, "min_lr", &l->min_lr, "step_size", &step_size, "gamma", &l->gamma,
                    "factor", &l->factor, "patience", &l->patience, "threshold", &l->threshold,
                    "cooldown", &l->cooldown, "plateau_min_lr", &l->plateau_min_lr, "state",
                    "scale", &s->scale, "best", &s->best, "bad_epochs", &s->bad_epochs,
                    "cooldown_left", &s->cooldown_left) ||
        mp_lr_parse(kind, &k))
        return -1;
    l->kind = k;
    l->warmup = (uint64_t)warmup, l->total_steps = (uint64_t)total;
    l->step_size = (uint64_t)step_size;
    return 0;
}

static int optim_read(json_t *j, struct mp__ckpt_manifest *m)
{
    const char *kind;
    double mom, wd, b1, b2, eps, alpha;
    enum mp_optim_kind k;
    if (json_unpack(j, "{s:s, s:F, s:F, s:F, s:F, s:F, s:F, s:i}", "kind", &kind, "momentum",
                    &mom, "weight_decay", &wd, "beta1", &b1, "beta2", &b2, "eps", &eps, "alpha",
                    &alpha, "state_slots", &m->state_slots) ||
        mp_optim_parse(kind, &k))
        return -1;
    m->optim.kind = k;
    m->optim.momentum = (float)mom, m->optim.weight_decay = (float)wd;
    m->optim.beta1 = (float)b1, m->optim.beta2 = (float)b2;
    m->optim.eps = (float)eps, m->optim.alpha = (float)alpha;
    return 0;
}

static int layout_read(json_t *j, struct mp__ckpt_manifest *m)
{
    json_t *bounds;
    const char *sched, *digest;
    json_int_t batch;
    if (json_unpack(j, "{s:i, s:i, s:i, s:o, s:s, s:i, s:I, s:s}", "P", &m->P, "V", &m->V, "S",
                    &m->S, "bounds", &bounds, "schedule", &sched, "M", &m->M, "batch", &batch,
                    "model_digest", &digest) ||
        m->S < 1 || m->S > 1024 || !json_is_array(bounds) ||
        json_array_size(bounds) != (size_t)m->S + 1 || batch < 1)
        return -1;
    for (int v = 0; v <= m->S; v++) {
        json_t *b = json_array_get(bounds, (size_t)v);
        if (!json_is_integer(b))
            return -1;
        m->bounds[v] = (int)json_integer_value(b);
    }
    m->batch = (size_t)batch;
    snprintf(m->schedule, sizeof m->schedule, "%s", sched);
    snprintf(m->model_digest, sizeof m->model_digest, "%s", digest);
    return 0;
}

static int files_read(json_t *files, struct mp__ckpt_manifest *m)
{
    if (!json_is_array(files) || json_array_size(files) != (size_t)m->S)
        return -1;
    for (int v = 0; v < m->S; v++) {
        struct mp__ckpt_file *f = &m->files[v];
        const char *name, *sha;
        json_int_t bytes;
        if (json_unpack(json_array_get(files, (size_t)v), "{s:s, s:s, s:I, s:i, s:i, s:i}",
                        "name", &name, "sha256", &sha, "bytes", &bytes, "stage", &f->v,
                        "first_layer", &f->first_layer, "last_layer", &f->last_layer) ||
            strlen(sha) != 64 || strchr(name, '/') || strlen(name) >= sizeof f->name ||
            bytes < 0)
            return -1;
        snprintf(f->name, sizeof f->name, "%s", name);
        snprintf(f->sha256, sizeof f->sha256, "%s", sha);
        f->bytes = (uint64_t)bytes;
    }
    return 0;
}

int mp__ckpt_manifest_read(const char *dir, struct mp__ckpt_manifest *m, struct mp_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    if (manifest_verify(dir, path, err))
        return -1;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *rng, *lr, *opt, *layout, *files;
    if (!root)
        return MP_FAIL(err, CKPT, "%s:%d: %s", path, je.line, je.text);
    memset(m, 0, sizeof *m);
    json_int_t step, cursor, esteps, seed, n_train;
    const char *data, *format;
    int rc = json_unpack(root, "{s:s, s:I, s:i, s:I, s:F, s:I, s:o, s:o, s:o, s:F, s:o, s:s, "
                         "s:I, s:o}", "format", &format, "step", &step, "epoch", &m->pos.epoch,
                         "cursor", &cursor, "epoch_loss_sum", &m->pos.epoch_loss, "epoch_steps",
                         &esteps, "rng", &rng, "lr", &lr, "optimizer", &opt, "clip_norm",
                         &m->clip_norm, "layout", &layout, "data", &data, "n_train", &n_train,
                         "files", &files);
    if (!rc)
        rc = strcmp(format, "mpipe-checkpoint") || step < 0 || cursor < 0 || esteps < 0 ||
             m->pos.epoch < 0 ? -1 : 0;
    if (!rc)
        rc = json_unpack(rng, "{s:I, s:i}", "seed", &seed, "shuffle", &m->shuffle);
    if (!rc)
        rc = lr_read(lr, &m->lr, &m->pos.lr_state);
    if (!rc)
        rc = optim_read(opt, m);
    if (!rc)
        rc = layout_read(layout, m);
    if (!rc)
        rc = files_read(files, m);
    if (!rc)
        dp_read(root, &m->pos);
    if (!rc) {
        m->pos.step = (uint64_t)step, m->pos.cursor = (uint64_t)cursor;
        m->pos.epoch_steps = (uint64_t)esteps;
        m->seed = (uint64_t)seed, m->n_train = (size_t)n_train;
        snprintf(m->data_src, sizeof m->data_src, "%s", data);
    }
    json_decref(root);
    if (rc)
        return MP_FAIL(err, CKPT, "%s: a field is missing or has the wrong type", path);
    return 0;
}
