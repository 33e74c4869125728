/* The parts every `mpipe bench` shares (mp_bench.h): start-up, the `#` header lines, rows kept as
 * JSON and printed once at the end. Only rank 0 prints; the other ranks take part in the
 * measurements and collectives and stay silent. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mp_bench.h"
#include "mp_cli.h"
#include "mp_flags.h"
#include "mp_gemm.h"

int mp_bench_max_bytes(const char *flag, const char *v, size_t lo, size_t *out,
                       struct mp_err *err)
{
    const size_t hi = (size_t)1 << 30;
    if (mp_flag_bytes(flag, v, out, err))
        return -1;
    if (*out < lo || *out > hi)
        return MP_FAIL(err, USAGE, "%s: %zu is out of range [%zu, 1G]", flag, *out, lo);
    return 0;
}

int mp_bench_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

/* Distinct host names over all ranks (every rank sends its name; all count the same way). */
static int count_hosts(struct mp_bench *b, struct mp_err *err)
{
    enum { NAME = 256 };
    char mine[NAME] = {0};
    snprintf(mine, sizeof mine, "%s", mp_xport_host(b->x));
    char *all = calloc((size_t)b->size, NAME);
    if (!all)
        return MP_FAIL(err, NOMEM, "out of memory");
    int rc = mp_xport_allgather(b->x, mine, all, NAME, "the host names", err);
    b->n_hosts = 0;
    for (int r = 0; !rc && r < b->size; r++) {
        int seen = 0;
        for (int q = 0; q < r && !seen; q++)
            seen = !strcmp(all + (size_t)q * NAME, all + (size_t)r * NAME);
        b->n_hosts += !seen;
    }
    free(all);
    return rc;
}

int mp_bench_init(struct mp_bench *b, int json, int *argc, char ***argv, struct mp_err *err)
{
    memset(b, 0, sizeof *b);
    if (mp_xport_init(&b->x, argc, argv, err))
        return -1;
    mp_xport_set_deadline(b->x, 600);
    b->rank = mp_xport_rank(b->x);
    b->size = mp_xport_size(b->x);
    b->json = json;
    b->out = json ? stderr : stdout;
    b->rows = json_array();
    if (!b->rows)
        return MP_FAIL(err, NOMEM, "out of memory");
    return count_hosts(b, err);
}

void mp_bench_header(const struct mp_bench *b, const char *what, const char *method)
{
    if (b->rank != 0)
        return;
    const char *threads = getenv("BLIS_NUM_THREADS");
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", localtime(&now));
    fprintf(b->out, "# mpipe bench %s -- mpipe %s (%s), %s\n", what, MPIPE_VERSION,
            mp_git_hash(), date);
    fprintf(b->out, "# ranks %d on %d host%s (rank 0 on %s); BLIS threads %s (%s build), "
            "kernels %s\n", b->size, b->n_hosts, b->n_hosts == 1 ? "" : "s", mp_xport_host(b->x),
            threads ? threads : "unset (BLIS default)", mp_gemm_blis_threading(), mp_gemm_arch());
    double load = -1;
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf", &load) != 1)
            load = -1;
        fclose(la);
    }
    if (load >= 0) /* a busy machine explains noisy figures: say so where they are pasted */
        fprintf(b->out, "# load average %.2f at start (rank 0's host)\n", load);
    fprintf(b->out, "# %s\n", method);
    fflush(b->out);
}

void mp_bench_row(struct mp_bench *b, json_t *row)
{
    if (row)
        json_array_append_new(b->rows, row);
}

void mp_bench_dump_rows(FILE *f, json_t *rows)
{
    size_t i;
    json_t *row;
    fputs("{\"rows\": [", f);
    json_array_foreach(rows, i, row) {
        char *s = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        fprintf(f, "%s\n  %s", i ? "," : "", s ? s : "{}");
        free(s);
    }
    fputs("\n]}\n", f);
}

void mp_bench_finish(struct mp_bench *b, int ok)
{
    if (ok && b->json && b->rank == 0) {
        mp_bench_dump_rows(stdout, b->rows);
        fflush(stdout);
    }
    json_decref(b->rows);
    b->rows = NULL;
    if (ok)
        mp_xport_finalize(b->x);
    else
        mp_xport_release(b->x);
}

float *mp_bench_filled(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = (float)((i * 7919u) % 1000u) * 1e-3f - 0.5f;
    return p;
}
