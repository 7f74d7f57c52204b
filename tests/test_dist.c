/* test_dist.c: the MPI layer in a plain (not mpirun) process, as every unit test and every
 * single-process run sees it: rank 0 of 1, collectives that change nothing, all shards on
 * this rank, and the shard accumulator's fixed tree: (g0 + g1) + (g2 + g3), the sum two
 * ranks of two shards each give, so 1 and 2 processes agree bitwise. The 2-process side is
 * tests/e2e_mpi.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "dist.h"

static void one_process_without_mpirun(void **state) {
    (void)state;
    int argc = 1;
    char *args[] = {"test", NULL}, **argv = args;
    assert_int_equal(dist_init(&argc, &argv), 0);
    assert_int_equal(dist_rank(), 0);
    assert_int_equal(dist_size(), 1);
    assert_true(dist_default_threads() >= 1);
    float g[3] = {1.5f, -2, 3};
    double x = 0.25;
    dist_allreduce_sum(g, 3, DIST_F32);
    dist_allreduce_mean(g, 3);
    dist_reduce_sum(&x, 1, DIST_F64);
    dist_bcast(&x, sizeof x);
    assert_true(g[0] == 1.5f && g[1] == -2 && g[2] == 3 && x == 0.25);
    assert_int_equal(dist_bcast_int(7), 7);
    assert_int_equal(dist_any(0), 0);
    assert_int_equal(dist_any(5), 1);
    assert_int_equal(dist_same(g, sizeof g), 1);
    int g0, g1;
    dist_shards(8, &g0, &g1);
    assert_int_equal(g0, 0);
    assert_int_equal(g1, 8);
    dist_stats st;
    dist_get_stats(&st);
    assert_int_equal(st.calls, 0);             /* nothing went over a network */
    dist_finalize();
}

/* Values whose float sums depend on the order, so the tree shape shows. */
static void accumulator_sums_in_a_fixed_tree(void **state) {
    (void)state;
    const float v[4][2] = {{1e8f, 1}, {-1e8f, 3}, {0.5f, 1e-8f}, {0.25f, -1}};
    dist_accum a;
    float extra[2] = {1, 2}, out[2];
    for (int round = 0; round < 2; round++) {  /* a second batch reuses the buffers */
        dist_accum_init(&a, 2, 2, 4);
        for (int g = 0; g < 4; g++) dist_accum_push(&a, v[g]);
        dist_accum_reduce(&a, out, extra);
        for (int k = 0; k < 2; k++) {
            float left = v[0][k] + v[1][k], right = v[2][k] + v[3][k];
            assert_memory_equal(&out[k], &(float){left + right}, sizeof(float));
        }
        assert_true(extra[0] == 1 && extra[1] == 2);
        dist_accum_free(&a);
    }
    /* three shards: (g0 + g1) + g2; none: zeros */
    dist_accum_init(&a, 2, 0, 3);
    for (int g = 0; g < 3; g++) dist_accum_push(&a, v[g]);
    dist_accum_reduce(&a, out, NULL);
    assert_true(out[0] == (v[0][0] + v[1][0]) + v[2][0] && out[1] == (v[0][1] + v[1][1]) + v[2][1]);
    dist_accum_reduce(&a, out, NULL);
    assert_true(out[0] == 0 && out[1] == 0);
    dist_accum_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_process_without_mpirun),
        cmocka_unit_test(accumulator_sums_in_a_fixed_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
