/* Per-round server checkpoints of `mpipe fed --checkpoint DIR` (mp_fed.h): DIR/round-N/ holds the
 * global weights (global.safetensors, named L{i}.weight/.bias like --save-weights), with a server
 * optimizer its state (server_m.safetensors, server_v.safetensors, the same names), and fed.json
 * (rounds done, seed, sampling rule, the perf-weight history, the server optimizer, the privacy
 * accountant's Renyi curve); DIR/latest points at the newest. Clients keep no state between
 * rounds, so the server's checkpoint is the whole run's: after a client dies and the job ends,
 * `--resume` continues from the last completed round. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_fed.h"
#include "mp_weights.h"

static json_t *perf_json(const struct mp_fed_perf *p)
{
    json_t *ema = json_array(), *seen = json_array();
    for (int k = 1; k <= p->C; k++) {
        json_array_append_new(ema, json_real(p->ema[k]));
        json_array_append_new(seen, json_integer(p->seen[k]));
    }
    return json_pack("{s:o, s:o, s:f, s:f, s:f}", "ema", ema, "seen", seen, "decay",
                     MP_FED_PERF_DECAY, "min_factor", MP_FED_PERF_MIN, "max_factor",
                     MP_FED_PERF_MAX);
}

/* Writes text to path through a temporary name, fsync and rename. */
static int write_atomic(const char *path, const char *text, struct mp_err *err)
{
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t len = strlen(text);
    int ok = fd >= 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return MP_FAIL(err, IO, "%s: cannot write: %s", path, strerror(errno));
    }
    return 0;
}

static json_t *dp_json(const struct mp_fed_cfg *cfg, const struct mp_fed_update *u)
{
    json_t *orders = json_array(), *rdp = json_array();
    for (int k = 0; k < MP_FED_RDP_ORDERS; k++) {
        json_array_append_new(orders, json_real(u->acct.order[k]));
        json_array_append_new(rdp, json_real(u->acct.rdp[k]));
    }
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:o, s:o}", "clip_update", cfg->clip_update,
                     "noise_multiplier", cfg->noise_multiplier, "delta", u->delta, "epsilon",
                     u->epsilon, "sampling_rate", (double)u->sampled / u->C, "orders", orders,
                     "rdp", rdp);
}

static int write_manifest(const struct mp_fed_cfg *cfg, const char *path, int round,
                          const struct mp_fed_perf *perf, const struct mp_fed_update *u,
                          struct mp_err *err)
{
    json_t *root = json_pack(
        "{s:s, s:i, s:i, s:I, s:i, s:s, s:s, s:{s:s, s:I, s:f}, s:o, s:{s:s, s:f, s:f, s:f, "
        "s:f}, s:s}",
        "format", "mpipe-fed-checkpoint", "version", 2, "round", (json_int_t)round, "seed",
        (json_int_t)cfg->seed, "clients", cfg->clients, "model_digest", cfg->model->digest,
        "data", cfg->data_src, "sampling", "rule", "fisher-yates(hash(seed, round))", "round",
        (json_int_t)round, "fraction", cfg->fraction, "perf", perf_json(perf), "server_opt",
        "kind", mp_fed_server_opt_name(u->opt.kind), "lr", u->opt.lr, "beta1", MP_FED_OPT_BETA1,
        "beta2", MP_FED_OPT_BETA2, "tau", MP_FED_OPT_TAU, "aggregate", mp_fed_agg_name(cfg->agg));
    if (root && cfg->noise_multiplier > 0)
        json_object_set_new(root, "dp", dp_json(cfg, u));
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17))
                      : NULL;
    json_decref(root);
    if (!text)
        return MP_FAIL(err, NOMEM, "out of memory writing %s", path);
    int rc = write_atomic(path, text, err);
    free(text);
    return rc;
}

/* DIR/latest -> round-N, replaced atomically; round-(N-2) removed (two are kept). */
static int point_latest(const char *dir, int round, struct mp_err *err)
{
    char link_tmp[4200], link[4200], target[64], old[4200];
    snprintf(target, sizeof target, "round-%d", round);
    snprintf(link, sizeof link, "%s/latest", dir);
    snprintf(link_tmp, sizeof link_tmp, "%s/latest.tmp", dir);
    unlink(link_tmp);
    if (symlink(target, link_tmp) != 0 || rename(link_tmp, link) != 0)
        return MP_FAIL(err, IO, "%s: cannot update: %s", link, strerror(errno));
    static const char *const files[] = {"global.safetensors", "server_m.safetensors",
                                        "server_v.safetensors", "fed.json"};
    for (int w = 0; w < 4 && round > 2; w++) {
        snprintf(old, sizeof old, "%s/round-%d/%s", dir, round - 2, files[w]);
        unlink(old);
    }
    snprintf(old, sizeof old, "%s/round-%d", dir, round - 2);
    if (round > 2)
        rmdir(old);
    return 0;
}

int mp__fed_ckpt_save(const struct mp_fed_cfg *cfg, struct mp_fed_model *fm, struct mp_xport *x,
                      int round, const struct mp_fed_perf *perf, const struct mp_fed_update *u,
                      struct mp_err *err)
{
    char sub[4200], path[4300];
    snprintf(sub, sizeof sub, "%s/round-%d", cfg->ckpt_dir, round);
    if ((mkdir(cfg->ckpt_dir, 0755) != 0 && errno != EEXIST) ||
        (mkdir(sub, 0755) != 0 && errno != EEXIST))
        return MP_FAIL(err, IO, "%s: cannot create: %s", sub, strerror(errno));
    snprintf(path, sizeof path, "%s/global.safetensors", sub);
    if (mp_weights_save(&fm->st, fm->st.param, fm->lay.bounds, x, path, NULL, err))
        return -1;
    for (int w = 0; u->opt.m && w < 2; w++) {
        snprintf(path, sizeof path, "%s/server_%s.safetensors", sub, w ? "v" : "m");
        if (mp_weights_save(&fm->st, w ? u->opt.v : u->opt.m, fm->lay.bounds, x, path, NULL,
                            err))
            return -1;
    }
    snprintf(path, sizeof path, "%s/fed.json", sub);
    if (write_manifest(cfg, path, round, perf, u, err))
        return -1;
    return point_latest(cfg->ckpt_dir, round, err);
}

static int read_perf(json_t *p, struct mp_fed_perf *perf)
{
    json_t *ema = json_object_get(p, "ema"), *seen = json_object_get(p, "seen");
    if (!json_is_array(ema) || !json_is_array(seen) || (int)json_array_size(ema) != perf->C ||
        (int)json_array_size(seen) != perf->C)
        return -1;
    for (int k = 1; k <= perf->C; k++) {
        perf->ema[k] = json_number_value(json_array_get(ema, (size_t)k - 1));
        perf->seen[k] = (int)json_integer_value(json_array_get(seen, (size_t)k - 1));
    }
    return 0;
}

/* The accountant's curve; absent (a version-1 checkpoint or no DP) leaves it at zero. */
static int read_dp(json_t *dp, struct mp_fed_update *u)
{
    json_t *orders = json_object_get(dp, "orders"), *rdp = json_object_get(dp, "rdp");
    if (!dp)
        return 0;
    if (json_array_size(orders) != MP_FED_RDP_ORDERS || json_array_size(rdp) != MP_FED_RDP_ORDERS)
        return -1;
    for (int k = 0; k < MP_FED_RDP_ORDERS; k++) {
        if (json_number_value(json_array_get(orders, (size_t)k)) != u->acct.order[k])
            return -1;
        u->acct.rdp[k] = json_number_value(json_array_get(rdp, (size_t)k));
    }
    if (u->cfg->noise_multiplier > 0)
        u->epsilon = mp_fed_acct_epsilon(&u->acct, u->delta, NULL);
    return 0;
}

static int check_manifest(const struct mp_fed_cfg *cfg, json_t *root, const char *path,
                          struct mp_fed_perf *perf, struct mp_fed_update *u, struct mp_err *err)
{
    const char *digest = json_string_value(json_object_get(root, "model_digest"));
    const char *opt = json_string_value(json_object_get(json_object_get(root, "server_opt"),
                                                        "kind"));
    if (!digest || strcmp(digest, cfg->model->digest))
        return MP_FAIL(err, CKPT, "%s: written for another model", path);
    if (json_integer_value(json_object_get(root, "clients")) != cfg->clients)
        return MP_FAIL(err, CKPT, "%s: written for %lld clients, not %d", path,
                       (long long)json_integer_value(json_object_get(root, "clients")),
                       cfg->clients);
    if (strcmp(opt ? opt : "avg", mp_fed_server_opt_name(cfg->server_opt)))
        return MP_FAIL(err, CKPT, "%s: written with --server-opt %s, not %s", path,
                       opt ? opt : "avg", mp_fed_server_opt_name(cfg->server_opt));
    if (!json_is_integer(json_object_get(root, "round")) ||
        read_perf(json_object_get(root, "perf"), perf) ||
        read_dp(json_object_get(root, "dp"), u))
        return MP_FAIL(err, CKPT, "%s: malformed (round, perf or dp state)", path);
    return 0;
}

int mp__fed_ckpt_load(const struct mp_fed_cfg *cfg, struct mp_fed_model *fm, int *round,
                      struct mp_fed_perf *perf, struct mp_fed_update *u, struct mp_err *err)
{
    char path[4300];
    json_error_t je;
    snprintf(path, sizeof path, "%s/latest/fed.json", cfg->ckpt_dir);
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        return MP_FAIL(err, CKPT, "%s: no federated checkpoint to resume from (%s)", path,
                       je.text);
    int rc = check_manifest(cfg, root, path, perf, u, err);
    if (!rc)
        *round = (int)json_integer_value(json_object_get(root, "round"));
    json_decref(root);
    snprintf(path, sizeof path, "%s/latest/global.safetensors", cfg->ckpt_dir);
    if (!rc && mp_weights_load(&fm->st, fm->st.param, path, NULL, err))
        return -1;
    for (int w = 0; !rc && u->opt.m && w < 2; w++) {
        snprintf(path, sizeof path, "%s/latest/server_%s.safetensors", cfg->ckpt_dir,
                 w ? "v" : "m");
        if (mp_weights_load(&fm->st, w ? u->opt.v : u->opt.m, path, NULL, err))
            return -1;
    }
    if (!rc)
        fprintf(stderr, "fed: resumed from %s/latest after round %d\n", cfg->ckpt_dir, *round);
    return rc;
}
