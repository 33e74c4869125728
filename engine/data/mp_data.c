/* Training data sources (DESIGN.md §4 --data): the Debian Fashion-MNIST files, a directory of
 * MNIST-named IDX files, or deterministic synthetic data; plus the per-epoch sample order and the
 * gather of a batch. Real data is checked against the model (sample length, class count) and
 * turned into floats x/255 once at load, so the training loop only copies. */
#define _DEFAULT_SOURCE /* access: POSIX, not C11 */
#include "mp_data.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_mem.h"
#include "mp_rng.h"

static const char *const file_names[2][2] = {
    {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
    {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
};

/* DIR/NAME.gz if it exists, else DIR/NAME (the originals ship gzip'd; unpacked copies are
 * common). */
static void pick_path(char *out, size_t cap, const char *dir, const char *name)
{
    snprintf(out, cap, "%s/%s.gz", dir, name);
    if (access(out, F_OK) != 0)
        snprintf(out, cap, "%s/%s", dir, name);
}

static int alloc_set(struct mp_dataset *ds, size_t n, size_t sample_len, struct mp_err *err)
{
    ds->n = n;
    ds->sample_len = sample_len;
    ds->label_len = 1;
    if (sample_len && n > SIZE_MAX / sizeof(float) / sample_len)
        return MP_FAIL(err, NOMEM, "data set of %zu x %zu floats is too large", n, sample_len);
    /* in huge pages (mp_mem_alloc), so the gather's scattered rows do not each miss the TLB; the
     * planner's calibration times its gather on memory from there too */
    ds->x = mp_mem_alloc(n * sample_len * sizeof(float) + 1);
    ds->y = malloc(n * sizeof(int32_t) + 1);
    if (!ds->x || !ds->y)
        return MP_FAIL(err, NOMEM, "cannot allocate %zu samples of %zu floats", n, sample_len);
    return 0;
}

/* An images file placed by load_split: its checks against the labels and the model, then where its
 * bytes go. */
struct placing {
    struct mp_dataset *ds;
    const struct mp_idx *lb;
    const char *im_path, *lb_path;
    size_t sample_len;
};

/* The images' bytes go into the last quarter of the floats they become, which convert_images
 * then fills from the front: the bytes (47 MB for Fashion-MNIST's training split) were held
 * beside the floats, which for a model as small as tiny_mlp.mp made loading the process's peak,
 * 3-4 MB over its prediction. */
static uint8_t *place_images(void *ctx, const struct mp_idx *im, struct mp_err *err)
{
    struct placing *p = ctx;
    if (im->ndim < 2) {
        MP_FAIL(err, INPUT, "%s: byte 3: images need at least 2 dims, found %d", p->im_path,
                im->ndim);
        return NULL;
    }
    size_t per = im->len / im->dims[0];
    if (per != p->sample_len) {
        MP_FAIL(err, INPUT, "%s: byte 8: a sample has %zu values but the model's input takes %zu",
                p->im_path, per, p->sample_len);
        return NULL;
    }
    if (p->lb->dims[0] != im->dims[0]) {
        MP_FAIL(err, INPUT, "%s: byte 4: %" PRIu32 " labels for %" PRIu32 " images in %s",
                p->lb_path, p->lb->dims[0], im->dims[0], p->im_path);
        return NULL;
    }
    if (alloc_set(p->ds, im->dims[0], p->sample_len, err))
        return NULL;
    return (uint8_t *)p->ds->x + 3 * im->len;
}

/* The placed bytes into floats, in place, front to back: float i covers bytes 4i..4i+3, below
 * byte 3n + i + 1 where the bytes still to read begin, so only bytes already read are written
 * over; each block is copied out first, which also lets the division vectorize. */
static void convert_images(struct mp_dataset *ds, size_t n)
{
    const uint8_t *raw = (const uint8_t *)ds->x + 3 * n;
    uint8_t block[4096];
    for (size_t i = 0; i < n; i += sizeof block) {
        size_t k = n - i < sizeof block ? n - i : sizeof block;
        memcpy(block, raw + i, k);
        for (size_t j = 0; j < k; j++)
            ds->x[i + j] = (float)block[j] / 255.0f; /* as torchvision's ToTensor */
    }
}

static int check_labels(const struct mp_idx *lb, const char *lb_path, size_t n_classes,
                        struct mp_err *err)
{
    if (lb->ndim != 1)
        return MP_FAIL(err, INPUT, "%s: byte 3: labels need 1 dim, found %d", lb_path, lb->ndim);
    for (size_t i = 0; i < lb->len; i++) {
        if (lb->data[i] >= n_classes)
            return MP_FAIL(err, INPUT, "%s: byte %zu: label %u but the model has %zu classes",
                           lb_path, 8 + i, lb->data[i], n_classes);
    }
    return 0;
}

/* The labels first (small), then the images straight into the set's floats. */
static int load_split(struct mp_dataset *ds, const char *dir, int split, size_t sample_len,
                      size_t n_classes, struct mp_err *err)
{
    char im_path[4096], lb_path[4096];
    struct mp_idx im, lb;
    pick_path(im_path, sizeof im_path, dir, file_names[split][0]);
    pick_path(lb_path, sizeof lb_path, dir, file_names[split][1]);
    if (mp_idx_read(&lb, lb_path, err))
        return -1;
    struct placing p = {.ds = ds, .lb = &lb, .im_path = im_path, .lb_path = lb_path,
                        .sample_len = sample_len};
    int rc = check_labels(&lb, lb_path, n_classes, err);
    if (!rc)
        rc = mp_idx_read_placed(&im, im_path, place_images, &p, err);
    if (!rc) {
        convert_images(ds, im.len);
        for (size_t i = 0; i < ds->n; i++)
            ds->y[i] = lb.data[i];
        mp_idx_free(&im);
    }
    mp_idx_free(&lb);
    return rc;
}

/* Synthetic data that a model can learn: each class has a prototype (uniform values per feature,
 * fixed by the seed) and a sample is its class's prototype plus triangular noise of half-width
 * 0.5, clipped to [0, 1]. Classes overlap per feature but are separable over hundreds of
 * features, so a short run's loss drops visibly, and nothing depends on files. */
static void synth_fill(struct mp_dataset *ds, const float *proto, size_t n_classes, uint64_t seed,
                       uint64_t split)
{
    struct mp_rng r;
    mp_rng_seed(&r, mp_hash4(seed, split, 0x5359u, 0));
    for (size_t i = 0; i < ds->n; i++) {
        size_t c = (size_t)mp_rng_below(&r, n_classes);
        float *x = ds->x + i * ds->sample_len;
        const float *p = proto + c * ds->sample_len;
        ds->y[i] = (int32_t)c;
        for (size_t j = 0; j < ds->sample_len; j++) {
            float v = p[j] + 0.5f * (mp_rng_uniform(&r) + mp_rng_uniform(&r) - 1.0f);
            x[j] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
    }
}

/* N training samples and max(N/4, 1) test samples (the same 4:1 spirit as MNIST's 6:1, with a
 * test set big enough to measure accuracy on small N), both fixed by the seed. */
static int load_synthetic(struct mp_data *d, const char *arg, size_t sample_len, size_t n_classes,
                          uint64_t seed, struct mp_err *err)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || n == 0 || n > UINT32_MAX || arg[0] == '-')
        return MP_FAIL(err, USAGE, "synthetic:%s: expected a sample count from 1 to %u", arg,
                       (unsigned)UINT32_MAX);
    if (n_classes == 0 || sample_len == 0)
        return MP_FAIL(err, USAGE, "synthetic data needs a model with inputs and classes");
    size_t n_test = n / 4 ? (size_t)(n / 4) : 1;
    if (alloc_set(&d->train, (size_t)n, sample_len, err) ||
        alloc_set(&d->test, n_test, sample_len, err))
        return -1;
    float *proto = malloc(n_classes * sample_len * sizeof *proto);
    if (!proto)
        return MP_FAIL(err, NOMEM, "cannot allocate %zu class prototypes", n_classes);
    struct mp_rng r;
    mp_rng_seed(&r, mp_hash4(seed, 0x50524f54u, 0, 0));
    for (size_t i = 0; i < n_classes * sample_len; i++)
        proto[i] = mp_rng_uniform(&r);
    synth_fill(&d->train, proto, n_classes, seed, 0);
    synth_fill(&d->test, proto, n_classes, seed, 1);
    free(proto);
    return 0;
}

static int load_dir(struct mp_data *d, const char *dir, size_t sample_len, size_t n_classes,
                    struct mp_err *err)
{
    if (load_split(&d->train, dir, 0, sample_len, n_classes, err) ||
        load_split(&d->test, dir, 1, sample_len, n_classes, err))
        return -1;
    return 0;
}

int mp_data_load(struct mp_data *d, const char *src, size_t sample_len, size_t n_classes,
                 uint64_t seed, struct mp_err *err)
{
    memset(d, 0, sizeof *d);
    d->n_classes = n_classes;
    snprintf(d->source, sizeof d->source, "%s", src);
    int rc;
    if (strcmp(src, "fashion-mnist") == 0) {
        rc = load_dir(d, MP_FASHION_MNIST_DIR, sample_len, n_classes, err);
        if (rc && err && err->code == MP_ERR_IO && access(MP_FASHION_MNIST_DIR, F_OK) != 0)
            MP_FAIL(err, IO, "%s: cannot read: %s (install the Debian package "
                    "dataset-fashion-mnist, or run tools/setup)", MP_FASHION_MNIST_DIR,
                    strerror(ENOENT));
    } else if (strncmp(src, "mnist-dir:", 10) == 0) {
        rc = load_dir(d, src + 10, sample_len, n_classes, err);
    } else if (strncmp(src, "synthetic:", 10) == 0) {
        rc = load_synthetic(d, src + 10, sample_len, n_classes, seed, err);
    } else if (strncmp(src, "text:", 5) == 0) {
        rc = src[5] ? mp__text_load(d, src + 5, sample_len, n_classes, err)
                    : MP_FAIL(err, USAGE, "--data text: needs a file: text:FILE or text:fortunes");
    } else {
        rc = MP_FAIL(err, USAGE, "--data %s: expected fashion-mnist, mnist-dir:DIR, "
                     "synthetic:N, text:fortunes or text:FILE", src);
    }
    if (rc)
        mp_data_free(d);
    return rc;
}

void mp_data_free(struct mp_data *d)
{
    free(d->train.x);
    free(d->train.y);
    free(d->test.x);
    free(d->test.y);
    free(d->bytes);
    d->bytes = NULL;
    d->n_bytes = 0;
    memset(&d->train, 0, sizeof d->train);
    memset(&d->test, 0, sizeof d->test);
}

/* Fisher-Yates from a generator seeded by (seed, epoch) alone, so every rank and every resumed
 * run sees the same order for the same epoch. */
void mp_data_order(uint32_t *perm, size_t n, uint64_t seed, uint64_t epoch, int shuffle)
{
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    if (!shuffle || n < 2)
        return;
    struct mp_rng r;
    mp_rng_seed(&r, mp_hash4(seed, epoch, 0x53485546u, 0));
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)mp_rng_below(&r, (uint64_t)i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void mp_data_gather(const struct mp_dataset *ds, const uint32_t *idx, size_t count, float *x,
                    int32_t *y)
{
    if (ds->text) { /* a window of T ids and the T bytes after each */
        size_t T = ds->sample_len;
        for (size_t i = 0; i < count; i++) {
            const uint8_t *w = ds->text + idx[i];
            for (size_t t = 0; t < T; t++)
                x[i * T + t] = (float)w[t];
        }
        mp_data_labels(ds, idx, count, y);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        memcpy(x + i * ds->sample_len, ds->x + (size_t)idx[i] * ds->sample_len,
               ds->sample_len * sizeof *x);
    }
    mp_data_labels(ds, idx, count, y);
}

void mp_data_labels(const struct mp_dataset *ds, const uint32_t *idx, size_t count, int32_t *y)
{
    size_t L = ds->label_len ? ds->label_len : 1; /* sets built elsewhere may leave it 0 */
    for (size_t i = 0; i < count; i++) {
        if (ds->text) {
            const uint8_t *w = ds->text + idx[i] + 1;
            for (size_t t = 0; t < L; t++)
                y[i * L + t] = w[t];
        } else {
            memcpy(y + i * L, ds->y + (size_t)idx[i] * L, L * sizeof *y);
        }
    }
}

static double set_bytes(const struct mp_dataset *ds)
{
    double n = (double)ds->n, L = (double)(ds->label_len ? ds->label_len : 1);
    return (ds->x ? n * (double)ds->sample_len * 4.0 : 0) + (ds->y ? n * L * 4.0 : 0);
}

double mp_data_bytes(const struct mp_data *d)
{
    /* plus the per-epoch order of the training samples (uint32) */
    return set_bytes(&d->train) + set_bytes(&d->test) + (double)d->n_bytes +
           (double)d->train.n * 4.0;
}

double mp_data_bytes_estimate(const char *src, size_t sample_len, size_t label_len)
{
    double per = (double)sample_len * 4.0 + (double)label_len * 4.0;
    if (strcmp(src, "fashion-mnist") == 0 || strncmp(src, "mnist-dir:", 10) == 0)
        return 70000.0 * per + 60000.0 * 4.0; /* the MNIST-shaped splits: 60000 + 10000 */
    if (strncmp(src, "synthetic:", 10) == 0) {
        double n = strtod(src + 10, NULL);
        return n * per * 1.25 + n * 4.0;
    }
    if (strncmp(src, "text:", 5) != 0)
        return 0;
    double bytes = mp__text_size(src + 5);
    /* the file, its validation tenth as windows (ids and labels), the order array */
    return bytes + bytes / 10.0 * 8.0 + bytes * 0.9 / (double)(sample_len ? sample_len : 1) * 4.0;
}
