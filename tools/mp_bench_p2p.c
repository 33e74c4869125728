/* `mpipe bench p2p`: latency and bandwidth between every pair of ranks (the others wait at a
 * barrier), with OSU's methods (osu_latency, osu_bw, osu_bibw) run by the transport's benchmark
 * loops, each message size bounded by a time budget, the hwloc relation of the pair, and a
 * latency / peak-bandwidth matrix. The rows are the link model `mpipe plan --links` reads. */
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_cli.h"
#include "mp_flags.h"
#include "mp_place.h"
#include "mp_topo.h"

struct p2p_args {
    size_t max_bytes;
    double budget_s;  /* per message size per pair */
    int json;
};

/* What each rank tells the others about where it runs. */
struct where {
    char host[256];
    int bound, l3, numa, socket, core;
};

/* One size's plan, decided by the first rank of the pair from a calibration round trip. */
struct size_plan {
    int lat_iters, lat_warm, window, bw_iters, bw_warm;
};

struct result {
    double latency_us, pingpong_GBps, bandwidth_GBps, bibw_GBps;
};

static int takes_value(const char *f)
{
    return !strcmp(f, "--max-bytes") || !strcmp(f, "--budget");
}

static int parse(struct p2p_args *a, int argc, char **argv, struct mp_err *err)
{
    a->max_bytes = (size_t)64 << 20;
    a->budget_s = 0.2;
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-')
            return MP_FAIL(err, USAGE, "bench p2p: unexpected argument '%s'", argv[i]);
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err))
            return -1;
        if (mp_flag_is(f, "--json"))
            a->json = 1;
        else if (mp_flag_is(f, "--max-bytes")) {
            if (mp_bench_max_bytes(f, v, 1, &a->max_bytes, err))
                return -1;
        } else if (mp_flag_is(f, "--budget")) {
            if (mp_flag_double(f, v, 0.001, 60, &a->budget_s, err))
                return -1;
        } else
            return MP_FAIL(err, USAGE, "bench p2p: unknown flag '%s' (see mpipe bench --help)", f);
    }
    return 0;
}

/* Nearest shared level of two ranks; unbound ranks can only be said to share the host. */
static enum mp_link_level relation(const struct where *a, const struct where *b)
{
    if (strcmp(a->host, b->host))
        return MP_LINK_NET;
    if (!a->bound || !b->bound)
        return MP_LINK_HOST;
    if (a->l3 >= 0 && a->l3 == b->l3)
        return MP_LINK_L3;
    if (a->numa >= 0 && a->numa == b->numa)
        return MP_LINK_NUMA;
    if (a->socket >= 0 && a->socket == b->socket)
        return MP_LINK_SOCKET;
    return MP_LINK_HOST;
}

static int gather_where(struct mp_bench *b, struct where *all, struct mp_err *err)
{
    struct where me;
    struct mp_core c;
    memset(&me, 0, sizeof me);
    snprintf(me.host, sizeof me.host, "%s", mp_xport_host(b->x));
    if (mp_topo_binding(&c, &me.bound, err))
        return -1;
    me.l3 = c.l3, me.numa = c.numa, me.socket = c.socket, me.core = c.core;
    return mp_xport_allgather(b->x, &me, all, sizeof me, "where the ranks run", err);
}

/* Both ends time the same loop; the slower clock is the figure (max over ranks). */
static int exchange_max(struct mp_xport *x, int peer, double *t, struct mp_err *err)
{
    double theirs = 0;
    int sreq = -1, rreq = -1;
    if (mp_xport_irecv(x, &theirs, sizeof theirs, peer, 11, &rreq, err) ||
        mp_xport_isend(x, t, sizeof *t, peer, 11, &sreq, err) ||
        mp_xport_wait(x, &rreq, "the peer's timing", err) ||
        mp_xport_wait(x, &sreq, "the peer's timing", err))
        return -1;
    if (theirs > *t)
        *t = theirs;
    return 0;
}

static int clampi(double v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : (int)v;
}

/* Calibrates, then the first rank sizes every loop to the budget: 40% for the ping-pong, 30% each
 * for the streaming and bidirectional windows. The calibration doubles its round trips until they
 * take 5% of the budget: one round trip alone, on cores shared with a busy neighbour, could be a
 * tenth of the typical one, and loops sized from it overshot the budget many times over. */
static int plan_size(struct mp_xport *x, int peer, int first, char *buf, size_t bytes,
                     double budget, struct size_plan *p, struct mp_err *err)
{
    double rt = 0;
    int n = 1;
    for (;;) {
        if (mp_xport_bench_pingpong(x, peer, first, buf, bytes, n == 1, n, &rt, err))
            return -1;
        int next = first && rt < 0.05 * budget && n < 4096 ? 2 * n : 0;
        if (first ? mp_xport_send(x, &next, sizeof next, peer, 12, "the calibration", err)
                  : mp_xport_recv(x, &next, sizeof next, peer, 12, "the calibration", err))
            return -1;
        if (!next)
            break;
        n = next;
    }
    if (first) {
        double one_way = rt / n / 2 > 1e-7 ? rt / n / 2 : 1e-7;
        p->window = clampi((double)((size_t)16 << 20) / (double)bytes, 1, 64);
        p->lat_iters = clampi(0.4 * budget / (2 * one_way), 2, 10000);
        p->bw_iters = clampi(0.3 * budget / (one_way * p->window + one_way), 2, 1000);
        p->lat_warm = bytes <= 8192 ? clampi(p->lat_iters / 10, 1, 100) : 1;
        p->bw_warm = 1;
        return mp_xport_send(x, p, sizeof *p, peer, 12, "the benchmark plan", err);
    }
    return mp_xport_recv(x, p, sizeof *p, peer, 12, "the benchmark plan", err);
}

static int measure_size(struct mp_xport *x, int peer, int first, char *sbuf, char *rbuf,
                        size_t bytes, double budget, struct result *r, struct mp_err *err)
{
    struct size_plan p;
    double t_lat, t_bw, t_bi;
    if (plan_size(x, peer, first, sbuf, bytes, budget, &p, err) ||
        mp_xport_bench_pingpong(x, peer, first, sbuf, bytes, p.lat_warm, p.lat_iters, &t_lat,
                                err) ||
        exchange_max(x, peer, &t_lat, err) ||
        mp_xport_bench_window(x, peer, first, sbuf, rbuf, bytes, p.window, 0, p.bw_warm,
                              p.bw_iters, &t_bw, err) ||
        exchange_max(x, peer, &t_bw, err) ||
        mp_xport_bench_window(x, peer, first, sbuf, rbuf, bytes, p.window, 1, p.bw_warm,
                              p.bw_iters, &t_bi, err) ||
        exchange_max(x, peer, &t_bi, err))
        return -1;
    double half = t_lat / p.lat_iters / 2, moved = (double)bytes * p.window * p.bw_iters;
    r->latency_us = half * 1e6;
    r->pingpong_GBps = (double)bytes / half / 1e9;
    r->bandwidth_GBps = moved / t_bw / 1e9;
    r->bibw_GBps = 2 * moved / t_bi / 1e9;
    return 0;
}

static void print_row(struct mp_bench *b, int src, int dst, size_t bytes, const struct result *r,
                      const char *rel)
{
    fprintf(b->out, "%5d %5d %12zu %12.2f %14.3f %15.3f %11.3f  %s\n", src, dst, bytes,
            r->latency_us, r->pingpong_GBps, r->bandwidth_GBps, r->bibw_GBps, rel);
    fflush(b->out);
    mp_bench_row(b, json_pack("{s:i, s:i, s:I, s:f, s:f, s:f, s:f, s:s}", "src", src, "dst", dst,
                              "bytes", (json_int_t)bytes, "latency_us", r->latency_us,
                              "pingpong_GBps", r->pingpong_GBps, "bandwidth_GBps",
                              r->bandwidth_GBps, "bibw_GBps", r->bibw_GBps, "relation", rel));
}

/* One pair: the first rank measures every size with the second; rank 0 prints. When rank 0 is
 * not in the pair, the first rank sends it the results. summary: [lat of smallest, peak bw]. */
static int run_pair(struct mp_bench *b, const struct p2p_args *a, int src, int dst,
                    const char *rel, char *sbuf, char *rbuf, double *summary, struct mp_err *err)
{
    size_t n = 0;
    for (size_t s = 1; s <= a->max_bytes; s *= 2)
        n++;
    struct result *res = calloc(n, sizeof *res);
    if (!res)
        return MP_FAIL(err, NOMEM, "out of memory");
    int rc = 0, me = b->rank;
    if (me == src || me == dst) {
        size_t s = 1;
        for (size_t i = 0; i < n && !rc; i++, s *= 2)
            rc = measure_size(b->x, me == src ? dst : src, me == src, sbuf, rbuf, s, a->budget_s,
                              &res[i], err);
        if (!rc && me == src && src != 0)
            rc = mp_xport_send(b->x, res, n * sizeof *res, 0, 13, "rank 0 to take the results",
                               err);
    }
    if (!rc && me == 0 && src != 0)
        rc = mp_xport_recv(b->x, res, n * sizeof *res, src, 13, "the pair's results", err);
    if (!rc && me == 0) {
        summary[0] = res[0].latency_us, summary[1] = 0;
        size_t s = 1;
        for (size_t i = 0; i < n; i++, s *= 2) {
            print_row(b, src, dst, s, &res[i], rel);
            if (res[i].bandwidth_GBps > summary[1])
                summary[1] = res[i].bandwidth_GBps;
        }
    }
    free(res);
    return rc;
}

/* The matrix after the table: latency of the smallest message above the diagonal's row, peak
 * streaming bandwidth below; one line per source rank. */
static void print_matrix(struct mp_bench *b, const double *sum)
{
    int n = b->size;
    fprintf(b->out, "#\n# matrix: latency_us of %s (upper right), peak bandwidth_GBps (lower "
                    "left)\n#   rank", "1 B");
    for (int j = 0; j < n; j++)
        fprintf(b->out, " %9d", j);
    fputc('\n', b->out);
    for (int i = 0; i < n; i++) {
        fprintf(b->out, "# %6d", i);
        for (int j = 0; j < n; j++) {
            if (i == j)
                fprintf(b->out, " %9s", "-");
            else if (i < j)
                fprintf(b->out, " %9.2f", sum[2 * (i * n + j)]);
            else
                fprintf(b->out, " %9.2f", sum[2 * (j * n + i) + 1]);
        }
        fputc('\n', b->out);
    }
}

static void header(struct mp_bench *b, const struct p2p_args *a)
{
    char method[400];
    snprintf(method, sizeof method,
             "OSU methods: latency = half the ping-pong round trip; bandwidth = windows of <= 64 "
             "nonblocking sends + ack (osu_bw);\n# bibw = both ways at once (osu_bibw). Sizes 1 B "
             "to %zu B; per size per pair a %.2f s budget sets the iterations; warm-up discarded;"
             "\n# MPI_Wtime; the slower of the pair's two clocks", a->max_bytes, a->budget_s);
    mp_bench_header(b, "p2p", method);
    if (b->rank == 0)
        fprintf(b->out, "#%4s %5s %12s %12s %14s %15s %11s  %s\n", "src", "dst", "bytes",
                "latency_us", "pingpong_GBps", "bandwidth_GBps", "bibw_GBps", "relation");
}

int mp_bench_p2p(int argc, char **argv, struct mp_err *err)
{
    struct p2p_args a = {0};
    int bad_flags = parse(&a, argc, argv, err);
    if (bad_flags && !mp_cli_under_mpirun())
        return -1;
    struct mp_bench b;
    if (mp_bench_init(&b, a.json, &argc, &argv, err))
        return -1;
    /* A flag only some ranks find wrong (an older mpipe on one host) is theirs to say. */
    int n = b.size, rc = mp_xport_settle(b.x, bad_flags, "the command line", err);
    if (rc) {
        mp_cli_report_shared(b.x, "bench", err);
        mp_bench_finish(&b, 0);
        return rc;
    }
    if (n < 2) { /* a usage mistake: it exited 0 with no rows */
        mp_bench_finish(&b, 0);
        return MP_FAIL(err, USAGE, "one rank, no pairs: run it under mpirun -np 2 or more");
    }
    struct where *w = calloc((size_t)n, sizeof *w);
    double *sum = calloc((size_t)n * (size_t)n * 2, sizeof *sum);
    char *sbuf = malloc(a.max_bytes), *rbuf = malloc(a.max_bytes);
    if (!w || !sum || !sbuf || !rbuf)
        rc = MP_FAIL(err, NOMEM, "out of memory for %zu-byte buffers", a.max_bytes);
    if (!rc) {
        memset(sbuf, 1, a.max_bytes), memset(rbuf, 0, a.max_bytes);
        rc = gather_where(&b, w, err);
    }
    if (!rc)
        header(&b, &a);
    for (int i = 0; !rc && i < n; i++)
        for (int j = i + 1; !rc && j < n; j++) {
            rc = mp_xport_barrier(b.x, "the previous pair to finish", err);
            if (!rc)
                rc = run_pair(&b, &a, i, j, mp_link_level_name(relation(&w[i], &w[j])), sbuf,
                              rbuf, sum + 2 * (i * n + j), err);
        }
    if (!rc && b.rank == 0 && n > 1)
        print_matrix(&b, sum);
    free(w), free(sum), free(sbuf), free(rbuf);
    mp_bench_finish(&b, rc == 0);
    return rc;
}
