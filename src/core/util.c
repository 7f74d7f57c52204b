/* util.c: errors, clocks, memory and file helpers. */
#include "util.h"
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_buf[1024];

/* Record a formatted error message for the caller to print; always returns -1. */
int tr_error(const char *fmt, ...) {
    char tmp[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);   /* fmt may reference err_buf itself */
    va_end(ap);
    memcpy(err_buf, tmp, sizeof err_buf);
    return -1;
}

const char *tr_errmsg(void) { return err_buf; }
void tr_error_clear(void) { err_buf[0] = 0; }

double tr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double tr_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

long tr_peak_rss_kib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return ru.ru_maxrss;
}

int tr_ncores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void oom(size_t n) {
    fprintf(stderr, "tokenrec: out of memory allocating %zu bytes\n", n);
    abort();
}

void *tr_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *tr_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *tr_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *tr_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = tr_malloc(n);
    memcpy(p, s, n);
    return p;
}

/* Slurp a file; readers parse from memory, which keeps libcsv fed in large chunks. */
int tr_read_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return tr_error("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return tr_error("%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = tr_malloc(n + 1);
    size_t got = n ? fread(buf, 1, n, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(buf);
        return tr_error("%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

int tr_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tr_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *tr_fmt_duration(double s, char *buf, size_t len) {
    if (s < 0 || s != s) snprintf(buf, len, "?");
    else if (s < 60) snprintf(buf, len, "%.1fs", s);
    else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, len, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
    return buf;
}

uint64_t tr_hash64(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = data;
    if (!h) h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    return h;
}

void tr_ivec_push(tr_ivec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->v = tr_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

void tr_ivec_free(tr_ivec *a) { free(a->v); a->v = NULL; a->n = a->cap = 0; }
