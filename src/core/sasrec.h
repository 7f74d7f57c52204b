/* sasrec: the causal transformer of tokenrec, built from the layers of nn.h: the SASRec
 * baseline (stage `tokenrec sasrec`, Kang & McAuley 2018) and the causal ID-token LLM
 * (`tokenrec finetune --arch causal`) are two configurations of it. The model core: no
 * database.
 *
 * Input: each position sums n_feat rows of one input table E (n_rows, d), -1 meaning none:
 * SASRec's item id (one row per item); or an item's K token rows (plus its own id row), or a
 * user's K token rows at a prefix position (the stage lays out the rows).
 *
 * Model: x = dropout(sum_s E[ids_s] * sqrt(d) + P[position]) -> n_blocks pre-norm blocks
 *   x += dropout(causal_self_attention(LN1(x)))       (fused QKV with bias, 1/sqrt(d_head))
 *   x += dropout(W2 dropout(relu(W1 LN2(x) + b1)) + b2)
 * -> final layer norm -> h. The score of item i after position t is q_t . v_i, by the item
 * side `out`:
 *   SASREC_OUT_TIED:  q = h, v_i = the sum of item i's input rows (item_rows; without them
 *                     row i): the input table serves the output, as in SASRec;
 *   SASREC_OUT_OWN:   q = h, v_i = item i's last input row (its own row) when it has one,
 *                     else the sum of its other rows (tokens alone for an item never trained);
 *   SASREC_OUT_TABLE: q = h, v_i = row i of an output table (n_items, d) of its own;
 *   SASREC_OUT_FIXED: q = W h + b (a linear head, out_dim x d), v_i = fixed vectors
 *                     (n_items, out_dim) that are not trained (e.g. CF item vectors).
 *
 * Sequences are right-padded: with the causal mask a real position never sees a padding
 * position, so no key mask is needed and padding outputs get no loss.
 *
 * Loss over every position that has a next item (the targets): full softmax over the items
 * (cross-entropy); sampled softmax, the target against `negatives` items drawn once per
 * batch and shared by every target of it (uniform or popularity-proportional, each sampled
 * logit corrected by -log(N q(item)), a negative equal to the row's target masked out); or
 * the paper's binary cross-entropy with one sampled negative per position.
 *
 * Memory: parameters, gradients and the two Adam moments each live in one contiguous float
 * buffer; activations in an arena sized for (max_B, max_len) at creation. */
#ifndef TOKENREC_SASREC_H
#define TOKENREC_SASREC_H
#include <stddef.h>
#include <stdint.h>
#include "rng.h"

enum { SASREC_LOSS_SOFTMAX = 0, SASREC_LOSS_BCE = 1 };
enum { SASREC_OUT_TIED = 0, SASREC_OUT_TABLE = 1, SASREC_OUT_FIXED = 2, SASREC_OUT_OWN = 3 };

typedef struct {
    int   n_items, d, n_blocks, n_heads, max_len;
    int   max_B;          /* largest batch the arena holds */
    int   loss;           /* SASREC_LOSS_* */
    int   negatives;      /* softmax: 0 = over all items, N > 0 = N shared sampled negatives */
    float dropout;
    /* the input and the item side; all 0 / NULL: SASRec (row i = item i, tied output) */
    int   n_rows;         /* rows of the input table (0: n_items) */
    int   n_feat;         /* rows summed per position (0: 1) */
    const int32_t *item_rows; /* (n_items, n_feat) the input rows of each item, -1 none; NULL:
                                 item i is row i. Copied by sasrec_new. */
    int   out;            /* SASREC_OUT_* */
    int   out_dim;        /* SASREC_OUT_FIXED: width of the fixed vectors */
    const float *fixed;   /* SASREC_OUT_FIXED: (n_items, out_dim); copied by sasrec_new */
} sasrec_config;

typedef struct {
    int            B, T;  /* rows, padded length (T <= max_len, B <= max_B) */
    const int32_t *ids;   /* (B,T,n_feat) input rows, -1 none, right-padded with any valid rows */
    const int32_t *len;   /* (B) real positions of each row, 1..T */
    const int32_t *pos;   /* (B,T) next item of each position, -1 where none; NULL: no loss */
    const int32_t *neg;   /* (B,T) one sampled negative per position (BCE loss only) */
    const int32_t *negs;  /* (negatives) the batch's shared negatives (sampled softmax only) */
    const float   *logq;  /* (negatives) log(N q(negs[j])), the correction of each (NULL: 0) */
    float          norm;  /* the loss is the sum over the targets / norm (0: / the targets) */
} sasrec_batch;

typedef struct sasrec_model sasrec_model;

/* A new model, weights drawn from rng (input rows, positions and the output table N(0,
 * 1/d), linear layers Xavier-uniform, biases 0, layer norms 1/0). NULL with tr_error on a
 * bad config. */
sasrec_model *sasrec_new(const sasrec_config *c, rng_t *rng);
void          sasrec_free(sasrec_model *m);
const sasrec_config *sasrec_cfg(const sasrec_model *m);
size_t sasrec_n_params(const sasrec_model *m);
float *sasrec_params(sasrec_model *m);
float *sasrec_grads(sasrec_model *m);
float *sasrec_adam_m(sasrec_model *m);
float *sasrec_adam_v(sasrec_model *m);

/* Forward pass. train: dropout from rng. When b->pos is set, *loss gets the summed loss of
 * the targets over b->norm (their mean when it is 0); with grad, the gradients are zeroed and the output layer's part of them is
 * accumulated, ready for sasrec_backward. Returns the number of targets, or -1. */
int  sasrec_forward(sasrec_model *m, const sasrec_batch *b, int train, rng_t *rng, int grad,
                    float *loss);
/* The rest of the gradient after sasrec_forward(..., grad = 1). */
void sasrec_backward(sasrec_model *m, const sasrec_batch *b);
/* The output table (n_items, d) inside the parameters (SASREC_OUT_TABLE; else NULL), for
 * a caller that initialises it (e.g. from CF vectors). */
float *sasrec_out_table(sasrec_model *m);
/* The input table (n_rows, d) inside the parameters, for a caller that initialises rows
 * of it (e.g. the items' own rows from CF vectors). */
float *sasrec_in_table(sasrec_model *m);
/* The input rows of item i (n_feat of them, -1 none) as the model sums them. */
void sasrec_item_rows(const sasrec_model *m, int32_t item, int32_t *rows);
/* Final hidden states (B,T,d) of the last forward pass. */
const float *sasrec_hidden(const sasrec_model *m);
/* Evaluation: scores (B, n_items) of the item following each row's last real position
 * (one sgemm against the item side). */
int  sasrec_scores(sasrec_model *m, const sasrec_batch *b, float *scores);

enum { SASREC_SAMPLER_UNIFORM = 0, SASREC_SAMPLER_POP = 1 };

/* Draws the shared negatives of a batch: uniform over the items, or proportional to an
 * item's count plus one (popularity: counts, one per item), with log(N q) of each draw for
 * the correction. */
typedef struct {
    int     n_items, kind;
    double *cum;              /* (n_items) cumulative probabilities (popularity only) */
} sasrec_sampler;
int  sasrec_sampler_init(sasrec_sampler *s, int n_items, const int32_t *counts, int kind);
void sasrec_sampler_free(sasrec_sampler *s);
void sasrec_sampler_draw(const sasrec_sampler *s, rng_t *rng, int n, int32_t *ids, float *logq);

#endif
