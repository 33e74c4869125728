/* How the training set is dealt out to federated clients (mp_fed.h): iid (a seeded shuffle cut
 * into near-equal parts), contiguous (the data's own order cut into near-equal stretches: for
 * text, each client holds its own run of documents, as a writer holds their own), dirichlet:A
 * (per class, Dirichlet(A) proportions over the clients, as Hsu et al. 2019) and shards:K
 * (sorted by label, cut into C * K shards, K per client, as McMahan et al. 2017). Every split is a
 * pure function of (labels, seed): server and clients compute the same partition without
 * exchanging it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"
#include "mp_rng.h"

int mp_fed_split_parse(const char *text, struct mp_fed_split_cfg *cfg, struct mp_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    char *end = NULL;
    if (!strcmp(text, "iid") || !strcmp(text, "contiguous")) {
        cfg->kind = text[0] == 'i' ? MP_FED_SPLIT_IID : MP_FED_SPLIT_CONTIGUOUS;
        return 0;
    }
    if (!strncmp(text, "dirichlet:", 10)) {
        cfg->kind = MP_FED_SPLIT_DIRICHLET;
        cfg->alpha = strtod(text + 10, &end);
        if (end != text + 10 && !*end && cfg->alpha > 0 && cfg->alpha <= 1e6)
            return 0;
    } else if (!strncmp(text, "shards:", 7)) {
        cfg->kind = MP_FED_SPLIT_SHARDS;
        long k = strtol(text + 7, &end, 10);
        cfg->shards = (int)k;
        if (end != text + 7 && !*end && k >= 1 && k <= 1000000)
            return 0;
    }
    return MP_FAIL(err, USAGE, "--split %s: expected iid, contiguous, dirichlet:A (A > 0) or "
                   "shards:K (K >= 1)", text);
}

/* Marsaglia and Tsang (2000); shapes below 1 use Gamma(a + 1) * U^(1/a). */
double mp_fed_gamma(struct mp_rng *r, double a)
{
    if (a < 1.0) {
        double u = ((double)(mp_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        return mp_fed_gamma(r, a + 1.0) * pow(u, 1.0 / a);
    }
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double z = mp_rng_normal(r), v = 1.0 + c * z;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = ((double)(mp_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        if (log(u) < 0.5 * z * z + d - d * v + d * log(v))
            return d * v;
    }
}

void mp_fed_dirichlet(struct mp_rng *r, double alpha, int k, double *p)
{
    double sum = 0;
    for (int i = 0; i < k; i++)
        sum += (p[i] = mp_fed_gamma(r, alpha));
    for (int i = 0; i < k; i++)
        p[i] = sum > 0 ? p[i] / sum : 1.0 / k;
}

static void shuffle(uint32_t *a, size_t n, struct mp_rng *r)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)mp_rng_below(r, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Fills s->idx/off from owner[i] (client of sample i), each client's list in index order: a
 * counting sort, with off[] used as the fill cursor and shifted back at the end. */
static void collect(struct mp_fed_split *s, const int *owner, size_t n)
{
    memset(s->off, 0, sizeof(size_t) * (size_t)(s->C + 1));
    for (size_t i = 0; i < n; i++)
        s->off[owner[i] + 1]++;
    for (int c = 0; c < s->C; c++)
        s->off[c + 1] += s->off[c];
    for (size_t i = 0; i < n; i++)
        s->idx[s->off[owner[i]]++] = (uint32_t)i;
    for (int c = s->C; c > 0; c--)
        s->off[c] = s->off[c - 1];
    s->off[0] = 0;
}

static void split_iid(int *owner, size_t n, int C, struct mp_rng *r, uint32_t *tmp)
{
    for (size_t i = 0; i < n; i++)
        tmp[i] = (uint32_t)i;
    shuffle(tmp, n, r);
    for (size_t k = 0; k < n; k++)
        owner[tmp[k]] = (int)(k * (size_t)C / n);
}

static void split_contiguous(int *owner, size_t n, int C)
{
    for (size_t i = 0; i < n; i++)
        owner[i] = (int)(i * (size_t)C / n);
}

/* One Dirichlet attempt: class c's samples (shuffled) are cut at the cumulative proportions.
 * Returns the smallest client size. */
static size_t dirichlet_once(int *owner, const int32_t *y, size_t n, size_t K, int C,
                             double alpha, struct mp_rng *r, uint32_t *tmp, double *p)
{
    size_t *size = (size_t *)(p + C), min = n; /* p has room for C doubles then C sizes */
    memset(size, 0, sizeof(size_t) * (size_t)C);
    for (size_t c = 0; c < K; c++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if ((size_t)y[i] == c)
                tmp[m++] = (uint32_t)i;
        shuffle(tmp, m, r);
        mp_fed_dirichlet(r, alpha, C, p);
        double cum = 0;
        size_t start = 0;
        for (int k = 0; k < C; k++) {
            cum += p[k];
            size_t stop = k == C - 1 ? m : (size_t)llround(cum * (double)m);
            stop = stop < start ? start : stop > m ? m : stop;
            for (size_t j = start; j < stop; j++)
                owner[tmp[j]] = k;
            size[k] += stop - start;
            start = stop;
        }
    }
    for (int k = 0; k < C; k++)
        min = size[k] < min ? size[k] : min;
    return min;
}

/* Redraws (up to 1000 times, deterministically) until every client has at least
 * min(10, n / (2C)) samples, as common practice: a client with no data cannot train. */
static int split_dirichlet(int *owner, const int32_t *y, size_t n, size_t K, int C, double alpha,
                           struct mp_rng *r, uint32_t *tmp, struct mp_err *err)
{
    double *p = malloc((sizeof(double) + sizeof(size_t)) * (size_t)C);
    if (!p)
        return MP_FAIL(err, NOMEM, "out of memory");
    size_t want = n / (2 * (size_t)C) < 10 ? n / (2 * (size_t)C) : 10;
    want = want ? want : 1;
    for (int attempt = 0; attempt < 1000; attempt++)
        if (dirichlet_once(owner, y, n, K, C, alpha, r, tmp, p) >= want) {
            free(p);
            return 0;
        }
    free(p);
    return MP_FAIL(err, USAGE, "--split dirichlet:%g: 1000 draws all left a client with fewer "
                   "than %zu samples; use a larger alpha or fewer clients", alpha, want);
}

/* Sorted by (label, index), cut into C*K near-equal shards, shards shuffled and dealt K each. */
static int split_shards(int *owner, const int32_t *y, size_t n, int C, int K, struct mp_rng *r,
                        struct mp_err *err)
{
    size_t S = (size_t)C * (size_t)K;
    if (S > n)
        return MP_FAIL(err, USAGE, "--split shards:%d: %zu shards for %zu samples", K, S, n);
    uint64_t *key = malloc(sizeof(uint64_t) * n);
    uint32_t *deal = malloc(sizeof(uint32_t) * S);
    if (!key || !deal) {
        free(key), free(deal);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        key[i] = (uint64_t)(uint32_t)y[i] << 32 | (uint64_t)i;
    qsort(key, n, sizeof *key, cmp_u64);
    for (size_t k = 0; k < S; k++)
        deal[k] = (uint32_t)k;
    shuffle(deal, S, r);
    /* deal[j] is the j-th shard dealt: client j / K gets it. Shard k is key[k*n/S, (k+1)*n/S). */
    for (size_t j = 0; j < S; j++) {
        size_t k = deal[j], lo = k * n / S, hi = (k + 1) * n / S;
        for (size_t a = lo; a < hi; a++)
            owner[key[a] & 0xffffffffu] = (int)(j / (size_t)K);
    }
    free(key);
    free(deal);
    return 0;
}

int mp_fed_split_make(struct mp_fed_split *s, const struct mp_fed_split_cfg *cfg,
                      const int32_t *labels, size_t n, size_t n_classes, int C, uint64_t seed,
                      struct mp_err *err)
{
    memset(s, 0, sizeof *s);
    if (C < 1 || (size_t)C > n)
        return MP_FAIL(err, USAGE, "cannot split %zu training samples among %d clients", n, C);
    if (!labels && cfg->kind == MP_FED_SPLIT_DIRICHLET)
        return MP_FAIL(err, USAGE, "--split dirichlet:%g deals samples out by class, and text has "
                       "no classes: use --split iid or --split contiguous", cfg->alpha);
    if (!labels && cfg->kind == MP_FED_SPLIT_SHARDS)
        return MP_FAIL(err, USAGE, "--split shards:%d deals samples out by class, and text has no "
                       "classes: use --split iid or --split contiguous", cfg->shards);
    s->C = C;
    s->idx = malloc(sizeof(uint32_t) * n);
    s->off = malloc(sizeof(size_t) * (size_t)(C + 1));
    int *owner = malloc(sizeof(int) * n);
    uint32_t *tmp = malloc(sizeof(uint32_t) * n);
    int rc = 0;
    if (!s->idx || !s->off || !owner || !tmp)
        rc = MP_FAIL(err, NOMEM, "out of memory splitting %zu samples", n);
    struct mp_rng r;
    mp_rng_seed(&r, mp_hash4(seed, (uint64_t)cfg->kind, (uint64_t)C, 0x53504c54u));
    if (!rc && cfg->kind == MP_FED_SPLIT_IID)
        split_iid(owner, n, C, &r, tmp);
    else if (!rc && cfg->kind == MP_FED_SPLIT_CONTIGUOUS)
        split_contiguous(owner, n, C);
    else if (!rc && cfg->kind == MP_FED_SPLIT_DIRICHLET)
        rc = split_dirichlet(owner, labels, n, n_classes, C, cfg->alpha, &r, tmp, err);
    else if (!rc)
        rc = split_shards(owner, labels, n, C, cfg->shards, &r, err);
    if (!rc)
        collect(s, owner, n);
    free(owner);
    free(tmp);
    if (rc)
        mp_fed_split_free(s);
    return rc;
}

void mp_fed_split_free(struct mp_fed_split *s)
{
    free(s->idx);
    free(s->off);
    memset(s, 0, sizeof *s);
}
