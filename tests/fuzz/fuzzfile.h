/* fuzzfile.h: the fuzz input as a file, for readers that take a path. One temporary file per
 * process, rewritten for each input and removed at exit. */
#ifndef TOKENREC_FUZZFILE_H
#define TOKENREC_FUZZFILE_H
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_path[256];

static void fuzz_file_remove(void) { if (fuzz_path[0]) unlink(fuzz_path); }

/* Write the n bytes at p to the process's temporary file; its path, or NULL. */
static const char *fuzz_file(const void *p, size_t n) {
    if (!fuzz_path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(fuzz_path, sizeof fuzz_path, "%s/tokenrec-fuzz-XXXXXX", dir && *dir ? dir : "/tmp");
        int fd = mkstemp(fuzz_path);
        if (fd < 0) { fuzz_path[0] = 0; return NULL; }
        close(fd);
        atexit(fuzz_file_remove);
    }
    FILE *f = fopen(fuzz_path, "wb");
    if (!f) return NULL;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    fclose(f);
    return w == n ? fuzz_path : NULL;
}
#endif
