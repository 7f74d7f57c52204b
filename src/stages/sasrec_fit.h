/* sasrec_fit: the causal model of sasrec.h trained on a dataset's train split and ranked on
 * valid or test: the SASRec baseline (the stage `tokenrec sasrec`, evaluate's method sasrec)
 * and the causal ID-token LLM (`tokenrec finetune --arch causal`, whose positions sum an
 * item's token rows and which opens each sequence with the user's tokens unless
 * --user-prefix 0). */
#ifndef TOKENREC_SASREC_FIT_H
#define TOKENREC_SASREC_FIT_H
#include "recmodel.h"
#include "retrieval.h"
#include "sasrec.h"
#include "stage.h"

typedef struct {
    sasrec_config model;      /* n_items and max_B are filled in from the data and batch */
    int   sampler;            /* SASREC_SAMPLER_* (sampled softmax only) */
    int   epochs, batch, eval_every, patience;
    float lr, weight_decay, clip;
    int   lr_cosine;          /* 1: the lr falls along a half cosine from lr at the first step
                               * to 0 at the end of epoch `epochs` (the cap, set by the batch's
                               * place in its epoch, so a resumed run follows it too);
                               * 0: constant */
    uint64_t seed;
    int   quiet;
    int   shards;             /* > 1: each batch is cut into this many shards of consecutive
                               * rows, each with its own dropout stream, their gradients
                               * summed in a fixed tree; under mpirun every rank computes a
                               * contiguous run of them (the results depend on shards, never
                               * on the process count). 0 or 1: the whole batch at once */
    /* the causal LLM's sequences (NULL / 0: SASRec's) */
    const int32_t *user_rows; /* (n_users, model.n_feat) rows of each user's prefix position
                                 (position 0); NULL: none */
    int   no_user_target;     /* with user_rows: 0 the prefix position's target is the first
                               * train item, 1 it has none (context for the items only) */
    float token_drop;         /* training only: an item position whose last input row (its own
                               * row) is present loses its other rows (its tokens) with this
                               * probability, one draw per position from the fit's generator
                               * (0: no draws) */
    int   tie_shuffle;        /* 1: every epoch permutes each user's train items within each
                               * run of equal timestamps (d->tied; nothing without one), one
                               * draw sequence from the fit's generator, so the order a tie
                               * was stored in (the file's) is never a training signal */
    int   windows;            /* 0: each user's most recent max_len inputs once per epoch;
                                 1: every train target once per epoch, the history cut into
                                 windows of up to max_len positions */
    const char *label;        /* progress and log prefix (NULL: "sasrec") */
    const char *loss_metric, *valid_metric;   /* metrics_log names (NULL: sasrec_loss, sasrec_valid_hr10) */
    void (*init)(sasrec_model *m, void *ctx); /* after the model is made (NULL: none) */
    void *init_ctx;
} sasrec_train_cfg;

/* d's sequences into seq (as long as d->seq) with each trained user's (not d->skip) train
 * items permuted, from rng, within every run of tied timestamps (d->tied, which must be
 * set); the valid and test items stay where they are, even when tied to a train item. */
void sasrec_ties_shuffle(const rec_data *d, int32_t *seq, rng_t *rng);
/* Does user u's last history item of split 1 (valid: the last train item) or 2 (test: the
 * valid item) share its timestamp with the item before it? 0 without d->tied. */
int sasrec_last_tied(const rec_data *d, int32_t u, int split);

/* The learning rate of batch k (0-based) of nbatch in epoch `epoch` (0-based): tc->lr, or
 * with lr_cosine lr * (1 + cos(pi t)) / 2 at t = (epoch + k / nbatch) / epochs. */
float sasrec_lr_at(const sasrec_train_cfg *tc, int epoch, int k, int nbatch);
/* --lr-schedule's names: "constant" 0, "cosine" 1 (lr_cosine), anything else -1. */
int sasrec_lr_schedule_parse(const char *s);

/* A CF prior for sasrec_rank: each user's row of model scores and of CF scores (user
 * vector . item vectors) are standardised over the items (mean 0, standard deviation 1) and
 * mixed as (1 - alpha) model + alpha CF; weight 0, or a user whose CF scores are all equal
 * (no vector), keeps the model's scores as they are. */
typedef struct {
    const float *user_vec, *item_vec;   /* (n_users, D), (n_items, D): the CF vectors */
    int   D;
    float alpha;                        /* the CF scores' weight, in [0, 1) */
    /* with tied (d->tied, or NULL: alpha for everyone): the weight for a user whose last
     * history item shares its timestamp with the item before it (a run of ties still open) */
    float alpha_tied;
    const uint8_t *tied;
} sasrec_blend;
/* Does blend (may be NULL) change any user's ranking: a weight above 0 that some user gets? */
int sasrec_blend_active(const sasrec_blend *blend);

/* Rank split 1 (valid: history = train items) or 2 (test: train + valid) for every user
 * with a target (but those with d->skip[u] set) through rec_rank_rows: the model reads the
 * user's prefix position (user_rows, NULL: none) and the last history items that fit in
 * max_len; blend (NULL, or weights 0: the model's scores alone) mixes in a CF prior.
 * shared: under mpirun every rank calls it and ranks its share of the batches, and every
 * rank gets the metrics (fn only sees this rank's users); 0: this process ranks every user
 * (e.g. rank 0 alone). */
int sasrec_rank(sasrec_model *m, const rec_data *d, const int32_t *user_rows, const sasrec_blend *blend, int split,
                int batch, int shared, retr_metrics *met, int topk, rec_topk_fn fn, void *ctx);
/* sasrec_rank with blend's CF vectors at each of n_weights weights in [0,1) for every user
 * (blend's alpha, alpha_tied and tied ignored), from one forward pass per batch: met[g] gets
 * weight g's metrics (each initialised by the caller), no top-K lists; each weight ranks as
 * sasrec_rank with a blend of that alpha, weight 0 as the model alone. -1 with tr_error on
 * bad arguments. */
int sasrec_rank_grid(sasrec_model *m, const rec_data *d, const int32_t *user_rows, const sasrec_blend *blend, int split,
                     int batch, int shared, const float *weights, int n_weights, retr_metrics *met);

/* Train on the train split (each user's last max_len+1 train items: inputs and next-item
 * targets), HR@10 on the valid items every eval_every epochs, early stopping after
 * `patience` evaluations without improvement; the best parameters are kept in *out.
 * With run != NULL, progress and loss go to the stage runner and a checkpoint (parameters,
 * moments, best parameters, rng, counters) is saved after every evaluation and on a stop
 * request, and a resumed run continues from it. Returns 0, 130 when stopped (after
 * stage_stopped), or -1. res (may be NULL) gets the best valid HR@10, its epoch, the
 * epochs trained and their seconds (over every process that worked on the run).
 * Under mpirun (dist_size() > 1, tc->shards >= the process count) every rank calls it with
 * the same d and tc; rank 0 alone has run != NULL, and every rank ends with the same model. */
typedef struct {
    double  best_valid; int best_epoch, epochs; double seconds;
    int64_t targets, positions;   /* per epoch: train targets, sequence positions (no padding) */
} sasrec_fit_result;
int sasrec_fit(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc,
               sasrec_model **out, sasrec_fit_result *res);

#endif
