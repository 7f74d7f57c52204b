/* test_t5_alloc: a T5 training step (forward, backward, clipping, AdamW) makes no heap
 * allocation once the arena is reserved (issue 3's "no allocation inside a step").
 *
 * The test executable is linked with -Wl,--wrap for malloc, calloc, realloc, free,
 * posix_memalign and aligned_alloc, so every call from tokenrec's own code (statically
 * linked here) goes through the counters below. Calls made inside shared libraries
 * (OpenBLAS, libgomp) are not seen; they allocate their buffers once, at first use. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include "nn.h"
#include "rng.h"
#include "t5.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void  __real_free(void *p);
int   __real_posix_memalign(void **p, size_t a, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);

/* volatile: the compiler knows malloc reads no globals and could move plain stores past it. */
static volatile int counting;       /* count only while a step runs */
static volatile long n_alloc, n_free;

void *__wrap_malloc(size_t n) { if (counting) n_alloc++; return __real_malloc(n); }
void *__wrap_calloc(size_t k, size_t n) { if (counting) n_alloc++; return __real_calloc(k, n); }
void *__wrap_realloc(void *p, size_t n) { if (counting) n_alloc++; return __real_realloc(p, n); }
void  __wrap_free(void *p) { if (counting && p) n_free++; __real_free(p); }
int   __wrap_posix_memalign(void **p, size_t a, size_t n) { if (counting) n_alloc++; return __real_posix_memalign(p, a, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { if (counting) n_alloc++; return __real_aligned_alloc(a, n); }

/* The wrappers really count: a malloc made by this file while counting is seen, and so
 * are the allocations tokenrec's library makes when it builds and frees a model. */
static void test_counter_sees_malloc(void **state) {
    (void)state;
    n_alloc = n_free = 0;
    counting = 1;
    void *volatile p = malloc(64);
    free(p);
    counting = 0;
    assert_int_equal(n_alloc, 1);
    assert_int_equal(n_free, 1);

    t5_config c;
    assert_int_equal(t5_preset("tiny", &c), 0);
    rng_t rng; rng_seed(&rng, 1);
    n_alloc = n_free = 0;
    counting = 1;
    t5_model *m = t5_new(&c, &rng);
    t5_free(m);
    counting = 0;
    assert_non_null(m);
    assert_true(n_alloc > 0);
    assert_true(n_free > 0);
}

/* Steps of a model of the given shape, after t5_reserve and two warm-up steps; batches of
 * B and of fewer rows and shorter sequences (the arena must not grow for those either). */
static void run_steps(t5_config cfg, int B, int T) {
    rng_t rng; rng_seed(&rng, 7);
    t5_model *m = t5_new(&cfg, &rng);
    assert_non_null(m);
    assert_int_equal(t5_reserve(m, B, T), 0);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *msk = malloc(sizeof(int32_t) * (size_t)B * T);
    int dl = cfg.dec_len > 0 ? cfg.dec_len : 1;
    int32_t *dec = malloc(sizeof(int32_t) * (size_t)dl);
    float *pos = malloc(sizeof(float) * (size_t)B * cfg.head_out), *neg = malloc(sizeof(float) * (size_t)B * cfg.head_out);
    for (int i = 0; i < B * T; i++) { ids[i] = 1 + (int)rng_below(&rng, (uint32_t)cfg.vocab - 1); msk[i] = (i % T) < T - (i / T) % 3; }
    for (int i = 0; i < dl; i++) dec[i] = (int)rng_below(&rng, (uint32_t)cfg.vocab);
    for (int i = 0; i < B * cfg.head_out; i++) { pos[i] = rng_normal(&rng); neg[i] = rng_normal(&rng); }
    adamw_cfg opt = adamw_default(1e-3f);
    float loss = 0;
    t5_batch full = { B, T, ids, msk, dec, 0, pos, neg };
    t5_batch part = { B - 1, T - 2, ids, msk, dec, 0, pos, neg };
    for (int s = 0; s < 2; s++) assert_int_equal(t5_train_step(m, &full, &opt, 1.0f, &rng, &loss), 0);

    n_alloc = n_free = 0;
    counting = 1;
    int rc = 0;
    for (int s = 0; s < 3; s++) {
        rc |= t5_train_step(m, &full, &opt, 1.0f, &rng, &loss);
        rc |= t5_train_step(m, &part, &opt, 1.0f, &rng, &loss);
    }
    counting = 0;
    assert_int_equal(rc, 0);
    assert_true(loss == loss);              /* finite, the steps really ran */
    assert_int_equal(n_alloc, 0);
    assert_int_equal(n_free, 0);
    assert_int_equal(t5_step(m), 2 + 6);

    free(ids); free(msk); free(dec); free(pos); free(neg);
    t5_free(m);
}

/* The tiny preset: encoder, decoder and the flatten head, with dropout. */
static void test_tiny_step_no_alloc(void **state) {
    (void)state;
    t5_config c;
    assert_int_equal(t5_preset("tiny", &c), 0);
    c.dropout = 0.1f;
    run_steps(c, 4, 12);
}

/* bench/t5's yardstick layout: encoder only, mean-pooled into a linear head. */
static void test_encoder_meanpool_step_no_alloc(void **state) {
    (void)state;
    t5_config c;
    assert_int_equal(t5_preset("tiny", &c), 0);
    c.n_dec_layers = 0; c.head_hidden = 0; c.head_out = 16; c.dropout = 0.1f;
    run_steps(c, 5, 10);
}

int main(void) {
    t5_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_sees_malloc),
        cmocka_unit_test(test_tiny_step_no_alloc),
        cmocka_unit_test(test_encoder_meanpool_step_no_alloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
