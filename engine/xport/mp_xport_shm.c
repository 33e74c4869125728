/* Shared memory of one host's ranks (mp_xport_shm.h): rank 0 creates a POSIX shared-memory file
 * sized for every rank's part and reserves its pages (posix_fallocate: a /dev/shm too small for it
 * fails here, not with a SIGBUS at first touch), tells the others its name, all map it, and once
 * every rank holds a mapping rank 0 removes the name. Only the public transport is used. */
#define _GNU_SOURCE /* MAP_POPULATE */
#include "mp_xport_shm.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct offer {
    char name[64]; /* "" when rank 0 could not create it */
};

static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

/* Rank 0: a new file of `total` reserved bytes named into o->name, or o->name "" when it cannot. */
static void create(struct offer *o, size_t total)
{
    static unsigned seq;
    snprintf(o->name, sizeof o->name, "/mpipe-%ld-%u", (long)getpid(), seq++);
    int fd = shm_open(o->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0 && posix_fallocate(fd, 0, (off_t)total) == 0) {
        close(fd);
        return;
    }
    if (fd >= 0) {
        close(fd);
        shm_unlink(o->name);
    }
    o->name[0] = '\0';
}

static void *map_named(const char *name, size_t total)
{
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0)
        return NULL;
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

int mp_shm_open(struct mp_xport *x, size_t bytes, int want, struct mp_shm **s,
                struct mp_err *err)
{
    *s = NULL;
    int size = mp_xport_size(x), rank = mp_xport_rank(x), one_host = 0;
    if (size < 2)
        return 0;
    if (mp_xport_one_host(x, &one_host, err))
        return -1;
    double no = !want || !one_host;
    if (mp_xport_allreduce_max(x, &no, 1, "whether the replicas share memory", err))
        return -1;
    if (no > 0)
        return 0;
    size_t part = page_round(bytes ? bytes : 1), total = part * (size_t)size;
    struct offer o;
    memset(&o, 0, sizeof o);
    if (rank == 0)
        create(&o, total);
    if (mp_xport_bcast(x, &o, sizeof o, 0, "the name of the replicas' shared memory", err)) {
        if (rank == 0 && o.name[0])
            shm_unlink(o.name);
        return -1;
    }
    void *map = o.name[0] ? map_named(o.name, total) : NULL;
    double failed = !map;
    int rc = mp_xport_allreduce_max(x, &failed, 1, "the replicas' shared-memory mappings", err);
    if (rank == 0 && o.name[0])
        shm_unlink(o.name); /* every rank has mapped it, or the attempt is over */
    if (rc || failed > 0) {
        if (map)
            munmap(map, total);
        if (!rc && rank == 0)
            fprintf(stderr, "mpipe: warning: the host's shared memory (/dev/shm) cannot hold "
                    "%.1f MB for the replicas' reduction; it goes through MPI messages "
                    "(slower; a larger /dev/shm, e.g. docker --shm-size, restores it)\n",
                    (double)total / 1e6);
        return rc;
    }
    if (!(*s = malloc(sizeof **s))) {
        munmap(map, total);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    (*s)->size = size, (*s)->bytes = part, (*s)->map = map;
    return 0;
}

void *mp_shm_part(const struct mp_shm *s, int q)
{
    return (char *)s->map + (size_t)q * s->bytes;
}

void mp_shm_close(struct mp_shm *s)
{
    if (!s)
        return;
    munmap(s->map, s->bytes * (size_t)s->size);
    free(s);
}
