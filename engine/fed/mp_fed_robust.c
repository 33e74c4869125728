/* Robust aggregation rules of `mpipe fed --aggregate` (mp_fed.h): coordinate-wise median and
 * beta-trimmed mean (Yin et al. 2018), Krum and Multi-Krum (Blanchard et al. 2017). Pure
 * functions over the clients' models as flat float vectors: no messages, no allocation (the
 * caller passes scratch space), and every sum in a fixed order, so the result is a function of
 * the inputs alone. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fed.h"

/* Sorts a[0..n) ascending; n is the number of clients (small), so insertion sort. NaN never
 * reaches here: the server rejects non-finite updates first. */
static void sort_small(float *a, int n)
{
    for (int i = 1; i < n; i++) {
        float t = a[i];
        int j = i;
        for (; j > 0 && a[j - 1] > t; j--)
            a[j] = a[j - 1];
        a[j] = t;
    }
}

static void column(const float *const *v, int n, size_t i, float *a)
{
    for (int k = 0; k < n; k++)
        a[k] = v[k][i];
    sort_small(a, n);
}

void mp_fed_median(const float *const *v, int n, size_t len, double *out, float *scratch)
{
    for (size_t i = 0; i < len; i++) {
        column(v, n, i, scratch);
        out[i] = n % 2 ? (double)scratch[n / 2]
                       : 0.5 * ((double)scratch[n / 2 - 1] + (double)scratch[n / 2]);
    }
}

void mp_fed_trimmed_mean(const float *const *v, int n, size_t len, int trim, double *out,
                         float *scratch)
{
    int kept = n - 2 * trim;
    for (size_t i = 0; i < len; i++) {
        column(v, n, i, scratch);
        double sum = 0;
        for (int k = trim; k < n - trim; k++)
            sum += (double)scratch[k];
        out[i] = sum / kept;
    }
}

static double sq_dist(const float *a, const float *b, size_t len)
{
    double s = 0;
    for (size_t i = 0; i < len; i++) {
        double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return s;
}

/* The sum of the `keep` smallest of row[0..n) except row[self]; partial selection in place on a
 * copy the caller provides (tmp: n doubles). */
static double nearest_sum(const double *row, int n, int self, int keep, double *tmp)
{
    int m = 0;
    for (int j = 0; j < n; j++)
        if (j != self)
            tmp[m++] = row[j];
    for (int i = 1; i < m; i++) {
        double t = tmp[i];
        int j = i;
        for (; j > 0 && tmp[j - 1] > t; j--)
            tmp[j] = tmp[j - 1];
        tmp[j] = t;
    }
    double s = 0;
    for (int j = 0; j < keep && j < m; j++)
        s += tmp[j];
    return s;
}

void mp_fed_krum(const float *const *v, int n, size_t len, int f, int m, double *dist,
                 double *score, int *chosen)
{
    for (int i = 0; i < n; i++) {
        dist[(size_t)i * n + i] = 0;
        for (int j = i + 1; j < n; j++)
            dist[(size_t)i * n + j] = dist[(size_t)j * n + i] = sq_dist(v[i], v[j], len);
    }
    int keep = n - f - 2;
    double tmp[4096];
    for (int i = 0; i < n; i++)
        score[i] = nearest_sum(dist + (size_t)i * n, n, i, keep, tmp);
    /* The m lowest scores, ties to the lower index, then listed in index order. */
    int taken = 0;
    while (taken < m) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            int used = 0;
            for (int t = 0; t < taken && !used; t++)
                used = chosen[t] == i;
            if (!used && (best < 0 || score[i] < score[best]))
                best = i;
        }
        chosen[taken++] = best;
    }
    for (int i = 1; i < m; i++)
        for (int j = i; j > 0 && chosen[j - 1] > chosen[j]; j--) {
            int t = chosen[j];
            chosen[j] = chosen[j - 1];
            chosen[j - 1] = t;
        }
}

void mp_fed_mean_of(const float *const *v, const int *chosen, int m, size_t len, double *out)
{
    memset(out, 0, len * sizeof *out);
    for (int t = 0; t < m; t++) {
        const float *a = v[chosen[t]];
        for (size_t i = 0; i < len; i++)
            out[i] += (double)a[i];
    }
    for (size_t i = 0; i < len; i++)
        out[i] /= m;
}
