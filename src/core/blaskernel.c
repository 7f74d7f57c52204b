/* blaskernel.c: the OpenBLAS kernel choice, its self-check and the re-execution
 * (see blaskernel.h). */
#include "blaskernel.h"
#include "rng.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------
 * The choice
 * ------------------------------------------------------------------------------------ */

/* Instruction-set levels: 0 SSE-era, 1 AVX, 2 AVX2 + FMA, 3 AVX-512. */
static const struct { const char *name; int level; } bk_cores[] = {
    {"Unknown", 0}, {"Katmai", 0}, {"Coppermine", 0}, {"Northwood", 0}, {"Prescott", 0},
    {"Banias", 0}, {"Atom", 0}, {"Core2", 0}, {"Penryn", 0}, {"Dunnington", 0},
    {"Nehalem", 0}, {"Athlon", 0}, {"Opteron", 0}, {"Opteron(SSE3)", 0}, {"Barcelona", 0},
    {"Nano", 0}, {"Sandybridge", 1}, {"Bulldozer", 1}, {"Piledriver", 1}, {"Steamroller", 1},
    {"Excavator", 1}, {"Haswell", 2}, {"Zen", 2}, {"SkylakeX", 3}, {"Cooperlake", 3},
    {"SapphireRapids", 3},
};

/* The level of an OpenBLAS core name, or -1 for a name this table does not know. */
static int core_level(const char *core) {
    if (!core) return -1;
    for (size_t i = 0; i < sizeof bk_cores / sizeof *bk_cores; i++)
        if (!strcasecmp(core, bk_cores[i].name)) return bk_cores[i].level;
    return -1;
}

/* The best level the CPU runs, and OpenBLAS's kernel set for it (NULL below AVX2). */
static int cpu_level(bk_cpu cpu, const char **kernel) {
    *kernel = NULL;
    if (cpu.avx512f && cpu.avx512bw && cpu.avx512dq && cpu.avx512vl) { *kernel = "SkylakeX"; return 3; }
    if (cpu.avx2 && cpu.fma) { *kernel = "Haswell"; return 2; }
    return 0;
}

/* The value of NAME in a NULL-terminated "NAME=value" list, or NULL. */
static const char *env_get(char *const *env, const char *name) {
    size_t n = strlen(name);
    for (; env && *env; env++)
        if (!strncmp(*env, name, n) && (*env)[n] == '=') return *env + n + 1;
    return NULL;
}

/* Copy at most len bytes of s (up to a ':' when upto_colon) into dst[32]. */
static void copy_name(char dst[32], const char *s, int upto_colon) {
    size_t n = upto_colon ? strcspn(s, ":") : strlen(s);
    if (n > 31) n = 31;
    memcpy(dst, s, n);
    dst[n] = 0;
}

bk_choice bk_choose(bk_cpu cpu, const char *core, char *const *env) {
    bk_choice c;
    memset(&c, 0, sizeof c);
    c.src = BK_DEFAULT;
    copy_name(c.kernel, core ? core : "unknown", 0);
    const char *set = env_get(env, "OPENBLAS_CORETYPE");
    if (set && *set) {
        /* ours when the marker names the same set: "chosen:default" */
        const char *mark = env_get(env, "TOKENREC_BLAS_AUTO");
        size_t n = strlen(set);
        if (mark && !strncmp(mark, set, n) && mark[n] == ':') {
            c.src = BK_AUTO;
            copy_name(c.other, mark + n + 1, 0);
        } else {
            c.src = BK_ENV;
            copy_name(c.other, set, 0);
        }
        return c;
    }
    const char *failed = env_get(env, "TOKENREC_BLAS_FALLBACK");
    if (failed && *failed) {
        c.src = BK_FALLBACK;
        copy_name(c.other, failed, 1);
        return c;
    }
    if (env_get(env, "TOKENREC_NO_BLAS_REEXEC")) return c;
    const char *faster;
    int have = core_level(core), can = cpu_level(cpu, &faster);
    if (faster && have >= 0 && have < can) {
        c.src = BK_REEXEC;
        copy_name(c.kernel, faster, 0);
    }
    return c;
}

bk_cpu bk_cpu_detect(void) {
    bk_cpu c;
    memset(&c, 0, sizeof c);
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();               /* libgcc checks that the OS saves the wide registers */
    c.avx2 = __builtin_cpu_supports("avx2") != 0;
    c.fma = __builtin_cpu_supports("fma") != 0;
    c.avx512f = __builtin_cpu_supports("avx512f") != 0;
    c.avx512bw = __builtin_cpu_supports("avx512bw") != 0;
    c.avx512dq = __builtin_cpu_supports("avx512dq") != 0;
    c.avx512vl = __builtin_cpu_supports("avx512vl") != 0;
#endif
    return c;
}

const char *bk_core(void) {
    const char *c = openblas_get_corename();
    return c && *c ? c : "unknown";
}

/* ------------------------------------------------------------------------------------
 * The self-check
 * ------------------------------------------------------------------------------------ */

/* One product: op(A) (M,K), op(B) (K,N); pad widens the leading dimensions. */
typedef struct { int tA, tB, M, N, K, pad; float alpha, beta; } bk_case;

/* Shapes of the mini and small presets: a linear layer forward (x W^T), its two backward
 * products (accumulating), per-head attention, an odd-sized one with both operands
 * transposed, and one past OpenBLAS's small-matrix path (over 100^3 multiply-adds). */
static const bk_case bk_cases[] = {
    {0, 1, 64, 96, 128, 0, 1.0f, 0.0f},
    {0, 0, 64, 128, 96, 3, 1.0f, 1.0f},
    {1, 0, 96, 128, 64, 0, 1.0f, 1.0f},
    {0, 1, 20, 20, 32, 5, 1.0f, 0.0f},
    {0, 0, 20, 32, 20, 0, 1.0f, 0.0f},
    {1, 1, 37, 45, 29, 2, 0.5f, -1.0f},
    {0, 1, 128, 96, 96, 0, 1.0f, 0.0f},
};

/* The real product: one single-threaded cblas call, row-major. */
static void cblas_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* The relative error of gemm on one case. A, B and C0 hold random values; C, Bk (op(B) as
 * K rows of N) and the rows acc and mag (N doubles each) are scratch. */
static double check_case(bk_gemm_fn gemm, const bk_case *t, const float *A, const float *B,
                         const float *C0, float *C, float *Bk, double *acc, double *mag) {
    int M = t->M, N = t->N, K = t->K;
    int ac = t->tA ? M : K, bc = t->tB ? K : N;     /* columns as stored */
    int lda = ac + t->pad, ldb = bc + t->pad, ldc = N + t->pad;
    memcpy(C, C0, sizeof *C * (size_t)M * ldc);
    gemm(t->tA, t->tB, M, N, K, t->alpha, A, lda, B, ldb, t->beta, C, ldc);
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
            Bk[(size_t)k * N + j] = t->tB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
    double worst = 0, scale = 0;
    for (int i = 0; i < M; i++) {
        memset(acc, 0, sizeof *acc * (size_t)N);
        memset(mag, 0, sizeof *mag * (size_t)N);
        for (int k = 0; k < K; k++) {
            double a = t->tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
            const float *b = Bk + (size_t)k * N;
            for (int j = 0; j < N; j++) {
                double p = a * b[j];
                acc[j] += p;
                mag[j] += fabs(p);
            }
        }
        for (int j = 0; j < N; j++) {
            double c0 = C0[(size_t)i * ldc + j];
            double d = fabs(C[(size_t)i * ldc + j] - (t->alpha * acc[j] + t->beta * c0));
            if (isnan(d)) return d;                 /* NaN is the worst there is */
            if (d > worst) worst = d;
            double m = fabs(t->alpha) * mag[j] + fabs(t->beta * c0);
            if (m > scale) scale = m;
        }
    }
    return scale > 0 ? worst / scale : worst;
}

double bk_selfcheck(bk_gemm_fn gemm, char *where, size_t n) {
    if (!gemm) gemm = cblas_gemm;
    size_t cap = 0;
    for (size_t i = 0; i < sizeof bk_cases / sizeof *bk_cases; i++) {
        const bk_case *t = &bk_cases[i];
        int big = t->M > t->N ? t->M : t->N;
        big = big > t->K ? big : t->K;
        size_t need = (size_t)(big + t->pad) * (size_t)(big + t->pad);
        if (need > cap) cap = need;
    }
    float *buf = malloc(sizeof(float) * cap * 5);
    double *rows = malloc(sizeof(double) * cap * 2);
    if (!buf || !rows) {
        free(buf);
        free(rows);
        if (where && n) snprintf(where, n, "no memory");
        return NAN;
    }
    float *A = buf, *B = buf + cap, *C0 = buf + 2 * cap, *C = buf + 3 * cap, *Bk = buf + 4 * cap;
    rng_t rng;
    rng_seed(&rng, 23);
    for (size_t i = 0; i < 3 * cap; i++) buf[i] = 2 * rng_uniform(&rng) - 1;
    double worst = 0;
    if (where && n) where[0] = 0;
    for (size_t i = 0; i < sizeof bk_cases / sizeof *bk_cases; i++) {
        const bk_case *t = &bk_cases[i];
        double e = check_case(gemm, t, A, B, C0, C, Bk, rows, rows + cap);
        if (!(e <= worst)) {                /* larger, or NaN: then the last word */
            worst = e;
            if (where && n)
                snprintf(where, n, "sgemm%s%s %dx%dx%d", t->tA ? " A^T" : "", t->tB ? " B^T" : "",
                         t->M, t->N, t->K);
            if (isnan(e)) break;
        }
    }
    free(buf);
    free(rows);
    return worst;
}

/* ------------------------------------------------------------------------------------
 * The decision for this process
 * ------------------------------------------------------------------------------------ */

static int bk_done;
static bk_choice bk_this;
static int bk_check_failed;
static char bk_line[160];

/* Re-execute this program with the current environment; returns only when that cannot be
 * done (under valgrind /proc/self/exe is valgrind's tool, which refuses to run alone). */
static void reexec(char **argv) {
    if (!argv || !argv[0]) return;
    const char *pre = getenv("LD_PRELOAD");
    if (pre && strstr(pre, "vgpreload")) return;
    fflush(stdout);
    fflush(stderr);
    execv("/proc/self/exe", argv);
}

/* Re-execute with tokenrec's choice of kernels; returns when that cannot be done. */
static void reexec_with(char **argv, const char *kernel) {
    char mark[80];
    snprintf(mark, sizeof mark, "%s:%s", kernel, bk_core());
    setenv("OPENBLAS_CORETYPE", kernel, 1);
    setenv("TOKENREC_BLAS_AUTO", mark, 1);
    reexec(argv);
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("TOKENREC_BLAS_AUTO");
}

/* tokenrec's choice failed the self-check: re-execute on OpenBLAS's default. */
static void fall_back(char **argv, double err, const char *where) {
    fprintf(stderr, "tokenrec: the OpenBLAS %s kernels failed the self-check (relative error "
            "%.2g in %s); going back to OpenBLAS's default kernels, %s\n", bk_this.kernel, err,
            where, bk_this.other);
    setenv("TOKENREC_BLAS_FALLBACK", bk_this.kernel, 1);
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("TOKENREC_BLAS_AUTO");
    reexec(argv);
    fprintf(stderr, "tokenrec: cannot re-execute; staying on the %s kernels, results may be "
            "wrong\n", bk_this.kernel);
}

void bk_setup(char **argv, int want_reexec) {
    if (bk_done) return;
    bk_done = 1;
    bk_cpu cpu = bk_cpu_detect();
    bk_this = bk_choose(cpu, bk_core(), environ);
    if (bk_this.src == BK_REEXEC) {
        reexec_with(argv, bk_this.kernel);
        bk_this.src = BK_DEFAULT;       /* could not: carry on with what was loaded */
        snprintf(bk_this.kernel, sizeof bk_this.kernel, "%s", bk_core());
    } else if (want_reexec) {
        reexec(argv);
    }
    openblas_set_num_threads(1);
    char where[64];
    double err = bk_selfcheck(NULL, where, sizeof where);
    if (err < BK_SELFCHECK_TOL) return;
    bk_check_failed = 1;
    if (bk_this.src == BK_AUTO) {
        fall_back(argv, err, where);
    } else {
        fprintf(stderr, "tokenrec: warning: the OpenBLAS %s kernels failed the self-check "
                "(relative error %.2g in %s); results may be wrong (OPENBLAS_CORETYPE selects "
                "other kernels)\n", bk_this.kernel, err, where);
    }
}

const char *bk_describe(void) {
    bk_choice c = bk_done ? bk_this : bk_choose(bk_cpu_detect(), bk_core(), environ);
    const char *core = bk_core();
    switch (c.src) {
    case BK_ENV:
        if (!strcasecmp(core, c.other)) snprintf(bk_line, sizeof bk_line, "%s (OPENBLAS_CORETYPE)", core);
        else snprintf(bk_line, sizeof bk_line, "%s (OPENBLAS_CORETYPE=%s)", core, c.other);
        break;
    case BK_AUTO:
        if (!strcasecmp(core, c.other))
            snprintf(bk_line, sizeof bk_line, "%s (OpenBLAS default; it ignored OPENBLAS_CORETYPE)", core);
        else snprintf(bk_line, sizeof bk_line, "%s (tokenrec's choice; OpenBLAS default %s)", core, c.other);
        break;
    case BK_FALLBACK:
        snprintf(bk_line, sizeof bk_line, "%s (OpenBLAS default; %s failed the self-check)", core, c.other);
        break;
    default:
        snprintf(bk_line, sizeof bk_line, "%s (OpenBLAS default)", core);
        break;
    }
    if (bk_check_failed) {
        size_t l = strlen(bk_line);
        snprintf(bk_line + l, sizeof bk_line - l, ", FAILED the self-check");
    }
    return bk_line;
}
