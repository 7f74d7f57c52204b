/* Chart: a line chart of a (step, value) series, with the value range on the left and the
 * step range below, resampled to the width (Bins_resample). */
#ifndef TOKENREC_UI_CHART_H
#define TOKENREC_UI_CHART_H
/* Draw in the box (y, x, h, w): a title line, h-2 plot rows, an axis line. */
void Chart_draw(int y, int x, int h, int w, const char *title, const double *steps,
                const double *values, int n);
#endif
