/* The measured timeline: every rank records its own events; at the end rank 0 gathers them (count
 * first, then the events as bytes) and writes one Chrome trace with a track per rank. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_trace.h"
#include "mp_train.h"

int mp_train_write_trace(const struct mp_trace *t, struct mp_xport *x, const char *path,
                         struct mp_err *err)
{
    int rank = mp_xport_rank(x), size = mp_xport_size(x);
    if (rank != 0) {
        double n = (double)t->n;
        if (mp_xport_send(x, &n, sizeof n, 0, 40000, "rank 0 to take the trace", err))
            return -1;
        return t->n ? mp_xport_send(x, t->ev, t->n * sizeof *t->ev, 0, 40001,
                                    "rank 0 to take the trace", err)
                    : 0;
    }
    struct mp_trace all;
    mp_trace_init(&all, size);
    int rc = mp_trace_append(&all, t);
    for (int r = 1; r < size && !rc; r++) {
        double n = 0;
        rc = mp_xport_recv(x, &n, sizeof n, r, 40000, "the trace of another rank", err);
        if (rc || n <= 0)
            continue;
        struct mp_trace part;
        mp_trace_init(&part, size);
        part.ev = malloc((size_t)n * sizeof *part.ev);
        if (!part.ev) {
            rc = MP_FAIL(err, NOMEM, "out of memory for the trace");
            break;
        }
        part.n = part.cap = (size_t)n;
        rc = mp_xport_recv(x, part.ev, part.n * sizeof *part.ev, r, 40001,
                           "the trace of another rank", err);
        if (!rc)
            rc = mp_trace_append(&all, &part);
        mp_trace_free(&part);
    }
    if (!rc)
        rc = mp_trace_write_json(&all, path, err);
    /* The same timeline as a picture beside it: FILE.json -> FILE.svg. */
    char svg[4096];
    if (!rc && mp_trace_svg_path(path, svg, sizeof svg))
        rc = mp_trace_write_svg(&all, svg, "mpipe train: measured timeline (per rank)", err);
    mp_trace_free(&all);
    return rc;
}
