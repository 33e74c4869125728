/* libFuzzer target for the topology inputs (partitioner/mp_topo.c): an input that starts with '<'
 * goes to the XML loader (the libxml2 check of mp_topo_xml.c, then hwloc on the checked document,
 * through a memfd path since it takes a file), any other to the hostfile parser
 * (mp_hostfile_parse), as `mpipe plan --topology/--hosts` would see them. Each must give a usable
 * topology or host list or a "FILE..." rejection. hwloc runs in this process, not in the child
 * that `mpipe plan` uses, so an input the check lets through and hwloc crashes on is a crash here
 * (hwloc 2.9 crashes on some; tests/fuzz/upstream/README). Replayed over its corpus, regressions
 * and those upstream crashes by tests/test_fuzz_regressions.c (MP_FUZZ_REPLAY: no libFuzzer entry
 * point). */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include <dlfcn.h>

#include "fuzz_common.h"
#include "mp_topo.h"

/* hwloc dlopens its libxml2 plugin for each load and dlcloses it after, so allocations it leaks on
 * malformed XML (hwloc's own error paths) show up as "<unknown module>" that no suppression can
 * name. Pinning the plugin (RTLD_NODELETE) keeps it mapped, so tests/lsan.supp can match it. */
static void pin_hwloc_xml_plugin(void)
{
    static int done;
    if (!done) {
        done = 1;
        (void)dlopen("hwloc/hwloc_xml_libxml.so", RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
        (void)dlopen("/usr/lib/x86_64-linux-gnu/hwloc/hwloc_xml_libxml.so",
                     RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    }
}

static void hostfile_case(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    struct mp_hostfile h;
    struct mp_err err = {0};
    if (mp_hostfile_parse(&h, "fuzz.hosts", text, &err) == 0) {
        if (h.n < 1)
            abort();
        for (int i = 0; i < h.n; i++)
            if (h.hosts[i].slots < 0 || !h.hosts[i].name[0] || strchr(h.hosts[i].name, '='))
                abort();
        mp_hostfile_free(&h);
    } else {
        fuzz_check_rejection(&err, "fuzz.hosts");
    }
    free(text);
}

static void xml_case(const uint8_t *data, size_t size)
{
    pin_hwloc_xml_plugin();
    const char *path = fuzz_as_file(data, size);
    struct mp_topo t;
    struct mp_err err = {0};
    if (mp__topo_load_checked(&t, path, 0, &err) != 0) {
        fuzz_check_rejection(&err, path);
        return;
    }
    if (t.n_cores < 1 || t.n_pus < 1)
        abort();
    for (int i = 0; i < t.n_cores; i++)
        if (t.cores[i].core < 0 || t.cores[i].pu < 0 || t.cores[i].socket < 0 ||
            t.cores[i].core_in_socket < 0)
            abort();
    mp_topo_free(&t);
}

static int fuzz_topo_one(const uint8_t *data, size_t size)
{
    /* Every hwloc export starts with "<?xml"; no hostfile line can start with '<'. Mutations that
     * flip the first byte move an input between the two parsers, so both see every shape. */
    if (size > 0 && data[0] == '<')
        xml_case(data, size);
    else
        hostfile_case(data, size);
    return 0;
}

#ifndef MP_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_topo_one(data, size);
}
#endif
