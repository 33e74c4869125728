/* Placement: which host and core runs each rank, how close two ranks are (the link level the cost
 * model prices), and the Open MPI rankfile. Ranks are laid out replica-major (rank = replica * P +
 * stage), and each replica's P stages take consecutive cores in topology order, so neighbouring
 * stages share the most (L3, NUMA node, socket); the partitioner then prices every boundary with
 * its own link and keeps heavy activations off the slow ones. */
#ifndef MP_PLACE_H
#define MP_PLACE_H

#include "mp_err.h"
#include "mp_plan.h"
#include "mp_topo.h"

/* How close two ranks are, nearest first (the `relation` of `mpipe bench p2p`). */
enum mp_link_level {
    MP_LINK_L3,        /* same core complex (shared L3), or the same core when oversubscribed */
    MP_LINK_NUMA,      /* same NUMA node */
    MP_LINK_SOCKET,    /* same socket, different NUMA nodes */
    MP_LINK_HOST,      /* same host, different sockets */
    MP_LINK_NET,       /* different hosts */
    MP_LINK_COUNT
};
const char *mp_link_level_name(enum mp_link_level l);      /* "L3", "NUMA", ... "cross-host" */
int mp_link_level_parse(const char *name, enum mp_link_level *l);

struct mp_cluster_host {
    char name[256];
    int slots;
    struct mp_topo topo;
};

struct mp_cluster {
    struct mp_cluster_host *hosts;
    int n_hosts;
};

/* One host from `topology` ("live" or XML), or every host of a hostfile, each with its own
 * `topology=FILE` or else `topology`. Slots default to the host's cores. */
int mp_cluster_init(struct mp_cluster *c, const char *topology, const char *hostfile,
                    struct mp_err *err);
void mp_cluster_free(struct mp_cluster *c);
int mp_cluster_slots(const struct mp_cluster *c);

struct mp_placement {
    int n;
    struct { int host, core; } *r;  /* per rank: host index, index into that host's cores */
    int oversubscribed;             /* some core runs more than one rank */
};

/* Places n ranks. More ranks than slots is not an error: they wrap round-robin and
 * oversubscribed is set (the caller warns). */
int mp_place_ranks(struct mp_placement *pl, const struct mp_cluster *c, int n, struct mp_err *err);
void mp_placement_free(struct mp_placement *pl);
/* How many ranks (this one included) time-share rank k's core. */
int mp_place_sharing(const struct mp_placement *pl, int k);
/* Relative speed of rank k's core (1 but on the slower kinds of hybrid CPUs). */
double mp_place_speed(const struct mp_placement *pl, const struct mp_cluster *c, int k);
enum mp_link_level mp_place_level(const struct mp_placement *pl, const struct mp_cluster *c, int a,
                                  int b);
/* Fills p->ranks (P * D entries) from the placement. */
int mp_place_to_plan(struct mp_plan *p, const struct mp_placement *pl, const struct mp_cluster *c,
                     struct mp_err *err);

/* Writes `rank N=host slot=S:C` lines for p->ranks. */
int mp_place_write_rankfile(const struct mp_plan *p, const char *path, struct mp_err *err);

#endif
