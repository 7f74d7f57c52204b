/* Launch.c: fork/exec of stages and SIGINT to stop them. */
#include "Launch.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *Launch_self(char *buf, size_t len) {
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0) { snprintf(buf, len, "/proc/self/exe"); return buf; }
    buf[n] = 0;
    return buf;
}

pid_t Launch_spawn(char *const argv[]) {
    pid_t pid = fork();
    if (pid < 0) { tr_error("cannot start %s: %s", argv[1] ? argv[1] : argv[0], strerror(errno)); return -1; }
    if (pid == 0) {
        setsid();
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0); dup2(fd, 1); dup2(fd, 2);
            if (fd > 2) close(fd);
        }
        for (int i = 3; i < 256; i++) close(i);     /* the dashboard's database and terminal */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int Launch_stop(int64_t pid) {
    if (pid <= 0) return tr_error("no process to stop");
    if (kill((pid_t)pid, SIGINT) != 0)
        return tr_error("cannot stop process %lld: %s", (long long)pid, strerror(errno));
    return 0;
}

pid_t Launch_reap(int *status) {
    int st = 0;
    pid_t p = waitpid(-1, &st, WNOHANG);
    if (p <= 0) return 0;
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return p;
}
