/* Rank placement over one or more hosts, the link level between two placed ranks, and the Open
 * MPI rankfile. No hwloc here: topologies arrive as mp_topo rows (mp_topo.c). Placement never
 * fails for lack of cores: extra ranks wrap round-robin and the plan says "oversubscribed". */
#include "mp_place.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const level_names[] = {"L3", "NUMA", "socket", "host", "cross-host"};
_Static_assert(sizeof level_names / sizeof level_names[0] == MP_LINK_COUNT, "link level names");

const char *mp_link_level_name(enum mp_link_level l)
{
    return (l >= 0 && l < MP_LINK_COUNT) ? level_names[l] : "?";
}

int mp_link_level_parse(const char *name, enum mp_link_level *l)
{
    static const struct { const char *alias; enum mp_link_level l; } aliases[] = {
        {"same L3", MP_LINK_L3},       {"core complex", MP_LINK_L3}, {"ccx", MP_LINK_L3},
        {"same NUMA", MP_LINK_NUMA},   {"same socket", MP_LINK_SOCKET},
        {"same host", MP_LINK_HOST},   {"cross-socket", MP_LINK_HOST}, {"net", MP_LINK_NET},
        {"cross host", MP_LINK_NET},   {"network", MP_LINK_NET},
    };
    for (int i = 0; i < MP_LINK_COUNT; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return *l = (enum mp_link_level)i, 0;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcasecmp(name, aliases[i].alias) == 0)
            return *l = aliases[i].l, 0;
    return -1;
}

int mp_cluster_init(struct mp_cluster *c, const char *topology, const char *hostfile,
                    struct mp_err *err)
{
    memset(c, 0, sizeof *c);
    struct mp_hostfile hf = {0};
    if (hostfile && mp_hostfile_read(&hf, hostfile, err))
        return -1;
    int n = hostfile ? hf.n : 1;
    c->hosts = calloc((size_t)n, sizeof *c->hosts);
    if (!c->hosts) {
        mp_hostfile_free(&hf);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        struct mp_cluster_host *h = &c->hosts[i];
        const char *src = hostfile && hf.hosts[i].topology[0] ? hf.hosts[i].topology : topology;
        if (mp_topo_load(&h->topo, src, err)) {
            mp_hostfile_free(&hf);
            mp_cluster_free(c);
            return -1;
        }
        c->n_hosts++;
        snprintf(h->name, sizeof h->name, "%s", hostfile ? hf.hosts[i].name : h->topo.host);
        h->slots = hostfile && hf.hosts[i].slots > 0 ? hf.hosts[i].slots : h->topo.n_cores;
    }
    mp_hostfile_free(&hf);
    return 0;
}

void mp_cluster_free(struct mp_cluster *c)
{
    for (int i = 0; i < c->n_hosts; i++)
        mp_topo_free(&c->hosts[i].topo);
    free(c->hosts);
    memset(c, 0, sizeof *c);
}

int mp_cluster_slots(const struct mp_cluster *c)
{
    int n = 0;
    for (int i = 0; i < c->n_hosts; i++)
        n += c->hosts[i].slots;
    return n;
}

/* Rank k takes the k-th slot: host by host, each host's slots on its cores in topology order, so
 * that consecutive ranks share caches. A host with more slots than cores reuses its cores. */
int mp_place_ranks(struct mp_placement *pl, const struct mp_cluster *c, int n, struct mp_err *err)
{
    memset(pl, 0, sizeof *pl);
    int total = mp_cluster_slots(c);
    pl->r = calloc((size_t)n, sizeof *pl->r);
    if (!pl->r)
        return MP_FAIL(err, NOMEM, "out of memory placing %d ranks", n);
    pl->n = n;
    for (int k = 0; k < n; k++) {
        int slot = k % total, h = 0;
        while (slot >= c->hosts[h].slots)
            slot -= c->hosts[h++].slots;
        pl->r[k].host = h;
        pl->r[k].core = slot % c->hosts[h].topo.n_cores;
        if (k >= total || slot >= c->hosts[h].topo.n_cores)
            pl->oversubscribed = 1;
    }
    return 0;
}

void mp_placement_free(struct mp_placement *pl)
{
    free(pl->r);
    memset(pl, 0, sizeof *pl);
}

int mp_place_sharing(const struct mp_placement *pl, int k)
{
    int n = 0;
    for (int j = 0; j < pl->n; j++)
        n += pl->r[j].host == pl->r[k].host && pl->r[j].core == pl->r[k].core;
    return n;
}

double mp_place_speed(const struct mp_placement *pl, const struct mp_cluster *c, int k)
{
    double s = c->hosts[pl->r[k].host].topo.cores[pl->r[k].core].speed;
    return s > 0 ? s : 1.0;
}

enum mp_link_level mp_place_level(const struct mp_placement *pl, const struct mp_cluster *c, int a,
                                  int b)
{
    if (pl->r[a].host != pl->r[b].host)
        return MP_LINK_NET;
    const struct mp_topo *t = &c->hosts[pl->r[a].host].topo;
    const struct mp_core *x = &t->cores[pl->r[a].core], *y = &t->cores[pl->r[b].core];
    if (x == y || (x->l3 >= 0 && x->l3 == y->l3))
        return MP_LINK_L3;
    if (x->numa >= 0 && x->numa == y->numa)
        return MP_LINK_NUMA;
    return x->socket == y->socket ? MP_LINK_SOCKET : MP_LINK_HOST;
}

int mp_place_to_plan(struct mp_plan *p, const struct mp_placement *pl, const struct mp_cluster *c,
                     struct mp_err *err)
{
    free(p->ranks);
    p->n_ranks = pl->n;
    p->ranks = calloc((size_t)pl->n, sizeof *p->ranks);
    if (!p->ranks)
        return MP_FAIL(err, NOMEM, "out of memory");
    for (int k = 0; k < pl->n; k++) {
        struct mp_plan_rank *r = &p->ranks[k];
        const struct mp_cluster_host *h = &c->hosts[pl->r[k].host];
        const struct mp_core *core = &h->topo.cores[pl->r[k].core];
        r->stage = k % p->P, r->replica = k / p->P;
        snprintf(r->host, sizeof r->host, "%s", h->name);
        r->socket = core->socket, r->core = core->core, r->pu = core->pu;
        /* Open MPI reads S:C as a socket and a core counted within that socket. Without
         * Package objects there is no socket to name, so the slot is the core alone. */
        if (h->topo.has_packages)
            snprintf(r->slot, sizeof r->slot, "%d:%d", core->socket, core->core_in_socket);
        else
            snprintf(r->slot, sizeof r->slot, "%d", core->core);
    }
    for (int v = 0; v < p->n_stages; v++) {
        struct mp_plan_stage *st = &p->stages[v];
        int s = mp_vstage_rank(mp_sched_place(p->schedule), v, p->P);
        st->n_ranks = p->D < 64 ? p->D : 64;
        for (int d = 0; d < st->n_ranks; d++) {
            st->ranks[d] = d * p->P + s;
            st->cores[d] = p->ranks[d * p->P + s].core;
        }
        snprintf(st->host, sizeof st->host, "%s", p->ranks[s].host);
    }
    return 0;
}

int mp_place_write_rankfile(const struct mp_plan *p, const char *path, struct mp_err *err)
{
    if (!p->ranks || p->n_ranks < 1)
        return MP_FAIL(err, USAGE, "%s: the plan has no placement to write", path);
    FILE *f = fopen(path, "w");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot write rankfile: %s", path, strerror(errno));
    for (int k = 0; k < p->n_ranks; k++)
        fprintf(f, "rank %d=%s slot=%s\n", k, p->ranks[k].host, p->ranks[k].slot);
    if (fclose(f) != 0)
        return MP_FAIL(err, IO, "%s: write failed: %s", path, strerror(errno));
    return 0;
}
