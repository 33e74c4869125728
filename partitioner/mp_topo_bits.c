/* hwloc bitmaps (cpusets, nodesets) for the topology check (mp_topo_xml.c): hwloc's text form
 * parsed into 32-bit words, and the few set operations the check needs. No hwloc here: these are
 * the bitmaps of a file hwloc has not read yet. */
#include "mp_topo_bits.h"

#include <stdlib.h>
#include <string.h>

void mp__bits_free(struct mp_bits *b)
{
    free(b->w);
    b->w = NULL;
    b->n = 0;
}

int mp__bits_get(const struct mp_bits *b, size_t bit)
{
    return bit / 32 < b->n && (b->w[bit / 32] >> (bit % 32) & 1u);
}

int mp__bits_subset(const struct mp_bits *a, const struct mp_bits *b)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->w[i] & ~(i < b->n ? b->w[i] : 0u))
            return 0;
    return 1;
}

int mp__bits_intersects(const struct mp_bits *a, const struct mp_bits *b)
{
    for (size_t i = 0; i < a->n && i < b->n; i++)
        if (a->w[i] & b->w[i])
            return 1;
    return 0;
}

int mp__bits_equal(const struct mp_bits *a, const struct mp_bits *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->w, b->w, a->n * sizeof *a->w) == 0);
}

/* Exactly one bit, BIT. */
int mp__bits_is_only(const struct mp_bits *b, size_t bit)
{
    if (b->n != bit / 32 + 1 || b->w[bit / 32] != 1u << (bit % 32))
        return 0;
    for (size_t i = 0; i + 1 < b->n; i++)
        if (b->w[i])
            return 0;
    return 1;
}

int mp__bits_or(struct mp_bits *dst, const struct mp_bits *src)
{
    if (src->n > dst->n) {
        uint32_t *w = realloc(dst->w, src->n * sizeof *w);
        if (!w)
            return -1;
        memset(w + dst->n, 0, (src->n - dst->n) * sizeof *w);
        dst->w = w;
        dst->n = src->n;
    }
    for (size_t i = 0; i < src->n; i++)
        dst->w[i] |= src->w[i];
    return 0;
}

int mp__bits_set(struct mp_bits *b, size_t bit)
{
    size_t need = bit / 32 + 1;
    if (need > b->n) {
        uint32_t *w = realloc(b->w, need * sizeof *w);
        if (!w)
            return -1;
        memset(w + b->n, 0, (need - b->n) * sizeof *w);
        b->w = w;
        b->n = need;
    }
    b->w[bit / 32] |= 1u << (bit % 32);
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Infinite sets ("0xf...f") fail the "0x" + at most 8 digits rule: no machine has them. */
int mp__bits_parse(const char *s, struct mp_bits *b)
{
    b->w = NULL;
    b->n = 0;
    size_t n_tok = 1;
    for (const char *p = s; *p; p++)
        n_tok += *p == ',';
    if (n_tok > MP_BITS_MAX_WORDS)
        return -2;
    uint32_t *w = calloc(n_tok, sizeof *w);
    if (!w)
        return -2;
    const char *p = s;
    for (size_t t = 0; t < n_tok; t++) {
        size_t word = n_tok - 1 - t;
        if (*p == ',' && t > 0 && t + 1 < n_tok) { /* an empty word */
            p++;
            continue;
        }
        if (p[0] != '0' || (p[1] != 'x' && p[1] != 'X'))
            goto bad;
        p += 2;
        int digits = 0;
        for (int v; (v = hexval(*p)) >= 0; p++, digits++)
            w[word] = w[word] << 4 | (uint32_t)v;
        if (digits < 1 || digits > 8 || (*p != (t + 1 < n_tok ? ',' : '\0')))
            goto bad;
        p += *p == ',';
    }
    b->n = n_tok;
    while (b->n > 0 && w[b->n - 1] == 0)
        b->n--;
    b->w = w;
    return 0;
bad:
    free(w);
    return -1;
}

