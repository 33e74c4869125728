/* `mpipe sim plan.json`: rebuilds the plan's schedule, simulates one step with the plan's own
 * per-layer costs and links (the same simulator `mpipe plan` predicts with), prints step time,
 * bubble, per-rank busy/idle and peak activation memory, and writes the trace and SVG timeline.
 * It reads only the plan: no model file, no MPI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_cli.h"
#include "mp_cost.h"
#include "mp_flags.h"
#include "mp_plan.h"
#include "mp_trace.h"

static const char help[] =
    "usage: mpipe sim plan.json [--trace FILE.json] [--svg FILE.svg]\n"
    "\n"
    "Simulates one training step of a plan (from mpipe plan --out): the schedule's action lists\n"
    "timed with the plan's per-layer costs and links. Prints the predicted step time, bubble,\n"
    "per-rank busy and idle time and peak activation memory (saved activations plus in-flight\n"
    "messages).\n"
    "\n"
    "  --trace FILE.json   Chrome trace-event timeline (open in Perfetto or chrome://tracing)\n"
    "  --svg FILE.svg      the same timeline as a picture\n";

static int takes_value(const char *f) { return strcmp(f, "--help") != 0; }

static int parse(int argc, char **argv, const char **plan, const char **trace, const char **svg,
                 struct mp_err *err)
{
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-') {
            if (*plan)
                return MP_FAIL(err, USAGE, "unexpected argument '%s' (one plan file only)",
                               argv[i]);
            *plan = argv[i++];
            continue;
        }
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err))
            return -1;
        if (mp_flag_is(f, "--trace"))
            *trace = v;
        else if (mp_flag_is(f, "--svg"))
            *svg = v;
        else
            return MP_FAIL(err, USAGE, "unknown flag '%s' (see mpipe sim --help)", f);
    }
    if (!*plan)
        return MP_FAIL(err, USAGE, "no plan given (e.g. mpipe sim plan.json)");
    return 0;
}

static void report(const struct mp_plan *p, const struct mp_sim_result *r)
{
    printf("# mpipe sim %s: %s, P=%d D=%d V=%d, M=%d (%d per replica), batch %zu\n", p->model,
           mp_sched_name(p->schedule), p->P, p->D, p->V, p->M, p->M / p->D, p->batch);
    /* With replicas, a row is a pipeline position and every replica's rank there (they run the
     * same passes): "rank 0" alone read as if the other ranks were not simulated. */
    printf("%-5s %10s %10s %8s %14s\n", p->D > 1 ? "ranks" : "rank", "busy_ms", "idle_ms",
           "busy_%", "peak_act_MB");
    for (int q = 0; q < p->P && q < 1024; q++) {
        double idle = r->step_s - r->busy_s[q];
        char who[64];
        int len = snprintf(who, sizeof who, "%d", q), d = 1;
        for (; d < p->D && (size_t)len < sizeof who - 16; d++)
            len += snprintf(who + len, sizeof who - (size_t)len, ",%d", d * p->P + q);
        if (d < p->D)
            snprintf(who + len, sizeof who - (size_t)len, ",...");
        printf("%-5s %10.3f %10.3f %8.1f %14.2f\n", who, 1e3 * r->busy_s[q], 1e3 * idle,
               r->step_s > 0 ? 100.0 * r->busy_s[q] / r->step_s : 0.0,
               r->peak_act_bytes[q] / 1048576.0);
    }
    printf("predicted step %.3f ms (pipeline %.3f ms", 1e3 * p->step_s, 1e3 * r->step_s);
    if (p->allreduce_s > 0)
        printf(" + allreduce %.3f ms", 1e3 * p->allreduce_s);
    printf("), bubble %.3f, %.1f samples/s, peak activation memory %.2f MB\n", p->bubble,
           p->samples_per_s, r->max_peak_act_bytes / 1048576.0);
    /* The simulator prices from the plan's rates alone; the plan's own step also leaned by its
     * layout's runs on that machine (mp_cost_lean). */
    if (p->lean_runs > 0)
        printf("# the plan's step also leans %.2fx by this layout's last %d runs on its machine; "
               "these figures are the rates' alone\n", p->lean, p->lean_runs);
}

int mp_cmd_sim(int argc, char **argv, struct mp_err *err)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return fputs(help, stdout), 0;
    const char *path = NULL, *trace_path = NULL, *svg_path = NULL;
    if (parse(argc, argv, &path, &trace_path, &svg_path, err))
        return -1;
    struct mp_plan p;
    if (mp_plan_read(&p, path, err))
        return -1;
    struct mp_trace t;
    mp_trace_init(&t, p.P);
    struct mp_sim_result *r = malloc(sizeof *r);
    int rc = r ? 0 : MP_FAIL(err, NOMEM, "out of memory");
    if (rc == 0)
        rc = mp_cost_predict(&p, r, (trace_path || svg_path) ? &t : NULL, err);
    if (rc == 0)
        report(&p, r);
    if (rc == 0 && trace_path)
        rc = mp_trace_write_json(&t, trace_path, err);
    if (rc == 0 && svg_path) {
        char title[640];
        snprintf(title, sizeof title, "%s: %s P=%d M=%d, step %.3f ms, bubble %.3f", p.model,
                 mp_sched_name(p.schedule), p.P, p.M, 1e3 * p.step_s, p.bubble);
        rc = mp_trace_write_svg(&t, svg_path, title, err);
    }
    free(r);
    mp_trace_free(&t);
    mp_plan_free(&p);
    return rc;
}
