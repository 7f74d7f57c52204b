/* test_sasrec.c: the SASRec baseline. The causal mask (a position's output ignores later
 * items), the whole model's gradient against central finite differences on a tiny config
 * (both losses, with dropout under a fixed seed), training on a deterministic pattern
 * (item i+1 always follows item i) ranks the held-out items, and `tokenrec evaluate
 * --method sasrec` end to end on a small synthetic dataset beats popularity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db.h"
#include "nn.h"
#include "recmodel.h"
#include "retrieval.h"
#include "sasrec_fit.h"
#include "stage.h"
#include "testutil.h"

static sasrec_config tiny(int loss, float dropout) {
    sasrec_config c = {.n_items = 11, .d = 8, .n_blocks = 2, .n_heads = 2, .max_len = 6,
                       .max_B = 3, .loss = loss, .dropout = dropout};
    return c;
}

/* The output at position t depends on items 0..t only. */
static void causal_mask(void **state) {
    (void)state;
    rng_t r;
    rng_seed(&r, 1);
    sasrec_config c = tiny(SASREC_LOSS_SOFTMAX, 0.2f);
    sasrec_model *m = sasrec_new(&c, &r);
    assert_non_null(m);
    int B = 2, T = 6, d = c.d;
    int32_t ids[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1}, len[2] = {6, 6};
    sasrec_batch b = {.B = B, .T = T, .ids = ids, .len = len};
    assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, NULL), 0);
    float *h0 = malloc(sizeof(float) * B * T * d);
    memcpy(h0, sasrec_hidden(m), sizeof(float) * B * T * d);
    for (int change = 1; change < T; change++) {
        int32_t keep = ids[change];
        ids[change] = (keep + 5) % c.n_items;          /* row 0 only */
        assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, NULL), 0);
        const float *h = sasrec_hidden(m);
        for (int t = 0; t < T; t++) {
            double diff = 0;
            for (int k = 0; k < d; k++) diff += fabs(h[t * d + k] - h0[t * d + k]);
            if (t < change) assert_true(diff == 0.0);   /* bit-identical before the change */
            else assert_true(diff > 1e-4);              /* and it does reach the later ones */
        }
        /* the other row is untouched */
        for (int k = T * d; k < B * T * d; k++) assert_true(h[k] == h0[k]);
        ids[change] = keep;
    }
    free(h0);
    sasrec_free(m);
}

/* ---- whole-model gradient check ---- */
static sasrec_model *gm;
static sasrec_batch gb;
static double gloss(void) {
    rng_t r;
    rng_seed(&r, 99);                   /* the same dropout masks in every evaluation */
    float l = 0;
    assert_true(sasrec_forward(gm, &gb, 1, &r, 0, &l) > 0);
    return l;
}

/* The item sides of the causal LLM (finetune --arch causal) on the tiny config: 11 items
 * and 6 token rows (11..16); item i sums tokens 11 + i%3, 14 + i%3 and its own row i, but
 * item 5 has no own row (an item never trained: tokens alone). */
enum { SIDE_SASREC, SIDE_TOKENS, SIDE_TABLE, SIDE_FIXED, SIDE_OWN };
static int32_t side_rows[11 * 3];
static float side_fixed[11 * 5];
static void side_config(sasrec_config *c, int side, rng_t *r) {
    if (side == SIDE_SASREC) return;
    for (int i = 0; i < 11; i++) {
        side_rows[i * 3] = 11 + i % 3;
        side_rows[i * 3 + 1] = 14 + i % 3;
        side_rows[i * 3 + 2] = i == 5 ? -1 : i;
    }
    for (int k = 0; k < 11 * 5; k++) side_fixed[k] = rng_normal(r);
    c->n_rows = 17;
    c->n_feat = 3;
    c->item_rows = side_rows;
    c->out = side == SIDE_TOKENS ? SASREC_OUT_TIED : side == SIDE_TABLE ? SASREC_OUT_TABLE
           : side == SIDE_OWN    ? SASREC_OUT_OWN : SASREC_OUT_FIXED;
    c->out_dim = 5;
    c->fixed = side_fixed;
}
/* ids (n) as input rows (n x n_feat) of model m into out. */
static void expand_ids(const sasrec_model *m, const int32_t *ids, int n, int32_t *out) {
    int S = sasrec_cfg(m)->n_feat;
    for (int k = 0; k < n; k++) sasrec_item_rows(m, ids[k], out + (size_t)k * S);
}

/* negatives > 0: sampled softmax against shared negatives that include item 4, the target of
 * row 0's position 2 and row 2's position 0 (masked there), with log-Q corrections. side:
 * SIDE_* (the others than SASRec also have row 1 start with a user position: tokens 12, 15). */
static void check_grads_side(int loss, float dropout, int negatives, int side) {
    rng_t r;
    rng_seed(&r, 2);
    sasrec_config c = tiny(loss, dropout);
    c.negatives = negatives;
    side_config(&c, side, &r);
    gm = sasrec_new(&c, &r);
    assert_non_null(gm);
    static const int32_t negs[5] = {3, 4, 9, 0, 3};
    static const float logq[5] = {0.5f, -0.3f, 0.1f, 1.2f, 0.5f};
    /* row 0 full, row 1 padded after 4 items, row 2 with one position; -1: no target */
    int32_t ids[18] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 3, 0, 0, 0, 0, 0};
    int32_t pos[18] = {2, 3, 4, 5, 6, 7, 8, 9, -1, 1, -1, -1, 4, -1, -1, -1, -1, -1};
    int32_t neg[18] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 10, 0, 0, 0, 0, 0};
    int32_t len[3] = {6, 4, 1};
    static int32_t feats[18 * 3];
    expand_ids(gm, ids, 18, feats);
    if (side != SIDE_SASREC) { feats[6 * 3] = 12; feats[6 * 3 + 1] = 15; feats[6 * 3 + 2] = -1; }
    sasrec_batch b = {.B = 3, .T = 6, .ids = feats, .len = len, .pos = pos, .neg = neg,
                      .negs = negatives ? negs : NULL, .logq = negatives ? logq : NULL};
    gb = b;
    rng_seed(&r, 99);
    float l0 = 0;
    assert_int_equal(sasrec_forward(gm, &gb, 1, &r, 1, &l0), 10);
    assert_true(l0 > 0);
    sasrec_backward(gm, &gb);
    size_t n = sasrec_n_params(gm);
    float *g = malloc(n * sizeof(float));
    memcpy(g, sasrec_grads(gm), n * sizeof(float));
    float *p = sasrec_params(gm);
    int bad = 0;
    double gmax = 0;
    for (size_t i = 0; i < n; i++) {
        /* central differences at two step sizes; a parameter passes when either agrees:
         * the larger step can straddle a ReLU kink or see the tiny model's curvature, the
         * smaller one sees float rounding, but a wrong gradient fails both */
        float keep = p[i];
        double fd = 0;
        int ok = 0;
        for (int k = 0; k < 2 && !ok; k++) {
            float h = k == 0 ? 1e-3f : 2.5e-4f;
            p[i] = keep + h; double lp = gloss();
            p[i] = keep - h; double lm = gloss();
            p[i] = keep;
            fd = (lp - lm) / (2.0 * h);
            ok = fabs(fd - g[i]) <= 3e-2 * fabs(fd) + 3e-4;
        }
        if (fabs(g[i]) > gmax) gmax = fabs(g[i]);
        if (!ok) {
            if (bad < 5) print_error("loss %d param %zu: analytic %.6g numeric %.6g\n", loss, i, g[i], fd);
            bad++;
        }
    }
    assert_true(gmax > 1e-2);           /* the check is not vacuous */
    assert_int_equal(bad, 0);
    free(g);
    sasrec_free(gm);
}
static void check_grads(int loss, float dropout, int negatives) { check_grads_side(loss, dropout, negatives, SIDE_SASREC); }
static void grads_tokens(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.3f, 0, SIDE_TOKENS); }
static void grads_tokens_sampled(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.0f, 5, SIDE_TOKENS); }
static void grads_table(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.3f, 0, SIDE_TABLE); }
static void grads_table_sampled(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.0f, 5, SIDE_TABLE); }
static void grads_own(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.3f, 0, SIDE_OWN); }
static void grads_own_sampled(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.0f, 5, SIDE_OWN); }
static void grads_fixed(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.3f, 0, SIDE_FIXED); }
static void grads_fixed_sampled(void **state) { (void)state; check_grads_side(SASREC_LOSS_SOFTMAX, 0.0f, 5, SIDE_FIXED); }
static void grads_softmax(void **state) { (void)state; check_grads(SASREC_LOSS_SOFTMAX, 0.0f, 0); }
static void grads_softmax_dropout(void **state) { (void)state; check_grads(SASREC_LOSS_SOFTMAX, 0.3f, 0); }
static void grads_bce(void **state) { (void)state; check_grads(SASREC_LOSS_BCE, 0.0f, 0); }
static void grads_sampled(void **state) { (void)state; check_grads(SASREC_LOSS_SOFTMAX, 0.0f, 5); }
static void grads_sampled_dropout(void **state) { (void)state; check_grads(SASREC_LOSS_SOFTMAX, 0.3f, 5); }

/* ---- sampled softmax: the loss by hand ---- */

/* The loss of one target equals -log(e^{s_t} / (e^{s_t} + sum over negatives n != t of
 * e^{s_n - logq_n})), computed here from the final hidden states and the item table (the
 * first block of parameters); a negative equal to the target adds nothing. */
static void sampled_loss_by_hand(void **state) {
    (void)state;
    rng_t r;
    rng_seed(&r, 4);
    sasrec_config c = tiny(SASREC_LOSS_SOFTMAX, 0.0f);
    c.negatives = 4;
    sasrec_model *m = sasrec_new(&c, &r);
    int32_t ids[3] = {1, 2, 3}, pos[3] = {-1, -1, 7}, len[1] = {3};
    int32_t negs[4] = {7, 2, 9, 2};               /* 7 is the target: masked */
    float logq[4] = {0.0f, 0.25f, -0.5f, 0.25f};
    sasrec_batch b = {.B = 1, .T = 3, .ids = ids, .len = len, .pos = pos, .negs = negs, .logq = logq};
    float loss = 0;
    assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, &loss), 1);
    const float *h = sasrec_hidden(m) + 2 * c.d, *E = sasrec_params(m);
    double st = 0, z;
    for (int k = 0; k < c.d; k++) st += h[k] * E[7 * c.d + k];
    z = exp(st);
    for (int j = 1; j < 4; j++) {
        double sj = 0;
        for (int k = 0; k < c.d; k++) sj += h[k] * E[negs[j] * c.d + k];
        z += exp(sj - logq[j]);
    }
    double want = -(st - log(z));
    print_message("sampled loss %.6f, by hand %.6f\n", loss, want);
    assert_true(fabs(loss - want) < 1e-5 * (1 + fabs(want)));
    /* norm divides the summed loss instead of the target count */
    b.norm = 4.0f;
    float quarter = 0;
    assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, &quarter), 1);
    assert_true(fabs(quarter - want / 4) < 1e-5 * (1 + fabs(want)));
    b.norm = 0;
    /* no negatives in the batch: a clear error, not a crash */
    b.negs = NULL;
    assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, &loss), -1);
    negs[0] = 11;                                  /* outside the 11 items */
    b.negs = negs;
    assert_int_equal(sasrec_forward(m, &b, 0, NULL, 0, &loss), -1);
    sasrec_free(m);
}

/* ---- the negative sampler ---- */

/* Seeded (the same seed draws the same negatives), uniform draws carry log(N/V), and
 * popularity draws follow (count+1)/sum with log(N q) of each draw. */
static void sampler_draws(void **state) {
    (void)state;
    int32_t counts[4] = {0, 1, 2, 96};              /* q = 1/103, 2/103, 3/103, 97/103 */
    sasrec_sampler su, sp;
    assert_int_equal(sasrec_sampler_init(&su, 4, NULL, SASREC_SAMPLER_UNIFORM), 0);
    assert_int_equal(sasrec_sampler_init(&sp, 4, counts, SASREC_SAMPLER_POP), 0);
    int32_t a[64], b2[64];
    float la[64], lb[64];
    rng_t r1, r2;
    rng_seed(&r1, 7); rng_seed(&r2, 7);
    sasrec_sampler_draw(&sp, &r1, 64, a, la);
    sasrec_sampler_draw(&sp, &r2, 64, b2, lb);
    assert_memory_equal(a, b2, sizeof a);
    int hist[4] = {0};
    for (int k = 0; k < 2000; k++) {
        sasrec_sampler_draw(&sp, &r1, 64, a, la);
        for (int j = 0; j < 64; j++) {
            assert_true(a[j] >= 0 && a[j] < 4);
            hist[a[j]]++;
            assert_true(fabs(la[j] - log(64.0 * (counts[a[j]] + 1) / 103.0)) < 1e-4);
        }
    }
    double tot = 2000.0 * 64;
    for (int i = 0; i < 4; i++)                    /* within 5 standard errors */
        assert_true(fabs(hist[i] / tot - (counts[i] + 1) / 103.0) < 5 * sqrt(0.25 / tot) + 1e-3);
    sasrec_sampler_draw(&su, &r1, 64, a, la);
    for (int j = 0; j < 64; j++) {
        assert_true(a[j] >= 0 && a[j] < 4);
        assert_true(fabs(la[j] - logf(16.0f)) < 1e-5);
    }
    sasrec_sampler_free(&sp);                       /* init clears it: free its table first */
    assert_int_equal(sasrec_sampler_init(&sp, 4, NULL, SASREC_SAMPLER_POP), -1);
    sasrec_sampler_free(&su);
    sasrec_sampler_free(&sp);
}

/* ---- training on a deterministic pattern ---- */

/* n_users sequences of 8..15 items, each item followed by the next (mod n_items). */
static void pattern_data(rec_data *d, int n_users, int n_items, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    memset(d, 0, sizeof *d);
    d->n_users = n_users;
    d->n_items = n_items;
    d->off = calloc((size_t)n_users + 1, sizeof *d->off);
    d->seq = calloc((size_t)n_users * 15, sizeof *d->seq);
    for (int u = 0; u < n_users; u++) {
        int len = 8 + (int)rng_below(&r, 8), s = (int)rng_below(&r, (uint32_t)n_items);
        for (int k = 0; k < len; k++) d->seq[d->off[u] + k] = (s + k) % n_items;
        d->off[u + 1] = d->off[u] + len;
    }
}

static double train_pattern(int loss, int negatives) {
    rec_data d;
    pattern_data(&d, 80, 40, 3);
    sasrec_train_cfg tc = {
        .model = {.d = 16, .n_blocks = 1, .n_heads = 1, .max_len = 10, .loss = loss, .dropout = 0.1f,
                  .negatives = negatives},
        .epochs = 40, .batch = 32, .eval_every = 5, .patience = 3, .lr = 1e-2f, .seed = 5, .quiet = 1};
    sasrec_model *m = NULL;
    sasrec_fit_result fr;
    assert_int_equal(sasrec_fit(NULL, &d, &tc, &m, &fr), 0);
    double best_valid = fr.best_valid;
    assert_non_null(m);
    int ks[1] = {10};
    retr_metrics met;
    retr_metrics_init(&met, 1, ks);
    assert_int_equal(sasrec_rank(m, &d, NULL, NULL, 2, 16, 0, &met, 0, NULL, NULL), 0);
    assert_int_equal(met.n, 80);
    double hr = retr_hr(&met, 10);
    print_message("pattern loss %d: best valid HR@10 %.3f, test HR@10 %.3f\n", loss, best_valid, hr);
    sasrec_free(m);
    free(d.off);
    free(d.seq);
    return hr;
}
static void learns_pattern_softmax(void **state) { (void)state; assert_true(train_pattern(SASREC_LOSS_SOFTMAX, 0) > 0.9); }
static void learns_pattern_bce(void **state) { (void)state; assert_true(train_pattern(SASREC_LOSS_BCE, 0) > 0.6); }
static void learns_pattern_sampled(void **state) { (void)state; assert_true(train_pattern(SASREC_LOSS_SOFTMAX, 8) > 0.9); }

/* ---- ties (--ties shuffle) and the CF blend (--cf-blend) ---- */

/* rec_sequences_load marks each item whose timestamp equals the one before it in the same
 * user's sequence; one NULL timestamp and the dataset has none (tied NULL). */
static void sequences_mark_ties(void **state) {
    (void)state;
    sqlite3 *db = tu_db("ties.db");
    assert_int_equal(tu_synthetic(db, "synth", 20, 30, 2, 6, 9, 1), 0);
    assert_int_equal(db_exec(db, "UPDATE interactions SET ts = 1000 + pos / 3"), 0);   /* runs of 3 per user */
    rec_data d;
    assert_int_equal(rec_sequences_load(db, "synth", &d), 0);
    assert_non_null(d.tied);
    long n_tied = 0;
    for (int32_t u = 0; u < d.n_users; u++)
        for (int64_t k = d.off[u]; k < d.off[u + 1]; k++) {
            assert_int_equal(d.tied[k], (k - d.off[u]) % 3 != 0);
            n_tied += d.tied[k];
        }
    assert_true(n_tied > 0);
    rec_data_free(&d);
    assert_int_equal(db_exec(db, "UPDATE interactions SET ts = NULL WHERE uid = 3 AND pos = 2"), 0);
    assert_int_equal(rec_sequences_load(db, "synth", &d), 0);
    assert_null(d.tied);
    rec_data_free(&d);
    db_close(db);
}

/* sasrec_ties_shuffle permutes a user's train items within their runs of ties only: every
 * other position, the valid and test items (one of them tied to the last train run) and a
 * skipped user stay; each run keeps its items and, over 30 draws, takes more than one order. */
static void ties_shuffle_within_runs(void **state) {
    (void)state;
    /* user 0: 10 11 | 12 13 14 (tied) | 15 | 16 17 (tied) + valid 18 (tied to 17) + test 19;
     * user 1: no ties; user 2 (skipped): 30 31 tied, valid, test */
    int32_t seq[] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 30, 31, 32, 33};
    uint8_t tied[] = {0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0};
    int64_t off[] = {0, 10, 14, 18};
    uint8_t skip[] = {0, 0, 1};
    tied[2] = 0;                        /* 12 opens its run: 12 13 14 */
    rec_data d = {.n_users = 3, .n_items = 40, .off = off, .seq = seq, .tied = tied, .skip = skip};
    int32_t out[18];
    rng_t r;
    rng_seed(&r, 9);
    int orders_a = 0, orders_b = 0;
    int32_t first_a[3], first_b[2];
    for (int draw = 0; draw < 30; draw++) {
        sasrec_ties_shuffle(&d, out, &r);
        static const int fixed[] = {0, 1, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
        for (size_t j = 0; j < sizeof fixed / sizeof *fixed; j++) assert_int_equal(out[fixed[j]], seq[fixed[j]]);
        int32_t a[3] = {out[2], out[3], out[4]}, b[2] = {out[6], out[7]};
        assert_int_equal(a[0] + a[1] + a[2], 12 + 13 + 14);
        assert_true(a[0] != a[1] && a[1] != a[2] && a[0] != a[2] && a[0] >= 12 && a[0] <= 14 && a[1] >= 12 &&
                    a[1] <= 14 && a[2] >= 12 && a[2] <= 14);
        assert_true((b[0] == 16 && b[1] == 17) || (b[0] == 17 && b[1] == 16));
        if (!draw) { memcpy(first_a, a, sizeof a); memcpy(first_b, b, sizeof b); }
        orders_a += memcmp(a, first_a, sizeof a) != 0;
        orders_b += memcmp(b, first_b, sizeof b) != 0;
    }
    assert_true(orders_a > 0 && orders_b > 0);
}

/* Scores of a random model over 30 items for 24 users with 6 items each; user vectors
 * (zero ones when zero_users) and item vectors for the blend. */
typedef struct { rec_data d; sasrec_model *m; float uv[24 * 4], iv[30 * 4]; } blend_fx;
static void blend_fixture(blend_fx *f, int zero_users) {
    memset(f, 0, sizeof *f);
    pattern_data(&f->d, 24, 30, 11);
    rng_t r;
    rng_seed(&r, 4);
    for (int i = 0; i < 24 * 4; i++) f->uv[i] = zero_users ? 0 : rng_uniform(&r) * 2 - 1;
    for (int i = 0; i < 30 * 4; i++) f->iv[i] = rng_uniform(&r) * 2 - 1;
    sasrec_config c = {.n_items = 30, .d = 8, .n_blocks = 1, .n_heads = 1, .max_len = 6, .max_B = 8};
    f->m = sasrec_new(&c, &r);
    assert_non_null(f->m);
}
static void blend_free(blend_fx *f) { sasrec_free(f->m); free(f->d.off); free(f->d.seq); }

/* HR@10 and NDCG@10 sums of split 2 ranked by the model with blend bl (NULL: none) over
 * the users f->d.skip leaves in (*n of them). */
static void blend_sums(blend_fx *f, const sasrec_blend *bl, double out[2], long *n) {
    int ks[1] = {10};
    retr_metrics met;
    retr_metrics_init(&met, 1, ks);
    assert_int_equal(sasrec_rank(f->m, &f->d, NULL, bl, 2, 8, 0, &met, 0, NULL, NULL), 0);
    out[0] = met.hr[0];
    out[1] = met.ndcg[0];
    *n = met.n;
}

/* The same over every user, as means. */
static void blend_metrics(blend_fx *f, const sasrec_blend *bl, double out[2]) {
    long n;
    blend_sums(f, bl, out, &n);
    assert_int_equal(n, 24);
    out[0] /= n;
    out[1] /= n;
}

/* The CF blend: weight 0 is the model's ranking, a weight near 1 the CF vectors' own
 * ranking (retr_scores, as evaluate's lightgcn), and users without a vector keep the
 * model's ranking at any weight. */
static void cf_blend_ranks(void **state) {
    (void)state;
    blend_fx f;
    blend_fixture(&f, 0);
    double none[2], zero[2], near1[2], half[2], cf[2];
    blend_metrics(&f, NULL, none);
    blend_metrics(&f, &(sasrec_blend){.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0}, zero);
    blend_metrics(&f, &(sasrec_blend){.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0.99999f}, near1);
    blend_metrics(&f, &(sasrec_blend){.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0.5f}, half);
    int ks[1] = {10};
    retr_metrics met;                   /* the CF ranking alone */
    retr_metrics_init(&met, 1, ks);
    float *sc = malloc(24 * 30 * sizeof *sc);
    int32_t users[24];
    for (int u = 0; u < 24; u++) users[u] = u;
    retr_scores(sc, f.uv, 24, f.iv, NULL, 30, 4, 0);
    rec_rank_rows(&f.d, users, 24, 2, sc, &met, 0, NULL, NULL);
    cf[0] = retr_hr(&met, 10);
    cf[1] = retr_ndcg(&met, 10);
    print_message("blend: model HR@10 %.3f, 0.5 %.3f, CF %.3f\n", none[0], half[0], cf[0]);
    assert_true(zero[0] == none[0] && zero[1] == none[1]);
    assert_true(near1[0] == cf[0] && fabs(near1[1] - cf[1]) < 1e-12);
    assert_true(cf[1] != none[1]);      /* the two rankings differ, so the checks above can fail */
    assert_true(half[1] != none[1] && half[1] != cf[1]);
    /* the grid (one forward pass, every weight) gives each weight's own ranking, weight 0
     * the model's alone */
    const float weights[4] = {0, 0.3f, 0.5f, 0.99999f};
    retr_metrics gm[4];
    for (int g = 0; g < 4; g++) retr_metrics_init(&gm[g], 1, ks);
    uint8_t *tied = calloc((size_t)f.d.off[24], 1);
    for (int32_t u = 0; u < 24; u += 2) tied[f.d.off[u + 1] - 2] = 1;   /* ignored by the grid */
    const sasrec_blend grid_bl = {.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0.7f, .alpha_tied = 0.2f,
                                  .tied = tied};                    /* its own weights unused */
    assert_int_equal(sasrec_rank_grid(f.m, &f.d, NULL, &grid_bl, 2, 7, 0, weights, 4, gm), 0);  /* a partial last batch */
    free(tied);
    const float bad_w[1] = {1.5f};
    assert_int_equal(sasrec_rank_grid(f.m, &f.d, NULL, &grid_bl, 2, 7, 0, bad_w, 1, gm), -1);
    for (int g = 0; g < 4; g++) {
        double one[2];
        blend_metrics(&f, &(sasrec_blend){.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = weights[g]}, one);
        assert_int_equal(gm[g].n, 24);
        assert_true(retr_hr(&gm[g], 10) == one[0] && retr_ndcg(&gm[g], 10) == one[1]);
    }
    assert_true(retr_hr(&gm[0], 10) == none[0] && retr_ndcg(&gm[0], 10) == none[1]);
    assert_true(retr_ndcg(&gm[2], 10) == half[1]);
    free(sc);
    blend_free(&f);
    blend_fixture(&f, 1);               /* no user has a vector */
    blend_metrics(&f, NULL, none);
    blend_metrics(&f, &(sasrec_blend){.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0.5f}, half);
    assert_true(half[0] == none[0] && half[1] == none[1]);
    for (int g = 0; g < 4; g++) retr_metrics_init(&gm[g], 1, ks);   /* the grid leaves them as they are too */
    const sasrec_blend no_vec = {.user_vec = f.uv, .item_vec = f.iv, .D = 4};
    assert_int_equal(sasrec_rank_grid(f.m, &f.d, NULL, &no_vec, 2, 7, 0, weights, 4, gm), 0);
    for (int g = 0; g < 4; g++) assert_true(retr_hr(&gm[g], 10) == none[0] && retr_ndcg(&gm[g], 10) == none[1]);
    blend_free(&f);
}

/* With ties, a user whose last history item (split 2: the valid item) is tied to the one
 * before it gets alpha_tied, the rest alpha: weights 0.99999 and 0 rank the tied users as
 * the CF vectors do and the others as the model does, user group by user group. */
static void cf_blend_by_ties(void **state) {
    (void)state;
    blend_fx f;
    blend_fixture(&f, 0);
    int64_t total = f.d.off[f.d.n_users];
    uint8_t *tied = calloc((size_t)total, 1), skip[2][24];
    int n_tied = 0;
    for (int32_t u = 0; u < 24; u++) {
        if (u % 3 == 0) {                   /* the valid item tied to the last train item */
            tied[f.d.off[u + 1] - 2] = 1;
            n_tied++;
        }
        if (u % 4 == 0) tied[f.d.off[u] + 1] = 1;   /* an early tie, which decides nothing */
    }
    f.d.tied = tied;
    for (int32_t u = 0; u < 24; u++) {
        assert_int_equal(sasrec_last_tied(&f.d, u, 2), u % 3 == 0);
        skip[0][u] = u % 3 == 0;            /* group 0: the untied users */
        skip[1][u] = u % 3 != 0;
    }
    const sasrec_blend cf_only = {.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0.99999f},
                       by_ties = {.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0, .alpha_tied = 0.99999f,
                                  .tied = tied};
    double all[2], model_new[2], cf_tied[2], swapped[2];
    long n_all, n_new, n_t;
    blend_sums(&f, &by_ties, all, &n_all);
    f.d.skip = skip[0];
    blend_sums(&f, NULL, model_new, &n_new);
    f.d.skip = skip[1];
    blend_sums(&f, &cf_only, cf_tied, &n_t);
    f.d.skip = NULL;
    assert_int_equal(n_t, n_tied);
    assert_int_equal(n_all, n_new + n_t);
    assert_true(fabs(all[0] - (model_new[0] + cf_tied[0])) < 1e-9 && fabs(all[1] - (model_new[1] + cf_tied[1])) < 1e-9);
    /* the weights swapped rank differently, so the check above can fail */
    const sasrec_blend swap = {.user_vec = f.uv, .item_vec = f.iv, .D = 4, .alpha = 0.99999f, .alpha_tied = 0, .tied = tied};
    blend_sums(&f, &swap, swapped, &n_all);
    assert_true(swapped[1] != all[1]);
    free(tied);
    blend_free(&f);
}

/* ---- end to end through the binary ---- */

static long count(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = db_prep(db, sql);
    long n = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

#define SAS "--dim 32 --blocks 1 --epochs 30 --batch 64 --lr 5e-3 --eval-every 5"

/* The stored model of the current sasrec run, as a malloc'd blob (*n bytes). */
static void *stored_model(const char *dbp, int *n) {
    void *p = tu_stored_blob(dbp, "sasrec_models", "sasrec", n);
    assert_non_null(p);
    return p;
}

static void evaluate_sasrec_e2e(void **state) {
    (void)state;
    sqlite3 *db = tu_db("e2e.db");
    assert_int_equal(tu_synthetic(db, "synth", 200, 120, 6, 10, 20, 7), 0);
    db_close(db);
    char *dbp = tu_path("e2e.db");
    const char *b = tu_bin();
    /* evaluate before the stage ran: a clear error naming the command */
    assert_true(tu_run("%s evaluate --db %s --method sasrec --quiet 2>/dev/null", b, dbp) != 0);
    assert_int_equal(tu_run("%s sasrec --db %s --quiet " SAS, b, dbp), 0);
    assert_int_equal(tu_run("%s evaluate --db %s --method popularity,sasrec --split both --quiet", b, dbp), 0);
    db = db_open(dbp, 1);
    double pop = tu_metric(db, "popularity", "test", "hr", 10), sas = tu_metric(db, "sasrec", "test", "hr", 10);
    double sasv = tu_metric(db, "sasrec", "valid", "hr", 10);
    print_message("synthetic: popularity test HR@10 %.3f, sasrec test HR@10 %.3f (valid %.3f)\n", pop, sas, sasv);
    for (int k = 10; k <= 30; k += 10) {
        assert_true(tu_metric(db, "sasrec", "test", "hr", k) >= 0);
        assert_true(tu_metric(db, "sasrec", "test", "ndcg", k) >= 0);
    }
    assert_true(sas > pop + 0.2);
    assert_true(sasv > pop);
    /* the valid HR@10 the stage kept its model by is the one evaluate measures again */
    sqlite3_stmt *bv = db_prep(db, "SELECT best_valid FROM sasrec_models");
    assert_int_equal(sqlite3_step(bv), SQLITE_ROW);
    assert_true(fabs(sqlite3_column_double(bv, 0) - sasv) < 1e-9);
    sqlite3_finalize(bv);
    int64_t r1 = stage_current_run(db, "synth", "sasrec");
    assert_true(r1 > 0);
    /* top-50 of every user stored under the sasrec run */
    long recs = count(db, "SELECT count(*) FROM recommendations WHERE run_id = (SELECT max(run_id) FROM run_metrics WHERE method='sasrec')");
    assert_int_equal(recs, 200L * 50);
    db_close(db);
    /* the same settings again: up to date; with --force: the same model (one seed) */
    int n1 = 0, n2 = 0;
    void *m1 = stored_model(dbp, &n1);
    assert_int_equal(tu_run("%s sasrec --db %s --quiet " SAS, b, dbp), 0);
    db = db_open(dbp, 1);
    assert_true(stage_current_run(db, "synth", "sasrec") == r1);
    db_close(db);
    assert_int_equal(tu_run("%s sasrec --db %s --quiet --force " SAS, b, dbp), 0);
    void *m2 = stored_model(dbp, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(m1, m2, (size_t)n1);
    free(m1); free(m2);
    /* the new sasrec run makes the old evaluate run stale; evaluating again gives the same metrics */
    db = db_open(dbp, 1);
    assert_int_equal(stage_get_state(db, "synth", "evaluate", NULL), ST_STALE);
    db_close(db);
    assert_int_equal(tu_run("%s evaluate --db %s --method sasrec --split both --quiet", b, dbp), 0);
    db = db_open(dbp, 1);
    assert_true(tu_metric(db, "sasrec", "test", "hr", 10) == sas);
    /* other settings: a new run; the evaluate run built on the old one is stale */
    db_close(db);
    assert_int_equal(tu_run("%s sasrec --db %s --quiet --dropout 0.1 " SAS, b, dbp), 0);
    db = db_open(dbp, 1);
    assert_true(stage_current_run(db, "synth", "sasrec") > r1);
    assert_int_equal(stage_get_state(db, "synth", "evaluate", NULL), ST_STALE);
    db_close(db);
    /* bad settings: a clear error and no new run */
    assert_true(tu_run("%s sasrec --db %s --quiet --sampler zipf 2>/dev/null", b, dbp) != 0);
    assert_true(tu_run("%s sasrec --db %s --quiet --dim 30 --heads 4 2>/dev/null", b, dbp) != 0);
    /* the report lists the method */
    char *out = tu_path("report.md");
    assert_int_equal(tu_run("%s report --db %s > %s", b, dbp, out), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    assert_non_null(strstr(buf, "| sasrec |"));
    free(out);
    free(dbp);
}

/* ---- the per-dataset defaults: a dataset named like a preset row trains with that row's
 * settings where no option is given, and records them in the run's parameters ---- */
static void dataset_presets(void **state) {
    (void)state;
    const char *b = tu_bin();
    static const struct { const char *ds, *want[3]; } cases[] = {
        {"ml-1m", {"\"batch\":16", "\"epochs\":45", "\"negatives\":512"}},
        {"clothing", {"\"batch\":128", "\"epochs\":40", "\"negatives\":2048"}},
        {"other-name", {"\"batch\":128", "\"epochs\":200", "\"negatives\":0"}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char name[64];
        snprintf(name, sizeof name, "preset_%zu.db", k);
        sqlite3 *db = tu_db(name);
        assert_int_equal(tu_synthetic(db, cases[k].ds, 40, 30, 3, 5, 8, 5), 0);
        db_close(db);
        char *dbp = tu_path(name);
        /* a tiny model that stops early; the rest of the settings come from the preset */
        assert_int_equal(tu_run("%s sasrec --db %s --quiet --threads 1 --dim 8 --maxlen 8 --patience 1 "
                                "--eval-every 1", b, dbp), 0);
        assert_null(tu_params_missing(dbp, "sasrec", cases[k].want, 3));
        if (k == 0) {             /* --lr-schedule: only cosine enters the settings; a bad name fails */
            const char *sched[] = {"\"lr-schedule\":\"cosine\""};
            assert_non_null(tu_params_missing(dbp, "sasrec", sched, 1));
            db = db_open(dbp, 1);
            int64_t runs = db_query_i64(db, -1, "SELECT count(*) FROM stage_runs");
            assert_int_not_equal(tu_run("%s sasrec --db %s --quiet --threads 1 --lr-schedule linear 2>/dev/null", b, dbp), 0);
            assert_true(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs") == runs);
            db_close(db);
            assert_int_equal(tu_run("%s sasrec --db %s --quiet --threads 1 --dim 8 --maxlen 8 --patience 1 "
                                    "--eval-every 1 --epochs 3 --lr-schedule cosine", b, dbp), 0);
            assert_null(tu_params_missing(dbp, "sasrec", sched, 1));
        }
        free(dbp);
    }
}

/* ---- SIGKILL mid-training: the same command resumes from the last checkpoint and stores
 * the same model, byte for byte, as an uninterrupted run ---- */
#define SASK "--dim 32 --blocks 2 --epochs 40 --batch 16 --lr 5e-3 --eval-every 1 --patience 100"
static void killed_sasrec_resumes_identically(void **state) {
    (void)state;
    const char *b = tu_bin();
    char *pa = tu_path("kill_a.db"), *pb = tu_path("kill_b.db");
    for (int k = 0; k < 2; k++) {
        sqlite3 *db = tu_db(k ? "kill_b.db" : "kill_a.db");
        assert_int_equal(tu_synthetic(db, "synth", 300, 150, 6, 10, 30, 3), 0);
        db_close(db);
    }
    assert_int_equal(tu_run("%s sasrec --db %s --quiet --threads 1 " SASK, b, pa), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s sasrec --db %s --quiet --threads 1 " SASK, b, pb);
    int mid = tu_kill_midway(cmd, pb, "sasrec", 300000, 300000, 4000000);
    print_message("sasrec killed mid-training %d times\n", mid);
    assert_true(mid >= 1);
    assert_int_equal(tu_run("%s sasrec --db %s --quiet --threads 1 " SASK, b, pb), 0);
    int na = 0, nb = 0;
    void *ma = stored_model(pa, &na), *mb = stored_model(pb, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ma, mb, (size_t)na);
    free(ma); free(mb); free(pa); free(pb);
}

/* ---- resume: a run stopped after every epoch and resumed each time ends bit-identical to
 * an uninterrupted one. Runs last: the stop flag cannot be cleared. ---- */
static void stopped_every_epoch_resumes_identically(void **state) {
    (void)state;
    sqlite3 *db = tu_db("resume.db");
    assert_int_equal(tu_synthetic(db, "synth", 60, 40, 4, 8, 14, 11), 0);
    rec_data d;
    memset(&d, 0, sizeof d);
    assert_int_equal(rec_sequences_load(db, "synth", &d), 0);
    sasrec_train_cfg tc = {
        .model = {.d = 16, .n_blocks = 2, .n_heads = 2, .max_len = 8, .loss = SASREC_LOSS_BCE, .dropout = 0.2f},
        .epochs = 7, .batch = 16, .eval_every = 2, .patience = 5, .lr = 5e-3f, .seed = 9, .quiet = 1};
    sasrec_model *ref = NULL, *m = NULL;
    sasrec_fit_result vref, v;
    assert_int_equal(sasrec_fit(NULL, &d, &tc, &ref, &vref), 0);
    stage_request_stop();
    int rc = 130, calls = 0;
    while (rc == 130) {
        stage_run run;
        assert_int_equal(stage_begin(&run, db, "evaluate", "synth", "{\"method\":\"sasrec\"}", "ingest", 0), 0);
        run.quiet = 1;
        assert_int_equal(run.resumed, calls > 0);
        rc = sasrec_fit(&run, &d, &tc, &m, &v);
        calls++;
        if (rc == 0) { assert_int_equal(stage_finish_begin(&run), 0); assert_int_equal(stage_finish_commit(&run), 0); }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(calls, 7);                 /* one epoch per process-equivalent */
    assert_true(v.best_valid == vref.best_valid && v.best_epoch == vref.best_epoch);
    assert_int_equal(sasrec_n_params(m), sasrec_n_params(ref));
    assert_memory_equal(sasrec_params(m), sasrec_params(ref), sasrec_n_params(m) * sizeof(float));
    sasrec_free(m);
    sasrec_free(ref);
    rec_data_free(&d);
    db_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(causal_mask),
        cmocka_unit_test(grads_softmax),
        cmocka_unit_test(grads_softmax_dropout),
        cmocka_unit_test(grads_bce),
        cmocka_unit_test(grads_sampled),
        cmocka_unit_test(grads_sampled_dropout),
        cmocka_unit_test(grads_tokens),
        cmocka_unit_test(grads_tokens_sampled),
        cmocka_unit_test(grads_table),
        cmocka_unit_test(grads_table_sampled),
        cmocka_unit_test(grads_own),
        cmocka_unit_test(grads_own_sampled),
        cmocka_unit_test(grads_fixed),
        cmocka_unit_test(grads_fixed_sampled),
        cmocka_unit_test(sampled_loss_by_hand),
        cmocka_unit_test(sampler_draws),
        cmocka_unit_test(learns_pattern_softmax),
        cmocka_unit_test(learns_pattern_bce),
        cmocka_unit_test(learns_pattern_sampled),
        cmocka_unit_test(sequences_mark_ties),
        cmocka_unit_test(ties_shuffle_within_runs),
        cmocka_unit_test(cf_blend_ranks),
        cmocka_unit_test(cf_blend_by_ties),
        cmocka_unit_test(evaluate_sasrec_e2e),
        cmocka_unit_test(dataset_presets),
        cmocka_unit_test(killed_sasrec_resumes_identically),
        cmocka_unit_test(stopped_every_epoch_resumes_identically),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
