/* Internal: the ops table of every layer kind, defined in its own file and collected into the
 * registry in mp_layer.c. Not part of the public API. */
#ifndef MP_LAYER_OPS_H
#define MP_LAYER_OPS_H

#include "mp_layer.h"

extern const struct mp_layer_ops mp__ops_input;        /* mp_layer.c */
extern const struct mp_layer_ops mp__ops_dense;        /* mp_dense.c */
extern const struct mp_layer_ops mp__ops_conv2d;       /* mp_conv2d.c */
extern const struct mp_layer_ops mp__ops_maxpool;      /* mp_pool.c */
extern const struct mp_layer_ops mp__ops_avgpool;      /* mp_pool.c */
extern const struct mp_layer_ops mp__ops_flatten;      /* mp_act.c */
extern const struct mp_layer_ops mp__ops_relu;         /* mp_act.c */
extern const struct mp_layer_ops mp__ops_gelu;         /* mp_act.c */
extern const struct mp_layer_ops mp__ops_tanh;         /* mp_act.c */
extern const struct mp_layer_ops mp__ops_sigmoid;      /* mp_act.c */
extern const struct mp_layer_ops mp__ops_dropout;      /* mp_dropout.c */
extern const struct mp_layer_ops mp__ops_layernorm;    /* mp_norm.c */
extern const struct mp_layer_ops mp__ops_softmax_xent; /* mp_loss.c */
extern const struct mp_layer_ops mp__ops_mse;          /* mp_loss.c */
extern const struct mp_layer_ops mp__ops_embed;        /* mp_embed.c */
extern const struct mp_layer_ops mp__ops_attention;    /* mp_attention.c */
extern const struct mp_layer_ops mp__ops_lm_head;      /* mp_embed.c */

/* Fills one tensor description (for a kind's `tensors` callback). */
void mp__layer_tensor_set(struct mp_tensor *t, const char *name, size_t off, size_t numel,
                          int ndim, const int64_t *shape);

/* Edit distance between two layer names (mp_layer.c), for "did you mean" decisions. */
size_t mp__layer_name_distance(const char *a, const char *b);

#endif
