/* Byte-level text for language models (DESIGN.md §9): `text:FILE` reads any file as bytes,
 * `text:fortunes` concatenates the Debian fortunes files (names without a dot) in name order. The
 * first ⌊9N/10⌋ bytes train, the rest validate. Training windows are cut at offsets drawn from
 * (seed, step, index), so the data never depends on P, D or the schedule; validation window j
 * starts at byte j·T of the validation split and is materialised once. Every byte must be a valid
 * id of the model (< V); a split shorter than T + 1 bytes cannot hold one window. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mp_data.h"
#include "mp_rng.h"

#define TEXT_MAX_BYTES ((size_t)UINT32_MAX) /* offsets are 32-bit sample indices */

/* Appends the whole of `path` to the buffer. A file that cannot be opened or read is MP_ERR_IO
 * (exit 3), as for every other file mpipe reads (IDX, plan, hostfile, topology; DESIGN.md §4
 * "unreadable"); a directory, or a text too large, is bad input (exit 2). */
static int append_file(struct mp_data *d, size_t *cap, const char *path, struct mp_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot read: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        /* unreadable as a file: exit 3, as --init, --plan and the model file say it */
        return MP_FAIL(err, IO, "%s: cannot read: Is a directory, not a text file", path);
    }
    for (;;) {
        if (d->n_bytes == *cap) {
            size_t nc = *cap ? 2 * *cap : 1 << 20;
            uint8_t *p = nc > TEXT_MAX_BYTES + 1 ? NULL : realloc(d->bytes, nc);
            if (!p) {
                fclose(f);
                return MP_FAIL(err, INPUT, "%s: text larger than %zu bytes is not supported",
                               path, TEXT_MAX_BYTES);
            }
            d->bytes = p;
            *cap = nc;
        }
        size_t got = fread(d->bytes + d->n_bytes, 1, *cap - d->n_bytes, f);
        d->n_bytes += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return MP_FAIL(err, IO, "%s: read error", path);
    return 0;
}

static double stat_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (double)sb.st_size : 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The fortunes files whose names have no dot, in name order (as `sorted(os.listdir())`). A byte
 * of one that is not an id below V is named by its file and its offset there (an offset into the
 * whole corpus says nothing a user can look up). */
static int load_fortunes(struct mp_data *d, size_t *cap, size_t V, struct mp_err *err)
{
    DIR *dir = opendir(MP_FORTUNES_DIR);
    if (!dir)
        return MP_FAIL(err, INPUT, "text:fortunes: %s: %s (install the Debian package fortunes, "
                       "or run tools/setup)", MP_FORTUNES_DIR, strerror(errno));
    char **names = NULL;
    size_t n = 0, ncap = 0;
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(dir));) {
        if (strchr(e->d_name, '.'))
            continue; /* also skips "." and ".." */
        if (n == ncap) {
            ncap = ncap ? 2 * ncap : 64;
            char **p = realloc(names, ncap * sizeof *p);
            if (!p) {
                rc = MP_FAIL(err, NOMEM, "out of memory");
                break;
            }
            names = p;
        }
        if (!(names[n++] = strdup(e->d_name)))
            rc = MP_FAIL(err, NOMEM, "out of memory");
    }
    closedir(dir);
    if (!rc)
        qsort(names, n, sizeof *names, by_name);
    char path[4096];
    for (size_t i = 0; !rc && i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", MP_FORTUNES_DIR, names[i]);
        size_t from = d->n_bytes;
        rc = append_file(d, cap, path, err);
        for (size_t k = from; !rc && k < d->n_bytes; k++)
            if (d->bytes[k] >= V)
                rc = MP_FAIL(err, INPUT, "text:fortunes: %s: byte %zu (%zu of the corpus): value "
                             "%u " MP_DATA_NOT_AN_ID " of %zu (embed V, or the loss's classes if "
                             "fewer)", path, k - from, k, d->bytes[k], V);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (!rc && n == 0)
        rc = MP_FAIL(err, INPUT, "text:fortunes: no fortune files in %s (install the Debian "
                     "package fortunes)", MP_FORTUNES_DIR);
    return rc;
}

double mp__text_size(const char *src)
{
    if (strcmp(src, "fortunes"))
        return stat_size(src);
    DIR *dir = opendir(MP_FORTUNES_DIR);
    double total = 0;
    char path[4096];
    for (struct dirent *e; dir && (e = readdir(dir));) {
        if (strchr(e->d_name, '.'))
            continue;
        snprintf(path, sizeof path, "%s/%s", MP_FORTUNES_DIR, e->d_name);
        total += stat_size(path);
    }
    if (dir)
        closedir(dir);
    return total;
}

int mp__text_load(struct mp_data *d, const char *src, size_t T, size_t V, struct mp_err *err)
{
    const char *name = strcmp(src, "fortunes") == 0 ? "text:fortunes" : src;
    size_t cap = 0;
    int rc = strcmp(src, "fortunes") == 0 ? load_fortunes(d, &cap, V, err)
                                           : append_file(d, &cap, src, err);
    if (rc)
        return -1;
    size_t n = d->n_bytes, n_train = n / 10 * 9 + n % 10 * 9 / 10; /* ⌊9n/10⌋ without overflow */
    if (n_train < T + 1 || n - n_train < T + 1)
        return MP_FAIL(err, INPUT, "%s: %zu byte%s split into %zu training and %zu validation "
                       "bytes, but each split needs at least T + 1 = %zu (the model's context is "
                       "%zu)", name, n, n == 1 ? "" : "s", n_train, n - n_train, T + 1, T);
    for (size_t i = 0; i < n; i++)
        if (d->bytes[i] >= V)
            return MP_FAIL(err, INPUT, "%s: byte %zu: value %u " MP_DATA_NOT_AN_ID " of %zu "
                           "(embed V, or the loss's classes if fewer)", name, i, d->bytes[i], V);
    struct mp_dataset *tr = &d->train, *va = &d->test;
    tr->text = d->bytes;
    tr->text_len = n_train;
    tr->n = n_train / T;
    tr->sample_len = tr->label_len = T;
    const uint8_t *v = d->bytes + n_train;
    size_t v_len = n - n_train, windows = (v_len - 1) / T;
    va->n = windows;
    va->sample_len = va->label_len = T;
    va->x = malloc(windows * T * sizeof(float));
    va->y = malloc(windows * T * sizeof(int32_t));
    if (!va->x || !va->y)
        return MP_FAIL(err, NOMEM, "out of memory for %zu validation windows", windows);
    for (size_t j = 0; j < windows; j++)
        for (size_t t = 0; t < T; t++) {
            va->x[j * T + t] = (float)v[j * T + t];
            va->y[j * T + t] = v[j * T + t + 1];
        }
    return 0;
}

void mp_data_text_offsets(const struct mp_dataset *ds, uint32_t *idx, size_t batch,
                          uint64_t seed, uint64_t step, int shuffle)
{
    uint64_t span = ds->text_len - ds->sample_len; /* windows of T + 1 bytes that fit */
    for (size_t k = 0; k < batch; k++) {
        uint64_t pick = shuffle ? mp_hash4(seed, step, k, 0x54455854ULL /* "TEXT" */)
                                : ((uint64_t)step * batch + k) * ds->sample_len;
        idx[k] = (uint32_t)(pick % span);
    }
}
