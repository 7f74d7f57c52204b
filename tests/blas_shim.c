/* blas_shim.c: an LD_PRELOAD library for the tests of src/core/blaskernel.c. With
 * OPENBLAS_CORETYPE unset, OpenBLAS seems to have loaded its generic "Prescott" kernels (as
 * Debian's 0.3.21 does on CPUs it does not know), so tokenrec's choice and re-execution run
 * on any machine; with TOKENREC_SHIM_BREAK=NAME, sgemm is wrong (one element off by 1) while
 * OPENBLAS_CORETYPE=NAME, so the self-check fails there. Everything else is OpenBLAS. */
#include <cblas.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* "Prescott" while no kernel set is asked for, else what OpenBLAS says. */
char *openblas_get_corename(void) {
    static char *(*real)(void);
    if (!getenv("OPENBLAS_CORETYPE")) return "Prescott";
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "openblas_get_corename");
    return real ? real() : "unknown";
}

/* OpenBLAS's sgemm, spoilt under the kernel set named by TOKENREC_SHIM_BREAK. */
void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
                 const enum CBLAS_TRANSPOSE tb, const blasint M, const blasint N,
                 const blasint K, const float alpha, const float *A, const blasint lda,
                 const float *B, const blasint ldb, const float beta, float *C,
                 const blasint ldc) {
    static void (*real)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                        const enum CBLAS_TRANSPOSE, const blasint, const blasint,
                        const blasint, const float, const float *, const blasint,
                        const float *, const blasint, const float, float *, const blasint);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "cblas_sgemm");
    real(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const char *brk = getenv("TOKENREC_SHIM_BREAK"), *ct = getenv("OPENBLAS_CORETYPE");
    if (brk && ct && !strcmp(brk, ct) && M > 0 && N > 0) C[0] += 1.0f;
}
