/* Memory the ranks of one host share (mp_xport_shm.c), added for the data-parallel reduction and
 * used by the pipeline's hand-offs too: a rank writes its part straight into a peer's memory and
 * says so with an empty message, so the wait keeps its deadline and names the peer (mp_xport.h)
 * while no payload crosses MPI. */
#ifndef MP_XPORT_SHM_H
#define MP_XPORT_SHM_H

#include <stddef.h>

#include "mp_err.h"
#include "mp_xport.h"

struct mp_shm {
    int size;        /* the ranks of the transport it was opened on */
    size_t bytes;    /* each rank's part, rounded up to a page */
    void *map;       /* this process's mapping of all parts: size * bytes */
};

/* Collective over x: every rank gets a part of its own and sees every rank's (mp_shm_part); each
 * part has the largest `bytes` any rank asked for. `use` names what it is for in the warning when
 * /dev/shm cannot hold it ("the replicas' reduction").
 * *s = NULL, nothing allocated and no error, when the ranks span hosts, when want is 0 on any
 * rank, or when the host's shared memory (/dev/shm) cannot hold them all: the caller keeps to
 * messages. The memory is zeroed, mapped and its pages reserved before this returns, and its name
 * is gone from /dev/shm: nothing is left behind however the job ends. No page is in this
 * process's page tables yet: a process's resident size counts the pages it touched, so each
 * caller touches what it will use (mp_shm_touch) and is charged for that only. */
int mp_shm_open(struct mp_xport *x, size_t bytes, int want, const char *use, struct mp_shm **s,
                struct mp_err *err);
/* Maps the pages of [at, at + bytes) into this process now (a read of each), so the first
 * messages do not pay the page faults and the process's peak RSS shows them from the start. */
void mp_shm_touch(const void *at, size_t bytes);
/* Rank q's part, as this process sees it. */
void *mp_shm_part(const struct mp_shm *s, int q);
/* Copies n floats into shared memory a peer will read, with non-temporal stores on x86-64 (the
 * lines go to memory, not into this core's cache; mp_xport_shm.c says why); same bytes as memcpy.
 * The stores are weakly ordered: mp_shm_publish() before the message that says they are there. */
void mp_shm_write(float *dst, const float *src, size_t n);
/* Orders every earlier mp_shm_write and store before any later store (the message's). */
void mp_shm_publish(void);
/* Local: unmaps (no peer is involved, so also after a failure). NULL is a no-op. */
void mp_shm_close(struct mp_shm *s);

#endif
