/* libFuzzer target for the model-spec parser (layers/mp_spec.c, mp_model_parse): any bytes must
 * either give a planned model or be rejected with "fuzz.mp:LINE: ..." — never a crash, a leak or
 * undefined behaviour. A model that parses is also costed layer by layer, as the partitioner does,
 * because hostile sizes that pass the parser reach the cost arithmetic next. Replayed over its
 * corpus and regressions by tests/test_fuzz_regressions.c (MP_FUZZ_REPLAY: no libFuzzer entry). */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "mp_layer.h"

static int fuzz_spec_one(const uint8_t *data, size_t size)
{
    struct mp_model m;
    struct mp_err err = {0};
    if (mp_model_parse(&m, "fuzz.mp", (const char *)data, size, &err) != 0) {
        fuzz_check_rejection(&err, "fuzz.mp");
        return 0;
    }
    /* The contract the rest of mpipe relies on: input first, loss last, shapes chained. */
    if (m.n_layers < 2 || m.layers[0].kind != MP_LAYER_INPUT || !m.layers[m.n_layers - 1].is_loss)
        abort();
    volatile double sink = 0;
    for (int i = 0; i < m.n_layers; i++) {
        const struct mp_layer *l = &m.layers[i];
        if (i > 0 && mp_shape_numel(l->in) != mp_layer_out_len(&m.layers[i - 1]))
            abort();
        struct mp_cost c = l->ops->cost(l, 1);
        sink += c.flops_fwd + c.flops_bwd_input + c.flops_bwd_weight + c.bytes_fwd + c.bytes_bwd +
                (double)c.act_bytes_out + (double)c.saved_bytes + (double)c.param_bytes;
    }
    (void)sink;
    mp_model_free(&m);
    return 0;
}

#ifndef MP_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_spec_one(data, size);
}
#endif
