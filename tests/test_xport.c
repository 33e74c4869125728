/* Claims about the transport's failure reports under mpirun -np 3 (engine/xport/mp_xport_mpi.c):
 * a wait that passes its deadline says, on a line containing `waited`, what it waited for and
 * from which rank on which host; for a collective, the roll call names the rank that never reached
 * it (a collective by itself cannot tell who is missing), and a rank stopped while it waited does
 * not blame the peer it waited for. Rank 2 plays the silent rank and joins late, so that every
 * operation completes before MPI_Finalize (a wait that timed out leaves its request posted: the
 * late message still lands in its buffer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mp_xport.h"

static struct mp_xport *x;

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void expect_in(const struct mp_err *err, const char *want)
{
    if (!strstr(err->msg, want))
        fail_msg("rank %d: expected '%s' in '%s'", mp_xport_rank(x), want, err->msg);
}

static void test_a_collective_names_the_rank_that_never_reached_it(void **state)
{
    (void)state;
    struct mp_err err;
    mp_err_clear(&err);
    double v[2] = {1, 2};
    char host[128];
    mp_xport_set_deadline(x, 1.0);
    if (mp_xport_rank(x) == 2) {
        nap(2.5); /* after the others gave up: joins, so the collective completes everywhere */
        mp_xport_set_deadline(x, 30.0);
        assert_int_equal(mp_xport_allreduce_sum(x, v, 2, "the test's sums", &err), 0);
        return;
    }
    assert_int_equal(mp_xport_allreduce_sum(x, v, 2, "the test's sums", &err), -1);
    assert_int_equal(err.code, MP_ERR_DEADLINE);
    snprintf(host, sizeof host, "(rank 2 is on host %s)", mp_xport_host(x));
    /* "waited N s": N is at least the 1 s deadline, more when the machine is busy */
    expect_in(&err, " s for the test's sums from rank 2, which never reached it");
    expect_in(&err, "waited ");
    expect_in(&err, host);
}

static void test_a_message_wait_names_its_peer_and_host(void **state)
{
    (void)state;
    struct mp_err err;
    mp_err_clear(&err);
    static int buf; /* the timed-out receive stays posted: rank 2's late int lands here */
    int r = mp_xport_rank(x);
    mp_xport_set_deadline(x, 1.0);
    if (r == 0) {
        assert_int_equal(mp_xport_recv(x, &buf, sizeof buf, 2, 77, "a late int from rank 2", &err),
                         -1);
        assert_int_equal(err.code, MP_ERR_DEADLINE);
        expect_in(&err, " s for a late int from rank 2 (rank 2 is on host ");
        expect_in(&err, "rank 0 waited ");
    } else if (r == 2) {
        nap(2.0);
        mp_xport_set_deadline(x, 30.0);
        assert_int_equal(mp_xport_send(x, &buf, sizeof buf, 0, 77, "an int to rank 0", &err), 0);
    }
}

/* A rank stopped past its deadline while it waited (SIGSTOP, a paused VM) did not wait: its clock
 * ran while it did not. Continued, it blamed the peer it waited for, a healthy one (found by a
 * user tour: a stopped rank 1's failures.log line said it waited for rank 2). Now its wait starts
 * over, and the late message is received. Rank 1 is stopped by a child it forks, 0.2 s into its
 * wait, for 3 s past a 2 s deadline; rank 2 sends 0.5 s after it is continued. */
static void test_a_rank_stopped_while_waiting_does_not_blame_its_peer(void **state)
{
    (void)state;
    struct mp_err err;
    mp_err_clear(&err);
    int r = mp_xport_rank(x), v = 0;
    /* together: rank 2 leaves the test before at its 2 s nap's end, the others at once */
    mp_xport_set_deadline(x, 30.0);
    assert_int_equal(mp_xport_barrier(x, "the test's start", &err), 0);
    mp_xport_set_deadline(x, 2.0);
    if (r == 1) {
        pid_t me = getpid(), child = fork();
        if (child == 0) {
            nap(0.2);
            kill(me, SIGSTOP);
            nap(3.0);
            kill(me, SIGCONT);
            _exit(0);
        }
        assert_true(child > 0);
        int rc = mp_xport_recv(x, &v, sizeof v, 2, 78, "an int from rank 2", &err);
        waitpid(child, NULL, 0);
        if (rc)
            fail_msg("rank 1, stopped 3 s while it waited: %s", err.msg);
        assert_int_equal(v, 42);
    } else if (r == 2) {
        nap(3.7);
        v = 42;
        assert_int_equal(mp_xport_send(x, &v, sizeof v, 1, 78, "an int to rank 1", &err), 0);
    }
    mp_xport_set_deadline(x, 60.0);
}

int main(int argc, char **argv)
{
    struct mp_err err;
    if (mp_xport_init(&x, &argc, &argv, &err) != 0 || mp_xport_size(x) != 3) {
        fprintf(stderr, "test_xport needs mpirun -np 3\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_collective_names_the_rank_that_never_reached_it),
        cmocka_unit_test(test_a_message_wait_names_its_peer_and_host),
        cmocka_unit_test(test_a_rank_stopped_while_waiting_does_not_blame_its_peer),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    double f = failed;
    mp_xport_set_deadline(x, 60.0);
    if (mp_xport_allreduce_sum(x, &f, 1, "the failure count", &err) != 0)
        f = 1;
    mp_xport_finalize(x);
    return f > 0;
}
