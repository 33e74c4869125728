/* Internal to the model spec parser: mp_spec_block.c reads the file's lines and its structure
 * (`repeat N` … `end`, `residual` … `end`, partition units), mp_spec.c turns one layer line into a
 * planned layer. Not part of the public API (mp_layer.h is). */
#ifndef MP_SPEC_H
#define MP_SPEC_H

#include <stdint.h>

#include "mp_layer.h"

#define SPEC_MAX_LINE 4096 /* bytes, excluding the newline */

struct spec {
    struct mp_model *m;
    const char *name;
    struct mp_err *err;
    int n_cap;
    uint64_t digest;   /* FNV-1a 64, running over the canonical text */
    int unit;          /* the partition unit the next layer joins (mp_spec_block.c decides) */
};

int mp__spec_fail(struct spec *s, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mp__spec_digest(struct spec *s, const char *text);
/* Text files only: no NUL or control bytes, valid UTF-8. */
int mp__spec_check_bytes(struct spec *s, int line, const char *text, size_t len);
/* Parses and plans one layer line (comment already cut, not blank) as the next layer. */
int mp__spec_layer(struct spec *s, int line, char *text);

#endif
