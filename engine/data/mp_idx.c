/* IDX files (the MNIST container: two zero bytes, a type byte, a dimension count, big-endian
 * 32-bit dims, then the data), read through zlib so gzip'd and plain files go the same way. Only
 * unsigned bytes (type 0x08) and 1-4 non-zero dims are accepted; the data length must equal the
 * product of the dims exactly. It allocates exactly what the header promises (after capping it)
 * and never reads past a buffer; every rejection names the file and the byte offset. */
#include "mp_data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Far above any image data set a CPU trains on; refusing more keeps a corrupt or hostile header
 * from asking for an absurd allocation. */
#define IDX_MAX_BYTES ((uint64_t)4 << 30)
/* The file reader's first allocation; it doubles from there up to what the header promises. */
#define IDX_FIRST_CHUNK ((size_t)16 << 20)

struct idx_header {
    int ndim;
    uint32_t dims[4];
    size_t hdr_len;  /* 4 + 4 * ndim */
    size_t data_len; /* product of dims */
};

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Validates the header at buf[0..len). A buffer shorter than the header it announces is a
 * truncated file (MP_ERR_IO); everything else wrong is malformed content (MP_ERR_INPUT). */
static int parse_header(struct idx_header *h, const char *name, const uint8_t *buf, size_t len,
                        struct mp_err *err)
{
    if (len < 4)
        return MP_FAIL(err, IO, "%s: byte %zu: truncated: IDX header needs 4 bytes, file has %zu",
                       name, len, len);
    if (buf[0] != 0 || buf[1] != 0)
        return MP_FAIL(err, INPUT, "%s: byte 0: bad magic 0x%02x%02x (IDX starts with 0x0000)",
                       name, buf[0], buf[1]);
    if (buf[2] != 0x08)
        return MP_FAIL(err, INPUT, "%s: byte 2: data type 0x%02x not supported (only 0x08, "
                       "unsigned byte)", name, buf[2]);
    h->ndim = buf[3];
    if (h->ndim < 1 || h->ndim > 4)
        return MP_FAIL(err, INPUT, "%s: byte 3: %d dimensions (expected 1 to 4)", name, h->ndim);
    h->hdr_len = 4 + 4 * (size_t)h->ndim;
    if (len < h->hdr_len)
        return MP_FAIL(err, IO, "%s: byte %zu: truncated: header of %d dims needs %zu bytes", name,
                       len, h->ndim, h->hdr_len);
    uint64_t total = 1;
    for (int i = 0; i < h->ndim; i++) {
        size_t at = 4 + 4 * (size_t)i;
        h->dims[i] = be32(buf + at);
        if (h->dims[i] == 0)
            return MP_FAIL(err, INPUT, "%s: byte %zu: dimension %d is 0", name, at, i);
        total *= h->dims[i]; /* cannot overflow: total <= 4 GiB before, a dim < 2^32 */
        if (total > IDX_MAX_BYTES)
            return MP_FAIL(err, INPUT, "%s: byte %zu: dims give more than %llu bytes of data",
                           name, at, (unsigned long long)IDX_MAX_BYTES);
    }
    h->data_len = (size_t)total;
    return 0;
}

static void fill_idx(struct mp_idx *idx, const struct idx_header *h, uint8_t *data)
{
    idx->ndim = h->ndim;
    memset(idx->dims, 0, sizeof idx->dims);
    memcpy(idx->dims, h->dims, sizeof h->dims[0] * (size_t)h->ndim);
    idx->data = data;
    idx->len = h->data_len;
}

static int truncated(const char *name, const struct idx_header *h, size_t got, struct mp_err *err)
{
    return MP_FAIL(err, IO, "%s: byte %zu: truncated: header promises %zu data bytes, found %zu",
                   name, h->hdr_len + got, h->data_len, got);
}

static int trailing(const char *name, const struct idx_header *h, struct mp_err *err)
{
    return MP_FAIL(err, INPUT, "%s: byte %zu: extra bytes after the %zu data bytes the header "
                   "promises", name, h->hdr_len + h->data_len, h->data_len);
}

int mp_idx_parse(struct mp_idx *idx, const char *name, const uint8_t *buf, size_t len,
                 struct mp_err *err)
{
    memset(idx, 0, sizeof *idx);
    struct idx_header h;
    if (parse_header(&h, name, buf, len, err))
        return -1;
    size_t have = len - h.hdr_len;
    if (have < h.data_len)
        return truncated(name, &h, have, err);
    if (have > h.data_len)
        return trailing(name, &h, err);
    uint8_t *data = malloc(h.data_len);
    if (!data)
        return MP_FAIL(err, NOMEM, "%s: cannot allocate %zu bytes", name, h.data_len);
    memcpy(data, buf + h.hdr_len, h.data_len);
    fill_idx(idx, &h, data);
    return 0;
}

/* Reads up to len bytes, in chunks because gzread takes an unsigned int. Returns the count read
 * (short only at end of stream) or -1 with err set. A gzip stream cut short reads as a short
 * count, which the caller reports as truncation; corrupt compressed data is malformed input. */
static long long gz_read_all(gzFile gz, const char *name, uint8_t *buf, size_t len,
                             struct mp_err *err)
{
    size_t got = 0;
    while (got < len) {
        size_t want = len - got > (1u << 30) ? (1u << 30) : len - got;
        int n = gzread(gz, buf + got, (unsigned)want);
        if (n < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            size_t nl = strlen(name); /* zlib prefixes the path; the message has it already */
            if (strncmp(msg, name, nl) == 0 && strncmp(msg + nl, ": ", 2) == 0)
                msg += nl + 2;
            if (zerr == Z_ERRNO)
                return MP_FAIL(err, IO, "%s: cannot read: %s", name, strerror(errno));
            if (zerr == Z_BUF_ERROR)
                break; /* the compressed stream ended early */
            return MP_FAIL(err, INPUT, "%s: byte %lld: corrupt gzip data: %s", name,
                           (long long)gztell(gz), msg);
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (long long)got;
}

/* The header first (4 bytes, then the dims it announces), so the data buffer is allocated once at
 * its validated size; then one more byte must not be there. */
static int read_stream(struct mp_idx *idx, gzFile gz, const char *name, mp_idx_place_fn place,
                       void *ctx, struct mp_err *err)
{
    uint8_t hdr[20];
    struct idx_header h;
    long long n = gz_read_all(gz, name, hdr, 4, err);
    if (n < 0)
        return -1;
    if (n == 4 && hdr[3] >= 1 && hdr[3] <= 4) {
        long long more = gz_read_all(gz, name, hdr + 4, 4 * (size_t)hdr[3], err);
        if (more < 0)
            return -1;
        n += more;
    }
    if (parse_header(&h, name, hdr, (size_t)n, err))
        return -1;
    /* The buffer grows toward the promised size as data arrives (a gzip stream's length is not
     * known up front), so a 36-byte file whose header promises 4 GiB is reported as truncated
     * instead of first reserving 4 GiB (found by tests/fuzz/fuzz_idx). A caller's buffer is
     * the promised size at once: its caller checked the dims against what it expects. */
    size_t cap = h.data_len < IDX_FIRST_CHUNK ? h.data_len : IDX_FIRST_CHUNK, got = 0;
    uint8_t *data = NULL;
    if (place) {
        fill_idx(idx, &h, NULL);
        if (!(data = place(ctx, idx, err)))
            return -1;
        idx->placed = 1;
        cap = h.data_len;
    } else if (!(data = malloc(cap))) {
        return MP_FAIL(err, NOMEM, "%s: cannot allocate %zu bytes", name, cap);
    }
    for (;;) {
        long long more = gz_read_all(gz, name, data + got, cap - got, err);
        if (more < 0)
            goto fail;
        got += (size_t)more;
        if (got < cap || cap == h.data_len)
            break; /* the stream ended, or everything promised is here */
        cap = cap > h.data_len / 2 ? h.data_len : cap * 2;
        uint8_t *grown = realloc(data, cap);
        if (!grown) {
            MP_FAIL(err, NOMEM, "%s: cannot allocate %zu bytes", name, cap);
            goto fail;
        }
        data = grown;
    }
    if (got < h.data_len) {
        truncated(name, &h, got, err);
        goto fail;
    }
    uint8_t extra;
    n = gz_read_all(gz, name, &extra, 1, err);
    if (n < 0)
        goto fail;
    if (n > 0) {
        trailing(name, &h, err);
        goto fail;
    }
    fill_idx(idx, &h, data);
    return 0;
fail:
    if (!place)
        free(data);
    memset(idx, 0, sizeof *idx);
    return -1;
}

int mp_idx_read_placed(struct mp_idx *idx, const char *path, mp_idx_place_fn place, void *ctx,
                       struct mp_err *err)
{
    memset(idx, 0, sizeof *idx);
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return MP_FAIL(err, IO, "%s: cannot read: %s", path,
                       strerror(errno ? errno : ENOMEM));
    gzbuffer(gz, 1u << 17); /* fewer, larger reads: the training set is 47 MB unpacked */
    int rc = read_stream(idx, gz, path, place, ctx, err);
    gzclose_r(gz);
    return rc;
}

int mp_idx_read(struct mp_idx *idx, const char *path, struct mp_err *err)
{
    return mp_idx_read_placed(idx, path, NULL, NULL, err);
}

void mp_idx_free(struct mp_idx *idx)
{
    if (!idx->placed)
        free(idx->data);
    memset(idx, 0, sizeof *idx);
}
