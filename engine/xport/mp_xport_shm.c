/* Shared memory of one host's ranks (mp_xport_shm.h): rank 0 creates a POSIX shared-memory file
 * sized for every rank's part and reserves its pages (posix_fallocate: a /dev/shm too small for it
 * fails here, not with a SIGBUS at first touch), tells the others its name, all map it, and once
 * every rank holds a mapping rank 0 removes the name. Only the public transport is used. */
#include "mp_xport_shm.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

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
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

int mp_shm_open(struct mp_xport *x, size_t bytes, int want, const char *use, struct mp_shm **s,
                struct mp_err *err)
{
    *s = NULL;
    int size = mp_xport_size(x), rank = mp_xport_rank(x), one_host = 0;
    if (size < 2)
        return 0;
    if (mp_xport_one_host(x, &one_host, err))
        return -1;
    double no = !want || !one_host;
    double most = (double)bytes; /* every rank's part the size of the largest */
    if (mp_xport_allreduce_max(x, &no, 1, "whether the ranks share memory", err) ||
        (no == 0 && mp_xport_allreduce_max(x, &most, 1, "the size of the shared memory", err)))
        return -1;
    if (no > 0)
        return 0;
    bytes = (size_t)most;
    size_t part = page_round(bytes ? bytes : 1), total = part * (size_t)size;
    struct offer o;
    memset(&o, 0, sizeof o);
    if (rank == 0)
        create(&o, total);
    if (mp_xport_bcast(x, &o, sizeof o, 0, "the name of the ranks' shared memory", err)) {
        if (rank == 0 && o.name[0])
            shm_unlink(o.name);
        return -1;
    }
    void *map = o.name[0] ? map_named(o.name, total) : NULL;
    double failed = !map;
    int rc = mp_xport_allreduce_max(x, &failed, 1, "the ranks' shared-memory mappings", err);
    if (rank == 0 && o.name[0])
        shm_unlink(o.name); /* every rank has mapped it, or the attempt is over */
    if (rc || failed > 0) {
        if (map)
            munmap(map, total);
        if (!rc && rank == 0)
            fprintf(stderr, "mpipe: warning: the host's shared memory (/dev/shm) cannot hold "
                    "%.1f MB for %s; it goes through MPI messages "
                    "(slower; a larger /dev/shm, e.g. docker --shm-size, restores it)\n",
                    (double)total / 1e6, use);
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

void mp_shm_touch(const void *at, size_t bytes)
{
    if (!bytes)
        return;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    const volatile char *p = (const volatile char *)((uintptr_t)at / pg * pg);
    const char *end = (const char *)at + bytes;
    for (; (const char *)p < end; p += pg)
        (void)*p;
}

void mp_shm_close(struct mp_shm *s)
{
    if (!s)
        return;
    munmap(s->map, s->bytes * (size_t)s->size);
    free(s);
}

/* A peer reads what is written here, and has read the same lines a step before: they sit in its
 * cache, and an ordinary store first takes each line back from it. On a 2-core EPYC Zen4 VM that
 * took 10x longer in about half the jobs (the same binary and plan, job after job; it stays so
 * for the whole job): 2 replicas of tiny_mlp.mp copied their 100 KB chunk into shared memory in
 * 3 µs in some jobs and 23-46 µs in others, and adding and publishing the sums took 8 against
 * 29-54; training ran 640-665k samples/s against 490-570k. Non-temporal stores skip taking the
 * lines: 4 µs and 17-21 µs in every job, 600-645k samples/s (the peer then reads the lines from
 * memory, which costs those jobs that were fast 2-5%). With models/mlp.mp's 4 MB buckets they
 * are faster in every job: the three copies of a bucket took 680 µs and now 525. */
void mp_shm_write(float *dst, const float *src, size_t n)
{
#if defined(__x86_64__)
    size_t i = 0;
    for (; i < n && ((uintptr_t)(dst + i) & 15); i++)
        dst[i] = src[i];
    for (; i + 16 <= n; i += 16) { /* a whole 64-byte line per round once aligned to it */
        _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
        _mm_stream_ps(dst + i + 4, _mm_loadu_ps(src + i + 4));
        _mm_stream_ps(dst + i + 8, _mm_loadu_ps(src + i + 8));
        _mm_stream_ps(dst + i + 12, _mm_loadu_ps(src + i + 12));
    }
    for (; i < n; i++)
        dst[i] = src[i];
#else
    memcpy(dst, src, n * sizeof(float));
#endif
}

void mp_shm_publish(void)
{
#if defined(__x86_64__)
    _mm_sfence(); /* non-temporal stores are not ordered by the fence below */
#endif
    atomic_thread_fence(memory_order_release);
}
