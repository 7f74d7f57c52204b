/* testutil: temporary databases, small synthetic datasets with a planted pattern, and
 * running the tokenrec binary, shared by the tests. */
#ifndef TOKENREC_TESTUTIL_H
#define TOKENREC_TESTUTIL_H
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

const char *tu_tmpdir(void);                   /* one fresh directory per test process */
char       *tu_path(const char *name);         /* tmpdir/name; caller frees */
sqlite3    *tu_db(const char *name);           /* a fresh, migrated database in tmpdir */
const char *tu_shared(void);                   /* $TOKENREC_SHARED, else ../shared */
const char *tu_bin(void);                      /* $TOKENREC_BIN, else build/tokenrec */
int         tu_run(const char *fmt, ...);      /* system() of the formatted command; exit status */
/* The same, with stdout and stderr together in out (n bytes, NUL-terminated). */
int         tu_capture(char *out, size_t n, const char *fmt, ...);
int         tu_write_file(const char *path, const char *text);
/* The latest value of run_metrics (method, split, metric, k); -1 when there is none. */
double      tu_metric(sqlite3 *db, const char *method, const char *split, const char *metric, int k);

/* A synthetic dataset with a planted sequential pattern: items fall into n_clusters groups;
 * each user stays in one group and walks it in order (next = current + 1 within the group),
 * with a small seeded chance of a random jump. Stored under name through ingest_write, as
 * an ingest run would. Returns 0. */
int tu_synthetic(sqlite3 *db, const char *name, int n_users, int n_items, int n_clusters,
                 int len_min, int len_max, uint64_t seed);
/* The same as a sequence-format text file ("user item item ...") for `tokenrec ingest --file`. */
int tu_synthetic_file(const char *path, int n_users, int n_items, int n_clusters, int len_min,
                      int len_max, uint64_t seed);
/* The end-to-end tests' upstream: the synthetic file (300 users, 120 items, 6 clusters,
 * seed 7) ingested as dataset synth into dbpath, then cf and tokenize with the given
 * options. Returns 0, or the exit status of the first command that failed. */
int tu_synthetic_upstream(const char *dbpath, const char *cf_args, const char *tok_args);
/* Start `exec <cmd>` through sh, SIGKILL it after delay_us, reap it. Returns 1 when the
 * kill landed (the command was still running), 0 when it had already ended. */
int tu_run_killed(const char *cmd, unsigned delay_us);

#endif
