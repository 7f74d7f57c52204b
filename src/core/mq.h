/* mq: the MQ-Tokenizer (masked vector-quantized tokenizer) of TokenRec, CLEAN form
 * (docs/METHOD.md, "Tokenization") and, as an option, the residual form below. Pure model math: no
 * database. The tokenize stage (tokenize.c) feeds it CF vectors, drives the epochs, and
 * stores what comes out.
 *
 * Model, for one entity type (users or items), input q (N,d_in):
 *   train:  q' = q * (1 - m), m ~ Bernoulli(rho) per sample and dimension (no rescaling)
 *           a_k = Enc_k(q'),  k = 0..K-1, each an MLP
 *                 Linear(d_in,h1)-BN-Dropout(p1)-ReLU-Linear(h1,h2)-BN-Dropout(p2)-ReLU-Linear(h2,d_c)
 *           w_k = argmin_l |a_k - C_k[l]|^2     (via sgemm: |c|^2 - 2 a.c)
 *           c^_k = a_k + sg(C_k[w_k] - a_k)     (straight-through)
 *           r = Dec(mean_k c^_k), Dec the mirror MLP d_c -> h2 -> h1 -> d_in
 *           loss = MSE(r, q) + sum_k MSE(sg a_k, C_k[w_k]) + beta sum_k MSE(a_k, sg C_k[w_k])
 *   infer:  no mask, no dropout, BatchNorm with running statistics, tokens (w_0..w_{K-1}).
 *
 * Residual form (cfg.residual = 1, docs/METHOD.md "Tokenization", the variant that
 * produced the official LastFM tokens): ONE encoder, and codebook k quantises what the
 * codebooks before it left over:
 *           a = Enc(q'),  r_0 = a,  w_k = argmin_l |r_k - C_k[l]|^2,  r_{k+1} = r_k - C_k[w_k]
 *           z = sum_k C_k[w_k],  r = Dec(a + sg(z - a))   (straight-through)
 *           loss = MSE(r, q) + sum_k MSE(sg r_k, C_k[w_k]) + beta MSE(a, sg z)
 *         Later codebooks split the cells of earlier ones, so near neighbours get distinct
 *         tuples more often than with K parallel encoders.
 *
 * Parameters live in ONE float buffer (so AdamW is one call), in this order:
 *   for each encoder k (one in the residual form), then the decoder:
 *   for layer l = 0,1,2: W_l (d_{l+1}, d_l), b_l (d_{l+1});
 *   then for l = 0,1: gamma_l (d_{l+1}), beta_l (d_{l+1});
 *   then the codebooks C_0..C_{K-1}, each (L, d_c)  [offset mq_model.off_cb, the tail].
 * BatchNorm running statistics live in a second buffer: for each MLP, for l = 0,1:
 * running_mean (d_{l+1}), running_var (d_{l+1}).
 */
#ifndef TOKENREC_MQ_H
#define TOKENREC_MQ_H
#include <stddef.h>
#include <stdint.h>
#include "rng.h"

#define MQ_MAXK 8

typedef struct {
    int   d_in;         /* CF vector dimension (64) */
    int   h1, h2;       /* hidden widths of the encoders (128, 256); the decoder mirrors them */
    int   d_c;          /* code vector dimension (512) */
    int   K;            /* codebooks = tokens per entity (3) */
    int   L;            /* codewords per codebook (256 or 512) */
    float rho;          /* input mask ratio (0.2) */
    float p1, p2;       /* dropout after the first / second BatchNorm (0.5, 0.2) */
    float beta;         /* commitment weight (0.25) */
    float bn_eps;       /* 1e-5 */
    float bn_momentum;  /* 0.1, PyTorch's */
    int   residual;     /* 0: K parallel encoders (CLEAN); 1: one encoder, residual codebooks */
} mq_cfg;

/* Encoders of a configuration: K, or 1 in the residual form. */
static inline int mq_n_enc(const mq_cfg *c) { return c->residual ? 1 : c->K; }

mq_cfg mq_default_cfg(void);
/* 0, or -1 with tr_error naming the bad field. */
int mq_cfg_check(const mq_cfg *c);

/* One MLP: dims d[0..3], offsets into the parameter and BN buffers. */
typedef struct {
    int    d[4];
    size_t w[3], b[3], g[2], be[2];     /* parameter offsets */
    size_t rm[2], rv[2];                /* BN buffer offsets */
} mq_mlp;

typedef struct {
    mq_cfg cfg;
    mq_mlp enc[MQ_MAXK], dec;
    size_t n_params;    /* total floats in params */
    size_t off_cb;      /* codebooks start here; n_params - off_cb = K*L*d_c */
    size_t n_bn;        /* floats in bn */
    float *params;
    float *bn;
} mq_model;

/* Allocate and initialise as PyTorch would: Linear U(+-1/sqrt(in)), BN gamma 1 beta 0,
 * running mean 0 var 1, codebooks U(+-1/L). */
int  mq_model_init(mq_model *m, const mq_cfg *cfg, rng_t *rng);
void mq_model_free(mq_model *m);

/* ---- layers with their own forward/backward pairs ---- */

/* BatchNorm1d. x (N,C), gamma, beta (C), running rm, rv (C) -> y (N,C).
 * train: batch mean and biased variance; xh (N,C), mean (C), rstd (C) are saved for the
 * backward pass; the running stats move by momentum (unbiased variance, as PyTorch; momentum
 * 0 leaves them alone). eval: running stats; xh, mean, rstd may be NULL. y may not alias x. */
void batchnorm_forward(float *y, float *xh, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, float *rm, float *rv,
                       int N, int C, int train, float momentum, float eps);
/* train mode only. dy (N,C), xh (N,C), gamma, rstd (C) -> dx (N,C) +=, dgamma, dbeta (C) += */
void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                        const float *xh, const float *gamma, const float *rstd, int N, int C);

/* Nearest codeword. a (N,D), C (L,D) -> codes (N); dist (N,L) and cnorm (L) are scratch.
 * Squared L2 through one sgemm: |c|^2 - 2 a.c (|a|^2 does not change the argmin); ties go
 * to the lowest index. */
void vq_assign(int32_t *codes, float *dist, float *cnorm, const float *a, const float *C,
               int N, int L, int D);

/* Straight-through quantizer. a (N,D) encoder output, C (L,D), codes (N), and the two
 * stop-gradient constants sg_a (N,D) (= a) and sg_q (N,D) (= C[codes]) -> c^ (N,D) =
 * a + (sg_q - sg_a); *cb = mean((sg_a - C[codes])^2), *cm = mean((a - sg_q)^2).
 * (The constants are explicit so a finite-difference check can hold them fixed.) */
void vq_forward(float *chat, double *cb, double *cm, const float *a, const float *C,
                const int32_t *codes, const float *sg_a, const float *sg_q, int N, int D);
/* Gradient of  sum(dchat . c^) + wcb * cb + wcm * cm:
 * da (N,D) += dchat + wcm * 2 (a - sg_q) / (N D);  dC[codes] += wcb * 2 (C[codes] - sg_a) / (N D) */
void vq_backward(float *da, float *dC, const float *dchat, const float *a, const float *C,
                 const int32_t *codes, const float *sg_a, const float *sg_q, int N, int D,
                 float wcb, float wcm);

/* ---- the whole model on a batch ---- */

/* Saved activations of one MLP on a batch. */
typedef struct {
    float   *z[2], *xh[2], *a[2];   /* pre-BN, normalised, post dropout+ReLU: (N, d[l+1]) */
    uint8_t *mask[2];               /* dropout masks */
    float   *mean[2], *rstd[2];     /* BN batch stats */
    float   *out;                   /* (N, d[3]) */
} mq_mlp_act;

/* Workspace for batches of up to nmax rows. */
typedef struct {
    int        nmax, n;             /* capacity, rows of the last forward */
    float     *xm;                  /* masked input (nmax, d_in) */
    uint8_t   *inmask;              /* input mask (nmax, d_in), 1 = masked */
    mq_mlp_act enc[MQ_MAXK], dec;
    int32_t   *codes;               /* (K, nmax) */
    float     *sg_a, *sg_q;         /* (K, nmax, d_c) stop-gradient constants; in the
                                     * residual form sg_a[k] holds r_k (sg_a[0] = a) */
    float     *chat;                /* (K, nmax, d_c) */
    float     *mix;                 /* (nmax, d_c) decoder input: mean of the c^_k (residual
                                     * form: a + sg(sum_k C_k[w_k] - a)) */
    float     *dmix, *da, *dr;      /* backward: (nmax, d_c), (nmax, d_c), (nmax, d_in) */
    float     *dist, *cnorm;        /* (nmax, L), (L) */
    float     *g1, *g2;             /* backward scratch (nmax, max width) */
    float     *grad;                /* (n_params) parameter gradients */
    double     recon, cb, cm, loss; /* of the last forward */
} mq_ws;

int  mq_ws_init(mq_ws *w, const mq_model *m, int nmax);
void mq_ws_free(mq_ws *w);

/* x (N,d_in) -> ws->codes, ws->dec.out (N,d_in) reconstruction, ws->recon/cb/cm/loss.
 * train: input mask and dropout drawn from rng (in that order), batch-stat BN whose running
 * stats move by bn_momentum times update_bn. eval (train 0): no mask, no dropout, running stats.
 * freeze: keep ws->codes, ws->sg_a and ws->sg_q from the previous call (for gradient checks);
 * otherwise they are recomputed (argmin, then sg_a = a, sg_q = C[codes]; in the residual
 * form sg_a[k] = r_k). */
void mq_forward(mq_model *m, mq_ws *ws, const float *x, int N, int train, int update_bn,
                rng_t *rng, int freeze);
/* Gradient of ws->loss w.r.t. all parameters into ws->grad (zeroed here first).
 * Only after a train-mode forward. */
void mq_backward(const mq_model *m, mq_ws *ws, const float *x);

/* Inference on rows idx[0..n-1] of X (n_all, d_in) (idx NULL: rows 0..n-1): tokens
 * codes (n, K) and, if sqerr is not NULL, the summed squared reconstruction error. */
void mq_encode(mq_model *m, mq_ws *ws, const float *X, const int32_t *idx, int n,
               int32_t *codes, double *sqerr);

/* ---- training ---- */

typedef struct {
    float lr, weight_decay;
    int   batch;
    int   epochs;
    int   kmeans_per_code;  /* k-means on >= this many points per codeword (10) */
    int   kmeans_iters;     /* Lloyd iterations (20) */
    int   reseed_every;     /* re-seed codewords unused for this many epochs (0: never) */
} mq_train_cfg;

mq_train_cfg mq_default_train_cfg(void);

/* Everything a resumed run needs: model, AdamW moments, generator, counters, best so far. */
typedef struct {
    mq_model model;
    float   *adam_m, *adam_v;       /* (n_params) */
    float   *best_params, *best_bn; /* the best holdout reconstruction so far */
    uint32_t *usage;                /* (K, L) assignments since the last re-seed */
    rng_t    rng;
    int      epoch;                 /* epochs completed */
    int      kmeans_done;
    int      best_epoch;            /* -1: none yet */
    long     step;                  /* AdamW steps */
    double   best_mse;
} mq_trainer;

typedef struct {
    double loss, recon, cb, cm;     /* means over the epoch's batches */
    double holdout_mse;             /* eval-mode reconstruction MSE on the holdout */
    int    used[MQ_MAXK];           /* distinct codes assigned during the epoch */
    int    reseeded;                /* codewords re-seeded after this epoch */
    int    improved;                /* 1 if this epoch is the new best */
} mq_epoch_stats;

int  mq_trainer_init(mq_trainer *t, const mq_cfg *cfg, uint64_t seed);
void mq_trainer_free(mq_trainer *t);
/* One epoch over the rows train_idx of X (k-means first, at epoch 0), then the holdout
 * evaluation (rows hold_idx; with nho == 0 the training rows are used). */
int  mq_train_epoch(mq_trainer *t, mq_ws *ws, const mq_train_cfg *tc, const float *X,
                    const int32_t *train_idx, int ntr, const int32_t *hold_idx, int nho,
                    mq_epoch_stats *st);
/* Copy the best weights and BN statistics into t->model (for the final tokens). */
void mq_trainer_use_best(mq_trainer *t);

/* Serialise the trainer (cfg checked on load) into one malloc'd blob, and back. */
int  mq_trainer_save(const mq_trainer *t, void **blob, size_t *n);
int  mq_trainer_load(mq_trainer *t, const void *blob, size_t n);

/* ---- token statistics ---- */

typedef struct {
    int    n;
    int    used[MQ_MAXK];           /* distinct codes per codebook */
    double perplexity[MQ_MAXK];     /* exp(entropy) of the code distribution */
    int    distinct;                /* distinct K-tuples */
    int    largest_group;           /* most entities sharing one tuple */
    int    collisions;              /* n - distinct */
} mq_token_stats;

/* codes (n,K) -> stats. */
void mq_token_stats_compute(const int32_t *codes, int n, int K, int L, mq_token_stats *s);
/* codes (n,K) -> extra (n): 0 for the first entity (lowest row) of each tuple, 1, 2, ... for
 * the others, so (codes, extra) is unique. Returns the largest extra + 1. */
int  mq_disambiguate(const int32_t *codes, int n, int K, int32_t *extra);

#endif
