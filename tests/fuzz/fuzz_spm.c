/* fuzz_spm: the SentencePiece tokenizer reader (spm_load_mem on a tokenizer.json), encoding
 * with whatever it loaded, the prompt vocabulary built from it, and the stored form of that
 * vocabulary (prompt_vocab_from_json, read back from the models table) on arbitrary text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "prompt.h"
#include "spm.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    if (size) memcpy(s, data, size);
    s[size] = 0;
    spm_model *m = spm_load_mem(s, size, "fuzz");
    if (m) {
        static const char *const texts[] = {"the user_ abcd", "  Z\xC3\xA9 x\xE2\x82\xAC\xE2\x82\xAC y ",
                                            "\xE2\x96\x81\xE2\x96\x81" "a\xFF\xC3", ""};
        int32_t out[512];
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            spm_encode(m, texts[i], 1, out, 512);
            spm_encode(m, texts[i], 0, out, 8);
        }
        prompt_vocab v;
        if (prompt_vocab_init_spm(&v, m, spm_vocab_size(m), 2, 4, 1) == 0) {
            char *js = prompt_vocab_json(&v);
            prompt_vocab w;
            if (js && prompt_vocab_from_json(&w, js, 2, 4, 1) == 0) prompt_vocab_free(&w);
            free(js);
            prompt_vocab_free(&v);
        }
        spm_free(m);
    }
    prompt_vocab w;
    if (prompt_vocab_from_json(&w, s, 2, 4, 1) == 0) prompt_vocab_free(&w);
    free(s);
    tr_error_clear();
    return 0;
}
