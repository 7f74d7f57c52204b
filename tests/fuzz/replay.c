/* replay: run a fuzz target's entry point over files, as libFuzzer would over a crash input.
 * Usage: replay FILE|DIR...  Built with the ordinary compiler into the ordinary test run, so
 * every input that once crashed a reader (tests/fuzz/regress/<target>/) is checked under
 * the CI's sanitizer build too; exits 1 when an argument cannot be read. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Feed one file to the target; -1 when it cannot be read. */
static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "replay: cannot open %s\n", path); return -1; }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return -1;
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    printf("replayed %s (%zu bytes)\n", path, n);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 0, files = 0;
    for (int a = 1; a < argc; a++) {
        struct stat sb;
        if (stat(argv[a], &sb) != 0) { fprintf(stderr, "replay: no such path %s\n", argv[a]); rc = 1; continue; }
        if (!S_ISDIR(sb.st_mode)) { rc |= replay_file(argv[a]) != 0; files++; continue; }
        DIR *d = opendir(argv[a]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[a], e->d_name);
            rc |= replay_file(p) != 0;
            files++;
        }
        if (d) closedir(d);
    }
    printf("%d inputs replayed\n", files);
    return rc;
}
