/* Data loading: IDX files plain and gzip'd (written to a temp dir), each malformed case rejected
 * with the right status and the byte offset in the message, MNIST-named directories, synthetic
 * data (deterministic per seed, shaped, learnable), the per-epoch order and the batch gather, and
 * the real Fashion-MNIST files when the Debian package is installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "mp_data.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mpipe-test-data-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *name, const void *buf, size_t len, int gz)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        if (len)
            assert_int_equal(gzwrite(f, buf, (unsigned)len), (int)len);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(buf, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
    }
}

/* An IDX image of dims (2, 3, 4) with bytes 0..23. */
static size_t good_idx(uint8_t *b)
{
    const uint8_t hdr[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    memcpy(b, hdr, sizeof hdr);
    for (int i = 0; i < 24; i++)
        b[16 + i] = (uint8_t)i;
    return 40;
}

static void check_good(const struct mp_idx *idx)
{
    assert_int_equal(idx->ndim, 3);
    assert_int_equal(idx->dims[0], 2);
    assert_int_equal(idx->dims[1], 3);
    assert_int_equal(idx->dims[2], 4);
    assert_int_equal(idx->len, 24);
    for (int i = 0; i < 24; i++)
        assert_int_equal(idx->data[i], i);
}

static void test_idx_plain_and_gzip_files_read_the_same(void **state)
{
    (void)state;
    uint8_t b[64];
    size_t n = good_idx(b);
    write_file("good", b, n, 0);
    write_file("good.gz", b, n, 1);
    const char *names[] = {"good", "good.gz"};
    for (int i = 0; i < 2; i++) {
        char path[256];
        struct mp_idx idx;
        struct mp_err err;
        mp_err_clear(&err);
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        assert_int_equal(mp_idx_read(&idx, path, &err), 0);
        check_good(&idx);
        mp_idx_free(&idx);
    }
    struct mp_idx idx;
    assert_int_equal(mp_idx_parse(&idx, "mem", b, n, NULL), 0);
    check_good(&idx);
    mp_idx_free(&idx);
}

struct bad_case {
    const char *what;
    size_t len;            /* bytes of the good file kept (after the edit) */
    int edit_at, edit_to;  /* one byte changed, or -1 */
    enum mp_status code;
    const char *at;        /* "byte N:" expected in the message */
};

/* Truncation (the file ends before the header says) is MP_ERR_IO per mp_data.h and DESIGN.md §4
 * (exit 3); malformed content is MP_ERR_INPUT (exit 2). */
static const struct bad_case bad_cases[] = {
    {"bad magic", 40, 1, 1, MP_ERR_INPUT, "byte 0:"},
    {"bad type", 40, 2, 0x0d, MP_ERR_INPUT, "byte 2:"},
    {"zero dims", 40, 3, 0, MP_ERR_INPUT, "byte 3:"},
    {"too many dims", 40, 3, 5, MP_ERR_INPUT, "byte 3:"},
    {"zero dim", 40, 11, 0, MP_ERR_INPUT, "byte 8:"},
    {"truncated data", 30, -1, 0, MP_ERR_IO, "byte 30:"},
    {"extra trailing bytes", 41, -1, 0, MP_ERR_INPUT, "byte 40:"},
    {"lying header larger than file", 40, 7, 200, MP_ERR_IO, "byte 40:"},
    {"truncated header", 10, -1, 0, MP_ERR_IO, "byte 10:"},
    {"empty file", 0, -1, 0, MP_ERR_IO, "byte 0:"},
    {"more than 4 GiB", 40, 4, 0x80, MP_ERR_INPUT, "byte 8:"},
};

static void expect_bad(const struct bad_case *c, int rc, const struct mp_err *err, const char *nm)
{
    if (rc != -1 || err->code != c->code || !strstr(err->msg, c->at) || !strstr(err->msg, nm))
        fail_msg("%s: rc %d code %s msg '%s' (wanted %s with '%s')", c->what, rc,
                 mp_status_name(err->code), err->msg, mp_status_name(c->code), c->at);
}

static void test_idx_malformed_rejected_with_byte_offset(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
        const struct bad_case *c = &bad_cases[k];
        uint8_t b[64] = {0};
        good_idx(b);
        if (c->edit_at >= 0)
            b[c->edit_at] = (uint8_t)c->edit_to;
        for (int gz = 0; gz < 2; gz++) {
            char name[32], path[256];
            struct mp_idx idx;
            struct mp_err err;
            snprintf(name, sizeof name, "bad%zu%s", k, gz ? ".gz" : "");
            write_file(name, b, c->len, gz);
            snprintf(path, sizeof path, "%s/%s", tmpdir, name);
            mp_err_clear(&err);
            expect_bad(c, mp_idx_read(&idx, path, &err), &err, name);
            assert_null(idx.data);
        }
        struct mp_idx idx;
        struct mp_err err;
        mp_err_clear(&err);
        expect_bad(c, mp_idx_parse(&idx, "mem.idx", b, c->len, &err), &err, "mem.idx");
    }
}

static void test_idx_missing_file_is_io_error(void **state)
{
    (void)state;
    struct mp_idx idx;
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_idx_read(&idx, "/nonexistent/x-idx3-ubyte", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x-idx3-ubyte: cannot read: "));
}

/* A damaged gzip stream is malformed content, not an I/O failure. */
static void test_idx_corrupt_gzip_is_input_error(void **state)
{
    (void)state;
    uint8_t b[64];
    size_t n = good_idx(b);
    write_file("corrupt.gz", b, n, 1);
    char path[256];
    snprintf(path, sizeof path, "%s/corrupt.gz", tmpdir);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 12, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 12, SEEK_SET);
    fputc(c ^ 0xff, f);
    fclose(f);
    struct mp_idx idx;
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_idx_read(&idx, path, &err), -1);
    if (err.code != MP_ERR_INPUT || !strstr(err.msg, "corrupt.gz: byte "))
        fail_msg("%s: %s", mp_status_name(err.code), err.msg);
}

/* An MNIST-named directory with 2x2 images: train gzip'd, test plain. */
static void write_mnist_dir(const char *dir, uint8_t bad_label, uint32_t n_test_labels)
{
    char sub[128];
    snprintf(sub, sizeof sub, "%s/%s", tmpdir, dir);
    mkdir(sub, 0700);
    uint8_t im[16 + 3 * 4] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
    for (int i = 0; i < 12; i++)
        im[16 + i] = (uint8_t)(i * 20);
    im[16 + 11] = 255;
    uint8_t lb[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 0, 1, bad_label};
    char name[160];
    snprintf(name, sizeof name, "%s/train-images-idx3-ubyte.gz", dir);
    write_file(name, im, sizeof im, 1);
    snprintf(name, sizeof name, "%s/train-labels-idx1-ubyte.gz", dir);
    write_file(name, lb, sizeof lb, 1);
    snprintf(name, sizeof name, "%s/t10k-images-idx3-ubyte", dir);
    write_file(name, im, sizeof im, 0);
    lb[7] = (uint8_t)n_test_labels;
    snprintf(name, sizeof name, "%s/t10k-labels-idx1-ubyte", dir);
    write_file(name, lb, 8 + n_test_labels, 0);
}

static int load_dir(struct mp_data *d, const char *dir, struct mp_err *err)
{
    char src[256];
    snprintf(src, sizeof src, "mnist-dir:%s/%s", tmpdir, dir);
    mp_err_clear(err);
    return mp_data_load(d, src, 4, 3, 1, err);
}

static void test_mnist_dir_loads_gzip_and_plain_as_x_over_255(void **state)
{
    (void)state;
    write_mnist_dir("ok", 2, 3);
    struct mp_data d;
    struct mp_err err;
    assert_int_equal(load_dir(&d, "ok", &err), 0);
    assert_int_equal(d.train.n, 3);
    assert_int_equal(d.test.n, 3);
    assert_int_equal(d.train.sample_len, 4);
    assert_true(d.train.x[1] == 20.0f / 255.0f);
    assert_true(d.test.x[11] == 1.0f);
    assert_int_equal(d.train.y[2], 2);
    mp_data_free(&d);
}

static void test_mnist_dir_rejects_wrong_labels_and_shapes(void **state)
{
    (void)state;
    struct mp_data d;
    struct mp_err err;
    write_mnist_dir("badlabel", 3, 3);
    assert_int_equal(load_dir(&d, "badlabel", &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    assert_non_null(strstr(err.msg, "train-labels-idx1-ubyte.gz: byte 10: label 3"));
    write_mnist_dir("count", 2, 2);
    assert_int_equal(load_dir(&d, "count", &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    assert_non_null(strstr(err.msg, "t10k-labels-idx1-ubyte: byte 4:"));
    char src[256];
    snprintf(src, sizeof src, "mnist-dir:%s/ok", tmpdir);
    assert_int_equal(mp_data_load(&d, src, 784, 10, 1, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte.gz: byte 8:"));
    assert_int_equal(load_dir(&d, "missing", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
}

static void test_synthetic_is_deterministic_per_seed_and_shaped(void **state)
{
    (void)state;
    struct mp_data a, b, c;
    assert_int_equal(mp_data_load(&a, "synthetic:200", 784, 10, 7, NULL), 0);
    assert_int_equal(mp_data_load(&b, "synthetic:200", 784, 10, 7, NULL), 0);
    assert_int_equal(mp_data_load(&c, "synthetic:200", 784, 10, 8, NULL), 0);
    assert_int_equal(a.train.n, 200);
    assert_int_equal(a.test.n, 50);
    assert_int_equal(a.train.sample_len, 784);
    assert_memory_equal(a.train.x, b.train.x, 200 * 784 * sizeof(float));
    assert_memory_equal(a.train.y, b.train.y, 200 * sizeof(int32_t));
    assert_memory_equal(a.test.x, b.test.x, 50 * 784 * sizeof(float));
    assert_memory_not_equal(a.train.x, c.train.x, 200 * 784 * sizeof(float));
    for (size_t i = 0; i < 200 * 784; i++)
        assert_true(a.train.x[i] >= 0.0f && a.train.x[i] <= 1.0f);
    for (size_t i = 0; i < 200; i++)
        assert_in_range(a.train.y[i], 0, 9);
    mp_data_free(&a);
    mp_data_free(&b);
    mp_data_free(&c);
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_data_load(&a, "synthetic:1", 3, 2, 0, &err), 0);
    assert_int_equal(a.test.n, 1);
    mp_data_free(&a);
    assert_int_equal(mp_data_load(&a, "synthetic:0", 3, 2, 0, &err), -1);
    assert_int_equal(err.code, MP_ERR_USAGE);
    assert_int_equal(mp_data_load(&a, "synthetic:12x", 3, 2, 0, &err), -1);
    assert_int_equal(mp_data_load(&a, "imagenet", 3, 2, 0, &err), -1);
    assert_int_equal(err.code, MP_ERR_USAGE);
}

/* Learnable: class means estimated on the training set classify the test set well, which a model
 * trained for a few steps can also find. */
static void test_synthetic_is_learnable_by_nearest_class_mean(void **state)
{
    (void)state;
    enum { L = 64, K = 5 };
    struct mp_data d;
    assert_int_equal(mp_data_load(&d, "synthetic:500", L, K, 3, NULL), 0);
    double mean[K][L] = {{0}}, cnt[K] = {0};
    for (size_t i = 0; i < d.train.n; i++) {
        cnt[d.train.y[i]] += 1;
        for (int j = 0; j < L; j++)
            mean[d.train.y[i]][j] += d.train.x[i * L + j];
    }
    size_t right = 0;
    for (size_t i = 0; i < d.test.n; i++) {
        int best = -1;
        double best_d = 1e300;
        for (int k = 0; k < K; k++) {
            double dist = 0;
            for (int j = 0; j < L; j++) {
                double e = d.test.x[i * L + j] - mean[k][j] / (cnt[k] ? cnt[k] : 1);
                dist += e * e;
            }
            if (dist < best_d) {
                best_d = dist;
                best = k;
            }
        }
        right += best == d.test.y[i];
    }
    assert_true(right >= d.test.n * 9 / 10);
    mp_data_free(&d);
}

static void test_order_is_a_permutation_fixed_by_seed_and_epoch(void **state)
{
    (void)state;
    enum { N = 1000 };
    static uint32_t p[N], q[N], r[N], s[N];
    static char seen[N];
    mp_data_order(p, N, 42, 3, 1);
    mp_data_order(q, N, 42, 3, 1);
    mp_data_order(r, N, 42, 4, 1);
    mp_data_order(s, N, 43, 3, 1);
    assert_memory_equal(p, q, sizeof p);
    assert_memory_not_equal(p, r, sizeof p);
    assert_memory_not_equal(p, s, sizeof p);
    for (size_t i = 0; i < N; i++) {
        assert_true(p[i] < N && !seen[p[i]]);
        seen[p[i]] = 1;
    }
    mp_data_order(p, N, 42, 3, 0);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(p[i], i);
    mp_data_order(p, 1, 42, 3, 1);
    assert_int_equal(p[0], 0);
}

static void test_gather_copies_samples_in_index_order(void **state)
{
    (void)state;
    float x[3 * 2] = {0, 1, 10, 11, 20, 21}, out[2 * 2];
    int32_t y[3] = {5, 6, 7}, yo[2];
    struct mp_dataset ds = {.n = 3, .sample_len = 2, .x = x, .y = y};
    const uint32_t idx[2] = {2, 0};
    mp_data_gather(&ds, idx, 2, out, yo);
    const float want[4] = {20, 21, 0, 1};
    assert_memory_equal(out, want, sizeof want);
    assert_int_equal(yo[0], 7);
    assert_int_equal(yo[1], 5);
}

static void test_fashion_mnist_loads_when_installed(void **state)
{
    (void)state;
    if (access(MP_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0)
        skip();
    struct mp_data d;
    struct mp_err err;
    mp_err_clear(&err);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long before_kb = ru.ru_maxrss;
    if (mp_data_load(&d, "fashion-mnist", 784, 10, 0, &err))
        fail_msg("%s", err.msg);
    getrusage(RUSAGE_SELF, &ru);
    /* The images' bytes are read into the floats they become, not beside them: loading raises
     * the peak by the set's own bytes (220 MB), not 47 MB more (tiny_mlp.mp's peak was its load,
     * 3-4 MB over its prediction). */
    double grew = (double)(ru.ru_maxrss - before_kb) * 1024.0, held = mp_data_bytes(&d);
    if (grew > held + 4.0 * 1048576.0 && !SANITIZED) /* ASan's shadow adds an eighth */
        fail_msg("loading raised the peak RSS by %.1f MB for %.1f MB of data", grew / 1e6,
                 held / 1e6);
    struct mp_idx raw;
    assert_int_equal(mp_idx_read(&raw, MP_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", &err),
                     0);
    assert_int_equal(raw.len, 60000 * 784);
    for (size_t i = 0; i < raw.len; i++) /* the same floats as converting the bytes apart */
        if (d.train.x[i] != (float)raw.data[i] / 255.0f)
            fail_msg("train image value %zu: %g, byte %u", i, (double)d.train.x[i],
                     raw.data[i]);
    mp_idx_free(&raw);
    assert_int_equal(d.train.n, 60000);
    assert_int_equal(d.test.n, 10000);
    assert_int_equal(d.train.sample_len, 784);
    size_t count[10] = {0};
    for (size_t i = 0; i < d.train.n; i++) {
        assert_in_range(d.train.y[i], 0, 9);
        count[d.train.y[i]]++;
    }
    for (int k = 0; k < 10; k++)
        assert_int_equal(count[k], 6000); /* Fashion-MNIST is balanced */
    float lo = 1, hi = 0;
    for (size_t i = 0; i < d.test.n * 784; i++) {
        lo = d.test.x[i] < lo ? d.test.x[i] : lo;
        hi = d.test.x[i] > hi ? d.test.x[i] : hi;
    }
    assert_true(lo == 0.0f && hi == 1.0f);
    mp_data_free(&d);
    assert_int_equal(mp_data_load(&d, "fashion-mnist", 100, 10, 0, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_plain_and_gzip_files_read_the_same),
        cmocka_unit_test(test_idx_malformed_rejected_with_byte_offset),
        cmocka_unit_test(test_idx_missing_file_is_io_error),
        cmocka_unit_test(test_idx_corrupt_gzip_is_input_error),
        cmocka_unit_test(test_mnist_dir_loads_gzip_and_plain_as_x_over_255),
        cmocka_unit_test(test_mnist_dir_rejects_wrong_labels_and_shapes),
        cmocka_unit_test(test_synthetic_is_deterministic_per_seed_and_shaped),
        cmocka_unit_test(test_synthetic_is_learnable_by_nearest_class_mean),
        cmocka_unit_test(test_order_is_a_permutation_fixed_by_seed_and_epoch),
        cmocka_unit_test(test_gather_copies_samples_in_index_order),
        cmocka_unit_test(test_fashion_mnist_loads_when_installed),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
