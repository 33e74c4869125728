/* Who takes part in a federated round and with what weight (mp_fed.h), which clients attack, and
 * the syntax of --aggregate and --attack. Pure functions of their arguments: sampling depends only
 * on (seed, round) and the attackers on the seed, so a resumed run samples what the uninterrupted
 * one would have; the `perf` history is a few numbers the checkpoint stores. No messages, no
 * files. */
#include <ctype.h>
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

void mp_fed_attackers(uint64_t seed, int C, int K, int *is_attacker)
{
    int order[4096];
    for (int k = 0; k <= C; k++)
        is_attacker[k] = 0;
    for (int i = 0; i < C; i++)
        order[i] = i + 1;
    struct mp_rng r;
    mp_rng_seed(&r, mp_hash4(seed, 0x41545441u, 0x434bu, 0));
    for (int i = 0; i < K && i < C; i++) {
        int j = i + (int)mp_rng_below(&r, (uint64_t)(C - i));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
        is_attacker[order[i]] = 1;
    }
}

static const char *const agg_names[] = {"size", "perf", "median", "trimmed", "krum", "multikrum"};
static const char *const opt_names[] = {"avg", "adam", "yogi", "adagrad"};
_Static_assert(sizeof agg_names / sizeof agg_names[0] == MP_FED_AGG_COUNT, "one name per rule");
_Static_assert(sizeof opt_names / sizeof opt_names[0] == MP_FED_OPT_COUNT, "one name per kind");

const char *mp_fed_agg_name(enum mp_fed_agg agg) { return agg_names[agg]; }
const char *mp_fed_server_opt_name(enum mp_fed_server_opt opt) { return opt_names[opt]; }

/* A number that is the whole of text; 0 on success. */
static int whole_double(const char *text, double *out)
{
    char *end = NULL;
    if (!*text || isspace((unsigned char)*text))
        return -1;
    *out = strtod(text, &end);
    return *end || !isfinite(*out) ? -1 : 0;
}

static int whole_int(const char *text, long *out)
{
    char *end = NULL;
    if (!*text || isspace((unsigned char)*text))
        return -1;
    *out = strtol(text, &end, 10);
    return *end ? -1 : 0;
}

int mp_fed_agg_parse(const char *text, struct mp_fed_cfg *cfg, struct mp_err *err)
{
    const char *colon = strchr(text, ':');
    size_t name_len = colon ? (size_t)(colon - text) : strlen(text);
    for (int k = 0; k < MP_FED_AGG_COUNT; k++) {
        if (strlen(agg_names[k]) != name_len || strncmp(text, agg_names[k], name_len))
            continue;
        int takes = k == MP_FED_AGG_TRIMMED || k == MP_FED_AGG_KRUM || k == MP_FED_AGG_MULTIKRUM;
        double b;
        long f;
        if (!takes && !colon) {
            cfg->agg = (enum mp_fed_agg)k;
            return 0;
        }
        if (takes && colon && k == MP_FED_AGG_TRIMMED && !whole_double(colon + 1, &b) &&
            b >= 0 && b < 0.5) {
            cfg->agg = MP_FED_AGG_TRIMMED;
            cfg->trim_beta = b;
            return 0;
        }
        if (takes && colon && k != MP_FED_AGG_TRIMMED && !whole_int(colon + 1, &f) && f >= 0 &&
            f < 2048) {
            cfg->agg = (enum mp_fed_agg)k;
            cfg->krum_f = (int)f;
            return 0;
        }
        break;
    }
    return MP_FAIL(err, USAGE, "--aggregate %s: expected size, perf, median, trimmed:B "
                   "(0 <= B < 0.5), krum:F or multikrum:F (F >= 0 assumed bad clients)", text);
}

int mp_fed_attack_parse(const char *text, struct mp_fed_attack *a, struct mp_err *err)
{
    char buf[64];
    long k;
    double x;
    const char *colon = strchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : 0;
    if (colon && n < sizeof buf) {
        memcpy(buf, text, n);
        buf[n] = 0;
        const char *mode = colon + 1;
        if (!whole_int(buf, &k) && k >= 0 && k < 4096) {
            a->k = (int)k;
            a->scale = 1;
            if (!strcmp(mode, "signflip")) {
                a->kind = MP_FED_ATTACK_SIGNFLIP;
                return 0;
            }
            if (!strcmp(mode, "noise")) {
                a->kind = MP_FED_ATTACK_NOISE;
                return 0;
            }
            if (!strncmp(mode, "scale:", 6) && !whole_double(mode + 6, &x)) {
                a->kind = MP_FED_ATTACK_SCALE;
                a->scale = x;
                return 0;
            }
        }
    }
    return MP_FAIL(err, USAGE, "--attack %s: expected K:signflip, K:scale:X or K:noise (K "
                   "clients, chosen from the seed, send the sign-flipped update, the update "
                   "times X, or Gaussian noise of the update's norm)", text);
}
