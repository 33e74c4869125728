/* Tied embeddings (DESIGN.md §9) on one rank's stage, for `train` and for `fed`'s pipelined
 * clients alike (mp_stage.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mp_stage.h"
#include "mp_xport.h"

int mp_stage_tie_gradients(struct mp_stage *st, struct mp_xport *x, const int *bounds,
                           float **buf, struct mp_err *err)
{
    const struct mp_model *m = st->model;
    for (int h = 0; h < m->n_layers; h++) {
        const struct mp_layer *head = &m->layers[h];
        if (!mp_layer_is_tied(head))
            continue;
        int e = head->tie_src;
        size_t n = head->n_weight; /* V x C: the embed's first tensor */
        float *ge = st->layer_off[e] != SIZE_MAX ? st->grad + st->layer_off[e] : NULL;
        float *gh = st->layer_off[h] != SIZE_MAX ? st->grad + st->layer_off[h] : NULL;
        if (ge && gh) {
            for (size_t i = 0; i < n; i++)
                ge[i] = gh[i] = ge[i] + gh[i];
            continue;
        }
        if (!ge && !gh)
            continue;
        if (!*buf && !(*buf = malloc(n * sizeof(float))))
            return MP_FAIL(err, NOMEM, "out of memory for the tied gradient of E");
        int peer = mp_layer_owner(bounds, st->S, st->P, st->place, ge ? h : e);
        float *mine = ge ? ge : gh, *theirs = *buf;
        int tag = (1 << 25) + h, rq = -1, sq = -1;
        char got[96], sent[96]; /* name the peer, as every wait does (DESIGN.md §4) */
        snprintf(got, sizeof got, "the %s gradient of E from rank %d",
                 ge ? "tied head's" : "embedding's", peer);
        snprintf(sent, sizeof sent, "the tied gradient of E to be taken by rank %d", peer);
        if (mp_xport_irecv(x, theirs, n * sizeof(float), peer, tag, &rq, err) ||
            mp_xport_isend(x, mine, n * sizeof(float), peer, tag, &sq, err) ||
            mp_xport_wait(x, &rq, got, err) || mp_xport_wait(x, &sq, sent, err))
            return -1;
        if (ge)
            for (size_t i = 0; i < n; i++)
                ge[i] = ge[i] + theirs[i];
        else
            for (size_t i = 0; i < n; i++)
                gh[i] = theirs[i] + gh[i];
    }
    return 0;
}
