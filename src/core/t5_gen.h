/* t5_gen: autoregressive use of the T5 model of t5.h, for the generate objective (the
 * baseline TokenRec is measured against: P5 / TIGER-style generation of an item's token
 * tuple, one token at a time).
 *
 * Decoder input of a sample: the fixed decoder prompt (P tokens: the start token and the
 * words of prompt_decoder) followed by the first n-1 of the item's n tokens, so the model's
 * dec_len is P + n - 1. The state at position P-1+s predicts token s (teacher forcing:
 * all n predictions of a sample come from one forward pass of the causal decoder).
 *
 * LM head: tied to the item-token rows of shared.weight, logits = (h * d_model^-0.5) E^T as
 * in Hugging Face T5 with tied embeddings, and each step's softmax runs only over its own
 * codebook's L tokens (step s can only ever emit a token of book s). Tying adds no
 * parameters, so the stored model format and loader are the retrieval model's unchanged,
 * and the item tokens mean the same thing in the encoder prompt and in the output.
 *
 * Inference: t5_dec_* keep a key/value cache per decoder layer and row (a beam), filled
 * for the prompt positions from the ordinary forward pass (which also gives the encoder
 * output, whose cross-attention keys/values every beam of a user shares), then one
 * position per call. No allocation after t5_dec_init. */
#ifndef TOKENREC_T5_GEN_H
#define TOKENREC_T5_GEN_H
#include <stdint.h>
#include "t5.h"

/* One step's codebook: its tokens are ids tok0 .. tok0 + n - 1. */
typedef struct { int tok0, n; } t5_gen_book;

#define T5_GEN_MAX_STEPS 8

/* logits (N,n) = d_model^-0.5 h (N,d_model) . shared[tok0 .. tok0+n)^T, one sgemm; rows
 * ldl apart (ldl 0: n). */
void t5_gen_logits(const t5_model *m, const float *h, int N, t5_gen_book bk, float *logits, int ldl);
/* In place: rows (N,n) of logits -> log-probabilities. */
void t5_gen_log_softmax(float *x, int N, int n);

/* Workspace of the generate loss for batches up to max_B rows. */
typedef struct {
    int    max_B, max_n;
    float *ddec, *logits, *dh, *h;
} t5_gen_ws;
void t5_gen_ws_init(t5_gen_ws *w, const t5_model *m, int max_B, int max_n);
void t5_gen_ws_free(t5_gen_ws *w);

/* After t5_forward of batch b (dec ids per row: prompt of length P, then the codes), the
 * mean cross-entropy over the B x nsteps predicted tokens; codes (B,nsteps) are indices
 * within each step's book. With backward != 0 it then fills the gradients (zeroed first):
 * the T5 through t5_backward_ddec, plus the tied LM-head gradient into shared.weight.
 * Returns the loss, NAN with tr_error on bad input. */
float t5_gen_loss(t5_model *m, const t5_batch *b, int P, int nsteps, const t5_gen_book *books,
                  const int32_t *codes, t5_gen_ws *w, int backward);

/* Key/value cache of the incremental decoder. */
typedef struct {
    int    cap_rows, Tmax, pos, rows, rows_per_user, T;
    int    L, C, H, D, HD, F;
    float *k, *v, *k2, *v2;          /* (L, cap_rows, Tmax, HD); *2: gather buffers */
    float *x, *ln, *qkv, *ao, *o, *hid, *rstd, *att, *bias;
    size_t att_cap;                  /* floats in att */
    const float **ckv;               /* per layer: the forward's cross k|v (users, T, 2HD) */
    const int32_t *enc_mask;         /* (users, T) or NULL */
} t5_dec_state;

int  t5_dec_init(t5_dec_state *s, const t5_model *m, int cap_rows, int Tmax);
void t5_dec_free(t5_dec_state *s);
/* Size the attention scratch for encoder inputs up to max_T tokens (t5_dec_start grows it
 * on demand otherwise). */
void t5_dec_reserve(t5_dec_state *s, int max_T);
/* After t5_forward (inference) of b: the cache of positions 0..P-1 of every row of b (one
 * row per user) and the users' cross-attention keys/values; the decoder state at position
 * P-1 (after the final norm) goes to h0 (B,d_model). The cross-attention keys/values stay
 * in the model's arena: do not run another forward before the search of b is done. */
int  t5_dec_start(t5_dec_state *s, const t5_model *m, const t5_batch *b, int P, float *h0);
/* Reorder the cache: new row r continues old row parent[r]; rows_per_user new rows per
 * user (user of row r = r / rows_per_user). */
void t5_dec_gather(t5_dec_state *s, const int32_t *parent, int nrows, int rows_per_user);
/* One position for every row: token ids tok (rows) -> h (rows,d_model) after the final norm. */
int  t5_dec_step(t5_dec_state *s, const t5_model *m, const int32_t *tok, float *h);

#endif
