/* e2e_generate.c: the autoregressive baseline through the real binary on the small
 * synthetic dataset: finetune --objective generate (its own finetune-gen run, beside the
 * retrieval finetune run), evaluate --method generate (beam search accuracy, latency of
 * both methods in the same run), and the report's baseline row and latency table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "db.h"
#include "util.h"
#include "testutil.h"

static void generate_baseline_end_to_end(void **state) {
    (void)state;
    char *dbp = tu_path("g.db");
    const char *b = tu_bin();
    assert_int_equal(tu_synthetic_upstream(dbp, TU_E2E_CF, TU_E2E_TOK), 0);
    char *kp = tu_path("k.db");              /* the same upstream, for the kill/resume check */
    assert_int_equal(tu_run("cp %s %s", dbp, kp), 0);
    assert_int_equal(tu_run("%s finetune --db %s %s", b, dbp, TU_E2E_FT), 0);
    assert_int_equal(tu_run("%s finetune --db %s --objective generate --beam 10 %s", b, dbp, TU_E2E_FT), 0);
    /* the retrieval run is still the finetune stage's current run: up to date */
    assert_int_equal(tu_run("%s finetune --db %s %s", b, dbp, TU_E2E_FT), 0);
    assert_int_equal(tu_run("%s evaluate --db %s --method generate,popularity --split both --beam 10 "
                            "--latency-users 24 --quiet", b, dbp), 0);
    sqlite3 *db = db_open(dbp, 1);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='finetune'"), 1);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='finetune-gen' AND status='done'"), 1);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM models WHERE objective='generate'"), 1);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM models WHERE objective='retrieval'"), 1);
    double gen = tu_metric(db, "generate", "valid", "hr", 10), pop = tu_metric(db, "popularity", "valid", "hr", 10);
    double gen_t = tu_metric(db, "generate", "test", "hr", 10), pop_t = tu_metric(db, "popularity", "test", "hr", 10);
    fprintf(stderr, "valid HR@10: generate %.3f popularity %.3f; test HR@10 generate %.3f popularity %.3f\n",
            gen, pop, gen_t, pop_t);
    assert_true(gen >= 0 && pop >= 0 && gen_t >= 0);
    assert_true(gen > 2 * pop);
    assert_true(gen_t > 2 * pop_t);
    assert_true(tu_metric(db, "generate", "test", "ndcg", 20) > 0);
    /* latency of both methods, from the same run */
    int64_t ev = db_query_i64(db, 0, "SELECT max(run_id) FROM run_metrics WHERE method='generate' AND split='latency-b1'");
    assert_true(ev > 0);
    assert_int_equal(db_query_i64(db, 0, "SELECT count(DISTINCT method) FROM run_metrics WHERE run_id=%lld AND "
                                         "split='latency-b1' AND metric='ms_per_user' AND value > 0", (long long)ev), 2);
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM run_metrics WHERE run_id=%lld AND "
                                         "split='latency-best' AND metric='users_per_s' AND value > 0", (long long)ev), 2);
    assert_true(tu_metric(db, "generate", "test", "collided_tuples", 0) >= 0);
    /* recommendations: real items, none known, at most the top-K */
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM recommendations r JOIN interactions i ON "
                                          "i.uid = r.uid AND i.iid = r.iid AND i.split < 2 WHERE r.run_id=%lld",
                                          (long long)ev), 0);
    assert_true(db_query_i64(db, 0, "SELECT count(*) FROM recommendations WHERE run_id=%lld", (long long)ev) >= 300 * 5);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE status <> 'done'"), 0);
    db_close(db);
    /* evaluating again is up to date; the report has the baseline row and the latency table */
    assert_int_equal(tu_run("%s evaluate --db %s --method generate --split both --beam 10 --latency-users 24 --quiet", b, dbp), 0);
    char *txt = tu_report_md(dbp);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "| synth | generate |"));
    assert_non_null(strstr(txt, "| synth | generate (beam search) |"));
    assert_non_null(strstr(txt, "| synth | tokenrec (generative retrieval) |"));
    free(txt);

    /* a generate finetune killed twice and re-run ends with the same model */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s finetune --db %s --objective generate --beam 10 " TU_E2E_FT, b, kp);
    int kills = tu_run_killed(cmd, 1500000) + tu_run_killed(cmd, 2500000);
    assert_int_equal(tu_run("%s finetune --db %s --objective generate --beam 10 %s", b, kp, TU_E2E_FT), 0);
    db = db_open(dbp, 1);
    char *q = sqlite3_mprintf("ATTACH %Q AS other", kp);
    assert_int_equal(sqlite3_exec(db, q, 0, 0, 0), SQLITE_OK);
    sqlite3_free(q);
    fprintf(stderr, "%d kills of the generate finetune\n", kills);
    assert_int_equal(db_query_i64(db, 0, "SELECT (SELECT params FROM main.models WHERE objective='generate') = "
                                         "(SELECT params FROM other.models WHERE objective='generate')"), 1);
    db_close(db);
    free(kp); free(dbp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_baseline_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
