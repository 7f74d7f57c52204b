/* stage: the stage runner every stage uses.
 *
 * A run is a row of stage_runs: the stage, the dataset, the canonical JSON of its
 * parameters, and the run of the stage before it that it was built on. Its fingerprint
 * hashes all of those, so:
 *   - starting a stage whose last run has the same fingerprint and did not finish resumes
 *     that run (stage_ckpt_get returns its last checkpoint);
 *   - a done run whose upstream is no longer the current run of the upstream stage (because
 *     that stage was re-run with other parameters, or the data was re-ingested) is stale;
 *   - a stage running in a live process cannot be started twice.
 * Ctrl-C (SIGINT) and SIGTERM set a flag; stages poll stage_should_stop() at checkpoint
 * boundaries, save, and stop with status 'stopped'. A SIGKILL leaves the last committed
 * checkpoint, because every checkpoint and the final outputs are each one transaction. */
#ifndef TOKENREC_STAGE_H
#define TOKENREC_STAGE_H
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

/* The stage table: the one description of the pipeline's shape. Every stage is a row; the
 * runner, `info`, `run`, `report`, the dashboard and evaluate's methods read it, so adding a
 * stage is adding a row here (and its command). docs/ARCHITECTURE.md draws it. */
typedef struct {
    const char *name;           /* stage_runs.stage */
    const char *upstream;       /* the stage whose current run it builds on; NULL: none (ingest)
                                 * or, for evaluate, the stage of the method it scores */
    const char *command;        /* how to run it from a shell */
    const char *purpose;        /* one line */
    int         side_by_side;   /* its runs stand side by side (evaluate: one per method), so a
                                 * fresh done run with the same settings is up to date even
                                 * when it is not the latest */
} stage_def;

/* The rows, in pipeline order. finetune-gen is the generate-objective baseline of finetune. */
enum { STAGE_INGEST, STAGE_CF, STAGE_TOKENIZE, STAGE_FINETUNE, STAGE_FINETUNE_GEN, STAGE_SASREC,
       STAGE_EVALUATE, STAGE_COUNT };
extern const stage_def stage_defs[STAGE_COUNT];
int stage_index(const char *name);      /* -1 if unknown */
const stage_def *stage_def_of(const char *name);     /* NULL if unknown */

typedef struct {
    sqlite3   *db;
    int64_t    id;              /* stage_runs.id */
    char       stage[32];
    char       dataset[128];
    int64_t    upstream_run;    /* 0 when none */
    int        resumed;         /* 1 when continuing an earlier, unfinished run */
    int        quiet;           /* no progress lines on stderr */
    double     t0;              /* monotonic start of this process's part of the run */
    double     frac0;           /* progress when this process started (for the ETA) */
    double     last_report;     /* monotonic time of the last progress write */
    double     progress;
    char       message[256];
} stage_run;

/* Return codes of stage_begin besides 0 and -1. */
#define STAGE_UP_TO_DATE 1      /* a done, fresh run with the same settings exists */

/* Start or resume a run. upstream_stage may be NULL (ingest); otherwise its current done
 * run must exist ("run 'tokenrec cf' first" otherwise). With force, a new run is started
 * even if an up-to-date one exists. Refuses if the stage is running in a live process. */
int stage_begin(stage_run *r, sqlite3 *db, const char *stage, const char *dataset,
                const char *params_json, const char *upstream_stage, int force);

/* The OpenBLAS kernels in use (one line, e.g. blaskernel.h's bk_describe()), set once by
 * main: stored in stage_runs.blas with every run begun or resumed, not in the fingerprint. */
void stage_set_blas(const char *desc);
/* Right after a successful stage_begin: sets quiet and, unless quiet, prints the run's
 * first log line: stage, dataset, run id (and where it resumes), the OpenBLAS kernels. */
void stage_log_start(stage_run *r, int quiet);

/* Progress 0..1 and a one-line message: written to stage_runs at most twice a second
 * (and always when frac is 0 or 1), and shown on stderr with the ETA. */
void stage_progress(stage_run *r, double frac, const char *fmt, ...) TR_PRINTF(3, 4);
/* Append to metrics_log (its own small transaction unless one is open). */
int  stage_metric(stage_run *r, int64_t step, const char *name, double value);
/* One result of the run in run_metrics (what `report` lists): a method's metric at k on a
 * split. Written with the outputs, inside stage_finish_begin's transaction. */
int  stage_result(stage_run *r, const char *method, const char *split, const char *metric, int k,
                  double value);

/* Checkpoints: stage_ckpt_begin opens a transaction; put any number of named blobs;
 * stage_ckpt_commit stores the step and progress with them and commits. */
int  stage_ckpt_begin(stage_run *r);
int  stage_ckpt_put(stage_run *r, const char *name, int64_t step, const void *data, size_t n);
int  stage_ckpt_commit(stage_run *r);
/* A whole checkpoint at once: the n named blobs at step, in one transaction with the
 * progress; 0, or -1 with nothing saved. */
typedef struct { const char *name; const void *data; size_t n; } stage_blob;
int  stage_ckpt_save(stage_run *r, int64_t step, const stage_blob *blobs, int n);
/* The blob saved under name by this run (malloc'd copy in *data), or 1 if none. */
int  stage_ckpt_get(stage_run *r, const char *name, void **data, size_t *n, int64_t *step);
/* The one checkpoint reader: copy the blob saved under name into dst, which it must fill
 * exactly (n bytes). 0; 1 when there is none; -1 when its size differs ("start over with
 * --force") or on a database error. 1 and -1 leave a message in tr_errmsg(). */
int  stage_ckpt_read(stage_run *r, const char *name, void *dst, size_t n);

/* Finishing: stage_finish_begin opens the output transaction; the stage writes its output
 * tables; stage_finish_commit marks the run done (and drops its checkpoints) in the same
 * transaction. On failure call stage_fail, which rolls back and records the error. */
int  stage_finish_begin(stage_run *r);
int  stage_finish_commit(stage_run *r);
void stage_fail(stage_run *r, const char *error);
/* stage_fail with the message in tr_errmsg(), which stays there for the caller; returns -1. */
int  stage_fail_err(stage_run *r);
/* Record a stop (after a checkpoint) because of Ctrl-C; prints how to resume. */
void stage_stopped(stage_run *r);

/* ---- the command skeleton: how every stage command opens ----
 * A stage's cmd_* parses its options (cli_parse), checks them, then:
 *     stage_cmd c;
 *     if (stage_cmd_open(&c, dbpath, dataset) != 0) return -1;
 *     int b = stage_cmd_begin(&c, "cf", cli_params_json(opts), NULL, force, quiet, NULL);
 *     if (b != 0) return stage_cmd_close(&c, b == STAGE_UP_TO_DATE ? 0 : -1);
 *     ... its work on c.db, c.dataset and c.run; on an error stage_fail_err(&c.run) ...
 *     return stage_cmd_close(&c, rc);                                                        */
typedef struct {
    sqlite3    *db;
    const char *dataset;        /* --dataset, else the only or latest ingested one */
    char        dsbuf[128];
    stage_run   run;
} stage_cmd;

/* Open the database (read-write, migrated) and pick the dataset. 0, or -1 with nothing open. */
int stage_cmd_open(stage_cmd *c, const char *dbpath, const char *dataset);
/* Start or resume the run of stage on c->dataset with the params JSON (freed here), built on
 * the current run of upstream (NULL: the stage table's upstream of stage). Returns 0 (c->run
 * is running, its quiet set), STAGE_UP_TO_DATE (said on stderr unless quiet, naming what:
 * NULL for the dataset) or -1. */
int stage_cmd_begin(stage_cmd *c, const char *stage, char *params, const char *upstream, int force,
                    int quiet, const char *what);
/* Close the database; returns rc. */
int stage_cmd_close(stage_cmd *c, int rc);

/* Signal handling: install once per process; the flag is set by SIGINT/SIGTERM. */
void stage_install_signals(void);
int  stage_should_stop(void);
void stage_request_stop(void);          /* for tests */

/* The current run of a stage: its latest done run (0 if none). */
int64_t stage_current_run(sqlite3 *db, const char *dataset, const char *stage);

/* One run as the readers outside the runner see it (the runner alone queries stage_runs). */
typedef struct {
    int64_t id, upstream_run, pid;      /* upstream_run and pid 0 when none */
    char    stage[32], dataset[128], upstream_stage[32], status[16];
    double  progress, started_at, updated_at, ended_at;   /* ended_at 0 while unfinished */
    char    message[256], error[512];   /* "" when none */
} stage_run_info;
/* Fill *out with run id: 0, 1 when there is no such run (*out zeroed), -1 on error. */
int     stage_run_get(sqlite3 *db, int64_t id, stage_run_info *out);
/* The run that run was built on (0 when none, or no such run). */
int64_t stage_upstream_run(sqlite3 *db, int64_t run);
/* The ids of every run on dataset, newest first (malloc'd in *ids); how many, or -1. */
int     stage_run_ids(sqlite3 *db, const char *dataset, int64_t **ids);
/* The params JSON of a run (malloc'd), NULL when there is no such run. */
char   *stage_run_params(sqlite3 *db, int64_t run);
/* For reports that join runs with their metrics in SQL: the temporary view
 * done_runs(id, dataset, stage, params, seconds) of every done run on this connection
 * (seconds: its wall time). 0 or -1. */
int     stage_done_runs_view(sqlite3 *db);
/* The newest done run of any stage on any dataset (0 if none): it changes whenever a run
 * finishes, which is how the dashboard notices. */
int64_t stage_last_done(sqlite3 *db);

/* State for `tokenrec info` and the dashboard. */
typedef enum { ST_NOT_RUN, ST_RUNNING, ST_STOPPED, ST_FAILED, ST_DONE, ST_STALE } stage_state;
const char *stage_state_name(stage_state s);
/* The state of a stage on a dataset, and the run it describes (0 if none). */
stage_state stage_get_state(sqlite3 *db, const char *dataset, const char *stage, int64_t *run);
int  stage_pid_alive(int64_t pid);

#endif
