/* util: the error slot, clocks, and small helpers shared by every module.
 *
 * Errors: a failing function records a message with tr_error() and returns -1 (or NULL);
 * the caller either adds context or lets main() print it. The message is per-thread. */
#ifndef TOKENREC_UTIL_H
#define TOKENREC_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define TR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TR_PRINTF(a, b)
#endif

int         tr_error(const char *fmt, ...) TR_PRINTF(1, 2);   /* sets the message, returns -1 */
const char *tr_errmsg(void);                                   /* "" when none */
void        tr_error_clear(void);

double tr_now(void);            /* wall clock, seconds since the epoch */
double tr_monotonic(void);      /* monotonic seconds, for durations */
long   tr_peak_rss_kib(void);   /* peak resident memory of this process, KiB */
int    tr_ncores(void);         /* online CPU cores */

void  *tr_malloc(size_t n);     /* aborts with a message on out-of-memory */
void  *tr_calloc(size_t n, size_t size);
void  *tr_realloc(void *p, size_t n);
char  *tr_strdup(const char *s);

/* Read a whole file into memory (NUL-terminated); -1 with tr_error naming the file. */
int    tr_read_file(const char *path, char **data, size_t *len);
int    tr_file_exists(const char *path);
int    tr_dir_exists(const char *path);

/* Format seconds as "1h02m", "3m05s" or "12.3s" into buf. */
const char *tr_fmt_duration(double seconds, char *buf, size_t len);

/* 64-bit FNV-1a, used for parameter fingerprints. */
uint64_t tr_hash64(const void *data, size_t n, uint64_t h);

/* Growable array of int32 (used by readers and samplers). */
typedef struct { int32_t *v; size_t n, cap; } tr_ivec;
void tr_ivec_push(tr_ivec *a, int32_t x);
void tr_ivec_free(tr_ivec *a);

#endif
