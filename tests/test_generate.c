/* test_generate.c: the autoregressive baseline: the prefix trie, the incremental decoder's
 * key/value cache against a full forward, constrained beam search (every item once when the
 * beam is as wide as the catalogue; scores are sums of token log-probabilities; collided
 * items share a score, ordered by id), and the generate loss gradient against finite
 * differences on the tiny preset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "genrec.h"
#include "t5_gen.h"
#include "util.h"

enum { NU = 4, NI = 12, K = 3, LL = 4, SEQ = 6, P = 5, HIST = 8 };

/* Item tuples of 3 codes out of 4; items 3 and 9 collide on (1,2,1), items 5 and 10 on
 * (2,0,2); (0,2) is no item's prefix. */
static const int32_t item_codes[NI * K] = {
    0,0,0, 0,1,2, 1,0,3, 1,2,1, 2,3,0, 2,0,2, 3,3,3, 0,3,1, 3,1,0, 1,2,1, 2,0,2, 1,1,1 };

typedef struct {
    rec_data     d;
    prompt_vocab v;
    t5_model    *m;
} fixture;

static int setup(void **state) {
    fixture *f = tr_calloc(1, sizeof *f);
    rec_data *d = &f->d;
    d->n_users = NU; d->n_items = NI; d->K = K; d->L = LL; d->cpi = K; d->extra = 0;
    d->off = tr_malloc((NU + 1) * sizeof *d->off);
    d->seq = tr_malloc(NU * SEQ * sizeof *d->seq);
    d->user_codes = tr_malloc(NU * K * sizeof *d->user_codes);
    d->item_codes = tr_malloc(NI * K * sizeof *d->item_codes);
    memcpy(d->item_codes, item_codes, sizeof item_codes);
    for (int u = 0; u <= NU; u++) d->off[u] = (int64_t)u * SEQ;
    for (int u = 0; u < NU; u++) {
        for (int k = 0; k < SEQ; k++) d->seq[u * SEQ + k] = (u * 5 + k * 7) % NI;
        for (int k = 0; k < K; k++) d->user_codes[u * K + k] = (u + k) % LL;
    }
    assert_int_equal(prompt_vocab_init(&f->v, K, LL, 0), 0);
    t5_config c;
    t5_preset("tiny", &c);
    c.vocab = f->v.vocab;
    c.dec_len = P + K - 1;
    c.dropout = 0; c.head_dropout = 0;
    rng_t r; rng_seed(&r, 7);
    f->m = t5_new(&c, &r);
    assert_non_null(f->m);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    t5_free(f->m);
    prompt_vocab_free(&f->v);
    rec_data_free(&f->d);
    free(f);
    return 0;
}

static void trie_admits_exactly_the_items(void **state) {
    fixture *f = *state;
    gen_trie t;
    assert_int_equal(gen_trie_build(&t, item_codes, NI, K), 0);
    int total = 0;
    for (int a = 0; a < LL; a++)
        for (int b = 0; b < LL * LL; b++) {
            int32_t tup[3] = {a, b / LL, b % LL};
            const int32_t *items = NULL;
            int n = gen_trie_lookup(&t, tup, &items);
            int want = 0;
            for (int i = 0; i < NI; i++)
                if (item_codes[i * K] == tup[0] && item_codes[i * K + 1] == tup[1] && item_codes[i * K + 2] == tup[2]) {
                    assert_true(want < n);
                    assert_int_equal(items[want], i);         /* the items, by id */
                    want++;
                }
            assert_int_equal(n, want);
            total += n;
        }
    assert_int_equal(total, NI);
    assert_int_equal(t.n_leaves, 10);
    assert_int_equal(t.n_collided, 2);
    assert_int_equal(t.n_collided_items, 4);
    /* prefixes: code 0..3 at the root; (0, 2) is not a prefix of anything */
    for (int a = 0; a < LL; a++) assert_true(gen_trie_child(&t, 0, a) > 0);
    assert_int_equal(gen_trie_child(&t, gen_trie_child(&t, 0, 0), 2), -1);
    assert_int_equal(gen_trie_child(&t, 0, 4), -1);
    gen_trie_free(&t);
    (void)f;
}

/* Encoder prompts of all users (test history) into rb. */
static void user_batch(fixture *f, rec_batch *rb) {
    rec_sample s[NU];
    for (int u = 0; u < NU; u++) {
        s[u].user = u; s[u].pos = rec_target_pos(&f->d, u, 2);
        s[u].hist = s[u].pos < HIST ? s[u].pos : HIST;
    }
    rec_batch_init(rb, &f->d, &f->v, NU, HIST, t5_cfg(f->m)->dec_len);
    rec_batch_fill(rb, &f->d, &f->v, s, NU, 0, PROMPT_TEST, NULL);
}

/* Full teacher-forced forward: decoder states (NU, dec_len, C) for each user's tuple of item it[u]. */
static float *full_states(fixture *f, rec_batch *rb, const int32_t *it) {
    const t5_config *c = t5_cfg(f->m);
    int32_t dec[NU * 16], codes[NU * K];
    gen_train_dec(&f->v, &f->d, it, NU, P, dec, codes);
    t5_batch tb = rec_batch_t5(rb);
    tb.dec_ids = dec; tb.dec_per_row = 1;
    assert_int_equal(t5_forward(f->m, &tb, 0, NULL, NULL), 0);
    size_t n = (size_t)NU * c->dec_len * c->d_model;
    float *h = tr_malloc(n * sizeof *h);
    memcpy(h, t5_dec_out(f->m), n * sizeof *h);
    return h;
}

static void kv_cache_matches_full_recompute(void **state) {
    fixture *f = *state;
    const t5_config *c = t5_cfg(f->m);
    int C = c->d_model, Td = c->dec_len;
    rec_batch rb;
    user_batch(f, &rb);
    int32_t ia[NU] = {3, 6, 0, 11}, ib[NU] = {8, 1, 4, 2};
    float *fa = full_states(f, &rb, ia), *fb = full_states(f, &rb, ib);
    /* incremental: the prompt from a forward with padding after it, then one step per code */
    int32_t dec[16];
    prompt_decoder(&f->v, dec, P);
    for (int t = P; t < Td; t++) dec[t] = TOK_PAD;
    t5_batch tb = rec_batch_t5(&rb);
    tb.dec_ids = dec;
    assert_int_equal(t5_forward(f->m, &tb, 0, NULL, NULL), 0);
    t5_dec_state st;
    assert_int_equal(t5_dec_init(&st, f->m, 2 * NU, Td), 0);
    float h[2 * NU * 64], ref[2 * NU * 64], lg_a[2 * NU * LL], lg_b[2 * NU * LL];
    assert_int_equal(t5_dec_start(&st, f->m, &tb, P, h), 0);
    for (int u = 0; u < NU; u++)
        for (int k = 0; k < C; k++)
            assert_float_equal(h[u * C + k], fa[((size_t)u * Td + P - 1) * C + k], 1e-5);
    /* two rows per user, continuing item a's and item b's tuples: the gather from the
     * prompt rows and the grouped cross-attention; then the rows of each user swapped, so
     * the second step reads a permuted cache */
    int32_t parent[2 * NU], tok[2 * NU];
    for (int r = 0; r < 2 * NU; r++) {
        const int32_t *it = r % 2 ? ib : ia;
        parent[r] = r / 2;
        tok[r] = gen_book(&f->v, &f->d, 0).tok0 + item_codes[it[r / 2] * K];
    }
    t5_dec_gather(&st, parent, 2 * NU, 2);
    for (int step = 1; step < K; step++) {
        assert_int_equal(t5_dec_step(&st, f->m, tok, h), 0);
        for (int r = 0; r < 2 * NU; r++) {
            int from_b = (r % 2) ^ (step == 2);          /* after the swap, even rows hold b */
            const float *full = from_b ? fb : fa;
            memcpy(ref + r * C, full + ((size_t)(r / 2) * Td + P - 1 + step) * C, sizeof(float) * C);
        }
        t5_gen_book bk = gen_book(&f->v, &f->d, step);
        t5_gen_logits(f->m, h, 2 * NU, bk, lg_a, 0);
        t5_gen_logits(f->m, ref, 2 * NU, bk, lg_b, 0);
        for (int i = 0; i < 2 * NU * C; i++) assert_float_equal(h[i], ref[i], 1e-4);
        for (int i = 0; i < 2 * NU * LL; i++) assert_float_equal(lg_a[i], lg_b[i], 1e-4);
        if (step + 1 < K) {
            for (int r = 0; r < 2 * NU; r++) parent[r] = r ^ 1;
            t5_dec_gather(&st, parent, 2 * NU, 2);
            for (int r = 0; r < 2 * NU; r++) {
                const int32_t *it = (r % 2) ? ia : ib;   /* swapped */
                tok[r] = gen_book(&f->v, &f->d, step).tok0 + item_codes[it[r / 2] * K + step];
            }
        }
    }
    t5_dec_free(&st);
    rec_batch_free(&rb);
    free(fa); free(fb);
}

typedef struct { int n[NU]; int32_t items[NU][64]; float scores[NU][64]; } sink;
static void collect(void *ctx, int32_t user, const int32_t *items, const float *scores, int n) {
    sink *s = ctx;
    s->n[user] = n;
    memcpy(s->items[user], items, (size_t)n * sizeof *items);
    memcpy(s->scores[user], scores, (size_t)n * sizeof *scores);
}

static void full_beam_returns_every_item_once_with_logprob_sums(void **state) {
    fixture *f = *state;
    const t5_config *c = t5_cfg(f->m);
    int C = c->d_model, Td = c->dec_len;
    gen_search g;
    assert_int_equal(gen_search_init(&g, f->m, &f->v, &f->d, NI, NU, HIST), 0);
    int32_t users[NU] = {0, 1, 2, 3};
    sink s;
    memset(&s, 0, sizeof s);
    assert_int_equal(gen_search_users(&g, f->m, &f->v, &f->d, users, NU, 0, PROMPT_TEST, NULL, 64, collect, &s), 0);
    rec_batch rb;
    user_batch(f, &rb);
    float lp[64];
    for (int u = 0; u < NU; u++) {
        assert_int_equal(s.n[u], NI);
        int seen[NI] = {0};
        for (int i = 0; i < NI; i++) seen[s.items[u][i]]++;
        for (int i = 0; i < NI; i++) assert_int_equal(seen[i], 1);
        for (int i = 1; i < NI; i++) {           /* score desc, then item id */
            assert_true(s.scores[u][i - 1] >= s.scores[u][i]);
            if (s.scores[u][i - 1] == s.scores[u][i]) assert_true(s.items[u][i - 1] < s.items[u][i]);
        }
    }
    /* every user's score of item i against the teacher-forced sum of log-probabilities */
    for (int i = 0; i < NI; i++) {
        int32_t it[NU] = {i, i, i, i};
        float *full = full_states(f, &rb, it);
        for (int u = 0; u < NU; u++) {
            double sum = 0;
            for (int st = 0; st < K; st++) {
                t5_gen_book bk = gen_book(&f->v, &f->d, st);
                t5_gen_logits(f->m, full + ((size_t)u * Td + P - 1 + st) * C, 1, bk, lp, 0);
                t5_gen_log_softmax(lp, 1, bk.n);
                sum += lp[item_codes[i * K + st]];
            }
            int at = -1;
            for (int j = 0; j < NI; j++) if (s.items[u][j] == i) at = j;
            assert_true(at >= 0);
            assert_float_equal(s.scores[u][at], sum, 1e-4);
        }
        free(full);
    }
    /* collided items share their tuple's score */
    for (int u = 0; u < NU; u++) {
        float sc[NI];
        for (int j = 0; j < NI; j++) sc[s.items[u][j]] = s.scores[u][j];
        assert_true(sc[3] == sc[9]);
        assert_true(sc[5] == sc[10]);
    }
    /* a narrow beam: B items or fewer per user, a prefix of the wide beam's order is not
     * guaranteed, but every returned item is real and known items are excluded on split 2 */
    gen_search g2;
    assert_int_equal(gen_search_init(&g2, f->m, &f->v, &f->d, 3, NU, HIST), 0);
    memset(&s, 0, sizeof s);
    assert_int_equal(gen_search_users(&g2, f->m, &f->v, &f->d, users, NU, 2, PROMPT_TEST, NULL, 64, collect, &s), 0);
    for (int u = 0; u < NU; u++) {
        assert_true(s.n[u] >= 1 && s.n[u] <= 6);    /* 3 beams, a tuple holds at most 2 items */
        for (int j = 0; j < s.n[u]; j++)
            for (int k = 0; k < SEQ - 1; k++) assert_int_not_equal(s.items[u][j], f->d.seq[u * SEQ + k]);
    }
    gen_search_free(&g2);
    gen_search_free(&g);
    rec_batch_free(&rb);
}

static float loss_at(fixture *f, t5_batch *tb, const t5_gen_book *bk, const int32_t *codes, t5_gen_ws *w) {
    assert_int_equal(t5_forward(f->m, tb, 0, NULL, NULL), 0);
    return t5_gen_loss(f->m, tb, P, K, bk, codes, w, 0);
}

static void generate_loss_gradient_matches_finite_differences(void **state) {
    fixture *f = *state;
    rec_batch rb;
    user_batch(f, &rb);
    int32_t it[NU] = {1, 4, 9, 7}, dec[NU * 16], codes[NU * K];
    gen_train_dec(&f->v, &f->d, it, NU, P, dec, codes);
    t5_batch tb = rec_batch_t5(&rb);
    tb.dec_ids = dec; tb.dec_per_row = 1;
    t5_gen_book bk[K] = {gen_book(&f->v, &f->d, 0), gen_book(&f->v, &f->d, 1), gen_book(&f->v, &f->d, 2)};
    t5_gen_ws w;
    t5_gen_ws_init(&w, f->m, NU, LL);
    assert_int_equal(t5_forward(f->m, &tb, 0, NULL, NULL), 0);
    float L0 = t5_gen_loss(f->m, &tb, P, K, bk, codes, &w, 1);
    assert_true(isfinite(L0) && L0 > 0);
    float *g = t5_grads(f->m), *p = t5_params(f->m);
    const char *names[] = {"shared.weight", "decoder.block.1.layer.2.DenseReluDense.wo.weight",
                           "decoder.block.0.layer.1.EncDecAttention.v.weight",
                           "encoder.block.0.layer.0.SelfAttention.k.weight",
                           "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"};
    int checked = 0;
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        const t5_param *tp = t5_param_find(f->m, names[t]);
        assert_non_null(tp);
        /* the three largest gradients of the tensor; in shared.weight among the item-token
         * rows, where the tied LM head's gradient adds to the embedding's */
        size_t lo = 0, hi = tp->n;
        if (t == 0) { lo = (size_t)f->v.base_item * t5_cfg(f->m)->d_model; hi = lo + (size_t)K * LL * t5_cfg(f->m)->d_model; }
        size_t best[3] = {lo, lo, lo};
        for (size_t i = lo; i < hi; i++) {
            float a = fabsf(g[tp->off + i]);
            if (a > fabsf(g[tp->off + best[0]])) { best[2] = best[1]; best[1] = best[0]; best[0] = i; }
            else if (a > fabsf(g[tp->off + best[1]])) { best[2] = best[1]; best[1] = i; }
            else if (a > fabsf(g[tp->off + best[2]])) best[2] = i;
        }
        assert_true(fabsf(g[tp->off + best[0]]) > 1e-4f);     /* a gradient worth checking */
        for (int j = 0; j < 3; j++) {
            size_t i = tp->off + best[j];
            float an = g[i], keep = p[i], e = 1e-2f;
            p[i] = keep + e;
            float lp = loss_at(f, &tb, bk, codes, &w);
            p[i] = keep - e;
            float lm = loss_at(f, &tb, bk, codes, &w);
            p[i] = keep;
            float fd = (lp - lm) / (2 * e);
            if (getenv("GEN_TEST_VERBOSE")) fprintf(stderr, "%s[%zu]: analytic %.6g, fd %.6g\n", names[t], best[j], an, fd);
            if (!(fabsf(fd - an) <= 2e-3f + 5e-2f * fabsf(fd)))
                print_error("%s[%zu]: analytic %.6g, finite difference %.6g\n", names[t], best[j], an, fd);
            assert_true(fabsf(fd - an) <= 2e-3f + 5e-2f * fabsf(fd));
            checked++;
        }
    }
    assert_int_equal(checked, 15);
    t5_gen_ws_free(&w);
    rec_batch_free(&rb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(trie_admits_exactly_the_items, setup, teardown),
        cmocka_unit_test_setup_teardown(kv_cache_matches_full_recompute, setup, teardown),
        cmocka_unit_test_setup_teardown(full_beam_returns_every_item_once_with_logprob_sums, setup, teardown),
        cmocka_unit_test_setup_teardown(generate_loss_gradient_matches_finite_differences, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
