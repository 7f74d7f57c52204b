/* fuzz_ingest: every dataset reader of `tokenrec ingest` on a file of the fuzzer's making,
 * then the k-core filter, numbering and split (ingest_build) over whatever was read. Byte 0
 * picks the reader (hetrec LastFM, ML-1M ratings, sequence, generic delimited, item names),
 * byte 1 its settings (delimiter, header, columns, k-core, encoding). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "ingest.h"
#include "util.h"
#include "fuzzfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed small dataset whose item ids are 1..40, for the names reader. */
static int small_dataset(ingest_data *d) {
    ingest_raw r;
    ingest_raw_init(&r);
    r.has_ts = 0;
    char u[16], it[16];
    for (int k = 0; k < 80; k++) {
        snprintf(u, sizeof u, "%d", k % 7);
        snprintf(it, sizeof it, "%d", 1 + k % 40);
        ingest_raw_add(&r, u, it, k);
    }
    int rc = ingest_build(&r, 1, 1, d);
    ingest_raw_free(&r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *delims[] = {"\t", ",", "::", " ", "|", ";"};
    static const char *encs[] = {"auto", "utf-8", "latin1", "auto"};
    if (size < 2) return 0;
    int mode = data[0] % 5, opt = data[1];
    const char *path = fuzz_file(data + 2, size - 2);
    if (!path) return 0;
    ingest_raw r;
    ingest_raw_init(&r);
    int rc = -1;
    switch (mode) {
    case 0: rc = ingest_read_hetrec_lastfm(&r, path); break;
    case 1: rc = ingest_read_ml1m_ratings(&r, path); break;
    case 2: rc = ingest_read_sequence(&r, path); break;
    case 3: rc = ingest_read_delimited(&r, path, delims[opt % 6], (opt >> 3) & 1, (opt >> 4) & 3,
                                       ((opt >> 4) & 3) + 1 + ((opt >> 6) & 1), (opt & 0x80) ? 2 : -1);
            break;
    case 4: {
        ingest_data d;
        if (small_dataset(&d) == 0) {
            ingest_load_names(&d, path, delims[opt % 6], (opt >> 3) & 1, (opt >> 4) & 1,
                              1 - ((opt >> 4) & 1) + ((opt >> 5) & 1), encs[(opt >> 6) & 3]);
            for (int32_t i = 0; i < d.n_items; i++)     /* names, when set, are strings */
                if (d.item_name && d.item_name[i] && strlen(d.item_name[i]) > size * 2) __builtin_trap();
        }
        ingest_data_free(&d);
        break;
    }
    }
    if (rc == 0) {
        ingest_data d;
        if (ingest_build(&r, 1 + (opt & 3), (opt & 4) ? 1000 : 1, &d) == 0) {
            if (d.off[d.n_users] != d.n) __builtin_trap();
            for (int64_t k = 0; k < d.n; k++)
                if (d.item[k] < 0 || d.item[k] >= d.n_items) __builtin_trap();
        }
        ingest_data_free(&d);
    }
    ingest_raw_free(&r);
    tr_error_clear();
    return 0;
}
