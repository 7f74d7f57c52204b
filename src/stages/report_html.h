/* report_html: `tokenrec report --html FILE`, and the report.html `tokenrec run` writes
 * beside the database. One self-contained page: inline CSS and SVG (svg.h), no scripts, no
 * network, XML well-formed. Per dataset of the database:
 *   - what has not been run yet (the pipeline's stages from stage.h and their state);
 *   - test HR@10 and NDCG@10 of every method as bars with 95% intervals (binomial standard
 *     error over the test users, rq_interval95), and the full metrics table;
 *   - seen against unseen users' HR@10 after evaluate --unseen;
 *   - training curves per stage by epoch, the chosen epoch marked (report_charts.c);
 *   - the tokenizer's codebook usage, distinct tuples, largest group (report_charts.c);
 *   - cost: wall time per stage, finetune targets/s, retrieval ms/user, the latency table;
 *   - each run's settings, folded away in <details>.
 * Every metric cell carries its exact value (data-value) and its key (data-dataset,
 * data-method, data-split, data-metric, data-k) so that tests can compare it with run_metrics. */
#ifndef TOKENREC_REPORT_HTML_H
#define TOKENREC_REPORT_HTML_H
#include <sqlite3.h>
#include <stdio.h>

/* Write the page of db (opened from dbpath) to path, through path.tmp renamed at the end.
 * A database without datasets is an error (nothing is written). 0 or -1 with tr_error. */
int report_html_write(sqlite3 *db, const char *dbpath, const char *path);

/* "report.html" in the directory of dbpath (malloc'd). */
char *report_html_beside(const char *dbpath);

/* The sections of report_charts.c, for report_html.c: training curves of the dataset's
 * current runs, and its current tokenize run's codebooks. */
void report_html_training(FILE *f, sqlite3 *db, const char *dataset);
void report_html_tokenizer(FILE *f, sqlite3 *db, const char *dataset);

#endif
