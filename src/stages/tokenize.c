/* tokenize.c: the tokenize stage (see tokenize.h): load the cf vectors, train the user and
 * item MQ-Tokenizers (mq.c) with checkpoints, write tokens, tokenizers and statistics; and
 * tokenize unseen entities through a frozen tokenizer. */
#include "tokenize.h"
#include "cli.h"
#include "db.h"
#include "nn.h"
#include "rng.h"
#include "stage.h"
#include "unseen.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const entity_names[2] = {"user", "item"};

typedef struct {
    const char *dbpath, *dataset, *source, *quantizer;
    int K, L, d_c, h1, h2, epochs, batch, kmeans_per_code, kmeans_iters, reseed_every;
    double rho, p1, p2, beta, lr, wd, holdout, holdout_users;
    int disambiguate, seed, threads, force, quiet, ckpt_every, stop_after;
    int new_users, new_items, propagate;
} tok_opts;

/* One entity type's data and trainer. */
typedef struct {
    const char *name;
    int      n, dim;            /* vectors loaded */
    int32_t *ids;               /* (n) uid / iid of each row */
    float   *X;                 /* (n, dim) */
    int32_t *train, *hold;      /* row lists */
    int      ntr, nho, nexcl;
    uint8_t *excluded;          /* (n) 1: left out of training (--holdout-users, cf holdout) */
    int      frozen;            /* 1: the excluded rows are tokenized by the frozen tokenizer
                                   in the run itself (cf --holdout-users) */
    mq_trainer t;
    double   seconds;           /* training time, summed over resumes */
} tok_entity;

/* ---- loading ---- */

/* The vectors of one entity and kind of a cf run, ordered by idx. */
static int load_vectors(sqlite3 *db, int64_t cf_run, const char *entity, const char *kind,
                        tok_entity *e) {
    int n = (int)db_query_i64(db, 0, "SELECT count(*) FROM cf_vectors WHERE run_id=%lld AND "
                              "entity=%Q AND kind=%Q", (long long)cf_run, entity, kind);
    if (n <= 0)
        return tr_error("cf run %lld has no '%s' vectors for %ss; run 'tokenrec cf' again or "
                        "use --source ego", (long long)cf_run, kind, entity);
    sqlite3_stmt *st = db_prep(db, "SELECT idx, vec FROM cf_vectors WHERE run_id=? AND entity=? "
                                   "AND kind=? ORDER BY idx");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, cf_run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    e->n = 0;
    e->ids = tr_malloc((size_t)n * sizeof(int32_t));
    int rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW && e->n < n) {
        int bytes = sqlite3_column_bytes(st, 1);
        if (e->n == 0) {
            e->dim = bytes / (int)sizeof(float);
            if (e->dim < 1) { rc = tr_error("cf_vectors of run %lld: empty vector", (long long)cf_run); break; }
            e->X = tr_malloc((size_t)n * e->dim * sizeof(float));
        }
        e->ids[e->n] = sqlite3_column_int(st, 0);
        if (db_column_floats(st, 1, e->X + (size_t)e->n * e->dim, e->dim) != 0) { rc = -1; break; }
        e->n++;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Seeded choice of excluded rows (a fraction frac of them, or the rows marked in pre when
 * pre is not NULL), then the holdout split of the rest: both from their own streams of the
 * seed, so they do not depend on anything else. */
static void split_rows(tok_entity *e, double frac_excl, const uint8_t *pre, double holdout,
                       uint64_t seed, int which) {
    rng_t root, r;
    e->excluded = tr_calloc((size_t)e->n, 1);
    uint32_t *perm = tr_malloc((size_t)e->n * sizeof(uint32_t));
    e->nexcl = 0;
    if (pre) {
        for (int i = 0; i < e->n; i++) if (pre[i]) { e->excluded[i] = 1; e->nexcl++; }
    } else if (frac_excl > 0) {
        rng_seed(&root, seed);
        rng_split(&root, &r, 100 + (uint64_t)which);
        for (int i = 0; i < e->n; i++) perm[i] = (uint32_t)i;
        rng_shuffle_u32(&r, perm, (size_t)e->n);
        e->nexcl = (int)(frac_excl * e->n);
        for (int i = 0; i < e->nexcl; i++) e->excluded[perm[i]] = 1;
    }
    int m = 0;
    for (int i = 0; i < e->n; i++) if (!e->excluded[i]) perm[m++] = (uint32_t)i;
    rng_seed(&root, seed);
    rng_split(&root, &r, 200 + (uint64_t)which);
    rng_shuffle_u32(&r, perm, (size_t)m);
    e->nho = (int)(holdout * m);
    if (m - e->nho < 2) e->nho = 0;
    e->ntr = m - e->nho;
    e->hold = tr_malloc((size_t)(e->nho + 1) * sizeof(int32_t));
    e->train = tr_malloc((size_t)(e->ntr + 1) * sizeof(int32_t));
    for (int i = 0; i < e->nho; i++) e->hold[i] = (int32_t)perm[i];
    for (int i = 0; i < e->ntr; i++) e->train[i] = (int32_t)perm[e->nho + i];
    free(perm);
}

static void entity_free(tok_entity *e) {
    free(e->ids); free(e->X); free(e->train); free(e->hold); free(e->excluded);
    if (e->t.model.params) mq_trainer_free(&e->t);
    memset(e, 0, sizeof *e);
}

/* Mean over dimensions of the variance of the rows (the scale a reconstruction MSE is
 * compared with: predicting the mean scores exactly this). */
static double input_variance(const float *X, int n, int d) {
    if (n < 2) return 0;
    double tot = 0;
    for (int j = 0; j < d; j++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < n; i++) s += X[(size_t)i * d + j];
        double mu = s / n;
        for (int i = 0; i < n; i++) {
            double e = X[(size_t)i * d + j] - mu;
            s2 += e * e;
        }
        tot += s2 / n;
    }
    return tot / d;
}

/* ---- the model blobs ---- */

static int store_tokenizer(sqlite3 *db, int64_t run, const char *entity, const char *source,
                           const mq_model *m, int best_epoch, int epochs) {
    sqlite3_stmt *st = db_prep(db,
        "INSERT INTO tokenizers (run_id, entity, source, d_in, h1, h2, d_c, K, L, rho, dropout1, "
        "dropout2, beta, bn_eps, best_epoch, epochs, weights, codebooks, bn_stats, quantizer) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!st) return -1;
    const mq_cfg *c = &m->cfg;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, source, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, c->d_in);
    sqlite3_bind_int(st, 5, c->h1);
    sqlite3_bind_int(st, 6, c->h2);
    sqlite3_bind_int(st, 7, c->d_c);
    sqlite3_bind_int(st, 8, c->K);
    sqlite3_bind_int(st, 9, c->L);
    sqlite3_bind_double(st, 10, c->rho);
    sqlite3_bind_double(st, 11, c->p1);
    sqlite3_bind_double(st, 12, c->p2);
    sqlite3_bind_double(st, 13, c->beta);
    sqlite3_bind_double(st, 14, c->bn_eps);
    sqlite3_bind_int(st, 15, best_epoch);
    sqlite3_bind_int(st, 16, epochs);
    db_bind_floats(st, 17, m->params, (int)m->off_cb);
    db_bind_floats(st, 18, m->params + m->off_cb, (int)(m->n_params - m->off_cb));
    db_bind_floats(st, 19, m->bn, (int)m->n_bn);
    sqlite3_bind_text(st, 20, c->residual ? "residual" : "parallel", -1, SQLITE_STATIC);
    int rc = db_step_done(db, st);
    sqlite3_finalize(st);
    return rc;
}

int tokenize_load_model(sqlite3 *db, int64_t tok_run, const char *entity, mq_model *m,
                        char source[8]) {
    memset(m, 0, sizeof *m);
    sqlite3_stmt *st = db_prep(db, "SELECT source, d_in, h1, h2, d_c, K, L, rho, dropout1, dropout2, "
                                   "beta, bn_eps, weights, codebooks, bn_stats, quantizer FROM tokenizers "
                                   "WHERE run_id=? AND entity=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, tok_run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    int rc = -1;
    if (sqlite3_step(st) != SQLITE_ROW) {
        tr_error("tokenize run %lld has no %s tokenizer (expected a done tokenize run)",
                 (long long)tok_run, entity);
        goto out;
    }
    mq_cfg c = mq_default_cfg();
    if (source) snprintf(source, 8, "%s", (const char *)sqlite3_column_text(st, 0));
    c.d_in = sqlite3_column_int(st, 1);
    c.h1 = sqlite3_column_int(st, 2);
    c.h2 = sqlite3_column_int(st, 3);
    c.d_c = sqlite3_column_int(st, 4);
    c.K = sqlite3_column_int(st, 5);
    c.L = sqlite3_column_int(st, 6);
    c.rho = (float)sqlite3_column_double(st, 7);
    c.p1 = (float)sqlite3_column_double(st, 8);
    c.p2 = (float)sqlite3_column_double(st, 9);
    c.beta = (float)sqlite3_column_double(st, 10);
    c.bn_eps = (float)sqlite3_column_double(st, 11);
    const char *qz = (const char *)sqlite3_column_text(st, 15);
    c.residual = qz && !strcmp(qz, "residual");
    if (mq_model_init(m, &c, NULL) != 0) goto out;
    if (db_column_floats(st, 12, m->params, (int)m->off_cb) != 0 ||
        db_column_floats(st, 13, m->params + m->off_cb, (int)(m->n_params - m->off_cb)) != 0 ||
        db_column_floats(st, 14, m->bn, (int)m->n_bn) != 0) {
        mq_model_free(m);
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

int tokenize_frozen(sqlite3 *db, int64_t tok_run, const char *entity, const float *vecs, int n,
                    int32_t *codes) {
    mq_model m;
    if (tokenize_load_model(db, tok_run, entity, &m, NULL) != 0) return -1;
    mq_ws ws;
    mq_ws_init(&ws, &m, n < 512 ? (n > 0 ? n : 1) : 512);
    mq_encode(&m, &ws, vecs, NULL, n, codes, NULL);
    mq_ws_free(&ws);
    mq_model_free(&m);
    return 0;
}

/* ---- statistics ---- */

static int store_stats(sqlite3 *db, int64_t run, const tok_entity *e, const mq_token_stats *s,
                       int K, double holdout_mse, double var, int disamb) {
    sqlite3_stmt *st = db_prep(db,
        "INSERT INTO tokenize_stats (run_id, entity, n, n_train, n_holdout, n_excluded, "
        "holdout_mse, input_var, distinct_tuples, largest_group, collisions, disambiguated, "
        "seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, e->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, s->n);
    sqlite3_bind_int(st, 4, e->ntr);
    sqlite3_bind_int(st, 5, e->nho);
    sqlite3_bind_int(st, 6, e->nexcl);
    sqlite3_bind_double(st, 7, holdout_mse);
    sqlite3_bind_double(st, 8, var);
    sqlite3_bind_int(st, 9, s->distinct);
    sqlite3_bind_int(st, 10, s->largest_group);
    sqlite3_bind_int(st, 11, s->collisions);
    sqlite3_bind_int(st, 12, disamb);
    sqlite3_bind_double(st, 13, e->seconds);
    int rc = db_step_done(db, st);
    sqlite3_finalize(st);
    if (rc) return -1;
    st = db_prep(db, "INSERT INTO tokenize_book_stats (run_id, entity, book, used, perplexity) "
                     "VALUES (?,?,?,?,?)");
    if (!st) return -1;
    for (int k = 0; k < K && !rc; k++) {
        sqlite3_bind_int64(st, 1, run);
        sqlite3_bind_text(st, 2, e->name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, k);
        sqlite3_bind_int(st, 4, s->used[k]);
        sqlite3_bind_double(st, 5, s->perplexity[k]);
        rc = db_step_done(db, st);
    }
    sqlite3_finalize(st);
    return rc;
}

int tokenize_read_stats(sqlite3 *db, int64_t run, tokenize_summary *out, int max) {
    sqlite3_stmt *st = db_prep(db,
        "SELECT s.entity, s.n, s.n_train, s.n_holdout, s.n_excluded, s.holdout_mse, s.input_var, "
        "s.distinct_tuples, s.largest_group, s.collisions, s.disambiguated, s.seconds, t.source, "
        "t.K, t.L, t.d_c, t.best_epoch, t.epochs, t.quantizer FROM tokenize_stats s JOIN tokenizers t "
        "ON t.run_id = s.run_id AND t.entity = s.entity WHERE s.run_id=? ORDER BY s.entity DESC");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run);
    int n = 0;
    while (n < max && sqlite3_step(st) == SQLITE_ROW) {
        tokenize_summary *t = &out[n++];
        memset(t, 0, sizeof *t);
        snprintf(t->entity, sizeof t->entity, "%s", (const char *)sqlite3_column_text(st, 0));
        t->n = sqlite3_column_int(st, 1);
        t->n_train = sqlite3_column_int(st, 2);
        t->n_holdout = sqlite3_column_int(st, 3);
        t->n_excluded = sqlite3_column_int(st, 4);
        t->holdout_mse = sqlite3_column_double(st, 5);
        t->input_var = sqlite3_column_double(st, 6);
        t->distinct = sqlite3_column_int(st, 7);
        t->largest = sqlite3_column_int(st, 8);
        t->collisions = sqlite3_column_int(st, 9);
        t->disambiguated = sqlite3_column_int(st, 10);
        t->seconds = sqlite3_column_double(st, 11);
        snprintf(t->source, sizeof t->source, "%s", (const char *)sqlite3_column_text(st, 12));
        t->K = sqlite3_column_int(st, 13);
        t->L = sqlite3_column_int(st, 14);
        t->d_c = sqlite3_column_int(st, 15);
        t->best_epoch = sqlite3_column_int(st, 16);
        t->epochs = sqlite3_column_int(st, 17);
        snprintf(t->quantizer, sizeof t->quantizer, "%s", (const char *)sqlite3_column_text(st, 18));
    }
    sqlite3_finalize(st);
    return n;
}

int tokenize_print_stats(sqlite3 *db, int64_t run, FILE *f) {
    tokenize_summary ts[2];
    int rows = tokenize_read_stats(db, run, ts, 2);
    if (rows < 0) return -1;
    for (int r = 0; r < rows; r++) {
        const tokenize_summary *t = &ts[r];
        if (!r)
            fprintf(f, "tokenize run %lld (%s, source %s, K %d, L %d, d_c %d)\n",
                    (long long)run,
                    strcmp(t->quantizer, "residual")
                        ? "CLEAN MQ-Tokenizer, K parallel encoders"
                        : "MQ-Tokenizer, one encoder and residual codebooks",
                    t->source, t->K, t->L, t->d_c);
        fprintf(f, "  %-4s  %d tokenized (%d train, %d holdout, %d left out), best epoch %d/%d, "
                   "%.1fs\n", t->entity, t->n, t->n_train, t->n_holdout, t->n_excluded, t->best_epoch,
                t->epochs, t->seconds);
        fprintf(f, "        holdout reconstruction MSE %.6g (%.3f of the input variance %.4g)\n",
                t->holdout_mse, t->input_var > 0 ? t->holdout_mse / t->input_var : 0.0, t->input_var);
        fprintf(f, "        distinct %d-tuples %d, largest group %d, collisions %d%s\n", t->K,
                t->distinct, t->largest, t->collisions,
                t->disambiguated ? " (disambiguated: extra token in book K)" : "");
        sqlite3_stmt *b = db_prep(db, "SELECT book, used, perplexity FROM tokenize_book_stats "
                                      "WHERE run_id=? AND entity=? ORDER BY book");
        if (b) {
            sqlite3_bind_int64(b, 1, run);
            sqlite3_bind_text(b, 2, t->entity, -1, SQLITE_TRANSIENT);
            fprintf(f, "        codebook usage / perplexity:");
            while (sqlite3_step(b) == SQLITE_ROW)
                fprintf(f, "  [%d] %d/%d %.1f", sqlite3_column_int(b, 0), sqlite3_column_int(b, 1),
                        t->L, sqlite3_column_double(b, 2));
            fprintf(f, "\n");
            sqlite3_finalize(b);
        }
    }
    int nu = (int)db_query_i64(db, 0, "SELECT count(*) FROM tokens_unseen WHERE run_id=%lld",
                               (long long)run);
    if (nu) fprintf(f, "  %d entities tokenized through the frozen tokenizers (tokens_unseen: users held out by cf, or added by --new-*)\n", nu);
    if (!rows) return tr_error("tokenize run %lld has no statistics", (long long)run);
    return 0;
}

/* ---- token rows ---- */

static int store_tokens(sqlite3 *db, int64_t run, const char *entity, const int32_t *ids,
                        const int32_t *codes, const int32_t *extra, int n, int K) {
    sqlite3_stmt *st = db_prep(db, "INSERT INTO tokens (run_id, entity, idx, book, code) VALUES (?,?,?,?,?)");
    if (!st) return -1;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        for (int k = 0; k <= K && !rc; k++) {
            if (k == K && !extra) break;
            sqlite3_bind_int64(st, 1, run);
            sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 3, ids[i]);
            sqlite3_bind_int(st, 4, k);
            sqlite3_bind_int(st, 5, k < K ? codes[(size_t)i * K + k] : extra[i]);
            rc = db_step_done(db, st);
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- training ---- */

/* Checkpoint the trainer of ents[which]. A finished tokenizer's last checkpoint stays in
 * the table (rows are replaced by name), so only the one in training is written. */
static int save_ckpt(stage_run *run, tok_entity *ents, int which) {
    tok_entity *e = &ents[which];
    void *blob;
    size_t n;
    mq_trainer_save(&e->t, &blob, &n);
    char seconds[32];
    snprintf(seconds, sizeof seconds, "%s_seconds", e->name);
    const stage_blob b[] = {{e->name, blob, n}, {seconds, &e->seconds, sizeof e->seconds}};
    int rc = stage_ckpt_save(run, e->t.epoch, b, 2);
    free(blob);
    return rc;
}

/* Train one entity's tokenizer to o->epochs, from its checkpoint if there is one.
 * Returns 0, 130 when stopped (after a checkpoint), or -1. */
static int train_entity(stage_run *run, const tok_opts *o, tok_entity *ents, int which,
                        const mq_cfg *cfg, const mq_train_cfg *tc, double w0, double w1,
                        int *epochs_this_process) {
    tok_entity *e = &ents[which];
    rng_t root, r;
    rng_seed(&root, rng_stream((uint64_t)o->seed, "tokenize"));
    rng_split(&root, &r, 1 + (uint64_t)which);
    if (mq_trainer_init(&e->t, cfg, rng_u64(&r)) != 0) return -1;
    if (run->resumed) {
        void *blob;
        size_t n;
        int g = stage_ckpt_get(run, e->name, &blob, &n, NULL);
        if (g < 0) return -1;
        if (g == 0) {
            int rc = mq_trainer_load(&e->t, blob, n);
            free(blob);
            if (rc) return -1;
            char name[32];
            snprintf(name, sizeof name, "%s_seconds", e->name);
            if (stage_ckpt_read(run, name, &e->seconds, sizeof e->seconds) != 0) tr_error_clear();
        }
    }
    if (e->t.epoch >= tc->epochs) return 0;
    mq_ws ws;
    mq_ws_init(&ws, &e->t.model, tc->batch);
    int rc = 0;
    char m[64];
    while (e->t.epoch < tc->epochs) {
        double t0 = tr_monotonic();
        mq_epoch_stats s;
        if (mq_train_epoch(&e->t, &ws, tc, e->X, e->train, e->ntr, e->hold, e->nho, &s) != 0) {
            rc = -1;
            break;
        }
        e->seconds += tr_monotonic() - t0;
        int ep = e->t.epoch;
        (*epochs_this_process)++;
        snprintf(m, sizeof m, "%s/loss", e->name); stage_metric(run, ep, m, s.loss);
        snprintf(m, sizeof m, "%s/recon", e->name); stage_metric(run, ep, m, s.recon);
        snprintf(m, sizeof m, "%s/codebook", e->name); stage_metric(run, ep, m, s.cb);
        snprintf(m, sizeof m, "%s/commit", e->name); stage_metric(run, ep, m, s.cm);
        snprintf(m, sizeof m, "%s/holdout_recon", e->name); stage_metric(run, ep, m, s.holdout_mse);
        snprintf(m, sizeof m, "%s/reseeded", e->name); stage_metric(run, ep, m, s.reseeded);
        for (int k = 0; k < cfg->K; k++) {
            snprintf(m, sizeof m, "%s/usage%d", e->name, k);
            stage_metric(run, ep, m, s.used[k]);
        }
        stage_progress(run, w0 + (w1 - w0) * ep / tc->epochs,
                       "%s epoch %d/%d loss %.4g recon %.4g holdout %.4g%s used %d/%d", e->name,
                       ep, tc->epochs, s.loss, s.recon, s.holdout_mse, s.improved ? "*" : "",
                       s.used[0], cfg->L);
        if (o->ckpt_every > 0 && ep % o->ckpt_every == 0) {
            /* inference-time tokens of every entity so far: the curve of distinct tuples */
            int32_t *codes = tr_malloc((size_t)e->n * cfg->K * sizeof(int32_t));
            mq_encode(&e->t.model, &ws, e->X, NULL, e->n, codes, NULL);
            mq_token_stats ts;
            mq_token_stats_compute(codes, e->n, cfg->K, cfg->L, &ts);
            free(codes);
            snprintf(m, sizeof m, "%s/distinct", e->name); stage_metric(run, ep, m, ts.distinct);
            for (int k = 0; k < cfg->K; k++) {
                snprintf(m, sizeof m, "%s/eval_usage%d", e->name, k);
                stage_metric(run, ep, m, ts.used[k]);
            }
            if (!o->quiet && !isatty(2))
                fprintf(stderr, "[tokenize] %s epoch %d: holdout recon %.4g, distinct %d/%d, "
                        "used %d %d %d, %.2fs/epoch\n", e->name, ep, s.holdout_mse, ts.distinct,
                        e->n, ts.used[0], cfg->K > 1 ? ts.used[1] : 0, cfg->K > 2 ? ts.used[2] : 0,
                        e->seconds / ep);
        }
        int stop = stage_should_stop() || (o->stop_after > 0 && *epochs_this_process >= o->stop_after);
        if (stop || ep == tc->epochs || (o->ckpt_every > 0 && ep % o->ckpt_every == 0)) {
            if (save_ckpt(run, ents, which) != 0) { rc = -1; break; }
        }
        if (stop) { rc = 130; break; }
    }
    mq_ws_free(&ws);
    return rc;
}

/* ---- unseen entities ---- */

int tokenize_propagate(sqlite3 *db, const char *dataset, int64_t cf_run, const char *entity,
                       const int32_t *ids, int n, int dim, float *out) {
    int is_user = !strcmp(entity, "user");
    const char *other = is_user ? "item" : "user";
    int64_t ds = db_dataset_id(db, dataset);
    if (ds < 0) return -1;
    int n_other = (int)db_query_i64(db, 0, "SELECT %s FROM datasets WHERE id=%lld",
                                    is_user ? "n_items" : "n_users", (long long)ds);
    int n_self = (int)db_query_i64(db, 0, "SELECT %s FROM datasets WHERE id=%lld",
                                   is_user ? "n_users" : "n_items", (long long)ds);
    /* the other side's ego vectors */
    float *E = tr_calloc((size_t)(n_other > 0 ? n_other : 1) * dim, sizeof(float));
    sqlite3_stmt *st = db_prep(db, "SELECT idx, vec FROM cf_vectors WHERE run_id=? AND entity=? AND kind='ego'");
    if (!st) { free(E); return -1; }
    sqlite3_bind_int64(st, 1, cf_run);
    sqlite3_bind_text(st, 2, other, -1, SQLITE_STATIC);
    int got = 0, rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int idx = sqlite3_column_int(st, 0);
        if (idx < 0 || idx >= n_other) continue;
        if (db_column_floats(st, 1, E + (size_t)idx * dim, dim) != 0) { rc = -1; break; }
        got++;
    }
    sqlite3_finalize(st);
    if (!rc && !got)
        rc = tr_error("cf run %lld has no ego %s vectors to propagate from", (long long)cf_run, other);
    /* train degrees of both sides */
    int *deg_self = tr_calloc((size_t)n_self + 1, sizeof(int));
    int *deg_other = tr_calloc((size_t)n_other + 1, sizeof(int));
    st = rc ? NULL : db_prep(db, "SELECT uid, iid FROM interactions WHERE dataset_id=? AND split=0");
    if (!rc && !st) rc = -1;
    if (st) {
        sqlite3_bind_int64(st, 1, ds);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int u = sqlite3_column_int(st, 0), i = sqlite3_column_int(st, 1);
            int s = is_user ? u : i, t = is_user ? i : u;
            if (s >= 0 && s < n_self) deg_self[s]++;
            if (t >= 0 && t < n_other) deg_other[t]++;
        }
        sqlite3_finalize(st);
    }
    st = rc ? NULL : db_prep(db, is_user ?
        "SELECT iid FROM interactions WHERE dataset_id=? AND split=0 AND uid=?" :
        "SELECT uid FROM interactions WHERE dataset_id=? AND split=0 AND iid=?");
    if (!rc && !st) rc = -1;
    for (int j = 0; j < n && !rc; j++) {
        float *o = out + (size_t)j * dim;
        memset(o, 0, (size_t)dim * sizeof(float));
        int self = ids[j];
        if (self < 0 || self >= n_self || !deg_self[self]) continue;
        sqlite3_bind_int64(st, 1, ds);
        sqlite3_bind_int(st, 2, self);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int t = sqlite3_column_int(st, 0);
            if (t < 0 || t >= n_other || !deg_other[t]) continue;
            float w = (float)(1.0 / sqrt((double)deg_self[self] * deg_other[t]));
            const float *v = E + (size_t)t * dim;
            for (int d = 0; d < dim; d++) o[d] += w * v[d];
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    free(E); free(deg_self); free(deg_other);
    return rc;
}

/* The entities of dataset ds without tokens in tok_run, in id order. */
static int untokenized(sqlite3 *db, int64_t ds, int64_t tok_run, const char *entity, tr_ivec *todo) {
    int is_user = !strcmp(entity, "user");
    const char *id = is_user ? "uid" : "iid";
    char *sql = sqlite3_mprintf(
        "SELECT %s FROM %s WHERE dataset_id=%lld AND %s NOT IN (SELECT idx FROM tokens WHERE "
        "run_id=%lld AND entity=%Q AND book=0) ORDER BY %s", id, is_user ? "users" : "items",
        (long long)ds, id, (long long)tok_run, entity, id);
    sqlite3_stmt *st = db_prep(db, sql);
    sqlite3_free(sql);
    if (!st) return -1;
    while (sqlite3_step(st) == SQLITE_ROW) tr_ivec_push(todo, sqlite3_column_int(st, 0));
    sqlite3_finalize(st);
    return 0;
}

/* The input vectors X (n, dim) of the entities ids: their cf vector of kind source when the
 * cf run has one (from_cf[j] = 1) unless propagate, else one propagated from neighbours. */
static int unseen_vectors(sqlite3 *db, const char *dataset, int64_t cf_run, const char *entity,
                          const char *source, int propagate, const int32_t *ids, int n, int dim,
                          float *X, uint8_t *from_cf) {
    int rc = 0;
    if (!propagate) {
        sqlite3_stmt *st = db_prep(db, "SELECT vec FROM cf_vectors WHERE run_id=? AND entity=? AND kind=? AND idx=?");
        if (!st) rc = -1;
        for (int j = 0; j < n && !rc; j++) {
            sqlite3_bind_int64(st, 1, cf_run);
            sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, source, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 4, ids[j]);
            if (sqlite3_step(st) == SQLITE_ROW) {
                if (db_column_floats(st, 0, X + (size_t)j * dim, dim) != 0) rc = -1;
                from_cf[j] = 1;
            }
            sqlite3_reset(st);
        }
        sqlite3_finalize(st);
    }
    int np = 0;
    int32_t *pid = tr_malloc((size_t)n * sizeof(int32_t));
    for (int j = 0; j < n; j++) if (!from_cf[j]) pid[np++] = ids[j];
    if (!rc && np) {
        float *P = tr_malloc((size_t)np * dim * sizeof(float));
        rc = tokenize_propagate(db, dataset, cf_run, entity, pid, np, dim, P);
        for (int j = 0, q = 0; j < n && !rc; j++)
            if (!from_cf[j]) memcpy(X + (size_t)j * dim, P + (size_t)q++ * dim, dim * sizeof(float));
        free(P);
    }
    free(pid);
    return rc;
}

/* Disambiguated runs: each new entity (codes (n, K)) takes the next extra number of its
 * tuple after those the run's entities and the new ones before it hold. */
static int next_extras(sqlite3 *db, int64_t tok_run, const char *entity, const int32_t *codes, int n,
                       int K, int32_t *extra) {
    char *q = sqlite3_mprintf("SELECT idx, book, code FROM tokens WHERE run_id=%lld AND "
                              "entity=%Q ORDER BY idx, book", (long long)tok_run, entity);
    sqlite3_stmt *st = db_prep(db, q);
    sqlite3_free(q);
    if (!st) return -1;
    tr_ivec ex = {0};           /* K codes + extra per entity */
    int32_t row[MQ_MAXK + 1];
    int have = 0, cur = -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int idx = sqlite3_column_int(st, 0), b = sqlite3_column_int(st, 1);
        if (idx != cur) { cur = idx; have = 0; }
        if (b <= K) { row[b] = sqlite3_column_int(st, 2); have++; }
        if (have == K + 1) for (int k = 0; k <= K; k++) tr_ivec_push(&ex, row[k]);
    }
    sqlite3_finalize(st);
    int ne = (int)(ex.n / (size_t)(K + 1));
    size_t tb = (size_t)K * sizeof(int32_t);
    for (int j = 0; j < n; j++) {
        int next = 0;
        for (int i = 0; i < ne; i++) {
            const int32_t *r = ex.v + (size_t)i * (K + 1);
            if (!memcmp(r, codes + (size_t)j * K, tb) && r[K] + 1 > next) next = r[K] + 1;
        }
        for (int i = 0; i < j; i++)
            if (!memcmp(codes + (size_t)i * K, codes + (size_t)j * K, tb) && extra[i] + 1 > next)
                next = extra[i] + 1;
        extra[j] = next;
    }
    tr_ivec_free(&ex);
    return 0;
}

/* Store the new entities' tokens and list them in tokens_unseen, in one transaction. */
static int store_added(sqlite3 *db, int64_t tok_run, const char *entity, const int32_t *ids,
                       const int32_t *codes, const int32_t *extra, const uint8_t *from_cf, int n, int K) {
    if (db_begin(db) != 0) return -1;
    int rc = store_tokens(db, tok_run, entity, ids, codes, extra, n, K);
    sqlite3_stmt *st = rc ? NULL : db_prep(db, "INSERT INTO tokens_unseen (run_id, entity, idx, origin, added_at) "
                                               "VALUES (?,?,?,?,?)");
    if (!rc && !st) rc = -1;
    for (int j = 0; j < n && !rc; j++) {
        sqlite3_bind_int64(st, 1, tok_run);
        sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, ids[j]);
        sqlite3_bind_text(st, 4, from_cf[j] ? "cf" : "propagated", -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 5, tr_now());
        rc = db_step_done(db, st);
    }
    sqlite3_finalize(st);
    if (rc || db_commit(db) != 0) { db_rollback(db); return -1; }
    return 0;
}

int tokenize_add_unseen(sqlite3 *db, int64_t tok_run, const char *entity, int propagate,
                        int *added) {
    *added = 0;
    mq_model m;
    char source[8];
    if (tokenize_load_model(db, tok_run, entity, &m, source) != 0) return -1;
    int K = m.cfg.K, dim = m.cfg.d_in;
    stage_run_info ri;           /* the tokenize run: its dataset and its cf run */
    if (stage_run_get(db, tok_run, &ri) != 0) ri.dataset[0] = 0;
    int64_t ds = ri.dataset[0] ? db_dataset_id(db, ri.dataset) : -1;
    tr_ivec todo = {0};
    if (ds < 0 || untokenized(db, ds, tok_run, entity, &todo) != 0) {
        mq_model_free(&m);
        tr_ivec_free(&todo);
        return -1;
    }
    int n = (int)todo.n, rc = 0;
    if (!n) { mq_model_free(&m); tr_ivec_free(&todo); return 0; }
    float *X = tr_calloc((size_t)n * dim, sizeof(float));
    uint8_t *from_cf = tr_calloc((size_t)n, 1);
    int32_t *codes = tr_malloc((size_t)n * K * sizeof(int32_t)), *extra = NULL;
    rc = unseen_vectors(db, ri.dataset, ri.upstream_run, entity, source, propagate, todo.v, n, dim,
                        X, from_cf);
    if (!rc) {
        mq_ws ws;
        mq_ws_init(&ws, &m, n < 512 ? n : 512);
        mq_encode(&m, &ws, X, NULL, n, codes, NULL);
        mq_ws_free(&ws);
    }
    if (!rc && db_query_i64(db, 0, "SELECT disambiguated FROM tokenize_stats WHERE run_id=%lld AND "
                                   "entity=%Q", (long long)tok_run, entity)) {
        extra = tr_calloc((size_t)n, sizeof(int32_t));
        rc = next_extras(db, tok_run, entity, codes, n, K, extra);
    }
    if (!rc) rc = store_added(db, tok_run, entity, todo.v, codes, extra, from_cf, n, K);
    if (!rc) *added = n;
    free(X); free(from_cf); free(codes); free(extra);
    tr_ivec_free(&todo);
    mq_model_free(&m);
    return rc;
}

/* ---- the command ---- */

/* The users the cf run held out (cf --holdout-users) as a row mask of e (*pre, NULL when the
 * cf run held out none). They are the held-out set of every later stage, so tokenize's own
 * --holdout-users cannot be combined with them. */
static int cf_holdout_rows(sqlite3 *db, int64_t cf_run, const tok_entity *e, double holdout_users,
                           uint8_t **pre) {
    *pre = NULL;
    int32_t nu = 0;
    for (int i = 0; i < e->n; i++) if (e->ids[i] + 1 > nu) nu = e->ids[i] + 1;
    uint8_t *held = tr_malloc((size_t)nu + 1);
    int nh = unseen_cf_load(db, cf_run, held, nu);
    if (nh <= 0) { free(held); return nh < 0 ? -1 : 0; }
    if (holdout_users > 0) {
        free(held);
        return tr_error("tokenize: cf run %lld already holds out %d users (cf --holdout-users); "
                        "drop tokenize's --holdout-users, which would choose a second set",
                        (long long)cf_run, nh);
    }
    *pre = tr_calloc((size_t)e->n + 1, 1);
    for (int i = 0; i < e->n; i++) (*pre)[i] = held[e->ids[i]];
    free(held);
    return 0;
}

/* List the rows ids[from .. n) as unseen users tokenized by the frozen tokenizer of the run. */
static int store_unseen(sqlite3 *db, int64_t run, const int32_t *ids, int from, int n) {
    sqlite3_stmt *st = db_prep(db, "INSERT INTO tokens_unseen (run_id, entity, idx, origin, added_at) "
                                   "VALUES (?,'user',?,'cf-holdout',?)");
    if (!st) return -1;
    int rc = 0;
    for (int i = from; i < n && !rc; i++) {
        sqlite3_bind_int64(st, 1, run);
        sqlite3_bind_int(st, 2, ids[i]);
        sqlite3_bind_double(st, 3, tr_now());
        rc = db_step_done(db, st);
    }
    sqlite3_finalize(st);
    return rc;
}

static const char *usage_tok = "tokenrec tokenize [--dataset NAME] [--source ego|mean] [options]";
static const char *summary_tok =
    "Train the user and item MQ-Tokenizers (CLEAN form: per-sample Bernoulli input mask, K\n"
    "encoders Linear-BN-Dropout-ReLU, K codebooks initialised by k-means, straight-through\n"
    "estimator, decoder from the mean of the K codewords, commitment loss; --quantizer residual:\n"
    "one encoder and residual codebooks) on the vectors of the current cf run, keep each\n"
    "one's best checkpoint on a 20% entity holdout, and store every user's and item's K\n"
    "tokens (table tokens). Prints reconstruction, codebook usage,\n"
    "perplexity and collisions. --new-users / --new-items instead tokenize, through the frozen\n"
    "tokenizers of the current run, the entities that have no tokens yet. Ctrl-C saves a\n"
    "checkpoint; the same command resumes it.";

/* L by dataset, as the official README: 256 for LastFM and ML-1M, 512 for the Amazon sets. */
static int default_L(const char *dataset) {
    if (!strcmp(dataset, "beauty") || !strcmp(dataset, "clothing")) return 512;
    return 256;
}

/* Epochs per tokenizer when --epochs is 0: 300 (TokenRec's), fewer on the two large
 * catalogues as a time budget (the full preset on all four datasets in under 2 hours on
 * 2 cores; about 1 s per epoch on Beauty and 2.6 s on Clothing there). Holdout
 * reconstruction still improves slowly past them. Beauty's 20: the causal LLM's valid
 * HR@10 on the full cf was 0.1073 with 20 tokenizer epochs against 0.1059 with 150. */
static int default_epochs(const char *dataset) {
    if (!strcmp(dataset, "beauty")) return 20;
    if (!strcmp(dataset, "clothing")) return 100;
    return 300;
}

/* --new-users / --new-items: the entities without tokens, through the frozen tokenizers of
 * the current tokenize run. */
static int add_new_entities(stage_cmd *c, const tok_opts *o) {
    int64_t tok_run = stage_current_run(c->db, c->dataset, "tokenize");
    if (!tok_run)
        return tr_error("--new-users/--new-items need a finished tokenize run on %s first "
                        "(run 'tokenrec tokenize --dataset %s')", c->dataset, c->dataset);
    int rc = 0;
    for (int w = 0; w < 2 && !rc; w++) {
        if (!(w == 0 ? o->new_users : o->new_items)) continue;
        int added;
        rc = tokenize_add_unseen(c->db, tok_run, entity_names[w], o->propagate, &added);
        if (!rc && !o->quiet)
            printf("tokenize run %lld: %d new %ss tokenized through the frozen tokenizer\n",
                   (long long)tok_run, added, entity_names[w]);
    }
    return rc;
}

/* Both entity types' vectors of the run's cf run, their held-out rows and their split;
 * cfg->d_in becomes the vectors' dimension. */
static int load_entities(stage_run *run, const tok_opts *o, tok_entity ents[2], mq_cfg *cfg) {
    for (int w = 0; w < 2; w++) {
        ents[w].name = entity_names[w];
        if (load_vectors(run->db, run->upstream_run, ents[w].name, o->source, &ents[w]) != 0) return -1;
        cfg->d_in = ents[w].dim;
        if (w == 1 && ents[1].dim != ents[0].dim)
            return tr_error("cf run %lld: user vectors have %d dims, item vectors %d",
                            (long long)run->upstream_run, ents[0].dim, ents[1].dim);
        uint8_t *pre = NULL;
        if (w == 0 && cf_holdout_rows(run->db, run->upstream_run, &ents[0], o->holdout_users, &pre) != 0)
            return -1;
        ents[w].frozen = pre != NULL;
        split_rows(&ents[w], w == 0 ? o->holdout_users : 0, pre, o->holdout,
                   rng_stream((uint64_t)o->seed, "tokenize"), w);
        free(pre);
        if (ents[w].ntr < 2)
            return tr_error("%ss: expected at least 2 vectors to train on, got %d", ents[w].name,
                            ents[w].ntr);
    }
    return 0;
}

/* The final tokens of an entity type from its best checkpoint: codes (and with
 * disambiguate the extra numbers) of the trained-on rows, then of the rows cf held out
 * (frozen); e->ids becomes the ids of those rows in that order. */
static void encode_entity(tok_entity *e, const mq_cfg *cfg, int disambiguate, int32_t **codes,
                          int32_t **extra, mq_token_stats *ts, double *var) {
    mq_trainer_use_best(&e->t);
    int32_t *rows = tr_malloc((size_t)e->n * sizeof(int32_t)), *ids = tr_malloc((size_t)e->n * sizeof(int32_t));
    int m = 0;
    for (int i = 0; i < e->n; i++) if (!e->excluded[i]) { rows[m] = i; ids[m] = e->ids[i]; m++; }
    /* users held out by cf: after the others, through the same frozen (eval-mode)
     * tokenizer; statistics stay those of the m trained-on entities */
    int mt = m;
    if (e->frozen)
        for (int i = 0; i < e->n; i++) if (e->excluded[i]) { rows[mt] = i; ids[mt] = e->ids[i]; mt++; }
    *codes = tr_malloc((size_t)(mt ? mt : 1) * cfg->K * sizeof(int32_t));
    mq_ws ws;
    mq_ws_init(&ws, &e->t.model, 512);
    mq_encode(&e->t.model, &ws, e->X, rows, mt, *codes, NULL);
    mq_ws_free(&ws);
    mq_token_stats_compute(*codes, m, cfg->K, cfg->L, ts);
    if (disambiguate) {     /* held rows come last, so the others' numbers do not move */
        *extra = tr_malloc((size_t)(mt ? mt : 1) * sizeof(int32_t));
        mq_disambiguate(*codes, mt, cfg->K, *extra);
    }
    *var = input_variance(e->X, e->n, e->dim);
    free(e->ids);
    e->ids = ids;
    free(rows);
}

/* Final tokens, tokenizers and statistics of both entity types in the one output transaction. */
static int write_outputs(stage_run *run, const tok_opts *o, tok_entity ents[2], const mq_cfg *cfg) {
    int32_t *codes[2] = {NULL, NULL}, *extra[2] = {NULL, NULL};
    mq_token_stats ts[2];
    double var[2];
    for (int w = 0; w < 2; w++) encode_entity(&ents[w], cfg, o->disambiguate, &codes[w], &extra[w], &ts[w], &var[w]);
    int rc = stage_finish_begin(run);
    for (int w = 0; w < 2 && !rc; w++) {
        tok_entity *e = &ents[w];
        int nt = ts[w].n + (e->frozen ? e->nexcl : 0);
        rc = store_tokens(run->db, run->id, e->name, e->ids, codes[w], extra[w], nt, cfg->K);
        if (!rc && e->frozen) rc = store_unseen(run->db, run->id, e->ids, ts[w].n, nt);
        if (!rc) rc = store_tokenizer(run->db, run->id, e->name, o->source, &e->t.model,
                                      e->t.best_epoch, e->t.epoch);
        if (!rc) rc = store_stats(run->db, run->id, e, &ts[w], cfg->K, e->t.best_mse, var[w],
                                  o->disambiguate);
    }
    if (!rc) rc = stage_finish_commit(run);
    for (int w = 0; w < 2; w++) { free(codes[w]); free(extra[w]); }
    return rc;
}

/* The stage's work after stage_begin: load, train the user then the item tokenizer (from
 * their checkpoints when resumed), write. Returns 0, 130 when stopped, or -1 (recorded). */
static int tokenize_train(stage_run *run, const tok_opts *o, mq_cfg *cfg, const mq_train_cfg *tc) {
    tok_entity ents[2];
    memset(ents, 0, sizeof ents);
    int rc = load_entities(run, o, ents, cfg);
    stage_progress(run, run->progress, "users %d, items %d, source %s, K %d, L %d", ents[0].n,
                   ents[1].n, o->source, cfg->K, cfg->L);
    int done_epochs = 0;
    double wu = ents[0].ntr, wi = ents[1].ntr, wt = wu + wi > 0 ? wu + wi : 1;
    for (int w = 0; w < 2 && !rc; w++) {
        double w0 = w == 0 ? 0 : wu / wt, w1 = w == 0 ? wu / wt : 1;
        rc = train_entity(run, o, ents, w, cfg, tc, w0, w1, &done_epochs);
    }
    if (rc == 130) stage_stopped(run);
    else if (!rc) rc = write_outputs(run, o, ents, cfg);
    if (rc < 0) stage_fail_err(run);
    for (int w = 0; w < 2; w++) entity_free(&ents[w]);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    mq_cfg dc = mq_default_cfg();
    mq_train_cfg dt = mq_default_train_cfg();
    tok_opts o = {0};
    o.dbpath = DB_DEFAULT_PATH;
    o.source = "ego";
    o.quantizer = "parallel";
    o.K = dc.K; o.L = 0; o.d_c = dc.d_c; o.h1 = dc.h1; o.h2 = dc.h2;
    o.epochs = 0; o.batch = dt.batch; o.kmeans_per_code = dt.kmeans_per_code;
    o.kmeans_iters = dt.kmeans_iters; o.reseed_every = dt.reseed_every;
    o.rho = dc.rho; o.p1 = dc.p1; o.p2 = dc.p2; o.beta = dc.beta;
    o.lr = dt.lr; o.wd = dt.weight_decay; o.holdout = 0.2; o.holdout_users = 0;
    o.seed = CLI_SEED_DEFAULT; o.ckpt_every = 10;
    cli_opt opts[] = {
        CLI_OPTS_DB(&o.dbpath, &o.dataset),
        {"source", CLI_STR, &o.source, "cf vectors to tokenize: ego (E0, as TokenRec) or mean", 1},
        {"quantizer", CLI_STR, &o.quantizer, "parallel (K encoders, CLEAN) or residual (one encoder, codebook k quantises the residual of those before it: TokenRec's released tokens)", 0},
        {"K", CLI_INT, &o.K, "codebooks = tokens per entity", 1},
        {"L", CLI_INT, &o.L, "codewords per codebook (0: 256 for lastfm/ml-1m, 512 for beauty/clothing)", 1},
        {"dc", CLI_INT, &o.d_c, "code vector dimension d_c", 1},
        {"h1", CLI_INT, &o.h1, "first hidden width of the encoders (decoder mirrors)", 1},
        {"h2", CLI_INT, &o.h2, "second hidden width of the encoders", 1},
        {"rho", CLI_FLOAT, &o.rho, "input mask ratio (Bernoulli per sample and dimension)", 1},
        {"dropout1", CLI_FLOAT, &o.p1, "dropout after the first BatchNorm", 1},
        {"dropout2", CLI_FLOAT, &o.p2, "dropout after the second BatchNorm", 1},
        {"beta", CLI_FLOAT, &o.beta, "commitment weight", 1},
        {"lr", CLI_FLOAT, &o.lr, "AdamW learning rate", 1},
        {"wd", CLI_FLOAT, &o.wd, "AdamW weight decay", 1},
        {"batch", CLI_INT, &o.batch, "batch size", 1},
        {"epochs", CLI_INT, &o.epochs, "epochs per tokenizer (0: 300; 20 for beauty, 100 for clothing)", 1},
        {"kmeans-points", CLI_INT, &o.kmeans_per_code, "k-means initialisation on >= this many encoder outputs per codeword", 1},
        {"kmeans-iters", CLI_INT, &o.kmeans_iters, "Lloyd iterations of the k-means initialisation", 1},
        {"reseed-every", CLI_INT, &o.reseed_every, "re-seed codewords unused for this many epochs (0: never)", 1},
        {"holdout", CLI_FLOAT, &o.holdout, "fraction of entities held out to select the checkpoint", 1},
        {"holdout-users", CLI_FLOAT, &o.holdout_users, "fraction of users left out of the user tokenizer and of tokens (for --new-users / evaluate --unseen)", 1},
        {"disambiguate", CLI_FLAG, &o.disambiguate, "add a (K+1)-th token so every entity's tokens are unique", 1},
        {"seed", CLI_INT, &o.seed, "random seed (initialisation, masks, dropout, split, k-means: "
         "tokenize's stream of it)", 1},
        CLI_OPTS_RUN(&o.threads, &o.force, &o.quiet),
        {"ckpt-every", CLI_INT, &o.ckpt_every, "checkpoint every N epochs", 0},
        {"stop-after-epochs", CLI_INT, &o.stop_after, "testing: stop as on Ctrl-C after N epochs", 0},
        {"new-users", CLI_FLAG, &o.new_users, "tokenize users without tokens through the current run's frozen tokenizer", 0},
        {"new-items", CLI_FLAG, &o.new_items, "tokenize items without tokens through the current run's frozen tokenizer", 0},
        {"propagate", CLI_FLAG, &o.propagate, "with --new-*: vectors by propagation from neighbours even where a cf vector exists", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_tok, summary_tok);
    if (rc) return rc > 0 ? 0 : -1;
    if (strcmp(o.source, "ego") && strcmp(o.source, "mean"))
        return tr_error("--source: expected ego or mean, got '%s'", o.source);
    if (strcmp(o.quantizer, "parallel") && strcmp(o.quantizer, "residual"))
        return tr_error("--quantizer: expected parallel or residual, got '%s'", o.quantizer);
    if (o.epochs < 0 || o.batch < 2)
        return tr_error("expected --epochs >= 0 and --batch >= 2, got %d and %d", o.epochs, o.batch);
    if (!(o.holdout >= 0 && o.holdout < 1) || !(o.holdout_users >= 0 && o.holdout_users < 1))
        return tr_error("expected --holdout and --holdout-users in [0,1)");
    nn_set_threads(o.threads);
    stage_cmd c;
    if (stage_cmd_open(&c, o.dbpath, o.dataset) != 0) return -1;
    if (o.new_users || o.new_items) return stage_cmd_close(&c, add_new_entities(&c, &o));

    if (o.L == 0) o.L = default_L(c.dataset);
    if (o.epochs == 0) o.epochs = default_epochs(c.dataset);
    mq_cfg cfg = dc;
    cfg.K = o.K; cfg.L = o.L; cfg.d_c = o.d_c; cfg.h1 = o.h1; cfg.h2 = o.h2;
    cfg.rho = (float)o.rho; cfg.p1 = (float)o.p1; cfg.p2 = (float)o.p2; cfg.beta = (float)o.beta;
    cfg.residual = !strcmp(o.quantizer, "residual");
    mq_train_cfg tc = dt;
    tc.lr = (float)o.lr; tc.weight_decay = (float)o.wd; tc.batch = o.batch; tc.epochs = o.epochs;
    tc.kmeans_per_code = o.kmeans_per_code; tc.kmeans_iters = o.kmeans_iters;
    tc.reseed_every = o.reseed_every;
    if (mq_cfg_check(&cfg) != 0) return stage_cmd_close(&c, -1);

    char *pj = CLI_SEED_STREAM(cli_params_json(opts), "tokenize");
    /* in the params only when used, so that parallel runs keep their fingerprints */
    if (cfg.residual) pj = cli_json_append(pj, "\"quantizer\":\"residual\"");
    int b = stage_cmd_begin(&c, "tokenize", pj, NULL, o.force, o.quiet, NULL);
    if (b == STAGE_UP_TO_DATE && !o.quiet) tokenize_print_stats(c.db, c.run.id, stdout);
    if (b != 0) return stage_cmd_close(&c, b == STAGE_UP_TO_DATE ? 0 : -1);
    rc = tokenize_train(&c.run, &o, &cfg, &tc);
    if (rc == 0 && !o.quiet) {
        stage_progress(&c.run, 1, "done");
        tokenize_print_stats(c.db, c.run.id, stdout);
    }
    return stage_cmd_close(&c, rc);
}
