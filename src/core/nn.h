/* nn: neural-network layers as plain forward/backward function pairs (llm.c style).
 *
 * Conventions, shared by every layer here:
 *  - Tensors are flat row-major float arrays; shapes are given in a comment above each
 *    function, e.g. x (N,C) means x[n*C + c].
 *  - Linear weights are stored (out,in) as in PyTorch: y = x W^T + b.
 *  - Every *_backward ACCUMULATES (+=) into the input gradient and the parameter
 *    gradients, so callers zero them first (and residual branches just add up). An input
 *    gradient pointer may be NULL when it is not needed.
 *  - Nothing here allocates in a forward/backward call; all buffers are passed in.
 *  - Randomness (dropout) comes only from an rng_t passed in; rng == NULL or p == 0
 *    means "no dropout" (evaluation).
 *  - Dense products go through cblas_sgemm (via nn_sgemm); element-wise loops use OpenMP.
 *    Thread counts are set once with nn_set_threads().
 */
#ifndef TOKENREC_NN_H
#define TOKENREC_NN_H
#include <stddef.h>
#include <stdint.h>
#include "rng.h"

/* ---- threads and the sgemm wrapper ---- */

/* Set the thread count of OpenMP loops and of dense products (n <= 0: all cores). */
void nn_set_threads(int n);
int  nn_threads(void);

/* The OpenBLAS kernel set in use is chosen in blaskernel.h (bk_setup, bk_describe). */

/* C (M,N) = alpha * op(A) op(B) + beta * C, row-major, as cblas_sgemm; transA/transB are
 * 0 or 1. Large products are split across the nn threads. */
void nn_sgemm(int transA, int transB, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Seconds spent inside sgemm since the last reset (for benchmarks). */
double nn_sgemm_seconds(void);
void   nn_sgemm_reset(void);

/* ---- embedding ---- */

/* ids (N), table (V,C) -> out (N,C) */
void embedding_forward(float *out, const int32_t *ids, const float *table, int N, int C);
/* dout (N,C) -> dtable (V,C) += */
void embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C);

/* ---- linear ---- */

/* x (N,in), w (out,in), b (out) or NULL -> y (N,out) */
void linear_forward(float *y, const float *x, const float *w, const float *b,
                    int N, int in, int out);
/* dy (N,out), x (N,in), w (out,in) -> dx (N,in) +=, dw (out,in) +=, db (out) += ;
 * dx, dw, db may each be NULL. */
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int N, int in, int out);

/* ---- element-wise ---- */

/* x (n) -> y (n) = max(0, x); y may equal x */
void relu_forward(float *y, const float *x, size_t n);
/* y (n) the forward output, dy (n) -> dx (n) += dy * (y > 0) */
void relu_backward(float *dx, const float *dy, const float *y, size_t n);

/* x (n) -> y (n) = x * mask / (1-p), mask (n) bytes saved for backward. With rng == NULL
 * or p <= 0, y = x and the mask is set to all ones (mask may then be NULL). y may equal x. */
void dropout_forward(float *y, uint8_t *mask, const float *x, size_t n, float p, rng_t *rng);
/* dy (n), mask (n) -> dx (n) += dy * mask / (1-p); mask NULL means p was 0 */
void dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t n, float p);

/* x (N,C) -> y (N,C) row softmax; y may equal x */
void softmax_forward(float *y, const float *x, int N, int C);
/* y (N,C) forward output, dy (N,C) -> dx (N,C) += y * (dy - sum(y*dy)) */
void softmax_backward(float *dx, const float *dy, const float *y, int N, int C);

/* ---- T5 RMS layer norm: y = w * x / sqrt(mean(x^2) + eps) ---- */

/* x (N,C), w (C) -> y (N,C), rstd (N) saved for backward */
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int C,
                     float eps);
/* dy (N,C), x (N,C), w (C), rstd (N) -> dx (N,C) +=, dw (C) += */
void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int N, int C);

/* ---- standard layer norm: y = w * (x - mean) / sqrt(var + eps) + b (SASRec, BERT) ---- */

/* x (N,C), w (C), b (C) -> y (N,C), mean (N), rstd (N) saved for backward */
void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, int N, int C, float eps);
/* dy (N,C), x (N,C), w (C), mean, rstd (N) -> dx (N,C) += (or NULL), dw (C) +=, db (C) += */
void layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C);

/* ---- multi-head attention core (T5: no 1/sqrt(d) scaling) ---- */

/* Hugging Face T5 _relative_position_bucket of (k_pos - q_pos). */
int t5_relative_bucket(int rel, int bidirectional, int num_buckets, int max_distance);

/* table (nb,H) -> bias (H,Tq,Tk) = table[bucket(j - i), h]; bucket (Tq,Tk) saved */
void relbias_forward(float *bias, int32_t *bucket, const float *table, int Tq, int Tk, int H,
                     int nb, int max_distance, int bidirectional);
/* dbias (H,Tq,Tk), bucket (Tq,Tk) -> dtable (nb,H) += */
void relbias_backward(float *dtable, const float *dbias, const int32_t *bucket, int Tq, int Tk,
                      int H);

/* q (B,Tq,H*D), k, v (B,Tk,H*D), bias (H,Tq,Tk) or NULL, kmask (B,Tk) 1 = key visible,
 * 0 = masked (-1e9 added) or NULL, causal (key j > query i masked)
 * -> att (B,H,Tq,Tk) probabilities saved for backward, out (B,Tq,H*D).
 * ldq and ldk are the row strides of q and of k, v (H*D when dense; 3*H*D when q, k, v are
 * the three column blocks of one fused projection).
 * Dropout on the probabilities (as Hugging Face T5 does) when p > 0 and rng != NULL: then
 * attd (B,H,Tq,Tk) gets the dropped, rescaled probabilities and dmask (B,H,Tq,Tk) the
 * mask; otherwise both may be NULL. */
void attention_forward(float *out, float *att, float *attd, uint8_t *dmask,
                       const float *q, const float *k, const float *v, int ldq, int ldk,
                       const float *bias, const int32_t *kmask, int causal,
                       int B, int Tq, int Tk, int H, int D, float p, rng_t *rng);
/* dout (B,Tq,H*D), att, attd, dmask, q, k, v and p as forward (attd, dmask NULL or p 0:
 * no dropout), scratch (B,H,Tq,Tk) -> dq +=, dk, dv += (same row strides ldq, ldk as q
 * and k), dbias (H,Tq,Tk) += (or NULL) */
void attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                        const float *dout, const float *att, const float *attd,
                        const uint8_t *dmask, const float *q, const float *k, const float *v,
                        int ldq, int ldk, int B, int Tq, int Tk, int H, int D, float p);

/* ---- feed-forward block: y = dropout(relu(x Wi^T)) Wo^T ---- */

/* x (N,C), wi (F,C), wo (C,F) -> h (N,F) relu output, hd (N,F) after dropout (may equal h
 * when p == 0), mask (N,F), y (N,C) */
void ffn_forward(float *y, float *h, float *hd, uint8_t *mask, const float *x, const float *wi,
                 const float *wo, int N, int C, int F, float p, rng_t *rng);
/* dy (N,C), scratch (N,F) -> dx (N,C) +=, dwi (F,C) +=, dwo (C,F) += */
void ffn_backward(float *dx, float *dwi, float *dwo, float *scratch, const float *dy,
                  const float *x, const float *h, const float *hd, const uint8_t *mask,
                  const float *wi, const float *wo, int N, int C, int F, float p);

/* ---- TokenRec head: z = fc2(dropout(relu(fc1(x)))) ---- */

/* x (B,In), w1 (Hd,In), b1 (Hd), w2 (Out,Hd), b2 (Out) -> h (B,Hd) relu output,
 * hd (B,Hd) after dropout, mask (B,Hd), z (B,Out) */
void head_forward(float *z, float *h, float *hd, uint8_t *mask, const float *x,
                  const float *w1, const float *b1, const float *w2, const float *b2,
                  int B, int In, int Hd, int Out, float p, rng_t *rng);
/* dz (B,Out), scratch (B,Hd) -> dx (B,In) += (or NULL), dw1, db1, dw2, db2 += */
void head_backward(float *dx, float *dw1, float *db1, float *dw2, float *db2, float *scratch,
                   const float *dz, const float *x, const float *h, const float *hd,
                   const uint8_t *mask, const float *w1, const float *w2,
                   int B, int In, int Hd, int Out, float p);

/* ---- losses ---- */

/* Cosine embedding loss, margin 0, mean over 2B pairs:
 * z, pos, neg (B,D) -> mean_b([1 - cos(z,pos)] and [max(0, cos(z,neg))]).
 * cos uses PyTorch's form z.t / sqrt((|z|^2 + 1e-12)(|t|^2 + 1e-12)). */
float cosine_loss_forward(const float *z, const float *pos, const float *neg, int B, int D);
/* -> dz (B,D) += scale * d loss / dz (scale 1 for the plain loss) */
void  cosine_loss_backward(float *dz, const float *z, const float *pos, const float *neg,
                           int B, int D, float scale);

/* Softmax cross-entropy: logits (B,V), targets (B) -> probs (B,V), returns mean loss. */
float softmax_xent_forward(float *probs, const float *logits, const int32_t *targets,
                           int B, int V);
/* -> dlogits (B,V) += scale * (probs - onehot) / B */
void  softmax_xent_backward(float *dlogits, const float *probs, const int32_t *targets,
                            int B, int V, float scale);

/* The two above fused and in place, for large V: logits (B,V), targets (B) -> the summed
 * loss over the rows (a -inf logit is a masked column; rowloss (B) is scratch); with grad,
 * logits becomes scale * (probs - onehot), the gradient of scale * the summed loss. */
double softmax_xent_inplace(float *logits, const int32_t *targets, int B, int V, float scale,
                            int grad, double *rowloss);

/* ---- optimisation ---- */

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} adamw_cfg;

/* PyTorch defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01. */
adamw_cfg adamw_default(float lr);

/* One AdamW step over a contiguous buffer: p (n), g (n), m, v (n) moments;
 * step is the 1-based step number (bias correction). Decoupled weight decay:
 * p -= lr*wd*p, then p -= lr * mhat / (sqrt(vhat) + eps). */
void adamw_update(const adamw_cfg *cfg, float *p, const float *g, float *m, float *v,
                  size_t n, long step);

/* Global L2 norm of g (n). */
float grad_norm(const float *g, size_t n);
/* Scale g so its global norm is at most max_norm (PyTorch clip_grad_norm_: factor
 * max_norm / (norm + 1e-6) when smaller than 1); returns the norm before clipping. */
float grad_clip(float *g, size_t n, float max_norm);

#endif
