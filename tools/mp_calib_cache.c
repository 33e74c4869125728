/* The rates cache (mp_calib_cache.h): key, file name, JSON in and out, lookups. */
#include "mp_calib_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mp_calib.h"
#include "mp_cli.h"
#include "mp_optim.h"

/* 4: GEMM shapes timed in rounds (mp_calib.c time_pending); a file of format 3 may hold shapes
 * timed once inside a burst of noise, 2-4x off, so it is measured again. */
#define CACHE_FORMAT "mpipe machine rates 5"
#define CACHE_FORMAT_STEM "mpipe machine rates "

static void cpu_model(char *out, size_t len)
{
    char name[128] = "unknown CPU", fam[16] = "?", model[16] = "?", step[16] = "?", line[512];
    struct {
        const char *key;
        char *dst;
        size_t len;
    } f[] = {{"model name", name, sizeof name},
             {"cpu family", fam, sizeof fam},
             {"model", model, sizeof model},
             {"stepping", step, sizeof step}};
    FILE *fp = fopen("/proc/cpuinfo", "r");
    while (fp && fgets(line, sizeof line, fp) && line[0] != '\n') {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        size_t klen = strcspn(line, "\t:");
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
            if (klen != strlen(f[i].key) || strncmp(line, f[i].key, klen))
                continue;
            char *v = colon + 1 + (colon[1] == ' ');
            v[strcspn(v, "\n")] = 0;
            snprintf(f[i].dst, f[i].len, "%s", v);
        }
    }
    if (fp)
        fclose(fp);
    snprintf(out, len, "%s (family %s model %s stepping %s)", name, fam, model, step);
}

static void machine_key(struct mp_calib_rates *r)
{
    cpu_model(r->cpu, sizeof r->cpu);
    snprintf(r->blis, sizeof r->blis, "BLIS %s (%s build), %s kernels", mp_gemm_blis_version(),
             mp_gemm_blis_threading(), mp_gemm_arch());
    snprintf(r->version, sizeof r->version, "mpipe %s (%s)", MPIPE_VERSION, mp_git_hash());
}

/* FNV-1a over the key, so one directory can hold the files of several machines or builds. */
static uint64_t key_hash(const struct mp_calib_rates *r)
{
    uint64_t h = 1469598103934665603ull;
    const char *parts[3] = {r->cpu, r->blis, r->version};
    for (int i = 0; i < 3; i++)
        for (const char *c = parts[i];; c++) {
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
            if (!*c)
                break;
        }
    return h;
}

static int cache_dir(char *out, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(out, len, "%s/mpipe", xdg);
    else if (home && home[0])
        n = snprintf(out, len, "%s/.cache/mpipe", home);
    else
        return -1;
    return n > 0 && (size_t)n < len ? 0 : -1;
}

void mp__calib_key_hex(const struct mp_calib_rates *r, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)key_hash(r));
}

int mp_calib_cache_path(char *out, size_t len)
{
    struct mp_calib_rates r;
    char dir[4000];
    memset(&r, 0, sizeof r);
    machine_key(&r);
    if (cache_dir(dir, sizeof dir))
        return -1;
    int n = snprintf(out, len, "%s/rates-%016llx.json", dir, (unsigned long long)key_hash(&r));
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static int same_call(const struct mp_gemm_call *a, const struct mp_gemm_call *b)
{
    return a->trans_a == b->trans_a && a->trans_b == b->trans_b && a->beta_zero == b->beta_zero &&
           a->m == b->m && a->n == b->n && a->k == b->k && a->lda == b->lda && a->ldb == b->ldb &&
           a->ldc == b->ldc && a->b_fixed == b->b_fixed;
}

/* Room for one more element of `size` bytes in *v (n used, *cap allocated); NULL on OOM. */
static void *grow(void **v, size_t n, size_t *cap, size_t size)
{
    if (n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        void *p = realloc(*v, c * size);
        if (!p)
            return NULL;
        *v = p, *cap = c;
    }
    return (char *)*v + n * size;
}

struct mp_calib_shape *mp__calib_find(struct mp_calib_rates *r, const struct mp_gemm_call *c)
{
    for (size_t i = 0; i < r->n; i++)
        if (same_call(&r->v[i].c, c))
            return &r->v[i];
    return NULL;
}

struct mp_calib_shape *mp__calib_add(struct mp_calib_rates *r, const struct mp_gemm_call *c,
                                     double s)
{
    struct mp_calib_shape *v = grow((void **)&r->v, r->n, &r->cap, sizeof *v);
    if (v)
        *v = (struct mp_calib_shape){*c, s, 0, c->b_fixed ? NAN : s}, r->n++;
    return v;
}

struct mp_calib_pass *mp__calib_find_elem(struct mp_calib_rates *r, const char *digest, size_t mbs,
                                          int layer)
{
    for (size_t i = 0; i < r->n_e; i++)
        if (r->e[i].mbs == mbs && r->e[i].layer == layer && !strcmp(r->e[i].digest, digest))
            return &r->e[i];
    return NULL;
}

int mp__calib_add_call(struct mp_calib_pass *e, int pass, size_t shape, size_t n)
{
    for (size_t i = 0; i < e->n_calls; i++)
        if (e->calls[i].pass == pass && e->calls[i].shape == shape)
            return e->calls[i].n += n, 0;
    struct mp_calib_calls *c = realloc(e->calls, (e->n_calls + 1) * sizeof *c);
    if (!c)
        return -1;
    e->calls = c;
    c[e->n_calls++] = (struct mp_calib_calls){pass, shape, n};
    return 0;
}

struct mp_calib_pass *mp__calib_add_elem(struct mp_calib_rates *r, const char *digest, size_t mbs,
                                         int layer)
{
    struct mp_calib_pass *e = grow((void **)&r->e, r->n_e, &r->cap_e, sizeof *e);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    snprintf(e->digest, sizeof e->digest, "%s", digest);
    e->mbs = mbs, e->layer = layer;
    r->n_e++;
    return e;
}

struct mp_calib_step *mp__calib_find_step(struct mp_calib_rates *r, const char *digest, int kind,
                                          size_t mbs)
{
    for (size_t i = 0; i < r->n_o; i++)
        if (r->o[i].kind == kind && r->o[i].mbs == mbs && !strcmp(r->o[i].digest, digest))
            return &r->o[i];
    return NULL;
}

struct mp_calib_step *mp__calib_add_step(struct mp_calib_rates *r, const char *digest, int kind,
                                         size_t mbs)
{
    struct mp_calib_step *o = grow((void **)&r->o, r->n_o, &r->cap_o, sizeof *o);
    if (o) {
        memset(o, 0, sizeof *o);
        snprintf(o->digest, sizeof o->digest, "%s", digest);
        o->kind = kind, o->mbs = mbs, r->n_o++;
    }
    return o;
}

static void free_elems(struct mp_calib_rates *r)
{
    for (size_t i = 0; i < r->n_e; i++)
        free(r->e[i].calls);
    r->n_e = 0;
}

static void warn_cache(const struct mp_calib_rates *r, const char *why)
{
    fprintf(stderr,
            "mpipe plan: warning: ignoring the rates cache %s: %s; measuring this "
            "machine again and rewriting it\n",
            r->path, why);
}

int mp__calib_size(json_t *o, const char *key, size_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (size_t)json_integer_value(v);
    return 0;
}

int mp__calib_secs(json_t *o, const char *key, double *out, int positive)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v) || json_number_value(v) < 0 || (positive && !(json_number_value(v) > 0)))
        return -1;
    *out = json_number_value(v);
    return 0;
}

/* One cached shape; -1 if anything in it is missing or out of range. */
static int read_shape(json_t *o, struct mp_calib_rates *r)
{
    size_t f[10];
    static const char *const keys[10] = {"ta",  "tb",  "beta0", "m",   "n",
                                         "k",   "lda", "ldb",   "ldc", "bfix"};
    double sec, sec_fixed = 0;
    for (int i = 0; i < 10; i++)
        if (mp__calib_size(o, keys[i], &f[i]))
            return -1;
    if (mp__calib_secs(o, "s", &sec, 1) || f[0] > 1 || f[1] > 1 || f[2] > 1 || f[9] > 1 ||
        (f[9] && mp__calib_secs(o, "s_fixed", &sec_fixed, 1)))
        return -1;
    struct mp_gemm_call c = {(int)f[0], (int)f[1], (int)f[2], f[3], f[4],
                             f[5],      f[6],      f[7],      f[8], (int)f[9]};
    struct mp_calib_shape *s = mp__calib_add(r, &c, sec);
    if (s && c.b_fixed)
        s->s_fixed = sec_fixed;
    return s ? 0 : -1;
}

/* A pass entry: its element-wise seconds and its calls as [pass, shape index, count] triples
 * (shapes read before, in file order). */
static int read_elem(json_t *o, struct mp_calib_rates *r)
{
    const char *d = json_string_value(json_object_get(o, "digest"));
    json_t *calls = json_object_get(o, "calls"), *c;
    size_t mbs, layer, i;
    double t[3];
    if (!d || strlen(d) != 16 || mp__calib_size(o, "mbs", &mbs) ||
        mp__calib_size(o, "layer", &layer) || layer > 1000000 || mp__calib_secs(o, "f", &t[0], 0) ||
        mp__calib_secs(o, "b", &t[1], 0) || mp__calib_secs(o, "w", &t[2], 0) ||
        !json_is_array(calls))
        return -1;
    struct mp_calib_pass *e = mp__calib_add_elem(r, d, mbs, (int)layer);
    if (!e)
        return -1;
    memcpy(e->t, t, sizeof t);
    json_array_foreach(calls, i, c)
    {
        json_t *p = json_array_get(c, 0), *sh = json_array_get(c, 1), *n = json_array_get(c, 2);
        if (json_array_size(c) != 3 || !json_is_integer(p) || !json_is_integer(sh) ||
            !json_is_integer(n) || json_integer_value(p) < 0 || json_integer_value(p) > 2 ||
            json_integer_value(sh) < 0 || (size_t)json_integer_value(sh) >= r->n ||
            json_integer_value(n) < 1 ||
            mp__calib_add_call(e, (int)json_integer_value(p), (size_t)json_integer_value(sh),
                               (size_t)json_integer_value(n)))
            return -1;
    }
    return 0;
}

static int read_step(json_t *o, struct mp_calib_rates *r)
{
    const char *d = json_string_value(json_object_get(o, "digest"));
    const char *name = json_string_value(json_object_get(o, "optimizer"));
    enum mp_optim_kind kind;
    size_t mbs;
    double t[4];
    if (!d || strlen(d) != 16 || !name || mp_optim_parse(name, &kind) ||
        mp__calib_size(o, "mbs", &mbs) || !mbs || mp__calib_secs(o, "f", &t[0], 0) ||
        mp__calib_secs(o, "b", &t[1], 0) || mp__calib_secs(o, "w", &t[2], 0) ||
        mp__calib_secs(o, "optimizer_s", &t[3], 0))
        return -1;
    struct mp_calib_step *s = mp__calib_add_step(r, d, (int)kind, mbs);
    if (!s)
        return -1;
    memcpy(s->t, t, sizeof s->t);
    s->optim = t[3];
    return 0;
}

/* The optional "reduce" rows ({bytes, seconds}, sizes ascending): absent in a file written before
 * they existed, or where they could not be measured. */
static int read_reduce(json_t *a, struct mp_calib_rates *r)
{
    json_t *o;
    size_t i;
    r->n_reduce = 0;
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > MP_CALIB_REDUCE_MAX)
        return -1;
    json_array_foreach(a, i, o)
    {
        double bytes, s;
        if (mp__calib_secs(o, "bytes", &bytes, 1) || mp__calib_secs(o, "seconds", &s, 1) ||
            (i > 0 && bytes <= r->reduce_bytes[i - 1]))
            return -1;
        r->reduce_bytes[i] = bytes, r->reduce_s[i] = s;
    }
    r->n_reduce = (int)json_array_size(a);
    return 0;
}

/* The optional "links" rows ({relation, latency_us, bandwidth_GBps}, one per level of this
 * host): absent in a file written before they existed, or where none was measured. */
static int read_links(json_t *a, struct mp_calib_rates *r)
{
    json_t *o;
    size_t i;
    memset(r->link, 0, sizeof r->link);
    if (!a)
        return 0;
    if (!json_is_array(a))
        return -1;
    json_array_foreach(a, i, o)
    {
        enum mp_link_level l;
        double us, gbps;
        const char *rel = json_string_value(json_object_get(o, "relation"));
        if (!rel || mp_link_level_parse(rel, &l) || l == MP_LINK_NET ||
            mp__calib_secs(o, "latency_us", &us, 1) ||
            mp__calib_secs(o, "bandwidth_GBps", &gbps, 1))
            return -1;
        r->link[l] = (struct mp_link){.latency_s = us * 1e-6, .bandwidth_Bps = gbps * 1e9};
    }
    return 0;
}

/* Why root is not this machine's cache, or NULL if it is. */
static const char *foreign(const struct mp_calib_rates *r, json_t *root)
{
    if (!root || !json_is_object(root))
        return "not a JSON object (corrupt)";
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (fmt && strcmp(fmt, CACHE_FORMAT) &&
        !strncmp(fmt, CACHE_FORMAT_STEM, strlen(CACHE_FORMAT_STEM)))
        return "written by another mpipe in an older way of measuring (foreign)";
    if (!fmt || strcmp(fmt, CACHE_FORMAT))
        return "not an mpipe rates file of this format (corrupt)";
    const char *cpu = json_string_value(json_object_get(root, "cpu"));
    const char *blis = json_string_value(json_object_get(root, "blis"));
    const char *ver = json_string_value(json_object_get(root, "mpipe"));
    if (!cpu || !blis || !ver || strcmp(cpu, r->cpu) || strcmp(blis, r->blis) ||
        strcmp(ver, r->version))
        return "written for another CPU, BLIS configuration or mpipe version (foreign)";
    return NULL;
}

/* Reads the cache file into r; why it is not this machine's (r then holds part of it), or NULL,
 * with *found 0 when there is no file. */
static const char *load(struct mp_calib_rates *r, int *found)
{
    static const struct {
        const char *key;
        int (*read)(json_t *, struct mp_calib_rates *);
    } parts[] = {{"gemm", read_shape}, {"passes", read_elem}, {"steps", read_step}};
    json_error_t je;
    FILE *f = fopen(r->path, "rb");
    *found = f != NULL;
    if (!f)
        return NULL; /* no cache yet: nothing to say */
    json_t *root = json_loadf(f, 0, &je), *o;
    fclose(f);
    const char *why = foreign(r, root);
    for (size_t p = 0; !why && p < sizeof parts / sizeof parts[0]; p++) {
        json_t *a = json_object_get(root, parts[p].key);
        size_t i;
        if (!json_is_array(a))
            why = "a missing array (corrupt)";
        json_array_foreach(why ? NULL : a, i, o)
        {
            if (parts[p].read(o, r)) {
                why = "a malformed entry (corrupt)";
                break;
            }
        }
    }
    if (!why && read_reduce(json_object_get(root, "reduce"), r))
        why = "a malformed reduce entry (corrupt)";
    if (!why && read_links(json_object_get(root, "links"), r))
        why = "a malformed links entry (corrupt)";
    if (!why && mp__calib_read_runs(json_object_get(root, "runs"), r))
        why = "a malformed runs entry (corrupt)";
    r->slower_since = 0; /* optional: absent unless a check found the machine slower */
    if (!why && json_object_get(root, "slower_since") &&
        mp__calib_secs(root, "slower_since", &r->slower_since, 1))
        why = "a malformed slower_since (corrupt)";
    json_decref(root);
    return why;
}

/* Reads the cache file if it is this machine's; anything else is ignored with a warning (and the
 * file is rewritten after this plan's measurements). */
void mp__calib_load(struct mp_calib_rates *r)
{
    int found;
    const char *why = load(r, &found);
    if (why) {
        warn_cache(r, why);
        free_elems(r);
        r->n = r->n_o = 0, r->n_reduce = 0, r->n_runs = 0, r->slower_since = 0;
        memset(r->link, 0, sizeof r->link);
        r->dirty = 1;
    }
}

int mp__calib_load_quiet(struct mp_calib_rates *r)
{
    int found;
    const char *why = load(r, &found);
    return why ? -1 : found;
}

static int mkdir_p(char *dir)
{
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        int rc = mkdir(dir, 0755);
        *p = '/';
        if (rc && errno != EEXIST)
            return -1;
    }
    return mkdir(dir, 0755) && errno != EEXIST ? -1 : 0;
}

static json_t *shapes_json(const struct mp_calib_rates *r)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->n; i++) {
        const struct mp_gemm_call *c = &r->v[i].c;
        enum mp_gemm_path path = mp_gemm_path_for_op(c->trans_a, c->trans_b, c->m, c->n, c->k);
        double gflops = 2e-9 * (double)c->m * (double)c->n * (double)c->k / r->v[i].s;
        json_array_append_new(
            a, json_pack("{s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:f, s:i, "
                         "s:f}", "ta", c->trans_a, "tb", c->trans_b, "beta0", c->beta_zero, "m",
                         (json_int_t)c->m, "n", (json_int_t)c->n, "k", (json_int_t)c->k, "lda",
                         (json_int_t)c->lda, "ldb", (json_int_t)c->ldb, "ldc", (json_int_t)c->ldc,
                         "s", r->v[i].s, "path", mp_gemm_path_name(path), "gflops", gflops,
                         "bfix", c->b_fixed, "s_fixed", r->v[i].s_fixed));
    }
    return a;
}

static json_t *cache_json(const struct mp_calib_rates *r)
{
    json_t *passes = json_array(), *steps = json_array();
    for (size_t i = 0; passes && i < r->n_e; i++) {
        const struct mp_calib_pass *e = &r->e[i];
        json_t *calls = json_array();
        for (size_t k = 0; calls && k < e->n_calls; k++)
            json_array_append_new(calls, json_pack("[i, I, I]", e->calls[k].pass,
                                                   (json_int_t)e->calls[k].shape,
                                                   (json_int_t)e->calls[k].n));
        json_array_append_new(passes,
                              json_pack("{s:s, s:I, s:i, s:f, s:f, s:f, s:o}", "digest", e->digest,
                                        "mbs", (json_int_t)e->mbs, "layer", e->layer, "f", e->t[0],
                                        "b", e->t[1], "w", e->t[2], "calls", calls));
    }
    for (size_t i = 0; steps && i < r->n_o; i++) {
        const struct mp_calib_step *s = &r->o[i];
        json_array_append_new(steps,
                              json_pack("{s:s, s:s, s:I, s:f, s:f, s:f, s:f}", "digest", s->digest,
                                        "optimizer", mp_optim_name((enum mp_optim_kind)s->kind),
                                        "mbs", (json_int_t)s->mbs, "f", s->t[0], "b", s->t[1], "w",
                                        s->t[2], "optimizer_s", s->optim));
    }
    json_t *root = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o}", "format", CACHE_FORMAT, "cpu",
                             r->cpu, "blis", r->blis, "mpipe", r->version, "gemm", shapes_json(r),
                             "passes", passes, "steps", steps);
    json_t *reduce = r->n_reduce ? json_array() : NULL;
    for (int i = 0; reduce && i < r->n_reduce; i++)
        json_array_append_new(reduce, json_pack("{s:f, s:f}", "bytes", r->reduce_bytes[i],
                                                "seconds", r->reduce_s[i]));
    if (root && reduce)
        json_object_set_new(root, "reduce", reduce);
    json_t *links = json_array();
    for (int l = 0; links && l < MP_LINK_COUNT; l++)
        if (r->link[l].bandwidth_Bps > 0)
            json_array_append_new(links,
                                  json_pack("{s:s, s:f, s:f}", "relation",
                                            mp_link_level_name((enum mp_link_level)l),
                                            "latency_us", r->link[l].latency_s * 1e6,
                                            "bandwidth_GBps", r->link[l].bandwidth_Bps * 1e-9));
    if (root && links && json_array_size(links))
        json_object_set_new(root, "links", links);
    else
        json_decref(links);
    if (root && r->slower_since > 0)
        json_object_set_new(root, "slower_since", json_real(r->slower_since));
    if (root && r->n_runs > 0)
        json_object_set_new(root, "runs", mp__calib_runs_json(r));
    return root;
}

/* Makes the directory the cache file is in (and its parents); -1 with errno when it cannot. */
static int mkdir_for(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    return mkdir_p(dir);
}

/* Writes the cache atomically (temp file, rename); why it could not, or NULL. */
static const char *save(const struct mp_calib_rates *r)
{
    char tmp[4200];
    json_t *root = cache_json(r);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", r->path, (long)getpid());
    const char *why = NULL;
    if (!root)
        why = "out of memory";
    else if (mkdir_for(r->path))
        why = strerror(errno);
    else if (json_dump_file(root, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER) ||
             rename(tmp, r->path))
        why = strerror(errno), unlink(tmp);
    json_decref(root);
    return why;
}

#define LOCK_WAIT_S 5.0 /* a writer holds the lock for one parse and one write, milliseconds */

int mp__calib_lock(const struct mp_calib_rates *r)
{
    char lock[4200];
    snprintf(lock, sizeof lock, "%s.lock", r->path);
    int fd = mkdir_for(r->path) ? -1 : open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    for (int waited_ms = 0; flock(fd, LOCK_EX | LOCK_NB); waited_ms++) {
        if (errno != EWOULDBLOCK || waited_ms >= LOCK_WAIT_S * 1000) {
            close(fd);
            return -1; /* a holder stopped mid-write, or a file system without flock */
        }
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    return fd;
}

void mp__calib_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* closing the last descriptor of the open file releases its flock */
}

/* A failure is only a warning. The runs are the file's as it is now: a train --plan that ended
 * while this plan measured kept one there, and the runs this plan read are older (a plan never
 * adds one). */
void mp__calib_save(struct mp_calib_rates *r)
{
    int lock = mp__calib_lock(r);
    mp__calib_runs_carry(r);
    const char *why = save(r);
    mp__calib_unlock(lock);
    if (why)
        fprintf(stderr,
                "mpipe plan: warning: cannot write the rates cache %s: %s (the rates "
                "are used, not kept)\n",
                r->path, why);
}

const char *mp__calib_save_quiet(const struct mp_calib_rates *r)
{
    return save(r);
}

int mp__calib_key(struct mp_calib_rates *r)
{
    machine_key(r);
    return mp_calib_cache_path(r->path, sizeof r->path);
}

void mp__calib_release(struct mp_calib_rates *r)
{
    free_elems(r);
    free(r->v), free(r->e), free(r->o);
    r->v = NULL, r->e = NULL, r->o = NULL;
    r->n = r->cap = r->cap_e = r->n_o = r->cap_o = 0;
}
