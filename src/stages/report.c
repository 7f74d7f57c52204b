/* report.c: `tokenrec report`, the Markdown/CSV table and the --html page. */
#include "report.h"
#include "cli.h"
#include "db.h"
#include "report_html.h"
#include "report_query.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The latency table of the latest evaluate --method generate run per dataset: both methods
 * timed in the same process on the same users. */
static void print_latency(sqlite3 *db, int csv) {
    rq_latency *rows;
    int n = rq_latency_rows(db, NULL, &rows);
    for (int i = 0; i < n; i++) {
        const rq_latency *r = &rows[i];
        if (!i) {
            if (csv) printf("\ndataset,method,run,ms_per_user_batch1,users_per_s_best,best_batch,beam\n");
            else printf("\n| dataset | method | run | ms/user (batch 1) | users/s (best batch) | best batch | beam |\n"
                        "|---|---|---|---|---|---|---|\n");
        }
        int is_gen = !strcmp(r->method, "generate");
        printf(csv ? "%s,%s,%lld,%.3f,%.1f,%d," : "| %s | %s | %lld | %.3f | %.1f | %d | ", r->dataset,
               is_gen ? "generate (beam search)" : r->own_model ? "tokenrec (generative retrieval)" :
               "tokenrec (generative retrieval, timed on the generate model's network)",
               (long long)r->run, r->ms_per_user, r->users_per_s, r->best_batch);
        if (is_gen) printf(csv ? "%d\n" : "%d |\n", r->beam);
        else printf(csv ? "\n" : "- |\n");
    }
    if (n > 0) free(rows);
}

/* The cost of each dataset's runs (the latest done run of each stage, and of each method
 * of evaluate): wall time, and for a training stage that recorded them its train targets
 * and ID tokens per second. */
static void print_costs(sqlite3 *db, int csv) {
    sqlite3_stmt *st = db_prep(db, "SELECT name FROM datasets ORDER BY name");
    if (!st) return;
    int head = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *ds = (const char *)sqlite3_column_text(st, 0);
        rq_run *runs;
        int n = rq_runs(db, ds, &runs);
        for (int i = 0; i < n; i++) {
            const rq_run *r = &runs[i];
            if (!head++) {
                if (csv) printf("\ndataset,stage,run,seconds,targets_per_s,tokens_per_s\n");
                else printf("\n| dataset | stage | run | wall seconds | train targets/s | ID tokens/s |\n"
                            "|---|---|---|---|---|---|\n");
            }
            double tps = rq_metric(db, r->id, NULL, "train", "targets_per_s", 0);
            double kps = rq_metric(db, r->id, NULL, "train", "tokens_per_s", 0);
            char stage[112];
            snprintf(stage, sizeof stage, "%s%s%s", r->stage, r->method[0] ? " " : "", r->method);
            printf(csv ? "%s,%s,%lld,%.1f," : "| %s | %s | %lld | %.1f | ", ds, stage, (long long)r->id, r->seconds);
            if (isfinite(tps)) printf(csv ? "%.1f," : "%.1f | ", tps);
            else printf(csv ? "," : "- | ");
            if (isfinite(kps)) printf(csv ? "%.0f\n" : "%.0f |\n", kps);
            else printf(csv ? "\n" : "- |\n");
        }
        if (n > 0) rq_runs_free(runs, n);
    }
    sqlite3_finalize(st);
}

/* The table: one row per dataset, method and test split. */
static int print_table(sqlite3 *db, int csv) {
    rq_method *rows;
    int n = rq_methods(db, NULL, &rows);
    if (n < 0) return -1;
    if (csv) printf("dataset,method,stage,run,hr10,ndcg10,hr20,ndcg20,hr30,ndcg30,seconds,params\n");
    else printf("| dataset | method | stage | run | HR@10 | NDCG@10 | HR@20 | NDCG@20 | HR@30 | NDCG@30 | seconds | settings |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        const rq_method *r = &rows[i];
        printf(csv ? "%s,%s%s,%s,%lld" : "| %s | %s%s | %s | %lld", r->dataset, r->method,
               strcmp(r->split, "test_unseen") ? "" : " (unseen users)", r->stage, (long long)r->run);
        for (int c = 0; c < RQ_NM; c++) {
            if (isnan(r->m[c])) printf(csv ? "," : " | -");
            else printf(csv ? ",%.4f" : " | %.4f", r->m[c]);
        }
        if (csv) {
            printf(",%.1f,\"", r->seconds);
            for (const char *p = r->params; *p; p++) { if (*p == '"') putchar('"'); putchar(*p); }
            printf("\"\n");
        } else {
            printf(" | %.1f | `%s` |\n", r->seconds, r->params);
        }
    }
    rq_methods_free(rows, n);
    if (!n) fprintf(stderr, "no metrics yet: run 'tokenrec cf' or 'tokenrec evaluate' first\n");
    print_costs(db, csv);
    print_latency(db, csv);
    return 0;
}

static const char *usage_rep = "tokenrec report [--db FILE] [--csv | --html FILE]";
static const char *summary_rep =
    "A table of every method's test metrics on every dataset in the database (the latest done run\n"
    "of each method), with the run's settings and wall time; after evaluate --unseen, a row per\n"
    "method for the held-out users too; then each stage's wall time and, for training, its\n"
    "targets and ID tokens per second. Markdown by default, CSV with --csv.\n"
    "--html FILE writes one self-contained HTML page instead (inline SVG and CSS, no scripts, no\n"
    "network): per dataset the test HR@10 and NDCG@10 of every method with 95% intervals, the\n"
    "training curves of every stage, the tokenizer's codebook usage, the cost of each stage, each\n"
    "run's settings, the unseen-user test when it was run, and what has not been run yet.";

int cmd_report(int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *html = NULL;
    int csv = 0;
    cli_opt opts[] = {
        {"db", CLI_STR, &dbpath, "database file", 0},
        {"csv", CLI_FLAG, &csv, "CSV instead of Markdown", 0},
        {"html", CLI_STR, &html, "write the HTML report to this file instead", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_rep, summary_rep);
    if (rc) return rc > 0 ? 0 : -1;
    if (html && csv) return tr_error("report: --csv and --html exclude each other");
    sqlite3 *db = db_open(dbpath, 1);
    if (!db) return -1;
    rc = html ? report_html_write(db, dbpath, html) : print_table(db, csv);
    db_close(db);
    fflush(stdout);                 /* after the table when both go to one terminal or file */
    if (!rc && html) fprintf(stderr, "HTML report written to %s\n", html);
    return rc;
}
