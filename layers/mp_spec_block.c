/* The model spec's structure (DESIGN.md §5, §9): lines, `repeat N` … `end` (the body N times, each
 * copy with its own parameters), `residual` … `end` (y = x + body(x); the body keeps x's shape),
 * and the partition units they make: a stage boundary falls only between top-level units, a
 * residual block is one unit and a repeat contributes its body's units. Blocks are structure, not
 * layers: every layer line, repeats expanded, gets the next global index, and a residual is noted
 * on its body's last layer (mp_layer.res_from). One layer line is mp_spec.c's job. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_layer_ops.h"
#include "mp_spec.h"

#define SPEC_MAX_LAYERS 100000 /* after expanding repeats */
#define SPEC_MAX_DEPTH 64       /* blocks open at once: parsing recurses once per level */

struct spec_line {
    int no;     /* line number in the file */
    char *text; /* comment cut, not blank */
};

struct reader {
    struct spec *s;
    struct spec_line *lines;
    int n;
    int res_depth;  /* residual blocks open around the current line */
    int depth;      /* blocks of either kind open around the current line */
    char buf[SPEC_MAX_LINE + 1]; /* the layer parser cuts words in place; repeats reread */
    int next_unit;
};

/* The first word of a line and whether it is a block keyword. */
static int keyword_is(const char *text, const char *kw)
{
    const char *p = text + strspn(text, " \t\r");
    size_t n = strlen(kw);
    return strncmp(p, kw, n) == 0 && (p[n] == '\0' || strchr(" \t\r", p[n]));
}

/* The words after the keyword, or NULL when there are none. */
static const char *after_keyword(const char *text, const char *kw)
{
    const char *p = text + strspn(text, " \t\r") + strlen(kw);
    p += strspn(p, " \t\r");
    return *p ? p : NULL;
}

static int parse_seq(struct reader *r, int *pos, int in_block);

/* A block opens on line `no`: refuse nesting so deep that the recursion could exhaust the stack. */
static int enter_block(struct reader *r, int no, const char *kw)
{
    if (r->depth == SPEC_MAX_DEPTH)
        return mp__spec_fail(r->s, no, "%s: blocks nested more than %d deep", kw,
                             SPEC_MAX_DEPTH);
    r->depth++;
    return 0;
}

static int repeat_body(struct reader *r, int *pos)
{
    struct spec *s = r->s;
    const struct spec_line *open = &r->lines[*pos];
    const char *arg = after_keyword(open->text, "repeat");
    char word[64] = "";
    if (arg)
        sscanf(arg, "%63s", word);
    char *end = NULL;
    errno = 0;
    long long n = arg ? strtoll(word, &end, 10) : 0;
    if (arg && !*end && errno == ERANGE)
        return mp__spec_fail(s, open->no, "repeat: N = %s is too many copies", word);
    if (!arg || *end || errno || strlen(word) != strcspn(arg, " \t\r") ||
        arg[strlen(word) + strspn(arg + strlen(word), " \t\r")] != '\0')
        return mp__spec_fail(s, open->no, "repeat: usage: repeat N (a whole number of copies), "
                             "then the body, then `end`");
    if (n < 1)
        return mp__spec_fail(s, open->no, "repeat: N must be at least 1, got %lld", n);
    if (n > SPEC_MAX_LAYERS)
        return mp__spec_fail(s, open->no, "repeat: N = %lld is too many copies", n);
    int p = *pos + 1;
    for (long long k = 0; k < n; k++) {
        p = *pos + 1;
        int first = s->m->n_layers;
        int rc = parse_seq(r, &p, 1);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return mp__spec_fail(s, open->no, "repeat: block never closed (no `end` for it)");
        if (s->m->n_layers == first)
            return mp__spec_fail(s, r->lines[p].no, "end: the repeat opened on line %d has no "
                                 "layers", open->no);
    }
    *pos = p + 1;
    return 0;
}

static int same_shape(struct mp_shape a, struct mp_shape b)
{
    if (a.ndim != b.ndim)
        return 0;
    for (int i = 0; i < a.ndim && i < 3; i++)
        if (a.d[i] != b.d[i])
            return 0;
    return 1;
}

static void shape_text(struct mp_shape s, char *buf, size_t len)
{
    if (s.ndim == 1)
        snprintf(buf, len, "%zu", s.d[0]);
    else if (s.ndim == 2)
        snprintf(buf, len, "%zux%zu", s.d[0], s.d[1]);
    else
        snprintf(buf, len, "%zux%zux%zu", s.d[0], s.d[1], s.d[2]);
}

static int residual_body(struct reader *r, int *pos)
{
    struct spec *s = r->s;
    struct mp_model *m = s->m;
    const struct spec_line *open = &r->lines[*pos];
    if (after_keyword(open->text, "residual"))
        return mp__spec_fail(s, open->no, "residual takes no arguments (usage: residual, the "
                             "body, then `end`)");
    if (m->n_layers == 0)
        return mp__spec_fail(s, open->no, "residual before `input`: the first layer must be "
                             "input");
    struct mp_shape in = m->layers[m->n_layers - 1].out;
    int first = m->n_layers;
    if (r->res_depth++ == 0)
        s->unit = r->next_unit++; /* the whole top-level block is one partition unit */
    int p = *pos + 1;
    int rc = parse_seq(r, &p, 1);
    r->res_depth--;
    if (rc < 0)
        return -1;
    if (rc == 0)
        return mp__spec_fail(s, open->no, "residual: block never closed (no `end` for it)");
    int end_line = r->lines[p].no;
    if (m->n_layers == first)
        return mp__spec_fail(s, end_line, "end: the residual opened on line %d has no layers",
                             open->no);
    struct mp_layer *last = &m->layers[m->n_layers - 1];
    if (last->is_loss)
        return mp__spec_fail(s, end_line, "end: a loss (%s, line %d) cannot be inside a residual",
                             last->ops->name, last->line);
    if (!same_shape(in, last->out)) {
        char a[64], b[64];
        shape_text(in, a, sizeof a);
        shape_text(last->out, b, sizeof b);
        return mp__spec_fail(s, end_line, "end: the residual body opened on line %d turns its %s "
                             "input into %s; a residual must keep its input's shape", open->no,
                             a, b);
    }
    if (last->n_res == (int)(sizeof last->res_from / sizeof last->res_from[0]))
        return mp__spec_fail(s, end_line, "end: too many residual blocks end at line %d",
                             last->line);
    last->res_from[last->n_res++] = first;
    char canon[64];
    snprintf(canon, sizeof canon, "residual %d %d\n", first, last->index);
    mp__spec_digest(s, canon);
    *pos = p + 1;
    return 0;
}

static int parse_repeat(struct reader *r, int *pos)
{
    if (enter_block(r, r->lines[*pos].no, "repeat"))
        return -1;
    int rc = repeat_body(r, pos);
    r->depth--;
    return rc;
}

static int parse_residual(struct reader *r, int *pos)
{
    if (enter_block(r, r->lines[*pos].no, "residual"))
        return -1;
    int rc = residual_body(r, pos);
    r->depth--;
    return rc;
}

/* Parses lines from *pos until the end of the file (returns 0) or an `end` (returns 1 with *pos
 * on it, which only a block may meet). */
static int parse_seq(struct reader *r, int *pos, int in_block)
{
    struct spec *s = r->s;
    while (*pos < r->n) {
        const struct spec_line *ln = &r->lines[*pos];
        if (keyword_is(ln->text, "end")) {
            if (!in_block)
                return mp__spec_fail(s, ln->no, "end with no open block (repeat or residual)");
            if (after_keyword(ln->text, "end"))
                return mp__spec_fail(s, ln->no, "end takes no arguments");
            return 1;
        }
        if (keyword_is(ln->text, "repeat")) {
            if (parse_repeat(r, pos))
                return -1;
            continue;
        }
        if (keyword_is(ln->text, "residual")) {
            if (parse_residual(r, pos))
                return -1;
            continue;
        }
        if (s->m->n_layers >= SPEC_MAX_LAYERS)
            return mp__spec_fail(s, ln->no, "more than %d layers", SPEC_MAX_LAYERS);
        if (r->res_depth == 0)
            s->unit = r->next_unit++;
        snprintf(r->buf, sizeof r->buf, "%s", ln->text);
        if (mp__spec_layer(s, ln->no, r->buf))
            return -1;
        (*pos)++;
    }
    return 0;
}

/* Splits the text into non-blank lines with comments cut. */
static int read_lines(struct reader *r, const char *text, size_t len)
{
    struct spec *s = r->s;
    int cap = 0, line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        const char *t = text + pos;
        pos += n + 1;
        line++;
        if (n > SPEC_MAX_LINE)
            return mp__spec_fail(s, line, "line longer than %d bytes", SPEC_MAX_LINE);
        if (mp__spec_check_bytes(s, line, t, n))
            return -1;
        const char *hash = memchr(t, '#', n);
        if (hash)
            n = (size_t)(hash - t);
        size_t lead = 0;
        while (lead < n && strchr(" \t\r", t[lead]))
            lead++;
        if (lead == n)
            continue;
        if (r->n == cap) {
            cap = cap ? 2 * cap : 64;
            struct spec_line *p = realloc(r->lines, (size_t)cap * sizeof *p);
            if (!p)
                return MP_FAIL(s->err, NOMEM, "%s:%d: out of memory", s->name, line);
            r->lines = p;
        }
        char *copy = malloc(n + 1);
        if (!copy)
            return MP_FAIL(s->err, NOMEM, "%s:%d: out of memory", s->name, line);
        memcpy(copy, t, n);
        copy[n] = '\0';
        r->lines[r->n++] = (struct spec_line){.no = line, .text = copy};
    }
    return 0;
}

/* Whole-model rules and the summary fields, once every line parsed. */
static int finish_model(struct spec *s, int n_units)
{
    struct mp_model *m = s->m;
    if (m->n_layers == 0)
        return mp__spec_fail(s, 1, "empty model: no layers (expected `input ...` "
                             "first and a loss last)");
    const struct mp_layer *last = &m->layers[m->n_layers - 1];
    if (!last->is_loss)
        return mp__spec_fail(s, last->line, "the model must end with a loss layer (softmax_xent "
                             "or mse), but the last layer is %s", last->ops->name);
    if (m->n_layers < 2)
        return mp__spec_fail(s, last->line, "empty model: only an input");
    m->n_classes = mp_shape_feat(last->in);
    m->tokens = m->layers[0].tokens;
    m->seq_len = m->tokens ? m->layers[0].out.d[0] : 0;
    m->label_len = mp_shape_rows(last->in);
    m->n_units = n_units;
    m->dx_from = m->n_layers;
    for (int i = m->n_layers - 1; i >= 1; i--)
        if (mp_layer_n_param(&m->layers[i]))
            m->dx_from = i + 1;
    for (int i = 0; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        if (l->scratch_per_sample > m->max_scratch_per_sample)
            m->max_scratch_per_sample = l->scratch_per_sample;
        if (l->scratch_fixed > m->max_scratch_fixed)
            m->max_scratch_fixed = l->scratch_fixed;
    }
    snprintf(m->digest, sizeof m->digest, "%016llx", (unsigned long long)s->digest);
    return 0;
}

int mp_model_parse(struct mp_model *m, const char *name, const char *text, size_t len,
                   struct mp_err *err)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", name);
    struct spec s = {.m = m, .name = name, .err = err, .digest = 0xcbf29ce484222325ULL};
    struct reader r = {.s = &s};
    int pos = 0;
    int rc = read_lines(&r, text, len);
    if (!rc)
        rc = parse_seq(&r, &pos, 0) < 0 ? -1 : 0;
    if (!rc)
        rc = finish_model(&s, r.next_unit);
    for (int i = 0; i < r.n; i++)
        free(r.lines[i].text);
    free(r.lines);
    if (rc)
        mp_model_free(m);
    return rc;
}

int mp_model_load(struct mp_model *m, const char *path, struct mp_err *err)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot read: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        char *p = cap < (1u << 30) ? realloc(buf, cap * 2) : NULL;
        if (!p) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = p;
        cap *= 2;
    }
    int bad = ferror(f);
    int saved_errno = errno;
    fclose(f);
    if (!buf)
        return MP_FAIL(err, INPUT, "%s: file too large for a model spec", path);
    if (bad) {
        free(buf);
        return MP_FAIL(err, IO, "%s: cannot read: %s", path, strerror(saved_errno));
    }
    int rc = mp_model_parse(m, path, buf, len, err);
    free(buf);
    return rc;
}

void mp_model_free(struct mp_model *m)
{
    free(m->layers);
    m->layers = NULL;
    m->n_layers = 0;
}
