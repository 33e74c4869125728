/* The table `mpipe plan` prints for a plan (mp_plan_print.h). */
#include "mp_plan_print.h"

#include <stdio.h>
#include <string.h>

#include "mp_cost.h"

static void layer_list(const struct mp_plan *p, const struct mp_plan_stage *st, char *out,
                       size_t cap)
{
    int n = snprintf(out, cap, "%d..%d", st->first_layer, st->last_layer);
    for (int i = st->first_layer; i <= st->last_layer && n > 0 && (size_t)n < cap; i++) {
        if ((size_t)n + strlen(p->layers[i].kind) + 5 >= cap) {
            snprintf(out + n, cap - (size_t)n, " ...");
            break;
        }
        n += snprintf(out + n, cap - (size_t)n, " %s", p->layers[i].kind);
    }
}

void mp_plan_print_table(const struct mp_plan *p)
{
    printf("# mpipe plan %s (digest %s): %s, P=%d D=%d V=%d, M=%d micro-batches of %zu (batch "
           "%zu), partition %s, costs %s\n", p->model, p->digest, mp_sched_name(p->schedule),
           p->P, p->D, p->V, p->M, p->batch / (size_t)p->M, p->batch, p->partition,
           p->cost_source);
    printf("%-5s %-44s %-9s %-12s %-9s %10s %10s %10s %11s %9s\n", "stage", "layers", "ranks",
           "host", "cores", "compute_ms", "send_B/mb", "recv_B/mb", "peak_mem_MB", "recompute");
    for (int v = 0; v < p->n_stages; v++) {
        const struct mp_plan_stage *st = &p->stages[v];
        char layers[45], ranks[64] = "", cores[64] = "";
        layer_list(p, st, layers, sizeof layers);
        for (int d = 0, nr = 0, nc = 0; d < st->n_ranks && nr < 50 && nc < 50; d++) {
            nr += snprintf(ranks + nr, sizeof ranks - (size_t)nr, d ? ",%d" : "%d", st->ranks[d]);
            nc += snprintf(cores + nc, sizeof cores - (size_t)nc, d ? ",%d" : "%d", st->cores[d]);
        }
        size_t in = v > 0 ? p->layers[st->first_layer - 1].act_bytes_out : 0;
        size_t out = v < p->n_stages - 1 ? st->act_bytes : 0;
        printf("%-5d %-44s %-9s %-12.12s %-9s %10.3f %10zu %10zu %11.1f %9s\n", v, layers, ranks,
               st->host, cores, 1e3 * st->compute_s, out + in, in + out,
               (double)st->peak_mem_bytes / 1048576.0, st->recompute ? "yes" : "no");
    }
    printf("predicted step %.3f ms, bubble %.3f, %.1f samples/s", 1e3 * p->step_s, p->bubble,
           p->samples_per_s);
    if (p->allreduce_s > 0)
        printf(" (allreduce %.3f ms)", 1e3 * p->allreduce_s);
    printf("\n");
    if (p->lean_runs > 0)
        printf("lean: %.2fx, the median of this layout's last %d runs on this machine: their "
               "step over their price at their ranks' pace (train --plan keeps each in the rates "
               "cache); the rates alone predict %.3f ms\n", p->lean, p->lean_runs,
               1e3 * p->priced_step_s);
    /* The default rates are a Zen3 core's: on other machines the layout choice holds (every
     * option is priced alike) but the seconds do not, e.g. 4634 predicted against ~11000
     * measured samples/s on a Zen5 core running skx kernels. */
    if (strcmp(p->cost_source, "analytic") == 0)
        printf("# times at the default GEMM rate (%.0f GFLOPS); for this machine's, pass --rates "
               "(mpipe bench gemm --json) or --profile (mpipe bench layers --json)\n",
               MP_COST_GEMM_FLOPS / 1e9);
    if (p->bottleneck >= 0 && p->bottleneck < p->n_stages) {
        const struct mp_plan_stage *b = &p->stages[p->bottleneck];
        printf("bottleneck: stage %d (layers %d..%d): %.3f ms compute + %.3f ms communication "
               "per micro-batch\n", p->bottleneck, b->first_layer, b->last_layer,
               1e3 * b->compute_s, 1e3 * b->send_s);
    }
}
