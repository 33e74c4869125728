/* libFuzzer target for the plan.json reader (partitioner/mp_plan.c, mp_plan_read): any bytes must
 * either give a plan whose stages tile the layers and whose arrays hold what their counts say, or
 * be rejected with "FILE: ..." naming the key. mp_plan_read only takes a path, so the bytes go
 * through a memfd (fuzz_common.h). An accepted plan is written back out, as `mpipe plan` would.
 * Replayed over its corpus and regressions by tests/test_fuzz_regressions.c (MP_FUZZ_REPLAY). */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "mp_plan.h"

static void plan_touch(const struct mp_plan *p)
{
    if (p->n_layers < 0 || p->n_stages < 0 || p->n_ranks < 0)
        abort();
    volatile double sum = p->step_s + p->bubble;
    for (int i = 0; i < p->n_layers; i++)
        sum += p->layers[i].compute_s + (double)p->layers[i].param_bytes;
    for (int s = 0; s < p->n_stages; s++) {
        const struct mp_plan_stage *st = &p->stages[s];
        if (st->n_ranks < 0 || st->n_ranks > 64 || st->first_layer > st->last_layer ||
            st->first_layer < 0 || st->last_layer >= p->n_layers)
            abort();
        for (int r = 0; r < st->n_ranks; r++)
            sum += st->ranks[r] + st->cores[r];
    }
    for (int r = 0; r < p->n_ranks; r++)
        sum += p->ranks[r].core + (double)strlen(p->ranks[r].host);
    for (int i = 0; p->link_latency_s && i < p->P * p->P; i++)
        sum += p->link_latency_s[i];
    for (int i = 0; p->link_bandwidth_Bps && i < p->P * p->P; i++)
        sum += p->link_bandwidth_Bps[i];
    (void)sum;
}

static int fuzz_plan_one(const uint8_t *data, size_t size)
{
    const char *path = fuzz_as_file(data, size);
    struct mp_plan p;
    struct mp_err err = {0};
    if (mp_plan_read(&p, path, &err) != 0) {
        fuzz_check_rejection(&err, path);
        return 0;
    }
    plan_touch(&p);
    if (mp_plan_write(&p, "/dev/null", &err) != 0 && err.code != MP_ERR_IO)
        abort();
    mp_plan_free(&p);
    return 0;
}

#ifndef MP_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_plan_one(data, size);
}
#endif
