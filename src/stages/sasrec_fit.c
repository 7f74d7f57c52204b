/* sasrec_fit.c: SASRec trained and ranked on a dataset's sequences: length-bucketed
 * batches, early stopping on valid HR@10, checkpoints through the stage runner. */
#include "sasrec_fit.h"
#include "nn.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKET 32     /* training sorts users by length within chunks of batch * BUCKET */
/* qsort_r order of user ids by train length, then id (ctx: the rec_data). */
static int by_len(const void *a, const void *b, void *ctx) {
    const rec_data *d = ctx;
    int la = rec_n_train(d, *(const int32_t *)a), lb = rec_n_train(d, *(const int32_t *)b);
    return la != lb ? (la < lb ? -1 : 1) : (*(const int32_t *)a < *(const int32_t *)b ? -1 : 1);
}
int sasrec_rank(sasrec_model *m, const rec_data *d, int split, int batch, retr_metrics *met,
                int topk, rec_topk_fn fn, void *ctx) {
    int L = sasrec_cfg(m)->max_len, V = d->n_items;
    if (sasrec_cfg(m)->n_items != V)
        return tr_error("the sasrec model scores %d items but the dataset has %d; run 'tokenrec sasrec' again",
                        sasrec_cfg(m)->n_items, V);
    if (batch > sasrec_cfg(m)->max_B) batch = sasrec_cfg(m)->max_B;
    int32_t *all = tr_malloc((size_t)(d->n_users + 1) * sizeof *all);
    int na = 0;
    for (int32_t u = 0; u < d->n_users; u++)
        if (rec_target_pos(d, u, split) >= 1 && !(d->skip && d->skip[u])) all[na++] = u;
    /* by length: batches of near-equal lengths, little padding */
    qsort_r(all, (size_t)na, sizeof *all, by_len, (void *)d);
    int32_t *ids = tr_malloc((size_t)batch * L * sizeof *ids), *len = tr_malloc((size_t)batch * sizeof *len);
    float *scores = tr_malloc((size_t)batch * V * sizeof *scores);
    int rc = 0;
    for (int i0 = 0; i0 < na && !rc; i0 += batch) {
        int n = na - i0 < batch ? na - i0 : batch, T = 1;
        const int32_t *users = all + i0;
        for (int i = 0; i < n; i++) {
            int tp = rec_target_pos(d, users[i], split);
            len[i] = tp < L ? tp : L;
            if (len[i] > T) T = len[i];
        }
        for (int i = 0; i < n; i++) {
            const int32_t *s = d->seq + d->off[users[i]] + rec_target_pos(d, users[i], split) - len[i];
            for (int t = 0; t < T; t++) ids[(size_t)i * T + t] = t < len[i] ? s[t] : 0;
        }
        sasrec_batch b = {.B = n, .T = T, .ids = ids, .len = len};
        rc = sasrec_scores(m, &b, scores);
        if (!rc) rec_rank_rows(d, users, n, split, scores, met, topk, fn, ctx);
    }
    free(all); free(ids); free(len); free(scores);
    return rc;
}

/* Is item i among the user's train items? (the negatives are items the user has not had) */
static int in_train(const rec_data *d, int32_t u, int32_t i) {
    const int32_t *s = d->seq + d->off[u];
    for (int k = 0, n = rec_n_train(d, u); k < n; k++) if (s[k] == i) return 1;
    return 0;
}

/* Users sorted by train length within chunks of `batch * BUCKET` of a shuffled order, cut
 * into batches whose order is shuffled: batches of near-equal lengths (little padding) in
 * a random order. starts[k] is batch k's first index into order; returns the batch count. */
static int epoch_batches(const rec_data *d, int32_t *order, int nu, int batch, int32_t *starts, rng_t *rng) {
    rng_shuffle_i32(rng, order, (size_t)nu);
    for (int c0 = 0; c0 < nu; c0 += batch * BUCKET) {
        int n = nu - c0 < batch * BUCKET ? nu - c0 : batch * BUCKET;
        qsort_r(order + c0, (size_t)n, sizeof *order, by_len, (void *)d);
    }
    int nb = 0;
    for (int i0 = 0; i0 < nu; i0 += batch) starts[nb++] = i0;
    rng_shuffle_i32(rng, starts, (size_t)nb);
    return nb;
}

/* Training inputs of users[0..B): each row its last min(n-1, L) train items before the
 * last one, the next item of each position as its target, BCE negatives from rng. */
static void fill_train_batch(const rec_data *d, const int32_t *us, int B, int L, int bce,
                             int32_t *ids, int32_t *pos, int32_t *neg, int32_t *len, int *Tout,
                             rng_t *rng) {
    int T = 1;
    for (int i = 0; i < B; i++) {
        int n = rec_n_train(d, us[i]) - 1;
        len[i] = n < L ? n : L;
        if (len[i] > T) T = len[i];
    }
    for (int i = 0; i < B; i++) {
        int32_t u = us[i];
        const int32_t *s = d->seq + d->off[u] + (rec_n_train(d, u) - 1 - len[i]);  /* inputs s[0..len) */
        for (int t = 0; t < T; t++) {
            size_t k = (size_t)i * T + t;
            ids[k] = t < len[i] ? s[t] : 0;
            pos[k] = t < len[i] ? s[t + 1] : -1;
            neg[k] = 0;
            if (t < len[i] && bce) {
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
    int32_t *users, *order, *starts;
    int      nu;
    int64_t  n_targets;       /* per epoch: min(n - 1, L) for a user with n train items */
    int32_t *ids, *pos, *neg, *len, *negs;
    float   *logq;
    sasrec_sampler smp;
    adamw_cfg opt;
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
        fprintf(stderr, "[sasrec] resuming at epoch %d (best valid HR@10 %.4f)\n", st->epoch, st->best_hr);
    return 0;
}

/* Allocate w for data d and config tc (the model's config mc): the training users (at
 * least two train items: one input, one target), the batch buffers, the sampler over train
 * popularity and AdamW. Returns 0 or -1 (w is then still freeable). */
static int fit_work_init(fit_work *w, const rec_data *d, const sasrec_train_cfg *tc, const sasrec_config *mc) {
    int L = mc->max_len;
    w->users = tr_malloc((size_t)d->n_users * sizeof *w->users);
    w->nu = 0;
    w->n_targets = 0;
    for (int32_t u = 0; u < d->n_users; u++)
        if (rec_n_train(d, u) >= 2) {
            w->users[w->nu++] = u;
            w->n_targets += rec_n_train(d, u) - 1 < L ? rec_n_train(d, u) - 1 : L;
        }
    size_t cap = (size_t)tc->batch * L;
    w->ids = tr_malloc(cap * sizeof *w->ids);
    w->pos = tr_malloc(cap * sizeof *w->pos);
    w->neg = tr_malloc(cap * sizeof *w->neg);
    w->len = tr_malloc((size_t)tc->batch * sizeof *w->len);
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
    free(w->users); free(w->ids); free(w->pos); free(w->neg); free(w->len); free(w->order);
    free(w->starts); free(w->negs); free(w->logq);
    sasrec_sampler_free(&w->smp);
}

/* One epoch over the training users in length-bucketed batches; advances st (epoch, step,
 * seconds, rng) and sets *lmean to the mean loss per target. Returns 0 or -1. */
static int fit_epoch(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc, fit_work *w,
                     sasrec_model *m, fit_state *st, double *lmean) {
    const sasrec_config *mc = sasrec_cfg(m);
    int L = mc->max_len;
    size_t np = sasrec_n_params(m);
    double te = tr_monotonic();
    for (int i = 0; i < w->nu; i++) w->order[i] = w->users[i];
    int nbatch = epoch_batches(d, w->order, w->nu, tc->batch, w->starts, &st->rng);
    /* every target weighs the same whatever its batch: a batch's loss is its summed
     * loss over the mean targets per batch (length-bucketed batches differ a lot) */
    float norm = (float)((double)w->n_targets / nbatch);
    double lsum = 0;
    int64_t nb = 0;
    for (int k = 0; k < nbatch; k++) {
        int i0 = w->starts[k], B = w->nu - i0 < tc->batch ? w->nu - i0 : tc->batch, T;
        fill_train_batch(d, w->order + i0, B, L, mc->loss == SASREC_LOSS_BCE, w->ids, w->pos, w->neg,
                         w->len, &T, &st->rng);
        if (mc->negatives > 0) sasrec_sampler_draw(&w->smp, &st->rng, mc->negatives, w->negs, w->logq);
        sasrec_batch b = {.B = B, .T = T, .ids = w->ids, .len = w->len, .pos = w->pos, .neg = w->neg,
                          .negs = w->negs, .logq = w->logq, .norm = norm};
        float loss = 0;
        int M = sasrec_forward(m, &b, 1, &st->rng, 1, &loss);
        if (M < 0) return -1;
        sasrec_backward(m, &b);
        if (tc->clip > 0) grad_clip(sasrec_grads(m), np, tc->clip);
        st->step++;
        adamw_update(&w->opt, sasrec_params(m), sasrec_grads(m), sasrec_adam_m(m), sasrec_adam_v(m), np, st->step);
        lsum += (double)loss * norm;       /* the mean is per target */
        nb += M;
        if (run && (k & 15) == 15)
            stage_progress(run, (st->epoch + (double)(k + 1) / nbatch) / tc->epochs,
                           "sasrec epoch %d/%d batch %d/%d loss %.4f", st->epoch + 1, tc->epochs,
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
    if (run) stage_metric(run, st->epoch, "sasrec_loss", lmean);
    int last = st->epoch >= tc->epochs;
    if (st->epoch % tc->eval_every == 0 || last) {
        int ks[1] = {10};
        retr_metrics vm;
        retr_metrics_init(&vm, 1, ks);
        if (sasrec_rank(m, d, 1, tc->batch, &vm, 0, NULL, NULL) != 0) return -1;
        double hr = retr_hr(&vm, 10);
        if (run) stage_metric(run, st->epoch, "sasrec_valid_hr10", hr);
        if (hr > st->best_hr) {
            st->best_hr = hr; st->best_epoch = st->epoch; st->bad = 0;
            memcpy(best, sasrec_params(m), sasrec_n_params(m) * sizeof(float));
        } else if (++st->bad >= tc->patience) st->done = 1;
        if (run) {
            stage_progress(run, st->done ? 1.0 : (double)st->epoch / tc->epochs,
                           "sasrec epoch %d/%d loss %.4f valid HR@10 %.4f (best %.4f at %d)",
                           st->epoch, tc->epochs, lmean, hr, st->best_hr, st->best_epoch);
            if (save_ckpt(run, st, m, best) != 0) return -1;
        } else if (!tc->quiet) {
            fprintf(stderr, "[sasrec] epoch %d loss %.4f valid HR@10 %.4f (best %.4f at %d)\n",
                    st->epoch, lmean, hr, st->best_hr, st->best_epoch);
        }
    } else if (run) {
        if (st->best_hr < 0)
            stage_progress(run, (double)st->epoch / tc->epochs, "sasrec epoch %d/%d loss %.4f",
                           st->epoch, tc->epochs, lmean);
        else
            stage_progress(run, (double)st->epoch / tc->epochs, "sasrec epoch %d/%d loss %.4f (best valid HR@10 %.4f at %d)",
                           st->epoch, tc->epochs, lmean, st->best_hr, st->best_epoch);
    }
    return 0;
}

/* Train: the model from tc's seed (or the resumed run's checkpoint), epochs until
 * tc->epochs or early stopping, then the best parameters in *out. */
int sasrec_fit(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc,
               sasrec_model **out, sasrec_fit_result *res) {
    *out = NULL;
    sasrec_config mc = tc->model;
    mc.n_items = d->n_items;
    mc.max_B = tc->batch;
    if (tc->batch < 1 || tc->epochs < 0 || tc->eval_every < 1 || tc->patience < 1)
        return tr_error("sasrec: expected batch, eval-every and patience >= 1 and epochs >= 0");
    fit_state st;
    memset(&st, 0, sizeof st);
    st.best_hr = -1;
    rng_seed(&st.rng, tc->seed);
    sasrec_model *m = sasrec_new(&mc, &st.rng);
    if (!m) return -1;
    size_t np = sasrec_n_params(m);
    float *best = tr_malloc(np * sizeof(float));
    memcpy(best, sasrec_params(m), np * sizeof(float));
    if (run && run->resumed && fit_resume(run, tc, &st, m, best) != 0) {
        sasrec_free(m);
        free(best);
        return -1;
    }
    fit_work w;
    int rc = fit_work_init(&w, d, tc, &mc);
    while (!rc && !st.done && st.epoch < tc->epochs) {
        double lmean = 0;
        if (fit_epoch(run, d, tc, &w, m, &st, &lmean) != 0 ||
            fit_validate(run, d, tc, m, &st, best, lmean) != 0) { rc = -1; break; }
        if (run && stage_should_stop() && !st.done && st.epoch < tc->epochs) {
            if (save_ckpt(run, &st, m, best) != 0) { rc = -1; break; }
            stage_stopped(run);
            rc = 130;
        }
    }
    if (!rc) {
        if (st.best_hr >= 0) memcpy(sasrec_params(m), best, np * sizeof(float));
        if (res) {
            res->best_valid = st.best_hr; res->best_epoch = st.best_epoch; res->epochs = st.epoch;
            res->seconds = st.seconds;
        }
    }
    fit_work_free(&w);
    free(best);
    if (rc == 0) *out = m;
    else sasrec_free(m);
    return rc;
}
