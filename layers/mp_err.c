/* Filling struct mp_err. No printing, no exiting: the CLI decides what a status means. */
#include "mp_err.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {
    "ok", "usage", "input", "io", "checkpoint", "peer", "deadline", "mpi", "numeric", "nomem",
    "internal",
};
static_assert(sizeof status_names / sizeof status_names[0] == MP_ERR_COUNT, "status names");

int mp_err_set(struct mp_err *e, enum mp_status code, const char *file, int line, const char *fmt,
               ...)
{
    if (!e)
        return -1;
    e->code = code;
    e->shared = 0;
    e->all_failed = 0;
    e->file = file;
    e->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int mp_err_mark_shared(struct mp_err *e)
{
    if (e && (e->code == MP_ERR_USAGE || e->code == MP_ERR_INPUT))
        e->shared = 1;
    return -1;
}

void mp_err_clear(struct mp_err *e)
{
    memset(e, 0, sizeof *e);
    e->rank = -1;
}

const char *mp_status_name(enum mp_status code)
{
    return (code >= 0 && code < MP_ERR_COUNT) ? status_names[code] : "unknown";
}

const char *mp_err_size(double bytes, char *buf, size_t len)
{
    if (bytes >= 1048576.0)
        snprintf(buf, len, "%.0f MiB", bytes / 1048576.0);
    else if (bytes >= 1024.0)
        snprintf(buf, len, "%.1f KiB", bytes / 1024.0);
    else
        snprintf(buf, len, "%.0f bytes", bytes);
    return buf;
}
