/* `mpipe plan --try K` (mp_plan_try.h): the shortlist of the layouts the plan priced, the runs
 * (each layout written to a plan file of its own and trained for about a second by `mpirun ...
 * mpipe train --plan`, in turns, its figure read from what train prints: the median step of the
 * run, train's `plan:` line, else RESULT's samples/s), the choice and its table. mp_cmd_plan.c
 * builds the layouts and keeps the one chosen. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_mpirun.h"
#include "mp_plan_try.h"
#include "mp_sched.h"

/* The steps a run takes: about MP_TRY_SECONDS by the plan's price, at least 6 so that the median
 * step is not the first (which maps its memory). */
static long steps_for(const struct mp_plan *p)
{
    double s = p->step_s > 0 ? ceil(MP_TRY_SECONDS / p->step_s) : 6;
    return s < 6 ? 6 : s > 100000 ? 100000 : (long)s;
}

/* What one run printed: its median step (train's `plan:` line) or its samples/s (RESULT), and the
 * last line that says why it failed. */
struct run_out {
    double median_step_s, result_sps;
    char why[200];
};

static void read_line(const char *line, struct run_out *o)
{
    const char *m = strstr(line, "median of the last ");
    double ms;
    if (!strncmp(line, "plan: predicted step", 20) && m &&
        sscanf(m, "median of the last %*d steps %lf ms", &ms) == 1)
        o->median_step_s = ms * 1e-3;
    const char *r = !strncmp(line, "RESULT ", 7) ? strstr(line, " samples_per_s=") : NULL;
    if (r)
        o->result_sps = strtod(r + 15, NULL);
    if (!strncmp(line, "mpipe", 5) || strstr(line, "rror")) {
        size_t len = strcspn(line, "\r\n");
        len = len < sizeof o->why ? len : sizeof o->why - 1;
        memcpy(o->why, line, len);
        o->why[len] = 0;
    }
}

/* One run of the plan in file: its samples/s, or 0 with why set. */
static double run_once(const struct mp_try_job *job, const char *exe, const struct mp_plan *p,
                       const char *file, char *why, size_t why_len)
{
    long steps = steps_for(p);
    int limit = 60 + (int)(10.0 * (double)steps * p->step_s);
    size_t samples = p->batch * 64 < 4096 ? 4096 : p->batch * 64 > 65536 ? 65536 : p->batch * 64;
    char data[64] = "", cmd[8192];
    if (!job->tokens) /* images: synthetic, as many as a real set's worth of distinct rows */
        snprintf(data, sizeof data, "--data synthetic:%zu ", samples);
    snprintf(cmd, sizeof cmd,
             "timeout %d mpirun -np %d %s -x BLIS_NUM_THREADS=1%s '%s' train '%s' --plan '%s' "
             "%s--epochs 1000 --max-steps %ld 2>&1",
             limit, p->P * p->D,
             job->oversubscribed ? "--oversubscribe --map-by core --bind-to none"
                                 : "--map-by core --bind-to core",
             job->oversubscribed ? " -x OMPI_MCA_mpi_yield_when_idle=1" : "", exe, job->model,
             file, data, steps);
    FILE *f = popen(cmd, "r");
    if (!f)
        return snprintf(why, why_len, "cannot start mpirun"), 0;
    struct run_out o = {0};
    char line[4096];
    while (fgets(line, sizeof line, f))
        read_line(line, &o);
    int status = pclose(f);
    int code = status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    if (code == 0 && o.median_step_s > 0)
        return (double)p->batch / o.median_step_s;
    if (code == 0 && o.result_sps > 0)
        return o.result_sps;
    if (code == 124)
        snprintf(why, why_len, "no result within %d s (timeout)", limit);
    else if (o.why[0])
        snprintf(why, why_len, "%s", o.why);
    else
        snprintf(why, why_len, "mpirun exited with %d and no RESULT line (is mpirun on the "
                 "PATH?)", code);
    return 0;
}

int mp_plan_try(const struct mp_try_job *job, const struct mp_plan *plans, int n,
                double *measured, struct mp_err *err)
{
    char exe[4096], dir[4096];
    const char *why = mp_mpirun_why_not();
    if (!why)
        why = mp_mpirun_self(exe, sizeof exe);
    if (!why && strchr(job->model, '\''))
        why = "the model's path has a quote in it";
    if (why)
        return MP_FAIL(err, USAGE, "--try cannot run the layouts here: %s", why);
    fprintf(stderr, "mpipe plan: --try: running the %d best-predicted layout%s (of those within "
            "%.0f%% of the best) on this machine, %d rounds of about %.0f s each\n", n,
            n > 1 ? "s" : "", 100 * (MP_TRY_WITHIN - 1), MP_TRY_ROUNDS, MP_TRY_SECONDS);
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mpipe-try-XXXXXX", tmp && *tmp && !strchr(tmp, '\'') ? tmp
                                                                                     : "/tmp");
    if (!mkdtemp(dir))
        return MP_FAIL(err, IO, "%s: cannot make a directory for --try's plans", dir);
    int *n_runs = calloc((size_t)n, sizeof *n_runs), rc = 0, got = 0;
    char (*files)[4200] = calloc((size_t)n, sizeof *files);
    for (int i = 0; i < n; i++)
        measured[i] = 0;
    if (!n_runs || !files)
        rc = MP_FAIL(err, NOMEM, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++) {
        snprintf(files[i], sizeof files[i], "%s/layout-%d.json", dir, i);
        rc = mp_plan_write(&plans[i], files[i], err);
    }
    for (int r = 0; rc == 0 && r < MP_TRY_ROUNDS; r++) {
        for (int k = 0; k < n; k++) {
            int i = r % 2 ? n - 1 - k : k; /* every other round backwards */
            char name[64], failed[256] = "";
            mp_plan_try_name(&plans[i], name, sizeof name);
            double sps = run_once(job, exe, &plans[i], files[i], failed, sizeof failed);
            if (sps > 0) {
                measured[i] = sps > measured[i] ? sps : measured[i];
                n_runs[i]++;
                fprintf(stderr, "mpipe plan: --try round %d of %d: %s ran %.1f samples/s "
                        "(predicted %.1f)\n", r + 1, MP_TRY_ROUNDS, name, sps,
                        plans[i].samples_per_s);
            } else {
                fprintf(stderr, "mpipe plan: warning: --try round %d of %d: %s did not run: %s\n",
                        r + 1, MP_TRY_ROUNDS, name, failed);
            }
        }
        int any = 0;
        for (int i = 0; i < n; i++)
            any |= n_runs[i] > 0;
        if (!any) /* every layout failed its first run: the next rounds would too */
            break;
    }
    for (int i = 0; rc == 0 && i < n; i++)
        got += n_runs[i] > 0;
    for (int i = 0; files && i < n; i++)
        if (files[i][0])
            unlink(files[i]);
    rmdir(dir);
    free(n_runs), free(files);
    return rc ? -1 : got;
}

void mp_plan_try_name(const struct mp_plan *p, char *out, size_t len)
{
    if (p->V > 1 && p->schedule == MP_SCHED_INTERLEAVED)
        snprintf(out, len, "%s P=%d V=%d D=%d M=%d", mp_sched_name(p->schedule), p->P, p->V,
                 p->D, p->M);
    else
        snprintf(out, len, "%s P=%d D=%d M=%d", mp_sched_name(p->schedule), p->P, p->D, p->M);
}

void mp_try_list_add(struct mp_try_list *l, struct mp_try_key k)
{
    if (l->n == l->cap && l->cap < 4096) {
        int cap = l->cap ? 2 * l->cap : 64;
        struct mp_try_key *v = realloc(l->v, sizeof *v * (size_t)cap);
        if (v)
            l->v = v, l->cap = cap;
    }
    if (l->n < l->cap)
        l->v[l->n++] = k;
}

static int same_layout(const struct mp_try_key *a, const struct mp_try_key *b)
{
    return a->schedule == b->schedule && a->P == b->P && a->D == b->D && a->M == b->M;
}

int mp_try_list_best(const struct mp_try_list *l, const struct mp_plan *p, int K,
                     struct mp_try_key *out)
{
    int n = 0;
    out[n++] = (struct mp_try_key){p->schedule, p->P, p->D, p->M, p->step_s};
    while (n < K) {
        int best = -1;
        for (int i = 0; i < l->n; i++) {
            int taken = l->v[i].step_s > MP_TRY_WITHIN * p->step_s;
            for (int j = 0; j < n && !taken; j++)
                taken = same_layout(&out[j], &l->v[i]);
            if (!taken && (best < 0 || l->v[i].step_s < l->v[best].step_s))
                best = i;
        }
        if (best < 0)
            break;
        out[n++] = l->v[best];
    }
    return n;
}

int mp_plan_try_pick(const struct mp_plan *plans, int n, const double *measured,
                     struct mp_plan_trial *tried)
{
    int fastest = 0;
    for (int i = 0; i < n; i++) {
        tried[i] = (struct mp_plan_trial){plans[i].schedule, plans[i].P, plans[i].D, plans[i].V,
                                          plans[i].M, plans[i].samples_per_s, measured[i], 0};
        if (measured[i] > measured[fastest])
            fastest = i;
    }
    tried[fastest].picked = 1;
    if (measured[fastest] <= 0) {
        fprintf(stderr, "mpipe plan: warning: --try: no layout ran (above): the plan keeps the "
                "best-predicted\n");
    } else if (fastest != 0) {
        char was[64], now[64];
        mp_plan_try_name(&plans[0], was, sizeof was);
        mp_plan_try_name(&plans[fastest], now, sizeof now);
        fprintf(stderr, "mpipe plan: --try: %s measured fastest (%.1f samples/s, %+.1f%% on the "
                "best-predicted %s): it is the plan\n", now, measured[fastest],
                100 * (measured[fastest] / measured[0] - 1), was);
    }
    return fastest;
}

void mp_plan_try_print(const struct mp_plan *p)
{
    if (!p->n_tried)
        return;
    printf("tried on this machine (the best of %d runs of about %.0f s, samples/s):\n",
           MP_TRY_ROUNDS, MP_TRY_SECONDS);
    printf("  %-28s %12s %12s\n", "layout", "predicted", "measured");
    for (int i = 0; i < p->n_tried; i++) {
        const struct mp_plan_trial *t = &p->tried[i];
        struct mp_plan q = {.schedule = t->schedule, .P = t->P, .D = t->D, .V = t->V, .M = t->M};
        char name[64];
        mp_plan_try_name(&q, name, sizeof name);
        printf("  %-28s %12.1f %12.1f%s\n", name, t->predicted_sps, t->measured_sps,
               t->picked ? "  picked" : t->measured_sps <= 0 ? "  (did not run)" : "");
    }
}

void mp_plan_close_print(const struct mp_try_list *l, const struct mp_plan *p, int chunks)
{
    struct mp_try_key keys[16];
    int n = mp_try_list_best(l, p, 16, keys), close = 0;
    for (int i = 1; i < n && keys[i].step_s <= MP_CLOSE_WITHIN * p->step_s; i++)
        close = i;
    if (!close)
        return;
    printf("close: priced within %.0f%% of this plan's step:", 100 * (MP_CLOSE_WITHIN - 1));
    for (int i = 1; i <= close && i <= 4; i++) { /* the nearest 4; the rest counted */
        const struct mp_try_key *k = &keys[i];
        struct mp_plan q = {.schedule = k->schedule, .P = k->P, .D = k->D, .M = k->M,
                            .V = mp_sched_chunks(k->schedule, chunks)};
        char name[64];
        mp_plan_try_name(&q, name, sizeof name);
        printf("%s %s (%+.1f%%)", i > 1 ? "," : "", name, 100 * (k->step_s / p->step_s - 1));
    }
    if (close > 4)
        printf(" and %d more", close - 4);
    printf("; this machine's minute decides which runs faster: --try %d runs them here and "
           "keeps the fastest\n", close + 1);
}
