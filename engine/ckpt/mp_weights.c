/* safetensors weights in and out for a partitioned model (mp_weights.h). Names are global, so the
 * file does not know or care how the model was split. */
#include "mp_weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_safetensors.h"
#include "mp_sched.h"

int mp_layer_owner(const int *bounds, int S, int P, enum mp_vplace place, int layer)
{
    for (int v = 0; v < S; v++)
        if (layer >= bounds[v] && layer < bounds[v + 1])
            return mp_vstage_rank(place, v, P);
    return -1;
}

int mp_param_shape(const struct mp_layer *l, int which, int64_t shape[4])
{
    if (which == 1) {
        shape[0] = (int64_t)l->n_bias;
        return l->n_bias ? 1 : 0;
    }
    if (!l->n_weight)
        return 0;
    if (l->kind == MP_LAYER_DENSE) {
        shape[0] = (int64_t)l->n_out;
        shape[1] = (int64_t)mp_layer_in_len(l);
        return 2;
    }
    if (l->kind == MP_LAYER_CONV2D) {
        shape[0] = (int64_t)l->n_out;
        shape[1] = (int64_t)l->in.d[0];
        shape[2] = shape[3] = (int64_t)l->kernel;
        return 4;
    }
    shape[0] = (int64_t)l->n_weight;
    return 1;
}

static void tensor_name(char *buf, size_t len, int layer, int which, const char *suffix)
{
    snprintf(buf, len, "L%d.%s%s", layer, which ? "bias" : "weight", suffix ? suffix : "");
}

int mp_weights_save(const struct mp_stage *st, const float *arena, const int *bounds,
                    struct mp_xport *x, const char *path, const char *suffix, struct mp_err *err)
{
    const struct mp_model *m = st->model;
    int rank = mp_xport_rank(x);
    float *all = NULL;
    struct mp_st_tensor *t = NULL;
    size_t total = 0, n_t = 0;
    for (int i = 0; i < m->n_layers; i++)
        total += mp_layer_n_param(&m->layers[i]);
    if (rank == 0) {
        all = malloc((total ? total : 1) * sizeof(float));
        t = calloc((size_t)m->n_layers * 2 + 1, sizeof *t);
        if (!all || !t) {
            free(all), free(t);
            return MP_FAIL(err, NOMEM, "out of memory gathering weights");
        }
    }
    int rc = 0;
    size_t off = 0;
    for (int i = 0; i < m->n_layers && !rc; i++) {
        const struct mp_layer *l = &m->layers[i];
        size_t n = mp_layer_n_param(l);
        if (!n)
            continue;
        int owner = mp_layer_owner(bounds, st->S, st->P, st->place, i);
        if (rank == owner && rank == 0)
            memcpy(all + off, arena + st->layer_off[i], n * sizeof(float));
        else if (rank == owner)
            rc = mp_xport_send(x, arena + st->layer_off[i], n * sizeof(float), 0, 30000 + i,
                               "rank 0 to take the weights", err);
        else if (rank == 0)
            rc = mp_xport_recv(x, all + off, n * sizeof(float), owner, 30000 + i,
                               "weights from their owner", err);
        if (rank == 0) {
            for (int w = 0; w < 2; w++) {
                struct mp_st_tensor *tt = &t[n_t];
                tt->ndim = mp_param_shape(l, w, tt->shape);
                if (!tt->ndim)
                    continue;
                tensor_name(tt->name, sizeof tt->name, i, w, suffix);
                tt->data = all + off + (w ? l->n_weight : 0);
                tt->numel = w ? l->n_bias : l->n_weight;
                n_t++;
            }
        }
        off += n;
    }
    if (rank == 0 && !rc)
        rc = mp_st_write(path, t, n_t, err);
    free(all);
    free(t);
    return rc;
}

int mp_weights_load(struct mp_stage *st, float *arena, const char *path, const char *suffix,
                    struct mp_err *err)
{
    struct mp_st_file f;
    if (mp_st_read(&f, path, err))
        return -1;
    const struct mp_model *m = st->model;
    int rc = 0;
    for (int i = 0; i < m->n_layers && !rc; i++) {
        const struct mp_layer *l = &m->layers[i];
        if (st->layer_off[i] == SIZE_MAX || !mp_layer_n_param(l))
            continue;
        for (int w = 0; w < 2 && !rc; w++) {
            int64_t shape[4];
            int nd = mp_param_shape(l, w, shape);
            if (!nd)
                continue;
            char name[96];
            tensor_name(name, sizeof name, i, w, suffix);
            const struct mp_st_tensor *t = mp_st_find(&f, name);
            if (!t) {
                rc = MP_FAIL(err, INPUT, "%s: no tensor '%s' (layer %d, %s, line %d)", path, name, i,
                             l->ops->name, l->line);
                break;
            }
            int same = t->ndim == nd;
            for (int d = 0; same && d < nd; d++)
                same = t->shape[d] == shape[d];
            if (!same) {
                rc = MP_FAIL(err, INPUT, "%s: tensor '%s' has the wrong shape for layer %d (%s)",
                             path, name, i, l->ops->name);
                break;
            }
            memcpy(arena + st->layer_off[i] + (w ? l->n_weight : 0), t->data,
                   t->numel * sizeof(float));
        }
    }
    mp_st_free(&f);
    return rc;
}
