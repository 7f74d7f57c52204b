/* axis: the value range and tick marks of a chart axis, a pure function of the values, shared
 * by the dashboard's terminal charts and the HTML report's SVG charts.
 *
 * The range pads the values' min..max by 5% of the span on each side, and:
 *   - a single value (or a flat series) gets a range around it (10% of its size either side,
 *     0.5 for a zero), never the fixed -0.5..+0.5 that put valid HR@10 0.087 on -0.41..0.59;
 *   - values that are all >= 0 (losses, rates, counts) never get a negative axis;
 *   - values that all lie in [0, 1] (rates: HR, NDCG) never get an axis above 1;
 *   - AXIS_ZERO keeps 0 on the axis (bar charts). */
#ifndef TOKENREC_AXIS_H
#define TOKENREC_AXIS_H

#define AXIS_ZERO 1

/* The range of the finite values of v[0..n): *lo < *hi always; 0..1 when there are none. */
void axis_range(const double *v, int n, int flags, double *lo, double *hi);

/* A round tick step (1, 2, 2.5 or 5 times a power of ten) of at most max_ticks intervals over
 * [lo, hi]; with widen, lo and hi move out to multiples of it (one interval more at most; a
 * nonnegative lo stays >= 0, an hi <= 1 stays <= 1: 1 is a multiple of every step below 1). */
double axis_step(double *lo, double *hi, int max_ticks, int widen);

#endif
