/* prompt.c: the word-level vocabulary and template encoding. */
#include "prompt.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Verbatim from the official code (docs/METHOD.md, "Tokens and prompts"): ten training
 * templates, the test template (the same text as template 5) and the unseen-user template. */
const char *const prompt_templates[PROMPT_N] = {
    "Given the following purchase history for the {user}: {items}. Predict the user preferences.",
    "I find the purchase history list for the {user}: {items}. I wonder what the user will like. Can you help me decide?",
    "Considering the {user} has interacted with {items}. What are the user preferences?",
    "According to what items the {user} has purchased: {items}. Can you describe the user preferences?",
    "By analyzing the {user}'s purchase of {items}, what are the expected preferences of the user?",
    "Given the {user}'s previous interactions with the {items}, what are the user preferences?",
    "Taking into account the {user}'s engagement with the {items}, what are the user potential interests?",
    "In light of the {user}'s interactions with the {items}, what might the user be interested in?",
    "Considering the {user}'s past interactions with the {items}, what are the user likely preferences?",
    "With the {user}'s history of engagement with the {items}, what would the user be inclined to like?",
    "Given the {user}'s previous interactions with the {items}, what are the user preferences?",
    "Based on the {user}'s historical engagement with the {items}, what would the user likely be interested in?",
};

const char *const prompt_decoder_text = "The interaction history shows that the user preference could be";

static const char *const specials[] = {"<pad>", "</s>", "<unk>", "user_", "item_"};

/* Split text into word tokens: whitespace separates, and ".,?:" and a trailing "'s" are
 * tokens of their own. Calls fn for each token (placeholders come out as "{user}"). */
static void split_words(const char *text, void (*fn)(void *, const char *, size_t), void *ctx) {
    const char *s = text;
    while (*s) {
        while (*s == ' ') s++;
        if (!*s) break;
        const char *e = s;
        while (*e && *e != ' ') e++;
        const char *w_end = e;
        const char *tail[4];
        size_t tail_len[4];
        int nt = 0;
        while (w_end > s && strchr(".,?:", w_end[-1]) && nt < 3) {
            tail[nt] = w_end - 1; tail_len[nt++] = 1; w_end--;
        }
        if (w_end - s > 2 && w_end[-2] == '\'' && w_end[-1] == 's') {
            tail[nt] = w_end - 2; tail_len[nt++] = 2; w_end -= 2;
        }
        if (w_end > s) fn(ctx, s, (size_t)(w_end - s));
        for (int k = nt - 1; k >= 0; k--) fn(ctx, tail[k], tail_len[k]);
        s = e;
    }
}

typedef struct { prompt_vocab *v; int32_t *out; int n; } tok_ctx;

static int find_word(const prompt_vocab *v, const char *w, size_t n) {
    for (int i = 0; i < v->n_words; i++)
        if (v->words[i] && strlen(v->words[i]) == n && !memcmp(v->words[i], w, n)) return i;
    return -1;
}

static void add_word(void *ctx, const char *w, size_t n) {
    prompt_vocab *v = ctx;
    if ((n == 6 && !memcmp(w, "{user}", 6)) || (n == 7 && !memcmp(w, "{items}", 7))) return;
    if (find_word(v, w, n) >= 0) return;
    v->words = tr_realloc(v->words, (size_t)(v->n_words + 1) * sizeof *v->words);
    char *c = tr_malloc(n + 1);
    memcpy(c, w, n);
    c[n] = 0;
    v->words[v->n_words++] = c;
}

static void emit_id(void *ctx, const char *w, size_t n) {
    tok_ctx *c = ctx;
    int id;
    if (n == 6 && !memcmp(w, "{user}", 6)) id = -1;
    else if (n == 7 && !memcmp(w, "{items}", 7)) id = -2;
    else id = find_word(c->v, w, n);
    if (id == -1 && !(n == 6 && !memcmp(w, "{user}", 6))) id = TOK_UNK;
    c->out = tr_realloc(c->out, (size_t)(c->n + 1) * sizeof *c->out);
    c->out[c->n++] = id;
}

/* Build the vocabulary: specials, template words in order of first appearance, code tokens. */
int prompt_vocab_init(prompt_vocab *v, int K, int L, int extra) {
    memset(v, 0, sizeof *v);
    if (K < 1 || K > 26 || L < 1 || extra < 0)
        return tr_error("prompt: bad vocabulary shape K=%d L=%d extra=%d", K, L, extra);
    v->K = K; v->L = L; v->extra = extra;
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++)
        add_word(v, specials[i], strlen(specials[i]));
    for (int t = 0; t < PROMPT_N; t++) split_words(prompt_templates[t], add_word, v);
    split_words(prompt_decoder_text, add_word, v);
    v->id_user = 3;
    v->id_item = 4;
    v->user_pre[0] = v->id_user;
    v->item_pre[0] = v->id_item;
    v->n_user_pre = v->n_item_pre = 1;
    v->base_item = v->n_words;
    v->base_user = v->base_item + K * L;
    v->base_extra = v->base_user + K * L;
    v->vocab = v->base_extra + extra;
    for (int t = 0; t < PROMPT_N; t++) {
        tok_ctx c = {v, NULL, 0};
        split_words(prompt_templates[t], emit_id, &c);
        v->tmpl[t] = c.out;
        v->tmpl_len[t] = c.n;
    }
    tok_ctx c = {v, NULL, 0};
    split_words(prompt_decoder_text, emit_id, &c);
    v->dec = c.out;
    v->dec_len = c.n;
    return 0;
}

void prompt_vocab_free(prompt_vocab *v) {
    for (int i = 0; v->words && i < v->n_words; i++) free(v->words[i]);
    free(v->words);
    for (int t = 0; t < PROMPT_N; t++) free(v->tmpl[t]);
    free(v->dec);
    memset(v, 0, sizeof *v);
}

int prompt_word_id(const prompt_vocab *v, const char *w) { return find_word(v, w, strlen(w)); }

const char *prompt_token_text(const prompt_vocab *v, int id, char *buf, int len) {
    if (id >= 0 && id < v->n_words && v->words[id]) snprintf(buf, (size_t)len, "%s", v->words[id]);
    else if (id >= v->base_item && id < v->base_user)
        snprintf(buf, (size_t)len, "<%d-%d>", (id - v->base_item) / v->L, (id - v->base_item) % v->L);
    else if (id >= v->base_user && id < v->base_extra)
        snprintf(buf, (size_t)len, "<%c-%d>", 'a' + (id - v->base_user) / v->L, (id - v->base_user) % v->L);
    else if (id >= v->base_extra && id < v->vocab)
        snprintf(buf, (size_t)len, "<%d-%d>", v->K, id - v->base_extra);
    else snprintf(buf, (size_t)len, "<?%d>", id);
    return buf;
}

int prompt_max_len(const prompt_vocab *v, int codes_per_item, int n) {
    int m = 0;
    for (int t = 0; t < PROMPT_N; t++) if (v->tmpl_len[t] > m) m = v->tmpl_len[t];
    return m + (v->K + v->n_user_pre) + n * (codes_per_item + v->n_item_pre) + 1;
}

int prompt_encode(const prompt_vocab *v, int t, const int32_t *user_codes,
                  const int32_t *item_codes, int codes_per_item, int n, int32_t *out, int cap) {
    int len = 0;
#define PUT(x) do { if (len >= cap) return -1; out[len++] = (x); } while (0)
    for (int k = 0; k < v->tmpl_len[t]; k++) {
        int32_t id = v->tmpl[t][k];
        if (id == -1) {
            for (int k2 = 0; k2 < v->n_user_pre; k2++) PUT(v->user_pre[k2]);
            for (int b = 0; b < v->K; b++) PUT(v->base_user + b * v->L + user_codes[b]);
        } else if (id == -2) {
            for (int i = 0; i < n; i++) {
                const int32_t *c = item_codes + (size_t)i * codes_per_item;
                for (int k2 = 0; k2 < v->n_item_pre; k2++) PUT(v->item_pre[k2]);
                for (int b = 0; b < v->K; b++) PUT(v->base_item + b * v->L + c[b]);
                if (codes_per_item > v->K) PUT(v->base_extra + c[v->K]);
            }
        } else {
            PUT(id);
        }
    }
    PUT(TOK_END);
#undef PUT
    return len;
}

void prompt_decoder(const prompt_vocab *v, int32_t *out, int dec_len) {
    for (int k = 0; k < dec_len; k++) out[k] = TOK_PAD;
    for (int k = 0; k + 1 < dec_len && k < v->dec_len; k++) out[k + 1] = v->dec[k];
}
