/* The input gather's seconds at mb samples (mp_calib.c): the first stage's forward copies each
 * micro-batch's samples and labels out of the training set (mp_data_gather) before its first
 * layer runs, a cost no layer pass holds. models/tiny_mlp.mp's step is 0.64 ms, 0.16 of it this
 * copy of 256 rows of 784 floats from random places of a set larger than the caches. Timed through
 * mp_data_gather itself on a stand-in set: images as 64 MiB of float rows (Fashion-MNIST's
 * 60,000 rows are 188 MB: either way, past the last-level cache), text as 4 MiB of bytes (the
 * fortunes corpus's size), rows drawn as training draws them, scattered. The set is written
 * first, as loading writes a real one: rows read from never-written pages each fault in the zero
 * page (25 us a page on this VM), which made a gather look 10x slower than training's. Image rows
 * come from the set's first half only, which writing the second half pushed out of the 32 MiB
 * last-level cache: drawn from all of it, a varying share of them still sat there, and
 * tiny_mlp.mp's gather of 64 rows calibrated at 14 to 35 us from one plan to the next (training
 * took 28). Each size's gathers draw new rows, and the second half is written again before them:
 * the draws restarted from one seed at every size, so the smaller sizes read rows the larger ones
 * had just brought into the cache, and tiny_mlp.mp's 32-row gather calibrated at 3.3 us where
 * training's took about 11 (its forward at 8 micro-batches ran 20% past the plan). Cached per model
 * and size in the rates cache (mp_calib.c), as layer 0's forward. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_calib.h"
#include "mp_data.h"
#include "mp_mem.h"

#define SET_BYTES (64u << 20)
#define TEXT_BYTES (4u << 20)
#define DRAW_SEED 88172645463325252u /* any nonzero xorshift state */
/* n bytes, written, in the pages a loaded data set gets (mp_mem_alloc). */
static void *written(size_t n)
{
    void *p = mp_mem_alloc(n);
    if (p)
        memset(p, 0x3c, n); /* floats of 0.0115, bytes '<': any values, all pages mapped */
    return p;
}

/* The stand-in sets, written once and kept for every size of a calibration (64 MiB took 0.1 to
 * 0.25 s to map here, per size before they were kept). */
static struct {
    float *x;
    int32_t *y;
    uint8_t *text;
    size_t x_rows, x_len, y_len; /* rows of x_len floats and y_len labels */
    uint64_t draw;               /* xorshift state: every gather of a calibration draws anew */
} set = {.draw = DRAW_SEED};

void mp__calib_input_free(void)
{
    free(set.x), free(set.y), free(set.text);
    memset(&set, 0, sizeof set);
    set.draw = DRAW_SEED;
}

double mp__calib_input_s(const struct mp_model *m, size_t mb)
{
    struct mp_dataset ds = {.sample_len = mp_layer_in_len(&m->layers[1]),
                            .label_len = m->label_len ? m->label_len : 1};
    size_t len = ds.sample_len, labels = ds.label_len;
    int fresh = 0; /* the set was written just now: its first half is out of the cache already */
    if (m->tokens) {
        if (!set.text)
            set.text = written(TEXT_BYTES);
        ds.text = set.text, ds.text_len = TEXT_BYTES;
        ds.n = (TEXT_BYTES - len - 1) / len;
    } else {
        if (set.x_len != len || set.y_len != labels) {
            mp__calib_input_free(); /* another model's shapes: never within one calibration */
            set.x_rows = SET_BYTES / (len * sizeof(float)) + 1;
            set.x = written(set.x_rows * len * sizeof(float));
            set.y = calloc(set.x_rows * labels, sizeof(int32_t)); /* 4 bytes a row; 0 is a class */
            set.x_len = len, set.y_len = labels;
            fresh = 1;
        }
        ds.x = set.x, ds.y = set.y, ds.n = set.x_rows;
    }
    float *x = malloc(mb * len * sizeof *x);
    int32_t *y = malloc(mb * labels * sizeof *y);
    uint32_t *idx = malloc(mb * sizeof *idx);
    double t[21], sec = 0;
    if (x && y && idx && (ds.text || (ds.x && ds.y))) {
        uint64_t r = set.draw;
        size_t n = 0;
        if (!m->tokens && !fresh) { /* the rows' half out of the last-level cache again */
            size_t half = set.x_rows / 2 * len;
            memset(set.x + half, 0x3c, (set.x_rows * len - half) * sizeof(float));
        }
        for (int k = 0; k < 21; k++) { /* the first call maps the buffers: not timed */
            for (size_t i = 0; i < mb; i++) {
                r ^= r << 13, r ^= r >> 7, r ^= r << 17; /* xorshift: scattered rows */
                idx[i] = m->tokens ? (uint32_t)(r % ds.n) * (uint32_t)len
                                   : (uint32_t)(r % (ds.n / 2 + 1));
            }
            double t0 = mp__calib_now();
            mp_data_gather(&ds, idx, mb, x, y);
            if (k)
                t[n++] = mp__calib_now() - t0;
        }
        sec = mp_median(t, n);
        set.draw = r;
    }
    free(x), free(y), free(idx);
    return sec;
}
