/* Stage boundaries for a chain of layers: uniform, params (min-max parameter bytes) and
 * optimal (exact min-max of the predicted stage cost under a memory cap). Pure arithmetic on
 * arrays: no MPI, no hwloc, no model types, so the tests can compare it against brute force.
 * Method: a stage's cost is x(s,j) - x(s,k) + a(s,k) + b(s,j) for the cut positions k < j around
 * it, with x nondecreasing in j. For a threshold T, a sweep with a max-heap decides in
 * O(S n log n) whether every stage can stay under T; bisection on T converges on the optimum. */
#include "mp_partition.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const part_names[] = {"uniform", "params", "optimal"};
_Static_assert(sizeof part_names / sizeof part_names[0] == MP_PART_COUNT, "partition names");

int mp_partition_parse(const char *name, enum mp_part_kind *kind)
{
    for (int i = 0; i < MP_PART_COUNT; i++)
        if (strcmp(name, part_names[i]) == 0) {
            *kind = (enum mp_part_kind)i;
            return 0;
        }
    return -1;
}

const char *mp_partition_name(enum mp_part_kind kind)
{
    return (kind >= 0 && kind < MP_PART_COUNT) ? part_names[kind] : "?";
}

enum objective { OBJ_TIME, OBJ_MEM, OBJ_PARAMS };

/* Relative slack on the memory cap: the cap the user copies from our message must fit, whatever
 * the order in which the sums were rounded. */
#define MEM_SLACK (1.0 + 1e-12)

struct ctx {
    const struct mp_part_problem *pr;
    enum objective obj;
    double cap;              /* memory cap applied during the search, <= 0: none */
    double *C, *Pb, *H;      /* prefix sums over items: [n + 1] */
    int *parent;             /* [S * (n + 1)]: best previous cut of stage s ending at cut j */
    unsigned char *reach, *next; /* reachable cuts of the previous and current stage */
    unsigned char *reach_mem;    /* the allocation behind both (they swap) */
    int *low;                /* [S + 1]: lowest cut the suffix bound allows, per stages left */
    int *hk, *hu;            /* heap of candidate previous cuts: cut, last reachable cut */
    double *ht;              /* and its threshold on x(s,j) + b(s,j) */
    int hn;
};

/* Bytes entering the stage that starts at cut k (the model input for k == 0). */
static double act_at(const struct mp_part_problem *pr, int k)
{
    return k == 0 ? pr->in_bytes : pr->act_out[k - 1];
}

static double comm(const struct mp_part_problem *pr, int boundary, int cut)
{
    if (!pr->lat_s || !pr->Bps)
        return 0.0;
    return 2.0 * (pr->lat_s[boundary] + act_at(pr, cut) / pr->Bps[boundary]);
}

static double held_mb(const struct mp_part_problem *pr, int s)
{
    return pr->held_mb ? pr->held_mb[s] : 0.0;
}

static double slow(const struct mp_part_problem *pr, int s)
{
    return pr->slow ? pr->slow[s] : 1.0;
}

static double fx(const struct ctx *c, int s, int j)
{
    const struct mp_part_problem *pr = c->pr;
    switch (c->obj) {
    case OBJ_TIME:
        return pr->K * slow(pr, s) * c->C[j] + (pr->ar_beta ? pr->ar_beta[s] * c->Pb[j] : 0.0);
    case OBJ_MEM:
        return pr->static_factor * c->Pb[j] + held_mb(pr, s) * c->H[j];
    default:
        return c->Pb[j];
    }
}

static double fa(const struct ctx *c, int s, int k)
{
    const struct mp_part_problem *pr = c->pr;
    if (c->obj == OBJ_MEM)
        return held_mb(pr, s) * act_at(pr, k);
    if (c->obj == OBJ_PARAMS)
        return 0.0;
    double a = pr->ar_alpha_s ? pr->ar_alpha_s[s] : 0.0;
    return s > 0 ? a + pr->K * comm(pr, s - 1, k) : a;
}

static double fb(const struct ctx *c, int s, int j)
{
    if (c->obj != OBJ_TIME || s == c->pr->S - 1)
        return 0.0;
    return c->pr->K * comm(c->pr, s, j);
}

static double mem_pref(const struct ctx *c, int s, int k, int j)
{
    const struct mp_part_problem *pr = c->pr;
    return pr->static_factor * (c->Pb[j] - c->Pb[k]) +
           held_mb(pr, s) * (c->H[j] - c->H[k] + act_at(pr, k));
}

/* The stage-independent part of x, a lower bound on any stage's cost over (k, j] (slow >= 1). */
static double base(const struct ctx *c, int j)
{
    return c->obj == OBJ_TIME ? c->pr->K * c->C[j]
           : c->obj == OBJ_MEM ? c->pr->static_factor * c->Pb[j]
                               : c->Pb[j];
}

/* low[t]: the lowest cut from which t stages, each with base cost <= T, can cover the rest.
 * A cut below low[S-1-s] cannot end stage s, which keeps the sweep to a narrow window. */
static void suffix_bounds(struct ctx *c, double T)
{
    c->low[0] = c->pr->n;
    for (int t = 1; t <= c->pr->S; t++) {
        int hi = c->low[t - 1], lo = 0;
        double top = base(c, hi);
        while (lo < hi) {  /* smallest p with top - base(p) <= T (base is nondecreasing) */
            int mid = lo + (hi - lo) / 2;
            if (top - base(c, mid) <= T)
                hi = mid;
            else
                lo = mid + 1;
        }
        c->low[t] = lo;
    }
}

static void heap_push(struct ctx *c, int k, int u, double t)
{
    int i = c->hn++;
    while (i > 0 && c->ht[(i - 1) / 2] < t) {
        int p = (i - 1) / 2;
        c->hk[i] = c->hk[p], c->hu[i] = c->hu[p], c->ht[i] = c->ht[p];
        i = p;
    }
    c->hk[i] = k, c->hu[i] = u, c->ht[i] = t;
}

static void heap_pop(struct ctx *c)
{
    int n = --c->hn, i = 0;
    int k = c->hk[n], u = c->hu[n];
    double t = c->ht[n];
    for (;;) {
        int m = 2 * i + 1;
        if (m >= n)
            break;
        if (m + 1 < n && c->ht[m + 1] > c->ht[m])
            m++;
        if (c->ht[m] <= t)
            break;
        c->hk[i] = c->hk[m], c->hu[i] = c->hu[m], c->ht[i] = c->ht[m];
        i = m;
    }
    c->hk[i] = k, c->hu[i] = u, c->ht[i] = t;
}

/* The last cut j in (k, jmax] that stage s starting at cut k may end at: x(s,j) <= thr (b >= 0
 * only tightens it) and memory within the cap. Both are monotone in j, so binary search. */
static int reach_limit(const struct ctx *c, int s, int k, double thr, int jmax)
{
    int lo = k, hi = jmax;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        int ok = fx(c, s, mid) <= thr &&
                 (c->cap <= 0 || mem_pref(c, s, k, mid) <= c->cap * MEM_SLACK);
        if (ok)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Can every stage stay at or under T? Records parents so that a yes can be reconstructed. Only
 * the window [kmin, kmax] of cuts reachable by the previous stage is swept: near the optimum it
 * is narrow, which makes large instances fast. */
static int feasible(struct ctx *c, double T)
{
    const int n = c->pr->n, S = c->pr->S;
    int kmin = 0, kmax = 0;
    c->reach[0] = 1;
    suffix_bounds(c, T);
    for (int s = 0; s < S; s++) {
        int jmax = n - (S - 1 - s), jlow = c->low[S - 1 - s], nmin = -1, nmax = -1;
        c->hn = 0;
        for (int j = kmin + 1; j <= jmax; j++) {
            int k = j - 1;
            if (k <= kmax && c->reach[k]) {
                double thr = T + fx(c, s, k) - fa(c, s, k);
                int u = reach_limit(c, s, k, thr, jmax);
                if (u > k)
                    heap_push(c, k, u, thr);
            }
            while (c->hn > 0 && c->hu[0] < j)
                heap_pop(c);
            if (c->hn == 0 && k >= kmax)
                break;  /* no candidate left and none to come */
            c->next[j] = 0;
            if (j >= jlow && c->hn > 0 && fx(c, s, j) + fb(c, s, j) <= c->ht[0]) {
                c->next[j] = 1;
                c->parent[(size_t)s * (n + 1) + j] = c->hk[0];
                nmin = nmin < 0 ? j : nmin;
                nmax = j;
            }
        }
        if (nmax < 0)
            return 0;
        unsigned char *t = c->reach;
        c->reach = c->next, c->next = t;
        kmin = nmin, kmax = nmax;
    }
    return kmax == n;
}

static void reconstruct(const struct ctx *c, int *last)
{
    const int n = c->pr->n;
    int cut = n;
    for (int s = c->pr->S - 1; s >= 0; s--) {
        last[s] = cut - 1;
        cut = c->parent[(size_t)s * (n + 1) + cut];
    }
}

static double eval_obj(const struct ctx *c, const int *last)
{
    double worst = 0.0;
    for (int s = 0, first = 0; s < c->pr->S; first = last[s] + 1, s++) {
        double v = c->obj == OBJ_TIME  ? mp_partition_stage_cost(c->pr, s, first, last[s])
                   : c->obj == OBJ_MEM ? mp_partition_stage_mem(c->pr, s, first, last[s])
                                       : c->Pb[last[s] + 1] - c->Pb[first];
        if (v > worst)
            worst = v;
    }
    return worst;
}

/* Bisection on the bottleneck. Returns 0 with the best partition in last, -1 if even an
 * unbounded bottleneck is infeasible (the memory cap). */
static int minimise(struct ctx *c, int *last, int *tmp)
{
    if (!feasible(c, INFINITY))
        return -1;
    reconstruct(c, last);
    double best = eval_obj(c, last), up = best, lo = 0.0;
    for (int it = 0; it < 200 && up - lo > 1e-13 * up; it++) {
        double mid = lo + 0.5 * (up - lo);
        if (feasible(c, mid)) {
            reconstruct(c, tmp);
            double v = eval_obj(c, tmp);
            if (v < best) {
                best = v;
                memcpy(last, tmp, sizeof *last * (size_t)c->pr->S);
            }
            up = v < mid ? v : mid;
        } else {
            lo = mid;
        }
    }
    return 0;
}

static int ctx_init(struct ctx *c, const struct mp_part_problem *pr, enum objective obj)
{
    const size_t n = (size_t)pr->n;
    memset(c, 0, sizeof *c);
    c->pr = pr, c->obj = obj;
    c->C = calloc(3 * (n + 1), sizeof(double));
    c->parent = malloc(sizeof(int) * (size_t)pr->S * (n + 1));
    c->reach = c->reach_mem = calloc(2 * (n + 1), 1);
    c->hk = malloc(sizeof(int) * (2 * (n + 1) + (size_t)pr->S + 1));
    c->ht = malloc(sizeof(double) * (n + 1));
    if (!c->C || !c->parent || !c->reach_mem || !c->hk || !c->ht)
        return -1;
    c->Pb = c->C + (n + 1), c->H = c->Pb + (n + 1);
    c->next = c->reach + (n + 1);
    c->hu = c->hk + (n + 1);
    c->low = c->hu + (n + 1);
    for (size_t i = 0; i < n; i++) {
        c->C[i + 1] = c->C[i] + pr->compute_s[i];
        c->Pb[i + 1] = c->Pb[i] + pr->param_bytes[i];
        c->H[i + 1] = c->H[i] + (pr->held ? pr->held[i] : 0.0);
    }
    return 0;
}

static void ctx_free(struct ctx *c)
{
    free(c->C);
    free(c->parent);
    free(c->reach_mem);
    free(c->hk);
    free(c->ht);
}

double mp_partition_stage_cost(const struct mp_part_problem *pr, int s, int first, int last)
{
    double comp = 0.0, params = 0.0;
    for (int i = first; i <= last; i++)
        comp += pr->compute_s[i], params += pr->param_bytes[i];
    double cm =
        (s > 0 ? comm(pr, s - 1, first) : 0.0) + (s < pr->S - 1 ? comm(pr, s, last + 1) : 0.0);
    double ar = (pr->ar_alpha_s ? pr->ar_alpha_s[s] : 0.0) +
                (pr->ar_beta ? pr->ar_beta[s] * params : 0.0);
    return pr->K * (slow(pr, s) * comp + cm) + ar;
}

double mp_partition_stage_mem(const struct mp_part_problem *pr, int s, int first, int last)
{
    double params = 0.0, held = act_at(pr, first);
    for (int i = first; i <= last; i++)
        params += pr->param_bytes[i], held += pr->held ? pr->held[i] : 0.0;
    return pr->static_factor * params + held_mb(pr, s) * held;
}

double mp_partition_eval(const struct mp_part_problem *pr, const int *last, int *stage)
{
    double worst = -1.0;
    for (int s = 0, first = 0; s < pr->S; first = last[s] + 1, s++) {
        double v = mp_partition_stage_cost(pr, s, first, last[s]);
        if (v > worst) {
            worst = v;
            if (stage)
                *stage = s;
        }
    }
    return worst;
}

static int mem_ok(const struct mp_part_problem *pr, const int *last)
{
    if (pr->mem_cap <= 0)
        return 1;
    for (int s = 0, first = 0; s < pr->S; first = last[s] + 1, s++)
        if (mp_partition_stage_mem(pr, s, first, last[s]) > pr->mem_cap * MEM_SLACK)
            return 0;
    return 1;
}

double mp_partition_min_mem(const struct mp_part_problem *pr)
{
    struct ctx c = {0};
    double v = -1.0;
    int *last = malloc(sizeof(int) * 2 * (size_t)pr->S);
    if (last && ctx_init(&c, pr, OBJ_MEM) == 0 && minimise(&c, last, last + pr->S) == 0)
        v = eval_obj(&c, last);
    ctx_free(&c);
    free(last);
    return v;
}

static void uniform(const struct mp_part_problem *pr, int *last)
{
    int q = pr->n / pr->S, r = pr->n % pr->S, end = 0;
    for (int s = 0; s < pr->S; s++) {
        end += q + (s < r);
        last[s] = end - 1;
    }
}

static int search(const struct mp_part_problem *pr, enum mp_part_kind kind, int *last)
{
    struct ctx c = {0};
    int *tmp = malloc(sizeof(int) * (size_t)pr->S), rc = -2;
    if (tmp && ctx_init(&c, pr, kind == MP_PART_PARAMS ? OBJ_PARAMS : OBJ_TIME) == 0) {
        c.cap = kind == MP_PART_OPTIMAL ? pr->mem_cap : 0.0;
        rc = minimise(&c, last, tmp);
    }
    ctx_free(&c);
    free(tmp);
    return rc;
}

int mp_partition_run(const struct mp_part_problem *pr, enum mp_part_kind kind, int *last,
                     struct mp_err *err)
{
    if (pr->S < 1 || pr->n < 1)
        return MP_FAIL(err, USAGE, "need at least one stage and one layer (got %d, %d)", pr->S,
                       pr->n);
    if (pr->S > pr->n)
        return MP_FAIL(err, USAGE,
                       "cannot split %d layers into %d stages: use --stages %d or fewer", pr->n,
                       pr->S, pr->n);
    int rc = 0;
    if (kind == MP_PART_UNIFORM)
        uniform(pr, last);
    else
        rc = search(pr, kind, last);
    if (rc == -2)
        return MP_FAIL(err, NOMEM, "partition: out of memory for %d layers x %d stages", pr->n,
                       pr->S);
    if (rc == 0 && mem_ok(pr, last))
        return 0;
    double need = mp_partition_min_mem(pr);
    if (kind != MP_PART_OPTIMAL)
        return MP_FAIL(err, USAGE,
                       "the %s partition needs more than --memory-per-rank %.0f bytes on some "
                       "rank; use --partition optimal (fits from %.0f bytes), raise the cap, or "
                       "add stages", part_names[kind], pr->mem_cap, ceil(need));
    return MP_FAIL(err, USAGE,
                   "no split of %d layers into %d stages fits --memory-per-rank %.0f bytes: the "
                   "leanest split needs %.0f bytes per rank; raise --memory-per-rank, add stages, "
                   "or hold fewer micro-batches (smaller --batch, --schedule 1f1b)", pr->n, pr->S,
                   pr->mem_cap, ceil(need));
}
