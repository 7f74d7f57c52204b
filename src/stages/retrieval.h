/* retrieval: scoring a batch of query vectors against every item, excluding a user's known
 * items, the rank of the held-out item, partial top-K selection, and HR@K / NDCG@K.
 *
 * Order: higher score first; equal scores are broken by the lower item id, so the rank of the
 * target and the top-K list always agree with one stable full sort. Excluded items score -inf
 * and never count. */
#ifndef TOKENREC_RETRIEVAL_H
#define TOKENREC_RETRIEVAL_H
#include <stdint.h>

/* scores (B,NI) = q (B,D) . pool (NI,D)^T, one sgemm; with cosine, q rows and pool rows are
 * normalised first (pool_norm: NI inverse norms, precomputed with retr_inv_norms). */
void retr_scores(float *scores, const float *q, int B, const float *pool, const float *pool_inv_norm,
                 int NI, int D, int cosine);
void retr_inv_norms(float *inv, const float *v, int n, int D);

/* 0-based rank of item t in one row of NI scores (excluded items hold -INFINITY). */
int retr_rank(const float *scores, int NI, int32_t t);
/* The K best items of a row, best first (K clipped to the non-excluded count); returns
 * how many were written. Partial selection with a heap: O(NI log K). */
int retr_topk(const float *scores, int NI, int K, int32_t *idx, float *val);

#define RETR_MAX_K 4
typedef struct {
    int    nk, ks[RETR_MAX_K];
    double hr[RETR_MAX_K], ndcg[RETR_MAX_K];   /* sums; divide by n */
    long   n;
} retr_metrics;

void   retr_metrics_init(retr_metrics *m, int nk, const int *ks);
void   retr_metrics_add(retr_metrics *m, int rank);     /* rank < 0: target excluded/missing: a miss */
double retr_hr(const retr_metrics *m, int k);
double retr_ndcg(const retr_metrics *m, int k);

#endif
