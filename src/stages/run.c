/* run.c: the whole pipeline in one command, with a quick and a full preset. */
#include "run.h"
#include "cf.h"
#include "cli.h"
#include "db.h"
#include "evaluate.h"
#include "finetune.h"
#include "ingest.h"
#include "report.h"
#include "report_html.h"
#include "sasrec_stage.h"
#include "stage.h"
#include "tokenize.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*stage_fn)(int, char **);

/* The options each preset gives each stage (besides --db, --dataset and --seed). "full" is
 * every stage's own defaults, the setting that reaches the accuracy targets; "quick" is the
 * README's first command: the whole pipeline on LastFM in well under 15 minutes on 2 cores.
 * quick_cf and quick_ft only where the stage's own epoch cap is longer (cf: LastFM's 1,000;
 * finetune: all but Clothing's 30). */
static const char *const quick_cf[] = {"--epochs", "150", "--eval-every", "10", NULL};
static const char *const quick_tok[] = {"--epochs", "20", NULL};
static const char *const quick_ft[] = {"--epochs", "40", NULL};   /* the causal LLM, --eval-every 5 */
static const char *const quick_sas[] = {"--epochs", "30", NULL};
static const char *const none[] = {NULL};

/* Build argv for one stage and call it. */
static int call(stage_fn fn, const char *name, const char *db, const char *dataset, const char *seed,
                const char *const *extra, const char *more, int quiet) {
    char *argv[40];
    int argc = 0;
    argv[argc++] = (char *)name;
    argv[argc++] = "--db"; argv[argc++] = (char *)db;
    argv[argc++] = "--dataset"; argv[argc++] = (char *)dataset;
    if (seed) { argv[argc++] = "--seed"; argv[argc++] = (char *)seed; }
    for (int i = 0; extra[i] && argc < 36; i++) argv[argc++] = (char *)extra[i];
    if (more && argc < 36) argv[argc++] = (char *)more;
    if (quiet) argv[argc++] = "--quiet";
    argv[argc] = NULL;
    fprintf(stderr, "== tokenrec %s --dataset %s\n", name, dataset);
    int rc = fn(argc, argv);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tr_errmsg());
        tr_error("%s: %s", name, msg);
    }
    return rc;
}

static const char *usage_run = "tokenrec run --dataset NAME [--preset quick|full] [options]";
static const char *summary_run =
    "Run every stage in order: ingest, cf, tokenize, finetune, sasrec (the SASRec baseline),\n"
    "evaluate. A stage that is done and not stale is skipped; an interrupted one resumes from its\n"
    "checkpoint. Ends with the metrics table of the dataset. --preset quick (the default) runs LastFM end to end in minutes;\n"
    "--preset full uses every stage's defaults, the setting that reaches the accuracy targets.";

int cmd_run(int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *dataset = NULL, *preset = "quick", *data_dir = NULL;
    int quiet = 0, unseen = 0, seed_n = CLI_SEED_DEFAULT;
    cli_opt opts[] = {
        {"db", CLI_STR, &dbpath, "database file", 0},
        {"dataset", CLI_STR, &dataset, "lastfm, ml-1m, beauty, clothing (or one already ingested)", 0},
        {"preset", CLI_STR, &preset, "quick or full", 0},
        {"data-dir", CLI_STR, &data_dir, "where the datasets are (default ../shared/datasets)", 0},
        {"seed", CLI_INT, &seed_n, "seed of every stage (each draws from its own stream of it)", 0},
        {"quiet", CLI_FLAG, &quiet, "only the final table", 0},
        {"unseen", CLI_FLAG, &unseen, "the unseen-user test: cf holds out 10% of users (--holdout-users 0.1), "
         "evaluate --unseen reports them beside the seen users", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_run, summary_run);
    if (rc) return rc > 0 ? 0 : -1;
    if (!dataset) return tr_error("run: --dataset is required (lastfm, ml-1m, beauty, clothing)");
    int quick = !strcmp(preset, "quick");
    if (!quick && strcmp(preset, "full")) return tr_error("--preset: expected quick or full, got '%s'", preset);
    double t0 = tr_monotonic();
    char seed[16];                  /* passed to every training stage (evaluate draws nothing) */
    snprintf(seed, sizeof seed, "%d", seed_n);

    /* ingest only when the dataset is not in the database yet */
    sqlite3 *db = db_open(dbpath, 0);
    if (!db) return -1;
    int have = db_query_i64(db, 0, "SELECT count(*) FROM datasets WHERE name=%Q", dataset) > 0;
    db_close(db);
    if (!have) {
        const char *ing[] = {"--data-dir", data_dir, NULL};
        if ((rc = call(cmd_ingest, stage_defs[STAGE_INGEST].name, dbpath, dataset, NULL, data_dir ? ing : none,
                       NULL, quiet)) != 0) return rc;
    }
    /* the main line of the stage table, then the SASRec baseline; finetune-gen is run by name */
    struct { stage_fn fn; int stage; const char *const *q; } steps[] = {
        {cmd_cf, STAGE_CF, quick_cf}, {cmd_tokenize, STAGE_TOKENIZE, quick_tok},
        {cmd_finetune, STAGE_FINETUNE, quick_ft}, {cmd_sasrec, STAGE_SASREC, quick_sas},
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        const char *const *q = quick ? steps[i].q : none;
        if (steps[i].fn == cmd_cf && cf_default_epochs(dataset) <= 150) q = none;   /* full is short already */
        if (steps[i].fn == cmd_finetune && finetune_causal_epochs(dataset) <= 40) q = none;  /* (Clothing's 30) */
        const char *with[16];
        if (unseen && steps[i].fn == cmd_cf) {      /* the preset's cf options + the holdout */
            size_t n = 0;
            for (; q[n] && n < 12; n++) with[n] = q[n];
            with[n++] = "--holdout-users";
            with[n++] = "0.1";
            with[n] = NULL;
            q = with;
        }
        rc = call(steps[i].fn, stage_defs[steps[i].stage].name, dbpath, dataset, seed, q, NULL, quiet);
        if (rc != 0) return rc;            /* -1 error, 130 stopped by Ctrl-C */
        if (stage_should_stop()) return 130;
    }
    const char *ev[] = {"--method", "all", NULL};
    if ((rc = call(cmd_evaluate, stage_defs[STAGE_EVALUATE].name, dbpath, dataset, NULL, ev, unseen ? "--unseen" : NULL, quiet)) != 0) return rc;
    char b[32];
    fprintf(stderr, "== pipeline on %s finished in %s\n\n", dataset, tr_fmt_duration(tr_monotonic() - t0, b, sizeof b));
    char *rargv[] = {"report", "--db", (char *)dbpath, NULL};
    if ((rc = cmd_report(3, rargv)) != 0) return rc;
    /* the page with the charts, beside the database */
    char *html = report_html_beside(dbpath);
    char *hargv[] = {"report", "--db", (char *)dbpath, "--html", html, NULL};
    rc = cmd_report(5, hargv);
    free(html);
    return rc;
}
