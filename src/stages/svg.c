/* svg.c: inline SVG bar, line and column charts (see svg.h). */
#include "svg.h"
#include "axis.h"
#include <math.h>
#include <stdio.h>

void html_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A tick label of v with as many decimals as the step needs ("0.02", "2.5", "1,000"). */
static const char *tick_text(double v, double step, char *buf, size_t len) {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (step < 1 && fabs(step * pow(10, dec) - round(step * pow(10, dec))) > 1e-6) dec++;   /* 0.25 */
    if (fabs(v) < step * 1e-6) v = 0;
    snprintf(buf, len, "%.*f", dec, v);
    return buf;
}

/* Open the <svg> element with its accessible title. */
static void svg_open(FILE *f, int w, int h, const char *title) {
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\"><title>", w, h, w, h);
    html_esc(f, title);
    fputs("</title>\n", f);
    fputs("<text class=\"ttl\" x=\"4\" y=\"15\">", f);
    html_esc(f, title);
    fputs("</text>\n", f);
}

/* Horizontal value grid (vertical lines) for bars: ticks over [lo, hi] at x0..x1. */
static void grid_x(FILE *f, double lo, double hi, double step, double x0, double x1, double y0, double y1) {
    char b[32];
    for (double t = lo; t <= hi + step * 1e-6; t += step) {
        double x = x0 + (t - lo) / (hi - lo) * (x1 - x0);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x, y0, x, y1, x, y1 + 13, tick_text(t, step, b, sizeof b));
    }
}

/* Value grid (horizontal lines) for lines and columns: ticks over [lo, hi] at y1 (lo)..y0 (hi). */
static void grid_y(FILE *f, double lo, double hi, double step, double x0, double x1, double y0, double y1) {
    char b[32];
    for (double t = lo; t <= hi + step * 1e-6; t += step) {
        double y = y1 - (t - lo) / (hi - lo) * (y1 - y0);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                x0, y, x1, y, x0 - 4, y + 4, tick_text(t, step, b, sizeof b));
    }
}

void svg_hbars(FILE *f, const char *title, const svg_bar *bars, int n, int decimals, const char *unit,
               int width) {
    const double left = 150, right = 58, top = 26, bh = 18, gap = 8;
    if (n > 64) n = 64;
    int h = (int)(top + n * (bh + gap) + 20);
    svg_open(f, width, h, title);
    double vals[2 * 64];
    for (int i = 0; i < n; i++) {
        vals[2 * i] = bars[i].value;
        vals[2 * i + 1] = bars[i].hi;
    }
    double lo, hi;
    axis_range(vals, 2 * n, AXIS_ZERO, &lo, &hi);
    double step = axis_step(&lo, &hi, 4, 1), x0 = left, x1 = width - right;
    double y_axis = top + n * (bh + gap);
    grid_x(f, lo, hi, step, x0, x1, top - 4, y_axis);
    double base = x0 + (0 > lo ? -lo : 0) / (hi - lo) * (x1 - x0);
    for (int i = 0; i < n; i++) {
        const svg_bar *b = &bars[i];
        double y = top + i * (bh + gap), ty = y + bh * 0.72;
        fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", x0 - 6, ty);
        html_esc(f, b->label);
        fputs("</text>\n", f);
        if (!isfinite(b->value)) {
            fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\">not stored</text>\n", x0 + 4, ty);
            continue;
        }
        double end = x0 + (b->value - lo) / (hi - lo) * (x1 - x0);
        fprintf(f, "<rect class=\"bar%d\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n",
                b->series & 1, end < base ? end : base, y, fabs(end - base), bh);
        if (isfinite(b->lo) && isfinite(b->hi)) {
            double ym = y + bh / 2, a = x0 + (b->lo - lo) / (hi - lo) * (x1 - x0),
                   c = x0 + (b->hi - lo) / (hi - lo) * (x1 - x0);
            fprintf(f, "<path class=\"err\" d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f\"/>\n",
                    a, ym, c, a, ym - 5, ym + 5, c, ym - 5, ym + 5);
            if (c > end) end = c;
        }
        fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\">%.*f", end + 4, ty, decimals, b->value);
        html_esc(f, unit);
        fputs("</text>\n", f);
    }
    fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n</svg>\n",
            base, top - 4, base, y_axis);
}

void svg_line(FILE *f, const svg_line_spec *s, int width, int height) {
    const double left = 58, right = 14, top = 26, bottom = 36;
    double x0 = left, x1 = width - right, y0 = top, y1 = height - bottom;
    svg_open(f, width, height, s->title);
    int n = s->n;
    if (n <= 0) {
        fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\">no points</text>\n</svg>\n", x0, (y0 + y1) / 2);
        return;
    }
    /* x: the steps (epochs), whole-numbered ticks; a single step gets one either side */
    double xl = s->x[0], xh = s->x[n - 1];
    if (!(xh > xl)) { xl -= 1; xh += 1; }
    if (s->x[0] >= 0 && xl < 0) xl = 0;
    double xs = axis_step(&xl, &xh, 6, 0);
    if (xs < 1) xs = 1;
    xs = ceil(xs);
    double yl, yh;
    axis_range(s->y, n, 0, &yl, &yh);
    double ys = axis_step(&yl, &yh, 4, 1);
    grid_y(f, yl, yh, ys, x0, x1, y0, y1);
    char b[32];
    for (double t = ceil(xl / xs) * xs; t <= xh + 1e-9; t += xs) {
        double x = x0 + (t - xl) / (xh - xl) * (x1 - x0);
        fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x, y1, x, y1 + 4, x, y1 + 16, tick_text(t, 1, b, sizeof b));
    }
    fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", (x0 + x1) / 2, height - 4);
    html_esc(f, s->xlabel);
    fputs("</text>\n", f);
    fprintf(f, "<path class=\"axis\" d=\"M%.1f %.1fV%.1fH%.1f\"/>\n", x0, y0, y1, x1);
#define PX(v) (x0 + ((v) - xl) / (xh - xl) * (x1 - x0))
#define PY(v) (y1 - ((v) - yl) / (yh - yl) * (y1 - y0))
    if (isfinite(s->mark)) {
        double mx = PX(s->mark);
        fprintf(f, "<line class=\"best\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"lbl best-lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">",
                mx, y0, mx, y1, mx + (mx > (x0 + x1) / 2 ? -4 : 4), y0 + 10, mx > (x0 + x1) / 2 ? "end" : "start");
        html_esc(f, s->mark_label);
        fputs("</text>\n", f);
    }
    fputs("<polyline class=\"line\" points=\"", f);
    for (int i = 0; i < n; i++)
        if (isfinite(s->y[i])) fprintf(f, "%s%.1f,%.1f", i ? " " : "", PX(s->x[i]), PY(s->y[i]));
    fputs("\"/>\n", f);
    for (int i = 0; i < n && n <= 80; i++)
        if (isfinite(s->y[i]))
            fprintf(f, "<circle class=\"pt%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"%s\"/>\n",
                    s->x[i] == s->mark ? " best-pt" : "", PX(s->x[i]), PY(s->y[i]), s->x[i] == s->mark ? "4" : "2.5");
#undef PX
#undef PY
    fputs("</svg>\n", f);
}

void svg_columns(FILE *f, const char *title, const char *xlabel, const double *v, int n, double ref,
                 const char *ref_label, int width, int height) {
    const double left = 50, right = 10, top = 26, bottom = 22;
    double x0 = left, x1 = width - right, y0 = top, y1 = height - bottom;
    svg_open(f, width, height, title);
    double lo, hi, r = ref;
    axis_range(v, n, AXIS_ZERO, &lo, &hi);
    if (isfinite(r) && r > hi) hi = r;
    double step = axis_step(&lo, &hi, 4, 1), w = n > 0 ? (x1 - x0) / n : 0;
    grid_y(f, lo, hi, step, x0, x1, y0, y1);
    for (int i = 0; i < n; i++) {
        if (!(v[i] > 0)) continue;
        double y = y1 - (v[i] - lo) / (hi - lo) * (y1 - y0);
        fprintf(f, "<rect class=\"bar0\" x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\"/>\n",
                x0 + i * w, y, w > 2 ? w - 0.5 : w, y1 - y);
    }
    if (isfinite(r)) {
        double y = y1 - (r - lo) / (hi - lo) * (y1 - y0);
        fprintf(f, "<line class=\"ref\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", x0, y, x1, y, x1, y - 3);
        html_esc(f, ref_label);
        fputs("</text>\n", f);
    }
    fprintf(f, "<path class=\"axis\" d=\"M%.1f %.1fV%.1fH%.1f\"/>\n", x0, y0, y1, x1);
    fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", (x0 + x1) / 2, height - 6);
    html_esc(f, xlabel);
    fputs("</text>\n</svg>\n", f);
}
