/* Runs of plans kept beside the rates they were priced by (mp_calib.h mp_calib_keep_run): each
 * `mpipe train --plan` of a plan made from this machine's rates cache adds its layout, its price,
 * its measured mean step and its ranks' pace to the cache's "runs" rows, the newest
 * MP_COST_RUNS_MAX; a plan reads them with the rates (mp_calib_table) and leans each layout's step
 * by its own runs (mp_cost_lean). A run's lean is its step over its price over its ranks' pace
 * against their price, all from the same rates: new rates scale the price and the pace's price
 * alike, so the runs stay when the rates are measured again (--recalibrate, or the cache check
 * finding the machine has left them, which on this VM is every slow spell). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mp_calib.h"
#include "mp_calib_cache.h"

int mp__calib_read_runs(json_t *a, struct mp_calib_rates *r)
{
    json_t *o;
    size_t i;
    r->n_runs = 0;
    if (!a)
        return 0; /* a file written before runs were kept, or none yet */
    if (!json_is_array(a) || json_array_size(a) > MP_COST_RUNS_MAX)
        return -1;
    json_array_foreach(a, i, o)
    {
        struct mp_cost_run *k = &r->runs[i];
        const char *digest = json_string_value(json_object_get(o, "model"));
        size_t P, D, M;
        if (!digest || strlen(digest) != 16 || mp__calib_size(o, "P", &P) ||
            mp__calib_size(o, "D", &D) || mp__calib_size(o, "M", &M) ||
            mp__calib_size(o, "batch", &k->batch) || P < 1 || P > 4096 || D < 1 || D > 4096 ||
            M < 1 || M > (1 << 24) || k->batch < 1 ||
            mp__calib_secs(o, "priced_s", &k->priced_s, 1) ||
            mp__calib_secs(o, "measured_s", &k->measured_s, 1) ||
            mp__calib_secs(o, "pace", &k->pace, 1) ||
            mp__calib_secs(o, "at", &k->at, 0))
            return -1;
        snprintf(k->digest, sizeof k->digest, "%s", digest);
        k->P = (int)P, k->D = (int)D, k->M = (int)M;
    }
    r->n_runs = (int)json_array_size(a);
    return 0;
}

json_t *mp__calib_runs_json(const struct mp_calib_rates *r)
{
    json_t *a = json_array();
    for (int i = 0; a && i < r->n_runs; i++) {
        const struct mp_cost_run *k = &r->runs[i];
        json_array_append_new(a, json_pack("{s:s, s:i, s:i, s:i, s:I, s:f, s:f, s:f, s:f}",
                                           "model", k->digest, "P", k->P, "D", k->D, "M", k->M,
                                           "batch", (json_int_t)k->batch, "priced_s",
                                           k->priced_s, "measured_s", k->measured_s, "pace",
                                           k->pace, "at", k->at));
    }
    return a;
}

void mp__calib_runs_carry(struct mp_calib_rates *r)
{
    struct mp_calib_rates *old = calloc(1, sizeof *old);
    if (!old)
        return; /* out of memory: the runs are lost, never the calibration */
    memcpy(old->cpu, r->cpu, sizeof r->cpu), memcpy(old->blis, r->blis, sizeof r->blis);
    memcpy(old->version, r->version, sizeof r->version), memcpy(old->path, r->path, sizeof r->path);
    if (mp__calib_load_quiet(old) == 1) {
        memcpy(r->runs, old->runs, (size_t)old->n_runs * sizeof old->runs[0]);
        r->n_runs = old->n_runs;
    }
    mp__calib_release(old);
    free(old);
}

int mp_calib_keep_run(const struct mp_cost_run *run, const char *rates_key, char *path,
                      size_t path_len)
{
    struct mp_calib_rates r;
    char key[17];
    memset(&r, 0, sizeof r);
    if (mp__calib_key(&r))
        return 0;
    mp__calib_key_hex(&r, key);
    snprintf(path, path_len, "%s", r.path);
    /* Another machine's or build's rates priced it (a plan copied here): nothing of this cache. */
    if (strcmp(key, rates_key))
        return 0;
    int lock = mp__calib_lock(&r), loaded = mp__calib_load_quiet(&r);
    if (loaded <= 0) { /* gone or unreadable since the plan: train rewrites no rates */
        mp__calib_unlock(lock);
        mp__calib_release(&r);
        return 0;
    }
    if (r.n_runs == MP_COST_RUNS_MAX) {
        memmove(r.runs, r.runs + 1, (MP_COST_RUNS_MAX - 1) * sizeof r.runs[0]);
        r.n_runs--;
    }
    r.runs[r.n_runs] = *run;
    r.runs[r.n_runs++].at = (double)time(NULL);
    int kept = mp__calib_save_quiet(&r) ? -1 : 1;
    mp__calib_unlock(lock);
    mp__calib_release(&r);
    return kept;
}
