/* stage.c: runs, resumption, staleness, progress, checkpoints and Ctrl-C. */
#include "stage.h"
#include "db.h"
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const stage_def stage_defs[STAGE_COUNT] = {
    {"ingest", NULL, "tokenrec ingest", "read a dataset, k-core filter, leave-one-out split", 0},
    {"cf", "ingest", "tokenrec cf", "LightGCN/MF collaborative filtering: user and item vectors", 0},
    {"tokenize", "cf", "tokenrec tokenize", "MQ-Tokenizer: K tokens per user and item", 0},
    {"finetune", "tokenize", "tokenrec finetune",
     "train the recommender on ID tokens (T5 prompts, or --arch causal; generative retrieval)", 0},
    {"finetune-gen", "tokenize", "tokenrec finetune --objective generate",
     "the autoregressive baseline: the decoder generates the target item's tokens", 0},
    {"sasrec", "ingest", "tokenrec sasrec", "SASRec baseline: causal transformer over item ids", 0},
    {"evaluate", NULL, "tokenrec evaluate",
     "HR@K and NDCG@K of every method on the full item set (upstream: the method's stage)", 1},
};

int stage_index(const char *name) {
    for (int i = 0; i < STAGE_COUNT; i++)
        if (!strcmp(stage_defs[i].name, name)) return i;
    return -1;
}

const stage_def *stage_def_of(const char *name) {
    int i = stage_index(name);
    return i < 0 ? NULL : &stage_defs[i];
}

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
    (void)sig;
    if (stop_flag) _exit(130);          /* a second Ctrl-C stops at once */
    stop_flag = 1;
}

/* SIGINT and SIGTERM ask for a stop at the next checkpoint, never in the middle of one. */
void stage_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int stage_should_stop(void) { return stop_flag != 0; }
void stage_request_stop(void) { stop_flag = 1; }

int stage_pid_alive(int64_t pid) {
    if (pid <= 0) return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int64_t stage_current_run(sqlite3 *db, const char *dataset, const char *stage) {
    return db_query_i64(db, 0,
        "SELECT id FROM stage_runs WHERE dataset=%Q AND stage=%Q AND status='done' "
        "ORDER BY ended_at DESC, id DESC LIMIT 1", dataset, stage);
}

/* The OpenBLAS kernels this process computes with, recorded with each run it starts or
 * resumes (not in the fingerprint); "" when the program never said. */
static char stage_blas[160];

void stage_set_blas(const char *desc) {
    snprintf(stage_blas, sizeof stage_blas, "%s", desc ? desc : "");
}

/* A resumed run keeps the kernels it started on and adds these when they differ. */
static int record_blas_on_resume(sqlite3 *db, int64_t id) {
    if (!stage_blas[0]) return 0;
    sqlite3_stmt *st = db_prep(db, "UPDATE stage_runs SET blas = CASE WHEN blas IS NULL THEN ?1 "
                                   "WHEN blas = ?1 OR substr(blas, -length(?1) - 7) = '; then ' || ?1 "
                                   "THEN blas ELSE blas || '; then ' || ?1 END WHERE id=?2");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, stage_blas, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : tr_error("database: %s", sqlite3_errmsg(db));
}

/* Copy text column c into dst ("" for NULL). */
static void col_copy(sqlite3_stmt *st, int c, char *dst, size_t n) {
    const unsigned char *t = sqlite3_column_text(st, c);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

int stage_run_get(sqlite3 *db, int64_t id, stage_run_info *out) {
    static const char sql[] =
        "SELECT stage, dataset, coalesce(upstream_stage, ''), coalesce(upstream_run, 0), coalesce(pid, 0), "
        "status, progress, started_at, updated_at, coalesce(ended_at, 0), message, error FROM stage_runs WHERE id=?";
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = db_prep(db, sql);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc = 1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        out->id = id;
        col_copy(st, 0, out->stage, sizeof out->stage);
        col_copy(st, 1, out->dataset, sizeof out->dataset);
        col_copy(st, 2, out->upstream_stage, sizeof out->upstream_stage);
        out->upstream_run = sqlite3_column_int64(st, 3);
        out->pid = sqlite3_column_int64(st, 4);
        col_copy(st, 5, out->status, sizeof out->status);
        out->progress = sqlite3_column_double(st, 6);
        out->started_at = sqlite3_column_double(st, 7);
        out->updated_at = sqlite3_column_double(st, 8);
        out->ended_at = sqlite3_column_double(st, 9);
        col_copy(st, 10, out->message, sizeof out->message);
        col_copy(st, 11, out->error, sizeof out->error);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int64_t stage_upstream_run(sqlite3 *db, int64_t run) {
    return db_query_i64(db, 0, "SELECT coalesce(upstream_run, 0) FROM stage_runs WHERE id=%lld",
                        (long long)run);
}

int stage_run_ids(sqlite3 *db, const char *dataset, int64_t **ids) {
    *ids = NULL;
    sqlite3_stmt *st = db_prep(db, "SELECT id FROM stage_runs WHERE dataset=? ORDER BY id DESC");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) *ids = tr_realloc(*ids, (size_t)(cap = cap ? 2 * cap : 32) * sizeof **ids);
        (*ids)[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return n;
}

char *stage_run_params(sqlite3 *db, int64_t run) {
    sqlite3_stmt *st = db_prep(db, "SELECT params FROM stage_runs WHERE id=?");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, run);
    char *p = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        p = tr_strdup(t ? (const char *)t : "");
    }
    sqlite3_finalize(st);
    return p;
}

int stage_done_runs_view(sqlite3 *db) {
    return db_exec(db, "CREATE TEMP VIEW IF NOT EXISTS done_runs (id, dataset, stage, params, seconds) AS "
                       "SELECT id, dataset, stage, params, ended_at - started_at FROM main.stage_runs "
                       "WHERE status='done'");
}

int64_t stage_last_done(sqlite3 *db) {
    return db_query_i64(db, 0, "SELECT coalesce(max(id), 0) FROM stage_runs WHERE status='done'");
}

static void fingerprint(char out[17], const char *stage, const char *dataset, const char *params,
                        int64_t upstream) {
    uint64_t h = tr_hash64(stage, strlen(stage) + 1, 0);
    h = tr_hash64(dataset, strlen(dataset) + 1, h);
    h = tr_hash64(params, strlen(params) + 1, h);
    h = tr_hash64(&upstream, sizeof upstream, h);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* A run's upstream chain is fresh when each run was built on the current run before it. */
static int run_is_fresh(sqlite3 *db, int64_t run, int depth) {
    if (depth > 8) return 1;
    sqlite3_stmt *st = db_prep(db, "SELECT dataset, upstream_stage, upstream_run FROM stage_runs WHERE id=?");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, run);
    int fresh = 1;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 1) != SQLITE_NULL) {
        char dataset[128], up_stage[32];
        snprintf(dataset, sizeof dataset, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(up_stage, sizeof up_stage, "%s", (const char *)sqlite3_column_text(st, 1));
        int64_t up = sqlite3_column_int64(st, 2);
        sqlite3_finalize(st);
        st = NULL;
        fresh = up == stage_current_run(db, dataset, up_stage) && run_is_fresh(db, up, depth + 1);
    }
    sqlite3_finalize(st);
    return fresh;
}

const char *stage_state_name(stage_state s) {
    static const char *const n[] = {"not run", "running", "stopped", "failed", "done", "stale"};
    return n[s];
}

/* The latest run decides the state, except that a done run behind a later unfinished one
 * still counts as the stage's result. A 'running' row whose process is gone is 'stopped'. */
stage_state stage_get_state(sqlite3 *db, const char *dataset, const char *stage, int64_t *run) {
    sqlite3_stmt *st = db_prep(db,
        "SELECT id, status, pid FROM stage_runs WHERE dataset=? AND stage=? ORDER BY id DESC LIMIT 1");
    stage_state s = ST_NOT_RUN;
    int64_t id = 0;
    if (st) {
        sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, stage, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            id = sqlite3_column_int64(st, 0);
            const char *status = (const char *)sqlite3_column_text(st, 1);
            int64_t pid = sqlite3_column_int64(st, 2);
            if (!strcmp(status, "running")) s = stage_pid_alive(pid) ? ST_RUNNING : ST_STOPPED;
            else if (!strcmp(status, "stopped")) s = ST_STOPPED;
            else if (!strcmp(status, "failed")) s = ST_FAILED;
            else s = run_is_fresh(db, id, 0) ? ST_DONE : ST_STALE;
        }
        sqlite3_finalize(st);
    }
    if (run) *run = id;
    return s;
}

int stage_begin(stage_run *r, sqlite3 *db, const char *stage, const char *dataset,
                const char *params_json, const char *upstream_stage, int force) {
    memset(r, 0, sizeof *r);
    r->db = db;
    snprintf(r->stage, sizeof r->stage, "%s", stage);
    snprintf(r->dataset, sizeof r->dataset, "%s", dataset);
    r->t0 = r->last_report = tr_monotonic();
    if (db_begin(db) != 0) return -1;

    /* Refuse a second live process on the same stage and dataset. */
    int64_t live_pid = 0;
    sqlite3_stmt *st = db_prep(db, "SELECT pid FROM stage_runs WHERE dataset=? AND stage=? AND status='running'");
    if (!st) goto fail;
    sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, stage, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t pid = sqlite3_column_int64(st, 0);
        if (pid != getpid() && stage_pid_alive(pid)) live_pid = pid;
    }
    sqlite3_finalize(st);
    if (live_pid) {
        db_rollback(db);
        return tr_error("%s is already running on %s in process %lld; stop it first "
                        "(kill -INT %lld) or wait for it", stage, dataset, (long long)live_pid,
                        (long long)live_pid);
    }

    if (upstream_stage) {
        r->upstream_run = stage_current_run(db, dataset, upstream_stage);
        if (!r->upstream_run) {
            const stage_def *up = stage_def_of(upstream_stage);
            char cmd[96];
            if (up) snprintf(cmd, sizeof cmd, "%s", up->command);
            else snprintf(cmd, sizeof cmd, "tokenrec %s", upstream_stage);
            db_rollback(db);
            return tr_error("%s needs a finished %s run on %s first (run '%s --dataset %s')",
                            stage, upstream_stage, dataset, cmd, dataset);
        }
    }
    char fp[17];
    fingerprint(fp, stage, dataset, params_json, r->upstream_run);

    /* The latest run with the same fingerprint: up to date, or resumable. */
    st = db_prep(db, "SELECT id, status, progress FROM stage_runs WHERE dataset=? AND stage=? "
                     "AND fingerprint=? ORDER BY id DESC LIMIT 1");
    if (!st) goto fail;
    sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, stage, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, fp, -1, SQLITE_STATIC);
    int64_t prev = 0;
    char status[16] = "";
    double prev_progress = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        prev = sqlite3_column_int64(st, 0);
        snprintf(status, sizeof status, "%s", (const char *)sqlite3_column_text(st, 1));
        prev_progress = sqlite3_column_double(st, 2);
    }
    sqlite3_finalize(st);

    double now = tr_now();
    /* Up to date: the same settings on the same upstream, and either the stage's current run
     * or, for a stage whose runs stand side by side (nothing is built on them), fresh. */
    const stage_def *def = stage_def_of(stage);
    if (prev && !strcmp(status, "done") && !force &&
        (prev == stage_current_run(db, dataset, stage) ||
         (def && def->side_by_side && run_is_fresh(db, prev, 0)))) {
        r->id = prev;
        db_rollback(db);
        return STAGE_UP_TO_DATE;
    }
    if (prev && strcmp(status, "done") != 0) {
        r->id = prev;
        r->resumed = 1;
        r->progress = r->frac0 = prev_progress;
        char *sql = sqlite3_mprintf("UPDATE stage_runs SET status='running', pid=%d, error=NULL, "
                                    "updated_at=%.3f, ended_at=NULL WHERE id=%lld",
                                    (int)getpid(), now, (long long)prev);
        int rc = db_exec(db, sql);
        sqlite3_free(sql);
        if (rc != 0 || record_blas_on_resume(db, prev) != 0) goto fail;
    } else {
        st = db_prep(db, "INSERT INTO stage_runs (stage, dataset, params, fingerprint, upstream_stage, "
                         "upstream_run, status, progress, message, pid, started_at, updated_at, blas) "
                         "VALUES (?,?,?,?,?,?,'running',0,'starting',?,?,?,?)");
        if (!st) goto fail;
        sqlite3_bind_text(st, 1, stage, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, dataset, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, params_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, fp, -1, SQLITE_STATIC);
        if (upstream_stage) {
            sqlite3_bind_text(st, 5, upstream_stage, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 6, r->upstream_run);
        }
        sqlite3_bind_int64(st, 7, getpid());
        sqlite3_bind_double(st, 8, now);
        sqlite3_bind_double(st, 9, now);
        if (stage_blas[0]) sqlite3_bind_text(st, 10, stage_blas, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) { tr_error("database: %s", sqlite3_errmsg(db)); goto fail; }
        r->id = sqlite3_last_insert_rowid(db);
    }
    if (db_commit(db) != 0) goto fail;
    return 0;
fail:
    db_rollback(db);
    return -1;
}

void stage_log_start(stage_run *r, int quiet) {
    r->quiet = quiet;
    if (quiet) return;
    char at[48] = "";
    if (r->resumed) snprintf(at, sizeof at, " resumed at %.1f%%", 100 * r->progress);
    fprintf(stderr, "[%s] %s: run %lld%s, OpenBLAS kernels %s\n", r->stage, r->dataset,
            (long long)r->id, at, stage_blas[0] ? stage_blas : "not recorded");
    fflush(stderr);
}

static void write_progress(stage_run *r) {
    sqlite3_stmt *st = db_prep(r->db, "UPDATE stage_runs SET progress=?, message=?, updated_at=? WHERE id=?");
    if (!st) return;
    sqlite3_bind_double(st, 1, r->progress);
    sqlite3_bind_text(st, 2, r->message, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, tr_now());
    sqlite3_bind_int64(st, 4, r->id);
    sqlite3_step(st);           /* progress is advisory: a busy reader never fails the stage */
    sqlite3_finalize(st);
}

void stage_progress(stage_run *r, double frac, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    if (frac < 0) frac = 0;
    if (frac > 1) frac = 1;
    r->progress = frac;
    double now = tr_monotonic();
    int edge = frac <= 0 || frac >= 1;
    if (!edge && now - r->last_report < 0.5) return;
    r->last_report = now;
    write_progress(r);
    if (r->quiet) return;
    char eta[32] = "";
    double done = frac - r->frac0, el = now - r->t0;
    if (done > 1e-6 && frac < 1) {
        char b[24];
        snprintf(eta, sizeof eta, " ETA %s", tr_fmt_duration(el * (1 - frac) / done, b, sizeof b));
    }
    int tty = isatty(2);
    static double last_line;
    if (!tty && !edge && now - last_line < 5.0) return;
    last_line = now;
    fprintf(stderr, tty ? "\r\033[K[%s] %5.1f%% %s%s" : "[%s] %5.1f%% %s%s\n", r->stage,
            100 * frac, r->message, eta);
    if (tty && frac >= 1) fputc('\n', stderr);
    fflush(stderr);
}

int stage_metric(stage_run *r, int64_t step, const char *name, double value) {
    sqlite3_stmt *st = db_prep(r->db, "INSERT OR REPLACE INTO metrics_log (run_id, name, step, value) VALUES (?,?,?,?)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, step);
    sqlite3_bind_double(st, 4, value);
    int rc = db_step_done(r->db, st);
    sqlite3_finalize(st);
    return rc;
}

int stage_result(stage_run *r, const char *method, const char *split, const char *metric, int k,
                 double value) {
    return db_put_metric(r->db, r->id, method, split, metric, k, value);
}

int stage_ckpt_begin(stage_run *r) { return db_begin(r->db); }

int stage_ckpt_put(stage_run *r, const char *name, int64_t step, const void *data, size_t n) {
    sqlite3_stmt *st = db_prep(r->db, "INSERT OR REPLACE INTO checkpoints (run_id, name, step, data, saved_at) "
                                      "VALUES (?,?,?,?,?)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, step);
    sqlite3_bind_blob64(st, 4, n ? data : "", n, SQLITE_STATIC);
    sqlite3_bind_double(st, 5, tr_now());
    int rc = db_step_done(r->db, st);
    sqlite3_finalize(st);
    return rc;
}

int stage_ckpt_commit(stage_run *r) {
    write_progress(r);
    if (db_commit(r->db) != 0) {
        db_rollback(r->db);
        return -1;
    }
    return 0;
}

int stage_ckpt_save(stage_run *r, int64_t step, const stage_blob *blobs, int n) {
    if (stage_ckpt_begin(r) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (stage_ckpt_put(r, blobs[i].name, step, blobs[i].data, blobs[i].n) != 0) {
            db_rollback(r->db);
            return -1;
        }
    return stage_ckpt_commit(r);
}

int stage_ckpt_get(stage_run *r, const char *name, void **data, size_t *n, int64_t *step) {
    sqlite3_stmt *st = db_prep(r->db, "SELECT data, step FROM checkpoints WHERE run_id=? AND name=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    int rc = 1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        void *p = tr_malloc(len ? len : 1);
        if (len) memcpy(p, sqlite3_column_blob(st, 0), len);
        *data = p;
        if (n) *n = len;
        if (step) *step = sqlite3_column_int64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int stage_ckpt_read(stage_run *r, const char *name, void *dst, size_t n) {
    void *p = NULL;
    size_t len = 0;
    int rc = stage_ckpt_get(r, name, &p, &len, NULL);
    if (rc < 0) return -1;
    if (rc > 0) {
        tr_error("%s: checkpoint '%s' of run %lld is missing", r->stage, name, (long long)r->id);
        return 1;
    }
    if (len != n) {
        free(p);
        return tr_error("%s: checkpoint '%s' of run %lld has %zu bytes, expected %zu; start over with "
                        "--force", r->stage, name, (long long)r->id, len, n);
    }
    memcpy(dst, p, n);
    free(p);
    return 0;
}

int stage_finish_begin(stage_run *r) { return db_begin(r->db); }

int stage_finish_commit(stage_run *r) {
    /* the times bound as doubles, as started_at is: text rounded to the millisecond could
     * put ended_at before started_at on a run shorter than that */
    char *sql = sqlite3_mprintf("DELETE FROM checkpoints WHERE run_id=%lld", (long long)r->id);
    int rc = db_exec(r->db, sql);
    sqlite3_free(sql);
    sqlite3_stmt *st = rc ? NULL : db_prep(r->db, "UPDATE stage_runs SET status='done', progress=1, message='done', "
                                                  "pid=NULL, updated_at=?1, ended_at=?1 WHERE id=?2");
    if (st) {
        sqlite3_bind_double(st, 1, tr_now());
        sqlite3_bind_int64(st, 2, r->id);
        rc = db_step_done(r->db, st);
        sqlite3_finalize(st);
    } else {
        rc = -1;
    }
    if (rc != 0 || db_commit(r->db) != 0) {
        db_rollback(r->db);
        return -1;
    }
    r->progress = 1;
    return 0;
}

static void set_status(stage_run *r, const char *status, const char *error) {
    sqlite3_stmt *st = db_prep(r->db, "UPDATE stage_runs SET status=?, error=?, pid=NULL, updated_at=?, "
                                      "ended_at=? WHERE id=?");
    if (!st) return;
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    if (error) sqlite3_bind_text(st, 2, error, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, tr_now());
    sqlite3_bind_double(st, 4, tr_now());
    sqlite3_bind_int64(st, 5, r->id);
    sqlite3_step(st);
    sqlite3_finalize(st);
}

void stage_fail(stage_run *r, const char *error) {
    db_rollback(r->db);
    set_status(r, "failed", error);
}

int stage_fail_err(stage_run *r) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tr_errmsg());
    stage_fail(r, msg);
    return tr_error("%s", msg);
}

void stage_stopped(stage_run *r) {
    db_rollback(r->db);
    set_status(r, "stopped", NULL);
    if (!r->quiet)
        fprintf(stderr, "\n[%s] stopped at %.0f%% after its last checkpoint; run the same command "
                        "again to resume\n", r->stage, 100 * r->progress);
}
