/* pagecheck: checks of an HTML report page with real tools, shared by test_report.c and
 * e2e_pipeline.c: libxml2 (xmllint) for well-formedness and to read the page's number cells,
 * headless Chromium to render it. A missing tool skips the test with a message, except under
 * CI=true, where it fails it. */
#ifndef TOKENREC_PAGECHECK_H
#define TOKENREC_PAGECHECK_H
#include <sqlite3.h>

/* Is the command on PATH? When it is not: skip() (or fail under CI=true), naming the package. */
void pc_require(const char *cmd, const char *package);

/* 0 when the XML parser reads the page without a message (it is XML well-formed) and
 * libxml2's HTML parser reports nothing but the HTML5 and SVG element names that its HTML 4
 * tables do not know; otherwise -1, printing the messages. */
int pc_well_formed(const char *page);

/* Read every number cell of the page (td with data-value) through libxml2's HTML parser and
 * compare it with run_metrics: its data-value must equal the stored value exactly and its
 * text the value printed with the cell's decimals. Returns the number of cells checked, -1
 * on the first difference (printed). */
int pc_cells_match(sqlite3 *db, const char *page);

/* How many cells of the page have this key (run 0: any run). */
int pc_count_cells(const char *page, const char *method, const char *split, const char *metric, int k);

/* Render the page with headless Chromium at width x height into png and check the picture
 * with tests/png_check.py (size, not blank). 0 or -1. */
int pc_render(const char *page, const char *png, int width, int height);

#endif
