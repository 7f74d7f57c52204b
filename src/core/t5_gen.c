/* t5_gen.c: the generate objective's loss and the incremental decoder (see t5_gen.h). */
#include "t5_gen.h"
#include "t5_internal.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PW(off) (m->params + (off))

void t5_gen_logits(const t5_model *m, const float *h, int N, t5_gen_book bk, float *logits, int ldl) {
    int C = m->cfg.d_model;
    nn_sgemm(0, 1, N, bk.n, C, 1.0f / sqrtf((float)C), h, C, m->params + m->shared + (size_t)bk.tok0 * C,
             C, 0.0f, logits, ldl > 0 ? ldl : bk.n);
}

void t5_gen_log_softmax(float *x, int N, int n) {
    for (int r = 0; r < N; r++) {
        float *row = x + (size_t)r * n, mx = -INFINITY;
        for (int i = 0; i < n; i++) if (row[i] > mx) mx = row[i];
        double s = 0;
        for (int i = 0; i < n; i++) s += exp((double)(row[i] - mx));
        float lse = mx + (float)log(s);
        for (int i = 0; i < n; i++) row[i] -= lse;
    }
}

void t5_gen_ws_init(t5_gen_ws *w, const t5_model *m, int max_B, int max_n) {
    const t5_config *c = &m->cfg;
    memset(w, 0, sizeof *w);
    w->max_B = max_B;
    w->max_n = max_n;
    w->ddec = tr_calloc((size_t)max_B * c->dec_len * c->d_model, sizeof(float));
    w->h = tr_malloc((size_t)max_B * c->d_model * sizeof(float));
    w->dh = tr_malloc((size_t)max_B * c->d_model * sizeof(float));
    w->logits = tr_malloc((size_t)max_B * max_n * sizeof(float));
}

void t5_gen_ws_free(t5_gen_ws *w) {
    free(w->ddec); free(w->h); free(w->dh); free(w->logits);
    memset(w, 0, sizeof *w);
}

float t5_gen_loss(t5_model *m, const t5_batch *b, int P, int nsteps, const t5_gen_book *books,
                  const int32_t *codes, t5_gen_ws *w, int backward) {
    const t5_config *c = &m->cfg;
    int B = b->B, C = c->d_model, Td = c->dec_len;
    if (B > w->max_B || P < 1 || nsteps < 1 || P + nsteps - 1 != Td || B != m->last_B) {
        tr_error("t5_gen_loss: batch %d (workspace %d), prompt %d + %d steps - 1 must equal dec_len %d "
                 "after a forward of the batch", B, w->max_B, P, nsteps, Td);
        return NAN;
    }
    float scale = 1.0f / sqrtf((float)C), invN = 1.0f / ((float)B * nsteps);
    double loss = 0;
    if (backward) memset(w->ddec, 0, sizeof(float) * (size_t)B * Td * C);
    const float *out = m->a.dec_out;
    for (int s = 0; s < nsteps; s++) {
        t5_gen_book bk = books[s];
        if (bk.n > w->max_n) { tr_error("t5_gen_loss: book of %d tokens > workspace %d", bk.n, w->max_n); return NAN; }
        for (int r = 0; r < B; r++)
            memcpy(w->h + (size_t)r * C, out + ((size_t)r * Td + P - 1 + s) * C, sizeof(float) * C);
        t5_gen_logits(m, w->h, B, bk, w->logits, 0);
        t5_gen_log_softmax(w->logits, B, bk.n);
        for (int r = 0; r < B; r++) {
            int t = codes[(size_t)r * nsteps + s];
            if (t < 0 || t >= bk.n) { tr_error("t5_gen_loss: code %d outside book of %d", t, bk.n); return NAN; }
            float *row = w->logits + (size_t)r * bk.n;
            loss -= row[t];
            if (backward) {               /* dlogits = (p - 1[t]) / (B nsteps) */
                for (int i = 0; i < bk.n; i++) row[i] = expf(row[i]) * invN;
                row[t] -= invN;
            }
        }
        if (!backward) continue;
        const float *E = PW(m->shared) + (size_t)bk.tok0 * C;
        /* dh = scale dlogits E; dE += scale dlogits^T h (after t5_backward_ddec zeroes) */
        nn_sgemm(0, 0, B, C, bk.n, scale, w->logits, bk.n, E, C, 0.0f, w->dh, C);
        for (int r = 0; r < B; r++)
            memcpy(w->ddec + ((size_t)r * Td + P - 1 + s) * C, w->dh + (size_t)r * C, sizeof(float) * C);
    }
    if (backward) {
        if (t5_backward_ddec(m, b, w->ddec) != 0) return NAN;
        /* the tied head's gradient: recompute the (cheap) logits per step */
        for (int s = 0; s < nsteps; s++) {
            t5_gen_book bk = books[s];
            for (int r = 0; r < B; r++)
                memcpy(w->h + (size_t)r * C, out + ((size_t)r * Td + P - 1 + s) * C, sizeof(float) * C);
            t5_gen_logits(m, w->h, B, bk, w->logits, 0);
            t5_gen_log_softmax(w->logits, B, bk.n);
            for (int r = 0; r < B; r++) {
                float *row = w->logits + (size_t)r * bk.n;
                for (int i = 0; i < bk.n; i++) row[i] = expf(row[i]) * invN;
                row[codes[(size_t)r * nsteps + s]] -= invN;
            }
            nn_sgemm(1, 0, bk.n, C, B, scale, w->logits, bk.n, w->h, C, 1.0f,
                     m->grads + m->shared + (size_t)bk.tok0 * C, C);
        }
    }
    return (float)(loss * invN);
}

/* ------------------------------------------------------------------------------------
 * Incremental decoder
 * ------------------------------------------------------------------------------------ */

int t5_dec_init(t5_dec_state *s, const t5_model *m, int cap_rows, int Tmax) {
    const t5_config *c = &m->cfg;
    memset(s, 0, sizeof *s);
    if (c->n_dec_layers < 1 || cap_rows < 1 || Tmax < 1) return tr_error("t5_dec_init: needs a decoder, rows and positions");
    s->cap_rows = cap_rows; s->Tmax = Tmax;
    s->L = c->n_dec_layers; s->C = c->d_model; s->H = c->n_heads; s->D = c->d_kv;
    s->HD = s->H * s->D; s->F = c->d_ff;
    size_t kv = (size_t)s->L * cap_rows * Tmax * s->HD;
    s->k = tr_malloc(kv * sizeof(float)); s->v = tr_malloc(kv * sizeof(float));
    s->k2 = tr_malloc(kv * sizeof(float)); s->v2 = tr_malloc(kv * sizeof(float));
    size_t R = (size_t)cap_rows;
    s->x = tr_malloc(R * s->C * sizeof(float));
    s->ln = tr_malloc(R * s->C * sizeof(float));
    s->o = tr_malloc(R * s->C * sizeof(float));
    s->qkv = tr_malloc(R * 3 * s->HD * sizeof(float));
    s->ao = tr_malloc(R * s->HD * sizeof(float));
    s->hid = tr_malloc(R * s->F * sizeof(float));
    s->rstd = tr_malloc(R * sizeof(float));
    s->bias = tr_malloc((size_t)s->H * Tmax * sizeof(float));
    s->att = NULL;                       /* sized by t5_dec_reserve / t5_dec_start (encoder length) */
    s->ckv = tr_calloc((size_t)s->L, sizeof *s->ckv);
    return 0;
}

void t5_dec_free(t5_dec_state *s) {
    free(s->k); free(s->v); free(s->k2); free(s->v2); free(s->x); free(s->ln); free(s->o);
    free(s->qkv); free(s->ao); free(s->hid); free(s->rstd); free(s->bias); free(s->att);
    free(s->ckv);
    memset(s, 0, sizeof *s);
}

void t5_dec_reserve(t5_dec_state *s, int max_T) {
    size_t need = (size_t)s->cap_rows * (size_t)(max_T > s->Tmax ? max_T : s->Tmax);
    if (need <= s->att_cap) return;
    free(s->att);
    s->att = tr_malloc(need * sizeof(float));
    s->att_cap = need;
}

#define KV(buf, l, r, t) ((buf) + (((size_t)(l) * s->cap_rows + (r)) * s->Tmax + (t)) * s->HD)

int t5_dec_start(t5_dec_state *s, const t5_model *m, const t5_batch *b, int P, float *h0) {
    const t5_config *c = &m->cfg;
    int B = b->B, Td = c->dec_len;
    if (B > s->cap_rows || P > s->Tmax || P > Td || P < 1 || m->last_B != B || m->last_T != b->T)
        return tr_error("t5_dec_start: batch %d (cap %d), prompt %d (cache %d, dec_len %d) after its forward",
                        B, s->cap_rows, P, s->Tmax, Td);
    for (int l = 0; l < s->L; l++) {
        const float *qkv = m->a.dec[l].qkv;          /* (B*Td, 3HD): q | k | v */
        for (int r = 0; r < B; r++)
            for (int t = 0; t < P; t++) {
                const float *row = qkv + ((size_t)r * Td + t) * 3 * s->HD;
                memcpy(KV(s->k, l, r, t), row + s->HD, sizeof(float) * s->HD);
                memcpy(KV(s->v, l, r, t), row + 2 * s->HD, sizeof(float) * s->HD);
            }
        s->ckv[l] = m->a.dec[l].ckv;
    }
    t5_dec_reserve(s, b->T);                         /* scores of one (row group, head) */
    s->T = b->T;
    s->enc_mask = b->enc_mask;
    s->rows = B;
    s->rows_per_user = 1;
    s->pos = P;
    for (int r = 0; r < B; r++)
        memcpy(h0 + (size_t)r * s->C, m->a.dec_out + ((size_t)r * Td + P - 1) * s->C, sizeof(float) * s->C);
    return 0;
}

void t5_dec_gather(t5_dec_state *s, const int32_t *parent, int nrows, int rows_per_user) {
    size_t n = (size_t)s->pos * s->HD;
    for (int l = 0; l < s->L; l++)
        for (int r = 0; r < nrows; r++) {
            memcpy(KV(s->k2, l, r, 0), KV(s->k, l, parent[r], 0), n * sizeof(float));
            memcpy(KV(s->v2, l, r, 0), KV(s->v, l, parent[r], 0), n * sizeof(float));
        }
    float *t = s->k; s->k = s->k2; s->k2 = t;
    t = s->v; s->v = s->v2; s->v2 = t;
    s->rows = nrows;
    s->rows_per_user = rows_per_user;
}

/* Softmax of n scores in place (with -inf entries allowed). */
static void softmax_row(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    float sum = 0;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

int t5_dec_step(t5_dec_state *s, const t5_model *m, const int32_t *tok, float *h) {
    const t5_config *c = &m->cfg;
    int N = s->rows, C = s->C, H = s->H, D = s->D, HD = s->HD, t = s->pos, T = s->T;
    if (t >= s->Tmax) return tr_error("t5_dec_step: the cache holds %d positions", s->Tmax);
    for (int r = 0; r < N; r++)
        if (tok[r] < 0 || tok[r] >= c->vocab) return tr_error("t5_dec_step: token %d out of range", tok[r]);
    embedding_forward(s->x, tok, PW(m->shared), N, C);
    /* relative position bias of query t against keys 0..t (causal, unidirectional buckets) */
    const float *rel = PW(m->dec_rel);
    for (int j = 0; j <= t; j++) {
        int bkt = t5_relative_bucket(j - t, 0, c->rel_buckets, c->rel_max_distance);
        for (int hh = 0; hh < H; hh++) s->bias[(size_t)hh * s->Tmax + j] = rel[(size_t)bkt * H + hh];
    }
    int G = s->rows_per_user, U = N / G;
    for (int l = 0; l < s->L; l++) {
        const t5_block_off *w = &m->dec[l];
        /* self-attention over the cache */
        rmsnorm_forward(s->ln, s->rstd, s->x, PW(w->ln0), N, C, c->ln_eps);
        linear_forward(s->qkv, s->ln, PW(w->q), NULL, N, C, 3 * HD);
        for (int r = 0; r < N; r++) {
            memcpy(KV(s->k, l, r, t), s->qkv + (size_t)r * 3 * HD + HD, sizeof(float) * HD);
            memcpy(KV(s->v, l, r, t), s->qkv + (size_t)r * 3 * HD + 2 * HD, sizeof(float) * HD);
        }
        for (int r = 0; r < N; r++)
            for (int hh = 0; hh < H; hh++) {
                float *sc = s->att + (size_t)r * (t + 1);
                const float *q = s->qkv + (size_t)r * 3 * HD + hh * D;
                cblas_sgemv(CblasRowMajor, CblasNoTrans, t + 1, D, 1.0f, KV(s->k, l, r, 0) + hh * D, HD,
                            q, 1, 0.0f, sc, 1);
                for (int j = 0; j <= t; j++) sc[j] += s->bias[(size_t)hh * s->Tmax + j];
                softmax_row(sc, t + 1);
                cblas_sgemv(CblasRowMajor, CblasTrans, t + 1, D, 1.0f, KV(s->v, l, r, 0) + hh * D, HD,
                            sc, 1, 0.0f, s->ao + (size_t)r * HD + hh * D, 1);
            }
        linear_forward(s->o, s->ao, PW(w->o), NULL, N, HD, C);
        for (size_t i = 0; i < (size_t)N * C; i++) s->x[i] += s->o[i];
        /* cross-attention: the rows of a user share its encoder keys/values */
        rmsnorm_forward(s->ln, s->rstd, s->x, PW(w->lnc), N, C, c->ln_eps);
        linear_forward(s->qkv, s->ln, PW(w->cq), NULL, N, C, HD);
        const float *ckv = s->ckv[l];
        for (int u = 0; u < U; u++) {
            const int32_t *mask = s->enc_mask ? s->enc_mask + (size_t)u * T : NULL;
            for (int hh = 0; hh < H; hh++) {
                float *sc = s->att;                           /* (G, T) */
                const float *K = ckv + (size_t)u * T * 2 * HD + hh * D, *V = K + HD;
                nn_sgemm(0, 1, G, T, D, 1.0f, s->qkv + (size_t)u * G * HD + hh * D, HD, K, 2 * HD,
                         0.0f, sc, T);
                for (int g = 0; g < G; g++) {
                    float *row = sc + (size_t)g * T;
                    if (mask) for (int j = 0; j < T; j++) if (!mask[j]) row[j] -= 1e9f;
                    softmax_row(row, T);
                }
                nn_sgemm(0, 0, G, D, T, 1.0f, sc, T, V, 2 * HD, 0.0f, s->ao + (size_t)u * G * HD + hh * D, HD);
            }
        }
        linear_forward(s->o, s->ao, PW(w->co), NULL, N, HD, C);
        for (size_t i = 0; i < (size_t)N * C; i++) s->x[i] += s->o[i];
        /* feed-forward */
        rmsnorm_forward(s->ln, s->rstd, s->x, PW(w->ff_ln), N, C, c->ln_eps);
        ffn_forward(s->o, s->hid, s->hid, NULL, s->ln, PW(w->wi), PW(w->wo), N, C, s->F, 0.0f, NULL);
        for (size_t i = 0; i < (size_t)N * C; i++) s->x[i] += s->o[i];
    }
    rmsnorm_forward(h, s->rstd, s->x, PW(m->dec_lnf), N, C, c->ln_eps);
    s->pos++;
    return 0;
}
