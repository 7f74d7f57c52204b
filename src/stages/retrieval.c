/* retrieval.c: scores, ranks, top-K and metrics for generative retrieval and baselines. */
#include "retrieval.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void retr_inv_norms(float *inv, const float *v, int n, int D) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)v[(size_t)i * D + d] * v[(size_t)i * D + d];
        inv[i] = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    }
}

/* One sgemm for the whole batch; cosine scales rows and columns afterwards. */
void retr_scores(float *scores, const float *q, int B, const float *pool, const float *pool_inv_norm,
                 int NI, int D, int cosine) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, NI, D, 1.0f, q, D, pool, D, 0.0f,
                scores, NI);
    if (!cosine) return;
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)q[(size_t)b * D + d] * q[(size_t)b * D + d];
        float qi = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        float *row = scores + (size_t)b * NI;
        for (int i = 0; i < NI; i++) row[i] *= qi * pool_inv_norm[i];
    }
}

/* Items before t in the stable order: strictly higher, or equal with a lower id. */
int retr_rank(const float *s, int NI, int32_t t) {
    if (t < 0 || t >= NI || !(s[t] > -INFINITY)) return -1;     /* excluded, or NaN: a miss */
    float st = s[t];
    int r = 0;
    for (int i = 0; i < NI; i++)
        r += s[i] > st || (s[i] == st && i < t);
    return r;
}

/* "a comes after b" in the ranking order. */
static inline int worse(float va, int32_t ia, float vb, int32_t ib) {
    return va < vb || (va == vb && ia > ib);
}

/* A min-heap (worst at the root) of the K best seen so far, then sorted best first. */
int retr_topk(const float *s, int NI, int K, int32_t *idx, float *val) {
    int n = 0;
    if (K <= 0) return 0;
    for (int i = 0; i < NI; i++) {
        if (s[i] == -INFINITY) continue;
        if (n < K) {
            int c = n++;
            while (c > 0) {                         /* sift up */
                int p = (c - 1) / 2;
                if (!worse(s[i], i, val[p], idx[p])) break;
                val[c] = val[p]; idx[c] = idx[p]; c = p;
            }
            val[c] = s[i]; idx[c] = i;
        } else if (worse(val[0], idx[0], s[i], i)) {
            int c = 0;                              /* replace the root, sift down */
            for (;;) {
                int l = 2 * c + 1, r = l + 1, m = c;
                float vm = s[i]; int32_t im = i;
                if (l < n && worse(val[l], idx[l], vm, im)) { m = l; vm = val[l]; im = idx[l]; }
                if (r < n && worse(val[r], idx[r], vm, im)) { m = r; }
                if (m == c) break;
                val[c] = val[m]; idx[c] = idx[m]; c = m;
            }
            val[c] = s[i]; idx[c] = i;
        }
    }
    /* heap sort: repeatedly move the worst to the end */
    for (int end = n - 1; end > 0; end--) {
        float v0 = val[0]; int32_t i0 = idx[0];
        float vl = val[end]; int32_t il = idx[end];
        val[end] = v0; idx[end] = i0;
        int c = 0;
        for (;;) {
            int l = 2 * c + 1, r = l + 1, m = c;
            float vm = vl; int32_t im = il;
            if (l < end && worse(val[l], idx[l], vm, im)) { m = l; vm = val[l]; im = idx[l]; }
            if (r < end && worse(val[r], idx[r], vm, im)) { m = r; }
            if (m == c) break;
            val[c] = val[m]; idx[c] = idx[m]; c = m;
        }
        val[c] = vl; idx[c] = il;
    }
    return n;
}

void retr_metrics_init(retr_metrics *m, int nk, const int *ks) {
    memset(m, 0, sizeof *m);
    m->nk = nk > RETR_MAX_K ? RETR_MAX_K : nk;
    for (int i = 0; i < m->nk; i++) m->ks[i] = ks[i];
}

void retr_metrics_add(retr_metrics *m, int rank) {
    m->n++;
    if (rank < 0) return;
    for (int i = 0; i < m->nk; i++)
        if (rank < m->ks[i]) {
            m->hr[i] += 1;
            m->ndcg[i] += 1.0 / log2(rank + 2.0);
        }
}

static int kidx(const retr_metrics *m, int k) {
    for (int i = 0; i < m->nk; i++) if (m->ks[i] == k) return i;
    return -1;
}

double retr_hr(const retr_metrics *m, int k) {
    int i = kidx(m, k);
    return i < 0 || !m->n ? 0 : m->hr[i] / m->n;
}

double retr_ndcg(const retr_metrics *m, int k) {
    int i = kidx(m, k);
    return i < 0 || !m->n ? 0 : m->ndcg[i] / m->n;
}
