/* How a rank says what it was waiting for when the job is ended around it (DESIGN.md §4: a line
 * containing `waited` that names the peer). mpirun ends the survivors of a failed rank with
 * SIGTERM and, one second later (Open MPI's odls_base_sigkill_timeout), SIGKILL; on a busy machine
 * a rank may not get back to its wait loop inside that second, so the SIGTERM handler writes the
 * line itself, from text formatted when the wait began. A rank whose launcher (mpirun, orted)
 * dies is told by the kernel (PR_SET_PDEATHSIG) and says so the same way. When Open MPI ends the
 * process on its own (a transport error it does not hand to MPI_ERRORS_RETURN), an exit hook says
 * it. SIGPIPE is ignored, so that a write to a dead peer's socket is an error Open MPI handles,
 * not a silent end of the rank. mpirun may drop what a rank writes to stderr while it tears a job
 * down (seen after a lost host), so every such line also goes to a file when one is set (train
 * --checkpoint DIR: DIR/failures.log). No MPI here: mp_xport_mpi.c tells this file when waits
 * begin and end. */
#include "mp_xport_report.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Two buffers, so the handler never reads text being written: the main thread formats into the
 * one not shown, then flips `shown`. */
static struct {
    char text[2][480];            /* "for WHAT (rank P is on host H)" */
    volatile sig_atomic_t shown;  /* which buffer the handler reads */
    volatile sig_atomic_t active; /* inside a wait */
    volatile sig_atomic_t any;    /* a wait has begun at least once */
    volatile sig_atomic_t said;   /* a line about this rank's end is out: say nothing more */
    volatile sig_atomic_t term;   /* SIGTERM arrived */
    struct timespec t0;           /* when the current wait began */
    char rank[16];
    char file[1024];              /* failures.log, "" when none */
    char who[160];                /* "rank R on host H: " for the file's lines */
} w;

/* The line being written, kept so that it can go to the file in one write (one append). */
static char line[1024];
static size_t line_len;

/* Signal-safe formatting: appends a NUL-terminated string to `line`. */
static void put(const char *s)
{
    for (; *s && line_len + 1 < sizeof line; s++)
        line[line_len++] = *s;
}

static void to_file(const char *text, size_t n);

/* The line goes to the file first, then to stderr: when the launcher is gone, stderr is a pipe
 * nobody reads (the write fails with EPIPE: SIGPIPE is ignored, see mp__report_install). */
static void say_line(void)
{
    to_file(line + 7, line_len - 7); /* without "mpipe: " */
    for (const char *p = line; p < line + line_len;) {
        ssize_t k = write(STDERR_FILENO, p, (size_t)(line + line_len - p));
        if (k <= 0)
            break;
        p += k;
    }
}

/* Appends "rank R on host H: TEXT" (TEXT ends in a newline) to the file, in one write. */
static void to_file(const char *text, size_t n)
{
    if (!w.file[0])
        return;
    int fd = open(w.file, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        return;
    char buf[1200];
    size_t a = strlen(w.who), b = n < sizeof buf - a ? n : sizeof buf - a;
    memcpy(buf, w.who, a);
    memcpy(buf + a, text, b);
    ssize_t k = write(fd, buf, a + b);
    (void)k;
    close(fd);
}

/* Seconds since the wait began as "S.mmm", formatted by hand (no stdio in a handler). */
static void put_elapsed(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ms = (long long)(now.tv_sec - w.t0.tv_sec) * 1000 +
                   (now.tv_nsec - w.t0.tv_nsec) / 1000000;
    char buf[32], *p = buf + sizeof buf - 1;
    *p = 0;
    for (int i = 0; i < 3; i++, ms /= 10)
        *--p = (char)('0' + ms % 10);
    *--p = '.';
    do {
        *--p = (char)('0' + ms % 10);
        ms /= 10;
    } while (ms > 0 && p > buf);
    put(p);
}

static void on_sigterm(int sig)
{
    w.term = 1;
    if (w.said)
        return;
    w.said = w.active; /* computing: the next wait still reports itself, naming its peer */
    line_len = 0;
    put("mpipe: rank ");
    put(w.rank);
    if (sig != SIGTERM) /* PR_SET_PDEATHSIG: the launcher itself is gone */
        put(" lost its launcher (mpirun, or this host's orted, ended) ");
    else
        put(" was ended by mpirun (SIGTERM: a peer failed) ");
    if (w.active) {
        put("after it waited ");
        put_elapsed();
        put(" s ");
        put(w.text[w.shown]);
    } else {
        put("while it computed");
        if (w.any) {
            put("; its last wait was ");
            put(w.text[w.shown]);
        }
    }
    put("\n");
    say_line();
}

/* Open MPI's own abort (for example its TCP transport meeting a reset) calls exit(): still say
 * what this rank waited for. */
static void at_exit(void)
{
    if (w.active && !w.said) {
        w.said = 1;
        line_len = 0;
        put("mpipe: rank ");
        put(w.rank);
        put(" waited ");
        put_elapsed();
        put(" s ");
        put(w.text[w.shown]);
        put(" when the MPI library ended this process (a peer or its link failed)\n");
        say_line();
    }
}

void mp__report_install(int rank, const char *host)
{
    static int installed;
    snprintf(w.rank, sizeof w.rank, "%d", rank);
    snprintf(w.who, sizeof w.who, "rank %d on host %.100s: ", rank, host);
    if (installed)
        return;
    installed = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sa.sa_flags = SA_RESETHAND; /* a second SIGTERM kills as usual */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    atexit(at_exit);
    /* Open MPI's TCP transport writes to its peers with writev(). When a peer's host dies, the
     * next write to its socket raises SIGPIPE, whose default action ends this rank at once,
     * silently: no handler, no exit hook, often before mpirun's SIGTERM (seen: rank 0 killed by
     * SIGPIPE inside MPI_Isend of a roll call, its failures.log never written). Ignored, the write
     * fails with EPIPE, Open MPI closes that connection and says so, and the rank goes on into its
     * wait, which ends at mpirun's SIGTERM or the deadline with the usual `waited` line. */
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);
    /* If mpirun (or this host's orted) dies, nothing tells the rank but its own MPI library, which
     * ends it without a word: ask the kernel for a signal of our own then (Linux), so the rank
     * still says what it was doing. A real-time signal, so it is never taken for mpirun's TERM. */
    int sig = SIGRTMIN + 2;
    sigaction(sig, &sa, NULL);
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, sig);
    if (getppid() != parent)
        raise(sig); /* it died before the request was in place */
}

void mp__report_wait_begin(const char *what, const char *peer_text)
{
    int next = !w.shown;
    snprintf(w.text[next], sizeof w.text[next], "for %s%s", what, peer_text);
    w.shown = next;
    clock_gettime(CLOCK_MONOTONIC, &w.t0);
    w.any = 1;
    w.active = 1;
}

void mp__report_wait_end(void)
{
    w.active = 0;
}

int mp__report_term_requested(void)
{
    return w.term;
}

int mp__report_said(void)
{
    return w.said;
}

void mp__report_saying(void)
{
    w.said = 1;
    w.active = 0;
}

void mp__report_set_file(const char *path)
{
    snprintf(w.file, sizeof w.file, "%s", path ? path : "");
}

void mp__report_to_file(const char *text)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s\n", text);
    if (n > 0 && text[0])
        to_file(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}
