/* testutil_db.c: the tests' helpers that need the database and the stages (see testutil.h):
 * fresh databases, the synthetic datasets, run_metrics lookups. */
#include "testutil.h"
#include "db.h"
#include "ingest.h"
#include "rng.h"
#include "stage.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

sqlite3 *tu_db(const char *name) {
    char *p = tu_path(name);
    unlink(p);
    sqlite3 *db = db_open(p, 0);
    if (!db) fprintf(stderr, "tu_db: %s\n", tr_errmsg());
    free(p);
    return db;
}

/* Draw one user's walk through its cluster. */
static int walk(rng_t *r, int32_t *seq, int n_items, int n_clusters, int len_min, int len_max,
                int u) {
    int csize = n_items / n_clusters;
    int c = u % n_clusters;
    int len = len_min + (int)rng_below(r, (uint32_t)(len_max - len_min + 1));
    if (len > csize) len = csize;
    int cur = (int)rng_below(r, (uint32_t)csize);
    char *used = calloc((size_t)csize, 1);
    int n = 0;
    while (n < len) {
        if (!used[cur]) { used[cur] = 1; seq[n++] = c * csize + cur; }
        cur = rng_uniform(r) < 0.1f ? (int)rng_below(r, (uint32_t)csize) : (cur + 1) % csize;
    }
    free(used);
    return n;
}

int tu_synthetic(sqlite3 *db, const char *name, int n_users, int n_items, int n_clusters,
                 int len_min, int len_max, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    ingest_raw raw;
    ingest_raw_init(&raw);
    raw.source = "synthetic";
    raw.format = "synthetic";
    int32_t *seq = malloc((size_t)len_max * sizeof *seq);
    char ub[32], ib[32];
    for (int u = 0; u < n_users; u++) {
        int n = walk(&r, seq, n_items, n_clusters, len_min, len_max, u);
        snprintf(ub, sizeof ub, "u%d", u);
        for (int k = 0; k < n; k++) {
            snprintf(ib, sizeof ib, "i%d", seq[k]);
            ingest_raw_add(&raw, ub, ib, raw.n);
        }
    }
    free(seq);
    ingest_data d;
    int rc = ingest_build(&raw, 1, 1, &d);
    stage_run run;
    char params[128];
    snprintf(params, sizeof params, "{\"synthetic\":%llu}", (unsigned long long)seed);
    if (!rc) {
        run.quiet = 1;
        rc = stage_begin(&run, db, "ingest", name, params, NULL, 1);
        run.quiet = 1;
        if (!rc) rc = stage_finish_begin(&run);
        if (!rc) rc = ingest_write(db, name, &raw, &d, 1);
        if (!rc) rc = stage_finish_commit(&run);
        if (rc) fprintf(stderr, "tu_synthetic: %s\n", tr_errmsg());
    }
    ingest_raw_free(&raw);
    ingest_data_free(&d);
    return rc;
}

int tu_synthetic_file(const char *path, int n_users, int n_items, int n_clusters, int len_min,
                      int len_max, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int32_t *seq = malloc((size_t)len_max * sizeof *seq);
    for (int u = 0; u < n_users; u++) {
        int n = walk(&r, seq, n_items, n_clusters, len_min, len_max, u);
        fprintf(f, "u%d", u);
        for (int k = 0; k < n; k++) fprintf(f, " i%d", seq[k]);
        fputc('\n', f);
    }
    free(seq);
    return fclose(f);
}

double tu_metric(sqlite3 *db, const char *method, const char *split, const char *metric, int k) {
    sqlite3_stmt *st = db_prep(db, "SELECT value FROM run_metrics WHERE method=? AND split=? AND metric=? "
                                   "AND k=? ORDER BY run_id DESC LIMIT 1");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, split, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, metric, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, k);
    double v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

int tu_kill_midway(const char *cmd, const char *dbpath, const char *stage, unsigned start_us, unsigned step_us,
                   unsigned max_us) {
    int mid = 0;
    for (unsigned delay = start_us; delay < max_us && mid < 2; delay += step_us) {
        tu_run_killed(cmd, delay);
        sqlite3 *db = db_open(dbpath, 1);
        if (!db) return mid;
        int64_t done = db_query_i64(db, 0, "SELECT count(*) FROM stage_runs WHERE stage=%Q AND status='done'", stage);
        int64_t ck = db_query_i64(db, 0, "SELECT count(*) FROM checkpoints");
        db_close(db);
        if (done) break;
        if (ck) mid++;
    }
    return mid;
}

void *tu_stored_blob(const char *dbpath, const char *table, const char *stage, int *n) {
    *n = -1;
    sqlite3 *db = db_open(dbpath, 1);
    if (!db) return NULL;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT params FROM %s WHERE run_id = (SELECT max(id) FROM stage_runs WHERE "
                              "stage='%s' AND status='done')", table, stage);
    sqlite3_stmt *st = db_prep(db, sql);
    void *p = NULL;
    if (st && sqlite3_step(st) == SQLITE_ROW) {
        *n = sqlite3_column_bytes(st, 0);
        p = malloc((size_t)*n + 1);
        memcpy(p, sqlite3_column_blob(st, 0), (size_t)*n);
    }
    sqlite3_finalize(st);
    db_close(db);
    return p;
}

const char *tu_params_missing(const char *dbpath, const char *stage, const char *const *want, int n) {
    sqlite3 *db = db_open(dbpath, 1);
    if (!db) return stage;
    sqlite3_stmt *st = db_prep(db, "SELECT params FROM stage_runs WHERE stage = ?1 ORDER BY id DESC LIMIT 1");
    const char *missing = stage;
    if (st) {
        sqlite3_bind_text(st, 1, stage, -1, SQLITE_STATIC);
        const char *p = sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (p) {
            missing = NULL;
            for (int i = 0; i < n && !missing; i++)
                if (!strstr(p, want[i])) missing = want[i];
            if (missing) fprintf(stderr, "%s: %s not in %s\n", stage, missing, p);
        }
    }
    sqlite3_finalize(st);
    db_close(db);
    return missing;
}

int tu_synthetic_upstream(const char *dbpath, const char *cf_args, const char *tok_args) {
    char *f = tu_path("synth.txt");
    int rc = tu_synthetic_file(f, 300, 120, 6, 10, 20, 7);
    const char *b = tu_bin();
    if (!rc) rc = tu_run("%s ingest --quiet --db %s --dataset synth --file %s --format sequence", b, dbpath, f);
    if (!rc) rc = tu_run("%s cf --db %s %s", b, dbpath, cf_args);
    if (!rc) rc = tu_run("%s tokenize --db %s %s", b, dbpath, tok_args);
    free(f);
    return rc;
}

