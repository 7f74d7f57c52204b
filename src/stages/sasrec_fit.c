/* sasrec_fit.c: SASRec trained and ranked on a dataset's sequences: length-bucketed
 * batches, early stopping on valid HR@10, checkpoints through the stage runner. */
#include "sasrec_fit.h"
#include "dist.h"
#include "nn.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKET 32     /* training sorts windows by length within chunks of batch * BUCKET */

/* One training window: targets a..b-1 of user u's train items (see units_build). */
typedef struct { int32_t user, a, b, len, key; } fit_unit;   /* key: the batching order */

/* qsort_r order of user ids by train length, then id (ctx: the rec_data). */
static int by_len(const void *a, const void *b, void *ctx) {
    const rec_data *d = ctx;
    int la = rec_n_train(d, *(const int32_t *)a), lb = rec_n_train(d, *(const int32_t *)b);
    return la != lb ? (la < lb ? -1 : 1) : (*(const int32_t *)a < *(const int32_t *)b ? -1 : 1);
}

/* qsort_r order of window indices by key, then index (ctx: the windows). */
static int by_unit_len(const void *a, const void *b, void *ctx) {
    const fit_unit *u = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return u[x].key != u[y].key ? (u[x].key < u[y].key ? -1 : 1) : (x < y ? -1 : 1);
}

/* The input rows of user u's prefix position into dst (n_feat of them). */
static void put_user(const sasrec_model *m, const int32_t *user_rows, int32_t u, int32_t *dst) {
    int S = sasrec_cfg(m)->n_feat;
    memcpy(dst, user_rows + (size_t)u * S, (size_t)S * sizeof *dst);
}

/* rec_rank_rows one row at a time, each row's metric terms (count, hits, NDCG terms) kept
 * in du (1 + 2 * RETR_MAX_K doubles per row) instead of added to met, so that they can be
 * summed across ranks in the order one process adds them. Returns 0. */
static int rank_rows_terms(const rec_data *d, const int32_t *users, int n, int split, float *scores,
                           const retr_metrics *met, int topk, rec_topk_fn fn, void *ctx, double *du) {
    for (int i = 0; i < n; i++) {
        retr_metrics one;
        if (met) retr_metrics_init(&one, met->nk, met->ks);
        rec_rank_rows(d, users + i, 1, split, scores + (size_t)i * d->n_items, met ? &one : NULL, topk, fn, ctx);
        if (!met) continue;
        double *o = du + (size_t)i * (1 + 2 * RETR_MAX_K);
        o[0] = (double)one.n;
        for (int j = 0; j < one.nk; j++) { o[1 + j] = one.hr[j]; o[1 + RETR_MAX_K + j] = one.ndcg[j]; }
    }
    return 0;
}

/* Mean and standard deviation of n values (population). */
static void row_moments(const float *x, int n, double *mean, double *sd) {
    double s = 0, s2 = 0;
    for (int j = 0; j < n; j++) s += x[j];
    double mu = s / n;
    for (int j = 0; j < n; j++) s2 += ((double)x[j] - mu) * ((double)x[j] - mu);
    *mean = mu;
    *sd = sqrt(s2 / n);
}

/* out = (1 - alpha) (s - mu) inv + alpha c over n values (c standardised; the model row s
 * standardised by its mean mu and inverse deviation inv on the way: a NaN stays visible);
 * alpha 0 copies s itself, so weight 0 ranks exactly as the model alone. out may be s. */
static void mix_row(float *out, const float *s, double mu, double inv, const float *c, int n, float alpha) {
    if (alpha == 0) {
        if (out != s) memcpy(out, s, (size_t)n * sizeof *out);
        return;
    }
    for (int j = 0; j < n; j++) out[j] = (float)((1.0 - alpha) * ((s[j] - mu) * inv) + (double)alpha * c[j]);
}

int sasrec_blend_active(const sasrec_blend *b) { return b && (b->alpha > 0 || (b->tied && b->alpha_tied > 0)); }

/* sasrec_last_tied with the ties of `tied` (NULL: none). */
static int last_tied_in(const uint8_t *tied, const rec_data *d, int32_t u, int split) {
    int lp = rec_target_pos(d, u, split) - 1;
    return tied && lp >= 1 && tied[d->off[u] + lp];
}

int sasrec_last_tied(const rec_data *d, int32_t u, int split) { return last_tied_in(d->tied, d, u, split); }

/* The blend's CF scores of users[0..n) into cf (n, n_items), using urows (n, D), each row
 * standardised in place (mean 0, deviation 1), and the model rows' means and inverse
 * deviations (mu, inv; inv 0 for a constant row); mixed[i] 0 for a user whose CF scores are
 * all equal (no vector): it keeps its model scores (mu, inv 0). */
static void blend_prepare(const sasrec_blend *bl, const int32_t *users, int n, int V, float *urows, float *cf,
                          const float *scores, uint8_t *mixed, double *mu, double *inv) {
    for (int i = 0; i < n; i++)
        memcpy(urows + (size_t)i * bl->D, bl->user_vec + (size_t)users[i] * bl->D, (size_t)bl->D * sizeof *urows);
    retr_scores(cf, urows, n, bl->item_vec, NULL, V, bl->D, 0);
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *c = cf + (size_t)i * V;
        double cm, cs, sd;
        row_moments(c, V, &cm, &cs);
        mixed[i] = cs > 0;
        mu[i] = inv[i] = 0;
        if (!mixed[i]) continue;
        for (int j = 0; j < V; j++) c[j] = (float)((c[j] - cm) / cs);
        row_moments(scores + (size_t)i * V, V, &mu[i], &sd);
        inv[i] = sd == 0 ? 0 : 1 / sd;
    }
}

/* Rows of users[0..n) mixed into out (may be scores): weight `grid` for every user when
 * grid >= 0, else each user's by bl (alpha_tied where the last history item of `split` is
 * tied); a user not mixed (blend_prepare) keeps its model scores. */
static void blend_mix(const sasrec_blend *bl, const rec_data *d, int split, const int32_t *users, int n, int V,
                      const float *scores, const float *cf, const uint8_t *mixed, const double *mu,
                      const double *inv, float grid, float *out) {
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)i * V;
        float a = grid >= 0 ? grid : last_tied_in(bl->tied, d, users[i], split) ? bl->alpha_tied : bl->alpha;
        mix_row(out + o, scores + o, mu[i], inv[i], cf + o, V, mixed[i] ? a : 0);
    }
}

/* sasrec_rank (grid NULL, ng 1: met[0], the blend's own weights) and sasrec_rank_grid (ng
 * weights, met[g] for weight grid[g], no top-K lists). */
static int rank_core(sasrec_model *m, const rec_data *d, const int32_t *user_rows, const sasrec_blend *blend, int split,
                     int batch, int shared, const float *grid, int ng, retr_metrics *met, int topk, rec_topk_fn fn,
                     void *ctx) {
    int pre = user_rows != NULL, L = sasrec_cfg(m)->max_len - pre, V = d->n_items, S = sasrec_cfg(m)->n_feat;
    if (sasrec_cfg(m)->n_items != V)
        return tr_error("the sasrec model scores %d items but the dataset has %d; run 'tokenrec sasrec' again",
                        sasrec_cfg(m)->n_items, V);
    if (batch > sasrec_cfg(m)->max_B) batch = sasrec_cfg(m)->max_B;
    int32_t *all = tr_malloc((size_t)(d->n_users + 1) * sizeof *all);
    int na = 0;
    for (int32_t u = 0; u < d->n_users; u++)
        if (rec_target_pos(d, u, split) >= 1 - pre && !(d->skip && d->skip[u])) all[na++] = u;
    /* by length: batches of near-equal lengths, little padding */
    qsort_r(all, (size_t)na, sizeof *all, by_len, (void *)d);
    int32_t *ids = tr_malloc((size_t)batch * (L + pre) * S * sizeof *ids), *len = tr_malloc((size_t)batch * sizeof *len);
    int32_t *pad = tr_malloc((size_t)S * sizeof *pad);
    sasrec_item_rows(m, 0, pad);
    float *scores = tr_malloc((size_t)batch * V * sizeof *scores);
    if (!grid && !sasrec_blend_active(blend)) blend = NULL;
    float *cf = blend ? tr_malloc((size_t)batch * V * sizeof *cf) : NULL;
    float *urows = blend ? tr_malloc((size_t)batch * blend->D * sizeof *urows) : NULL;
    float *mix = grid && blend ? tr_malloc((size_t)batch * V * sizeof *mix) : NULL;
    uint8_t *mixed = blend ? tr_malloc((size_t)batch) : NULL;
    double *mu = blend ? tr_malloc((size_t)batch * sizeof *mu) : NULL, *inv = blend ? tr_malloc((size_t)batch * sizeof *inv) : NULL;
    int rc = 0;
    /* under mpirun: rank r ranks batches r, r + N, ... (the same batches as one process),
     * each user's metric terms go to du (weight g's in slab g, na rows of W), and every
     * rank adds them up in one order */
    int nr = shared ? dist_size() : 1, rk = shared ? dist_rank() : 0, W = 1 + 2 * RETR_MAX_K;
    double *du = nr > 1 && met ? tr_calloc((size_t)ng * (na ? na : 1) * W, sizeof *du) : NULL;
    for (int i0 = 0; i0 < na && !rc; i0 += batch) {
        if (nr > 1 && (i0 / batch) % nr != rk) continue;
        int n = na - i0 < batch ? na - i0 : batch, T = 1;
        const int32_t *users = all + i0;
        for (int i = 0; i < n; i++) {
            int tp = rec_target_pos(d, users[i], split);
            len[i] = pre + (tp < L ? tp : L);
            if (len[i] > T) T = len[i];
        }
        for (int i = 0; i < n; i++) {
            int ni = len[i] - pre;
            const int32_t *s = d->seq + d->off[users[i]] + rec_target_pos(d, users[i], split) - ni;
            int32_t *row = ids + (size_t)i * T * S;
            if (pre) put_user(m, user_rows, users[i], row);
            for (int t = pre; t < T; t++)
                if (t < len[i]) sasrec_item_rows(m, s[t - pre], row + (size_t)t * S);
                else memcpy(row + (size_t)t * S, pad, (size_t)S * sizeof *pad);
        }
        sasrec_batch b = {.B = n, .T = T, .ids = ids, .len = len};
        rc = sasrec_scores(m, &b, scores);
        if (!rc && blend) blend_prepare(blend, users, n, V, urows, cf, scores, mixed, mu, inv);
        for (int g = 0; g < ng && !rc; g++) {
            float *rows = scores;
            if (blend && grid) blend_mix(blend, d, split, users, n, V, scores, cf, mixed, mu, inv, grid[g], rows = mix);
            else if (blend) blend_mix(blend, d, split, users, n, V, scores, cf, mixed, mu, inv, -1, scores);
            if (nr > 1) rc = rank_rows_terms(d, users, n, split, rows, met + g, topk, fn, ctx,
                                             du ? du + ((size_t)g * na + i0) * W : NULL);
            else rec_rank_rows(d, users, n, split, rows, met + g, topk, fn, ctx);
        }
    }
    if (nr > 1 && dist_any(rc != 0)) rc = rc ? rc : tr_error("sasrec: another rank failed to rank its users");
    if (du && !rc) {
        dist_allreduce_sum(du, (size_t)ng * na * W, DIST_F64);
        for (int g = 0; g < ng; g++)
            for (int i = 0; i < na; i++) {
                const double *o = du + ((size_t)g * na + i) * W;
                met[g].n += (long)o[0];
                for (int j = 0; j < met[g].nk; j++) {
                    met[g].hr[j] += o[1 + j];
                    met[g].ndcg[j] += o[1 + RETR_MAX_K + j];
                }
            }
    }
    free(du);
    free(all); free(ids); free(len); free(pad); free(scores); free(cf); free(urows); free(mix); free(mixed); free(mu); free(inv);
    return rc;
}

int sasrec_rank(sasrec_model *m, const rec_data *d, const int32_t *user_rows, const sasrec_blend *blend, int split,
                int batch, int shared, retr_metrics *met, int topk, rec_topk_fn fn, void *ctx) {
    return rank_core(m, d, user_rows, blend, split, batch, shared, NULL, 1, met, topk, fn, ctx);
}

int sasrec_rank_grid(sasrec_model *m, const rec_data *d, const int32_t *user_rows, const sasrec_blend *blend, int split,
                     int batch, int shared, const float *weights, int n_weights, retr_metrics *met) {
    if (!blend || !blend->user_vec || !blend->item_vec || !weights || !met || n_weights < 1)
        return tr_error("sasrec_rank_grid: expected a blend with CF vectors, at least one weight and their metrics");
    for (int g = 0; g < n_weights; g++)
        if (!(weights[g] >= 0 && weights[g] < 1))
            return tr_error("sasrec_rank_grid: expected weights in [0,1), got %g", weights[g]);
    return rank_core(m, d, user_rows, blend, split, batch, shared, weights, n_weights, met, 0, NULL, NULL);
}

/* Is item i among the user's train items? (the negatives are items the user has not had) */
static int in_train(const rec_data *d, int32_t u, int32_t i) {
    const int32_t *s = d->seq + d->off[u];
    for (int k = 0, n = rec_n_train(d, u); k < n; k++) if (s[k] == i) return 1;
    return 0;
}

/* The training windows of every user (but skipped ones) into *out, their count returned
 * and their targets added to *n_targets. A window [a, b) trains targets a..b-1 of the
 * user's train items; its positions are the user's prefix (pre = 1; its target is item 0
 * when a = 0, which no_user_target forbids) and items max(a-1, 0)..b-2, each with the next
 * item as its target, at most max_len of them. SASRec (pre = 0, windows = 0): one window per user, its last max_len
 * targets. windows = 1: windows from the end of the history back to its start, so every
 * train target is trained once. */
static int units_build(const rec_data *d, int pre, int no_user_target, int windows, int max_len, fit_unit **out,
                       int64_t *n_targets) {
    int C = max_len - pre, start = pre && !no_user_target ? 0 : 1, n = 0, cap = d->n_users + 16;
    fit_unit *u = tr_malloc((size_t)cap * sizeof *u);
    *n_targets = 0;
    for (int32_t us = 0; us < d->n_users; us++) {
        if (d->skip && d->skip[us]) continue;
        int nt = rec_n_train(d, us);
        for (int b = nt; b > start;) {
            int a = b - C;
            if (a <= 1) a = start;          /* the first window: from the start of the history */
            if (n == cap) u = tr_realloc(u, (size_t)(cap *= 2) * sizeof *u);
            u[n] = (fit_unit){us, a, b, pre + b - 1 - (a > 0 ? a - 1 : 0), 0};
            u[n].key = windows ? u[n].len : nt;   /* SASRec's runs batch users by train length */
            *n_targets += b - a;
            n++;
            if (!windows) break;
            b = a;
        }
    }
    *out = u;
    return n;
}

/* Windows sorted by length within chunks of `batch * BUCKET` of a shuffled order, cut
 * into batches whose order is shuffled: batches of near-equal lengths (little padding) in
 * a random order. starts[k] is batch k's first index into order; returns the batch count. */
static int epoch_batches(const fit_unit *units, int32_t *order, int nu, int batch, int32_t *starts, rng_t *rng) {
    rng_shuffle_i32(rng, order, (size_t)nu);
    for (int c0 = 0; c0 < nu; c0 += batch * BUCKET) {
        int n = nu - c0 < batch * BUCKET ? nu - c0 : batch * BUCKET;
        qsort_r(order + c0, (size_t)n, sizeof *order, by_unit_len, (void *)units);
    }
    int nb = 0;
    for (int i0 = 0; i0 < nu; i0 += batch) starts[nb++] = i0;
    rng_shuffle_i32(rng, starts, (size_t)nb);
    return nb;
}

/* Training inputs of windows us[0..B) (units_build) as input rows, the next item of each
 * position as its target (-1: none), BCE negatives from rng; with token_drop > 0 an item
 * position with its own row (the last) loses the rest of its rows with that probability. */
static void fill_train_batch(const sasrec_model *m, const rec_data *d, const int32_t *user_rows,
                             float token_drop, const fit_unit *units, const int32_t *us, int B, int bce,
                             int32_t *ids, int32_t *pos, int32_t *neg, int32_t *len, int *Tout,
                             rng_t *rng) {
    int T = 1, S = sasrec_cfg(m)->n_feat, pre = user_rows != NULL;
    for (int i = 0; i < B; i++) {
        len[i] = units[us[i]].len;
        if (len[i] > T) T = len[i];
    }
    for (int i = 0; i < B; i++) {
        const fit_unit *w = &units[us[i]];
        int32_t u = w->user;
        const int32_t *s = d->seq + d->off[u] + (w->a > 0 ? w->a - 1 : 0);  /* item inputs s[0..) */
        for (int t = 0; t < T; t++) {
            size_t k = (size_t)i * T + t;
            int32_t *f = ids + k * S;
            neg[k] = 0;
            pos[k] = -1;
            if (pre && t == 0) {
                put_user(m, user_rows, u, f);
                if (w->a == 0) pos[k] = s[0];
            } else {
                sasrec_item_rows(m, t < len[i] ? s[t - pre] : 0, f);
                if (t < len[i]) pos[k] = s[t - pre + 1];
                if (token_drop > 0 && t < len[i] && S > 1 && f[S - 1] >= 0 && rng_uniform(rng) < token_drop)
                    for (int j = 0; j < S - 1; j++) f[j] = -1;
            }
            if (pos[k] >= 0 && bce) {
                int32_t j;
                int tries = 0;
                do j = (int32_t)rng_below(rng, (uint32_t)d->n_items);
                while (in_train(d, u, j) && ++tries < 50);
                neg[k] = j;
            }
        }
    }
    *Tout = T;
}

/* Training state saved in checkpoints besides the parameter buffers. */
typedef struct {
    int32_t epoch, bad, best_epoch, done;
    int64_t step;
    double  best_hr;
    double  seconds;            /* training time of every process that worked on the run */
    rng_t   rng;
} fit_state;

/* One checkpoint: the state, the parameters, the Adam moments and the best parameters. */
static int save_ckpt(stage_run *run, const fit_state *st, sasrec_model *m, const float *best) {
    size_t fb = sasrec_n_params(m) * sizeof(float);
    const stage_blob b[] = {{"sasrec_state", st, sizeof *st}, {"sasrec_params", sasrec_params(m), fb},
                            {"sasrec_adam_m", sasrec_adam_m(m), fb}, {"sasrec_adam_v", sasrec_adam_v(m), fb},
                            {"sasrec_best", best, fb}};
    return stage_ckpt_save(run, st->step, b, 5);
}

/* The buffers of one training: the training users and one batch's inputs, targets and
 * sampled negatives, the negative sampler and the optimizer. */
typedef struct {
    fit_unit *units;          /* the training windows (units_build) */
    int32_t *order, *starts;
    int32_t *eseq;            /* tie_shuffle: the epoch's copy of d->seq (NULL: d->seq itself) */
    int      nu;
    int64_t  n_targets;       /* per epoch */
    int32_t *ids, *pos, *neg, *len, *negs;
    float   *logq;
    sasrec_sampler smp;
    adamw_cfg opt;
    /* shards > 1: each shard's padded length, each shard's loss and target count, the
     * gradient sum over the shards and ranks, the compute seconds of the steps */
    int32_t *shard_T;
    float   *shard_stats;
    dist_accum acc;
    double   comp_s;
} fit_work;

/* Restore a resumed run's checkpoint into st, m and best (nothing when it stopped before
 * its first one). Returns 0 or -1. */
static int fit_resume(stage_run *run, const sasrec_train_cfg *tc, fit_state *st, sasrec_model *m,
                      float *best) {
    size_t fb = sasrec_n_params(m) * sizeof(float);
    int g = stage_ckpt_read(run, "sasrec_state", st, sizeof *st);   /* 1: stopped before any */
    if (g < 0 || (g == 0 && (stage_ckpt_read(run, "sasrec_params", sasrec_params(m), fb) ||
                             stage_ckpt_read(run, "sasrec_adam_m", sasrec_adam_m(m), fb) ||
                             stage_ckpt_read(run, "sasrec_adam_v", sasrec_adam_v(m), fb) ||
                             stage_ckpt_read(run, "sasrec_best", best, fb))))
        return -1;
    if (g == 0 && !tc->quiet)
        fprintf(stderr, "[%s] resuming at epoch %d (best valid HR@10 %.4f)\n", tc->label, st->epoch, st->best_hr);
    return 0;
}

/* Allocate w for data d and config tc (the model's config mc, np parameters): the training
 * windows, the batch buffers, the sampler over train popularity, AdamW and the shards'
 * buffers. Returns 0 or -1 (w is then still freeable). */
static int fit_work_init(fit_work *w, const rec_data *d, const sasrec_train_cfg *tc, const sasrec_config *mc,
                         size_t np) {
    memset(w, 0, sizeof *w);
    if (tc->shards > 1) {
        w->shard_T = tr_malloc((size_t)tc->shards * sizeof *w->shard_T);
        w->shard_stats = tr_malloc(2 * (size_t)tc->shards * sizeof *w->shard_stats);
        dist_accum_init(&w->acc, np, 2 * (size_t)tc->shards, tc->shards);
    }
    w->nu = units_build(d, tc->user_rows != NULL, tc->no_user_target, tc->windows, mc->max_len, &w->units,
                        &w->n_targets);
    size_t cap = (size_t)tc->batch * mc->max_len;
    w->ids = tr_malloc(cap * (mc->n_feat > 0 ? mc->n_feat : 1) * sizeof *w->ids);
    w->pos = tr_malloc(cap * sizeof *w->pos);
    w->neg = tr_malloc(cap * sizeof *w->neg);
    w->len = tr_malloc((size_t)tc->batch * sizeof *w->len);
    if (tc->tie_shuffle && d->tied) w->eseq = tr_malloc((size_t)(d->off[d->n_users] ? d->off[d->n_users] : 1) * sizeof *w->eseq);
    w->order = tr_malloc((size_t)(w->nu ? w->nu : 1) * sizeof *w->order);
    w->starts = tr_malloc((size_t)(w->nu ? w->nu : 1) * sizeof *w->starts);
    w->negs = tr_malloc((size_t)(mc->negatives + 1) * sizeof *w->negs);
    w->logq = tr_malloc((size_t)(mc->negatives + 1) * sizeof *w->logq);
    int32_t *counts = tr_malloc((size_t)d->n_items * sizeof *counts);   /* train popularity */
    rec_train_counts(d, counts);
    int src = sasrec_sampler_init(&w->smp, d->n_items, counts, tc->sampler);
    free(counts);
    w->opt = adamw_default(tc->lr);
    w->opt.beta2 = 0.98f;
    w->opt.weight_decay = tc->weight_decay;
    return src != 0 ? -1 : 0;
}

/* Free what fit_work_init allocated. */
static void fit_work_free(fit_work *w) {
    free(w->units); free(w->ids); free(w->pos); free(w->neg); free(w->len); free(w->order);
    free(w->starts); free(w->eseq); free(w->negs); free(w->logq);
    free(w->shard_T); free(w->shard_stats);
    if (w->acc.lev) dist_accum_free(&w->acc);
    sasrec_sampler_free(&w->smp);
}

/* The gradient of one batch (windows us[0..B)) cut into tc->shards shards of consecutive
 * rows: every rank draws the same inputs and negatives for all of them, computes its run of
 * shards (dist_shards; each with its own dropout stream), dist_accum sums their gradients in
 * a fixed tree and over the ranks in one in-place all-reduce (gradient, then each shard's
 * loss and targets). Leaves the gradient in sasrec_grads(m), the loss (summed over norm)
 * in *loss; returns the targets, or -1. */
static int fit_shards(const rec_data *d, const sasrec_train_cfg *tc, fit_work *w, sasrec_model *m,
                      fit_state *st, const int32_t *us, int B, float norm, double *loss) {
    const sasrec_config *mc = sasrec_cfg(m);
    size_t L = (size_t)mc->max_len, S = mc->n_feat > 0 ? (size_t)mc->n_feat : 1;
    int G = tc->shards < B ? tc->shards : B, g0, g1;
    double t0 = tr_monotonic();
    for (int g = 0; g < G; g++) {
        int r0 = g * B / G, r1 = (g + 1) * B / G;
        fill_train_batch(m, d, tc->user_rows, tc->token_drop, w->units, us + r0, r1 - r0, mc->loss == SASREC_LOSS_BCE,
                         w->ids + r0 * L * S, w->pos + r0 * L, w->neg + r0 * L, w->len + r0, &w->shard_T[g],
                         &st->rng);
    }
    if (mc->negatives > 0) sasrec_sampler_draw(&w->smp, &st->rng, mc->negatives, w->negs, w->logq);
    uint64_t dseed = rng_u64(&st->rng);       /* the dropout streams of the shards */
    float *stats = w->shard_stats;            /* shard g: loss at 2g, targets at 2g + 1 */
    memset(stats, 0, 2 * (size_t)tc->shards * sizeof *stats);
    dist_shards(G, &g0, &g1);
    for (int g = g0; g < g1; g++) {
        int r0 = g * B / G, r1 = (g + 1) * B / G;
        rng_t dr;
        rng_seed(&dr, dseed + (uint64_t)g);
        sasrec_batch b = {.B = r1 - r0, .T = w->shard_T[g], .ids = w->ids + r0 * L * S, .len = w->len + r0,
                          .pos = w->pos + r0 * L, .neg = w->neg + r0 * L, .negs = w->negs, .logq = w->logq,
                          .norm = norm};
        float l = 0;
        int M = sasrec_forward(m, &b, 1, &dr, 1, &l);
        if (M < 0) return -1;
        sasrec_backward(m, &b);
        stats[2 * g] = l;
        stats[2 * g + 1] = (float)M;
        dist_accum_push(&w->acc, sasrec_grads(m));
    }
    w->comp_s += tr_monotonic() - t0;
    dist_accum_reduce(&w->acc, sasrec_grads(m), stats);
    double lsum = 0;
    int M = 0;
    for (int g = 0; g < G; g++) { lsum += stats[2 * g]; M += (int)stats[2 * g + 1]; }
    *loss = lsum;
    return M;
}

int sasrec_lr_schedule_parse(const char *s) {
    return !strcmp(s, "constant") ? 0 : !strcmp(s, "cosine") ? 1 : -1;
}

float sasrec_lr_at(const sasrec_train_cfg *tc, int epoch, int k, int nbatch) {
    if (!tc->lr_cosine || tc->epochs <= 0 || nbatch <= 0) return tc->lr;
    double t = (epoch + (double)k / nbatch) / tc->epochs;
    return (float)(tc->lr * 0.5 * (1.0 + cos(M_PI * (t < 1 ? t : 1))));
}

void sasrec_ties_shuffle(const rec_data *d, int32_t *seq, rng_t *rng) {
    memcpy(seq, d->seq, (size_t)d->off[d->n_users] * sizeof *seq);
    for (int32_t u = 0; u < d->n_users; u++) {
        if (d->skip && d->skip[u]) continue;
        int64_t b = d->off[u];
        for (int p = 0, q, nt = rec_n_train(d, u); p < nt; p = q) {
            for (q = p + 1; q < nt && d->tied[b + q]; q++) {}
            if (q - p > 1) rng_shuffle_i32(rng, seq + b + p, (size_t)(q - p));
        }
    }
}

/* One epoch over the training users in length-bucketed batches; advances st (epoch, step,
 * seconds, rng) and sets *lmean to the mean loss per target. Returns 0 or -1. */
static int fit_epoch(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc, fit_work *w,
                     sasrec_model *m, fit_state *st, double *lmean) {
    const sasrec_config *mc = sasrec_cfg(m);
    size_t np = sasrec_n_params(m);
    double te = tr_monotonic();
    rec_data de;                        /* tie_shuffle: d with this epoch's order of the ties */
    if (w->eseq) {
        sasrec_ties_shuffle(d, w->eseq, &st->rng);
        de = *d;
        de.seq = w->eseq;
        d = &de;
    }
    for (int i = 0; i < w->nu; i++) w->order[i] = i;
    int nbatch = epoch_batches(w->units, w->order, w->nu, tc->batch, w->starts, &st->rng);
    /* every target weighs the same whatever its batch: a batch's loss is its summed
     * loss over the mean targets per batch (length-bucketed batches differ a lot) */
    float norm = (float)((double)w->n_targets / nbatch);
    double lsum = 0;
    int64_t nb = 0;
    for (int k = 0; k < nbatch; k++) {
        int i0 = w->starts[k], B = w->nu - i0 < tc->batch ? w->nu - i0 : tc->batch, T, M;
        double loss = 0;
        if (tc->shards > 1) {
            if ((M = fit_shards(d, tc, w, m, st, w->order + i0, B, norm, &loss)) < 0) return -1;
        } else {
            fill_train_batch(m, d, tc->user_rows, tc->token_drop, w->units, w->order + i0, B, mc->loss == SASREC_LOSS_BCE,
                             w->ids, w->pos, w->neg, w->len, &T, &st->rng);
            if (mc->negatives > 0) sasrec_sampler_draw(&w->smp, &st->rng, mc->negatives, w->negs, w->logq);
            sasrec_batch b = {.B = B, .T = T, .ids = w->ids, .len = w->len, .pos = w->pos, .neg = w->neg,
                              .negs = w->negs, .logq = w->logq, .norm = norm};
            float fl = 0;
            M = sasrec_forward(m, &b, 1, &st->rng, 1, &fl);
            if (M < 0) return -1;
            sasrec_backward(m, &b);
            loss = fl;
        }
        if (tc->clip > 0) grad_clip(sasrec_grads(m), np, tc->clip);
        w->opt.lr = sasrec_lr_at(tc, st->epoch, k, nbatch);
        st->step++;
        adamw_update(&w->opt, sasrec_params(m), sasrec_grads(m), sasrec_adam_m(m), sasrec_adam_v(m), np, st->step);
        lsum += loss * norm;               /* the mean is per target */
        nb += M;
        if (run && (k & 15) == 15)
            stage_progress(run, (st->epoch + (double)(k + 1) / nbatch) / tc->epochs,
                           "%s epoch %d/%d batch %d/%d loss %.4f", tc->label, st->epoch + 1, tc->epochs,
                           k + 1, nbatch, lsum / nb);
    }
    st->epoch++;
    st->seconds += tr_monotonic() - te;
    *lmean = nb ? lsum / nb : 0;
    return 0;
}

/* After an epoch with mean loss lmean: on an evaluation epoch, HR@10 on the valid items,
 * the best parameters kept in best, early stopping and a checkpoint; the progress line
 * either way. Returns 0 or -1. */
static int fit_validate(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc, sasrec_model *m,
                        fit_state *st, float *best, double lmean) {
    if (run) stage_metric(run, st->epoch, tc->loss_metric, lmean);
    int last = st->epoch >= tc->epochs;
    if (st->epoch % tc->eval_every == 0 || last) {
        int ks[1] = {10};
        retr_metrics vm;
        retr_metrics_init(&vm, 1, ks);
        if (sasrec_rank(m, d, tc->user_rows, NULL, 1, tc->batch, 1, &vm, 0, NULL, NULL) != 0) return -1;
        double hr = retr_hr(&vm, 10);
        if (run) stage_metric(run, st->epoch, tc->valid_metric, hr);
        if (hr > st->best_hr) {
            st->best_hr = hr; st->best_epoch = st->epoch; st->bad = 0;
            memcpy(best, sasrec_params(m), sasrec_n_params(m) * sizeof(float));
        } else if (++st->bad >= tc->patience) st->done = 1;
        if (run) {
            stage_progress(run, st->done ? 1.0 : (double)st->epoch / tc->epochs,
                           "%s epoch %d/%d loss %.4f valid HR@10 %.4f (best %.4f at %d)", tc->label,
                           st->epoch, tc->epochs, lmean, hr, st->best_hr, st->best_epoch);
            if (save_ckpt(run, st, m, best) != 0) return -1;
        } else if (!tc->quiet) {
            fprintf(stderr, "[%s] epoch %d loss %.4f valid HR@10 %.4f (best %.4f at %d)\n",
                    tc->label, st->epoch, lmean, hr, st->best_hr, st->best_epoch);
        }
    } else if (run) {
        if (st->best_hr < 0)
            stage_progress(run, (double)st->epoch / tc->epochs, "%s epoch %d/%d loss %.4f",
                           tc->label, st->epoch, tc->epochs, lmean);
        else
            stage_progress(run, (double)st->epoch / tc->epochs, "%s epoch %d/%d loss %.4f (best valid HR@10 %.4f at %d)",
                           tc->label, st->epoch, tc->epochs, lmean, st->best_hr, st->best_epoch);
    }
    return 0;
}

/* Train: the model from tc's seed (or the resumed run's checkpoint), epochs until
 * tc->epochs or early stopping, then the best parameters in *out. */
int sasrec_fit(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc0,
               sasrec_model **out, sasrec_fit_result *res) {
    *out = NULL;
    sasrec_train_cfg tcd = *tc0;
    const sasrec_train_cfg *tc = &tcd;
    if (!tcd.label) tcd.label = "sasrec";
    if (!tcd.loss_metric) tcd.loss_metric = "sasrec_loss";
    if (!tcd.valid_metric) tcd.valid_metric = "sasrec_valid_hr10";
    sasrec_config mc = tc->model;
    mc.n_items = d->n_items;
    mc.max_B = tc->batch;
    if (tc->batch < 1 || tc->epochs < 0 || tc->eval_every < 1 || tc->patience < 1)
        return tr_error("sasrec: expected batch, eval-every and patience >= 1 and epochs >= 0");
    if (tc->shards < 0 || tc->shards > tc->batch)
        return tr_error("sasrec: --shards must be in 0..--batch (%d), got %d", tc->batch, tc->shards);
    if (dist_size() > 1 && tc->shards < dist_size())
        return tr_error("sasrec under mpirun with %d processes: each batch is cut into --shards pieces, a "
                        "setting of the run (the model depends on it, not on the process count); give "
                        "--shards %d or more (a power of two such as %d keeps every power-of-two count "
                        "bitwise the same), and the same value when resuming", dist_size(), dist_size(),
                        dist_size() <= 8 ? 8 : 64);
    fit_state st;
    memset(&st, 0, sizeof st);
    st.best_hr = -1;
    rng_seed(&st.rng, tc->seed);
    sasrec_model *m = sasrec_new(&mc, &st.rng);
    if (!m) return -1;
    if (tc->init) tc->init(m, tc->init_ctx);
    size_t np = sasrec_n_params(m);
    float *best = tr_malloc(np * sizeof(float));
    memcpy(best, sasrec_params(m), np * sizeof(float));
    if (run && run->resumed && fit_resume(run, tc, &st, m, best) != 0) {
        sasrec_free(m);
        free(best);
        return -1;
    }
    if (dist_size() > 1) {            /* rank 0's (resumed) state on every rank */
        dist_bcast(&st, sizeof st);
        dist_bcast(sasrec_params(m), np * sizeof(float));
        dist_bcast(sasrec_adam_m(m), np * sizeof(float));
        dist_bcast(sasrec_adam_v(m), np * sizeof(float));
        dist_bcast(best, np * sizeof(float));
    }
    fit_work w;
    int rc = fit_work_init(&w, d, tc, &mc, np);
    int64_t step0 = st.step;
    while (!rc && !st.done && st.epoch < tc->epochs) {
        double lmean = 0;
        if (fit_epoch(run, d, tc, &w, m, &st, &lmean) != 0 ||
            fit_validate(run, d, tc, m, &st, best, lmean) != 0) { rc = -1; break; }
        if (dist_size() > 1 && !dist_same(sasrec_params(m), np * sizeof(float)))
            dist_abort(1, "%s: the ranks' parameters differ after epoch %d", tc->label, st.epoch);
        /* a stop request seen on any rank stops every rank after the same epoch */
        int stop = dist_any(stage_should_stop());
        if (stop && (run || dist_size() > 1) && !st.done && st.epoch < tc->epochs) {
            if (run && save_ckpt(run, &st, m, best) != 0) { rc = -1; break; }
            if (run) stage_stopped(run);
            rc = 130;
        }
    }
    if (tc->shards > 1 && getenv("TOKENREC_DIST_STATS") && dist_rank() == 0 && st.step > step0) {
        double n = (double)(st.step - step0);    /* bench/mpi reads this line */
        fprintf(stderr, "[dist] ranks %d shards %d steps %.0f compute_s_per_step %.6f allreduce_bytes_per_step %zu "
                        "allreduce_s_per_step %.6f params %zu items %d\n", dist_size(), tc->shards, n, w.comp_s / n,
                (np + 2 * (size_t)tc->shards) * sizeof(float), w.acc.seconds / n, np, d->n_items);
    }
    if (!rc) {
        if (st.best_hr >= 0) memcpy(sasrec_params(m), best, np * sizeof(float));
        if (res) {
            res->best_valid = st.best_hr; res->best_epoch = st.best_epoch; res->epochs = st.epoch;
            res->seconds = st.seconds;
            res->targets = w.n_targets;
            res->positions = 0;
            for (int i = 0; i < w.nu; i++) res->positions += w.units[i].len;
        }
    }
    fit_work_free(&w);
    free(best);
    if (rc == 0) *out = m;
    else sasrec_free(m);
    return rc;
}
