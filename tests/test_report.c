/* test_report.c: `tokenrec report`, mostly its HTML page, on databases built here through the
 * stage runner: every stage done with every section's data (methods, unseen users, latency,
 * sasrec, tokenizer), only some stages done, and none. The page's numbers are read back
 * through libxml2 and compared with run_metrics; the page must be well-formed and render in
 * headless Chromium. Also: the 95% interval, and the Markdown table on the same queries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db.h"
#include "pagecheck.h"
#include "report_html.h"
#include "report_query.h"
#include "stage.h"
#include "testutil.h"
#include "util.h"

/* A done run of stage on syn, built on the current run of upstream; returns its id. */
static int64_t done_run(sqlite3 *db, const char *stage, const char *params, const char *upstream) {
    stage_run r;
    assert_int_equal(stage_begin(&r, db, stage, "syn", params, upstream, 1), 0);
    r.quiet = 1;
    assert_int_equal(stage_finish_begin(&r), 0);
    assert_int_equal(stage_finish_commit(&r), 0);
    return r.id;
}

/* Run a formatted statement. */
static void exec_f(sqlite3 *db, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    int rc = db_exec(db, sql);
    if (rc) fprintf(stderr, "%s: %s\n", sql, tr_errmsg());
    sqlite3_free(sql);
    assert_int_equal(rc, 0);
}

/* HR/NDCG at 10, 20, 30 and the user count of a split, from a seed value. */
static void put_split(sqlite3 *db, int64_t run, const char *method, const char *split, double base, int users) {
    for (int k = 10; k <= 30; k += 10) {
        assert_int_equal(db_put_metric(db, run, method, split, "hr", k, base * k / 10 + 1e-9 * k), 0);
        assert_int_equal(db_put_metric(db, run, method, split, "ndcg", k, base * k / 20 + 3e-10), 0);
    }
    assert_int_equal(db_put_metric(db, run, method, split, "users", 0, users), 0);
}

/* A metrics_log series: value(step) = a + b * step, steps 1..n. */
static void put_series(sqlite3 *db, int64_t run, const char *name, int n, double a, double b) {
    for (int s = 1; s <= n; s++)
        exec_f(db, "INSERT INTO metrics_log VALUES (%lld, %Q, %d, %.17g)", (long long)run, name, s, a + b * s);
}

/* The tokenizer's tables for a run: K = 3 books of L = 8 codes over the dataset's items. */
static void put_tokenizer(sqlite3 *db, int64_t run, int n_items, int n_users) {
    const char *ent[2] = {"item", "user"};
    int n[2] = {n_items, n_users};
    for (int e = 0; e < 2; e++) {
        exec_f(db,
            "INSERT INTO tokenizers (run_id, entity, source, d_in, h1, h2, d_c, K, L, rho, dropout1, dropout2, beta, "
            "bn_eps, best_epoch, epochs, weights, codebooks, bn_stats) VALUES (%lld, %Q, 'mean', 8, 8, 8, 4, 3, 8, 0.2, "
            "0, 0, 0.25, 1e-5, 4, 6, x'00', x'00', x'00')", (long long)run, ent[e]);
        exec_f(db,
            "INSERT INTO tokenize_stats VALUES (%lld, %Q, %d, %d, 2, 0, 0.05, 0.1, %d, 3, 4, 0, 1.5)",
            (long long)run, ent[e], n[e], n[e] - 2, n[e] - 4);
        for (int i = 0; i < n[e]; i++)
            for (int b = 0; b < 3; b++)
                exec_f(db, "INSERT INTO tokens VALUES (%lld, %Q, %d, %d, %d)", (long long)run, ent[e], i, b,
                       (i * (b + 1)) % (b == 2 ? 5 : 8));
        char name[32];
        snprintf(name, sizeof name, "%s/holdout_recon", ent[e]);
        put_series(db, run, name, 6, 0.5, -0.05);
    }
}

/* Every stage done on syn, with the data of every section of the page (built once). */
static char *full_db(void) {
    char *path = tu_path("full.db");
    if (tr_file_exists(path)) return path;
    sqlite3 *db = db_open(path, 0);
    assert_non_null(db);
    assert_int_equal(tu_synthetic(db, "syn", 60, 40, 4, 6, 12, 3), 0);
    int64_t cf = done_run(db, "cf", "{\"epochs\":30,\"holdout-users\":0.1}", "ingest");
    put_split(db, cf, "lightgcn", "test", 0.06, 54);
    put_split(db, cf, "lightgcn", "valid", 0.07, 54);
    put_split(db, cf, "lightgcn", "test_unseen", 0.05, 6);
    assert_int_equal(db_put_metric(db, cf, "lightgcn", "train", "best_epoch", 0, 20), 0);
    put_series(db, cf, "loss", 30, 0.7, -0.01);
    for (int e = 10; e <= 30; e += 10)
        exec_f(db, "INSERT INTO metrics_log VALUES (%lld, 'valid_hr10', %d, %g)", (long long)cf, e,
               e == 20 ? 0.09 : 0.08);
    int64_t tok = done_run(db, "tokenize", "{\"epochs\":6}", "cf");
    put_tokenizer(db, tok, 40, 60);
    int64_t ft = done_run(db, "finetune", "{\"epochs\":1,\"lr\":0.001}", "tokenize");
    put_split(db, ft, "tokenrec", "test", 0.08, 54);
    assert_int_equal(db_put_metric(db, ft, "tokenrec", "train", "best_epoch", 0, 1), 0);
    assert_int_equal(db_put_metric(db, ft, "tokenrec", "train", "targets_per_s", 0, 812.5), 0);
    put_series(db, ft, "train_loss_epoch", 1, 7.1, 0);       /* one epoch: one point */
    put_series(db, ft, "valid_hr@10", 1, 0.086, 0);
    int64_t gen = done_run(db, "finetune-gen", "{\"objective\":\"generate\"}", "tokenize");
    put_series(db, gen, "train_loss_epoch", 3, 5, -0.5);
    put_series(db, gen, "valid_hr@10", 3, 0.03, 0.01);
    assert_int_equal(db_put_metric(db, gen, "generate", "train", "best_epoch", 0, 3), 0);
    int64_t sas = done_run(db, "sasrec", "{\"dim\":64}", "ingest");   /* the SASRec stage's curves */
    put_series(db, sas, "sasrec_loss", 5, 9, -1);
    put_series(db, sas, "sasrec_valid_hr10", 5, 0.02, 0.004);
    const char *methods[4] = {"popularity", "lightgcn", "tokenrec", "sasrec"};
    const char *ups[4] = {"ingest", "cf", "finetune", "sasrec"};
    for (int m = 0; m < 4; m++) {
        char pj[128];
        snprintf(pj, sizeof pj, "{\"method\":\"%s\",\"unseen\":1}", methods[m]);
        int64_t ev = done_run(db, "evaluate", pj, ups[m]);
        put_split(db, ev, methods[m], "test", 0.02 + 0.02 * m, 54);
        if (m < 3) put_split(db, ev, methods[m], "test_unseen", 0.01 + 0.015 * m, 6);
        assert_int_equal(db_put_metric(db, ev, methods[m], "latency", "ms_per_user", 0, 0.25 * (m + 1)), 0);
    }
    /* the beam-search baseline's latency table */
    int64_t ge = done_run(db, "evaluate", "{\"method\":\"generate\",\"beam\":20}", "finetune-gen");
    put_split(db, ge, "generate", "test", 0.03, 54);
    assert_int_equal(db_put_metric(db, ge, "generate", "test", "beam", 0, 20), 0);
    const char *lm[2] = {"generate", "tokenrec"};
    for (int m = 0; m < 2; m++) {
        assert_int_equal(db_put_metric(db, ge, lm[m], "latency-b1", "ms_per_user", 0, m ? 0.9 : 14.25), 0);
        assert_int_equal(db_put_metric(db, ge, lm[m], "latency-best", "users_per_s", 16, m ? 5000 : 120), 0);
    }
    /* a second dataset with only its ingest done */
    assert_int_equal(tu_synthetic(db, "bare", 20, 15, 2, 5, 8, 4), 0);
    db_close(db);
    return path;
}

static void interval95(void **state) {
    (void)state;
    double lo, hi;
    rq_interval95(0.1, 100, &lo, &hi);                  /* 1.96 * 0.03 */
    assert_true(fabs(lo - (0.1 - 0.0588)) < 1e-12 && fabs(hi - (0.1 + 0.0588)) < 1e-12);
    rq_interval95(0.01, 10, &lo, &hi);                  /* clipped at 0 */
    assert_true(lo == 0 && hi > 0.01);
    rq_interval95(0.5, 0, &lo, &hi);                    /* no users: no interval */
    assert_true(isnan(lo) && isnan(hi));
    rq_interval95(NAN, 10, &lo, &hi);
    assert_true(isnan(lo));
}

static void page_numbers_equal_run_metrics(void **state) {
    (void)state;
    pc_require("xmllint", "libxml2-utils");
    char *dbp = full_db(), *page = tu_path("full.html");
    sqlite3 *db = db_open(dbp, 1);
    assert_int_equal(report_html_write(db, dbp, page), 0);
    assert_int_equal(pc_well_formed(page), 0);
    int cells = pc_cells_match(db, page);
    fprintf(stderr, "%d number cells equal run_metrics\n", cells);
    assert_true(cells > 0);
    /* every method's test metrics are there, once each, and the held-out users' */
    const char *methods[5] = {"popularity", "lightgcn", "tokenrec", "sasrec", "generate"};
    for (int m = 0; m < 5; m++)
        for (int c = 0; c < RQ_NM; c++)
            assert_int_equal(pc_count_cells(page, methods[m], "test", rq_metric_name[c], rq_metric_k[c]), m < 3 && c == 0 ? 2 : 1);
    for (int m = 0; m < 3; m++) assert_int_equal(pc_count_cells(page, methods[m], "test_unseen", "hr", 10), 1);
    assert_int_equal(pc_count_cells(page, "generate", "latency-b1", "ms_per_user", 0), 1);
    char *txt;
    size_t n;
    assert_int_equal(tr_read_file(page, &txt, &n), 0);
    assert_null(strstr(txt, "<script"));                 /* self-contained: no scripts, no links out */
    assert_null(strstr(txt, "src=\""));
    assert_null(strstr(txt, "href=\"http"));
    assert_non_null(strstr(txt, "chosen: epoch 20"));      /* cf's stored best epoch */
    assert_non_null(strstr(txt, "chosen: epoch 4"));       /* the tokenizer's */
    assert_non_null(strstr(txt, "kept: epoch 5"));         /* sasrec's best valid */
    assert_non_null(strstr(txt, "812.5 training targets/s"));
    assert_non_null(strstr(txt, "0.750 ms per test user"));
    assert_non_null(strstr(txt, "item codebook 2: 5 of 8 codes used"));
    assert_non_null(strstr(txt, "<details><summary>finetune, run"));
    assert_non_null(strstr(txt, "&quot;lr&quot;:\t0.001"));  /* the settings, pretty-printed */
    assert_non_null(strstr(txt, "Unseen users"));
    /* the dataset with only ingest done says what is missing */
    char *bare = strstr(txt, "id=\"ds-bare\"");
    assert_non_null(bare);
    assert_non_null(strstr(bare, "Not done yet: cf (not run), tokenize (not run), finetune (not run), sasrec (not run), evaluate (not run)"));
    free(txt);
    db_close(db);
    free(dbp);
    free(page);
}

static void partial_db_shows_what_exists(void **state) {
    (void)state;
    pc_require("xmllint", "libxml2-utils");
    char *dbp = tu_path("partial.db"), *page = tu_path("partial.html");
    sqlite3 *db = db_open(dbp, 0);
    assert_int_equal(tu_synthetic(db, "syn", 40, 30, 3, 6, 10, 5), 0);
    int64_t cf = done_run(db, "cf", "{\"epochs\":10}", "ingest");
    put_split(db, cf, "lightgcn", "test", 0.07, 40);
    put_series(db, cf, "loss", 10, 0.7, -0.02);
    put_series(db, cf, "valid_hr10", 1, 0.087, 0);        /* one validation point */
    assert_int_equal(report_html_write(db, dbp, page), 0);
    assert_int_equal(pc_well_formed(page), 0);
    assert_true(pc_cells_match(db, page) >= 7);
    char *txt;
    size_t n;
    assert_int_equal(tr_read_file(page, &txt, &n), 0);
    assert_non_null(strstr(txt, "Not done yet: tokenize (not run), finetune (not run), sasrec (not run), evaluate (not run)"));
    assert_non_null(strstr(txt, "No tokenize run yet"));
    assert_non_null(strstr(txt, "cf: valid HR@10"));
    assert_null(strstr(txt, "Unseen users"));
    /* the single point's axis stays around it, never negative: no tick label below 0 */
    assert_null(strstr(txt, ">-0."));
    free(txt);
    db_close(db);
    free(dbp);
    free(page);
}

static void empty_db_is_a_clear_error(void **state) {
    (void)state;
    char *dbp = tu_path("empty.db"), *page = tu_path("empty.html"), *tmp = tu_path("empty.html.tmp");
    sqlite3 *db = db_open(dbp, 0);
    assert_int_equal(report_html_write(db, dbp, page), -1);
    assert_non_null(strstr(tr_errmsg(), "no datasets"));
    assert_false(tr_file_exists(page));
    assert_false(tr_file_exists(tmp));
    db_close(db);
    /* through the command: a message and a failure status, no file */
    assert_int_not_equal(tu_run("%s report --db %s --html %s 2>%s/err.txt", tu_bin(), dbp, page, tu_tmpdir()), 0);
    assert_false(tr_file_exists(page));
    char *ep = tu_path("err.txt"), *err;
    size_t n;
    assert_int_equal(tr_read_file(ep, &err, &n), 0);
    assert_non_null(strstr(err, "nothing to report"));
    free(err); free(ep); free(dbp); free(page); free(tmp);
}

static void markdown_table_unchanged(void **state) {
    (void)state;
    char *dbp = full_db();
    char *txt = tu_report_md(dbp);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "| syn | tokenrec | evaluate |"));
    assert_non_null(strstr(txt, "| syn | tokenrec (unseen users) | evaluate |"));
    assert_non_null(strstr(txt, "| syn | sasrec | evaluate |"));
    assert_non_null(strstr(strstr(txt, "| syn | sasrec |"), "| 0.0800 | 0.0400 | 0.1600 | 0.0800 | 0.2400 | 0.1200 |"));
    assert_non_null(strstr(txt, "| syn | generate (beam search) |"));
    free(txt); free(dbp);
}

static void browser_renders_the_page(void **state) {
    (void)state;
    pc_require("chromium", "chromium");
    pc_require("python3", "python3");
    char *dbp = full_db(), *page = tu_path("full.html"), *png = tu_path("full.png");
    sqlite3 *db = db_open(dbp, 1);
    assert_int_equal(report_html_write(db, dbp, page), 0);
    db_close(db);
    assert_int_equal(pc_render(page, png, 900, 1200), 0);
    free(dbp); free(page); free(png);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(interval95),
        cmocka_unit_test(page_numbers_equal_run_metrics),
        cmocka_unit_test(partial_db_shows_what_exists),
        cmocka_unit_test(empty_db_is_a_clear_error),
        cmocka_unit_test(markdown_table_unchanged),
        cmocka_unit_test(browser_renders_the_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
