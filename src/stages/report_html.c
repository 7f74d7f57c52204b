/* report_html.c: the HTML page of `tokenrec report --html` (see report_html.h): the page,
 * the pipeline's state, accuracy, unseen users, cost and settings of each dataset. */
#include "report_html.h"
#include "db.h"
#include "report_query.h"
#include "stage.h"
#include "svg.h"
#include "util.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char page_css[] =
    "body{font:14px/1.45 'DejaVu Sans',system-ui,sans-serif;color:#222;background:#fff;"
    "max-width:1000px;margin:20px auto;padding:0 16px}\n"
    "h1{font-size:24px;margin:0 0 4px}h2{font-size:20px;border-bottom:2px solid #4477aa;"
    "padding-bottom:3px;margin:34px 0 8px}h3{font-size:16px;margin:22px 0 6px}\n"
    ".meta,.note{color:#555}.note{font-size:12px}.missing{background:#fff4e5;border-left:4px solid #e69500;"
    "padding:6px 10px}\n"
    "table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 9px;border-bottom:1px solid #ddd;"
    "text-align:left}th{background:#f3f5f8}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    ".charts{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0}svg{background:#fbfbfb;border:1px solid #e3e3e3}\n"
    "svg .ttl{font-size:13px;font-weight:bold;fill:#222}svg .lbl{font-size:11px;fill:#444}\n"
    ".bar0{fill:#4477aa}.bar1{fill:#ee7733}.err{stroke:#222;stroke-width:1.4;fill:none}.grid{stroke:#e2e2e2}"
    ".axis{stroke:#888;fill:none}.line{stroke:#4477aa;stroke-width:2;fill:none}.pt{fill:#4477aa}"
    ".best{stroke:#cc3311;stroke-dasharray:4 3}svg .best-lbl{fill:#cc3311}.pt.best-pt{fill:#cc3311}"
    ".ref{stroke:#cc3311;stroke-dasharray:4 3}\n"
    "details{margin:3px 0}summary{cursor:pointer}pre{background:#f5f5f5;padding:8px;overflow:auto;"
    "font-size:12px;margin:4px 0;tab-size:2}\n";

/* Where a number cell's value is stored: run_metrics (run, method, split, metric, k). */
typedef struct { const char *ds; int64_t run; const char *method, *split; } cell_key;

/* A number cell with its exact value and key for tests (decimals < 0: an integer count). */
static void metric_cell(FILE *f, cell_key key, const char *metric, int k, double v, int decimals) {
    if (!isfinite(v)) { fputs("<td class=\"num\">-</td>", f); return; }
    fputs("<td class=\"num\" data-dataset=\"", f);
    html_esc(f, key.ds);
    fprintf(f, "\" data-run=\"%lld\" data-method=\"", (long long)key.run);
    html_esc(f, key.method);
    fprintf(f, "\" data-split=\"%s\" data-metric=\"%s\" data-k=\"%d\" data-value=\"%.17g\">", key.split, metric,
            k, v);
    if (decimals < 0) fprintf(f, "%.0f</td>", v);
    else fprintf(f, "%.*f</td>", decimals, v);
}

/* A text cell, escaped. */
static void text_cell(FILE *f, const char *s) {
    fputs("<td>", f);
    html_esc(f, s);
    fputs("</td>", f);
}

/* The users a test split is over when the run did not store it: the dataset's users with a
 * test item (runs before the 'users' metric; the held-out users' count is not derivable). */
static double users_of(const rq_method *r, double test_users) {
    if (isfinite(r->users)) return r->users;
    return strcmp(r->split, "test") ? NAN : test_users;
}

/* The dataset's size and the state of each pipeline stage; lists what has not been run. */
static void section_status(FILE *f, sqlite3 *db, const char *ds) {
    int64_t users = db_query_i64(db, 0, "SELECT n_users FROM datasets WHERE name=%Q", ds);
    int64_t items = db_query_i64(db, 0, "SELECT n_items FROM datasets WHERE name=%Q", ds);
    int64_t inter = db_query_i64(db, 0, "SELECT n_interactions FROM datasets WHERE name=%Q", ds);
    fprintf(f, "<p>%lld users, %lld items, %lld interactions; each user's last item is the test item, "
               "the one before it the valid item (leave-one-out), ranked against every item the user "
               "has not seen.</p>\n", (long long)users, (long long)items, (long long)inter);
    fputs("<table><tr><th>stage</th><th>state</th><th>run</th></tr>\n", f);
    char missing[512] = "";
    size_t ml = 0;
    for (int s = 0; s < STAGE_COUNT; s++) {
        int64_t run = 0;
        stage_state st = stage_get_state(db, ds, stage_defs[s].name, &run);
        fprintf(f, "<tr><td>%s</td><td>%s</td><td class=\"num\">", stage_defs[s].name, stage_state_name(st));
        if (run) fprintf(f, "%lld", (long long)run);
        fputs("</td></tr>\n", f);
        /* the beam-search baseline is optional: not run is not missing */
        int optional = s == STAGE_FINETUNE_GEN && st == ST_NOT_RUN;
        if (st != ST_DONE && !optional && ml < sizeof missing - 64)
            ml += (size_t)snprintf(missing + ml, sizeof missing - ml, "%s%s (%s)", ml ? ", " : "",
                                   stage_defs[s].name, st == ST_STALE ? "stale: its upstream run changed since"
                                   : stage_state_name(st));
    }
    fputs("</table>\n", f);
    if (ml) {
        fputs("<p class=\"missing\">Not done yet: ", f);
        html_esc(f, missing);
        fputs(". The sections below show what exists; <code>tokenrec run --dataset ", f);
        html_esc(f, ds);
        fputs("</code> runs the rest.</p>\n", f);
    }
}

/* Test HR@10 and NDCG@10 of every method as bars with 95% intervals, and the metrics table. */
static void section_accuracy(FILE *f, const char *ds, const rq_method *rows, int n, double test_users) {
    fputs("<h3>Test accuracy</h3>\n", f);
    int nt = 0;
    for (int i = 0; i < n; i++) nt += !strcmp(rows[i].split, "test");
    if (!nt) {
        fputs("<p class=\"missing\">No test metrics yet: <code>tokenrec cf</code> measures LightGCN, "
              "<code>tokenrec evaluate</code> every method.</p>\n", f);
        return;
    }
    svg_bar *bars = tr_calloc((size_t)nt, sizeof *bars);
    fputs("<div class=\"charts\">\n", f);
    for (int m = 0; m < 2; m++) {          /* HR@10, NDCG@10 */
        int b = 0;
        for (int i = 0; i < n; i++) {
            if (strcmp(rows[i].split, "test")) continue;
            bars[b].label = rows[i].method;
            bars[b].value = rows[i].m[m];
            bars[b].series = 0;
            rq_interval95(rows[i].m[m], users_of(&rows[i], test_users), &bars[b].lo, &bars[b].hi);
            b++;
        }
        svg_hbars(f, m ? "test NDCG@10, 95% interval" : "test HR@10, 95% interval", bars, nt, 4, "", 470);
    }
    fputs("</div>\n", f);
    free(bars);
    fputs("<p class=\"note\">Split <b>test</b>: one held-out item per user, full ranking, history "
          "excluded. Whiskers: p &#177; 1.96 &#8730;(p(1&#8722;p)/n) over the n test users (for "
          "NDCG, whose per-user value also lies in [0, 1], an upper bound on the standard error).</p>\n", f);
    fputs("<table><tr><th>method</th><th>stage</th><th>run</th><th class=\"num\">users</th>"
          "<th class=\"num\">HR@10</th><th>95% interval</th><th class=\"num\">NDCG@10</th><th class=\"num\">HR@20</th>"
          "<th class=\"num\">NDCG@20</th><th class=\"num\">HR@30</th><th class=\"num\">NDCG@30</th></tr>\n", f);
    int counted = 0;
    for (int i = 0; i < n; i++) {
        const rq_method *r = &rows[i];
        if (strcmp(r->split, "test")) continue;
        fputs("<tr>", f);
        text_cell(f, r->method);
        text_cell(f, r->stage);
        fprintf(f, "<td class=\"num\">%lld</td>", (long long)r->run);
        cell_key key = {ds, r->run, r->method, r->split};
        if (isfinite(r->users)) metric_cell(f, key, "users", 0, r->users, -1);
        else { fprintf(f, "<td class=\"num\">%.0f*</td>", test_users); counted = 1; }
        metric_cell(f, key, "hr", 10, r->m[0], 4);
        double lo, hi;
        rq_interval95(r->m[0], users_of(r, test_users), &lo, &hi);
        if (isfinite(lo)) fprintf(f, "<td>%.4f&#8211;%.4f</td>", lo, hi);
        else fputs("<td>-</td>", f);
        for (int c = 1; c < RQ_NM; c++)
            metric_cell(f, key, rq_metric_name[c], rq_metric_k[c], r->m[c], 4);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
    if (counted)
        fputs("<p class=\"note\">* The run did not store its user count (made before tokenrec did): the "
              "dataset's users with a test item.</p>\n", f);
}

/* Seen against unseen users (evaluate --unseen): HR@10 of both groups of the same run. */
static void section_unseen(FILE *f, sqlite3 *db, const char *ds, const rq_method *rows, int n) {
    int nu = 0;
    for (int i = 0; i < n; i++) nu += !strcmp(rows[i].split, "test_unseen");
    if (!nu) return;
    fputs("<h3>Unseen users</h3>\n<p>Users held out of every training stage (<code>cf --holdout-users</code>), "
          "tested beside the seen users of the same run.</p>\n", f);
    svg_bar *bars = tr_calloc((size_t)2 * nu, sizeof *bars);
    char (*labels)[96] = tr_calloc((size_t)2 * nu, sizeof *labels);
    double *seen = tr_calloc((size_t)2 * nu, sizeof *seen);
    int b = 0;
    for (int i = 0; i < n; i++) {
        const rq_method *r = &rows[i];
        if (strcmp(r->split, "test_unseen")) continue;
        double s_hr = rq_metric(db, r->run, r->method, "test", "hr", 10);
        double s_n = rq_metric(db, r->run, r->method, "test", "users", 0);
        seen[b / 2] = s_hr;
        seen[nu + b / 2] = s_n;
        snprintf(labels[b], sizeof labels[b], "%s seen", r->method);
        bars[b] = (svg_bar){labels[b], s_hr, NAN, NAN, 0};
        rq_interval95(s_hr, s_n, &bars[b].lo, &bars[b].hi);
        b++;
        snprintf(labels[b], sizeof labels[b], "%s unseen", r->method);
        bars[b] = (svg_bar){labels[b], r->m[0], NAN, NAN, 1};
        rq_interval95(r->m[0], r->users, &bars[b].lo, &bars[b].hi);
        b++;
    }
    fputs("<div class=\"charts\">\n", f);
    svg_hbars(f, "test HR@10, seen and unseen users, 95% interval", bars, b, 4, "", 560);
    fputs("</div>\n<table><tr><th>method</th><th>run</th><th class=\"num\">seen users</th>"
          "<th class=\"num\">seen HR@10</th><th class=\"num\">unseen users</th><th class=\"num\">unseen HR@10</th>"
          "<th class=\"num\">unseen NDCG@10</th><th class=\"num\">ratio</th></tr>\n", f);
    int j = 0;
    for (int i = 0; i < n; i++) {
        const rq_method *r = &rows[i];
        if (strcmp(r->split, "test_unseen")) continue;
        fputs("<tr>", f);
        text_cell(f, r->method);
        fprintf(f, "<td class=\"num\">%lld</td>", (long long)r->run);
        cell_key sk = {ds, r->run, r->method, "test"}, uk = {ds, r->run, r->method, r->split};
        metric_cell(f, sk, "users", 0, seen[nu + j], -1);
        metric_cell(f, sk, "hr", 10, seen[j], 4);
        metric_cell(f, uk, "users", 0, r->users, -1);
        metric_cell(f, uk, "hr", 10, r->m[0], 4);
        metric_cell(f, uk, "ndcg", 10, r->m[1], 4);
        if (seen[j] > 0) fprintf(f, "<td class=\"num\">%.2f</td>", r->m[0] / seen[j]);
        else fputs("<td class=\"num\">-</td>", f);
        fputs("</tr>\n", f);
        j++;
    }
    fputs("</table>\n", f);
    free(bars);
    free(labels);
    free(seen);
}

/* Wall time per stage (chart and table) with each stage's throughput, and the latency table
 * of generative retrieval against beam search when it was run. */
static void section_cost(FILE *f, sqlite3 *db, const char *ds, const rq_run *runs, int n) {
    fputs("<h3>Cost</h3>\n", f);
    if (!n) { fputs("<p class=\"missing\">No finished run yet.</p>\n", f); return; }
    svg_bar *bars = tr_calloc((size_t)n, sizeof *bars);
    char (*labels)[112] = tr_calloc((size_t)n, sizeof *labels);
    for (int i = 0; i < n; i++) {
        snprintf(labels[i], sizeof labels[i], runs[i].method[0] ? "%s (%s)" : "%s", runs[i].stage, runs[i].method);
        bars[i] = (svg_bar){labels[i], runs[i].seconds, NAN, NAN, 0};
    }
    fputs("<div class=\"charts\">\n", f);
    svg_hbars(f, "wall time per run, seconds", bars, n, 1, " s", 560);
    fputs("</div>\n<table><tr><th>stage</th><th>run</th><th class=\"num\">wall time</th><th>throughput</th></tr>\n", f);
    for (int i = 0; i < n; i++) {
        const rq_run *r = &runs[i];
        char d[32];
        fputs("<tr>", f);
        text_cell(f, labels[i]);
        fprintf(f, "<td class=\"num\">%lld</td><td class=\"num\">%s</td><td>", (long long)r->id,
                tr_fmt_duration(r->seconds, d, sizeof d));
        double tps = rq_metric(db, r->id, NULL, "train", "targets_per_s", 0);
        double ms = rq_metric(db, r->id, r->method[0] ? r->method : NULL, "latency", "ms_per_user", 0);
        double kps = rq_metric(db, r->id, NULL, "train", "tokens_per_s", 0);
        if (isfinite(tps)) fprintf(f, "%.1f training targets/s", tps);
        if (isfinite(tps) && isfinite(kps)) fprintf(f, ", %.0f ID tokens/s", kps);
        else if (isfinite(ms)) fprintf(f, "%.3f ms per test user (retrieval)", ms);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    free(bars);
    free(labels);
    rq_latency *lat;
    int nl = rq_latency_rows(db, ds, &lat);
    if (nl <= 0) return;
    fputs("<p>Generative retrieval against the autoregressive baseline (constrained beam search), timed in "
          "the same process on the same users:</p>\n<table><tr><th>method</th><th>run</th>"
          "<th class=\"num\">ms/user (batch 1)</th><th class=\"num\">users/s (best batch)</th>"
          "<th class=\"num\">best batch</th><th class=\"num\">beam</th></tr>\n", f);
    for (int i = 0; i < nl; i++) {
        const rq_latency *l = &lat[i];
        int gen = !strcmp(l->method, "generate");
        fputs("<tr>", f);
        text_cell(f, gen ? "generate (beam search)" : l->own_model ? "tokenrec (generative retrieval)"
                         : "tokenrec (generative retrieval, on the generate model's network)");
        fprintf(f, "<td class=\"num\">%lld</td>", (long long)l->run);
        metric_cell(f, (cell_key){ds, l->run, l->method, "latency-b1"}, "ms_per_user", 0, l->ms_per_user, 3);
        fprintf(f, "<td class=\"num\">%.1f</td><td class=\"num\">%d</td><td class=\"num\">", l->users_per_s, l->best_batch);
        if (gen) fprintf(f, "%d", l->beam);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    free(lat);
}

/* Each run's settings, folded away. */
static void section_runs(FILE *f, const rq_run *runs, int n) {
    if (!n) return;
    fputs("<h3>Runs and their settings</h3>\n", f);
    for (int i = 0; i < n; i++) {
        const rq_run *r = &runs[i];
        char d[32];
        fprintf(f, "<details><summary>%s", r->stage);
        if (r->method[0]) { fputs(" (", f); html_esc(f, r->method); fputs(")", f); }
        fprintf(f, ", run %lld, %s</summary><pre>", (long long)r->id, tr_fmt_duration(r->seconds, d, sizeof d));
        cJSON *j = cJSON_Parse(r->params);
        char *pretty = j ? cJSON_Print(j) : NULL;
        html_esc(f, pretty ? pretty : r->params);
        free(pretty);
        cJSON_Delete(j);
        fputs("</pre></details>\n", f);
    }
}

/* One dataset's section. */
static int write_dataset(FILE *f, sqlite3 *db, const char *ds) {
    fputs("<section id=\"ds-", f);
    html_esc(f, ds);
    fputs("\">\n<h2>", f);
    html_esc(f, ds);
    fputs("</h2>\n", f);
    section_status(f, db, ds);
    rq_method *rows;
    int n = rq_methods(db, ds, &rows);
    if (n < 0) return -1;
    double test_users = (double)db_query_i64(db, 0, "SELECT count(DISTINCT i.uid) FROM interactions i JOIN datasets d "
                                                    "ON d.id = i.dataset_id WHERE d.name=%Q AND i.split=2", ds);
    section_accuracy(f, ds, rows, n, test_users);
    section_unseen(f, db, ds, rows, n);
    rq_methods_free(rows, n);
    report_html_training(f, db, ds);
    report_html_tokenizer(f, db, ds);
    rq_run *runs;
    int nr = rq_runs(db, ds, &runs);
    if (nr < 0) return -1;
    section_cost(f, db, ds, runs, nr);
    section_runs(f, runs, nr);
    rq_runs_free(runs, nr);
    fputs("</section>\n", f);
    return 0;
}

int report_html_write(sqlite3 *db, const char *dbpath, const char *path) {
    sqlite3_stmt *st = db_prep(db, "SELECT name FROM datasets ORDER BY name");
    if (!st) return -1;
    int n = 0;
    char (*names)[128] = NULL;
    while (sqlite3_step(st) == SQLITE_ROW) {
        names = tr_realloc(names, (size_t)(n + 1) * sizeof *names);
        snprintf(names[n++], sizeof *names, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    if (!n)
        return tr_error("%s has no datasets, so there is nothing to report: run 'tokenrec run --dataset "
                        "lastfm' (or 'tokenrec ingest') first; no page written", dbpath);
    size_t tl = strlen(path) + 8;
    char *tmp = tr_malloc(tl);
    snprintf(tmp, tl, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        tr_error("cannot write %s", tmp);
        free(tmp);
        free(names);
        return -1;
    }
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n"
               "<title>tokenrec report</title>\n<style>\n%s</style>\n</head>\n<body>\n<h1>tokenrec report</h1>\n"
               "<p class=\"meta\">Database <code>", page_css);
    html_esc(f, dbpath);
    fprintf(f, "</code>, written %s by tokenrec 0.1.0. Datasets:", when);
    for (int i = 0; i < n; i++) {
        fputs(i ? ", <a href=\"#ds-" : " <a href=\"#ds-", f);
        html_esc(f, names[i]);
        fputs("\">", f);
        html_esc(f, names[i]);
        fputs("</a>", f);
    }
    fputs(".</p>\n", f);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = write_dataset(f, db, names[i]);
    fputs("</body>\n</html>\n", f);
    free(names);
    if (ferror(f)) rc = tr_error("writing %s failed", tmp);
    if (fclose(f) != 0 && !rc) rc = tr_error("writing %s failed", tmp);
    if (!rc && rename(tmp, path) != 0) rc = tr_error("cannot rename %s to %s", tmp, path);
    if (rc) remove(tmp);
    free(tmp);
    return rc;
}

char *report_html_beside(const char *dbpath) {
    const char *slash = strrchr(dbpath, '/');
    size_t dir = slash ? (size_t)(slash - dbpath) + 1 : 0, len = dir + sizeof "report.html";
    char *p = tr_malloc(len);
    snprintf(p, len, "%.*sreport.html", (int)dir, dbpath);
    return p;
}
