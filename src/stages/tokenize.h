/* tokenize: `tokenrec tokenize`, the MQ-Tokenizer stage (docs/METHOD.md,
 * "Tokenization": the CLEAN form).
 *
 * Trains two independent tokenizers (users, items) on the vectors of the current cf run
 * (cf_vectors of kind --source), keeps each one's checkpoint with the best holdout
 * reconstruction, and writes every entity's K tokens to `tokens` (schema/003_tokenize.sql),
 * the tokenizers to `tokenizers`, and the statistics to tokenize_stats/tokenize_book_stats.
 *
 * Unseen entities: `tokenrec tokenize --new-users` (or --new-items) tokenizes, through the
 * frozen tokenizers of the current tokenize run, every user (item) of the dataset that has no
 * tokens in that run yet; they are added to `tokens` under the same run and listed in
 * `tokens_unseen`. An entity without a cf vector (or any, with --propagate) gets one by
 * LightGCN-style propagation (tokenize_propagate). For a later `evaluate --unseen`,
 * `tokenize --holdout-users FRAC` leaves a seeded random fraction of users out of the user
 * tokenizer's training and out of `tokens`; --new-users then adds them.
 */
#ifndef TOKENREC_TOKENIZE_H
#define TOKENREC_TOKENIZE_H
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include "mq.h"

int cmd_tokenize(int argc, char **argv);

/* The frozen tokenizer of one entity type ('user' or 'item') of a done tokenize run, loaded
 * from `tokenizers` (m is initialised here; mq_model_free it). source gets 'ego' or 'mean'. */
int tokenize_load_model(sqlite3 *db, int64_t tok_run, const char *entity, mq_model *m,
                        char source[8]);

/* Tokens of n vectors vecs (n, d_in) through the frozen tokenizer of tok_run:
 * codes (n, K), eval mode (no mask, no dropout, BatchNorm running stats). This is what
 * `tokenize --new-users` and an evaluation of unseen users call. */
int tokenize_frozen(sqlite3 *db, int64_t tok_run, const char *entity, const float *vecs, int n,
                    int32_t *codes);

/* A vector for entities that have none, by one LightGCN propagation step over the train
 * interactions (split 0) of the dataset from the other side's cf vectors of kind 'ego':
 *     e_u = sum_{i in N(u)} e_i / sqrt(|N(u)| |N(i)|)     (users, from item vectors)
 *     e_i = sum_{u in N(i)} e_u / sqrt(|N(i)| |N(u)|)     (items, from user vectors)
 * N(.) are train neighbours and |N(.)| train degrees counted over the whole dataset (the
 * entity's own interactions included, as if it were in the graph). An entity without train
 * interactions gets the zero vector. ids (n) -> out (n, dim). */
int tokenize_propagate(sqlite3 *db, const char *dataset, int64_t cf_run, const char *entity,
                       const int32_t *ids, int n, int dim, float *out);

/* Tokenize every entity of the dataset without tokens in tok_run (see above) and store
 * them; propagate 1: use propagated vectors even where a cf vector exists. *added counts. */
int tokenize_add_unseen(sqlite3 *db, int64_t tok_run, const char *entity, int propagate,
                        int *added);

/* The statistics of one entity type of a done tokenize run: tokenize_stats with its
 * tokenizer's shape (tokenizers). */
typedef struct {
    char   entity[8], source[8], quantizer[16];
    int    n, n_train, n_holdout, n_excluded;   /* tokenized, trained on, held out, left out */
    int    distinct, largest, collisions, disambiguated;   /* distinct K-tuples, largest group */
    int    K, L, d_c, best_epoch, epochs;
    double holdout_mse, input_var, seconds;
} tokenize_summary;
/* The run's rows (users, then items), at most max; returns how many, or -1 with tr_error. */
int tokenize_read_stats(sqlite3 *db, int64_t tok_run, tokenize_summary *out, int max);

/* Print the statistics of a tokenize run (as `tokenrec tokenize` does at the end). */
int tokenize_print_stats(sqlite3 *db, int64_t tok_run, FILE *f);

#endif
