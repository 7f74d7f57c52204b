/* recmodel: TokenRec's recommender as the finetune and evaluate stages share it: the data
 * the prompts are made of (each user's chronological sequence, the user and item tokens of
 * a tokenize run, the CF item vectors of the retrieval pool), prompt batches, the query
 * vector z of a user from one forward pass, and the model stored as a BLOB in the database.
 *
 * Stages talk only through tables: finetune writes `models` (schema/004_finetune.sql),
 * evaluate reads it; neither includes the other's header. */
#ifndef TOKENREC_RECMODEL_H
#define TOKENREC_RECMODEL_H
#include <sqlite3.h>
#include <stdint.h>
#include "prompt.h"
#include "rng.h"
#include "t5.h"
#include "retrieval.h"

typedef struct {
    int32_t  n_users, n_items;
    int64_t *off;               /* n_users + 1; user u's sequence is seq[off[u] .. off[u+1]) */
    int32_t *seq;               /* chronological, all splits: ..., valid, test */
    /* parallel to seq, or NULL when the dataset has no timestamps: 1 where the item's
     * timestamp equals the one before it in the user's sequence (a tie, kept in file order) */
    uint8_t *tied;
    /* tokens of the tokenize run */
    int      K, L, extra, cpi;  /* codebooks, codewords, disambiguation book size, codes/item */
    int32_t *user_codes;        /* n_users x K */
    int32_t *item_codes;        /* n_items x cpi */
    /* retrieval pool */
    int      D;
    float   *pool;              /* n_items x D: CF item vectors */
    float   *pool_inv;          /* n_items: inverse norms (cosine) */
    int64_t  tokenize_run, cf_run;
    /* n_users x D: the users' CF vectors of the pool's kind (rec_user_vectors_load), or NULL;
     * a user the cf run has no vector for keeps a zero row */
    float   *user_vec;
    /* n_users, or NULL: 1 = an unseen user of the tokenize run (held out by cf, or without
     * tokens; unseen_tok_load), never in rec_samples nor in rec_evaluate */
    uint8_t *skip;
    int32_t  n_skip;
} rec_data;

/* Only the sequences (what the baselines need). */
int  rec_sequences_load(sqlite3 *db, const char *dataset, rec_data *d);
/* Load the dataset's sequences, the tokens of tokenize run `tokenize_run`, the item
 * vectors (kind "ego" or "mean") of the cf run that tokenize run was built on, and the
 * unseen users of the tokenize run (skip, NULL when there are none). */
int  rec_data_load(sqlite3 *db, const char *dataset, int64_t tokenize_run, const char *pool_kind,
                   rec_data *d);
void rec_data_free(rec_data *d);
/* The users' CF vectors (kind "ego" or "mean") of d's cf run into d->user_vec; after
 * rec_data_load. Returns how many users have one, -1 on error. */
int  rec_user_vectors_load(sqlite3 *db, rec_data *d, const char *kind);
/* Number of a user's train items: all but the last two (valid, test). */
static inline int rec_n_train(const rec_data *d, int32_t u) {
    int n = (int)(d->off[u + 1] - d->off[u]) - 2;
    return n > 0 ? n : 0;
}

/* How often each item occurs among the train items (counts: n_items). */
void rec_train_counts(const rec_data *d, int32_t *counts);

/* Position of the held-out item of split 1 (valid, second to last) or 2 (test, last) in
 * user u's sequence; -1 when the sequence is too short to have one (fewer than 3 items). */
static inline int rec_target_pos(const rec_data *d, int32_t u, int split) {
    int len = (int)(d->off[u + 1] - d->off[u]);
    return len < 3 ? -1 : len - (split == 1 ? 2 : 1);
}

/* A training sample: user u, target = seq[u][pos], history = the hist items before it. */
typedef struct { int32_t user, pos, hist; } rec_sample;

/* Prefix augmentation over the train split only (users with skip[u] left out): a target at every train position
 * pos >= min_hist (and pos <= max_pos when max_pos >= 0), history = the most recent
 * hist_cap items before it. The valid and test items are never targets nor history. */
rec_sample *rec_samples(const rec_data *d, int hist_cap, int min_hist, int max_pos, int64_t *n);

/* A padded batch of encoder prompts. */
typedef struct {
    int       B, T, cap_B, cap_T;
    int32_t  *ids, *mask;       /* (cap_B, cap_T) */
    int32_t  *dec;              /* dec_len */
    int32_t  *target;           /* B */
    int32_t  *scratch;          /* history codes */
    int32_t  *hist;             /* history items */
    int       keep_order;       /* training keeps the history chronological (no shuffle) */
} rec_batch;

void rec_batch_init(rec_batch *b, const rec_data *d, const prompt_vocab *v, int cap_B,
                    int hist_cap, int dec_len);
void rec_batch_free(rec_batch *b);
/* Fill the batch with n samples. Training: template drawn from the ten, history shuffled
 * (rng) unless b->keep_order. Otherwise: template `tmpl`, history chronological. */
void rec_batch_fill(rec_batch *b, const rec_data *d, const prompt_vocab *v, const rec_sample *s,
                    int n, int train, int tmpl, rng_t *rng);
/* The t5 batch view of it. */
t5_batch rec_batch_t5(const rec_batch *b);

/* Query vectors z (n x head_out) of users for split 1 (valid: history = train items) or
 * split 2 (test: history = train + valid items), the most recent hist_cap items in
 * chronological order, with template tmpl, in length-sorted batches of batch_size. */
int rec_queries(t5_model *m, const prompt_vocab *v, const rec_data *d, const int32_t *users,
                int n, int split, int hist_cap, int tmpl, int batch_size, float *z);

/* Store / load the trained model of a finetune run (table models). A SentencePiece prompt
 * vocabulary (finetune --init-from) is stored as prompt_vocab_json under the key "prompt" of
 * the config JSON, so evaluate rebuilds the same prompts without the tokenizer file; without
 * that key the word-level vocabulary of K, L, extra is rebuilt, as before. */
int rec_model_save(sqlite3 *db, int64_t run_id, const t5_model *m, const prompt_vocab *v,
                   const char *pool_kind, int cosine, int hist_cap);
typedef struct {
    t5_model    *model;
    prompt_vocab vocab;
    char         pool_kind[8];
    int          cosine, hist_cap;
    int64_t      tokenize_run;
} rec_loaded;
int  rec_model_load(sqlite3 *db, int64_t finetune_run, rec_loaded *out);
void rec_loaded_free(rec_loaded *l);

/* t5_config as JSON and back (for the models table). */
char *rec_config_json(const t5_config *c);
int   rec_config_parse(const char *json, t5_config *c);



/* ---- evaluation harness shared by finetune (valid) and evaluate (test, baselines) ---- */
/* Called with each user's top-K list (best first). */
typedef void (*rec_topk_fn)(void *ctx, int32_t user, const int32_t *items, const float *scores, int n);
/* For n users with score rows (n, n_items): exclude the user's known items (split 1:
 * train; split 2: train + valid) to -inf, add the target's rank to met, and hand the top-K
 * to fn when fn != NULL. scores is modified. */
void rec_rank_rows(const rec_data *d, const int32_t *users, int n, int split, float *scores,
                   retr_metrics *met, int topk, rec_topk_fn fn, void *ctx);
/* Generative retrieval for every user but the skipped ones: one forward pass each (batched), scores against the
 * pool (dot or cosine, one sgemm per batch), then rec_rank_rows. */
int rec_evaluate(t5_model *m, const prompt_vocab *v, const rec_data *d, int split, int hist_cap,
                 int tmpl, int cosine, int batch, retr_metrics *met, int topk, rec_topk_fn fn,
                 void *ctx);
#endif
