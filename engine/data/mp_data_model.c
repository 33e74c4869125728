/* A model's data (mp_data.h mp_data_load_model): its shapes from the model, and a byte a token
 * model cannot take explained by the model's own lines. */
#include <stdio.h>
#include <string.h>

#include "mp_data.h"
#include "mp_layer.h"

/* Text is a token model's data and images an image model's: the other way round the sizes may
 * even agree (an MLP took any text file as 784-byte "images", trained and exited 0), and where
 * they do not, the loader's message (a context, a vocabulary) is about a model the user does
 * not have. The model's input line says which it is. */
static int check_kind(const char *src, const struct mp_model *m, struct mp_err *err)
{
    int text = strncmp(src, "text:", 5) == 0;
    int images = strcmp(src, "fashion-mnist") == 0 || strncmp(src, "mnist-dir:", 10) == 0;
    const struct mp_layer *in = &m->layers[0];
    if (text && !m->tokens)
        return MP_FAIL(err, USAGE, "--data %s: text is the data of token models (`input tokens "
                       "T`), and %s:%d takes images: give it --data fashion-mnist, mnist-dir:DIR "
                       "or synthetic:N", src, m->path, in->line);
    if (images && m->tokens)
        return MP_FAIL(err, USAGE, "--data %s: images, and %s:%d takes byte tokens: give it "
                       "--data text:fortunes, text:FILE or synthetic:N", src, m->path, in->line);
    return 0;
}

int mp_data_load_model(struct mp_data *d, const char *src, const struct mp_model *m,
                       uint64_t seed, struct mp_err *err)
{
    if (check_kind(src, m, err))
        return -1;
    if (!mp_data_load(d, src, mp_layer_in_len(&m->layers[1]), mp_model_data_classes(m), seed,
                      err))
        return 0;
    const struct mp_layer *embed = &m->layers[1], *loss = &m->layers[m->n_layers - 1];
    /* The bound the text loader names is the smaller of the embed's V and the loss's classes;
     * when it is the loss's, the file it names is not where the fix is. */
    if (err->code == MP_ERR_INPUT && m->tokens && m->n_layers > 1 &&
        m->n_classes < embed->vocab && strstr(err->msg, MP_DATA_NOT_AN_ID)) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, ": %s:%d (%s) predicts %zu classes, fewer "
                 "than the %zu ids of the embed (%s:%d), and a text's next bytes are its labels",
                 m->path, loss->line, loss->ops->name, m->n_classes, embed->vocab, m->path,
                 embed->line);
    }
    return -1;
}
