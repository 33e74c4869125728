/* safetensors: round trip, tensors sorted by name (byte order), byte-identical output for the same
 * numbers, aligned and space-padded header, a python3 check that parses the file the way the
 * safetensors package does, each malformed file rejected with MP_ERR_INPUT and the byte offset,
 * and write failures that leave neither a temp file nor a changed target. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_safetensors.h"

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mpipe-test-st-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const float w10[6] = {1, 2, 3, 4, 5, 6}, w2[2] = {-1.5f, 0.25f}, b1[3] = {7, 8, 9};
static const float scalar[1] = {3.5f};

/* Given out of order; "L10.weight" sorts before "L2.weight" in byte order. */
static size_t sample(struct mp_st_tensor *t)
{
    t[0] = (struct mp_st_tensor){.name = "L2.weight", .ndim = 2, .shape = {1, 2}, .data = w2,
                                 .numel = 2};
    t[1] = (struct mp_st_tensor){.name = "L10.weight", .ndim = 2, .shape = {2, 3}, .data = w10,
                                 .numel = 6};
    t[2] = (struct mp_st_tensor){.name = "L1.bias", .ndim = 1, .shape = {3}, .data = b1,
                                 .numel = 3};
    t[3] = (struct mp_st_tensor){.name = "L0.empty", .ndim = 2, .shape = {0, 4}, .numel = 0};
    t[4] = (struct mp_st_tensor){.name = "L3.scalar", .ndim = 0, .data = scalar, .numel = 1};
    return 5;
}

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 1);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

/* The sample written to tmpdir/name (its path in path); its tensors in t. */
static size_t write_sample(struct mp_st_tensor *t, char *path, size_t cap, const char *name)
{
    size_t n = sample(t);
    path_of(path, cap, name);
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_st_write(path, t, n, &err), 0);
    return n;
}

static void test_round_trip_sorted_by_name(void **state)
{
    (void)state;
    struct mp_st_tensor t[5];
    char path[128];
    write_sample(t, path, sizeof path, "rt.safetensors");
    struct mp_err err;
    mp_err_clear(&err);
    struct mp_st_file f;
    if (mp_st_open(&f, path, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(f.n, 5);
    const char *order[] = {"L0.empty", "L1.bias", "L10.weight", "L2.weight", "L3.scalar"};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(f.t[i].name, order[i]);
        assert_null(f.t[i].data); /* read only when copied */
        if (i > 0) /* data laid out consecutively in name order */
            assert_true(f.t[i].at == f.t[i - 1].at + 4 * f.t[i - 1].numel);
    }
    const struct mp_st_tensor *w = mp_st_find(&f, "L10.weight");
    assert_non_null(w);
    assert_int_equal(w->ndim, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    float got[6] = {0};
    assert_int_equal(mp_st_copy(&f, w, got, &err), 0);
    assert_memory_equal(got, w10, sizeof w10);
    assert_int_equal(mp_st_copy(&f, mp_st_find(&f, "L3.scalar"), got, &err), 0);
    assert_memory_equal(got, scalar, sizeof scalar);
    assert_int_equal(mp_st_find(&f, "L3.scalar")->ndim, 0);
    assert_int_equal(mp_st_find(&f, "L0.empty")->numel, 0);
    assert_null(mp_st_find(&f, "L4.weight"));
    mp_st_free(&f);
}

/* A file cut short is rejected at open, before any data is read, as the parser rejects the same
 * bytes; one cut after it was opened (a checkpoint overwritten under a resume) is an I/O error
 * naming the file and the tensor's byte when its data is read. */
static void test_truncated_file_rejected_at_open_or_copy(void **state)
{
    (void)state;
    struct mp_st_tensor t[5];
    char path[128];
    size_t n = write_sample(t, path, sizeof path, "cut.safetensors");
    struct mp_err err;
    mp_err_clear(&err);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 4), 0);
    struct mp_st_file f;
    assert_int_equal(mp_st_open(&f, path, &err), -1);
    assert_int_equal(err.code, MP_ERR_INPUT);
    assert_non_null(strstr(err.msg, "cut.safetensors: byte "));
    assert_non_null(strstr(err.msg, "outside the"));

    assert_int_equal(mp_st_write(path, t, n, &err), 0);
    assert_int_equal(mp_st_open(&f, path, &err), 0);
    assert_int_equal(truncate(path, sb.st_size - 8), 0);
    float got[6];
    const struct mp_st_tensor *last = mp_st_find(&f, "L3.scalar");
    assert_int_equal(mp_st_copy(&f, mp_st_find(&f, "L0.empty"), got, &err), 0);
    assert_int_equal(mp_st_copy(&f, last, got, &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    char want[200];
    snprintf(want, sizeof want, "cut.safetensors: cannot read tensor L3.scalar at byte %llu: "
             "the file shrank", (unsigned long long)last->at);
    assert_non_null(strstr(err.msg, want));
    mp_st_free(&f);
}

/* mp_st_write_filled: tensors without data are asked for in the file's order, once each, and the
 * file is the bytes mp_st_write makes of the same numbers; after a failed write the filler is
 * still asked for every one (a producer on another rank must not be left waiting). */
struct fill_log {
    const struct mp_st_tensor *src; /* the numbers, by position in the caller's array */
    const struct mp_st_tensor *base;
    char asked[8][96];
    int n;
};

static int fill_from(void *ctx, const struct mp_st_tensor *t, float *dst, struct mp_err *err)
{
    (void)err;
    struct fill_log *f = ctx;
    snprintf(f->asked[f->n++ % 8], sizeof f->asked[0], "%s", t->name);
    memcpy(dst, f->src[t - f->base].data, t->numel * sizeof(float));
    return 0;
}

static void test_filled_tensors_asked_in_file_order_once_each(void **state)
{
    (void)state;
    struct mp_st_tensor t[5], holes[5];
    size_t n = sample(t);
    memcpy(holes, t, sizeof t);
    holes[0].data = holes[1].data = holes[4].data = NULL; /* L2.weight, L10.weight, L3.scalar */
    char a[128], b[128];
    path_of(a, sizeof a, "plain.safetensors");
    path_of(b, sizeof b, "filled.safetensors");
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_st_write(a, t, n, &err), 0);
    struct fill_log f = {.src = t, .base = holes};
    assert_int_equal(mp_st_write_filled(b, holes, n, fill_from, &f, &err), 0);
    assert_int_equal(f.n, 3);
    assert_string_equal(f.asked[0], "L10.weight");
    assert_string_equal(f.asked[1], "L2.weight");
    assert_string_equal(f.asked[2], "L3.scalar");
    size_t la, lb;
    uint8_t *x = slurp(a, &la), *y = slurp(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, la);
    free(x), free(y);
    struct fill_log g = {.src = t, .base = holes};
    assert_int_equal(mp_st_write_filled("/nonexistent/dir/f.safetensors", holes, n, fill_from, &g,
                                        &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    assert_int_equal(g.n, 3);
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Opening reads the header only and a copy reads into its destination: loading a 32 MiB tensor
 * into memory already touched raises the process's peak RSS by far less than the file (a
 * whole-file read raised it by the file's size, which no plan predicts: 34 MB a rank on resuming
 * gpt.mp). */
static void test_loading_costs_no_copy_of_the_file(void **state)
{
    (void)state;
    enum { N = 8 << 20 };
    float *buf = malloc(N * sizeof *buf);
    assert_non_null(buf);
    for (size_t i = 0; i < N; i++)
        buf[i] = (float)(i % 1000) - 500.0f;
    struct mp_st_tensor t = {.name = "L1.weight", .ndim = 2, .shape = {N / 1024, 1024},
                             .data = buf, .numel = N};
    char path[128];
    path_of(path, sizeof path, "big.safetensors");
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_st_write(path, &t, 1, &err), 0);
    memset(buf, 0, N * sizeof *buf);
    long before = peak_rss_kb();
    struct mp_st_file f;
    assert_int_equal(mp_st_open(&f, path, &err), 0);
    assert_int_equal(mp_st_copy(&f, mp_st_find(&f, "L1.weight"), buf, &err), 0);
    mp_st_free(&f);
    long grew_kb = peak_rss_kb() - before;
    for (size_t i = 0; i < N; i += 4099)
        assert_true(buf[i] == (float)(i % 1000) - 500.0f);
    free(buf);
    unlink(path);
    if (grew_kb > 4096)
        fail_msg("loading a %d MiB file raised the peak RSS by %ld KiB", (int)(N * 4 >> 20),
                 grew_kb);
}

static void test_identical_inputs_give_identical_bytes_and_padded_header(void **state)
{
    (void)state;
    struct mp_st_tensor t[5], r[5];
    size_t n = sample(t);
    for (size_t i = 0; i < n; i++)
        r[i] = t[n - 1 - i]; /* another input order */
    char a[128], b[128];
    path_of(a, sizeof a, "a.safetensors");
    path_of(b, sizeof b, "b.safetensors");
    assert_int_equal(mp_st_write(a, t, n, NULL), 0);
    assert_int_equal(mp_st_write(b, r, n, NULL), 0);
    size_t la, lb;
    uint8_t *ba = slurp(a, &la), *bb = slurp(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ba, bb, la);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)ba[i] << (8 * i);
    assert_int_equal(hl % 8, 0);
    assert_int_equal(la, 8 + hl + 4 * 12);
    const char *want = "{\"L0.empty\":{\"data_offsets\":[0,0],\"dtype\":\"F32\",\"shape\":[0,4]}";
    assert_memory_equal(ba + 8, want, strlen(want));
    assert_true(ba[8 + hl - 1] == ' ' || ba[8 + hl - 1] == '}');
    free(ba);
    free(bb);
}

/* The same checks as safetensors' Python loader, done by hand (the package may be absent). */
static void test_python_parses_the_file_like_safetensors(void **state)
{
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0)
        skip();
    struct mp_st_tensor t[5];
    size_t n = sample(t);
    char path[128], cmd[2048];
    path_of(path, sizeof path, "py.safetensors");
    assert_int_equal(mp_st_write(path, t, n, NULL), 0);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '\n"
             "import json, struct, sys\n"
             "b = open(sys.argv[1], \"rb\").read()\n"
             "n = struct.unpack(\"<Q\", b[:8])[0]\n"
             "assert n %% 8 == 0 and b[8:9] == b\"{\"\n"
             "h = json.loads(b[8:8 + n])\n"
             "assert list(h) == sorted(h) and \"__metadata__\" not in h\n"
             "end = 0\n"
             "for k, v in h.items():\n"
             "    s, e = v[\"data_offsets\"]\n"
             "    assert v[\"dtype\"] == \"F32\" and s == end\n"
             "    cnt = 1\n"
             "    for d in v[\"shape\"]: cnt *= d\n"
             "    assert e - s == 4 * cnt\n"
             "    end = e\n"
             "assert 8 + n + end == len(b)\n"
             "w = h[\"L10.weight\"][\"data_offsets\"][0]\n"
             "assert struct.unpack(\"<6f\", b[8 + n + w:8 + n + w + 24]) == (1, 2, 3, 4, 5, 6)\n"
             "' %s",
             path);
    assert_int_equal(system(cmd), 0);
}

/* Parses a file made of a JSON header (unpadded) and data_len zero bytes. */
static int parse_doc(const char *json, size_t data_len, struct mp_err *err)
{
    size_t hl = strlen(json), len = 8 + hl + data_len;
    uint8_t *b = calloc(len, 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    struct mp_st_file f;
    mp_err_clear(err);
    int rc = mp_st_parse(&f, "m.safetensors", b, len, err);
    mp_st_free(&f);
    return rc;
}

#define E(NAME, DT, SHAPE, B, END) \
    "\"" NAME "\":{\"dtype\":\"" DT "\",\"shape\":" SHAPE ",\"data_offsets\":[" B "," END "]}"

struct bad_doc {
    const char *what, *json;
    size_t data_len;
    long at; /* byte offset expected in the message; -1: 8 + header length + `plus` */
    long plus;
};

static const struct bad_doc bad_docs[] = {
    {"invalid JSON", "{\"a\":", 0, -2, 0},
    {"non-object", "[1,2]", 0, 8, 0},
    {"entry not an object", "{\"a\":3}", 0, 8, 0},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 8, 0},
    {"dtype F16", "{" E("a", "F16", "[2]", "0", "4") "}", 4, 8, 0},
    {"negative shape", "{" E("a", "F32", "[-1]", "0", "4") "}", 4, 8, 0},
    {"five dims", "{" E("a", "F32", "[1,1,1,1,1]", "0", "4") "}", 4, 8, 0},
    {"shape not array", "{" E("a", "F32", "\"x\"", "0", "4") "}", 4, 8, 0},
    {"huge shape", "{" E("a", "F32", "[4294967296,4294967296]", "0", "4") "}", 4, 8, 0},
    {"offsets not a pair", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
     8, 0},
    {"overlap", "{" E("a", "F32", "[2]", "0", "8") "," E("b", "F32", "[2]", "4", "12") "}", 12,
     -1, 4},
    {"gap", "{" E("a", "F32", "[1]", "0", "4") "," E("b", "F32", "[1]", "8", "12") "}", 12, -1, 4},
    {"out of range", "{" E("a", "F32", "[2]", "0", "8") "}", 4, -1, 0},
    {"begin after end", "{" E("a", "F32", "[0]", "4", "0") "}", 4, -1, 4},
    {"size mismatch", "{" E("a", "F32", "[3]", "0", "8") "}", 8, -1, 0},
    {"trailing bytes", "{" E("a", "F32", "[1]", "0", "4") "}", 8, -1, 4},
    {"bad metadata", "{\"__metadata__\":{\"k\":1}}", 0, 8, 0},
    {"duplicate key", "{" E("a", "F32", "[0]", "0", "0") "," E("a", "F32", "[0]", "0", "0") "}",
     0, -2, 0},
};

static void test_malformed_headers_rejected_with_byte_offset(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof bad_docs / sizeof bad_docs[0]; k++) {
        const struct bad_doc *c = &bad_docs[k];
        struct mp_err err;
        int rc = parse_doc(c->json, c->data_len, &err);
        char at[64];
        if (c->at == -1)
            snprintf(at, sizeof at, "m.safetensors: byte %zu:", 8 + strlen(c->json) + c->plus);
        else if (c->at == -2)
            snprintf(at, sizeof at, "m.safetensors: byte ");
        else
            snprintf(at, sizeof at, "m.safetensors: byte %ld:", c->at);
        if (rc != -1 || err.code != MP_ERR_INPUT || strncmp(err.msg, at, strlen(at)) != 0)
            fail_msg("%s: rc %d, %s: '%s' (wanted input error starting '%s')", c->what, rc,
                     mp_status_name(err.code), err.msg, at);
    }
}

static void test_header_length_checked_against_limit_and_file(void **state)
{
    (void)state;
    const uint64_t lens[] = {(uint64_t)MP_ST_MAX_HEADER + 1, 1000, UINT64_MAX};
    for (size_t k = 0; k < 3; k++) {
        uint8_t *b = calloc(64, 1);
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(lens[k] >> (8 * i));
        struct mp_st_file f;
        struct mp_err err;
        mp_err_clear(&err);
        assert_int_equal(mp_st_parse(&f, "h.safetensors", b, 64, &err), -1);
        assert_int_equal(err.code, MP_ERR_INPUT);
        assert_non_null(strstr(err.msg, "h.safetensors: byte 0: header length"));
    }
    struct mp_st_file f;
    struct mp_err err;
    assert_int_equal(mp_st_parse(&f, "e.safetensors", malloc(1), 0, &err), -1);
    assert_non_null(strstr(err.msg, "e.safetensors: byte 0:"));
}

static void test_metadata_of_strings_is_accepted_and_ignored(void **state)
{
    (void)state;
    struct mp_err err;
    const char *doc = "{\"__metadata__\":{\"format\":\"pt\"}," E("a", "F32", "[1]", "0", "4") "}";
    assert_int_equal(parse_doc(doc, 4, &err), 0);
    /* An unaligned data start (header length not a multiple of 4) still reads correctly. */
    const char *odd = "{" E("ab", "F32", "[2]", "0", "8") "}";
    size_t hl = strlen(odd), len = 8 + hl + 8;
    assert_true((8 + hl) % 4 != 0);
    uint8_t *b = calloc(len, 1);
    b[0] = (uint8_t)hl;
    memcpy(b + 8, odd, hl);
    const float v[2] = {1.25f, -3.0f};
    memcpy(b + 8 + hl, v, 8);
    struct mp_st_file f;
    assert_int_equal(mp_st_parse(&f, "odd", b, len, &err), 0);
    assert_int_equal(f.n, 1);
    assert_true(f.t[0].data[0] == 1.25f && f.t[0].data[1] == -3.0f);
    mp_st_free(&f);
}

static int count_temp_files(void)
{
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* Failures at open (missing directory), at write (file size limit, as ENOSPC would) and at rename
 * (target is a directory): MP_ERR_IO, no temp file left, an existing target unchanged. */
static void test_write_failure_leaves_target_and_no_temp_file(void **state)
{
    (void)state;
    struct mp_st_tensor t[5];
    size_t n = sample(t);
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_st_write("/nonexistent-dir/x.safetensors", t, n, &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    char dir[128], target[128];
    path_of(dir, sizeof dir, "isdir");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mp_st_write(dir, t, n, &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    assert_int_equal(count_temp_files(), 0);

    path_of(target, sizeof target, "keep.safetensors");
    assert_int_equal(mp_st_write(target, t, n, NULL), 0);
    size_t before_len, after_len;
    uint8_t *before = slurp(target, &before_len);
    static float big[1 << 16];
    struct mp_st_tensor huge = {.name = "big", .ndim = 1, .shape = {1 << 16}, .data = big,
                                .numel = 1 << 16};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = mp_st_write(target, &huge, 1, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, MP_ERR_IO);
    assert_int_equal(count_temp_files(), 0);
    uint8_t *after = slurp(target, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(before);
    free(after);
}

static void test_unreadable_file_is_io_error(void **state)
{
    (void)state;
    struct mp_st_file f;
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_st_open(&f, "/nonexistent.safetensors", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent.safetensors: cannot read: "));
    assert_int_equal(mp_st_open(&f, tmpdir, &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_sorted_by_name),
        cmocka_unit_test(test_truncated_file_rejected_at_open_or_copy),
        cmocka_unit_test(test_loading_costs_no_copy_of_the_file),
        cmocka_unit_test(test_filled_tensors_asked_in_file_order_once_each),
        cmocka_unit_test(test_identical_inputs_give_identical_bytes_and_padded_header),
        cmocka_unit_test(test_python_parses_the_file_like_safetensors),
        cmocka_unit_test(test_malformed_headers_rejected_with_byte_offset),
        cmocka_unit_test(test_header_length_checked_against_limit_and_file),
        cmocka_unit_test(test_metadata_of_strings_is_accepted_and_ignored),
        cmocka_unit_test(test_write_failure_leaves_target_and_no_temp_file),
        cmocka_unit_test(test_unreadable_file_is_io_error),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
