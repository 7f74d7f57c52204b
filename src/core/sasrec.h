/* sasrec: the model of the sequential baseline (stage `tokenrec sasrec`), SASRec (Kang &
 * McAuley 2018) built from the layers of nn.h. The model core: no database.
 *
 * Model: x = dropout(E[item] * sqrt(d) + P[position]) -> n_blocks pre-norm blocks
 *   x += dropout(causal_self_attention(LN1(x)))       (fused QKV with bias, 1/sqrt(d_head))
 *   x += dropout(W2 dropout(relu(W1 LN2(x) + b1)) + b2)
 * -> final layer norm -> h. The score of item i after position t is h_t . E[i]: the item
 * table E is shared by the input and the output, as in SASRec.
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

typedef struct {
    int   n_items, d, n_blocks, n_heads, max_len;
    int   max_B;          /* largest batch the arena holds */
    int   loss;           /* SASREC_LOSS_* */
    int   negatives;      /* softmax: 0 = over all items, N > 0 = N shared sampled negatives */
    float dropout;
} sasrec_config;

typedef struct {
    int            B, T;  /* rows, padded length (T <= max_len, B <= max_B) */
    const int32_t *ids;   /* (B,T) item ids, right-padded with any valid id */
    const int32_t *len;   /* (B) real positions of each row, 1..T */
    const int32_t *pos;   /* (B,T) next item of each position, -1 where none; NULL: no loss */
    const int32_t *neg;   /* (B,T) one sampled negative per position (BCE loss only) */
    const int32_t *negs;  /* (negatives) the batch's shared negatives (sampled softmax only) */
    const float   *logq;  /* (negatives) log(N q(negs[j])), the correction of each (NULL: 0) */
    float          norm;  /* the loss is the sum over the targets / norm (0: / the targets) */
} sasrec_batch;

typedef struct sasrec_model sasrec_model;

/* A new model, weights drawn from rng (items and positions N(0, 1/d), linear layers
 * Xavier-uniform, biases 0, layer norms 1/0). NULL with tr_error on a bad config. */
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
/* Final hidden states (B,T,d) of the last forward pass. */
const float *sasrec_hidden(const sasrec_model *m);
/* Evaluation: scores (B, n_items) of the item following each row's last real position
 * (one sgemm against the item table). */
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
