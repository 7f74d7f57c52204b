/* spm: a SentencePiece unigram tokenizer read from a Hugging Face `tokenizer.json` (the file
 * t5-small ships), to tokenize the prompt templates when finetune starts from a pretrained
 * checkpoint (--init-from).
 *
 * What is read:
 *   - model: type "Unigram", vocab [[piece, score], ...] (the id of a piece is its index),
 *     unk_id. byte_fallback must be false (as t5-small's is).
 *   - added_tokens: [{id, content}, ...]; they count toward the vocabulary size and name
 *     their ids, but are not matched in text (the templates hold none).
 *   - normalizer: null, Sequence, Precompiled, Replace (a String pattern, or the Regex " {2,}"
 *     that T5's files use), Lowercase, Strip, Prepend, NFC/NFD/NFKC/NFKD. Precompiled and the
 *     Unicode normal forms are applied as the identity: exact for ASCII text (the templates),
 *     not for other text. Lowercase lowers ASCII letters only.
 *   - pre_tokenizer: null, Sequence, WhitespaceSplit (ASCII whitespace), Metaspace
 *     (replacement, add_prefix_space or prepend_scheme always/first/never, split).
 *     t5-small: WhitespaceSplit then Metaspace "▁" (U+2581) with the prefix, so every word
 *     is encoded as "▁word". (The official code loads it with legacy=False, which recent
 *     transformers versions convert with prepend_scheme "first"; a tokenizer.json that says
 *     so is followed here too.)
 * Anything else gives a clear error at load time.
 *
 * Encoding (as Hugging Face tokenizers' Unigram): each word of the pre-tokenizer is segmented
 * by Viterbi into the pieces that maximise the sum of their scores; a character that no
 * one-character piece covers may become the unknown token, scored min(score) - 10, and
 * consecutive unknown tokens are fused into one. Ties keep the earliest-found path. */
#ifndef TOKENREC_SPM_H
#define TOKENREC_SPM_H
#include <stddef.h>
#include <stdint.h>

typedef struct spm_model spm_model;

/* Load a tokenizer.json; NULL with tr_error naming the file and what was expected. */
spm_model *spm_load(const char *path);
/* The same from len bytes of JSON in memory; name is used in messages. */
spm_model *spm_load_mem(const char *json, size_t len, const char *name);
void       spm_free(spm_model *s);

/* Vocabulary size: one past the largest id of a piece or an added token. */
int         spm_vocab_size(const spm_model *s);
int         spm_unk_id(const spm_model *s);                    /* -1 if the model has none */
int         spm_piece_id(const spm_model *s, const char *piece);   /* -1 if absent */
const char *spm_piece(const spm_model *s, int id);             /* NULL if no such id */

/* Token ids of text: normalizer, pre-tokenizer, Viterbi per word. at_start: the text begins
 * the input (Metaspace's prepend_scheme "first" adds "▁" only then). Returns the number of
 * ids written, or -1 with tr_error (more than cap ids, or an unknown character and no unk
 * id). */
int spm_encode(const spm_model *s, const char *text, int at_start, int32_t *out, int cap);

#endif
