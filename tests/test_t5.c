/* test_t5.c: the T5 model against the t5-tiny test vectors (outputs, loss and the gradient
 * of every parameter) under the OpenBLAS kernels tokenrec chooses, vocabulary resizing, the encoder-only variant, and a small training
 * run that must learn a synthetic task. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "blaskernel.h"
#include "rng.h"
#include "safetensors.h"
#include "t5.h"
#include "util.h"
#include "testutil.h"

/* |a-b| <= 1e-4 + 1e-3*|b| elementwise; prints the first mismatch. */
static int close_to(const char *what, const float *a, const float *b, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(a[i] - b[i]) <= 1e-4f + 1e-3f * fabsf(b[i]))) {
            if (!bad) print_error("%s[%zu]: got %.7g, expected %.7g\n", what, i, a[i], b[i]);
            bad++;
        }
    }
    if (bad) print_error("%s: %d of %zu values differ\n", what, bad, n);
    return bad == 0;
}

static void matches_test_vectors(void **state) {
    (void)state;
    char sd[4096];
    TU_NEED_SHARED("testvectors/t5-tiny", sd);
    char mp[4200], cp[4200];
    snprintf(mp, sizeof mp, "%s/model.safetensors", sd);
    snprintf(cp, sizeof cp, "%s/case.safetensors", sd);
    rng_t rng; rng_seed(&rng, 1);
    t5_model *m = t5_load(mp, NULL, &rng);
    if (!m) print_error("%s\n", tr_errmsg());
    assert_non_null(m);
    const t5_config *c = t5_cfg(m);
    assert_int_equal(c->vocab, 64); assert_int_equal(c->d_model, 32);
    assert_int_equal(c->n_heads, 4); assert_int_equal(c->d_kv, 8);
    assert_int_equal(c->d_ff, 64); assert_int_equal(c->n_enc_layers, 2);
    assert_int_equal(c->n_dec_layers, 2); assert_int_equal(c->head_hidden, 48);
    assert_int_equal(c->head_out, 16); assert_int_equal(c->dec_len, 6);

    st_file cs;
    assert_int_equal(st_load(&cs, cp), 0);
    const st_tensor *ids = st_find(&cs, "enc_ids"), *mask = st_find(&cs, "enc_mask");
    const st_tensor *dids = st_find(&cs, "dec_ids"), *pos = st_find(&cs, "pos"), *neg = st_find(&cs, "neg");
    assert_non_null(ids); assert_non_null(mask); assert_non_null(dids);
    assert_non_null(pos); assert_non_null(neg);
    int B = (int)ids->shape[0], T = (int)ids->shape[1];
    t5_batch b = { .B = B, .T = T, .enc_ids = ids->i, .enc_mask = mask->i,
                   .dec_ids = dids->i, .dec_per_row = 1, .pos = pos->f, .neg = neg->f };
    float loss = 0;
    assert_int_equal(t5_reserve(m, 8, 64), 0);     /* a larger arena than the batch needs */
    assert_int_equal(t5_forward(m, &b, 0, NULL, &loss), 0);
    assert_true(close_to("enc_out", t5_enc_out(m), st_find(&cs, "enc_out")->f, (size_t)B * T * 32));
    assert_true(close_to("dec_out", t5_dec_out(m), st_find(&cs, "dec_out")->f, (size_t)B * 6 * 32));
    assert_true(close_to("z", t5_z(m), st_find(&cs, "z")->f, (size_t)B * 16));
    assert_true(close_to("loss", &loss, st_find(&cs, "loss")->f, 1));
    assert_int_equal(t5_backward(m, &b), 0);
    int ok = 1, n = 0;
    for (int i = 0; i < t5_n_tensors(m); i++) {
        const t5_param *p = t5_tensor(m, i);
        char gn[256];
        snprintf(gn, sizeof gn, "grad.%s", p->name);
        const st_tensor *g = st_find(&cs, gn);
        if (!g) { print_error("missing %s\n", gn); ok = 0; continue; }
        assert_int_equal(g->numel, p->n);
        ok &= close_to(gn, t5_grads(m) + p->off, g->f, p->n);
        n++;
    }
    assert_true(ok);
    assert_int_equal(n, 51);

    /* accumulating two half-weighted passes of the same batch gives the same gradient */
    size_t np = t5_n_params(m);
    float *g1 = malloc(sizeof(float) * np);
    memcpy(g1, t5_grads(m), sizeof(float) * np);
    assert_int_equal(t5_backward_ex(m, &b, 1, 0.5f), 0);
    assert_int_equal(t5_backward_ex(m, &b, 0, 0.5f), 0);
    for (size_t i = 0; i < np; i++) assert_true(fabsf(t5_grads(m)[i] - g1[i]) <= 1e-6f + 1e-5f * fabsf(g1[i]));
    /* an external dz equal to the cosine loss gradient gives the same gradient too */
    float dz[3 * 16] = { 0 };
    cosine_loss_backward(dz, t5_z(m), pos->f, neg->f, B, 16, 1.0f);
    assert_int_equal(t5_backward_dz(m, &b, dz), 0);
    for (size_t i = 0; i < np; i++) assert_true(fabsf(t5_grads(m)[i] - g1[i]) <= 1e-6f + 1e-5f * fabsf(g1[i]));
    free(g1);

    /* shared decoder ids (one row for all) give the same result */
    float z1[48];
    memcpy(z1, t5_z(m), sizeof z1);
    b.dec_per_row = 0;
    float z2[48];
    assert_int_equal(t5_infer(m, &b, z2), 0);
    for (int i = 0; i < 48; i++) assert_true(fabsf(z1[i] - z2[i]) < 1e-6f);
    st_free(&cs);
    t5_free(m);
}

static void resize_vocab_keeps_old_rows(void **state) {
    (void)state;
    t5_config c; assert_int_equal(t5_preset("tiny", &c), 0);
    rng_t rng; rng_seed(&rng, 5);
    t5_model *m = t5_new(&c, &rng);
    assert_non_null(m);
    const t5_param *p = t5_param_find(m, "shared.weight");
    assert_non_null(p);
    float *old = malloc(sizeof(float) * p->n);
    memcpy(old, t5_params(m) + p->off, sizeof(float) * p->n);
    size_t n0 = t5_n_params(m);
    assert_int_equal(t5_resize_vocab(m, 80, &rng, 0.5f), 0);
    p = t5_param_find(m, "shared.weight");
    assert_int_equal(p->rows, 80);
    assert_int_equal(t5_n_params(m), n0 + 16 * 32);
    assert_memory_equal(old, t5_params(m) + p->off, sizeof(float) * 64 * 32);
    double s2 = 0;
    for (int i = 64 * 32; i < 80 * 32; i++) s2 += t5_params(m)[p->off + i] * t5_params(m)[p->off + i];
    assert_true(s2 > 0);
    assert_int_equal(t5_resize_vocab(m, 10, &rng, 0), -1);
    /* a new id trains */
    int32_t ids[2 * 5] = { 70, 3, 4, 79, 0, 1, 2, 3, 4, 5 }, msk[10] = { 1, 1, 1, 1, 0, 1, 1, 1, 1, 1 };
    int32_t dec[6] = { 0, 1, 2, 3, 4, 5 };
    float pos[32], neg[32];
    for (int i = 0; i < 32; i++) { pos[i] = rng_normal(&rng); neg[i] = rng_normal(&rng); }
    t5_batch b = { 2, 5, ids, msk, dec, 0, pos, neg };
    adamw_cfg opt = adamw_default(1e-3f);
    float loss;
    assert_int_equal(t5_train_step(m, &b, &opt, 1.0f, &rng, &loss), 0);
    assert_true(isfinite(loss));
    free(old);
    t5_free(m);
}

/* Each sequence holds one class token (ids 1..K) at a random place among filler tokens;
 * the target is the prototype vector of that class. */
static void tiny_learns_synthetic_task(void **state) {
    (void)state;
    t5_config c; assert_int_equal(t5_preset("tiny", &c), 0);
    c.dropout = 0.0f; c.head_dropout = 0.0f;
    rng_t rng; rng_seed(&rng, 11);
    t5_model *m = t5_new(&c, &rng);
    assert_non_null(m);
    enum { B = 16, T = 10, K = 4, D = 16 };
    float proto[K][D];
    memset(proto, 0, sizeof proto);   /* orthogonal prototypes: the ideal loss is 0 */
    for (int k = 0; k < K; k++) { proto[k][2 * k] = 1.0f; proto[k][2 * k + 1] = 0.5f; }
    int32_t ids[B * T], msk[B * T], dec[6] = { 0, 1, 2, 3, 4, 5 };
    float pos[B * D], neg[B * D];
    adamw_cfg opt = adamw_default(2e-3f);
    assert_int_equal(t5_reserve(m, B, T), 0);
    double first = 0, last = 0;
    int steps = 150;
    for (int s = 0; s < steps; s++) {
        for (int b = 0; b < B; b++) {
            int len = 3 + (int)rng_below(&rng, T - 2);
            int cls = (int)rng_below(&rng, K), other = (cls + 1 + (int)rng_below(&rng, K - 1)) % K;
            for (int t = 0; t < T; t++) {
                ids[b * T + t] = t < len ? 1 + K + (int)rng_below(&rng, 63 - K) : 0;
                msk[b * T + t] = t < len;
            }
            ids[b * T + rng_below(&rng, (uint32_t)len)] = 1 + cls;   /* the one class token */
            memcpy(pos + b * D, proto[cls], sizeof proto[cls]);
            memcpy(neg + b * D, proto[other], sizeof proto[other]);
        }
        t5_batch b = { B, T, ids, msk, dec, 0, pos, neg };
        float loss;
        assert_int_equal(t5_train_step(m, &b, &opt, 1.0f, &rng, &loss), 0);
        if (s < 10) first += loss / 10;
        if (s >= steps - 10) last += loss / 10;
    }
    print_message("synthetic task: loss %.4f -> %.4f\n", first, last);
    assert_true(last < 0.25 * first);
    assert_int_equal(t5_step(m), steps);
    t5_free(m);
}

/* The encoder-only variant (mean pool, one linear head) runs and learns as well, with
 * dropout on. */
static void encoder_only_pooled_trains(void **state) {
    (void)state;
    t5_config c; assert_int_equal(t5_preset("tiny", &c), 0);
    c.n_dec_layers = 0; c.head_hidden = 0; c.dropout = 0.1f;
    rng_t rng; rng_seed(&rng, 3);
    t5_model *m = t5_new(&c, &rng);
    assert_non_null(m);
    assert_null(t5_param_find(m, "decoder.final_layer_norm.weight"));
    assert_null(t5_param_find(m, "head.fc1.weight"));
    enum { B = 8, T = 6, D = 16 };
    int32_t ids[B * T], msk[B * T];
    float pos[B * D], neg[B * D];
    for (int i = 0; i < B * T; i++) { ids[i] = 1 + (int)rng_below(&rng, 63); msk[i] = (i % T) < 4 + (i / T) % 3; }
    for (int i = 0; i < B * D; i++) { pos[i] = rng_normal(&rng); neg[i] = rng_normal(&rng); }
    t5_batch b = { B, T, ids, msk, NULL, 0, pos, neg };
    adamw_cfg opt = adamw_default(3e-3f);
    float l0 = 0, l = 0;
    for (int s = 0; s < 60; s++) {
        assert_int_equal(t5_train_step(m, &b, &opt, 1.0f, &rng, &l), 0);
        if (s == 0) l0 = l;
    }
    assert_true(l < 0.5f * l0);
    t5_free(m);
}

/* With every dropout on (embeddings, sublayers, FFN, attention probabilities, final norms,
 * head) and the generator re-seeded before each forward, the backward pass matches central
 * differences of the loss for entries of every parameter tensor. */
static void dropout_gradients_match_finite_differences(void **state) {
    (void)state;
    t5_config c; assert_int_equal(t5_preset("tiny", &c), 0);
    c.dropout = 0.1f; c.head_dropout = 0.2f;
    rng_t rng; rng_seed(&rng, 21);
    t5_model *m = t5_new(&c, &rng);
    assert_non_null(m);
    enum { B = 2, T = 5 };
    int32_t ids[B * T] = { 3, 9, 12, 40, 0, 7, 7, 1, 63, 22 }, msk[B * T] = { 1, 1, 1, 1, 0, 1, 1, 1, 1, 1 };
    int32_t dec[6] = { 0, 4, 5, 6, 7, 8 };
    float pos[B * 16], neg[B * 16];
    for (int i = 0; i < B * 16; i++) { pos[i] = rng_normal(&rng); neg[i] = rng_normal(&rng); }
    t5_batch b = { B, T, ids, msk, dec, 0, pos, neg };
    rng_t d; rng_seed(&d, 8);
    float loss;
    assert_int_equal(t5_forward(m, &b, 1, &d, &loss), 0);
    assert_int_equal(t5_backward(m, &b), 0);
    size_t n = t5_n_params(m);
    float *g = malloc(sizeof(float) * n);
    memcpy(g, t5_grads(m), sizeof(float) * n);
    float *P = t5_params(m);
    int checked = 0, bad = 0;
    for (int ti = 0; ti < t5_n_tensors(m); ti++) {
        const t5_param *p = t5_tensor(m, ti);
        for (int k = 0; k < 3; k++) {
            size_t i = p->off + (size_t)rng_below(&rng, (uint32_t)p->n);
            if (!strcmp(p->name, "shared.weight")) i = p->off + (size_t)(ids[k] * 32 + k);
            float keep = P[i], h = 1e-3f, lp, lm;
            P[i] = keep + h; rng_seed(&d, 8); t5_forward(m, &b, 1, &d, &lp);
            P[i] = keep - h; rng_seed(&d, 8); t5_forward(m, &b, 1, &d, &lm);
            P[i] = keep;
            double fd = ((double)lp - lm) / (2.0 * h);
            checked++;
            if (!(fabs(fd - g[i]) <= 0.05 * fabs(fd) + 2e-4)) {
                bad++;
                print_message("%s[%zu]: analytic %.6g numeric %.6g\n", p->name, i - p->off, g[i], fd);
            }
        }
    }
    assert_true(checked >= 150);
    assert_true(bad <= checked / 50);        /* a rare ReLU kink is tolerated */
    free(g);
    t5_free(m);
}

static void presets(void **state) {
    (void)state;
    t5_config c;
    assert_int_equal(t5_preset("t5-small", &c), 0);
    assert_int_equal(c.d_model, 512); assert_int_equal(c.n_heads, 8); assert_int_equal(c.d_kv, 64);
    assert_int_equal(c.d_ff, 2048); assert_int_equal(c.n_enc_layers, 6);
    assert_int_equal(c.n_dec_layers, 6); assert_int_equal(c.vocab, 32128);
    assert_int_equal(t5_preset("small", &c), 0);
    assert_int_equal(c.d_model, 256); assert_int_equal(c.n_enc_layers, 4);
    assert_int_equal(c.n_dec_layers, 2);
    assert_int_equal(t5_preset("huge", &c), -1);
    assert_non_null(strstr(tr_errmsg(), "huge"));
}

/* The kernels tokenrec would run passed the self-check; after its re-execution they are the
 * ones it chose. Under tests/blas_shim.c (meson test t5_chosen_kernel) OpenBLAS seems to
 * load generic kernels, so on a CPU with AVX2 + FMA the re-execution must have happened. */
static void runs_on_the_chosen_kernels(void **state) {
    (void)state;
    print_message("OpenBLAS kernels %s\n", bk_describe());
    assert_null(strstr(bk_describe(), "FAILED"));
    if (getenv("TOKENREC_T5_SHIMMED") && bk_choose(bk_cpu_detect(), "Prescott", NULL).src == BK_REEXEC)
        assert_non_null(getenv("TOKENREC_BLAS_AUTO"));
    const char *ct = getenv("OPENBLAS_CORETYPE");
    if (getenv("TOKENREC_BLAS_AUTO")) assert_true(ct && !strcasecmp(bk_core(), ct));
}

int main(int argc, char **argv) {
    (void)argc;
    bk_setup(argv, 0);          /* the kernels tokenrec would choose (may re-execute) */
    t5_set_threads(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runs_on_the_chosen_kernels),
        cmocka_unit_test(presets),
        cmocka_unit_test(matches_test_vectors),
        cmocka_unit_test(dropout_gradients_match_finite_differences),
        cmocka_unit_test(resize_vocab_keeps_old_rows),
        cmocka_unit_test(tiny_learns_synthetic_task),
        cmocka_unit_test(encoder_only_pooled_trains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
