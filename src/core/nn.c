/* nn.c: layers as forward/backward pairs (see nn.h for the conventions). */
#include "nn.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define NN_MASK_VALUE (-1e9f)
/* Loops over fewer elements than this run on one thread: a fork/join costs more. */
#define NN_PAR_MIN ((size_t)1 << 15)

/* ------------------------------------------------------------------------------------
 * Threads and sgemm
 *
 * OpenBLAS runs single-threaded and the one OpenMP team splits large products into row
 * (or column) blocks itself. Two thread pools that both spin while waiting (OpenBLAS's
 * pthreads and OpenMP's) slow each other down badly when they alternate, and the many
 * small per-head products of attention are better run one per thread anyway.
 * ------------------------------------------------------------------------------------ */

static int nn_nthreads = 0;         /* 0: not yet set */
static double nn_gemm_time = 0;

void nn_set_threads(int n) {
    if (n <= 0) n = tr_ncores();
    if (n <= 0) n = 1;
    nn_nthreads = n;
    openblas_set_num_threads(1);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int nn_threads(void) {
    if (!nn_nthreads) nn_set_threads(0);
    return nn_nthreads;
}

double nn_sgemm_seconds(void) { return nn_gemm_time; }
void   nn_sgemm_reset(void) { nn_gemm_time = 0; }

static int nn_in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return 0;
#endif
}

/* One plain cblas call, row-major. */
static void gemm1(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Split a dimension of size total over nt threads: the chunk size (a multiple of 16) and, in
 * *nb, the number of chunks. */
static int split_step(int total, int nt, int *nb) {
    int step = (total + nt - 1) / nt;
    step = (step + 15) & ~15;
    *nb = (total + step - 1) / step;
    return step;
}

void nn_sgemm(int transA, int transB, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    int nt = nn_threads();
    int inpar = nn_in_parallel();
    double t0 = inpar ? 0 : tr_monotonic();
    double work = (double)M * N * (K > 0 ? K : 1);
    if (nt <= 1 || inpar || work < 2.0e6) {
        gemm1(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else if (M >= N) {
        /* split the rows of C (rows of op(A)) */
        int nb, step = split_step(M, nt, &nb);
        #pragma omp parallel for schedule(static, 1)
        for (int i = 0; i < nb; i++) {
            int m0 = i * step, mm = M - m0 < step ? M - m0 : step;
            const float *Ai = transA ? A + m0 : A + (size_t)m0 * lda;
            gemm1(transA, transB, mm, N, K, alpha, Ai, lda, B, ldb, beta,
                  C + (size_t)m0 * ldc, ldc);
        }
    } else {
        /* split the columns of C (columns of op(B)) */
        int nb, step = split_step(N, nt, &nb);
        #pragma omp parallel for schedule(static, 1)
        for (int i = 0; i < nb; i++) {
            int n0 = i * step, nn = N - n0 < step ? N - n0 : step;
            const float *Bi = transB ? B + (size_t)n0 * ldb : B + n0;
            gemm1(transA, transB, M, nn, K, alpha, A, lda, Bi, ldb, beta, C + n0, ldc);
        }
    }
    if (!inpar) nn_gemm_time += tr_monotonic() - t0;
}

/* ------------------------------------------------------------------------------------
 * Embedding
 * ------------------------------------------------------------------------------------ */

/* ids (N), table (V,C) -> out (N,C)
 * Embedding lookup: copy row ids[n] of the table. */
void embedding_forward(float *out, const int32_t *ids, const float *table, int N, int C) {
    #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, sizeof(float) * C);
}

/* dout (N,C) -> dtable (V,C) +=
 * Scatter-add the row gradients back; sequential because ids repeat. */
void embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    for (int n = 0; n < N; n++) {
        float *d = dtable + (size_t)ids[n] * C;
        const float *g = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] += g[c];
    }
}

/* ------------------------------------------------------------------------------------
 * Linear
 * ------------------------------------------------------------------------------------ */

/* x (N,in), w (out,in), b (out) -> y (N,out)
 * y = x W^T + b, one sgemm over all rows. */
void linear_forward(float *y, const float *x, const float *w, const float *b,
                    int N, int in, int out) {
    float beta = 0.0f;
    if (b) {
        #pragma omp parallel for if((size_t)N * out > NN_PAR_MIN)
        for (int n = 0; n < N; n++) memcpy(y + (size_t)n * out, b, sizeof(float) * out);
        beta = 1.0f;
    }
    nn_sgemm(0, 1, N, out, in, 1.0f, x, in, w, in, beta, y, out);
}

/* dy (N,out), x (N,in), w (out,in) -> dx (N,in) +=, dw (out,in) +=, db (out) +=
 * dx = dy W, dW = dy^T x, db = column sums of dy. */
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int N, int in, int out) {
    if (dx) nn_sgemm(0, 0, N, in, out, 1.0f, dy, out, w, in, 1.0f, dx, in);
    if (dw) nn_sgemm(1, 0, out, in, N, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (db) {
        #pragma omp parallel for if((size_t)N * out > NN_PAR_MIN)
        for (int o = 0; o < out; o++) {
            float s = 0;
            for (int n = 0; n < N; n++) s += dy[(size_t)n * out + o];
            db[o] += s;
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Element-wise layers
 * ------------------------------------------------------------------------------------ */

/* x (n) -> y (n)
 * ReLU. */
void relu_forward(float *y, const float *x, size_t n) {
    #pragma omp parallel for if(n > NN_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

/* dy (n), y (n) -> dx (n) +=
 * The gradient passes where the output was positive. */
void relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    #pragma omp parallel for if(n > NN_PAR_MIN)
    for (size_t i = 0; i < n; i++) if (y[i] > 0) dx[i] += dy[i];
}

/* x (n) -> y (n), mask (n)
 * Inverted dropout. One draw from rng seeds a generator per fixed block of 16384
 * elements, so the blocks are filled in parallel and a seed gives the same mask whatever
 * the thread count. Each 64-bit draw gives four 16-bit uniforms (p is rounded to a
 * multiple of 1/65536). */
#define DROP_BLOCK 16384
void dropout_forward(float *y, uint8_t *mask, const float *x, size_t n, float p, rng_t *rng) {
    if (!rng || p <= 0.0f) {
        if (y != x) memcpy(y, x, sizeof(float) * n);
        if (mask) memset(mask, 1, n);
        return;
    }
    uint32_t thr = p >= 1.0f ? 65536u : (uint32_t)((double)p * 65536.0 + 0.5);
    float s = p >= 1.0f ? 0.0f : 1.0f / (1.0f - p);
    uint64_t base = rng_u64(rng);
    size_t nblk = (n + DROP_BLOCK - 1) / DROP_BLOCK;
    #pragma omp parallel for schedule(static) if(n > NN_PAR_MIN)
    for (size_t blk = 0; blk < nblk; blk++) {
        rng_t r;
        rng_seed(&r, base + 0x9E3779B97F4A7C15ull * (blk + 1));
        size_t i0 = blk * DROP_BLOCK, i1 = i0 + DROP_BLOCK < n ? i0 + DROP_BLOCK : n;
        uint64_t u = 0;
        for (size_t i = i0; i < i1; i++) {
            if (((i - i0) & 3) == 0) u = rng_u64(&r);
            mask[i] = (uint32_t)(u & 0xffff) >= thr;
            u >>= 16;
        }
        for (size_t j = i0; j < i1; j++) y[j] = mask[j] ? x[j] * s : 0.0f;
    }
}

/* dy (n), mask (n) -> dx (n) +=
 * Same mask and scale as the forward pass. */
void dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t n, float p) {
    if (!mask || p <= 0.0f) {
        #pragma omp parallel for if(n > NN_PAR_MIN)
        for (size_t i = 0; i < n; i++) dx[i] += dy[i];
        return;
    }
    float s = p >= 1.0f ? 0.0f : 1.0f / (1.0f - p);
    #pragma omp parallel for if(n > NN_PAR_MIN)
    for (size_t i = 0; i < n; i++) if (mask[i]) dx[i] += dy[i] * s;
}

/* Softmax of one row in place, max-subtracted for stability. */
static void softmax_row(float *r, int C) {
    float mx = r[0];
    for (int j = 1; j < C; j++) if (r[j] > mx) mx = r[j];
    float s = 0;
    for (int j = 0; j < C; j++) { r[j] = expf(r[j] - mx); s += r[j]; }
    float inv = 1.0f / s;
    for (int j = 0; j < C; j++) r[j] *= inv;
}

/* x (N,C) -> y (N,C)
 * Row softmax. */
void softmax_forward(float *y, const float *x, int N, int C) {
    #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *r = y + (size_t)n * C;
        if (r != x + (size_t)n * C) memcpy(r, x + (size_t)n * C, sizeof(float) * C);
        softmax_row(r, C);
    }
}

/* dy (N,C), y (N,C) -> dx (N,C) +=
 * Jacobian-vector product of the softmax: y * (dy - <y, dy>). */
void softmax_backward(float *dx, const float *dy, const float *y, int N, int C) {
    #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *yr = y + (size_t)n * C, *g = dy + (size_t)n * C;
        float *d = dx + (size_t)n * C;
        float s = 0;
        for (int j = 0; j < C; j++) s += yr[j] * g[j];
        for (int j = 0; j < C; j++) d[j] += yr[j] * (g[j] - s);
    }
}

/* ------------------------------------------------------------------------------------
 * T5 RMS layer norm
 * ------------------------------------------------------------------------------------ */

/* x (N,C), w (C) -> y (N,C), rstd (N)
 * y = w * x / sqrt(mean(x^2) + eps): T5's norm has no mean subtraction and no bias. */
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int C,
                     float eps) {
    #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
        float ss = 0;
        for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        rstd[n] = r;
        for (int c = 0; c < C; c++) yr[c] = w[c] * (xr[c] * r);
    }
}

/* dy (N,C), x (N,C), w (C), rstd (N) -> dx (N,C) +=, dw (C) +=
 * With g = dy*w: dx = r*g - r^3 * x * <g,x>/C; dw = sum_n dy * x * r. The weight
 * gradient is reduced through per-thread partial sums. */
void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int N, int C) {
    /* dx: rows are independent, split over threads. */
    if (dx) {
        #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * C, *g = dy + (size_t)n * C;
            float r = rstd[n], dot = 0;
            for (int c = 0; c < C; c++) dot += g[c] * w[c] * xr[c];
            float *d = dx + (size_t)n * C;
            float k = r * r * r * dot / C;
            for (int c = 0; c < C; c++) d[c] += r * g[c] * w[c] - k * xr[c];
        }
    }
    /* dw: each block of 16 columns is summed over the rows in order by one thread, so the
     * result is the same bits whatever the thread count (no reduction of partial sums). */
    if (dw) {
        int nblk = (C + 15) / 16;
        #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
        for (int bk = 0; bk < nblk; bk++) {
            int c0 = bk * 16, c1 = c0 + 16 < C ? c0 + 16 : C;
            float acc[16] = {0};
            for (int n = 0; n < N; n++) {
                const float *xr = x + (size_t)n * C, *g = dy + (size_t)n * C;
                float r = rstd[n];
                for (int c = c0; c < c1; c++) acc[c - c0] += g[c] * xr[c] * r;
            }
            for (int c = c0; c < c1; c++) dw[c] += acc[c - c0];
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Attention with T5 relative position bias
 * ------------------------------------------------------------------------------------ */

/* The bucket of a relative position rel = k_pos - q_pos, exactly as Hugging Face's
 * T5Attention._relative_position_bucket: half the buckets per direction when
 * bidirectional, exact buckets for small distances, log-spaced up to max_distance. The
 * log is taken in float32 as torch does. */
int t5_relative_bucket(int rel, int bidirectional, int num_buckets, int max_distance) {
    int ret = 0, n;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) ret += num_buckets;
        n = rel < 0 ? -rel : rel;
    } else {
        n = rel < 0 ? -rel : 0;
    }
    int max_exact = num_buckets / 2;
    if (n < max_exact) return ret + n;
    float v = logf((float)n / (float)max_exact) /
              (float)log((double)max_distance / (double)max_exact) *
              (float)(num_buckets - max_exact);
    int large = max_exact + (int)v;
    if (large > num_buckets - 1) large = num_buckets - 1;
    return ret + large;
}

/* table (nb,H) -> bias (H,Tq,Tk), bucket (Tq,Tk)
 * Gather the learned per-bucket, per-head bias for every (query, key) pair. */
void relbias_forward(float *bias, int32_t *bucket, const float *table, int Tq, int Tk, int H,
                     int nb, int max_distance, int bidirectional) {
    for (int i = 0; i < Tq; i++)
        for (int j = 0; j < Tk; j++)
            bucket[i * Tk + j] = t5_relative_bucket(j - i, bidirectional, nb, max_distance);
    #pragma omp parallel for if((size_t)H * Tq * Tk > NN_PAR_MIN)
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq * Tk; i++)
            bias[(size_t)h * Tq * Tk + i] = table[bucket[i] * H + h];
}

/* dbias (H,Tq,Tk), bucket (Tq,Tk) -> dtable (nb,H) +=
 * Scatter-add back into the buckets; heads are independent columns. */
void relbias_backward(float *dtable, const float *dbias, const int32_t *bucket, int Tq, int Tk,
                      int H) {
    #pragma omp parallel for if((size_t)H * Tq * Tk > NN_PAR_MIN)
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq * Tk; i++)
            dtable[bucket[i] * H + h] += dbias[(size_t)h * Tq * Tk + i];
}

/* q (B,Tq,H*D), k, v (B,Tk,H*D), bias (H,Tq,Tk), kmask (B,Tk) -> att (B,H,Tq,Tk), out
 * softmax(q k^T + bias + mask) v per (batch, head), with no 1/sqrt(D) scaling (T5 folds
 * it into the weight initialisation). Each (b,h) is two single-threaded sgemms reading
 * the head's columns in place through the leading dimension; (b,h) pairs run in parallel.
 * The dropout mask of pair bh comes from a generator seeded by one draw of rng and bh, so
 * it does not depend on the thread count. */
void attention_forward(float *out, float *att, float *attd, uint8_t *dmask,
                       const float *q, const float *k, const float *v, int ldq, int ldk,
                       const float *bias, const int32_t *kmask, int causal,
                       int B, int Tq, int Tk, int H, int D, float p, rng_t *rng) {
    int HD = H * D;
    int drop = p > 0.0f && rng && attd && dmask;
    uint64_t base = drop ? rng_u64(rng) : 0;
    uint32_t thr = p >= 1.0f ? 65536u : (uint32_t)((double)p * 65536.0 + 0.5);
    float sc = p >= 1.0f ? 0.0f : 1.0f / (1.0f - p);
    size_t TT = (size_t)Tq * Tk;
    double t = 0;
    #pragma omp parallel for schedule(dynamic) reduction(+:t) if((size_t)B * H * TT * D > NN_PAR_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float *S = att + (size_t)bh * TT;
        const float *qb = q + (size_t)b * Tq * ldq + h * D;
        const float *kb = k + (size_t)b * Tk * ldk + h * D;
        const float *vb = v + (size_t)b * Tk * ldk + h * D;
        double t0 = tr_monotonic();
        gemm1(0, 1, Tq, Tk, D, 1.0f, qb, ldq, kb, ldk, 0.0f, S, Tk);
        t += tr_monotonic() - t0;
        const int32_t *km = kmask ? kmask + (size_t)b * Tk : NULL;
        for (int i = 0; i < Tq; i++) {
            float *r = S + (size_t)i * Tk;
            if (bias) {
                const float *br = bias + ((size_t)h * Tq + i) * Tk;
                for (int j = 0; j < Tk; j++) r[j] += br[j];
            }
            if (km) for (int j = 0; j < Tk; j++) if (!km[j]) r[j] += NN_MASK_VALUE;
            if (causal) for (int j = i + 1; j < Tk; j++) r[j] += NN_MASK_VALUE;
            softmax_row(r, Tk);
        }
        const float *P = S;
        if (drop) {
            float *Pd = attd + (size_t)bh * TT;
            uint8_t *mk = dmask + (size_t)bh * TT;
            rng_t r;
            rng_seed(&r, base + 0x9E3779B97F4A7C15ull * (uint64_t)(bh + 1));
            uint64_t u = 0;
            for (size_t e = 0; e < TT; e++) {
                if ((e & 3) == 0) u = rng_u64(&r);
                mk[e] = (uint32_t)(u & 0xffff) >= thr;
                u >>= 16;
                Pd[e] = mk[e] ? S[e] * sc : 0.0f;
            }
            P = Pd;
        }
        t0 = tr_monotonic();
        gemm1(0, 0, Tq, D, Tk, 1.0f, P, Tk, vb, ldk, 0.0f, out + (size_t)b * Tq * HD + h * D, HD);
        t += tr_monotonic() - t0;
    }
    nn_gemm_time += t / nn_threads();
}

/* dout (B,Tq,H*D), att, q, k, v, scratch (B,H,Tq,Tk) -> dq +=, dk +=, dv +=, dbias +=
 * With Pd the (dropped) probabilities used in the forward product: dPd = dout V^T,
 * dV = Pd^T dout, dP = dPd * mask / (1-p), dS = P * (dP - rowsum(P*dP)), dQ = dS K,
 * dK = dS^T Q. dS is kept in scratch so that the bias gradient is reduced over the
 * batch afterwards. */
void attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                        const float *dout, const float *att, const float *attd,
                        const uint8_t *dmask, const float *q, const float *k, const float *v,
                        int ldq, int ldk, int B, int Tq, int Tk, int H, int D, float p) {
    int HD = H * D;
    int drop = p > 0.0f && attd && dmask;
    float sc = p >= 1.0f ? 0.0f : 1.0f / (1.0f - p);
    size_t TT = (size_t)Tq * Tk;
    double t = 0;
    #pragma omp parallel for schedule(dynamic) reduction(+:t) if((size_t)B * H * TT * D > NN_PAR_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        const float *P = att + (size_t)bh * TT;
        const float *Pd = drop ? attd + (size_t)bh * TT : P;
        float *dS = scratch + (size_t)bh * TT;
        size_t oo = (size_t)b * Tq * HD + h * D;
        size_t qo = (size_t)b * Tq * ldq + h * D, ko = (size_t)b * Tk * ldk + h * D;
        double t0 = tr_monotonic();
        gemm1(0, 1, Tq, Tk, D, 1.0f, dout + oo, HD, v + ko, ldk, 0.0f, dS, Tk);
        if (dv) gemm1(1, 0, Tk, D, Tq, 1.0f, Pd, Tk, dout + oo, HD, 1.0f, dv + ko, ldk);
        t += tr_monotonic() - t0;
        if (drop) {
            const uint8_t *mk = dmask + (size_t)bh * TT;
            for (size_t e = 0; e < TT; e++) dS[e] = mk[e] ? dS[e] * sc : 0.0f;
        }
        for (int i = 0; i < Tq; i++) {
            const float *pr = P + (size_t)i * Tk;
            float *d = dS + (size_t)i * Tk;
            float s = 0;
            for (int j = 0; j < Tk; j++) s += pr[j] * d[j];
            for (int j = 0; j < Tk; j++) d[j] = pr[j] * (d[j] - s);
        }
        t0 = tr_monotonic();
        if (dq) gemm1(0, 0, Tq, D, Tk, 1.0f, dS, Tk, k + ko, ldk, 1.0f, dq + qo, ldq);
        if (dk) gemm1(1, 0, Tk, D, Tq, 1.0f, dS, Tk, q + qo, ldq, 1.0f, dk + ko, ldk);
        t += tr_monotonic() - t0;
    }
    nn_gemm_time += t / nn_threads();
    if (dbias) {
        #pragma omp parallel for if((size_t)B * H * TT > NN_PAR_MIN)
        for (size_t e = 0; e < (size_t)H * TT; e++) {
            size_t h = e / TT, ij = e % TT;
            float s = 0;
            for (int b = 0; b < B; b++) s += scratch[((size_t)b * H + h) * TT + ij];
            dbias[e] += s;
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Feed-forward block and head
 * ------------------------------------------------------------------------------------ */

/* x (N,C), wi (F,C), wo (C,F) -> h (N,F), hd (N,F), mask (N,F), y (N,C)
 * T5 DenseReluDense: wo(dropout(relu(wi(x)))), no biases. */
void ffn_forward(float *y, float *h, float *hd, uint8_t *mask, const float *x, const float *wi,
                 const float *wo, int N, int C, int F, float p, rng_t *rng) {
    linear_forward(h, x, wi, NULL, N, C, F);
    relu_forward(h, h, (size_t)N * F);
    dropout_forward(hd, mask, h, (size_t)N * F, p, rng);
    linear_forward(y, hd, wo, NULL, N, F, C);
}

/* Gradient through dropout then ReLU, in place: s = s * mask/(1-p) * (h > 0). */
static void relu_dropout_grad(float *s, const float *h, const uint8_t *mask, size_t n, float p) {
    float sc = (mask && p > 0.0f) ? (p >= 1.0f ? 0.0f : 1.0f / (1.0f - p)) : 1.0f;
    int usem = mask && p > 0.0f;
    #pragma omp parallel for if(n > NN_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        s[i] = (h[i] > 0 && (!usem || mask[i])) ? s[i] * sc : 0.0f;
}

/* dy (N,C) -> dx (N,C) +=, dwi (F,C) +=, dwo (C,F) +=
 * Backward of ffn_forward, using scratch (N,F) for the hidden gradient. */
void ffn_backward(float *dx, float *dwi, float *dwo, float *scratch, const float *dy,
                  const float *x, const float *h, const float *hd, const uint8_t *mask,
                  const float *wi, const float *wo, int N, int C, int F, float p) {
    nn_sgemm(0, 0, N, F, C, 1.0f, dy, C, wo, F, 0.0f, scratch, F);      /* d hd = dy Wo */
    linear_backward(NULL, dwo, NULL, dy, hd, wo, N, F, C);
    relu_dropout_grad(scratch, h, mask, (size_t)N * F, p);
    linear_backward(dx, dwi, NULL, scratch, x, wi, N, C, F);
}

/* x (B,In) -> h (B,Hd), hd (B,Hd), mask (B,Hd), z (B,Out)
 * TokenRec projection head: fc2(dropout(relu(fc1(x)))). (The official code applies the
 * dropout before the ReLU; with one shared mask the two orders are the same function.) */
void head_forward(float *z, float *h, float *hd, uint8_t *mask, const float *x,
                  const float *w1, const float *b1, const float *w2, const float *b2,
                  int B, int In, int Hd, int Out, float p, rng_t *rng) {
    linear_forward(h, x, w1, b1, B, In, Hd);
    relu_forward(h, h, (size_t)B * Hd);
    dropout_forward(hd, mask, h, (size_t)B * Hd, p, rng);
    linear_forward(z, hd, w2, b2, B, Hd, Out);
}

/* dz (B,Out) -> dx (B,In) +=, dw1, db1, dw2, db2 +=
 * Backward of head_forward; scratch (B,Hd) holds the hidden gradient. */
void head_backward(float *dx, float *dw1, float *db1, float *dw2, float *db2, float *scratch,
                   const float *dz, const float *x, const float *h, const float *hd,
                   const uint8_t *mask, const float *w1, const float *w2,
                   int B, int In, int Hd, int Out, float p) {
    nn_sgemm(0, 0, B, Hd, Out, 1.0f, dz, Out, w2, Hd, 0.0f, scratch, Hd);
    linear_backward(NULL, dw2, db2, dz, hd, w2, B, Hd, Out);
    relu_dropout_grad(scratch, h, mask, (size_t)B * Hd, p);
    linear_backward(dx, dw1, db1, scratch, x, w1, B, In, Hd);
}

/* ------------------------------------------------------------------------------------
 * Losses
 * ------------------------------------------------------------------------------------ */

#define COS_EPS 1e-12

/* cos(a, b) as PyTorch's cosine_embedding_loss computes it; also returns |a|^2+eps and
 * the denominator for the gradient. */
static double cos_parts(const float *a, const float *b, int D, double *aa, double *den,
                        double *dot) {
    double ab = 0, a2 = 0, b2 = 0;
    for (int d = 0; d < D; d++) { ab += (double)a[d] * b[d]; a2 += (double)a[d] * a[d];
                                  b2 += (double)b[d] * b[d]; }
    *aa = a2 + COS_EPS;
    *den = sqrt((a2 + COS_EPS) * (b2 + COS_EPS));
    *dot = ab;
    return ab / *den;
}

/* z, pos, neg (B,D) -> loss
 * CosineEmbeddingLoss(margin 0) over the B positive pairs (target 1: 1 - cos) and the B
 * negative pairs (target -1: max(0, cos)), averaged over all 2B pairs. */
float cosine_loss_forward(const float *z, const float *pos, const float *neg, int B, int D) {
    double s = 0, aa, den, dot;
    for (int b = 0; b < B; b++) {
        s += 1.0 - cos_parts(z + (size_t)b * D, pos + (size_t)b * D, D, &aa, &den, &dot);
        double c = cos_parts(z + (size_t)b * D, neg + (size_t)b * D, D, &aa, &den, &dot);
        if (c > 0) s += c;
    }
    return (float)(s / (2.0 * B));
}

/* -> dz (B,D) +=
 * d cos / dz = t/den - (z.t) z / ((|z|^2+eps) den); the hinge passes only when cos > 0. */
void cosine_loss_backward(float *dz, const float *z, const float *pos, const float *neg,
                          int B, int D, float scale) {
    double k = (double)scale / (2.0 * B);
    for (int b = 0; b < B; b++) {
        const float *zb = z + (size_t)b * D;
        float *g = dz + (size_t)b * D;
        for (int side = 0; side < 2; side++) {
            const float *t = (side ? neg : pos) + (size_t)b * D;
            double aa, den, dot;
            double c = cos_parts(zb, t, D, &aa, &den, &dot);
            double sg;
            if (side == 0) sg = -k;
            else if (c > 0) sg = k;
            else continue;
            for (int d = 0; d < D; d++)
                g[d] += (float)(sg * (t[d] / den - dot * zb[d] / (aa * den)));
        }
    }
}

/* logits (B,V), targets (B) -> probs (B,V), mean loss
 * Softmax cross-entropy, -log p[target] averaged over rows. */
float softmax_xent_forward(float *probs, const float *logits, const int32_t *targets,
                           int B, int V) {
    softmax_forward(probs, logits, B, V);
    double s = 0;
    for (int b = 0; b < B; b++) {
        float p = probs[(size_t)b * V + targets[b]];
        s -= log(p > 1e-30f ? p : 1e-30f);
    }
    return (float)(s / B);
}

/* logits (B,V), targets (B) -> summed loss; with grad, logits <- scale * (softmax - onehot).
 * One pass over each row for the max, one for exp and the sum, one to scale: the row stays
 * in cache, and no second (B,V) buffer is read or written. Each row's loss goes to rowloss
 * (B) and is summed in row order: the same bits whatever the thread count. */
double softmax_xent_inplace(float *logits, const int32_t *targets, int B, int V, float scale,
                            int grad, double *rowloss) {
    #pragma omp parallel for if((size_t)B * V > NN_PAR_MIN)
    for (int b = 0; b < B; b++) {
        float *r = logits + (size_t)b * V;
        float mx = r[0];
        for (int j = 1; j < V; j++) if (r[j] > mx) mx = r[j];
        float z = 0, t = r[targets[b]];
        for (int j = 0; j < V; j++) { r[j] = expf(r[j] - mx); z += r[j]; }
        rowloss[b] = (double)logf(z) + mx - t;
        if (!grad) continue;
        float k = scale / z;
        for (int j = 0; j < V; j++) r[j] *= k;
        r[targets[b]] -= scale;
    }
    double s = 0;
    for (int b = 0; b < B; b++) s += rowloss[b];
    return s;
}

/* -> dlogits (B,V) += scale * (probs - onehot(target)) / B */
void softmax_xent_backward(float *dlogits, const float *probs, const int32_t *targets,
                           int B, int V, float scale) {
    float k = scale / B;
    #pragma omp parallel for if((size_t)B * V > NN_PAR_MIN)
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * V;
        float *d = dlogits + (size_t)b * V;
        for (int j = 0; j < V; j++) d[j] += k * p[j];
        d[targets[b]] -= k;
    }
}

/* ------------------------------------------------------------------------------------
 * Optimisation
 * ------------------------------------------------------------------------------------ */

adamw_cfg adamw_default(float lr) {
    adamw_cfg c = { lr, 0.9f, 0.999f, 1e-8f, 0.01f };
    return c;
}

/* p, g, m, v (n)
 * AdamW as torch.optim.AdamW: decoupled decay p *= 1 - lr*wd, moment updates, and
 * bias-corrected step lr * mhat / (sqrt(vhat) + eps). */
void adamw_update(const adamw_cfg *cfg, float *p, const float *g, float *m, float *v,
                  size_t n, long step) {
    float lr = cfg->lr, b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps;
    float decay = 1.0f - cfg->lr * cfg->weight_decay;
    float bc1 = 1.0f - (float)pow(b1, (double)step);
    float bc2 = 1.0f - (float)pow(b2, (double)step);
    float step_size = lr / bc1;
    float bc2_sqrt = sqrtf(bc2);
    #pragma omp parallel for if(n > NN_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi; v[i] = vi;
        float pi = p[i] * decay;
        p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

/* g (n) -> ||g||_2, summed in double per thread. */
float grad_norm(const float *g, size_t n) {
    /* Fixed chunks summed in index order: the same bits for any thread count. */
    enum { CH = 1 << 16 };
    size_t nc = (n + CH - 1) / CH;
    if (nc == 0) return 0.0f;
    double part[nc];
    #pragma omp parallel for if(n > NN_PAR_MIN)
    for (size_t c = 0; c < nc; c++) {
        size_t i0 = c * CH, i1 = i0 + CH < n ? i0 + CH : n;
        double s = 0;
        for (size_t i = i0; i < i1; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double s = 0;
    for (size_t c = 0; c < nc; c++) s += part[c];
    return (float)sqrt(s);
}

/* g (n) scaled in place to global norm <= max_norm; returns the norm before. */
float grad_clip(float *g, size_t n, float max_norm) {
    float norm = grad_norm(g, n);
    if (max_norm > 0) {
        float coef = max_norm / (norm + 1e-6f);
        if (coef < 1.0f) {
            #pragma omp parallel for if(n > NN_PAR_MIN)
            for (size_t i = 0; i < n; i++) g[i] *= coef;
        }
    }
    return norm;
}

/* ---- standard layer norm ---- */

/* x (N,C), w, b (C) -> y (N,C) = w * (x - mean) * rstd + b, mean and rstd (N) saved.
 * Statistics in double so that rows with a large mean keep their precision. */
void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, int N, int C, float eps) {
    #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
        double s = 0, ss = 0;
        for (int c = 0; c < C; c++) s += xr[c];
        double mu = s / C;
        for (int c = 0; c < C; c++) { double t = xr[c] - mu; ss += t * t; }
        float rs = (float)(1.0 / sqrt(ss / C + eps));
        for (int c = 0; c < C; c++) yr[c] = w[c] * ((xr[c] - (float)mu) * rs) + b[c];
        mean[n] = (float)mu;
        rstd[n] = rs;
    }
}

/* dy (N,C) -> dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w and
 * xhat = (x - mean) * rstd; dw += sum_n dy * xhat; db += sum_n dy. The parameter sums are
 * reduced serially over rows (C is small), the input gradient row-parallel. */
void layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C) {
    if (dx) {
        #pragma omp parallel for if((size_t)N * C > NN_PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * C, *gr = dy + (size_t)n * C;
            float *dr = dx + (size_t)n * C;
            double sg = 0, sgx = 0;
            for (int c = 0; c < C; c++) {
                double g = (double)gr[c] * w[c], xh = (xr[c] - mean[n]) * rstd[n];
                sg += g; sgx += g * xh;
            }
            float mg = (float)(sg / C), mgx = (float)(sgx / C);
            for (int c = 0; c < C; c++) {
                float xh = (xr[c] - mean[n]) * rstd[n];
                dr[c] += rstd[n] * (gr[c] * w[c] - mg - xh * mgx);
            }
        }
    }
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *gr = dy + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            if (dw) dw[c] += gr[c] * ((xr[c] - mean[n]) * rstd[n]);
            if (db) db[c] += gr[c];
        }
    }
}
