/* Shared between the two halves of `mpipe bench pipeline`: the runner (mp_bench_pipeline.c:
 * measures real training steps and simulates the same configuration) and the outputs
 * (mp_bench_pipeline_out.c: table, CSV, SVG). */
#ifndef MP_BENCH_PIPE_H
#define MP_BENCH_PIPE_H

#include <stdio.h>

#include "mp_bench.h"
#include "mp_sched.h"

struct pipe_row {
    enum mp_sched_kind sched;
    int P, V, M;
    double measured_s, simulated_s, error;   /* error = simulated / measured - 1 */
    double bubble, sim_bubble;               /* measured (RESULT's), simulated */
    double peak_act, sim_peak_act;           /* bytes */
    double samples_per_s;                    /* batch / measured_s (steady state) */
    double first_step_s;                     /* the first step, excluded from measured_s */
    double ceiling_gflops, of_ceiling;       /* --ceiling (mp_bench_ceiling.h), else 0 */
};

/* ceiling: the rows carry --ceiling's two columns. */
void mp_pipe_table_header(FILE *f, int ceiling);
/* Prints a row to the table and adds it to the JSON rows. */
void mp_pipe_row_out(struct mp_bench *b, const struct pipe_row *r, size_t batch);
int mp_pipe_write_csv(const char *path, const struct pipe_row *rows, size_t n, size_t batch,
                      struct mp_err *err);
/* Throughput and bubble vs M, one line per (schedule, stages). Hand-written SVG. */
int mp_pipe_write_svg(const char *path, const struct pipe_row *rows, size_t n, const char *title,
                      struct mp_err *err);

#endif
