/* csvread: every delimited file goes through here, and through libcsv.
 *
 * The file is read whole, checked for binary data, and fed to libcsv one line at a time so
 * that every row arrives with its 1-based line number for error messages. Quoting is off
 * (the datasets never quote, and artist names contain stray '"'); a multi-character
 * delimiter such as MovieLens's "::" is mapped to one byte before parsing. */
#ifndef TOKENREC_CSVREAD_H
#define TOKENREC_CSVREAD_H
#include <stddef.h>

typedef struct {
    const char *path;
    int         line;       /* 1-based line number of the row */
    int         n;          /* number of fields */
    char      **f;          /* NUL-terminated fields */
    size_t     *len;        /* their lengths */
} csv_row;

/* Called once per non-empty row; return 0 to go on, -1 (after tr_error) to stop. */
typedef int (*csv_row_fn)(void *ctx, const csv_row *row);

/* Parse the file at path. delim: "\t", " ", ",", "::", ... skip_header: drop line 1.
 * Errors (missing, empty, binary, a callback's error) return -1 with tr_errmsg(). */
int csvread_file(const char *path, const char *delim, int skip_header, csv_row_fn fn, void *ctx);
/* The same over a buffer already in memory (buf need not be NUL-terminated). */
int csvread_buffer(const char *path, const char *buf, size_t len, const char *delim,
                   int skip_header, csv_row_fn fn, void *ctx);

/* Field helpers that produce the "file:line: expected ..." messages. */
int csv_field_i64(const csv_row *row, int col, const char *what, long long *out);
int csv_need_fields(const csv_row *row, int n, const char *what);

/* Encodings of free text (names). */
int   utf8_valid(const char *s, size_t n);
char *latin1_to_utf8(const char *s, size_t n);     /* malloc'd */

#endif
