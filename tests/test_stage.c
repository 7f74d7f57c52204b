/* test_stage.c: the stage runner: new runs, resume from checkpoint after a kill, up to date,
 * staleness when parameters or upstream change, refusing a second live process, and
 * checkpoints that survive SIGKILL whole; the OpenBLAS kernels recorded outside the fingerprint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "db.h"
#include "stage.h"
#include "util.h"
#include "testutil.h"

/* A text column of a run (malloc'd copy; NULL when the run or the value is missing). */
static char *column_of(sqlite3 *db, const char *col, int64_t id) {
    char *sql = sqlite3_mprintf("SELECT %s FROM stage_runs WHERE id=?", col);
    sqlite3_stmt *st = db_prep(db, sql);
    sqlite3_free(sql);
    sqlite3_bind_int64(st, 1, id);
    char *v = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static const char *status_of(sqlite3 *db, int64_t id, char *buf) {
    char *v = column_of(db, "status", id);
    strcpy(buf, v ? v : "");
    free(v);
    return buf;
}

/* Run a stage to completion in this process. */
static int64_t run_done(sqlite3 *db, const char *stage, const char *params, const char *up) {
    stage_run r;
    int rc = stage_begin(&r, db, stage, "d", params, up, 0);
    assert_int_equal(rc, 0);
    assert_int_equal(stage_finish_begin(&r), 0);
    assert_int_equal(stage_finish_commit(&r), 0);
    return r.id;
}

static void new_run_then_up_to_date(void **state) {
    (void)state;
    sqlite3 *db = tu_db("a.db");
    stage_run r;
    assert_int_equal(stage_begin(&r, db, "ingest", "d", "{\"k\":5}", NULL, 0), 0);
    r.quiet = 1;
    assert_int_equal(r.resumed, 0);
    assert_int_equal(stage_get_state(db, "d", "ingest", NULL), ST_RUNNING);
    stage_progress(&r, 0.5, "half");
    assert_int_equal(stage_metric(&r, 1, "loss", 0.25), 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM metrics_log WHERE run_id=%lld", (long long)r.id), 1);
    assert_int_equal(stage_finish_begin(&r), 0);
    assert_int_equal(stage_finish_commit(&r), 0);
    assert_int_equal(stage_get_state(db, "d", "ingest", NULL), ST_DONE);
    stage_run r2;
    assert_int_equal(stage_begin(&r2, db, "ingest", "d", "{\"k\":5}", NULL, 0), STAGE_UP_TO_DATE);
    assert_int_equal(r2.id, r.id);
    /* forced: a new run */
    assert_int_equal(stage_begin(&r2, db, "ingest", "d", "{\"k\":5}", NULL, 1), 0);
    assert_true(r2.id != r.id);
    stage_fail(&r2, "boom");
    assert_int_equal(stage_get_state(db, "d", "ingest", NULL), ST_FAILED);
    db_close(db);
}

static void needs_upstream(void **state) {
    (void)state;
    sqlite3 *db = tu_db("b.db");
    stage_run r;
    assert_int_equal(stage_begin(&r, db, "cf", "d", "{}", "ingest", 0), -1);
    assert_non_null(strstr(tr_errmsg(), "tokenrec ingest"));
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs"), 0);
    db_close(db);
}

/* A child begins a run, checkpoints twice, and is killed; the parent resumes it. */
static void killed_run_resumes_from_checkpoint(void **state) {
    (void)state;
    sqlite3 *db = tu_db("c.db");
    run_done(db, "ingest", "{}", NULL);
    char *path = tu_path("c.db");
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3 *cdb = db_open(path, 0);
        stage_run r;
        if (stage_begin(&r, cdb, "cf", "d", "{\"epochs\":9}", "ingest", 0) != 0) _exit(2);
        r.quiet = 1;
        for (int step = 1; step <= 2; step++) {
            int v[4] = {step, step, step, step};
            stage_ckpt_begin(&r);
            stage_ckpt_put(&r, "state", step, v, sizeof v);
            stage_progress(&r, step / 9.0, "epoch %d", step);
            stage_ckpt_commit(&r);
        }
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st));
    int64_t run;
    assert_int_equal(stage_get_state(db, "d", "cf", &run), ST_STOPPED);   /* its pid is gone */
    stage_run r;
    assert_int_equal(stage_begin(&r, db, "cf", "d", "{\"epochs\":9}", "ingest", 0), 0);
    r.quiet = 1;
    assert_int_equal(r.resumed, 1);
    assert_int_equal(r.id, run);
    void *blob; size_t n; int64_t step;
    assert_int_equal(stage_ckpt_get(&r, "state", &blob, &n, &step), 0);
    assert_int_equal(n, 4 * sizeof(int));
    assert_int_equal(step, 2);
    assert_int_equal(((int *)blob)[3], 2);
    free(blob);
    assert_int_equal(stage_ckpt_get(&r, "nothing", &blob, &n, &step), 1);
    /* with other parameters it is a new run, not a resume */
    stage_run other;
    db_exec(db, "UPDATE stage_runs SET status='stopped' WHERE stage='cf'");
    assert_int_equal(stage_begin(&other, db, "cf", "d", "{\"epochs\":10}", "ingest", 0), 0);
    assert_int_equal(other.resumed, 0);
    assert_true(other.id != run);
    stage_fail(&other, "abandoned");
    free(path);
    db_close(db);
}

static void changed_parameter_marks_later_stages_stale(void **state) {
    (void)state;
    sqlite3 *db = tu_db("d.db");
    run_done(db, "ingest", "{\"k\":5}", NULL);
    run_done(db, "cf", "{\"dim\":64}", "ingest");
    run_done(db, "tokenize", "{\"L\":256}", "cf");
    assert_int_equal(stage_get_state(db, "d", "cf", NULL), ST_DONE);
    assert_int_equal(stage_get_state(db, "d", "tokenize", NULL), ST_DONE);
    /* cf with another parameter: tokenize (built on the old cf) is stale */
    run_done(db, "cf", "{\"dim\":32}", "ingest");
    assert_int_equal(stage_get_state(db, "d", "cf", NULL), ST_DONE);
    assert_int_equal(stage_get_state(db, "d", "tokenize", NULL), ST_STALE);
    /* re-ingesting makes cf stale too, and tokenize stays stale */
    run_done(db, "ingest", "{\"k\":10}", NULL);
    assert_int_equal(stage_get_state(db, "d", "cf", NULL), ST_STALE);
    assert_int_equal(stage_get_state(db, "d", "tokenize", NULL), ST_STALE);
    /* re-running the chain freshens it */
    run_done(db, "cf", "{\"dim\":32}", "ingest");
    run_done(db, "tokenize", "{\"L\":256}", "cf");
    assert_int_equal(stage_get_state(db, "d", "tokenize", NULL), ST_DONE);
    assert_int_equal(stage_get_state(db, "d", "finetune", NULL), ST_NOT_RUN);
    db_close(db);
}

static void second_live_process_is_refused(void **state) {
    (void)state;
    sqlite3 *db = tu_db("e.db");
    run_done(db, "ingest", "{}", NULL);
    char *path = tu_path("e.db");
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3 *cdb = db_open(path, 0);
        stage_run r;
        int rc = stage_begin(&r, cdb, "cf", "d", "{}", "ingest", 0);
        char c = rc == 0 ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1) _exit(4);
        pause();
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    stage_run r;
    assert_int_equal(stage_begin(&r, db, "cf", "d", "{}", "ingest", 0), -1);
    char want[64];
    snprintf(want, sizeof want, "process %d", (int)pid);
    assert_non_null(strstr(tr_errmsg(), want));
    assert_int_equal(stage_get_state(db, "d", "cf", NULL), ST_RUNNING);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(stage_get_state(db, "d", "cf", NULL), ST_STOPPED);
    assert_int_equal(stage_begin(&r, db, "cf", "d", "{}", "ingest", 0), 0);
    assert_int_equal(r.resumed, 1);
    close(ready[0]); close(ready[1]);
    free(path);
    db_close(db);
}

/* SIGKILL at random moments while a child writes big checkpoints: every checkpoint read
 * back is whole (all its words equal its step) and the database passes integrity_check. */
static void checkpoints_survive_sigkill(void **state) {
    (void)state;
    sqlite3 *db = tu_db("f.db");
    run_done(db, "ingest", "{}", NULL);
    char *path = tu_path("f.db");
    srand(12345);
    for (int kill_no = 0; kill_no < 5; kill_no++) {
        pid_t pid = fork();
        if (pid == 0) {
            sqlite3 *cdb = db_open(path, 0);
            stage_run r;
            if (stage_begin(&r, cdb, "cf", "d", "{}", "ingest", 0) != 0) _exit(2);
            r.quiet = 1;
            int64_t step = 0;
            void *old; size_t n;
            if (stage_ckpt_get(&r, "a", &old, &n, &step) == 0) free(old);
            enum { N = 100000 };
            int32_t *v = malloc(N * sizeof *v);
            for (;;) {
                step++;
                for (int i = 0; i < N; i++) v[i] = (int32_t)step;
                stage_ckpt_begin(&r);
                stage_ckpt_put(&r, "a", step, v, N * sizeof *v);
                stage_ckpt_put(&r, "b", step, v, N * sizeof *v);
                stage_ckpt_commit(&r);
            }
        }
        usleep(20000 + (useconds_t)(rand() % 80000));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        sqlite3 *rdb = db_open(path, 0);
        assert_non_null(rdb);
        sqlite3_stmt *st = db_prep(rdb, "PRAGMA integrity_check");
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);
        st = db_prep(rdb, "SELECT name, step, data FROM checkpoints");
        int64_t steps[2] = {-1, -2};
        int rows = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t s = sqlite3_column_int64(st, 1);
            const int32_t *d = sqlite3_column_blob(st, 2);
            int n = sqlite3_column_bytes(st, 2) / 4;
            assert_int_equal(n, 100000);
            for (int i = 0; i < n; i++) assert_int_equal(d[i], (int32_t)s);
            steps[rows++ % 2] = s;
        }
        sqlite3_finalize(st);
        if (rows) assert_int_equal(steps[0], steps[1]);    /* both blobs from one checkpoint */
        db_close(rdb);
    }
    free(path);
    db_close(db);
}

static void stopped_and_state_names(void **state) {
    (void)state;
    sqlite3 *db = tu_db("g.db");
    stage_run r;
    assert_int_equal(stage_begin(&r, db, "ingest", "d", "{}", NULL, 0), 0);
    r.quiet = 1;
    stage_stopped(&r);
    char buf[16];
    assert_string_equal(status_of(db, r.id, buf), "stopped");
    assert_string_equal(stage_state_name(ST_STALE), "stale");
    assert_int_equal(stage_index("tokenize"), STAGE_TOKENIZE);
    assert_int_equal(stage_index("nope"), -1);
    db_close(db);
}

/* The run's OpenBLAS kernels are recorded, and are not part of the fingerprint: a stopped
 * run resumes on other kernels (which are added to its record), a done one stays up to date. */
static void blas_kernels_recorded_outside_fingerprint(void **state) {
    (void)state;
    sqlite3 *db = tu_db("h.db");
    stage_run r, r2;
    stage_set_blas("Haswell (OPENBLAS_CORETYPE)");
    assert_int_equal(stage_begin(&r, db, "ingest", "d", "{\"k\":5}", NULL, 0), 0);
    stage_log_start(&r, 1);
    char *fp = column_of(db, "fingerprint", r.id);
    stage_stopped(&r);
    stage_set_blas("SkylakeX (tokenrec's choice; OpenBLAS default Prescott)");
    assert_int_equal(stage_begin(&r2, db, "ingest", "d", "{\"k\":5}", NULL, 0), 0);
    assert_int_equal(r2.id, r.id);
    assert_int_equal(r2.resumed, 1);
    char *b = column_of(db, "blas", r.id);
    assert_string_equal(b, "Haswell (OPENBLAS_CORETYPE); then SkylakeX (tokenrec's choice; "
                           "OpenBLAS default Prescott)");
    free(b);
    stage_stopped(&r2);
    /* resumed again on the same kernels: recorded once */
    assert_int_equal(stage_begin(&r2, db, "ingest", "d", "{\"k\":5}", NULL, 0), 0);
    assert_int_equal(stage_finish_begin(&r2), 0);
    assert_int_equal(stage_finish_commit(&r2), 0);
    b = column_of(db, "blas", r.id);
    assert_non_null(strstr(b, "; then SkylakeX"));
    assert_null(strstr(strstr(b, "; then") + 1, "; then"));
    free(b);
    char *fp2 = column_of(db, "fingerprint", r.id);
    assert_string_equal(fp, fp2);
    /* other kernels again: the done run is up to date */
    stage_set_blas("Cooperlake (OpenBLAS default)");
    assert_int_equal(stage_begin(&r2, db, "ingest", "d", "{\"k\":5}", NULL, 0), STAGE_UP_TO_DATE);
    assert_int_equal(r2.id, r.id);
    /* a new run records the kernels it starts on */
    assert_int_equal(stage_begin(&r2, db, "ingest", "d", "{\"k\":5}", NULL, 1), 0);
    b = column_of(db, "blas", r2.id);
    assert_string_equal(b, "Cooperlake (OpenBLAS default)");
    free(b);
    stage_set_blas(NULL);
    free(fp); free(fp2);
    db_close(db);
}

/* The stage table: every upstream is a row before it; finetune-gen and sasrec are rows; the
 * run lookups give what stage_begin recorded; a row never run (sasrec) is "not run". */
static void stage_table_and_run_lookups(void **state) {
    (void)state;
    for (int i = 0; i < STAGE_COUNT; i++) {
        const stage_def *d = &stage_defs[i];
        assert_ptr_equal(stage_def_of(d->name), d);
        assert_non_null(d->command);
        assert_non_null(d->purpose);
        if (d->upstream) assert_true(stage_index(d->upstream) >= 0 && stage_index(d->upstream) < i);
    }
    assert_int_equal(stage_index("finetune-gen"), STAGE_FINETUNE_GEN);
    assert_string_equal(stage_defs[STAGE_SASREC].upstream, "ingest");
    assert_null(stage_def_of("nope"));
    sqlite3 *db = tu_db("t.db");
    int64_t ing = run_done(db, "ingest", "{}", NULL);
    int64_t cf = run_done(db, "cf", "{\"e\":1}", "ingest");
    stage_run_info ri;
    assert_int_equal(stage_run_get(db, cf, &ri), 0);
    assert_string_equal(ri.stage, "cf");
    assert_string_equal(ri.dataset, "d");
    assert_string_equal(ri.upstream_stage, "ingest");
    assert_string_equal(ri.status, "done");
    assert_true(ri.upstream_run == ing && ri.ended_at > 0 && ri.progress == 1);
    assert_int_equal(stage_upstream_run(db, cf), ing);
    assert_int_equal(stage_upstream_run(db, ing), 0);
    assert_int_equal(stage_run_get(db, 999, &ri), 1);
    char *p = stage_run_params(db, cf);
    assert_string_equal(p, "{\"e\":1}");
    free(p);
    assert_null(stage_run_params(db, 999));
    int64_t *ids;
    assert_int_equal(stage_run_ids(db, "d", &ids), 2);
    assert_true(ids[0] == cf && ids[1] == ing);
    free(ids);
    assert_int_equal(stage_last_done(db), cf);
    assert_int_equal(stage_done_runs_view(db), 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM done_runs WHERE stage='cf'"), 1);
    int64_t run = -1;
    assert_int_equal(stage_get_state(db, "d", stage_defs[STAGE_SASREC].name, &run), ST_NOT_RUN);
    assert_int_equal(run, 0);
    /* an upstream that was never run names its command */
    stage_run r;
    assert_int_equal(stage_begin(&r, db, "evaluate", "d", "{}", "finetune-gen", 0), -1);
    assert_non_null(strstr(tr_errmsg(), "tokenrec finetune --objective generate --dataset d"));
    tr_error_clear();
    db_close(db);
}

/* The one checkpoint reader (exact size, missing, wrong size) and the command skeleton
 * (the default dataset, the table's upstream, up to date on the second call). */
static void ckpt_reader_and_command_skeleton(void **state) {
    (void)state;
    char *path = tu_path("k.db");
    sqlite3 *db = tu_db("k.db");
    assert_int_equal(tu_synthetic(db, "d", 20, 30, 3, 5, 8, 1), 0);
    db_close(db);
    stage_cmd c;
    assert_int_equal(stage_cmd_open(&c, path, NULL), 0);
    assert_string_equal(c.dataset, "d");
    assert_int_equal(stage_cmd_begin(&c, "cf", tr_strdup("{\"x\":1}"), NULL, 0, 1, NULL), 0);
    assert_int_equal(c.run.upstream_run, stage_current_run(c.db, "d", "ingest"));
    double v = 2.5, got = 0;
    int32_t small = 0;
    assert_int_equal(stage_ckpt_begin(&c.run), 0);
    assert_int_equal(stage_ckpt_put(&c.run, "v", 1, &v, sizeof v), 0);
    assert_int_equal(stage_ckpt_commit(&c.run), 0);
    assert_int_equal(stage_ckpt_read(&c.run, "v", &got, sizeof got), 0);
    assert_true(got == 2.5);
    assert_int_equal(stage_ckpt_read(&c.run, "w", &got, sizeof got), 1);
    assert_int_equal(stage_ckpt_read(&c.run, "v", &small, sizeof small), -1);
    assert_non_null(strstr(tr_errmsg(), "--force"));
    tr_error_clear();
    assert_int_equal(stage_finish_begin(&c.run), 0);
    assert_int_equal(stage_finish_commit(&c.run), 0);
    assert_int_equal(stage_cmd_close(&c, 7), 7);
    assert_int_equal(stage_cmd_open(&c, path, "d"), 0);
    assert_int_equal(stage_cmd_begin(&c, "cf", tr_strdup("{\"x\":1}"), NULL, 0, 1, NULL), STAGE_UP_TO_DATE);
    stage_cmd_close(&c, 0);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_run_then_up_to_date),
        cmocka_unit_test(needs_upstream),
        cmocka_unit_test(killed_run_resumes_from_checkpoint),
        cmocka_unit_test(changed_parameter_marks_later_stages_stale),
        cmocka_unit_test(second_live_process_is_refused),
        cmocka_unit_test(checkpoints_survive_sigkill),
        cmocka_unit_test(stopped_and_state_names),
        cmocka_unit_test(blas_kernels_recorded_outside_fingerprint),
        cmocka_unit_test(stage_table_and_run_lookups),
        cmocka_unit_test(ckpt_reader_and_command_skeleton),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
