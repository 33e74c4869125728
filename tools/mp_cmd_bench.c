/* `mpipe bench`: topology-aware benchmarks (DESIGN.md §7). This file only dispatches to the five
 * benchmarks (mp_bench_*.c) and documents them; each parses its own flags before MPI starts, so a
 * bad flag exits 2 without a job, and --json makes rank 0 print only {"rows": [...]}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_bench.h"
#include "mp_cli.h"

static const char help[] =
    "usage: mpipe bench p2p|gemm|layers|pipeline|reduce [options] [--json]\n"
    "\n"
    "  mpirun -np N mpipe bench p2p [--max-bytes BYTES] [--budget SECONDS]\n"
    "      latency, ping-pong, streaming (osu_bw) and bidirectional bandwidth between every pair\n"
    "      of ranks, 1 B .. --max-bytes (default 64M) in powers of two, each size bounded by\n"
    "      --budget seconds per pair (default 0.2); the hwloc relation of each pair; a matrix\n"
    "  mpipe bench gemm [--shape MxNxK[:OP] ...] [--model M.mp] [--batch B] [--budget S]\n"
    "      GFLOPS of every BLIS call path for each shape (default: the forward, input-grad and\n"
    "      weight-grad GEMMs of models/mlp.mp at batch 256); '*' marks the path mpipe uses;\n"
    "      OP is NN (default), NT, TN or TT (A and B transposed or not); each path timed for\n"
    "      --budget seconds (default 0.15)\n"
    "  mpipe bench layers MODEL.mp [--batch B] [--out PROFILE.json] [--budget S]\n"
    "      forward, input-grad (B) and weight-grad (W) seconds per layer (median after warm-up),\n"
    "      bytes, and measured / analytic cost; PROFILE.json feeds `mpipe plan --profile`;\n"
    "      --budget seconds of repeats per layer (default 0.3)\n"
    "  mpirun -np P mpipe bench pipeline MODEL.mp [--batch B] [--stages P,P]\n"
    "      [--schedules S,S] [--micro-batches M,M] [--chunks V] [--steps N] [--ceiling]\n"
    "      [--budget S] [--csv F] [--svg F] [--trace F]\n"
    "      real training steps (synthetic data) for every stage count (default 1..P), schedule\n"
    "      (default gpipe,1f1b,interleaved,zb1,zbv) and M (default 1,2,4,8); measured vs\n"
    "      simulated step time, bubble, peak activation memory, samples/s; SVG of throughput\n"
    "      and bubble vs M; Chrome trace of the fastest row (--trace F.json: its picture\n"
    "      too, F.svg). --ceiling: after every step all ranks time DESIGN.md's GEMM ceiling\n"
    "      (256x1024x1024, fastest direct BLIS path) at once; of_ceil = the median of each\n"
    "      step's GFLOPS over the ceilings around it;\n"
    "      --chunks: interleaved's chunks per rank (default 2); --budget: seconds of timing\n"
    "      per layer for the simulated step's profile (default 0.15)\n"
    "  mpirun -np D mpipe bench reduce [--max-bytes BYTES]\n"
    "      seconds of the data-parallel gradient reduction among the D ranks (each a replica),\n"
    "      the engine's own ordered bucketed reduction, for arenas of 4K .. --max-bytes (default\n"
    "      64M) in powers of four; what `mpipe plan` prices a step's reduction from\n"
    "\n"
    "  --json    print only {\"rows\": [...]} on stdout (rank 0); headers and tables go to stderr\n"
    "\n"
    "Row keys: p2p src, dst, bytes, latency_us, pingpong_GBps, bandwidth_GBps, bibw_GBps,\n"
    "relation; gemm m, n, k, path, gflops; layers index, kind, forward_s, backward_input_s,\n"
    "backward_weight_s; pipeline schedule, stages, micro_batches, measured_step_s,\n"
    "simulated_step_s, bubble, samples_per_s (with --ceiling also ceiling_gflops,\n"
    "of_ceiling); reduce ranks, bytes, seconds, GBps. docs/benchmarks.md defines every column.\n"
    "Feed the results to the planner: mpipe plan ... --links p2p.json --profile PROFILE.json\n";

/* Each benchmark's row keys, for its own --help (the whole help lists them all above). */
static const char *const row_keys[][2] = {
    {"p2p", "src, dst, bytes, latency_us, pingpong_GBps, bandwidth_GBps, bibw_GBps, relation"},
    {"gemm", "m, n, k, path, gflops"},
    {"layers", "index, kind, forward_s, backward_input_s, backward_weight_s"},
    {"pipeline", "schedule, stages, micro_batches, measured_step_s, simulated_step_s, bubble,\n"
                 "samples_per_s (with --ceiling also ceiling_gflops, of_ceiling)"},
    {"reduce", "ranks, bytes, seconds, GBps"}};

/* `mpipe bench NAME --help`: NAME's own lines of the whole help (its usage line and the lines
 * under it), --json and its row keys; a user tour found the whole help printed for each. 0 when
 * NAME is no benchmark (the whole help then). */
static int bench_help(const char *name)
{
    char want[32];
    const char *start = NULL, *end = NULL, *keys = NULL;
    snprintf(want, sizeof want, "mpipe bench %s ", name);
    for (size_t i = 0; i < sizeof row_keys / sizeof row_keys[0]; i++)
        if (!strcmp(row_keys[i][0], name))
            keys = row_keys[i][1];
    for (const char *line = help; keys && *line && !end;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
        char text[256];
        snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text ? len : sizeof text - 1),
                 line);
        /* a benchmark's usage line is indented two spaces; the lines under it, more */
        int usage = !strncmp(text, "  ", 2) && text[2] != ' ' && strstr(text, "mpipe bench ");
        if (start && (usage || len == 1))
            end = line;
        else if (!start && usage && strstr(text, want))
            start = line;
        line += len;
    }
    const char *json = strstr(help, "\n  --json ");
    if (!start || !end || !json)
        return 0;
    json++;
    printf("usage:\n%.*s\n%.*s\nRow keys: %s.\ndocs/benchmarks.md defines every column; mpipe "
           "bench --help has all five benchmarks.\n", (int)(end - start), start,
           (int)(strcspn(json, "\n") + 1), json, keys);
    return 1;
}

int mp_cmd_bench(int argc, char **argv, struct mp_err *err)
{
    static const struct {
        const char *name;
        int (*run)(int, char **, struct mp_err *);
    } benches[] = {{"p2p", mp_bench_p2p},
                   {"gemm", mp_bench_gemm},
                   {"layers", mp_bench_layers},
                   {"pipeline", mp_bench_pipeline},
                   {"reduce", mp_bench_reduce}};
    for (int i = 1; i < argc; i++) /* `mpipe bench pipeline --help`: the pipeline's own */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (i == 1 || !bench_help(argv[1]))
                fputs(help, stdout);
            return 0;
        }
    if (argc < 2 || argv[1][0] == '-') {
        return MP_FAIL(err, USAGE, "expected p2p, gemm, layers, pipeline or reduce (see mpipe "
                                   "bench --help)");
    }
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++) {
        if (strcmp(argv[1], benches[i].name))
            continue;
        int rc = benches[i].run(argc - 1, argv + 1, err);
        /* A usage or input error every rank finds where no agreement runs (bench gemm and bench
         * layers) rank 0 says once; what p2p and pipeline settled (the flags, the model:
         * mp_xport_settle) or marked shared (--stages against the ranks) was said already, each
         * rank its own or rank 0 for all (mp_cli_report_shared). */
        const char *r = getenv("OMPI_COMM_WORLD_RANK");
        int alike = !err->all_failed && (err->code == MP_ERR_USAGE || err->code == MP_ERR_INPUT);
        if (rc && r && strcmp(r, "0") && alike)
            err->msg[0] = 0;
        return rc;
    }
    return MP_FAIL(err, USAGE, "unknown benchmark '%s': expected p2p, gemm, layers, pipeline or "
                   "reduce", argv[1]);
}
