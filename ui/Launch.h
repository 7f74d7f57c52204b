/* Launch: starting and stopping stages as separate tokenrec processes. The dashboard never
 * runs stage code itself: it forks, the child starts a new session (so it survives the
 * dashboard and never sees the terminal's Ctrl-C), sends its output to /dev/null, and execs
 * the tokenrec binary. The child records itself in stage_runs; that is how a restarted
 * dashboard finds it again. */
#ifndef TOKENREC_UI_LAUNCH_H
#define TOKENREC_UI_LAUNCH_H
#include <stdint.h>
#include <sys/types.h>

/* The running binary's own path (readlink of /proc/self/exe), for launching stages. */
const char *Launch_self(char *buf, size_t len);
/* fork + setsid + exec argv[0] with argv; the child's pid, or -1 with tr_error. */
pid_t Launch_spawn(char *const argv[]);
/* Ask a running stage to stop at its next checkpoint (SIGINT); 0 or -1 with tr_error. */
int Launch_stop(int64_t pid);
/* Collect one finished child without waiting: its pid and exit status (128 + signal when it
 * was killed) in *status, or 0 when none has finished. */
pid_t Launch_reap(int *status);

#endif
