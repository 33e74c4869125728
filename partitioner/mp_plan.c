/* plan.json (DESIGN.md §5) with jansson: the writer emits every field of struct mp_plan; the
 * reader is strict about what `train` and `sim` rely on (types, P * V stages tiling layers
 * 1..n-1 contiguously, schedule names) and names the file and key in every error. Extras such as
 * rank placement and link matrices are optional on read, so hand-written plans stay short. */
#include "mp_plan.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mp_optim.h"

struct rd {
    const char *path;
    struct mp_err *err;
};

static int bad(const struct rd *r, const char *key, const char *what)
{
    return MP_FAIL(r->err, INPUT, "%s: key '%s': %s", r->path, key, what);
}

static int get_int(const struct rd *r, json_t *o, const char *key, const char *ctx, long long lo,
                   long long *out)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s", ctx, key);
    json_t *v = json_object_get(o, key);
    if (!v)
        return bad(r, name, "missing");
    if (!json_is_integer(v))
        return bad(r, name, "not an integer");
    if (json_integer_value(v) < lo)
        return bad(r, name, lo == 0 ? "negative" : "must be at least 1");
    *out = json_integer_value(v);
    return 0;
}

/* Times a plan holds, in seconds: a step of more than 10^6 s (11 days) is no plan's. */
#define MAX_S 1e6

/* A number in [lo, hi]: a negative time or a string where a time goes was read as itself or as
 * 0, and `mpipe sim` printed a step of -970 ms with exit 0 (a user tour). Optional keys (dflt)
 * take their default when absent, never when malformed. */
static int num_in(const struct rd *r, json_t *o, const char *key, const char *ctx, double lo,
                  double hi, const double *dflt, double *out)
{
    char name[96], what[96];
    snprintf(name, sizeof name, "%s%s", ctx, key);
    json_t *v = json_object_get(o, key);
    if (!v && dflt) {
        *out = *dflt;
        return 0;
    }
    if (!v)
        return bad(r, name, "missing");
    if (!json_is_number(v))
        return bad(r, name, "not a number");
    double x = json_number_value(v);
    snprintf(what, sizeof what, "%g is out of range [%g, %g]", x, lo, hi);
    if (!(x >= lo && x <= hi))
        return bad(r, name, lo == 0 && x < 0 ? "negative" : what);
    *out = x;
    return 0;
}

static int get_num(const struct rd *r, json_t *o, const char *key, const char *ctx, double lo,
                   double hi, double *out)
{
    return num_in(r, o, key, ctx, lo, hi, NULL, out);
}

static int opt_in(const struct rd *r, json_t *o, const char *key, const char *ctx, double dflt,
                  double lo, double hi, double *out)
{
    return num_in(r, o, key, ctx, lo, hi, &dflt, out);
}

static int get_str(const struct rd *r, json_t *o, const char *key, const char *ctx, char *out,
                   size_t cap)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s", ctx, key);
    json_t *v = json_object_get(o, key);
    if (!v)
        return bad(r, name, "missing");
    if (!json_is_string(v))
        return bad(r, name, "not a string");
    if (strlen(json_string_value(v)) >= cap)
        return bad(r, name, "too long");
    snprintf(out, cap, "%s", json_string_value(v));
    return 0;
}

static double opt_num(json_t *o, const char *key, double dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

/* An optional count, clamped to [lo, hi] before the caller casts it: converting a double outside
 * the target type's range (1e300 to int, -1 to size_t) is undefined behaviour (tests/fuzz). */
static double opt_clamped(json_t *o, const char *key, double dflt, double lo, double hi)
{
    double v = opt_num(o, key, dflt);
    return v < lo ? lo : v > hi ? hi : v;
}

static int read_layer(const struct rd *r, json_t *o, int i, struct mp_plan_layer *l)
{
    char ctx[48];
    long long idx, pb, ab;
    snprintf(ctx, sizeof ctx, "layers[%d].", i);
    if (!json_is_object(o))
        return bad(r, "layers", "entries must be objects");
    if (get_int(r, o, "index", ctx, 0, &idx) ||
        get_str(r, o, "kind", ctx, l->kind, sizeof l->kind) ||
        get_num(r, o, "compute_s", ctx, 0, MAX_S, &l->compute_s) ||
        get_int(r, o, "param_bytes", ctx, 0, &pb) || get_int(r, o, "act_bytes_out", ctx, 0, &ab))
        return -1;
    if (idx != i) {
        snprintf(ctx, sizeof ctx, "layers[%d].index", i);
        return bad(r, ctx, "out of order (layers must list 0, 1, 2, ...)");
    }
    l->index = i, l->param_bytes = (size_t)pb, l->act_bytes_out = (size_t)ab;
    if (opt_in(r, o, "forward_s", ctx, l->compute_s / 3, 0, MAX_S, &l->fwd_s) ||
        opt_in(r, o, "backward_input_s", ctx, l->compute_s / 3, 0, MAX_S, &l->bwd_input_s) ||
        opt_in(r, o, "backward_weight_s", ctx, l->compute_s / 3, 0, MAX_S, &l->bwd_weight_s))
        return -1;
    l->saved_bytes = (size_t)opt_clamped(o, "saved_bytes", 0, 0, 0x1p62);
    /* The packing part of each pass (a plan written before it has none: no credit for the pool
     * of packed weights), so that `mpipe sim` predicts what `mpipe plan` did. */
    json_t *pk = json_object_get(o, "pack_s");
    int ok = !pk || (json_is_array(pk) && json_array_size(pk) == 3);
    memset(l->pack_s, 0, sizeof l->pack_s);
    for (int k = 0; pk && ok && k < 3; k++) {
        json_t *v = json_array_get(pk, (size_t)k);
        ok = json_is_number(v) && json_number_value(v) >= 0;
        l->pack_s[k] = ok ? json_number_value(v) : 0;
    }
    if (!ok) {
        snprintf(ctx, sizeof ctx, "layers[%d].pack_s", i);
        return bad(r, ctx, "must be 3 non-negative numbers (forward, input-grad, weight-grad)");
    }
    return 0;
}

static int read_int_array(const struct rd *r, json_t *o, const char *key, const char *ctx,
                          int *out, int cap, int *n)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s", ctx, key);
    json_t *a = json_object_get(o, key), *v;
    if (!json_is_array(a))
        return bad(r, name, a ? "not an array" : "missing");
    if (json_array_size(a) > (size_t)cap)
        return bad(r, name, "too many entries");
    size_t i;
    json_array_foreach(a, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return bad(r, name, "entries must be non-negative integers");
        out[i] = (int)json_integer_value(v);
    }
    *n = (int)json_array_size(a);
    return 0;
}

static int read_stage(const struct rd *r, json_t *o, int v, struct mp_plan_stage *st)
{
    char ctx[48];
    long long fl, ll, ab, pb, pk;
    int nc;
    snprintf(ctx, sizeof ctx, "stages[%d].", v);
    if (!json_is_object(o))
        return bad(r, "stages", "entries must be objects");
    if (get_int(r, o, "first_layer", ctx, 0, &fl) || get_int(r, o, "last_layer", ctx, 0, &ll) ||
        read_int_array(r, o, "ranks", ctx, st->ranks, 64, &st->n_ranks) ||
        get_str(r, o, "host", ctx, st->host, sizeof st->host) ||
        read_int_array(r, o, "cores", ctx, st->cores, 64, &nc) ||
        get_num(r, o, "compute_s", ctx, 0, MAX_S, &st->compute_s) ||
        get_int(r, o, "act_bytes", ctx, 0, &ab) || get_int(r, o, "param_bytes", ctx, 0, &pb) ||
        get_int(r, o, "peak_mem_bytes", ctx, 0, &pk))
        return -1;
    st->first_layer = (int)fl, st->last_layer = (int)ll;
    st->act_bytes = (size_t)ab, st->param_bytes = (size_t)pb, st->peak_mem_bytes = (size_t)pk;
    st->held_bytes = (size_t)opt_clamped(o, "held_bytes", 0, 0, 0x1p62);
    st->held_mb = (int)opt_clamped(o, "held_mb", 0, 0, INT_MAX);
    if (opt_in(r, o, "send_s", ctx, 0, 0, MAX_S, &st->send_s) ||
        opt_in(r, o, "slowdown", ctx, 1, 1, 1e6, &st->slowdown))
        return -1;
    json_t *rc = json_object_get(o, "recompute");
    if (rc && !json_is_boolean(rc))
        return bad(r, "recompute", "must be true or false");
    st->recompute = rc && json_is_true(rc);
    json_t *pd = json_object_get(o, "pool_dropped");
    if (pd && !json_is_boolean(pd))
        return bad(r, "pool_dropped", "must be true or false");
    st->pool_dropped = pd && json_is_true(pd);
    return 0;
}

/* Stage v must start right after stage v-1 ends; stage 0 at layer 1, the last at layer n-1. */
static int check_tiling(const struct rd *r, const struct mp_plan *p)
{
    char key[48];
    for (int v = 0; v < p->n_stages; v++) {
        const struct mp_plan_stage *st = &p->stages[v];
        int want = v == 0 ? 1 : p->stages[v - 1].last_layer + 1;
        snprintf(key, sizeof key, "stages[%d].first_layer", v);
        if (st->first_layer != want) {
            char what[96];
            snprintf(what, sizeof what, "is %d, expected %d (stages must tile layers 1..%d)",
                     st->first_layer, want, p->n_layers - 1);
            return bad(r, key, what);
        }
        snprintf(key, sizeof key, "stages[%d].last_layer", v);
        if (st->last_layer < st->first_layer || st->last_layer >= p->n_layers)
            return bad(r, key, "before first_layer or beyond the last layer");
    }
    if (p->stages[p->n_stages - 1].last_layer != p->n_layers - 1)
        return bad(r, "stages", "the last stage must end at the last layer (the loss)");
    return 0;
}

static int read_matrix(const struct rd *r, json_t *root, const char *key, int n, double **out)
{
    json_t *a = json_object_get(root, key), *v;
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) != (size_t)n * (size_t)n)
        return bad(r, key, "must be an array of P*P numbers");
    if (!(*out = malloc(sizeof(double) * (size_t)n * (size_t)n)))
        return MP_FAIL(r->err, NOMEM, "out of memory");
    size_t i;
    json_array_foreach(a, i, v) {
        if (!json_is_number(v) || json_number_value(v) <= 0)
            return bad(r, key, "entries must be positive numbers");
        (*out)[i] = json_number_value(v);
    }
    return 0;
}

static int read_ranks(const struct rd *r, json_t *root, struct mp_plan *p)
{
    json_t *a = json_object_get(root, "ranks"), *o;
    if (!a)
        return 0;
    if (!json_is_array(a) || !(p->ranks = calloc(json_array_size(a) + 1, sizeof *p->ranks)))
        return bad(r, "ranks", "must be an array");
    size_t i;
    json_array_foreach(a, i, o) {
        struct mp_plan_rank *k = &p->ranks[i];
        char ctx[48];
        long long s, d, so, c, pu;
        snprintf(ctx, sizeof ctx, "ranks[%zu].", i);
        if (get_int(r, o, "stage", ctx, 0, &s) || get_int(r, o, "replica", ctx, 0, &d) ||
            get_str(r, o, "host", ctx, k->host, sizeof k->host) ||
            get_int(r, o, "socket", ctx, 0, &so) || get_int(r, o, "core", ctx, 0, &c) ||
            get_int(r, o, "pu", ctx, 0, &pu) || get_str(r, o, "slot", ctx, k->slot, sizeof k->slot))
            return -1;
        k->stage = (int)s, k->replica = (int)d, k->socket = (int)so, k->core = (int)c;
        k->pu = (int)pu;
        p->n_ranks++;
    }
    return 0;
}

/* The optional rates cache key, price from the rates alone and lean of earlier runs (plans
 * before 2026-12-08, or priced from a profile or --rates, lack them). */
static int read_lean(const struct rd *r, json_t *root, struct mp_plan *p)
{
    json_t *o_key = json_object_get(root, "rates_key");
    const char *key = json_string_value(o_key);
    if (o_key && (!key || strlen(key) != 16 || strspn(key, "0123456789abcdef") != 16))
        return bad(r, "rates_key", "expected 16 hexadecimal digits");
    snprintf(p->rates_key, sizeof p->rates_key, "%s", key ? key : "");
    if (opt_in(r, root, "priced_step_s", "", 0, 0, MAX_S, &p->priced_step_s) ||
        opt_in(r, root, "lean", "", 1, 0.5, 2, &p->lean))
        return -1;
    p->lean_runs = (int)opt_clamped(root, "lean_runs", 0, 0, 1 << 10);
    return 0;
}

static int read_scalars(const struct rd *r, json_t *root, struct mp_plan *p)
{
    long long P, D, V, M, B;
    char sched[32];
    if (get_str(r, root, "model", "", p->model, sizeof p->model) ||
        get_str(r, root, "digest", "", p->digest, sizeof p->digest) ||
        get_str(r, root, "schedule", "", sched, sizeof sched) ||
        get_int(r, root, "P", "", 1, &P) || get_int(r, root, "D", "", 1, &D) ||
        get_int(r, root, "V", "", 1, &V) || get_int(r, root, "M", "", 1, &M) ||
        get_int(r, root, "batch", "", 1, &B) ||
        get_num(r, root, "step_s", "", 0, MAX_S, &p->step_s) ||
        get_num(r, root, "bubble", "", 0, 1, &p->bubble) ||
        get_num(r, root, "samples_per_s", "", 0, 1e15, &p->samples_per_s) ||
        get_str(r, root, "cost_source", "", p->cost_source, sizeof p->cost_source))
        return -1;
    if (mp_sched_parse(sched, &p->schedule))
        return bad(r, "schedule", "expected gpipe, 1f1b, interleaved, zb1 or zbv");
    if (P > 4096 || D > 4096 || V > 64 || M > (1 << 24))
        return bad(r, P > 4096 ? "P" : D > 4096 ? "D" : V > 64 ? "V" : "M", "out of range");
    if (p->schedule == MP_SCHED_ZBV && V != 2)
        return bad(r, "V", "must be 2 for zbv (two chunks per rank in a V)");
    if (V > 1 && p->schedule != MP_SCHED_INTERLEAVED && p->schedule != MP_SCHED_ZBV)
        return bad(r, "V", "must be 1 unless the schedule is interleaved or zbv");
    if (M % D)
        return bad(r, "M", "must be a multiple of D");
    if (B % M)
        return bad(r, "batch", "must be a multiple of M");
    p->P = (int)P, p->D = (int)D, p->V = (int)V, p->M = (int)M, p->batch = (size_t)B;
    json_t *o = json_object_get(root, "oversubscribed");
    if (!json_is_boolean(o))
        return bad(r, "oversubscribed", o ? "not a boolean" : "missing");
    p->oversubscribed = json_is_true(o);
    if (opt_in(r, root, "allreduce_s", "", 0, 0, MAX_S, &p->allreduce_s) ||
        opt_in(r, root, "optim_step_s", "", 0, 0, MAX_S, &p->optim_step_s))
        return -1;
    p->bottleneck = (int)opt_clamped(root, "bottleneck", -1, -1, INT_MAX);
    const char *part = json_string_value(json_object_get(root, "partition"));
    snprintf(p->partition, sizeof p->partition, "%s", part ? part : "");
    /* What the plan priced the optimizer step and state for (plans before 2026-12-07 lack both). */
    json_t *o_opt = json_object_get(root, "optimizer"), *o_zero = json_object_get(root, "zero");
    enum mp_optim_kind kind;
    if (o_opt && (!json_is_string(o_opt) || mp_optim_parse(json_string_value(o_opt), &kind)))
        return bad(r, "optimizer",
                   "expected sgd, momentum, nesterov, adam, adamw, rmsprop or lamb");
    snprintf(p->optimizer, sizeof p->optimizer, "%s", o_opt ? json_string_value(o_opt) : "");
    if (o_zero && (!json_is_integer(o_zero) || (unsigned long long)json_integer_value(o_zero) > 1))
        return bad(r, "zero", "expected 0 or 1");
    p->zero = o_zero ? (int)json_integer_value(o_zero) : -1;
    /* The cap it was given (plans before 2026-12-08 and plans under the host's default lack it) */
    json_t *o_cap = json_object_get(root, "memory_per_rank");
    if (o_cap && (!json_is_integer(o_cap) || json_integer_value(o_cap) < 1))
        return bad(r, "memory_per_rank", "expected a positive integer (bytes)");
    p->mem_cap = o_cap ? (size_t)json_integer_value(o_cap) : 0;
    return read_lean(r, root, p);
}

static int read_arrays(const struct rd *r, json_t *root, struct mp_plan *p)
{
    json_t *layers = json_object_get(root, "layers"), *stages = json_object_get(root, "stages");
    if (!json_is_array(layers) || json_array_size(layers) < 2)
        return bad(r, "layers", layers ? "must be an array of at least 2 layers" : "missing");
    if (!json_is_array(stages))
        return bad(r, "stages", stages ? "not an array" : "missing");
    if (json_array_size(stages) != (size_t)p->P * (size_t)p->V)
        return bad(r, "stages", "must have P * V entries");
    p->n_layers = (int)json_array_size(layers);
    p->layers = calloc((size_t)p->n_layers, sizeof *p->layers);
    p->stages = calloc(json_array_size(stages), sizeof *p->stages);
    if (!p->layers || !p->stages)
        return MP_FAIL(r->err, NOMEM, "out of memory");
    for (int i = 0; i < p->n_layers; i++)
        if (read_layer(r, json_array_get(layers, (size_t)i), i, &p->layers[i]))
            return -1;
    p->n_stages = (int)json_array_size(stages);
    for (int v = 0; v < p->n_stages; v++)
        if (read_stage(r, json_array_get(stages, (size_t)v), v, &p->stages[v]))
            return -1;
    if (check_tiling(r, p) || read_ranks(r, root, p) ||
        read_matrix(r, root, "link_latency_s", p->P, &p->link_latency_s) ||
        read_matrix(r, root, "link_bandwidth_Bps", p->P, &p->link_bandwidth_Bps))
        return -1;
    return 0;
}

int mp_plan_read(struct mp_plan *p, const char *path, struct mp_err *err)
{
    memset(p, 0, sizeof *p);
    p->bottleneck = -1;
    struct rd r = {path, err};
    json_error_t je;
    struct stat sb;
    FILE *f = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? (errno = EISDIR, NULL)
                                                           : fopen(path, "rb");
    if (!f) /* a directory opens, and read as "not JSON" (exit 2), not as unreadable */
        return MP_FAIL(err, IO, "%s: cannot read plan: %s", path, strerror(errno));
    json_t *root = json_loadf(f, 0, &je);
    fclose(f);
    if (!root)
        return MP_FAIL(err, INPUT, "%s:%d: not JSON: %s", path, je.line, je.text);
    int rc = json_is_object(root) ? 0 : bad(&r, "(top level)", "must be an object");
    if (rc == 0)
        rc = read_scalars(&r, root, p);
    if (rc == 0)
        rc = read_arrays(&r, root, p);
    json_decref(root);
    if (rc)
        mp_plan_free(p);
    return rc;
}

static json_t *int_array(const int *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *num_array(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *layer_json(const struct mp_plan_layer *l)
{
    return json_pack("{s:i, s:s, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:o}", "index", l->index,
                     "kind", l->kind, "compute_s", l->compute_s, "forward_s", l->fwd_s,
                     "backward_input_s", l->bwd_input_s, "backward_weight_s", l->bwd_weight_s,
                     "param_bytes", (json_int_t)l->param_bytes, "act_bytes_out",
                     (json_int_t)l->act_bytes_out, "saved_bytes", (json_int_t)l->saved_bytes,
                     "pack_s", num_array(l->pack_s, 3));
}

static json_t *stage_json(const struct mp_plan_stage *s)
{
    return json_pack("{s:i, s:i, s:o, s:s, s:o, s:f, s:I, s:I, s:I, s:I, s:i, s:f, s:f, s:b, s:b}",
                     "first_layer",
                     s->first_layer, "last_layer", s->last_layer, "ranks",
                     int_array(s->ranks, s->n_ranks), "host", s->host, "cores",
                     int_array(s->cores, s->n_ranks), "compute_s", s->compute_s, "act_bytes",
                     (json_int_t)s->act_bytes, "param_bytes", (json_int_t)s->param_bytes,
                     "peak_mem_bytes", (json_int_t)s->peak_mem_bytes, "held_bytes",
                     (json_int_t)s->held_bytes, "held_mb", s->held_mb, "send_s", s->send_s,
                     "slowdown", s->slowdown > 1 ? s->slowdown : 1.0, "recompute",
                     s->recompute, "pool_dropped", s->pool_dropped);
}

static json_t *rank_json(const struct mp_plan_rank *k)
{
    return json_pack("{s:i, s:i, s:s, s:i, s:i, s:i, s:s}", "stage", k->stage, "replica",
                     k->replica, "host", k->host, "socket", k->socket, "core", k->core, "pu",
                     k->pu, "slot", k->slot);
}

/* The plan as a JSON object (the caller owns it), for --out and --json alike. */
/* One layout of `plan --try`. */
static json_t *trial_json(const struct mp_plan_trial *t)
{
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:b}", "schedule",
                     mp_sched_name(t->schedule), "P", t->P, "D", t->D, "V", t->V, "M", t->M,
                     "predicted_samples_per_s", t->predicted_sps, "measured_samples_per_s",
                     t->measured_sps, "picked", t->picked);
}

static json_t *plan_json(const struct mp_plan *p)
{
    json_t *root = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:s, s:f, s:f, s:f, s:b, s:f, s:f, s:i}",
        "model", p->model, "digest", p->digest, "schedule", mp_sched_name(p->schedule),
        "partition", p->partition[0] ? p->partition : "optimal", "P", p->P, "D", p->D, "V", p->V,
        "M", p->M, "batch", (json_int_t)p->batch, "cost_source", p->cost_source, "step_s",
        p->step_s, "bubble", p->bubble, "samples_per_s", p->samples_per_s, "oversubscribed",
        p->oversubscribed, "allreduce_s", p->allreduce_s, "optim_step_s", p->optim_step_s,
        "bottleneck", p->bottleneck);
    if (!root)
        return NULL;
    json_t *layers = json_array(), *stages = json_array(), *ranks = json_array();
    for (int i = 0; i < p->n_layers; i++)
        json_array_append_new(layers, layer_json(&p->layers[i]));
    for (int v = 0; v < p->n_stages; v++)
        json_array_append_new(stages, stage_json(&p->stages[v]));
    for (int k = 0; k < p->n_ranks; k++)
        json_array_append_new(ranks, rank_json(&p->ranks[k]));
    json_object_set_new(root, "layers", layers);
    json_object_set_new(root, "stages", stages);
    if (p->optimizer[0])
        json_object_set_new(root, "optimizer", json_string(p->optimizer));
    if (p->zero >= 0)
        json_object_set_new(root, "zero", json_integer(p->zero));
    json_object_set_new(root, "rank_layout",
                        json_string("replica-major: rank = replica * P + stage"));
    json_object_set_new(root, "ranks", ranks);
    if (p->link_latency_s && p->link_bandwidth_Bps) {
        json_object_set_new(root, "link_latency_s", num_array(p->link_latency_s, p->P * p->P));
        json_object_set_new(root, "link_bandwidth_Bps",
                            num_array(p->link_bandwidth_Bps, p->P * p->P));
    }
    if (p->rates_key[0]) {
        json_object_set_new(root, "rates_key", json_string(p->rates_key));
        json_object_set_new(root, "priced_step_s", json_real(p->priced_step_s));
    }
    if (p->mem_cap > 0)
        json_object_set_new(root, "memory_per_rank", json_integer((json_int_t)p->mem_cap));
    if (p->lean_runs > 0) {
        json_object_set_new(root, "lean", json_real(p->lean));
        json_object_set_new(root, "lean_runs", json_integer(p->lean_runs));
    }
    if (p->n_tried > 0) {
        json_t *tried = json_array();
        for (int k = 0; k < p->n_tried; k++)
            json_array_append_new(tried, trial_json(&p->tried[k]));
        json_object_set_new(root, "tried", tried);
    }
    return root;
}

int mp_plan_write(const struct mp_plan *p, const char *path, struct mp_err *err)
{
    json_t *root = plan_json(p);
    if (!root)
        return MP_FAIL(err, NOMEM, "plan: cannot build JSON");
    int rc = 0;
    if (strcmp(path, "-") == 0) {
        rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    }
    json_decref(root);
    if (rc)
        return MP_FAIL(err, IO, "%s: cannot write plan: %s", path, strerror(errno));
    return 0;
}

int mp_plan_same_host(const struct mp_plan *p, int a, int b)
{
    if (!p->ranks || a < 0 || b < 0 || a >= p->n_ranks || b >= p->n_ranks)
        return 1;
    return strcmp(p->ranks[a].host, p->ranks[b].host) == 0;
}

void mp_plan_free(struct mp_plan *p)
{
    free(p->layers);
    free(p->stages);
    free(p->ranks);
    free(p->link_latency_s);
    free(p->link_bandwidth_Bps);
    free(p->tried);
    p->layers = NULL, p->stages = NULL, p->ranks = NULL, p->tried = NULL;
    p->n_tried = 0;
    p->link_latency_s = p->link_bandwidth_Bps = NULL;
    p->n_layers = p->n_stages = p->n_ranks = 0;
}

int mp_plan_default_micro(size_t batch, int P, int D)
{
    if (P == 1 && D == 1)
        return 1;
    for (size_t m = (size_t)(2 * P * D); m >= 1; m--)
        if (batch % m == 0 && m % (size_t)D == 0)
            return (int)m;
    return 0;
}
