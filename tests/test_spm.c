/* test_spm.c: the SentencePiece unigram tokenizer read from a tokenizer.json, and the prompt
 * vocabulary built with it.
 *
 * Fixture tests/data/tokenizer.json (t5-small's layout: Precompiled + " {2,}" normalizer,
 * WhitespaceSplit + Metaspace "▁" with the prefix space, Unigram with unk_id 2), 42 pieces:
 *   0 <pad>  1 </s>  2 <unk>  3 ▁ (-3)  4 ▁the (-1)  5 ▁user (-1.5)  6 _ (-2)  7 ▁item (-1.5)
 *   8 ' (-3.5)  9 , 10 . 11 ? 12 : (-2.5)  13 ▁ab (-2)  14 ▁abc (-1.5)  15 cd (-1)
 *   16..41 the letters a..z (-5 each). No capital letters: they are unknown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "prompt.h"
#include "spm.h"
#include "util.h"

#define L_(c) (16 + ((c) - 'a'))      /* id of a single-letter piece */
#define SP 3                          /* "▁" */
#define UNK 2

static char *fixture(const char *name) {
    const char *d = getenv("TOKENREC_TESTDATA");
    char *p = tr_malloc(4096);
    snprintf(p, 4096, "%s/%s", d ? d : "../tests/data", name);
    return p;
}

static spm_model *load_fixture(void) {
    char *p = fixture("tokenizer.json");
    spm_model *s = spm_load(p);
    if (!s) fprintf(stderr, "%s\n", tr_errmsg());
    free(p);
    assert_non_null(s);
    return s;
}

/* Encode text and compare with the n expected ids. */
static void expect(const spm_model *s, const char *text, int at_start, const int32_t *want, int n) {
    int32_t out[256];
    int k = spm_encode(s, text, at_start, out, 256);
    if (k != n) fprintf(stderr, "'%s': %d tokens, expected %d\n", text, k, n);
    assert_int_equal(k, n);
    for (int i = 0; i < n; i++) {
        if (out[i] != want[i]) fprintf(stderr, "'%s': token %d is %d, expected %d\n", text, i, out[i], want[i]);
        assert_int_equal(out[i], want[i]);
    }
}

static void loads_the_fixture(void **state) {
    (void)state;
    spm_model *s = load_fixture();
    assert_int_equal(spm_vocab_size(s), 42);
    assert_int_equal(spm_unk_id(s), 2);
    assert_int_equal(spm_piece_id(s, "</s>"), 1);
    assert_int_equal(spm_piece_id(s, "\xE2\x96\x81the"), 4);
    assert_int_equal(spm_piece_id(s, "z"), 41);
    assert_int_equal(spm_piece_id(s, "zebra"), -1);
    assert_string_equal(spm_piece(s, 7), "\xE2\x96\x81item");
    assert_null(spm_piece(s, 42));
    spm_free(s);
}

/* Every word starts with "▁"; runs of spaces and leading/trailing spaces change nothing. */
static void metaspace_prefix(void **state) {
    (void)state;
    spm_model *s = load_fixture();
    int32_t a[] = {4, 5, 6};                          /* ▁the ▁user _ */
    expect(s, "the user_", 1, a, 3);
    expect(s, "  the    user_ ", 1, a, 3);
    expect(s, "the user_", 0, a, 3);                  /* add_prefix_space: every segment */
    int32_t b[] = {5, 8, L_('s')};                    /* user's: ▁user ' s */
    expect(s, "user's", 1, b, 3);
    int32_t c[] = {SP, 9};                            /* a lone comma is a word: ▁ , */
    expect(s, ",", 0, c, 2);
    expect(s, "", 1, NULL, 0);
    spm_free(s);
}

/* A character no piece covers becomes <unk>; consecutive ones fuse into one. */
static void unknown_characters(void **state) {
    (void)state;
    spm_model *s = load_fixture();
    int32_t a[] = {4, SP, UNK};                       /* the Zé: ▁the ▁ <unk> */
    expect(s, "the Z\xC3\xA9", 1, a, 3);
    int32_t b[] = {SP, UNK, L_('h'), L_('e')};        /* The: ▁ <unk> h e */
    expect(s, "The", 1, b, 4);
    int32_t c[] = {SP, L_('x'), UNK, L_('y')};        /* x€€y: the two unknowns fuse */
    expect(s, "x\xE2\x82\xAC\xE2\x82\xACy", 1, c, 4);
    spm_free(s);
}

/* "abcd": greedy longest match takes ▁abc (-1.5) then d (-5) = -6.5; Viterbi finds
 * ▁ab (-2) + cd (-1) = -3. "abc" alone is ▁abc (-1.5 beats ▁ab + c = -7). */
static void viterbi_beats_greedy(void **state) {
    (void)state;
    spm_model *s = load_fixture();
    int32_t a[] = {13, 15};
    expect(s, "abcd", 1, a, 2);
    int32_t b[] = {14};
    expect(s, "abc", 1, b, 1);
    int32_t c[] = {14, L_('e')};                      /* abce: ▁abc e (-6.5) beats ▁ab c e (-12) */
    expect(s, "abce", 1, c, 2);
    spm_free(s);
}

static const char *mini_json(const char *pre) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"\xE2\x96\x81\",-2],"
             "[\"\xE2\x96\x81" "a\",-1],[\"a\",-3],[\"b\",-3]]},\"pre_tokenizer\":%s}", pre);
    return buf;
}

/* prepend_scheme "first" adds ▁ only at the start of the input; split false keeps the
 * whole text one word; no pre-tokenizer leaves spaces as they are (a space is unknown). */
static void metaspace_schemes(void **state) {
    (void)state;
    const char *j = mini_json("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":true}");
    spm_model *s = spm_load_mem(j, strlen(j), "first");
    assert_non_null(s);
    int32_t a[] = {2, 4, 2};                          /* "ab a" at the start: ▁a b ▁a */
    expect(s, "ab a", 1, a, 3);
    int32_t b[] = {3, 4, 2};                          /* not at the start: a b ▁a */
    expect(s, "ab a", 0, b, 3);
    spm_free(s);
    j = mini_json("null");
    s = spm_load_mem(j, strlen(j), "none");
    assert_non_null(s);
    int32_t c[] = {3, 0, 4};                          /* "a b": a <unk> b */
    expect(s, "a b", 1, c, 3);
    spm_free(s);
}

/* Bad files give a message that says what was expected. */
static void malformed_files(void **state) {
    (void)state;
    struct { const char *json, *msg; } cases[] = {
        {"{\"model\": ", "not valid JSON"},
        {"[1,2]", "not a JSON object"},
        {"{\"version\":\"1.0\"}", "no \"model\" object"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", "expected \"Unigram\""},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "non-empty array"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\"]]}}", "model.vocab[0]"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1],[\"b\",\"x\"]]}}", "model.vocab[1]"},
        {"{\"model\":{\"type\":\"Unigram\",\"unk_id\":5,\"vocab\":[[\"a\",-1]]}}", "unk_id"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1]],\"byte_fallback\":true}}", "byte_fallback"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1]]},\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}",
         "unsupported pre_tokenizer type 'ByteLevel'"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1]]},\"normalizer\":{\"type\":\"BertNormalizer\"}}",
         "unsupported normalizer type"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1]]},\"added_tokens\":[{\"id\":\"x\"}]}", "added_tokens[0]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tr_error_clear();
        spm_model *s = spm_load_mem(cases[i].json, strlen(cases[i].json), "bad.json");
        if (s || !strstr(tr_errmsg(), cases[i].msg) || !strstr(tr_errmsg(), "bad.json"))
            fprintf(stderr, "case %zu: got '%s', expected '%s'\n", i, tr_errmsg(), cases[i].msg);
        assert_null(s);
        assert_non_null(strstr(tr_errmsg(), cases[i].msg));
        assert_non_null(strstr(tr_errmsg(), "bad.json"));
    }
    assert_null(spm_load("/nonexistent/tokenizer.json"));
    assert_non_null(strstr(tr_errmsg(), "/nonexistent/tokenizer.json"));
    char *p = fixture("tokenizer_truncated.json");
    assert_null(spm_load(p));
    assert_non_null(strstr(tr_errmsg(), "not valid JSON"));
    free(p);
    /* an unknown character with no unk_id cannot be encoded */
    const char *j = "{\"model\":{\"type\":\"Unigram\",\"unk_id\":null,\"vocab\":[[\"a\",-1]]}}";
    spm_model *s = spm_load_mem(j, strlen(j), "nounk");
    assert_non_null(s);
    int32_t out[8];
    assert_int_equal(spm_encode(s, "ab", 1, out, 8), -1);
    assert_non_null(strstr(tr_errmsg(), "unk_id"));
    assert_int_equal(spm_encode(s, "aaaa", 1, out, 2), -1);    /* cap too small */
    spm_free(s);
}

static void render(const prompt_vocab *v, const int32_t *ids, int n, char *out, size_t len) {
    out[0] = 0;
    char b[64];
    for (int i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, len - l, "%s%s", i ? " " : "", prompt_token_text(v, ids[i], b, sizeof b));
    }
}

#define U "\xE2\x96\x81"
static const char *const want_test =
    U " <unk> i v e n " U "the " U "user _ <a-1> <b-2> " U " ' s " U " p r e v i o u s "
    U " i n t e r a c t i o n s " U " w i t h " U "the " U "item _ <0-0> <1-1> " U "item _ <0-3> <1-3> "
    U " , " U " w h a t " U " a r e " U "the " U "user " U " p r e f e r e n c e s ? </s>";
static const char *const want_dec =
    "<pad> " U " <unk> h e " U " i n t e r a c t i o n " U " h i s t o r y " U " s h o w s " U " t h a t "
    U "the " U "user " U " p r e f e r e n c e " U " c o u l d " U " b e </s>";

/* The SentencePiece prompt vocabulary: exact test prompt and decoder prompt, ID tokens after
 * the checkpoint's rows, and the JSON form rebuilds the same prompts. */
static void spm_prompt_vocabulary(void **state) {
    (void)state;
    spm_model *s = load_fixture();
    prompt_vocab v, w;
    assert_int_equal(prompt_vocab_init_spm(&v, s, 41, 2, 4, 0), -1);     /* fewer rows than tokens */
    assert_non_null(strstr(tr_errmsg(), "41 embedding rows"));
    assert_int_equal(prompt_vocab_init_spm(&v, s, 48, 2, 4, 1), 0);
    assert_int_equal(v.base_item, 48);
    assert_int_equal(v.base_user, 48 + 8);
    assert_int_equal(v.base_extra, 48 + 16);
    assert_int_equal(v.vocab, 48 + 16 + 1);
    assert_int_equal(v.n_user_pre, 2);
    assert_int_equal(v.user_pre[0], 5);
    assert_int_equal(v.item_pre[0], 7);
    int32_t user[2] = {1, 2}, items[4] = {0, 1, 3, 3}, out[256];
    int n = prompt_encode(&v, PROMPT_TEST, user, items, 2, 2, out, 256);
    assert_true(n > 0 && n <= prompt_max_len(&v, 2, 2));
    char text[2048];
    render(&v, out, n, text, sizeof text);
    if (strcmp(text, want_test)) fprintf(stderr, "got  %s\nwant %s\n", text, want_test);
    assert_string_equal(text, want_test);
    int32_t dec[64];
    prompt_decoder(&v, dec, 64);
    render(&v, dec, v.dec_len + 1, text, sizeof text);
    if (strcmp(text, want_dec)) fprintf(stderr, "got  %s\nwant %s\n", text, want_dec);
    assert_string_equal(text, want_dec);
    /* every template: a round trip through JSON gives the same ids */
    char *js = prompt_vocab_json(&v);
    assert_non_null(js);
    assert_int_equal(prompt_vocab_from_json(&w, js, 2, 4, 1), 0);
    assert_int_equal(w.vocab, v.vocab);
    assert_int_equal(w.spm, 1);
    int32_t items3[6] = {0, 1, 0, 3, 3, 0}, o2[256];
    for (int t = 0; t < PROMPT_N; t++) {
        int a = prompt_encode(&v, t, user, items3, 3, 2, out, 256);
        int b = prompt_encode(&w, t, user, items3, 3, 2, o2, 256);
        assert_true(a > 0);
        assert_int_equal(a, b);
        assert_memory_equal(out, o2, (size_t)a * sizeof *out);
        char t1[2048], t2[2048];
        render(&v, out, a, t1, sizeof t1);
        render(&w, o2, b, t2, sizeof t2);
        assert_string_equal(t1, t2);
        assert_null(strstr(t1, "<?"));          /* every piece the prompts use is named */
    }
    prompt_vocab_free(&w);
    assert_int_equal(prompt_vocab_from_json(&w, "{\"kind\":\"sentencepiece\"}", 2, 4, 1), -1);
    assert_int_equal(prompt_vocab_from_json(&w, "[", 2, 4, 1), -1);
    free(js);
    /* the word-level vocabulary has no JSON form (rec_model_save stores K, L, extra only) */
    prompt_vocab x;
    assert_int_equal(prompt_vocab_init(&x, 2, 4, 0), 0);
    assert_null(prompt_vocab_json(&x));
    prompt_vocab_free(&x);
    prompt_vocab_free(&v);
    spm_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loads_the_fixture),
        cmocka_unit_test(metaspace_prefix),
        cmocka_unit_test(unknown_characters),
        cmocka_unit_test(viterbi_beats_greedy),
        cmocka_unit_test(metaspace_schemes),
        cmocka_unit_test(malformed_files),
        cmocka_unit_test(spm_prompt_vocabulary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
