/* test_prompt.c: the vocabulary, each template's exact token sequence, the decoder prompt,
 * prefix-augmented samples and prompt batches (the valid and test items never leak). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "prompt.h"
#include "recmodel.h"
#include "util.h"

/* Render ids as space-separated token text. */
static void render(const prompt_vocab *v, const int32_t *ids, int n, char *out, size_t len) {
    out[0] = 0;
    char b[32];
    for (int i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, len - l, "%s%s", i ? " " : "", prompt_token_text(v, ids[i], b, sizeof b));
    }
}

static void vocabulary_layout(void **state) {
    (void)state;
    prompt_vocab v;
    assert_int_equal(prompt_vocab_init(&v, 3, 4, 0), 0);
    assert_int_equal(prompt_word_id(&v, "<pad>"), TOK_PAD);
    assert_int_equal(prompt_word_id(&v, "</s>"), TOK_END);
    assert_int_equal(v.id_user, prompt_word_id(&v, "user_"));
    assert_int_equal(v.id_item, prompt_word_id(&v, "item_"));
    assert_true(prompt_word_id(&v, "preferences") > 0);
    assert_true(prompt_word_id(&v, "'s") > 0);
    assert_int_equal(prompt_word_id(&v, "zebra"), -1);
    assert_int_equal(v.base_item, v.n_words);
    assert_int_equal(v.base_user, v.base_item + 12);
    assert_int_equal(v.vocab, v.base_user + 12);
    char b[16];
    assert_string_equal(prompt_token_text(&v, v.base_item + 4 + 3, b, sizeof b), "<1-3>");
    assert_string_equal(prompt_token_text(&v, v.base_user + 8, b, sizeof b), "<c-0>");
    prompt_vocab_free(&v);
    assert_int_equal(prompt_vocab_init(&v, 0, 4, 0), -1);
}

static void test_template_exact_tokens(void **state) {
    (void)state;
    prompt_vocab v;
    prompt_vocab_init(&v, 3, 4, 0);
    int32_t user[3] = {1, 2, 3}, items[6] = {0, 1, 2, 3, 3, 3}, out[128];
    int n = prompt_encode(&v, PROMPT_TEST, user, items, 3, 2, out, 128);
    char text[1024];
    render(&v, out, n, text, sizeof text);
    assert_string_equal(text, "Given the user_ <a-1> <b-2> <c-3> 's previous interactions with the "
                              "item_ <0-0> <1-1> <2-2> item_ <0-3> <1-3> <2-3> , what are the user "
                              "preferences ? </s>");
    n = prompt_encode(&v, 0, user, items, 3, 1, out, 128);
    render(&v, out, n, text, sizeof text);
    assert_string_equal(text, "Given the following purchase history for the user_ <a-1> <b-2> <c-3> : "
                              "item_ <0-0> <1-1> <2-2> . Predict the user preferences . </s>");
    n = prompt_encode(&v, PROMPT_UNSEEN, user, items, 3, 1, out, 128);
    render(&v, out, n, text, sizeof text);
    assert_string_equal(text, "Based on the user_ <a-1> <b-2> <c-3> 's historical engagement with the "
                              "item_ <0-0> <1-1> <2-2> , what would the user likely be interested in ? </s>");
    /* too small a buffer is refused, not overrun */
    assert_int_equal(prompt_encode(&v, 0, user, items, 3, 2, out, 10), -1);
    prompt_vocab_free(&v);
}

static void every_template_has_user_and_items_once(void **state) {
    (void)state;
    prompt_vocab v;
    prompt_vocab_init(&v, 3, 8, 5);
    int32_t user[3] = {7, 0, 5}, items[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4}, out[256];
    for (int t = 0; t < PROMPT_N; t++) {
        int n = prompt_encode(&v, t, user, items, 4, 3, out, 256);   /* 4 codes: with the extra book */
        assert_true(n > 0 && n <= prompt_max_len(&v, 4, 3));
        int nu = 0, ni = 0, unk = 0, extra = 0;
        for (int k = 0; k < n; k++) {
            nu += out[k] == v.id_user;
            ni += out[k] == v.id_item;
            unk += out[k] == TOK_UNK;
            extra += out[k] >= v.base_extra;
        }
        assert_int_equal(nu, 1);
        assert_int_equal(ni, 3);
        assert_int_equal(unk, 0);
        assert_int_equal(extra, 3);
        assert_int_equal(out[n - 1], TOK_END);
        for (int k = 0; k < n; k++) assert_true(out[k] >= 0 && out[k] < v.vocab);
    }
    assert_string_equal(prompt_templates[PROMPT_TEST], prompt_templates[5]);
    prompt_vocab_free(&v);
}

static void decoder_prompt(void **state) {
    (void)state;
    prompt_vocab v;
    prompt_vocab_init(&v, 3, 4, 0);
    int32_t dec[20];
    prompt_decoder(&v, dec, 20);
    char text[512];
    render(&v, dec, 20, text, sizeof text);
    assert_string_equal(text, "<pad> The interaction history shows that the user preference could be "
                              "<pad> <pad> <pad> <pad> <pad> <pad> <pad> <pad> <pad>");
    assert_int_equal(v.dec_len, 10);       /* ten words: with the start token, 11 */
    prompt_vocab_free(&v);
}

/* One user, 8 items: train 0..5, valid 6, test 7. */
static void one_user(rec_data *d, int32_t *seq, int64_t *off, int32_t *ucodes, int32_t *icodes) {
    memset(d, 0, sizeof *d);
    for (int i = 0; i < 8; i++) seq[i] = 10 + i;
    off[0] = 0; off[1] = 8;
    d->n_users = 1; d->n_items = 20; d->off = off; d->seq = seq;
    d->K = 3; d->L = 32; d->cpi = 3;
    ucodes[0] = 1; ucodes[1] = 2; ucodes[2] = 3;
    for (int i = 0; i < 20; i++) { icodes[3 * i] = i; icodes[3 * i + 1] = 0; icodes[3 * i + 2] = 0; }
    d->user_codes = ucodes; d->item_codes = icodes;
}

static void samples_never_touch_valid_or_test(void **state) {
    (void)state;
    rec_data d;
    int32_t seq[8], uc[3], ic[60];
    int64_t off[2];
    one_user(&d, seq, off, uc, ic);
    assert_int_equal(rec_n_train(&d, 0), 6);
    int64_t n;
    rec_sample *s = rec_samples(&d, 3, 2, -1, &n);
    assert_int_equal(n, 4);                       /* targets at positions 2, 3, 4, 5 */
    int want_hist[4] = {2, 3, 3, 3};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(s[k].pos, k + 2);
        assert_int_equal(s[k].hist, want_hist[k]);
        assert_true(s[k].pos < 6);                /* never the valid (6) or test (7) position */
        assert_true(s[k].pos - s[k].hist >= 0);
    }
    free(s);
    s = rec_samples(&d, 50, 2, 3, &n);            /* faithful cap on the target position */
    assert_int_equal(n, 2);
    free(s);
}

static void batches_hold_the_right_history(void **state) {
    (void)state;
    rec_data d;
    int32_t seq[8], uc[3], ic[60];
    int64_t off[2];
    one_user(&d, seq, off, uc, ic);
    prompt_vocab v;
    prompt_vocab_init(&v, 3, 32, 0);
    rec_batch b;
    rec_batch_init(&b, &d, &v, 4, 3, 12);
    rec_sample s[2] = {{0, 5, 3}, {0, 2, 2}};
    rec_batch_fill(&b, &d, &v, s, 2, 0, PROMPT_TEST, NULL);
    assert_int_equal(b.B, 2);
    assert_int_equal(b.target[0], 15);
    assert_int_equal(b.target[1], 12);
    /* row 0 names items 12, 13, 14 in order (their first code is the item id), nothing else */
    int found[20] = {0}, order[8], no = 0;
    for (int k = 0; k < b.T; k++) {
        if (b.ids[k] == v.id_item) {
            int item = b.ids[k + 1] - v.base_item;
            found[item]++;
            order[no++] = item;
        }
    }
    assert_int_equal(no, 3);
    assert_int_equal(order[0], 12);
    assert_int_equal(order[2], 14);
    assert_int_equal(found[15] + found[16] + found[17], 0);
    /* the shorter row is padded and masked */
    int real = 0;
    for (int k = 0; k < b.T; k++) real += b.mask[b.T + k];
    assert_true(real < b.T);
    assert_int_equal(b.ids[b.T + real - 1], TOK_END);
    assert_int_equal(b.ids[b.T + real], TOK_PAD);
    /* training: the same items, shuffled, with a random template */
    rng_t r;
    rng_seed(&r, 1);
    rec_batch_fill(&b, &d, &v, s, 1, 1, 0, &r);
    memset(found, 0, sizeof found);
    for (int k = 0; k < b.T; k++) if (b.ids[k] == v.id_item) found[b.ids[k + 1] - v.base_item]++;
    assert_int_equal(found[12] + found[13] + found[14], 3);
    rec_batch_free(&b);
    prompt_vocab_free(&v);
}

/* The item ids a batch row names, in prompt order (their first code is the item id). */
static int row_items(const rec_batch *b, const prompt_vocab *v, int row, int *out) {
    int n = 0;
    for (int k = 0; k < b->T; k++)
        if (b->ids[(size_t)row * b->T + k] == v->id_item) out[n++] = b->ids[(size_t)row * b->T + k + 1] - v->base_item;
    return n;
}

/* Training prompts shuffle the history unless keep_order (--history-order kept), which lists
 * it chronologically as evaluation does, whatever the draw. */
static void training_history_order(void **state) {
    (void)state;
    rec_data d;
    int32_t seq[8], uc[3], ic[60];
    int64_t off[2];
    one_user(&d, seq, off, uc, ic);
    prompt_vocab v;
    prompt_vocab_init(&v, 3, 32, 0);
    rec_batch b;
    rec_batch_init(&b, &d, &v, 4, 5, 12);
    rec_sample s[1] = {{0, 5, 5}};
    int shuffled = 0;
    for (int keep = 0; keep <= 1; keep++) {
        b.keep_order = keep;
        for (uint64_t seed = 1; seed <= 20; seed++) {
            rng_t r;
            rng_seed(&r, seed);
            rec_batch_fill(&b, &d, &v, s, 1, 1, 0, &r);
            int items[8];
            assert_int_equal(row_items(&b, &v, 0, items), 5);
            int in_order = 1;
            for (int i = 0; i < 5; i++) in_order &= items[i] == 10 + i;
            if (keep) assert_true(in_order);
            else shuffled += !in_order;
        }
    }
    assert_true(shuffled >= 15);        /* 5! orders: the chronological one has p = 1/120 */
    rec_batch_free(&b);
    prompt_vocab_free(&v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vocabulary_layout),
        cmocka_unit_test(test_template_exact_tokens),
        cmocka_unit_test(every_template_has_user_and_items_once),
        cmocka_unit_test(decoder_prompt),
        cmocka_unit_test(samples_never_touch_valid_or_test),
        cmocka_unit_test(batches_hold_the_right_history),
        cmocka_unit_test(training_history_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
