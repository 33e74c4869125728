/* Open MPI implementation of mp_xport.h: the only file that includes <mpi.h>. Requests live in a
 * fixed table so handles are plain ints; every wait polls MPI_Test against MPI_Wtime so no wait can
 * outlive the deadline, and collectives are the nonblocking MPI-3 forms polled the same way. */
#include "mp_xport.h"

#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mp_xport_report.h"

#define MAX_REQ 4096
#define TAG_ROLL (1 << 30) /* the roll call of blocking collectives (far above pipeline tags) */
#define TAG_ALIVE (TAG_ROLL + 1)     /* the second roll call: "are you still there?" */
#define TAG_ALIVE_ACK (TAG_ROLL + 2) /* its answer, echoing the question's number */

struct mp_xport {
    MPI_Comm comm;
    int rank, size;
    double deadline_s;
    char host[MPI_MAX_PROCESSOR_NAME];
    MPI_Request req[MAX_REQ];
    int peer[MAX_REQ];
    int free_list[MAX_REQ];
    int n_free;
    int owns_mpi;
    MPI_Comm world;       /* the duplicated world communicator, whose ranks `hosts` indexes */
    char (*hosts)[64];    /* every world rank's host name, so failures can name the peer's host */
    int owns_hosts;
    int *to_world;        /* this communicator's rank -> world rank (indexes hosts) */
    MPI_Request *roll;    /* 2 * size: a collective's roll call, receives then sends */
    int *roll_in, roll_out;
    int alive_seq;        /* the last second roll call this rank asked on this communicator */
};

/* This process's communicators, so a wait on any of them answers a second roll call asked on
 * another (a rank past a collective that others are stuck in waits elsewhere). */
static struct mp_xport *live[8];
static int n_live;

/* Every rank of comm as a world rank, so a failure report names hosts without calling MPI. */
static int *world_ranks(MPI_Comm comm, MPI_Comm world, int size)
{
    int *in = malloc(sizeof *in * (size_t)size), *out = malloc(sizeof *out * (size_t)size);
    MPI_Group g, gw;
    if (in && out && MPI_Comm_group(comm, &g) == MPI_SUCCESS) {
        for (int i = 0; i < size; i++)
            in[i] = i;
        MPI_Comm_group(world, &gw);
        MPI_Group_translate_ranks(g, size, in, gw, out);
        MPI_Group_free(&g);
        MPI_Group_free(&gw);
        free(in);
        return out;
    }
    free(in);
    free(out);
    return NULL;
}

/* Per-communicator arrays: world ranks of its ranks, and the roll call's requests. */
static int comm_arrays(struct mp_xport *x)
{
    x->to_world = world_ranks(x->comm, x->world, x->size);
    x->roll = malloc(sizeof *x->roll * 2 * (size_t)x->size);
    x->roll_in = calloc((size_t)x->size, sizeof *x->roll_in);
    for (int i = 0; x->roll && i < 2 * x->size; i++)
        x->roll[i] = MPI_REQUEST_NULL;
    if (n_live < (int)(sizeof live / sizeof live[0]))
        live[n_live++] = x;
    return x->to_world && x->roll && x->roll_in ? 0 : -1;
}

static void free_arrays(struct mp_xport *x)
{
    for (int i = 0; i < n_live; i++)
        if (live[i] == x)
            live[i--] = live[--n_live];
    free(x->to_world);
    free(x->roll);
    free(x->roll_in);
}


static int mpi_fail(struct mp_xport *x, int rc, const char *call, int peer, int tag,
                    struct mp_err *err)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    text[len] = 0;
    if (err)
        err->rank = x->rank;
    return MP_FAIL(err, MPI, "rank %d: %s (peer %d, tag %d) failed: %s", x->rank, call, peer, tag,
                   text);
}

int mp_xport_init(struct mp_xport **out, int *argc, char ***argv, struct mp_err *err)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS)
        return MP_FAIL(err, MPI, "MPI_Init failed");
    struct mp_xport *x = calloc(1, sizeof *x);
    if (!x)
        return MP_FAIL(err, NOMEM, "out of memory");
    x->owns_mpi = !inited;
    MPI_Comm_dup(MPI_COMM_WORLD, &x->comm);
    MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(x->comm, &x->rank);
    MPI_Comm_size(x->comm, &x->size);
    int len = 0;
    MPI_Get_processor_name(x->host, &len);
    x->deadline_s = 60.0;
    x->world = x->comm;
    if (x->size > 1) {
        mp__report_install(x->rank, x->host);
        x->hosts = calloc((size_t)x->size, sizeof *x->hosts);
        char mine[64] = {0};
        snprintf(mine, sizeof mine, "%.63s", x->host);
        if (x->hosts && MPI_Allgather(mine, 64, MPI_CHAR, x->hosts, 64, MPI_CHAR, x->comm) ==
                            MPI_SUCCESS)
            x->owns_hosts = 1;
        else
            free(x->hosts), x->hosts = NULL;
    }
    if (comm_arrays(x) < 0) {
        free_arrays(x);
        free(x);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int i = 0; i < MAX_REQ; i++) {
        x->req[i] = MPI_REQUEST_NULL;
        x->free_list[i] = MAX_REQ - 1 - i;
    }
    x->n_free = MAX_REQ;
    *out = x;
    return 0;
}

/* A transport over `comm` inheriting x's deadline and host; MPI itself stays x's. */
static int wrap_comm(struct mp_xport *x, MPI_Comm comm, struct mp_xport **out, struct mp_err *err)
{
    struct mp_xport *s = malloc(sizeof *s);
    if (!s)
        return MP_FAIL(err, NOMEM, "out of memory");
    memcpy(s, x, sizeof *s);
    s->comm = comm;
    s->owns_mpi = 0;
    s->owns_hosts = 0;
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm, &s->rank);
    MPI_Comm_size(comm, &s->size);
    if (comm_arrays(s) < 0) {
        free_arrays(s);
        free(s);
        return MP_FAIL(err, NOMEM, "out of memory");
    }
    for (int i = 0; i < MAX_REQ; i++) {
        s->req[i] = MPI_REQUEST_NULL;
        s->free_list[i] = MAX_REQ - 1 - i;
    }
    s->n_free = MAX_REQ;
    *out = s;
    return 0;
}

int mp_xport_split(struct mp_xport *x, int color, int key, struct mp_xport **out,
                   struct mp_err *err)
{
    MPI_Comm sub;
    *out = NULL;
    int rc = MPI_Comm_split(x->comm, color < 0 ? MPI_UNDEFINED : color, key, &sub);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Comm_split", -1, -1, err);
    return sub == MPI_COMM_NULL ? 0 : wrap_comm(x, sub, out, err);
}

int mp_xport_one_host(struct mp_xport *x, int *one_host, struct mp_err *err)
{
    MPI_Comm node;
    int n = 0;
    *one_host = 0;
    int rc = MPI_Comm_split_type(x->comm, MPI_COMM_TYPE_SHARED, x->rank, MPI_INFO_NULL, &node);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Comm_split_type", -1, -1, err);
    MPI_Comm_size(node, &n);
    MPI_Comm_free(&node);
    *one_host = n == x->size; /* the same answer on every rank */
    return 0;
}

int mp_xport_sub(struct mp_xport *x, int n, struct mp_xport **out, struct mp_err *err)
{
    return mp_xport_split(x, x->rank < n ? 0 : -1, x->rank, out, err);
}

void mp_xport_release(struct mp_xport *x)
{
    if (x && !x->owns_mpi)
        MPI_Comm_free(&x->comm);
    if (x && x->owns_hosts)
        free(x->hosts);
    if (x)
        free_arrays(x);
    free(x);
}

void mp_xport_finalize(struct mp_xport *x)
{
    if (!x)
        return;
    MPI_Comm_free(&x->comm);
    int owns = x->owns_mpi;
    if (x->owns_hosts)
        free(x->hosts);
    free_arrays(x);
    free(x);
    if (owns)
        MPI_Finalize();
}

int mp_xport_rank(const struct mp_xport *x) { return x->rank; }
int mp_xport_size(const struct mp_xport *x) { return x->size; }
double mp_xport_now(void) { return MPI_Wtime(); }
void mp_xport_set_deadline(struct mp_xport *x, double s) { x->deadline_s = s; }
double mp_xport_deadline(const struct mp_xport *x) { return x->deadline_s; }
const char *mp_xport_host(const struct mp_xport *x) { return x->host; }

static int take_slot(struct mp_xport *x, struct mp_err *err)
{
    if (x->n_free == 0)
        return MP_FAIL(err, INTERNAL, "rank %d: more than %d outstanding requests", x->rank,
                       MAX_REQ);
    return x->free_list[--x->n_free];
}

static void give_slot(struct mp_xport *x, int slot)
{
    x->req[slot] = MPI_REQUEST_NULL;
    x->free_list[x->n_free++] = slot;
}

int mp_xport_isend(struct mp_xport *x, const void *buf, size_t bytes, int peer, int tag, int *req,
                   struct mp_err *err)
{
    int slot = take_slot(x, err);
    if (slot < 0)
        return -1;
    int rc = MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag, x->comm, &x->req[slot]);
    if (rc != MPI_SUCCESS) {
        give_slot(x, slot);
        return mpi_fail(x, rc, "MPI_Isend", peer, tag, err);
    }
    x->peer[slot] = peer;
    *req = slot;
    return 0;
}

int mp_xport_irecv(struct mp_xport *x, void *buf, size_t bytes, int peer, int tag, int *req,
                   struct mp_err *err)
{
    int slot = take_slot(x, err);
    if (slot < 0)
        return -1;
    int rc = MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, tag, x->comm, &x->req[slot]);
    if (rc != MPI_SUCCESS) {
        give_slot(x, slot);
        return mpi_fail(x, rc, "MPI_Irecv", peer, tag, err);
    }
    x->peer[slot] = peer;
    *req = slot;
    return 0;
}

/* " (rank R is on host H)" for a peer of x, or "" when unknown: lets a deadline message name the
 * host that went quiet, not only its rank. peer < 0 is a collective: with two ranks, the other one
 * is the peer. */
static void peer_host(const struct mp_xport *x, int peer, char *buf, size_t len)
{
    buf[0] = 0;
    if (peer < 0 && x->size > 2)
        snprintf(buf, len, " (a collective over ranks 0..%d of this communicator)", x->size - 1);
    int other = peer < 0 && x->size == 2 ? 1 - x->rank : peer;
    if (other < 0 || !x->hosts || !x->to_world || other >= x->size ||
        x->to_world[other] == MPI_UNDEFINED)
        return;
    if (peer < 0) /* a 2-rank collective: the other rank is the one awaited */
        snprintf(buf, len, " from rank %d, the other rank of this collective (rank %d is on host "
                 "%s)", other, other, x->hosts[x->to_world[other]]);
    else
        snprintf(buf, len, " (rank %d is on host %s)", other, x->hosts[x->to_world[other]]);
}

/* A failed wait's line also goes to the failure file (mp_xport_set_report_file). */
static int told(const struct mp_err *err)
{
    if (err)
        mp__report_to_file(err->msg);
    return -1;
}

void mp_xport_set_report_file(struct mp_xport *x, const char *path)
{
    (void)x;
    mp__report_set_file(path);
}

/* A blocking collective's roll call: before it starts, every rank tells every other that it has
 * reached it, so that at the deadline the ranks that never came can be named (a collective by
 * itself cannot say who is missing). 2 (size - 1) one-int messages per collective. */
static int roll_call(struct mp_xport *x, struct mp_err *err)
{
    for (int p = 0; p < x->size; p++) {
        if (p == x->rank)
            continue;
        int rc = MPI_Irecv(&x->roll_in[p], 1, MPI_INT, p, TAG_ROLL, x->comm, &x->roll[p]);
        if (rc == MPI_SUCCESS)
            rc = MPI_Isend(&x->roll_out, 1, MPI_INT, p, TAG_ROLL, x->comm, &x->roll[x->size + p]);
        if (rc != MPI_SUCCESS)
            return mpi_fail(x, rc, "MPI_Isend/Irecv (roll call)", p, TAG_ROLL, err);
    }
    return 0;
}

/* Answers the second roll calls other ranks asked on any of this process's communicators: a
 * one-int reply, eager, so the blocking send returns at once. */
static void answer_alive(void)
{
    for (int i = 0; i < n_live; i++) {
        struct mp_xport *c = live[i];
        int flag = 1, seq;
        MPI_Status st;
        while (MPI_Iprobe(MPI_ANY_SOURCE, TAG_ALIVE, c->comm, &flag, &st) == MPI_SUCCESS && flag &&
               MPI_Recv(&seq, 1, MPI_INT, st.MPI_SOURCE, TAG_ALIVE, c->comm,
                        MPI_STATUS_IGNORE) == MPI_SUCCESS)
            MPI_Send(&seq, 1, MPI_INT, st.MPI_SOURCE, TAG_ALIVE_ACK, c->comm);
    }
}

/* The second roll call, when every rank reached a collective that has not ended by the deadline:
 * asks every other rank whether it is still there and answers theirs, for up to wait_s. A rank
 * that stopped inside the collective (SIGSTOP, a debugger, a swapped-out VM) cannot answer; one
 * that waits anywhere else, or computes between kernels, does. Sets answered[p]. */
static void second_roll_call(struct mp_xport *x, double wait_s, int *answered)
{
    int n = x->size, seq = ++x->alive_seq, left = 0;
    MPI_Request *rq = malloc(sizeof *rq * (size_t)n);
    int *in = calloc((size_t)n, sizeof *in);
    for (int p = 0; p < n; p++) {
        answered[p] = p == x->rank;
        if (!rq || !in || p == x->rank)
            continue;
        rq[p] = MPI_REQUEST_NULL;
        if (MPI_Irecv(&in[p], 1, MPI_INT, p, TAG_ALIVE_ACK, x->comm, &rq[p]) == MPI_SUCCESS &&
            MPI_Send(&seq, 1, MPI_INT, p, TAG_ALIVE, x->comm) == MPI_SUCCESS)
            left++;
    }
    double t0 = MPI_Wtime();
    while (left > 0 && MPI_Wtime() - t0 < wait_s) {
        answer_alive();
        for (int p = 0; p < n; p++) {
            int done = 0;
            if (answered[p] || rq[p] == MPI_REQUEST_NULL ||
                MPI_Test(&rq[p], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done)
                continue;
            if (in[p] == seq)
                answered[p] = 1, left--;
            else /* an answer to an earlier question: wait for this one's */
                MPI_Irecv(&in[p], 1, MPI_INT, p, TAG_ALIVE_ACK, x->comm, &rq[p]);
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (int p = 0; rq && p < n; p++)
        if (p != x->rank && rq[p] != MPI_REQUEST_NULL) {
            MPI_Cancel(&rq[p]);
            MPI_Request_free(&rq[p]);
        }
    free(rq);
    free(in);
}

/* Who a collective waits for at its deadline: " from rank 1, which never reached it (rank 1 is
 * on host h)", the missing ranks named; or, when all of them came, the one that stopped inside
 * it: between two ranks that is the other rank (test_failures' SIGSTOP can land inside the
 * checkpoint's agreement, after rank 1's roll call went out); with more, the ranks that do not
 * answer a second roll call (chaos seed 7190: a SIGSTOP inside a 3-rank collective went
 * unnamed). */
static void roll_missing(struct mp_xport *x, char *buf, size_t len)
{
    char list[128] = "", ph[160];
    size_t at = 0;
    int n = 0, last = -1;
    for (int p = 0; p < x->size && at + 16 < sizeof list; p++) {
        int came = 1;
        if (p != x->rank && MPI_Test(&x->roll[p], &came, MPI_STATUS_IGNORE) == MPI_SUCCESS &&
            !came) {
            at += (size_t)snprintf(list + at, sizeof list - at, "%s%d", n++ ? ", " : "", p);
            last = p;
        }
    }
    if (n == 0 && x->size != 2) {
        int *answered = calloc((size_t)x->size, sizeof *answered);
        double wait = x->deadline_s / 4 < 0.5 ? 0.5 : x->deadline_s / 4 > 5 ? 5 : x->deadline_s / 4;
        if (answered)
            second_roll_call(x, wait, answered);
        for (int p = 0; answered && p < x->size && at + 16 < sizeof list; p++)
            if (!answered[p]) {
                at += (size_t)snprintf(list + at, sizeof list - at, "%s%d", n++ ? ", " : "", p);
                last = p;
            }
        free(answered);
        if (n == 0) {
            snprintf(buf, len, " (a collective over ranks 0..%d: all of them reached it and "
                     "answer, so it is stuck inside MPI)", x->size - 1);
            return;
        }
        if (n == 1)
            peer_host(x, last, ph, sizeof ph);
        snprintf(buf, len, " from rank%s %s, which reached it and then stopped answering (a "
                 "second roll call, %.1f s)%s", n > 1 ? "s" : "", list, wait, n == 1 ? ph : "");
        return;
    }
    if (n == 0)
        last = 1 - x->rank;
    peer_host(x, last, ph, sizeof ph);
    if (n == 0)
        snprintf(buf, len, " from rank %d, which reached it and then stopped inside it%s", last,
                 ph);
    else
        snprintf(buf, len, " from rank%s %s, which never reached it%s", n > 1 ? "s" : "", list,
                 n == 1 ? ph : "");
}

/* Whether a wait naps after its first 2,000 polls (about 0.1 ms) rather than after SPIN_S: where
 * this host runs more ranks than it has cores, or Open MPI was asked to yield when idle (mpirun
 * sets mpi_yield_when_idle for oversubscribed jobs; the tests set it), a waiting rank leaves the
 * core to a rank that computes. A rank with a core of its own keeps polling: a nap of 20 us lasts
 * 91 on a 2-core EPYC Zen4 VM, and a pipeline's waits for the next micro-batch last a few hundred
 * us, so a message that came during a nap was seen up to 90 us late (tiny.mp's 2-stage zb1 at
 * M 2: 85 us of each 540 us step). */
static int nap_early(void)
{
    static int cached = -1;
    if (cached < 0) {
        const char *y = getenv("OMPI_MCA_mpi_yield_when_idle");
        const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        cached = (y && (strcmp(y, "1") == 0 || strcmp(y, "true") == 0)) ||
                 (local && cores > 0 && atol(local) > cores);
    }
    return cached;
}
#define SPIN_S 5e-3 /* a rank with its own core polls this long before napping */

/* Polls one MPI request (and, for a collective, its roll call) until it completes or the deadline
 * passes. Sleeps briefly between polls after the first 2,000 polls where ranks share cores, after
 * SPIN_S where they do not (nap_early), so an oversubscribed peer gets the core. Every way a
 * wait can fail is a line containing `waited` that names what was awaited and from whom
 * (DESIGN.md §4). */
static int poll_request(struct mp_xport *x, MPI_Request *r, int peer, int roll, const char *what,
                        MPI_Status *status, struct mp_err *err)
{
    char ph[300];
    peer_host(x, peer, ph, sizeof ph);
    mp__report_wait_begin(what, ph);
    double t0 = MPI_Wtime(), last = t0;
    long spins = 0;
    for (;;) {
        int done = 0, came = 1;
        int rc = MPI_Test(r, &done, status ? status : MPI_STATUS_IGNORE);
        if (rc == MPI_SUCCESS && roll)
            rc = MPI_Testall(2 * x->size, x->roll, &came, MPI_STATUSES_IGNORE);
        double now = MPI_Wtime();
        /* Half a deadline between two polls (each a few microseconds apart) is time this process
         * did not run: stopped (SIGSTOP, a paused VM) or starved. Its clock says nothing of the
         * peer then, so the wait starts over: a rank stopped past the deadline and continued
         * blamed the healthy peer it had been waiting for (the ranks that kept running report
         * the stopped one themselves). */
        if (now - last > x->deadline_s / 2)
            t0 = now;
        last = now;
        double waited = now - t0;
        if (rc != MPI_SUCCESS) {
            char text[MPI_MAX_ERROR_STRING] = "";
            int len = 0;
            MPI_Error_string(rc, text, &len);
            mp__report_saying();
            if (err)
                err->rank = x->rank;
            MP_FAIL(err, MPI, "rank %d waited %.1f s for %s%s, and MPI failed: %s", x->rank,
                    waited, what, ph, text);
            return told(err);
        }
        if (done && came) {
            mp__report_wait_end();
            return 0;
        }
        int term = mp__report_term_requested();
        if (waited > x->deadline_s || term) {
            if (err)
                err->rank = x->rank;
            if (term && mp__report_said()) /* the SIGTERM handler wrote this rank's line */
                return mp_err_set(err, MP_ERR_PEER, __FILE__, __LINE__, "%s", "");
            mp__report_saying();
            if (roll)
                roll_missing(x, ph, sizeof ph);
            if (!term)
                MP_FAIL(err, DEADLINE, "rank %d waited %.0f s for %s%s", x->rank, waited, what,
                        ph);
            else /* the peer (or the ranks of a collective) is what a user looks at next */
                MP_FAIL(err, PEER, "rank %d was ended by mpirun (SIGTERM: a peer failed) after it "
                        "waited %.1f s for %s%s", x->rank, waited, what, ph);
            return told(err);
        }
        if (++spins > 2000 && (waited > SPIN_S || nap_early())) {
            if (waited > 0.2)
                answer_alive(); /* another rank's second roll call (roll_missing) */
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

/* MPIPE_FAULT_INJECT=stop_in_collective:N:RANK (tests only): world rank RANK stops itself
 * (SIGSTOP) at its N-th blocking collective, after its roll call went out and before it joins:
 * every rank reached the collective, so only the second roll call can name the one that stopped. */
static void fault_stop_in_collective(const struct mp_xport *x)
{
    static unsigned long long count;
    const char *f = getenv("MPIPE_FAULT_INJECT");
    unsigned long long at;
    int who;
    char end;
    count++;
    if (f && sscanf(f, "stop_in_collective:%llu:%d%c", &at, &who, &end) == 2 && count == at &&
        x->to_world[x->rank] == who) {
        MPI_Waitall(x->size, x->roll + x->size, MPI_STATUSES_IGNORE); /* the roll call is out */
        raise(SIGSTOP);
    }
}

/* Before a blocking collective starts: its roll call. */
static int announce(struct mp_xport *x, struct mp_err *err)
{
    if (x->size == 1)
        return 0;
    if (roll_call(x, err) < 0)
        return -1;
    fault_stop_in_collective(x);
    return 0;
}

/* A blocking collective announced and started as *r: the poll. */
static int poll_collective(struct mp_xport *x, MPI_Request *r, int root, const char *what,
                           struct mp_err *err)
{
    return poll_request(x, r, root, x->size > 1, what, NULL, err);
}

int mp_xport_wait(struct mp_xport *x, int *req, const char *what, struct mp_err *err)
{
    return mp_xport_wait_bytes(x, req, what, NULL, err);
}

int mp_xport_wait_bytes(struct mp_xport *x, int *req, const char *what, size_t *bytes,
                        struct mp_err *err)
{
    if (*req < 0)
        return 0;
    int slot = *req, count = 0;
    MPI_Status st;
    int rc = poll_request(x, &x->req[slot], x->peer[slot], 0, what, bytes ? &st : NULL, err);
    if (rc == 0) {
        give_slot(x, slot);
        *req = -1;
        if (bytes)
            *bytes = MPI_Get_count(&st, MPI_BYTE, &count) == MPI_SUCCESS && count > 0
                         ? (size_t)count : 0;
    }
    return rc;
}

int mp_xport_test(struct mp_xport *x, int *req, int *done, struct mp_err *err)
{
    *done = 1;
    if (*req < 0)
        return 0;
    int slot = *req;
    int rc = MPI_Test(&x->req[slot], done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Test", x->peer[slot], -1, err);
    if (*done) {
        give_slot(x, slot);
        *req = -1;
    }
    return 0;
}

/* Between kernels at most every PROGRESS_GAP_S. A small model's kernels last a microsecond or
 * two, and where Open MPI's mpi_yield_when_idle is set (oversubscribed ranks, the tests) every MPI
 * call that finds nothing to progress is a sched_yield system call. On a 2-core EPYC Zen4 VM,
 * tiny_mlp.mp at 16 micro-batches of 16 with the setting spent 10% of its time in sched_yield:
 * 297k samples/s, 331-334k with this gap, 339k without the setting. Transfers in flight wait at
 * most this long for the next push (2-stage and 2-replica tiny_mlp: no change past the noise);
 * MPI progresses all communicators in any call, so the gap is per process. */
#define PROGRESS_GAP_S 50e-6

void mp_xport_progress(struct mp_xport *x)
{
    static double last;
    double t = MPI_Wtime();
    if (t - last < PROGRESS_GAP_S)
        return;
    last = t;
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, x->comm, &flag, MPI_STATUS_IGNORE);
    static unsigned calls;
    if (++calls % 64 == 0) /* a rank computing still answers (roll_missing) */
        answer_alive();
}

int mp_xport_barrier(struct mp_xport *x, const char *what, struct mp_err *err)
{
    MPI_Request r;
    if (announce(x, err))
        return -1;
    int rc = MPI_Ibarrier(x->comm, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Ibarrier", -1, -1, err);
    return poll_collective(x, &r, -1, what, err);
}

static int allreduce(struct mp_xport *x, double *buf, size_t n, MPI_Op op, const char *what,
                     struct mp_err *err)
{
    MPI_Request r;
    if (announce(x, err))
        return -1;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, op, x->comm, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Iallreduce", -1, -1, err);
    return poll_collective(x, &r, -1, what, err);
}

int mp_xport_allreduce_sum(struct mp_xport *x, double *buf, size_t n, const char *what,
                           struct mp_err *err)
{
    return allreduce(x, buf, n, MPI_SUM, what, err);
}

int mp_xport_allreduce_max(struct mp_xport *x, double *buf, size_t n, const char *what,
                           struct mp_err *err)
{
    return allreduce(x, buf, n, MPI_MAX, what, err);
}

int mp_xport_bcast(struct mp_xport *x, void *buf, size_t bytes, int root, const char *what,
                   struct mp_err *err)
{
    MPI_Request r;
    if (announce(x, err))
        return -1;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, x->comm, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Ibcast", root, -1, err);
    return poll_collective(x, &r, root, what, err);
}

int mp_xport_allgather(struct mp_xport *x, const void *mine, void *all, size_t bytes,
                       const char *what, struct mp_err *err)
{
    MPI_Request r;
    if (announce(x, err))
        return -1;
    int rc = MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, x->comm, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Iallgather", -1, -1, err);
    return poll_collective(x, &r, -1, what, err);
}

int mp_xport_send(struct mp_xport *x, const void *buf, size_t bytes, int peer, int tag,
                  const char *what, struct mp_err *err)
{
    int req = -1;
    if (mp_xport_isend(x, buf, bytes, peer, tag, &req, err))
        return -1;
    return mp_xport_wait(x, &req, what, err);
}

int mp_xport_recv(struct mp_xport *x, void *buf, size_t bytes, int peer, int tag,
                  const char *what, struct mp_err *err)
{
    int req = -1;
    if (mp_xport_irecv(x, buf, bytes, peer, tag, &req, err))
        return -1;
    return mp_xport_wait(x, &req, what, err);
}

int mp_xport_probe(struct mp_xport *x, int peer, int tag, double seconds, int *found, int *src,
                   int *tag_out, size_t *bytes, struct mp_err *err)
{
    int p = peer == MP_XPORT_ANY ? MPI_ANY_SOURCE : peer;
    int t = tag == MP_XPORT_ANY ? MPI_ANY_TAG : tag;
    char what[64], ph[160] = "";
    if (peer == MP_XPORT_ANY)
        snprintf(what, sizeof what, "a message from any rank");
    else
        snprintf(what, sizeof what, "a message from rank %d", peer), peer_host(x, peer, ph, sizeof ph);
    mp__report_wait_begin(what, ph);
    double t0 = MPI_Wtime();
    long nap_ns = 1000;
    *found = 0;
    for (long spins = 0;; spins++) {
        MPI_Status st;
        int rc = MPI_Iprobe(p, t, x->comm, found, &st);
        if (rc != MPI_SUCCESS) {
            mp__report_saying();
            return mpi_fail(x, rc, "MPI_Iprobe", peer, tag, err);
        }
        if (*found) {
            int count = 0;
            MPI_Get_count(&st, MPI_BYTE, &count);
            *src = st.MPI_SOURCE;
            *tag_out = st.MPI_TAG;
            *bytes = (size_t)count;
            mp__report_wait_end();
            return 0;
        }
        if (MPI_Wtime() - t0 >= seconds) {
            mp__report_wait_end();
            return 0;
        }
        if (mp__report_term_requested()) {
            if (err)
                err->rank = x->rank;
            if (mp__report_said())
                return mp_err_set(err, MP_ERR_PEER, __FILE__, __LINE__, "%s", "");
            mp__report_saying();
            MP_FAIL(err, PEER, "rank %d was ended by mpirun (SIGTERM: a peer failed) after it "
                    "waited %.1f s for %s%s", x->rank, MPI_Wtime() - t0, what, ph);
            return told(err);
        }
        if (spins > 200) { /* back off to 1 ms naps: an idle prober must not steal a core */
            struct timespec ts = {0, nap_ns};
            nanosleep(&ts, NULL);
            nap_ns = nap_ns < 1000000 ? nap_ns * 2 : 1000000;
        }
    }
}

void mp_xport_abort(struct mp_xport *x, int code)
{
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(x ? x->comm : MPI_COMM_WORLD, code);
}

/* ---- benchmark loops (mpipe bench p2p) ---- */

/* Completes n requests, polling without sleeping: a sleep would be counted in the latency. */
static int spin_all(struct mp_xport *x, int n, MPI_Request *r, int peer, struct mp_err *err)
{
    double t0 = MPI_Wtime();
    for (long spins = 0;; spins++) {
        int done = 0;
        int rc = MPI_Testall(n, r, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(x, rc, "MPI_Testall (bench)", peer, 7, err);
        if (done)
            return 0;
        if ((spins & 1023) == 0 && MPI_Wtime() - t0 > x->deadline_s) {
            if (err)
                err->rank = x->rank;
            return MP_FAIL(err, DEADLINE, "rank %d waited %.0f s for rank %d in a benchmark",
                           x->rank, MPI_Wtime() - t0, peer);
        }
    }
}

static int pingpong_once(struct mp_xport *x, int peer, int first, void *buf, int n,
                         struct mp_err *err)
{
    MPI_Request r;
    for (int leg = 0; leg < 2; leg++) {
        int rc = (leg == 0) == (first != 0)
                     ? MPI_Isend(buf, n, MPI_BYTE, peer, 7, x->comm, &r)
                     : MPI_Irecv(buf, n, MPI_BYTE, peer, 7, x->comm, &r);
        if (rc != MPI_SUCCESS)
            return mpi_fail(x, rc, "MPI_Isend/Irecv (bench)", peer, 7, err);
        if (spin_all(x, 1, &r, peer, err))
            return -1;
    }
    return 0;
}

int mp_xport_bench_pingpong(struct mp_xport *x, int peer, int first, void *buf, size_t bytes,
                            int warmup, int iters, double *seconds, struct mp_err *err)
{
    double t0 = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (i == warmup)
            t0 = MPI_Wtime();
        if (pingpong_once(x, peer, first, buf, (int)bytes, err))
            return -1;
    }
    *seconds = MPI_Wtime() - t0;
    return 0;
}

/* One window: the data messages (tag 8) then the ack (tag 9) back to the sender(s). */
static int window_once(struct mp_xport *x, int peer, int first, const void *sbuf, void *rbuf,
                       int n, int window, int bidir, struct mp_err *err)
{
    MPI_Request r[2 * 256 + 2];
    int k = 0, rc = MPI_SUCCESS, ack = 0, ack_in = 0;
    int sends = first || bidir, recvs = !first || bidir;
    for (int i = 0; recvs && i < window && rc == MPI_SUCCESS; i++)
        rc = MPI_Irecv(rbuf, n, MPI_BYTE, peer, 8, x->comm, &r[k++]);
    for (int i = 0; sends && i < window && rc == MPI_SUCCESS; i++)
        rc = MPI_Isend(sbuf, n, MPI_BYTE, peer, 8, x->comm, &r[k++]);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Isend/Irecv (bench window)", peer, 8, err);
    if (spin_all(x, k, r, peer, err))
        return -1;
    k = 0;
    if (sends)
        rc = MPI_Irecv(&ack_in, 1, MPI_INT, peer, 9, x->comm, &r[k++]);
    if (recvs && rc == MPI_SUCCESS)
        rc = MPI_Isend(&ack, 1, MPI_INT, peer, 9, x->comm, &r[k++]);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Isend/Irecv (bench ack)", peer, 9, err);
    return spin_all(x, k, r, peer, err);
}

int mp_xport_bench_window(struct mp_xport *x, int peer, int first, const void *sbuf, void *rbuf,
                          size_t bytes, int window, int bidir, int warmup, int iters,
                          double *seconds, struct mp_err *err)
{
    if (window < 1 || window > 256)
        return MP_FAIL(err, USAGE, "benchmark window %d is not in [1, 256]", window);
    double t0 = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (i == warmup)
            t0 = MPI_Wtime();
        if (window_once(x, peer, first, sbuf, rbuf, (int)bytes, window, bidir, err))
            return -1;
    }
    *seconds = MPI_Wtime() - t0;
    return 0;
}

int mp_xport_alltoallv_f(struct mp_xport *x, const float *send, const int *scounts,
                         const int *sdispls, float *recv, const int *rcounts, const int *rdispls,
                         const char *what, struct mp_err *err)
{
    MPI_Request r;
    if (announce(x, err))
        return -1;
    int rc = MPI_Ialltoallv(send, scounts, sdispls, MPI_FLOAT, recv, rcounts, rdispls, MPI_FLOAT,
                            x->comm, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Ialltoallv", -1, -1, err);
    return poll_collective(x, &r, -1, what, err);
}

int mp_xport_allgatherv_f(struct mp_xport *x, const float *send, int count, float *recv,
                          const int *counts, const int *displs, const char *what,
                          struct mp_err *err)
{
    MPI_Request r;
    if (announce(x, err))
        return -1;
    int rc = MPI_Iallgatherv(send ? send : MPI_IN_PLACE, count, MPI_FLOAT, recv, counts, displs,
                             MPI_FLOAT, x->comm, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Iallgatherv", -1, -1, err);
    return poll_collective(x, &r, -1, what, err);
}

int mp_xport_allreduce_sum_f(struct mp_xport *x, float *buf, size_t n, const char *what,
                             struct mp_err *err)
{
    MPI_Request r;
    if (announce(x, err))
        return -1;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, x->comm, &r);
    if (rc != MPI_SUCCESS)
        return mpi_fail(x, rc, "MPI_Iallreduce", -1, -1, err);
    return poll_collective(x, &r, -1, what, err);
}

int mp_xport_iallreduce_sum_f(struct mp_xport *x, float *buf, size_t n, int *req,
                              struct mp_err *err)
{
    int slot = take_slot(x, err);
    if (slot < 0)
        return -1;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, x->comm, &x->req[slot]);
    if (rc != MPI_SUCCESS) {
        give_slot(x, slot);
        return mpi_fail(x, rc, "MPI_Iallreduce", -1, -1, err);
    }
    x->peer[slot] = -1;
    *req = slot;
    return 0;
}
