/* genrec.c: prefix trie, constrained beam search and its evaluation (see genrec.h). */
#include "genrec.h"
#include "retrieval.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gen_cand { float score; int32_t beam, code, node; };
struct gen_hit { float score; int32_t item; };

/* ---- trie ---- */

static const int32_t *g_codes;
static int g_depth;
static int cmp_tuple(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    const int32_t *cx = g_codes + (size_t)x * g_depth, *cy = g_codes + (size_t)y * g_depth;
    for (int k = 0; k < g_depth; k++) if (cx[k] != cy[k]) return cx[k] < cy[k] ? -1 : 1;
    return (x > y) - (x < y);
}

/* Items sorted by tuple; nodes breadth first, each covering a range of that order (kept in
 * first/count while building), so a node's children and its edges are contiguous. */
int gen_trie_build(gen_trie *t, const int32_t *codes, int n_items, int depth) {
    memset(t, 0, sizeof *t);
    if (n_items < 1 || depth < 1) return tr_error("gen_trie_build: %d items of %d codes", n_items, depth);
    t->depth = depth;
    t->n_items = n_items;
    t->items = tr_malloc((size_t)n_items * sizeof *t->items);
    for (int i = 0; i < n_items; i++) t->items[i] = i;
    g_codes = codes; g_depth = depth;
    qsort(t->items, (size_t)n_items, sizeof *t->items, cmp_tuple);
    size_t cap = (size_t)n_items * depth + 1;
    int32_t *lo = tr_malloc(cap * sizeof *lo), *hi = tr_malloc(cap * sizeof *hi), *dep = tr_malloc(cap * sizeof *dep);
    t->first = tr_malloc(cap * sizeof *t->first);
    t->count = tr_malloc(cap * sizeof *t->count);
    t->edge_code = tr_malloc(cap * sizeof *t->edge_code);
    t->edge_node = tr_malloc(cap * sizeof *t->edge_node);
    int nn = 1, ne = 0;
    lo[0] = 0; hi[0] = n_items; dep[0] = 0;
    for (int i = 0; i < nn; i++) {
        if (dep[i] == depth) {
            t->first[i] = lo[i];
            t->count[i] = hi[i] - lo[i];
            t->n_leaves++;
            if (t->count[i] > 1) { t->n_collided++; t->n_collided_items += t->count[i]; }
            continue;
        }
        t->first[i] = ne;
        t->count[i] = 0;
        for (int a = lo[i]; a < hi[i];) {
            int code = codes[(size_t)t->items[a] * depth + dep[i]], b = a + 1;
            while (b < hi[i] && codes[(size_t)t->items[b] * depth + dep[i]] == code) b++;
            t->edge_code[ne] = code;
            t->edge_node[ne] = nn;
            ne++;
            t->count[i]++;
            lo[nn] = a; hi[nn] = b; dep[nn] = dep[i] + 1;
            nn++;
            a = b;
        }
    }
    t->n_nodes = nn;
    free(lo); free(hi); free(dep);
    return 0;
}

void gen_trie_free(gen_trie *t) {
    free(t->first); free(t->count); free(t->edge_code); free(t->edge_node); free(t->items);
    memset(t, 0, sizeof *t);
}

/* Edges of a node are sorted by code: binary search. */
int gen_trie_child(const gen_trie *t, int node, int code) {
    int a = t->first[node], b = a + t->count[node] - 1;
    while (a <= b) {
        int mid = (a + b) / 2;
        if (t->edge_code[mid] == code) return t->edge_node[mid];
        if (t->edge_code[mid] < code) a = mid + 1; else b = mid - 1;
    }
    return -1;
}

int gen_trie_lookup(const gen_trie *t, const int32_t *tuple, const int32_t **items) {
    int node = 0;
    for (int k = 0; k < t->depth && node >= 0; k++) node = gen_trie_child(t, node, tuple[k]);
    if (node < 0) return 0;
    if (items) *items = t->items + t->first[node];
    return t->count[node];
}

/* ---- books and training batches ---- */

t5_gen_book gen_book(const prompt_vocab *v, const rec_data *d, int s) {
    t5_gen_book b;
    if (s < d->K) { b.tok0 = v->base_item + s * v->L; b.n = v->L; }
    else { b.tok0 = v->base_extra; b.n = v->extra; }
    return b;
}

void gen_train_dec(const prompt_vocab *v, const rec_data *d, const int32_t *target, int B, int P,
                   int32_t *dec, int32_t *codes) {
    int Td = P + d->cpi - 1;
    for (int r = 0; r < B; r++) {
        int32_t *row = dec + (size_t)r * Td;
        const int32_t *c = d->item_codes + (size_t)target[r] * d->cpi;
        prompt_decoder(v, row, P);
        for (int s = 0; s + 1 < d->cpi; s++) row[P + s] = gen_book(v, d, s).tok0 + c[s];
        memcpy(codes + (size_t)r * d->cpi, c, (size_t)d->cpi * sizeof *codes);
    }
}

/* ---- searcher ---- */

int gen_search_init(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d, int beam,
                    int max_users, int hist_cap) {
    memset(g, 0, sizeof *g);
    const t5_config *c = t5_cfg(m);
    if (d->cpi > T5_GEN_MAX_STEPS) return tr_error("generate: %d codes per item (at most %d)", d->cpi, T5_GEN_MAX_STEPS);
    g->P = gen_prompt_len(m, d);
    if (g->P < 1) return tr_error("generate: the model's decoder length %d is too short for %d codes per item",
                                  c->dec_len, d->cpi);
    if (beam < 1 || max_users < 1) return tr_error("generate: beam and batch must be positive");
    /* the key/value cache holds beam rows per user (4 buffers of layers x dec_len x heads x
     * d_kv floats): keep it within 2 GiB by searching fewer users at a time */
    const double budget = 2.0 * 1024 * 1024 * 1024;
    double per_user = (double)beam * 4.0 * c->n_dec_layers * c->dec_len * c->n_heads * c->d_kv * sizeof(float);
    if (per_user > budget)
        return tr_error("generate: beam %d needs %.1f GiB of key/value cache per user; expected a smaller "
                        "--beam (at most 2 GiB)", beam, per_user / (1024.0 * 1024 * 1024));
    if (max_users * per_user > budget) max_users = (int)(budget / per_user);
    g->beam = beam; g->max_users = max_users; g->hist_cap = hist_cap;
    for (int s = 0; s < d->cpi; s++) {
        g->books[s] = gen_book(v, d, s);
        if (g->books[s].n > g->max_n) g->max_n = g->books[s].n;
    }
    if (gen_trie_build(&g->trie, d->item_codes, d->n_items, d->cpi) != 0) return -1;
    for (int i = 0; i < g->trie.n_nodes; i++)
        if (g->trie.count[i] > g->max_leaf && i > 0) g->max_leaf = g->trie.count[i];
    int rows = beam * max_users;
    if (t5_dec_init(&g->st, m, rows, c->dec_len) != 0) { gen_trie_free(&g->trie); return -1; }
    g->dec = tr_malloc((size_t)c->dec_len * sizeof *g->dec);
    prompt_decoder(v, g->dec, g->P);
    for (int t = g->P; t < c->dec_len; t++) g->dec[t] = TOK_PAD;    /* causal: never seen by the prompt */
    g->h = tr_malloc((size_t)rows * c->d_model * sizeof *g->h);
    g->logp = tr_malloc((size_t)rows * g->max_n * sizeof *g->logp);
    g->node = tr_malloc((size_t)rows * sizeof *g->node);
    g->node2 = tr_malloc((size_t)rows * sizeof *g->node2);
    g->code = tr_malloc((size_t)rows * sizeof *g->code);
    g->parent = tr_malloc((size_t)rows * sizeof *g->parent);
    g->tok = tr_malloc((size_t)rows * sizeof *g->tok);
    g->score = tr_malloc((size_t)rows * sizeof *g->score);
    g->score2 = tr_malloc((size_t)rows * sizeof *g->score2);
    g->cap_cand = beam * g->max_n;
    g->cand = tr_malloc((size_t)g->cap_cand * sizeof *g->cand);
    g->excl = tr_calloc((size_t)d->n_items, 1);
    g->cap_hits = beam * (g->max_leaf > 0 ? g->max_leaf : 1);
    g->hits = tr_malloc((size_t)g->cap_hits * sizeof *g->hits);
    rec_batch_init(&g->rb, d, v, max_users, hist_cap, c->dec_len);
    t5_dec_reserve(&g->st, g->rb.cap_T);
    g->bs = tr_malloc((size_t)max_users * sizeof *g->bs);
    t5_reserve(m, max_users, g->rb.cap_T);
    return 0;
}

void gen_search_free(gen_search *g) {
    t5_dec_free(&g->st);
    gen_trie_free(&g->trie);
    free(g->dec); free(g->h); free(g->logp); free(g->node); free(g->node2); free(g->code);
    free(g->parent); free(g->tok); free(g->score); free(g->score2); free(g->cand); free(g->excl);
    free(g->hits); free(g->bs);
    rec_batch_free(&g->rb);
    memset(g, 0, sizeof *g);
}

static int cmp_cand(const void *a, const void *b) {
    const struct gen_cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->beam != y->beam) return x->beam < y->beam ? -1 : 1;
    return (x->code > y->code) - (x->code < y->code);
}

static int cmp_hit(const void *a, const void *b) {
    const struct gen_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

/* A leaf is worth a beam only if one of its items is not excluded. */
static int leaf_open(const gen_search *g, int node) {
    const int32_t *it = g->trie.items + g->trie.first[node];
    for (int i = 0; i < g->trie.count[node]; i++) if (!g->excl[it[i]]) return 1;
    return 0;
}

/* Expand user u's beams (slots base .. base+nb of the old arrays; logp rows likewise) into
 * its new beam slots (u*beam ...); parent gets the old global row of each new beam. */
static void expand_user(gen_search *g, int u, int base, int nb, int last) {
    int nc = 0, B = g->beam, n = 0;
    for (int j = 0; j < nb; j++) {
        int node = g->node[base + j];
        if (node < 0) continue;
        const float *lp = g->logp + (size_t)(base + j) * g->max_n;
        for (int e = g->trie.first[node]; e < g->trie.first[node] + g->trie.count[node]; e++) {
            int child = g->trie.edge_node[e];
            if (last && !leaf_open(g, child)) continue;
            struct gen_cand *c = &g->cand[nc++];
            c->score = g->score[base + j] + lp[g->trie.edge_code[e]];
            c->beam = j; c->code = g->trie.edge_code[e]; c->node = child;
        }
    }
    qsort(g->cand, (size_t)nc, sizeof *g->cand, cmp_cand);
    for (; n < B && n < nc; n++) {
        int slot = u * B + n;
        g->node2[slot] = g->cand[n].node;
        g->score2[slot] = g->cand[n].score;
        g->code[slot] = g->cand[n].code;
        g->parent[slot] = base + g->cand[n].beam;
    }
    for (; n < B; n++) {                         /* empty slots: computed, never expanded */
        int slot = u * B + n;
        g->node2[slot] = -1;
        g->score2[slot] = -INFINITY;
        g->code[slot] = 0;
        g->parent[slot] = base;
    }
}

static void mark_known(gen_search *g, const rec_data *d, int32_t u, int split, uint8_t val) {
    if (split < 1) return;
    int known = rec_target_pos(d, u, split);
    const int32_t *seq = d->seq + d->off[u];
    for (int k = 0; k < known; k++) g->excl[seq[k]] = val;
}

int gen_search_users(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d,
                     const int32_t *users, int n, int split, int tmpl, retr_metrics *met, int topk,
                     rec_topk_fn fn, void *ctx) {
    if (n < 1 || n > g->max_users) return tr_error("gen_search_users: %d users (at most %d)", n, g->max_users);
    int B = g->beam, S = d->cpi;
    for (int i = 0; i < n; i++) {
        int p = rec_target_pos(d, users[i], split < 1 ? 2 : split);
        if (p < 0) p = 0;
        g->bs[i].user = users[i];
        g->bs[i].pos = p;
        g->bs[i].hist = p < g->hist_cap ? p : g->hist_cap;
    }
    rec_batch_fill(&g->rb, d, v, g->bs, n, 0, tmpl, NULL);
    t5_batch tb = rec_batch_t5(&g->rb);
    tb.dec_ids = g->dec;
    tb.dec_per_row = 0;
    if (t5_forward(m, &tb, 0, NULL, NULL) != 0) return -1;
    if (t5_dec_start(&g->st, m, &tb, g->P, g->h) != 0) return -1;
    /* step 0: one parent per user, the root */
    t5_gen_logits(m, g->h, n, g->books[0], g->logp, g->max_n);
    for (int r = 0; r < n; r++) t5_gen_log_softmax(g->logp + (size_t)r * g->max_n, 1, g->books[0].n);
    for (int u = 0; u < n; u++) {
        g->node[u] = 0;
        g->score[u] = 0;
    }
    for (int s = 0; s < S; s++) {
        int last = s == S - 1;
        if (s > 0) {
            for (int r = 0; r < n * B; r++) g->tok[r] = g->books[s - 1].tok0 + g->code[r];
            if (t5_dec_step(&g->st, m, g->tok, g->h) != 0) return -1;
            t5_gen_book bk = g->books[s];
            t5_gen_logits(m, g->h, n * B, bk, g->logp, g->max_n);
            for (int r = 0; r < n * B; r++) t5_gen_log_softmax(g->logp + (size_t)r * g->max_n, 1, bk.n);
        }
        for (int u = 0; u < n; u++) {
            if (last) mark_known(g, d, users[u], split, 1);
            expand_user(g, u, s == 0 ? u : u * B, s == 0 ? 1 : B, last);
            if (last) mark_known(g, d, users[u], split, 0);
        }
        int32_t *t = g->node; g->node = g->node2; g->node2 = t;
        float *f = g->score; g->score = g->score2; g->score2 = f;
        if (!last) t5_dec_gather(&g->st, g->parent, n * B, B);
    }
    /* the final beams are leaves: their items, ranked */
    int32_t idx[256];
    float val[256];
    if (topk > 256) topk = 256;
    for (int u = 0; u < n; u++) {
        int32_t user = users[u];
        mark_known(g, d, user, split, 1);
        int nh = 0;
        for (int j = 0; j < B; j++) {
            int node = g->node[u * B + j];
            if (node < 0) continue;
            const int32_t *it = g->trie.items + g->trie.first[node];
            for (int i = 0; i < g->trie.count[node]; i++)
                if (!g->excl[it[i]]) { g->hits[nh].score = g->score[u * B + j]; g->hits[nh].item = it[i]; nh++; }
        }
        mark_known(g, d, user, split, 0);
        qsort(g->hits, (size_t)nh, sizeof *g->hits, cmp_hit);
        int tp = rec_target_pos(d, user, split < 1 ? 2 : split);
        int32_t target = tp >= 0 ? d->seq[d->off[user] + tp] : -1;
        if (met && target >= 0) {
            int rank = -1;
            for (int i = 0; i < nh && rank < 0; i++) if (g->hits[i].item == target) rank = i;
            retr_metrics_add(met, rank);
        }
        if (fn) {
            int k = nh < topk ? nh : topk;
            for (int i = 0; i < k; i++) { idx[i] = g->hits[i].item; val[i] = g->hits[i].score; }
            fn(ctx, user, idx, val, k);
        }
    }
    return 0;
}

/* ---- evaluation and timing ---- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int gen_evaluate(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d, int split,
                 int tmpl, int batch, retr_metrics *met, int topk, rec_topk_fn fn, void *ctx) {
    if (batch > g->max_users) batch = g->max_users;
    int64_t *key = tr_malloc((size_t)(d->n_users ? d->n_users : 1) * sizeof *key);
    int n = 0;
    for (int32_t u = 0; u < d->n_users; u++) {
        int p = rec_target_pos(d, u, split);
        if (p < 0 || (d->skip && d->skip[u])) continue;     /* held-out users are not evaluated here */
        int h = p < g->hist_cap ? p : g->hist_cap;
        key[n++] = ((int64_t)h << 32) | u;              /* similar lengths share a batch */
    }
    qsort(key, (size_t)n, sizeof *key, cmp_i64);
    int32_t *users = tr_malloc((size_t)batch * sizeof *users);
    int rc = 0;
    for (int i = 0; i < n && !rc; i += batch) {
        int nb = n - i < batch ? n - i : batch;
        for (int r = 0; r < nb; r++) users[r] = (int32_t)(key[i + r] & 0xffffffff);
        rc = gen_search_users(g, m, v, d, users, nb, split, tmpl, met, topk, fn, ctx);
    }
    free(users); free(key);
    return rc;
}

static void drop_topk(void *ctx, int32_t user, const int32_t *items, const float *scores, int n) {
    (void)ctx; (void)user; (void)items; (void)scores; (void)n;
}

double gen_time_users(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d,
                      int hist_cap, int cosine, int n, int batch, int topk) {
    int32_t *users = tr_malloc((size_t)(n > 0 ? n : 1) * sizeof *users);
    int64_t *key = tr_malloc((size_t)(n > 0 ? n : 1) * sizeof *key);
    int k = 0;
    for (int32_t u = 0; u < d->n_users && k < n; u++) {
        int p = rec_target_pos(d, u, 2);
        if (p >= 0 && !(d->skip && d->skip[u])) key[k++] = ((int64_t)(p < hist_cap ? p : hist_cap) << 32) | u;
    }
    n = k;
    qsort(key, (size_t)n, sizeof *key, cmp_i64);      /* length-sorted batches, as in evaluation */
    for (int i = 0; i < n; i++) users[i] = (int32_t)(key[i] & 0xffffffff);
    free(key);
    int D = t5_cfg(m)->head_out;
    float *z = tr_malloc((size_t)batch * D * sizeof *z), *scores = tr_malloc((size_t)batch * d->n_items * sizeof *scores);
    double secs = -1;
    for (int pass = 0; pass < 2; pass++) {       /* pass 0: warm-up (arena growth, caches) */
        double t0 = tr_monotonic();
        int lim = pass ? n : (batch < n ? batch : n);
        int rc = 0;
        for (int i = 0; i < lim && !rc; i += batch) {
            int nb = lim - i < batch ? lim - i : batch;
            if (g) {
                rc = gen_search_users(g, m, v, d, users + i, nb, 2, PROMPT_TEST, NULL, topk, drop_topk, NULL);
            } else {
                rc = rec_queries(m, v, d, users + i, nb, 2, hist_cap, PROMPT_TEST, batch, z);
                if (!rc) {
                    retr_scores(scores, z, nb, d->pool, d->pool_inv, d->n_items, D, cosine);
                    rec_rank_rows(d, users + i, nb, 2, scores, NULL, topk, drop_topk, NULL);
                }
            }
        }
        if (rc) { secs = -1; break; }
        secs = tr_monotonic() - t0;
    }
    free(users); free(z); free(scores);
    return secs;
}
