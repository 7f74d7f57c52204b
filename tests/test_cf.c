/* test_cf: the normalised adjacency, propagation against a dense reference, the BPR
 * gradient through the propagation against finite differences, the negative sampler, the
 * ranking metrics, and the `cf` stage end to end (vectors, metrics, stop and resume). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cf.h"
#include "db.h"
#include "nn.h"
#include "rng.h"
#include "testutil.h"
#include "util.h"

/* A random dataset of U users and I items: each user gets train items with probability
 * ptrain (at least one), plus one valid and one test item not among them. */
static void random_data(cf_data *d, int U, int I, double ptrain, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    int32_t *u = malloc((size_t)U * I * sizeof *u), *i = malloc((size_t)U * I * sizeof *i),
            *s = malloc((size_t)U * I * sizeof *s);
    int64_t n = 0;
    for (int a = 0; a < U; a++) {
        int first = (int)rng_below(&r, (uint32_t)(I - 2));
        for (int b = 0; b < I - 2; b++)
            if (b == first || rng_uniform_d(&r) < ptrain) { u[n] = a; i[n] = b; s[n] = 0; n++; }
        u[n] = a; i[n] = I - 2; s[n] = 1; n++;
        u[n] = a; i[n] = I - 1; s[n] = 2; n++;
    }
    assert_int_equal(cf_data_from_triples(d, U, I, n, u, i, s), 0);
    free(u); free(i); free(s);
}

/* Users {0,1}, items {0,1,2}; train u0-i0, u0-i1, u1-i1, u1-i2. Degrees: u0 2, u1 2,
 * i0 1, i1 2, i2 1; so Â[u0,i0] = 1/sqrt(2), Â[u0,i1] = 1/2, and symmetrically. */
static void test_adjacency_hand(void **state) {
    (void)state;
    int32_t u[] = {0, 0, 1, 1, 0, 1}, i[] = {0, 1, 2, 1, 2, 0}, s[] = {0, 0, 0, 0, 1, 2};
    cf_data d;
    assert_int_equal(cf_data_from_triples(&d, 2, 3, 6, u, i, s), 0);
    assert_int_equal(d.n_train, 4);
    assert_int_equal(d.valid[0], 2);
    assert_int_equal(d.test[1], 0);
    cf_graph g;
    assert_int_equal(cf_graph_build(&g, &d), 0);
    assert_int_equal(g.n, 5);
    assert_int_equal(g.nnz, 8);
    const int64_t rowptr[] = {0, 2, 4, 5, 7, 8};
    const int32_t col[] = {2, 3, 3, 4, 0, 0, 1, 1};
    const float h = (float)(1.0 / sqrt(2.0)), q = 0.5f;
    const float val[] = {h, q, q, h, h, q, q, h};
    for (int r = 0; r <= 5; r++) assert_int_equal(g.rowptr[r], rowptr[r]);
    for (int k = 0; k < 8; k++) {
        assert_int_equal(g.col[k], col[k]);
        assert_true(g.val[k] == val[k]);
    }
    /* one propagation of a one-hot on i1 (node 3): lands on u0 and u1 with weight 1/2 */
    float x[5] = {0, 0, 0, 1, 0}, y[5];
    cf_spmm(y, NULL, &g, x, 1);
    assert_true(y[0] == 0.5f && y[1] == 0.5f && y[2] == 0 && y[3] == 0 && y[4] == 0);
    cf_graph_free(&g);
    cf_data_free(&d);
}

/* Dense double Â of a graph. */
static double *dense_adj(const cf_graph *g) {
    double *A = calloc((size_t)g->n * g->n, sizeof *A);
    for (int r = 0; r < g->n; r++)
        for (int64_t k = g->rowptr[r]; k < g->rowptr[r + 1]; k++)
            A[(size_t)r * g->n + g->col[k]] = g->val[k];
    return A;
}

/* mean = 1/(L+1) Σ_l A^l x in double. */
static void dense_propagate(double *mean, const double *A, const double *x, int n, int C, int L) {
    double *cur = malloc((size_t)n * C * sizeof *cur), *nxt = malloc((size_t)n * C * sizeof *nxt);
    memcpy(cur, x, (size_t)n * C * sizeof *cur);
    memcpy(mean, x, (size_t)n * C * sizeof *mean);
    for (int l = 1; l <= L; l++) {
        for (int r = 0; r < n; r++)
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int j = 0; j < n; j++) s += A[(size_t)r * n + j] * cur[(size_t)j * C + c];
                nxt[(size_t)r * C + c] = s;
            }
        for (size_t k = 0; k < (size_t)n * C; k++) mean[k] += nxt[k];
        double *t = cur; cur = nxt; nxt = t;
    }
    for (size_t k = 0; k < (size_t)n * C; k++) mean[k] /= L + 1;
    free(cur); free(nxt);
}

/* Propagation (C = 5 generic, 64 and 32 specialised kernels) matches the dense reference;
 * the graph is symmetric with the degree-normalised values. */
static void test_propagate_dense(void **state) {
    (void)state;
    cf_data d;
    random_data(&d, 9, 13, 0.3, 7);
    cf_graph g;
    cf_graph_build(&g, &d);
    int n = g.n;
    double *A = dense_adj(&g);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < n; c++) assert_true(A[(size_t)r * n + c] == A[(size_t)c * n + r]);
    assert_true(A[(size_t)0 * n + 0] == 0);       /* no self loops */
    const int Cs[] = {5, 32, 64};
    rng_t r;
    rng_seed(&r, 3);
    for (int t = 0; t < 3; t++) {
        int C = Cs[t];
        for (int L = 0; L <= 3; L++) {
            size_t m = (size_t)n * C;
            float *e0 = malloc(m * sizeof *e0), *mean = malloc(m * sizeof *mean),
                  *t0 = malloc(m * sizeof *t0), *t1 = malloc(m * sizeof *t1);
            double *x = malloc(m * sizeof *x), *ref = malloc(m * sizeof *ref);
            for (size_t k = 0; k < m; k++) x[k] = e0[k] = rng_normal(&r);
            cf_propagate_forward(mean, &g, e0, C, L, t0, t1);
            dense_propagate(ref, A, x, n, C, L);
            for (size_t k = 0; k < m; k++) assert_true(fabs(mean[k] - ref[k]) < 1e-5);
            free(e0); free(mean); free(t0); free(t1); free(x); free(ref);
        }
    }
    free(A);
    cf_graph_free(&g);
    cf_data_free(&d);
}

/* The backward pass is the adjoint of the forward: <y, P x> = <P^T y, x> for random x, y. */
static void test_backward_adjoint(void **state) {
    (void)state;
    cf_data d;
    random_data(&d, 11, 17, 0.25, 11);
    cf_graph g;
    cf_graph_build(&g, &d);
    int C = 64, L = 3;
    size_t m = (size_t)g.n * C;
    float *x = malloc(m * sizeof *x), *y = malloc(m * sizeof *y), *px = malloc(m * sizeof *px),
          *pty = calloc(m, sizeof *pty), *t0 = malloc(m * sizeof *t0), *t1 = malloc(m * sizeof *t1);
    rng_t r;
    rng_seed(&r, 5);
    for (size_t k = 0; k < m; k++) { x[k] = rng_normal(&r); y[k] = rng_normal(&r); }
    cf_propagate_forward(px, &g, x, C, L, t0, t1);
    double a = 0, b = 0;
    for (size_t k = 0; k < m; k++) a += (double)y[k] * px[k];
    float *ycopy = malloc(m * sizeof *ycopy);
    memcpy(ycopy, y, m * sizeof *y);
    cf_propagate_backward(pty, &g, ycopy, C, L, t0);
    for (size_t k = 0; k < m; k++) b += (double)pty[k] * x[k];
    assert_true(fabs(a - b) < 1e-4 * (fabs(a) + 1));
    free(x); free(y); free(px); free(pty); free(t0); free(t1); free(ycopy);
    cf_graph_free(&g);
    cf_data_free(&d);
}

/* The full loss in double: propagate e0 densely, BPR on the triples, L2 on ego rows. */
static double loss_double(const double *A, const double *e0, int n, int C, int L,
                          const int32_t *u, const int32_t *p, const int32_t *ng, int B, double decay) {
    double *mean = malloc((size_t)n * C * sizeof *mean);
    dense_propagate(mean, A, e0, n, C, L);
    double loss = 0, reg = 0;
    for (int b = 0; b < B; b++) {
        double sp = 0, sn = 0, r = 0;
        for (int c = 0; c < C; c++) {
            sp += mean[(size_t)u[b] * C + c] * mean[(size_t)p[b] * C + c];
            sn += mean[(size_t)u[b] * C + c] * mean[(size_t)ng[b] * C + c];
            r += e0[(size_t)u[b] * C + c] * e0[(size_t)u[b] * C + c] +
                 e0[(size_t)p[b] * C + c] * e0[(size_t)p[b] * C + c] +
                 e0[(size_t)ng[b] * C + c] * e0[(size_t)ng[b] * C + c];
        }
        loss += log1p(exp(sn - sp));
        reg += 0.5 * r;
    }
    free(mean);
    return loss / B + decay * reg / B;
}

/* The float loss through cf's own forward. */
static float loss_float(const cf_graph *g, const float *e0, int C, int L, const int32_t *u,
                        const int32_t *p, const int32_t *ng, int B, float decay, float *mean,
                        float *t0, float *t1, float *scratch) {
    cf_propagate_forward(mean, g, e0, C, L, t0, t1);
    return cf_bpr_forward_backward(mean, e0, u, p, ng, B, C, decay, NULL, NULL, scratch, NULL);
}

/* d loss / d e0 through BPR, L2 and three propagation layers: against central differences of
 * the double-precision reference (tight) and of cf's own float loss (loose, float noise). */
static void test_bpr_gradient_fd(void **state) {
    (void)state;
    cf_data d;
    random_data(&d, 5, 7, 0.4, 21);
    cf_graph g;
    cf_graph_build(&g, &d);
    int n = g.n, C = 4, B = 6;
    float decay = 0.05f;
    int U = d.n_users;
    /* triples with repeated rows, as real batches have */
    int32_t u[6] = {0, 1, 0, 4, 2, 0}, p[6], ng[6];
    rng_t r;
    rng_seed(&r, 9);
    for (int b = 0; b < B; b++) {
        int32_t uu = u[b];
        p[b] = U + d.item[d.off[uu] + rng_below(&r, (uint32_t)(d.off[uu + 1] - d.off[uu]))];
        ng[b] = U + cf_sample_negative(&d, uu, &r);
    }
    size_t m = (size_t)n * C;
    double *A = dense_adj(&g);
    for (int L = 0; L <= 3; L += 3) {
        float *e0 = malloc(m * sizeof *e0), *mean = malloc(m * sizeof *mean),
              *t0 = malloc(m * sizeof *t0), *t1 = malloc(m * sizeof *t1),
              *dmean = calloc(m, sizeof *dmean), *grad = calloc(m, sizeof *grad),
              *scratch = malloc(3 * B * sizeof *scratch);
        double *x = malloc(m * sizeof *x);
        for (size_t k = 0; k < m; k++) x[k] = e0[k] = 0.7f * rng_normal(&r);
        cf_propagate_forward(mean, &g, e0, C, L, t0, t1);
        float loss = cf_bpr_forward_backward(mean, e0, u, p, ng, B, C, decay, dmean, grad,
                                             scratch, NULL);
        cf_propagate_backward(grad, &g, dmean, C, L, t0);
        double lref = loss_double(A, x, n, C, L, u, p, ng, B, decay);
        assert_true(fabs(loss - lref) < 1e-5);
        double maxg = 0;
        for (size_t k = 0; k < m; k++) {
            double h = 1e-5, xk = x[k];
            x[k] = xk + h;
            double lp = loss_double(A, x, n, C, L, u, p, ng, B, decay);
            x[k] = xk - h;
            double lm = loss_double(A, x, n, C, L, u, p, ng, B, decay);
            x[k] = xk;
            double fd = (lp - lm) / (2 * h);
            assert_true(fabs(fd - grad[k]) < 1e-5 + 1e-4 * fabs(fd));
            if (fabs(fd) > maxg) maxg = fabs(fd);
            /* float central difference with a step float can resolve */
            float hf = 1e-2f, ek = e0[k];
            e0[k] = ek + hf;
            float fp = loss_float(&g, e0, C, L, u, p, ng, B, decay, mean, t0, t1, scratch);
            e0[k] = ek - hf;
            float fm = loss_float(&g, e0, C, L, u, p, ng, B, decay, mean, t0, t1, scratch);
            e0[k] = ek;
            float fdf = (fp - fm) / (2 * hf);
            assert_true(fabsf(fdf - grad[k]) < 1e-3f + 1e-2f * fabsf(grad[k]));
        }
        assert_true(maxg > 1e-3);       /* the check is not vacuous */
        free(e0); free(mean); free(t0); free(t1); free(dmean); free(grad); free(scratch); free(x);
    }
    free(A);
    cf_graph_free(&g);
    cf_data_free(&d);
}

/* Negatives are never train items, and every non-train item does come up. */
static void test_sampler(void **state) {
    (void)state;
    int I = 50;
    int32_t u[60], i[60], s[60];
    int n = 0;
    for (int k = 0; k < I; k++)
        if (k % 10 != 3) { u[n] = 0; i[n] = k; s[n] = 0; n++; }   /* 45 train items */
    u[n] = 1; i[n] = 7; s[n] = 0; n++;
    cf_data d;
    assert_int_equal(cf_data_from_triples(&d, 2, I, n, u, i, s), 0);
    assert_true(cf_is_train(&d, 0, 0) && !cf_is_train(&d, 0, 3) && cf_is_train(&d, 1, 7));
    rng_t r;
    rng_seed(&r, 1);
    int seen[50] = {0};
    for (int k = 0; k < 5000; k++) {
        int32_t neg = cf_sample_negative(&d, 0, &r);
        assert_true(neg >= 0 && neg < I);
        assert_false(cf_is_train(&d, 0, neg));
        assert_true(neg % 10 == 3);
        seen[neg]++;
    }
    for (int k = 3; k < I; k += 10) assert_true(seen[k] > 0);
    for (int k = 0; k < 1000; k++) assert_int_not_equal(cf_sample_negative(&d, 1, &r), 7);
    cf_data_free(&d);
    /* a user with every item in train has no negative: refused at load */
    int32_t u2[3] = {0, 0, 0}, i2[3] = {0, 1, 2}, s2[3] = {0, 0, 0};
    assert_int_equal(cf_data_from_triples(&d, 1, 3, 3, u2, i2, s2), -1);
    assert_non_null(strstr(tr_errmsg(), "every item"));
}

/* Ranks on hand-made scores: train items and (for test) the valid item are excluded; ties
 * go to the lower item id. */
static void test_evaluate_hand(void **state) {
    (void)state;
    /* user 0: train {0, 1}, valid 5, test 2; user 1: train {3}, valid 0, test 4 */
    int32_t u[] = {0, 0, 0, 0, 1, 1, 1}, i[] = {0, 1, 5, 2, 3, 0, 4}, s[] = {0, 0, 1, 2, 0, 1, 2};
    int I = 30;
    cf_data d;
    assert_int_equal(cf_data_from_triples(&d, 2, I, 7, u, i, s), 0);
    float uvec[4] = {1, 0, 1, 0};
    float ivec[60];
    /* item score = 100 - iid, except: item 5 scores 200 (above all), item 2 ties item 4 */
    for (int k = 0; k < I; k++) { ivec[2 * k] = 100.0f - k; ivec[2 * k + 1] = 0; }
    ivec[2 * 5] = 200;
    ivec[2 * 4] = 98;           /* same as item 2 */
    cf_metrics mv, mt;
    cf_evaluate(&d, uvec, ivec, 2, 1, &mv);
    cf_evaluate(&d, uvec, ivec, 2, 2, &mt);
    /* valid: user 0's target 5 is first (rank 0); user 1's target 0 (score 100) is behind
     * item 5 only (rank 1) */
    assert_int_equal(mv.n_users, 2);
    assert_true(fabs(mv.hr10 - 1.0) < 1e-12);
    assert_true(fabs(mv.ndcg10 - 0.5 * (1.0 + 1.0 / log2(3.0))) < 1e-12);
    /* test: user 0's target 2 (98): 0, 1 train and 5 valid excluded; item 4 ties but has a
     * higher id -> rank 0. user 1's target 4 (98): items 5 (200), 0 (100, the valid item,
     * excluded), 1 (99), 2 (98, tie, lower id) are ahead; 3 is train -> rank 3 */
    assert_true(fabs(mt.hr10 - 1.0) < 1e-12);
    assert_true(fabs(mt.ndcg20 - 0.5 * (1.0 + 1.0 / log2(5.0))) < 1e-12);
    /* 19 items above everything: user 0's test item at rank 19 (a hit at 20, not at 10),
     * user 1's at 22; with 20 such items user 0's falls to rank 20, a miss */
    for (int k = 6; k < 6 + 19; k++) ivec[2 * k] = 150;
    cf_evaluate(&d, uvec, ivec, 2, 2, &mt);
    assert_true(mt.hr10 == 0 && fabs(mt.hr20 - 0.5) < 1e-12);
    assert_true(fabs(mt.ndcg20 - 0.5 / log2(21.0)) < 1e-12);
    ivec[2 * 25] = 150;
    cf_evaluate(&d, uvec, ivec, 2, 2, &mt);
    assert_true(mt.hr20 == 0 && mt.ndcg20 == 0);
    cf_data_free(&d);
}

/* ---- end to end ---- */

static int run_cf(const char *db, const char *extra1, const char *extra2, const char *extra3) {
    const char *argv[32] = {"cf", "--db", db, "--dataset", "syn", "--epochs", "30",
                            "--eval-every", "5", "--batch", "256", "--quiet", "--threads", "1"};
    int argc = 14;
    if (extra1) argv[argc++] = extra1;
    if (extra2) argv[argc++] = extra2;
    if (extra3) argv[argc++] = extra3;
    return cmd_cf(argc, (char **)argv);
}

/* All vectors of the latest cf run, in (entity, kind, idx) order, as one byte string. */
static char *all_vectors(sqlite3 *db, size_t *len) {
    sqlite3_stmt *st = db_prep(db, "SELECT vec FROM cf_vectors WHERE run_id = (SELECT max(id) "
                                   "FROM stage_runs WHERE stage='cf' AND status='done') "
                                   "ORDER BY entity, kind, idx");
    assert_non_null(st);
    char *buf = NULL;
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int b = sqlite3_column_bytes(st, 0);
        buf = realloc(buf, n + (size_t)b);
        memcpy(buf + n, sqlite3_column_blob(st, 0), (size_t)b);
        n += (size_t)b;
    }
    sqlite3_finalize(st);
    *len = n;
    return buf;
}

static sqlite3 *syn_db(const char *name, char **path) {
    sqlite3 *db = tu_db(name);
    assert_non_null(db);
    assert_int_equal(tu_synthetic(db, "syn", 300, 120, 8, 8, 16, 42), 0);
    *path = tu_path(name);
    return db;
}

/* cf trains on a planted-cluster dataset: it writes 2 x (users + items) vectors per kind and
 * 8 metric rows, and its valid HR@10 is far above random (10 / ~110 candidates). A
 * single-threaded run gives the same bits; so does a run stopped twice (mid-epoch, then
 * later) and resumed. MF writes mean = ego. */
static void test_e2e_train_resume(void **state) {
    (void)state;
    char *p1, *p2, *p3;
    sqlite3 *db1 = syn_db("cf1.db", &p1), *db2 = syn_db("cf2.db", &p2), *db3 = syn_db("cf3.db", &p3);
    int U = (int)db_query_i64(db1, 0, "SELECT n_users FROM datasets WHERE name='syn'");
    int I = (int)db_query_i64(db1, 0, "SELECT n_items FROM datasets WHERE name='syn'");

    assert_int_equal(run_cf(p1, "--threads", "2", NULL), 0);
    assert_int_equal(db_query_i64(db1, 0, "SELECT count(*) FROM cf_vectors"), 2 * (U + I));
    assert_int_equal(db_query_i64(db1, 0, "SELECT count(*) FROM cf_vectors WHERE entity='item' AND kind='mean'"), I);
    assert_int_equal(db_query_i64(db1, 0, "SELECT count(*) FROM run_metrics WHERE method='lightgcn' AND metric IN ('hr','ndcg')"), 8);
    /* the users each split is over, and the chosen epoch, a validated one (every 5 epochs) */
    assert_int_equal(db_query_i64(db1, 0, "SELECT count(*) FROM run_metrics WHERE method='lightgcn' AND metric='users' AND value > 0"), 2);
    int64_t best = db_query_i64(db1, 0, "SELECT value FROM run_metrics WHERE split='train' AND metric='best_epoch'");
    assert_true(best > 0 && best % 5 == 0);
    assert_int_equal(db_query_i64(db1, 0, "SELECT min(length(vec)) FROM cf_vectors"), 64 * 4);
    assert_true(db_query_i64(db1, 0, "SELECT count(*) FROM metrics_log WHERE name='valid_hr20'") >= 6);
    double hr10 = tu_metric(db1, "lightgcn", "valid", "hr", 10), random_hr10 = 10.0 / (I - 10);
    fprintf(stderr, "syn: valid HR@10 %.3f test HR@10 %.3f (random about %.3f)\n", hr10,
            tu_metric(db1, "lightgcn", "test", "hr", 10), random_hr10);
    assert_true(hr10 > 4 * random_hr10);
    assert_true(tu_metric(db1, "lightgcn", "test", "hr", 10) > 4 * random_hr10);
    /* up to date: a second call does nothing */
    assert_int_equal(run_cf(p1, "--threads", "2", NULL), 0);
    assert_int_equal(db_query_i64(db1, 0, "SELECT count(*) FROM stage_runs WHERE stage='cf'"), 1);

    /* one thread gives the same bits as two */
    size_t n1, n2, n3;
    char *v1 = all_vectors(db1, &n1);
    assert_int_equal(run_cf(p3, "--threads", "1", NULL), 0);
    char *v3 = all_vectors(db3, &n3);
    assert_true(n3 == n1 && n1 > 0);
    assert_memory_equal(v1, v3, n1);
    free(v1); free(v3);

    /* resumption, with the pairs sampler (its shuffled order is in the checkpoint): stopped
     * mid-epoch at step 7, then at step 40, then run to the end, against one plain run */
    assert_int_equal(run_cf(p3, "--sampler", "pairs", NULL), 0);
    assert_int_equal(run_cf(p2, "--sampler", "pairs", "--stop-after-steps=7"), 130);
    assert_int_equal(db_query_i64(db2, 0, "SELECT count(*) FROM stage_runs WHERE stage='cf' AND status='stopped'"), 1);
    assert_int_equal(db_query_i64(db2, 0, "SELECT count(*) FROM cf_vectors"), 0);
    assert_true(db_query_i64(db2, 0, "SELECT count(*) FROM checkpoints") >= 5);
    assert_int_equal(run_cf(p2, "--sampler", "pairs", "--stop-after-steps=40"), 130);
    assert_int_equal(run_cf(p2, "--sampler", "pairs", NULL), 0);
    assert_int_equal(db_query_i64(db2, 0, "SELECT count(*) FROM stage_runs WHERE stage='cf'"), 1);
    assert_int_equal(db_query_i64(db2, 0, "SELECT count(*) FROM checkpoints"), 0);
    v3 = all_vectors(db3, &n3);
    char *v2 = all_vectors(db2, &n2);
    assert_true(n2 == n3 && n2 > 0);
    assert_memory_equal(v2, v3, n2);
    assert_true(tu_metric(db2, "lightgcn", "test", "ndcg", 20) == tu_metric(db3, "lightgcn", "test", "ndcg", 20));
    free(v2); free(v3);

    /* mf: same code path, no propagation, mean = ego */
    assert_int_equal(run_cf(p3, "--model", "mf", NULL), 0);
    assert_int_equal(db_query_i64(db3, 0,
        "SELECT count(*) FROM cf_vectors a JOIN cf_vectors b ON a.run_id=b.run_id AND "
        "a.entity=b.entity AND a.idx=b.idx AND a.kind='ego' AND b.kind='mean' AND a.vec=b.vec "
        "WHERE a.run_id=(SELECT max(id) FROM stage_runs WHERE stage='cf')"), U + I);
    assert_int_equal(db_query_i64(db3, 0, "SELECT count(*) FROM run_metrics WHERE method='mf' AND metric IN ('hr','ndcg')"), 8);
    assert_true(tu_metric(db3, "mf", "valid", "hr", 10) > 2 * random_hr10);

    /* the binary has the command */
    assert_int_equal(tu_run("%s cf --db %s --dataset syn --epochs 2 --batch 512 --quiet --force",
                            tu_bin(), p3), 0);
    db_close(db1); db_close(db2); db_close(db3);
    free(p1); free(p2); free(p3);
}

/* Bad options are refused with a message naming the option. */
static void test_options(void **state) {
    (void)state;
    const char *argv[] = {"cf", "--model", "gcn"};
    assert_int_equal(cmd_cf(3, (char **)argv), -1);
    assert_non_null(strstr(tr_errmsg(), "--model"));
    const char *argv2[] = {"cf", "--batch", "-1"};
    assert_int_equal(cmd_cf(3, (char **)argv2), -1);
    assert_non_null(strstr(tr_errmsg(), "--batch"));
}

/* The settings a dataset gets when --lr, --batch and --epochs are left at 0: its row of the
 * preset table (beauty, ml-1m), LightGCN's own for a dataset without one (syn); an option
 * given wins. Read back from the run's stored parameters. */
static void test_dataset_defaults(void **state) {
    (void)state;
    sqlite3 *db = tu_db("presets.db");
    assert_non_null(db);
    char *p = tu_path("presets.db");
    assert_int_equal(tu_synthetic(db, "syn", 60, 40, 4, 6, 10, 1), 0);
    assert_int_equal(tu_synthetic(db, "beauty", 60, 40, 4, 6, 10, 2), 0);
    assert_int_equal(tu_synthetic(db, "ml-1m", 60, 40, 4, 6, 10, 3), 0);
    const struct { const char *ds, *lr, *want[3]; } cases[] = {
        {"syn", NULL, {"\"lr\":0.001,", "\"batch\":2048,", "\"epochs\":1000,"}},
        {"beauty", NULL, {"\"lr\":0.005,", "\"batch\":2048,", "\"epochs\":100,"}},
        {"ml-1m", NULL, {"\"lr\":0.01,", "\"batch\":8192,", "\"epochs\":80,"}},
        {"ml-1m", "0.003", {"\"lr\":0.003,", "\"batch\":8192,", "\"epochs\":80,"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *argv[16] = {"cf", "--db", p, "--dataset", cases[i].ds, "--quiet", "--threads", "1",
                                "--stop-after-steps", "1", "--force"};
        int argc = 11;
        if (cases[i].lr) { argv[argc++] = "--lr"; argv[argc++] = cases[i].lr; }
        assert_int_equal(cmd_cf(argc, (char **)argv), 130);      /* stopped after one step */
        for (int k = 0; k < 3; k++)
            assert_int_equal(db_query_i64(db, -1, "SELECT instr(params, %Q) > 0 FROM stage_runs WHERE stage='cf' "
                                          "AND dataset=%Q ORDER BY id DESC LIMIT 1", cases[i].want[k], cases[i].ds), 1);
    }
    db_close(db);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adjacency_hand),
        cmocka_unit_test(test_propagate_dense),
        cmocka_unit_test(test_backward_adjoint),
        cmocka_unit_test(test_bpr_gradient_fd),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_evaluate_hand),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_dataset_defaults),
        cmocka_unit_test(test_e2e_train_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
