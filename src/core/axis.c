/* axis.c: value ranges and round tick steps for charts (see axis.h). */
#include "axis.h"
#include <math.h>

void axis_range(const double *v, int n, int flags, double *lo, double *hi) {
    double mn = 0, mx = 0;
    int any = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        if (!any || v[i] < mn) mn = v[i];
        if (!any || v[i] > mx) mx = v[i];
        any = 1;
    }
    if (!any) { *lo = 0; *hi = 1; return; }
    if (flags & AXIS_ZERO) { if (mn > 0) mn = 0; if (mx < 0) mx = 0; }
    double pad = mx > mn ? 0.05 * (mx - mn) : fabs(mn) > 0 ? 0.1 * fabs(mn) : 0.5;
    *lo = mn - pad;
    *hi = mx + pad;
    if (mn >= 0 && *lo < 0) *lo = 0;            /* nonnegative values: no negative axis */
    if (mn >= 0 && mx <= 1 && *hi > 1) *hi = 1; /* a rate: no axis above 1 */
    if (flags & AXIS_ZERO) {                    /* bars start at the axis */
        if (mn >= 0) *lo = 0;
        if (mx <= 0 && mn < 0) *hi = 0;
    }
    if (!(*hi > *lo)) *hi = *lo + 1;            /* only for a flat zero series with AXIS_ZERO */
}

double axis_step(double *lo, double *hi, int max_ticks, int widen) {
    if (max_ticks < 1) max_ticks = 1;
    double span = *hi - *lo;
    if (!(span > 0) || !isfinite(span)) return 1;
    double raw = span / max_ticks, p = pow(10, floor(log10(raw)));
    static const double mult[] = {1, 2, 2.5, 5, 10};
    double step = 10 * p;
    for (int i = 0; i < 5; i++)
        if (mult[i] * p >= raw * (1 - 1e-9)) { step = mult[i] * p; break; }
    if (widen) {          /* out to multiples of the step, keeping the range's bounds */
        double a = floor(*lo / step + 1e-9) * step, b = ceil(*hi / step - 1e-9) * step;
        if (*lo >= 0 && a < 0) a = 0;
        if (*hi <= 1 && b > 1) b = 1;
        *lo = a;
        *hi = b;
    }
    return step;
}
