/* test_cli.c: option parsing, errors that name the option, help, and the params JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "util.h"

typedef struct { int epochs; double lr; const char *name; int flag; } opts_t;

static void make(opts_t *o, cli_opt t[5]) {
    o->epochs = 10; o->lr = 0.001; o->name = "x"; o->flag = 0;
    cli_opt tab[5] = {
        {"epochs", CLI_INT, &o->epochs, "epochs", 1},
        {"lr", CLI_FLOAT, &o->lr, "learning rate", 1},
        {"name", CLI_STR, &o->name, "a name", 0},
        {"flag", CLI_FLAG, &o->flag, "a flag", 1},
        CLI_OPT_END};
    memcpy(t, tab, sizeof tab);
}

static void parses_all_forms(void **state) {
    (void)state;
    opts_t o; cli_opt t[5]; make(&o, t);
    char *argv[] = {"cmd", "--epochs", "7", "--lr=0.5", "--name", "abc", "--flag", NULL};
    assert_int_equal(cli_parse(7, argv, t, "u", "s"), 0);
    assert_int_equal(o.epochs, 7);
    assert_true(o.lr == 0.5);
    assert_string_equal(o.name, "abc");
    assert_int_equal(o.flag, 1);
    char *argv2[] = {"cmd", "--no-flag", NULL};
    assert_int_equal(cli_parse(2, argv2, t, "u", "s"), 0);
    assert_int_equal(o.flag, 0);
}

static void errors_name_the_option(void **state) {
    (void)state;
    opts_t o; cli_opt t[5]; make(&o, t);
    char *a1[] = {"cmd", "--epochs", "ten", NULL};
    assert_int_equal(cli_parse(3, a1, t, "u", "s"), -1);
    assert_non_null(strstr(tr_errmsg(), "--epochs"));
    assert_non_null(strstr(tr_errmsg(), "integer"));
    char *a2[] = {"cmd", "--bogus", NULL};
    assert_int_equal(cli_parse(2, a2, t, "u", "s"), -1);
    assert_non_null(strstr(tr_errmsg(), "--bogus"));
    char *a3[] = {"cmd", "--lr", NULL};
    assert_int_equal(cli_parse(2, a3, t, "u", "s"), -1);
    assert_non_null(strstr(tr_errmsg(), "expects a value"));
    char *a4[] = {"cmd", "stray", NULL};
    assert_int_equal(cli_parse(2, a4, t, "u", "s"), -1);
    char *a5[] = {"cmd", "--lr", "nan", NULL};
    assert_int_equal(cli_parse(3, a5, t, "u", "s"), -1);
    assert_int_equal(o.epochs, 10);          /* untouched by the failed parses */
}

static void help_returns_one(void **state) {
    (void)state;
    opts_t o; cli_opt t[5]; make(&o, t);
    char *a[] = {"cmd", "--help", NULL};
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w");
    int rc = cli_parse(2, a, t, "u", "s");
    fclose(stdout);
    stdout = saved;
    assert_int_equal(rc, 1);
}

static void params_json_is_canonical(void **state) {
    (void)state;
    opts_t o; cli_opt t[5]; make(&o, t);
    char *j = cli_params_json(t);
    assert_string_equal(j, "{\"epochs\":10,\"lr\":0.001,\"flag\":0}");   /* name has param = 0 */
    free(j);
    o.epochs = 11;
    j = cli_params_json(t);
    assert_string_equal(j, "{\"epochs\":11,\"lr\":0.001,\"flag\":0}");
    free(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_all_forms),
        cmocka_unit_test(errors_name_the_option),
        cmocka_unit_test(help_returns_one),
        cmocka_unit_test(params_json_is_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
