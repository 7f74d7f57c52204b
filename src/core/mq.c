/* mq.c: the MQ-Tokenizer's layers, model, training epoch, k-means and token statistics
 * (see mq.h for the model and the parameter layout). */
#include "mq.h"
#include "nn.h"
#include "util.h"
#include <float.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

mq_cfg mq_default_cfg(void) {
    mq_cfg c = {64, 128, 256, 512, 3, 256, 0.2f, 0.5f, 0.2f, 0.25f, 1e-5f, 0.1f, 0};
    return c;
}

mq_train_cfg mq_default_train_cfg(void) {
    mq_train_cfg t = {1e-3f, 0.01f, 512, 300, 10, 20, 5};
    return t;
}

/* Range checks, so that a bad option fails with a message rather than a crash. */
int mq_cfg_check(const mq_cfg *c) {
    if (c->d_in < 1 || c->h1 < 1 || c->h2 < 1 || c->d_c < 1)
        return tr_error("mq: expected positive dimensions, got d_in %d h1 %d h2 %d d_c %d",
                        c->d_in, c->h1, c->h2, c->d_c);
    if (c->K < 1 || c->K > MQ_MAXK)
        return tr_error("mq: expected 1 <= K <= %d codebooks, got %d", MQ_MAXK, c->K);
    if (c->L < 2 || c->L > 65536)
        return tr_error("mq: expected 2 <= L <= 65536 codewords, got %d", c->L);
    if (!(c->rho >= 0 && c->rho < 1) || !(c->p1 >= 0 && c->p1 < 1) || !(c->p2 >= 0 && c->p2 < 1))
        return tr_error("mq: expected mask ratio and dropouts in [0,1), got %g %g %g",
                        c->rho, c->p1, c->p2);
    if (!(c->beta >= 0)) return tr_error("mq: expected beta >= 0, got %g", c->beta);
    if (c->residual != 0 && c->residual != 1)
        return tr_error("mq: expected residual 0 or 1, got %d", c->residual);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Model layout and initialisation
 * --------------------------------------------------------------------------------------- */

/* Lay out one MLP with dims d0..d3 at the running offsets. */
static void mlp_layout(mq_mlp *l, int d0, int d1, int d2, int d3, size_t *off, size_t *boff) {
    l->d[0] = d0; l->d[1] = d1; l->d[2] = d2; l->d[3] = d3;
    for (int i = 0; i < 3; i++) {
        l->w[i] = *off; *off += (size_t)l->d[i + 1] * l->d[i];
        l->b[i] = *off; *off += (size_t)l->d[i + 1];
    }
    for (int i = 0; i < 2; i++) {
        l->g[i] = *off; *off += (size_t)l->d[i + 1];
        l->be[i] = *off; *off += (size_t)l->d[i + 1];
        l->rm[i] = *boff; *boff += (size_t)l->d[i + 1];
        l->rv[i] = *boff; *boff += (size_t)l->d[i + 1];
    }
}

static void uniform_fill(float *p, size_t n, float a, rng_t *rng) {
    for (size_t i = 0; i < n; i++) p[i] = (2.0f * rng_uniform(rng) - 1.0f) * a;
}

static void mlp_init(const mq_mlp *l, float *p, float *bn, rng_t *rng) {
    for (int i = 0; i < 3; i++) {
        float a = 1.0f / sqrtf((float)l->d[i]);
        uniform_fill(p + l->w[i], (size_t)l->d[i + 1] * l->d[i], a, rng);
        uniform_fill(p + l->b[i], (size_t)l->d[i + 1], a, rng);
    }
    for (int i = 0; i < 2; i++) {
        for (int c = 0; c < l->d[i + 1]; c++) {
            p[l->g[i] + c] = 1.0f;
            p[l->be[i] + c] = 0.0f;
            bn[l->rm[i] + c] = 0.0f;
            bn[l->rv[i] + c] = 1.0f;
        }
    }
}

int mq_model_init(mq_model *m, const mq_cfg *cfg, rng_t *rng) {
    memset(m, 0, sizeof *m);
    if (mq_cfg_check(cfg) != 0) return -1;
    m->cfg = *cfg;
    size_t off = 0, boff = 0;
    for (int k = 0; k < mq_n_enc(cfg); k++)
        mlp_layout(&m->enc[k], cfg->d_in, cfg->h1, cfg->h2, cfg->d_c, &off, &boff);
    mlp_layout(&m->dec, cfg->d_c, cfg->h2, cfg->h1, cfg->d_in, &off, &boff);
    m->off_cb = off;
    m->n_params = off + (size_t)cfg->K * cfg->L * cfg->d_c;
    m->n_bn = boff;
    m->params = tr_calloc(m->n_params, sizeof(float));
    m->bn = tr_calloc(m->n_bn, sizeof(float));
    if (rng) {
        for (int k = 0; k < mq_n_enc(cfg); k++) mlp_init(&m->enc[k], m->params, m->bn, rng);
        mlp_init(&m->dec, m->params, m->bn, rng);
        uniform_fill(m->params + m->off_cb, m->n_params - m->off_cb, 1.0f / cfg->L, rng);
    }
    return 0;
}

void mq_model_free(mq_model *m) {
    free(m->params);
    free(m->bn);
    m->params = m->bn = NULL;
}

/* ---------------------------------------------------------------------------------------
 * BatchNorm1d
 * --------------------------------------------------------------------------------------- */

/* x (N,C) -> y (N,C); see mq.h. Column statistics are summed row by row in double (so
 * the inner loop runs along contiguous memory and vectorises), in a fixed order, so the
 * result does not depend on the thread count. */
void batchnorm_forward(float *y, float *xh, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, float *rm, float *rv,
                       int N, int C, int train, float momentum, float eps) {
    float *mu = tr_malloc((size_t)C * 2 * sizeof(float)), *rs = mu + C;
    if (train) {
        double *s = tr_calloc((size_t)C * 2, sizeof(double)), *s2 = s + C;
        for (int n = 0; n < N; n++) {
            const float *r = x + (size_t)n * C;
            for (int c = 0; c < C; c++) s[c] += r[c];
        }
        for (int c = 0; c < C; c++) s[c] /= N;
        for (int n = 0; n < N; n++) {
            const float *r = x + (size_t)n * C;
            for (int c = 0; c < C; c++) {
                double d = r[c] - s[c];
                s2[c] += d * d;
            }
        }
        for (int c = 0; c < C; c++) {
            double var = s2[c] / N;
            mu[c] = (float)s[c];
            rs[c] = (float)(1.0 / sqrt(var + eps));
            mean[c] = mu[c];
            rstd[c] = rs[c];
            if (momentum > 0) {
                rm[c] = (1 - momentum) * rm[c] + momentum * mu[c];
                double unb = N > 1 ? var * N / (N - 1) : var;
                rv[c] = (1 - momentum) * rv[c] + momentum * (float)unb;
            }
        }
        free(s);
    } else {
        for (int c = 0; c < C; c++) {
            mu[c] = rm[c];
            rs[c] = 1.0f / sqrtf(rv[c] + eps);
        }
    }
    #pragma omp parallel for if ((size_t)N * C > 65536)
    for (int n = 0; n < N; n++) {
        const float *r = x + (size_t)n * C;
        float *yr = y + (size_t)n * C, *hr = xh ? xh + (size_t)n * C : NULL;
        for (int c = 0; c < C; c++) {
            float h = (r[c] - mu[c]) * rs[c];
            if (hr) hr[c] = h;
            yr[c] = gamma[c] * h + beta[c];
        }
    }
    free(mu);
}

/* dy (N,C), xh (N,C), gamma, rstd (C) -> dx +=, dgamma +=, dbeta +=
 * dx = rstd/N (N dxh - sum dxh - xh sum(dxh xh)), dxh = dy gamma. */
void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                        const float *xh, const float *gamma, const float *rstd, int N, int C) {
    double *sdy = tr_calloc((size_t)C * 2, sizeof(double)), *sdyxh = sdy + C;
    for (int n = 0; n < N; n++) {
        const float *d = dy + (size_t)n * C, *h = xh + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            sdy[c] += d[c];
            sdyxh[c] += (double)d[c] * h[c];
        }
    }
    for (int c = 0; c < C; c++) {
        if (dgamma) dgamma[c] += (float)sdyxh[c];
        if (dbeta) dbeta[c] += (float)sdy[c];
    }
    if (dx) {
        float *k = tr_malloc((size_t)C * 3 * sizeof(float)), *m1 = k + C, *m2 = k + 2 * C;
        for (int c = 0; c < C; c++) {
            k[c] = rstd[c] * gamma[c] / N;
            m1[c] = (float)sdy[c];
            m2[c] = (float)sdyxh[c];
        }
        #pragma omp parallel for if ((size_t)N * C > 65536)
        for (int n = 0; n < N; n++) {
            const float *d = dy + (size_t)n * C, *h = xh + (size_t)n * C;
            float *o = dx + (size_t)n * C;
            for (int c = 0; c < C; c++) o[c] += k[c] * (N * d[c] - m1[c] - h[c] * m2[c]);
        }
        free(k);
    }
    free(sdy);
}

/* ---------------------------------------------------------------------------------------
 * Quantizer
 * --------------------------------------------------------------------------------------- */

/* a (N,D), C (L,D) -> codes (N); dist (N,L), cnorm (L) scratch. */
void vq_assign(int32_t *codes, float *dist, float *cnorm, const float *a, const float *C,
               int N, int L, int D) {
    #pragma omp parallel for
    for (int l = 0; l < L; l++) {
        const float *c = C + (size_t)l * D;
        float s = 0;
        for (int d = 0; d < D; d++) s += c[d] * c[d];
        cnorm[l] = s;
    }
    nn_sgemm(0, 1, N, L, D, -2.0f, a, D, C, D, 0.0f, dist, L);
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *r = dist + (size_t)n * L;
        int best = 0;
        float bv = r[0] + cnorm[0];
        for (int l = 1; l < L; l++) {
            float v = r[l] + cnorm[l];
            if (v < bv) { bv = v; best = l; }
        }
        codes[n] = best;
    }
}

/* a, sg_a, sg_q (N,D), C (L,D), codes (N) -> chat (N,D), codebook and commitment MSEs. */
void vq_forward(float *chat, double *cb, double *cm, const float *a, const float *C,
                const int32_t *codes, const float *sg_a, const float *sg_q, int N, int D) {
    double s_cb = 0, s_cm = 0;
    #pragma omp parallel for reduction(+:s_cb, s_cm)
    for (int n = 0; n < N; n++) {
        const float *c = C + (size_t)codes[n] * D;
        size_t o = (size_t)n * D;
        double pcb = 0, pcm = 0;
        for (int d = 0; d < D; d++) {
            chat[o + d] = a[o + d] + (sg_q[o + d] - sg_a[o + d]);
            double e1 = (double)sg_a[o + d] - c[d];
            double e2 = (double)a[o + d] - sg_q[o + d];
            pcb += e1 * e1;
            pcm += e2 * e2;
        }
        s_cb += pcb;
        s_cm += pcm;
    }
    *cb = s_cb / ((double)N * D);
    *cm = s_cm / ((double)N * D);
}

/* See mq.h. The codebook rows are scattered sequentially because codes repeat. */
void vq_backward(float *da, float *dC, const float *dchat, const float *a, const float *C,
                 const int32_t *codes, const float *sg_a, const float *sg_q, int N, int D,
                 float wcb, float wcm) {
    float s = 2.0f / ((float)N * D);
    if (da) {
        #pragma omp parallel for
        for (int n = 0; n < N; n++) {
            size_t o = (size_t)n * D;
            for (int d = 0; d < D; d++)
                da[o + d] += dchat[o + d] + wcm * s * (a[o + d] - sg_q[o + d]);
        }
    }
    if (dC) {
        for (int n = 0; n < N; n++) {
            const float *c = C + (size_t)codes[n] * D;
            float *g = dC + (size_t)codes[n] * D;
            size_t o = (size_t)n * D;
            for (int d = 0; d < D; d++) g[d] += wcb * s * (c[d] - sg_a[o + d]);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * MLP: Linear-BN-Dropout-ReLU, Linear-BN-Dropout-ReLU, Linear
 * --------------------------------------------------------------------------------------- */

static void mlp_act_alloc(mq_mlp_act *a, const mq_mlp *l, int nmax) {
    for (int i = 0; i < 2; i++) {
        size_t n = (size_t)nmax * l->d[i + 1];
        a->z[i] = tr_malloc(n * sizeof(float));
        a->xh[i] = tr_malloc(n * sizeof(float));
        a->a[i] = tr_malloc(n * sizeof(float));
        a->mask[i] = tr_malloc(n);
        a->mean[i] = tr_malloc((size_t)l->d[i + 1] * sizeof(float));
        a->rstd[i] = tr_malloc((size_t)l->d[i + 1] * sizeof(float));
    }
    a->out = tr_malloc((size_t)nmax * l->d[3] * sizeof(float));
}

static void mlp_act_free(mq_mlp_act *a) {
    for (int i = 0; i < 2; i++) {
        free(a->z[i]); free(a->xh[i]); free(a->a[i]); free(a->mask[i]);
        free(a->mean[i]); free(a->rstd[i]);
    }
    free(a->out);
}

/* x (N,d0) -> act->out (N,d3), saving what the backward pass needs. */
static void mlp_forward(const mq_mlp *l, float *p, float *bn, mq_mlp_act *act, const float *x,
                        int N, int train, float momentum, float eps, const float drop[2],
                        rng_t *rng) {
    const float *in = x;
    for (int i = 0; i < 2; i++) {
        int di = l->d[i], dout = l->d[i + 1];
        size_t n = (size_t)N * dout;
        linear_forward(act->z[i], in, p + l->w[i], p + l->b[i], N, di, dout);
        batchnorm_forward(act->a[i], act->xh[i], act->mean[i], act->rstd[i], act->z[i],
                          p + l->g[i], p + l->be[i], bn + l->rm[i], bn + l->rv[i], N, dout,
                          train, momentum, eps);
        dropout_forward(act->a[i], act->mask[i], act->a[i], n, drop[i], train ? rng : NULL);
        relu_forward(act->a[i], act->a[i], n);
        in = act->a[i];
    }
    linear_forward(act->out, in, p + l->w[2], p + l->b[2], N, l->d[2], l->d[3]);
}

/* dout (N,d3) -> grad +=, dx (N,d0) += (or NULL). g1, g2 are scratch (N, max width). */
static void mlp_backward(const mq_mlp *l, const float *p, float *grad, const mq_mlp_act *act,
                         const float *x, const float *dout, float *dx, int N,
                         const float drop[2], float *g1, float *g2) {
    const float *dy = dout;
    for (int i = 2; i >= 0; i--) {
        const float *in = i == 0 ? x : act->a[i - 1];
        if (i == 0) {
            linear_backward(dx, grad + l->w[0], grad + l->b[0], dy, in, p + l->w[0], N,
                            l->d[0], l->d[1]);
            break;
        }
        int c = l->d[i];
        size_t n = (size_t)N * c;
        /* into the output of layer i-1's block: d(post relu) */
        memset(g1, 0, n * sizeof(float));
        linear_backward(g1, grad + l->w[i], grad + l->b[i], dy, in, p + l->w[i], N, c,
                        l->d[i + 1]);
        memset(g2, 0, n * sizeof(float));
        relu_backward(g2, g1, act->a[i - 1], n);
        memset(g1, 0, n * sizeof(float));
        dropout_backward(g1, g2, act->mask[i - 1], n, drop[i - 1]);
        memset(g2, 0, n * sizeof(float));
        batchnorm_backward(g2, grad + l->g[i - 1], grad + l->be[i - 1], g1, act->xh[i - 1],
                           p + l->g[i - 1], act->rstd[i - 1], N, c);
        /* g2 now holds d z[i-1]; the next layer writes into g1 first, after which g2 is
         * free again (linear_backward has consumed it). */
        dy = g2;
    }
}

/* ---------------------------------------------------------------------------------------
 * Workspace, forward, backward, encode
 * --------------------------------------------------------------------------------------- */

int mq_ws_init(mq_ws *w, const mq_model *m, int nmax) {
    memset(w, 0, sizeof *w);
    const mq_cfg *c = &m->cfg;
    w->nmax = nmax;
    w->xm = tr_malloc((size_t)nmax * c->d_in * sizeof(float));
    w->inmask = tr_malloc((size_t)nmax * c->d_in);
    for (int k = 0; k < mq_n_enc(c); k++) mlp_act_alloc(&w->enc[k], &m->enc[k], nmax);
    mlp_act_alloc(&w->dec, &m->dec, nmax);
    size_t kd = (size_t)c->K * nmax * c->d_c;
    w->codes = tr_calloc((size_t)c->K * nmax, sizeof(int32_t));
    w->sg_a = tr_calloc(kd, sizeof(float));
    w->sg_q = tr_calloc(kd, sizeof(float));
    w->chat = tr_malloc(kd * sizeof(float));
    w->mix = tr_malloc((size_t)nmax * c->d_c * sizeof(float));
    w->dmix = tr_malloc((size_t)nmax * c->d_c * sizeof(float));
    w->da = tr_malloc((size_t)nmax * c->d_c * sizeof(float));
    w->dr = tr_malloc((size_t)nmax * c->d_in * sizeof(float));
    w->dist = tr_malloc((size_t)nmax * c->L * sizeof(float));
    w->cnorm = tr_malloc((size_t)c->L * sizeof(float));
    int wmax = c->d_c;
    if (c->h1 > wmax) wmax = c->h1;
    if (c->h2 > wmax) wmax = c->h2;
    if (c->d_in > wmax) wmax = c->d_in;
    w->g1 = tr_malloc((size_t)nmax * wmax * sizeof(float));
    w->g2 = tr_malloc((size_t)nmax * wmax * sizeof(float));
    w->grad = tr_malloc(m->n_params * sizeof(float));
    return 0;
}

void mq_ws_free(mq_ws *w) {
    free(w->xm); free(w->inmask);
    for (int k = 0; k < MQ_MAXK; k++) if (w->enc[k].out) mlp_act_free(&w->enc[k]);
    if (w->dec.out) mlp_act_free(&w->dec);
    free(w->codes); free(w->sg_a); free(w->sg_q); free(w->chat); free(w->mix);
    free(w->dmix); free(w->da); free(w->dr);
    free(w->dist); free(w->cnorm); free(w->g1); free(w->g2); free(w->grad);
    memset(w, 0, sizeof *w);
}

/* The residual form's encoder and quantizer (mq.h): a = Enc(q') from ws->xm; codebook k
 * quantises r_k, and ws->mix = a + (sum_k C_k[w_k] - sg a). sg_a[k] keeps r_k and sg_q[k]
 * C_k[w_k] (with freeze, both stay from the previous call). *cb = sum_k MSE(r_k, C_k[w_k]),
 * *cm = MSE(a, sg sum_k C_k[w_k]). */
static void residual_quantize(mq_model *m, mq_ws *ws, int N, int train, float mom,
                              const float drop[2], rng_t *rng, int freeze, double *cb,
                              double *cm) {
    const mq_cfg *c = &m->cfg;
    int D = c->d_c, K = c->K;
    size_t nd = (size_t)N * D, stride = (size_t)ws->nmax * D;
    mlp_forward(&m->enc[0], m->params, m->bn, &ws->enc[0], ws->xm, N, train, mom, c->bn_eps,
                drop, rng);
    const float *a = ws->enc[0].out;
    if (!freeze) memcpy(ws->sg_a, a, nd * sizeof(float));
    for (int k = 0; k < K; k++) {
        const float *C = m->params + m->off_cb + (size_t)k * c->L * D;
        int32_t *codes = ws->codes + (size_t)k * ws->nmax;
        float *rk = ws->sg_a + k * stride, *sq = ws->sg_q + k * stride;
        if (!freeze) {
            vq_assign(codes, ws->dist, ws->cnorm, rk, C, N, c->L, D);
            for (int n = 0; n < N; n++)
                memcpy(sq + (size_t)n * D, C + (size_t)codes[n] * D, D * sizeof(float));
            if (k + 1 < K) {
                float *next = ws->sg_a + (k + 1) * stride;
                for (size_t i = 0; i < nd; i++) next[i] = rk[i] - sq[i];
            }
        }
        /* the codebook term MSE(sg r_k, C_k[w_k]); its c^ output (= C_k[w_k]) goes unused */
        double kcb, kcm;
        vq_forward(ws->chat + k * stride, &kcb, &kcm, rk, C, codes, rk, sq, N, D);
        *cb += kcb;
    }
    /* z = sum_k sg_q[k]; mix = a + (z - sg_a[0]); commitment against sg z */
    double s = 0;
    for (size_t i = 0; i < nd; i++) {
        float z = 0;
        for (int k = 0; k < K; k++) z += ws->sg_q[k * stride + i];
        ws->mix[i] = a[i] + (z - ws->sg_a[i]);
        double e = (double)a[i] - z;
        s += e * e;
    }
    *cm = s / (double)nd;
}

/* The residual form's gradient below the decoder: dmix (N,D) straight through to a, plus
 * the commitment term; the codebook terms reach the chosen codewords. */
static void residual_backward(const mq_model *m, mq_ws *ws) {
    const mq_cfg *c = &m->cfg;
    int N = ws->n, D = c->d_c, K = c->K;
    size_t nd = (size_t)N * D, stride = (size_t)ws->nmax * D;
    const float *a = ws->enc[0].out;
    float s = 2.0f / (float)nd;
    for (size_t i = 0; i < nd; i++) {
        float z = 0;
        for (int k = 0; k < K; k++) z += ws->sg_q[k * stride + i];
        ws->da[i] = ws->dmix[i] + c->beta * s * (a[i] - z);
    }
    for (int k = 0; k < K; k++) {
        const float *C = m->params + m->off_cb + (size_t)k * c->L * D;
        float *dC = ws->grad + m->off_cb + (size_t)k * c->L * D;
        const int32_t *codes = ws->codes + (size_t)k * ws->nmax;
        const float *rk = ws->sg_a + k * stride;
        for (int n = 0; n < N; n++) {
            const float *cw = C + (size_t)codes[n] * D, *r = rk + (size_t)n * D;
            float *g = dC + (size_t)codes[n] * D;
            for (int d = 0; d < D; d++) g[d] += s * (cw[d] - r[d]);
        }
    }
}

void mq_forward(mq_model *m, mq_ws *ws, const float *x, int N, int train, int update_bn,
                rng_t *rng, int freeze) {
    const mq_cfg *c = &m->cfg;
    int D = c->d_c, K = c->K;
    size_t nd = (size_t)N * D;
    ws->n = N;
    /* 1. input mask, per sample and dimension */
    size_t ni = (size_t)N * c->d_in;
    if (train && c->rho > 0) {
        for (size_t i = 0; i < ni; i++) {
            ws->inmask[i] = rng_uniform(rng) < c->rho;
            ws->xm[i] = ws->inmask[i] ? 0.0f : x[i];
        }
    } else {
        memset(ws->inmask, 0, ni);
        memcpy(ws->xm, x, ni * sizeof(float));
    }
    float mom = update_bn ? c->bn_momentum : 0.0f;
    float drop[2] = {c->p1, c->p2};
    memset(ws->mix, 0, nd * sizeof(float));
    double cb = 0, cm = 0;
    /* 2. K encoders; 3. nearest codewords; 4. straight-through, mean of the K (or, in the
     * residual form, one encoder and residual codebooks) */
    if (c->residual) residual_quantize(m, ws, N, train, mom, drop, rng, freeze, &cb, &cm);
    else for (int k = 0; k < K; k++) {
        mlp_forward(&m->enc[k], m->params, m->bn, &ws->enc[k], ws->xm, N, train, mom,
                    c->bn_eps, drop, rng);
        const float *a = ws->enc[k].out;
        const float *C = m->params + m->off_cb + (size_t)k * c->L * D;
        int32_t *codes = ws->codes + (size_t)k * ws->nmax;
        float *sa = ws->sg_a + (size_t)k * ws->nmax * D, *sq = ws->sg_q + (size_t)k * ws->nmax * D;
        if (!freeze) {
            vq_assign(codes, ws->dist, ws->cnorm, a, C, N, c->L, D);
            memcpy(sa, a, nd * sizeof(float));
            for (int n = 0; n < N; n++)
                memcpy(sq + (size_t)n * D, C + (size_t)codes[n] * D, D * sizeof(float));
        }
        float *ch = ws->chat + (size_t)k * ws->nmax * D;
        double kcb, kcm;
        vq_forward(ch, &kcb, &kcm, a, C, codes, sa, sq, N, D);
        cb += kcb;
        cm += kcm;
        float s = 1.0f / K;
        for (size_t i = 0; i < nd; i++) ws->mix[i] += s * ch[i];
    }
    /* 5. decoder and the loss */
    mlp_forward(&m->dec, m->params, m->bn, &ws->dec, ws->mix, N, train, mom, c->bn_eps, drop,
                rng);
    double se = 0;
    const float *r = ws->dec.out;
    for (size_t i = 0; i < ni; i++) {
        double e = (double)r[i] - x[i];
        se += e * e;
    }
    ws->recon = se / (double)ni;
    ws->cb = cb;
    ws->cm = cm;
    ws->loss = ws->recon + cb + c->beta * cm;
}

void mq_backward(const mq_model *m, mq_ws *ws, const float *x) {
    const mq_cfg *c = &m->cfg;
    int N = ws->n, D = c->d_c, K = c->K;
    size_t ni = (size_t)N * c->d_in, nd = (size_t)N * D;
    float drop[2] = {c->p1, c->p2};
    memset(ws->grad, 0, m->n_params * sizeof(float));
    /* d recon / d r, then the decoder down to its input, the mean of the c^_k */
    float s = 2.0f / (float)ni;
    for (size_t i = 0; i < ni; i++) ws->dr[i] = s * (ws->dec.out[i] - x[i]);
    memset(ws->dmix, 0, nd * sizeof(float));
    mlp_backward(&m->dec, m->params, ws->grad, &ws->dec, ws->mix, ws->dr, ws->dmix, N, drop,
                 ws->g1, ws->g2);
    if (c->residual) {
        residual_backward(m, ws);
        mlp_backward(&m->enc[0], m->params, ws->grad, &ws->enc[0], ws->xm, ws->da, NULL, N,
                     drop, ws->g1, ws->g2);
        return;
    }
    /* each c^_k gets dmix / K, straight through to a_k, plus the commitment term; the
     * codebook term reaches C_k */
    for (size_t i = 0; i < nd; i++) ws->dmix[i] /= (float)K;
    for (int k = 0; k < K; k++) {
        const float *C = m->params + m->off_cb + (size_t)k * c->L * D;
        float *dC = ws->grad + m->off_cb + (size_t)k * c->L * D;
        memset(ws->da, 0, nd * sizeof(float));
        vq_backward(ws->da, dC, ws->dmix, ws->enc[k].out, C, ws->codes + (size_t)k * ws->nmax,
                    ws->sg_a + (size_t)k * ws->nmax * D, ws->sg_q + (size_t)k * ws->nmax * D,
                    N, D, 1.0f, c->beta);
        mlp_backward(&m->enc[k], m->params, ws->grad, &ws->enc[k], ws->xm, ws->da, NULL, N,
                     drop, ws->g1, ws->g2);
    }
}

void mq_encode(mq_model *m, mq_ws *ws, const float *X, const int32_t *idx, int n,
               int32_t *codes, double *sqerr) {
    const mq_cfg *c = &m->cfg;
    float *xb = tr_malloc((size_t)ws->nmax * c->d_in * sizeof(float));
    double se = 0;
    for (int i0 = 0; i0 < n; i0 += ws->nmax) {
        int nb = n - i0 < ws->nmax ? n - i0 : ws->nmax;
        for (int j = 0; j < nb; j++) {
            size_t row = idx ? (size_t)idx[i0 + j] : (size_t)(i0 + j);
            memcpy(xb + (size_t)j * c->d_in, X + row * c->d_in, c->d_in * sizeof(float));
        }
        mq_forward(m, ws, xb, nb, 0, 0, NULL, 0);
        se += ws->recon * (double)nb * c->d_in;
        if (codes)
            for (int j = 0; j < nb; j++)
                for (int k = 0; k < c->K; k++)
                    codes[(size_t)(i0 + j) * c->K + k] = ws->codes[(size_t)k * ws->nmax + j];
    }
    free(xb);
    if (sqerr) *sqerr = se;
}

/* ---------------------------------------------------------------------------------------
 * k-means (codebook initialisation)
 * --------------------------------------------------------------------------------------- */

/* Assign the P points (P,D) to the centres C (L,D) in chunks of the workspace. */
static void assign_chunked(int32_t *as, const float *P, int n, const float *C, int L, int D,
                           mq_ws *ws) {
    for (int i0 = 0; i0 < n; i0 += ws->nmax) {
        int nb = n - i0 < ws->nmax ? n - i0 : ws->nmax;
        vq_assign(as + i0, ws->dist, ws->cnorm, P + (size_t)i0 * D, C, nb, L, D);
    }
}

/* Squared distance with 8 partial sums, so the compiler can vectorise it. */
static float sqdist(const float *a, const float *b, int D) {
    float p[8] = {0};
    int d = 0;
    for (; d + 8 <= D; d += 8)
        for (int j = 0; j < 8; j++) {
            float e = a[d + j] - b[d + j];
            p[j] += e * e;
        }
    float s = 0;
    for (; d < D; d++) {
        float e = a[d] - b[d];
        s += e * e;
    }
    for (int j = 0; j < 8; j++) s += p[j];
    return s;
}

/* k-means++ seeding (D^2 sampling) then Lloyd iterations; empty clusters take a random
 * point. C (L,D) <- centres of P (n,D). */
static void kmeans(float *C, const float *P, int n, int L, int D, int iters, rng_t *rng,
                   mq_ws *ws) {
    double *d2 = tr_malloc((size_t)n * sizeof(double));
    int first = (int)rng_below(rng, (uint32_t)n);
    memcpy(C, P + (size_t)first * D, D * sizeof(float));
    #pragma omp parallel for
    for (int i = 0; i < n; i++) d2[i] = sqdist(P + (size_t)i * D, C, D);
    for (int l = 1; l < L; l++) {
        double tot = 0;
        for (int i = 0; i < n; i++) tot += d2[i];
        int pick;
        if (tot <= 0) {
            pick = (int)rng_below(rng, (uint32_t)n);
        } else {
            double u = rng_uniform_d(rng) * tot, acc = 0;
            pick = n - 1;
            for (int i = 0; i < n; i++) {
                acc += d2[i];
                if (acc > u) { pick = i; break; }
            }
        }
        float *c = C + (size_t)l * D;
        memcpy(c, P + (size_t)pick * D, D * sizeof(float));
        #pragma omp parallel for
        for (int i = 0; i < n; i++) {
            double d = sqdist(P + (size_t)i * D, c, D);
            if (d < d2[i]) d2[i] = d;
        }
    }
    free(d2);
    int32_t *as = tr_malloc((size_t)n * sizeof(int32_t));
    int32_t *prev = tr_malloc((size_t)n * sizeof(int32_t));
    double *sum = tr_malloc((size_t)L * D * sizeof(double));
    int *cnt = tr_malloc((size_t)L * sizeof(int));
    for (int it = 0; it < iters; it++) {
        assign_chunked(as, P, n, C, L, D, ws);
        if (it > 0 && !memcmp(as, prev, (size_t)n * sizeof(int32_t))) break;
        memcpy(prev, as, (size_t)n * sizeof(int32_t));
        memset(sum, 0, (size_t)L * D * sizeof(double));
        memset(cnt, 0, (size_t)L * sizeof(int));
        for (int i = 0; i < n; i++) {
            double *s = sum + (size_t)as[i] * D;
            const float *p = P + (size_t)i * D;
            for (int d = 0; d < D; d++) s[d] += p[d];
            cnt[as[i]]++;
        }
        for (int l = 0; l < L; l++) {
            float *c = C + (size_t)l * D;
            if (cnt[l]) {
                for (int d = 0; d < D; d++) c[d] = (float)(sum[(size_t)l * D + d] / cnt[l]);
            } else {
                memcpy(c, P + (size_t)rng_below(rng, (uint32_t)n) * D, D * sizeof(float));
            }
        }
    }
    free(as); free(prev); free(sum); free(cnt);
}

/* Encoder outputs of >= kmeans_per_code * L masked training draws (train mode, BN running
 * stats untouched), then k-means per codebook. */
static void kmeans_init(mq_trainer *t, mq_ws *ws, const mq_train_cfg *tc, const float *X,
                        const int32_t *train_idx, int ntr) {
    mq_model *m = &t->model;
    const mq_cfg *c = &m->cfg;
    int D = c->d_c;
    long want = (long)tc->kmeans_per_code * c->L;
    if (want < c->L) want = c->L;
    int passes = (int)((want + ntr - 1) / ntr);
    if (passes < 1) passes = 1;
    long P = (long)passes * ntr;
    long cap = want > ntr ? (long)passes * ntr : (long)ntr;
    if (cap > 50L * c->L && 50L * c->L >= want) cap = 50L * c->L;
    if (P > cap) P = cap;
    float *pts = tr_malloc((size_t)P * D * mq_n_enc(c) * sizeof(float));
    int32_t *ord = tr_malloc((size_t)ntr * sizeof(int32_t));
    float *xb = tr_malloc((size_t)ws->nmax * c->d_in * sizeof(float));
    long got = 0;
    while (got < P) {
        memcpy(ord, train_idx, (size_t)ntr * sizeof(int32_t));
        rng_shuffle_i32(&t->rng, ord, (size_t)ntr);
        for (int i0 = 0; i0 < ntr && got < P; i0 += ws->nmax) {
            int nb = ntr - i0 < ws->nmax ? ntr - i0 : ws->nmax;
            if (nb > P - got) nb = (int)(P - got);
            for (int j = 0; j < nb; j++)
                memcpy(xb + (size_t)j * c->d_in, X + (size_t)ord[i0 + j] * c->d_in,
                       c->d_in * sizeof(float));
            mq_forward(m, ws, xb, nb, nb > 1, 0, &t->rng, 0);
            for (int k = 0; k < mq_n_enc(c); k++)
                memcpy(pts + ((size_t)k * P + got) * D, ws->enc[k].out,
                       (size_t)nb * D * sizeof(float));
            got += nb;
        }
    }
    if (c->residual) {
        /* codebook k on the residuals the codebooks before it leave: fit, assign, subtract */
        int32_t *as = tr_malloc((size_t)P * sizeof(int32_t));
        for (int k = 0; k < c->K; k++) {
            float *C = m->params + m->off_cb + (size_t)k * c->L * D;
            kmeans(C, pts, (int)P, c->L, D, tc->kmeans_iters, &t->rng, ws);
            if (k + 1 == c->K) break;
            assign_chunked(as, pts, (int)P, C, c->L, D, ws);
            for (long i = 0; i < P; i++)
                for (int d = 0; d < D; d++) pts[(size_t)i * D + d] -= C[(size_t)as[i] * D + d];
        }
        free(as);
    } else {
        for (int k = 0; k < c->K; k++)
            kmeans(m->params + m->off_cb + (size_t)k * c->L * D, pts + (size_t)k * P * D,
                   (int)P, c->L, D, tc->kmeans_iters, &t->rng, ws);
    }
    free(pts); free(ord); free(xb);
    t->kmeans_done = 1;
}

/* ---------------------------------------------------------------------------------------
 * Trainer
 * --------------------------------------------------------------------------------------- */

int mq_trainer_init(mq_trainer *t, const mq_cfg *cfg, uint64_t seed) {
    memset(t, 0, sizeof *t);
    rng_seed(&t->rng, seed);
    if (mq_model_init(&t->model, cfg, &t->rng) != 0) return -1;
    size_t n = t->model.n_params;
    t->adam_m = tr_calloc(n, sizeof(float));
    t->adam_v = tr_calloc(n, sizeof(float));
    t->best_params = tr_malloc(n * sizeof(float));
    t->best_bn = tr_malloc(t->model.n_bn * sizeof(float));
    memcpy(t->best_params, t->model.params, n * sizeof(float));
    memcpy(t->best_bn, t->model.bn, t->model.n_bn * sizeof(float));
    t->usage = tr_calloc((size_t)cfg->K * cfg->L, sizeof(uint32_t));
    t->best_epoch = -1;
    t->best_mse = DBL_MAX;
    return 0;
}

void mq_trainer_free(mq_trainer *t) {
    mq_model_free(&t->model);
    free(t->adam_m); free(t->adam_v); free(t->best_params); free(t->best_bn); free(t->usage);
    memset(t, 0, sizeof *t);
}

void mq_trainer_use_best(mq_trainer *t) {
    memcpy(t->model.params, t->best_params, t->model.n_params * sizeof(float));
    memcpy(t->model.bn, t->best_bn, t->model.n_bn * sizeof(float));
}

int mq_train_epoch(mq_trainer *t, mq_ws *ws, const mq_train_cfg *tc, const float *X,
                   const int32_t *train_idx, int ntr, const int32_t *hold_idx, int nho,
                   mq_epoch_stats *st) {
    mq_model *m = &t->model;
    const mq_cfg *c = &m->cfg;
    int D = c->d_c, K = c->K, L = c->L;
    memset(st, 0, sizeof *st);
    if (ntr < 2) return tr_error("mq: expected at least 2 training vectors, got %d", ntr);
    if (!t->kmeans_done) kmeans_init(t, ws, tc, X, train_idx, ntr);

    adamw_cfg ac = adamw_default(tc->lr);
    ac.weight_decay = tc->weight_decay;
    int32_t *ord = tr_malloc((size_t)ntr * sizeof(int32_t));
    memcpy(ord, train_idx, (size_t)ntr * sizeof(int32_t));
    rng_shuffle_i32(&t->rng, ord, (size_t)ntr);
    int B = tc->batch < ws->nmax ? tc->batch : ws->nmax;
    float *xb = tr_malloc((size_t)B * c->d_in * sizeof(float));
    uint8_t *seen = tr_calloc((size_t)K * L, 1);
    int nbatch = 0;
    for (int i0 = 0; i0 < ntr; i0 += B) {
        int nb = ntr - i0 < B ? ntr - i0 : B;
        if (nb < 2) break;      /* BatchNorm needs two rows; the row comes back next epoch */
        for (int j = 0; j < nb; j++)
            memcpy(xb + (size_t)j * c->d_in, X + (size_t)ord[i0 + j] * c->d_in,
                   c->d_in * sizeof(float));
        mq_forward(m, ws, xb, nb, 1, 1, &t->rng, 0);
        mq_backward(m, ws, xb);
        t->step++;
        adamw_update(&ac, m->params, ws->grad, t->adam_m, t->adam_v, m->n_params, t->step);
        st->loss += ws->loss; st->recon += ws->recon; st->cb += ws->cb; st->cm += ws->cm;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < nb; j++) {
                int32_t w = ws->codes[(size_t)k * ws->nmax + j];
                seen[(size_t)k * L + w] = 1;
                t->usage[(size_t)k * L + w]++;
            }
        nbatch++;
    }
    if (nbatch) { st->loss /= nbatch; st->recon /= nbatch; st->cb /= nbatch; st->cm /= nbatch; }
    for (int k = 0; k < K; k++)
        for (int l = 0; l < L; l++) st->used[k] += seen[(size_t)k * L + l];
    t->epoch++;

    /* Dead codewords take random encoder outputs of the last batch (its stop-gradient copy
     * sg_a), and their AdamW moments restart. */
    if (tc->reseed_every > 0 && t->epoch % tc->reseed_every == 0 && ws->n > 0) {
        for (int k = 0; k < K; k++) {
            for (int l = 0; l < L; l++) {
                if (t->usage[(size_t)k * L + l]) continue;
                int r = (int)rng_below(&t->rng, (uint32_t)ws->n);
                size_t o = m->off_cb + ((size_t)k * L + l) * D;
                memcpy(m->params + o, ws->sg_a + ((size_t)k * ws->nmax + r) * D, D * sizeof(float));
                memset(t->adam_m + o, 0, D * sizeof(float));
                memset(t->adam_v + o, 0, D * sizeof(float));
                st->reseeded++;
            }
        }
        memset(t->usage, 0, (size_t)K * L * sizeof(uint32_t));
    }

    /* Holdout reconstruction in eval mode; the best weights are kept. */
    double se;
    if (nho > 0) {
        mq_encode(m, ws, X, hold_idx, nho, NULL, &se);
        st->holdout_mse = se / ((double)nho * c->d_in);
    } else {
        mq_encode(m, ws, X, train_idx, ntr, NULL, &se);
        st->holdout_mse = se / ((double)ntr * c->d_in);
    }
    if (st->holdout_mse < t->best_mse) {
        t->best_mse = st->holdout_mse;
        t->best_epoch = t->epoch;
        memcpy(t->best_params, m->params, m->n_params * sizeof(float));
        memcpy(t->best_bn, m->bn, m->n_bn * sizeof(float));
        st->improved = 1;
    }
    free(ord); free(xb); free(seen);
    return 0;
}

/* ---- checkpoint blob: header, then params, adam m, adam v, bn, best params, best bn, usage ---- */

typedef struct {
    char     magic[8];          /* "MQTRN02" (02: mq_cfg gained residual) */
    mq_cfg   cfg;
    uint64_t n_params, n_bn;
    rng_t    rng;
    int64_t  epoch, kmeans_done, best_epoch, step;
    double   best_mse;
} mq_blob_hdr;

/* The MQTRN01 header: the same fields before mq_cfg gained `residual` (its 12 words, all 4
 * bytes wide, are read into an mq_cfg with residual 0), so a run interrupted before the
 * upgrade resumes. */
typedef struct {
    char     magic[8];
    int32_t  cfg_words[12];
    uint64_t n_params, n_bn;
    rng_t    rng;
    int64_t  epoch, kmeans_done, best_epoch, step;
    double   best_mse;
} mq_blob_hdr_v1;

int mq_trainer_save(const mq_trainer *t, void **blob, size_t *n) {
    const mq_model *m = &t->model;
    size_t np = m->n_params, nb = m->n_bn, nu = (size_t)m->cfg.K * m->cfg.L;
    size_t total = sizeof(mq_blob_hdr) + (4 * np + 2 * nb) * sizeof(float) + nu * sizeof(uint32_t);
    char *p = tr_calloc(1, total);
    mq_blob_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, "MQTRN02", 8);
    h.cfg = m->cfg;
    h.n_params = np; h.n_bn = nb; h.rng = t->rng;
    h.epoch = t->epoch; h.kmeans_done = t->kmeans_done; h.best_epoch = t->best_epoch;
    h.step = t->step; h.best_mse = t->best_mse;
    char *q = p;
    memcpy(q, &h, sizeof h); q += sizeof h;
    memcpy(q, m->params, np * sizeof(float)); q += np * sizeof(float);
    memcpy(q, t->adam_m, np * sizeof(float)); q += np * sizeof(float);
    memcpy(q, t->adam_v, np * sizeof(float)); q += np * sizeof(float);
    memcpy(q, m->bn, nb * sizeof(float)); q += nb * sizeof(float);
    memcpy(q, t->best_params, np * sizeof(float)); q += np * sizeof(float);
    memcpy(q, t->best_bn, nb * sizeof(float)); q += nb * sizeof(float);
    memcpy(q, t->usage, nu * sizeof(uint32_t));
    *blob = p;
    *n = total;
    return 0;
}

int mq_trainer_load(mq_trainer *t, const void *blob, size_t n) {
    mq_blob_hdr h;
    size_t hsz = sizeof h;
    if (n >= sizeof(mq_blob_hdr_v1) && memcmp(blob, "MQTRN01", 8) == 0) {
        mq_blob_hdr_v1 o;
        memcpy(&o, blob, sizeof o);
        memset(&h, 0, sizeof h);
        memcpy(h.magic, o.magic, 8);
        _Static_assert(sizeof o.cfg_words == offsetof(mq_cfg, residual), "MQTRN01 cfg layout");
        memcpy(&h.cfg, o.cfg_words, sizeof o.cfg_words);
        h.n_params = o.n_params; h.n_bn = o.n_bn; h.rng = o.rng;
        h.epoch = o.epoch; h.kmeans_done = o.kmeans_done; h.best_epoch = o.best_epoch;
        h.step = o.step; h.best_mse = o.best_mse;
        hsz = sizeof o;
    } else {
        if (n < sizeof h) return tr_error("mq: checkpoint blob of %zu bytes is too short", n);
        memcpy(&h, blob, sizeof h);
        if (memcmp(h.magic, "MQTRN02", 8) != 0)
            return tr_error("mq: checkpoint blob is not an MQ trainer state (bad magic)");
    }
    const mq_model *m = &t->model;
    if (memcmp(&h.cfg, &m->cfg, sizeof h.cfg) != 0 || h.n_params != m->n_params ||
        h.n_bn != m->n_bn)
        return tr_error("mq: checkpoint was saved with another model configuration");
    size_t np = m->n_params, nb = m->n_bn, nu = (size_t)m->cfg.K * m->cfg.L;
    size_t total = hsz + (4 * np + 2 * nb) * sizeof(float) + nu * sizeof(uint32_t);
    if (n != total) return tr_error("mq: checkpoint blob has %zu bytes, expected %zu", n, total);
    const char *q = (const char *)blob + hsz;
    memcpy(t->model.params, q, np * sizeof(float)); q += np * sizeof(float);
    memcpy(t->adam_m, q, np * sizeof(float)); q += np * sizeof(float);
    memcpy(t->adam_v, q, np * sizeof(float)); q += np * sizeof(float);
    memcpy(t->model.bn, q, nb * sizeof(float)); q += nb * sizeof(float);
    memcpy(t->best_params, q, np * sizeof(float)); q += np * sizeof(float);
    memcpy(t->best_bn, q, nb * sizeof(float)); q += nb * sizeof(float);
    memcpy(t->usage, q, nu * sizeof(uint32_t));
    t->rng = h.rng;
    t->epoch = (int)h.epoch; t->kmeans_done = (int)h.kmeans_done;
    t->best_epoch = (int)h.best_epoch; t->step = (long)h.step; t->best_mse = h.best_mse;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Token statistics and disambiguation
 * --------------------------------------------------------------------------------------- */

static int g_cmp_K;
static const int32_t *g_cmp_codes;

static int cmp_rows(const void *pa, const void *pb) {
    int a = *(const int *)pa, b = *(const int *)pb;
    const int32_t *x = g_cmp_codes + (size_t)a * g_cmp_K, *y = g_cmp_codes + (size_t)b * g_cmp_K;
    for (int k = 0; k < g_cmp_K; k++)
        if (x[k] != y[k]) return x[k] < y[k] ? -1 : 1;
    return (a > b) - (a < b);
}

/* Row order sorted by tuple, then by row (qsort with a file-level comparator context). */
static int *sorted_rows(const int32_t *codes, int n, int K) {
    int *o = tr_malloc((size_t)(n ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++) o[i] = i;
    g_cmp_K = K;
    g_cmp_codes = codes;
    qsort(o, (size_t)n, sizeof(int), cmp_rows);
    return o;
}

static int same_tuple(const int32_t *codes, int K, int a, int b) {
    return !memcmp(codes + (size_t)a * K, codes + (size_t)b * K, (size_t)K * sizeof(int32_t));
}

void mq_token_stats_compute(const int32_t *codes, int n, int K, int L, mq_token_stats *s) {
    memset(s, 0, sizeof *s);
    s->n = n;
    int *cnt = tr_malloc((size_t)L * sizeof(int));
    for (int k = 0; k < K && k < MQ_MAXK; k++) {
        memset(cnt, 0, (size_t)L * sizeof(int));
        for (int i = 0; i < n; i++) {
            int32_t w = codes[(size_t)i * K + k];
            if (w >= 0 && w < L) cnt[w]++;
        }
        double h = 0;
        for (int l = 0; l < L; l++) {
            if (!cnt[l]) continue;
            s->used[k]++;
            double p = (double)cnt[l] / n;
            h -= p * log(p);
        }
        s->perplexity[k] = exp(h);
    }
    free(cnt);
    int *o = sorted_rows(codes, n, K);
    int run = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || !same_tuple(codes, K, o[i], o[i - 1])) { s->distinct++; run = 1; }
        else run++;
        if (run > s->largest_group) s->largest_group = run;
    }
    s->collisions = n - s->distinct;
    free(o);
}

int mq_disambiguate(const int32_t *codes, int n, int K, int32_t *extra) {
    int *o = sorted_rows(codes, n, K);
    int run = 0, maxv = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || !same_tuple(codes, K, o[i], o[i - 1])) run = 0;
        else run++;
        extra[o[i]] = run;
        if (run + 1 > maxv) maxv = run + 1;
    }
    free(o);
    return maxv;
}
