/* e2e_pipeline.c: the whole pipeline through the real binary on a small synthetic dataset
 * with a planted pattern (each user walks one cluster of items): ingest, cf, tokenize,
 * finetune, evaluate, report. A working model must beat popularity clearly; a finetune
 * killed mid-way and re-run must end with the same metrics as an uninterrupted run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "db.h"
#include "pagecheck.h"
#include "util.h"
#include "testutil.h"

static void pipeline_learns_the_planted_pattern(void **state) {
    (void)state;
    char *dbp = tu_path("p.db");
    assert_int_equal(tu_synthetic_upstream(dbp, TU_E2E_CF, TU_E2E_TOK), 0);
    const char *b = tu_bin();
    assert_int_equal(tu_run("%s finetune --db %s %s", b, dbp, TU_E2E_FT), 0);
    assert_int_equal(tu_run("%s evaluate --db %s --split both --quiet", b, dbp), 0);
    sqlite3 *db = db_open(dbp, 1);
    double tok = tu_metric(db, "tokenrec", "valid", "hr", 10), pop = tu_metric(db, "popularity", "valid", "hr", 10);
    double tok_t = tu_metric(db, "tokenrec", "test", "hr", 10), lgn = tu_metric(db, "lightgcn", "test", "hr", 10);
    fprintf(stderr, "valid HR@10: tokenrec %.3f popularity %.3f; test HR@10 tokenrec %.3f lightgcn %.3f\n",
            tok, pop, tok_t, lgn);
    assert_true(pop >= 0 && tok >= 0 && lgn >= 0);
    assert_true(tok > 2 * pop);
    assert_true(tok_t > 2 * tu_metric(db, "popularity", "test", "hr", 10));
    /* 50 recommendations per user, none of them a known item */
    int64_t ev = db_query_i64(db, 0, "SELECT max(run_id) FROM recommendations");
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM recommendations WHERE run_id=%lld", (long long)ev), 300 * 50);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM recommendations r JOIN interactions i ON "
                                          "i.uid = r.uid AND i.iid = r.iid AND i.split < 2 WHERE r.run_id=%lld",
                                          (long long)ev), 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE status <> 'done'"), 0);
    db_close(db);
    /* the run command finds everything done, prints the report and writes report.html beside
     * the database, saying where */
    int rrc = tu_run("%s run --db %s --dataset synth --quiet > %s/report.md 2> %s/run.err", b, dbp,
                     tu_tmpdir(), tu_tmpdir());
    char *rp = tu_path("report.md"), *ep = tu_path("run.err"), *hp = tu_path("report.html"), *txt;
    size_t n;
    if (rrc != 0 && tr_read_file(ep, &txt, &n) == 0) {    /* say why before failing */
        fprintf(stderr, "tokenrec run said:\n%s\n", txt);
        free(txt);
    }
    assert_int_equal(rrc, 0);
    assert_int_equal(tr_read_file(rp, &txt, &n), 0);
    assert_non_null(strstr(txt, "| synth | tokenrec |"));
    assert_non_null(strstr(txt, "| synth | popularity |"));
    free(txt);
    assert_int_equal(tr_read_file(ep, &txt, &n), 0);
    assert_non_null(strstr(txt, "HTML report written to "));
    assert_non_null(strstr(txt, hp));
    free(txt);
    /* its numbers are the stored ones, with the per-epoch curves the stages logged */
    pc_require("xmllint", "libxml2-utils");
    db = db_open(dbp, 1);
    assert_int_equal(pc_well_formed(hp), 0);
    assert_true(pc_cells_match(db, hp) >= 3 * 7);
    assert_int_equal(pc_count_cells(hp, "tokenrec", "test", "hr", 10), 1);
    int64_t ft = db_query_i64(db, 0, "SELECT max(id) FROM stage_runs WHERE stage='finetune'");
    int64_t epochs = db_query_i64(db, 0, "SELECT count(*) FROM metrics_log WHERE run_id=%lld AND name='valid_hr@10'",
                                  (long long)ft);
    assert_true(epochs > 0);
    /* the causal LLM (run's default) logs its loss every epoch and checks valid every few */
    assert_true(db_query_i64(db, 0, "SELECT count(*) FROM metrics_log WHERE run_id=%lld AND name='train_loss_epoch'",
                             (long long)ft) >= epochs);
    assert_int_equal(tr_read_file(hp, &txt, &n), 0);
    assert_non_null(strstr(txt, "finetune: training loss (epoch mean)"));
    assert_non_null(strstr(txt, "training targets/s"));
    assert_null(strstr(txt, "Not done yet"));
    free(txt);
    db_close(db);
    free(rp); free(ep); free(hp); free(dbp);
}

/* Kill finetune with SIGKILL twice at different moments, resume, and compare with an
 * uninterrupted run of the same settings on a copy of the same upstream. */
static void killed_finetune_resumes_to_the_same_result(void **state) {
    (void)state;
    char *a = tu_path("a.db"), *c = tu_path("c.db");
    assert_int_equal(tu_synthetic_upstream(a, TU_E2E_CF, TU_E2E_TOK), 0);
    assert_int_equal(tu_run("cp %s %s", a, c), 0);
    const char *b = tu_bin();
    assert_int_equal(tu_run("%s finetune --db %s %s", b, a, TU_E2E_FT), 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s finetune --db %s " TU_E2E_FT, b, c);
    int kills = tu_run_killed(cmd, 1500000) + tu_run_killed(cmd, 2500000);
    assert_int_equal(tu_run("%s finetune --db %s %s", b, c, TU_E2E_FT), 0);
    sqlite3 *da = db_open(a, 1), *dc = db_open(c, 1);
    double va = tu_metric(da, "tokenrec", "test", "ndcg", 10), vc = tu_metric(dc, "tokenrec", "test", "ndcg", 10);
    fprintf(stderr, "%d kills; test NDCG@10 uninterrupted %.6f, resumed %.6f\n", kills, va, vc);
    assert_true(va >= 0);
    assert_true(fabs(va - vc) < 1e-9);
    /* the stored models are identical */
    assert_int_equal(db_query_i64(da, 0, "SELECT n_params FROM models"), db_query_i64(dc, 0, "SELECT n_params FROM models"));
    char *q = sqlite3_mprintf("ATTACH %Q AS other", c);
    assert_int_equal(sqlite3_exec(da, q, 0, 0, 0), SQLITE_OK);
    sqlite3_free(q);
    assert_int_equal(db_query_i64(da, 0, "SELECT (SELECT params FROM main.models) = (SELECT params FROM other.models "
                                         "ORDER BY run_id DESC LIMIT 1)"), 1);
    db_close(da); db_close(dc);
    free(a); free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pipeline_learns_the_planted_pattern),
        cmocka_unit_test(killed_finetune_resumes_to_the_same_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
