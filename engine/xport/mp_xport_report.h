/* A rank's own account of how it ended (mp_xport_report.c): what it was waiting for when mpirun
 * ended it (SIGTERM) or when Open MPI ended it itself. Internal to xport/: mp_xport_mpi.c marks
 * every wait's beginning and end. */
#ifndef MP_XPORT_REPORT_H
#define MP_XPORT_REPORT_H

/* Installs the SIGTERM handler and the exit hook (once per process) for this rank, and ignores
 * SIGPIPE (a write to a dead peer's socket fails with EPIPE instead of ending the rank). */
void mp__report_install(int rank, const char *host);
/* Where reports also go (appended, "rank R on host H: TEXT"); NULL or "" for nowhere. */
void mp__report_set_file(const char *path);
/* Appends a report the caller formatted (a deadline or MPI failure) to that file. */
void mp__report_to_file(const char *text);
/* A wait begins: "for WHAT" plus peer_text (" (rank 1 is on host h)") is what a report says. */
void mp__report_wait_begin(const char *what, const char *peer_text);
void mp__report_wait_end(void);
/* SIGTERM has arrived (the wait loops then stop and report). */
int mp__report_term_requested(void);
/* The handler has already written this rank's `waited` line: the error needs no message. */
int mp__report_said(void);
/* The caller is about to report a failure itself: the exit hook stays quiet. */
void mp__report_saying(void);

#endif
