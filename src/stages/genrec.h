/* genrec: the autoregressive baseline on top of recmodel: a prefix trie over the item token
 * tuples, constrained beam search batched over users, its evaluation harness, and the
 * generate objective's training batch. The T5 side is t5_gen.h.
 *
 * Scores: a beam's score is the sum of its tokens' log-probabilities (each step's softmax
 * over its codebook; the trie only removes candidates, it does not renormalise). Items
 * sharing a tuple ("collided") all take their leaf's score and are listed by item id. */
#ifndef TOKENREC_GENREC_H
#define TOKENREC_GENREC_H
#include <stdint.h>
#include "recmodel.h"
#include "t5_gen.h"

typedef struct {
    int      depth, n_nodes, n_items, n_leaves, n_collided, n_collided_items;
    int32_t *first, *count;      /* per node: its children (edges first..first+count) or, at
                                    depth `depth`, its items (items[first..first+count)) */
    int32_t *edge_code, *edge_node;
    int32_t *items;              /* item ids sorted by tuple then id */
} gen_trie;

/* The trie of n_items tuples of `depth` codes (codes row-major). */
int  gen_trie_build(gen_trie *t, const int32_t *codes, int n_items, int depth);
void gen_trie_free(gen_trie *t);
/* The child of node along code, or -1. Node 0 is the root. */
int  gen_trie_child(const gen_trie *t, int node, int code);
/* Items of the tuple (count; *items points into the trie), 0 when not an item tuple. */
int  gen_trie_lookup(const gen_trie *t, const int32_t *tuple, const int32_t **items);

/* The codebook of step s of rec_data d in vocabulary v. */
t5_gen_book gen_book(const prompt_vocab *v, const rec_data *d, int s);
/* Decoder prompt length P of a generate model: dec_len - codes per item + 1. */
static inline int gen_prompt_len(const t5_model *m, const rec_data *d) { return t5_cfg(m)->dec_len - d->cpi + 1; }
/* Training decoder ids (B, dec_len): the prompt of P tokens then the first cpi-1 codes of
 * each row's target; codes (B, cpi) get the target's codes. */
void gen_train_dec(const prompt_vocab *v, const rec_data *d, const int32_t *target, int B, int P,
                   int32_t *dec, int32_t *codes);

/* The searcher: workspace for batches of up to max_users users with beam `beam`
 * (gen_search_init lowers max_users to keep the key/value cache within 2 GiB). */
typedef struct {
    int           beam, max_users, P, hist_cap, max_leaf;
    t5_dec_state  st;
    gen_trie      trie;
    t5_gen_book   books[T5_GEN_MAX_STEPS];
    int           max_n;
    int32_t      *dec;                  /* (max_users, dec_len) */
    float        *h, *logp;             /* (rows, C), (rows, max_n) */
    int32_t      *node, *node2, *code, *parent, *tok;     /* per beam slot */
    float        *score, *score2;
    struct gen_cand *cand;              /* candidates of one user */
    int           cap_cand;
    uint8_t      *excl;                 /* n_items: known items of the current user */
    struct gen_hit *hits;               /* the current user's ranked list */
    int           cap_hits;
    rec_batch     rb;
    rec_sample   *bs;
} gen_search;

int  gen_search_init(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d, int beam,
                     int max_users, int hist_cap);
void gen_search_free(gen_search *g);

/* Beam search for n users (n <= max_users) on split (1 valid, 2 test: the prompt history
 * and the excluded known items as rec_queries / rec_rank_rows; 0: history up to the test
 * item's position, nothing excluded). For each user, the ranked items (score desc, then
 * item id) go to fn (at most topk), and the target's rank to met (when not NULL). */
int gen_search_users(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d,
                     const int32_t *users, int n, int split, int tmpl, retr_metrics *met, int topk,
                     rec_topk_fn fn, void *ctx);

/* Every user with a target in split, in length-sorted batches of `batch` users. */
int gen_evaluate(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d, int split,
                 int tmpl, int batch, retr_metrics *met, int topk, rec_topk_fn fn, void *ctx);

/* Latency over the first n users with a test target (by id), in length-sorted batches of
 * `batch` as in evaluation: seconds for all of them after one warm-up batch, for beam search
 * (g) or, with g NULL, generative retrieval (forward + scores + top-K with rec_queries /
 * retr_scores / rec_rank_rows). */
double gen_time_users(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d,
                      int hist_cap, int cosine, int n, int batch, int topk);

/* evaluate --method generate: the metrics and latency rows of one evaluate run. */
typedef struct { const char *method, *split, *metric; int k; double value; } gen_metric_row;
typedef struct {
    int            n;
    gen_metric_row rows[32];
    double         test_secs;           /* the test pass (beam search for every user) */
} gen_eval_out;

/* Beam search (beam) on the valid (when valid != NULL) and test items for every user with
 * model lm on data d (loaded by the caller from lm's tokenize run), in batches of `batch`;
 * the test top-K lists to fn. Then, unless latency_users is 0, the latency of both methods
 * over the first latency_users test users: ms per user at batch 1 and users per second at
 * the best of batch 1, 8, 32, 128 — beam search with lm, and generative retrieval with the
 * current finetune (retrieval) run's model when it has lm's shape, else with lm's own
 * network and head (the same size). Rows for run_metrics go to out. */
int gen_eval(sqlite3 *db, const char *dataset, rec_loaded *lm, const rec_data *d, int beam, int batch,
             retr_metrics *valid, retr_metrics *test, int topk, rec_topk_fn fn, void *ctx,
             int latency_users, int quiet, gen_eval_out *out);

#endif
