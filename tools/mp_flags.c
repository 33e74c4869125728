/* Flag parsing shared by the subcommands (mp_flags.h). */
#include "mp_flags.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int mp_flag_is(const char *flag, const char *name) { return strcmp(flag, name) == 0; }

int mp_flag_next(int argc, char **argv, int *i, const char **flag, const char **val,
                 int (*has_value)(const char *flag), struct mp_err *err)
{
    static char name[128];
    const char *a = argv[*i];
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    *val = NULL;
    if (eq) {
        size_t n = (size_t)(eq - a);
        if (n >= sizeof name)
            return MP_FAIL(err, USAGE, "unknown flag '%s'", a);
        memcpy(name, a, n);
        name[n] = 0;
        *flag = name;
        *val = eq + 1;
    } else {
        *flag = a;
    }
    if (has_value(*flag) && !*val) {
        if (*i + 1 >= argc)
            return MP_FAIL(err, USAGE, "%s needs a value", *flag);
        *val = argv[++*i];
    } else if (!has_value(*flag) && eq) {
        return MP_FAIL(err, USAGE, "%s takes no value", *flag);
    }
    (*i)++;
    return 0;
}

int mp_flag_int(const char *flag, const char *val, long long min, long long max, long long *out,
                struct mp_err *err)
{
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno == ERANGE && end != val && !*end) /* an integer, past what any flag takes */
        return MP_FAIL(err, USAGE, "%s: %s is out of range [%lld, %lld]", flag, val, min, max);
    if (errno || end == val || *end)
        return MP_FAIL(err, USAGE, "%s: '%s' is not an integer", flag, val);
    if (v < min || v > max)
        return MP_FAIL(err, USAGE, "%s: %lld is out of range [%lld, %lld]", flag, v, min, max);
    *out = v;
    return 0;
}

int mp_flag_double(const char *flag, const char *val, double min, double max, double *out,
                   struct mp_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno == ERANGE && end != val && !*end && isinf(v))
        return MP_FAIL(err, USAGE, "%s: %s is out of range [%g, %g]", flag, val, min, max);
    /* strtod also reads C's hexadecimal floats: --temperature 0x10 was taken as 16 */
    if ((errno && errno != ERANGE) || end == val || *end || !isfinite(v) || strpbrk(val, "xX"))
        return MP_FAIL(err, USAGE, "%s: '%s' is not a number", flag, val);
    if (v < min || v > max)
        return MP_FAIL(err, USAGE, "%s: %g is out of range [%g, %g]", flag, v, min, max);
    *out = v;
    return 0;
}

int mp_flag_bytes(const char *flag, const char *val, size_t *out, struct mp_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    double mult = 1;
    if (*end == 'K' || *end == 'k')
        mult = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1024.0 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'i')
        end++;
    if (errno || end == val || *end || !(v > 0) || v * mult > 1e18)
        return MP_FAIL(err, USAGE, "%s: '%s' is not a size in bytes (e.g. 4G, 512M)", flag, val);
    *out = (size_t)(v * mult);
    return 0;
}

int mp_flag_choice(const char *flag, const char *val, const char *const *choices, int *out,
                   struct mp_err *err)
{
    char list[256] = "";
    for (int i = 0; choices[i]; i++) {
        if (strcmp(val, choices[i]) == 0) {
            *out = i;
            return 0;
        }
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    return MP_FAIL(err, USAGE, "%s: '%s' is not one of %s", flag, val, list);
}

int mp_flag_walk(int argc, char **argv, int (*takes_value)(const char *flag),
                 int (*handle)(void *ctx, const char *flag, const char *val, struct mp_err *err),
                 void *ctx, const char **model, const char *cmd, const char *example,
                 struct mp_err *err)
{
    for (int i = 1; i < argc;) {
        const char *f, *v;
        if (argv[i][0] != '-') {
            if (*model)
                return MP_FAIL(err, USAGE, "unexpected argument '%s' (one model file only)",
                               argv[i]);
            *model = argv[i++];
            continue;
        }
        if (mp_flag_next(argc, argv, &i, &f, &v, takes_value, err))
            return -1;
        int rc = handle(ctx, f, v, err);
        if (rc == 1)
            return MP_FAIL(err, USAGE, "unknown flag '%s' (see mpipe %s --help)", f, cmd);
        if (rc)
            return -1;
    }
    if (!*model)
        return MP_FAIL(err, USAGE, "no model file given (e.g. %s)", example);
    return 0;
}
