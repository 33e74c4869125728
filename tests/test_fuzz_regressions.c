/* Replays every seed and every regression input of the fuzz targets (tests/fuzz/corpus/<name>/,
 * tests/fuzz/regressions/<name>/) through the same harness code the fuzzers run, in the plain
 * build, so a crash the fuzzer once found stays fixed in every CI run without clang or libFuzzer.
 * The harnesses are included with MP_FUZZ_REPLAY (no LLVMFuzzerTestOneInput); they abort() on
 * any broken contract, which fails this test. The XML files that crash hwloc 2.9 itself
 * (tests/fuzz/upstream/hwloc/) are replayed too: mpipe's check must reject them before hwloc runs,
 * in this process (a crash would end this test). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MP_FUZZ_REPLAY
#include "fuzz/fuzz_idx.c"
#include "fuzz/fuzz_plan.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_spec.c"
#include "fuzz/fuzz_topo.c"

/* The whole file, or NULL (with *len 0) if it cannot be read. */
static uint8_t *slurp(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + *len, 1, cap - *len, f)) > 0;) {
        *len += got;
        if (*len == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    return buf;
}

/* Feeds every regular file of DIR to one harness; returns how many it ran. A missing directory
 * counts as empty (a target may have no regressions yet). */
static int replay_dir(const char *dir, int (*one)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        uint8_t *buf = slurp(path, &len);
        assert_non_null(buf);
        fprintf(stderr, "replaying %s (%zu bytes)\n", path, len);
        one(buf, len);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

/* Every target must have seeds: an empty corpus would make its replay silently vacuous. */
static void replay(const char *name, int (*one)(const uint8_t *, size_t))
{
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", name);
    int seeds = replay_dir(dir, one);
    snprintf(dir, sizeof dir, "tests/fuzz/regressions/%s", name);
    replay_dir(dir, one);
    assert_true(seeds > 0);
}

static void test_spec_corpus_and_regressions_parse_or_reject_cleanly(void **state)
{
    (void)state;
    replay("spec", fuzz_spec_one);
}

static void test_plan_corpus_and_regressions_parse_or_reject_cleanly(void **state)
{
    (void)state;
    replay("plan", fuzz_plan_one);
}

static void test_safetensors_corpus_and_regressions_parse_or_reject_cleanly(void **state)
{
    (void)state;
    replay("safetensors", fuzz_safetensors_one);
}

static void test_idx_corpus_and_regressions_parse_or_reject_cleanly(void **state)
{
    (void)state;
    replay("idx", fuzz_idx_one);
}

static void test_topo_corpus_and_regressions_parse_or_reject_cleanly(void **state)
{
    (void)state;
    replay("topo", fuzz_topo_one);
}

/* The files that segfault hwloc 2.9's own import go through the harness too (tests/test_topo_xml.c
 * checks each one's message and line). */
static void test_files_that_crash_hwloc_are_rejected_cleanly(void **state)
{
    (void)state;
    assert_true(replay_dir("tests/fuzz/upstream/hwloc", fuzz_topo_one) >= 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_corpus_and_regressions_parse_or_reject_cleanly),
        cmocka_unit_test(test_plan_corpus_and_regressions_parse_or_reject_cleanly),
        cmocka_unit_test(test_safetensors_corpus_and_regressions_parse_or_reject_cleanly),
        cmocka_unit_test(test_idx_corpus_and_regressions_parse_or_reject_cleanly),
        cmocka_unit_test(test_topo_corpus_and_regressions_parse_or_reject_cleanly),
        cmocka_unit_test(test_files_that_crash_hwloc_are_rejected_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
