/* test_mq: the MQ-Tokenizer math. Finite-difference checks of BatchNorm (train mode), the
 * straight-through quantizer and the whole tokenizer loss; nearest-codeword search against
 * brute force; training, resume and token statistics on small synthetic vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "mq.h"
#include "nn.h"
#include "rng.h"

static void fill_normal(float *p, size_t n, float s, rng_t *r) {
    for (size_t i = 0; i < n; i++) p[i] = s * rng_normal(r);
}

/* |a - n| <= atol + rtol * max(|a|, |n|) */
static int close_enough(double a, double n, double atol, double rtol) {
    double m = fabs(a) > fabs(n) ? fabs(a) : fabs(n);
    return fabs(a - n) <= atol + rtol * m;
}

/* ---- BatchNorm ---- */

static double bn_loss(const float *x, const float *g, const float *b, const float *wt, int N,
                      int C) {
    float y[64], xh[64], mean[8], rstd[8], rm[8] = {0}, rv[8] = {0};
    batchnorm_forward(y, xh, mean, rstd, x, g, b, rm, rv, N, C, 1, 0.0f, 1e-5f);
    double s = 0;
    for (int i = 0; i < N * C; i++) s += (double)wt[i] * y[i];
    return s;
}

static void test_batchnorm_gradcheck(void **state) {
    (void)state;
    enum { N = 6, C = 4 };
    rng_t r;
    rng_seed(&r, 1);
    float x[N * C], g[C], b[C], wt[N * C];
    fill_normal(x, N * C, 1.0f, &r);
    fill_normal(wt, N * C, 1.0f, &r);
    for (int c = 0; c < C; c++) { g[c] = 0.5f + rng_uniform(&r); b[c] = rng_normal(&r); }
    float y[N * C], xh[N * C], mean[C], rstd[C], rm[C] = {0}, rv[C] = {0};
    batchnorm_forward(y, xh, mean, rstd, x, g, b, rm, rv, N, C, 1, 0.0f, 1e-5f);
    float dx[N * C] = {0}, dg[C] = {0}, db[C] = {0};
    batchnorm_backward(dx, dg, db, wt, xh, g, rstd, N, C);
    const float eps = 1e-2f;
    for (int i = 0; i < N * C; i++) {
        float s = x[i];
        x[i] = s + eps; double lp = bn_loss(x, g, b, wt, N, C);
        x[i] = s - eps; double lm = bn_loss(x, g, b, wt, N, C);
        x[i] = s;
        assert_true(close_enough(dx[i], (lp - lm) / (2 * eps), 1e-3, 1e-2));
    }
    for (int c = 0; c < C; c++) {
        float s = g[c];
        g[c] = s + eps; double lp = bn_loss(x, g, b, wt, N, C);
        g[c] = s - eps; double lm = bn_loss(x, g, b, wt, N, C);
        g[c] = s;
        assert_true(close_enough(dg[c], (lp - lm) / (2 * eps), 1e-3, 1e-2));
        s = b[c];
        b[c] = s + eps; lp = bn_loss(x, g, b, wt, N, C);
        b[c] = s - eps; lm = bn_loss(x, g, b, wt, N, C);
        b[c] = s;
        assert_true(close_enough(db[c], (lp - lm) / (2 * eps), 1e-3, 1e-2));
    }
}

/* Running statistics follow PyTorch (unbiased variance, momentum 0.1) and eval mode uses them. */
static void test_batchnorm_running_stats(void **state) {
    (void)state;
    float x[4 * 1] = {1, 2, 3, 6}, g[1] = {2}, b[1] = {0.5f}, rm[1] = {0}, rv[1] = {1};
    float y[4], xh[4], mean[1], rstd[1];
    batchnorm_forward(y, xh, mean, rstd, x, g, b, rm, rv, 4, 1, 1, 0.1f, 1e-5f);
    /* mean 3, biased var 3.5, unbiased 14/3 */
    assert_float_equal(mean[0], 3.0f, 1e-6);
    assert_float_equal(rm[0], 0.3f, 1e-6);
    assert_float_equal(rv[0], 0.9f + 0.1f * 14.0f / 3.0f, 1e-5);
    assert_float_equal(y[3], 2.0f * 3.0f / sqrtf(3.5f + 1e-5f) + 0.5f, 1e-5);
    float ye[1], xe[1] = {2};
    batchnorm_forward(ye, NULL, NULL, NULL, xe, g, b, rm, rv, 1, 1, 0, 0.1f, 1e-5f);
    assert_float_equal(ye[0], 2.0f * (2 - rm[0]) / sqrtf(rv[0] + 1e-5f) + 0.5f, 1e-5);
}

/* ---- quantizer ---- */

static void test_vq_assign_bruteforce(void **state) {
    (void)state;
    enum { N = 37, L = 11, D = 9 };
    rng_t r;
    rng_seed(&r, 2);
    float a[N * D], C[L * D], dist[N * L], cn[L];
    fill_normal(a, N * D, 1.0f, &r);
    fill_normal(C, L * D, 1.0f, &r);
    int32_t codes[N];
    vq_assign(codes, dist, cn, a, C, N, L, D);
    for (int n = 0; n < N; n++) {
        int best = 0;
        double bv = 1e30;
        for (int l = 0; l < L; l++) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                double e = a[n * D + d] - C[l * D + d];
                s += e * e;
            }
            if (s < bv) { bv = s; best = l; }
        }
        assert_int_equal(codes[n], best);
    }
}

/* One straight-through gradient check's inputs: a and C vary, the rest is held fixed. */
typedef struct {
    float *a, *C;
    const int32_t *codes;
    const float *sa, *sq, *w;
    int N, D;
    float beta;
} vq_case;

/* Surrogate with the stop-gradient constants held fixed: its true gradient is the
 * straight-through gradient. f = sum(w . c^) + cb + beta cm. */
static double vq_loss(const vq_case *v) {
    float chat[64];
    double cb, cm;
    vq_forward(chat, &cb, &cm, v->a, v->C, v->codes, v->sa, v->sq, v->N, v->D);
    double s = 0;
    for (int i = 0; i < v->N * v->D; i++) s += (double)v->w[i] * chat[i];
    return s + cb + v->beta * cm;
}

/* Assert that grad matches the central differences of vq_loss in the n entries of x (v->a
 * or v->C). */
static void vq_gradcheck(const vq_case *v, float *x, const float *grad, int n) {
    const float eps = 1e-2f;
    for (int i = 0; i < n; i++) {
        float s = x[i];
        x[i] = s + eps; double lp = vq_loss(v);
        x[i] = s - eps; double lm = vq_loss(v);
        x[i] = s;
        assert_true(close_enough(grad[i], (lp - lm) / (2 * eps), 1e-4, 1e-3));
    }
}

static void test_vq_straight_through_gradcheck(void **state) {
    (void)state;
    enum { N = 8, L = 5, D = 6 };
    rng_t r;
    rng_seed(&r, 3);
    float a[N * D], C[L * D], dist[N * L], cn[L], w[N * D], sa[N * D], sq[N * D];
    fill_normal(a, N * D, 1.0f, &r);
    fill_normal(C, L * D, 1.0f, &r);
    fill_normal(w, N * D, 1.0f, &r);
    int32_t codes[N];
    vq_assign(codes, dist, cn, a, C, N, L, D);
    memcpy(sa, a, sizeof a);
    for (int n = 0; n < N; n++) memcpy(sq + n * D, C + codes[n] * D, D * sizeof(float));
    const float beta = 0.25f;
    float da[N * D] = {0}, dC[L * D] = {0};
    vq_backward(da, dC, w, a, C, codes, sa, sq, N, D, 1.0f, beta);
    /* the value: c^ equals the selected codeword, exactly */
    float chat[N * D];
    double cb, cm;
    vq_forward(chat, &cb, &cm, a, C, codes, sa, sq, N, D);
    for (int i = 0; i < N * D; i++) assert_float_equal(chat[i], sq[i], 1e-6);
    assert_true(cb > 0 && fabs(cb - cm) < 1e-9);
    const vq_case v = {a, C, codes, sa, sq, w, N, D, beta};
    vq_gradcheck(&v, a, da, N * D);
    vq_gradcheck(&v, C, dC, L * D);
    int nonzero = 0;
    for (int i = 0; i < L * D; i++) nonzero += dC[i] != 0;
    assert_true(nonzero > 0);
    /* the reconstruction path reaches a (straight through) but never the codebook */
    float dC2[L * D] = {0}, da2[N * D] = {0};
    vq_backward(da2, dC2, w, a, C, codes, sa, sq, N, D, 0.0f, 0.0f);
    for (int i = 0; i < L * D; i++) assert_true(dC2[i] == 0.0f);
    for (int i = 0; i < N * D; i++) assert_float_equal(da2[i], w[i], 1e-7);
}

/* ---- the whole tokenizer loss ---- */

static mq_cfg small_cfg(void) {
    mq_cfg c = mq_default_cfg();
    c.d_in = 6; c.h1 = 8; c.h2 = 7; c.d_c = 5; c.K = 2; c.L = 4;
    return c;
}

static double model_loss(mq_model *m, mq_ws *ws, const float *x, int N, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    mq_forward(m, ws, x, N, 1, 0, &r, 1);
    return ws->loss;
}

/* Every parameter's gradient of the whole loss against central differences, with the
 * codes and stop-gradient constants held fixed; residual 1: the residual form. */
static void model_loss_gradcheck(int residual) {
    enum { N = 10 };
    mq_cfg cfg = small_cfg();
    cfg.residual = residual;
    rng_t r;
    rng_seed(&r, 4);
    mq_model m;
    assert_int_equal(mq_model_init(&m, &cfg, &r), 0);
    /* codebooks near the encoder outputs' scale, so all terms matter */
    fill_normal(m.params + m.off_cb, m.n_params - m.off_cb, 0.5f, &r);
    float x[N * 6];
    fill_normal(x, N * 6, 1.0f, &r);
    mq_ws ws;
    mq_ws_init(&ws, &m, N);
    rng_t dr;
    rng_seed(&dr, 99);
    mq_forward(&m, &ws, x, N, 1, 0, &dr, 0);   /* codes and stop-gradient constants */
    double l0 = ws.loss;
    assert_true(ws.recon > 0 && ws.cb > 0 && ws.cm > 0);
    mq_backward(&m, &ws, x);
    float *grad = malloc(m.n_params * sizeof(float));
    memcpy(grad, ws.grad, m.n_params * sizeof(float));
    assert_true(fabs(model_loss(&m, &ws, x, N, 99) - l0) < 1e-9);
    /* central differences; a ReLU kink within eps of a pre-activation spoils one step
     * size, so a mismatch is retried once with a third of it */
    int bad = 0, checked = 0;
    for (size_t i = 0; i < m.n_params; i++) {
        double num = 0;
        int ok = 0;
        for (float eps = 1e-3f; eps > 1e-4f && !ok; eps /= 3) {
            float s = m.params[i];
            m.params[i] = s + eps; double lp = model_loss(&m, &ws, x, N, 99);
            m.params[i] = s - eps; double lm = model_loss(&m, &ws, x, N, 99);
            m.params[i] = s;
            num = (lp - lm) / (2 * eps);
            ok = close_enough(grad[i], num, 2e-3, 2e-2);
        }
        if (!ok) {
            bad++;
            if (bad < 5) print_message("param %zu: analytic %g numeric %g\n", i, grad[i], num);
        }
        checked++;
    }
    assert_int_equal(checked, (int)m.n_params);
    assert_int_equal(bad, 0);
    free(grad);
    mq_ws_free(&ws);
    mq_model_free(&m);
}

/* state: the int residual flag (0 parallel, 1 residual), set in main's test table */
static void test_model_loss_gradcheck(void **state) {
    model_loss_gradcheck(*(const int *)*state);
}

/* The residual form has one encoder, and codebook k's code is the nearest codeword to what
 * the codebooks before it left of the encoder output (checked by brute force); the decoder
 * input is the sum of the chosen codewords. */
static void test_residual_codes(void **state) {
    (void)state;
    enum { N = 12 };
    mq_cfg cp = small_cfg(), cr = cp;
    cr.residual = 1;
    rng_t r;
    rng_seed(&r, 21);
    mq_model mp, m;
    assert_int_equal(mq_model_init(&mp, &cp, &r), 0);
    assert_int_equal(mq_model_init(&m, &cr, &r), 0);
    size_t enc1 = mp.enc[1].w[0] - mp.enc[0].w[0];     /* floats of one encoder */
    assert_int_equal(mp.n_params - m.n_params, (cp.K - 1) * enc1);
    fill_normal(m.params + m.off_cb, m.n_params - m.off_cb, 0.5f, &r);
    float x[N * 6];
    fill_normal(x, N * 6, 1.0f, &r);
    mq_ws ws;
    mq_ws_init(&ws, &m, N);
    mq_forward(&m, &ws, x, N, 0, 0, NULL, 0);
    int D = cr.d_c, L = cr.L;
    float *res = malloc(sizeof(float) * D), *sum = malloc(sizeof(float) * D);
    for (int n = 0; n < N; n++) {
        memcpy(res, ws.enc[0].out + (size_t)n * D, sizeof(float) * D);
        memset(sum, 0, sizeof(float) * D);
        for (int k = 0; k < cr.K; k++) {
            const float *C = m.params + m.off_cb + (size_t)k * L * D;
            int best = 0;
            double bd = 1e300;
            for (int l = 0; l < L; l++) {
                double d2 = 0;
                for (int d = 0; d < D; d++) d2 += ((double)res[d] - C[l * D + d]) * ((double)res[d] - C[l * D + d]);
                if (d2 < bd - 1e-9) { bd = d2; best = l; }
            }
            assert_int_equal(ws.codes[(size_t)k * N + n], best);
            for (int d = 0; d < D; d++) { res[d] -= C[best * D + d]; sum[d] += C[best * D + d]; }
        }
        for (int d = 0; d < D; d++) assert_float_equal(ws.mix[(size_t)n * D + d], sum[d], 1e-5);
    }
    free(res); free(sum);
    mq_ws_free(&ws);
    mq_model_free(&m);
    mq_model_free(&mp);
}

/* ---- training ---- */

/* n points around nc centres in d dims */
static float *clustered(int n, int d, int nc, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    float *cent = malloc((size_t)nc * d * sizeof(float)), *x = malloc((size_t)n * d * sizeof(float));
    fill_normal(cent, (size_t)nc * d, 1.0f, &r);
    for (int i = 0; i < n; i++) {
        int c = (int)rng_below(&r, (uint32_t)nc);
        for (int j = 0; j < d; j++) x[i * d + j] = cent[c * d + j] + 0.3f * rng_normal(&r);
    }
    free(cent);
    return x;
}

static mq_cfg tiny_cfg(void) {
    mq_cfg c = mq_default_cfg();
    c.d_in = 8; c.h1 = 16; c.h2 = 24; c.d_c = 16; c.K = 3; c.L = 16;
    return c;
}

static mq_train_cfg tiny_train(void) {
    mq_train_cfg t = mq_default_train_cfg();
    t.batch = 64;
    t.kmeans_iters = 10;
    t.reseed_every = 2;
    return t;
}

/* Training lowers the loss; a run saved after 3 epochs and resumed equals an uninterrupted
 * one bit for bit; tokens are deterministic and in range; a cut blob is refused. */
static void train_and_resume(int residual) {
    enum { n = 200, d = 8 };
    float *X = clustered(n, d, 12, 5);
    int32_t tr[160], ho[40];
    for (int i = 0; i < 160; i++) tr[i] = i;
    for (int i = 0; i < 40; i++) ho[i] = 160 + i;
    mq_cfg cfg = tiny_cfg();
    cfg.residual = residual;
    mq_train_cfg tc = tiny_train();
    /* uninterrupted: 20 epochs (enough for BatchNorm's running statistics to settle) */
    mq_trainer a;
    assert_int_equal(mq_trainer_init(&a, &cfg, 7), 0);
    mq_ws ws;
    mq_ws_init(&ws, &a.model, tc.batch);
    mq_epoch_stats st, first;
    for (int e = 0; e < 20; e++) {
        assert_int_equal(mq_train_epoch(&a, &ws, &tc, X, tr, 160, ho, 40, &st), 0);
        if (e == 0) first = st;
    }
    assert_true(st.loss < first.loss);
    assert_true(a.best_epoch >= 1 && a.best_mse < 1e30);
    /* interrupted after 10, saved, loaded into a fresh trainer, 10 more */
    mq_trainer b, c;
    assert_int_equal(mq_trainer_init(&b, &cfg, 7), 0);
    for (int e = 0; e < 10; e++) assert_int_equal(mq_train_epoch(&b, &ws, &tc, X, tr, 160, ho, 40, &st), 0);
    void *blob;
    size_t nb;
    assert_int_equal(mq_trainer_save(&b, &blob, &nb), 0);
    mq_trainer_free(&b);
    assert_int_equal(mq_trainer_init(&c, &cfg, 12345), 0);
    assert_int_equal(mq_trainer_load(&c, blob, nb), 0);
    free(blob);
    for (int e = 0; e < 10; e++) assert_int_equal(mq_train_epoch(&c, &ws, &tc, X, tr, 160, ho, 40, &st), 0);
    assert_int_equal(c.epoch, 20);
    assert_memory_equal(a.model.params, c.model.params, a.model.n_params * sizeof(float));
    assert_memory_equal(a.best_params, c.best_params, a.model.n_params * sizeof(float));
    assert_memory_equal(a.model.bn, c.model.bn, a.model.n_bn * sizeof(float));
    assert_true(a.best_mse == c.best_mse);
    /* the best model tokenizes deterministically, and every code is in range */
    mq_trainer_use_best(&a);
    int32_t *c1 = malloc(n * 3 * sizeof(int32_t)), *c2 = malloc(n * 3 * sizeof(int32_t));
    mq_encode(&a.model, &ws, X, NULL, n, c1, NULL);
    mq_encode(&a.model, &ws, X, NULL, n, c2, NULL);
    assert_memory_equal(c1, c2, n * 3 * sizeof(int32_t));
    for (int i = 0; i < n * 3; i++) assert_true(c1[i] >= 0 && c1[i] < cfg.L);
    mq_token_stats ts;
    mq_token_stats_compute(c1, n, 3, cfg.L, &ts);
    assert_true(ts.distinct > 24);     /* twice the 12 clusters */
    /* a blob in the MQTRN01 layout (before mq_cfg gained residual) still loads a parallel
     * trainer: rebuild one from the current blob and compare */
    if (!residual) {
        assert_int_equal(mq_trainer_save(&a, &blob, &nb), 0);
        size_t h2 = 8 + 52 + 4 + 16 + sizeof(rng_t) + 32 + 8;      /* MQTRN02 header, padded */
        size_t h1 = 8 + 48 + 16 + sizeof(rng_t) + 32 + 8;          /* MQTRN01 header */
        char *old = calloc(1, nb - h2 + h1);
        memcpy(old, "MQTRN01", 8);
        memcpy(old + 8, (char *)blob + 8, 48);                         /* cfg without residual */
        memcpy(old + 56, (char *)blob + 64, h1 - 56);                  /* counters, rng, best */
        memcpy(old + h1, (char *)blob + h2, nb - h2);
        mq_trainer d;
        assert_int_equal(mq_trainer_init(&d, &cfg, 99), 0);
        assert_int_equal(mq_trainer_load(&d, old, nb - h2 + h1), 0);
        assert_int_equal(d.epoch, a.epoch);
        assert_true(d.best_mse == a.best_mse);
        assert_memory_equal(d.model.params, a.model.params, a.model.n_params * sizeof(float));
        mq_trainer_free(&d);
        free(old);
        free(blob);
    }
    /* a corrupted blob is refused */
    assert_int_equal(mq_trainer_save(&a, &blob, &nb), 0);
    assert_int_equal(mq_trainer_load(&c, blob, nb - 4), -1);
    free(blob);
    free(c1); free(c2);
    mq_trainer_free(&a);
    mq_trainer_free(&c);
    mq_ws_free(&ws);
    free(X);
}

/* state: the int residual flag, as for test_model_loss_gradcheck */
static void test_train_and_resume(void **state) {
    train_and_resume(*(const int *)*state);
}

/* ---- statistics and disambiguation ---- */

static void test_token_stats_and_disambiguate(void **state) {
    (void)state;
    /* 6 entities, K = 2: tuples (0,1) x3, (2,3) x2, (1,1) x1 */
    int32_t codes[12] = {0, 1, 2, 3, 0, 1, 1, 1, 2, 3, 0, 1};
    mq_token_stats s;
    mq_token_stats_compute(codes, 6, 2, 4, &s);
    assert_int_equal(s.distinct, 3);
    assert_int_equal(s.largest_group, 3);
    assert_int_equal(s.collisions, 3);
    assert_int_equal(s.used[0], 3);       /* 0, 2, 1 */
    assert_int_equal(s.used[1], 2);       /* 1, 3 */
    /* book 0: p = 3/6, 2/6, 1/6 */
    double h = -(0.5 * log(0.5) + (2.0 / 6) * log(2.0 / 6) + (1.0 / 6) * log(1.0 / 6));
    assert_float_equal(s.perplexity[0], exp(h), 1e-9);
    int32_t extra[6];
    assert_int_equal(mq_disambiguate(codes, 6, 2, extra), 3);
    int32_t want[6] = {0, 0, 1, 0, 1, 2};
    assert_memory_equal(extra, want, sizeof want);
}

int main(void) {
    static int parallel = 0, residual = 1;
    nn_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batchnorm_gradcheck),
        cmocka_unit_test(test_batchnorm_running_stats),
        cmocka_unit_test(test_vq_assign_bruteforce),
        cmocka_unit_test(test_vq_straight_through_gradcheck),
        {"test_model_loss_gradcheck", test_model_loss_gradcheck, NULL, NULL, &parallel},
        {"test_residual_loss_gradcheck", test_model_loss_gradcheck, NULL, NULL, &residual},
        cmocka_unit_test(test_residual_codes),
        {"test_train_and_resume", test_train_and_resume, NULL, NULL, &parallel},
        {"test_residual_train_and_resume", test_train_and_resume, NULL, NULL, &residual},
        cmocka_unit_test(test_token_stats_and_disambiguate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
