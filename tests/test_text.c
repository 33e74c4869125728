/* Byte-level text data (engine/data/mp_text.c, DESIGN.md §9), tested as claims: the 90/10 split,
 * an epoch of ⌊train bytes / T⌋ windows, training windows of T ids and the T next bytes, offsets
 * drawn from (seed, step, k) only and always in range, the `--shuffle off` formula, validation
 * window j at byte j·T, and every bad file (empty, too short in either split, a byte beyond V)
 * rejected as MP_ERR_INPUT naming the file, a missing one as MP_ERR_IO (DESIGN.md §4: exit 3,
 * unreadable); and `text:fortunes` as the package's files
 * without a dot concatenated in name order, compared with what python3 reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_data.h"

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mpipe-test-text-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes len bytes to tmpdir/name and returns "text:PATH" in src. */
static void write_text(const char *name, const uint8_t *buf, size_t len, char *src, size_t cap)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    snprintf(src, cap, "text:%s", path);
}

/* Bytes b[i] = (i * 7 + i / 13) % mod: every position distinguishable, values below mod. */
static uint8_t *pattern(size_t n, unsigned mod)
{
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)((i * 7 + i / 13) % mod);
    return b;
}

static void load_ok(struct mp_data *d, const char *src, size_t T, size_t V)
{
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_data_load(d, src, T, V, 1, &err))
        fail_msg("%s", err.msg);
}

static void load_fails_as(const char *src, size_t T, size_t V, enum mp_status code,
                          const char *needle1, const char *needle2)
{
    struct mp_data d;
    struct mp_err err;
    mp_err_clear(&err);
    memset(&d, 0, sizeof d);
    assert_int_equal(mp_data_load(&d, src, T, V, 1, &err), -1);
    if (err.code != code || !strstr(err.msg, needle1) || !strstr(err.msg, needle2))
        fail_msg("want [%s] with '%s' and '%s', got [%s] %s", mp_status_name(code), needle1,
                 needle2, mp_status_name(err.code), err.msg);
    assert_null(d.bytes);
    assert_null(d.test.x);
}

static void load_fails(const char *src, size_t T, size_t V, const char *needle1,
                       const char *needle2)
{
    load_fails_as(src, T, V, MP_ERR_INPUT, needle1, needle2);
}

static void test_split_is_the_first_nine_tenths_for_training(void **state)
{
    (void)state;
    const size_t N = 1237, T = 9; /* ⌊9 · 1237 / 10⌋ = 1113 */
    uint8_t *b = pattern(N, 256);
    char src[300];
    write_text("split.txt", b, N, src, sizeof src);
    struct mp_data d;
    load_ok(&d, src, T, 256);
    assert_int_equal(d.n_bytes, N);
    assert_memory_equal(d.bytes, b, N);
    assert_int_equal(d.train.text_len, 1113);
    assert_ptr_equal(d.train.text, d.bytes);
    assert_int_equal(d.train.n, 1113 / T); /* an epoch: ⌊train bytes / T⌋ windows */
    assert_int_equal(d.train.sample_len, T);
    assert_int_equal(d.train.label_len, T);
    /* Validation windows j = 0 .. ⌊(124 − 1) / T⌋ − 1 start at byte j·T of the 124-byte split. */
    size_t v_len = N - 1113;
    assert_int_equal(d.test.n, (v_len - 1) / T);
    for (size_t j = 0; j < d.test.n; j++)
        for (size_t t = 0; t < T; t++) {
            assert_true(d.test.x[j * T + t] == (float)b[1113 + j * T + t]);
            assert_int_equal(d.test.y[j * T + t], b[1113 + j * T + t + 1]);
        }
    mp_data_free(&d);
    /* Sizes where 9N/10 is whole, and where the split leaves the validation part exactly T + 1. */
    write_text("exact.txt", b, 110, src, sizeof src);
    load_ok(&d, src, 10, 256);
    assert_int_equal(d.train.text_len, 99);
    assert_int_equal(d.test.n, 1);
    mp_data_free(&d);
    free(b);
}

/* A training window: T ids and the T bytes after each, at the drawn offset. */
static void test_training_window_is_t_ids_and_the_next_t_bytes(void **state)
{
    (void)state;
    const size_t N = 500, T = 7;
    uint8_t *b = pattern(N, 256);
    char src[300];
    write_text("win.txt", b, N, src, sizeof src);
    struct mp_data d;
    load_ok(&d, src, T, 256);
    uint32_t idx[3] = {0, 17, (uint32_t)(d.train.text_len - T - 1)};
    float x[3 * 7];
    int32_t y[3 * 7], y2[3 * 7];
    mp_data_gather(&d.train, idx, 3, x, y);
    mp_data_labels(&d.train, idx, 3, y2);
    for (size_t i = 0; i < 3; i++)
        for (size_t t = 0; t < T; t++) {
            assert_true(x[i * T + t] == (float)b[idx[i] + t]);
            assert_int_equal(y[i * T + t], b[idx[i] + t + 1]);
        }
    assert_memory_equal(y, y2, sizeof y);
    mp_data_free(&d);
    free(b);
}

/* Offsets come from (seed, step, k) alone: the same for any batch size it is part of, another for
 * another seed or step, and always a whole window inside the training split. */
static void test_offsets_depend_only_on_seed_step_and_index_and_stay_in_range(void **state)
{
    (void)state;
    struct mp_dataset ds = {.sample_len = 10, .label_len = 10, .text_len = 1000};
    uint8_t dummy[1];
    ds.text = dummy;
    uint32_t a[64], b[16], c[64], e[64];
    mp_data_text_offsets(&ds, a, 64, 5, 3, 1);
    mp_data_text_offsets(&ds, b, 16, 5, 3, 1);
    assert_memory_equal(a, b, sizeof b);
    mp_data_text_offsets(&ds, c, 64, 6, 3, 1);
    mp_data_text_offsets(&ds, e, 64, 5, 4, 1);
    size_t same_seed = 0, same_step = 0, distinct = 0;
    for (int k = 0; k < 64; k++) {
        same_seed += a[k] == c[k];
        same_step += a[k] == e[k];
        distinct += k == 0 || a[k] != a[k - 1];
    }
    assert_true(same_seed < 4 && same_step < 4 && distinct > 60);
    /* In range for every step: the window's last label, offset + T, is a training byte. */
    uint32_t max = 0, min = UINT32_MAX;
    for (uint64_t s = 0; s < 200; s++) {
        mp_data_text_offsets(&ds, a, 64, 11, s, 1);
        for (int k = 0; k < 64; k++) {
            assert_true(a[k] + ds.sample_len < ds.text_len);
            max = a[k] > max ? a[k] : max;
            min = a[k] < min ? a[k] : min;
        }
    }
    assert_int_equal(max, 1000 - 10 - 1); /* 12800 draws over 990 offsets reach both ends */
    assert_int_equal(min, 0);
}

/* --shuffle off: offset ((s · B + k) · T) mod (train bytes − T), in file order and wrapping. */
static void test_shuffle_off_walks_the_file_in_order(void **state)
{
    (void)state;
    struct mp_dataset ds = {.sample_len = 7, .label_len = 7, .text_len = 100};
    uint8_t dummy[1];
    ds.text = dummy;
    const size_t B = 4;
    for (uint64_t s = 0; s < 10; s++) {
        uint32_t idx[4];
        mp_data_text_offsets(&ds, idx, B, 99, s, 0);
        for (size_t k = 0; k < B; k++)
            assert_int_equal(idx[k], ((s * B + k) * 7) % (100 - 7));
    }
    uint32_t first[4];
    mp_data_text_offsets(&ds, first, B, 99, 0, 0);
    assert_int_equal(first[0], 0);
    assert_int_equal(first[3], 21);
}

static void test_bad_text_files_are_rejected_naming_file_and_sizes(void **state)
{
    (void)state;
    char src[320], path[256];
    /* Missing, and empty. */
    snprintf(src, sizeof src, "text:%s/nope.txt", tmpdir);
    load_fails_as(src, 8, 256, MP_ERR_IO, "nope.txt", "cannot read"); /* unreadable: exit 3 */
    write_text("empty.txt", (const uint8_t *)"", 0, src, sizeof src);
    load_fails(src, 8, 256, "empty.txt: 0 bytes", "T + 1 = 9");
    /* 100 bytes, T = 10: 90 train, 10 validate, one short of a window. */
    uint8_t *b = pattern(200, 256);
    write_text("short_val.txt", b, 100, src, sizeof src);
    load_fails(src, 10, 256, "short_val.txt: 100 bytes split into 90 training and 10 validation",
               "at least T + 1 = 11");
    /* The training split short while the validation split is not cannot happen (9:1), so a file
     * just too short for both: 20 bytes, T = 18. */
    write_text("short_both.txt", b, 20, src, sizeof src);
    load_fails(src, 18, 256, "short_both.txt: 20 bytes split into 18 training and 2 validation",
               "T + 1 = 19");
    /* A byte that is not an id of the model: offset and value named. */
    uint8_t *v = pattern(300, 60);
    v[217] = 61;
    write_text("big_byte.txt", v, 300, src, sizeof src);
    load_fails(src, 8, 61, "big_byte.txt: byte 217: value 61", "vocabulary of 61");
    struct mp_data d;
    load_ok(&d, src, 8, 62);
    mp_data_free(&d);
    /* A directory is not a text file: unreadable as one, an I/O failure (exit 3) like a
     * directory given as any other file. */
    snprintf(path, sizeof path, "%s/adir", tmpdir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(src, sizeof src, "text:%s", path);
    {
        struct mp_err err;
        mp_err_clear(&err);
        memset(&d, 0, sizeof d);
        assert_int_equal(mp_data_load(&d, src, 8, 256, 1, &err), -1);
        if (err.code != MP_ERR_IO || !strstr(err.msg, "adir"))
            fail_msg("a directory: [%s] %s", mp_status_name(err.code), err.msg);
    }
    free(b);
    free(v);
}

/* text:fortunes is the package's files without a dot, in name order: compared byte for byte with
 * python3's sorted(os.listdir()) concatenation. Skipped when either is missing. */
static void test_fortunes_is_the_dotless_files_in_name_order(void **state)
{
    (void)state;
    struct stat st;
    if (stat(MP_FORTUNES_DIR, &st) != 0 || system("python3 -c '' 2>/dev/null") != 0) {
        print_message("SKIP: %s or python3 missing\n", MP_FORTUNES_DIR);
        skip();
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 -c \"import os, sys; d = '%s'; "
             "sys.stdout.buffer.write(b''.join(open(os.path.join(d, f), 'rb').read() "
             "for f in sorted(os.listdir(d)) if '.' not in f))\"", MP_FORTUNES_DIR);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 20, len = 0;
    uint8_t *want = malloc(cap);
    assert_non_null(want);
    for (size_t got; (got = fread(want + len, 1, cap - len, p)) > 0;) {
        len += got;
        if (len == cap) {
            want = realloc(want, cap *= 2);
            assert_non_null(want);
        }
    }
    assert_int_equal(pclose(p), 0);
    struct mp_data d;
    load_ok(&d, "text:fortunes", 128, 256);
    assert_true(len > 100000);
    assert_int_equal(d.n_bytes, len);
    assert_memory_equal(d.bytes, want, len);
    mp_data_free(&d);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_is_the_first_nine_tenths_for_training),
        cmocka_unit_test(test_training_window_is_t_ids_and_the_next_t_bytes),
        cmocka_unit_test(test_offsets_depend_only_on_seed_step_and_index_and_stay_in_range),
        cmocka_unit_test(test_shuffle_off_walks_the_file_in_order),
        cmocka_unit_test(test_bad_text_files_are_rejected_naming_file_and_sizes),
        cmocka_unit_test(test_fortunes_is_the_dotless_files_in_name_order),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
