/* Claims about a rank's own account of its end (engine/xport/mp_xport_report.c), without MPI: the
 * SIGTERM mpirun sends names the wait the rank was in, or says it was computing and names its last
 * wait; a launcher that dies is reported as such; every line also lands in the failure file, in
 * one append, because mpirun may drop the stderr of a job it tears down; a write to a dead peer's
 * socket does not end the rank (SIGPIPE). Each case runs in a child process (the handler is
 * installed once per process and ends its waits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mp_xport_report.h"

static char file[] = "/tmp/mp_test_report_XXXXXX";

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void read_file(char *buf, size_t cap)
{
    FILE *f = fopen(file, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
}

/* Runs case_fn in a child with its stderr sent to /dev/null; returns its exit status. */
static int in_child(void (*case_fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(90);
        case_fn();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

static void sigterm_in_a_wait(void)
{
    mp__report_install(0, "hostA");
    mp__report_set_file(file);
    mp__report_wait_begin("gradient of micro-batch 3 from rank 1", " (rank 1 is on host hostB)");
    raise(SIGTERM);
    _exit(mp__report_term_requested() && mp__report_said() ? 0 : 1);
}

static void test_sigterm_during_a_wait_names_the_wait_and_the_peer(void **state)
{
    (void)state;
    char buf[2048];
    assert_int_equal(in_child(sigterm_in_a_wait), 0);
    read_file(buf, sizeof buf);
    if (!strstr(buf, "rank 0 on host hostA: rank 0 was ended by mpirun (SIGTERM: a peer failed) "
                     "after it waited 0.") ||
        !strstr(buf, " s for gradient of micro-batch 3 from rank 1 (rank 1 is on host hostB)\n"))
        fail_msg("file holds '%s'", buf);
}

static void sigterm_while_computing(void)
{
    mp__report_install(2, "hostC");
    mp__report_set_file(file);
    mp__report_wait_begin("activation of micro-batch 0 from rank 1", "");
    mp__report_wait_end();
    raise(SIGTERM);
    /* Not said: the next wait reports itself, naming its peer. */
    _exit(mp__report_term_requested() && !mp__report_said() ? 0 : 1);
}

static void test_sigterm_while_computing_says_so_and_names_the_last_wait(void **state)
{
    (void)state;
    char buf[2048];
    assert_int_equal(in_child(sigterm_while_computing), 0);
    read_file(buf, sizeof buf);
    if (!strstr(buf, "rank 2 on host hostC: rank 2 was ended by mpirun (SIGTERM: a peer failed) "
                     "while it computed; its last wait was for activation of micro-batch 0 from "
                     "rank 1\n"))
        fail_msg("file holds '%s'", buf);
}

/* The grandchild's launcher (its parent) exits under it. */
static void launcher_dies(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        mp__report_install(1, "hostD");
        mp__report_set_file(file);
        mp__report_wait_begin("the step's loss and gradient norms", " from rank 0");
        for (int i = 0; i < 500 && !mp__report_term_requested(); i++)
            nap_ms(10);
        _exit(0);
    }
    nap_ms(200); /* the grandchild installs its request */
    _exit(0);
}

static void test_a_rank_whose_launcher_dies_says_so(void **state)
{
    (void)state;
    char buf[2048] = "";
    assert_int_equal(in_child(launcher_dies), 0);
    for (int i = 0; i < 300 && !strstr(buf, "\n"); i++) {
        nap_ms(10);
        read_file(buf, sizeof buf);
    }
    if (!strstr(buf, "rank 1 on host hostD: rank 1 lost its launcher (mpirun, or this host's "
                     "orted, ended) after it waited ") ||
        !strstr(buf, " for the step's loss and gradient norms from rank 0\n"))
        fail_msg("file holds '%s'", buf);
}

/* A write to a socket whose peer is gone, as Open MPI's TCP transport makes after a host dies. */
static void write_to_a_dead_peer(void)
{
    mp__report_install(0, "hostA");
    mp__report_set_file(file);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        _exit(2);
    close(sv[1]);
    char byte = 0;
    ssize_t k = write(sv[0], &byte, 1);
    _exit(k < 0 && errno == EPIPE ? 0 : 1);
}

static void test_a_write_to_a_dead_peer_fails_instead_of_ending_the_rank(void **state)
{
    (void)state;
    int status = in_child(write_to_a_dead_peer);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the rank %s %d", WIFSIGNALED(status) ? "was ended by signal" : "exited with",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

static int fresh_file(void **state)
{
    (void)state;
    int fd = mkstemp(file);
    if (fd >= 0)
        close(fd);
    return fd < 0;
}

static int remove_file(void **state)
{
    (void)state;
    remove(file);
    memcpy(file + strlen(file) - 6, "XXXXXX", 6);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sigterm_during_a_wait_names_the_wait_and_the_peer,
                                        fresh_file, remove_file),
        cmocka_unit_test_setup_teardown(test_sigterm_while_computing_says_so_and_names_the_last_wait,
                                        fresh_file, remove_file),
        cmocka_unit_test_setup_teardown(test_a_rank_whose_launcher_dies_says_so, fresh_file,
                                        remove_file),
        cmocka_unit_test_setup_teardown(
            test_a_write_to_a_dead_peer_fails_instead_of_ending_the_rank, fresh_file, remove_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
