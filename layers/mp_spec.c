/* The model spec parser's layer lines (DESIGN.md §5, §9): one line → one planned layer, added to the
 * model with its share of the digest. Every rejection is MP_ERR_INPUT "FILE:LINE: what is wrong" on
 * the line at fault. The whole file's bytes are checked first (text, lines of at most 4 KiB: a file
 * that is not a spec says so, wherever its first syntax error lies); layer lines are then checked
 * in order, except that a block's errors (never closed, a shape it does not keep) are found at its
 * end. Shape checks that need a clear hint (dense after a 3-D shape, a kernel larger than its
 * input, pooling on a sequence) are made here before the kind's plan runs; plan's own messages get
 * the "FILE:LINE: " prefix added. The file's structure (blocks, units) is mp_spec_block.c. */
#include "mp_layer.h"
#include "mp_layer_ops.h"
#include "mp_spec.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_MAX_TOKENS 16
#define SPEC_MAX_ARG (1ULL << 24)   /* any single size: 16 Mi is already absurd for a layer */
#define SPEC_MAX_NUMEL (1ULL << 31) /* floats per sample of any activation */
#define SPEC_MAX_PARAMS (1ULL << 34) /* floats of one layer's parameters (64 GiB) */

/* How each kind reads its positional arguments, and its usage for messages. */
static const char *const usage[] = {
    [MP_LAYER_INPUT] = "input C H W | input H W | input N | input tokens T",
    [MP_LAYER_DENSE] = "dense N",
    [MP_LAYER_CONV2D] = "conv2d OUT K [stride=S] [pad=P]",
    [MP_LAYER_MAXPOOL] = "maxpool K",
    [MP_LAYER_AVGPOOL] = "avgpool K",
    [MP_LAYER_FLATTEN] = "flatten",
    [MP_LAYER_RELU] = "relu",
    [MP_LAYER_GELU] = "gelu",
    [MP_LAYER_TANH] = "tanh",
    [MP_LAYER_SIGMOID] = "sigmoid",
    [MP_LAYER_DROPOUT] = "dropout P",
    [MP_LAYER_LAYERNORM] = "layernorm",
    [MP_LAYER_SOFTMAX_XENT] = "softmax_xent",
    [MP_LAYER_MSE] = "mse",
    [MP_LAYER_EMBED] = "embed V C [pos=learned|none]",
    [MP_LAYER_ATTENTION] = "attention H [causal=0|1] [dropout=P]",
    [MP_LAYER_LM_HEAD] = "lm_head [tied=1|0]",
};
_Static_assert(sizeof usage / sizeof usage[0] == MP_LAYER_COUNT, "one usage line per kind");

int mp__spec_fail(struct spec *s, int line, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return MP_FAIL(s->err, INPUT, "%s:%d: %s", s->name, line, what);
}

#define fail_at mp__spec_fail

void mp__spec_digest(struct spec *s, const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        s->digest ^= *p;
        s->digest *= 0x100000001b3ULL;
    }
}

/* Length of one valid UTF-8 sequence at p (at most n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80 ? 1 : (p[0] >> 5) == 6 ? 2 : (p[0] >> 4) == 14 ? 3
               : (p[0] >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n || (len == 2 && p[0] < 0xc2) || (len == 4 && p[0] > 0xf4))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Text files only: no NUL or control bytes, valid UTF-8 (comments may hold any language). */
int mp__spec_check_bytes(struct spec *s, int line, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_len(p + i, len - i);
        if (n == 0 || (p[i] < 0x20 && p[i] != '\t' && p[i] != '\r') || p[i] == 0x7f)
            return fail_at(s, line, "binary data (byte 0x%02x at column %zu): not a model spec",
                           p[i], i + 1);
        i += n;
    }
    return 0;
}

/* A size argument: a whole number in [min, SPEC_MAX_ARG]. */
static int parse_size(struct spec *s, int line, const char *kind, const char *what,
                      const char *tok, size_t min, size_t *out)
{
    char *end;
    if (tok[0] < '0' || tok[0] > '9') {
        double d = strtod(tok, &end);
        if (end == tok || *end != '\0')
            return fail_at(s, line, "%s: %s is not a number: '%s'", kind, what, tok);
        if (d < (double)min || (d <= 0 && min > 0))
            return fail_at(s, line, "%s: %s must be %s, got %s", kind, what,
                           min ? "positive" : "non-negative", tok);
        return fail_at(s, line, "%s: %s must be a whole number, got %s", kind, what, tok);
    }
    errno = 0;
    unsigned long long v = strtoull(tok, &end, 10);
    if (*end != '\0')
        return fail_at(s, line, "%s: %s must be a whole number, got '%s'", kind, what, tok);
    if (v < min)
        return fail_at(s, line, "%s: %s must be %s, got %s", kind, what,
                       min ? "positive" : "non-negative", tok);
    if (errno == ERANGE || v > SPEC_MAX_ARG)
        return fail_at(s, line, "%s: %s %s is too large (at most %llu)", kind, what, tok,
                       (unsigned long long)SPEC_MAX_ARG);
    *out = (size_t)v;
    return 0;
}

static int parse_rate(struct spec *s, int line, const char *kind, const char *tok, float *out)
{
    char *end;
    double v = strtod(tok, &end);
    if (end == tok || *end != '\0' || !isfinite(v))
        return fail_at(s, line, "%s: P is not a number: '%s' (usage: %s P)", kind, tok, kind);
    if (v < 0 || v >= 1)
        return fail_at(s, line, "%s: P must be in [0, 1), got %s", kind, tok);
    *out = (float)v;
    return 0;
}

/* Whether `key` is one of the comma-separated names in `list`. */
static int option_known(const char *list, const char *key, size_t klen)
{
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == klen && strncmp(p, key, n) == 0)
            return 1;
        p += n + (comma != NULL);
    }
    return 0;
}

/* One of two words (a flag's values) into *out: 1 for `one`, 0 for `zero`. */
static int parse_choice(struct spec *s, const struct mp_layer *l, const char *key,
                        const char *val, const char *one, const char *zero, int *out)
{
    if (strcmp(val, one) && strcmp(val, zero))
        return fail_at(s, l->line, "%s: %s must be %s or %s, got '%s' (usage: %s)", l->ops->name,
                       key, one, zero, val, usage[l->kind]);
    *out = strcmp(val, one) == 0;
    return 0;
}

static int parse_option(struct spec *s, struct mp_layer *l, const char *tok, unsigned *seen)
{
    static const char *const keys[] = {"stride", "pad", "causal", "dropout", "pos", "tied"};
    const char *eq = strchr(tok, '=');
    size_t klen = (size_t)(eq - tok);
    const char *name = l->ops->name;
    if (!option_known(l->ops->options, tok, klen)) {
        if (l->ops->options[0] == '\0')
            return fail_at(s, l->line, "%s: unknown option '%.*s' (%s takes no options)", name,
                           (int)klen, tok, name);
        return fail_at(s, l->line, "%s: unknown option '%.*s' (usage: %s)", name, (int)klen, tok,
                       usage[l->kind]);
    }
    if (eq[1] == '\0')
        return fail_at(s, l->line, "%s: option '%.*s' needs a value", name, (int)klen, tok);
    unsigned k = 0;
    while (k < sizeof keys / sizeof keys[0] && !(strlen(keys[k]) == klen &&
                                                 strncmp(keys[k], tok, klen) == 0))
        k++;
    if (*seen & (1u << k))
        return fail_at(s, l->line, "%s: option '%.*s' given twice", name, (int)klen, tok);
    *seen |= 1u << k;
    const char *val = eq + 1;
    switch (k) {
    case 0: return parse_size(s, l->line, name, "stride", val, 1, &l->stride);
    case 1: return parse_size(s, l->line, name, "pad", val, 0, &l->pad);
    case 2: return parse_choice(s, l, "causal", val, "1", "0", &l->causal);
    case 3: return parse_rate(s, l->line, "attention dropout", val, &l->rate);
    case 4: return parse_choice(s, l, "pos", val, "learned", "none", &l->pos_learned);
    default: return parse_choice(s, l, "tied", val, "1", "0", &l->tied);
    }
}

/* Positional arguments into the layer's fields; `input` keeps its dims in l->in for plan. */
static int parse_positional(struct spec *s, struct mp_layer *l, char **tok, int n)
{
    const char *name = l->ops->name;
    if (n < l->ops->npos_min)
        return fail_at(s, l->line, "%s: missing argument (usage: %s)", name, usage[l->kind]);
    if (n > l->ops->npos_max || n > 3)
        return fail_at(s, l->line, "%s: too many arguments: '%s' (usage: %s)", name,
                       tok[l->ops->npos_max], usage[l->kind]);
    if (l->kind == MP_LAYER_DROPOUT)
        return parse_rate(s, l->line, "dropout", tok[0], &l->rate);
    if (l->kind == MP_LAYER_INPUT && strcmp(tok[0], "tokens") == 0) {
        if (n != 2)
            return fail_at(s, l->line, "input: usage: input tokens T (T the context length)");
        l->tokens = 1;
        l->in.ndim = 2;
        l->in.d[1] = 1;
        return parse_size(s, l->line, name, "context length T", tok[1], 1, &l->in.d[0]);
    }
    size_t v[3] = {0, 0, 0};
    static const char *const what_input[] = {"size", "size", "size"};
    static const char *const what_conv[] = {"OUT", "K", "?"};
    static const char *const what_embed[] = {"vocabulary V", "width C", "?"};
    for (int i = 0; i < n; i++) {
        const char *what = l->kind == MP_LAYER_INPUT       ? what_input[i]
                           : l->kind == MP_LAYER_CONV2D    ? what_conv[i]
                           : l->kind == MP_LAYER_EMBED     ? what_embed[i]
                           : l->kind == MP_LAYER_ATTENTION ? "heads H"
                           : l->kind == MP_LAYER_DENSE     ? "size N"
                                                           : "kernel K";
        if (parse_size(s, l->line, name, what, tok[i], 1, &v[i]) != 0)
            return -1;
    }
    if (l->kind == MP_LAYER_INPUT) {
        l->in.ndim = n;
        for (int i = 0; i < n; i++)
            l->in.d[i] = v[i];
    } else if (l->kind == MP_LAYER_DENSE) {
        l->n_out = v[0];
    } else if (l->kind == MP_LAYER_CONV2D) {
        l->n_out = v[0];
        l->kernel = v[1];
    } else if (l->kind == MP_LAYER_MAXPOOL || l->kind == MP_LAYER_AVGPOOL) {
        l->kernel = v[0];
        l->stride = v[0];
    } else if (l->kind == MP_LAYER_EMBED) {
        l->vocab = v[0];
        l->n_out = v[1];
    } else if (l->kind == MP_LAYER_ATTENTION) {
        l->heads = v[0];
    }
    return 0;
}

/* Splits a line (comment already cut) into tokens, then fills the layer's kind and arguments. */
static int parse_layer(struct spec *s, struct mp_layer *l, char *text)
{
    char *tok[SPEC_MAX_TOKENS + 1];
    int n = 0;
    char *save = NULL;
    for (char *p = strtok_r(text, " \t\r", &save); p; p = strtok_r(NULL, " \t\r", &save)) {
        if (n == SPEC_MAX_TOKENS)
            return fail_at(s, l->line, "%s: too many arguments", tok[0]);
        tok[n++] = p;
    }
    enum mp_layer_kind kind;
    l->ops = mp_layer_ops_find(tok[0], &kind);
    if (!l->ops) {
        /* Suggest only a plausible typo (block keywords included); otherwise list what exists. */
        static const char *const blocks[] = {"repeat", "residual", "end"};
        const char *near = mp_layer_nearest_name(tok[0]);
        size_t len = strlen(tok[0]), d = mp__layer_name_distance(tok[0], near);
        for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
            size_t db = mp__layer_name_distance(tok[0], blocks[b]);
            if (db < d) {
                d = db;
                near = blocks[b];
            }
        }
        if (d <= 2 || d * 3 <= len)
            return fail_at(s, l->line, "unknown layer '%s' (did you mean '%s'?)", tok[0], near);
        return fail_at(s, l->line, "unknown layer '%s' (layers: input, dense, conv2d, maxpool, "
                       "avgpool, flatten, relu, gelu, tanh, sigmoid, dropout, layernorm, "
                       "softmax_xent, mse, embed, attention, lm_head; blocks: repeat N, "
                       "residual, end)", tok[0]);
    }
    l->kind = kind;
    if (kind == MP_LAYER_CONV2D) {
        l->stride = 1;
        l->pad = 0;
    }
    l->causal = l->pos_learned = l->tied = 1; /* the defaults of DESIGN.md §9 */
    l->tie_src = -1;
    unsigned seen = 0;
    char *pos[SPEC_MAX_TOKENS];
    int npos = 0;
    for (int i = 1; i < n; i++) {
        if (strchr(tok[i], '=')) {
            if (parse_option(s, l, tok[i], &seen) != 0)
                return -1;
        } else {
            pos[npos++] = tok[i];
        }
    }
    return parse_positional(s, l, pos, npos);
}

/* (a * b) with overflow turned into SIZE_MAX. */
static size_t mul_sat(size_t a, size_t b)
{
    return (a != 0 && b > SIZE_MAX / a) ? SIZE_MAX : a * b;
}

/* Checks that need the input shape and a clear hint, before the kind's own plan. */
static int check_connects(struct spec *s, const struct mp_layer *l, struct mp_shape in)
{
    const char *name = l->ops->name;
    int spatial = l->kind == MP_LAYER_CONV2D || l->kind == MP_LAYER_MAXPOOL
                  || l->kind == MP_LAYER_AVGPOOL;
    if ((spatial || l->kind == MP_LAYER_FLATTEN) && in.ndim == 2)
        return fail_at(s, l->line, "%s does not apply to a sequence (%zu tokens x %zu features): "
                       "layers after an embed act per token", name, in.d[0], in.d[1]);
    if (l->kind == MP_LAYER_DENSE && in.ndim == 3)
        return fail_at(s, l->line, "dense needs a 1-D input but gets %zux%zux%zu; add `flatten` "
                       "before it", in.d[0], in.d[1], in.d[2]);
    if (l->kind == MP_LAYER_DENSE && mul_sat(mp_shape_feat(in), l->n_out) > SPEC_MAX_PARAMS)
        return fail_at(s, l->line, "dense: %zu x %zu weights is too many", l->n_out,
                       mp_shape_feat(in));
    if (l->kind == MP_LAYER_EMBED && mul_sat(mul_sat(l->vocab, l->n_out), 2) > SPEC_MAX_PARAMS)
        return fail_at(s, l->line, "embed: %zu x %zu weights is too many", l->vocab, l->n_out);
    if (!spatial)
        return 0;
    if (in.ndim != 3)
        return fail_at(s, l->line, "%s needs a (C, H, W) input but gets a 1-D input of %zu",
                       name, in.d[0]);
    size_t h = in.d[1] + 2 * l->pad, w = in.d[2] + 2 * l->pad;
    if (l->kernel > h || l->kernel > w) {
        if (l->pad)
            return fail_at(s, l->line, "%s: kernel %zu larger than input %zux%zu padded by %zu",
                           name, l->kernel, in.d[1], in.d[2], l->pad);
        return fail_at(s, l->line, "%s: kernel %zu larger than input %zux%zu", name, l->kernel,
                       in.d[1], in.d[2]);
    }
    size_t wn = mul_sat(mul_sat(l->n_out, in.d[0]), mul_sat(l->kernel, l->kernel));
    if (l->kind == MP_LAYER_CONV2D && wn > SPEC_MAX_PARAMS)
        return fail_at(s, l->line, "conv2d: %zu weights is too many", wn);
    return 0;
}

/* Plans layer l on the previous output, prefixing plan's message with "FILE:LINE: ". */
static int plan_layer(struct spec *s, struct mp_layer *l, struct mp_shape in)
{
    if (check_connects(s, l, in) != 0)
        return -1;
    if (l->ops->plan(l, in, s->err) != 0) {
        char what[sizeof s->err->msg];
        snprintf(what, sizeof what, "%s", s->err->msg);
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s:%d:", s->name, l->line);
        if (strncmp(what, prefix, strlen(prefix)) == 0)
            return -1;
        return fail_at(s, l->line, "%s", what);
    }
    if (l->kind != MP_LAYER_INPUT)
        l->in = in;
    size_t n = 1;
    for (int i = 0; i < l->out.ndim && i < 3; i++)
        n = mul_sat(n, l->out.d[i]);
    if (l->out.ndim < 1 || n == 0)
        return fail_at(s, l->line, "%s: output would be empty", l->ops->name);
    if (n > SPEC_MAX_NUMEL)
        return fail_at(s, l->line, "%s: output too large (more than %llu features per sample)",
                       l->ops->name, (unsigned long long)SPEC_MAX_NUMEL);
    if (mp_layer_n_param(l) > SPEC_MAX_PARAMS)
        return fail_at(s, l->line, "%s: %zu parameters is too many", l->ops->name,
                       mp_layer_n_param(l));
    return 0;
}

/* The canonical text of a layer, defaults included, so equivalent specs share a digest. */
static void digest_layer(struct spec *s, const struct mp_layer *l)
{
    char buf[160];
    switch (l->kind) {
    case MP_LAYER_INPUT:
        if (l->tokens)
            snprintf(buf, sizeof buf, "input tokens %zu\n", l->out.d[0]);
        else
            snprintf(buf, sizeof buf, "input %zu %zu %zu\n", l->out.d[0],
                     l->out.ndim > 1 ? l->out.d[1] : 0, l->out.ndim > 2 ? l->out.d[2] : 0);
        break;
    case MP_LAYER_EMBED:
        snprintf(buf, sizeof buf, "embed %zu %zu pos=%s\n", l->vocab, l->n_out,
                 l->pos_learned ? "learned" : "none");
        break;
    case MP_LAYER_ATTENTION:
        snprintf(buf, sizeof buf, "attention %zu causal=%d dropout=%.9g\n", l->heads, l->causal,
                 (double)l->rate);
        break;
    case MP_LAYER_LM_HEAD:
        snprintf(buf, sizeof buf, "lm_head tied=%d\n", l->tied);
        break;
    case MP_LAYER_DENSE:
        snprintf(buf, sizeof buf, "dense %zu\n", l->n_out);
        break;
    case MP_LAYER_CONV2D:
        snprintf(buf, sizeof buf, "conv2d %zu %zu stride=%zu pad=%zu\n", l->n_out, l->kernel,
                 l->stride, l->pad);
        break;
    case MP_LAYER_MAXPOOL:
    case MP_LAYER_AVGPOOL:
        snprintf(buf, sizeof buf, "%s %zu\n", l->ops->name, l->kernel);
        break;
    case MP_LAYER_DROPOUT:
        snprintf(buf, sizeof buf, "dropout %.9g\n", (double)l->rate);
        break;
    default:
        snprintf(buf, sizeof buf, "%s\n", l->ops->name);
        break;
    }
    mp__spec_digest(s, buf);
}

/* Order rules: input first and only once; nothing after a loss. */
static int check_order(struct spec *s, const struct mp_layer *l)
{
    struct mp_model *m = s->m;
    if (m->n_layers == 0 && l->kind != MP_LAYER_INPUT)
        return fail_at(s, l->line, "the first layer must be `input` (e.g. input 1 28 28), "
                       "not %s", l->ops->name);
    if (m->n_layers > 0 && l->kind == MP_LAYER_INPUT)
        return fail_at(s, l->line, "a second `input` (the first is on line %d); only the first "
                       "layer may be input", m->layers[0].line);
    int after_tokens = m->n_layers == 1 && m->layers[0].tokens;
    if (l->kind == MP_LAYER_EMBED && m->n_layers == 1 && !after_tokens)
        return fail_at(s, l->line, "embed needs `input tokens T` right before it, but the input "
                       "on line %d is not tokens", m->layers[0].line);
    if (l->kind == MP_LAYER_EMBED && !after_tokens)
        return fail_at(s, l->line, "embed must come right after `input tokens T`, not after %s "
                       "(line %d)", m->layers[m->n_layers - 1].ops->name,
                       m->layers[m->n_layers - 1].line);
    if (after_tokens && l->kind != MP_LAYER_EMBED)
        return fail_at(s, l->line, "%s: after `input tokens T` the next layer must be `embed V C` "
                       "(byte ids become vectors there)", l->ops->name);
    if (m->n_layers > 0 && m->layers[m->n_layers - 1].is_loss)
        return fail_at(s, m->layers[m->n_layers - 1].line, "%s: a loss must be the last layer "
                       "(line %d has %s after it)", m->layers[m->n_layers - 1].ops->name,
                       l->line, l->ops->name);
    return 0;
}

/* lm_head reads V from the model's embed and, tied, its E: exactly one embed of the same width. */
static int connect_lm_head(struct spec *s, struct mp_layer *l, struct mp_shape in)
{
    const struct mp_model *m = s->m;
    const struct mp_layer *e = m->n_layers > 1 && m->layers[1].kind == MP_LAYER_EMBED
                                   ? &m->layers[1] : NULL;
    if (!e)
        return fail_at(s, l->line, "lm_head needs an `embed V C` (right after `input tokens T`): "
                       "its V is the vocabulary%s", l->tied ? " and its E the tied weight" : "");
    if (in.ndim != 2)
        return fail_at(s, l->line, "lm_head needs a sequence (T, C) input");
    if (l->tied && in.d[1] != e->n_out)
        return fail_at(s, l->line, "lm_head tied=1: its input width %zu differs from the embed's "
                       "C = %zu on line %d (use tied=0 or make the widths equal)", in.d[1],
                       e->n_out, e->line);
    for (int i = 2; l->tied && i < m->n_layers; i++)
        if (mp_layer_is_tied(&m->layers[i]))
            return fail_at(s, l->line, "lm_head tied=1: the embed's E (line %d) is already tied "
                           "to the lm_head on line %d; E ties to one head only (use tied=0)",
                           e->line, m->layers[i].line);
    l->vocab = e->vocab;
    l->tie_src = l->tied ? e->index : -1;
    return 0;
}

int mp__spec_layer(struct spec *s, int line, char *text)
{
    struct mp_model *m = s->m;
    if (m->n_layers == s->n_cap) {
        int cap = s->n_cap ? 2 * s->n_cap : 16;
        struct mp_layer *p = realloc(m->layers, (size_t)cap * sizeof *p);
        if (!p)
            return MP_FAIL(s->err, NOMEM, "%s:%d: out of memory", s->name, line);
        m->layers = p;
        s->n_cap = cap;
    }
    struct mp_layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->index = m->n_layers;
    l->line = line;
    l->unit = s->unit;
    if (parse_layer(s, l, text) != 0 || check_order(s, l) != 0)
        return -1;
    struct mp_shape in = l->kind == MP_LAYER_INPUT ? l->in : m->layers[m->n_layers - 1].out;
    if (l->kind == MP_LAYER_LM_HEAD && connect_lm_head(s, l, in) != 0)
        return -1;
    if (plan_layer(s, l, in) != 0)
        return -1;
    digest_layer(s, l);
    m->n_layers++;
    return 0;
}
