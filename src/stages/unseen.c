/* unseen.c: choosing the held-out users, dropping them from cf's data, folding them back
 * into trained vectors, and reading the choice back in later stages (see unseen.h). */
#include "unseen.h"
#include "db.h"
#include "rng.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define UNSEEN_STREAM 0x756e7365656eull     /* "unseen": the pick's own stream of the seed */

int unseen_pick(int32_t n_users, double frac, uint64_t seed, uint8_t *held) {
    memset(held, 0, (size_t)(n_users > 0 ? n_users : 0));
    if (n_users <= 0 || !(frac > 0)) return 0;
    int32_t n = (int32_t)(frac * n_users);
    if (n > n_users) n = n_users;
    rng_t root, r;
    rng_seed(&root, seed);
    rng_split(&root, &r, UNSEEN_STREAM);
    uint32_t *perm = tr_malloc((size_t)n_users * sizeof *perm);
    for (int32_t u = 0; u < n_users; u++) perm[u] = (uint32_t)u;
    rng_shuffle_u32(&r, perm, (size_t)n_users);
    for (int32_t k = 0; k < n; k++) held[perm[k]] = 1;
    free(perm);
    return n;
}

/* Rebuild through cf_data_from_triples from the kept users' pairs and targets. */
int unseen_cf_drop(const cf_data *full, const uint8_t *held, cf_data *out) {
    int64_t cap = full->n_train + 2 * (int64_t)full->n_users + 1, n = 0;
    int32_t *u = tr_malloc((size_t)cap * sizeof *u), *it = tr_malloc((size_t)cap * sizeof *it);
    int32_t *sp = tr_malloc((size_t)cap * sizeof *sp);
    for (int32_t v = 0; v < full->n_users; v++) {
        if (held[v]) continue;
        for (int64_t k = full->off[v]; k < full->off[v + 1]; k++) {
            u[n] = v; it[n] = full->item[k]; sp[n] = 0; n++;
        }
        if (full->valid[v] >= 0) { u[n] = v; it[n] = full->valid[v]; sp[n] = 1; n++; }
        if (full->test[v] >= 0) { u[n] = v; it[n] = full->test[v]; sp[n] = 2; n++; }
    }
    int rc = cf_data_from_triples(out, full->n_users, full->n_items, n, u, it, sp);
    free(u); free(it); free(sp);
    return rc;
}

void unseen_fold_in(const cf_data *full, const cf_data *train, const uint8_t *held, float *table,
                    int C) {
    int32_t U = full->n_users, I = full->n_items;
    int64_t *deg = tr_calloc((size_t)I + 1, sizeof *deg);
    for (int64_t k = 0; k < train->n_train; k++) deg[train->item[k]]++;
    /* the scale: mean norm of the trained users' rows */
    double s = 0;
    int64_t ns = 0;
    for (int32_t u = 0; u < U; u++) {
        if (held[u] || train->off[u + 1] == train->off[u]) continue;
        const float *r = table + (size_t)u * C;
        double q = 0;
        for (int c = 0; c < C; c++) q += (double)r[c] * r[c];
        s += sqrt(q);
        ns++;
    }
    s = ns ? s / ns : 1.0;
    double *v = tr_malloc((size_t)C * sizeof *v);
    for (int32_t u = 0; u < U; u++) {
        if (!held[u]) continue;
        float *row = table + (size_t)u * C;
        int64_t du = full->off[u + 1] - full->off[u];
        memset(v, 0, (size_t)C * sizeof *v);
        for (int64_t k = full->off[u]; k < full->off[u + 1]; k++) {
            int32_t i = full->item[k];
            if (!deg[i]) continue;
            double w = 1.0 / sqrt((double)du * (double)deg[i]);
            const float *x = table + ((size_t)U + i) * C;
            for (int c = 0; c < C; c++) v[c] += w * x[c];
        }
        double q = 0;
        for (int c = 0; c < C; c++) q += v[c] * v[c];
        double f = q > 0 ? s / sqrt(q) : 0;
        for (int c = 0; c < C; c++) row[c] = (float)(f * v[c]);
    }
    free(v);
    free(deg);
}

int unseen_cf_load(sqlite3 *db, int64_t cf_run, uint8_t *held, int32_t n_users) {
    memset(held, 0, (size_t)(n_users > 0 ? n_users : 0));
    sqlite3_stmt *st = db_prep(db, "SELECT uid FROM cf_holdout WHERE run_id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, cf_run);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int u = sqlite3_column_int(st, 0);
        if (u >= 0 && u < n_users && !held[u]) { held[u] = 1; n++; }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return tr_error("cf_holdout of run %lld: %s", (long long)cf_run, sqlite3_errmsg(db));
    return n;
}

int unseen_tok_load(sqlite3 *db, int64_t tok_run, uint8_t *unseen, int32_t n_users) {
    for (int32_t u = 0; u < n_users; u++) unseen[u] = 1;
    sqlite3_stmt *st = db_prep(db, "SELECT DISTINCT idx FROM tokens WHERE run_id=? AND entity='user' AND "
                                   "idx NOT IN (SELECT idx FROM tokens_unseen WHERE run_id=? AND entity='user')");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, tok_run);
    sqlite3_bind_int64(st, 2, tok_run);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int u = sqlite3_column_int(st, 0);
        if (u >= 0 && u < n_users) unseen[u] = 0;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return tr_error("tokens of run %lld: %s", (long long)tok_run, sqlite3_errmsg(db));
    int n = 0;
    for (int32_t u = 0; u < n_users; u++) n += unseen[u];
    return n;
}

int unseen_tok_frozen(sqlite3 *db, int64_t tok_run, uint8_t *frozen, int32_t n_users) {
    memset(frozen, 0, (size_t)n_users);
    sqlite3_stmt *st = db_prep(db, "SELECT DISTINCT u.idx FROM tokens_unseen u WHERE u.run_id=? AND u.entity='user' "
                                   "AND EXISTS (SELECT 1 FROM tokens t WHERE t.run_id=u.run_id AND t.entity='user' AND t.idx=u.idx)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, tok_run);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int u = sqlite3_column_int(st, 0);
        if (u >= 0 && u < n_users && !frozen[u]) { frozen[u] = 1; n++; }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return tr_error("tokens_unseen of run %lld: %s", (long long)tok_run, sqlite3_errmsg(db));
    return n;
}
