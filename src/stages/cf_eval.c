/* cf_eval.c: full-ranking HR@K and NDCG@K of dot-product retrieval, for cf's validation and
 * its final metrics. Scores come from nn_sgemm in blocks of users, so memory stays at one
 * block (about 2M scores, 16 to 256 users) whatever the dataset. */
#include "cf.h"
#include "nn.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CF_EVAL_SCORES (2 << 20)     /* scores per block */

/* The 0-based rank of item t in row s (n_items) after excluded items are set to -inf:
 * the number of items that score higher, ties broken by lower item id. */
static int64_t rank_of(const float *s, int32_t n_items, int32_t t) {
    float st = s[t];
    int64_t r = 0;
    for (int32_t j = 0; j < t; j++) r += s[j] >= st;
    for (int32_t j = t + 1; j < n_items; j++) r += s[j] > st;
    return r;
}

void cf_evaluate(const cf_data *d, const float *uvec, const float *ivec, int C, int split,
                 cf_metrics *out) {
    memset(out, 0, sizeof *out);
    int32_t U = d->n_users, I = d->n_items;
    const int32_t *target = split == 2 ? d->test : d->valid;
    int block = CF_EVAL_SCORES / I;
    block = block < 16 ? 16 : block > 256 ? 256 : block;
    float *S = tr_malloc((size_t)block * I * sizeof *S);
    int64_t *rank = tr_malloc((size_t)block * sizeof *rank);
    double hr10 = 0, hr20 = 0, nd10 = 0, nd20 = 0;
    int n = 0;
    for (int32_t u0 = 0; u0 < U; u0 += block) {
        int bu = U - u0 < block ? U - u0 : block;
        /* S (bu, I) = uvec[u0 .. u0+bu) (bu, C) · ivec (I, C)^T */
        nn_sgemm(0, 1, bu, I, C, 1.0f, uvec + (size_t)u0 * C, C, ivec, C, 0.0f, S, I);
        #pragma omp parallel for schedule(dynamic, 8)
        for (int b = 0; b < bu; b++) {
            int32_t u = u0 + b, t = target[u];
            rank[b] = -1;
            if (t < 0) continue;
            float *s = S + (size_t)b * I;
            for (int64_t k = d->off[u]; k < d->off[u + 1]; k++) s[d->item[k]] = -INFINITY;
            if (split == 2 && d->valid[u] >= 0 && d->valid[u] != t) s[d->valid[u]] = -INFINITY;
            rank[b] = rank_of(s, I, t);
        }
        for (int b = 0; b < bu; b++) {
            if (rank[b] < 0) continue;
            n++;
            double g = 1.0 / log2((double)rank[b] + 2.0);
            if (rank[b] < 10) { hr10 += 1; nd10 += g; }
            if (rank[b] < 20) { hr20 += 1; nd20 += g; }
        }
    }
    free(S);
    free(rank);
    out->n_users = n;
    if (n) {
        out->hr10 = hr10 / n;
        out->hr20 = hr20 / n;
        out->ndcg10 = nd10 / n;
        out->ndcg20 = nd20 / n;
    }
}
