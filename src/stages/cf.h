/* cf: stage 1 of TokenRec, collaborative filtering (LightGCN, or MF on the same code path).
 *
 * The model: E0 (n,C) ego embeddings of the n = |U| + |I| nodes (users first, then items
 * at n_users + iid); the normalised bipartite adjacency Â = D^-1/2 A D^-1/2 of the train
 * interactions (no self loops) in CSR; the final representation mean = 1/(L+1) Σ_l Â^l E0
 * (L = 0 for MF, so mean = E0); score(u, i) = <mean_u, mean_i>. Trained with BPR (one
 * uniform negative that is never a train item of the user) plus L2 on the batch's ego rows,
 * Adam. The propagation is a sparse-dense product split by rows over the OpenMP threads;
 * since each row is summed by one thread in CSR order, the results do not depend on the
 * thread count. The backward pass of the propagation is the same product (Â is symmetric).
 *
 * The stage (`tokenrec cf`) reads split 0 (train) interactions, selects the checkpoint on
 * split 1 (valid), reports split 2 (test) for the selected checkpoint, and writes cf_vectors
 * (user/item x ego/mean) and run_metrics (see schema/002_cf.sql). */
#ifndef TOKENREC_CF_H
#define TOKENREC_CF_H
#include <sqlite3.h>
#include <stdint.h>
#include "rng.h"

/* A dataset as cf sees it: each user's train items (sorted ascending, for the sampler's
 * membership test), the train pairs in (uid, position) order, and the valid / test targets. */
typedef struct {
    int32_t  n_users, n_items;
    int64_t  n_train;           /* train pairs */
    int64_t *off;               /* n_users + 1: user u's train items are item[off[u]..off[u+1]) */
    int32_t *item;              /* sorted per user */
    int32_t *pair_user;         /* n_train: the user of train pair k, in (uid, pos) order */
    int32_t *pair_item;         /* n_train */
    int32_t *valid;             /* n_users: the valid item (split 1), -1 if none */
    int32_t *test;              /* n_users: the test item (split 2), -1 if none */
} cf_data;

/* Build from arrays of (uid, iid, split) triples in any order; ids must be in range.
 * 0, or -1 with tr_error (an id out of range, a user with all items in train). */
int  cf_data_from_triples(cf_data *d, int32_t n_users, int32_t n_items, int64_t n,
                          const int32_t *uid, const int32_t *iid, const int32_t *split);
/* Load a dataset's interactions from the database. */
int  cf_data_load(sqlite3 *db, const char *dataset, cf_data *d);
void cf_data_free(cf_data *d);
/* The epoch cap cf gives a dataset by default (its row of cf's preset table). */
int  cf_default_epochs(const char *dataset);
/* 1 if item i is one of user u's train items (binary search). */
int  cf_is_train(const cf_data *d, int32_t u, int32_t i);
/* A uniform negative for u: an item drawn uniformly from the items that are not u's train
 * items (rejection sampling). u must have fewer train items than there are items. */
int32_t cf_sample_negative(const cf_data *d, int32_t u, rng_t *rng);

/* The normalised adjacency in CSR over n = n_users + n_items nodes; row r's columns are
 * ascending, val = 1/sqrt(deg_r deg_c). Symmetric. */
typedef struct {
    int32_t  n, n_users, n_items;
    int64_t  nnz;
    int64_t *rowptr;            /* n + 1 */
    int32_t *col;               /* nnz */
    float   *val;               /* nnz */
} cf_graph;

int  cf_graph_build(cf_graph *g, const cf_data *d);
void cf_graph_free(cf_graph *g);

/* x (n,C) -> y (n,C) = Â x; and acc (n,C) += y when acc is not NULL. y must not alias x. */
void cf_spmm(float *y, float *acc, const cf_graph *g, const float *x, int C);

/* e0 (n,C) -> mean (n,C) = 1/(L+1) Σ_{l=0..L} Â^l e0; tmp0, tmp1 (n,C) scratch (unused when
 * L == 0). */
void cf_propagate_forward(float *mean, const cf_graph *g, const float *e0, int C, int L,
                          float *tmp0, float *tmp1);
/* dmean (n,C) -> de0 (n,C) += 1/(L+1) Σ_{l=0..L} Â^l dmean (the transpose of the forward,
 * Â being symmetric). dmean is used as scratch and left overwritten; tmp (n,C) scratch. */
void cf_propagate_backward(float *de0, const cf_graph *g, float *dmean, int C, int L,
                           float *tmp);

/* BPR + L2 on a batch of B triples (node ids: user u, items n_users + i):
 *   loss = 1/B Σ_b softplus(<m_u, m_n> - <m_u, m_p>) + decay/B Σ_b ½(|e_u|²+|e_p|²+|e_n|²)
 * with m = mean (n,C), e = e0 (n,C). Returns the loss (the L2 part in *l2 if not NULL).
 * With dmean and de0 not NULL: dmean (n,C) += d loss/d mean (BPR part), de0 (n,C) += the L2
 * gradient. scratch (3B) floats. Sums run in a fixed order (deterministic). */
float cf_bpr_forward_backward(const float *mean, const float *e0, const int32_t *u,
                              const int32_t *p, const int32_t *ng, int B, int C, float decay,
                              float *dmean, float *de0, float *scratch, float *l2);

/* Full-ranking retrieval metrics over the users that have a target. */
typedef struct {
    double hr10, hr20, ndcg10, ndcg20;
    int    n_users;             /* users evaluated */
} cf_metrics;

/* Rank every user's target among all items by <uvec_u, ivec_i>; excluded: the user's train
 * items, and for split 2 (test) also the valid item. split 1 targets the valid item, split 2
 * the test item. uvec (n_users,C), ivec (n_items,C). rank = #items scoring higher (ties:
 * lower item id first). Dense products through nn_sgemm in blocks of users. */
void cf_evaluate(const cf_data *d, const float *uvec, const float *ivec, int C, int split,
                 cf_metrics *out);

/* The `tokenrec cf` command. Returns 0, 130 when stopped by Ctrl-C (resumable), or -1. */
int cmd_cf(int argc, char **argv);

#endif
