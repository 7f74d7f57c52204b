/* info.c: statistics of the ingested datasets and the state of each stage. */
#include "info.h"
#include "blaskernel.h"
#include "cli.h"
#include "db.h"
#include "stage.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Counts, density, sequence lengths and split sizes, from the interactions table. */
int info_dataset_stats(sqlite3 *db, const char *dataset, dataset_stats *s) {
    memset(s, 0, sizeof *s);
    int64_t id = db_dataset_sizes(db, dataset, &s->n_users, &s->n_items);
    if (id < 0) return -1;
    sqlite3_stmt *st = db_prep(db, "SELECT uid, count(*), sum(split=0), sum(split=1), sum(split=2) "
                                   "FROM interactions WHERE dataset_id=? GROUP BY uid");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    int *len = tr_malloc(((size_t)s->n_users + 1) * sizeof *len);
    int nu = 0;
    while (sqlite3_step(st) == SQLITE_ROW && nu < s->n_users + 1) {
        len[nu++] = sqlite3_column_int(st, 1);
        s->n += sqlite3_column_int64(st, 1);
        s->n_train += sqlite3_column_int64(st, 2);
        s->n_valid += sqlite3_column_int64(st, 3);
        s->n_test += sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    if (nu) {
        qsort(len, (size_t)nu, sizeof *len, cmp_int);
        s->len_min = len[0];
        s->len_max = len[nu - 1];
        s->len_median = nu % 2 ? len[nu / 2] : (len[nu / 2 - 1] + len[nu / 2]) / 2;
    }
    free(len);
    if (s->n_users && s->n_items) s->density = (double)s->n / ((double)s->n_users * s->n_items);
    return 0;
}

void info_print_stats(FILE *f, const char *dataset, const dataset_stats *s) {
    fprintf(f, "dataset %s\n", dataset);
    fprintf(f, "  users          %d\n  items          %d\n  interactions   %lld\n", s->n_users,
            s->n_items, s->n);
    fprintf(f, "  density        %.4f%%\n", 100 * s->density);
    fprintf(f, "  sequence length min %d / median %d / max %d (mean %.2f)\n", s->len_min,
            s->len_median, s->len_max, s->n_users ? (double)s->n / s->n_users : 0.0);
    fprintf(f, "  split          train %lld / valid %lld / test %lld\n", s->n_train, s->n_valid,
            s->n_test);
}

/* Every row of the stage table with its state and, when run, its latest run. */
static void print_stages(FILE *f, sqlite3 *db, const char *dataset) {
    fprintf(f, "  stages:\n");
    for (int i = 0; i < STAGE_COUNT; i++) {
        const char *name = stage_defs[i].name;
        int64_t run;
        stage_state s = stage_get_state(db, dataset, name, &run);
        char line[700] = "";
        stage_run_info ri;
        if (run && stage_run_get(db, run, &ri) == 0) {
            char d[32];
            double end = ri.ended_at > 0 ? ri.ended_at : ri.updated_at;
            snprintf(line, sizeof line, "run %lld, %3.0f%%, %s, %s", (long long)run, 100 * ri.progress,
                     tr_fmt_duration(end - ri.started_at, d, sizeof d), ri.error[0] ? ri.error : ri.message);
        }
        fprintf(f, "    %-12s %-8s %s\n", name, stage_state_name(s), line);
    }
}

static const char *usage_info = "tokenrec info [--db FILE] [--dataset NAME] [--blas]";
static const char *summary_info =
    "Print the OpenBLAS kernels this machine runs (and how they were chosen), then each\n"
    "dataset's statistics (users, items, interactions, density, sequence lengths, split sizes)\n"
    "and the state of every stage: not run, running, stopped, failed, done, stale.";

int cmd_info(int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *dataset = NULL;
    int blas_only = 0;
    cli_opt opts[] = {
        {"db", CLI_STR, &dbpath, "database file", 0},
        {"dataset", CLI_STR, &dataset, "only this dataset (default: all)", 0},
        {"blas", CLI_FLAG, &blas_only, "print only the OpenBLAS kernels line (no database)", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_info, summary_info);
    if (rc) return rc > 0 ? 0 : -1;
    printf("OpenBLAS kernels %s\n", bk_describe());
    if (blas_only) return 0;
    printf("\n");
    sqlite3 *db = db_open(dbpath, 1);
    if (!db) return -1;
    sqlite3_stmt *st = db_prep(db, "SELECT name FROM datasets ORDER BY name");
    int n = 0;
    rc = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (dataset && strcmp(dataset, name)) continue;
        dataset_stats s;
        if (info_dataset_stats(db, name, &s) != 0) { rc = -1; break; }
        if (n++) printf("\n");
        info_print_stats(stdout, name, &s);
        print_stages(stdout, db, name);
    }
    sqlite3_finalize(st);
    if (!rc && n == 0) {
        if (dataset) rc = tr_error("%s: dataset '%s' is not in the database", dbpath, dataset);
        else printf("%s holds no dataset yet; run 'tokenrec ingest --dataset lastfm'\n", dbpath);
    }
    db_close(db);
    return rc;
}
