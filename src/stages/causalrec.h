/* causalrec: the causal ID-token LLM (`tokenrec finetune --arch causal`) as the finetune and
 * evaluate stages share it: the input rows its positions sum (an item's K token rows, plus
 * its own row with --item-input tokens+id; a user's K token rows at the prefix position,
 * where the model has one: --user-prefix),
 * the model's shape from its settings, and the model stored in `models` (config JSON with
 * "arch":"causal"). The network itself is the causal stack of sasrec.h.
 *
 * Input table rows: item tokens (book k < K: k*L + code; the disambiguation book: K*L +
 * code), then user tokens (K*L + extra + k*L + code), then one row per item (tokens+id),
 * then one row per user (--user-input tokens+id).
 * An item with no train occurrence gets no own row (tokens alone), at training and at
 * evaluation, so an item never trained still has a vector from its tokens. */
#ifndef TOKENREC_CAUSALREC_H
#define TOKENREC_CAUSALREC_H
#include <sqlite3.h>
#include <stdint.h>
#include "recmodel.h"
#include "sasrec.h"
#include "sasrec_fit.h"

enum { CAUSAL_POOL_CF = 0, CAUSAL_POOL_LEARNED = 1, CAUSAL_POOL_TOKENS = 2, CAUSAL_POOL_ID = 3 };
enum { CAUSAL_IN_TOKENS = 0, CAUSAL_IN_TOKENS_ID = 1 };

/* The settings that fix the model's shape (and what evaluate needs to rebuild it). */
typedef struct {
    int  pool;            /* CAUSAL_POOL_*: the item side scored against */
    int  item_input;      /* CAUSAL_IN_*: what an item's position sums */
    char cf_kind[8];      /* the CF item vectors of pool cf, and learned's start: mean or ego */
    int  d, blocks, heads, hist_cap;
    int  no_prefix;       /* 1: no user position, the items alone (--user-prefix 0) */
    int  user_input;      /* CAUSAL_IN_*: what the user position sums (tokens+id: plus its own row) */
    double cf_blend;      /* the CF prior's weight in the ranking scores (--cf-blend; 0: none) */
    double cf_blend_tied; /* the weight for a user whose last history item is tied to the one
                           * before it (sasrec_blend.alpha_tied) */
} causal_spec;

/* Names <-> values: "cf" "learned" "tokens" "id"; "tokens" "tokens+id". -1 for an unknown name. */
int         causal_pool_parse(const char *s);
const char *causal_pool_name(int pool);
int         causal_input_parse(const char *s);
const char *causal_input_name(int in);

/* The rows of every item and user (see above) of spec s, from d's tokens and train counts;
 * with s->no_prefix (--user-prefix 0) user_rows is NULL: no sequence has a user position
 * (the user token rows stay in the table, untrained, so the layout does not change). With
 * s->user_input tokens+id each seen user also has a row of its own, after the items' (an
 * unseen user, d->skip, enters by its tokens alone). n_feat is the wider of an item's and a
 * user's row count; the narrower is padded with -1 (no row). */
typedef struct { int32_t *item_rows, *user_rows; int n_rows, n_feat; } causal_rows;
void causal_rows_build(const rec_data *d, const causal_spec *s, causal_rows *r);
/* Do the users have rows of their own under spec s (a user position, --user-input tokens+id)? */
int  causal_user_own_rows(const causal_spec *s);
void causal_rows_free(causal_rows *r);

/* The item side `pool` goes with the item input (pool id needs the own rows of tokens+id):
 * 0, or -1 with tr_error. */
int causal_sides_check(int pool, int item_input);
/* The model config of spec s over d (items, CF vectors) and rows r (max_len: hist_cap, plus
 * the user position unless s->no_prefix; r's user_rows must agree); training options
 * (loss, negatives, dropout) are the caller's. -1 with tr_error when pool learned's start
 * does not fit (the CF vectors' width must equal d) or the sides do not go together. */
int causal_config(const causal_spec *s, const rec_data *d, const causal_rows *r, int max_B, sasrec_config *c);
/* Pool learned: the output table starts as the CF item vectors, scaled to norm 1 on
 * average (the random rows' scale). */
void causal_init_learned(sasrec_model *m, const rec_data *d);
/* --id-init cf: each trained item's own input row (--item-input tokens+id) starts as its CF
 * vector, scaled as pool learned's table, in its first min(D, d) columns (a wider model keeps
 * the rest of the row's random start). */
void causal_init_id_rows(sasrec_model *m, const rec_data *d, const causal_rows *r);
/* --user-input tokens+id with --id-init cf: each seen user's own row starts as its CF vector
 * (d->user_vec, scaled to norm 1 on average over those users, first min(D, d) columns); a
 * user without a vector (a zero row) keeps its random start. Nothing without d->user_vec. */
void causal_init_user_id_rows(sasrec_model *m, const rec_data *d, const causal_rows *r);
/* --token-init cf: each item token row starts as the mean of the CF vectors (scaled as
 * above, first min(D, d) columns) of the trained items that carry that token; a token no
 * trained item carries keeps its random start, and so do the user rows. */
void causal_init_token_rows(sasrec_model *m, const rec_data *d, const causal_rows *r);
/* --token-init users (and cf+users, beside the above): each user token row starts as the mean of the
 * users' CF vectors (d->user_vec, scaled to norm 1 on average over those users, first
 * min(D, d) columns) of the users that carry that token, counting only users the cf run has
 * a vector for (a nonzero row) and that are not skipped (unseen); a token no such user
 * carries keeps its random start. Nothing without d->user_vec or user rows. */
void causal_init_user_token_rows(sasrec_model *m, const rec_data *d, const causal_rows *r);

/* Store the model of finetune run `run` in `models` (inside the caller's transaction). */
int causal_save(sqlite3 *db, int64_t run, const sasrec_model *m, const causal_spec *s, const rec_data *d);
/* 1 when finetune run `run` stored a causal model, 0 when a T5 one, -1 on error. */
int causal_is_stored(sqlite3 *db, int64_t run);

/* A stored causal model with the data and rows it reads. */
typedef struct {
    sasrec_model *m;
    causal_spec   s;
    causal_rows   rows;
    int64_t       tokenize_run;
    sasrec_blend  blend;          /* the ranking's CF prior (alpha 0: none) */
} causal_loaded;
/* Load finetune run `run`'s model and, into d, the data of its tokenize run (sequences,
 * tokens, CF vectors of the spec's kind, unseen users; with a CF blend the users' vectors
 * too). */
int  causal_load(sqlite3 *db, const char *dataset, int64_t run, int max_B, rec_data *d, causal_loaded *out);
void causal_loaded_free(causal_loaded *l);

#endif
