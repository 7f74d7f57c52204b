/* prompt_spm.c: the SentencePiece prompt vocabulary of a pretrained checkpoint, and its
 * JSON form stored with the model (see prompt.h). */
#include "prompt.h"
#include "spm.h"
#include "util.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define SPM_TEXT_CAP 1024

/* Append the ids of text (trailing spaces dropped: the prefix that follows carries its own
 * space) to *ids. */
static int add_text(const spm_model *s, const char *text, size_t n, int at_start, int32_t **ids, int *len) {
    while (n > 0 && text[n - 1] == ' ') n--;
    if (n == 0) return 0;
    char *t = tr_malloc(n + 1);
    memcpy(t, text, n);
    t[n] = 0;
    int32_t buf[SPM_TEXT_CAP];
    int k = spm_encode(s, t, at_start, buf, SPM_TEXT_CAP);
    free(t);
    if (k < 0) return -1;
    *ids = tr_realloc(*ids, (size_t)(*len + k + 1) * sizeof **ids);
    memcpy(*ids + *len, buf, (size_t)k * sizeof *buf);
    *len += k;
    return 0;
}

/* Append one id to *ids. */
static void add_id(int32_t **ids, int *len, int32_t id) {
    *ids = tr_realloc(*ids, (size_t)(*len + 1) * sizeof **ids);
    (*ids)[(*len)++] = id;
}

/* The shared tail of both constructors: bases and the named pieces. */
static int finish(prompt_vocab *v, int base, int K, int L, int extra) {
    v->K = K; v->L = L; v->extra = extra;
    v->spm = 1;
    v->id_user = v->user_pre[0];
    v->id_item = v->item_pre[0];
    v->base_item = base;
    v->base_user = base + K * L;
    v->base_extra = v->base_user + K * L;
    v->vocab = v->base_extra + extra;
    return 0;
}

/* The token-book shape prompt_vocab_init accepts. */
static int check_shape(int K, int L, int extra) {
    if (K < 1 || K > 26 || L < 1 || L > 1000000 || extra < 0 || extra > 1000000)
        return tr_error("prompt: bad vocabulary shape K=%d L=%d extra=%d", K, L, extra);
    return 0;
}

/* See prompt.h: tokenize the prefixes, the template text between placeholders and the decoder
 * prompt, then name the pieces used. */
int prompt_vocab_init_spm(prompt_vocab *v, const spm_model *s, int base, int K, int L, int extra) {
    memset(v, 0, sizeof *v);
    if (check_shape(K, L, extra)) return -1;
    int nv = spm_vocab_size(s);
    if (spm_piece_id(s, "<pad>") != TOK_PAD || spm_piece_id(s, "</s>") != TOK_END)
        return tr_error("tokenizer: expected <pad> at id 0 and </s> at id 1 (as T5's); found %d and %d",
                        spm_piece_id(s, "<pad>"), spm_piece_id(s, "</s>"));
    if (base < nv)
        return tr_error("the checkpoint has %d embedding rows but its tokenizer has %d tokens: they do not "
                        "belong together", base, nv);
    int32_t pre[SPM_TEXT_CAP];
    int n = spm_encode(s, " user_", 0, pre, SPM_TEXT_CAP);
    if (n < 1 || n > PROMPT_MAX_PRE) goto bad_prefix;
    memcpy(v->user_pre, pre, (size_t)n * sizeof *pre);
    v->n_user_pre = n;
    n = spm_encode(s, " item_", 0, pre, SPM_TEXT_CAP);
    if (n < 1 || n > PROMPT_MAX_PRE) goto bad_prefix;
    memcpy(v->item_pre, pre, (size_t)n * sizeof *pre);
    v->n_item_pre = n;
    for (int t = 0; t < PROMPT_N; t++) {
        const char *p = prompt_templates[t];
        int chunk = 0;
        for (;;) {
            const char *u = strstr(p, "{user}"), *it = strstr(p, "{items}");
            const char *ph = u && (!it || u < it) ? u : it;
            size_t len = ph ? (size_t)(ph - p) : strlen(p);
            if (add_text(s, p, len, chunk == 0, &v->tmpl[t], &v->tmpl_len[t])) goto fail;
            chunk++;
            if (!ph) break;
            add_id(&v->tmpl[t], &v->tmpl_len[t], ph == u ? -1 : -2);
            p = ph + (ph == u ? 6 : 7);
        }
    }
    if (add_text(s, prompt_decoder_text, strlen(prompt_decoder_text), 1, &v->dec, &v->dec_len)) goto fail;
    add_id(&v->dec, &v->dec_len, TOK_END);
    /* name the pieces the prompts use */
    v->n_words = nv;
    v->words = tr_calloc((size_t)nv, sizeof *v->words);
#define NAME(id) do { int32_t i_ = (id); if (i_ >= 0 && i_ < nv && !v->words[i_] && spm_piece(s, i_)) \
                          v->words[i_] = tr_strdup(spm_piece(s, i_)); } while (0)
    for (int t = 0; t < PROMPT_N; t++) for (int k = 0; k < v->tmpl_len[t]; k++) NAME(v->tmpl[t][k]);
    for (int k = 0; k < v->dec_len; k++) NAME(v->dec[k]);
    for (int k = 0; k < v->n_user_pre; k++) NAME(v->user_pre[k]);
    for (int k = 0; k < v->n_item_pre; k++) NAME(v->item_pre[k]);
    NAME(TOK_PAD); NAME(TOK_END);
#undef NAME
    return finish(v, base, K, L, extra);
bad_prefix:
    prompt_vocab_free(v);
    return tr_error("tokenizer: \"user_\" / \"item_\" give %d tokens (expected 1..%d)", n, PROMPT_MAX_PRE);
fail:
    prompt_vocab_free(v);
    return tr_error("tokenizer: cannot tokenize the prompt templates: %s", tr_errmsg());
}

/* An id array as a JSON array. */
static cJSON *ids_json(const int32_t *ids, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* See prompt.h; NULL for the word-level vocabulary. */
char *prompt_vocab_json(const prompt_vocab *v) {
    if (!v->spm) return NULL;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "kind", "sentencepiece");
    cJSON_AddNumberToObject(j, "n_words", v->n_words);
    cJSON_AddNumberToObject(j, "base", v->base_item);
    cJSON_AddItemToObject(j, "user_pre", ids_json(v->user_pre, v->n_user_pre));
    cJSON_AddItemToObject(j, "item_pre", ids_json(v->item_pre, v->n_item_pre));
    cJSON *ts = cJSON_AddArrayToObject(j, "templates");
    for (int t = 0; t < PROMPT_N; t++) cJSON_AddItemToArray(ts, ids_json(v->tmpl[t], v->tmpl_len[t]));
    cJSON_AddItemToObject(j, "decoder", ids_json(v->dec, v->dec_len));
    cJSON *pc = cJSON_AddArrayToObject(j, "pieces");
    for (int i = 0; i < v->n_words; i++) {
        if (!v->words[i]) continue;
        cJSON *e = cJSON_CreateArray();
        cJSON_AddItemToArray(e, cJSON_CreateNumber(i));
        cJSON_AddItemToArray(e, cJSON_CreateString(v->words[i]));
        cJSON_AddItemToArray(pc, e);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* Read an array of ids in [lo, hi) into *ids (allocated) / *n; max: the most allowed. */
static int read_ids(const cJSON *a, int lo, int hi, int max, int32_t **ids, int *n) {
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > max) return -1;
    int m = cJSON_GetArraySize(a);
    *ids = tr_malloc((size_t)(m ? m : 1) * sizeof **ids);
    *n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) {
        if (!cJSON_IsNumber(x) || !(x->valuedouble >= lo && x->valuedouble < hi)) return -1;
        (*ids)[(*n)++] = (int32_t)x->valuedouble;
    }
    return 0;
}

/* See prompt.h; every id is checked against the stored sizes. */
int prompt_vocab_from_json(prompt_vocab *v, const char *json, int K, int L, int extra) {
    memset(v, 0, sizeof *v);
    if (check_shape(K, L, extra)) return -1;
    cJSON *j = cJSON_Parse(json);
    const cJSON *nw = cJSON_GetObjectItemCaseSensitive(j, "n_words");
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(j, "base");
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "templates");
    int32_t *tmp = NULL;
    int n = 0;
    if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "sentencepiece") || !cJSON_IsNumber(nw) ||
        !cJSON_IsNumber(base) || !(nw->valuedouble >= 2 && nw->valuedouble <= 4e6) ||
        !(base->valuedouble >= nw->valuedouble && base->valuedouble <= 1e8) || !cJSON_IsArray(ts) ||
        cJSON_GetArraySize(ts) != PROMPT_N)
        goto bad;
    v->n_words = (int)nw->valuedouble;
    if (read_ids(cJSON_GetObjectItemCaseSensitive(j, "user_pre"), 0, v->n_words, PROMPT_MAX_PRE, &tmp, &n) || n < 1) goto bad;
    memcpy(v->user_pre, tmp, (size_t)n * sizeof *tmp);
    v->n_user_pre = n;
    free(tmp); tmp = NULL;
    if (read_ids(cJSON_GetObjectItemCaseSensitive(j, "item_pre"), 0, v->n_words, PROMPT_MAX_PRE, &tmp, &n) || n < 1) goto bad;
    memcpy(v->item_pre, tmp, (size_t)n * sizeof *tmp);
    v->n_item_pre = n;
    free(tmp); tmp = NULL;
    for (int t = 0; t < PROMPT_N; t++)
        if (read_ids(cJSON_GetArrayItem(ts, t), -2, v->n_words, 4096, &v->tmpl[t], &v->tmpl_len[t])) goto bad;
    if (read_ids(cJSON_GetObjectItemCaseSensitive(j, "decoder"), 0, v->n_words, 4096, &v->dec, &v->dec_len)) goto bad;
    v->words = tr_calloc((size_t)v->n_words, sizeof *v->words);
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(j, "pieces"), *e;
    cJSON_ArrayForEach(e, pc) {
        const cJSON *id = cJSON_GetArrayItem(e, 0), *txt = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsNumber(id) || !cJSON_IsString(txt) || !(id->valuedouble >= 0 && id->valuedouble < v->n_words))
            goto bad;
        int i = (int)id->valuedouble;
        if (!v->words[i]) v->words[i] = tr_strdup(txt->valuestring);
    }
    int b = (int)base->valuedouble;
    cJSON_Delete(j);
    return finish(v, b, K, L, extra);
bad:
    free(tmp);
    cJSON_Delete(j);
    prompt_vocab_free(v);
    return tr_error("models: the stored SentencePiece prompt vocabulary is malformed");
}
