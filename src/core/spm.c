/* spm.c: SentencePiece unigram tokenizer from a Hugging Face tokenizer.json (see spm.h). */
#include "spm.h"
#include "util.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SPM_UNK_PENALTY 10.0     /* Hugging Face tokenizers' K_UNK_PENALTY */
#define SPM_MAX_OPS 16
#define SPM_MAX_VOCAB 4000000    /* ids beyond this are refused (t5-small: 32100) */

enum { NORM_IDENTITY, NORM_REPLACE, NORM_COLLAPSE_SPACES, NORM_LOWER, NORM_STRIP, NORM_PREPEND };
enum { PRE_WHITESPACE_SPLIT, PRE_METASPACE };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

typedef struct {
    int   kind;
    char *a, *b;            /* REPLACE: pattern, content; PREPEND: content */
    int   left, right;      /* STRIP */
} norm_op;

typedef struct {
    int   kind;
    char *repl;             /* METASPACE replacement (UTF-8) */
    int   scheme, split;
} pre_op;

struct spm_model {
    int      n_pieces;      /* model.vocab entries: ids 0..n_pieces-1 */
    char   **piece;
    size_t  *plen;
    double  *score;
    int      unk_id;
    double   unk_score;
    int      max_len;       /* longest piece in bytes */
    int32_t *hash;          /* open addressing: piece ids, -1 empty */
    size_t   hcap;
    int      n_added;
    int32_t *added_id;
    char   **added;
    int      vocab_size;
    norm_op  norm[SPM_MAX_OPS];
    int      n_norm;
    pre_op   pre[SPM_MAX_OPS];
    int      n_pre;
};

/* ---- piece lookup ---------------------------------------------------------------------- */

/* Hash of a piece's bytes (FNV-1a). */
static size_t hash_bytes(const char *p, size_t n) { return (size_t)tr_hash64(p, n, 0xcbf29ce484222325ull); }

/* Insert piece id into the table (the first of duplicates wins, as a trie would keep it). */
static void hash_put(spm_model *s, int id) {
    size_t mask = s->hcap - 1, h = hash_bytes(s->piece[id], s->plen[id]) & mask;
    while (s->hash[h] >= 0) {
        int o = s->hash[h];
        if (s->plen[o] == s->plen[id] && !memcmp(s->piece[o], s->piece[id], s->plen[id])) return;
        h = (h + 1) & mask;
    }
    s->hash[h] = id;
}

/* Id of the piece spelled by the n bytes at p, or -1. */
static int hash_get(const spm_model *s, const char *p, size_t n) {
    size_t mask = s->hcap - 1, h = hash_bytes(p, n) & mask;
    while (s->hash[h] >= 0) {
        int o = s->hash[h];
        if (s->plen[o] == n && !memcmp(s->piece[o], p, n)) return o;
        h = (h + 1) & mask;
    }
    return -1;
}

/* ---- loading ---------------------------------------------------------------------------- */

/* Append the normalizer n (a Sequence is flattened) to s->norm; unsupported types are refused. */
static int parse_normalizer(spm_model *s, const cJSON *n, const char *name) {
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsObject(n) || !cJSON_IsString(t))
        return tr_error("%s: normalizer: expected an object with a \"type\"", name);
    const char *ty = t->valuestring;
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *x;
        if (!cJSON_IsArray(list)) return tr_error("%s: normalizer Sequence: expected a \"normalizers\" array", name);
        cJSON_ArrayForEach(x, list) if (parse_normalizer(s, x, name)) return -1;
        return 0;
    }
    if (s->n_norm >= SPM_MAX_OPS) return tr_error("%s: more than %d normalizers", name, SPM_MAX_OPS);
    norm_op *op = &s->norm[s->n_norm];
    memset(op, 0, sizeof *op);
    if (!strcmp(ty, "Precompiled") || !strcmp(ty, "NFC") || !strcmp(ty, "NFD") ||
        !strcmp(ty, "NFKC") || !strcmp(ty, "NFKD") || !strcmp(ty, "Nmt")) {
        op->kind = NORM_IDENTITY;               /* the identity on ASCII text: see spm.h */
    } else if (!strcmp(ty, "Lowercase")) {
        op->kind = NORM_LOWER;
    } else if (!strcmp(ty, "Strip")) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(n, "strip_left");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(n, "strip_right");
        op->kind = NORM_STRIP;
        op->left = !l || cJSON_IsTrue(l);
        op->right = !r || cJSON_IsTrue(r);
    } else if (!strcmp(ty, "Prepend")) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(n, "prepend");
        if (!cJSON_IsString(c)) return tr_error("%s: normalizer Prepend: expected a \"prepend\" string", name);
        op->kind = NORM_PREPEND;
        op->a = tr_strdup(c->valuestring);
    } else if (!strcmp(ty, "Replace")) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(n, "content");
        const cJSON *str = p ? cJSON_GetObjectItemCaseSensitive(p, "String") : NULL;
        const cJSON *re = p ? cJSON_GetObjectItemCaseSensitive(p, "Regex") : NULL;
        if (!cJSON_IsString(c)) return tr_error("%s: normalizer Replace: expected a \"content\" string", name);
        if (cJSON_IsString(str) && str->valuestring[0]) {
            op->kind = NORM_REPLACE;
            op->a = tr_strdup(str->valuestring);
            op->b = tr_strdup(c->valuestring);
        } else if (cJSON_IsString(re) && !strcmp(re->valuestring, " {2,}") && !strcmp(c->valuestring, " ")) {
            op->kind = NORM_COLLAPSE_SPACES;
        } else {
            return tr_error("%s: normalizer Replace: only a String pattern or the Regex \" {2,}\" -> \" \" "
                            "is supported", name);
        }
    } else {
        return tr_error("%s: unsupported normalizer type '%s' (supported: Sequence, Precompiled, Replace, "
                        "Lowercase, Strip, Prepend, NFC, NFD, NFKC, NFKD)", name, ty);
    }
    s->n_norm++;
    return 0;
}

/* Append the pre-tokenizer p (a Sequence is flattened) to s->pre; unsupported types are refused. */
static int parse_pretokenizer(spm_model *s, const cJSON *p, const char *name) {
    if (!p || cJSON_IsNull(p)) return 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsObject(p) || !cJSON_IsString(t))
        return tr_error("%s: pre_tokenizer: expected an object with a \"type\"", name);
    const char *ty = t->valuestring;
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"), *x;
        if (!cJSON_IsArray(list)) return tr_error("%s: pre_tokenizer Sequence: expected a \"pretokenizers\" array", name);
        cJSON_ArrayForEach(x, list) if (parse_pretokenizer(s, x, name)) return -1;
        return 0;
    }
    if (s->n_pre >= SPM_MAX_OPS) return tr_error("%s: more than %d pre-tokenizers", name, SPM_MAX_OPS);
    pre_op *op = &s->pre[s->n_pre++];   /* counted now, so spm_free frees it on every error path */
    memset(op, 0, sizeof *op);
    if (!strcmp(ty, "WhitespaceSplit")) {
        op->kind = PRE_WHITESPACE_SPLIT;
    } else if (!strcmp(ty, "Metaspace")) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "replacement");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(p, "split");
        op->kind = PRE_METASPACE;
        if (r && !(cJSON_IsString(r) && r->valuestring[0]))
            return tr_error("%s: pre_tokenizer Metaspace: \"replacement\" must be a non-empty string", name);
        op->repl = tr_strdup(r ? r->valuestring : "\xE2\x96\x81");
        op->scheme = PREPEND_ALWAYS;
        if (cJSON_IsBool(aps)) op->scheme = cJSON_IsTrue(aps) ? PREPEND_ALWAYS : PREPEND_NEVER;
        if (cJSON_IsString(ps)) {
            if (!strcmp(ps->valuestring, "always")) op->scheme = PREPEND_ALWAYS;
            else if (!strcmp(ps->valuestring, "first")) op->scheme = PREPEND_FIRST;
            else if (!strcmp(ps->valuestring, "never")) op->scheme = PREPEND_NEVER;
            else return tr_error("%s: pre_tokenizer Metaspace: prepend_scheme '%s' (expected always, first "
                                 "or never)", name, ps->valuestring);
        }
        op->split = !sp || cJSON_IsTrue(sp);
    } else {
        return tr_error("%s: unsupported pre_tokenizer type '%s' (supported: Sequence, WhitespaceSplit, "
                        "Metaspace)", name, ty);
    }
    return 0;
}

/* model: the Unigram pieces and scores, unk_id, and the lookup table. */
static int parse_model(spm_model *s, const cJSON *m, const char *name) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "type");
    if (!cJSON_IsObject(m)) return tr_error("%s: no \"model\" object: not a Hugging Face tokenizer.json", name);
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "Unigram"))
        return tr_error("%s: model.type is '%s'; expected \"Unigram\" (a SentencePiece unigram model, as "
                        "t5-small's tokenizer.json)", name, cJSON_IsString(t) ? t->valuestring : "missing");
    const cJSON *bf = cJSON_GetObjectItemCaseSensitive(m, "byte_fallback");
    if (cJSON_IsTrue(bf)) return tr_error("%s: model.byte_fallback is true, which is not supported", name);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    int n = cJSON_GetArraySize(vocab);
    if (!cJSON_IsArray(vocab) || n < 1 || n > SPM_MAX_VOCAB)
        return tr_error("%s: model.vocab: expected a non-empty array of [piece, score] (at most %d)", name, SPM_MAX_VOCAB);
    s->piece = tr_calloc((size_t)n, sizeof *s->piece);
    s->plen = tr_calloc((size_t)n, sizeof *s->plen);
    s->score = tr_calloc((size_t)n, sizeof *s->score);
    const cJSON *e;
    double min_score = INFINITY;
    cJSON_ArrayForEach(e, vocab) {
        const cJSON *p = cJSON_GetArrayItem(e, 0), *sc = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(p) || !cJSON_IsNumber(sc) ||
            !isfinite(sc->valuedouble))
            return tr_error("%s: model.vocab[%d]: expected [\"piece\", score] with a finite score", name, s->n_pieces);
        s->piece[s->n_pieces] = tr_strdup(p->valuestring);
        s->plen[s->n_pieces] = strlen(p->valuestring);
        s->score[s->n_pieces] = sc->valuedouble;
        if (sc->valuedouble < min_score) min_score = sc->valuedouble;
        if ((int)s->plen[s->n_pieces] > s->max_len) s->max_len = (int)s->plen[s->n_pieces];
        s->n_pieces++;
    }
    s->unk_score = min_score - SPM_UNK_PENALTY;
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(m, "unk_id");
    s->unk_id = -1;
    if (cJSON_IsNumber(u)) {
        if (!(u->valuedouble >= 0 && u->valuedouble < n))
            return tr_error("%s: model.unk_id %g is not an id of model.vocab (0..%d)", name, u->valuedouble, n - 1);
        s->unk_id = (int)u->valuedouble;
    } else if (u && !cJSON_IsNull(u)) {
        return tr_error("%s: model.unk_id: expected a number or null", name);
    }
    s->hcap = 16;
    while (s->hcap < 2 * (size_t)n) s->hcap *= 2;
    s->hash = tr_malloc(s->hcap * sizeof *s->hash);
    for (size_t i = 0; i < s->hcap; i++) s->hash[i] = -1;
    for (int i = 0; i < n; i++) if (s->plen[i]) hash_put(s, i);
    return 0;
}

/* added_tokens: their ids and texts (the vocabulary size covers them). */
static int parse_added(spm_model *s, const cJSON *a, const char *name) {
    if (!a || cJSON_IsNull(a)) return 0;
    if (!cJSON_IsArray(a)) return tr_error("%s: added_tokens: expected an array", name);
    int n = cJSON_GetArraySize(a);
    s->added_id = tr_calloc((size_t)(n ? n : 1), sizeof *s->added_id);
    s->added = tr_calloc((size_t)(n ? n : 1), sizeof *s->added);
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c) || !(id->valuedouble >= 0 && id->valuedouble < SPM_MAX_VOCAB))
            return tr_error("%s: added_tokens[%d]: expected {\"id\": 0..%d, \"content\": \"...\"}", name,
                            s->n_added, SPM_MAX_VOCAB - 1);
        s->added_id[s->n_added] = (int32_t)id->valuedouble;
        s->added[s->n_added] = tr_strdup(c->valuestring);
        if (s->added_id[s->n_added] + 1 > s->vocab_size) s->vocab_size = s->added_id[s->n_added] + 1;
        s->n_added++;
    }
    return 0;
}

spm_model *spm_load_mem(const char *json, size_t len, const char *name) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        tr_error("%s: %s (expected a Hugging Face tokenizer.json)", name,
                 root ? "not a JSON object" : "not valid JSON");
        cJSON_Delete(root);
        return NULL;
    }
    spm_model *s = tr_calloc(1, sizeof *s);
    int rc = parse_model(s, cJSON_GetObjectItemCaseSensitive(root, "model"), name);
    if (!rc) {
        s->vocab_size = s->n_pieces;
        rc = parse_added(s, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), name);
    }
    if (!rc) rc = parse_normalizer(s, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), name);
    if (!rc) rc = parse_pretokenizer(s, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), name);
    cJSON_Delete(root);
    if (rc) { spm_free(s); return NULL; }
    return s;
}

spm_model *spm_load(const char *path) {
    char *buf;
    size_t n;
    if (tr_read_file(path, &buf, &n) != 0) return NULL;
    spm_model *s = spm_load_mem(buf, n, path);
    free(buf);
    return s;
}

void spm_free(spm_model *s) {
    if (!s) return;
    for (int i = 0; i < s->n_pieces; i++) free(s->piece[i]);
    for (int i = 0; i < s->n_added; i++) free(s->added[i]);
    for (int i = 0; i < s->n_norm; i++) { free(s->norm[i].a); free(s->norm[i].b); }
    for (int i = 0; i < s->n_pre; i++) free(s->pre[i].repl);
    free(s->piece); free(s->plen); free(s->score); free(s->hash); free(s->added_id); free(s->added);
    free(s);
}

int spm_vocab_size(const spm_model *s) { return s->vocab_size; }
int spm_unk_id(const spm_model *s) { return s->unk_id; }

int spm_piece_id(const spm_model *s, const char *piece) {
    int id = hash_get(s, piece, strlen(piece));
    if (id >= 0) return id;
    for (int i = 0; i < s->n_added; i++) if (!strcmp(s->added[i], piece)) return s->added_id[i];
    return -1;
}

const char *spm_piece(const spm_model *s, int id) {
    if (id >= 0 && id < s->n_pieces) return s->piece[id];
    for (int i = 0; i < s->n_added; i++) if (s->added_id[i] == id) return s->added[i];
    return NULL;
}

/* ---- encoding --------------------------------------------------------------------------- */

/* A growable list of words (NUL-terminated strings). */
typedef struct { char **w; int n, cap; } wlist;

/* Append a copy of the n bytes at p. */
static void wl_push(wlist *l, const char *p, size_t n) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->w = tr_realloc(l->w, (size_t)l->cap * sizeof *l->w);
    }
    char *c = tr_malloc(n + 1);
    memcpy(c, p, n);
    c[n] = 0;
    l->w[l->n++] = c;
}

/* Free every word and the list. */
static void wl_free(wlist *l) {
    for (int i = 0; i < l->n; i++) free(l->w[i]);
    free(l->w);
    memset(l, 0, sizeof *l);
}

/* s with every occurrence of pat replaced by rep (a fresh string; s is freed). */
static char *replace_all(char *s, const char *pat, const char *rep) {
    size_t pl = strlen(pat), rl = strlen(rep), cnt = 0;
    for (const char *p = s; (p = strstr(p, pat)); p += pl) cnt++;
    if (!cnt) return s;
    char *o = tr_malloc(strlen(s) + cnt * rl + 1), *d = o;
    const char *p = s, *q;
    while ((q = strstr(p, pat))) {
        memcpy(d, p, (size_t)(q - p)); d += q - p;
        memcpy(d, rep, rl); d += rl;
        p = q + pl;
    }
    strcpy(d, p);
    free(s);
    return o;
}

/* The normalizers applied in order to a copy of text. */
static char *normalize(const spm_model *s, const char *text) {
    char *t = tr_strdup(text);
    for (int i = 0; i < s->n_norm; i++) {
        const norm_op *op = &s->norm[i];
        switch (op->kind) {
        case NORM_REPLACE: t = replace_all(t, op->a, op->b); break;
        case NORM_COLLAPSE_SPACES: {
            char *d = t;
            for (const char *p = t; *p; p++) if (!(*p == ' ' && p > t && p[-1] == ' ')) *d++ = *p;
            *d = 0;
            break;
        }
        case NORM_LOWER:
            for (char *p = t; *p; p++) if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
            break;
        case NORM_STRIP: {
            size_t n = strlen(t), a = 0;
            if (op->right) while (n > 0 && strchr(" \t\n\r\v\f", t[n - 1])) t[--n] = 0;
            if (op->left) while (a < n && strchr(" \t\n\r\v\f", t[a])) a++;
            memmove(t, t + a, n - a + 1);
            break;
        }
        case NORM_PREPEND: if (*t) {
            char *o = tr_malloc(strlen(op->a) + strlen(t) + 1);
            strcpy(o, op->a);
            strcat(o, t);
            free(t);
            t = o;
            break;
        }
            break;
        default: break;
        }
    }
    return t;
}

/* Apply one pre-tokenizer to every word of in; at_start: the first word begins the input. */
static void pretokenize(const pre_op *op, const wlist *in, int at_start, wlist *out) {
    for (int i = 0; i < in->n; i++) {
        const char *w = in->w[i];
        if (op->kind == PRE_WHITESPACE_SPLIT) {
            const char *p = w;
            while (*p) {
                while (*p && strchr(" \t\n\r\v\f", *p)) p++;
                const char *e = p;
                while (*e && !strchr(" \t\n\r\v\f", *e)) e++;
                if (e > p) wl_push(out, p, (size_t)(e - p));
                p = e;
            }
            continue;
        }
        /* Metaspace: spaces become the replacement, then the prefix, then a split before each
         * replacement (it begins the next word) */
        char *t = replace_all(tr_strdup(w), " ", op->repl);
        size_t rl = strlen(op->repl);
        int prepend = op->scheme == PREPEND_ALWAYS || (op->scheme == PREPEND_FIRST && at_start && i == 0);
        if (prepend && strncmp(t, op->repl, rl)) {
            char *o = tr_malloc(rl + strlen(t) + 1);
            strcpy(o, op->repl);
            strcat(o, t);
            free(t);
            t = o;
        }
        if (!op->split) {
            if (*t) wl_push(out, t, strlen(t));
        } else {
            const char *p = t;
            while (*p) {
                const char *e = strstr(p + (strncmp(p, op->repl, rl) ? 0 : rl), op->repl);
                if (!e) e = p + strlen(p);
                wl_push(out, p, (size_t)(e - p));
                p = e;
            }
        }
        free(t);
    }
}

/* Bytes in the UTF-8 character that starts with byte c (1 for a stray continuation byte). */
static int utf8_len(unsigned char c) {
    if (c >= 0xF0 && c < 0xF8) return 4;
    if (c >= 0xE0) return c < 0xF0 ? 3 : 1;
    if (c >= 0xC0) return 2;
    return 1;
}

/* Viterbi over one word; appends ids to out[*k..]. */
static int viterbi(const spm_model *s, const char *w, int32_t *out, int *k, int cap) {
    int n = (int)strlen(w);
    double *best = tr_malloc((size_t)(n + 1) * sizeof *best);
    int *from = tr_malloc((size_t)(n + 1) * sizeof *from), *tok = tr_malloc((size_t)(n + 1) * sizeof *tok);
    for (int i = 0; i <= n; i++) { from[i] = -1; tok[i] = -1; best[i] = -INFINITY; }
    best[0] = 0;
    from[0] = 0;
    for (int st = 0; st < n; st++) {
        if (from[st] < 0) continue;
        int cl = utf8_len((unsigned char)w[st]);
        if (st + cl > n) cl = n - st;
        int single = 0;
        for (int len = 1; len <= s->max_len && st + len <= n; len++) {
            int id = hash_get(s, w + st, (size_t)len);
            if (id < 0) continue;
            if (len == cl) single = 1;
            double c = best[st] + s->score[id];
            if (from[st + len] < 0 || c > best[st + len]) { best[st + len] = c; from[st + len] = st; tok[st + len] = id; }
        }
        if (!single) {                /* the unknown token covers this character */
            double c = best[st] + s->unk_score;
            if (from[st + cl] < 0 || c > best[st + cl]) { best[st + cl] = c; from[st + cl] = st; tok[st + cl] = -2; }
        }
    }
    /* walk back, then reverse into out */
    int cnt = 0;
    for (int e = n; e > 0; e = from[e]) cnt++;
    int32_t *ids = tr_malloc((size_t)(cnt ? cnt : 1) * sizeof *ids);
    int j = cnt;
    for (int e = n; e > 0; e = from[e]) ids[--j] = tok[e];
    int rc = 0;
    for (int i = 0; i < cnt && !rc; i++) {
        if (ids[i] == -2) {
            if (s->unk_id < 0) { rc = tr_error("tokenizer: text '%s' has a character no piece covers, and the "
                                               "model has no unk_id", w); break; }
            if (i > 0 && ids[i - 1] == -2) continue;            /* fuse consecutive unknowns */
        }
        if (*k >= cap) { rc = tr_error("tokenizer: more than %d tokens", cap); break; }
        out[(*k)++] = ids[i] == -2 ? s->unk_id : ids[i];
    }
    free(ids); free(best); free(from); free(tok);
    return rc;
}

int spm_encode(const spm_model *s, const char *text, int at_start, int32_t *out, int cap) {
    wlist a = {0}, b = {0};
    char *t = normalize(s, text);
    wl_push(&a, t, strlen(t));
    free(t);
    for (int i = 0; i < s->n_pre; i++) {
        pretokenize(&s->pre[i], &a, at_start, &b);
        wl_free(&a);
        a = b;
        memset(&b, 0, sizeof b);
    }
    int k = 0, rc = 0;
    for (int i = 0; i < a.n && !rc; i++) rc = viterbi(s, a.w[i], out, &k, cap);
    wl_free(&a);
    return rc ? -1 : k;
}
