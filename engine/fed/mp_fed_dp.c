/* The privacy accountant of `mpipe fed --noise-multiplier` (mp_fed.h): Renyi differential privacy
 * of the sampled Gaussian mechanism, computed as in Mironov, Talwar and Zhang, "Renyi Differential
 * Privacy of the Sampled Gaussian Mechanism" (2019), Section 3.3: for integer orders the binomial
 * expansion of A_alpha, for fractional orders its two-sided series with erfc terms, everything in
 * log space. Orders are those TensorFlow Privacy's RDP accountant uses by default. Pure. */
#include <math.h>
#include <string.h>

#include "mp_fed.h"

static double log_add(double a, double b)
{
    if (a == -INFINITY)
        return b;
    if (b == -INFINITY)
        return a;
    double hi = a > b ? a : b, lo = a > b ? b : a;
    return hi + log1p(exp(lo - hi));
}

/* log(exp(a) - exp(b)) for a >= b; -inf when they are equal. */
static double log_sub(double a, double b)
{
    if (b == -INFINITY)
        return a;
    if (a <= b)
        return -INFINITY;
    return b + log(expm1(a - b));
}

static double log_binom(double n, double k)
{
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1);
}

/* log(erfc(x)), with the asymptotic series where erfc underflows. */
static double log_erfc(double x)
{
    double r = erfc(x);
    if (r > 0)
        return log(r);
    double x2 = x * x;
    return -0.5 * log(3.14159265358979323846) - log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) -
           37.0 / 24.0 / (x2 * x2 * x2) + 353.0 / 64.0 / (x2 * x2 * x2 * x2);
}

/* log A_alpha for integer alpha: sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / 2s^2). */
static double log_a_int(double q, double sigma, int alpha)
{
    double la = -INFINITY;
    for (int k = 0; k <= alpha; k++)
        la = log_add(la, log_binom(alpha, k) + k * log(q) + (alpha - k) * log1p(-q) +
                             (double)(k * k - k) / (2 * sigma * sigma));
    return la;
}

/* log A_alpha for fractional alpha: the integrals below and above z0 as series in the
 * generalised binomial coefficients, summed until the terms fall below exp(-30). */
static double log_a_frac(double q, double sigma, double alpha)
{
    double a0 = -INFINITY, a1 = -INFINITY, coef = 1;
    double z0 = sigma * sigma * log(1 / q - 1) + 0.5, s2 = sigma * sigma;
    for (int i = 0; i < 100000; i++) {
        if (i > 0)
            coef *= (alpha - (i - 1)) / i;
        double lc = log(fabs(coef)), j = alpha - i;
        double t0 = lc + i * log(q) + j * log1p(-q), t1 = lc + j * log(q) + i * log1p(-q);
        double e0 = log(0.5) + log_erfc((i - z0) / (sqrt(2) * sigma));
        double e1 = log(0.5) + log_erfc((z0 - j) / (sqrt(2) * sigma));
        double s0 = t0 + (i * (double)i - i) / (2 * s2) + e0;
        double s1 = t1 + (j * j - j) / (2 * s2) + e1;
        if (coef > 0) {
            a0 = log_add(a0, s0);
            a1 = log_add(a1, s1);
        } else {
            a0 = log_sub(a0, s0);
            a1 = log_sub(a1, s1);
        }
        if (s0 < -30 && s1 < -30)
            break;
    }
    return log_add(a0, a1);
}

double mp_fed_rdp_sgm(double q, double sigma, double alpha)
{
    if (q <= 0)
        return 0;
    if (q >= 1)
        return alpha / (2 * sigma * sigma);
    double la = alpha == floor(alpha) ? log_a_int(q, sigma, (int)alpha)
                                      : log_a_frac(q, sigma, alpha);
    return la / (alpha - 1);
}

void mp_fed_acct_init(struct mp_fed_acct *a)
{
    _Static_assert(99 + 53 + 3 == MP_FED_RDP_ORDERS, "the orders listed below");
    int k = 0;
    for (int x = 1; x < 100; x++)
        a->order[k++] = 1 + x / 10.0;
    for (int o = 11; o < 64; o++)
        a->order[k++] = o;
    a->order[k++] = 128;
    a->order[k++] = 256;
    a->order[k++] = 512;
    memset(a->rdp, 0, sizeof a->rdp);
}

void mp_fed_acct_add(struct mp_fed_acct *a, double q, double sigma, double steps)
{
    for (int k = 0; k < MP_FED_RDP_ORDERS; k++)
        a->rdp[k] += steps * mp_fed_rdp_sgm(q, sigma, a->order[k]);
}

double mp_fed_acct_epsilon(const struct mp_fed_acct *a, double delta, double *order)
{
    double best = INFINITY, at = 0;
    for (int k = 0; k < MP_FED_RDP_ORDERS; k++) {
        double e = a->rdp[k] + log(1 / delta) / (a->order[k] - 1);
        if (e < best) {
            best = e;
            at = a->order[k];
        }
    }
    if (order)
        *order = at;
    return best;
}
