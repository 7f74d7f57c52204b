/* svg: charts as inline SVG for the HTML report, and HTML text escaping. Every function
 * writes one complete <svg> element (XML well-formed, no scripts, sizes in pixels) to f;
 * value axes come from axis.h. Colours and fonts are CSS classes the page defines
 * (report_html.c): .bar0 .bar1 .err .grid .axis .line .pt .best .lbl .ttl .ref. */
#ifndef TOKENREC_SVG_H
#define TOKENREC_SVG_H
#include <stdio.h>

/* s with & < > " ' escaped (text and attribute values alike); NULL writes nothing. */
void html_esc(FILE *f, const char *s);

/* One bar: its value and 95% interval (lo, hi NAN: none); series picks the colour class
 * .bar0 or .bar1. */
typedef struct {
    const char *label;
    double      value, lo, hi;
    int         series;
} svg_bar;

/* Horizontal bars from 0 with their intervals as whiskers and the value written beside
 * (with decimals decimals and the unit after it). */
void svg_hbars(FILE *f, const char *title, const svg_bar *bars, int n, int decimals, const char *unit,
               int width);

/* A line chart of y over x (x ascending), with an optional vertical mark at x = mark (the
 * chosen epoch; NAN for none) labelled mark_label. */
typedef struct {
    const char   *title, *xlabel;
    const double *x, *y;
    int           n;
    double        mark;
    const char   *mark_label;
} svg_line_spec;
void svg_line(FILE *f, const svg_line_spec *s, int width, int height);

/* Columns v[0..n) from 0 (a histogram), with an optional dashed reference level ref (NAN
 * for none, e.g. the uniform count) labelled ref_label. */
void svg_columns(FILE *f, const char *title, const char *xlabel, const double *v, int n, double ref,
                 const char *ref_label, int width, int height);

#endif
