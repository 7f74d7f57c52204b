/* Chart.c: points per column, joined by vertical strokes so that the curve reads as a line. */
#include "Chart.h"
#include "Bins.h"
#include "axis.h"
#include "CRT.h"
#include <math.h>
#include <stdlib.h>

/* Draw the chart (see Chart.h); the value range comes from axis_range. */
void Chart_draw(int y, int x, int h, int w, const char *title, const double *steps,
                const double *values, int n) {
    if (h < 4 || w < 20) return;
    if (n > 0)
        CRT_printf(y, x, w, CRT_colors[C_TITLE], "%s  (last %.5g at step %.0f, %d points)", title,
                   values[n - 1], steps[n - 1], n);
    else
        CRT_printf(y, x, w, CRT_colors[C_TITLE], "%s  (no points yet)", title);
    int axis = 10, rows = h - 2, cols = w - axis - 1;
    if (cols < 4) return;
    double *col = malloc((size_t)cols * sizeof *col);
    Bins_resample(steps, values, n, cols, col);
    double mn, mx;
    axis_range(col, cols, 0, &mn, &mx);
    CRT_printf(y + 1, x, axis, CRT_colors[C_CHART_AXIS], "%9.4g", mx);
    CRT_printf(y + rows, x, axis, CRT_colors[C_CHART_AXIS], "%9.4g", mn);
    for (int r = 0; r < rows; r++) CRT_print(y + 1 + r, x + axis, 1, CRT_colors[C_CHART_AXIS], CRT_utf8 ? "│" : "|");
    int prev = -1;
    for (int c = 0; c < cols; c++) {
        if (isnan(col[c])) continue;
        int r = (int)lround((mx - col[c]) / (mx - mn) * (rows - 1));
        if (prev >= 0) {                /* join to the previous point */
            int a = prev < r ? prev + 1 : r + 1, b = prev < r ? r : prev;
            for (int k = a; k < b; k++)
                CRT_print(y + 1 + k, x + axis + 1 + c, 1, CRT_colors[C_CHART], CRT_utf8 ? "│" : "|");
        }
        CRT_print(y + 1 + r, x + axis + 1 + c, 1, CRT_colors[C_CHART], CRT_utf8 ? "•" : "*");
        prev = r;
    }
    free(col);
    if (n > 0) {
        CRT_printf(y + h - 1, x + axis, w - axis, CRT_colors[C_CHART_AXIS], "step %.0f", steps[0]);
        char last[32];
        int l = snprintf(last, sizeof last, "%.0f", steps[n - 1]);
        if (l < cols - 12) CRT_print(y + h - 1, x + w - l, l, CRT_colors[C_CHART_AXIS], last);
    }
}
