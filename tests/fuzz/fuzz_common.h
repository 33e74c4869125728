/* Shared by the fuzz targets (tests/fuzz/fuzz_<parser>.c) and by tests/test_fuzz_regressions.c,
 * which includes the targets to replay their corpora. It hands fuzz bytes to parsers that only
 * take a path, through one memfd per process (no disk writes, no temp-file races between parallel
 * jobs), and checks the error contract every parser shares. It parses nothing itself. Needs
 * _GNU_SOURCE (memfd_create), defined by the including file before any system header. */
#ifndef MP_FUZZ_COMMON_H
#define MP_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mp_err.h"

/* The bytes as a readable file: /proc/self/fd/N of a memfd rewritten on every call. Opening that
 * path gives a fresh file description at offset 0, exactly like opening a regular file. */
static inline const char *fuzz_as_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("mpipe-fuzz", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) {
        perror("fuzz_as_file: ftruncate (did the code under test close our descriptor?)");
        abort();
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = pwrite(fd, data + off, size - off, (off_t)off);
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    return path;
}

/* A rejection must be a malformed-input, I/O (truncation) or out-of-memory error with a message
 * that names the file: anything else (an internal error, an empty message) is a bug the fuzzer
 * should report as a crash. */
static inline void fuzz_check_rejection(const struct mp_err *err, const char *name)
{
    int code_ok = err->code == MP_ERR_INPUT || err->code == MP_ERR_IO || err->code == MP_ERR_NOMEM;
    if (!code_ok || strncmp(err->msg, name, strlen(name)) != 0) {
        fprintf(stderr, "bad rejection: status %d, message '%s' (expected it to start with '%s')\n",
                (int)err->code, err->msg, name);
        abort();
    }
}

#endif
