/* Claims about the topology check (partitioner/mp_topo_xml.c) and the guarded loader: every hostile
 * file is an input error at its line, found before hwloc reads a byte of it (hwloc runs in this
 * process here, so a file the check let through and hwloc crashed on would end this test); what an
 * lstopo export may hold beside cores still loads; the child-process load gives the same topology
 * as the in-process one and carries hwloc's own refusals back as messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_topo.h"
#include "mp_topo_bits.h"

/* The "<!-- expect line N: TEXT" comment every hostile file carries. */
static int read_expectation(const char *path, int *line, char *text, size_t cap)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    int found = 0;
    while (f && !found && fgets(buf, sizeof buf, f)) {
        const char *p = strstr(buf, "<!-- expect line ");
        if (p && sscanf(p, "<!-- expect line %d: ", line) == 1) {
            const char *t = strchr(p + 17, ':') + 2;
            size_t n = strcspn(t, "(\n");
            while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '-' || t[n - 1] == '>'))
                n--;
            snprintf(text, cap, "%.*s", (int)n, t);
            found = 1;
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* Every .xml of DIR is rejected by the check, at the line and with the words its comment says. */
static int expect_all_rejected(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".xml") != 0)
            continue;
        char path[1024], want[512], prefix[1100];
        int line;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!read_expectation(path, &line, want, sizeof want))
            fail_msg("%s: no '<!-- expect line N: TEXT' comment", path);
        struct mp_topo t;
        struct mp_err err;
        mp_err_clear(&err);
        if (mp__topo_load_checked(&t, path, 0, &err) == 0)
            fail_msg("%s: accepted", path);
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
        if (err.code != MP_ERR_INPUT || strncmp(err.msg, prefix, strlen(prefix)) != 0 ||
            !strstr(err.msg, want))
            fail_msg("%s: expected '%s…%s', got status %d '%s'", path, prefix, want,
                     (int)err.code, err.msg);
        n++;
    }
    closedir(d);
    return n;
}

static void test_every_hostile_topology_is_an_input_error_at_its_line(void **state)
{
    (void)state;
    assert_true(expect_all_rejected("tests/data/topo_hostile") >= 20);
}

/* Files on which hwloc 2.9's own import segfaults (lstopo too): the check stops each one. */
static void test_files_that_crash_hwloc_are_stopped_by_the_check(void **state)
{
    (void)state;
    assert_true(expect_all_rejected("tests/fuzz/upstream/hwloc") >= 8);
}

static void test_everything_an_export_may_hold_beside_cores_loads(void **state)
{
    (void)state;
    struct mp_topo t;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp_topo_load(&t, "tests/data/topo_everything.xml", &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(t.n_cores, 4);
    assert_int_equal(t.n_pus, 4);
    assert_string_equal(t.host, "rich & odd<host>");
    assert_int_equal(t.cores[1].numa, 0); /* under the memory-side cache */
    assert_int_equal(t.cores[2].numa, 1);
    assert_int_equal(t.cores[3].socket, 0);
    assert_int_equal(t.cores[3].core_in_socket, 3);
    assert_true(t.mem_bytes == 2.0 * 1073741824); /* the NUMA nodes' local_memory, kept */
    mp_topo_free(&t);
}

static void expect_same_guarded_and_in_process(const char *path)
{
    struct mp_topo a, b;
    struct mp_err err;
    mp_err_clear(&err);
    if (mp__topo_load_checked(&a, path, 0, &err) != 0 ||
        mp__topo_load_checked(&b, path, 1, &err) != 0)
        fail_msg("%s: %s", path, err.msg);
    assert_int_equal(a.n_cores, b.n_cores);
    assert_int_equal(a.n_pus, b.n_pus);
    assert_int_equal(a.has_packages, b.has_packages);
    assert_string_equal(a.host, b.host);
    assert_memory_equal(a.cores, b.cores, sizeof *a.cores * (size_t)a.n_cores);
    mp_topo_free(&a);
    mp_topo_free(&b);
}

static void test_the_child_process_load_gives_the_same_topology(void **state)
{
    (void)state;
    expect_same_guarded_and_in_process("tests/data/topo_everything.xml");
    expect_same_guarded_and_in_process("tests/data/topo_hybrid.xml");
    expect_same_guarded_and_in_process("tests/data/topo_two_sockets_irregular.xml");
}

/* A file the check passes but that leaves nothing to place on: the child's error comes back. */
static void test_an_error_inside_the_child_comes_back_as_its_message(void **state)
{
    (void)state;
    char path[] = "/tmp/mp_test_topo_xml_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *in = fopen("tests/data/topo_no_package.xml", "r"), *out = fdopen(fd, "w");
    assert_non_null(in);
    char buf[4096];
    while (fgets(buf, sizeof buf, in)) {
        char *a = strstr(buf, "allowed_cpuset=\"0x0000000f\"");
        if (a)
            memcpy(a, "allowed_cpuset=\"0x00000000\"", 27);
        fputs(buf, out);
    }
    fclose(in);
    fclose(out);
    struct mp_topo t;
    struct mp_err err;
    mp_err_clear(&err);
    assert_int_equal(mp_topo_load(&t, path, &err), -1);
    remove(path);
    assert_int_equal(err.code, MP_ERR_INPUT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "hwloc could not load this topology"));
}

/* Bitmaps of several 32-bit words (80 PUs), as lstopo writes them ("0x00000001,,0x0"). */
static void test_a_machine_of_80_pus_loads(void **state)
{
    (void)state;
    char path[] = "/tmp/mp_test_topo_xml_XXXXXX", cmd[256];
    int fd = mkstemp(path);
    if (fd < 0)
        skip();
    snprintf(cmd, sizeof cmd,
             "lstopo-no-graphics -i 'pack:2 core:20 pu:2' --of xml -f %s >/dev/null 2>&1", path);
    if (system(cmd) != 0) {
        remove(path);
        skip(); /* hwloc-nox is not installed */
    }
    struct mp_topo t;
    struct mp_err err;
    mp_err_clear(&err);
    int rc = mp_topo_load(&t, path, &err);
    remove(path);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(t.n_cores, 40);
    assert_int_equal(t.n_pus, 80);
    assert_int_equal(t.cores[39].socket, 1);
    mp_topo_free(&t);
}

/* hwloc's bitmap text, as lstopo writes it and nothing else. */
static void test_bitmaps_parse_as_hwloc_writes_them_and_nothing_else(void **state)
{
    (void)state;
    struct mp_bits b;
    assert_int_equal(mp__bits_parse("0x00000001,,0x0", &b), 0);
    assert_int_equal(b.n, 3);
    assert_true(mp__bits_is_only(&b, 64));
    mp__bits_free(&b);
    assert_int_equal(mp__bits_parse("0x0", &b), 0);
    assert_int_equal(b.n, 0); /* empty: a CPU-less NUMA node's cpuset */
    mp__bits_free(&b);
    assert_int_equal(mp__bits_parse("0xF,0x80000000", &b), 0);
    assert_true(mp__bits_get(&b, 31) && mp__bits_get(&b, 32) && mp__bits_get(&b, 35));
    assert_false(mp__bits_get(&b, 36) || mp__bits_get(&b, 30));
    mp__bits_free(&b);
    const char *bad[] = {"", "0x", "1", "0x1,", ",0x1", "0x123456789", "0xf...f", "0x1 ",
                         "0x1,,", "0xg", "0x1;0x2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (mp__bits_parse(bad[i], &b) != -1)
            fail_msg("'%s' parsed", bad[i]);
    char big[2049 * 4 + 8]; /* "0x1" and a comma each */
    size_t at = 0;
    for (int i = 0; i < 2049; i++)
        at += (size_t)snprintf(big + at, sizeof big - at, "%s0x1", i ? "," : "");
    assert_int_equal(mp__bits_parse(big, &b), -2); /* more than 65536 bits */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitmaps_parse_as_hwloc_writes_them_and_nothing_else),
        cmocka_unit_test(test_every_hostile_topology_is_an_input_error_at_its_line),
        cmocka_unit_test(test_files_that_crash_hwloc_are_stopped_by_the_check),
        cmocka_unit_test(test_everything_an_export_may_hold_beside_cores_loads),
        cmocka_unit_test(test_the_child_process_load_gives_the_same_topology),
        cmocka_unit_test(test_an_error_inside_the_child_comes_back_as_its_message),
        cmocka_unit_test(test_a_machine_of_80_pus_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
