/* The pipeline's hand-offs through shared memory (mp_exec.h mp_exec_share; the slots' layout in
 * mp_stage.h): what the executor's sends and receives call. */
#ifndef MP_EXEC_HAND_H
#define MP_EXEC_HAND_H

#include <stddef.h>

#include "mp_exec.h"

/* Puts the `bytes` at src that virtual stage v (this rank's) sends for micro-batch mb into its
 * slot and returns 1; 0 when there are no slots or the receiver has not emptied that one yet:
 * then the message goes through MPI. */
int mp__exec_hand_put(struct mp_exec *e, int v, int dir, int mb, const float *src, size_t bytes);
/* After an empty message from stage v for micro-batch mb: copies its slot to dst and empties it. */
int mp__exec_hand_take(struct mp_exec *e, int v, int dir, int mb, float *dst, size_t bytes,
                       struct mp_err *err);

#endif
