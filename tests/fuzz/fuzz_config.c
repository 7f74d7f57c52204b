/* fuzz_config: the stored model configuration (rec_config_parse, JSON read back from the
 * models table) on arbitrary text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "recmodel.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    if (size) memcpy(s, data, size);
    s[size] = 0;
    t5_config c;
    rec_config_parse(s, &c);
    free(s);
    tr_error_clear();
    return 0;
}
