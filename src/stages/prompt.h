/* prompt: TokenRec's vocabulary and prompts.
 *
 * The vocabulary is word-level: the special tokens (<pad> 0, </s> 1, <unk> 2), the words
 * and punctuation of the prompt templates and of the decoder prompt, the prefixes "user_"
 * and "item_", then K*L item tokens <k-j> (k = 0..K-1) and K*L user tokens <a-j>, <b-j>,
 * <c-j>, ... (docs/METHOD.md, "Tokens and prompts"), then, when collisions are resolved, the item disambiguation
 * tokens <K-j>. An item is written "item_ <0-i> <1-j> <2-k>", a user "user_ <a-i> <b-j>
 * <c-k>". The templates are TokenRec's, word for word. */
#ifndef TOKENREC_PROMPT_H
#define TOKENREC_PROMPT_H
#include <stdint.h>

#define PROMPT_N_TRAIN 10                     /* templates 0..9 are used in training */
#define PROMPT_MAX_PRE 8                      /* tokens of the "user_" / "item_" prefix */
enum { PROMPT_TEST = 10, PROMPT_UNSEEN = 11, PROMPT_N = 12 };
enum { TOK_PAD = 0, TOK_END = 1, TOK_UNK = 2 };

extern const char *const prompt_templates[PROMPT_N];
extern const char *const prompt_decoder_text;

typedef struct {
    int    K, L, extra;          /* codebooks, codewords, size of the disambiguation book */
    int    n_words;              /* ids 0..n_words-1 are words (specials included) */
    char **words;
    int    id_user, id_item;     /* "user_", "item_" */
    int    base_item, base_user, base_extra;
    int    vocab;                /* total size */
    int32_t *tmpl[PROMPT_N];     /* pre-tokenised templates: -1 = {user}, -2 = {items} */
    int    tmpl_len[PROMPT_N];
    int32_t *dec;                /* decoder prompt words */
    int    dec_len;
    /* the tokens written before a user's and before each item's codes: {id_user} and
     * {id_item} in the word-level vocabulary, the SentencePiece pieces of "user_" and
     * "item_" (e.g. "▁user" "_") in the SentencePiece one */
    int32_t user_pre[PROMPT_MAX_PRE], item_pre[PROMPT_MAX_PRE];
    int    n_user_pre, n_item_pre;
    int    spm;                  /* 1: SentencePiece text (prompt_vocab_init_spm); words[id]
                                  * may be NULL there (only the pieces the prompts use are named) */
} prompt_vocab;

int  prompt_vocab_init(prompt_vocab *v, int K, int L, int extra);
void prompt_vocab_free(prompt_vocab *v);

/* The SentencePiece vocabulary of a pretrained checkpoint (prompt_spm.c): the template text,
 * "user_", "item_" and the decoder prompt are tokenized with s (each text run between ID
 * tokens on its own, as Hugging Face does around added tokens); ids 0..spm_vocab_size-1 are
 * the tokenizer's, the K*L item, K*L user and extra disambiguation tokens follow from id
 * `base` (the checkpoint's embedding rows, >= the tokenizer's size). The decoder prompt ends
 * with </s>, as the tokenizer's post-processor writes it. <pad> must be id 0 and </s> id 1
 * (as in T5). -1 with tr_error otherwise. */
struct spm_model;
int  prompt_vocab_init_spm(prompt_vocab *v, const struct spm_model *s, int base, int K, int L,
                           int extra);
/* A SentencePiece vocabulary as JSON (what rebuilds the same prompts without the tokenizer:
 * the pre-tokenized templates, prefixes, decoder prompt, base and the pieces they use), and
 * back. The caller frees the string. */
char *prompt_vocab_json(const prompt_vocab *v);
int   prompt_vocab_from_json(prompt_vocab *v, const char *json, int K, int L, int extra);
int  prompt_word_id(const prompt_vocab *v, const char *w);          /* -1 if not a word */
/* Text of token id (a word, "<1-17>", "<b-3>"), for display and tests. */
const char *prompt_token_text(const prompt_vocab *v, int id, char *buf, int len);

/* The encoder ids of template t for a user (K codes) and n history items (each K codes,
 * or K+1 with the disambiguation book; item_codes is n x codes_per_item), ending with </s>.
 * Returns the length, or -1 if cap is too small. */
int prompt_encode(const prompt_vocab *v, int t, const int32_t *user_codes,
                  const int32_t *item_codes, int codes_per_item, int n, int32_t *out, int cap);
int prompt_max_len(const prompt_vocab *v, int codes_per_item, int n);
/* Decoder input: the start token (<pad>, as T5's shift-right) then the decoder prompt,
 * padded or cut to dec_len. */
void prompt_decoder(const prompt_vocab *v, int32_t *out, int dec_len);

#endif
