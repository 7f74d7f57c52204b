/* recmodel.c: data, prompt batches, query vectors and model storage for finetune/evaluate. */
#include "recmodel.h"
#include "cli.h"
#include "db.h"
#include "retrieval.h"
#include "stage.h"
#include "unseen.h"
#include "util.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each user's chronological sequence (all splits), with ids checked against the dataset. */
int rec_sequences_load(sqlite3 *db, const char *dataset, rec_data *d) {
    memset(d, 0, sizeof *d);
    int64_t ds = db_dataset_sizes(db, dataset, &d->n_users, &d->n_items);
    if (ds < 0) return -1;
    int64_t n = db_query_i64(db, 0, "SELECT n_interactions FROM datasets WHERE id=%lld", (long long)ds);
    d->off = tr_calloc((size_t)d->n_users + 1, sizeof *d->off);
    d->seq = tr_malloc((size_t)(n ? n : 1) * sizeof *d->seq);
    d->tied = tr_calloc((size_t)(n ? n : 1), sizeof *d->tied);
    sqlite3_stmt *st = db_prep(db, "SELECT uid, iid, ts FROM interactions WHERE dataset_id=? ORDER BY uid, pos");
    if (!st) { rec_data_free(d); return -1; }
    sqlite3_bind_int64(st, 1, ds);
    int64_t k = 0, prev_ts = 0;
    int32_t prev_u = -1;
    int timed = 1;                      /* every row has a timestamp */
    while (sqlite3_step(st) == SQLITE_ROW && k < n) {
        int32_t u = sqlite3_column_int(st, 0), it = sqlite3_column_int(st, 1);
        if (sqlite3_column_type(st, 2) == SQLITE_NULL) timed = 0;
        int64_t ts = sqlite3_column_int64(st, 2);
        d->tied[k] = timed && u == prev_u && ts == prev_ts;
        prev_u = u;
        prev_ts = ts;
        if (u < 0 || u >= d->n_users || it < 0 || it >= d->n_items) {
            sqlite3_finalize(st);
            rec_data_free(d);
            return tr_error("interactions of %s: id out of range (user %d, item %d)", dataset, u, it);
        }
        d->off[u + 1]++;
        d->seq[k++] = it;
    }
    sqlite3_finalize(st);
    for (int32_t u = 0; u < d->n_users; u++) d->off[u + 1] += d->off[u];
    if (!timed) { free(d->tied); d->tied = NULL; }
    return 0;
}

/* The `entity` ('item' or 'user') vectors of kind `kind` of cf run `run` into *out, n rows
 * (allocated here at the first row; a missing row stays zero): *D from the first row when
 * it is 0, else every row must be *D floats. Returns the rows read, or -1 with tr_error. */
static int cf_vectors_read(sqlite3 *db, int64_t run, const char *entity, const char *kind, int n, int *D,
                           float **out) {
    sqlite3_stmt *st = db_prep(db, "SELECT idx, vec FROM cf_vectors WHERE run_id=? AND entity=? AND kind=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    int got = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int idx = sqlite3_column_int(st, 0);
        if (!*out) {
            if (*D <= 0) *D = sqlite3_column_bytes(st, 1) / (int)sizeof(float);
            *out = tr_calloc((size_t)(n > 0 ? n : 1) * (*D > 0 ? *D : 1), sizeof **out);
        }
        if (idx < 0 || idx >= n || db_column_floats(st, 1, *out + (size_t)idx * *D, *D) != 0) {
            sqlite3_finalize(st);
            return tr_error("cf_vectors of run %lld: bad %s row %d (expected an index in 0..%d and %d floats)",
                            (long long)run, entity, idx, n - 1, *D);
        }
        got++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return tr_error("cf_vectors of run %lld: %s", (long long)run, sqlite3_errmsg(db));
    return got;
}

/* Everything the prompts and the pool need, from the tables of ingest, tokenize and cf. */
int rec_data_load(sqlite3 *db, const char *dataset, int64_t tokenize_run, const char *pool_kind,
                  rec_data *d) {
    if (rec_sequences_load(db, dataset, d) != 0) return -1;
    sqlite3_stmt *st;

    /* tokens: K from the user books, an item book K is the disambiguation book */
    d->tokenize_run = tokenize_run;
    int64_t kb_u = db_query_i64(db, -1, "SELECT max(book) FROM tokens WHERE run_id=%lld AND entity='user'", (long long)tokenize_run);
    int64_t kb_i = db_query_i64(db, -1, "SELECT max(book) FROM tokens WHERE run_id=%lld AND entity='item'", (long long)tokenize_run);
    if (kb_u < 0 || kb_i < 0) { tr_error("tokenize run %lld has no tokens", (long long)tokenize_run); goto fail; }
    d->K = (int)kb_u + 1;
    d->cpi = (int)kb_i + 1;
    if (d->cpi != d->K && d->cpi != d->K + 1) { tr_error("tokens: users have %d books, items %d", d->K, d->cpi); goto fail; }
    d->L = (int)db_query_i64(db, 0, "SELECT max(code) FROM tokens WHERE run_id=%lld AND book < %d", (long long)tokenize_run, d->K) + 1;
    d->extra = d->cpi > d->K ? (int)db_query_i64(db, 0, "SELECT max(code) FROM tokens WHERE run_id=%lld AND entity='item' AND book=%d",
                                                 (long long)tokenize_run, d->K) + 1 : 0;
    d->user_codes = tr_calloc((size_t)d->n_users * d->K, sizeof *d->user_codes);
    d->item_codes = tr_calloc((size_t)d->n_items * d->cpi, sizeof *d->item_codes);
    st = db_prep(db, "SELECT entity='user', idx, book, code FROM tokens WHERE run_id=?");
    if (!st) goto fail;
    sqlite3_bind_int64(st, 1, tokenize_run);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int user = sqlite3_column_int(st, 0), idx = sqlite3_column_int(st, 1);
        int book = sqlite3_column_int(st, 2), code = sqlite3_column_int(st, 3);
        if (user && idx >= 0 && idx < d->n_users && book < d->K) d->user_codes[(size_t)idx * d->K + book] = code;
        else if (!user && idx >= 0 && idx < d->n_items && book < d->cpi) d->item_codes[(size_t)idx * d->cpi + book] = code;
    }
    sqlite3_finalize(st);

    /* pool: item vectors of the cf run under the tokenize run */
    d->cf_run = stage_upstream_run(db, tokenize_run);
    d->D = 0;
    int got = cf_vectors_read(db, d->cf_run, "item", pool_kind, d->n_items, &d->D, &d->pool);
    if (got < 0) goto fail;
    if (got != d->n_items) {
        tr_error("cf run %lld has %d '%s' item vectors for %d items (pool kind: ego or mean)",
                 (long long)d->cf_run, got, pool_kind, d->n_items);
        goto fail;
    }
    d->pool_inv = tr_malloc((size_t)d->n_items * sizeof *d->pool_inv);
    retr_inv_norms(d->pool_inv, d->pool, d->n_items, d->D);
    /* unseen users: never trained on nor validated on */
    d->skip = tr_malloc((size_t)d->n_users + 1);
    int ns = unseen_tok_load(db, tokenize_run, d->skip, d->n_users);
    if (ns < 0) goto fail;
    d->n_skip = ns;
    if (!ns) { free(d->skip); d->skip = NULL; }
    return 0;
fail:
    rec_data_free(d);
    return -1;
}

/* The users' CF vectors of d's cf run, as wide as the item pool. */
int rec_user_vectors_load(sqlite3 *db, rec_data *d, const char *kind) {
    if (d->D <= 0) return tr_error("the users' CF vectors are read after the item vectors");
    free(d->user_vec);
    d->user_vec = NULL;
    int D = d->D;
    return cf_vectors_read(db, d->cf_run, "user", kind, d->n_users, &D, &d->user_vec);
}

void rec_data_free(rec_data *d) {
    free(d->off); free(d->seq); free(d->tied); free(d->user_codes); free(d->item_codes);
    free(d->pool); free(d->pool_inv); free(d->skip); free(d->user_vec);
    memset(d, 0, sizeof *d);
}

rec_sample *rec_samples(const rec_data *d, int hist_cap, int min_hist, int max_pos, int64_t *n) {
    int64_t cap = 0;
    for (int32_t u = 0; u < d->n_users; u++) cap += rec_n_train(d, u);
    rec_sample *s = tr_malloc((size_t)(cap ? cap : 1) * sizeof *s);
    int64_t k = 0;
    for (int32_t u = 0; u < d->n_users; u++) {
        if (d->skip && d->skip[u]) continue;
        int nt = rec_n_train(d, u);
        for (int p = min_hist; p < nt; p++) {
            if (max_pos >= 0 && p > max_pos) break;
            s[k].user = u;
            s[k].pos = p;
            s[k].hist = p < hist_cap ? p : hist_cap;
            k++;
        }
    }
    *n = k;
    return s;
}

void rec_batch_init(rec_batch *b, const rec_data *d, const prompt_vocab *v, int cap_B,
                    int hist_cap, int dec_len) {
    memset(b, 0, sizeof *b);
    b->cap_B = cap_B;
    b->cap_T = prompt_max_len(v, d->cpi, hist_cap);
    b->ids = tr_calloc((size_t)cap_B * b->cap_T, sizeof *b->ids);
    b->mask = tr_calloc((size_t)cap_B * b->cap_T, sizeof *b->mask);
    b->dec = tr_malloc((size_t)dec_len * sizeof *b->dec);
    prompt_decoder(v, b->dec, dec_len);
    b->target = tr_malloc((size_t)cap_B * sizeof *b->target);
    b->scratch = tr_malloc((size_t)(hist_cap + 1) * d->cpi * sizeof *b->scratch);
    b->hist = tr_malloc((size_t)(hist_cap + 1) * sizeof *b->hist);
}

void rec_batch_free(rec_batch *b) {
    free(b->ids); free(b->mask); free(b->dec); free(b->target); free(b->scratch); free(b->hist);
    memset(b, 0, sizeof *b);
}

/* Encode each sample's prompt into its row; rows are padded to the longest (T). */
void rec_batch_fill(rec_batch *b, const rec_data *d, const prompt_vocab *v, const rec_sample *s,
                    int n, int train, int tmpl, rng_t *rng) {
    int T = 1;          /* b->target holds each row's length until the rows are compacted */
    for (int r = 0; r < n; r++) {
        const int32_t *seq = d->seq + d->off[s[r].user];
        int h = s[r].hist;
        memcpy(b->hist, seq + s[r].pos - h, (size_t)h * sizeof *b->hist);
        int t = tmpl;
        if (train) {
            if (!b->keep_order) rng_shuffle_i32(rng, b->hist, (size_t)h);
            t = (int)rng_below(rng, PROMPT_N_TRAIN);
        }
        for (int i = 0; i < h; i++)
            memcpy(b->scratch + (size_t)i * d->cpi, d->item_codes + (size_t)b->hist[i] * d->cpi,
                   (size_t)d->cpi * sizeof *b->scratch);
        int len = prompt_encode(v, t, d->user_codes + (size_t)s[r].user * d->K, b->scratch, d->cpi, h,
                                b->ids + (size_t)r * b->cap_T, b->cap_T);
        if (len < 0) len = b->cap_T;     /* cannot happen: cap_T is the maximum */
        b->target[r] = len;
        if (len > T) T = len;
    }
    /* compact rows to stride T and build the mask */
    for (int r = 0; r < n; r++) {
        int len = b->target[r];
        int32_t *src = b->ids + (size_t)r * b->cap_T, *dst = b->ids + (size_t)r * T;
        if (dst != src) memmove(dst, src, (size_t)len * sizeof *dst);
        for (int k = len; k < T; k++) dst[k] = TOK_PAD;
        for (int k = 0; k < T; k++) b->mask[(size_t)r * T + k] = k < len;
        b->target[r] = d->seq[d->off[s[r].user] + s[r].pos];
    }
    b->B = n;
    b->T = T;
}

t5_batch rec_batch_t5(const rec_batch *b) {
    t5_batch t = {0};
    t.B = b->B;
    t.T = b->T;
    t.enc_ids = b->ids;
    t.enc_mask = b->mask;
    t.dec_ids = b->dec;
    return t;
}

static const rec_sample *sort_base;
static int cmp_hist(const void *a, const void *b) {
    const rec_sample *x = sort_base + *(const int32_t *)a, *y = sort_base + *(const int32_t *)b;
    if (x->hist != y->hist) return x->hist - y->hist;
    return x->user - y->user;
}

int rec_queries(t5_model *m, const prompt_vocab *v, const rec_data *d, const int32_t *users,
                int n, int split, int hist_cap, int tmpl, int batch_size, float *z) {
    const t5_config *cfg = t5_cfg(m);
    rec_sample *s = tr_malloc((size_t)(n ? n : 1) * sizeof *s);
    int32_t *order = tr_malloc((size_t)(n ? n : 1) * sizeof *order);
    for (int i = 0; i < n; i++) {
        int32_t u = users[i];
        int p = rec_target_pos(d, u, split);
        if (p < 0) p = 0;                   /* callers pass only users with a target */
        s[i].user = u;
        s[i].pos = p;
        s[i].hist = p < hist_cap ? p : hist_cap;
        order[i] = i;
    }
    sort_base = s;
    qsort(order, (size_t)n, sizeof *order, cmp_hist);     /* similar lengths share a batch */
    rec_batch b;
    rec_batch_init(&b, d, v, batch_size, hist_cap, cfg->dec_len);
    rec_sample *bs = tr_malloc((size_t)batch_size * sizeof *bs);
    float *zb = tr_malloc((size_t)batch_size * cfg->head_out * sizeof *zb);
    int rc = 0;
    for (int i = 0; i < n && !rc; i += batch_size) {
        int nb = n - i < batch_size ? n - i : batch_size;
        for (int r = 0; r < nb; r++) bs[r] = s[order[i + r]];
        rec_batch_fill(&b, d, v, bs, nb, 0, tmpl, NULL);
        t5_batch tb = rec_batch_t5(&b);
        rc = t5_infer(m, &tb, zb);
        for (int r = 0; r < nb && !rc; r++)
            memcpy(z + (size_t)order[i + r] * cfg->head_out, zb + (size_t)r * cfg->head_out,
                   (size_t)cfg->head_out * sizeof *z);
    }
    rec_batch_free(&b);
    free(bs); free(zb); free(s); free(order);
    return rc;
}

char *rec_config_json(const t5_config *c) {
    char *s = tr_malloc(512);
    snprintf(s, 512, "{\"vocab\":%d,\"d_model\":%d,\"d_kv\":%d,\"n_heads\":%d,\"d_ff\":%d,"
             "\"n_enc_layers\":%d,\"n_dec_layers\":%d,\"rel_buckets\":%d,\"rel_max_distance\":%d,"
             "\"dropout\":%.9g,\"head_dropout\":%.9g,\"ln_eps\":%.9g,\"head_hidden\":%d,"
             "\"head_out\":%d,\"dec_len\":%d}", c->vocab, c->d_model, c->d_kv, c->n_heads, c->d_ff,
             c->n_enc_layers, c->n_dec_layers, c->rel_buckets, c->rel_max_distance, c->dropout,
             c->head_dropout, c->ln_eps, c->head_hidden, c->head_out, c->dec_len);
    return s;
}

int rec_config_parse(const char *json, t5_config *c) {
    cJSON *j = cJSON_Parse(json);
    if (!j) return tr_error("models: the model configuration is not valid JSON");
    memset(c, 0, sizeof *c);
    /* numbers outside int (float) range are refused before the conversion, which would be
     * undefined behaviour (found by tests/fuzz/fuzz_config.c) */
#define GETI(f) do { cJSON *x = cJSON_GetObjectItemCaseSensitive(j, #f); \
        if (!cJSON_IsNumber(x)) { cJSON_Delete(j); return tr_error("models: configuration lacks " #f); } \
        if (!(fabs(x->valuedouble) <= 2147483647.0)) { cJSON_Delete(j); \
            return tr_error("models: configuration: " #f " is out of range"); } \
        c->f = (int)x->valuedouble; } while (0)
#define GETF(f) do { cJSON *x = cJSON_GetObjectItemCaseSensitive(j, #f); \
        if (!cJSON_IsNumber(x)) { cJSON_Delete(j); return tr_error("models: configuration lacks " #f); } \
        if (!(fabs(x->valuedouble) <= 3.0e38)) { cJSON_Delete(j); \
            return tr_error("models: configuration: " #f " is out of range"); } \
        c->f = (float)x->valuedouble; } while (0)
    GETI(vocab); GETI(d_model); GETI(d_kv); GETI(n_heads); GETI(d_ff); GETI(n_enc_layers);
    GETI(n_dec_layers); GETI(rel_buckets); GETI(rel_max_distance); GETF(dropout);
    GETF(head_dropout); GETF(ln_eps); GETI(head_hidden); GETI(head_out); GETI(dec_len);
#undef GETI
#undef GETF
    cJSON_Delete(j);
    return 0;
}

int rec_model_save(sqlite3 *db, int64_t run_id, const t5_model *m, const prompt_vocab *v,
                   const char *pool_kind, int cosine, int hist_cap) {
    char *cfg = rec_config_json(t5_cfg(m));
    char *pv = prompt_vocab_json(v);
    if (pv) {       /* a SentencePiece vocabulary rides in the config JSON, under "prompt" */
        cfg = cli_json_append(cfg, "\"prompt\":%s", pv);
        free(pv);
    }
    sqlite3_stmt *st = db_prep(db, "INSERT OR REPLACE INTO models (run_id, config, K, L, extra, "
                                   "pool_kind, cosine, hist_cap, n_params, params) VALUES (?,?,?,?,?,?,?,?,?,?)");
    int rc = -1;
    if (st) {
        size_t np = t5_n_params(m);
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_text(st, 2, cfg, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, v->K);
        sqlite3_bind_int(st, 4, v->L);
        sqlite3_bind_int(st, 5, v->extra);
        sqlite3_bind_text(st, 6, pool_kind, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 7, cosine);
        sqlite3_bind_int(st, 8, hist_cap);
        sqlite3_bind_int64(st, 9, (int64_t)np);
        sqlite3_bind_blob64(st, 10, t5_params((t5_model *)m), np * sizeof(float), SQLITE_STATIC);
        rc = db_step_done(db, st);
        sqlite3_finalize(st);
    }
    free(cfg);
    return rc;
}

/* The prompt vocabulary of a stored model: the SentencePiece one under the config's "prompt"
 * key when present (finetune --init-from), else the word-level one of K, L, extra. */
static int rec_vocab_from_config(const char *json, prompt_vocab *v, int K, int L, int extra) {
    cJSON *j = cJSON_Parse(json);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    int rc;
    if (cJSON_IsObject(p)) {
        char *s = cJSON_PrintUnformatted(p);
        rc = prompt_vocab_from_json(v, s, K, L, extra);
        free(s);
    } else {
        rc = prompt_vocab_init(v, K, L, extra);
    }
    cJSON_Delete(j);
    return rc;
}

int rec_model_load(sqlite3 *db, int64_t run, rec_loaded *out) {
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = db_prep(db, "SELECT m.config, m.K, m.L, m.extra, m.pool_kind, m.cosine, m.hist_cap, "
                                   "m.n_params, m.params FROM models m WHERE m.run_id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run);
    int rc = -1;
    if (sqlite3_step(st) != SQLITE_ROW) {
        tr_error("finetune run %lld has no stored model", (long long)run);
    } else {
        t5_config cfg;
        const char *cj = (const char *)sqlite3_column_text(st, 0);
        if (rec_config_parse(cj, &cfg) == 0 &&
            rec_vocab_from_config(cj, &out->vocab, sqlite3_column_int(st, 1), sqlite3_column_int(st, 2),
                                  sqlite3_column_int(st, 3)) == 0) {
            snprintf(out->pool_kind, sizeof out->pool_kind, "%s", (const char *)sqlite3_column_text(st, 4));
            out->cosine = sqlite3_column_int(st, 5);
            out->hist_cap = sqlite3_column_int(st, 6);
            out->tokenize_run = stage_upstream_run(db, run);
            rng_t r;
            rng_seed(&r, 0);
            if (out->vocab.vocab != cfg.vocab) {      /* ids past the embedding rows: refuse */
                tr_error("finetune run %lld: the prompt vocabulary has %d tokens but the model %d rows",
                         (long long)run, out->vocab.vocab, cfg.vocab);
                goto done;
            }
            out->model = t5_new(&cfg, &r);
            size_t np = (size_t)sqlite3_column_int64(st, 7);
            if (out->model && np == t5_n_params(out->model) &&
                (size_t)sqlite3_column_bytes(st, 8) == np * sizeof(float)) {
                memcpy(t5_params(out->model), sqlite3_column_blob(st, 8), np * sizeof(float));
                rc = 0;
            } else if (out->model) {
                tr_error("finetune run %lld: stored parameters do not match the configuration", (long long)run);
            }
        }
    }
done:
    sqlite3_finalize(st);
    if (rc) rec_loaded_free(out);
    return rc;
}

void rec_loaded_free(rec_loaded *l) {
    if (l->model) t5_free(l->model);
    prompt_vocab_free(&l->vocab);
    memset(l, 0, sizeof *l);
}

void rec_train_counts(const rec_data *d, int32_t *counts) {
    memset(counts, 0, (size_t)d->n_items * sizeof *counts);
    for (int32_t u = 0; u < d->n_users; u++)
        for (int k = 0, n = rec_n_train(d, u); k < n; k++) counts[d->seq[d->off[u] + k]]++;
}

void rec_rank_rows(const rec_data *d, const int32_t *users, int n, int split, float *scores,
                   retr_metrics *met, int topk, rec_topk_fn fn, void *ctx) {
    int32_t idx[256];
    float val[256];
    if (topk > 256) topk = 256;
    for (int r = 0; r < n; r++) {
        int32_t u = users[r];
        float *row = scores + (size_t)r * d->n_items;
        int known = rec_target_pos(d, u, split);      /* items before the target are history */
        const int32_t *seq = d->seq + d->off[u];
        for (int k = 0; k < known; k++) row[seq[k]] = -INFINITY;
        int32_t target = known >= 0 ? seq[known] : -1;
        if (met && target >= 0) retr_metrics_add(met, retr_rank(row, d->n_items, target));
        if (fn) {
            int got = retr_topk(row, d->n_items, topk, idx, val);
            fn(ctx, u, idx, val, got);
        }
    }
}

int rec_evaluate(t5_model *m, const prompt_vocab *v, const rec_data *d, int split, int hist_cap,
                 int tmpl, int cosine, int batch, retr_metrics *met, int topk, rec_topk_fn fn,
                 void *ctx) {
    int D = t5_cfg(m)->head_out;
    if (D != d->D) return tr_error("the model's head gives %d-d vectors but the pool holds %d-d", D, d->D);
    int32_t *users = tr_malloc((size_t)batch * sizeof *users);
    float *z = tr_malloc((size_t)batch * D * sizeof *z);
    float *scores = tr_malloc((size_t)batch * d->n_items * sizeof *scores);
    int rc = 0;
    int32_t next = 0;
    while (!rc) {
        int n = 0;                          /* users that have a target in this split */
        for (; next < d->n_users && n < batch; next++)
            if (rec_target_pos(d, next, split) >= 0 && !(d->skip && d->skip[next])) users[n++] = next;
        if (n == 0) break;
        rc = rec_queries(m, v, d, users, n, split, hist_cap, tmpl, batch, z);
        if (rc) break;
        retr_scores(scores, z, n, d->pool, d->pool_inv, d->n_items, D, cosine);
        rec_rank_rows(d, users, n, split, scores, met, topk, fn, ctx);
    }
    free(users); free(z); free(scores);
    return rc;
}
