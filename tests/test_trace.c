/* Claims about the trace writers (engine/pipeline/mp_trace.c): the JSON is Chrome trace-event format that
 * jansson parses, with every event in µs and one named track per rank; the SVG is one
 * self-contained document with one row per rank; unwritable paths are I/O errors. */
#include <setjmp.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "mp_sched.h"
#include "mp_trace.h"

static char dir[] = "/tmp/mpipe_test_trace_XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void sample(struct mp_trace *t)
{
    mp_trace_init(t, 3);
    assert_int_equal(mp_trace_add(t, 0, MP_ACT_F, 3, 0, 0.001, 0.002), 0);
    assert_int_equal(mp_trace_add(t, 1, MP_ACT_B, 3, 1, 0.004, 0.003), 0);
    assert_int_equal(mp_trace_add(t, 2, MP_ACT_W, 0, 0, 0.005, 0.001), 0);
    assert_int_equal(mp_trace_add(t, 0, MP_ACT_SEND_ACT, 3, 0, 0.003, 0), 0);
    assert_int_equal(mp_trace_add(t, 2, MP_ACT_STEP, -1, -1, 0.008, 0.001), 0);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

static void test_json_parses_and_holds_every_event_in_microseconds(void **state)
{
    (void)state;
    struct mp_trace t;
    struct mp_err err;
    char path[256];
    sample(&t);
    snprintf(path, sizeof path, "%s/t.json", dir);
    assert_int_equal(mp_trace_write_json(&t, path, &err), 0);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        fail_msg("%s:%d: %s", path, jerr.line, jerr.text);
    json_t *ev = json_object_get(root, "traceEvents");
    assert_true(json_is_array(ev));
    size_t n_x = 0, n_meta = 0;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *ph = json_string_value(json_object_get(e, "ph"));
        if (strcmp(ph, "M") == 0) {
            n_meta++;
            continue;
        }
        n_x++;
        if (strcmp(json_string_value(json_object_get(e, "name")), "B mb3 c1") == 0) {
            assert_string_equal(json_string_value(json_object_get(e, "cat")), "B");
            assert_true(fabs(json_number_value(json_object_get(e, "ts")) - 4000.0) < 1e-6);
            assert_true(fabs(json_number_value(json_object_get(e, "dur")) - 3000.0) < 1e-6);
            assert_int_equal(json_integer_value(json_object_get(e, "tid")), 1);
            json_t *args = json_object_get(e, "args");
            assert_int_equal(json_integer_value(json_object_get(args, "mb")), 3);
            assert_int_equal(json_integer_value(json_object_get(args, "chunk")), 1);
        }
    }
    assert_int_equal(n_x, 5);
    assert_int_equal(n_meta, 3);
    assert_string_equal(json_string_value(json_object_get(root, "displayTimeUnit")), "ms");
    json_decref(root);
    mp_trace_free(&t);
}

static void test_empty_trace_is_still_valid_json(void **state)
{
    (void)state;
    struct mp_trace t;
    struct mp_err err;
    char path[256];
    mp_trace_init(&t, 0);
    snprintf(path, sizeof path, "%s/empty.json", dir);
    assert_int_equal(mp_trace_write_json(&t, path, &err), 0);
    json_t *root = json_load_file(path, 0, NULL);
    assert_non_null(root);
    assert_int_equal(json_array_size(json_object_get(root, "traceEvents")), 0);
    json_decref(root);
    mp_trace_free(&t);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* A small well-formedness check: tags nest and close, and every '&' starts an entity. */
static int tags_balance(const char *s)
{
    char stack[64][16];
    int depth = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '&' && strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) &&
            strncmp(p, "&quot;", 6))
            return 0;
        if (*p != '<')
            continue;
        const char *end = strchr(p, '>');
        if (!end)
            return 0;
        char name[16] = {0};
        int closing = p[1] == '/';
        sscanf(p + 1 + closing, "%15[a-zA-Z]", name);
        if (closing) {
            if (depth == 0 || strcmp(stack[--depth], name) != 0)
                return 0;
        } else if (end[-1] != '/') {
            if (depth == 64)
                return 0;
            strcpy(stack[depth++], name);
        }
        p = end;
    }
    return depth == 0;
}

static void test_svg_is_one_document_with_one_row_per_rank(void **state)
{
    (void)state;
    struct mp_trace t;
    struct mp_err err;
    char path[256];
    sample(&t);
    snprintf(path, sizeof path, "%s/t.svg", dir);
    assert_int_equal(mp_trace_write_svg(&t, path, "1f1b <P=3> & friends", &err), 0);
    char *svg = slurp(path);
    assert_int_equal(strncmp(svg, "<svg", 4), 0);
    size_t n = strlen(svg);
    while (n && (svg[n - 1] == '\n' || svg[n - 1] == ' '))
        svg[--n] = '\0';
    assert_true(n > 6 && strcmp(svg + n - 6, "</svg>") == 0);
    assert_int_equal(count(svg, "<svg"), 1);
    assert_int_equal(count(svg, "<g class=\"rank\">"), 3);
    assert_non_null(strstr(svg, ">rank 2<"));
    assert_non_null(strstr(svg, "1f1b &lt;P=3&gt; &amp; friends"));
    assert_null(strstr(svg, "<P=3>"));
    assert_non_null(strstr(svg, "time (ms)"));
    assert_true(tags_balance(svg));
    free(svg);
    mp_trace_free(&t);
}

static void test_unwritable_path_is_an_io_error(void **state)
{
    (void)state;
    struct mp_trace t;
    struct mp_err err;
    sample(&t);
    mp_err_clear(&err);
    assert_int_equal(mp_trace_write_json(&t, "/nonexistent-dir/x/t.json", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x/t.json"));
    mp_err_clear(&err);
    assert_int_equal(mp_trace_write_svg(&t, "/nonexistent-dir/x/t.svg", "t", &err), -1);
    assert_int_equal(err.code, MP_ERR_IO);
    mp_trace_free(&t);
}

/* train --trace FILE.json draws FILE.svg beside it, and bench pipeline moves it with the trace:
 * one name for both; anything but a .json, or a name that does not fit, has no picture. */
static void test_svg_path_beside_a_json_trace(void **state)
{
    (void)state;
    char svg[16];
    assert_int_equal(mp_trace_svg_path("run/t.json", svg, sizeof svg), 1);
    assert_string_equal(svg, "run/t.svg");
    assert_int_equal(mp_trace_svg_path("t.trace", svg, sizeof svg), 0);
    assert_int_equal(mp_trace_svg_path(".json", svg, sizeof svg), 0);
    assert_int_equal(mp_trace_svg_path("a/much/longer.json", svg, sizeof svg), 0);
}

static void test_append_merges_events_and_ranks(void **state)
{
    (void)state;
    struct mp_trace a, b;
    sample(&a);
    mp_trace_init(&b, 5);
    assert_int_equal(mp_trace_add(&b, 4, MP_ACT_F, 0, 0, 0, 1), 0);
    assert_int_equal(mp_trace_append(&a, &b), 0);
    assert_int_equal(a.n, 6);
    assert_int_equal(a.n_ranks, 5);
    assert_int_equal(a.ev[5].rank, 4);
    for (int i = 0; i < 1000; i++) /* growth past the first allocation */
        assert_int_equal(mp_trace_add(&b, 0, MP_ACT_B, i, 0, i, 1), 0);
    assert_int_equal(b.n, 1001);
    assert_int_equal(b.ev[1000].mb, 999);
    mp_trace_free(&a);
    mp_trace_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_parses_and_holds_every_event_in_microseconds),
        cmocka_unit_test(test_empty_trace_is_still_valid_json),
        cmocka_unit_test(test_svg_is_one_document_with_one_row_per_rank),
        cmocka_unit_test(test_unwritable_path_is_an_io_error),
        cmocka_unit_test(test_svg_path_beside_a_json_trace),
        cmocka_unit_test(test_append_merges_events_and_ranks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
