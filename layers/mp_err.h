/* Error values with context. Library code never exits or prints: it fills a struct mp_err and
 * returns -1; only tools/mpipe.c turns a status into an exit code (DESIGN.md §4). Lives in layers/
 * because every module, the lowest included, reports errors the same way. */
#ifndef MP_ERR_H
#define MP_ERR_H

#include <stddef.h>

enum mp_status {
    MP_OK = 0,
    MP_ERR_USAGE,    /* bad flag or flag value: exit 2 */
    MP_ERR_INPUT,    /* malformed file (spec, plan, safetensors, IDX, hostfile, XML): exit 2 */
    MP_ERR_IO,       /* unreadable/unwritable file, truncated data: exit 3 */
    MP_ERR_CKPT,     /* no valid checkpoint left: exit 3 */
    MP_ERR_PEER,     /* a peer failed or sent something wrong: exit 4 */
    MP_ERR_DEADLINE, /* a wait passed its deadline: exit 4 */
    MP_ERR_MPI,      /* an MPI call failed: exit 4 */
    MP_ERR_NUMERIC,  /* NaN/Inf loss: exit 5 */
    MP_ERR_NOMEM,    /* allocation failed: exit 3 */
    MP_ERR_INTERNAL, /* a bug: exit 1 */
    MP_ERR_COUNT
};

struct mp_err {
    enum mp_status code;
    int rank;         /* MPI rank that saw it, or -1 */
    const char *file; /* source location that raised it (for developers) */
    int line;
    char msg[512]; /* the user-facing message, e.g. "models/cnn.mp:4: conv2d: kernel 7 ..." */
    int shared;    /* every rank found this same error (mp_err_mark_shared) */
    int all_failed; /* every rank failed at one agreement point (mp_xport_settle), each with its
                       own error: each says it, and they meet before any exits */
};

/* Sets *e (when e is not NULL) and returns -1, so callers can `return MP_FAIL(err, INPUT, ...)`. */
int mp_err_set(struct mp_err *e, enum mp_status code, const char *file, int line, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
#define MP_FAIL(e, c, ...) mp_err_set((e), MP_ERR_##c, __FILE__, __LINE__, __VA_ARGS__)

/* Marks *e, when it is a usage or input error, as found alike by every rank: the code that raised
 * it checked only what all ranks share (the command line, the number of ranks, the model and plan
 * files every rank reads, values just gathered from all of them), so every rank raised it at the
 * same point. The CLI then has the ranks meet before any exits (mp_cli_report_shared); marking an
 * error one rank can find alone would leave that rank waiting, until the deadline, for peers that
 * are elsewhere. Other statuses (I/O, memory, peers) can be one rank's alone and are never marked.
 * A later mp_err_set drops the mark. Returns -1. */
int mp_err_mark_shared(struct mp_err *e);
void mp_err_clear(struct mp_err *e);
const char *mp_status_name(enum mp_status code);
/* A memory size for a message, in buf: whole MiB from 1 MiB up (what --memory-per-rank's
 * messages have always said, and what tests read), KiB or bytes below, so that a cap of 1K is
 * not "0 MiB". Returns buf. */
const char *mp_err_size(double bytes, char *buf, size_t len);

#endif
