/* test_finetune_causal: `tokenrec finetune --arch causal`, the causal ID-token LLM. Its input
 * rows (tokens, user prefix, an own row only for trained items); causality over token rows
 * (changing item t+1's tokens never changes the output at t, padding never changes a real
 * position); one causal pass giving each target the loss its prefix alone gets; pool tokens
 * without CF vectors; and through the binary on a small synthetic dataset: training,
 * evaluate (also --unseen), the fingerprint (--arch and --pool), and a SIGKILL mid-training
 * resuming to a byte-identical model. (The gradients of every item side: test_sasrec.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "causalrec.h"
#include "db.h"
#include "recmodel.h"
#include "sasrec_fit.h"
#include "stage.h"
#include "testutil.h"

/* A small rec_data by hand: 4 users, 6 items, K 2 books of L 4 codes plus a disambiguation
 * book of 2; item 5 never occurs in a train split. */
static void small_data(rec_data *d) {
    memset(d, 0, sizeof *d);
    static int64_t off[5] = {0, 5, 9, 14, 17};
    static int32_t seq[17] = {0, 1, 2, 3, 4,  1, 2, 3, 5,  4, 3, 2, 1, 0,  2, 0, 5};
    static int32_t uc[8] = {0, 1, 2, 3, 1, 1, 3, 0};
    static int32_t ic[18] = {0, 0, 0, 1, 1, 0, 2, 2, 1, 3, 3, 0, 0, 1, 1, 1, 2, 0};
    d->n_users = 4; d->n_items = 6; d->off = off; d->seq = seq;
    d->K = 2; d->L = 4; d->extra = 2; d->cpi = 3; d->user_codes = uc; d->item_codes = ic;
}

static void rows_layout(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    causal_rows r;
    causal_rows_build(&d, &(causal_spec){.item_input = CAUSAL_IN_TOKENS_ID}, &r);
    /* items: book k at k*4 + code, the extra book at 8 + code; users from 10; ids from 18 */
    assert_int_equal(r.n_feat, 4);
    assert_int_equal(r.n_rows, 18 + 6);
    int32_t want_item1[4] = {1, 4 + 1, 8 + 0, 18 + 1}, want_user2[4] = {10 + 1, 10 + 4 + 1, -1, -1};
    assert_memory_equal(r.item_rows + 4, want_item1, sizeof want_item1);
    assert_memory_equal(r.user_rows + 8, want_user2, sizeof want_user2);
    assert_int_equal(r.item_rows[5 * 4 + 3], -1);      /* item 5 is only ever valid/test */
    assert_int_equal(r.item_rows[4 * 4 + 3], 18 + 4);  /* item 4 is trained (user 2) */
    causal_rows_free(&r);
    causal_rows_build(&d, &(causal_spec){.item_input = CAUSAL_IN_TOKENS}, &r);
    assert_int_equal(r.n_feat, 3);
    assert_int_equal(r.n_rows, 18);
    causal_rows_free(&r);
    /* --user-input tokens+id: a row per user after the items' own rows (from 24); user 1,
     * unseen, by its tokens alone; without the items' own rows the users' start at 18 */
    static uint8_t skip[4] = {0, 1, 0, 0};
    d.skip = skip;
    causal_rows_build(&d, &(causal_spec){.item_input = CAUSAL_IN_TOKENS_ID, .user_input = CAUSAL_IN_TOKENS_ID}, &r);
    assert_int_equal(r.n_feat, 4);
    assert_int_equal(r.n_rows, 24 + 4);
    int32_t want_u2[4] = {10 + 1, 10 + 4 + 1, 24 + 2, -1}, want_u1[4] = {10 + 2, 10 + 4 + 3, -1, -1};
    assert_memory_equal(r.user_rows + 8, want_u2, sizeof want_u2);
    assert_memory_equal(r.user_rows + 4, want_u1, sizeof want_u1);
    assert_memory_equal(r.item_rows + 4, want_item1, sizeof want_item1);   /* items unchanged */
    causal_rows_free(&r);
    causal_rows_build(&d, &(causal_spec){.item_input = CAUSAL_IN_TOKENS, .user_input = CAUSAL_IN_TOKENS_ID}, &r);
    assert_int_equal(r.n_feat, 3);
    assert_int_equal(r.n_rows, 18 + 4);
    assert_int_equal(r.user_rows[3 * 3 + 2], 18 + 3);
    causal_rows_free(&r);
    /* no disambiguation book and no items' own rows: an item's 2 tokens are padded to the
     * user's 3 rows with -1; the users' own rows start after the user tokens (from 16) */
    rec_data d2 = d;
    d2.extra = 0;
    d2.cpi = 2;
    causal_rows_build(&d2, &(causal_spec){.item_input = CAUSAL_IN_TOKENS, .user_input = CAUSAL_IN_TOKENS_ID}, &r);
    assert_int_equal(r.n_feat, 3);
    assert_int_equal(r.n_rows, 16 + 4);
    int32_t want_pad1[3] = {0, 4 + 1, -1}, want_u0[3] = {8 + 0, 8 + 4 + 1, 16 + 0};   /* item 1: codes {0, 1} */
    assert_memory_equal(r.item_rows + 3, want_pad1, sizeof want_pad1);
    assert_memory_equal(r.user_rows, want_u0, sizeof want_u0);
    assert_int_equal(r.user_rows[3 + 2], -1);          /* user 1, unseen */
    causal_rows_free(&r);
    /* without the user position there is no user row of any kind */
    causal_rows_build(&d, &(causal_spec){.item_input = CAUSAL_IN_TOKENS_ID, .user_input = CAUSAL_IN_TOKENS_ID,
                                         .no_prefix = 1}, &r);
    assert_null(r.user_rows);
    assert_int_equal(r.n_rows, 24);
    causal_rows_free(&r);
}

/* A model of the small data with rows r and pool `pool`. */
static sasrec_model *small_model(rec_data *d, causal_rows *r, int pool, float dropout) {
    causal_spec s = {.pool = pool, .item_input = CAUSAL_IN_TOKENS_ID, .cf_kind = "mean", .d = 8, .blocks = 2,
                     .heads = 2, .hist_cap = 6};
    causal_rows_build(d, &s, r);
    sasrec_config c;
    assert_int_equal(causal_config(&s, d, r, 3, &c), 0);
    c.dropout = dropout;
    rng_t g;
    rng_seed(&g, 11);
    sasrec_model *m = sasrec_new(&c, &g);
    assert_non_null(m);
    return m;
}

/* Row b of a batch: user u's prefix then items, padded to T with item 0's rows. */
static void put_seq(const sasrec_model *m, const causal_rows *r, int32_t u, const int32_t *items, int n, int T,
                    int32_t *out) {
    int S = sasrec_cfg(m)->n_feat;
    memcpy(out, r->user_rows + (size_t)u * S, (size_t)S * sizeof *out);
    for (int t = 1; t < T; t++) sasrec_item_rows(m, t - 1 < n ? items[t - 1] : 0, out + (size_t)t * S);
}

static void causal_over_tokens(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    d.pool = NULL;
    causal_rows r;
    sasrec_model *m = small_model(&d, &r, CAUSAL_POOL_TOKENS, 0.0f);
    int S = sasrec_cfg(m)->n_feat, T = 6, dm = 8;
    int32_t items[5] = {0, 1, 2, 3, 4}, ids[6 * 4], len[1] = {6};
    put_seq(m, &r, 0, items, 5, T, ids);
    sasrec_batch b = {.B = 1, .T = T, .ids = ids, .len = len};
    assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, NULL), 0);
    float h0[6 * 8];
    memcpy(h0, sasrec_hidden(m), sizeof h0);
    /* item t+1's tokens change (position t + 2 after the prefix): positions <= t + 1 keep
     * their output bit for bit, the later ones move */
    for (int p = 1; p < T; p++) {
        int32_t keep[4];
        memcpy(keep, ids + p * S, sizeof keep);
        ids[p * S] = (ids[p * S] + 1) % 4;             /* another code of book 0 */
        assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, NULL), 0);
        const float *h = sasrec_hidden(m);
        for (int t = 0; t < T; t++) {
            double diff = 0;
            for (int k = 0; k < dm; k++) diff += fabs(h[t * dm + k] - h0[t * dm + k]);
            if (t < p) assert_true(diff == 0.0);
            else assert_true(diff > 1e-5);
        }
        memcpy(ids + p * S, keep, sizeof keep);
    }
    /* padding: the first 4 positions alone, and with 2 padding positions of other rows */
    int32_t ids2[6 * 4], len2[1] = {4};
    put_seq(m, &r, 0, items, 3, 6, ids2);
    for (int k = 4 * S; k < 6 * S; k++) ids2[k] = k % 3 ? -1 : 7;
    sasrec_batch b2 = {.B = 1, .T = 6, .ids = ids2, .len = len2};
    assert_int_equal(sasrec_forward(m, &b2, 0, NULL, 0, NULL), 0);
    for (int k = 0; k < 4 * dm; k++) assert_true(sasrec_hidden(m)[k] == h0[k]);
    sasrec_free(m);
    causal_rows_free(&r);
}

/* Each target's loss in one pass over the whole sequence (the other targets masked) equals
 * its loss with only its prefix as input: the equivalence that lets one pass train every
 * target. Over each item side. */
static void one_pass_equals_prefixes(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    float pool[6 * 3];
    for (int k = 0; k < 18; k++) pool[k] = (float)((k * 7) % 5) - 2.0f;
    d.pool = pool;
    d.D = 3;
    for (int side = CAUSAL_POOL_CF; side <= CAUSAL_POOL_ID; side++) {
        if (side == CAUSAL_POOL_LEARNED) continue;       /* needs D == d; the same code as tokens' table */
        causal_rows r;
        sasrec_model *m = small_model(&d, &r, side, 0.0f);
        int S = sasrec_cfg(m)->n_feat, T = 6;
        int32_t items[5] = {0, 1, 2, 3, 4}, ids[6 * 4], len[1], pos[6];
        double sum_full = 0, sum_pref = 0;
        for (int t = 0; t < T - 1; t++) {                /* target: items[t] after position t */
            float lf = 0, lp = 0;
            put_seq(m, &r, 1, items, 5, T, ids);
            for (int k = 0; k < T; k++) pos[k] = k == t ? items[t] : -1;
            len[0] = T;
            sasrec_batch full = {.B = 1, .T = T, .ids = ids, .len = len, .pos = pos};
            assert_int_equal(sasrec_forward(m, &full, 0, NULL, 0, &lf), 1);
            int32_t idp[6 * 4], lenp[1] = {t + 1}, posp[6];
            memcpy(idp, ids, (size_t)(t + 1) * S * sizeof *idp);
            for (int k = 0; k <= t; k++) posp[k] = k == t ? items[t] : -1;
            sasrec_batch pref = {.B = 1, .T = t + 1, .ids = idp, .len = lenp, .pos = posp};
            assert_int_equal(sasrec_forward(m, &pref, 0, NULL, 0, &lp), 1);
            assert_true(fabsf(lf - lp) <= 1e-5f * (1 + fabsf(lf)));
            sum_pref += lp;
            sum_full += lf;
        }
        /* and all targets at once: the mean of the per-target losses */
        put_seq(m, &r, 1, items, 5, T, ids);
        for (int k = 0; k < T; k++) pos[k] = k < T - 1 ? items[k] : -1;
        len[0] = T;
        float all = 0;
        sasrec_batch full = {.B = 1, .T = T, .ids = ids, .len = len, .pos = pos};
        assert_int_equal(sasrec_forward(m, &full, 0, NULL, 0, &all), 5);
        print_message("side %d: one pass %.6f, mean over prefixes %.6f\n", side, all, sum_pref / 5);
        assert_true(fabs(all - sum_pref / 5) < 1e-5 * (1 + fabs(all)));
        assert_true(fabs(sum_full - sum_pref) < 1e-4);
        sasrec_free(m);
        causal_rows_free(&r);
    }
}

/* Pool tokens needs no CF vectors, and an item never trained (no own row) still scores
 * finitely from its tokens; pool cf without them, and learned of another width, are refused. */
static void pool_tokens_without_cf(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    d.pool = NULL;
    causal_rows r;
    sasrec_model *m = small_model(&d, &r, CAUSAL_POOL_TOKENS, 0.0f);
    int32_t items[2] = {1, 2}, ids[3 * 4], len[1] = {3};
    put_seq(m, &r, 0, items, 2, 3, ids);
    sasrec_batch b = {.B = 1, .T = 3, .ids = ids, .len = len};
    float scores[6];
    assert_int_equal(sasrec_scores(m, &b, scores), 0);
    for (int i = 0; i < 6; i++) assert_true(isfinite(scores[i]));
    assert_true(scores[5] != 0.0f);
    sasrec_free(m);
    causal_spec s = {.pool = CAUSAL_POOL_CF, .item_input = CAUSAL_IN_TOKENS_ID, .d = 8, .blocks = 1, .heads = 1,
                     .hist_cap = 4};
    sasrec_config c;
    assert_int_equal(causal_config(&s, &d, &r, 2, &c), -1);
    float pool[6 * 3] = {0};
    d.pool = pool;
    d.D = 3;
    s.pool = CAUSAL_POOL_LEARNED;
    assert_int_equal(causal_config(&s, &d, &r, 2, &c), -1);   /* 3-wide vectors, d 8 */
    causal_rows_free(&r);
}

/* Pool id: an item's score is the query against its own input row alone, and an item never
 * trained (no own row) scores against the sum of its token rows; it needs the own rows. */
static void pool_id_scores_own_rows(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    d.pool = NULL;                                      /* pool id needs no CF vectors */
    causal_rows r;
    sasrec_model *m = small_model(&d, &r, CAUSAL_POOL_ID, 0.0f);
    int S = sasrec_cfg(m)->n_feat, dm = sasrec_cfg(m)->d;
    int32_t items[3] = {1, 2, 3}, ids[4 * 4], len[1] = {4};
    put_seq(m, &r, 1, items, 3, 4, ids);
    sasrec_batch b = {.B = 1, .T = 4, .ids = ids, .len = len};
    float scores[6];
    assert_int_equal(sasrec_scores(m, &b, scores), 0);
    assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, NULL), 0);
    const float *h = sasrec_hidden(m) + 3 * dm, *E = sasrec_in_table(m);
    int untrained = 0;
    for (int32_t i = 0; i < 6; i++) {
        const int32_t *row = r.item_rows + (size_t)i * S;
        double want = 0;
        for (int s = 0; s < S; s++) {
            if (row[s] < 0 || (s < S - 1 && row[S - 1] >= 0)) continue;
            for (int k = 0; k < dm; k++) want += (double)h[k] * E[(size_t)row[s] * dm + k];
        }
        untrained += row[S - 1] < 0;
        assert_true(isfinite(scores[i]));
        assert_true(fabs(scores[i] - want) <= 1e-4 * (1 + fabs(want)));
    }
    assert_int_equal(untrained, 1);                     /* item 5: scored by its tokens */
    sasrec_free(m);
    causal_rows_free(&r);
    /* without own rows (--item-input tokens) it is refused */
    causal_spec s = {.pool = CAUSAL_POOL_ID, .item_input = CAUSAL_IN_TOKENS, .d = 8, .blocks = 1, .heads = 1,
                     .hist_cap = 4};
    causal_rows_build(&d, &s, &r);
    sasrec_config c;
    assert_int_equal(causal_config(&s, &d, &r, 2, &c), -1);
    causal_rows_free(&r);
}

/* CF item vectors for the small data, 4 wide: pool[i] = (i * mul) % 7 - off; returns the
 * factor that scales them to norm 1 on average (cf_scale's). */
static float small_cf(rec_data *d, float *pool, int mul, float off) {
    double sq = 0;
    for (int i = 0; i < 6 * 4; i++) { pool[i] = (float)((i * mul) % 7) - off; sq += (double)pool[i] * pool[i]; }
    d->pool = pool;
    d->D = 4;
    return (float)(1.0 / sqrt(sq / 6));
}

/* --id-init cf: each trained item's own row is its CF vector scaled to norm 1 on average (in
 * the first min(D, d) columns); an item never trained has no own row, token rows stay. */
static void id_rows_from_cf(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    float pool[6 * 4];
    float k = small_cf(&d, pool, 1, 2.5f);            /* 4 wide: narrower than the model's 8 */
    causal_rows r;
    sasrec_model *m = small_model(&d, &r, CAUSAL_POOL_TOKENS, 0.0f);
    float *E = sasrec_in_table(m), before[24 * 8];
    memcpy(before, E, sizeof before);
    causal_init_id_rows(m, &d, &r);
    for (int32_t i = 0; i < 6; i++) {
        int32_t row = r.item_rows[i * 4 + 3];
        if (i == 5) { assert_int_equal(row, -1); continue; }
        for (int c = 0; c < 8; c++)
            assert_float_equal(E[row * 8 + c], c < 4 ? pool[i * 4 + c] * k : before[row * 8 + c], 1e-6);
    }
    for (int row = 0; row < 18; row++)                /* token and user rows untouched */
        assert_memory_equal(E + row * 8, before + row * 8, 8 * sizeof(float));
    sasrec_free(m);
    causal_rows_free(&r);
}

/* --token-init cf: each item token row is the mean of the scaled CF vectors of the trained
 * items that carry it (item 5, never trained, counts for none); a token no trained item
 * carries, the user rows and the own rows keep their random start. */
static void token_rows_from_cf(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    float pool[6 * 4];
    float k = small_cf(&d, pool, 3, 3.0f);
    int32_t codes[18];
    memcpy(codes, d.item_codes, sizeof codes);
    codes[3 * 3] = 0;                                 /* item 3 leaves book 0's code 3 to no one */
    d.item_codes = codes;
    causal_rows r;
    sasrec_model *m = small_model(&d, &r, CAUSAL_POOL_TOKENS, 0.0f);
    float *E = sasrec_in_table(m), before[24 * 8];
    memcpy(before, E, sizeof before);
    causal_init_token_rows(m, &d, &r);
    /* codes: item 0 {0,0,0}, 1 {1,1,0}, 2 {2,2,1}, 3 {0,3,0}, 4 {0,1,1}, 5 {1,2,0} (never
     * trained); book 0 at row = code, book 1 at 4 + code, the extra book at 8 + code */
    static const int carriers[10][5] = {{0, 3, 4, -1}, {1, -1}, {2, -1}, {-1}, {0, -1},
                                        {1, 4, -1}, {2, -1}, {3, -1}, {0, 1, 3, -1}, {2, 4, -1}};
    for (int row = 0; row < 10; row++) {
        for (int c = 0; c < 8; c++) {
            double want = 0;
            int n = 0;
            for (; carriers[row][n] >= 0; n++) want += pool[carriers[row][n] * 4 + c];
            if (n == 0 || c >= 4) assert_float_equal(E[row * 8 + c], before[row * 8 + c], 0);
            else assert_float_equal(E[row * 8 + c], (float)(want / n) * k, 1e-5);
        }
    }
    assert_memory_equal(E + 10 * 8, before + 10 * 8, 14 * 8 * sizeof(float));   /* users, own rows */
    sasrec_free(m);
    causal_rows_free(&r);
}

/* --token-init users: each user token row is the mean of the CF vectors of the users that
 * carry it, scaled to norm 1 on average over the users counted; a user without a vector (a
 * zero row) or skipped (unseen) counts for none. Item token rows and own rows stay. */
static void user_token_rows_from_cf(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    float pool[6 * 4];
    small_cf(&d, pool, 1, 2.5f);
    /* users' codes (book 0, book 1): 0 {0,1}, 1 {2,3} without a vector, 2 {1,1} unseen, 3 {0,2} */
    static int32_t uc[8] = {0, 1, 2, 3, 1, 1, 0, 2};
    static uint8_t skip[4] = {0, 0, 1, 0};
    float uv[4 * 4] = {1, 2, 0, -1,  0, 0, 0, 0,  5, 5, 5, 5,  3, -2, 1, 0};
    d.user_codes = uc;
    d.skip = skip;
    d.user_vec = uv;
    float k = (float)(1.0 / sqrt((6.0 + 14.0) / 2));   /* users 0 and 3: |v|^2 6 and 14 */
    causal_rows r;
    sasrec_model *m = small_model(&d, &r, CAUSAL_POOL_TOKENS, 0.0f);
    float *E = sasrec_in_table(m), before[24 * 8];
    memcpy(before, E, sizeof before);
    causal_init_user_token_rows(m, &d, &r);
    /* user rows: book 0 at 10 + code, book 1 at 14 + code */
    static const int carriers[8][3] = {{0, 3, -1}, {-1}, {-1}, {-1}, {-1}, {0, -1}, {3, -1}, {-1}};
    for (int j = 0; j < 8; j++) {
        int row = 10 + j;
        for (int c = 0; c < 8; c++) {
            double want = 0;
            int n = 0;
            for (; carriers[j][n] >= 0; n++) want += uv[carriers[j][n] * 4 + c % 4];
            if (n == 0 || c >= 4) assert_float_equal(E[row * 8 + c], before[row * 8 + c], 0);
            else assert_float_equal(E[row * 8 + c], (float)(want / n) * k, 1e-5);
        }
    }
    assert_memory_equal(E, before, 10 * 8 * sizeof(float));                     /* item tokens */
    assert_memory_equal(E + 18 * 8, before + 18 * 8, 6 * 8 * sizeof(float));   /* own rows */
    d.user_vec = NULL;                                 /* no users' vectors: nothing moves */
    memcpy(before, E, sizeof before);
    causal_init_user_token_rows(m, &d, &r);
    assert_memory_equal(E, before, sizeof before);
    sasrec_free(m);
    causal_rows_free(&r);
}

/* --user-input tokens+id, --id-init cf: each seen user's own row is its CF vector scaled to
 * norm 1 on average over the users with an own row and a vector (first min(D, d) columns);
 * a user without a vector keeps its random start, an unseen user has no own row; every
 * other row stays. */
static void user_id_rows_from_cf(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    float pool[6 * 4];
    small_cf(&d, pool, 1, 2.5f);
    static uint8_t skip[4] = {0, 0, 1, 0};
    float uv[4 * 4] = {1, 2, 0, -1,  0, 0, 0, 0,  5, 5, 5, 5,  3, -2, 1, 0};
    d.skip = skip;
    d.user_vec = uv;
    float k = (float)(1.0 / sqrt((6.0 + 14.0) / 2));   /* users 0 and 3: |v|^2 6 and 14 */
    causal_spec s = {.pool = CAUSAL_POOL_TOKENS, .item_input = CAUSAL_IN_TOKENS_ID, .user_input = CAUSAL_IN_TOKENS_ID,
                     .cf_kind = "mean", .d = 8, .blocks = 1, .heads = 1, .hist_cap = 6};
    causal_rows r;
    causal_rows_build(&d, &s, &r);
    sasrec_config c;
    assert_int_equal(causal_config(&s, &d, &r, 3, &c), 0);
    rng_t g;
    rng_seed(&g, 11);
    sasrec_model *m = sasrec_new(&c, &g);
    assert_non_null(m);
    float *E = sasrec_in_table(m), before[28 * 8];
    memcpy(before, E, sizeof before);
    causal_init_user_id_rows(m, &d, &r);
    assert_int_equal(r.user_rows[2 * 4 + 2], -1);      /* user 2, unseen: no own row */
    for (int32_t u = 0; u < 4; u++) {
        if (u == 2) continue;
        int row = 24 + u;
        assert_int_equal(r.user_rows[u * 4 + 2], row);
        for (int col = 0; col < 8; col++)
            assert_float_equal(E[row * 8 + col], u == 1 || col >= 4 ? before[row * 8 + col] : uv[u * 4 + col] * k, 1e-6);
    }
    assert_memory_equal(E, before, 24 * 8 * sizeof(float));                     /* tokens, items' rows */
    assert_memory_equal(E + 26 * 8, before + 26 * 8, 8 * sizeof(float));       /* user 2's unused row */
    sasrec_free(m);
    causal_rows_free(&r);
}

/* A training of the small data (rows into *r) on a one-block d 8 model with item side
 * `pool`: batches of 2, lr 1e-2, seed 5, the user rows and their target, every target once;
 * no dropout, epochs and checks left to the caller. */
static void small_fit_cfg(rec_data *d, int pool, causal_rows *r, sasrec_train_cfg *tc) {
    causal_spec s = {.pool = pool, .item_input = CAUSAL_IN_TOKENS_ID, .cf_kind = "mean", .d = 8, .blocks = 1,
                     .heads = 1, .hist_cap = 6};
    causal_rows_build(d, &s, r);
    memset(tc, 0, sizeof *tc);
    assert_int_equal(causal_config(&s, d, r, 4, &tc->model), 0);
    tc->batch = 2; tc->patience = 9; tc->lr = 1e-2f; tc->clip = 1; tc->seed = 5; tc->quiet = 1;
    tc->user_rows = r->user_rows; tc->windows = 1;
}

/* --token-drop: training with p = 1 never feeds an item position its token rows (only its
 * own row), so with the fixed CF item side (pool cf) the item token rows get no gradient and
 * keep their start; with p = 0 they train. The user rows train either way. */
static void token_drop_keeps_tokens_out(void **state) {
    (void)state;
    float pool[6 * 4];
    for (int i = 0; i < 6 * 4; i++) pool[i] = (float)((i * 5) % 9) * 0.25f - 1.0f;
    for (int p = 0; p <= 1; p++) {
        rec_data d;
        small_data(&d);
        d.pool = pool;
        d.D = 4;
        causal_rows r;
        sasrec_train_cfg tc;
        small_fit_cfg(&d, CAUSAL_POOL_CF, &r, &tc);
        tc.model.dropout = 0.1f;
        tc.epochs = 4; tc.eval_every = 2;
        tc.token_drop = (float)p;
        rng_t g;                                       /* sasrec_fit's start: the same draws */
        rng_seed(&g, tc.seed);
        sasrec_model *m0 = sasrec_new(&tc.model, &g), *m = NULL;
        assert_non_null(m0);
        assert_int_equal(sasrec_fit(NULL, &d, &tc, &m, NULL), 0);
        const float *E0 = sasrec_in_table(m0), *E = sasrec_in_table(m);
        size_t tok = (size_t)10 * 8, users = (size_t)8 * 8;   /* item token rows 0..9, user rows 10..17 */
        int tokens_same = !memcmp(E, E0, tok * sizeof *E), users_same = !memcmp(E + tok, E0 + tok, users * sizeof *E);
        assert_int_equal(tokens_same, p == 1);
        assert_false(users_same);
        static const int inputs[4] = {0, 1, 3, 4};    /* items that are inputs (2 is only ever a target) */
        for (int j = 0; j < 4; j++)                   /* their own rows (18 + item) train */
            assert_memory_not_equal(E + (size_t)(18 + inputs[j]) * 8, E0 + (size_t)(18 + inputs[j]) * 8, 8 * sizeof *E);
        sasrec_free(m0);
        sasrec_free(m);
        causal_rows_free(&r);
    }
}

/* --ties shuffle: with runs of tied timestamps the training sees other orders of them, so
 * the model differs from file-order training; where no two train items tie, shuffling draws
 * nothing and the model is the same to the bit. */
static void ties_shuffle_trains_other_orders(void **state) {
    (void)state;
    /* user 0: 1 2 3 tied; user 2: 3 2 1 tied (the valid and test items never move) */
    static uint8_t runs[17] = {0, 0, 1, 1, 0,  0, 0, 0, 0,  0, 0, 1, 1, 0,  0, 0, 0};
    static uint8_t none[17];
    float *par[3];
    size_t np = 0;
    for (int k = 0; k < 3; k++) {       /* file order, shuffled runs, shuffled without runs */
        rec_data d;
        small_data(&d);
        d.tied = k == 2 ? none : runs;
        causal_rows r;
        sasrec_train_cfg tc;
        small_fit_cfg(&d, CAUSAL_POOL_TOKENS, &r, &tc);
        tc.epochs = 3; tc.eval_every = 3;
        tc.tie_shuffle = k > 0;
        sasrec_model *m = NULL;
        assert_int_equal(sasrec_fit(NULL, &d, &tc, &m, NULL), 0);
        np = sasrec_n_params(m);
        par[k] = malloc(np * sizeof(float));
        memcpy(par[k], sasrec_params(m), np * sizeof(float));
        sasrec_free(m);
        causal_rows_free(&r);
    }
    assert_memory_not_equal(par[0], par[1], np * sizeof(float));
    assert_memory_equal(par[0], par[2], np * sizeof(float));
    for (int k = 0; k < 3; k++) free(par[k]);
}

/* --user-target 0: the user position trains no target, so an epoch trains the first train
 * item of no user (one target fewer per user; a user with one train item has none left) and
 * the model differs; 1: every train item is a target once. */
static void user_target_off(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    int64_t want_t[2] = {0, 0}, want_p[2] = {0, 0};
    for (int32_t u = 0; u < d.n_users; u++) {
        int nt = rec_n_train(&d, u);
        want_t[1] += nt;                               /* the prefix and nt - 1 items: nt positions */
        want_p[1] += nt;
        want_t[0] += nt > 1 ? nt - 1 : 0;
        want_p[0] += nt > 1 ? nt : 0;
    }
    float *par[2];
    size_t np = 0;
    for (int ut = 0; ut <= 1; ut++) {
        causal_rows r;
        sasrec_train_cfg tc;
        small_fit_cfg(&d, CAUSAL_POOL_TOKENS, &r, &tc);
        tc.epochs = 2; tc.eval_every = 1;
        tc.no_user_target = !ut;
        sasrec_model *m = NULL;
        sasrec_fit_result res;
        assert_int_equal(sasrec_fit(NULL, &d, &tc, &m, &res), 0);
        assert_int_equal(res.targets, want_t[ut]);
        assert_int_equal(res.positions, want_p[ut]);
        np = sasrec_n_params(m);
        par[ut] = malloc(np * sizeof(float));
        memcpy(par[ut], sasrec_params(m), np * sizeof(float));
        sasrec_free(m);
        causal_rows_free(&r);
    }
    assert_true(want_t[0] < want_t[1] && want_p[0] < want_p[1]);   /* small_data has a one-item user */
    assert_memory_not_equal(par[0], par[1], np * sizeof(float));
    free(par[0]);
    free(par[1]);
}

/* --user-prefix 0: no user position, so an epoch trains nt - 1 targets per user over nt - 1
 * item positions, the model's window (max_len) is hist-cap items alone, and the users'
 * tokens change nothing (with the prefix, the control, they change the model). */
static void user_prefix_off(void **state) {
    (void)state;
    rec_data d;
    small_data(&d);
    int32_t uc[8];                               /* the users' codes, ours to change */
    memcpy(uc, d.user_codes, sizeof uc);
    d.user_codes = uc;
    int64_t want = 0;
    for (int32_t u = 0; u < d.n_users; u++) want += rec_n_train(&d, u) - 1;
    for (int pre = 0; pre <= 1; pre++) {
        float *par[2];
        size_t np = 0;
        for (int v = 0; v < 2; v++) {
            if (v)                               /* other codes for every user */
                for (int32_t u = 0; u < d.n_users; u++)
                    d.user_codes[(size_t)u * d.K] = (d.user_codes[(size_t)u * d.K] + 1) % d.L;
            causal_spec s = {.pool = CAUSAL_POOL_TOKENS, .item_input = CAUSAL_IN_TOKENS_ID, .cf_kind = "mean", .d = 8,
                             .blocks = 1, .heads = 1, .hist_cap = 6, .no_prefix = !pre};
            causal_rows r;
            causal_rows_build(&d, &s, &r);
            assert_true(pre ? r.user_rows != NULL : r.user_rows == NULL);
            sasrec_train_cfg tc;
            memset(&tc, 0, sizeof tc);
            assert_int_equal(causal_config(&s, &d, &r, 4, &tc.model), 0);
            assert_int_equal(tc.model.max_len, 6 + pre);
            tc.batch = 2; tc.patience = 9; tc.lr = 1e-2f; tc.clip = 1; tc.seed = 5; tc.quiet = 1;
            tc.user_rows = r.user_rows; tc.windows = 1; tc.epochs = 2; tc.eval_every = 1;
            sasrec_model *m = NULL;
            sasrec_fit_result res;
            assert_int_equal(sasrec_fit(NULL, &d, &tc, &m, &res), 0);
            if (!pre) {
                assert_int_equal(res.targets, want);
                assert_int_equal(res.positions, want);
            }
            np = sasrec_n_params(m);
            par[v] = malloc(np * sizeof(float));
            memcpy(par[v], sasrec_params(m), np * sizeof(float));
            sasrec_free(m);
            causal_rows_free(&r);
        }
        if (pre) assert_memory_not_equal(par[0], par[1], np * sizeof(float));
        else assert_memory_equal(par[0], par[1], np * sizeof(float));
        free(par[0]);
        free(par[1]);
    }
}

/* ---- through the binary ---- */

/* The first column of the first row of sql as a double (def when there is none). */
static double db_query_double(sqlite3 *db, double def, const char *sql) {
    sqlite3_stmt *st = db_prep(db, sql);
    double v = def;
    if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}
/* The fingerprint of run `run` (malloc'd). */
static char *fingerprint(sqlite3 *db, int64_t run) {
    sqlite3_stmt *st = db_prep(db, "SELECT fingerprint FROM stage_runs WHERE id=?");
    assert_non_null(st);
    sqlite3_bind_int64(st, 1, run);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char *s = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return s;
}

#define CAUSAL "--arch causal --d-model 32 --layers 1 --heads 1 --hist 12 --epochs 12 --eval-every 3 --batch 32 " \
               "--lr 5e-3 --dropout 0.2 --quiet --threads 1"

/* Are the last finetune run's test HR@10 and NDCG@10 the last evaluate run's (the stored
 * model rebuilt, ranking as finetune did)? */
static int finetune_hr_is_evaluates(sqlite3 *db) {
    const char *q = "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='test' AND metric='%s' AND k=10 "
                    "AND run_id=(SELECT max(id) FROM stage_runs WHERE stage='%s' AND status='done')";
    int same = 1;
    for (int k = 0; k < 2; k++) {
        const char *metric = k ? "ndcg" : "hr";
        char qf[512], qe[512];
        snprintf(qf, sizeof qf, q, metric, "finetune");
        snprintf(qe, sizeof qe, q, metric, "evaluate");
        double hf = db_query_double(db, -1, qf), he = db_query_double(db, -2, qe);
        same = same && hf >= 0 && hf == he;
    }
    return same;
}

/* The stored model of the last done finetune run (malloc'd, *n bytes). */
static void *stored(const char *dbp, int *n) {
    void *p = tu_stored_blob(dbp, "models", "finetune", n);
    assert_non_null(p);
    return p;
}

static void causal_e2e(void **state) {
    (void)state;
    char *dbp = tu_path("causal.db");
    const char *b = tu_bin();
    assert_int_equal(tu_synthetic_upstream(dbp, TU_E2E_CF, TU_E2E_TOK), 0);
    assert_true(tu_run("%s finetune --db %s --arch causal --pool ego --quiet 2>/dev/null", b, dbp) != 0);
    assert_true(tu_run("%s finetune --db %s --arch causal --item-input ids --quiet 2>/dev/null", b, dbp) != 0);
    assert_true(tu_run("%s finetune --db %s --arch causal --faithful --quiet 2>/dev/null", b, dbp) != 0);
    assert_true(tu_run("%s finetune --db %s --arch t5 --negatives 8 --quiet 2>/dev/null", b, dbp) != 0);
    assert_true(tu_run("%s finetune --db %s --arch gpt --quiet 2>/dev/null", b, dbp) != 0);
    assert_int_equal(tu_run("%s finetune --db %s " CAUSAL, b, dbp), 0);
    assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec,popularity --split both --quiet", b, dbp), 0);
    sqlite3 *db = db_open(dbp, 1);
    double hr = tu_metric(db, "tokenrec", "test", "hr", 10), pop = tu_metric(db, "popularity", "test", "hr", 10);
    double tps = db_query_double(db, -1, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='train' "
                                        "AND metric='targets_per_s'");
    print_message("causal on synth: test HR@10 %.3f (popularity %.3f), %.0f targets/s\n", hr, pop, tps);
    assert_true(hr > pop + 0.2);
    assert_true(tps > 0);
    /* evaluate's valid figure is the one the stage measured on its kept model */
    double v_ft = db_query_double(db, -1, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='valid' "
                                          "AND metric='hr' AND k=10 AND run_id=(SELECT max(id) FROM stage_runs WHERE stage='finetune')");
    assert_true(fabs(v_ft - tu_metric(db, "tokenrec", "valid", "hr", 10)) < 1e-9);
    int64_t r1 = stage_current_run(db, "synth", "finetune");
    char *fp1 = fingerprint(db, r1);
    db_close(db);
    /* the same command: up to date; another pool: a new run, another fingerprint, evaluate stale */
    assert_int_equal(tu_run("%s finetune --db %s " CAUSAL, b, dbp), 0);
    db = db_open(dbp, 1);
    assert_true(stage_current_run(db, "synth", "finetune") == r1);
    db_close(db);
    assert_int_equal(tu_run("%s finetune --db %s --pool cf " CAUSAL, b, dbp), 0);
    db = db_open(dbp, 1);
    int64_t r2 = stage_current_run(db, "synth", "finetune");
    char *fp2 = fingerprint(db, r2);
    assert_true(r2 != r1);
    assert_string_not_equal(fp1, fp2);
    assert_int_equal(stage_get_state(db, "synth", "evaluate", NULL), ST_STALE);
    db_close(db);
    assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --quiet", b, dbp), 0);
    db = db_open(dbp, 1);
    assert_true(tu_metric(db, "tokenrec", "test", "hr", 10) > pop + 0.2);   /* pool cf */
    db_close(db);
    free(fp1); free(fp2); free(dbp);
}

/* The config JSON of the last finetune run's stored model (malloc'd). */
static char *stored_config(const char *dbp) {
    sqlite3 *db = db_open(dbp, 1);
    assert_non_null(db);
    sqlite3_stmt *st = db_prep(db, "SELECT config FROM models WHERE run_id=(SELECT max(id) FROM stage_runs "
                                   "WHERE stage='finetune')");
    assert_non_null(st);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char *out = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    db_close(db);
    return out;
}

/* Runs of tied timestamps in dbp's interactions: 3 items a moment. */
static void timestamps_in_threes(const char *dbp) {
    sqlite3 *db = db_open(dbp, 0);
    assert_non_null(db);
    assert_int_equal(db_exec(db, "UPDATE interactions SET ts = 1000 + pos / 3"), 0);
    db_close(db);
}

/* ---- the per-dataset defaults: a dataset named like a row of the causal table trains with
 * that row's settings where no option is given, and records them in the run's parameters ---- */
static void causal_dataset_presets(void **state) {
    (void)state;
    const char *b = tu_bin();
    static const struct { const char *ds, *want[6]; } cases[] = {
        {"clothing", {"\"epochs\":30", "\"lr\":0.002", "\"negatives\":512", "\"id-init\":\"cf\"",
                      "\"user-prefix\":0", "\"cf-blend\":\"auto\""}},
        {"beauty", {"\"epochs\":50", "\"lr\":0.001", "\"lr-schedule\":\"cosine\"", "\"user-prefix\":0",
                    "\"token-init\":\"cf\""}},
        {"ml-1m", {"\"hist\":200", "\"batch\":16", "\"dropout\":0.2", "\"negatives\":512",
                   "\"lr-schedule\":\"cosine\"", "\"cf-blend\":\"auto\""}},
        {"other-name", {"\"epochs\":200", "\"lr\":0.002", "\"negatives\":0", "\"id-init\":\"cf\"",
                        "\"cf-blend\":\"auto\""}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char name[64];
        snprintf(name, sizeof name, "causal_preset_%zu.db", k);
        sqlite3 *db = tu_db(name);
        assert_int_equal(tu_synthetic(db, cases[k].ds, 60, 50, 3, 5, 8, 5), 0);
        db_close(db);
        char *dbp = tu_path(name);
        if (!strcmp(cases[k].ds, "other-name")) timestamps_in_threes(dbp);
        assert_int_equal(tu_run("%s cf --db %s " TU_E2E_CF, b, dbp), 0);
        assert_int_equal(tu_run("%s tokenize --db %s --L 8 --dc 16 --h1 16 --h2 16 --epochs 3 --quiet", b, dbp), 0);
        /* a tiny model that stops at its second check; the rest of the settings are the row's */
#define TINY1 "%s finetune --db %s --arch causal --d-model 8 --layers 1 --heads 1 --patience 1 --eval-every 1 " \
              "--quiet --threads 1"
        assert_int_equal(tu_run(TINY1, b, dbp), 0);
        int nw = 0;
        while (nw < 6 && cases[k].want[nw]) nw++;
        assert_null(tu_params_missing(dbp, "finetune", cases[k].want, nw));
        if (!strcmp(cases[k].ds, "beauty")) {        /* valid picked weight 0 there: no blend, not in the settings */
            db = db_open(dbp, 1);
            assert_true(db_query_double(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='finetune' AND "
                                                "params LIKE '%cf-blend%'") == 0);
            db_close(db);
        }
        if (!strcmp(cases[k].ds, "other-name")) {    /* timestamps: the blend picked per tie group, stored, reused */
            db = db_open(dbp, 1);
            const char *last = "(SELECT max(id) FROM stage_runs WHERE stage='finetune')";
            char q[512];
            static const char *const curves[3] = {"", "_new", "_tied"};
            for (int c = 0; c < 3; c++) {
                snprintf(q, sizeof q, "SELECT count(*) FROM metrics_log WHERE name='cf_blend_valid_hr@10%s' AND run_id=%s",
                         curves[c], last);
                assert_true(db_query_double(db, 0, q) == 10);
            }
            /* each group's kept weight has its group's best valid HR@10 (the smallest weight on a tie) */
            static const char *const kept[2] = {"cf_blend", "cf_blend_tied"};
            for (int g = 0; g < 2; g++) {
                snprintf(q, sizeof q, "SELECT step / 10.0 FROM metrics_log WHERE name='cf_blend_valid_hr@10%s' AND "
                                      "run_id=%s ORDER BY value DESC, step LIMIT 1", curves[g + 1], last);
                double want = db_query_double(db, -1, q);
                snprintf(q, sizeof q, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='train' AND "
                                      "metric='%s' AND run_id=%s", kept[g], last);
                assert_true(fabs(db_query_double(db, -2, q) - want) < 1e-9);
            }
            db_close(db);
            assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --quiet --threads 1", b, dbp), 0);
            db = db_open(dbp, 1);
            assert_true(finetune_hr_is_evaluates(db));
            db_close(db);
            /* --ties shuffle trains other orders: another model than the file order's */
            int n_keep = 0, n_shuf = 0;
            void *m_keep = stored(dbp, &n_keep);
            assert_int_equal(tu_run(TINY1 " --ties shuffle", b, dbp), 0);
            const char *shuf[] = {"\"ties\":\"shuffle\""};
            assert_null(tu_params_missing(dbp, "finetune", shuf, 1));
            void *m_shuf = stored(dbp, &n_shuf);
            assert_int_equal(n_keep, n_shuf);
            assert_memory_not_equal(m_keep, m_shuf, (size_t)n_keep);
            free(m_keep);
            free(m_shuf);
        }
        if (!strcmp(cases[k].ds, "other-name") || !strcmp(cases[k].ds, "ml-1m")) {   /* they keep the user position */
            db = db_open(dbp, 1);
            assert_true(db_query_double(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='finetune' AND "
                                                "params LIKE '%user-prefix%'") == 0);
            db_close(db);
        }
        if (k == 0) {
            db = db_open(dbp, 1);
            double runs = db_query_double(db, -1, "SELECT count(*) FROM stage_runs");
            /* the defaults given by name: up to date; bad values: an error; no new run either way */
            assert_int_equal(tu_run(TINY1 " --token-init random --lr-schedule cosine --user-prefix 0", b, dbp), 0);
            static const char *const bad[] = {"--token-init mean", "--token-drop 2", "--token-drop -0.5",
                                              "--arch t5 --token-init cf", "--arch t5 --token-drop 0.1",
                                              "--lr-schedule linear", "--arch t5 --lr-schedule cosine",
                                              "--item-input tokens --token-drop 0.5", "--user-prefix 1 --user-target 2",
                                              "--arch t5 --user-target 0", "--pool id --item-input tokens",
                                              "--user-prefix 2", "--user-prefix 0 --user-target 1",
                                              "--user-prefix 0 --token-init users", "--arch t5 --user-prefix 0",
                                              "--user-prefix 1 --user-input ids", "--user-input tokens+id",
                                              "--arch t5 --user-input tokens", "--cf-blend 1", "--cf-blend x",
                                              "--cf-blend -0.1", "--ties random", "--arch t5 --cf-blend auto",
                                              "--arch t5 --ties shuffle"};
            for (size_t j = 0; j < sizeof bad / sizeof *bad; j++)
                assert_int_not_equal(tu_run("%s finetune --db %s %s --quiet --threads 1 2>/dev/null", b, dbp, bad[j]), 0);
            assert_true(db_query_double(db, -1, "SELECT count(*) FROM stage_runs") == runs);
            db_close(db);
            /* the user token rows from the users' CF vectors and the cosine schedule: runs, in
             * their settings; the schedule changes the model */
#define TINY "%s finetune --db %s --arch causal --d-model 8 --layers 1 --heads 1 --patience 9 --eval-every 1 " \
             "--epochs 3 --quiet --threads 1 "
            assert_int_equal(tu_run(TINY "--user-prefix 1 --token-init users --lr-schedule cosine", b, dbp), 0);
            const char *ucos[] = {"\"token-init\":\"users\"", "\"lr-schedule\":\"cosine\""};
            assert_null(tu_params_missing(dbp, "finetune", ucos, 2));
            int n_cos = 0, n_const = 0;
            void *m_cos = stored(dbp, &n_cos);
            assert_int_equal(tu_run(TINY "--user-prefix 1 --token-init users --lr-schedule constant", b, dbp), 0);
            void *m_const = stored(dbp, &n_const);
            assert_int_equal(n_cos, n_const);
            assert_memory_not_equal(m_cos, m_const, (size_t)n_cos);
            free(m_cos);
            free(m_const);
            assert_int_equal(tu_run(TINY "--user-prefix 1 --token-init cf+users", b, dbp), 0);
            const char *cfu[] = {"\"token-init\":\"cf+users\""};
            assert_null(tu_params_missing(dbp, "finetune", cfu, 1));
            /* the own-row item side and no user target: in the settings, and evaluate rebuilds
             * the stored model and scores every test user */
            assert_int_equal(tu_run(TINY "--user-prefix 1 --pool id --user-target 0", b, dbp), 0);
            const char *pid[] = {"\"pool\":\"id\"", "\"user-target\":0"};
            assert_null(tu_params_missing(dbp, "finetune", pid, 2));
            assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --quiet --threads 1", b, dbp), 0);
            db = db_open(dbp, 1);
            double hr = db_query_double(db, -1, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='test' "
                                                "AND metric='hr' AND k=10 AND run_id=(SELECT max(id) FROM stage_runs "
                                                "WHERE stage='evaluate' AND status='done')");
            assert_true(hr >= 0 && hr <= 1);
            db_close(db);
            /* the users' own rows, and no user position: in the settings and the stored config,
             * and evaluate rebuilds the model (finetune's own test HR@10, to the last digit) */
            static const struct { const char *opts, *want[2], *config; } shapes[] = {
                {"--user-prefix 1 --user-input tokens+id", {"\"user-input\":\"tokens+id\"", "\"id-init\":\"cf\""},
                 "%\"user_input\":\"tokens+id\"%"},
                {"--user-prefix 0", {"\"user-prefix\":0", NULL}, "%\"user_prefix\":0%"},
                /* the users' own rows alone: --id-init cf is in the settings for them */
                {"--user-prefix 1 --item-input tokens --user-input tokens+id",
                 {"\"user-input\":\"tokens+id\"", "\"id-init\":\"cf\""}, "%\"item_input\":\"tokens\"%"},
                /* the CF blend's weight goes with the model (the users' CF vectors loaded) */
                {"--cf-blend 0.5", {"\"cf-blend\":0.5", NULL}, "%\"cf_blend\":0.5%"}};
            for (size_t v = 0; v < sizeof shapes / sizeof *shapes; v++) {
                assert_int_equal(tu_run(TINY "%s --patience 1", b, dbp, shapes[v].opts), 0);
                assert_null(tu_params_missing(dbp, "finetune", shapes[v].want, shapes[v].want[1] ? 2 : 1));
                assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --quiet --threads 1", b, dbp), 0);
                db = db_open(dbp, 1);
                char q[256];
                snprintf(q, sizeof q, "SELECT count(*) FROM models WHERE config LIKE '%s' AND run_id=(SELECT max(id) "
                                      "FROM stage_runs WHERE stage='finetune')", shapes[v].config);
                assert_true(db_query_double(db, 0, q) == 1);
                assert_true(finetune_hr_is_evaluates(db));
                db_close(db);
            }
            /* --cf-blend auto: ten weights checked on valid, the best kept (the smallest on a
             * tie), the run's valid HR@10 is that weight's, and evaluate scores with it */
            assert_int_equal(tu_run(TINY "--cf-blend auto --patience 1", b, dbp), 0);
            const char *aut[] = {"\"cf-blend\":\"auto\""};
            assert_null(tu_params_missing(dbp, "finetune", aut, 1));
            db = db_open(dbp, 1);
            const char *last = "(SELECT max(id) FROM stage_runs WHERE stage='finetune')";
            char q[512];
            snprintf(q, sizeof q, "SELECT count(*) FROM metrics_log WHERE name='cf_blend_valid_hr@10' AND run_id=%s", last);
            assert_true(db_query_double(db, 0, q) == 10);
            snprintf(q, sizeof q, "SELECT step / 10.0 FROM metrics_log WHERE name='cf_blend_valid_hr@10' AND run_id=%s "
                                  "ORDER BY value DESC, step LIMIT 1", last);
            double want_w = db_query_double(db, -1, q);
            snprintf(q, sizeof q, "SELECT max(value) FROM metrics_log WHERE name='cf_blend_valid_hr@10' AND run_id=%s", last);
            double want_hr = db_query_double(db, -1, q);
            snprintf(q, sizeof q, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='train' AND "
                                  "metric='cf_blend' AND run_id=%s", last);
            assert_true(fabs(db_query_double(db, -1, q) - want_w) < 1e-6);
            snprintf(q, sizeof q, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='valid' AND "
                                  "metric='hr' AND k=10 AND run_id=%s", last);
            assert_true(db_query_double(db, -1, q) == want_hr);
            db_close(db);
            assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --quiet --threads 1", b, dbp), 0);
            db = db_open(dbp, 1);
            assert_true(finetune_hr_is_evaluates(db));
            db_close(db);
#undef TINY
        }
#undef TINY1
        free(dbp);
    }
}

/* Unseen users: cf holds 10% out, tokenize tokenizes them frozen, the causal model never
 * trains on them, evaluate --unseen scores them beside the seen users. */
static void causal_unseen(void **state) {
    (void)state;
    char *dbp = tu_path("unseen.db");
    const char *b = tu_bin();
    assert_int_equal(tu_synthetic_upstream(dbp, TU_E2E_CF " --holdout-users 0.1", TU_E2E_TOK), 0);
    assert_int_equal(tu_run("%s finetune --db %s " CAUSAL, b, dbp), 0);
    assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --unseen --quiet", b, dbp), 0);
    sqlite3 *db = db_open(dbp, 1);
    double n_u = db_query_double(db, -1, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='test_unseen' "
                                         "AND metric='users'");
    double hr_u = db_query_double(db, -1, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='test_unseen' "
                                          "AND metric='hr' AND k=10");
    print_message("unseen users %.0f, HR@10 %.3f (seen %.3f)\n", n_u, hr_u, tu_metric(db, "tokenrec", "test", "hr", 10));
    assert_int_equal((int)n_u, 30);
    assert_true(hr_u > 0.2);
    db_close(db);
    /* without the user position (their history alone) and with the users' own rows (unseen
     * users by their tokens alone): every unseen user is still scored */
    static const char *const variants[] = {"--user-prefix 0", "--user-input tokens+id"};
    for (int v = 0; v < 2; v++) {
        assert_int_equal(tu_run("%s finetune --db %s " CAUSAL " %s", b, dbp, variants[v]), 0);
        assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --unseen --quiet", b, dbp), 0);
        db = db_open(dbp, 1);
        const char *last = "AND run_id=(SELECT max(id) FROM stage_runs WHERE stage='evaluate')";
        char q[512];
        snprintf(q, sizeof q, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='test_unseen' AND "
                              "metric='users' %s", last);
        assert_int_equal((int)db_query_double(db, -1, q), 30);
        snprintf(q, sizeof q, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='test_unseen' AND "
                              "metric='hr' AND k=10 %s", last);
        double hr = db_query_double(db, -1, q);
        print_message("%s: unseen HR@10 %.3f\n", variants[v], hr);
        assert_true(hr >= 0 && hr <= 1);
        /* the stored model as evaluate rebuilt it: no user rows at all, or an own row for
         * every seen user and none for an unseen one */
        rec_data d;
        causal_loaded cl;
        int64_t run = db_query_i64(db, -1, "SELECT max(id) FROM stage_runs WHERE stage='finetune' AND status='done'");
        assert_int_equal(causal_load(db, "synth", run, 4, &d, &cl), 0);
        assert_non_null(d.skip);
        if (v == 0) assert_null(cl.rows.user_rows);
        else {
            int unseen = 0;
            for (int32_t u = 0; u < d.n_users; u++) {
                int32_t own = cl.rows.user_rows[(size_t)u * cl.rows.n_feat + d.K];
                if (d.skip[u]) { assert_int_equal(own, -1); unseen++; }
                else assert_true(own >= 0);
            }
            assert_true(unseen >= 30);
        }
        causal_loaded_free(&cl);
        rec_data_free(&d);
        db_close(db);
    }
    free(dbp);
}

/* --lr-schedule: constant keeps --lr; cosine starts at it, is half of it halfway through the
 * epoch cap, falls at every batch and ends near 0 at the cap's last batch. */
static void lr_schedule_cosine(void **state) {
    (void)state;
    sasrec_train_cfg tc;
    memset(&tc, 0, sizeof tc);
    tc.lr = 2e-3f;
    tc.epochs = 10;
    assert_float_equal(sasrec_lr_at(&tc, 7, 3, 4), 2e-3f, 0);
    tc.lr_cosine = 1;
    assert_float_equal(sasrec_lr_at(&tc, 0, 0, 4), 2e-3f, 1e-9);
    assert_float_equal(sasrec_lr_at(&tc, 5, 0, 4), 1e-3f, 1e-9);
    assert_float_equal(sasrec_lr_at(&tc, 2, 2, 4), 1e-3f * (1 + cosf(0.25f * 3.14159265f)), 1e-8);
    float prev = 1;
    for (int e = 0; e < 10; e++)
        for (int k = 0; k < 4; k++) {
            float lr = sasrec_lr_at(&tc, e, k, 4);
            assert_true(lr < prev && lr > 0);
            prev = lr;
        }
    assert_true(prev < 2e-3f * 0.002f);                /* the last batch: near 0 */
}

/* Killed mid-training and resumed: the same model to the byte, with the ties shuffled every
 * epoch (the shuffles' draws come from the checkpointed generator) and the CF blend picked
 * per tie group after training. */
static void killed_causal_resumes_identically(void **state) {
    (void)state;
    const char *b = tu_bin();
    char *pa = tu_path("kill_a.db"), *pb = tu_path("kill_b.db");
    assert_int_equal(tu_synthetic_upstream(pa, TU_E2E_CF, TU_E2E_TOK), 0);
    assert_int_equal(tu_synthetic_upstream(pb, TU_E2E_CF, TU_E2E_TOK), 0);
    timestamps_in_threes(pa);
    timestamps_in_threes(pb);
#define KILLED CAUSAL " --patience 1000 --epochs 150 --eval-every 2 --lr-schedule cosine --ties shuffle --cf-blend auto"
    assert_int_equal(tu_run("%s finetune --db %s " KILLED, b, pa), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s finetune --db %s " KILLED, b, pb);
    int mid = tu_kill_midway(cmd, pb, "finetune", 200000, 250000, 6000000);
    print_message("causal finetune killed mid-training %d times\n", mid);
    assert_true(mid >= 1);
    assert_int_equal(tu_run("%s finetune --db %s " KILLED, b, pb), 0);
#undef KILLED
    int na = 0, nb = 0;
    void *ma = stored(pa, &na), *mb = stored(pb, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ma, mb, (size_t)na);
    char *ca = stored_config(pa), *cb = stored_config(pb);
    assert_string_equal(ca, cb);        /* the blend's weights too */
    free(ca); free(cb);
    const char *q = "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='train' AND metric='cf_blend_tied' "
                    "AND run_id=(SELECT max(id) FROM stage_runs WHERE stage='finetune')";
    sqlite3 *da = db_open(pa, 1), *dbb = db_open(pb, 1);
    double wa = db_query_double(da, -1, q), wb = db_query_double(dbb, -2, q);
    assert_true(wa >= 0 && wa == wb);   /* the ties were seen: a weight for the tied users */
    db_close(da);
    db_close(dbb);
    free(ma); free(mb); free(pa); free(pb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rows_layout),
        cmocka_unit_test(causal_over_tokens),
        cmocka_unit_test(one_pass_equals_prefixes),
        cmocka_unit_test(pool_tokens_without_cf),
        cmocka_unit_test(pool_id_scores_own_rows),
        cmocka_unit_test(id_rows_from_cf),
        cmocka_unit_test(token_rows_from_cf),
        cmocka_unit_test(user_token_rows_from_cf),
        cmocka_unit_test(user_id_rows_from_cf),
        cmocka_unit_test(token_drop_keeps_tokens_out),
        cmocka_unit_test(ties_shuffle_trains_other_orders),
        cmocka_unit_test(user_target_off),
        cmocka_unit_test(user_prefix_off),
        cmocka_unit_test(causal_e2e),
        cmocka_unit_test(causal_dataset_presets),
        cmocka_unit_test(causal_unseen),
        cmocka_unit_test(lr_schedule_cosine),
        cmocka_unit_test(killed_causal_resumes_identically),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
