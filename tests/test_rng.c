/* test_rng.c: the seeded generator is deterministic, in range and roughly uniform. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include "rng.h"

static void same_seed_same_stream(void **state) {
    (void)state;
    rng_t a, b, c;
    rng_seed(&a, 42); rng_seed(&b, 42); rng_seed(&c, 43);
    int differs = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = rng_u64(&a), y = rng_u64(&b), z = rng_u64(&c);
        assert_true(x == y);
        differs |= (x != z);
    }
    assert_true(differs);
}

static void below_in_range_and_uniform(void **state) {
    (void)state;
    rng_t r; rng_seed(&r, 7);
    int counts[10] = {0};
    for (int i = 0; i < 100000; i++) {
        uint32_t v = rng_below(&r, 10);
        assert_true(v < 10);
        counts[v]++;
    }
    for (int i = 0; i < 10; i++) assert_true(counts[i] > 9500 && counts[i] < 10500);
}

static void uniform_and_normal_moments(void **state) {
    (void)state;
    rng_t r; rng_seed(&r, 1);
    double s = 0, s2 = 0, u = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        float x = rng_normal(&r); s += x; s2 += (double)x * x;
        float v = rng_uniform(&r); assert_true(v >= 0.0f && v < 1.0f); u += v;
    }
    assert_true(fabs(s / n) < 0.01);
    assert_true(fabs(s2 / n - 1.0) < 0.02);
    assert_true(fabs(u / n - 0.5) < 0.005);
}

static void shuffle_is_permutation(void **state) {
    (void)state;
    rng_t r; rng_seed(&r, 3);
    uint32_t a[100]; int seen[100] = {0};
    for (int i = 0; i < 100; i++) a[i] = (uint32_t)i;
    rng_shuffle_u32(&r, a, 100);
    int moved = 0;
    for (int i = 0; i < 100; i++) { seen[a[i]]++; moved += a[i] != (uint32_t)i; }
    for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1);
    assert_true(moved > 50);
}

static void split_gives_independent_reproducible_streams(void **state) {
    (void)state;
    rng_t p1, p2, c1, c2, d1;
    rng_seed(&p1, 9); rng_seed(&p2, 9);
    rng_split(&p1, &c1, 1); rng_split(&p2, &c2, 1);
    assert_true(rng_u64(&c1) == rng_u64(&c2));
    rng_seed(&p1, 9); rng_split(&p1, &d1, 2);
    rng_seed(&p2, 9); rng_split(&p2, &c2, 1);
    assert_true(rng_u64(&d1) != rng_u64(&c2));
}

/* A stage's stream of the shared seed: reproducible, different per stage and per seed. */
static void stage_streams_of_one_seed(void **state) {
    (void)state;
    assert_true(rng_stream(42, "cf") == rng_stream(42, "cf"));
    assert_true(rng_stream(42, "cf") != rng_stream(42, "tokenize"));
    assert_true(rng_stream(42, "cf") != rng_stream(43, "cf"));
    assert_true(rng_stream(42, "cf") != 42);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_seed_same_stream),
        cmocka_unit_test(below_in_range_and_uniform),
        cmocka_unit_test(uniform_and_normal_moments),
        cmocka_unit_test(shuffle_is_permutation),
        cmocka_unit_test(split_gives_independent_reproducible_streams),
        cmocka_unit_test(stage_streams_of_one_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
