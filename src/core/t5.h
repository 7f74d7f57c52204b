/* t5: the T5 v1.0 encoder-decoder (Hugging Face t5-small architecture) with the TokenRec
 * generative-retrieval head, built from the layers of nn.h.
 *
 * Memory: parameters, gradients and the two AdamW moments each live in ONE contiguous
 * float buffer (m->params, m->grads, m->adam_m, m->adam_v, all m->n_params long); every
 * named tensor is a view at the same offset in all four (see t5_param_find). Activations
 * live in an arena sized by t5_reserve(max batch, max encoder length), so a training step
 * does no allocation once the arena is large enough.
 *
 * Model: shared embedding -> encoder (pre-norm self-attention with bidirectional relative
 * position bias computed in block 0 and shared by all blocks, ReLU FFN) -> final RMS norm;
 * decoder (causal self-attention with its own relative bias, cross-attention without
 * position bias, FFN) -> final RMS norm -> flatten (B, dec_len*d_model) -> head
 * fc2(dropout(relu(fc1(.)))) -> z (B, head_out). With n_dec_layers == 0 the model is an
 * encoder only: the encoder output is mean-pooled over real tokens, and with
 * head_hidden == 0 the head is the single linear fc2 (the benchmark yardstick).
 *
 * Loss: cosine embedding loss, margin 0, against pos/neg target vectors (nn.h). */
#ifndef TOKENREC_T5_H
#define TOKENREC_T5_H
#include <stddef.h>
#include <stdint.h>
#include "nn.h"
#include "rng.h"

typedef struct {
    int   vocab, d_model, d_kv, n_heads, d_ff;
    int   n_enc_layers, n_dec_layers;        /* n_dec_layers 0: encoder only, mean-pooled */
    int   rel_buckets, rel_max_distance;
    float dropout;                           /* T5 dropout (embeddings, sublayers, FFN) */
    float head_dropout;                      /* dropout inside the head */
    float ln_eps;
    int   head_hidden, head_out;             /* head_hidden 0: one linear layer */
    int   dec_len;                           /* decoder input length (head input = dec_len*d_model) */
} t5_config;

/* Presets: "tiny" (tests; the t5-tiny test-vector shape), "small" (CPU default: d_model
 * 256, 4 heads, d_ff 1024, 4+2 layers), "t5-small" (HF t5-small: 512, 8x64, 2048, 6+6,
 * vocab 32128). Head 256 -> 64 and dec_len 20 except for tiny. -1 for an unknown name. */
int t5_preset(const char *name, t5_config *cfg);

typedef struct {
    char  *name;          /* Hugging Face parameter name */
    size_t off, n;        /* offset and length in the contiguous buffers */
    int    rows, cols;    /* shape; cols 0 for a vector */
} t5_param;

typedef struct t5_model t5_model;   /* opaque; see the accessors below */

/* A new model with weights initialised as Hugging Face T5 _init_weights (factor 1) and the
 * head as PyTorch nn.Linear; all draws from rng. NULL with tr_error on a bad config. */
t5_model *t5_new(const t5_config *cfg, rng_t *rng);
void      t5_free(t5_model *m);
const t5_config *t5_cfg(const t5_model *m);

/* The contiguous buffers (n_params floats each) and the named views. */
size_t          t5_n_params(const t5_model *m);
float          *t5_params(t5_model *m);
float          *t5_grads(t5_model *m);
int             t5_n_tensors(const t5_model *m);
const t5_param *t5_tensor(const t5_model *m, int i);
const t5_param *t5_param_find(const t5_model *m, const char *name);   /* NULL if absent */

/* Grow the vocabulary to new_vocab rows of shared.weight; the new rows are drawn
 * N(0, std^2) from rng (std <= 0: HF's N(0, 1)); their gradients and moments start at 0.
 * -1 with tr_error if new_vocab < the current vocab. */
int t5_resize_vocab(t5_model *m, int new_vocab, rng_t *rng, float std);

/* Size the activation arena for batches up to max_B rows of up to max_T encoder tokens.
 * Forward calls grow it on demand; call this once up front to avoid that. */
int t5_reserve(t5_model *m, int max_B, int max_T);

typedef struct {
    int B, T;                    /* batch rows, padded encoder length */
    const int32_t *enc_ids;      /* (B,T) */
    const int32_t *enc_mask;     /* (B,T) 1 real token, 0 padding; NULL: all real */
    const int32_t *dec_ids;      /* (dec_len) shared by all rows, or (B,dec_len) */
    int dec_per_row;             /* 1 if dec_ids is (B,dec_len) */
    const float *pos, *neg;      /* (B,head_out) targets; NULL for inference */
} t5_batch;

/* Forward pass. train != 0 applies dropout with draws from rng (rng NULL: no dropout). Computes z and, when the
 * batch has pos/neg, the loss (stored in *loss if loss != NULL). -1 with tr_error. */
int t5_forward(t5_model *m, const t5_batch *b, int train, rng_t *rng, float *loss);
/* Backward of the last t5_forward (which must have had pos/neg): zeroes then fills the
 * gradient buffer. */
int t5_backward(t5_model *m, const t5_batch *b);
/* The same, for gradient accumulation over micro-batches: zero_grads 0 adds to the
 * gradients already there, and the loss gradient is multiplied by loss_scale (e.g.
 * B_micro / B_total so the sum equals the gradient of the mean over the full batch). */
int t5_backward_ex(t5_model *m, const t5_batch *b, int zero_grads, float loss_scale);
/* Backward of the last t5_forward from a given dz (B,head_out) = d loss / d z, for losses
 * computed outside (e.g. a softmax over all items): zeroes then fills the gradients. */
int t5_backward_dz(t5_model *m, const t5_batch *b, const float *dz);
/* Backward of the last t5_forward from ddec (B,dec_len,d_model) = d loss / d t5_dec_out,
 * for losses on the decoder states (the generate objective's LM head); the head gets no
 * gradient. Zeroes then fills the gradients. */
int t5_backward_ddec(t5_model *m, const t5_batch *b, const float *ddec);
/* The AdamW moments (n_params floats each, same layout as t5_params) and the step counter,
 * for checkpoints. */
float *t5_adam_m(t5_model *m);
float *t5_adam_v(t5_model *m);
void   t5_set_step(t5_model *m, long step);
/* Global-norm clip (clip <= 0: none), then one AdamW step over all parameters. */
void t5_adamw_step(t5_model *m, const adamw_cfg *opt, float clip);
/* forward (train) + backward + clip + AdamW. The loss goes to *loss. */
int t5_train_step(t5_model *m, const t5_batch *b, const adamw_cfg *opt, float clip,
                  rng_t *rng, float *loss);
/* Inference: z (B,head_out) for a batch, no dropout. */
int t5_infer(t5_model *m, const t5_batch *b, float *z);

/* Outputs of the last forward: z (B,head_out), encoder output after its final norm
 * (B,T,d_model), decoder output after its final norm (B,dec_len,d_model). */
const float *t5_z(const t5_model *m);
const float *t5_enc_out(const t5_model *m);
const float *t5_dec_out(const t5_model *m);
long t5_step(const t5_model *m);          /* AdamW steps taken */

/* Load a model saved with Hugging Face T5 names (a real HF t5-small checkpoint loads too).
 * The config comes from the tensor shapes, then __metadata__'s "config" JSON, then
 * fallback (NULL: the "small" preset) for what neither gives (head sizes, dec_len).
 * Missing head weights are initialised fresh from rng. Unknown tensors are ignored. */
t5_model *t5_load(const char *path, const t5_config *fallback, rng_t *rng);
int       t5_save(const t5_model *m, const char *path);

/* Threads for OpenMP loops and dense products (n <= 0: all cores). */
void t5_set_threads(int n);

#endif
