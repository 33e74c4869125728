/* The outputs of `mpipe bench pipeline`: the fixed-width table and JSON rows, the CSV, and an SVG
 * plot of throughput and bubble against the number of micro-batches, one line per schedule and
 * stage count. The SVG is written by hand (no plotting dependency) and is meant to be opened in a
 * browser or pasted into docs. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mp_bench_pipe.h"

void mp_pipe_table_header(FILE *f, int ceiling)
{
    fprintf(f, "#%-11s %6s %6s %13s %13s %7s %7s %7s %12s %12s %10s", "schedule", "stages", "M",
            "measured_ms", "simulated_ms", "error%", "bubble", "sim_bub", "peak_act_MB",
            "sim_act_MB", "samples/s");
    fprintf(f, ceiling ? " %9s %8s\n" : "\n", "ceil_GF", "of_ceil");
}

void mp_pipe_row_out(struct mp_bench *b, const struct pipe_row *r, size_t batch)
{
    fprintf(b->out, " %-11s %6d %6d %13.2f %13.2f %+7.1f %7.3f %7.3f %12.2f %12.2f %10.0f",
            mp_sched_name(r->sched), r->P, r->M, r->measured_s * 1e3, r->simulated_s * 1e3,
            r->error * 100, r->bubble, r->sim_bubble, r->peak_act / 1e6, r->sim_peak_act / 1e6,
            r->samples_per_s);
    if (r->ceiling_gflops > 0)
        fprintf(b->out, " %9.1f %8.3f", r->ceiling_gflops, r->of_ceiling);
    fputc('\n', b->out);
    fflush(b->out);
    /* Byte counts as JSON integers: reals at 6 digits printed 1757696 as 1.7577e6. */
    json_t *row = json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:i, "
                              "s:I, s:f}",
                              "schedule", mp_sched_name(r->sched), "stages", r->P,
                              "micro_batches", r->M, "measured_step_s", r->measured_s,
                              "simulated_step_s", r->simulated_s, "bubble", r->bubble,
                              "samples_per_s", r->samples_per_s, "error", r->error,
                              "simulated_bubble", r->sim_bubble, "peak_act_bytes",
                              (json_int_t)llround(r->peak_act), "simulated_peak_act_bytes",
                              (json_int_t)llround(r->sim_peak_act), "chunks", r->V,
                              "batch", (json_int_t)batch, "first_step_s", r->first_step_s);
    if (row && r->ceiling_gflops > 0) {
        json_object_set_new(row, "ceiling_gflops", json_real(r->ceiling_gflops));
        json_object_set_new(row, "of_ceiling", json_real(r->of_ceiling));
    }
    mp_bench_row(b, row);
}

int mp_pipe_write_csv(const char *path, const struct pipe_row *rows, size_t n, size_t batch,
                      struct mp_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot write the CSV", path);
    fprintf(f, "schedule,stages,chunks,micro_batches,batch,measured_step_s,simulated_step_s,"
               "error,bubble,simulated_bubble,peak_act_bytes,simulated_peak_act_bytes,"
               "samples_per_s,first_step_s\n");
    for (size_t i = 0; i < n; i++) {
        const struct pipe_row *r = &rows[i];
        fprintf(f, "%s,%d,%d,%d,%zu,%.6g,%.6g,%.4f,%.4f,%.4f,%.0f,%.0f,%.1f,%.6g\n",
                mp_sched_name(r->sched), r->P, r->V, r->M, batch, r->measured_s, r->simulated_s,
                r->error, r->bubble, r->sim_bubble, r->peak_act, r->sim_peak_act,
                r->samples_per_s, r->first_step_s);
    }
    if (fclose(f))
        return MP_FAIL(err, IO, "%s: cannot write the CSV", path);
    return 0;
}

/* One panel: x = log2 M, y = the value; a polyline per (schedule, stages). */
static void panel(FILE *f, const struct pipe_row *rows, size_t n, int x0, const char *label,
                  int bubble)
{
    static const char *const color[MP_SCHED_COUNT] = {"#1f77b4", "#d62728", "#2ca02c",
                                                      "#9467bd", "#ff7f0e"};
    const int W = 380, H = 260, y0 = 40;
    double xmax = 1, ymax = bubble ? 1 : 0;
    for (size_t i = 0; i < n; i++) {
        xmax = fmax(xmax, log2(rows[i].M));
        ymax = fmax(ymax, bubble ? rows[i].bubble : rows[i].samples_per_s);
    }
    ymax = ymax > 0 ? ymax * 1.1 : 1;
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#888'/>\n", x0, y0,
            W, H);
    fprintf(f, "<text x='%d' y='%d' font-size='13'>%s (max %.3g)</text>\n", x0, y0 - 8, label,
            ymax / 1.1);
    for (int k = 0; k <= (int)xmax; k++)
        fprintf(f, "<text x='%.0f' y='%d' font-size='11'>M=%d</text>\n",
                x0 + k * W / fmax(xmax, 1) - 10, y0 + H + 15, 1 << k);
    for (size_t i = 0; i < n; i++) {
        int first = 1;
        for (size_t j = 0; j < n; j++)
            first &= !(j < i && rows[j].sched == rows[i].sched && rows[j].P == rows[i].P);
        if (!first)
            continue; /* one polyline per (schedule, P), drawn from its first row */
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2'%s points='",
                color[rows[i].sched], rows[i].P > 1 ? "" : " stroke-dasharray='5,4'");
        for (size_t j = i; j < n; j++) {
            if (rows[j].sched != rows[i].sched || rows[j].P != rows[i].P)
                continue;
            double v = bubble ? rows[j].bubble : rows[j].samples_per_s;
            fprintf(f, "%.1f,%.1f ", x0 + log2(rows[j].M) * W / fmax(xmax, 1),
                    y0 + H - v / ymax * H);
        }
        fprintf(f, "'/>\n");
    }
}

int mp_pipe_write_svg(const char *path, const struct pipe_row *rows, size_t n, const char *title,
                      struct mp_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot write the SVG", path);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='860' height='360' "
               "font-family='sans-serif'>\n<rect width='860' height='360' fill='white'/>\n"
               "<text x='20' y='18' font-size='14'>%s</text>\n", title);
    panel(f, rows, n, 40, "samples/s vs micro-batches M", 0);
    panel(f, rows, n, 460, "measured bubble vs M", 1);
    static const char *const color[MP_SCHED_COUNT] = {"#1f77b4", "#d62728", "#2ca02c",
                                                      "#9467bd", "#ff7f0e"};
    for (int s = 0; s < MP_SCHED_COUNT; s++)
        fprintf(f, "<text x='%d' y='350' font-size='12' fill='%s'>%s</text>\n", 40 + 110 * s,
                color[s], mp_sched_name((enum mp_sched_kind)s));
    fprintf(f, "<text x='500' y='350' font-size='12'>solid: P &gt; 1, dashed: P = 1</text>\n"
               "</svg>\n");
    if (fclose(f))
        return MP_FAIL(err, IO, "%s: cannot write the SVG", path);
    return 0;
}
