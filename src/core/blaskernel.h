/* blaskernel: which OpenBLAS kernel set (its "core") the dense products run on.
 *
 * OpenBLAS built with DYNAMIC_ARCH picks its kernels once, when the library loads: from
 * OPENBLAS_CORETYPE if set, else from the CPU. Debian's 0.3.21 does not recognise some
 * recent CPUs and falls back to slower kernels (generic "Prescott" on some AVX-512 Xeons,
 * AVX2 "Haswell" on some AVX-512 AMD parts). bk_setup, called first thing in main(),
 * decides once per process:
 *   - an OPENBLAS_CORETYPE in the environment is always respected;
 *   - otherwise, when OpenBLAS loaded a kernel set below what the CPU can run (AVX-512
 *     F/BW/DQ/VL: SkylakeX; AVX2 + FMA: Haswell), the program re-executes itself once
 *     with OPENBLAS_CORETYPE set to that (marked TOKENREC_BLAS_AUTO=chosen:default);
 *   - a quick numerical self-check (sgemm shapes the model uses against a plain loop)
 *     runs under the kernels in use; if tokenrec's own choice fails it, the program
 *     re-executes on OpenBLAS's default (marked TOKENREC_BLAS_FALLBACK) and says so.
 * TOKENREC_NO_BLAS_REEXEC=1 keeps whatever OpenBLAS loaded. The model core only. */
#ifndef TOKENREC_BLASKERNEL_H
#define TOKENREC_BLASKERNEL_H
#include <stddef.h>

/* The CPU features the choice looks at (1 = present and enabled by the OS). */
typedef struct { int avx2, fma, avx512f, avx512bw, avx512dq, avx512vl; } bk_cpu;

/* Where the kernel set in use came from. */
typedef enum {
    BK_DEFAULT,     /* OpenBLAS's own pick, kept */
    BK_ENV,         /* OPENBLAS_CORETYPE given by the user */
    BK_REEXEC,      /* decision: re-execute with OPENBLAS_CORETYPE=kernel */
    BK_AUTO,        /* running tokenrec's choice (after the re-execution) */
    BK_FALLBACK     /* tokenrec's choice failed the self-check: OpenBLAS's pick again */
} bk_source;

typedef struct {
    bk_source src;
    char kernel[32];    /* REEXEC: the set to load; otherwise the one loaded */
    char other[32];     /* AUTO: OpenBLAS's default; FALLBACK: the set that failed;
                         * ENV: the variable's value; else "" */
} bk_choice;

/* The pure decision: CPU features, the core OpenBLAS loaded, and an environment
 * (NULL-terminated "NAME=value" strings, as environ) in; the choice out. */
bk_choice bk_choose(bk_cpu cpu, const char *core, char *const *env);

/* This CPU's features (all 0 off x86-64). */
bk_cpu bk_cpu_detect(void);

/* The kernel set OpenBLAS loaded, e.g. "Haswell" or "SkylakeX". */
const char *bk_core(void);

/* A row-major sgemm with nn_sgemm's signature; the self-check's product under test. */
typedef void (*bk_gemm_fn)(int transA, int transB, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta,
                           float *C, int ldc);

/* Relative error above which the self-check fails. */
#define BK_SELFCHECK_TOL 1e-4

/* Run a few sgemm shapes the model uses through gemm (NULL: cblas_sgemm) against a
 * plain double-precision loop. Returns the worst relative error (max |C - ref| over
 * max of |alpha| sum |a b| + |beta c|); where is set to the worst case's shape. */
double bk_selfcheck(bk_gemm_fn gemm, char *where, size_t n);

/* The decision for this process (see the top): may re-execute argv through
 * /proc/self/exe and never return. reexec != 0: the caller changed the environment for a
 * library that reads it at load time (libgomp) and wants one re-execution anyway; it is
 * shared with the kernel choice's. Once per process; later calls do nothing. */
void bk_setup(char **argv, int reexec);

/* One line for logs and the record, e.g. "SkylakeX (tokenrec's choice; OpenBLAS default
 * Prescott)", "Haswell (OPENBLAS_CORETYPE)", "Cooperlake (OpenBLAS default)". Before
 * bk_setup: the loaded core, described from the environment without a self-check. */
const char *bk_describe(void);

#endif
