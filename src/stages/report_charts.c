/* report_charts.c: the HTML report's training curves and tokenizer section (report_html.h). */
#include "report_html.h"
#include "db.h"
#include "report_query.h"
#include "results.h"
#include "stage.h"
#include "svg.h"
#include "tokenize.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* How a stage's chosen epoch is found. */
enum { BEST_NONE, BEST_STORED, BEST_ARGMAX };

/* The two curves of a stage (metrics_log names): its training loss and its validation. */
typedef struct {
    const char *stage, *method;          /* method: evaluate runs of that method only */
    const char *series[2], *title[2], *xlabel;
    int         best;
    const char *fallback, *fallback_title; /* older runs: the loss by step instead */
} curve_spec;

static const curve_spec curve_specs[] = {
    {"cf", NULL, {"loss", "valid_hr10"}, {"cf: BPR training loss", "cf: valid HR@10"}, "epoch", BEST_STORED, NULL, NULL},
    {"finetune", NULL, {"train_loss_epoch", "valid_hr@10"}, {"finetune: training loss (epoch mean)", "finetune: valid HR@10"},
     "epoch", BEST_STORED, "train_loss", "finetune: training loss (mean of 50 steps)"},
    {"finetune-gen", NULL, {"train_loss_epoch", "valid_hr@10"},
     {"finetune-gen: training loss (epoch mean)", "finetune-gen: valid HR@10"}, "epoch", BEST_STORED, "train_loss",
     "finetune-gen: training loss (mean of 50 steps)"},
    {"sasrec", NULL, {"sasrec_loss", "sasrec_valid_hr10"}, {"sasrec: training loss", "sasrec: valid HR@10"},
     "epoch", BEST_ARGMAX, NULL, NULL},
};

/* The latest done run of a stage (and method) on the dataset, 0 if none. */
static int64_t spec_run(sqlite3 *db, const char *ds, const curve_spec *c) {
    if (!c->method) return stage_current_run(db, ds, c->stage);
    return db_query_i64(db, 0, "SELECT max(id) FROM stage_runs WHERE dataset=%Q AND stage=%Q AND status='done' "
                               "AND json_extract(params, '$.method')=%Q", ds, c->stage, c->method);
}

/* One line chart of a run's series; returns its number of points. */
static int chart(FILE *f, sqlite3 *db, int64_t run, const char *name, const char *title, const char *xlabel,
                 double mark, const char *mark_label) {
    double *x, *y;
    int n = results_series(db, run, name, &x, &y);
    if (n > 0) {
        svg_line_spec s = {title, xlabel, x, y, n, mark, mark_label};
        svg_line(f, &s, 470, 220);
    }
    free(x);
    free(y);
    return n;
}

/* The x of the highest value of a series (its first), NAN when empty. */
static double argmax_step(sqlite3 *db, int64_t run, const char *name) {
    double *x, *y, best = NAN, at = NAN;
    int n = results_series(db, run, name, &x, &y);
    for (int i = 0; i < n; i++)
        if (isnan(best) || y[i] > best) { best = y[i]; at = x[i]; }
    free(x);
    free(y);
    return at;
}

/* The curves of one stage's run, the chosen epoch marked. */
static void stage_curves(FILE *f, sqlite3 *db, const curve_spec *c, int64_t run) {
    double mark = NAN;
    char label[64] = "";
    if (c->best == BEST_STORED) mark = rq_metric(db, run, NULL, "train", "best_epoch", 0);
    else if (c->best == BEST_ARGMAX) mark = argmax_step(db, run, c->series[1]);
    if (isfinite(mark))
        snprintf(label, sizeof label, c->best == BEST_STORED ? "chosen: epoch %.0f" : "kept: epoch %.0f", mark);
    fputs("<div class=\"charts\">\n", f);
    int n0 = chart(f, db, run, c->series[0], c->title[0], c->xlabel, mark, label);
    if (!n0 && c->fallback) n0 = chart(f, db, run, c->fallback, c->fallback_title, "step", NAN, "");
    int n1 = chart(f, db, run, c->series[1], c->title[1], c->xlabel, mark, label);
    fputs("</div>\n", f);
    if (!n0 || !n1)
        fprintf(f, "<p class=\"note\">Run %lld logged no %s by %s.</p>\n", (long long)run,
                !n0 ? "training loss" : "validation", c->xlabel);
}

void report_html_training(FILE *f, sqlite3 *db, const char *ds) {
    fputs("<h3>Training</h3>\n", f);
    int shown = 0;
    for (size_t i = 0; i < sizeof curve_specs / sizeof *curve_specs; i++) {
        const curve_spec *c = &curve_specs[i];
        int64_t run = spec_run(db, ds, c);
        if (run) {
            stage_curves(f, db, c, run);
            shown++;
        }
        if (!strcmp(c->stage, "cf")) {           /* the tokenizer trains between cf and finetune */
            int64_t tr = stage_current_run(db, ds, "tokenize");
            tokenize_summary ts[2];
            int nt = tr ? tokenize_read_stats(db, tr, ts, 2) : 0;
            if (nt > 0) fputs("<div class=\"charts\">\n", f);
            for (int e = nt - 1; e >= 0; e--) {   /* items first */
                char name[64], title[96], label[48];
                snprintf(name, sizeof name, "%s/holdout_recon", ts[e].entity);
                snprintf(title, sizeof title, "tokenize: %s holdout reconstruction MSE", ts[e].entity);
                snprintf(label, sizeof label, "chosen: epoch %d", ts[e].best_epoch);
                chart(f, db, tr, name, title, "epoch", ts[e].best_epoch, label);
                shown++;
            }
            if (nt > 0) fputs("</div>\n", f);
        }
    }
    if (!shown) fputs("<p class=\"missing\">No training run yet (cf, tokenize, finetune).</p>\n", f);
    else fputs("<p class=\"note\">Dashed red line: the epoch whose parameters the stage kept (best validation "
               "score; for the tokenizer, the best holdout reconstruction).</p>\n", f);
}

/* Descending order for the code-usage columns. */
static int by_count_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

void report_html_tokenizer(FILE *f, sqlite3 *db, const char *ds) {
    fputs("<h3>Tokenizer</h3>\n", f);
    int64_t run = stage_current_run(db, ds, "tokenize");
    tokenize_summary ts[2];
    int nt = run ? tokenize_read_stats(db, run, ts, 2) : 0;
    if (nt <= 0) {
        fputs("<p class=\"missing\">No tokenize run yet: <code>tokenrec tokenize</code>.</p>\n", f);
        return;
    }
    fprintf(f, "<p>Run %lld: %s quantizer, K = %d codebooks of L = %d codes.</p>\n", (long long)run,
            strcmp(ts[0].quantizer, "residual") ? "parallel (CLEAN)" : "residual", ts[0].K, ts[0].L);
    fputs("<table><tr><th>entity</th><th class=\"num\">tokenized</th><th class=\"num\">distinct tuples</th>"
          "<th class=\"num\">largest group sharing a tuple</th><th class=\"num\">holdout MSE / input variance</th>"
          "<th class=\"num\">chosen epoch</th></tr>\n", f);
    const tokenize_summary *item = NULL;
    for (int e = nt - 1; e >= 0; e--) {
        const tokenize_summary *t = &ts[e];
        if (!strcmp(t->entity, "item")) item = t;
        fprintf(f, "<tr><td>%s</td><td class=\"num\">%d</td><td class=\"num\">%d</td><td class=\"num\">%d</td>"
                   "<td class=\"num\">%.3f</td><td class=\"num\">%d of %d</td></tr>\n", t->entity, t->n, t->distinct,
                t->largest, t->input_var > 0 ? t->holdout_mse / t->input_var : NAN, t->best_epoch, t->epochs);
    }
    fputs("</table>\n", f);
    if (!item) return;
    fputs("<div class=\"charts\">\n", f);
    for (int k = 0; k < item->K; k++) {
        int64_t *counts;
        int seen = results_code_usage(db, run, "item", k, &counts);
        int L = item->L > seen ? item->L : seen, used = 0;
        double *v = tr_calloc((size_t)(L > 0 ? L : 1), sizeof *v);
        for (int c = 0; c < seen; c++) { v[c] = (double)counts[c]; used += counts[c] > 0; }
        qsort(v, (size_t)L, sizeof *v, by_count_desc);
        char title[96], xl[64];
        snprintf(title, sizeof title, "item codebook %d: %d of %d codes used", k, used, L);
        snprintf(xl, sizeof xl, "%d codes, most used first", L);
        svg_columns(f, title, xl, v, L, L > 0 ? (double)item->n / L : NAN, "uniform", 310, 170);
        free(v);
        free(counts);
    }
    fputs("</div>\n<p class=\"note\">Items per code of each codebook; the dashed line is the count if every "
          "code were used equally.</p>\n", f);
}
