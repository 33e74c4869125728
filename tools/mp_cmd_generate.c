/* `mpipe generate MODEL.mp (--weights FILE | --checkpoint DIR) [...]` (DESIGN.md §9): loads a
 * token model's weights and writes the prompt and its continuation to stdout, one process, one
 * thread, no MPI. The engine side (key/value caches, context cropping, sampling) is engine/gen/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mp_cli.h"
#include "mp_flags.h"
#include "mp_gen.h"

static const char help[] =
    "usage: mpipe generate MODEL.mp (--weights FILE | --checkpoint DIR) [options]\n"
    "\n"
    "Writes the prompt and its continuation, byte by byte, to stdout. Each new token runs through\n"
    "key/value caches (one row per layer, attention over the cached ones); past the context T it\n"
    "goes on from the last T bytes (the window is cropped and its cache recomputed, as nanoGPT\n"
    "does). The same seed gives the same text. A summary line goes to stderr.\n"
    "\n"
    "  --weights FILE      parameters from a --save-weights safetensors file of this model\n"
    "  --checkpoint DIR    parameters of the newest valid checkpoint in DIR (any number of "
    "stages)\n"
    "  --prompt TEXT       the start of the text, as bytes (default: a newline, as nanoGPT);\n"
    "                      every byte must be below the model's vocabulary V\n"
    "  --tokens N          bytes to generate (default 200; 0 prints only the prompt)\n"
    "  --temperature X     logits are divided by X before sampling; 0 is greedy (argmax)\n"
    "                      (default 0.8)\n"
    "  --top-k K           sample among the K most likely bytes only (default 200; 0: all)\n"
    "  --seed S            sampling seed (default 0)\n"
    "\n"
    "Exit codes: 2 for bad flags, a prompt byte >= V, or a weights file of another model or a\n"
    "malformed one; 3 when the file cannot be read or no checkpoint of DIR is valid.\n";

struct gen_args {
    const char *model, *weights, *ckpt, *prompt;
    long long tokens, top_k, seed;
    double temperature;
};

static int takes_value(const char *f)
{
    return strcmp(f, "--help") != 0 && strcmp(f, "-h") != 0;
}

static int handle(void *ctx, const char *f, const char *v, struct mp_err *err)
{
    struct gen_args *a = ctx;
    if (mp_flag_is(f, "--weights"))
        a->weights = v;
    else if (mp_flag_is(f, "--checkpoint"))
        a->ckpt = v;
    else if (mp_flag_is(f, "--prompt"))
        a->prompt = v;
    else if (mp_flag_is(f, "--tokens"))
        return mp_flag_int(f, v, 0, 1LL << 30, &a->tokens, err);
    else if (mp_flag_is(f, "--top-k"))
        return mp_flag_int(f, v, 0, 1LL << 30, &a->top_k, err);
    else if (mp_flag_is(f, "--seed"))
        return mp_flag_int(f, v, 0, (long long)(~0ULL >> 1), &a->seed, err);
    else if (mp_flag_is(f, "--temperature"))
        return mp_flag_double(f, v, 0, 1e6, &a->temperature, err);
    else
        return 1;
    return 0;
}

static int parse(struct gen_args *a, int argc, char **argv, struct mp_err *err)
{
    a->prompt = "\n";
    a->tokens = 200;
    a->top_k = 200;
    a->temperature = 0.8;
    if (mp_flag_walk(argc, argv, takes_value, handle, a, &a->model, "generate",
                     "mpipe generate models/gpt.mp --weights gpt.safetensors", err))
        return -1;
    if (!a->weights == !a->ckpt)
        return MP_FAIL(err, USAGE, "give exactly one of --weights FILE and --checkpoint DIR");
    return 0;
}

/* The prompt as token ids, each checked against V. */
static int prompt_ids(const char *prompt, size_t V, int32_t *ids, struct mp_err *err)
{
    for (size_t i = 0; prompt[i]; i++) {
        unsigned char b = (unsigned char)prompt[i];
        if (b >= V)
            return MP_FAIL(err, USAGE,
                           "--prompt: byte %zu is 0x%02x (%u), outside the model's "
                           "vocabulary (V = %zu)",
                           i, b, b, V);
        ids[i] = b;
    }
    return 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int run(const struct gen_args *a, struct mp_gen *g, struct mp_err *err)
{
    size_t np = strlen(a->prompt), n = np + (size_t)a->tokens;
    if (np == 0)
        return MP_FAIL(err, USAGE, "--prompt: empty (generation needs at least one byte)");
    /* Each token goes out as one byte: an id from 256 up has none (it went out as id mod 256,
     * so a model with V = 300 wrote bytes 0-43 twice as often as it sampled them). */
    if (g->V > 256)
        return MP_FAIL(err, USAGE, "%s: its vocabulary has %zu ids; generate writes each token "
                       "as one byte, so it needs a byte-level model (V of 256 or fewer)",
                       a->model, g->V);
    int32_t *seq = malloc(n * sizeof *seq);
    if (!seq)
        return MP_FAIL(err, NOMEM, "out of memory for %zu tokens", n);
    if (prompt_ids(a->prompt, g->V, seq, err)) {
        free(seq);
        return -1;
    }
    fwrite(a->prompt, 1, np, stdout);
    fflush(stdout);
    struct mp_rng rng;
    mp_rng_seed(&rng, (uint64_t)a->seed);
    double t0 = now();
    for (size_t k = np; k < n; k++) {
        const float *logits = mp_gen_logits(g, seq, k, 1);
        seq[k] = mp_gen_pick(logits, g->V, a->temperature, (size_t)a->top_k, &rng);
        putchar(seq[k]);
        if (seq[k] == '\n')
            fflush(stdout);
    }
    double dt = now() - t0;
    if (isatty(STDOUT_FILENO))
        putchar('\n');
    fflush(stdout);
    fprintf(stderr, "mpipe generate: %lld tokens in %.2f s (%.0f tokens/s), context %zu\n",
            a->tokens, dt, dt > 0 ? (double)a->tokens / dt : 0.0, g->T);
    free(seq);
    return 0;
}

int mp_cmd_generate(int argc, char **argv, struct mp_err *err)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return fputs(help, stdout), 0;
    struct gen_args a;
    memset(&a, 0, sizeof a);
    if (parse(&a, argc, argv, err))
        return -1;
    struct mp_model m;
    if (mp_model_load(&m, a.model, err))
        return -1;
    struct mp_gen g;
    int rc = mp_gen_init(&g, &m, err);
    uint64_t step = 0;
    if (!rc && a.weights)
        rc = mp_gen_load_weights(&g, a.weights, err);
    else if (!rc)
        rc = mp_gen_load_checkpoint(&g, a.ckpt, &step, err);
    if (!rc && a.ckpt)
        fprintf(stderr, "mpipe generate: weights of %s at step %llu\n", a.ckpt,
                (unsigned long long)step);
    if (!rc)
        rc = run(&a, &g, err);
    mp_gen_free(&g);
    mp_model_free(&m);
    return rc;
}
