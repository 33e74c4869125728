/* Error values with context. Library code never exits or prints: it fills a struct mp_err and
 * returns -1; only tools/mpipe.c turns a status into an exit code (DESIGN.md §4). Lives in layers/
 * because every module, the lowest included, reports errors the same way. */
#ifndef MP_ERR_H
#define MP_ERR_H

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
    char msg[512];    /* the user-facing message, e.g. "models/cnn.mp:4: conv2d: kernel 7 ..." */
};

/* Sets *e (when e is not NULL) and returns -1, so callers can `return MP_FAIL(err, INPUT, ...)`. */
int mp_err_set(struct mp_err *e, enum mp_status code, const char *file, int line, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
#define MP_FAIL(e, c, ...) mp_err_set((e), MP_ERR_##c, __FILE__, __LINE__, __VA_ARGS__)

void mp_err_clear(struct mp_err *e);
const char *mp_status_name(enum mp_status code);

#endif
