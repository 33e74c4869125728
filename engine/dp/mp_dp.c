/* Gradient aggregation across data-parallel replicas (mp_dp.h). The ordered reduction is a
 * reduce-scatter whose chunk owners add the replicas' chunks in replica order, then an allgather:
 * every element is (c_0·G_0 + c_1·G_1) + c_2·G_2 ..., exactly what the emulated run computes. */
#include "mp_dp.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_mem.h"

int mp_dp_init(struct mp_dp *dp, int D, int emulated, int replica, struct mp_xport *stage_x,
               enum mp_dp_reduce reduce, enum mp_dp_aggregate agg, size_t n_param,
               struct mp_err *err)
{
    memset(dp, 0, sizeof *dp);
    if (D < 1 || D > MP_DP_MAX)
        return MP_FAIL(err, USAGE, "--dp %d: between 1 and %d replicas", D, MP_DP_MAX);
    dp->D = D;
    dp->emulated = emulated;
    dp->replica = replica;
    dp->stage_x = stage_x;
    dp->reduce = reduce;
    dp->agg = agg;
    dp->n = n_param;
    for (int r = 0; r < D; r++) {
        dp->weight[r] = 1;
        dp->coef[r] = 1;
        dp->score[r] = 1;
    }
    if (D == 1)
        return 0;
    dp->counts = calloc((size_t)D, sizeof(int));
    dp->displs = calloc((size_t)D, sizeof(int));
    size_t per = (n_param + (size_t)D - 1) / (size_t)D;
    /* Emulation keeps a running sum of n floats; the ordered reduction receives D chunks of up to
     * `per` floats. */
    size_t acc_len = per * (size_t)D > n_param ? per * (size_t)D : n_param;
    dp->acc = mp_mem_alloc(acc_len * sizeof(float));
    dp->chunk = mp_mem_alloc(per * sizeof(float));
    if (!dp->counts || !dp->displs || !dp->acc || !dp->chunk)
        return MP_FAIL(err, NOMEM, "out of memory for data-parallel buffers");
    for (int r = 0; r < D; r++) {
        size_t lo = per * (size_t)r, hi = lo + per;
        lo = lo > n_param ? n_param : lo;
        hi = hi > n_param ? n_param : hi;
        dp->displs[r] = (int)lo;
        dp->counts[r] = (int)(hi - lo);
    }
    return 0;
}

void mp_dp_free(struct mp_dp *dp)
{
    free(dp->counts);
    free(dp->displs);
    free(dp->acc);
    free(dp->chunk);
    memset(dp, 0, sizeof *dp);
}

int mp_dp_read_weights(struct mp_dp *dp, const char *path, struct mp_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot read: %s", path, strerror(errno));
    char line[4096];
    int n = 0, lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        for (char *p = line; !rc;) {
            while (isspace((unsigned char)*p))
                p++;
            if (!*p)
                break;
            char *end;
            double w = strtod(p, &end);
            if (end == p || !(w >= 0) || w > 1e30)
                rc = MP_FAIL(err, INPUT, "%s:%d: '%.20s' is not a non-negative weight", path,
                             lineno, p);
            else if (n >= dp->D)
                rc = MP_FAIL(err, INPUT, "%s:%d: more than the %d weights of --dp %d", path,
                             lineno, dp->D, dp->D);
            else
                dp->weight[n++] = w;
            p = end;
        }
    }
    fclose(f);
    if (!rc && n != dp->D)
        rc = MP_FAIL(err, INPUT, "%s:%d: %d weights for %d replicas", path, lineno, n, dp->D);
    return rc;
}

void mp_dp_set_coefficients(struct mp_dp *dp, const size_t *n_samples, size_t batch)
{
    double w[MP_DP_MAX], total = 0;
    for (int r = 0; r < dp->D; r++) {
        w[r] = dp->agg == MP_AGG_SIZE ? (double)n_samples[r] : dp->weight[r];
        total += w[r];
    }
    for (int r = 0; r < dp->D; r++) {
        /* G_r already carries n_r / B (the loss is a mean over the global batch), so the weighted
         * mean Σ (w_r / W)·g_r is Σ c_r·G_r with c_r = w_r·B / (W·n_r): one rounding, and exactly
         * 1 when weights are proportional to shard sizes. */
        double denom = total * (double)n_samples[r];
        dp->coef[r] = denom > 0 ? (float)(w[r] * (double)batch / denom) : 0.0f;
    }
}

void mp_dp_accumulate(float *acc, const float *g, float c, size_t n, int first)
{
    if (first && c == 1.0f)
        memcpy(acc, g, n * sizeof(float));
    else if (first)
        for (size_t i = 0; i < n; i++)
            acc[i] = c * g[i];
    else if (c == 1.0f)
        for (size_t i = 0; i < n; i++)
            acc[i] += g[i];
    else
        for (size_t i = 0; i < n; i++)
            acc[i] += c * g[i];
}

int mp_dp_reduce_grads(struct mp_dp *dp, float *grad, struct mp_err *err)
{
    if (dp->D == 1 || dp->emulated)
        return 0;
    if (dp->reduce == MP_DP_FAST) {
        float c = dp->coef[dp->replica];
        if (c != 1.0f)
            for (size_t i = 0; i < dp->n; i++)
                grad[i] *= c;
        return mp_xport_allreduce_sum_f(dp->stage_x, grad, dp->n, "the data-parallel allreduce",
                                        err);
    }
    /* Every replica sends chunk q of its sum to replica q; replica q receives D copies of it. */
    int me = dp->replica, D = dp->D;
    int rc[MP_DP_MAX] = {0}, rd[MP_DP_MAX] = {0};
    for (int r = 0; r < D; r++) {
        rc[r] = dp->counts[me];
        rd[r] = r * dp->counts[me];
    }
    if (mp_xport_alltoallv_f(dp->stage_x, grad, dp->counts, dp->displs, dp->acc, rc, rd,
                             "the data-parallel reduce-scatter", err))
        return -1;
    size_t len = (size_t)dp->counts[me];
    for (int r = 0; r < D; r++)
        mp_dp_accumulate(dp->chunk, dp->acc + (size_t)rd[r], dp->coef[r], len, r == 0);
    return mp_xport_allgatherv_f(dp->stage_x, dp->chunk, (int)len, grad, dp->counts, dp->displs,
                                 "the data-parallel allgather", err);
}

/* Σ clamp(v_r + t, lo, hi): continuous and nondecreasing in t. */
static double shifted_sum(const double *v, int D, double t, double lo, double hi)
{
    double s = 0;
    for (int r = 0; r < D; r++)
        s += fmin(hi, fmax(lo, v[r] + t));
    return s;
}

void mp_dp_bound_weights(double *w, int D, double lo, double hi)
{
    double sum = 0, vmin = INFINITY, vmax = -INFINITY;
    int equal = 1;
    for (int r = 0; r < D; r++) {
        sum += isfinite(w[r]) && w[r] > 0 ? w[r] : 0;
        equal &= w[r] == w[0];
    }
    if (equal || !(sum > 0) || !isfinite(sum)) {
        for (int r = 0; r < D; r++)
            w[r] = 1; /* no information (or equal weights): exactly the mean */
        return;
    }
    for (int r = 0; r < D; r++) {
        w[r] = isfinite(w[r]) && w[r] > 0 ? w[r] * (double)D / sum : 0;
        vmin = fmin(vmin, w[r]);
        vmax = fmax(vmax, w[r]);
    }
    if (vmin >= lo && vmax <= hi)
        return;
    /* The Euclidean projection onto {lo <= w_r <= hi, Σ w = D} is clamp(w + t) for the one t that
     * makes the sum D: bisection, a fixed number of steps, so every rank gets the same bits. */
    double a = lo - vmax, b = hi - vmin;
    for (int it = 0; it < 200; it++) {
        double t = 0.5 * (a + b);
        if (shifted_sum(w, D, t, lo, hi) < (double)D)
            a = t;
        else
            b = t;
    }
    for (int r = 0; r < D; r++)
        w[r] = fmin(hi, fmax(lo, w[r] + 0.5 * (a + b)));
}

void mp_dp_perf_update(struct mp_dp *dp, const double *loss_sum, const size_t *n_samples)
{
    double l[MP_DP_MAX], mean = 0, w[MP_DP_MAX];
    for (int r = 0; r < dp->D; r++) {
        l[r] = n_samples[r] ? loss_sum[r] / (double)n_samples[r] : 0;
        mean += l[r];
    }
    mean /= dp->D;
    if (!(mean > 0) || !isfinite(mean))
        return; /* nothing to compare: keep the history */
    for (int r = 0; r < dp->D; r++) {
        dp->score[r] = MP_DP_PERF_BETA * dp->score[r] + (1 - MP_DP_PERF_BETA) * (l[r] / mean);
        w[r] = 1 / dp->score[r];
    }
    dp->perf_steps++;
    mp_dp_bound_weights(w, dp->D, MP_DP_PERF_LO, MP_DP_PERF_HI);
    for (int r = 0; r < dp->D; r++)
        dp->weight[r] = w[r];
}

/* Index of the largest (most = 1) or smallest remainder among eligible replicas, lowest on ties. */
static int pick(const double *rem, const int *n_mb, int D, int most)
{
    int best = -1;
    for (int r = 0; r < D; r++) {
        if (!most && n_mb[r] <= 1)
            continue;
        if (best < 0 || (most ? rem[r] > rem[best] : rem[r] < rem[best]))
            best = r;
    }
    return best;
}

void mp_dp_set_shards(struct mp_dp *dp, const double *rate, int M)
{
    int D = dp->D, sum = 0;
    double total = 0, rem[MP_DP_MAX];
    for (int r = 0; r < D; r++)
        total += isfinite(rate[r]) && rate[r] > 0 ? rate[r] : 0;
    for (int r = 0; r < D; r++) {
        double q = total > 0 && isfinite(rate[r]) && rate[r] > 0 ? rate[r] : 0;
        double t = total > 0 ? (double)M * q / total : (double)M / D;
        int m = (int)floor(t);
        dp->n_mb[r] = m < 1 ? 1 : m;
        rem[r] = t - dp->n_mb[r];
        sum += dp->n_mb[r];
    }
    for (; sum < M; sum++) {
        int r = pick(rem, dp->n_mb, D, 1);
        dp->n_mb[r]++, rem[r] -= 1;
    }
    for (; sum > M; sum--) {
        int r = pick(rem, dp->n_mb, D, 0);
        dp->n_mb[r]--, rem[r] += 1;
    }
    for (int r = 0, first = 0; r < D; first += dp->n_mb[r++])
        dp->first_mb[r] = first;
}

int mp_dp_speed_update(struct mp_dp *dp, const double *seconds, uint64_t step, int M)
{
    if (step <= 1)
        return 0; /* the first step allocates slabs and warms caches: not a speed */
    for (int r = 0; r < dp->D; r++) {
        dp->win_time[r] += seconds[r];
        dp->win_mb[r] += dp->n_mb[r];
    }
    if (step % MP_DP_REBALANCE_EVERY)
        return 0;
    double rate[MP_DP_MAX] = {0};
    int old[MP_DP_MAX], changed = 0;
    for (int r = 0; r < dp->D; r++) {
        rate[r] = dp->win_time[r] > 0 ? dp->win_mb[r] / dp->win_time[r] : 0;
        old[r] = dp->n_mb[r];
        dp->win_time[r] = dp->win_mb[r] = 0;
    }
    mp_dp_set_shards(dp, rate, M);
    for (int r = 0; r < dp->D; r++)
        changed |= old[r] != dp->n_mb[r];
    return changed;
}

void mp_dp_save_state(const struct mp_dp *dp, int *D, double *score, int *n_mb)
{
    *D = dp->D;
    memcpy(score, dp->score, (size_t)dp->D * sizeof *score);
    memcpy(n_mb, dp->n_mb, (size_t)dp->D * sizeof *n_mb);
}

void mp_dp_load_state(struct mp_dp *dp, int D, const double *score, const int *n_mb, int M)
{
    int sum = 0, ok = D == dp->D;
    for (int r = 0; ok && r < D; r++) {
        ok = n_mb[r] >= 1 && isfinite(score[r]) && score[r] > 0;
        sum += n_mb[r];
    }
    if (!ok || sum != M)
        return;
    double w[MP_DP_MAX], rate[MP_DP_MAX];
    for (int r = 0; r < D; r++) {
        dp->score[r] = score[r];
        w[r] = 1 / score[r];
        rate[r] = n_mb[r]; /* M * n_r / M: exactly n_r again */
    }
    mp_dp_set_shards(dp, rate, M);
    if (dp->agg != MP_AGG_PERF)
        return;
    mp_dp_bound_weights(w, D, MP_DP_PERF_LO, MP_DP_PERF_HI);
    memcpy(dp->weight, w, (size_t)D * sizeof *w);
}
