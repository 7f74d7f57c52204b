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

int sasrec_fit(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc,
               sasrec_model **out, sasrec_fit_result *res) {
    *out = NULL;
    sasrec_config mc = tc->model;
    mc.n_items = d->n_items;
    mc.max_B = tc->batch;
    int L = mc.max_len;
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
    if (run && run->resumed) {
        size_t fb = np * sizeof(float);
        int g = stage_ckpt_read(run, "sasrec_state", &st, sizeof st);   /* 1: stopped before any */
        if (g < 0 || (g == 0 && (stage_ckpt_read(run, "sasrec_params", sasrec_params(m), fb) ||
                                 stage_ckpt_read(run, "sasrec_adam_m", sasrec_adam_m(m), fb) ||
                                 stage_ckpt_read(run, "sasrec_adam_v", sasrec_adam_v(m), fb) ||
                                 stage_ckpt_read(run, "sasrec_best", best, fb)))) {
            sasrec_free(m);
            free(best);
            return -1;
        }
        if (g == 0 && !tc->quiet)
            fprintf(stderr, "[sasrec] resuming at epoch %d (best valid HR@10 %.4f)\n", st.epoch, st.best_hr);
    }
    /* the training users: at least two train items (one input, one target) */
    int32_t *users = tr_malloc((size_t)d->n_users * sizeof *users);
    int nu = 0;
    int64_t n_targets = 0;        /* per epoch: min(n - 1, L) for a user with n train items */
    for (int32_t u = 0; u < d->n_users; u++)
        if (rec_n_train(d, u) >= 2) {
            users[nu++] = u;
            n_targets += rec_n_train(d, u) - 1 < L ? rec_n_train(d, u) - 1 : L;
        }
    size_t cap = (size_t)tc->batch * L;
    int32_t *ids = tr_malloc(cap * sizeof *ids), *pos = tr_malloc(cap * sizeof *pos);
    int32_t *neg = tr_malloc(cap * sizeof *neg), *len = tr_malloc((size_t)tc->batch * sizeof *len);
    int32_t *order = tr_malloc((size_t)(nu ? nu : 1) * sizeof *order);
    int32_t *starts = tr_malloc((size_t)(nu ? nu : 1) * sizeof *starts);
    int32_t *negs = tr_malloc((size_t)(mc.negatives + 1) * sizeof *negs);
    float *logq = tr_malloc((size_t)(mc.negatives + 1) * sizeof *logq);
    sasrec_sampler smp;
    int rc = 0;
    int32_t *counts = tr_malloc((size_t)d->n_items * sizeof *counts);   /* train popularity */
    rec_train_counts(d, counts);
    int src = sasrec_sampler_init(&smp, d->n_items, counts, tc->sampler);
    free(counts);
    if (src != 0) { rc = -1; goto out; }
    adamw_cfg opt = adamw_default(tc->lr);
    opt.beta2 = 0.98f;
    opt.weight_decay = tc->weight_decay;
    int ks[1] = {10};
    while (!st.done && st.epoch < tc->epochs) {
        double te = tr_monotonic();
        for (int i = 0; i < nu; i++) order[i] = users[i];
        int nbatch = epoch_batches(d, order, nu, tc->batch, starts, &st.rng);
        /* every target weighs the same whatever its batch: a batch's loss is its summed
         * loss over the mean targets per batch (length-bucketed batches differ a lot) */
        float norm = (float)((double)n_targets / nbatch);
        double lsum = 0;
        int64_t nb = 0;
        for (int k = 0; k < nbatch; k++) {
            int i0 = starts[k], B = nu - i0 < tc->batch ? nu - i0 : tc->batch, T;
            fill_train_batch(d, order + i0, B, L, mc.loss == SASREC_LOSS_BCE, ids, pos, neg, len, &T, &st.rng);
            if (mc.negatives > 0) sasrec_sampler_draw(&smp, &st.rng, mc.negatives, negs, logq);
            sasrec_batch b = {.B = B, .T = T, .ids = ids, .len = len, .pos = pos, .neg = neg,
                              .negs = negs, .logq = logq, .norm = norm};
            float loss = 0;
            int M = sasrec_forward(m, &b, 1, &st.rng, 1, &loss);
            if (M < 0) { rc = -1; goto out; }
            sasrec_backward(m, &b);
            if (tc->clip > 0) grad_clip(sasrec_grads(m), np, tc->clip);
            st.step++;
            adamw_update(&opt, sasrec_params(m), sasrec_grads(m), sasrec_adam_m(m), sasrec_adam_v(m), np, st.step);
            lsum += (double)loss * norm;       /* the mean is per target */
            nb += M;
            if (run && (k & 15) == 15)
                stage_progress(run, (st.epoch + (double)(k + 1) / nbatch) / tc->epochs,
                               "sasrec epoch %d/%d batch %d/%d loss %.4f", st.epoch + 1, tc->epochs,
                               k + 1, nbatch, lsum / nb);
        }
        st.epoch++;
        st.seconds += tr_monotonic() - te;
        double lmean = nb ? lsum / nb : 0;
        if (run) stage_metric(run, st.epoch, "sasrec_loss", lmean);
        int last = st.epoch >= tc->epochs;
        if (st.epoch % tc->eval_every == 0 || last) {
            retr_metrics vm;
            retr_metrics_init(&vm, 1, ks);
            if (sasrec_rank(m, d, 1, tc->batch, &vm, 0, NULL, NULL) != 0) { rc = -1; goto out; }
            double hr = retr_hr(&vm, 10);
            if (run) stage_metric(run, st.epoch, "sasrec_valid_hr10", hr);
            if (hr > st.best_hr) {
                st.best_hr = hr; st.best_epoch = st.epoch; st.bad = 0;
                memcpy(best, sasrec_params(m), np * sizeof(float));
            } else if (++st.bad >= tc->patience) st.done = 1;
            if (run) {
                stage_progress(run, st.done ? 1.0 : (double)st.epoch / tc->epochs,
                               "sasrec epoch %d/%d loss %.4f valid HR@10 %.4f (best %.4f at %d)",
                               st.epoch, tc->epochs, lmean, hr, st.best_hr, st.best_epoch);
                if (save_ckpt(run, &st, m, best) != 0) { rc = -1; goto out; }
            } else if (!tc->quiet) {
                fprintf(stderr, "[sasrec] epoch %d loss %.4f valid HR@10 %.4f (best %.4f at %d)\n",
                        st.epoch, lmean, hr, st.best_hr, st.best_epoch);
            }
        } else if (run) {
            if (st.best_hr < 0)
                stage_progress(run, (double)st.epoch / tc->epochs, "sasrec epoch %d/%d loss %.4f",
                               st.epoch, tc->epochs, lmean);
            else
                stage_progress(run, (double)st.epoch / tc->epochs, "sasrec epoch %d/%d loss %.4f (best valid HR@10 %.4f at %d)",
                               st.epoch, tc->epochs, lmean, st.best_hr, st.best_epoch);
        }
        if (run && stage_should_stop() && !st.done && st.epoch < tc->epochs) {
            if (save_ckpt(run, &st, m, best) != 0) { rc = -1; goto out; }
            stage_stopped(run);
            rc = 130;
            goto out;
        }
    }
    if (st.best_hr >= 0) memcpy(sasrec_params(m), best, np * sizeof(float));
    if (res) {
        res->best_valid = st.best_hr; res->best_epoch = st.best_epoch; res->epochs = st.epoch;
        res->seconds = st.seconds;
    }
out:
    free(users); free(ids); free(pos); free(neg); free(len); free(order); free(best);
    free(starts); free(negs); free(logq);
    sasrec_sampler_free(&smp);
    if (rc == 0) *out = m;
    else sasrec_free(m);
    return rc;
}
