/* unseen: the unseen-user test (docs/METHOD.md, "Unseen users"). A seeded fraction of users is chosen
 * ONCE, by cf (`cf --holdout-users FRAC`), and recorded in cf_holdout (schema/006_unseen.sql);
 * every later stage reads that choice instead of making its own:
 *   cf        leaves their train pairs out of the graph and BPR, their valid/test items out
 *             of its metrics, and writes their cf vectors by folding them in afterwards
 *             (unseen_fold_in: a normalised sum of their train items' vectors);
 *   tokenize  leaves them out of the user tokenizer's training and tokenizes them through the
 *             frozen tokenizer (tokens_unseen, origin 'cf-holdout');
 *   finetune  leaves the unseen users of its tokenize run (unseen_tok_load) out of its samples
 *             and of its validation (through rec_data.skip, set by rec_data_load);
 *   evaluate  --unseen tests the seen users with the test template and the unseen ones with
 *             the unseen-user template, against the same full item pool. */
#ifndef TOKENREC_UNSEEN_H
#define TOKENREC_UNSEEN_H
#include <sqlite3.h>
#include <stdint.h>
#include "cf.h"

/* Choose floor(frac * n_users) users uniformly at random from a stream of seed that no
 * other draw uses: held (n_users) is set to 1 for them, 0 otherwise. Returns the count. */
int unseen_pick(int32_t n_users, double frac, uint64_t seed, uint8_t *held);

/* out = full without the held users' train pairs and valid/test targets (their rows stay,
 * empty), so they have no edge in cf_graph_build, no BPR triple and no metric. */
int unseen_cf_drop(const cf_data *full, const uint8_t *held, cf_data *out);

/* Fold the held users into a trained table (n_users + n_items rows of C floats, users
 * first) without changing any other row: for each held user u with train items N(u) in full,
 *     row_u = s * v / |v|,   v = sum_{i in N(u)} row_{n_users + i} / sqrt(|N(u)| deg(i))
 * (LightGCN's normalised sum of neighbour vectors; deg(i) is the item's degree in the
 * training graph of `train`, items without a training edge are skipped), where s is the mean
 * norm of the rows of the non-held users that have train items in `train`, so the folded
 * vectors are on the scale of the trained ones. A held user with no usable item gets 0. */
void unseen_fold_in(const cf_data *full, const cf_data *train, const uint8_t *held, float *table,
                    int C);

/* The held-out users of a cf run into held (n_users, cleared here). Returns their count. */
int unseen_cf_load(sqlite3 *db, int64_t cf_run, uint8_t *held, int32_t n_users);

/* The unseen users of a tokenize run into unseen (n_users, cleared here): the users listed
 * in its tokens_unseen and the users it has no tokens for. Returns their count, -1 on error. */
int unseen_tok_load(sqlite3 *db, int64_t tok_run, uint8_t *unseen, int32_t n_users);
/* The users that tokenize run tok_run tokenized through its frozen tokenizer (listed in
 * tokens_unseen, so they have tokens) into frozen (n_users, cleared here): the group that
 * evaluate --unseen tests; users with no tokens at all are in neither group. Returns the count. */
int unseen_tok_frozen(sqlite3 *db, int64_t tok_run, uint8_t *frozen, int32_t n_users);

#endif
