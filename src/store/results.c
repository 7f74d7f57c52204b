/* results.c: reads shared by the dashboard and the report (see results.h). */
#include "results.h"
#include "db.h"
#include "util.h"
#include <stdlib.h>

int results_series(sqlite3 *db, int64_t run, const char *name, double **steps, double **values) {
    *steps = *values = NULL;
    sqlite3_stmt *st = db_prep(db, "SELECT step, value FROM metrics_log WHERE run_id=? AND name=? "
                                   "AND value IS NOT NULL ORDER BY step");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            *steps = tr_realloc(*steps, (size_t)cap * sizeof **steps);
            *values = tr_realloc(*values, (size_t)cap * sizeof **values);
        }
        (*steps)[n] = (double)sqlite3_column_int64(st, 0);
        (*values)[n++] = sqlite3_column_double(st, 1);
    }
    sqlite3_finalize(st);
    return n;
}

int results_code_usage(sqlite3 *db, int64_t run, const char *entity, int book, int64_t **counts) {
    *counts = NULL;
    if (!run) return 0;
    int L = (int)db_query_i64(db, 0, "SELECT max(code)+1 FROM tokens WHERE run_id=%lld AND entity=%Q "
                                     "AND book=%d", (long long)run, entity, book);
    if (L <= 0 || L > 1 << 20) return 0;
    *counts = tr_calloc((size_t)L, sizeof **counts);
    sqlite3_stmt *st = db_prep(db, "SELECT code, count(*) FROM tokens WHERE run_id=? AND entity=? "
                                   "AND book=? GROUP BY code");
    if (!st) return L;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, book);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int c = sqlite3_column_int(st, 0);
        if (c >= 0 && c < L) (*counts)[c] = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return L;
}
