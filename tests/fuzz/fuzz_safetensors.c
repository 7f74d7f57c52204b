/* fuzz_safetensors: the safetensors loader (st_load_mem, which st_load uses) on arbitrary
 * bytes; a loaded file's tensors are read in full and looked up. */
#include <stddef.h>
#include <stdint.h>
#include "safetensors.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    if (st_load_mem(&f, "fuzz.safetensors", (const char *)data, size) == 0) {
        double s = 0;
        for (int t = 0; t < f.n; t++) {
            const st_tensor *x = &f.t[t];
            size_t numel = 1;
            for (int d = 0; d < x->ndim; d++) numel *= (size_t)x->shape[d];
            if (numel != x->numel || st_find(&f, x->name) == NULL) __builtin_trap();
            for (size_t k = 0; k < x->numel; k++) s += x->f ? (double)x->f[k] : (double)x->i[k];
        }
        for (int m = 0; m < f.n_meta; m++)
            if (!st_meta(&f, f.meta_key[m]) || !f.meta_val[m]) __builtin_trap();
        (void)s;
    }
    st_free(&f);
    tr_error_clear();
    return 0;
}
