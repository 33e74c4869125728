/* safetensors writer and strict reader (format: huggingface/safetensors docs). Owns the exact
 * bytes: tensors sorted by name, compact JSON with sorted keys, the header padded with spaces to a
 * multiple of 8 so the data is aligned, little-endian F32 data, no metadata, so equal numbers give
 * equal files that PyTorch loads unchanged. The reader checks every offset before any pointer is
 * formed and reports "FILE: byte N: what" with the offset where the file went wrong. */
#include "mp_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int host_is_le(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static void bswap32_all(uint8_t *b, size_t n_words)
{
    for (size_t i = 0; i < n_words; i++, b += 4) {
        uint8_t t0 = b[0], t1 = b[1];
        b[0] = b[3];
        b[1] = b[2];
        b[2] = t1;
        b[3] = t0;
    }
}

static int cmp_tensor_ptr(const void *a, const void *b)
{
    return strcmp((*(const struct mp_st_tensor *const *)a)->name,
                  (*(const struct mp_st_tensor *const *)b)->name);
}

/* ---- writer ---- */

/* The header JSON with its 8-byte length prefix and space padding, in one malloc'd block. */
static uint8_t *build_header(const struct mp_st_tensor *const *s, size_t n, size_t *out_len)
{
    json_t *root = json_object();
    uint64_t off = 0;
    for (size_t i = 0; root && i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < s[i]->ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)s[i]->shape[d]));
        uint64_t end = off + 4 * (uint64_t)s[i]->numel;
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)end);
        if (!e || json_object_set_new(root, s[i]->name, e)) {
            json_decref(root);
            return NULL;
        }
        off = end;
    }
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!text)
        return NULL;
    size_t tl = strlen(text), hl = (tl + 7) & ~(size_t)7;
    uint8_t *buf = malloc(8 + hl);
    if (buf) {
        for (int b = 0; b < 8; b++)
            buf[b] = (uint8_t)((uint64_t)hl >> (8 * b));
        memcpy(buf + 8, text, tl);
        memset(buf + 8 + tl, ' ', hl - tl);
        *out_len = 8 + hl;
    }
    free(text);
    return buf;
}

static int write_all(int fd, const void *p, size_t len)
{
    const uint8_t *b = p;
    while (len > 0) {
        ssize_t w = write(fd, b, len > (1u << 30) ? (1u << 30) : len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Little-endian data: straight from the caller's floats on LE hosts, through a swapped bounce
 * buffer otherwise. */
static int write_data(int fd, const struct mp_st_tensor *t)
{
    if (host_is_le())
        return write_all(fd, t->data, t->numel * sizeof(float));
    uint8_t tmp[4096];
    for (size_t i = 0; i < t->numel; i += 1024) {
        size_t k = t->numel - i < 1024 ? t->numel - i : 1024;
        memcpy(tmp, t->data + i, 4 * k);
        bswap32_all(tmp, k);
        if (write_all(fd, tmp, 4 * k))
            return -1;
    }
    return 0;
}

/* Makes the rename durable: fsync of the directory that holds the new name. */
static void fsync_dir_of(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* Where a tensor without data gets it (mp_st_write_filled): the caller's fill, into one bounce
 * buffer as large as the largest such tensor. */
struct filler {
    mp_st_fill_fn fill;
    void *ctx;
    float *bounce;
    int failed;          /* fill failed: its error is in *err */
    struct mp_err *err;
};

/* Tensor t's bytes to the file, from its data or from the filler. After a failed write the filler
 * is still called (its data dropped), once per tensor in file order, as its promise says. */
static int write_tensor(int fd, const struct mp_st_tensor *t, struct filler *f, int ok)
{
    struct mp_st_tensor from = *t;
    if (!t->data && t->numel && f->fill) {
        if (f->failed)
            return -1;
        if (f->fill(f->ctx, t, f->bounce, f->err)) {
            f->failed = 1;
            return -1;
        }
        from.data = f->bounce;
    }
    return ok ? write_data(fd, &from) : -1;
}

static int write_file(const char *path, const char *tmp, const uint8_t *hdr, size_t hdr_len,
                      const struct mp_st_tensor *const *s, size_t n, struct filler *f)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = fd < 0 ? -1 : write_all(fd, hdr, hdr_len), first = rc ? errno : 0;
    for (size_t i = 0; i < n; i++) /* every tensor, after a failure too: write_tensor drains */
        if (write_tensor(fd, s[i], f, rc == 0) && rc == 0)
            rc = -1, first = errno;
    errno = first; /* the first failure's, not a later fill's */
    if (fd < 0)
        return -1;
    if (rc == 0)
        rc = fsync(fd);
    if (close(fd) && rc == 0)
        rc = -1;
    if (rc == 0)
        rc = rename(tmp, path);
    if (rc == 0)
        fsync_dir_of(path);
    return rc;
}

/* A caller's tensor that cannot be written as described is a bug in the caller. */
static const char *bad_tensor(const struct mp_st_tensor *t, int filled)
{
    if (t->ndim < 0 || t->ndim > MP_ST_MAX_DIMS)
        return "dimension count outside 0..4";
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0)
            return "negative dimension";
        numel *= (uint64_t)t->shape[d];
    }
    if (numel != t->numel)
        return "shape does not match numel";
    if (!t->data && t->numel && !filled)
        return "no data";
    return NULL;
}

void mp_st_order(const struct mp_st_tensor *t, size_t n, const struct mp_st_tensor **sorted)
{
    for (size_t i = 0; i < n; i++)
        sorted[i] = &t[i];
    qsort(sorted, n, sizeof *sorted, cmp_tensor_ptr);
}

int mp_st_send_in_order(const struct mp_st_tensor *t, size_t n, mp_st_send_fn send, void *ctx,
                        struct mp_err *err)
{
    const struct mp_st_tensor **order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return MP_FAIL(err, NOMEM, "out of memory ordering %zu tensors", n);
    mp_st_order(t, n, order);
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++)
        if (order[k]->data && order[k]->numel)
            rc = send(ctx, order[k], err);
    free(order);
    return rc;
}

int mp_st_write(const char *path, const struct mp_st_tensor *t, size_t n, struct mp_err *err)
{
    return mp_st_write_filled(path, t, n, NULL, NULL, err);
}

int mp_st_write_filled(const char *path, const struct mp_st_tensor *t, size_t n,
                       mp_st_fill_fn fill, void *ctx, struct mp_err *err)
{
    size_t most = 0;
    for (size_t i = 0; i < n; i++) {
        const char *why = bad_tensor(&t[i], fill != NULL);
        if (why)
            return MP_FAIL(err, INTERNAL, "%s: tensor %s: %s", path, t[i].name, why);
        if (!t[i].data && t[i].numel > most)
            most = t[i].numel;
    }
    const struct mp_st_tensor **s = malloc((n ? n : 1) * sizeof *s);
    struct filler f = {.fill = fill, .ctx = ctx, .err = err,
                       .bounce = fill && most ? malloc(most * sizeof(float)) : NULL};
    if (!s || (fill && most && !f.bounce)) {
        free(s);
        free(f.bounce);
        return MP_FAIL(err, NOMEM, "%s: cannot allocate the tensor list", path);
    }
    mp_st_order(t, n, s);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(s[i - 1]->name, s[i]->name) == 0) {
            MP_FAIL(err, INTERNAL, "%s: tensor name %s given twice", path, s[i]->name);
            free(s);
            free(f.bounce);
            return -1;
        }
    }
    size_t hdr_len = 0;
    uint8_t *hdr = build_header(s, n, &hdr_len);
    if (!hdr) {
        free(s);
        free(f.bounce);
        return MP_FAIL(err, NOMEM, "%s: cannot build the safetensors header", path);
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int rc = write_file(path, tmp, hdr, hdr_len, s, n, &f);
    int saved = errno;
    free(hdr);
    free(s);
    free(f.bounce);
    if (rc) {
        unlink(tmp);
        if (f.failed) /* the fill's own error */
            return -1;
        return MP_FAIL(err, IO, "%s: cannot write: %s", path, strerror(saved));
    }
    return 0;
}

/* ---- reader ---- */

struct span {
    uint64_t begin, end;
    size_t t;
};

/* Every content error: MP_ERR_INPUT "FILE: byte N: what". */
static int bad(struct mp_err *err, const char *file, uint64_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(struct mp_err *err, const char *file, uint64_t at, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return MP_FAIL(err, INPUT, "%s: byte %llu: %s", file, (unsigned long long)at, what);
}

static int get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* shape: at most 4 non-negative integers whose product times 4 fits in 64 bits (the offsets
 * check then compares it with the data it claims). */
static int parse_shape(struct mp_st_tensor *t, const json_t *shape)
{
    if (!json_is_array(shape) || json_array_size(shape) > MP_ST_MAX_DIMS)
        return -1;
    t->ndim = (int)json_array_size(shape);
    uint64_t numel = 1, cap = UINT64_MAX / 4 < SIZE_MAX ? UINT64_MAX / 4 : SIZE_MAX;
    int zero = 0;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t v;
        if (get_u64(json_array_get(shape, (size_t)d), &v))
            return -1;
        t->shape[d] = (int64_t)v;
        zero |= v == 0;
    }
    for (int d = 0; d < t->ndim && !zero; d++) {
        if ((uint64_t)t->shape[d] > cap / numel)
            return -1;
        numel *= (uint64_t)t->shape[d];
    }
    t->numel = zero ? 0 : (size_t)numel;
    return 0;
}

static int parse_entry(struct mp_st_tensor *t, struct span *sp, const char *key, const json_t *v,
                       const char *file, uint64_t data0, uint64_t data_len, struct mp_err *err)
{
    if (strlen(key) >= sizeof t->name)
        return bad(err, file, 8, "tensor name %.40s... longer than %zu bytes", key,
                   sizeof t->name - 1);
    snprintf(t->name, sizeof t->name, "%s", key);
    if (!json_is_object(v))
        return bad(err, file, 8, "tensor %s: entry is not an object", key);
    const json_t *dtype = json_object_get(v, "dtype");
    if (!json_is_string(dtype))
        return bad(err, file, 8, "tensor %s: missing dtype", key);
    if (strcmp(json_string_value(dtype), "F32") != 0)
        return bad(err, file, 8, "tensor %s: dtype %s not supported (only F32)", key,
                   json_string_value(dtype));
    if (parse_shape(t, json_object_get(v, "shape")))
        return bad(err, file, 8, "tensor %s: shape must be at most %d non-negative integers "
                   "with a product below 2^62", key, MP_ST_MAX_DIMS);
    const json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        get_u64(json_array_get(offs, 0), &sp->begin) || get_u64(json_array_get(offs, 1), &sp->end))
        return bad(err, file, 8, "tensor %s: data_offsets must be [begin, end]", key);
    if (sp->begin > sp->end || sp->end > data_len)
        return bad(err, file, data0 + (sp->begin < data_len ? sp->begin : data_len),
                   "tensor %s: data_offsets [%llu, %llu] outside the %llu data bytes", key,
                   (unsigned long long)sp->begin, (unsigned long long)sp->end,
                   (unsigned long long)data_len);
    if (sp->end - sp->begin != 4 * (uint64_t)t->numel)
        return bad(err, file, data0 + sp->begin, "tensor %s: %llu data bytes for %zu F32 values",
                   key, (unsigned long long)(sp->end - sp->begin), t->numel);
    return 0;
}

static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorted by begin, the spans must tile [0, data_len) exactly. */
static int check_tiling(struct span *sp, size_t n, const struct mp_st_tensor *t, const char *file,
                        uint64_t data0, uint64_t data_len, struct mp_err *err)
{
    qsort(sp, n, sizeof *sp, cmp_span);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (sp[i].begin < at)
            return bad(err, file, data0 + sp[i].begin, "tensor %s overlaps %s", t[sp[i].t].name,
                       t[sp[i - 1].t].name);
        if (sp[i].begin > at)
            return bad(err, file, data0 + at, "gap: bytes %llu..%llu of the data belong to no "
                       "tensor", (unsigned long long)at, (unsigned long long)sp[i].begin);
        at = sp[i].end;
    }
    if (at != data_len)
        return bad(err, file, data0 + at, "%llu bytes after the last tensor's data",
                   (unsigned long long)(data_len - at));
    return 0;
}

static int check_metadata(const json_t *meta)
{
    const char *k;
    const json_t *v;
    if (!json_is_object(meta))
        return -1;
    json_object_foreach ((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return -1;
    }
    return 0;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const struct mp_st_tensor *)a)->name, ((const struct mp_st_tensor *)b)->name);
}

/* Entries of the parsed header into f->t, validated and tiled; data pointers are set later. */
static int parse_entries(struct mp_st_file *f, json_t *root, struct span **spans, const char *file,
                         uint64_t data0, uint64_t data_len, struct mp_err *err)
{
    size_t cap = json_object_size(root);
    f->t = calloc(cap ? cap : 1, sizeof *f->t);
    *spans = calloc(cap ? cap : 1, sizeof **spans);
    if (!f->t || !*spans)
        return MP_FAIL(err, NOMEM, "%s: cannot allocate %zu tensor entries", file, cap);
    const char *key;
    json_t *v;
    json_object_foreach (root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (check_metadata(v))
                return bad(err, file, 8, "__metadata__ must be an object of strings");
            continue;
        }
        (*spans)[f->n].t = f->n;
        if (parse_entry(&f->t[f->n], &(*spans)[f->n], key, v, file, data0, data_len, err))
            return -1;
        f->n++;
    }
    return check_tiling(*spans, f->n, f->t, file, data0, data_len, err);
}

/* Points the tensors into the buffer. F32 needs 4-byte alignment, which the header length does
 * not promise (our writer pads to 8, others may not): if needed the data moves down over the
 * already-parsed header. Big-endian hosts swap in place. */
static void bind_data(struct mp_st_file *f, struct span *sp, uint64_t data0, uint64_t data_len)
{
    uint64_t start = data0 & ~(uint64_t)3;
    if (start != data0)
        memmove(f->buf + start, f->buf + data0, (size_t)data_len);
    if (!host_is_le())
        bswap32_all(f->buf + start, (size_t)(data_len / 4));
    for (size_t i = 0; i < f->n; i++)
        f->t[sp[i].t].data = (const float *)(void *)(f->buf + start + sp[i].begin);
    qsort(f->t, f->n, sizeof *f->t, cmp_tensor);
}

/* The 8-byte little-endian header length a file begins with. */
static uint64_t header_length(const uint8_t *first)
{
    uint64_t hl = 0;
    for (int b = 0; b < 8; b++)
        hl |= (uint64_t)first[b] << (8 * b);
    return hl;
}

/* The header of a file of `len` bytes whose first bytes, `head` (8 + the header length, or fewer
 * when that length is wrong), have been read: the length checked against the file, the JSON
 * parsed and every entry validated and tiled over the data. On success f->t holds the entries
 * (data not bound), *spans their data spans and *data0 the data's first byte. */
static int parse_head(struct mp_st_file *f, const char *name, const uint8_t *head, uint64_t len,
                      struct span **spans, uint64_t *data0, struct mp_err *err)
{
    if (len < 8)
        return bad(err, name, 0, "file of %llu bytes is too short for the 8-byte header length",
                   (unsigned long long)len);
    uint64_t hl = header_length(head);
    if (hl > MP_ST_MAX_HEADER)
        return bad(err, name, 0, "header length %llu exceeds the %u-byte limit",
                   (unsigned long long)hl, MP_ST_MAX_HEADER);
    if (hl > len - 8)
        return bad(err, name, 0, "header length %llu but only %llu bytes follow",
                   (unsigned long long)hl, (unsigned long long)(len - 8));
    json_error_t je;
    json_t *root = json_loadb((const char *)head + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    int rc = -1;
    if (!root)
        bad(err, name, 8 + (uint64_t)(je.position > 0 ? je.position : 0),
            "invalid JSON header: %s", je.text);
    else if (!json_is_object(root))
        bad(err, name, 8, "header is not a JSON object");
    else
        rc = parse_entries(f, root, spans, name, 8 + hl, len - 8 - hl, err);
    json_decref(root);
    *data0 = 8 + hl;
    return rc;
}

/* How many bytes of a file of `len` bytes parse_head needs, from its first min(len, 8) bytes:
 * 8 + the header length when that length fits the file, else what is there to report. */
static size_t head_bytes(const uint8_t *first, uint64_t len)
{
    if (len < 8)
        return (size_t)len;
    uint64_t hl = header_length(first);
    return hl > MP_ST_MAX_HEADER || hl > len - 8 ? 8 : (size_t)(8 + hl);
}

int mp_st_parse(struct mp_st_file *f, const char *name, uint8_t *buf, size_t len,
                struct mp_err *err)
{
    memset(f, 0, sizeof *f);
    f->buf = buf;
    f->len = len;
    struct span *spans = NULL;
    uint64_t data0 = 0;
    int rc = parse_head(f, name, buf, len, &spans, &data0, err);
    if (rc == 0)
        bind_data(f, spans, data0, len - data0);
    free(spans);
    if (rc)
        mp_st_free(f);
    return rc;
}

/* Reads exactly n bytes at offset `at`; on failure errno says why (0: the file ended first). */
static int read_at(int fd, void *dst, size_t n, uint64_t at)
{
    uint8_t *p = dst;
    while (n > 0) {
        ssize_t r = pread(fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = 0;
            return -1;
        }
        p += r;
        at += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

/* The header of f's open file (f->fp) of `len` bytes: read, parsed, each tensor's data offset. */
static int open_head(struct mp_st_file *f, const char *path, uint64_t len, struct mp_err *err)
{
    uint8_t first[8];
    if (read_at(fileno(f->fp), first, len < 8 ? (size_t)len : 8, 0))
        return MP_FAIL(err, IO, "%s: cannot read: %s", path, errno ? strerror(errno)
                                                                 : "file shrank");
    size_t n_head = head_bytes(first, len);
    uint8_t *head = malloc(n_head ? n_head : 1);
    if (!head)
        return MP_FAIL(err, NOMEM, "%s: cannot allocate its %zu-byte header", path, n_head);
    if (read_at(fileno(f->fp), head, n_head, 0)) {
        int e = errno;
        free(head);
        return MP_FAIL(err, IO, "%s: cannot read: %s", path, e ? strerror(e) : "file shrank");
    }
    struct span *spans = NULL;
    uint64_t data0 = 0;
    int rc = parse_head(f, path, head, len, &spans, &data0, err);
    free(head);
    for (size_t i = 0; rc == 0 && i < f->n; i++)
        f->t[spans[i].t].at = data0 + spans[i].begin;
    free(spans);
    if (rc == 0)
        qsort(f->t, f->n, sizeof *f->t, cmp_tensor);
    return rc;
}

int mp_st_open(struct mp_st_file *f, const char *path, struct mp_err *err)
{
    memset(f, 0, sizeof *f);
    f->fp = fopen(path, "rb");
    struct stat st;
    int e = !f->fp                           ? errno
            : fstat(fileno(f->fp), &st) != 0 ? errno
            : !S_ISREG(st.st_mode)           ? EISDIR
                                             : 0;
    int rc = e ? MP_FAIL(err, IO, "%s: cannot read: %s", path, strerror(e)) : 0;
    if (!rc && !(f->name = strdup(path)))
        rc = MP_FAIL(err, NOMEM, "out of memory");
    if (!rc && (rc = open_head(f, path, (uint64_t)st.st_size, err)) == 0)
        f->len = (size_t)st.st_size;
    if (rc)
        mp_st_free(f); /* closes the file */
    return rc;
}

int mp_st_copy(const struct mp_st_file *f, const struct mp_st_tensor *t, float *dst,
               struct mp_err *err)
{
    size_t bytes = t->numel * sizeof(float);
    if (!f->fp) {
        memcpy(dst, t->data, bytes);
        return 0;
    }
    if (read_at(fileno(f->fp), dst, bytes, t->at)) {
        int e = errno;
        return MP_FAIL(err, IO, "%s: cannot read tensor %s at byte %llu: %s", f->name, t->name,
                       (unsigned long long)t->at, e ? strerror(e) : "the file shrank");
    }
    if (!host_is_le())
        bswap32_all((uint8_t *)dst, t->numel);
    return 0;
}

const struct mp_st_tensor *mp_st_find(const struct mp_st_file *f, const char *name)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->t[mid].name, name);
        if (c == 0)
            return &f->t[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void mp_st_free(struct mp_st_file *f)
{
    if (f->fp)
        fclose(f->fp);
    free(f->name);
    free(f->t);
    free(f->buf);
    memset(f, 0, sizeof *f);
}
