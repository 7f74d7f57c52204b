/* causalrec.c: the causal ID-token LLM's rows, shape and stored model (see causalrec.h). */
#include "causalrec.h"
#include "db.h"
#include "stage.h"
#include "util.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const pool_names[] = {"cf", "learned", "tokens", "id"};
static const char *const input_names[] = {"tokens", "tokens+id"};

int causal_pool_parse(const char *s) {
    for (int i = 0; i < 4; i++) if (!strcmp(s, pool_names[i])) return i;
    return -1;
}
const char *causal_pool_name(int pool) { return pool >= 0 && pool < 4 ? pool_names[pool] : "?"; }
int causal_input_parse(const char *s) {
    for (int i = 0; i < 2; i++) if (!strcmp(s, input_names[i])) return i;
    return -1;
}
const char *causal_input_name(int in) { return in >= 0 && in < 2 ? input_names[in] : "?"; }

int causal_user_own_rows(const causal_spec *s) { return !s->no_prefix && s->user_input == CAUSAL_IN_TOKENS_ID; }

void causal_rows_build(const rec_data *d, const causal_spec *s, causal_rows *r) {
    int K = d->K, L = d->L, cpi = d->cpi, id = s->item_input == CAUSAL_IN_TOKENS_ID, user_prefix = !s->no_prefix;
    int uid = causal_user_own_rows(s);
    int uoff = K * L + d->extra, ioff = uoff + K * L, uidoff = ioff + (id ? d->n_items : 0);
    r->n_feat = cpi + id > K + uid ? cpi + id : K + uid;
    r->n_rows = uidoff + (uid ? d->n_users : 0);
    r->item_rows = tr_malloc((size_t)d->n_items * r->n_feat * sizeof *r->item_rows);
    r->user_rows = user_prefix ? tr_malloc((size_t)(d->n_users ? d->n_users : 1) * r->n_feat * sizeof *r->user_rows)
                               : NULL;
    int32_t *counts = tr_malloc((size_t)(d->n_items ? d->n_items : 1) * sizeof *counts);
    rec_train_counts(d, counts);
    for (int32_t i = 0; i < d->n_items; i++) {
        int32_t *row = r->item_rows + (size_t)i * r->n_feat;
        const int32_t *c = d->item_codes + (size_t)i * cpi;
        for (int j = 0; j < r->n_feat; j++) row[j] = j < cpi ? (j < K ? j * L + c[j] : K * L + c[j]) : -1;
        if (id) row[cpi] = counts[i] > 0 ? ioff + i : -1;   /* never trained: tokens alone */
    }
    for (int32_t u = 0; u < d->n_users && r->user_rows; u++) {
        int32_t *row = r->user_rows + (size_t)u * r->n_feat;
        for (int j = 0; j < r->n_feat; j++) row[j] = j < K ? uoff + j * L + d->user_codes[(size_t)u * K + j] : -1;
        if (uid && !(d->skip && d->skip[u])) row[K] = uidoff + u;   /* unseen: tokens alone */
    }
    free(counts);
}

void causal_rows_free(causal_rows *r) {
    free(r->item_rows);
    free(r->user_rows);
    memset(r, 0, sizeof *r);
}

int causal_sides_check(int pool, int item_input) {
    if (pool < 0 || pool > CAUSAL_POOL_ID || item_input < 0 || item_input > CAUSAL_IN_TOKENS_ID)
        return tr_error("unknown causal item side %d or item input %d", pool, item_input);
    if (pool == CAUSAL_POOL_ID && item_input != CAUSAL_IN_TOKENS_ID)
        return tr_error("--pool id scores each item by its own input row: it needs --item-input tokens+id (got "
                        "--item-input %s)", causal_input_name(item_input));
    return 0;
}

int causal_config(const causal_spec *s, const rec_data *d, const causal_rows *r, int max_B, sasrec_config *c) {
    memset(c, 0, sizeof *c);
    c->n_items = d->n_items;
    c->d = s->d;
    c->n_blocks = s->blocks;
    c->n_heads = s->heads;
    c->max_len = s->hist_cap + !s->no_prefix;        /* the user position, then hist-cap items */
    c->max_B = max_B;
    c->n_rows = r->n_rows;
    c->n_feat = r->n_feat;
    c->item_rows = r->item_rows;
    static const int out_of_pool[] = {SASREC_OUT_FIXED, SASREC_OUT_TABLE, SASREC_OUT_TIED, SASREC_OUT_OWN};
    if (causal_sides_check(s->pool, s->item_input) != 0) return -1;
    c->out = out_of_pool[s->pool];
    c->out_dim = d->D;
    c->fixed = d->pool;
    if (s->pool == CAUSAL_POOL_LEARNED && d->D != s->d)
        return tr_error("--pool learned starts from the CF item vectors (%d wide): give --d-model %d", d->D, d->D);
    if ((s->pool == CAUSAL_POOL_CF || s->pool == CAUSAL_POOL_LEARNED) && !d->pool)
        return tr_error("--pool %s needs the CF item vectors", causal_pool_name(s->pool));
    return 0;
}

/* The factor that scales the CF item vectors to norm 1 on average (the random rows' scale). */
static float cf_scale(const rec_data *d) {
    double norm = 0;
    for (size_t i = 0; i < (size_t)d->n_items * d->D; i++) norm += (double)d->pool[i] * d->pool[i];
    norm = sqrt(norm / (d->n_items ? d->n_items : 1));
    return norm > 0 ? (float)(1.0 / norm) : 1.0f;
}

void causal_init_learned(sasrec_model *m, const rec_data *d) {
    float *T = sasrec_out_table(m);
    if (!T) return;
    float k = cf_scale(d);
    for (size_t i = 0; i < (size_t)d->n_items * d->D; i++) T[i] = d->pool[i] * k;
}

void causal_init_id_rows(sasrec_model *m, const rec_data *d, const causal_rows *r) {
    if (r->n_feat <= d->cpi || !d->pool) return;        /* no own rows (--item-input tokens; row cpi, if any, is -1) */
    float *E = sasrec_in_table(m), k = cf_scale(d);
    int D = d->D, w = sasrec_cfg(m)->d, n = D < w ? D : w;
    for (int32_t i = 0; i < d->n_items; i++) {
        int32_t row = r->item_rows[(size_t)i * r->n_feat + d->cpi];
        if (row < 0) continue;
        for (int c = 0; c < n; c++) E[(size_t)row * w + c] = d->pool[(size_t)i * D + c] * k;
    }
}

/* Does user u count for a CF start: seen (not skipped) and with a vector (a nonzero row)? */
static int user_has_vec(const rec_data *d, int32_t u) {
    if (d->skip && d->skip[u]) return 0;
    const float *v = d->user_vec + (size_t)u * d->D;
    for (int c = 0; c < d->D; c++) if (v[c] != 0) return 1;
    return 0;
}

/* The factor that scales the users' CF vectors to norm 1 on average over the users that
 * count (user_has_vec); 1 when none does. */
static float user_cf_scale(const rec_data *d) {
    double norm = 0;
    int users = 0;
    for (int32_t u = 0; u < d->n_users; u++) {
        if (!user_has_vec(d, u)) continue;
        for (int c = 0; c < d->D; c++) norm += (double)d->user_vec[(size_t)u * d->D + c] * d->user_vec[(size_t)u * d->D + c];
        users++;
    }
    return users && norm > 0 ? (float)(1.0 / sqrt(norm / users)) : 1.0f;
}

void causal_init_user_id_rows(sasrec_model *m, const rec_data *d, const causal_rows *r) {
    if (!r->user_rows || r->n_feat <= d->K || !d->user_vec) return;
    int D = d->D, w = sasrec_cfg(m)->d, n = D < w ? D : w;
    float k = user_cf_scale(d), *E = sasrec_in_table(m);
    for (int32_t u = 0; u < d->n_users; u++) {
        int32_t row = r->user_rows[(size_t)u * r->n_feat + d->K];
        if (row < 0 || !user_has_vec(d, u)) continue;   /* no own row, or no CF vector: random start */
        for (int c = 0; c < n; c++) E[(size_t)row * w + c] = d->user_vec[(size_t)u * D + c] * k;
    }
}

/* Add v's first n columns to the sums of those of rows[0..nr) that fall in base..base+nt
 * (a token row carried by the entity of vector v). */
static void carriers_add(double *acc, int32_t *cnt, int nt, int n, const int32_t *rows, int nr, int base,
                         const float *v) {
    for (int j = 0; j < nr; j++) {
        int32_t row = rows[j] - base;
        if (row < 0 || row >= nt) continue;
        cnt[row]++;
        for (int c = 0; c < n; c++) acc[(size_t)row * n + c] += v[c];
    }
}

/* Rows base..base+nt of E (w wide) that have carriers: the mean of their sums scaled by k in
 * the first n columns; a row without carriers keeps its start. */
static void carriers_mean(float *E, int w, int n, int base, int nt, const double *acc, const int32_t *cnt, float k) {
    for (int row = 0; row < nt; row++)
        if (cnt[row] > 0)
            for (int c = 0; c < n; c++)
                E[(size_t)(base + row) * w + c] = (float)(acc[(size_t)row * n + c] / cnt[row]) * k;
}

void causal_init_token_rows(sasrec_model *m, const rec_data *d, const causal_rows *r) {
    if (!d->pool) return;
    int D = d->D, w = sasrec_cfg(m)->d, n = D < w ? D : w, nt = d->K * d->L + d->extra;
    double *acc = tr_calloc((size_t)nt * n, sizeof *acc);
    int32_t *cnt = tr_calloc((size_t)nt, sizeof *cnt), *counts = tr_malloc((size_t)(d->n_items ? d->n_items : 1) * sizeof *counts);
    rec_train_counts(d, counts);
    for (int32_t i = 0; i < d->n_items; i++)         /* an untrained item's CF vector is its start */
        if (counts[i] > 0)
            carriers_add(acc, cnt, nt, n, r->item_rows + (size_t)i * r->n_feat, d->cpi, 0, d->pool + (size_t)i * D);
    carriers_mean(sasrec_in_table(m), w, n, 0, nt, acc, cnt, cf_scale(d));
    free(acc);
    free(cnt);
    free(counts);
}

void causal_init_user_token_rows(sasrec_model *m, const rec_data *d, const causal_rows *r) {
    if (!d->user_vec || d->n_users <= 0 || !r->user_rows) return;
    int D = d->D, w = sasrec_cfg(m)->d, n = D < w ? D : w, nt = d->K * d->L, uoff = d->K * d->L + d->extra;
    double *acc = tr_calloc((size_t)nt * n, sizeof *acc);
    int32_t *cnt = tr_calloc((size_t)nt, sizeof *cnt);
    for (int32_t u = 0; u < d->n_users; u++)
        if (user_has_vec(d, u))                       /* not an unseen user, nor one without a vector */
            carriers_add(acc, cnt, nt, n, r->user_rows + (size_t)u * r->n_feat, d->K, uoff, d->user_vec + (size_t)u * D);
    carriers_mean(sasrec_in_table(m), w, n, uoff, nt, acc, cnt, user_cf_scale(d));
    free(acc);
    free(cnt);
}

/* The spec as the config JSON of the models table. */
static char *spec_json(const causal_spec *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "arch", "causal");
    cJSON_AddStringToObject(j, "pool", causal_pool_name(s->pool));
    cJSON_AddStringToObject(j, "item_input", causal_input_name(s->item_input));
    cJSON_AddNumberToObject(j, "d", s->d);
    cJSON_AddNumberToObject(j, "blocks", s->blocks);
    cJSON_AddNumberToObject(j, "heads", s->heads);
    if (s->no_prefix) cJSON_AddNumberToObject(j, "user_prefix", 0);      /* absent: 1 */
    if (s->user_input) cJSON_AddStringToObject(j, "user_input", causal_input_name(s->user_input));  /* absent: tokens */
    if (s->cf_blend > 0 || s->cf_blend_tied > 0) {                                    /* absent: 0 */
        cJSON_AddNumberToObject(j, "cf_blend", s->cf_blend);
        cJSON_AddNumberToObject(j, "cf_blend_tied", s->cf_blend_tied);
    }
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return out;
}

int causal_save(sqlite3 *db, int64_t run, const sasrec_model *m, const causal_spec *s, const rec_data *d) {
    char *cfg = spec_json(s);
    sqlite3_stmt *st = db_prep(db, "INSERT OR REPLACE INTO models (run_id, config, K, L, extra, pool_kind, cosine, "
                                   "hist_cap, n_params, params) VALUES (?,?,?,?,?,?,0,?,?,?)");
    int rc = -1;
    if (st) {
        size_t np = sasrec_n_params(m);
        sqlite3_bind_int64(st, 1, run);
        sqlite3_bind_text(st, 2, cfg, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 3, d->K);
        sqlite3_bind_int(st, 4, d->L);
        sqlite3_bind_int(st, 5, d->extra);
        sqlite3_bind_text(st, 6, s->cf_kind, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 7, s->hist_cap);
        sqlite3_bind_int64(st, 8, (int64_t)np);
        sqlite3_bind_blob64(st, 9, sasrec_params((sasrec_model *)m), np * sizeof(float), SQLITE_STATIC);
        rc = db_step_done(db, st);
        sqlite3_finalize(st);
    }
    free(cfg);
    return rc;
}

/* The stored config JSON of run `run` (malloc'd) or NULL with tr_error. */
static char *stored_config(sqlite3 *db, int64_t run) {
    sqlite3_stmt *st = db_prep(db, "SELECT config FROM models WHERE run_id=?");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, run);
    char *out = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) out = tr_strdup((const char *)sqlite3_column_text(st, 0));
    else tr_error("finetune run %lld has no stored model", (long long)run);
    sqlite3_finalize(st);
    return out;
}

int causal_is_stored(sqlite3 *db, int64_t run) {
    char *cfg = stored_config(db, run);
    if (!cfg) return -1;
    cJSON *j = cJSON_Parse(cfg);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "arch");
    int is = cJSON_IsString(a) && !strcmp(a->valuestring, "causal");
    cJSON_Delete(j);
    free(cfg);
    return is;
}

/* The spec from the stored config JSON and row; -1 with tr_error when malformed. */
static int spec_parse(const char *json, causal_spec *s) {
    cJSON *j = cJSON_Parse(json);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "pool"), *in = cJSON_GetObjectItemCaseSensitive(j, "item_input");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "d"), *b = cJSON_GetObjectItemCaseSensitive(j, "blocks");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "heads"), *up = cJSON_GetObjectItemCaseSensitive(j, "user_prefix");
    const cJSON *ui = cJSON_GetObjectItemCaseSensitive(j, "user_input"), *cb = cJSON_GetObjectItemCaseSensitive(j, "cf_blend");
    const cJSON *cbt = cJSON_GetObjectItemCaseSensitive(j, "cf_blend_tied");
    int rc = -1;
    if (cJSON_IsString(p) && cJSON_IsString(in) && cJSON_IsNumber(d) && cJSON_IsNumber(b) && cJSON_IsNumber(h) &&
        (!up || cJSON_IsNumber(up)) && (!ui || cJSON_IsString(ui)) && (!cb || cJSON_IsNumber(cb)) && (!cbt || cJSON_IsNumber(cbt))) {
        s->pool = causal_pool_parse(p->valuestring);
        s->item_input = causal_input_parse(in->valuestring);
        s->d = d->valueint; s->blocks = b->valueint; s->heads = h->valueint;
        s->no_prefix = up && up->valueint == 0;
        s->user_input = ui ? causal_input_parse(ui->valuestring) : CAUSAL_IN_TOKENS;
        s->cf_blend = cb ? cb->valuedouble : 0;
        s->cf_blend_tied = cbt ? cbt->valuedouble : s->cf_blend;
        rc = s->pool < 0 || s->item_input < 0 || s->user_input < 0 || (up && up->valueint != 0 && up->valueint != 1) ||
             !(s->cf_blend >= 0 && s->cf_blend < 1) || !(s->cf_blend_tied >= 0 && s->cf_blend_tied < 1) ? -1 : 0;
    }
    cJSON_Delete(j);
    return rc ? tr_error("the stored causal model's config is malformed: %s", json) : 0;
}

int causal_load(sqlite3 *db, const char *dataset, int64_t run, int max_B, rec_data *d, causal_loaded *out) {
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = db_prep(db, "SELECT config, pool_kind, hist_cap, n_params, params FROM models WHERE run_id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run);
    int rc = -1;
    if (sqlite3_step(st) != SQLITE_ROW) {
        tr_error("finetune run %lld has no stored model", (long long)run);
        goto done;
    }
    if (spec_parse((const char *)sqlite3_column_text(st, 0), &out->s) != 0) goto done;
    snprintf(out->s.cf_kind, sizeof out->s.cf_kind, "%s", (const char *)sqlite3_column_text(st, 1));
    out->s.hist_cap = sqlite3_column_int(st, 2);
    out->tokenize_run = stage_upstream_run(db, run);
    if (rec_data_load(db, dataset, out->tokenize_run, out->s.cf_kind, d) != 0) goto done;
    if (out->s.cf_blend > 0 || out->s.cf_blend_tied > 0) {
        if (rec_user_vectors_load(db, d, out->s.cf_kind) <= 0) {
            tr_error("finetune run %lld blends CF scores in, but cf run %lld has no '%s' user vectors", (long long)run,
                     (long long)d->cf_run, out->s.cf_kind);
            goto done;
        }
        out->blend = (sasrec_blend){d->user_vec, d->pool, d->D, (float)out->s.cf_blend, (float)out->s.cf_blend_tied,
                                    d->tied};
    }
    causal_rows_build(d, &out->s, &out->rows);
    sasrec_config c;
    if (causal_config(&out->s, d, &out->rows, max_B, &c) != 0) goto done;
    rng_t r;
    rng_seed(&r, 0);
    if (!(out->m = sasrec_new(&c, &r))) goto done;
    size_t np = sasrec_n_params(out->m);
    if ((size_t)sqlite3_column_int64(st, 3) != np || (size_t)sqlite3_column_bytes(st, 4) != np * sizeof(float)) {
        tr_error("finetune run %lld: the stored parameters do not fit the causal model's shape", (long long)run);
        goto done;
    }
    memcpy(sasrec_params(out->m), sqlite3_column_blob(st, 4), np * sizeof(float));
    rc = 0;
done:
    sqlite3_finalize(st);
    if (rc) causal_loaded_free(out);
    return rc;
}

void causal_loaded_free(causal_loaded *l) {
    sasrec_free(l->m);
    causal_rows_free(&l->rows);
    memset(l, 0, sizeof *l);
}
