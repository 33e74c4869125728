/* Topology for placement: reads the live machine or an hwloc XML export into plain mp_core rows
 * (socket, NUMA, L3 by logical index), and parses Open MPI hostfiles. The only file that includes
 * <hwloc.h>. Irregular machines are normal input: no Package or Core objects, NUMA nodes without
 * CPUs, several NUMA nodes per socket, disallowed PUs; they degrade to fewer levels, not errors.
 * Hostile files are not: hwloc only reads what mp_topo_xml.c checked and rewrote, in a child. */
#include "mp_topo.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_topo_xml.h"

static int ancestor_index(hwloc_topology_t topo, hwloc_obj_type_t type, hwloc_obj_t o)
{
    hwloc_obj_t a = hwloc_get_ancestor_obj_by_type(topo, type, o);
    return a ? (int)a->logical_index : -1;
}

/* NUMA nodes are memory children in hwloc 2, not ancestors: the node is the first one whose
 * cpuset covers the unit. Nodes without CPUs (CXL, HBM) have empty cpusets and never match. */
static int numa_index(hwloc_topology_t topo, hwloc_obj_t o)
{
    int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n; i++) {
        hwloc_obj_t node = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
        if (node->cpuset && !hwloc_bitmap_iszero(node->cpuset) &&
            hwloc_bitmap_intersects(node->cpuset, o->cpuset))
            return (int)node->logical_index;
    }
    return -1;
}

/* The first allowed PU inside o, or NULL when all of o's PUs are disallowed. */
static hwloc_obj_t first_allowed_pu(hwloc_topology_t topo, hwloc_obj_t o)
{
    hwloc_const_cpuset_t allowed = hwloc_topology_get_allowed_cpuset(topo);
    int n = hwloc_get_nbobjs_inside_cpuset_by_type(topo, o->cpuset, HWLOC_OBJ_PU);
    for (int i = 0; i < n; i++) {
        hwloc_obj_t pu = hwloc_get_obj_inside_cpuset_by_type(topo, o->cpuset, HWLOC_OBJ_PU,
                                                             (unsigned)i);
        if (pu && hwloc_bitmap_isset(allowed, pu->os_index))
            return pu;
    }
    return NULL;
}

static double info_value(const struct hwloc_info_s *infos, unsigned n, const char *name)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(infos[i].name, name) == 0)
            return atof(infos[i].value);
    return 0;
}

/* Speed of a hybrid CPU kind: the kernel's LinuxCapacity when exported, else FrequencyMaxMHz,
 * returned negative (an absolute figure that set_speeds normalises); without either, 0.6 for
 * every kind but the most powerful (hwloc only ranks kinds, it does not measure them). */
static double kind_metric(hwloc_topology_t topo, int kind, int n_kinds)
{
    unsigned n = 0;
    struct hwloc_info_s *infos = NULL;
    int eff = -1;
    if (hwloc_cpukinds_get_info(topo, (unsigned)kind, NULL, &eff, &n, &infos, 0) < 0)
        return 1.0;
    double v = info_value(infos, n, "LinuxCapacity");
    if (v <= 0)
        v = info_value(infos, n, "FrequencyMaxMHz");
    if (v > 0)
        return -v;
    return kind == n_kinds - 1 ? 1.0 : 0.6;
}

static void set_speeds(struct mp_topo *t, hwloc_topology_t topo)
{
    int n_kinds = hwloc_cpukinds_get_nr(topo, 0);
    double best = 0;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    for (int i = 0; i < t->n_cores; i++) {
        t->cores[i].speed = 1.0;
        if (n_kinds < 2 || !set)
            continue;
        hwloc_bitmap_only(set, (unsigned)hwloc_get_obj_by_type(topo, HWLOC_OBJ_PU,
                                                               (unsigned)t->cores[i].pu)->os_index);
        int k = hwloc_cpukinds_get_by_cpuset(topo, set, 0);
        t->cores[i].speed = k < 0 ? 1.0 : kind_metric(topo, k, n_kinds);
        best = t->cores[i].speed < 0 && -t->cores[i].speed > best ? -t->cores[i].speed : best;
    }
    for (int i = 0; i < t->n_cores; i++)
        if (t->cores[i].speed < 0)
            t->cores[i].speed = -t->cores[i].speed / best;
    hwloc_bitmap_free(set);
}

/* Fastest kind first; ties keep topology order (the sort is stable on the logical index). */
static int by_speed(const void *a, const void *b)
{
    const struct mp_core *x = a, *y = b;
    if (x->speed != y->speed)
        return x->speed > y->speed ? -1 : 1;
    return (x->core > y->core) - (x->core < y->core);
}

static int fill_cores(struct mp_topo *t, hwloc_topology_t topo)
{
    hwloc_obj_type_t unit = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE
                                                                               : HWLOC_OBJ_PU;
    int n = hwloc_get_nbobjs_by_type(topo, unit);
    int n_pkg = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
    int *per_socket = calloc((size_t)n_pkg + 1, sizeof(int));
    t->cores = calloc((size_t)n + 1, sizeof *t->cores);
    if (!per_socket || !t->cores) {
        free(per_socket);
        return -1;
    }
    t->has_packages = n_pkg > 0;
    for (int i = 0; i < n; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(topo, unit, (unsigned)i);
        hwloc_obj_t pu = o ? first_allowed_pu(topo, o) : NULL;
        if (!pu)
            continue;  /* disallowed (cgroup, taskset): not ours to place on */
        struct mp_core *c = &t->cores[t->n_cores++];
        c->core = (int)o->logical_index;
        c->pu = (int)pu->logical_index;
        c->socket = ancestor_index(topo, HWLOC_OBJ_PACKAGE, o);
        if (c->socket < 0 || c->socket > n_pkg)
            c->socket = 0;
        c->core_in_socket = per_socket[c->socket]++;
        c->numa = numa_index(topo, o);
        c->l3 = ancestor_index(topo, HWLOC_OBJ_L3CACHE, o);
    }
    free(per_socket);
    set_speeds(t, topo);
    qsort(t->cores, (size_t)t->n_cores, sizeof *t->cores, by_speed);
    t->n_pus = hwloc_bitmap_weight(hwloc_topology_get_allowed_cpuset(topo));
    return 0;
}

static void set_host(struct mp_topo *t, hwloc_topology_t topo, int live)
{
    const char *name = NULL;
    if (live && gethostname(t->host, sizeof t->host - 1) == 0 && t->host[0])
        return;
    name = hwloc_obj_get_info_by_name(hwloc_get_root_obj(topo), "HostName");
    snprintf(t->host, sizeof t->host, "%s", name && name[0] ? name : "localhost");
}

/* Loads an initialised hwloc topology (live, or set to a checked XML buffer) into t. NAME is for
 * messages: "live machine" or the file. */
static int load_topology(struct mp_topo *t, hwloc_topology_t topo, int live, const char *name,
                         struct mp_err *err)
{
    if (hwloc_topology_load(topo) < 0)
        return MP_FAIL(err, INPUT, "%s: hwloc could not load this topology: %s", name,
                       strerror(errno));
    if (fill_cores(t, topo) < 0)
        return MP_FAIL(err, NOMEM, "topology: out of memory");
    if (t->n_cores == 0)
        return MP_FAIL(err, INPUT, "%s: topology has no allowed processing units",
                       live ? "live" : name);
    t->mem_bytes = (double)hwloc_get_root_obj(topo)->total_memory;
    set_host(t, topo, live);
    return 0;
}

/* hwloc only ever sees the canonical document mp_topo_xml.c wrote from a checked file. */
static int load_xml(struct mp_topo *t, const char *src, const char *xml, size_t len,
                    struct mp_err *err)
{
    memset(t, 0, sizeof *t);
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) < 0)
        return MP_FAIL(err, NOMEM, "hwloc_topology_init failed");
    int rc = hwloc_topology_set_xmlbuffer(topo, xml, (int)len) < 0
                 ? MP_FAIL(err, INPUT, "%s: hwloc refused the checked topology", src)
                 : load_topology(t, topo, 0, src, err);
    hwloc_topology_destroy(topo);
    if (rc < 0)
        mp_topo_free(t);
    return rc;
}

static int write_all(int fd, const void *p, size_t n)
{
    for (const char *c = p; n > 0;) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w, n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    for (char *c = p; n > 0;) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r, n -= (size_t)r;
    }
    return 0;
}

/* The child's side: load, then send the status, the error and the topology down the pipe. */
static void child_load(int fd, const char *src, const char *xml, size_t len)
{
    struct mp_topo t;
    struct mp_err err;
    mp_err_clear(&err);
    int rc = load_xml(&t, src, xml, len, &err);
    int ok = write_all(fd, &rc, sizeof rc) == 0 && write_all(fd, &err, sizeof err) == 0 &&
             (rc < 0 || (write_all(fd, &t, sizeof t) == 0 &&
                         write_all(fd, t.cores, sizeof *t.cores * (size_t)t.n_cores) == 0));
    _exit(ok ? 0 : 1);
}

/* A second wall behind the check: hwloc reads the document in a child process, so a crash in
 * hwloc that the check did not foresee is an input error naming the file, not a signal. */
static int load_xml_guarded(struct mp_topo *t, const char *src, const char *xml, size_t len,
                            struct mp_err *err)
{
    int fds[2];
    if (pipe(fds) < 0)
        return load_xml(t, src, xml, len, err);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return load_xml(t, src, xml, len, err);
    }
    if (pid == 0) {
        close(fds[0]);
        child_load(fds[1], src, xml, len);
    }
    close(fds[1]);
    memset(t, 0, sizeof *t);
    int rc = -1, got = read_all(fds[0], &rc, sizeof rc) == 0 && read_all(fds[0], err, sizeof *err) == 0;
    if (got && rc == 0) {
        got = read_all(fds[0], t, sizeof *t) == 0 && t->n_cores > 0 && t->n_cores <= 1 << 20;
        struct mp_core *cores = got ? malloc(sizeof *cores * (size_t)t->n_cores) : NULL;
        got = cores && read_all(fds[0], cores, sizeof *cores * (size_t)t->n_cores) == 0;
        t->cores = cores;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return rc;
    mp_topo_free(t);
    if (WIFSIGNALED(status))
        return MP_FAIL(err, INPUT, "%s: hwloc crashed (%s) reading this topology although it "
                                   "passed mpipe's checks; please report it with the file",
                       src, strsignal(WTERMSIG(status)));
    return MP_FAIL(err, INTERNAL, "%s: the topology loader process failed (exit status %d)", src,
                   WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int mp__topo_load_checked(struct mp_topo *t, const char *src, int guarded, struct mp_err *err)
{
    char *xml;
    size_t len;
    memset(t, 0, sizeof *t);
    if (mp__topo_xml_check(src, &xml, &len, err) < 0)
        return -1;
    int rc = guarded ? load_xml_guarded(t, src, xml, len, err) : load_xml(t, src, xml, len, err);
    free(xml);
    return rc;
}

int mp_topo_load(struct mp_topo *t, const char *src, struct mp_err *err)
{
    memset(t, 0, sizeof *t);
    if (strcmp(src, "live") != 0)
        return mp__topo_load_checked(t, src, 1, err);
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) < 0)
        return MP_FAIL(err, NOMEM, "hwloc_topology_init failed");
    int rc = load_topology(t, topo, 1, "live machine", err);
    hwloc_topology_destroy(topo);
    if (rc < 0)
        mp_topo_free(t);
    return rc;
}

void mp_topo_free(struct mp_topo *t)
{
    free(t->cores);
    t->cores = NULL;
    t->n_cores = 0;
}

/* One `key=value` token of a hostfile line. */
static int host_option(struct mp_host *h, const char *tok, const char *name, int line,
                       struct mp_err *err)
{
    const char *eq = strchr(tok, '=');
    if (!eq)
        return MP_FAIL(err, INPUT, "%s:%d: expected key=value after the host name, got '%s'",
                       name, line, tok);
    size_t klen = (size_t)(eq - tok);
    const char *v = eq + 1;
    if ((klen == 5 && strncmp(tok, "slots", 5) == 0) ||
        (klen == 9 && strncmp(tok, "max_slots", 9) == 0)) {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (!*v || *end || errno || n < 1 || n > 1000000)
            return MP_FAIL(err, INPUT, "%s:%d: %.*s must be a positive integer, got '%s'", name,
                           line, (int)klen, tok, v);
        /* A repeated host adds its slots; the sum is capped like each value, since an int that
         * overflows is undefined behaviour (2148 lines of slots=1000000; tests/fuzz). */
        if (klen == 5 && h->slots > 1000000 - n)
            return MP_FAIL(err, INPUT, "%s:%d: host '%s' has more than 1000000 slots in total",
                           name, line, h->name);
        int *seen = klen == 5 ? &h->line_slots : &h->max_slots;
        if (*seen && (klen == 5 || h->max_slots_line == line))
            return MP_FAIL(err, INPUT, "%s:%d: %.*s given twice", name, line, (int)klen, tok);
        if (klen == 5)
            h->slots += (int)n, h->line_slots = (int)n;
        else
            h->max_slots = (int)n, h->max_slots_line = line;
        return 0;
    }
    if (klen == 8 && strncmp(tok, "topology", 8) == 0 && !*v)
        return MP_FAIL(err, INPUT, "%s:%d: topology= names no file (topology=FILE.xml, an "
                       "lstopo-no-graphics --of xml export)", name, line);
    if (klen == 8 && strncmp(tok, "topology", 8) == 0) {
        snprintf(h->topology, sizeof h->topology, "%s", v);
        h->topology_line = line;
        return 0;
    }
    return MP_FAIL(err, INPUT, "%s:%d: unknown key '%.*s' (expected slots=N, max_slots=N or "
                               "topology=FILE.xml)", name, line, (int)klen, tok);
}

static struct mp_host *host_slot(struct mp_hostfile *h, const char *host)
{
    for (int i = 0; i < h->n; i++)
        if (strcmp(h->hosts[i].name, host) == 0)
            return &h->hosts[i];
    struct mp_host *nh = realloc(h->hosts, sizeof *nh * (size_t)(h->n + 1));
    if (!nh)
        return NULL;
    h->hosts = nh;
    memset(&nh[h->n], 0, sizeof *nh);
    snprintf(nh[h->n].name, sizeof nh[h->n].name, "%s", host);
    return &nh[h->n++];
}

static int parse_line(struct mp_hostfile *h, char *s, const char *name, int line,
                      struct mp_err *err)
{
    char *save = NULL, *tok = strtok_r(s, " \t\r", &save);
    if (!tok)
        return 0;
    if (strchr(tok, '=') || strlen(tok) >= sizeof h->hosts[0].name)
        return MP_FAIL(err, INPUT, "%s:%d: expected a host name first, got '%s'", name, line, tok);
    struct mp_host *host = host_slot(h, tok);
    if (!host)
        return MP_FAIL(err, NOMEM, "%s:%d: out of memory", name, line);
    host->line_slots = 0;
    while ((tok = strtok_r(NULL, " \t\r", &save)))
        if (host_option(host, tok, name, line, err) < 0)
            return -1;
    /* Open MPI refuses a host given more slots than its max_slots: so does the plan, at once. */
    if (host->max_slots && host->slots > host->max_slots)
        return MP_FAIL(err, INPUT, "%s:%d: host '%s' has %d slots, over its max_slots=%d", name,
                       line, host->name, host->slots, host->max_slots);
    return 0;
}

int mp_hostfile_parse(struct mp_hostfile *h, const char *name, const char *text,
                      struct mp_err *err)
{
    memset(h, 0, sizeof *h);
    char *copy = strdup(text);
    if (!copy)
        return MP_FAIL(err, NOMEM, "%s: out of memory", name);
    int line = 0, rc = 0;
    for (char *s = copy, *nl; s && rc == 0; s = nl) {
        nl = strchr(s, '\n');
        if (nl)
            *nl++ = '\0';
        line++;
        char *hash = strchr(s, '#');
        if (hash)
            *hash = '\0';
        rc = parse_line(h, s, name, line, err);
    }
    free(copy);
    if (rc == 0 && h->n == 0)
        rc = MP_FAIL(err, INPUT, "%s:%d: no hosts (expected lines like `node1 slots=4`)", name,
                     line);
    if (rc < 0)
        mp_hostfile_free(h);
    return rc;
}

int mp_hostfile_read(struct mp_hostfile *h, const char *path, struct mp_err *err)
{
    memset(h, 0, sizeof *h);
    struct stat sb;
    FILE *f = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? (errno = EISDIR, NULL)
                                                           : fopen(path, "rb");
    if (!f) /* a directory opens, and read as "no hosts" (exit 2) */
        return MP_FAIL(err, IO, "%s: cannot read hostfile: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += got;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (!buf)
        return MP_FAIL(err, NOMEM, "%s: out of memory", path);
    buf[len] = '\0';
    /* The parser reads C strings: the lines past a NUL byte were dropped without a word. */
    const char *nul = memchr(buf, 0, len);
    int rc = nul ? MP_FAIL(err, INPUT, "%s: byte %zu: a NUL byte: not a text hostfile", path,
                           (size_t)(nul - buf))
                 : mp_hostfile_parse(h, path, buf, err);
    free(buf);
    return rc;
}

void mp_hostfile_free(struct mp_hostfile *h)
{
    free(h->hosts);
    h->hosts = NULL;
    h->n = 0;
}

/* Added for `mpipe bench p2p` (the relation column): where this process is bound. The smallest
 * object covering the binding gives the core, L3, NUMA node and socket it lies within; a level the
 * binding spans (or an unbound process, whose binding is the whole machine) is -1. */
int mp_topo_binding(struct mp_core *where, int *bound, struct mp_err *err)
{
    memset(where, 0, sizeof *where);
    where->core = where->pu = where->l3 = where->numa = where->socket = -1;
    *bound = 0;
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) < 0 || hwloc_topology_load(topo) < 0)
        return MP_FAIL(err, INPUT, "live machine: hwloc could not load the topology");
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    int rc = 0;
    if (!set) {
        rc = MP_FAIL(err, NOMEM, "topology: out of memory");
    } else if (hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) == 0 &&
               !hwloc_bitmap_iszero(set) &&
               !hwloc_bitmap_isincluded(hwloc_topology_get_allowed_cpuset(topo), set)) {
        hwloc_obj_t o = hwloc_get_obj_covering_cpuset(topo, set);
        *bound = o != NULL;
        if (o) {
            hwloc_obj_t core = o->type == HWLOC_OBJ_PU ? o->parent : o;
            where->core = core && core->type == HWLOC_OBJ_CORE ? (int)core->logical_index : -1;
            where->pu = o->type == HWLOC_OBJ_PU ? (int)o->logical_index : -1;
            where->l3 = o->type == HWLOC_OBJ_L3CACHE ? (int)o->logical_index
                                                     : ancestor_index(topo, HWLOC_OBJ_L3CACHE, o);
            where->socket = o->type == HWLOC_OBJ_PACKAGE
                                ? (int)o->logical_index
                                : ancestor_index(topo, HWLOC_OBJ_PACKAGE, o);
            int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
            for (int i = 0; i < n; i++) {
                hwloc_obj_t node = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
                if (node->cpuset && hwloc_bitmap_isincluded(set, node->cpuset))
                    where->numa = (int)node->logical_index;
            }
        }
    }
    hwloc_bitmap_free(set);
    hwloc_topology_destroy(topo);
    return rc;
}
