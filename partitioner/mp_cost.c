/* Cost model of the planner: layer seconds (analytic roofline at documented rates, or a measured
 * profile), link levels (defaults or `mpipe bench p2p --json`), stage memory under a schedule, and
 * the plan's prediction through the engine's schedule generator and simulator. Never measures:
 * a plan must be reproducible and instant; measurements come in as files. */
#include "mp_cost.h"

#include <jansson.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mp_stage_mem.h"

/* Shared-memory MPI between cores by level, and TCP between hosts: conservative figures for
 * current x86 servers (Open MPI vader/shm, 10 GbE). `--links` replaces them with measurements. */
static const struct mp_link default_links[MP_LINK_COUNT] = {
    [MP_LINK_L3] = {0.4e-6, 12e9},    [MP_LINK_NUMA] = {0.6e-6, 10e9},
    [MP_LINK_SOCKET] = {0.8e-6, 8e9}, [MP_LINK_HOST] = {1.5e-6, 5e9},
    [MP_LINK_NET] = {25e-6, 1.1e9},
};

void mp_cost_defaults(struct mp_cost_model *cm)
{
    memset(cm, 0, sizeof *cm);
    cm->gemm_flops = MP_COST_GEMM_FLOPS;
    cm->mem_Bps = MP_COST_MEM_BPS;
    cm->call_s = MP_COST_CALL_S;
    memcpy(cm->link, default_links, sizeof default_links);
    cm->optim_slots = 2;
    snprintf(cm->source, sizeof cm->source, "analytic");
}

/* {"rows": [...]} or a bare array. */
static json_t *load_rows(const char *path, json_t **root, struct mp_err *err);
static int row_num(json_t *row, const char *key, const char *path, size_t i, double *out,
                   struct mp_err *err);

int mp_cost_load_rates(struct mp_cost_model *cm, const char *path, struct mp_err *err)
{
    json_t *root, *rows = load_rows(path, &root, err), *row;
    if (!rows)
        return -1;
    double best = 0;
    size_t i;
    int rc = 0;
    json_array_foreach(rows, i, row) {
        double m = 0, g = 0;
        if (row_num(row, "m", path, i, &m, err) || row_num(row, "gflops", path, i, &g, err)) {
            rc = -1;
            break;
        }
        if (m >= 256 && g > best)
            best = g;
    }
    json_decref(root);
    if (!rc && !(best > 0))
        rc = MP_FAIL(err, INPUT, "%s: no row with m >= 256 and gflops > 0 (run mpipe bench gemm "
                     "--shape 256x1024x1024 --json)", path);
    if (!rc) {
        cm->gemm_flops = best * 1e9;
        snprintf(cm->source, sizeof cm->source, "analytic, GEMM %.0f GFLOPS measured", best);
    }
    return rc;
}

/* {"rows": [...]} or a bare array. */
static json_t *load_rows(const char *path, json_t **root, struct mp_err *err)
{
    json_error_t je;
    struct stat sb;
    *root = NULL;
    /* A file that cannot be read is an I/O failure (exit 3), not malformed input: jansson's
     * "FILE:-1: unable to open" read as exit 2 with a line number of -1. */
    int why = stat(path, &sb) ? errno : S_ISDIR(sb.st_mode) ? EISDIR : 0;
    if (why)
        return MP_FAIL(err, IO, "%s: cannot read: %s", path, strerror(why)), NULL;
    *root = json_load_file(path, 0, &je);
    if (!*root)
        return MP_FAIL(err, INPUT, "%s:%d: %s", path, je.line, je.text), NULL;
    json_t *rows = json_is_array(*root) ? *root : json_object_get(*root, "rows");
    if (!json_is_array(rows)) {
        MP_FAIL(err, INPUT, "%s: expected {\"rows\": [...]}", path);
        json_decref(*root);
        return NULL;
    }
    return rows;
}

static int row_num(json_t *row, const char *key, const char *path, size_t i, double *out,
                   struct mp_err *err)
{
    json_t *v = json_object_get(row, key);
    if (!json_is_number(v) || json_number_value(v) < 0)
        return MP_FAIL(err, INPUT, "%s: rows[%zu].%s: missing or not a non-negative number", path,
                       i, key);
    *out = json_number_value(v);
    return 0;
}

int mp_cost_load_links(struct mp_cost_model *cm, const char *path, struct mp_err *err)
{
    json_t *root, *rows = load_rows(path, &root, err), *row;
    if (!rows)
        return -1;
    double lat[MP_LINK_COUNT], bw[MP_LINK_COUNT];
    for (int l = 0; l < MP_LINK_COUNT; l++)
        lat[l] = INFINITY, bw[l] = 0;
    size_t i;
    int rc = 0;
    json_array_foreach(rows, i, row) {
        const char *rel = json_string_value(json_object_get(row, "relation"));
        enum mp_link_level l;
        double us = 0, gbps = 0;
        if (!rel || mp_link_level_parse(rel, &l))
            rc = MP_FAIL(err, INPUT, "%s: rows[%zu].relation: expected L3, NUMA, socket, host or "
                         "cross-host", path, i);
        else if (row_num(row, "latency_us", path, i, &us, err) ||
                 row_num(row, "bandwidth_GBps", path, i, &gbps, err))
            rc = -1;
        else if (!(gbps > 0)) /* was taken as "no figure": the defaults, without a word */
            rc = MP_FAIL(err, INPUT, "%s: rows[%zu].bandwidth_GBps: 0 is no link's bandwidth "
                         "(mpipe bench p2p --json measures it)", path, i);
        else
            lat[l] = fmin(lat[l], us * 1e-6), bw[l] = fmax(bw[l], gbps * 1e9);
        if (rc)
            break;
    }
    json_decref(root);
    if (rc == 0 && i == 0)
        rc = MP_FAIL(err, INPUT, "%s: no rows (mpipe bench p2p --json writes them)", path);
    for (int l = 0; rc == 0 && l < MP_LINK_COUNT; l++) {
        if (isfinite(lat[l]))
            cm->link[l].latency_s = lat[l];
        if (bw[l] > 0)
            cm->link[l].bandwidth_Bps = bw[l];
    }
    return rc;
}

/* Layers whose time is mostly BLIS GEMMs (attention's projections and per-head products too). */
static int is_gemm_kind(enum mp_layer_kind k)
{
    return k == MP_LAYER_DENSE || k == MP_LAYER_CONV2D || k == MP_LAYER_ATTENTION ||
           k == MP_LAYER_LM_HEAD;
}

/* A GEMM with few rows runs below the machine's rate: BLIS measured here and in DESIGN.md (~35,
 * 45, 53 and 60-75 GFLOPS at 32, 64, 128 and 256 rows) fits rows / (rows + 30) well. Relative to
 * 256 rows, where the default rate is quoted, and never above it. This is what lets the planner
 * trade bubble (more micro-batches) against GEMM efficiency (bigger ones). */
static double gemm_row_efficiency(const struct mp_layer *l, size_t mb)
{
    double rows = (double)mb * (double)mp_shape_rows(l->in); /* a sequence: every token a row */
    if (l->kind == MP_LAYER_CONV2D)
        rows *= (double)(l->out.d[1] * l->out.d[2]);
    double eff = (rows / (rows + 30.0)) / (256.0 / 286.0);
    return eff < 1.0 ? eff : 1.0;
}

/* Roofline for GEMM layers (whichever of FLOPs and bytes takes longer), bytes for the rest. */
static void analytic_layer(const struct mp_layer *l, size_t mb, const struct mp_cost_model *cm,
                           struct mp_plan_layer *o)
{
    struct mp_cost c = l->ops->cost(l, mb);
    double g = cm->gemm_flops * gemm_row_efficiency(l, mb), bw = cm->mem_Bps;
    if (is_gemm_kind(l->kind)) {
        o->fwd_s = fmax(c.flops_fwd / g, c.bytes_fwd / bw) + cm->call_s;
        o->bwd_input_s = fmax(c.flops_bwd_input / g, 0.5 * c.bytes_bwd / bw) + cm->call_s;
        o->bwd_weight_s = fmax(c.flops_bwd_weight / g, 0.5 * c.bytes_bwd / bw) + cm->call_s;
    } else {
        o->fwd_s = c.bytes_fwd / bw + cm->call_s;
        o->bwd_input_s = c.bytes_bwd / bw + cm->call_s;
        o->bwd_weight_s = 0;
    }
    o->act_bytes_out = c.act_bytes_out;
    o->saved_bytes = c.saved_bytes;
    o->param_bytes = c.param_bytes;
}

static int profile_row(json_t *row, size_t i, const struct mp_model *m, size_t mb,
                       const char *path, struct mp_plan_layer *out, struct mp_err *err)
{
    json_t *jidx = json_object_get(row, "index");
    const char *kind = json_string_value(json_object_get(row, "kind"));
    if (!json_is_integer(jidx) || json_integer_value(jidx) < 0 ||
        json_integer_value(jidx) >= m->n_layers)
        return MP_FAIL(err, INPUT, "%s: rows[%zu].index: missing or not a layer of %s (0..%d)",
                       path, i, m->path, m->n_layers - 1);
    int idx = (int)json_integer_value(jidx);
    const char *want = m->layers[idx].ops->name;
    if (!kind || strcmp(kind, want))
        return MP_FAIL(err, INPUT, "%s: rows[%zu].kind: layer %d of %s is %s, the profile says %s",
                       path, i, idx, m->path, want, kind ? kind : "nothing");
    double f = 0, b = 0, w = 0, batch = (double)mb;
    if (row_num(row, "forward_s", path, i, &f, err) ||
        row_num(row, "backward_input_s", path, i, &b, err) ||
        row_num(row, "backward_weight_s", path, i, &w, err))
        return -1;
    if (json_object_get(row, "batch") && row_num(row, "batch", path, i, &batch, err))
        return -1;
    if (!(batch >= 1)) /* a time for no samples scales to nothing; it was used unscaled */
        return MP_FAIL(err, INPUT, "%s: rows[%zu].batch: %g samples: at least 1", path, i, batch);
    double scale = (double)mb / batch;
    out[idx].fwd_s = f * scale, out[idx].bwd_input_s = b * scale, out[idx].bwd_weight_s = w * scale;
    out[idx].compute_s = -1;  /* marks the row as seen */
    return 0;
}

static int load_profile(const struct mp_model *m, size_t mb, const char *path,
                        struct mp_plan_layer *out, struct mp_err *err)
{
    json_t *root, *rows = load_rows(path, &root, err), *row;
    if (!rows)
        return -1;
    size_t i;
    int rc = 0;
    /* Layer kinds alone let another model's profile price this one (a layer 32 times wider at
     * the narrow one's cost, a user tour): the digest it records must be this model's. */
    const char *digest = json_string_value(json_object_get(root, "digest"));
    if (digest && strcmp(digest, m->digest))
        rc = MP_FAIL(err, INPUT, "%s: a profile of another model (digest %s; %s has %s): mpipe "
                     "bench layers %s --out FILE measures this one", path, digest, m->path,
                     m->digest, m->path);
    json_array_foreach(rows, i, row) {
        if (rc || (rc = profile_row(row, i, m, mb, path, out, err)))
            break;
    }
    json_decref(root);
    for (int k = 1; rc == 0 && k < m->n_layers; k++)
        if (out[k].compute_s != -1)
            rc = MP_FAIL(err, INPUT, "%s: no row for layer %d (%s) of %s: re-run mpipe bench "
                         "layers on this model", path, k, m->layers[k].ops->name, m->path);
    return rc;
}

/* Layer times from the measured table at its size nearest mb (by ratio), scaled by samples. */
static void table_layers(const struct mp_model *m, size_t mb, const struct mp_cost_table *t,
                         struct mp_plan_layer *out)
{
    int j = 0;
    for (int c = 1; c < t->n_mbs; c++) {
        double dc = fabs(log((double)t->mbs[c] / (double)mb));
        j = dc < fabs(log((double)t->mbs[j] / (double)mb)) ? c : j;
    }
    double scale = (double)mb / (double)t->mbs[j];
    for (int i = 1; i < m->n_layers && i < t->n_layers; i++) {
        size_t at = ((size_t)j * (size_t)t->n_layers + (size_t)i) * 3;
        const double *r = &t->t[at];
        out[i].fwd_s = r[0] * scale, out[i].bwd_input_s = r[1] * scale;
        out[i].bwd_weight_s = r[2] * scale;
        for (int p = 0; p < 3 && t->pack; p++)
            out[i].pack_s[p] = t->pack[at + (size_t)p] * scale;
    }
}

int mp_cost_layers(const struct mp_model *m, size_t mb, struct mp_cost_model *cm,
                   const char *profile, struct mp_plan_layer *out, struct mp_err *err)
{
    memset(out, 0, sizeof *out * (size_t)m->n_layers);
    for (int i = 0; i < m->n_layers; i++) {
        const struct mp_layer *l = &m->layers[i];
        out[i].index = i;
        snprintf(out[i].kind, sizeof out[i].kind, "%s", l->ops->name);
        if (i == 0)
            out[i].act_bytes_out = sizeof(float) * mb * mp_layer_out_len(l);
        else
            analytic_layer(l, mb, cm, &out[i]);
    }
    if (profile) {
        if (load_profile(m, mb, profile, out, err))
            return -1;
        snprintf(cm->source, sizeof cm->source, "profile:%.150s", profile);
    } else if (cm->table && cm->table->n_mbs > 0) {
        table_layers(m, mb, cm->table, out);
    }
    /* The engine skips the input gradient of layers before m->dx_from: it would reach only the
     * data. */
    for (int i = 1; i < m->dx_from && i < m->n_layers; i++)
        out[i].bwd_input_s = 0, out[i].pack_s[1] = 0;
    for (int i = 0; i < m->n_layers; i++)
        out[i].compute_s = out[i].fwd_s + out[i].bwd_input_s + out[i].bwd_weight_s;
    return 0;
}

int mp_cost_held_mb(enum mp_sched_kind kind, int P, int V, int M, int rank)
{
    int n;
    switch (kind) {
    case MP_SCHED_GPIPE:
        return M;
    case MP_SCHED_INTERLEAVED:  /* Megatron's warm-up: 2 (P - r - 1) + (V - 1) P, plus one */
        n = 2 * (P - rank - 1) + (V - 1) * P + 1;
        return n < M * V ? n : M * V;
    case MP_SCHED_ZBV:  /* every rank at most 2 min(P, M) chunk-micro-batches (mp_sched_zbv.c) */
        return 2 * (P < M ? P : M);
    default:  /* 1f1b, and zb1 which keeps 1F1B's peak (ZB-H1) */
        n = P - rank;
        return n < M ? n : M;
    }
}

double mp_cost_allreduce_s(const struct mp_link *l, double bytes, int D)
{
    if (D <= 1)
        return 0.0;
    return 2.0 * (D - 1) * l->latency_s + 2.0 * (D - 1) / D * bytes / l->bandwidth_Bps;
}

/* Seconds at `bytes` on the measured rows: linear in log-log between the two sizes around it, the
 * smallest size's seconds below it (latency), and the largest size's seconds per byte above it. */
static double reduce_rows_s(const struct mp_cost_table *t, double bytes)
{
    int n = t->n_reduce;
    if (bytes <= t->reduce_bytes[0])
        return t->reduce_s[0];
    if (bytes >= t->reduce_bytes[n - 1])
        return t->reduce_s[n - 1] * bytes / t->reduce_bytes[n - 1];
    int i = 1;
    while (t->reduce_bytes[i] < bytes)
        i++;
    double x0 = log(t->reduce_bytes[i - 1]), x1 = log(t->reduce_bytes[i]);
    double y0 = log(t->reduce_s[i - 1]), y1 = log(t->reduce_s[i]);
    return exp(y0 + (y1 - y0) * (log(bytes) - x0) / (x1 - x0));
}

/* The table whose measured reduction rows price replicas at `level`, or NULL (the link model):
 * the rows were measured between 2 ranks of one socket. */
static const struct mp_cost_table *reduce_rows(const struct mp_cost_model *cm, int level)
{
    const struct mp_cost_table *t = cm->table;
    return t && t->n_reduce >= 2 && level <= MP_LINK_SOCKET ? t : NULL;
}

double mp_cost_reduce_s(const struct mp_cost_model *cm, int level, double bytes, int D)
{
    if (D <= 1)
        return 0.0;
    const struct mp_cost_table *t = reduce_rows(cm, level);
    if (t)
        return reduce_rows_s(t, bytes * 2.0 * (D - 1) / D);
    return mp_cost_allreduce_s(&cm->link[level], bytes, D);
}

double mp_cost_gather_s(const struct mp_cost_model *cm, int level, double bytes, int D)
{
    return 0.5 * mp_cost_reduce_s(cm, level, bytes, D);
}

void mp_cost_reduce_linear(const struct mp_cost_model *cm, int level, int D, double *alpha,
                           double *beta)
{
    const struct mp_cost_table *t = reduce_rows(cm, level);
    *alpha = *beta = 0;
    if (D <= 1)
        return;
    if (t) {
        *alpha = t->reduce_s[0];
        *beta = 2.0 * (D - 1) / D * t->reduce_s[t->n_reduce - 1] / t->reduce_bytes[t->n_reduce - 1];
        return;
    }
    *alpha = 2.0 * (D - 1) * cm->link[level].latency_s;
    *beta = 2.0 * (D - 1) / D / cm->link[level].bandwidth_Bps;
}

double mp_cost_optim_s(const struct mp_cost_model *cm, double param_bytes)
{
    if (cm->table && cm->table->optim_s_per_param > 0)
        return param_bytes / sizeof(float) * cm->table->optim_s_per_param;
    return (3.0 + 2.0 * cm->optim_slots) * param_bytes / cm->mem_Bps;
}

void mp_cost_fill_stages(struct mp_plan *p, int optim_slots)
{
    for (int v = 0; v < p->n_stages; v++) {
        struct mp_plan_stage *st = &p->stages[v];
        int r = mp_vstage_rank(mp_sched_place(p->schedule), v, p->P);
        int Mr = p->M / (p->D > 0 ? p->D : 1);
        st->compute_s = 0, st->param_bytes = 0;
        st->held_bytes = p->layers[st->first_layer - 1].act_bytes_out;
        for (int i = st->first_layer; i <= st->last_layer; i++) {
            st->compute_s += p->layers[i].compute_s;
            st->param_bytes += p->layers[i].param_bytes;
            st->held_bytes += p->layers[i].act_bytes_out + p->layers[i].saved_bytes;
        }
        st->act_bytes = p->layers[st->last_layer].act_bytes_out;
        int held = mp_cost_held_mb(p->schedule, p->P, p->V, Mr > 0 ? Mr : 1, r);
        st->held_mb = p->V > 1 ? (held + p->V - 1) / p->V : held;
        st->peak_mem_bytes = (size_t)(2 + optim_slots) * st->param_bytes +
                             (size_t)st->held_mb * st->held_bytes;
    }
}

static int predict_arrays(const struct mp_plan *p, double **buf)
{
    size_t S = (size_t)p->n_stages;
    *buf = calloc(8 * S, sizeof(double));
    if (!*buf)
        return -1;
    double *f = *buf, *b = f + S, *w = b + S, *act = w + S, *held = act + S;
    double *first = held + S; /* [pass * S + v]: the packing v's first pass of a step pays */
    /* A rank with several micro-batches of each chunk keeps its weights packed across them
     * (mp_mem_reuse_worth) unless the cap leaves no room for the pool: each pass pays its packing
     * once a step, on the step's first micro-batch of the stage, where the executor pays it. (Spread
     * evenly over the Mr instead, zbv on 2 stages of mlp.mp at M 2 was priced 37.6 ms a step where
     * its first micro-batches, which fill the pipeline, make it 38.2; measured 40-42.) */
    int Mr = p->M / (p->D > 0 ? p->D : 1);
    for (size_t v = 0; v < S; v++) {
        const struct mp_plan_stage *st = &p->stages[v];
        double kept = mp_mem_reuse_worth(Mr) && !st->pool_dropped ? 1.0 : 0.0;
        double slow = st->slowdown > 1 ? st->slowdown : 1.0;  /* shared or slower core */
        double *pass[3] = {&f[v], &b[v], &w[v]};
        for (int i = st->first_layer; i <= st->last_layer; i++) {
            const struct mp_plan_layer *l = &p->layers[i];
            const double s[3] = {l->fwd_s, l->bwd_input_s, l->bwd_weight_s};
            for (int k = 0; k < 3; k++) {
                *pass[k] += slow * (s[k] - kept * l->pack_s[k]);
                first[(size_t)k * S + v] += slow * kept * l->pack_s[k];
            }
        }
        if (st->recompute) /* the forward runs again just before B (DESIGN.md §10), packed */
            b[v] += f[v];
        act[v] = (double)st->act_bytes;
        held[v] = (double)st->held_bytes;
    }
    return 0;
}

int mp_cost_predict(struct mp_plan *p, struct mp_sim_result *res, struct mp_trace *trace,
                    struct mp_err *err)
{
    int D = p->D > 0 ? p->D : 1, Mr = p->M / D;
    if (Mr < 1 || p->n_stages != p->P * p->V)
        return MP_FAIL(err, INPUT, "plan: M %d, D %d, P %d, V %d and %d stages do not fit", p->M,
                       D, p->P, p->V, p->n_stages);
    double *buf;
    if (predict_arrays(p, &buf))
        return MP_FAIL(err, NOMEM, "out of memory");
    size_t S = (size_t)p->n_stages;
    /* Ranks of one host copy their messages out of shared memory at the receive (mp_sim.h).
     * Without placed ranks the plan is this host's. */
    unsigned char *copy = calloc((size_t)p->P * (size_t)p->P, 1);
    if (!copy) {
        free(buf);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int a = 0; a < p->P; a++)
        for (int b = 0; b < p->P; b++)
            copy[a * p->P + b] = a != b && mp_plan_same_host(p, a, b);
    struct mp_sim_costs c = {.f_s = buf, .b_s = buf + S, .w_s = buf + 2 * S,
                             .act_bytes = buf + 3 * S, .held_bytes = buf + 4 * S,
                             .f_first_s = buf + 5 * S, .b_first_s = buf + 6 * S,
                             .w_first_s = buf + 7 * S,
                             .step_s = p->optim_step_s,
                             .latency_s = default_links[MP_LINK_L3].latency_s,
                             .bandwidth_Bps = default_links[MP_LINK_L3].bandwidth_Bps,
                             .link_latency_s = p->link_latency_s,
                             .link_bandwidth_Bps = p->link_bandwidth_Bps,
                             .link_recv_copy = copy};
    struct mp_sched s;
    int rc = mp_sched_make(&s, p->schedule, p->P, p->V, Mr, err);
    if (rc == 0) {
        rc = mp_sim_run(&s, &c, res, trace, err);
        mp_sched_free(&s);
    }
    free(buf), free(copy);
    if (rc == 0) {
        p->step_s = res->step_s + p->allreduce_s;
        p->bubble = p->step_s > 0 ? 1.0 - (1.0 - res->bubble) * res->step_s / p->step_s : 0;
        p->samples_per_s = p->step_s > 0 ? (double)p->batch / p->step_s : 0;
    }
    return rc;
}
