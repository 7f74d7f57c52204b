/* test_axis.c: chart axes. A single point gets a range around it (the dashboard drew valid
 * HR@10 0.087 after one epoch on -0.41..0.59), a rate never gets a negative axis nor one
 * above 1, bars keep zero, and tick steps are round and cover the range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include "axis.h"

static void single_point_gets_a_range_around_it(void **state) {
    (void)state;
    double lo, hi, v = 0.087;
    axis_range(&v, 1, 0, &lo, &hi);
    assert_true(lo >= 0 && lo < v && hi > v && hi < 0.2);
    assert_true(fabs((v - lo) - (hi - v)) < 1e-12);         /* centred on it */
    double neg = -3;
    axis_range(&neg, 1, 0, &lo, &hi);
    assert_true(lo < -3 && hi > -3 && hi < 0);
    double zero = 0;
    axis_range(&zero, 1, 0, &lo, &hi);
    assert_true(lo == 0 && hi > 0);
    double flat[3] = {2.5, 2.5, NAN};                       /* NaN gaps are ignored */
    axis_range(flat, 3, 0, &lo, &hi);
    assert_true(lo < 2.5 && hi > 2.5 && lo > 2);
}

static void rates_and_losses_stay_nonnegative(void **state) {
    (void)state;
    double lo, hi;
    double hr[4] = {0.001, 0.05, 0.08, 0.087};              /* a rate near 0: no negative axis */
    axis_range(hr, 4, 0, &lo, &hi);
    assert_true(lo == 0 && hi > 0.087 && hi < 0.1);
    double near1[2] = {0.9, 0.999};                         /* nor one above 1 */
    axis_range(near1, 2, 0, &lo, &hi);
    assert_true(lo < 0.9 && hi == 1);
    double loss[3] = {7.9, 6.1, 5.2};
    axis_range(loss, 3, 0, &lo, &hi);
    assert_true(lo > 5 && lo < 5.2 && hi > 7.9 && hi < 8.1);
    double mixed[2] = {-1, 1};                              /* signed data is padded both ways */
    axis_range(mixed, 2, 0, &lo, &hi);
    assert_true(lo < -1 && hi > 1);
    axis_range(NULL, 0, 0, &lo, &hi);                       /* nothing: a unit range */
    assert_true(lo == 0 && hi == 1);
}

static void bars_keep_zero(void **state) {
    (void)state;
    double lo, hi;
    double v[2] = {0.03, 0.09};
    axis_range(v, 2, AXIS_ZERO, &lo, &hi);
    assert_true(lo == 0 && hi > 0.09 && hi <= 0.1);
    double z[2] = {0, 0};
    axis_range(z, 2, AXIS_ZERO, &lo, &hi);
    assert_true(lo == 0 && hi > 0);
    double n[2] = {-2, -1};
    axis_range(n, 2, AXIS_ZERO, &lo, &hi);
    assert_true(lo < -2 && hi == 0);
}

static void round_steps(void **state) {
    (void)state;
    double lo = 0, hi = 0.0957;
    double s = axis_step(&lo, &hi, 5, 1);
    assert_true(fabs(s - 0.02) < 1e-12);
    assert_true(lo == 0 && fabs(hi - 0.1) < 1e-12);
    lo = 0.0783; hi = 0.0957;
    s = axis_step(&lo, &hi, 4, 1);
    assert_true(fabs(s - 0.005) < 1e-12);
    assert_true(fabs(lo - 0.075) < 1e-12 && fabs(hi - 0.1) < 1e-12);
    assert_true((hi - lo) / s <= 5 + 1e-9);                 /* at most one interval more */
    lo = 0.5; hi = 0.999;                                   /* an hi <= 1 stays <= 1 */
    s = axis_step(&lo, &hi, 4, 1);
    assert_true(hi <= 1 && hi > 0.999 - 1e-12);
    lo = 5.2; hi = 7.9;
    s = axis_step(&lo, &hi, 6, 0);                          /* without widen: untouched */
    assert_true(fabs(s - 0.5) < 1e-12 && lo == 5.2 && hi == 7.9);
    lo = 3; hi = 3;
    assert_true(axis_step(&lo, &hi, 5, 1) == 1);            /* empty span: no loop, no NaN */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_point_gets_a_range_around_it),
        cmocka_unit_test(rates_and_losses_stay_nonnegative),
        cmocka_unit_test(bars_keep_zero),
        cmocka_unit_test(round_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
