/* Timelines (mp_trace.h): an in-memory event list, written as Chrome trace-event JSON (Perfetto,
 * chrome://tracing) or drawn as a self-contained SVG with one row per rank. Measured (executor)
 * and predicted (simulator) traces go through the same writers. Files are written to a temporary
 * name in the same directory and renamed, so a reader never sees half a trace. */
#include "mp_trace.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_sched.h"

void mp_trace_init(struct mp_trace *t, int n_ranks)
{
    memset(t, 0, sizeof *t);
    t->n_ranks = n_ranks > 0 ? n_ranks : 0;
}

void mp_trace_free(struct mp_trace *t)
{
    if (!t)
        return;
    free(t->ev);
    t->ev = NULL;
    t->n = t->cap = 0;
}

int mp_trace_add(struct mp_trace *t, int rank, int kind, int mb, int chunk, double ts, double dur)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        struct mp_trace_event *p = realloc(t->ev, cap * sizeof *p);
        if (!p)
            return -1;
        t->ev = p;
        t->cap = cap;
    }
    t->ev[t->n++] = (struct mp_trace_event){rank, kind, mb, chunk, ts, dur};
    if (rank >= t->n_ranks)
        t->n_ranks = rank + 1;
    return 0;
}

int mp_trace_append(struct mp_trace *t, const struct mp_trace *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const struct mp_trace_event *e = &src->ev[i];
        if (mp_trace_add(t, e->rank, e->kind, e->mb, e->chunk, e->ts, e->dur))
            return -1;
    }
    if (src->n_ranks > t->n_ranks)
        t->n_ranks = src->n_ranks;
    return 0;
}

/* ---- temp file + rename ---------------------------------------------------------------- */

static FILE *open_tmp(const char *path, char *tmp, size_t n, struct mp_err *err)
{
    if (snprintf(tmp, n, "%s.XXXXXX", path) >= (int)n) {
        MP_FAIL(err, IO, "%s: path too long", path);
        return NULL;
    }
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        MP_FAIL(err, IO, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return NULL;
    }
    fchmod(fd, 0644); /* mkstemp's 0600 would hide traces from other users of a shared run */
    return f;
}

static int close_tmp(FILE *f, const char *tmp, const char *path, struct mp_err *err)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return MP_FAIL(err, IO, "%s: write failed: %s", path, strerror(errno ? errno : EIO));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return MP_FAIL(err, IO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    return 0;
}

/* ---- Chrome trace-event JSON ------------------------------------------------------------ */

static const char *kind_name(int kind)
{
    return kind >= 0 && kind < MP_ACT_COUNT ? mp_act_name((enum mp_act_kind)kind) : "span";
}

static double finite_or_0(double x) { return isfinite(x) ? x : 0; }

static void json_event(FILE *f, const struct mp_trace_event *e)
{
    const char *k = kind_name(e->kind);
    if (e->kind == MP_ACT_STEP || e->mb < 0)
        fprintf(f, "{\"name\":\"%s\",", k);
    else
        fprintf(f, "{\"name\":\"%s mb%d c%d\",", k, e->mb, e->chunk);
    fprintf(f, "\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":0,\"tid\":%d,"
            "\"args\":{\"mb\":%d,\"chunk\":%d}}",
            k, finite_or_0(e->ts) * 1e6, finite_or_0(e->dur) * 1e6, e->rank, e->mb, e->chunk);
}

int mp_trace_write_json(const struct mp_trace *t, const char *path, struct mp_err *err)
{
    char tmp[4096];
    FILE *f = open_tmp(path, tmp, sizeof tmp, err);
    if (!f)
        return -1;
    fputs("{\"traceEvents\":[", f);
    const char *sep = "\n";
    for (int r = 0; r < t->n_ranks; r++, sep = ",\n")
        fprintf(f, "%s{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,"
                "\"args\":{\"name\":\"rank %d\"}}", sep, r, r);
    for (size_t i = 0; i < t->n; i++, sep = ",\n") {
        fputs(sep, f);
        json_event(f, &t->ev[i]);
    }
    fputs("\n],\"displayTimeUnit\":\"ms\"}\n", f);
    return close_tmp(f, tmp, path, err);
}

/* ---- SVG timeline ----------------------------------------------------------------------- */

enum { SVG_W = 1000, LEFT = 64, RIGHT = 16, TOP = 56, ROW_H = 24, ROW_GAP = 6, AXIS_H = 44 };

/* Fill colours by kind; odd chunks get a lighter shade so interleaved chunks stay apart. */
static const char *fill_of(int kind, int chunk)
{
    static const char *dark[] = {"#4e79a7", "#59a14f", "#f28e2b"};
    static const char *light[] = {"#a0cbe8", "#8cd17d", "#ffbe7d"};
    if (kind >= MP_ACT_F && kind <= MP_ACT_W)
        return (chunk > 0 && chunk % 2) ? light[kind] : dark[kind];
    return kind == MP_ACT_STEP ? "#9c755f" : "#bab0ac";
}

static void xml_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A tick spacing of 1, 2 or 5 times a power of ten giving about eight ticks. */
static double nice_step(double span)
{
    double raw = span / 8, p = pow(10, floor(log10(raw)));
    return raw <= p ? p : raw <= 2 * p ? 2 * p : raw <= 5 * p ? 5 * p : 10 * p;
}

static void svg_axis(FILE *f, double t_end, int y)
{
    double plot_w = SVG_W - LEFT - RIGHT, ms = t_end * 1e3, step = nice_step(ms);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", LEFT, y,
            SVG_W - RIGHT, y);
    for (int i = 0; i * step <= ms * (1 + 1e-9); i++) {
        double v = i * step, x = LEFT + v / ms * plot_w;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#333\"/>"
                "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%g</text>\n",
                x, y, x, y + 4, x, y + 15, v);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">time (ms)</text>\n",
            LEFT + (SVG_W - LEFT - RIGHT) / 2, y + 32);
}

static void svg_legend(FILE *f)
{
    static const int kinds[] = {MP_ACT_F, MP_ACT_B, MP_ACT_W, MP_ACT_STEP};
    static const char *labels[] = {"F (forward)", "B (input grad)", "W (weight grad)", "STEP"};
    for (int i = 0; i < 4; i++) {
        int x = LEFT + i * 150;
        fprintf(f, "<rect x=\"%d\" y=\"32\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                "<text x=\"%d\" y=\"42\" font-size=\"11\">%s</text>\n",
                x, fill_of(kinds[i], 0), x + 16, labels[i]);
    }
    fprintf(f, "<line x1=\"%d\" y1=\"32\" x2=\"%d\" y2=\"44\" stroke=\"#222\"/>"
            "<text x=\"%d\" y=\"42\" font-size=\"11\">send</text>\n",
            LEFT + 600, LEFT + 600, LEFT + 606);
}

static void svg_event(FILE *f, const struct mp_trace_event *e, double t_end)
{
    double plot_w = SVG_W - LEFT - RIGHT;
    double x = LEFT + finite_or_0(e->ts) / t_end * plot_w, w = finite_or_0(e->dur) / t_end * plot_w;
    int y = TOP + e->rank * (ROW_H + ROW_GAP);
    if (e->kind == MP_ACT_SEND_ACT || e->kind == MP_ACT_SEND_GRAD) {
        fprintf(f, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"#222\"/>\n", x, y,
                x, y + ROW_H / 3);
        return;
    }
    if (e->kind == MP_ACT_RECV_ACT || e->kind == MP_ACT_RECV_GRAD)
        return; /* waiting shows as the gap before the next box */
    fprintf(f, "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"%s\" "
            "stroke=\"#fff\" stroke-width=\"0.5\"><title>%s mb %d chunk %d</title></rect>\n",
            x, y, w > 0.5 ? w : 0.5, ROW_H, fill_of(e->kind, e->chunk), kind_name(e->kind), e->mb,
            e->chunk);
    if (e->kind >= MP_ACT_F && e->kind <= MP_ACT_W && w >= 14 && e->mb >= 0)
        fprintf(f, "<text x=\"%.2f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\" "
                "fill=\"%s\">%d</text>\n", x + w / 2, y + ROW_H / 2 + 4,
                e->chunk % 2 ? "#000" : "#fff", e->mb); /* dark text on the light shades */
}

int mp_trace_svg_path(const char *path, char *svg, size_t n)
{
    size_t len = strlen(path);
    if (len <= 5 || strcmp(path + len - 5, ".json") || len + 1 > n)
        return 0;
    snprintf(svg, n, "%.*s.svg", (int)(len - 5), path);
    return 1;
}

int mp_trace_write_svg(const struct mp_trace *t, const char *path, const char *title,
                       struct mp_err *err)
{
    double t_end = 0;
    for (size_t i = 0; i < t->n; i++) {
        double end = finite_or_0(t->ev[i].ts + t->ev[i].dur);
        t_end = end > t_end ? end : t_end;
    }
    if (t_end <= 0)
        t_end = 1e-3;
    int rows_h = t->n_ranks * (ROW_H + ROW_GAP), h = TOP + rows_h + AXIS_H;
    char tmp[4096];
    FILE *f = open_tmp(path, tmp, sizeof tmp, err);
    if (!f)
        return -1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n", SVG_W, h, SVG_W, h);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n<text x=\"%d\" y=\"20\" "
            "font-size=\"14\" font-weight=\"bold\">", LEFT);
    xml_text(f, title ? title : "mpipe timeline");
    fputs("</text>\n", f);
    svg_legend(f);
    for (int r = 0; r < t->n_ranks; r++)
        fprintf(f, "<g class=\"rank\"><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                "fill=\"#f2f2f2\"/><text x=\"8\" y=\"%d\" font-size=\"11\">rank %d</text></g>\n",
                LEFT, TOP + r * (ROW_H + ROW_GAP), SVG_W - LEFT - RIGHT, ROW_H,
                TOP + r * (ROW_H + ROW_GAP) + ROW_H / 2 + 4, r);
    for (size_t i = 0; i < t->n; i++)
        if (t->ev[i].rank >= 0 && t->ev[i].rank < t->n_ranks)
            svg_event(f, &t->ev[i], t_end);
    svg_axis(f, t_end, TOP + rows_h + 2);
    fputs("</svg>\n", f);
    return close_tmp(f, tmp, path, err);
}
