/* test_nn.c: every layer's backward against central finite differences of its forward,
 * the relative-position buckets against Hugging Face values, dropout's seeded mask, AdamW
 * against a hand-computed step, and gradient clipping.
 *
 * The scalar checked is L = sum(out * R) for a fixed random R, so the analytic gradient
 * is the layer's backward with dout = R. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "nn.h"
#include "rng.h"

static rng_t R;

static float *randv(size_t n, float s) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = s * rng_normal(&R);
    return v;
}
static float *zerov(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Compare the analytic gradient g of buffer x (n) with central differences of loss(). */
typedef double (*loss_fn)(void);
static int fd_check(const char *what, float *x, const float *g, size_t n, loss_fn loss, float h) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h; double lp = loss();
        x[i] = keep - h; double lm = loss();
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        if (!(fabs(fd - g[i]) <= 2e-2 * fabs(fd) + 2e-3)) {
            if (bad < 3) print_error("%s[%zu]: analytic %.6g, numeric %.6g\n", what, i, g[i], fd);
            bad++;
        }
    }
    return bad == 0;
}

/* ---- linear ---- */
enum { LN = 4, LIN = 5, LOUT = 3 };
static float *lx, *lw, *lb, *lr, *ly;
static int lbias;
static double linear_loss(void) {
    linear_forward(ly, lx, lw, lbias ? lb : NULL, LN, LIN, LOUT);
    return dotd(ly, lr, LN * LOUT);
}
static void linear_grads(void **state) {
    (void)state;
    for (lbias = 0; lbias < 2; lbias++) {
        lx = randv(LN * LIN, 1); lw = randv(LOUT * LIN, 1); lb = randv(LOUT, 1);
        lr = randv(LN * LOUT, 1); ly = zerov(LN * LOUT);
        float *dx = zerov(LN * LIN), *dw = zerov(LOUT * LIN), *db = zerov(LOUT);
        linear_loss();
        linear_backward(dx, dw, lbias ? db : NULL, lr, lx, lw, LN, LIN, LOUT);
        assert_true(fd_check("linear dx", lx, dx, LN * LIN, linear_loss, 1e-2f));
        assert_true(fd_check("linear dw", lw, dw, LOUT * LIN, linear_loss, 1e-2f));
        if (lbias) assert_true(fd_check("linear db", lb, db, LOUT, linear_loss, 1e-2f));
        /* backward accumulates */
        float before = dx[0];
        linear_backward(dx, NULL, NULL, lr, lx, lw, LN, LIN, LOUT);
        assert_true(fabsf(dx[0] - 2 * before) < 1e-5f);
        free(lx); free(lw); free(lb); free(lr); free(ly); free(dx); free(dw); free(db);
    }
}

/* ---- a linear large enough to take the threaded sgemm path ---- */
static void big_linear_matches_naive(void **state) {
    (void)state;
    int N = 300, in = 130, out = 97;
    float *x = randv((size_t)N * in, 1), *w = randv((size_t)out * in, 1), *b = randv(out, 1);
    float *y = zerov((size_t)N * out), *dw = zerov((size_t)out * in);
    linear_forward(y, x, w, b, N, in, out);
    linear_backward(NULL, dw, NULL, y, x, w, N, in, out);   /* dw = y^T x */
    for (int n = 0; n < N; n += 37)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++) s += (double)x[n * in + i] * w[o * in + i];
            assert_true(fabs(s - y[n * out + o]) < 1e-3 * (1 + fabs(s)));
        }
    for (int o = 0; o < out; o += 13)
        for (int i = 0; i < in; i += 7) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double)y[n * out + o] * x[n * in + i];
            assert_true(fabs(s - dw[o * in + i]) < 1e-3 * (1 + fabs(s)));
        }
    free(x); free(w); free(b); free(y); free(dw);
}

/* ---- RMS norm ---- */
enum { NN_ = 3, NC = 6 };
static float *nx, *nw, *nr, *ny, *nrs;
static double norm_loss(void) {
    rmsnorm_forward(ny, nrs, nx, nw, NN_, NC, 1e-6f);
    return dotd(ny, nr, NN_ * NC);
}
static void rmsnorm_grads(void **state) {
    (void)state;
    nx = randv(NN_ * NC, 1); nw = randv(NC, 1); nr = randv(NN_ * NC, 1);
    ny = zerov(NN_ * NC); nrs = zerov(NN_);
    float *dx = zerov(NN_ * NC), *dw = zerov(NC);
    norm_loss();
    rmsnorm_backward(dx, dw, nr, nx, nw, nrs, NN_, NC);
    assert_true(fd_check("rmsnorm dx", nx, dx, NN_ * NC, norm_loss, 1e-3f));
    assert_true(fd_check("rmsnorm dw", nw, dw, NC, norm_loss, 1e-3f));
    free(nx); free(nw); free(nr); free(ny); free(nrs); free(dx); free(dw);
}

/* ---- standard layer norm (SASRec) ---- */
static float *lnb, *lnm;
static double layernorm_loss(void) {
    layernorm_forward(ny, lnm, nrs, nx, nw, lnb, NN_, NC, 1e-5f);
    return dotd(ny, nr, NN_ * NC);
}
static void layernorm_grads(void **state) {
    (void)state;
    nx = randv(NN_ * NC, 1); nw = randv(NC, 1); lnb = randv(NC, 1); nr = randv(NN_ * NC, 1);
    for (int i = 0; i < NC; i++) nx[i] += 3.0f;          /* a row with a large mean */
    ny = zerov(NN_ * NC); nrs = zerov(NN_); lnm = zerov(NN_);
    float *dx = zerov(NN_ * NC), *dw = zerov(NC), *db = zerov(NC);
    layernorm_loss();
    layernorm_backward(dx, dw, db, nr, nx, nw, lnm, nrs, NN_, NC);
    assert_true(fd_check("layernorm dx", nx, dx, NN_ * NC, layernorm_loss, 1e-3f));
    assert_true(fd_check("layernorm dw", nw, dw, NC, layernorm_loss, 1e-3f));
    assert_true(fd_check("layernorm db", lnb, db, NC, layernorm_loss, 1e-3f));
    /* with w = 1, b = 0 every output row has mean 0 and variance 1 */
    for (int i = 0; i < NC; i++) { nw[i] = 1; lnb[i] = 0; }
    layernorm_loss();
    for (int n = 0; n < NN_; n++) {
        double s = 0, ss = 0;
        for (int c = 0; c < NC; c++) { s += ny[n * NC + c]; ss += (double)ny[n * NC + c] * ny[n * NC + c]; }
        assert_true(fabs(s / NC) < 1e-5 && fabs(ss / NC - 1) < 1e-3);
    }
    free(nx); free(nw); free(lnb); free(nr); free(ny); free(nrs); free(lnm); free(dx); free(dw); free(db);
}

/* ---- attention with relative bias, padding mask, causal ---- */
enum { AB = 2, AH = 2, AD = 3, ANB = 8 };
static int aTq, aTk, acausal;
static float *aq, *ak, *av, *atab, *abias, *aatt, *aattd, *aout, *ar, ap;
static uint8_t *adm;
static int32_t *abucket, *amask;
static double attn_loss(void) {
    rng_t d; rng_seed(&d, 5);
    relbias_forward(abias, abucket, atab, aTq, aTk, AH, ANB, 16, !acausal);
    attention_forward(aout, aatt, aattd, adm, aq, ak, av, AH * AD, AH * AD, abias, amask, acausal,
                      AB, aTq, aTk, AH, AD, ap, &d);
    return dotd(aout, ar, (size_t)AB * aTq * AH * AD);
}
static void attention_grads(void **state) {
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        acausal = variant == 1;
        ap = variant == 2 ? 0.3f : 0.0f;           /* dropout on the probabilities */
        aTq = acausal ? 5 : 4; aTk = 5;
        size_t nq = (size_t)AB * aTq * AH * AD, nk = (size_t)AB * aTk * AH * AD;
        aq = randv(nq, 0.7f); ak = randv(nk, 0.7f); av = randv(nk, 1); ar = randv(nq, 1);
        atab = randv(ANB * AH, 0.5f);
        abias = zerov((size_t)AH * aTq * aTk); aatt = zerov((size_t)AB * AH * aTq * aTk);
        aattd = zerov((size_t)AB * AH * aTq * aTk); adm = calloc((size_t)AB * AH * aTq * aTk, 1);
        aout = zerov(nq); abucket = calloc((size_t)aTq * aTk, sizeof(int32_t));
        int32_t mask[AB * 5] = { 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 };   /* row 1 padded */
        amask = acausal ? NULL : mask;
        attn_loss();
        /* masked keys and future keys get zero probability */
        if (!acausal) for (int h = 0; h < AH; h++) for (int i = 0; i < aTq; i++)
            assert_true(aatt[((size_t)(1 * AH + h) * aTq + i) * aTk + 4] < 1e-12f);
        else for (int i = 0; i < aTq; i++) for (int j = i + 1; j < aTk; j++)
            assert_true(aatt[(size_t)i * aTk + j] < 1e-12f);
        float *dq = zerov(nq), *dk = zerov(nk), *dv = zerov(nk);
        float *dbias = zerov((size_t)AH * aTq * aTk), *dtab = zerov(ANB * AH);
        float *scratch = zerov((size_t)AB * AH * aTq * aTk);
        attention_backward(dq, dk, dv, dbias, scratch, ar, aatt, aattd, adm, aq, ak, av, AH * AD,
                           AH * AD, AB, aTq, aTk, AH, AD, ap);
        relbias_backward(dtab, dbias, abucket, aTq, aTk, AH);
        assert_true(fd_check("attn dq", aq, dq, nq, attn_loss, 1e-2f));
        assert_true(fd_check("attn dk", ak, dk, nk, attn_loss, 1e-2f));
        assert_true(fd_check("attn dv", av, dv, nk, attn_loss, 1e-2f));
        assert_true(fd_check("attn dtable", atab, dtab, ANB * AH, attn_loss, 1e-2f));
        free(aq); free(ak); free(av); free(ar); free(atab); free(abias); free(aatt); free(aout);
        free(aattd); free(adm);
        free(abucket); free(dq); free(dk); free(dv); free(dbias); free(dtab); free(scratch);
    }
}

/* q, k, v as column blocks of one fused (N, 3HD) buffer give what separate buffers give. */
static void attention_fused_strides(void **state) {
    (void)state;
    enum { B = 2, T = 6, H = 2, D = 4, HD = H * D };
    float *q = randv(B * T * HD, 1), *k = randv(B * T * HD, 1), *v = randv(B * T * HD, 1);
    float *f = zerov(B * T * 3 * HD), o1[B * T * HD], o2[B * T * HD], a1[B * H * T * T], a2[B * H * T * T];
    for (int n = 0; n < B * T; n++)
        for (int j = 0; j < HD; j++) {
            f[n * 3 * HD + j] = q[n * HD + j];
            f[n * 3 * HD + HD + j] = k[n * HD + j];
            f[n * 3 * HD + 2 * HD + j] = v[n * HD + j];
        }
    attention_forward(o1, a1, NULL, NULL, q, k, v, HD, HD, NULL, NULL, 1, B, T, T, H, D, 0, NULL);
    attention_forward(o2, a2, NULL, NULL, f, f + HD, f + 2 * HD, 3 * HD, 3 * HD, NULL, NULL, 1,
                      B, T, T, H, D, 0, NULL);
    for (int i = 0; i < B * T * HD; i++) assert_true(fabsf(o1[i] - o2[i]) < 1e-6f);
    float *g1 = zerov(B * T * HD * 3), *g2 = zerov(B * T * 3 * HD), sc[B * H * T * T];
    attention_backward(g1, g1 + B * T * HD, g1 + 2 * B * T * HD, NULL, sc, o1, a1, NULL, NULL, q, k,
                       v, HD, HD, B, T, T, H, D, 0);
    attention_backward(g2, g2 + HD, g2 + 2 * HD, NULL, sc, o1, a2, NULL, NULL, f, f + HD, f + 2 * HD,
                       3 * HD, 3 * HD, B, T, T, H, D, 0);
    for (int n = 0; n < B * T; n++)
        for (int w = 0; w < 3; w++)
            for (int j = 0; j < HD; j++)
                assert_true(fabsf(g1[w * B * T * HD + n * HD + j] - g2[n * 3 * HD + w * HD + j]) < 1e-5f);
    free(q); free(k); free(v); free(f); free(g1); free(g2);
}

static void relative_buckets_match_hf(void **state) {
    (void)state;
    /* bidirectional, 32 buckets, max distance 128 (HF values) */
    assert_int_equal(t5_relative_bucket(0, 1, 32, 128), 0);
    assert_int_equal(t5_relative_bucket(1, 1, 32, 128), 17);
    assert_int_equal(t5_relative_bucket(-1, 1, 32, 128), 1);
    assert_int_equal(t5_relative_bucket(-7, 1, 32, 128), 7);
    assert_int_equal(t5_relative_bucket(-8, 1, 32, 128), 8);
    assert_int_equal(t5_relative_bucket(-100, 1, 32, 128), 15);
    assert_int_equal(t5_relative_bucket(100, 1, 32, 128), 31);
    assert_int_equal(t5_relative_bucket(-1000, 1, 32, 128), 15);
    /* causal */
    assert_int_equal(t5_relative_bucket(5, 0, 32, 128), 0);
    assert_int_equal(t5_relative_bucket(-5, 0, 32, 128), 5);
    assert_int_equal(t5_relative_bucket(-20, 0, 32, 128), 17);
    assert_int_equal(t5_relative_bucket(-500, 0, 32, 128), 31);
}

/* ---- feed-forward and head, with and without dropout (fixed seed) ---- */
enum { FN = 3, FC = 4, FF = 6 };
static float *fx, *fwi, *fwo, *fr, *fy, *fh, *fhd, fp;
static uint8_t *fmask;
static double ffn_loss(void) {
    rng_t d; rng_seed(&d, 99);
    ffn_forward(fy, fh, fhd, fmask, fx, fwi, fwo, FN, FC, FF, fp, &d);
    return dotd(fy, fr, FN * FC);
}
static void ffn_grads(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        fp = k ? 0.3f : 0.0f;
        fx = randv(FN * FC, 1); fwi = randv(FF * FC, 1); fwo = randv(FC * FF, 1); fr = randv(FN * FC, 1);
        fy = zerov(FN * FC); fh = zerov(FN * FF); fhd = zerov(FN * FF); fmask = calloc(FN * FF, 1);
        float *dx = zerov(FN * FC), *dwi = zerov(FF * FC), *dwo = zerov(FC * FF), *sc = zerov(FN * FF);
        ffn_loss();
        ffn_backward(dx, dwi, dwo, sc, fr, fx, fh, fhd, fmask, fwi, fwo, FN, FC, FF, fp);
        assert_true(fd_check("ffn dx", fx, dx, FN * FC, ffn_loss, 1e-3f));
        assert_true(fd_check("ffn dwi", fwi, dwi, FF * FC, ffn_loss, 1e-3f));
        assert_true(fd_check("ffn dwo", fwo, dwo, FC * FF, ffn_loss, 1e-3f));
        free(fx); free(fwi); free(fwo); free(fr); free(fy); free(fh); free(fhd); free(fmask);
        free(dx); free(dwi); free(dwo); free(sc);
    }
}

enum { HB = 3, HIN = 7, HH = 5, HO = 4 };
static float *hx, *hw1, *hb1, *hw2, *hb2, *hr, *hz, *hh, *hhd, hp;
static uint8_t *hmask;
static double head_loss(void) {
    rng_t d; rng_seed(&d, 7);
    head_forward(hz, hh, hhd, hmask, hx, hw1, hb1, hw2, hb2, HB, HIN, HH, HO, hp, &d);
    return dotd(hz, hr, HB * HO);
}
static void head_grads(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        hp = k ? 0.2f : 0.0f;
        hx = randv(HB * HIN, 1); hw1 = randv(HH * HIN, 1); hb1 = randv(HH, 1);
        hw2 = randv(HO * HH, 1); hb2 = randv(HO, 1); hr = randv(HB * HO, 1);
        hz = zerov(HB * HO); hh = zerov(HB * HH); hhd = zerov(HB * HH); hmask = calloc(HB * HH, 1);
        float *dx = zerov(HB * HIN), *dw1 = zerov(HH * HIN), *db1 = zerov(HH), *dw2 = zerov(HO * HH);
        float *db2 = zerov(HO), *sc = zerov(HB * HH);
        head_loss();
        head_backward(dx, dw1, db1, dw2, db2, sc, hr, hx, hh, hhd, hmask, hw1, hw2, HB, HIN, HH, HO, hp);
        assert_true(fd_check("head dx", hx, dx, HB * HIN, head_loss, 1e-3f));
        assert_true(fd_check("head dw1", hw1, dw1, HH * HIN, head_loss, 1e-3f));
        assert_true(fd_check("head db1", hb1, db1, HH, head_loss, 1e-3f));
        assert_true(fd_check("head dw2", hw2, dw2, HO * HH, head_loss, 1e-3f));
        assert_true(fd_check("head db2", hb2, db2, HO, head_loss, 1e-3f));
        free(hx); free(hw1); free(hb1); free(hw2); free(hb2); free(hr); free(hz); free(hh);
        free(hhd); free(hmask); free(dx); free(dw1); free(db1); free(dw2); free(db2); free(sc);
    }
}

/* ---- losses ---- */
enum { CB = 6, CD = 5 };
static float *cz, *cpos, *cneg;
static double cos_loss(void) { return cosine_loss_forward(cz, cpos, cneg, CB, CD); }
static void cosine_loss_grads(void **state) {
    (void)state;
    cz = randv(CB * CD, 1); cpos = randv(CB * CD, 1); cneg = randv(CB * CD, 1);
    /* make sure both hinge branches occur */
    for (int d = 0; d < CD; d++) { cneg[d] = cz[d] + 0.1f; cneg[CD + d] = -cz[CD + d]; }
    float *dz = zerov(CB * CD);
    cosine_loss_backward(dz, cz, cpos, cneg, CB, CD, 1.0f);
    assert_true(fd_check("cosine dz", cz, dz, CB * CD, cos_loss, 1e-3f));
    /* z = pos and z = -neg gives 0 */
    float z[2] = { 1, 2 }, p[2] = { 2, 4 }, n[2] = { -1, -2 };
    assert_true(fabsf(cosine_loss_forward(z, p, n, 1, 2)) < 1e-6f);
    /* orthogonal: pos term 1, neg term 0, mean over 2 pairs = 0.5 */
    float n2[2] = { -2, 1 };
    assert_true(fabsf(cosine_loss_forward(z, n2, n2, 1, 2) - 0.5f) < 1e-6f);
    free(cz); free(cpos); free(cneg); free(dz);
}

enum { SB = 4, SV = 7 };
static float *sl, *sp;
static int32_t st[SB] = { 0, 3, 6, 2 };
static double xent_loss(void) { return softmax_xent_forward(sp, sl, st, SB, SV); }
static void softmax_xent_grads(void **state) {
    (void)state;
    sl = randv(SB * SV, 2); sp = zerov(SB * SV);
    float *dl = zerov(SB * SV);
    xent_loss();
    for (int b = 0; b < SB; b++) {
        double s = 0;
        for (int j = 0; j < SV; j++) s += sp[b * SV + j];
        assert_true(fabs(s - 1) < 1e-5);
    }
    softmax_xent_backward(dl, sp, st, SB, SV, 1.0f);
    assert_true(fd_check("xent dlogits", sl, dl, SB * SV, xent_loss, 1e-3f));
    free(sl); free(sp); free(dl);
}

/* The fused, in-place form gives the pair's summed loss and scale x its gradient; a -inf
 * logit (a masked column) gets probability and gradient 0. */
static void softmax_xent_inplace_matches(void **state) {
    (void)state;
    sl = randv(SB * SV, 3); sp = zerov(SB * SV);
    sl[1 * SV + 5] = -INFINITY;
    float *dl = zerov(SB * SV), *in = zerov(SB * SV);
    memcpy(in, sl, sizeof(float) * SB * SV);
    double want = xent_loss() * SB;
    softmax_xent_backward(dl, sp, st, SB, SV, 0.5f * SB);
    double rl[SB];
    assert_true(fabs(softmax_xent_inplace(in, st, SB, SV, 0.5f, 0, rl) - want) < 1e-5);
    memcpy(in, sl, sizeof(float) * SB * SV);
    assert_true(fabs(softmax_xent_inplace(in, st, SB, SV, 0.5f, 1, rl) - want) < 1e-5);
    for (int i = 0; i < SB * SV; i++) assert_true(fabsf(in[i] - dl[i]) < 1e-6f);
    assert_true(in[1 * SV + 5] == 0.0f);
    free(sl); free(sp); free(dl); free(in);
}

enum { SMN = 3, SMC = 5 };
static float *smx, *smy, *smr;
static double softmax_loss(void) { softmax_forward(smy, smx, SMN, SMC); return dotd(smy, smr, SMN * SMC); }
static void softmax_grads(void **state) {
    (void)state;
    smx = randv(SMN * SMC, 1); smy = zerov(SMN * SMC); smr = randv(SMN * SMC, 1);
    float *dx = zerov(SMN * SMC);
    softmax_loss();
    softmax_backward(dx, smr, smy, SMN, SMC);
    assert_true(fd_check("softmax dx", smx, dx, SMN * SMC, softmax_loss, 1e-3f));
    free(smx); free(smy); free(smr); free(dx);
}

/* ---- dropout, relu, embedding ---- */
static void dropout_seeded(void **state) {
    (void)state;
    size_t n = 10000;
    float *x = randv(n, 1), *y1 = zerov(n), *y2 = zerov(n), *dx = zerov(n), *dy = randv(n, 1);
    uint8_t *m1 = malloc(n), *m2 = malloc(n);
    rng_t a, b; rng_seed(&a, 3); rng_seed(&b, 3);
    dropout_forward(y1, m1, x, n, 0.25f, &a);
    dropout_forward(y2, m2, x, n, 0.25f, &b);
    assert_memory_equal(m1, m2, n);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        kept += m1[i];
        assert_true(m1[i] ? fabsf(y1[i] - x[i] / 0.75f) < 1e-6f : y1[i] == 0.0f);
    }
    assert_true(kept > 7200 && kept < 7800);
    dropout_backward(dx, dy, m1, n, 0.25f);
    for (size_t i = 0; i < n; i++) assert_true(fabsf(dx[i] - (m1[i] ? dy[i] / 0.75f : 0)) < 1e-6f);
    /* no rng: identity */
    dropout_forward(y2, m2, x, n, 0.25f, NULL);
    assert_memory_equal(y2, x, n * sizeof(float));
    free(x); free(y1); free(y2); free(dx); free(dy); free(m1); free(m2);
}

static void relu_and_embedding(void **state) {
    (void)state;
    float x[4] = { -1, 2, 0, 3 }, y[4], dy[4] = { 1, 1, 1, 1 }, dx[4] = { 0 };
    relu_forward(y, x, 4);
    assert_true(y[0] == 0 && y[1] == 2 && y[2] == 0 && y[3] == 3);
    relu_backward(dx, dy, y, 4);
    assert_true(dx[0] == 0 && dx[1] == 1 && dx[2] == 0 && dx[3] == 1);
    float tab[3 * 2] = { 1, 2, 3, 4, 5, 6 }, out[4 * 2], dt[6] = { 0 }, g[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
    int32_t ids[4] = { 2, 0, 2, 1 };
    embedding_forward(out, ids, tab, 4, 2);
    assert_true(out[0] == 5 && out[1] == 6 && out[2] == 1 && out[7] == 4);
    embedding_backward(dt, g, ids, 4, 2);
    assert_true(dt[0] == 1 && dt[2] == 1 && dt[4] == 2 && dt[5] == 2);
}

/* ---- optimisation ---- */
static void adamw_matches_hand_computation(void **state) {
    (void)state;
    adamw_cfg c = { 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f };
    float p[2] = { 1.0f, -2.0f }, g[2] = { 0.5f, -1.0f }, m[2] = { 0 }, v[2] = { 0 };
    adamw_update(&c, p, g, m, v, 2, 1);
    /* step 1: mhat = g, vhat = g^2, update = lr * sign(g) (eps aside) after decay */
    double e0 = 1.0 * (1 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8);
    double e1 = -2.0 * (1 - 0.1 * 0.01) - 0.1 * -1.0 / (1.0 + 1e-8);
    assert_true(fabs(p[0] - e0) < 1e-6 && fabs(p[1] - e1) < 1e-6);
    /* step 2 with g = 0.25: hand-computed moments */
    double m1 = 0.1 * 0.5, v1 = 0.001 * 0.25;
    double m2 = 0.9 * m1 + 0.1 * 0.25, v2 = 0.999 * v1 + 0.001 * 0.0625;
    double mh = m2 / (1 - 0.81), vh = v2 / (1 - 0.999 * 0.999);
    double e2 = e0 * (1 - 0.001) - 0.1 * mh / (sqrt(vh) + 1e-8);
    g[0] = 0.25f;
    adamw_update(&c, p, g, m, v, 1, 2);
    assert_true(fabs(m[0] - m2) < 1e-6 * m2 + 1e-9 && fabs(v[0] - v2) < 1e-4 * v2);
    assert_true(fabs(p[0] - e2) < 1e-6);
}

static void gradient_clipping(void **state) {
    (void)state;
    float g[4] = { 3, 4, 0, 0 };
    assert_true(fabsf(grad_norm(g, 4) - 5.0f) < 1e-6f);
    float n = grad_clip(g, 4, 1.0f);
    assert_true(fabsf(n - 5.0f) < 1e-6f);
    assert_true(fabsf(grad_norm(g, 4) - 1.0f) < 1e-5f);
    assert_true(fabsf(g[0] - 0.6f) < 1e-5f);
    float h[2] = { 0.3f, 0.4f };
    grad_clip(h, 2, 1.0f);                 /* below the limit: unchanged */
    assert_true(h[0] == 0.3f && h[1] == 0.4f);
}

int main(void) {
    nn_set_threads(0);
    rng_seed(&R, 2024);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linear_grads),
        cmocka_unit_test(big_linear_matches_naive),
        cmocka_unit_test(rmsnorm_grads),
        cmocka_unit_test(layernorm_grads),
        cmocka_unit_test(attention_grads),
        cmocka_unit_test(attention_fused_strides),
        cmocka_unit_test(relative_buckets_match_hf),
        cmocka_unit_test(ffn_grads),
        cmocka_unit_test(head_grads),
        cmocka_unit_test(cosine_loss_grads),
        cmocka_unit_test(softmax_xent_grads),
        cmocka_unit_test(softmax_xent_inplace_matches),
        cmocka_unit_test(softmax_grads),
        cmocka_unit_test(dropout_seeded),
        cmocka_unit_test(relu_and_embedding),
        cmocka_unit_test(adamw_matches_hand_computation),
        cmocka_unit_test(gradient_clipping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
