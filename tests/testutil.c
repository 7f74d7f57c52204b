/* testutil.c: the tests' helpers that need no database (see testutil.h): the temporary
 * folder, ../shared, running the binary. testutil_db.c has the database ones. */
#include "testutil.h"
#include "util.h"
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

static void cleanup(void) {
    if (!tmpdir[0] || getenv("TOKENREC_KEEP_TMP")) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "testutil: could not remove %s\n", tmpdir);
}

const char *tu_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/tokenrec-test-XXXXXX");
        if (!mkdtemp(tmpdir)) { perror("mkdtemp"); abort(); }
        atexit(cleanup);
    }
    return tmpdir;
}

char *tu_path(const char *name) {
    size_t n = strlen(tu_tmpdir()) + strlen(name) + 2;
    char *p = tr_malloc(n);
    snprintf(p, n, "%s/%s", tu_tmpdir(), name);
    return p;
}

const char *tu_shared(void) {
    const char *s = getenv("TOKENREC_SHARED");
    return s && *s ? s : "../shared";
}

const char *tu_shared_dir(const char *sub, char *buf, size_t n) {
    /* $TOKENREC_SHARED (meson sets it), else ../shared from the source or the build folder */
    const char *env = getenv("TOKENREC_SHARED");
    const char *cands[] = {env && *env ? env : NULL, "../shared", "../../shared"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++) {
        if (!cands[i]) continue;
        snprintf(buf, n, "%s/%s", cands[i], sub);
        if (tr_dir_exists(buf)) return buf;
        if (env && *env) break;         /* an explicit folder is the only candidate */
    }
    return NULL;
}

int tu_ci(void) {
    const char *ci = getenv("CI");
    return ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
}

int tu_shared_missing(const char *sub) {
    if (tu_ci()) {
        fprintf(stderr, "../shared/%s is missing (TOKENREC_SHARED=%s): a failure under CI=true\n", sub,
                getenv("TOKENREC_SHARED") ? getenv("TOKENREC_SHARED") : "");
        return 1;
    }
    fprintf(stderr, "../shared/%s is missing: skipped\n", sub);
    return 77;
}

const char *tu_bin(void) {
    const char *s = getenv("TOKENREC_BIN");
    return s && *s ? s : "build/tokenrec";
}

int tu_run(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int tu_capture(char *out, size_t n, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int tu_write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* Run the report into tmpdir/report.md and read it back. */
char *tu_report_md(const char *dbpath) {
    if (tu_run("%s report --db %s > %s/report.md", tu_bin(), dbpath, tu_tmpdir()) != 0) return NULL;
    char *rp = tu_path("report.md"), *txt = NULL;
    size_t n;
    if (tr_read_file(rp, &txt, &n) != 0) txt = NULL;
    free(rp);
    return txt;
}

int tu_run_killed(const char *cmd, unsigned delay_us) {
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        char *full = malloc(strlen(cmd) + 8);
        sprintf(full, "exec %s", cmd);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    usleep(delay_us);
    int landed = kill(pid, SIGKILL) == 0;
    waitpid(pid, NULL, 0);
    return landed;
}
