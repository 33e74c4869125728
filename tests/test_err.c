/* mp_err: what every failure carries to the CLI (DESIGN.md §4): the status, the raising source
 * line, the message (truncated, never overflowing), a NULL error being allowed, the cleared rank,
 * the shared mark (usage and input errors only, dropped by a later error) and the status names
 * that messages and logs print. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "mp_err.h"

static void test_fail_fills_status_location_and_message(void **state)
{
    (void)state;
    struct mp_err e;
    mp_err_clear(&e);
    int line = __LINE__ + 1;
    int rc = MP_FAIL(&e, INPUT, "%s:%d: dense: needs %zu features", "m.mp", 4, (size_t)7);
    assert_int_equal(rc, -1);
    assert_int_equal(e.code, MP_ERR_INPUT);
    assert_string_equal(e.msg, "m.mp:4: dense: needs 7 features");
    assert_non_null(strstr(e.file, "test_err.c"));
    assert_int_equal(e.line, line);
}

static void test_null_error_is_allowed(void **state)
{
    (void)state;
    assert_int_equal(MP_FAIL(NULL, IO, "nobody listens: %d", 1), -1);
}

static void test_long_messages_are_truncated_and_terminated(void **state)
{
    (void)state;
    struct mp_err e;
    mp_err_clear(&e);
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    memset(e.msg, '#', sizeof e.msg); /* no terminator of its own to fall back on */
    MP_FAIL(&e, INTERNAL, "%s", big);
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
    assert_int_equal(e.msg[sizeof e.msg - 1], 0);
}

static void test_clear_resets_everything_and_marks_no_rank(void **state)
{
    (void)state;
    struct mp_err e;
    MP_FAIL(&e, PEER, "rank 3 sent garbage");
    e.rank = 3;
    mp_err_clear(&e);
    assert_int_equal(e.code, MP_OK);
    assert_int_equal(e.rank, -1);
    assert_string_equal(e.msg, "");
    assert_null(e.file);
}

static void test_only_usage_and_input_are_shared_until_a_later_error(void **state)
{
    (void)state;
    struct mp_err e;
    mp_err_clear(&e);
    assert_int_equal(e.shared, 0);
    MP_FAIL(&e, USAGE, "2 ranks for 3 stages");
    assert_int_equal(mp_err_mark_shared(&e), -1);
    assert_int_equal(e.shared, 1);
    MP_FAIL(&e, IO, "a later failure replaces it"); /* a stale mark would make its rank wait */
    assert_int_equal(e.shared, 0);
    for (int s = MP_ERR_IO; s < MP_ERR_COUNT; s++) { /* I/O to internal: can be one rank's */
        mp_err_set(&e, (enum mp_status)s, __FILE__, __LINE__, "one rank's");
        mp_err_mark_shared(&e);
        assert_int_equal(e.shared, 0);
    }
    MP_FAIL(&e, INPUT, "m.mp:3: dens: unknown layer");
    mp_err_mark_shared(&e);
    assert_int_equal(e.shared, 1);
    assert_int_equal(mp_err_mark_shared(NULL), -1);
    mp_err_clear(&e);
    assert_int_equal(e.shared, 0);
}

static void test_status_names_are_stable(void **state)
{
    (void)state;
    static const char *const want[] = {"ok", "usage", "input", "io", "checkpoint", "peer",
                                       "deadline", "mpi", "numeric", "nomem", "internal"};
    assert_int_equal(sizeof want / sizeof want[0], MP_ERR_COUNT);
    for (int s = 0; s < MP_ERR_COUNT; s++)
        assert_string_equal(mp_status_name((enum mp_status)s), want[s]);
    assert_string_equal(mp_status_name(MP_ERR_COUNT), "unknown");
    assert_string_equal(mp_status_name((enum mp_status)-1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_fills_status_location_and_message),
        cmocka_unit_test(test_null_error_is_allowed),
        cmocka_unit_test(test_long_messages_are_truncated_and_terminated),
        cmocka_unit_test(test_clear_resets_everything_and_marks_no_rank),
        cmocka_unit_test(test_only_usage_and_input_are_shared_until_a_later_error),
        cmocka_unit_test(test_status_names_are_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
