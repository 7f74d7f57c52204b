/* testutil: temporary databases, small synthetic datasets with a planted pattern, and
 * running the tokenrec binary, shared by the tests. testutil.c has the helpers without a
 * database (the core's tests link it alone); testutil_db.c the rest (tu_db, tu_metric and
 * the synthetic datasets). */
#ifndef TOKENREC_TESTUTIL_H
#define TOKENREC_TESTUTIL_H
typedef struct sqlite3 sqlite3;               /* sqlite3.h where a test uses the database */
#include <stddef.h>
#include <stdint.h>

const char *tu_tmpdir(void);                   /* one fresh directory per test process */
char       *tu_path(const char *name);         /* tmpdir/name; caller frees */
sqlite3    *tu_db(const char *name);           /* a fresh, migrated database in tmpdir */
const char *tu_shared(void);                   /* $TOKENREC_SHARED, else ../shared */
/* Tests that need ../shared (the datasets, the T5 test vectors), which is not part of the
 * repository. tu_shared_dir: the folder sub inside it (e.g. "datasets") in buf, or NULL when
 * it is missing. Missing, a test skips; under CI=true it fails instead, so that a CI without
 * the data cannot pass silently. */
const char *tu_shared_dir(const char *sub, char *buf, size_t n);
int         tu_ci(void);                       /* 1 when $CI is true */
/* The exit status of a test program that needs ../shared/sub when it is missing: 77 (meson:
 * skipped) or, under CI=true, 1. Says which on stderr. */
int         tu_shared_missing(const char *sub);
/* In a cmocka test: skip it when ../shared/sub is missing (buf receives the path), or fail
 * under CI=true. */
#define TU_NEED_SHARED(sub, buf) do { if (!tu_shared_dir((sub), (buf), sizeof (buf))) { \
        if (tu_shared_missing(sub) != 77) fail_msg("../shared/%s is missing and CI=true", (sub)); \
        skip(); } } while (0)
const char *tu_bin(void);                      /* $TOKENREC_BIN, else build/tokenrec */
int         tu_run(const char *fmt, ...);      /* system() of the formatted command; exit status */
/* The same, with stdout and stderr together in out (n bytes, NUL-terminated). */
int         tu_capture(char *out, size_t n, const char *fmt, ...);
int         tu_write_file(const char *path, const char *text);
/* `tokenrec report --db dbpath` (Markdown) run through the binary: its output, which the
 * caller frees, or NULL when the command failed or its output could not be read. */
char       *tu_report_md(const char *dbpath);
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
/* Run cmd and SIGKILL it after delays from start_us up to max_us (step_us apart) until it
 * has been killed twice with a checkpoint but no done run of `stage` in dbpath, or it
 * finished. Returns the number of such mid-run kills. */
int tu_kill_midway(const char *cmd, const char *dbpath, const char *stage, unsigned start_us, unsigned step_us,
                   unsigned max_us);
/* The stored parameters (column params of `table`) of the latest done run of `stage` in
 * dbpath, malloc'd, *n bytes; NULL (and *n -1) when there is none. */
void *tu_stored_blob(const char *dbpath, const char *table, const char *stage, int *n);
/* The first of want[0..n) that is not a substring of the settings (stage_runs.params, JSON)
 * of the latest run of `stage` in dbpath, printed with those settings; `stage` when there is
 * no run; NULL when every one is there. */
const char *tu_params_missing(const char *dbpath, const char *stage, const char *const *want, int n);
/* The end-to-end tests' upstream: the synthetic file (300 users, 120 items, 6 clusters,
 * seed 7) ingested as dataset synth into dbpath, then cf and tokenize with the given
 * options. Returns 0, or the exit status of the first command that failed. */
int tu_synthetic_upstream(const char *dbpath, const char *cf_args, const char *tok_args);
/* The end-to-end tests' cf, tokenize and finetune options on that upstream. */
#define TU_E2E_CF  "--epochs 40 --eval-every 10 --dim 32 --batch 512 --quiet"
#define TU_E2E_TOK "--L 32 --dc 64 --h1 64 --h2 64 --epochs 15 --quiet"
#define TU_E2E_FT  "--arch t5 --preset tiny --epochs 3 --hist 20 --batch 32 --lr 3e-3 --warmup 20 --ckpt-every 20 --quiet"
/* Start `exec <cmd>` through sh, SIGKILL it after delay_us, reap it. Returns 1 when the
 * kill landed (the command was still running), 0 when it had already ended. */
int tu_run_killed(const char *cmd, unsigned delay_us);

#endif
