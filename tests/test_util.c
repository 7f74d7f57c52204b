/* test_util.c: error slot, duration formatting, hashing, growable arrays, file reading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"
#include "testutil.h"

static void error_slot_formats_and_returns_minus_one(void **state) {
    (void)state;
    assert_int_equal(tr_error("%s:%d: expected %s", "f.txt", 7, "a number"), -1);
    assert_string_equal(tr_errmsg(), "f.txt:7: expected a number");
    /* a message may wrap the previous one */
    tr_error("outer: %s", tr_errmsg());
    assert_string_equal(tr_errmsg(), "outer: f.txt:7: expected a number");
    tr_error_clear();
    assert_string_equal(tr_errmsg(), "");
}

static void durations(void **state) {
    (void)state;
    char b[32];
    assert_string_equal(tr_fmt_duration(12.34, b, sizeof b), "12.3s");
    assert_string_equal(tr_fmt_duration(185, b, sizeof b), "3m05s");
    assert_string_equal(tr_fmt_duration(3720, b, sizeof b), "1h02m");
    assert_string_equal(tr_fmt_duration(-1, b, sizeof b), "?");
}

static void hash_differs_and_chains(void **state) {
    (void)state;
    uint64_t a = tr_hash64("abc", 3, 0), b = tr_hash64("abd", 3, 0);
    assert_true(a != b);
    assert_true(tr_hash64("abc", 3, 0) == a);
    uint64_t c = tr_hash64("c", 1, tr_hash64("ab", 2, 0));
    assert_true(c == a);            /* FNV-1a chains byte by byte */
}

static void ivec_grows(void **state) {
    (void)state;
    tr_ivec v = {0};
    for (int i = 0; i < 1000; i++) tr_ivec_push(&v, i * 3);
    assert_int_equal(v.n, 1000);
    assert_int_equal(v.v[999], 2997);
    tr_ivec_free(&v);
    assert_null(v.v);
}

static void read_file_and_missing_file(void **state) {
    (void)state;
    char *p = tu_path("x.txt");
    assert_int_equal(tu_write_file(p, "hello\n"), 0);
    char *data;
    size_t n;
    assert_int_equal(tr_read_file(p, &data, &n), 0);
    assert_int_equal(n, 6);
    assert_string_equal(data, "hello\n");
    free(data);
    assert_int_equal(tr_read_file("/nonexistent/file", &data, &n), -1);
    assert_non_null(strstr(tr_errmsg(), "/nonexistent/file"));
    assert_int_equal(tr_read_file(tu_tmpdir(), &data, &n), -1);   /* a directory */
    free(p);
}

/* A missing ../shared: skipped (77) outside CI, a failure (1) under CI=true; a present
 * folder is found through $TOKENREC_SHARED. */
static void missing_shared_skips_or_fails_under_ci(void **state) {
    (void)state;
    char buf[512], *old = getenv("TOKENREC_SHARED") ? strdup(getenv("TOKENREC_SHARED")) : NULL;
    char *oldci = getenv("CI") ? strdup(getenv("CI")) : NULL;
    setenv("TOKENREC_SHARED", tu_tmpdir(), 1);
    assert_null(tu_shared_dir("no-such-folder", buf, sizeof buf));
    assert_non_null(tu_shared_dir(".", buf, sizeof buf));
    unsetenv("CI");
    assert_int_equal(tu_shared_missing("no-such-folder"), 77);
    setenv("CI", "true", 1);
    assert_int_equal(tu_shared_missing("no-such-folder"), 1);
    if (oldci) setenv("CI", oldci, 1); else unsetenv("CI");
    if (old) setenv("TOKENREC_SHARED", old, 1); else unsetenv("TOKENREC_SHARED");
    free(old);
    free(oldci);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_slot_formats_and_returns_minus_one),
        cmocka_unit_test(durations),
        cmocka_unit_test(hash_differs_and_chains),
        cmocka_unit_test(ivec_grows),
        cmocka_unit_test(read_file_and_missing_file),
        cmocka_unit_test(missing_shared_skips_or_fails_under_ci),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
