/* Format.c: durations, ETA, progress, counts, token strings, the prompt, UTF-8 widths. */
#include "Format.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

/* tr_fmt_duration, with a dash where the duration is unknown. */
const char *Format_duration(double s, char *buf, size_t len) {
    if (!(s >= 0)) { snprintf(buf, len, "-"); return buf; }
    return tr_fmt_duration(s, buf, len);
}

/* Constant-rate extrapolation from the last progress report: the run took
 * updated_at - started_at for p, so it needs that * (1-p)/p more, counted from updated_at. */
double Format_etaSeconds(double p, double started_at, double updated_at, double now) {
    if (!(p > 0) || p >= 1 || updated_at < started_at) return -1;
    double left = (updated_at - started_at) * (1 - p) / p - (now - updated_at);
    return left > 0 ? left : 0;
}

const char *Format_eta(double p, double started_at, double updated_at, double now, char *buf,
                       size_t len) {
    double e = Format_etaSeconds(p, started_at, updated_at, now);
    if (e < 0) { snprintf(buf, len, "%s", ""); return buf; }
    char d[32];
    snprintf(buf, len, "ETA %s", Format_duration(e, d, sizeof d));
    return buf;
}

const char *Format_progress(double p, char *buf, size_t len) {
    if (!(p >= 0)) p = 0;
    if (p > 1) p = 1;
    snprintf(buf, len, "%.1f%%", 100 * p);
    return buf;
}

int Format_barCells(double p, int width) {
    if (width <= 0 || !(p > 0)) return 0;
    if (p >= 1) return width;
    int n = (int)floor(p * width);
    return n > width ? width : n;
}

const char *Format_count(int64_t n, char *buf, size_t len) {
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)(n < 0 ? -n : n));
    size_t nd = strlen(digits), o = 0;
    char out[48];
    if (n < 0) out[o++] = '-';
    for (size_t i = 0; i < nd; i++) {
        if (i && (nd - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
    snprintf(buf, len, "%s", out);
    return buf;
}

/* One writer for both token kinds: prefix, then <label-code> per codebook. */
static const char *tokens(const char *prefix, const char *labels, const int *codes, int k,
                          char *buf, size_t len) {
    size_t o = (size_t)snprintf(buf, len, "%s", prefix);
    for (int i = 0; i < k && o < len; i++) {
        char lab = i < (int)strlen(labels) ? labels[i] : '?';
        if (codes[i] >= 0) o += (size_t)snprintf(buf + o, len - o, "<%c-%d>", lab, codes[i]);
        else o += (size_t)snprintf(buf + o, len - o, "<%c-?>", lab);
    }
    return buf;
}

const char *Format_userTokens(const int *codes, int k, char *buf, size_t len) {
    return tokens("user_", "abcdefghij", codes, k, buf, len);
}

const char *Format_itemTokens(const int *codes, int k, char *buf, size_t len) {
    return tokens("item_", "0123456789", codes, k, buf, len);
}

char *Format_prompt(const char *user, const char *items) {
    const char *fmt = "Given the %s's previous interactions with the %s, what are the user preferences?";
    size_t n = strlen(fmt) + strlen(user) + strlen(items) + 1;
    char *s = tr_malloc(n);
    snprintf(s, n, fmt, user, items);
    return s;
}

/* Decode one UTF-8 character at s; its byte length in *n and its columns as the result. */
static int char_cols(const char *s, size_t avail, size_t *n) {
    mbstate_t st;
    memset(&st, 0, sizeof st);
    wchar_t wc;
    size_t r = mbrtowc(&wc, s, avail, &st);
    if (r == (size_t)-1 || r == (size_t)-2 || r == 0) { *n = 1; return 1; }
    *n = r;
    int w = wcwidth(wc);
    return w < 0 ? 1 : w;
}

size_t Format_fit(const char *s, int cols, int *width) {
    size_t len = strlen(s), o = 0;
    int w = 0;
    while (o < len) {
        size_t n;
        int c = char_cols(s + o, len - o, &n);
        if (w + c > cols) break;
        w += c;
        o += n;
    }
    if (width) *width = w;
    return o;
}

int Format_width(const char *s) {
    int w;
    Format_fit(s, 1 << 30, &w);
    return w;
}
