/* test_unseen: the unseen-user test. The held-out choice (deterministic by seed, of the right
 * size), its removal from cf's data and graph, held-out users having no influence at all on
 * the trained cf vectors, the fold-in formula, finetune's samples never holding a held-out
 * user, tokenize refusing a second choice, and the whole chain on a small synthetic dataset
 * through the binary: cf --holdout-users, tokenize, finetune, evaluate --unseen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cf.h"
#include "db.h"
#include "recmodel.h"
#include "rng.h"
#include "stage.h"
#include "testutil.h"
#include "tokenize.h"
#include "unseen.h"
#include "util.h"

/* Split a command line and call fn in-process. */
static int call(int (*fn)(int, char **), const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char *argv[64];
    int argc = 0;
    char *save, *tok = strtok_r(line, " ", &save);
    while (tok && argc < 63) { argv[argc++] = tok; tok = strtok_r(NULL, " ", &save); }
    argv[argc] = NULL;
    return fn(argc, argv);
}

static void pick_is_deterministic_and_sized(void **state) {
    (void)state;
    enum { N = 1090 };
    uint8_t a[N], b[N], c[N];
    assert_int_equal(unseen_pick(N, 0.1, 2020, a), 109);
    assert_int_equal(unseen_pick(N, 0.1, 2020, b), 109);
    assert_memory_equal(a, b, N);
    int n = 0;
    for (int u = 0; u < N; u++) n += a[u];
    assert_int_equal(n, 109);
    assert_int_equal(unseen_pick(N, 0.1, 2021, c), 109);
    assert_true(memcmp(a, c, N) != 0);                  /* another seed, another set */
    assert_int_equal(unseen_pick(N, 0.0, 2020, c), 0);
    for (int u = 0; u < N; u++) assert_int_equal(c[u], 0);
    assert_int_equal(unseen_pick(N, 0.5, 1, c), 545);
}

/* A random dataset: each user 3..12 distinct items, the last two valid and test. */
static void random_data(cf_data *d, int U, int I, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    int32_t *u = malloc(U * 12 * sizeof *u), *it = malloc(U * 12 * sizeof *it), *sp = malloc(U * 12 * sizeof *sp);
    int64_t n = 0;
    for (int v = 0; v < U; v++) {
        int len = 3 + (int)rng_below(&r, 10);
        int32_t start = (int32_t)rng_below(&r, (uint32_t)I);
        for (int k = 0; k < len; k++) {
            u[n] = v; it[n] = (start + 3 * k) % I; sp[n] = k < len - 2 ? 0 : k == len - 2 ? 1 : 2; n++;
        }
    }
    assert_int_equal(cf_data_from_triples(d, U, I, n, u, it, sp), 0);
    free(u); free(it); free(sp);
}

static void drop_leaves_held_users_out_of_the_graph(void **state) {
    (void)state;
    enum { U = 80, I = 50 };
    cf_data full, tr;
    random_data(&full, U, I, 3);
    uint8_t held[U];
    int nh = unseen_pick(U, 0.25, 9, held);
    assert_int_equal(nh, 20);
    assert_int_equal(unseen_cf_drop(&full, held, &tr), 0);
    int64_t want = 0;
    for (int u = 0; u < U; u++) if (!held[u]) want += full.off[u + 1] - full.off[u];
    assert_int_equal(tr.n_train, want);
    for (int u = 0; u < U; u++) {
        if (held[u]) {
            assert_int_equal(tr.off[u + 1] - tr.off[u], 0);
            assert_int_equal(tr.valid[u], -1);
            assert_int_equal(tr.test[u], -1);
        } else {
            assert_int_equal(tr.off[u + 1] - tr.off[u], full.off[u + 1] - full.off[u]);
            assert_memory_equal(tr.item + tr.off[u], full.item + full.off[u],
                                (size_t)(full.off[u + 1] - full.off[u]) * sizeof(int32_t));
            assert_int_equal(tr.valid[u], full.valid[u]);
            assert_int_equal(tr.test[u], full.test[u]);
        }
    }
    for (int64_t k = 0; k < tr.n_train; k++) assert_false(held[tr.pair_user[k]]);
    cf_graph g;
    assert_int_equal(cf_graph_build(&g, &tr), 0);
    for (int u = 0; u < U; u++) if (held[u]) assert_int_equal(g.rowptr[u + 1] - g.rowptr[u], 0);
    for (int64_t k = 0; k < g.nnz; k++) if (g.col[k] < U) assert_false(held[g.col[k]]);
    cf_graph_free(&g);
    cf_data_free(&tr);
    cf_data_free(&full);
}

/* row_u = s v/|v|, v = sum_i x_i / sqrt(|N(u)| deg(i)), s = mean norm of the trained users. */
static void fold_in_formula(void **state) {
    (void)state;
    /* users 0, 1 trained; user 2 held with items 0, 1, 2; item 2 only has user 2 */
    int32_t u[] = {0, 0, 1, 2, 2, 2, 0, 0, 1, 1, 2, 2};
    int32_t i[] = {0, 1, 0, 0, 1, 2, 3, 4, 3, 4, 3, 4};
    int32_t s[] = {0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 1, 2};
    cf_data full, tr;
    assert_int_equal(cf_data_from_triples(&full, 3, 5, 12, u, i, s), 0);
    uint8_t held[3] = {0, 0, 1};
    assert_int_equal(unseen_cf_drop(&full, held, &tr), 0);
    enum { C = 2 };
    float t[8 * C] = {3, 4,   0, 2,   9, 9,               /* users: norms 5 and 2 */
                      1, 0,   0, 1,   7, 7,   5, 5,  6, 6};  /* items 0..4 */
    unseen_fold_in(&full, &tr, held, t, C);
    /* deg(0) = 2, deg(1) = 1, item 2 skipped; |N(2)| = 3 */
    double v0 = 1 / sqrt(3.0 * 2), v1 = 1 / sqrt(3.0 * 1), nv = sqrt(v0 * v0 + v1 * v1);
    assert_float_equal(t[2 * C + 0], 3.5 * v0 / nv, 1e-5);
    assert_float_equal(t[2 * C + 1], 3.5 * v1 / nv, 1e-5);
    assert_float_equal(t[0], 3, 0); assert_float_equal(t[3], 2, 0);    /* others untouched */
    cf_data_free(&tr);
    cf_data_free(&full);
}

/* Held-out users have no influence on cf training: a copy of the dataset whose held-out
 * users interacted with other items gives bit-identical vectors for every other user and
 * every item. */
static void held_users_do_not_influence_cf(void **state) {
    (void)state;
    enum { U = 120, I = 80 };
    sqlite3 *a = tu_db("infl_a.db"), *b = tu_db("infl_b.db");
    assert_int_equal(tu_synthetic(a, "syn", U, I, 4, 6, 12, 5), 0);
    assert_int_equal(tu_synthetic(b, "syn", U, I, 4, 6, 12, 5), 0);
    uint8_t held[U];
    assert_int_equal(unseen_pick(U, 0.2, 77, held), 24);
    /* in b, the held-out users' train items move by one (a bijection, so still distinct) */
    for (int u = 0; u < U; u++)
        if (held[u]) {
            char *q = sqlite3_mprintf("UPDATE interactions SET iid = (iid + 1) %% %d WHERE uid=%d AND split=0", I, u);
            assert_int_equal(sqlite3_exec(b, q, 0, 0, 0), SQLITE_OK);
            sqlite3_free(q);
        }
    db_close(a);
    db_close(b);
    char *pa = tu_path("infl_a.db"), *pb = tu_path("infl_b.db");
    const char *opt = "--dataset syn --epochs 6 --eval-every 3 --dim 16 --batch 128 --threads 1 --quiet "
                      "--seed 77 --holdout-users 0.2";
    assert_int_equal(call(cmd_cf, "cf --db %s %s", pa, opt), 0);
    assert_int_equal(call(cmd_cf, "cf --db %s %s", pb, opt), 0);
    a = db_open(pa, 0);
    assert_non_null(a);
    char *q = sqlite3_mprintf("ATTACH %Q AS b", pb);
    assert_int_equal(sqlite3_exec(a, q, 0, 0, 0), SQLITE_OK);
    sqlite3_free(q);
    /* the same held-out set was recorded in both */
    assert_int_equal(db_query_i64(a, -1, "SELECT count(*) FROM main.cf_holdout"), 24);
    assert_int_equal(db_query_i64(a, -1, "SELECT count(*) FROM main.cf_holdout x JOIN b.cf_holdout y USING (uid)"), 24);
    for (int u = 0; u < U; u++)
        if (held[u]) assert_int_equal(db_query_i64(a, 0, "SELECT count(*) FROM main.cf_holdout WHERE uid=%d", u), 1);
    /* every vector of a seen user or an item is bit-identical; a held user's differs */
    assert_int_equal(db_query_i64(a, -1, "SELECT count(*) FROM main.cf_vectors"), 2 * (U + I));
    assert_int_equal(db_query_i64(a, -1,
        "SELECT count(*) FROM main.cf_vectors x JOIN b.cf_vectors y USING (entity, kind, idx) "
        "WHERE x.vec = y.vec AND NOT (x.entity = 'user' AND x.idx IN (SELECT uid FROM main.cf_holdout))"),
        2 * (U - 24 + I));
    assert_true(db_query_i64(a, -1,
        "SELECT count(*) FROM main.cf_vectors x JOIN b.cf_vectors y USING (entity, kind, idx) "
        "WHERE x.vec <> y.vec AND x.entity = 'user' AND x.idx IN (SELECT uid FROM main.cf_holdout)") > 0);
    /* the seen-user metrics exist, and the held users' under test_unseen */
    assert_int_equal(db_query_i64(a, -1, "SELECT count(*) FROM main.run_metrics WHERE split='test_unseen' AND metric<>'users'"), 4);
    assert_int_equal(db_query_i64(a, -1, "SELECT value FROM main.run_metrics WHERE split='test_unseen' AND metric='users'"), 24);
    db_close(a);
    free(pa); free(pb);
}

/* rec_samples never makes a sample of a skipped user. */
static void samples_skip_unseen_users(void **state) {
    (void)state;
    enum { U = 10 };
    rec_data d;
    memset(&d, 0, sizeof d);
    d.n_users = U;
    d.n_items = 30;
    d.off = malloc((U + 1) * sizeof *d.off);
    d.seq = malloc(U * 8 * sizeof *d.seq);
    d.off[0] = 0;
    for (int u = 0; u < U; u++) {
        for (int k = 0; k < 8; k++) d.seq[u * 8 + k] = (u + k) % 30;
        d.off[u + 1] = d.off[u] + 8;
    }
    int64_t n_all, n;
    rec_sample *s = rec_samples(&d, 50, 1, -1, &n_all);
    free(s);
    d.skip = calloc(U, 1);
    d.skip[2] = d.skip[7] = 1;
    s = rec_samples(&d, 50, 1, -1, &n);
    assert_int_equal(n, n_all - 2 * 5);                 /* 6 train items: targets 1..5 */
    for (int64_t k = 0; k < n; k++) assert_true(s[k].user != 2 && s[k].user != 7);
    free(s);
    rec_data_free(&d);
}

#define CF  TU_E2E_CF " --holdout-users 0.2"
#define TOK TU_E2E_TOK
#define FT  "--preset tiny --epochs 2 --hist 20 --batch 32 --lr 3e-3 --warmup 20 --quiet"

/* The whole chain on the synthetic dataset through the binary. */
static void chain_with_unseen_users(void **state) {
    (void)state;
    char *f = tu_path("synth.txt"), *dbp = tu_path("chain.db");
    assert_int_equal(tu_synthetic_file(f, 300, 120, 6, 10, 20, 7), 0);
    const char *b = tu_bin();
    assert_int_equal(tu_run("%s ingest --quiet --db %s --dataset synth --file %s --format sequence", b, dbp, f), 0);
    assert_int_equal(tu_run("%s cf --db %s %s", b, dbp, CF), 0);
    /* tokenize's own --holdout-users would be a second, different choice: refused */
    assert_int_not_equal(tu_run("%s tokenize --db %s %s --holdout-users 0.1 2>/dev/null", b, dbp, TOK), 0);
    assert_int_equal(tu_run("%s tokenize --db %s %s", b, dbp, TOK), 0);
    assert_int_equal(tu_run("%s finetune --db %s %s", b, dbp, FT), 0);
    assert_int_equal(tu_run("%s evaluate --db %s --unseen --quiet", b, dbp), 0);
    sqlite3 *db = db_open(dbp, 1);
    int64_t cf = stage_current_run(db, "synth", "cf"), tok = stage_current_run(db, "synth", "tokenize");
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM cf_holdout WHERE run_id=%lld", (long long)cf), 60);
    /* the held-out users were tokenized by the frozen tokenizer, and only they are unseen */
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM tokens_unseen WHERE run_id=%lld AND "
                                          "origin='cf-holdout' AND idx IN (SELECT uid FROM cf_holdout WHERE run_id=%lld)",
                                          (long long)tok, (long long)cf), 60);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM tokens_unseen WHERE run_id=%lld", (long long)tok), 60);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(DISTINCT idx) FROM tokens WHERE run_id=%lld AND entity='user'",
                                  (long long)tok), 300);
    assert_int_equal(db_query_i64(db, -1, "SELECT n_excluded FROM tokenize_stats WHERE run_id=%lld AND entity='user'",
                                  (long long)tok), 60);
    assert_int_equal(db_query_i64(db, -1, "SELECT n_train + n_holdout FROM tokenize_stats WHERE run_id=%lld AND entity='user'",
                                  (long long)tok), 240);
    /* their tokens are the frozen tokenizer's on their (folded-in) cf vectors */
    uint8_t held[300];
    assert_int_equal(unseen_cf_load(db, cf, held, 300), 60);
    float *X = malloc(60 * 32 * sizeof *X);
    int32_t ids[60], n = 0;
    sqlite3_stmt *st = db_prep(db, "SELECT idx, vec FROM cf_vectors WHERE run_id=? AND entity='user' AND kind='ego' ORDER BY idx");
    sqlite3_bind_int64(st, 1, cf);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int u = sqlite3_column_int(st, 0);
        if (!held[u]) continue;
        assert_int_equal(db_column_floats(st, 1, X + (size_t)n * 32, 32), 0);
        ids[n++] = u;
    }
    sqlite3_finalize(st);
    assert_int_equal(n, 60);
    int32_t codes[60 * 3];
    assert_int_equal(tokenize_frozen(db, tok, "user", X, 60, codes), 0);
    for (int j = 0; j < 60; j++)
        for (int k = 0; k < 3; k++)
            assert_int_equal(db_query_i64(db, -1, "SELECT code FROM tokens WHERE run_id=%lld AND entity='user' AND idx=%d AND book=%d",
                                          (long long)tok, ids[j], k), codes[j * 3 + k]);
    free(X);
    /* both metric sets, for tokenrec and the lightgcn baseline */
    const char *methods[2] = {"tokenrec", "lightgcn"};
    for (int m = 0; m < 2; m++)
        for (int s = 0; s < 2; s++) {
            int64_t got = db_query_i64(db, -1, "SELECT count(*) FROM run_metrics WHERE method=%Q AND split=%Q AND "
                                               "metric IN ('hr','ndcg') AND k IN (10,20,30) AND value BETWEEN 0 AND 1 AND "
                                               "run_id = (SELECT max(run_id) FROM run_metrics WHERE method=%Q AND split='test_unseen')",
                                       methods[m], s ? "test_unseen" : "test", methods[m]);
            assert_int_equal(got, 6);
        }
    /* one list per user, seen and unseen, none with a known item */
    int64_t ev = db_query_i64(db, 0, "SELECT max(run_id) FROM run_metrics WHERE method='tokenrec' AND split='test_unseen'");
    assert_int_equal(db_query_i64(db, 0, "SELECT count(DISTINCT uid) FROM recommendations WHERE run_id=%lld", (long long)ev), 300);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM recommendations r JOIN interactions i ON "
                                          "i.uid = r.uid AND i.iid = r.iid AND i.split < 2 WHERE r.run_id=%lld", (long long)ev), 0);
    double seen = (double)db_query_i64(db, 0, "SELECT CAST(value * 1e6 AS INTEGER) FROM run_metrics WHERE run_id=%lld AND "
                                              "split='test' AND metric='hr' AND k=10", (long long)ev) / 1e6;
    double unseen = (double)db_query_i64(db, 0, "SELECT CAST(value * 1e6 AS INTEGER) FROM run_metrics WHERE run_id=%lld AND "
                                                "split='test_unseen' AND metric='hr' AND k=10", (long long)ev) / 1e6;
    fprintf(stderr, "synthetic: tokenrec test HR@10 seen %.3f unseen %.3f\n", seen, unseen);
    db_close(db);
    /* the report has a row for the held-out users of each method */
    char *txt = tu_report_md(dbp);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "| synth | tokenrec (unseen users) |"));
    assert_non_null(strstr(txt, "| synth | lightgcn (unseen users) |"));
    assert_non_null(strstr(txt, "| synth | tokenrec |"));
    free(txt);
    free(f); free(dbp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pick_is_deterministic_and_sized),
        cmocka_unit_test(drop_leaves_held_users_out_of_the_graph),
        cmocka_unit_test(fold_in_formula),
        cmocka_unit_test(samples_skip_unseen_users),
        cmocka_unit_test(held_users_do_not_influence_cf),
        cmocka_unit_test(chain_with_unseen_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
