/* Timelines as Chrome trace-event JSON (DESIGN.md §5): {"traceEvents": [{"name", "ph": "X",
 * "ts", "dur" (µs), "pid": 0, "tid": rank, "args": {mb, chunk}}]}, one track per rank, viewable in
 * Perfetto. The executor records measured events, the simulator predicted ones; both write the
 * same format, and the SVG renderer draws either. */
#ifndef MP_TRACE_H
#define MP_TRACE_H

#include <stddef.h>

#include "mp_err.h"

struct mp_trace_event {
    int rank;
    int kind;        /* enum mp_act_kind, or -1 for other named spans */
    int mb, chunk;
    double ts, dur;  /* seconds from the trace origin */
};

struct mp_trace {
    struct mp_trace_event *ev;
    size_t n, cap;
    int n_ranks;
};

void mp_trace_init(struct mp_trace *t, int n_ranks);
void mp_trace_free(struct mp_trace *t);
/* Appends an event (grows the buffer; returns -1 on allocation failure). */
int mp_trace_add(struct mp_trace *t, int rank, int kind, int mb, int chunk, double ts, double dur);
/* Appends all events of src (e.g. gathered from other ranks). */
int mp_trace_append(struct mp_trace *t, const struct mp_trace *src);
int mp_trace_write_json(const struct mp_trace *t, const char *path, struct mp_err *err);
/* A timeline picture: one row per rank, F/B/W coloured boxes labelled by micro-batch. */
int mp_trace_write_svg(const struct mp_trace *t, const char *path, const char *title,
                       struct mp_err *err);
/* The picture beside a trace FILE.json, as `train --trace` writes it: FILE.svg into svg (n
 * bytes); 0 when path does not end in .json (no picture) or the name does not fit. */
int mp_trace_svg_path(const char *path, char *svg, size_t n);

#endif
