/* report_query.c: the report's reads (see report_query.h). */
#include "report_query.h"
#include "db.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const rq_metric_name[RQ_NM] = {"hr", "ndcg", "hr", "ndcg", "hr", "ndcg"};
const int rq_metric_k[RQ_NM] = {10, 10, 20, 20, 30, 30};

/* Column c as text, "" for NULL. */
static const char *col_text(sqlite3_stmt *st, int c) {
    const unsigned char *t = sqlite3_column_text(st, c);
    return t ? (const char *)t : "";
}

/* Column c as a double, NAN for NULL. */
static double col_num(sqlite3_stmt *st, int c) {
    return sqlite3_column_type(st, c) == SQLITE_NULL ? NAN : sqlite3_column_double(st, c);
}

/* sql prepared with ?1 bound to dataset (NULL: left NULL); NULL with tr_error. */
static sqlite3_stmt *prep_dataset(sqlite3 *db, const char *sql, const char *dataset) {
    sqlite3_stmt *st = db_prep(db, sql);
    if (st && dataset) sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
    return st;
}

/* Room for row n of an array of size-byte rows with capacity *cap (doubling from first):
 * the array, grown if needed, with row n zeroed. */
static void *grow_rows(void *rows, int n, int *cap, int first, size_t size) {
    if (n == *cap) rows = tr_realloc(rows, (size_t)(*cap = *cap ? 2 * *cap : first) * size);
    memset((char *)rows + (size_t)n * size, 0, size);
    return rows;
}

int rq_methods(sqlite3 *db, const char *dataset, rq_method **rows) {
    *rows = NULL;
    sqlite3_stmt *st = prep_dataset(db,
        "WITH latest AS (SELECT r.dataset, m.method, m.split, max(r.id) AS run FROM run_metrics m JOIN stage_runs r "
        "ON r.id = m.run_id WHERE r.status='done' AND m.split IN ('test', 'test_unseen') AND (?1 IS NULL OR r.dataset=?1) "
        "GROUP BY r.dataset, m.method, m.split) "
        "SELECT l.dataset, l.method, l.split, r.stage, l.run, max(0, r.ended_at - r.started_at), r.params, "
        "(SELECT value FROM run_metrics WHERE run_id=l.run AND method=l.method AND split=l.split AND metric='users') "
        "FROM latest l JOIN stage_runs r ON r.id = l.run ORDER BY l.dataset, l.method, l.split", dataset);
    if (!st) return -1;
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        *rows = grow_rows(*rows, n, &cap, 16, sizeof **rows);
        rq_method *r = &(*rows)[n++];
        snprintf(r->dataset, sizeof r->dataset, "%s", col_text(st, 0));
        snprintf(r->method, sizeof r->method, "%s", col_text(st, 1));
        snprintf(r->split, sizeof r->split, "%s", col_text(st, 2));
        snprintf(r->stage, sizeof r->stage, "%s", col_text(st, 3));
        r->run = sqlite3_column_int64(st, 4);
        r->seconds = col_num(st, 5);
        r->params = tr_strdup(col_text(st, 6));
        r->users = col_num(st, 7);
    }
    sqlite3_finalize(st);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < RQ_NM; j++)
            (*rows)[i].m[j] = rq_metric(db, (*rows)[i].run, (*rows)[i].method, (*rows)[i].split,
                                        rq_metric_name[j], rq_metric_k[j]);
    return n;
}

void rq_methods_free(rq_method *rows, int n) {
    for (int i = 0; i < n; i++) free(rows[i].params);
    free(rows);
}

int rq_latency_rows(sqlite3 *db, const char *dataset, rq_latency **rows) {
    *rows = NULL;
    sqlite3_stmt *st = prep_dataset(db,
        "WITH lat AS (SELECT r.dataset, max(r.id) AS run FROM stage_runs r JOIN run_metrics m ON m.run_id = r.id "
        "WHERE r.status='done' AND m.split='latency-b1' AND (?1 IS NULL OR r.dataset=?1) GROUP BY r.dataset) "
        "SELECT l.dataset, m.method, l.run, m.value, "
        "(SELECT value FROM run_metrics WHERE run_id=l.run AND method=m.method AND split='latency-best' AND metric='users_per_s'), "
        "(SELECT k FROM run_metrics WHERE run_id=l.run AND method=m.method AND split='latency-best' AND metric='users_per_s'), "
        "(SELECT value FROM run_metrics WHERE run_id=l.run AND method='generate' AND split='test' AND metric='beam'), "
        "(SELECT value FROM run_metrics WHERE run_id=l.run AND method='tokenrec' AND split='latency-best' AND metric='model_run') "
        "FROM lat l JOIN run_metrics m ON m.run_id = l.run AND m.split='latency-b1' AND m.metric='ms_per_user' "
        "ORDER BY l.dataset, m.method DESC", dataset);
    if (!st) return -1;
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        *rows = grow_rows(*rows, n, &cap, 4, sizeof **rows);
        rq_latency *r = &(*rows)[n++];
        snprintf(r->dataset, sizeof r->dataset, "%s", col_text(st, 0));
        snprintf(r->method, sizeof r->method, "%s", col_text(st, 1));
        r->run = sqlite3_column_int64(st, 2);
        r->ms_per_user = col_num(st, 3);
        r->users_per_s = col_num(st, 4);
        r->best_batch = sqlite3_column_int(st, 5);
        r->beam = sqlite3_column_int(st, 6);
        r->own_model = sqlite3_column_int64(st, 7) > 0;
    }
    sqlite3_finalize(st);
    return n;
}

/* (Wall times are clamped at 0: databases written before ended_at was stored at full
 * precision hold it rounded to the millisecond, so a very short run could end before it began.) */
int rq_runs(sqlite3 *db, const char *dataset, rq_run **rows) {
    *rows = NULL;
    sqlite3_stmt *st = prep_dataset(db,
        "WITH d AS (SELECT id, stage, coalesce(json_extract(params, '$.method'), '') AS method, "
        "max(0, ended_at - started_at) AS secs, params FROM stage_runs WHERE dataset=?1 AND status='done') "
        "SELECT id, stage, method, secs, params FROM d WHERE id = (SELECT max(id) FROM d d2 "
        "WHERE d2.stage = d.stage AND d2.method = d.method) ORDER BY id", dataset);
    if (!st) return -1;
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        *rows = grow_rows(*rows, n, &cap, 8, sizeof **rows);
        rq_run *r = &(*rows)[n++];
        r->id = sqlite3_column_int64(st, 0);
        snprintf(r->stage, sizeof r->stage, "%s", col_text(st, 1));
        snprintf(r->method, sizeof r->method, "%s", col_text(st, 2));
        r->seconds = col_num(st, 3);
        r->params = tr_strdup(col_text(st, 4));
    }
    sqlite3_finalize(st);
    return n;
}

void rq_runs_free(rq_run *rows, int n) {
    for (int i = 0; i < n; i++) free(rows[i].params);
    free(rows);
}

double rq_metric(sqlite3 *db, int64_t run, const char *method, const char *split, const char *metric, int k) {
    sqlite3_stmt *st = db_prep(db, "SELECT value FROM run_metrics WHERE run_id=? AND (?2 IS NULL OR method=?2) "
                                   "AND split=? AND metric=? AND k=? LIMIT 1");
    if (!st) return NAN;
    sqlite3_bind_int64(st, 1, run);
    if (method) sqlite3_bind_text(st, 2, method, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, split, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, metric, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, k);
    double v = sqlite3_step(st) == SQLITE_ROW ? col_num(st, 0) : NAN;
    sqlite3_finalize(st);
    return v;
}

void rq_interval95(double p, double n, double *lo, double *hi) {
    if (!(n > 0) || !isfinite(p)) { *lo = *hi = NAN; return; }
    double q = p < 0 ? 0 : p > 1 ? 1 : p, h = 1.96 * sqrt(q * (1 - q) / n);
    *lo = p - h < 0 ? 0 : p - h;
    *hi = p + h > 1 ? 1 : p + h;
}
