/* test_blaskernel.c: the OpenBLAS kernel choice as a pure function (a table of CPUs, cores
 * and environments), the sgemm self-check against wrong products, and, through the tokenrec
 * binary with tests/blas_shim.c preloaded (OpenBLAS then seems to load generic kernels),
 * the re-execution, the fallback after a failed self-check, and the kernels in the logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "blaskernel.h"
#include "db.h"
#include "nn.h"
#include "testutil.h"

/* ---- the choice ---- */

static const bk_cpu AVX512 = {1, 1, 1, 1, 1, 1}, AVX2 = {1, 1, 0, 0, 0, 0};
static const bk_cpu AVX2_NOFMA = {1, 0, 0, 0, 0, 0}, KNL = {1, 1, 1, 0, 0, 0}, NONE = {0};

typedef struct {
    const char *what;
    bk_cpu cpu;
    const char *core;
    const char *env[4];
    bk_source src;
    const char *kernel, *other;
} choice_case;

static const choice_case choice_cases[] = {
    {"generic core on AVX-512", AVX512, "Prescott", {NULL}, BK_REEXEC, "SkylakeX", ""},
    {"AVX2 core on AVX-512 (Zen 4)", AVX512, "Haswell", {NULL}, BK_REEXEC, "SkylakeX", ""},
    {"Zen core on AVX-512", AVX512, "Zen", {NULL}, BK_REEXEC, "SkylakeX", ""},
    {"OpenBLAS's Unknown", AVX512, "Unknown", {NULL}, BK_REEXEC, "SkylakeX", ""},
    {"case of the name", AVX512, "prescott", {NULL}, BK_REEXEC, "SkylakeX", ""},
    {"generic core on AVX2", AVX2, "Core2", {NULL}, BK_REEXEC, "Haswell", ""},
    {"AVX core on AVX2", AVX2, "Sandybridge", {NULL}, BK_REEXEC, "Haswell", ""},
    {"AVX-512F without BW/DQ/VL", KNL, "Prescott", {NULL}, BK_REEXEC, "Haswell", ""},
    {"AVX2 without FMA", AVX2_NOFMA, "Prescott", {NULL}, BK_DEFAULT, "Prescott", ""},
    {"no wide vectors", NONE, "Prescott", {NULL}, BK_DEFAULT, "Prescott", ""},
    {"already AVX-512", AVX512, "SkylakeX", {NULL}, BK_DEFAULT, "SkylakeX", ""},
    {"Cooperlake", AVX512, "Cooperlake", {NULL}, BK_DEFAULT, "Cooperlake", ""},
    {"already AVX2", AVX2, "Zen", {NULL}, BK_DEFAULT, "Zen", ""},
    {"a core this table does not know", AVX512, "Neoverse", {NULL}, BK_DEFAULT, "Neoverse", ""},
    {"explicit setting wins", AVX512, "Prescott", {"OPENBLAS_CORETYPE=Prescott"},
     BK_ENV, "Prescott", "Prescott"},
    {"explicit Haswell on AVX-512", AVX512, "Haswell", {"PATH=/bin", "OPENBLAS_CORETYPE=Haswell"},
     BK_ENV, "Haswell", "Haswell"},
    {"explicit setting over a fallback", AVX512, "Prescott",
     {"TOKENREC_BLAS_FALLBACK=SkylakeX", "OPENBLAS_CORETYPE=Core2"}, BK_ENV, "Prescott", "Core2"},
    {"empty setting is no setting", AVX512, "Prescott", {"OPENBLAS_CORETYPE="},
     BK_REEXEC, "SkylakeX", ""},
    {"a longer name is another variable", AVX512, "Prescott", {"OPENBLAS_CORETYPEX=Haswell"},
     BK_REEXEC, "SkylakeX", ""},
    {"after the re-execution", AVX512, "SkylakeX",
     {"OPENBLAS_CORETYPE=SkylakeX", "TOKENREC_BLAS_AUTO=SkylakeX:Prescott"}, BK_AUTO, "SkylakeX",
     "Prescott"},
    {"user changed the setting since", AVX512, "Haswell",
     {"OPENBLAS_CORETYPE=Haswell", "TOKENREC_BLAS_AUTO=SkylakeX:Prescott"}, BK_ENV, "Haswell",
     "Haswell"},
    {"after a failed self-check: never again", AVX512, "Prescott",
     {"TOKENREC_BLAS_FALLBACK=SkylakeX"}, BK_FALLBACK, "Prescott", "SkylakeX"},
    {"turned off", AVX512, "Prescott", {"TOKENREC_NO_BLAS_REEXEC=1"}, BK_DEFAULT, "Prescott", ""},
};

static void choice_table(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof choice_cases / sizeof *choice_cases; i++) {
        const choice_case *t = &choice_cases[i];
        bk_choice c = bk_choose(t->cpu, t->core, (char *const *)t->env);
        if (c.src != t->src || strcmp(c.kernel, t->kernel) || strcmp(c.other, t->other))
            print_error("case '%s': got source %d kernel %s other '%s'\n", t->what, (int)c.src,
                        c.kernel, c.other);
        assert_int_equal(c.src, t->src);
        assert_string_equal(c.kernel, t->kernel);
        assert_string_equal(c.other, t->other);
    }
    /* no environment at all, no core name */
    bk_choice c = bk_choose(AVX512, "Prescott", NULL);
    assert_int_equal(c.src, BK_REEXEC);
    c = bk_choose(AVX512, NULL, NULL);
    assert_int_equal(c.src, BK_DEFAULT);
    assert_string_equal(c.kernel, "unknown");
}

/* ---- the self-check ---- */

/* Wrong products: each computes the real one (nn_sgemm), then spoils it. */
static void drop_last_k(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    nn_sgemm(tA, tB, M, N, K - 1, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* bfloat16 results: 8 significant bits. */
static void bf16_result(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    nn_sgemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *c = &C[(size_t)i * ldc + j];
            int e;
            float m = frexpf(*c, &e);
            *c = ldexpf(roundf(m * 256) / 256, e);
        }
}

static void one_element_off(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                            int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    nn_sgemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    C[(size_t)(M - 1) * ldc + N - 1] += 0.5f;
}

static void nan_element(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    nn_sgemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    C[0] = NAN;
}

/* A last-bit difference, as another summation order gives: must pass. */
static void rounding_noise(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                           int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    nn_sgemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (int i = 0; i < M; i++) C[(size_t)i * ldc] *= 1 + 1e-6f;
}

static void selfcheck_passes_on_the_real_product(void **state) {
    (void)state;
    char where[64];
    double e = bk_selfcheck(NULL, where, sizeof where);
    print_message("cblas_sgemm on %s: relative error %.3g (worst %s)\n", bk_core(), e, where);
    assert_true(e < BK_SELFCHECK_TOL);
    assert_true(e < 1e-6);                  /* float32 against double: far below the bar */
    nn_set_threads(2);                      /* the model's wrapper, split across threads */
    e = bk_selfcheck(nn_sgemm, where, sizeof where);
    assert_true(e < BK_SELFCHECK_TOL);
    assert_true(bk_selfcheck(rounding_noise, NULL, 0) < BK_SELFCHECK_TOL);
}

static void selfcheck_fails_on_a_wrong_product(void **state) {
    (void)state;
    const struct { const char *what; bk_gemm_fn fn; } wrong[] = {
        {"last k dropped", drop_last_k}, {"bfloat16 results", bf16_result},
        {"one element off", one_element_off}, {"a NaN", nan_element},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        char where[64] = "";
        double e = bk_selfcheck(wrong[i].fn, where, sizeof where);
        print_message("%s: relative error %.3g in %s\n", wrong[i].what, e, where);
        assert_false(e < BK_SELFCHECK_TOL);
        assert_non_null(strstr(where, "sgemm"));
    }
}

/* ---- the binary, with OpenBLAS seeming to load generic kernels ---- */

/* The shim, or NULL (then these tests skip). */
static const char *shim(void) {
    const char *s = getenv("TOKENREC_BLAS_SHIM");
    return s && *s ? s : NULL;
}

/* Run tokenrec with the shim preloaded and no kernel choice in the environment; extra
 * are more NAME=value settings. Output (stdout and stderr) in out; exit status. */
static int run_shimmed(char *out, size_t n, const char *extra, const char *args) {
    return tu_capture(out, n, "env -u OPENBLAS_CORETYPE -u TOKENREC_BLAS_AUTO "
                      "-u TOKENREC_BLAS_FALLBACK -u TOKENREC_NO_BLAS_REEXEC LD_PRELOAD=%s "
                      "ASAN_OPTIONS=detect_leaks=1:verify_asan_link_order=0 %s %s %s", shim(),
                      extra, tu_bin(), args);
}

static void binary_chooses_and_falls_back(void **state) {
    (void)state;
    if (!shim()) { skip(); return; }
    bk_choice c = bk_choose(bk_cpu_detect(), "Prescott", NULL);
    char out[4096], want[160];
    assert_int_equal(run_shimmed(out, sizeof out, "", "info --blas"), 0);
    print_message("%s", out);
    if (c.src != BK_REEXEC) {           /* a CPU without AVX2 + FMA: nothing to choose */
        assert_non_null(strstr(out, "Prescott (OpenBLAS default)"));
        return;
    }
    snprintf(want, sizeof want, "OpenBLAS kernels %s (tokenrec's choice; OpenBLAS default Prescott)\n",
             c.kernel);
    assert_string_equal(out, want);
    /* the chosen kernels spoil sgemm: back to the default, said on stderr */
    char brk[64];
    snprintf(brk, sizeof brk, "TOKENREC_SHIM_BREAK=%s", c.kernel);
    assert_int_equal(run_shimmed(out, sizeof out, brk, "info --blas"), 0);
    print_message("%s", out);
    snprintf(want, sizeof want, "the OpenBLAS %s kernels failed the self-check", c.kernel);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "going back to OpenBLAS's default kernels, Prescott"));
    snprintf(want, sizeof want, "OpenBLAS kernels Prescott (OpenBLAS default; %s failed the "
             "self-check)\n", c.kernel);
    assert_non_null(strstr(out, want));
    /* an explicit setting wins, even a slow one */
    assert_int_equal(run_shimmed(out, sizeof out, "OPENBLAS_CORETYPE=Prescott", "info --blas"), 0);
    assert_string_equal(out, "OpenBLAS kernels Prescott (OPENBLAS_CORETYPE)\n");
}

/* A stage's first log line names the kernels, and its run records them. */
static void stage_logs_and_records_kernels(void **state) {
    (void)state;
    if (!shim()) { skip(); return; }
    char *f = tu_path("seq.txt"), *dbp = tu_path("k.db"), args[1024], out[8192];
    assert_int_equal(tu_synthetic_file(f, 40, 30, 3, 6, 10, 3), 0);
    snprintf(args, sizeof args, "ingest --db %s --dataset synth --format sequence --file %s", dbp, f);
    assert_int_equal(run_shimmed(out, sizeof out, "", args), 0);
    print_message("%s", out);
    const char *line1 = strstr(out, "[ingest] synth: run 1, OpenBLAS kernels ");
    assert_true(line1 == out);
    sqlite3 *db = db_open(dbp, 1);
    assert_non_null(db);
    char *desc = strchr(out, '\n');
    assert_non_null(desc);
    *desc = 0;
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM stage_runs WHERE id=1 AND blas=%Q",
                                  out + strlen("[ingest] synth: run 1, OpenBLAS kernels ")), 1);
    db_close(db);
    snprintf(args, sizeof args, "info --db %s", dbp);
    assert_int_equal(run_shimmed(out, sizeof out, "", args), 0);
    assert_true(strstr(out, "OpenBLAS kernels ") == out);
    free(f); free(dbp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(choice_table),
        cmocka_unit_test(selfcheck_passes_on_the_real_product),
        cmocka_unit_test(selfcheck_fails_on_a_wrong_product),
        cmocka_unit_test(binary_chooses_and_falls_back),
        cmocka_unit_test(stage_logs_and_records_kernels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
