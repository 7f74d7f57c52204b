/* fuzz_csv: the delimited-file reader (csvread_buffer) with each delimiter the datasets use,
 * and the field and encoding helpers on what it produces. Byte 0 picks the delimiter and
 * whether line 1 is a header; the rest is the file. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "csvread.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touch every field (a read past its end shows under ASan) and parse the first as a number. */
static int on_row(void *ctx, const csv_row *row) {
    size_t *total = ctx;
    for (int i = 0; i < row->n; i++) {
        if (row->f[i][row->len[i]] != 0) __builtin_trap();     /* fields are NUL-terminated */
        *total += strlen(row->f[i]) + row->len[i];
        if (utf8_valid(row->f[i], row->len[i])) *total += 1;
    }
    long long v;
    if (csv_need_fields(row, 2, "two fields") == 0 && csv_field_i64(row, 1, "a number", &v) == 0)
        *total += (size_t)v;
    return row->line > 1000 ? -1 : 0;                          /* a callback's error stops */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *delims[] = {"\t", " ", ",", "::", "|", "||", ";;;", ":"};
    if (size < 1) return 0;
    const char *delim = delims[data[0] & 7];
    int header = (data[0] >> 3) & 1;
    size_t total = 0;
    csvread_buffer("fuzz", (const char *)data + 1, size - 1, delim, header, on_row, &total);
    char *u = latin1_to_utf8((const char *)data + 1, size - 1);
    if (!utf8_valid(u, strlen(u))) __builtin_trap();           /* Latin-1 -> UTF-8 is valid UTF-8 */
    free(u);
    tr_error_clear();
    return 0;
}
