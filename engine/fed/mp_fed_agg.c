/* Who takes part in a federated round and with what weight (mp_fed.h). Pure functions of their
 * arguments: sampling depends only on (seed, round), so a resumed run samples what the
 * uninterrupted one would have; the `perf` history is a few numbers the checkpoint stores. No
 * messages, no files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"
#include "mp_rng.h"

int mp_fed_sample(uint64_t seed, int round, int C, double fraction, int *out)
{
    int m = (int)lround(fraction * C);
    m = m < 1 ? 1 : m > C ? C : m;
    for (int i = 0; i < C; i++)
        out[i] = i + 1;
    struct mp_rng r;
    mp_rng_seed(&r, mp_hash4(seed, (uint64_t)round, 0x53414d50u, 0));
    for (int i = 0; i < m; i++) { /* partial Fisher-Yates: out[0..m) is a uniform m-subset */
        int j = i + (int)mp_rng_below(&r, (uint64_t)(C - i));
        int t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
    for (int i = 1; i < m; i++) /* ascending: aggregation runs in client order */
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return m;
}

int mp_fed_perf_init(struct mp_fed_perf *p, int C, struct mp_err *err)
{
    p->C = C;
    p->ema = calloc((size_t)C + 1, sizeof(double));
    p->seen = calloc((size_t)C + 1, sizeof(int));
    if (!p->ema || !p->seen) {
        mp_fed_perf_free(p);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    return 0;
}

void mp_fed_perf_free(struct mp_fed_perf *p)
{
    free(p->ema);
    free(p->seen);
    p->ema = NULL;
    p->seen = NULL;
}

/* perf: the score is the relative reduction of the client's own training loss over its local
 * epochs (clients report it), smoothed per client by an EMA; a client's factor is its EMA over
 * the mean EMA of this round's participants, clamped to [MIN, MAX], so a client whose updates
 * stop reducing its loss counts less but never vanishes, and none can dominate. The factor
 * multiplies the sample count, so `perf` reduces to `size` when all clients learn alike. */
static void perf_factors(struct mp_fed_perf *perf, const int *ids, const double *scores, int n,
                         double *f)
{
    double mean = 0;
    for (int i = 0; i < n; i++) {
        int c = ids[i];
        double s = isfinite(scores[i]) ? fmin(fmax(scores[i], 0.0), 1.0) : 0.0;
        perf->ema[c] = perf->seen[c] ? MP_FED_PERF_DECAY * perf->ema[c] +
                                           (1 - MP_FED_PERF_DECAY) * s
                                     : s;
        perf->seen[c]++;
        mean += perf->ema[c];
    }
    mean /= n;
    for (int i = 0; i < n; i++) {
        double r = mean > 0 ? perf->ema[ids[i]] / mean : 1.0;
        f[i] = fmin(fmax(r, MP_FED_PERF_MIN), MP_FED_PERF_MAX);
    }
}

void mp_fed_weights(enum mp_fed_agg agg, struct mp_fed_perf *perf, const int *ids,
                    const uint64_t *samples, const double *scores, int n, double *w)
{
    if (n <= 0)
        return;
    for (int i = 0; i < n; i++)
        w[i] = 1.0;
    if (agg == MP_FED_AGG_PERF && perf)
        perf_factors(perf, ids, scores, n, w);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (w[i] *= (double)samples[i]);
    for (int i = 0; i < n; i++)
        w[i] = sum > 0 ? w[i] / sum : 1.0 / n;
}
