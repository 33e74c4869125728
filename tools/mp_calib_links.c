/* Calibration of the links between ranks (mp_calib.h's mp_calib_links): for each topology level
 * that the plan's ranks span on this host (same L3, same NUMA node, same socket, across sockets),
 * `mpipe plan` runs `mpirun -np 2 --rankfile F <this mpipe> bench p2p --json` on one pair of the
 * cores it would place ranks on at that level, and prices that level with the pair's smallest
 * latency and largest streaming bandwidth, as `--links` would from a file. Measured once per
 * machine: the levels are cached with the other rates. Why measure: the documented defaults are
 * one machine's figures (the Zen4 VM's L3 pair streams 13.3 GB/s against the default 12); on a
 * machine with several NUMA nodes or sockets, what a pipeline boundary or a replica crossing them
 * costs is the machine's own.
 *
 * Only this host: a plan of a topology file or a hostfile describes machines this process may not
 * run on, so their links keep the defaults or `--links` (measure them there with `mpirun ...
 * mpipe bench p2p --json`). Where mpirun cannot run, a warning names why and the level keeps its
 * default. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_calib.h"
#include "mp_calib_cache.h"

#define P2P_MAX_BYTES "16M" /* past every level's bandwidth knee on the machines measured */
#define P2P_BUDGET "0.02"   /* seconds per size: 25 sizes, about 0.9 s a level */

/* Runs bench p2p between ranks a and b of p (host and slot) and reads the link; why not. */
static const char *measure(const struct mp_plan *p, int a, int b, struct mp_link *out)
{
    char rankfile[] = "/tmp/mpipe-links-XXXXXX", launch[4400];
    if (strchr(p->ranks[a].host, '\''))
        return "cannot start mpirun";
    int fd = mkstemp(rankfile);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd), unlink(rankfile);
        return "cannot write a rankfile in /tmp";
    }
    fprintf(f, "rank 0=%s slot=%s\nrank 1=%s slot=%s\n", p->ranks[a].host, p->ranks[a].slot,
            p->ranks[b].host, p->ranks[b].slot);
    fclose(f);
    snprintf(launch, sizeof launch, "--host '%s:2' --rankfile '%s'", p->ranks[a].host, rankfile);
    json_t *root, *o;
    const char *why = mp__calib_bench_rows(
        launch, "p2p", "--max-bytes " P2P_MAX_BYTES " --budget " P2P_BUDGET " ", 1, &root);
    unlink(rankfile);
    if (why)
        return why;
    json_t *rows = json_object_get(root, "rows");
    double lat = INFINITY, bw = 0;
    size_t i;
    json_array_foreach(rows, i, o)
    {
        double us = json_number_value(json_object_get(o, "latency_us"));
        double gbps = json_number_value(json_object_get(o, "bandwidth_GBps"));
        if (us > 0)
            lat = fmin(lat, us * 1e-6);
        if (gbps > 0)
            bw = fmax(bw, gbps * 1e9);
    }
    json_decref(root);
    if (!isfinite(lat) || !(bw > 0))
        return "`mpirun -np 2 mpipe bench p2p` failed (is mpirun on the PATH?)";
    *out = (struct mp_link){.latency_s = lat, .bandwidth_Bps = bw};
    return NULL;
}

/* The first pair of the placed ranks at level l on two different cores of one host, or -1. */
static int pair_at(const struct mp_placement *pl, const struct mp_cluster *cl,
                   enum mp_link_level l, int *b)
{
    for (int a = 0; a < pl->n; a++)
        for (*b = a + 1; *b < pl->n; (*b)++)
            if (pl->r[a].host == pl->r[*b].host && pl->r[a].core != pl->r[*b].core &&
                mp_place_level(pl, cl, a, *b) == l)
                return a;
    return -1;
}

int mp_calib_links(struct mp_cost_model *cm, const struct mp_cluster *cl, int n, int recalibrate,
                   char *note, size_t note_len, struct mp_err *err)
{
    struct mp_placement pl;
    memset(&pl, 0, sizeof pl);
    struct mp_plan p;
    memset(&p, 0, sizeof p);
    p.P = 1;
    if (note_len)
        note[0] = 0;
    if (n < 2 || cl->n_hosts != 1)
        return 0;
    if (mp_place_ranks(&pl, cl, n, err) || mp_place_to_plan(&p, &pl, cl, err)) {
        mp_placement_free(&pl);
        free(p.ranks);
        return -1;
    }
    struct mp_calib_rates r;
    memset(&r, 0, sizeof r);
    int have_path = mp__calib_key(&r) == 0;
    if (have_path) /* even to measure again: the file keeps the rest, rewritten beside the links */
        mp__calib_load(&r);
    const char *why_not = mp__calib_mpirun_why_not();
    char now[64] = "", cached[64] = "";
    double t0 = mp__calib_now();
    for (int l = 0; l < MP_LINK_NET; l++) {
        int b, a = pair_at(&pl, cl, (enum mp_link_level)l, &b);
        if (a < 0)
            continue;
        const char *name = mp_link_level_name((enum mp_link_level)l);
        char *list = now;
        if (r.link[l].bandwidth_Bps > 0 && !recalibrate) {
            list = cached;
        } else {
            const char *why = why_not ? why_not : measure(&p, a, b, &r.link[l]);
            if (why) {
                fprintf(stderr,
                        "mpipe plan: warning: could not measure the %s link (ranks on slots %s "
                        "and %s): %s; it is priced from the default\n",
                        name, p.ranks[a].slot, p.ranks[b].slot, why);
                continue;
            }
            r.dirty = 1;
        }
        cm->link[l] = r.link[l];
        size_t at = strlen(list);
        snprintf(list + at, 64 - at, "%s%s", at ? ", " : "", name);
    }
    if (*now)
        fprintf(stderr, "mpipe plan: measured the links between ranks in %.1f s (%s; mpirun -np 2 "
                        "mpipe bench p2p)\n", mp__calib_now() - t0, now);
    if (have_path && r.dirty)
        mp__calib_save(&r);
    int at = 0;
    if (*now && note_len > 0)
        at = snprintf(note, note_len, ", links measured now (%s)", now);
    if (*cached && at >= 0 && (size_t)at < note_len)
        snprintf(note + at, note_len - (size_t)at, ", links from the cache (%s)", cached);
    mp__calib_release(&r);
    mp_placement_free(&pl);
    free(p.ranks);
    return 0;
}
