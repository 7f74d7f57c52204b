/* pagecheck.c: the report page checked with xmllint and headless Chromium (pagecheck.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "pagecheck.h"
#include "testutil.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pc_require(const char *cmd, const char *package) {
    if (tu_run("command -v %s >/dev/null 2>&1", cmd) == 0) return;
    const char *ci = getenv("CI");
    if (ci && !strcmp(ci, "true"))
        fail_msg("%s is not installed (Debian package %s; bash .ci/deps installs it), and CI=true", cmd, package);
    fprintf(stderr, "SKIP: %s is not installed (Debian package %s; bash .ci/deps installs it)\n", cmd, package);
    skip();
}

/* The output of a shell command (malloc'd), NULL when it fails. */
static char *capture(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t n = 0, cap = 4096;
    char *out = malloc(cap);
    size_t got;
    while ((got = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 2) out = realloc(out, cap *= 2);
    }
    out[n] = 0;
    if (pclose(p) != 0) { free(out); return NULL; }
    return out;
}

int pc_well_formed(const char *page) {
    char *xml = capture("xmllint --noout %s 2>&1", page);
    if (!xml || xml[0]) {
        fprintf(stderr, "XML parser on %s:\n%s\n", page, xml ? xml : "(failed)");
        free(xml);
        return -1;
    }
    free(xml);
    /* libxml2 2.9's HTML parser knows HTML 4 elements only: it names each HTML5/SVG element
     * "invalid" and keeps it; any other message is a real error */
    char *html = capture("xmllint --html --noout %s 2>&1 | grep -E ': HTML parser (error|warning) :' | grep -vE "
                         "'Tag (section|details|summary|svg|title|text|rect|line|path|polyline|circle) invalid'; true",
                         page);
    int rc = html && !html[0] ? 0 : -1;
    if (rc) fprintf(stderr, "HTML parser on %s:\n%s\n", page, html ? html : "(failed)");
    free(html);
    return rc;
}

/* The value of attribute name inside the tag text [tag, end), copied into out. */
static int attr(const char *tag, const char *end, const char *name, char *out, size_t len) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=\"", name);
    const char *p = strstr(tag, pat);
    if (!p || p > end) return -1;
    p += strlen(pat);
    const char *q = strchr(p, '"');
    if (!q || q > end || (size_t)(q - p) >= len) return -1;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = 0;
    return 0;
}

/* The cells' serialisation by libxml2: "<td ...>text</td>" one after another. */
static char *cells_of(const char *page) {
    return capture("xmllint --html --xpath '//td[@data-value]' %s 2>/dev/null", page);
}

int pc_cells_match(sqlite3 *db, const char *page) {
    char *all = cells_of(page);
    if (!all) { fprintf(stderr, "xmllint found no number cells in %s\n", page); return -1; }
    int n = 0, rc = 0;
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "SELECT value FROM run_metrics WHERE run_id=? AND method=? AND split=? AND metric=? AND k=?",
                       -1, &st, NULL);
    for (char *p = strstr(all, "<td"); p && !rc; p = strstr(p + 1, "<td")) {
        char *gt = strchr(p, '>'), *close = gt ? strstr(gt, "</td>") : NULL;
        char run[32], method[64], split[32], metric[32], k[16], value[64], text[64];
        if (!close || attr(p, gt, "data-run", run, sizeof run) || attr(p, gt, "data-method", method, sizeof method) ||
            attr(p, gt, "data-split", split, sizeof split) || attr(p, gt, "data-metric", metric, sizeof metric) ||
            attr(p, gt, "data-k", k, sizeof k) || attr(p, gt, "data-value", value, sizeof value) ||
            (size_t)(close - gt - 1) >= sizeof text) {
            fprintf(stderr, "a number cell without its key: %.200s\n", p);
            rc = -1;
            break;
        }
        memcpy(text, gt + 1, (size_t)(close - gt - 1));
        text[close - gt - 1] = 0;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, atoll(run));
        sqlite3_bind_text(st, 2, method, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, split, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, metric, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 5, atoi(k));
        if (sqlite3_step(st) != SQLITE_ROW) {
            fprintf(stderr, "cell %s %s %s %s@%s = %s: not in run_metrics\n", run, method, split, metric, k, value);
            rc = -1;
            break;
        }
        double want = sqlite3_column_double(st, 0), got = strtod(value, NULL);
        /* the text: the value with the decimals the cell shows */
        const char *dot = strchr(text, '.');
        int dec = dot ? (int)strlen(dot + 1) : 0;
        char shown[64];
        snprintf(shown, sizeof shown, "%.*f", dec, want);
        if (got != want || strcmp(shown, text)) {
            fprintf(stderr, "cell %s %s %s %s@%s: page %s (%s), run_metrics %.17g\n", run, method, split, metric, k,
                    value, text, want);
            rc = -1;
            break;
        }
        n++;
    }
    sqlite3_finalize(st);
    free(all);
    return rc ? -1 : n;
}

int pc_count_cells(const char *page, const char *method, const char *split, const char *metric, int k) {
    char *out = capture("xmllint --html --xpath \"count(//td[@data-method='%s' and @data-split='%s' and "
                        "@data-metric='%s' and @data-k='%d'])\" %s 2>/dev/null", method, split, metric, k, page);
    int n = out ? atoi(out) : -1;
    free(out);
    return n;
}

int pc_render(const char *page, const char *png, int width, int height) {
    const char *dir = getenv("TOKENREC_TESTDIR");
    char *profile = tu_path("chromium-profile");
    int rc = tu_run("timeout 180 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars "
                    "--user-data-dir=%s --window-size=%d,%d --screenshot=%s file://%s >/dev/null 2>&1",
                    profile, width, height, png, page);
    free(profile);
    if (rc) { fprintf(stderr, "chromium failed on %s (exit %d)\n", page, rc); return -1; }
    return tu_run("python3 %s/png_check.py %s %d %d", dir ? dir : "tests", png, width, height) ? -1 : 0;
}
