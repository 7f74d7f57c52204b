/* cf_graph.c: the data, the normalised adjacency, the propagation and the BPR loss of cf.
 * Knows nothing of the stage runner; cf.c drives training, cf_eval.c ranks. */
#include "cf.h"
#include "db.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Build the per-user train lists (counting sort by user, stable), the pair list and the
 * targets from unordered (uid, iid, split) triples. */
int cf_data_from_triples(cf_data *d, int32_t n_users, int32_t n_items, int64_t n,
                         const int32_t *uid, const int32_t *iid, const int32_t *split) {
    memset(d, 0, sizeof *d);
    if (n_users <= 0 || n_items <= 0)
        return tr_error("cf: expected a dataset with users and items, got %d users and %d items",
                        n_users, n_items);
    d->n_users = n_users;
    d->n_items = n_items;
    d->off = tr_calloc((size_t)n_users + 1, sizeof *d->off);
    d->valid = tr_malloc((size_t)n_users * sizeof *d->valid);
    d->test = tr_malloc((size_t)n_users * sizeof *d->test);
    for (int32_t u = 0; u < n_users; u++) d->valid[u] = d->test[u] = -1;
    for (int64_t k = 0; k < n; k++) {
        if (uid[k] < 0 || uid[k] >= n_users || iid[k] < 0 || iid[k] >= n_items ||
            split[k] < 0 || split[k] > 2) {
            cf_data_free(d);
            return tr_error("cf: interaction %lld: expected uid < %d, iid < %d, split 0..2, got "
                            "uid %d iid %d split %d; re-ingest the dataset", (long long)k,
                            n_users, n_items, uid[k], iid[k], split[k]);
        }
        if (split[k] == 0) d->off[uid[k] + 1]++;
        else if (split[k] == 1) d->valid[uid[k]] = iid[k];
        else d->test[uid[k]] = iid[k];
    }
    for (int32_t u = 0; u < n_users; u++) d->off[u + 1] += d->off[u];
    d->n_train = d->off[n_users];
    d->item = tr_malloc(((size_t)d->n_train + 1) * sizeof *d->item);
    d->pair_user = tr_malloc(((size_t)d->n_train + 1) * sizeof *d->pair_user);
    d->pair_item = tr_malloc(((size_t)d->n_train + 1) * sizeof *d->pair_item);
    int64_t *fill = tr_malloc(((size_t)n_users + 1) * sizeof *fill);
    memcpy(fill, d->off, (size_t)n_users * sizeof *fill);
    for (int64_t k = 0; k < n; k++)
        if (split[k] == 0) {
            int64_t at = fill[uid[k]]++;
            d->pair_user[at] = uid[k];
            d->pair_item[at] = iid[k];
            d->item[at] = iid[k];
        }
    free(fill);
    for (int32_t u = 0; u < n_users; u++) {
        int64_t a = d->off[u], b = d->off[u + 1];
        qsort(d->item + a, (size_t)(b - a), sizeof *d->item, cmp_i32);
        for (int64_t k = a + 1; k < b; k++)
            if (d->item[k] == d->item[k - 1]) {
                int32_t dup = d->item[k];
                cf_data_free(d);
                return tr_error("cf: user %d has item %d twice in train; expected each pair once "
                                "(re-ingest the dataset)", u, dup);
            }
        if (b - a >= n_items) {
            cf_data_free(d);
            return tr_error("cf: user %d has every item in train, so no negative exists; "
                            "expected fewer train items than items", u);
        }
    }
    return 0;
}

/* Read (uid, iid, split) of a dataset, ordered by user and position. */
int cf_data_load(sqlite3 *db, const char *dataset, cf_data *d) {
    int64_t ds = db_dataset_id(db, dataset);
    if (ds < 0) return -1;
    int32_t nu = (int32_t)db_query_i64(db, 0, "SELECT n_users FROM datasets WHERE id=%lld", (long long)ds);
    int32_t ni = (int32_t)db_query_i64(db, 0, "SELECT n_items FROM datasets WHERE id=%lld", (long long)ds);
    int64_t n = db_query_i64(db, 0, "SELECT count(*) FROM interactions WHERE dataset_id=%lld", (long long)ds);
    sqlite3_stmt *st = db_prep(db, "SELECT uid, iid, split FROM interactions WHERE dataset_id=? "
                                   "ORDER BY uid, pos");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, ds);
    int32_t *u = tr_malloc(((size_t)n + 1) * sizeof *u);
    int32_t *i = tr_malloc(((size_t)n + 1) * sizeof *i);
    int32_t *s = tr_malloc(((size_t)n + 1) * sizeof *s);
    int64_t k = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < n) {
        u[k] = sqlite3_column_int(st, 0);
        i[k] = sqlite3_column_int(st, 1);
        s[k] = sqlite3_column_int(st, 2);
        k++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        free(u); free(i); free(s);
        return tr_error("cf: reading the interactions of %s: %s", dataset, sqlite3_errmsg(db));
    }
    rc = cf_data_from_triples(d, nu, ni, k, u, i, s);
    free(u); free(i); free(s);
    return rc;
}

void cf_data_free(cf_data *d) {
    free(d->off); free(d->item); free(d->pair_user); free(d->pair_item);
    free(d->valid); free(d->test);
    memset(d, 0, sizeof *d);
}

int cf_is_train(const cf_data *d, int32_t u, int32_t i) {
    int64_t lo = d->off[u], hi = d->off[u + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (d->item[mid] < i) lo = mid + 1;
        else hi = mid;
    }
    return lo < d->off[u + 1] && d->item[lo] == i;
}

/* Rejection sampling: uniform over all items, redrawn while it is a train item, which is
 * exactly uniform over the complement. */
int32_t cf_sample_negative(const cf_data *d, int32_t u, rng_t *rng) {
    for (;;) {
        int32_t i = (int32_t)rng_below(rng, (uint32_t)d->n_items);
        if (!cf_is_train(d, u, i)) return i;
    }
}

/* The symmetric bipartite graph of the train pairs: row u lists n_users + i for its items,
 * row n_users + i lists its users, both ascending; val = 1/sqrt(deg_r deg_c). */
int cf_graph_build(cf_graph *g, const cf_data *d) {
    memset(g, 0, sizeof *g);
    int32_t U = d->n_users, I = d->n_items, n = U + I;
    g->n = n;
    g->n_users = U;
    g->n_items = I;
    g->nnz = 2 * d->n_train;
    g->rowptr = tr_calloc((size_t)n + 1, sizeof *g->rowptr);
    g->col = tr_malloc(((size_t)g->nnz + 1) * sizeof *g->col);
    g->val = tr_malloc(((size_t)g->nnz + 1) * sizeof *g->val);
    for (int32_t u = 0; u < U; u++) {
        g->rowptr[u + 1] = d->off[u + 1] - d->off[u];
        for (int64_t k = d->off[u]; k < d->off[u + 1]; k++) g->rowptr[U + d->item[k] + 1]++;
    }
    for (int32_t r = 0; r < n; r++) g->rowptr[r + 1] += g->rowptr[r];
    int64_t *fill = tr_malloc(((size_t)n + 1) * sizeof *fill);
    memcpy(fill, g->rowptr, (size_t)n * sizeof *fill);
    /* Users in ascending order fill item rows, so item rows come out ascending too. */
    for (int32_t u = 0; u < U; u++)
        for (int64_t k = d->off[u]; k < d->off[u + 1]; k++) {
            int32_t it = U + d->item[k];
            g->col[fill[u]++] = it;
            g->col[fill[it]++] = u;
        }
    free(fill);
    for (int32_t r = 0; r < n; r++) {
        double dr = (double)(g->rowptr[r + 1] - g->rowptr[r]);
        for (int64_t k = g->rowptr[r]; k < g->rowptr[r + 1]; k++) {
            int32_t c = g->col[k];
            double dc = (double)(g->rowptr[c + 1] - g->rowptr[c]);
            g->val[k] = (float)(1.0 / sqrt(dr * dc));
        }
    }
    return 0;
}

void cf_graph_free(cf_graph *g) {
    free(g->rowptr); free(g->col); free(g->val);
    memset(g, 0, sizeof *g);
}

/* The one sparse kernel, row r of:
 *     t = Â x;   y = ys·t (if y);   acc = ss·src + as·(t + [self] x) (if acc; src may be NULL
 *     for 0, and may equal acc)
 * which covers a plain product (cf_spmm), a forward layer with its running sum and final
 * 1/(L+1), and the first backward layer with its scaling, each in one pass. */
typedef struct {
    float *y; float ys;
    float *acc; const float *src; float ss, as; int self;
} spmm_out;

static void spmm_row_scalar(const spmm_out *o, const cf_graph *g, const float *x, int C,
                            int32_t r) {
    float t[64];
    for (int c0 = 0; c0 < C; c0 += 64) {
        int w = C - c0 < 64 ? C - c0 : 64;
        for (int c = 0; c < w; c++) t[c] = 0;
        for (int64_t k = g->rowptr[r]; k < g->rowptr[r + 1]; k++) {
            const float v = g->val[k];
            const float *xr = x + (size_t)g->col[k] * C + c0;
            for (int c = 0; c < w; c++) t[c] += v * xr[c];
        }
        size_t at = (size_t)r * C + c0;
        if (o->y)
            for (int c = 0; c < w; c++) o->y[at + c] = o->ys * t[c];
        if (o->acc)
            for (int c = 0; c < w; c++)
                o->acc[at + c] = (o->src ? o->ss * o->src[at + c] : 0.0f) +
                                 o->as * (t[c] + (o->self ? x[at + c] : 0.0f));
    }
}

#if defined(__GNUC__)
/* Eight-float vectors (GCC/Clang vector extension: one AVX register, or two SSE/NEON ones),
 * unaligned. A row's 64-column block keeps 8 accumulators in registers while the
 * neighbours stream by: one broadcast and 8 FMAs per neighbour. (Left to itself, GCC
 * vectorised the neighbour loop with gathers, 5x slower.) */
typedef float v8f __attribute__((vector_size(32), aligned(4)));

static inline void spmm_row_v8(const spmm_out *o, const cf_graph *g, const float *x, int C,
                               int32_t r) {
    const int64_t k0 = g->rowptr[r], k1 = g->rowptr[r + 1];
    for (int c0 = 0; c0 < C; c0 += 64) {
        int nv = (C - c0) / 8 < 8 ? (C - c0) / 8 : 8;
        v8f t[8];
        if (nv == 8) {
            v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
            for (int64_t k = k0; k < k1; k++) {
                const float w = g->val[k];
                const v8f *xr = (const v8f *)(x + (size_t)g->col[k] * C + c0);
                a0 += w * xr[0]; a1 += w * xr[1]; a2 += w * xr[2]; a3 += w * xr[3];
                a4 += w * xr[4]; a5 += w * xr[5]; a6 += w * xr[6]; a7 += w * xr[7];
            }
            t[0] = a0; t[1] = a1; t[2] = a2; t[3] = a3; t[4] = a4; t[5] = a5; t[6] = a6; t[7] = a7;
        } else {
            for (int j = 0; j < nv; j++) t[j] = (v8f){0};
            for (int64_t k = k0; k < k1; k++) {
                const float w = g->val[k];
                const v8f *xr = (const v8f *)(x + (size_t)g->col[k] * C + c0);
                for (int j = 0; j < nv; j++) t[j] += w * xr[j];
            }
        }
        size_t at = (size_t)r * C + c0;
        if (o->y) {
            v8f *yr = (v8f *)(o->y + at);
            for (int j = 0; j < nv; j++) yr[j] = o->ys * t[j];
        }
        if (o->acc) {
            v8f *ar = (v8f *)(o->acc + at);
            const v8f *sr = (const v8f *)(o->src ? o->src + at : NULL);
            const v8f *xs = (const v8f *)(x + at);
            for (int j = 0; j < nv; j++) {
                v8f v = o->self ? t[j] + xs[j] : t[j];
                ar[j] = sr ? o->ss * sr[j] + o->as * v : o->as * v;
            }
        }
    }
}
#endif

/* Rows are split over the threads in chunks; a row is always summed by one thread in CSR
 * order, so the result is the same for any thread count. */
static void spmm_ex(const spmm_out *o, const cf_graph *g, const float *x, int C) {
    int32_t n = g->n;
#if defined(__GNUC__)
    if (C % 8 == 0) {
        #pragma omp parallel for schedule(dynamic, 64)
        for (int32_t r = 0; r < n; r++) spmm_row_v8(o, g, x, C, r);
        return;
    }
#endif
    #pragma omp parallel for schedule(dynamic, 64)
    for (int32_t r = 0; r < n; r++) spmm_row_scalar(o, g, x, C, r);
}

void cf_spmm(float *y, float *acc, const cf_graph *g, const float *x, int C) {
    spmm_out o = {y, 1.0f, acc, acc, 1.0f, 1.0f, 0};
    spmm_ex(&o, g, x, C);
}

/* mean = 1/(L+1) (E0 + E1 + ... + EL), E_l = Â E_{l-1}: layer 1 writes mean = E0 + E1,
 * later layers add to it, the last one scales by 1/(L+1) and does not store E_L. */
void cf_propagate_forward(float *mean, const cf_graph *g, const float *e0, int C, int L,
                          float *tmp0, float *tmp1) {
    if (L == 0) {
        memcpy(mean, e0, (size_t)g->n * C * sizeof *mean);
        return;
    }
    const float s = 1.0f / (float)(L + 1);
    const float *cur = e0;
    for (int l = 1; l <= L; l++) {
        float *nxt = l == L ? NULL : (l & 1) ? tmp0 : tmp1;
        spmm_out o = {nxt, 1.0f, mean, l == 1 ? NULL : mean, l == L ? s : 1.0f,
                      l == L ? s : 1.0f, l == 1};
        spmm_ex(&o, g, cur, C);
        cur = nxt;
    }
}

/* de0 += s·dmean + Σ_{l>=1} Â^l (s·dmean), s = 1/(L+1). The first layer reads dmean
 * unscaled, writes its scaled product to tmp and adds s·(dmean + Â dmean) to de0; later
 * layers ping-pong between tmp and dmean and add. */
void cf_propagate_backward(float *de0, const cf_graph *g, float *dmean, int C, int L,
                           float *tmp) {
    const float s = 1.0f / (float)(L + 1);
    if (L == 0) {
        size_t m = (size_t)g->n * C;
        #pragma omp parallel for schedule(static)
        for (size_t k = 0; k < m; k++) de0[k] += dmean[k];
        return;
    }
    float *cur = dmean, *nxt = tmp;
    for (int l = 1; l <= L; l++) {
        spmm_out o = {l == L ? NULL : nxt, l == 1 ? s : 1.0f, de0, de0, 1.0f,
                      l == 1 ? s : 1.0f, l == 1};
        spmm_ex(&o, g, cur, C);
        float *t = cur; cur = nxt; nxt = t;
    }
}

/* <a, b> over C floats; with C a multiple of 8, eight partial sums in lanes (fixed order,
 * so deterministic, and vectorised, which a plain float loop may not be). */
static inline float dotf(const float *a, const float *b, int C) {
#if defined(__GNUC__)
    if (C % 8 == 0) {
        v8f acc = {0};
        for (int c = 0; c < C; c += 8) acc += *(const v8f *)(a + c) * *(const v8f *)(b + c);
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
#endif
    float s = 0;
    for (int c = 0; c < C; c++) s += a[c] * b[c];
    return s;
}

/* y (C) += a x (C); y and x are different rows. */
static inline void axpy(float *restrict y, float a, const float *restrict x, int C) {
    for (int c = 0; c < C; c++) y[c] += a * x[c];
}

/* log(1 + e^x) without overflow. */
static inline double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

/* Scores per triple in parallel (each writes its own slot), then sums and gradient scatters
 * in batch order on one thread: rows repeat within a batch, so this keeps the float
 * additions in a fixed order. */
float cf_bpr_forward_backward(const float *mean, const float *e0, const int32_t *u,
                              const int32_t *p, const int32_t *ng, int B, int C, float decay,
                              float *dmean, float *de0, float *scratch, float *l2) {
    float *lossb = scratch, *coef = scratch + B, *regb = scratch + 2 * B;
    #pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *mu = mean + (size_t)u[b] * C;
        double x = (double)dotf(mu, mean + (size_t)ng[b] * C, C) - dotf(mu, mean + (size_t)p[b] * C, C);
        lossb[b] = (float)softplus(x);
        coef[b] = (float)(1.0 / (1.0 + exp(-x)));        /* d softplus / dx */
        const float *eu = e0 + (size_t)u[b] * C, *ep = e0 + (size_t)p[b] * C,
                    *en = e0 + (size_t)ng[b] * C;
        regb[b] = 0.5f * (dotf(eu, eu, C) + dotf(ep, ep, C) + dotf(en, en, C));
    }
    double ls = 0, rs = 0;
    for (int b = 0; b < B; b++) { ls += lossb[b]; rs += regb[b]; }
    double reg = decay * rs / B;
    if (l2) *l2 = (float)reg;
    if (dmean && de0) {
        float inv = 1.0f / (float)B, wd = decay / (float)B;
        for (int b = 0; b < B; b++) {
            float cb = coef[b] * inv;
            float *du = dmean + (size_t)u[b] * C, *dp = dmean + (size_t)p[b] * C,
                  *dn = dmean + (size_t)ng[b] * C;
            const float *mu = mean + (size_t)u[b] * C, *mp = mean + (size_t)p[b] * C,
                        *mn = mean + (size_t)ng[b] * C;
            axpy(du, cb, mn, C);            /* d<m_u, m_n - m_p>: rows u, p, n differ */
            axpy(du, -cb, mp, C);
            axpy(dp, -cb, mu, C);
            axpy(dn, cb, mu, C);
            const int32_t rows[3] = {u[b], p[b], ng[b]};
            for (int j = 0; j < 3; j++)
                axpy(de0 + (size_t)rows[j] * C, wd, e0 + (size_t)rows[j] * C, C);
        }
    }
    return (float)(ls / B + reg);
}
