/* Machine topology for placement: the cores of one host (live via hwloc, or an hwloc XML export),
 * each with its socket, NUMA node and L3 (logical indexes), and Open MPI hostfiles. mp_topo.c is
 * the only file that includes <hwloc.h>; everything else sees these plain structs. */
#ifndef MP_TOPO_H
#define MP_TOPO_H

#include "mp_err.h"

struct mp_core {
    int core;          /* hwloc logical index of the Core (of the PU when there are no Cores) */
    int pu;            /* logical index of its first allowed PU */
    int socket;        /* logical index of the Package, 0 when the machine has none */
    int core_in_socket;/* index of the core among its socket's allowed cores (rankfile S:C) */
    int numa;          /* logical index of the NUMA node holding its PUs, -1 if unknown */
    int l3;            /* logical index of its L3 cache (core complex), -1 if none */
    double speed;      /* relative to the fastest core kind: 1, or < 1 on hybrid E-cores */
};

struct mp_topo {
    char host[256];    /* as Open MPI names it: gethostname() for live, else the XML's HostName */
    struct mp_core *cores;  /* allowed cores, fastest kind first, then in topology order
                               (shared caches adjacent): the order ranks are placed in */
    int n_cores;
    int n_pus;              /* allowed PUs */
    int has_packages;       /* 0: no Package objects (rankfiles then use slot=C) */
    double mem_bytes;       /* the machine's memory (hwloc's total_memory of the root), 0 if the
                               topology does not say */
};

/* src is "live" or an hwloc XML file. Bad XML → MP_ERR_INPUT "FILE:LINE: ..." (checked with
 * libxml2 before hwloc sees it; hwloc then reads it in a child process, so even a crash inside
 * hwloc is an input error); a topology without any allowed PU is also MP_ERR_INPUT. */
int mp_topo_load(struct mp_topo *t, const char *src, struct mp_err *err);
/* Internal, for the fuzzer: the same for an XML file, in this process when guarded is 0, so that
 * a crash the check lets through is seen. */
int mp__topo_load_checked(struct mp_topo *t, const char *src, int guarded, struct mp_err *err);
void mp_topo_free(struct mp_topo *t);

struct mp_host {
    char name[256];
    int slots;              /* slots=N, or 0 when not given (then: the host's cores) */
    char topology[512];     /* mpipe extension `topology=FILE.xml`, "" when not given */
    int topology_line;      /* the hostfile line that gave it */
    int max_slots;          /* max_slots=N, 0 when not given */
    int max_slots_line;     /* the line that gave it */
    int line_slots;         /* slots= on the line being read (a second one is an error) */
};

struct mp_hostfile {
    struct mp_host *hosts;
    int n;
};

/* Open MPI hostfile: `host [slots=N] [max_slots=N] [topology=FILE.xml]`, `#` comments, blank
 * lines; a repeated host adds its slots. Errors are MP_ERR_INPUT "FILE:LINE: what is wrong". */
int mp_hostfile_read(struct mp_hostfile *h, const char *path, struct mp_err *err);
int mp_hostfile_parse(struct mp_hostfile *h, const char *name, const char *text,
                      struct mp_err *err);
void mp_hostfile_free(struct mp_hostfile *h);

/* Where this process is bound (for `mpipe bench p2p`): the core, pu, L3, NUMA node and socket
 * (logical indexes) its CPU binding lies within, -1 for a level it spans; *bound = 0 and all -1
 * when it is not bound (its binding is every allowed PU). */
int mp_topo_binding(struct mp_core *where, int *bound, struct mp_err *err);

#endif
