/* csvread.c: line-numbered parsing of delimited files with libcsv. */
#include "csvread.h"
#include "util.h"
#include <csv.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *path;
    csv_row_fn  fn;
    void       *ctx;
    int         line;
    int         failed;
    /* the row being assembled */
    int         n, cap;
    char      **f;
    size_t     *len;
    char       *store;     /* field bytes, NUL-separated */
    size_t      used, store_cap;
} reader;

static int no_space(unsigned char c) { (void)c; return 0; }

/* libcsv field callback: copy the field into the row under construction. */
static void on_field(void *s, size_t n, void *data) {
    reader *r = data;
    if (r->failed) return;
    if (r->used + n + 1 > r->store_cap) {
        size_t cap = (r->used + n + 1) * 2;
        /* earlier fields of this row as offsets, re-pointed into the moved storage after (a
         * pointer into freed storage may not even be compared) */
        for (int i = 0; i < r->n; i++) r->f[i] = (char *)(uintptr_t)(r->f[i] - r->store);
        r->store = tr_realloc(r->store, cap);
        r->store_cap = cap;
        for (int i = 0; i < r->n; i++) r->f[i] = r->store + (uintptr_t)r->f[i];
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->f = tr_realloc(r->f, (size_t)r->cap * sizeof *r->f);
        r->len = tr_realloc(r->len, (size_t)r->cap * sizeof *r->len);
    }
    char *dst = r->store + r->used;
    if (n) memcpy(dst, s, n);
    dst[n] = 0;
    r->f[r->n] = dst;
    r->len[r->n] = n;
    r->n++;
    r->used += n + 1;
}

/* libcsv row callback: hand the finished row to the caller with its line number. */
static void on_row(int c, void *data) {
    reader *r = data;
    (void)c;
    if (!r->failed && r->n > 0) {
        csv_row row = {r->path, r->line, r->n, r->f, r->len};
        if (r->fn(r->ctx, &row) != 0) r->failed = 1;
    }
    r->n = 0;
    r->used = 0;
}

int csvread_buffer(const char *path, const char *buf, size_t len, const char *delim,
                   int skip_header, csv_row_fn fn, void *ctx) {
    if (len == 0) return tr_error("%s: the file is empty", path);
    if (memchr(buf, 0, len))
        return tr_error("%s: binary data (a NUL byte); expected a text file", path);
    char *mapped = NULL;
    unsigned char dch;
    size_t dl = strlen(delim);
    if (dl == 0) return tr_error("%s: empty delimiter", path);
    if (dl == 1) {
        dch = (unsigned char)delim[0];
    } else {
        /* map the multi-byte delimiter to the unit separator, which the data never holds */
        dch = 0x1f;
        if (memchr(buf, 0x1f, len)) return tr_error("%s: unexpected control byte 0x1f", path);
        mapped = tr_malloc(len + 1);
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            if (i + dl <= len && memcmp(buf + i, delim, dl) == 0) { mapped[o++] = (char)dch; i += dl; }
            else mapped[o++] = buf[i++];
        }
        buf = mapped;
        len = o;
    }
    struct csv_parser p;
    if (csv_init(&p, 0) != 0) { free(mapped); return tr_error("%s: cannot start the CSV parser", path); }
    csv_set_delim(&p, dch);
    csv_set_quote(&p, 0);                 /* no NUL bytes in the input, so quoting is off */
    csv_set_space_func(&p, no_space);     /* keep fields byte-exact */
    reader r = {0};
    r.path = path; r.fn = fn; r.ctx = ctx;
    const char *s = buf, *end = buf + len;
    int rc = 0;
    while (s < end && !r.failed) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl + 1 : end;
        r.line++;
        if (!(skip_header && r.line == 1)) {
            if (csv_parse(&p, s, (size_t)(e - s), on_field, on_row, &r) != (size_t)(e - s)) {
                rc = tr_error("%s:%d: cannot parse: %s", path, r.line, csv_strerror(csv_error(&p)));
                break;
            }
            if (!nl) csv_fini(&p, on_field, on_row, &r);
        }
        s = e;
    }
    if (r.failed) rc = -1;
    if (!rc && r.line <= (skip_header ? 1 : 0))
        rc = tr_error("%s: no data rows (only a header)", path);
    csv_free(&p);
    free(r.f); free(r.len); free(r.store); free(mapped);
    return rc;
}

int csvread_file(const char *path, const char *delim, int skip_header, csv_row_fn fn, void *ctx) {
    char *buf;
    size_t len;
    if (tr_read_file(path, &buf, &len) != 0) return -1;
    int rc = csvread_buffer(path, buf, len, delim, skip_header, fn, ctx);
    free(buf);
    return rc;
}

int csv_need_fields(const csv_row *row, int n, const char *what) {
    if (row->n < n)
        return tr_error("%s:%d: expected %d fields (%s), found %d", row->path, row->line, n, what,
                        row->n);
    return 0;
}

int csv_field_i64(const csv_row *row, int col, const char *what, long long *out) {
    if (col >= row->n)
        return tr_error("%s:%d: expected %s in field %d, but the line has %d fields", row->path,
                        row->line, what, col + 1, row->n);
    const char *s = row->f[col];
    size_t n = row->len[col];
    while (n && (s[n - 1] == '\r' || s[n - 1] == ' ')) n--;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (n == 0 || errno || end != s + n)
        return tr_error("%s:%d: field %d: expected %s (an integer), got '%.40s'", row->path,
                        row->line, col + 1, what, s);
    *out = v;
    return 0;
}

int utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 9;
        if (k == 9 || (k == 1 && c < 0xc2) || i + k >= n + (k ? 0 : 1)) return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

char *latin1_to_utf8(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    char *out = tr_malloc(2 * n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) *o++ = (char)s[i];
        else { *o++ = (char)(0xc0 | (s[i] >> 6)); *o++ = (char)(0x80 | (s[i] & 0x3f)); }
    }
    *o = 0;
    return out;
}
