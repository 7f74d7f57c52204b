/* test_retrieval.c: HR and NDCG on hand-worked ranks (ties, target in history, K larger
 * than the item count), top-K against a full sort, history exclusion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "recmodel.h"
#include "retrieval.h"
#include "rng.h"

static void metrics_by_hand(void **state) {
    (void)state;
    retr_metrics m;
    int ks[3] = {10, 20, 30};
    retr_metrics_init(&m, 3, ks);
    retr_metrics_add(&m, 0);     /* first: HR 1, NDCG 1 */
    retr_metrics_add(&m, 3);     /* fourth: NDCG 1/log2(5) */
    retr_metrics_add(&m, 15);    /* 16th: only @20 and @30 */
    retr_metrics_add(&m, -1);    /* excluded: a miss */
    assert_int_equal(m.n, 4);
    assert_true(fabs(retr_hr(&m, 10) - 0.5) < 1e-12);
    assert_true(fabs(retr_hr(&m, 20) - 0.75) < 1e-12);
    assert_true(fabs(retr_ndcg(&m, 10) - (1 + 1 / log2(5.0)) / 4) < 1e-12);
    assert_true(fabs(retr_ndcg(&m, 20) - (1 + 1 / log2(5.0) + 1 / log2(17.0)) / 4) < 1e-12);
    assert_true(retr_hr(&m, 40) == 0);   /* not a tracked K */
}

static void ranks_with_ties_and_exclusion(void **state) {
    (void)state;
    float s[5] = {1.0f, 2.0f, 2.0f, 0.0f, -INFINITY};
    assert_int_equal(retr_rank(s, 5, 1), 0);
    assert_int_equal(retr_rank(s, 5, 2), 1);     /* tie: the lower id goes first */
    assert_int_equal(retr_rank(s, 5, 0), 2);
    assert_int_equal(retr_rank(s, 5, 3), 3);
    assert_int_equal(retr_rank(s, 5, 4), -1);    /* excluded (history) */
    int32_t idx[10];
    float val[10];
    assert_int_equal(retr_topk(s, 5, 10, idx, val), 4);   /* K > available items */
    int32_t want[4] = {1, 2, 0, 3};
    assert_memory_equal(idx, want, sizeof want);
}

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *s = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (s[x] != s[y]) return s[x] > s[y] ? -1 : 1;
    return x - y;
}

static void topk_equals_full_sort(void **state) {
    (void)state;
    rng_t r;
    rng_seed(&r, 5);
    enum { N = 997 };
    float s[N];
    int32_t all[N], idx[50];
    float val[50];
    for (int trial = 0; trial < 20; trial++) {
        for (int i = 0; i < N; i++) {
            s[i] = (float)rng_below(&r, 100) / 7.0f;          /* many ties */
            if (rng_below(&r, 10) == 0) s[i] = -INFINITY;      /* some excluded */
            all[i] = i;
        }
        qsort_r(all, N, sizeof *all, cmp_desc, s);
        int got = retr_topk(s, N, 50, idx, val);
        assert_int_equal(got, 50);
        for (int k = 0; k < 50; k++) {
            assert_int_equal(idx[k], all[k]);
            assert_true(val[k] == s[all[k]]);
            assert_int_equal(retr_rank(s, N, idx[k]), k);
        }
    }
}

static void scores_dot_and_cosine(void **state) {
    (void)state;
    float q[2 * 2] = {1, 0, 3, 4}, pool[3 * 2] = {2, 0, 0, 1, 1, 1}, inv[3], sc[6];
    retr_scores(sc, q, 2, pool, NULL, 3, 2, 0);
    float want[6] = {2, 0, 1, 6, 4, 7};
    for (int i = 0; i < 6; i++) assert_true(fabsf(sc[i] - want[i]) < 1e-6f);
    retr_inv_norms(inv, pool, 3, 2);
    retr_scores(sc, q, 2, pool, inv, 3, 2, 1);
    assert_true(fabsf(sc[0] - 1.0f) < 1e-6f);
    assert_true(fabsf(sc[5] - 7.0f / (5.0f * sqrtf(2.0f))) < 1e-6f);
}

/* Known items are excluded: valid excludes train; test excludes train and valid. */
static void rank_rows_exclude_history(void **state) {
    (void)state;
    int32_t seq[6] = {0, 1, 2, 3, 4, 5};      /* train 0..3, valid 4, test 5 */
    int64_t off[2] = {0, 6};
    rec_data d;
    memset(&d, 0, sizeof d);
    d.n_users = 1; d.n_items = 8; d.off = off; d.seq = seq;
    int32_t u = 0;
    float s[8] = {9, 9, 9, 9, 5, 4, 6, 1};    /* history scores highest */
    retr_metrics m;
    int ks[1] = {1};
    retr_metrics_init(&m, 1, ks);
    rec_rank_rows(&d, &u, 1, 1, s, &m, 0, NULL, NULL);
    assert_true(s[0] == -INFINITY && s[3] == -INFINITY);
    assert_true(s[4] == 5);                   /* the valid target itself stays */
    assert_true(retr_hr(&m, 1) == 0);         /* item 6 scores above the valid item 4 */
    float t[8] = {9, 9, 9, 9, 9, 4, 3, 1};
    retr_metrics_init(&m, 1, ks);
    rec_rank_rows(&d, &u, 1, 2, t, &m, 0, NULL, NULL);
    assert_true(t[4] == -INFINITY);           /* at test time the valid item is history */
    assert_true(retr_hr(&m, 1) == 1);         /* test item 5 is now first */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metrics_by_hand),
        cmocka_unit_test(ranks_with_ties_and_exclusion),
        cmocka_unit_test(topk_equals_full_sort),
        cmocka_unit_test(scores_dot_and_cosine),
        cmocka_unit_test(rank_rows_exclude_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
