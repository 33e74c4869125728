/* Checks an hwloc XML topology with libxml2 before hwloc reads it, and rewrites what placement needs
 * as a canonical hwloc 2 document. hwloc 2.9's import trusts its input: an object whose
 * complete_cpuset or nodeset is missing or mangled makes it dereference a NULL bitmap
 * (tests/fuzz/upstream/hwloc/). The rules are what `lstopo --of xml` writes: every CPU or memory
 * object carries the four sets, well formed, inside its parent's; a PU's sets are its own bit;
 * siblings do not overlap; a non-PU CPU object's cpuset is the union of its children's. I/O and
 * Misc objects, distances, memory attributes and most infos are dropped: placement never reads
 * them, and hwloc never sees them. Errors are "FILE:LINE: object: what". No hwloc here. */
#include "mp_topo_xml.h"

#include "mp_topo_bits.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#define MAX_FILE_BYTES (64u << 20) /* lstopo exports of the largest machines are a few MB */
#define MAX_DEPTH 64               /* real trees are ~12 deep (Machine ... L1i, Core, PU) */
#define MAX_OBJECTS (1 << 20)

/* A growing output string; a failed allocation sets oom and drops what follows. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
        } else if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        } else {
            size_t cap = (b->cap + (size_t)n + 1) * 2;
            char *p = realloc(b->p, cap);
            if (!p)
                b->oom = 1;
            else
                b->p = p, b->cap = cap;
        }
    }
}

static void sb_bitmap(struct sbuf *b, const char *name, const struct mp_bits *m)
{
    sb_printf(b, " %s=\"", name);
    if (m->n == 0)
        sb_printf(b, "0x0");
    for (size_t i = m->n; i-- > 0;)
        sb_printf(b, "0x%08x%s", (unsigned)m->w[i], i ? "," : "");
    sb_printf(b, "\"");
}

/* Values were checked to hold no control characters; the five XML specials are escaped. */
static void sb_escaped(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&apos;"); break;
        default: sb_printf(b, "%c", *s);
        }
    }
}

enum cls { CLS_CPU, CLS_MEMORY, CLS_DROP };

/* hwloc 2 object types as lstopo writes them; emit is what hwloc is given ("" = splice: the
 * object is checked, its children take its place). */
static const struct type_row {
    const char *name, *emit;
    enum cls cls;
    int cache_depth; /* 1..5 for caches, 0 otherwise */
    int icache;
} types[] = {
    {"Machine", "Machine", CLS_CPU, 0, 0},   {"Package", "Package", CLS_CPU, 0, 0},
    {"Die", "Die", CLS_CPU, 0, 0},           {"Core", "Core", CLS_CPU, 0, 0},
    {"PU", "PU", CLS_CPU, 0, 0},             {"Group", "Group", CLS_CPU, 0, 0},
    {"L1Cache", "L1Cache", CLS_CPU, 1, 0},   {"L2Cache", "L2Cache", CLS_CPU, 2, 0},
    {"L3Cache", "L3Cache", CLS_CPU, 3, 0},   {"L4Cache", "L4Cache", CLS_CPU, 4, 0},
    {"L5Cache", "L5Cache", CLS_CPU, 5, 0},   {"L1iCache", "L1iCache", CLS_CPU, 1, 1},
    {"L2iCache", "L2iCache", CLS_CPU, 2, 1}, {"L3iCache", "L3iCache", CLS_CPU, 3, 1},
    {"NUMANode", "NUMANode", CLS_MEMORY, 0, 0}, {"MemCache", "", CLS_MEMORY, 0, 0},
    {"Bridge", NULL, CLS_DROP, 0, 0},        {"PCIDev", NULL, CLS_DROP, 0, 0},
    {"OSDev", NULL, CLS_DROP, 0, 0},         {"Misc", NULL, CLS_DROP, 0, 0},
};

struct check {
    const char *path;
    struct mp_err *err;
    struct sbuf out;
    struct mp_bits pus, nodes; /* os_index of every PU and NUMA node seen: each appears once */
    struct mp_bits root_cpuset;
    long n_objects, n_numa;
};

/* One checked object: its type and its four sets. */
struct xobj {
    const struct type_row *type;
    xmlNodePtr node;
    long os_index;
    long local_memory; /* bytes (NUMA nodes, the root), -1 when not given */
    struct mp_bits set[4];
};
enum { CPUSET, COMPLETE_CPUSET, NODESET, COMPLETE_NODESET };
static const char *const set_names[4] = {"cpuset", "complete_cpuset", "nodeset",
                                         "complete_nodeset"};

/* What the children of one object add up to: their cpusets and nodesets so far. */
struct sib {
    struct mp_bits cpus, complete_cpus, nodes;
    int n_cpu, n_memory;
};

static void sib_free(struct sib *s)
{
    mp__bits_free(&s->cpus);
    mp__bits_free(&s->complete_cpus);
    mp__bits_free(&s->nodes);
}

static int fail_at(struct check *c, xmlNodePtr n, const struct xobj *o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(struct check *c, xmlNodePtr n, const struct xobj *o, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char obj[64] = "";
    if (o && o->os_index >= 0)
        snprintf(obj, sizeof obj, "%s object (os_index %ld): ", o->type->name, o->os_index);
    else if (o)
        snprintf(obj, sizeof obj, "%s object: ", o->type->name);
    return MP_FAIL(c->err, INPUT, "%s:%ld: %s%s", c->path, n ? xmlGetLineNo(n) : 0L, obj, what);
}

/* The attribute's value (libxml2 allocates; the caller frees), NULL when absent. */
static char *prop(xmlNodePtr n, const char *name)
{
    return (char *)xmlGetProp(n, (const xmlChar *)name);
}

static int is_name(xmlNodePtr n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && !n->ns && strcmp((const char *)n->name, name) == 0;
}

/* A decimal integer in [lo, hi] (no sign unless lo < 0, no spaces). */
static int parse_int(const char *s, long lo, long hi, long *v)
{
    const char *p = s + (lo < 0 && *s == '-');
    if (!*p || strlen(p) > 18)
        return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return -1;
    long x = strtol(s, NULL, 10);
    if (x < lo || x > hi)
        return -1;
    *v = x;
    return 0;
}

/* Free text hwloc would store (info values): printable, any UTF-8, no control characters. */
static int plain_text(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static const struct type_row *find_type(const char *name)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}

static int is_type(const struct xobj *o, const char *name)
{
    return strcmp(o->type->name, name) == 0;
}

static int parse_set(struct check *c, const struct xobj *o, const char *name, const char *v,
                     struct mp_bits *b)
{
    mp__bits_free(b);
    int rc = mp__bits_parse(v, b);
    if (rc == -2)
        return fail_at(c, o->node, o, "%s has more than %d words (65536 bits)", name, MP_BITS_MAX_WORDS);
    if (rc < 0)
        return fail_at(c, o->node, o,
                       "%s=\"%.40s\" is not an hwloc bitmap (like 0x0000000f or 0x00000001,,0x0)",
                       name, v);
    return 0;
}

#define BIG 999999999999999999L
static const struct int_attr {
    const char *name;
    long lo, hi;
} int_attrs[] = {
    {"os_index", 0, MP_BITS_MAX_WORDS * 32 - 1}, {"gp_index", 0, BIG},     {"cache_size", 0, BIG},
    {"depth", 0, 1000},                  {"cache_linesize", 0, BIG}, {"cache_associativity", -1, BIG},
    {"cache_type", 0, 2},                {"local_memory", 0, BIG}, {"kind", 0, BIG},
    {"subkind", 0, BIG},                 {"dont_merge", 0, 1},
};

/* One attribute of a CPU or memory object; the sets land in o, the root's allowed sets in
 * allowed[2]. Everything else is checked and not passed on. */
static int object_attr(struct check *c, struct xobj *o, struct mp_bits allowed[2], const char *name,
                       const char *v)
{
    if (strcmp(name, "type") == 0)
        return 0;
    for (int k = 0; k < 4; k++)
        if (strcmp(name, set_names[k]) == 0)
            return parse_set(c, o, name, v, &o->set[k]);
    if (allowed && strcmp(name, "allowed_cpuset") == 0)
        return parse_set(c, o, name, v, &allowed[0]);
    if (allowed && strcmp(name, "allowed_nodeset") == 0)
        return parse_set(c, o, name, v, &allowed[1]);
    if (strcmp(name, "name") == 0 || strcmp(name, "subtype") == 0)
        return plain_text(v) ? 0 : fail_at(c, o->node, o, "%s holds control characters", name);
    for (size_t i = 0; i < sizeof int_attrs / sizeof int_attrs[0]; i++) {
        const struct int_attr *a = &int_attrs[i];
        long x;
        if (strcmp(name, a->name) != 0)
            continue;
        if (parse_int(v, a->lo, a->hi, &x) < 0)
            return fail_at(c, o->node, o, "%s=\"%.30s\" is not an integer in [%ld, %ld]", name, v,
                           a->lo, a->hi);
        if (strcmp(name, "local_memory") == 0)
            o->local_memory = x; /* the planner's default memory per rank (hwloc's total) */
        if (o->type->cache_depth && strcmp(name, "depth") == 0 && x != o->type->cache_depth)
            return fail_at(c, o->node, o, "depth=\"%ld\" contradicts the type", x);
        if (o->type->cache_depth && strcmp(name, "cache_type") == 0 && (x == 2) != o->type->icache)
            return fail_at(c, o->node, o, "cache_type=\"%ld\" contradicts the type", x);
        return 0;
    }
    return fail_at(c, o->node, o, "unknown attribute '%s' (export topologies with "
                                  "`lstopo-no-graphics --of xml FILE.xml`)", name);
}

/* Attributes, then what every CPU or memory object needs: the four sets, each inside the
 * complete one and inside the parent's; a PU's and a NUMA node's own bit. */
static int object_sets(struct check *c, struct xobj *o, const struct xobj *parent,
                       struct mp_bits allowed[2])
{
    char *os = prop(o->node, "os_index");
    long x;
    if (os && parse_int(os, 0, MP_BITS_MAX_WORDS * 32 - 1, &x) == 0)
        o->os_index = x;
    xmlFree(os);
    for (xmlAttrPtr a = o->node->properties; a; a = a->next) {
        char *v = (char *)xmlNodeListGetString(o->node->doc, a->children, 1);
        int rc = a->ns ? fail_at(c, o->node, o, "unknown attribute '%s:%s'", a->ns->prefix
                                 ? (const char *)a->ns->prefix : "", (const char *)a->name)
                       : object_attr(c, o, allowed, (const char *)a->name, v ? v : "");
        xmlFree(v);
        if (rc < 0)
            return -1;
    }
    for (int k = 0; k < 4; k++)
        if (!o->set[k].w)
            return fail_at(c, o->node, o, "%s is missing (every CPU and memory object has cpuset, "
                           "complete_cpuset, nodeset and complete_nodeset)", set_names[k]);
    if (!mp__bits_subset(&o->set[CPUSET], &o->set[COMPLETE_CPUSET]) ||
        !mp__bits_subset(&o->set[NODESET], &o->set[COMPLETE_NODESET]))
        return fail_at(c, o->node, o, "its cpuset or nodeset is not inside the complete one");
    for (int k = 0; parent && k < 4; k++)
        if (!mp__bits_subset(&o->set[k], &parent->set[k]))
            return fail_at(c, o->node, o, "%s is not inside its parent's (line %ld)",
                           set_names[k], xmlGetLineNo(parent->node));
    int pu = is_type(o, "PU"), node = is_type(o, "NUMANode");
    if ((pu || node) && o->os_index < 0)
        return fail_at(c, o->node, o, "os_index is missing");
    int a = pu ? CPUSET : NODESET;
    if ((pu || node) && !(mp__bits_is_only(&o->set[a], (size_t)o->os_index) &&
                          mp__bits_is_only(&o->set[a + 1], (size_t)o->os_index)))
        return fail_at(c, o->node, o, "%s and %s must be exactly bit %ld", set_names[a],
                       set_names[a + 1], o->os_index);
    struct mp_bits *seen = pu ? &c->pus : &c->nodes;
    if ((pu || node) && mp__bits_get(seen, (size_t)o->os_index))
        return fail_at(c, o->node, o, "a second %s with os_index %ld", o->type->name, o->os_index);
    if ((pu || node) && mp__bits_set(seen, (size_t)o->os_index) < 0)
        return MP_FAIL(c->err, NOMEM, "%s: out of memory", c->path);
    c->n_numa += node;
    return 0;
}

/* Where an object may sit (hwloc 2): CPU objects under CPU objects; memory objects under CPU
 * objects or a MemCache; nothing but I/O and Misc (dropped) under a PU or a NUMA node. */
static int check_place(struct check *c, const struct xobj *o, const struct xobj *parent)
{
    if (!parent)
        return is_type(o, "Machine") ? 0 : fail_at(c, o->node, o, "the top object must be the Machine");
    const char *p = parent->type->name;
    if (strcmp(p, "PU") == 0 || strcmp(p, "NUMANode") == 0)
        return fail_at(c, o->node, o, "a %s cannot contain it (line %ld)", p,
                       xmlGetLineNo(parent->node));
    if (o->type->cls == CLS_CPU && parent->type->cls != CLS_CPU)
        return fail_at(c, o->node, o, "a CPU object cannot be inside the %s of line %ld", p,
                       xmlGetLineNo(parent->node));
    return 0;
}

/* Siblings never overlap: CPU objects by complete_cpuset, memory objects by complete_nodeset. */
static int add_sibling(struct check *c, const struct xobj *o, struct sib *sib)
{
    if (o->type->cls == CLS_CPU) {
        if (mp__bits_intersects(&o->set[COMPLETE_CPUSET], &sib->complete_cpus))
            return fail_at(c, o->node, o, "its complete_cpuset overlaps a sibling's");
        sib->n_cpu++;
        if (mp__bits_or(&sib->cpus, &o->set[CPUSET]) < 0 ||
            mp__bits_or(&sib->complete_cpus, &o->set[COMPLETE_CPUSET]) < 0)
            return MP_FAIL(c->err, NOMEM, "%s: out of memory", c->path);
        return 0;
    }
    if (mp__bits_intersects(&o->set[COMPLETE_NODESET], &sib->nodes))
        return fail_at(c, o->node, o, "its complete_nodeset overlaps a sibling's");
    sib->n_memory++;
    return mp__bits_or(&sib->nodes, &o->set[COMPLETE_NODESET]) < 0
               ? MP_FAIL(c->err, NOMEM, "%s: out of memory", c->path) : 0;
}

/* An <info name value/> (also inside cpukinds): both attributes, plain text. *name and *value
 * are libxml2's (the caller frees them). */
static int check_info(struct check *c, xmlNodePtr n, char **name, char **value)
{
    *name = prop(n, "name");
    *value = prop(n, "value");
    for (xmlAttrPtr a = n->properties; a; a = a->next)
        if (a->ns || (strcmp((const char *)a->name, "name") && strcmp((const char *)a->name, "value")))
            return fail_at(c, n, NULL, "<info> has an unknown attribute '%s'", a->name);
    if (!*name || !*value || !plain_text(*name) || !plain_text(*value))
        return fail_at(c, n, NULL, "<info> needs a name and a value, in plain text");
    return 0;
}

/* The non-object children of an object: infos (the root's HostName is kept), page types (NUMA
 * nodes and the root), userdata (ignored). Anything else is not hwloc 2. */
static int object_extras(struct check *c, const struct xobj *o, int root, char **host)
{
    for (xmlNodePtr ch = o->node->children; ch; ch = ch->next) {
        if (ch->type != XML_ELEMENT_NODE || is_name(ch, "object") || is_name(ch, "userdata"))
            continue;
        if (is_name(ch, "info")) {
            char *name, *value;
            int rc = check_info(c, ch, &name, &value);
            if (rc == 0 && root && strcmp(name, "HostName") == 0 && !*host)
                *host = value, value = NULL;
            xmlFree(name);
            xmlFree(value);
            if (rc < 0)
                return -1;
        } else if (!is_name(ch, "page_type") || !(root || is_type(o, "NUMANode"))) {
            return fail_at(c, ch, o, "unexpected element <%s>", (const char *)ch->name);
        }
    }
    return 0;
}

static void emit_open(struct check *c, const struct xobj *o, const struct mp_bits allowed[2],
                      const char *host)
{
    struct sbuf *b = &c->out;
    sb_printf(b, "<object type=\"%s\"", o->type->emit);
    if (o->os_index >= 0 && (is_type(o, "PU") || is_type(o, "NUMANode")))
        sb_printf(b, " os_index=\"%ld\"", o->os_index);
    for (int k = 0; k < 4; k++)
        sb_bitmap(b, set_names[k], &o->set[k]);
    if (allowed) {
        sb_bitmap(b, "allowed_cpuset", allowed[0].w ? &allowed[0] : &o->set[CPUSET]);
        sb_bitmap(b, "allowed_nodeset", allowed[1].w ? &allowed[1] : &o->set[NODESET]);
    }
    if (o->type->cache_depth)
        sb_printf(b, " depth=\"%d\" cache_type=\"%d\"", o->type->cache_depth,
                  o->type->icache ? 2 : 0);
    if (o->local_memory >= 0 && (allowed || is_type(o, "NUMANode")))
        sb_printf(b, " local_memory=\"%ld\"", o->local_memory);
    sb_printf(b, ">\n");
    if (host) {
        sb_printf(b, "<info name=\"HostName\" value=\"");
        sb_escaped(b, host);
        sb_printf(b, "\"/>\n");
    }
}

static int check_object(struct check *c, xmlNodePtr n, const struct xobj *parent, struct sib *sib,
                        int depth);

/* The child objects, then what they add up to: a CPU object other than a PU holds PUs, and its
 * cpuset is exactly theirs. */
static int object_children(struct check *c, const struct xobj *o, int depth)
{
    struct sib mine = {0};
    int rc = 0;
    for (xmlNodePtr ch = o->node->children; ch && rc == 0; ch = ch->next)
        if (is_name(ch, "object"))
            rc = check_object(c, ch, o, &mine, depth + 1);
    if (rc == 0 && o->type->cls == CLS_CPU && !is_type(o, "PU")) {
        if (mine.n_cpu == 0)
            rc = fail_at(c, o->node, o, "contains no PU (in an lstopo export every CPU object "
                                        "ends in PUs)");
        else if (!mp__bits_equal(&o->set[CPUSET], &mine.cpus))
            rc = fail_at(c, o->node, o, "its cpuset is not the union of its children's");
    }
    sib_free(&mine);
    return rc;
}

static int check_object(struct check *c, xmlNodePtr n, const struct xobj *parent, struct sib *sib,
                        int depth)
{
    struct xobj o = {.node = n, .os_index = -1, .local_memory = -1};
    if (depth > MAX_DEPTH || ++c->n_objects > MAX_OBJECTS)
        return fail_at(c, n, NULL, "more than %d objects, or nested more than %d deep",
                       MAX_OBJECTS, MAX_DEPTH);
    char *type = prop(n, "type");
    o.type = type ? find_type(type) : NULL;
    if (!o.type) {
        fail_at(c, n, NULL, "object type '%.40s' is not one of hwloc 2's", type ? type : "(none)");
        xmlFree(type);
        return -1;
    }
    xmlFree(type);
    if (o.type->cls == CLS_DROP)
        return 0; /* I/O and Misc objects: placement never reads them */
    struct mp_bits allowed[2] = {{0}};
    char *host = NULL;
    int rc = check_place(c, &o, parent);
    if (rc == 0)
        rc = object_sets(c, &o, parent, parent ? NULL : allowed);
    if (rc == 0 && !parent && (!mp__bits_subset(&allowed[0], &o.set[COMPLETE_CPUSET]) ||
                               !mp__bits_subset(&allowed[1], &o.set[COMPLETE_NODESET])))
        rc = fail_at(c, n, &o, "allowed_cpuset or allowed_nodeset is not inside the complete one");
    if (rc == 0 && !parent && mp__bits_or(&c->root_cpuset, &o.set[COMPLETE_CPUSET]) < 0)
        rc = MP_FAIL(c->err, NOMEM, "%s: out of memory", c->path);
    if (rc == 0 && sib)
        rc = add_sibling(c, &o, sib);
    if (rc == 0)
        rc = object_extras(c, &o, !parent, &host);
    if (rc == 0 && o.type->emit[0])
        emit_open(c, &o, parent ? NULL : allowed, host);
    if (rc == 0)
        rc = object_children(c, &o, depth);
    if (rc == 0 && o.type->emit[0])
        sb_printf(&c->out, "</object>\n");
    xmlFree(host);
    for (int k = 0; k < 4; k++)
        mp__bits_free(&o.set[k]);
    mp__bits_free(&allowed[0]);
    mp__bits_free(&allowed[1]);
    return rc;
}

/* A <cpukind cpuset forced_efficiency> with infos: hybrid CPUs' core kinds (mp_topo.c reads
 * LinuxCapacity and FrequencyMaxMHz). Kinds are disjoint and inside the machine. */
static int check_cpukind(struct check *c, xmlNodePtr n, struct mp_bits *kinds)
{
    struct xobj o = {.node = n, .os_index = -1, .local_memory = -1,
                     .type = &(struct type_row){"cpukind", "", 0, 0, 0}};
    long eff = -1;
    int rc = 0;
    for (xmlAttrPtr a = n->properties; a && rc == 0; a = a->next) {
        char *v = (char *)xmlNodeListGetString(n->doc, a->children, 1);
        const char *name = (const char *)a->name;
        if (!a->ns && strcmp(name, "cpuset") == 0)
            rc = parse_set(c, &o, name, v ? v : "", &o.set[CPUSET]);
        else if (!a->ns && strcmp(name, "forced_efficiency") == 0)
            rc = parse_int(v ? v : "", -1, 1000000000L, &eff) < 0
                     ? fail_at(c, n, &o, "forced_efficiency is not an integer") : 0;
        else
            rc = fail_at(c, n, &o, "unknown attribute '%s'", name);
        xmlFree(v);
    }
    if (rc == 0 && (!o.set[CPUSET].n || !mp__bits_subset(&o.set[CPUSET], &c->root_cpuset) ||
                    mp__bits_intersects(&o.set[CPUSET], kinds)))
        rc = fail_at(c, n, &o, "its cpuset must be non-empty, inside the Machine's and apart from "
                               "the other kinds'");
    if (rc == 0 && mp__bits_or(kinds, &o.set[CPUSET]) < 0)
        rc = MP_FAIL(c->err, NOMEM, "%s: out of memory", c->path);
    if (rc == 0) {
        sb_printf(&c->out, "<cpukind");
        sb_bitmap(&c->out, "cpuset", &o.set[CPUSET]);
        sb_printf(&c->out, " forced_efficiency=\"%ld\">\n", eff);
    }
    for (xmlNodePtr ch = n->children; ch && rc == 0; ch = ch->next) {
        char *name = NULL, *value = NULL;
        if (ch->type != XML_ELEMENT_NODE)
            continue;
        if (!is_name(ch, "info"))
            rc = fail_at(c, ch, &o, "unexpected element <%s>", (const char *)ch->name);
        else if ((rc = check_info(c, ch, &name, &value)) == 0 &&
                 (!strcmp(name, "LinuxCapacity") || !strcmp(name, "FrequencyMaxMHz"))) {
            sb_printf(&c->out, "<info name=\"%s\" value=\"", name);
            sb_escaped(&c->out, value);
            sb_printf(&c->out, "\"/>\n");
        }
        xmlFree(name);
        xmlFree(value);
    }
    if (rc == 0)
        sb_printf(&c->out, "</cpukind>\n");
    mp__bits_free(&o.set[CPUSET]);
    return rc;
}

/* <topology version="2.0">: one Machine object, then cpukinds; distances, memory attributes and
 * the support list are dropped. */
static int check_doc(struct check *c, xmlDocPtr doc)
{
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!root || !is_name(root, "topology"))
        return fail_at(c, root, NULL, "not an hwloc topology: the root element is <%s>, not "
                       "<topology>", root ? (const char *)root->name : "");
    if (doc->intSubset && doc->intSubset->children)
        return fail_at(c, root, NULL, "the DOCTYPE declares entities or elements; lstopo's has "
                                      "none");
    char *version = prop(root, "version");
    int v2 = version && strcmp(version, "2.0") == 0;
    if (!v2)
        fail_at(c, root, NULL, "topology version \"%.20s\": mpipe reads hwloc 2 exports "
                "(version=\"2.0\", from lstopo 2.x)", version ? version : "none, hwloc 1.x");
    xmlFree(version);
    if (!v2)
        return -1;
    sb_printf(&c->out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<topology version=\"2.0\">\n");
    int n_obj = 0, rc = 0;
    for (xmlNodePtr ch = root->children; ch && rc == 0; ch = ch->next) {
        if (ch->type != XML_ELEMENT_NODE)
            continue;
        if (is_name(ch, "object"))
            rc = n_obj++ ? fail_at(c, ch, NULL, "a second top-level object (one Machine only)")
                         : check_object(c, ch, NULL, NULL, 0);
        else if (!is_name(ch, "cpukind") && !is_name(ch, "distances2") &&
                 !is_name(ch, "distances2hetero") && !is_name(ch, "memattr") &&
                 !is_name(ch, "support"))
            rc = fail_at(c, ch, NULL, "unexpected element <%s> in <topology>",
                         (const char *)ch->name);
    }
    if (rc == 0 && (n_obj == 0 || c->n_numa == 0))
        rc = fail_at(c, root, NULL, "no %s: nothing to place on", n_obj ? "NUMANode" : "Machine");
    struct mp_bits kinds = {0};
    for (xmlNodePtr ch = root->children; ch && rc == 0; ch = ch->next)
        if (is_name(ch, "cpukind"))
            rc = check_cpukind(c, ch, &kinds);
    mp__bits_free(&kinds);
    sb_printf(&c->out, "</topology>\n");
    return rc;
}

int mp__topo_xml_check_buffer(const char *name, const char *data, size_t size, char **xml,
                              size_t *len, struct mp_err *err)
{
    *xml = NULL;
    *len = 0;
    if (size > MAX_FILE_BYTES)
        return MP_FAIL(err, INPUT, "%s: %zu bytes, larger than any lstopo export (64 MiB)", name,
                       size);
    xmlInitParser();
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt)
        return MP_FAIL(err, NOMEM, "%s: out of memory", name);
    /* No network, no DTD loading, no entity substitution; errors come back, not on stderr. */
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, data, (int)size, NULL, NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                          XML_PARSE_BIG_LINES);
    int rc;
    struct check c = {.path = name, .err = err};
    if (!doc) {
        const xmlError *e = xmlCtxtGetLastError(ctxt);
        char msg[200] = "unknown error";
        if (e && e->message)
            snprintf(msg, sizeof msg, "%s", e->message);
        msg[strcspn(msg, "\n")] = '\0';
        rc = MP_FAIL(err, INPUT, "%s:%d: not well-formed XML: %s", name, e ? e->line : 0, msg);
    } else {
        rc = check_doc(&c, doc);
        xmlFreeDoc(doc);
    }
    xmlFreeParserCtxt(ctxt);
    mp__bits_free(&c.pus);
    mp__bits_free(&c.nodes);
    mp__bits_free(&c.root_cpuset);
    if (rc == 0 && c.out.oom)
        rc = MP_FAIL(err, NOMEM, "%s: out of memory", name);
    if (rc < 0) {
        free(c.out.p);
        return -1;
    }
    *xml = c.out.p;
    *len = c.out.len;
    return 0;
}

int mp__topo_xml_check(const char *path, char **xml, size_t *len, struct mp_err *err)
{
    *xml = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return MP_FAIL(err, IO, "%s: cannot read topology: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && n <= MAX_FILE_BYTES && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    int bad = ferror(f), e = errno;
    fclose(f);
    if (!buf)
        return MP_FAIL(err, NOMEM, "%s: out of memory", path);
    int rc = bad ? MP_FAIL(err, IO, "%s: cannot read topology: %s", path, strerror(e))
                 : mp__topo_xml_check_buffer(path, buf, n, xml, len, err);
    free(buf);
    return rc;
}
