/* Text generation from a trained token model (DESIGN.md §9, `mpipe generate`): one process, no
 * MPI. The model runs in evaluation mode on one sequence; each attention layer keeps a key/value
 * cache, so a new token runs every per-token layer on one row and attention over the cached rows
 * (O(T·C + C²) per layer), not a forward over the whole context. Past the context T it goes on
 * from the last T tokens, as nanoGPT crops: the window moved, so its cache is recomputed by one
 * forward of the cropped window. Weights come from a --save-weights file or any checkpoint
 * (written with any number of stages: tensors are named by global layer). */
#ifndef MP_GEN_H
#define MP_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "mp_err.h"
#include "mp_layer.h"
#include "mp_rng.h"

struct mp_gen {
    const struct mp_model *m;
    size_t T, V;  /* context and vocabulary */
    int head;     /* the layer whose output is the logits (the one before the loss) */
    float *param; /* all parameters, layer i at param + off[i] */
    size_t *off;
    /* A forward over a whole window (batch 1, T rows): outputs and saved buffers per layer. */
    float **act, **saved;
    float *scratch;
    size_t scratch_len;
    /* One new token: per-token copies of the layers with T = 1, their one-row outputs and saved
     * buffers, and each attention layer's cache (NULL for other layers). */
    struct mp_layer *row;
    float **row_act, **row_saved, **cache;
    float *dec_scratch;
    /* What the caches hold: keys and values of window[0 .. cached), the window starting at token
     * w0 of the sequence. */
    int32_t *window;
    size_t cached, w0;
};

/* Checks that the model can generate (a token model, causal attention, logits as wide as the
 * vocabulary) and allocates everything (parameters zero). MP_ERR_INPUT names the model file. */
int mp_gen_init(struct mp_gen *g, const struct mp_model *m, struct mp_err *err);
void mp_gen_free(struct mp_gen *g);

/* Parameters as training would initialise them from `seed` (tests). */
void mp_gen_init_params(struct mp_gen *g, uint64_t seed);
/* Parameters from a safetensors file of this model (--save-weights): MP_ERR_INPUT for a malformed
 * file or one written for another model (missing, extra or misshapen tensors), MP_ERR_IO when it
 * cannot be read. */
int mp_gen_load_weights(struct mp_gen *g, const char *path, struct mp_err *err);
/* Parameters of the newest valid checkpoint in DIR (digests verified, falling back to older ones
 * with a note on stderr, as --resume does): MP_ERR_INPUT when it was written for another model,
 * MP_ERR_CKPT when none is valid. Fills *step with the checkpoint's step. */
int mp_gen_load_checkpoint(struct mp_gen *g, const char *dir, uint64_t *step, struct mp_err *err);

/* Logits (V floats, valid until the next call) of the token after seq[0 .. n), n >= 1, every id
 * below V. With use_cache, only the tokens of the window the caches do not hold yet are run;
 * without, one forward of the whole window (the reference the cache must agree with). */
const float *mp_gen_logits(struct mp_gen *g, const int32_t *seq, size_t n, int use_cache);

/* The next token from logits: the argmax (lowest index among ties) when temperature is 0, else a
 * draw from softmax(logits / temperature) restricted to the top_k largest logits (0: all; ties
 * with the k-th are kept, as nanoGPT), one uniform from rng per token. */
int32_t mp_gen_pick(const float *logits, size_t V, double temperature, size_t top_k,
                    struct mp_rng *rng);

#endif
