/* test_tokenize: the tokenize stage end to end on a small synthetic dataset with a fake cf
 * run (clustered vectors): outputs, re-tokenizing with the stored tokenizer, resume equal to
 * an uninterrupted run, --quantizer residual, --disambiguate, --holdout-users then --new-users, users held out by
 * the cf run (cf_holdout), propagation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db.h"
#include "nn.h"
#include "rng.h"
#include "stage.h"
#include "testutil.h"
#include "tokenize.h"
#include "util.h"

enum { NU = 90, NI = 160, DIM = 16 };

/* A done cf run of the dataset with ego and mean vectors around a few centres. */
static void fake_cf(sqlite3 *db, const char *ds, uint64_t seed) {
    stage_run run;
    assert_int_equal(stage_begin(&run, db, "cf", ds, "{\"fake\":1}", "ingest", 1), 0);
    run.quiet = 1;
    assert_int_equal(stage_finish_begin(&run), 0);
    sqlite3_stmt *st = db_prep(db, "INSERT INTO cf_vectors (run_id, entity, kind, idx, vec) VALUES (?,?,?,?,?)");
    assert_non_null(st);
    rng_t r;
    rng_seed(&r, seed);
    float cent[8][DIM];
    for (int c = 0; c < 8; c++) for (int d = 0; d < DIM; d++) cent[c][d] = 0.3f * rng_normal(&r);
    for (int e = 0; e < 2; e++) {
        int n = e ? NI : NU;
        for (int i = 0; i < n; i++) {
            float v[DIM];
            int c = (int)rng_below(&r, 8);
            for (int d = 0; d < DIM; d++) v[d] = cent[c][d] + 0.1f * rng_normal(&r);
            for (int k = 0; k < 2; k++) {
                sqlite3_bind_int64(st, 1, run.id);
                sqlite3_bind_text(st, 2, e ? "item" : "user", -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 3, k ? "mean" : "ego", -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 4, i);
                if (k) for (int d = 0; d < DIM; d++) v[d] *= 0.5f;
                db_bind_floats(st, 5, v, DIM);
                assert_int_equal(db_step_done(db, st), 0);
            }
        }
    }
    sqlite3_finalize(st);
    assert_int_equal(stage_finish_commit(&run), 0);
}

static char *setup_db(const char *name, sqlite3 **out) {
    sqlite3 *db = tu_db(name);
    assert_non_null(db);
    assert_int_equal(tu_synthetic(db, "syn", NU, NI, 6, 5, 12, 11), 0);
    fake_cf(db, "syn", 12);
    *out = db;
    return tu_path(name);
}

/* Run `tokenrec tokenize` in-process with small settings plus extra arguments. */
static int run_tok(const char *dbpath, const char *extra) {
    char line[1024];
    snprintf(line, sizeof line, "tokenize --db %s --dataset syn --K 3 --L 16 --dc 24 --h1 16 "
             "--h2 24 --batch 32 --epochs 20 --threads 1 --quiet --seed 5 --ckpt-every 2 %s",
             dbpath, extra ? extra : "");
    char *argv[64];
    int argc = 0;
    char *save, *tok = strtok_r(line, " ", &save);
    while (tok && argc < 63) { argv[argc++] = tok; tok = strtok_r(NULL, " ", &save); }
    argv[argc] = NULL;
    return cmd_tokenize(argc, argv);
}

static int64_t count(sqlite3 *db, const char *sql) { return db_query_i64(db, -1, "%s", sql); }

/* Codes (n,K) of an entity in tokens, by idx; -1 where missing. */
static int32_t *read_tokens(sqlite3 *db, int64_t run, const char *entity, int n, int K) {
    int32_t *c = malloc((size_t)n * K * sizeof(int32_t));
    for (int i = 0; i < n * K; i++) c[i] = -1;
    sqlite3_stmt *st = db_prep(db, "SELECT idx, book, code FROM tokens WHERE run_id=? AND entity=? AND book<?");
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, K);
    while (sqlite3_step(st) == SQLITE_ROW)
        c[sqlite3_column_int(st, 0) * K + sqlite3_column_int(st, 1)] = sqlite3_column_int(st, 2);
    sqlite3_finalize(st);
    return c;
}

static float *read_vectors(sqlite3 *db, int64_t cf_run, const char *entity, int n) {
    float *X = malloc((size_t)n * DIM * sizeof(float));
    sqlite3_stmt *st = db_prep(db, "SELECT idx, vec FROM cf_vectors WHERE run_id=? AND entity=? AND kind='ego'");
    sqlite3_bind_int64(st, 1, cf_run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW)
        db_column_floats(st, 1, X + (size_t)sqlite3_column_int(st, 0) * DIM, DIM);
    sqlite3_finalize(st);
    return X;
}

static void test_end_to_end(void **state) {
    (void)state;
    sqlite3 *db;
    char *path = setup_db("e2e.db", &db);
    assert_int_equal(run_tok(path, NULL), 0);
    int64_t run = stage_current_run(db, "syn", "tokenize");
    assert_true(run > 0);
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens WHERE run_id=%lld", (long long)run);
    assert_int_equal(count(db, q), (NU + NI) * 3);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens WHERE run_id=%lld AND (code<0 OR code>=16 OR book>2)", (long long)run);
    assert_int_equal(count(db, q), 0);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokenizers WHERE run_id=%lld AND source='ego' AND K=3 AND L=16 AND d_c=24", (long long)run);
    assert_int_equal(count(db, q), 2);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokenize_book_stats WHERE run_id=%lld", (long long)run);
    assert_int_equal(count(db, q), 6);
    /* stats agree with the tokens: distinct tuples counted by SQL */
    snprintf(q, sizeof q, "SELECT count(*) FROM (SELECT DISTINCT group_concat(code) OVER "
             "(PARTITION BY idx ORDER BY book ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) "
             "FROM tokens WHERE run_id=%lld AND entity='item')", (long long)run);
    int64_t distinct = count(db, q);
    snprintf(q, sizeof q, "SELECT distinct_tuples FROM tokenize_stats WHERE run_id=%lld AND entity='item'", (long long)run);
    assert_int_equal(count(db, q), distinct);
    assert_true(distinct > 8);      /* more than the 8 planted clusters */
    snprintf(q, sizeof q, "SELECT count(*) FROM tokenize_stats WHERE run_id=%lld AND n_train + n_holdout = n AND holdout_mse > 0", (long long)run);
    assert_int_equal(count(db, q), 2);
    snprintf(q, sizeof q, "SELECT count(DISTINCT step) FROM metrics_log WHERE run_id=%lld AND name='item/holdout_recon'", (long long)run);
    assert_int_equal(count(db, q), 20);
    /* the same command again: up to date, no new run */
    assert_int_equal(run_tok(path, NULL), 0);
    assert_int_equal(stage_current_run(db, "syn", "tokenize"), run);
    /* re-tokenizing the training vectors with the stored tokenizer gives the same tokens */
    int64_t cf = stage_current_run(db, "syn", "cf");
    for (int e = 0; e < 2; e++) {
        const char *ent = e ? "item" : "user";
        int n = e ? NI : NU;
        float *X = read_vectors(db, cf, ent, n);
        int32_t *want = read_tokens(db, run, ent, n, 3), *got = malloc((size_t)n * 3 * sizeof(int32_t));
        assert_int_equal(tokenize_frozen(db, run, ent, X, n, got), 0);
        assert_memory_equal(want, got, (size_t)n * 3 * sizeof(int32_t));
        free(X); free(want); free(got);
    }
    /* a different --source is a different run */
    assert_int_equal(run_tok(path, "--source mean"), 0);
    assert_true(stage_current_run(db, "syn", "tokenize") != run);
    /* trained longer, the item tokens carry information: clearly better than predicting the
     * mean vector (after 20 epochs the held-out error is still near the variance, and below
     * 0.8 of it for few seeds; after 60, for 7 of the seeds 1..8) */
    assert_int_equal(run_tok(path, "--epochs 60"), 0);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokenize_stats WHERE run_id=%lld AND entity='item' AND "
             "holdout_mse < 0.8 * input_var", (long long)stage_current_run(db, "syn", "tokenize"));
    assert_int_equal(count(db, q), 1);
    db_close(db);
    free(path);
}

/* --quantizer residual: stored as such, the frozen tokenizer gives the stored tokens again,
 * a parallel run keeps a params string without the quantizer (old fingerprints hold) and
 * the residual run is a different run; a killed residual run resumes to the same tokens. */
static void test_residual_quantizer(void **state) {
    (void)state;
    sqlite3 *db, *dk;
    char *path = setup_db("resid.db", &db), *pk = setup_db("resid-killed.db", &dk);
    assert_int_equal(run_tok(path, NULL), 0);
    int64_t par = stage_current_run(db, "syn", "tokenize");
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM stage_runs WHERE id=%lld AND params LIKE '%%quantizer%%'", (long long)par);
    assert_int_equal(count(db, q), 0);
    assert_int_equal(run_tok(path, "--quantizer residual"), 0);
    int64_t run = stage_current_run(db, "syn", "tokenize");
    assert_true(run > 0 && run != par);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokenizers WHERE run_id=%lld AND quantizer='residual'", (long long)run);
    assert_int_equal(count(db, q), 2);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokenizers WHERE run_id=%lld AND quantizer='parallel'", (long long)par);
    assert_int_equal(count(db, q), 2);
    /* one encoder instead of K: the stored weights are smaller */
    snprintf(q, sizeof q, "SELECT (SELECT length(weights) FROM tokenizers WHERE run_id=%lld AND entity='item') < "
             "(SELECT length(weights) FROM tokenizers WHERE run_id=%lld AND entity='item')", (long long)run, (long long)par);
    assert_int_equal(count(db, q), 1);
    snprintf(q, sizeof q, "SELECT distinct_tuples FROM tokenize_stats WHERE run_id=%lld AND entity='item'", (long long)run);
    assert_true(count(db, q) > 8);
    int64_t cf = stage_current_run(db, "syn", "cf");
    float *X = read_vectors(db, cf, "item", NI);
    int32_t *want = read_tokens(db, run, "item", NI, 3), *got = malloc((size_t)NI * 3 * sizeof(int32_t));
    assert_int_equal(tokenize_frozen(db, run, "item", X, NI, got), 0);
    assert_memory_equal(want, got, (size_t)NI * 3 * sizeof(int32_t));
    /* killed after 5 epochs, then resumed */
    assert_int_equal(run_tok(pk, "--quantizer residual --stop-after-epochs 5"), 130);
    assert_int_equal(run_tok(pk, "--quantizer residual"), 0);
    int64_t rk = stage_current_run(dk, "syn", "tokenize");
    int32_t *again = read_tokens(dk, rk, "item", NI, 3);
    assert_memory_equal(want, again, (size_t)NI * 3 * sizeof(int32_t));
    free(X); free(want); free(got); free(again);
    db_close(db);
    db_close(dk);
    free(path);
    free(pk);
}

/* --epochs 0 is the dataset's default: 300 (TokenRec's) for a dataset without its own. */
static void test_default_epochs(void **state) {
    (void)state;
    sqlite3 *db;
    char *path = setup_db("epochs.db", &db);
    assert_int_equal(run_tok(path, "--epochs 0 --stop-after-epochs 1"), 130);
    assert_int_equal(count(db, "SELECT instr(params, '\"epochs\":300,') > 0 FROM stage_runs WHERE stage='tokenize' "
                               "ORDER BY id DESC LIMIT 1"), 1);
    db_close(db);
    free(path);
}

/* Stopped after 3 epochs and after 4 more (both in the user tokenizer, at and off a
 * checkpoint boundary), then resumed:
 * the same tokens and weights as one uninterrupted run. */
static void test_resume_equals_uninterrupted(void **state) {
    (void)state;
    sqlite3 *da, *db;
    char *pa = setup_db("full.db", &da), *pb = setup_db("resumed.db", &db);
    assert_int_equal(run_tok(pa, NULL), 0);
    assert_int_equal(run_tok(pb, "--stop-after-epochs 3"), 130);
    assert_int_equal(stage_current_run(db, "syn", "tokenize"), 0);
    assert_int_equal(run_tok(pb, "--stop-after-epochs 4"), 130);
    assert_int_equal(run_tok(pb, NULL), 0);
    int64_t ra = stage_current_run(da, "syn", "tokenize"), rb = stage_current_run(db, "syn", "tokenize");
    assert_true(ra > 0 && rb > 0);
    for (int e = 0; e < 2; e++) {
        const char *ent = e ? "item" : "user";
        int n = e ? NI : NU;
        int32_t *a = read_tokens(da, ra, ent, n, 3), *b = read_tokens(db, rb, ent, n, 3);
        assert_memory_equal(a, b, (size_t)n * 3 * sizeof(int32_t));
        free(a); free(b);
        char q[256];
        snprintf(q, sizeof q, "SELECT hex(weights) || hex(codebooks) || hex(bn_stats) || best_epoch "
                 "FROM tokenizers WHERE run_id=%lld AND entity='%s'", (long long)ra, ent);
        sqlite3_stmt *s1 = db_prep(da, q);
        snprintf(q, sizeof q, "SELECT hex(weights) || hex(codebooks) || hex(bn_stats) || best_epoch "
                 "FROM tokenizers WHERE run_id=%lld AND entity='%s'", (long long)rb, ent);
        sqlite3_stmt *s2 = db_prep(db, q);
        assert_int_equal(sqlite3_step(s1), SQLITE_ROW);
        assert_int_equal(sqlite3_step(s2), SQLITE_ROW);
        assert_string_equal(sqlite3_column_text(s1, 0), sqlite3_column_text(s2, 0));
        sqlite3_finalize(s1);
        sqlite3_finalize(s2);
    }
    /* the loss curve of the resumed run is complete */
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM metrics_log WHERE run_id=%lld AND name='user/loss'", (long long)rb);
    assert_int_equal(count(db, q), 20);
    db_close(da);
    db_close(db);
    free(pa);
    free(pb);
}

/* With 2 codewords in one codebook collisions are certain; the extra token separates them. */
static void test_disambiguate(void **state) {
    (void)state;
    sqlite3 *db;
    char *path = setup_db("dis.db", &db);
    assert_int_equal(run_tok(path, "--K 1 --L 2 --disambiguate"), 0);
    int64_t run = stage_current_run(db, "syn", "tokenize");
    char q[512];
    snprintf(q, sizeof q, "SELECT collisions FROM tokenize_stats WHERE run_id=%lld AND entity='item'", (long long)run);
    assert_true(count(db, q) >= NI - 2);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens WHERE run_id=%lld AND entity='item' AND book=1", (long long)run);
    assert_int_equal(count(db, q), NI);
    snprintf(q, sizeof q, "SELECT count(*) FROM (SELECT DISTINCT a.code, b.code FROM tokens a JOIN tokens b "
             "ON a.run_id=b.run_id AND a.entity=b.entity AND a.idx=b.idx AND a.book=0 AND b.book=1 "
             "WHERE a.run_id=%lld AND a.entity='item')", (long long)run);
    assert_int_equal(count(db, q), NI);
    /* the first (lowest idx) of each group gets 0 */
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens a WHERE a.run_id=%lld AND a.entity='item' AND a.book=1 AND a.code=0", (long long)run);
    int64_t zeros = count(db, q);
    snprintf(q, sizeof q, "SELECT distinct_tuples FROM tokenize_stats WHERE run_id=%lld AND entity='item'", (long long)run);
    assert_int_equal(zeros, count(db, q));
    db_close(db);
    free(path);
}

/* --holdout-users leaves users untokenized; --new-users tokenizes them through the frozen
 * tokenizer with their cf vectors, the same tokens tokenize_frozen gives. */
static void test_holdout_then_new_users(void **state) {
    (void)state;
    sqlite3 *db;
    char *path = setup_db("unseen.db", &db);
    assert_int_equal(run_tok(path, "--holdout-users 0.2"), 0);
    int64_t run = stage_current_run(db, "syn", "tokenize");
    char q[256];
    int excl = (int)(0.2 * NU);
    snprintf(q, sizeof q, "SELECT count(DISTINCT idx) FROM tokens WHERE run_id=%lld AND entity='user'", (long long)run);
    assert_int_equal(count(db, q), NU - excl);
    snprintf(q, sizeof q, "SELECT n_excluded FROM tokenize_stats WHERE run_id=%lld AND entity='user'", (long long)run);
    assert_int_equal(count(db, q), excl);
    assert_int_equal(run_tok(path, "--new-users"), 0);
    snprintf(q, sizeof q, "SELECT count(DISTINCT idx) FROM tokens WHERE run_id=%lld AND entity='user'", (long long)run);
    assert_int_equal(count(db, q), NU);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens_unseen WHERE run_id=%lld AND entity='user' AND origin='cf'", (long long)run);
    assert_int_equal(count(db, q), excl);
    /* same tokens as the frozen tokenizer on the cf vectors */
    int64_t cf = stage_current_run(db, "syn", "cf");
    float *X = read_vectors(db, cf, "user", NU);
    int32_t *want = malloc(NU * 3 * sizeof(int32_t)), *got = read_tokens(db, run, "user", NU, 3);
    assert_int_equal(tokenize_frozen(db, run, "user", X, NU, want), 0);
    assert_memory_equal(want, got, NU * 3 * sizeof(int32_t));
    /* nothing left: a second call adds none */
    assert_int_equal(run_tok(path, "--new-users"), 0);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens_unseen WHERE run_id=%lld", (long long)run);
    assert_int_equal(count(db, q), excl);
    free(X); free(want); free(got);
    db_close(db);
    free(path);
}

/* Users held out by the cf run (cf_holdout) are left out of the user tokenizer's training
 * and tokenized in the run itself by the frozen tokenizer (tokens_unseen, 'cf-holdout'):
 * the same tokens tokenize_frozen gives; tokenize's own --holdout-users is then refused. */
static void test_cf_holdout_users(void **state) {
    (void)state;
    sqlite3 *db;
    char *path = setup_db("cfhold.db", &db);
    int64_t cf = stage_current_run(db, "syn", "cf");
    int held[9] = {1, 5, 12, 20, 33, 47, 58, 70, 89};
    for (int j = 0; j < 9; j++) {
        char *q = sqlite3_mprintf("INSERT INTO cf_holdout (run_id, uid) VALUES (%lld, %d)", (long long)cf, held[j]);
        assert_int_equal(sqlite3_exec(db, q, 0, 0, 0), SQLITE_OK);
        sqlite3_free(q);
    }
    assert_int_not_equal(run_tok(path, "--holdout-users 0.2"), 0);
    assert_int_equal(run_tok(path, NULL), 0);
    int64_t run = stage_current_run(db, "syn", "tokenize");
    char q[256];
    snprintf(q, sizeof q, "SELECT n_excluded * 1000 + n_train + n_holdout FROM tokenize_stats WHERE run_id=%lld AND entity='user'", (long long)run);
    assert_int_equal(count(db, q), 9 * 1000 + NU - 9);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens_unseen t JOIN cf_holdout h ON h.uid = t.idx AND h.run_id=%lld "
             "WHERE t.run_id=%lld AND t.entity='user' AND t.origin='cf-holdout'", (long long)cf, (long long)run);
    assert_int_equal(count(db, q), 9);
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens_unseen WHERE run_id=%lld", (long long)run);
    assert_int_equal(count(db, q), 9);
    float *X = read_vectors(db, cf, "user", NU);
    int32_t *want = malloc(NU * 3 * sizeof(int32_t)), *got = read_tokens(db, run, "user", NU, 3);
    assert_int_equal(tokenize_frozen(db, run, "user", X, NU, want), 0);
    assert_memory_equal(want, got, NU * 3 * sizeof(int32_t));
    /* --new-users finds nothing left to add */
    assert_int_equal(run_tok(path, "--new-users"), 0);
    assert_int_equal(count(db, q), 9);
    free(X); free(want); free(got);
    db_close(db);
    free(path);
}

/* The propagated vector is sum_i e_i / sqrt(|N(u)| |N(i)|) over the user's train items. */
static void test_propagate_formula(void **state) {
    (void)state;
    sqlite3 *db;
    char *path = setup_db("prop.db", &db);
    int64_t cf = stage_current_run(db, "syn", "cf");
    int64_t ds = db_dataset_id(db, "syn");
    float *E = read_vectors(db, cf, "item", NI);
    int deg_i[NI] = {0}, deg_u[NU] = {0};
    sqlite3_stmt *st = db_prep(db, "SELECT uid, iid FROM interactions WHERE dataset_id=? AND split=0");
    sqlite3_bind_int64(st, 1, ds);
    while (sqlite3_step(st) == SQLITE_ROW) { deg_u[sqlite3_column_int(st, 0)]++; deg_i[sqlite3_column_int(st, 1)]++; }
    sqlite3_finalize(st);
    int32_t ids[2] = {0, 7};
    float out[2 * DIM];
    assert_int_equal(tokenize_propagate(db, "syn", cf, "user", ids, 2, DIM, out), 0);
    for (int j = 0; j < 2; j++) {
        double want[DIM] = {0};
        st = db_prep(db, "SELECT iid FROM interactions WHERE dataset_id=? AND split=0 AND uid=?");
        sqlite3_bind_int64(st, 1, ds);
        sqlite3_bind_int(st, 2, ids[j]);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int i = sqlite3_column_int(st, 0);
            for (int d = 0; d < DIM; d++) want[d] += E[i * DIM + d] / sqrt((double)deg_u[ids[j]] * deg_i[i]);
        }
        sqlite3_finalize(st);
        for (int d = 0; d < DIM; d++) assert_float_equal(out[j * DIM + d], want[d], 1e-5);
    }
    /* --new-users --propagate on users left out: origin 'propagated' */
    assert_int_equal(run_tok(path, "--holdout-users 0.1"), 0);
    assert_int_equal(run_tok(path, "--new-users --propagate"), 0);
    int64_t run = stage_current_run(db, "syn", "tokenize");
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM tokens_unseen WHERE run_id=%lld AND origin='propagated'", (long long)run);
    assert_int_equal(count(db, q), (int)(0.1 * NU));
    free(E);
    db_close(db);
    free(path);
}

static void test_bad_options(void **state) {
    (void)state;
    sqlite3 *db = tu_db("bad.db");
    assert_int_equal(tu_synthetic(db, "syn", 20, 30, 2, 5, 8, 3), 0);
    char *path = tu_path("bad.db");
    /* no cf run yet */
    assert_int_equal(run_tok(path, NULL), -1);
    assert_non_null(strstr(tr_errmsg(), "cf"));
    assert_int_equal(run_tok(path, "--source nope"), -1);
    assert_int_equal(run_tok(path, "--quantizer nope"), -1);
    assert_non_null(strstr(tr_errmsg(), "--quantizer: expected parallel or residual"));
    assert_int_equal(run_tok(path, "--new-users"), -1);
    db_close(db);
    free(path);
}

int main(void) {
    nn_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_end_to_end),
        cmocka_unit_test(test_resume_equals_uninterrupted),
        cmocka_unit_test(test_default_epochs),
        cmocka_unit_test(test_residual_quantizer),
        cmocka_unit_test(test_disambiguate),
        cmocka_unit_test(test_holdout_then_new_users),
        cmocka_unit_test(test_cf_holdout_users),
        cmocka_unit_test(test_propagate_formula),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
